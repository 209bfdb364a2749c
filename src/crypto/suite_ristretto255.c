/*
 * Suite "ristretto255" (design §4): RFC 9380 expand_message_xmd(SHA-512)
 * into RFC 9496 element derivation, blinding by scalar multiplication. The
 * one-element forms use libsodium's group operations (constant time); the
 * batch forms use the backend chosen by backend.c (eight lanes of AVX-512
 * IFMA, or libsodium through the one-element forms), with bit-identical
 * results. This file sequences them, validates the peer's bytes and wipes
 * what depends on a match key or a scalar.
 */
#include "cleanroom/crypto.h"
#include "crypto/r255x8.h"

#include <string.h>

#include <sodium.h>

#define R255_POINT_BYTES crypto_core_ristretto255_BYTES
#define R255_SCALAR_BYTES crypto_core_ristretto255_SCALARBYTES
#define R255_UNIFORM_BYTES crypto_core_ristretto255_HASHBYTES

/* A zero scalar would make every blinded element the identity; libsodium
 * already rejects it, so reaching this bound means the RNG is broken. */
#define R255_SCALAR_TRIES 64

_Static_assert(R255_POINT_BYTES == 32 && R255_SCALAR_BYTES == 32,
               "crypto.h fixes ristretto255 points and scalars at 32 bytes");
_Static_assert(R255_POINT_BYTES <= CR_MAX_POINT_BYTES && R255_SCALAR_BYTES <= CR_MAX_SCALAR_BYTES,
               "suite sizes must fit the generic buffers");

int cr_r255_hash_to_group(uint8_t out[32], const uint8_t *msg, size_t msg_len, const uint8_t *dst,
                          size_t dst_len) {
  uint8_t uniform[R255_UNIFORM_BYTES];
  int rc = CR_EINVAL;

  if (out == NULL)
    goto cleanup;
  rc = cr_expand_message_xmd_sha512(uniform, sizeof uniform, msg, msg_len, dst, dst_len);
  if (rc != 0)
    goto cleanup;
  if (crypto_core_ristretto255_from_hash(out, uniform) != 0) {
    rc = CR_ECRYPTO;
    goto cleanup;
  }
  rc = 0;

cleanup:
  if (rc != 0 && out != NULL)
    sodium_memzero(out, R255_POINT_BYTES);
  sodium_memzero(uniform, sizeof uniform);
  return rc;
}

static int r255_scalar_random(uint8_t *k) {
  int rc = CR_ECRYPTO;

  if (k == NULL)
    return CR_EINVAL;
  for (int i = 0; i < R255_SCALAR_TRIES; i++) {
    crypto_core_ristretto255_scalar_random(k);
    if (!sodium_is_zero(k, R255_SCALAR_BYTES)) {
      rc = 0;
      break;
    }
  }
  if (rc != 0)
    sodium_memzero(k, R255_SCALAR_BYTES);
  return rc;
}

static int r255_scalar_from_uniform(uint8_t *k, const uint8_t uniform[CR_SCALAR_UNIFORM_BYTES]) {
  /* scalar_reduce takes a non-const 64-byte input; work on a wiped copy. */
  uint8_t wide[crypto_core_ristretto255_NONREDUCEDSCALARBYTES];
  _Static_assert(sizeof wide == CR_SCALAR_UNIFORM_BYTES, "ristretto255 reduces 64 bytes");

  if (k == NULL || uniform == NULL)
    return CR_EINVAL;
  memcpy(wide, uniform, sizeof wide);
  crypto_core_ristretto255_scalar_reduce(k, wide);
  sodium_memzero(wide, sizeof wide);
  if (sodium_is_zero(k, R255_SCALAR_BYTES))
    return CR_ECRYPTO;
  return 0;
}

