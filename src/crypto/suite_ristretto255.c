/*
 * Suite "ristretto255" (design §4): RFC 9380 expand_message_xmd(SHA-512)
 * into RFC 9496 element derivation, blinding by scalar multiplication. Every
 * group operation is libsodium's (constant time); this file only sequences
 * them, validates the peer's bytes and wipes what depends on a match key or a
 * scalar.
 */
#include "cleanroom/crypto.h"

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

const cr_suite cr_suite_ristretto255 = {
    .name = "ristretto255",
    .point_bytes = R255_POINT_BYTES,
    .scalar_bytes = R255_SCALAR_BYTES,
    .scalar_random = r255_scalar_random,
    .scalar_from_uniform = r255_scalar_from_uniform,
    .hash_blind = r255_hash_blind,
    .reblind = r255_reblind,
};
