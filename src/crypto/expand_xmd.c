/*
 * RFC 9380 §5.3.1 expand_message_xmd over SHA-512 (the ristretto255 suite)
 * and SHA-256 (the p256 suite), both on libsodium's streaming hashes. One
 * implementation serves both: the hash is a small table of its sizes and
 * its three streaming calls. The message being expanded is derived from
 * match keys, so every intermediate block and the hash state are wiped
 * before returning.
 */
#include "cleanroom/crypto.h"

#include <string.h>

#include <sodium.h>

#define XMD_MAX_ELL 255
#define XMD_MAX_DST 255
#define XMD_MAX_B_BYTES crypto_hash_sha512_BYTES
#define XMD_MAX_R_BYTES 128

typedef union xmd_state {
  crypto_hash_sha256_state s256;
  crypto_hash_sha512_state s512;
} xmd_state;

/* b_in_bytes (output) and r_in_bytes (input block) of RFC 9380 §5.3.1. */
typedef struct xmd_hash {
  size_t b_bytes;
  size_t r_bytes;
  void (*init)(xmd_state *st);
  void (*update)(xmd_state *st, const uint8_t *in, size_t len);
  void (*final)(xmd_state *st, uint8_t *out);
} xmd_hash;

static void sha256_init(xmd_state *st) { crypto_hash_sha256_init(&st->s256); }
static void sha256_update(xmd_state *st, const uint8_t *in, size_t len) {
  crypto_hash_sha256_update(&st->s256, in, (unsigned long long)len);
}
static void sha256_final(xmd_state *st, uint8_t *out) { crypto_hash_sha256_final(&st->s256, out); }

static void sha512_init(xmd_state *st) { crypto_hash_sha512_init(&st->s512); }
static void sha512_update(xmd_state *st, const uint8_t *in, size_t len) {
  crypto_hash_sha512_update(&st->s512, in, (unsigned long long)len);
}
static void sha512_final(xmd_state *st, uint8_t *out) { crypto_hash_sha512_final(&st->s512, out); }

static const xmd_hash xmd_sha256 = {crypto_hash_sha256_BYTES, 64, sha256_init, sha256_update,
                                    sha256_final};
static const xmd_hash xmd_sha512 = {crypto_hash_sha512_BYTES, 128, sha512_init, sha512_update,
                                    sha512_final};

_Static_assert(crypto_hash_sha256_BYTES <= XMD_MAX_B_BYTES, "block buffers fit both hashes");

/* H(prefix || u8(i) || DST_prime): the tail shared by b_1 .. b_ell. */
static void xmd_block(const xmd_hash *h, uint8_t *out, xmd_state *st, const uint8_t *prefix,
                      uint8_t i, const uint8_t *dst, uint8_t dst_len) {
  h->init(st);
  h->update(st, prefix, h->b_bytes);
  h->update(st, &i, 1);
  h->update(st, dst, dst_len);
  h->update(st, &dst_len, 1);
  h->final(st, out);
}

static int xmd_expand(const xmd_hash *h, uint8_t *out, size_t out_len, const uint8_t *msg,
                      size_t msg_len, const uint8_t *dst, size_t dst_len) {
  static const uint8_t z_pad[XMD_MAX_R_BYTES];
  xmd_state st;
  uint8_t b0[XMD_MAX_B_BYTES];
  uint8_t bi[XMD_MAX_B_BYTES];
  uint8_t chain[XMD_MAX_B_BYTES];
  uint8_t l_i_b_str[2];
  const uint8_t zero = 0;
  const size_t b = h->b_bytes;
  uint8_t dst_len8;
  size_t ell;
  int rc = 0;

  /* RFC 9380 §5.3.1 aborts on ell > 255 (which also keeps len_in_bytes
   * below 2^16) and on DST > 255 bytes; §3.1 requires a non-empty tag. An
   * empty output has no use and is refused rather than silently accepted. */
  if (out == NULL || out_len == 0 || out_len > (size_t)XMD_MAX_ELL * b || dst == NULL ||
      dst_len == 0 || dst_len > XMD_MAX_DST || (msg == NULL && msg_len != 0)) {
    rc = CR_EINVAL;
    goto cleanup;
  }

  ell = (out_len + b - 1) / b;
  l_i_b_str[0] = (uint8_t)(out_len >> 8);
  l_i_b_str[1] = (uint8_t)out_len;
  dst_len8 = (uint8_t)dst_len;

  /* b_0 = H(Z_pad || msg || I2OSP(len_in_bytes, 2) || I2OSP(0, 1) || DST_prime) */
  h->init(&st);
  h->update(&st, z_pad, h->r_bytes);
  if (msg_len != 0)
    h->update(&st, msg, msg_len);
  h->update(&st, l_i_b_str, sizeof l_i_b_str);
  h->update(&st, &zero, 1);
  h->update(&st, dst, dst_len8);
  h->update(&st, &dst_len8, 1);
  h->final(&st, b0);

  /* b_1 = H(b_0 || 1 || DST_prime); b_i = H((b_0 xor b_(i-1)) || i || DST_prime) */
  memcpy(chain, b0, b);
  for (size_t i = 1; i <= ell; i++) {
    if (i > 1) {
      for (size_t j = 0; j < b; j++)
        chain[j] = b0[j] ^ bi[j];
    }
    xmd_block(h, bi, &st, chain, (uint8_t)i, dst, dst_len8);
    size_t off = (i - 1) * b;
    size_t n = out_len - off < b ? out_len - off : b;
    memcpy(out + off, bi, n);
  }

cleanup:
  sodium_memzero(&st, sizeof st);
  sodium_memzero(b0, sizeof b0);
  sodium_memzero(bi, sizeof bi);
  sodium_memzero(chain, sizeof chain);
  return rc;
}

int cr_expand_message_xmd_sha512(uint8_t *out, size_t out_len, const uint8_t *msg, size_t msg_len,
                                 const uint8_t *dst, size_t dst_len) {
  return xmd_expand(&xmd_sha512, out, out_len, msg, msg_len, dst, dst_len);
}

int cr_expand_message_xmd_sha256(uint8_t *out, size_t out_len, const uint8_t *msg, size_t msg_len,
                                 const uint8_t *dst, size_t dst_len) {
  return xmd_expand(&xmd_sha256, out, out_len, msg, msg_len, dst, dst_len);
}