static int r255_hash_blind(uint8_t *out, const uint8_t *k, const uint8_t *msg, size_t msg_len) {
  /* H(v) alone is a dictionary-attackable image of the match key. */
  uint8_t x[R255_POINT_BYTES];
  int rc = CR_EINVAL;

  if (out == NULL || k == NULL)
    goto cleanup;
  rc = cr_r255_hash_to_group(x, msg, msg_len, (const uint8_t *)CR_R255_DST, sizeof CR_R255_DST - 1);
  if (rc != 0)
    goto cleanup;
  /* Fails only when k*X is the identity (k = 0 mod L or X the identity). */
  if (crypto_scalarmult_ristretto255(out, k, x) != 0) {
    rc = CR_ECRYPTO;
    goto cleanup;
  }
  rc = 0;

cleanup:
  if (rc != 0 && out != NULL)
    sodium_memzero(out, R255_POINT_BYTES);
  sodium_memzero(x, sizeof x);
  return rc;
}

static int r255_reblind(uint8_t *out, const uint8_t *k, const uint8_t *peer_point) {
  int rc = CR_EINVAL;

  if (out == NULL || k == NULL || peer_point == NULL)
    goto cleanup;
  /* Two gaps in libsodium 1.0.18's decoder, closed here (RFC 9496 §4.3.1):
   * - it masks bit 255 instead of rejecting it, so P and P|2^255 both decode
   *   to the same element: a second encoding of every point;
   * - it accepts the all-zero encoding (the identity), which would blind to
   *   the identity for every k and make the peer's elements collide. */
  if ((peer_point[R255_POINT_BYTES - 1] & 0x80) != 0 ||
      sodium_is_zero(peer_point, R255_POINT_BYTES) ||
      crypto_core_ristretto255_is_valid_point(peer_point) != 1) {
    rc = CR_EPROTO;
    goto cleanup;
  }
  if (crypto_scalarmult_ristretto255(out, k, peer_point) != 0) {
    rc = CR_ECRYPTO;
    goto cleanup;
  }
  rc = 0;

cleanup:
  if (rc != 0 && out != NULL)
    sodium_memzero(out, R255_POINT_BYTES);
  return rc;
}

/* ---- batches: eight lanes at a time on the chosen backend --------------- */

#define LANES CR_R255X8_LANES

static int r255_hash_blind_loop(uint8_t *out, const uint8_t *k, const uint8_t *const *msgs,
                                const size_t *lens, size_t n) {
  for (size_t i = 0; i < n; i++) {
    int rc = r255_hash_blind(out + i * R255_POINT_BYTES, k, msgs[i], lens[i]);
    if (rc != 0)
      return rc;
  }
  return 0;
}

static int r255_hash_blind_batch(uint8_t *out, const uint8_t *k, const uint8_t *const *msgs,
                                 const size_t *lens, size_t n) {
  const cr_r255x8_backend *be = cr__r255x8_backend();
  /* The uniform bytes are an image of the match keys; the outputs are wiped
   * only on failure (they are the caller's). */
  uint8_t uniform[LANES][R255_UNIFORM_BYTES];
  uint8_t pts[LANES][R255_POINT_BYTES];
  int rc = CR_EINVAL;

  if (out == NULL || k == NULL || (n != 0 && (msgs == NULL || lens == NULL)))
    return CR_EINVAL;
  if (be == NULL) {
    rc = r255_hash_blind_loop(out, k, msgs, lens, n);
    goto cleanup;
  }
  rc = 0;
  for (size_t i = 0; i < n && rc == 0; i += LANES) {
    size_t m = n - i < LANES ? n - i : LANES;
    for (size_t l = 0; l < m && rc == 0; l++) {
      if (msgs[i + l] == NULL && lens[i + l] != 0)
        rc = CR_EINVAL;
      else
        rc = cr_expand_message_xmd_sha512(uniform[l], R255_UNIFORM_BYTES, msgs[i + l], lens[i + l],
                                          (const uint8_t *)CR_R255_DST, sizeof CR_R255_DST - 1);
    }
    if (rc != 0)
      break;
    /* Spare lanes repeat lane 0; their outputs are dropped. */
    for (size_t l = m; l < LANES; l++)
      memcpy(uniform[l], uniform[0], R255_UNIFORM_BYTES);
    be->hash_blind(pts, k, uniform);
    for (size_t l = 0; l < m; l++) {
      /* k * X is the identity only for k = 0 mod L or X the identity, as in
       * r255_hash_blind (libsodium refuses that product). */
      if (sodium_is_zero(pts[l], R255_POINT_BYTES)) {
        rc = CR_ECRYPTO;
        break;
      }
      memcpy(out + (i + l) * R255_POINT_BYTES, pts[l], R255_POINT_BYTES);
    }
  }

cleanup:
  if (rc != 0)
    sodium_memzero(out, n * R255_POINT_BYTES);
  sodium_memzero(uniform, sizeof uniform);
  sodium_memzero(pts, sizeof pts);
  return rc;
}

