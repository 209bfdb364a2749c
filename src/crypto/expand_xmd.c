/*
 * RFC 9380 §5.3.1 expand_message_xmd over SHA-512 (libsodium's streaming
 * SHA-512). The message being expanded is derived from match keys, so every
 * intermediate block and the hash state are wiped before returning.
 */
#include "cleanroom/crypto.h"

#include <string.h>

#include <sodium.h>

/* SHA-512: b_in_bytes (output) and r_in_bytes (input block). */
#define XMD_B_BYTES crypto_hash_sha512_BYTES
#define XMD_R_BYTES 128
#define XMD_MAX_ELL 255
#define XMD_MAX_DST 255

/* H(prefix || u8(i) || DST_prime): the tail shared by b_1 .. b_ell. */
static void xmd_block(uint8_t out[XMD_B_BYTES], crypto_hash_sha512_state *st,
                      const uint8_t prefix[XMD_B_BYTES], uint8_t i,
                      const uint8_t *dst, uint8_t dst_len) {
  crypto_hash_sha512_init(st);
  crypto_hash_sha512_update(st, prefix, XMD_B_BYTES);
  crypto_hash_sha512_update(st, &i, 1);
  crypto_hash_sha512_update(st, dst, dst_len);
  crypto_hash_sha512_update(st, &dst_len, 1);
  crypto_hash_sha512_final(st, out);
}

int cr_expand_message_xmd_sha512(uint8_t *out, size_t out_len,
                                 const uint8_t *msg, size_t msg_len,
                                 const uint8_t *dst, size_t dst_len) {
  static const uint8_t z_pad[XMD_R_BYTES];
  crypto_hash_sha512_state st;
  uint8_t b0[XMD_B_BYTES];
  uint8_t bi[XMD_B_BYTES];
  uint8_t chain[XMD_B_BYTES];
  uint8_t l_i_b_str[2];
  const uint8_t zero = 0;
  uint8_t dst_len8;
  size_t ell;
  int rc = 0;

  /* RFC 9380 §5.3.1 aborts on ell > 255 (which also keeps len_in_bytes
   * below 2^16) and on DST > 255 bytes; §3.1 requires a non-empty tag. An
   * empty output has no use and is refused rather than silently accepted. */
  if (out == NULL || out_len == 0 || out_len > (size_t)XMD_MAX_ELL * XMD_B_BYTES ||
      dst == NULL || dst_len == 0 || dst_len > XMD_MAX_DST ||
      (msg == NULL && msg_len != 0)) {
    rc = CR_EINVAL;
    goto cleanup;
  }

  ell = (out_len + XMD_B_BYTES - 1) / XMD_B_BYTES;
  l_i_b_str[0] = (uint8_t)(out_len >> 8);
  l_i_b_str[1] = (uint8_t)out_len;
  dst_len8 = (uint8_t)dst_len;

  /* b_0 = H(Z_pad || msg || I2OSP(len_in_bytes, 2) || I2OSP(0, 1) || DST_prime) */
  crypto_hash_sha512_init(&st);
  crypto_hash_sha512_update(&st, z_pad, sizeof z_pad);
  if (msg_len != 0)
    crypto_hash_sha512_update(&st, msg, (unsigned long long)msg_len);
  crypto_hash_sha512_update(&st, l_i_b_str, sizeof l_i_b_str);
  crypto_hash_sha512_update(&st, &zero, 1);
  crypto_hash_sha512_update(&st, dst, dst_len8);
  crypto_hash_sha512_update(&st, &dst_len8, 1);
  crypto_hash_sha512_final(&st, b0);

  /* b_1 = H(b_0 || 1 || DST_prime); b_i = H((b_0 xor b_(i-1)) || i || DST_prime) */
  memcpy(chain, b0, sizeof chain);
  for (size_t i = 1; i <= ell; i++) {
    if (i > 1) {
      for (size_t j = 0; j < XMD_B_BYTES; j++)
        chain[j] = b0[j] ^ bi[j];
    }
    xmd_block(bi, &st, chain, (uint8_t)i, dst, dst_len8);
    size_t off = (i - 1) * XMD_B_BYTES;
    size_t n = out_len - off < XMD_B_BYTES ? out_len - off : XMD_B_BYTES;
    memcpy(out + off, bi, n);
  }

cleanup:
  sodium_memzero(&st, sizeof st);
  sodium_memzero(b0, sizeof b0);
  sodium_memzero(bi, sizeof bi);
  sodium_memzero(chain, sizeof chain);
  return rc;
}