/* The checks r255_reblind adds to the decoder, on public bytes. */
static int r255_wire_ok(const uint8_t *p) {
  return (p[R255_POINT_BYTES - 1] & 0x80) == 0 && !sodium_is_zero(p, R255_POINT_BYTES);
}

static int r255_reblind_batch(uint8_t *out, const uint8_t *k, const uint8_t *points, size_t n,
                              size_t *bad) {
  const cr_r255x8_backend *be = cr__r255x8_backend();
  uint8_t in[LANES][R255_POINT_BYTES];
  uint8_t pts[LANES][R255_POINT_BYTES];
  size_t first_bad = SIZE_MAX;
  int rc = CR_EINVAL;

  if (bad != NULL)
    *bad = SIZE_MAX;
  if (out == NULL || k == NULL || (n != 0 && points == NULL))
    return CR_EINVAL;
  rc = 0;
  for (size_t i = 0; i < n && rc == 0; i += LANES) {
    size_t m = n - i < LANES ? n - i : LANES;
    if (be == NULL) {
      /* libsodium, one element at a time. */
      for (size_t l = 0; l < m && rc == 0; l++) {
        rc = r255_reblind(out + (i + l) * R255_POINT_BYTES, k, points + (i + l) * R255_POINT_BYTES);
        if (rc != 0)
          first_bad = i + l;
      }
      continue;
    }
    memcpy(in, points + i * R255_POINT_BYTES, m * R255_POINT_BYTES);
    for (size_t l = m; l < LANES; l++)
      memcpy(in[l], in[0], R255_POINT_BYTES);
    unsigned decoded = be->scalarmult(pts, k, in);
    /* Lanes in order, so the first failure is the one the one-element loop
     * would have stopped at. */
    for (size_t l = 0; l < m; l++) {
      if (!((decoded >> l) & 1u) || !r255_wire_ok(in[l])) {
        first_bad = i + l;
        rc = CR_EPROTO;
        break;
      }
      if (sodium_is_zero(pts[l], R255_POINT_BYTES)) {
        first_bad = i + l;
        rc = CR_ECRYPTO;
        break;
      }
      memcpy(out + (i + l) * R255_POINT_BYTES, pts[l], R255_POINT_BYTES);
    }
  }
  if (rc != 0) {
    sodium_memzero(out, n * R255_POINT_BYTES);
    if (bad != NULL)
      *bad = first_bad;
  }
  sodium_memzero(pts, sizeof pts);
  return rc;
}

const cr_suite cr_suite_ristretto255 = {
    .name = "ristretto255",
    .point_bytes = R255_POINT_BYTES,
    .scalar_bytes = R255_SCALAR_BYTES,
    .scalar_random = r255_scalar_random,
    .scalar_from_uniform = r255_scalar_from_uniform,
    .hash_blind = r255_hash_blind,
    .reblind = r255_reblind,
    .hash_blind_batch = r255_hash_blind_batch,
    .reblind_batch = r255_reblind_batch,
};
