/*
 * Fuzz target: arbitrary peer bytes through the ristretto255 reblind, the
 * one crypto entry point that takes wire input. The input is cut into
 * 32-byte points (a short tail is zero-padded). Must never crash, and must
 * keep its contract: 0 with a valid non-identity point out, or CR_EPROTO /
 * CR_ECRYPTO with the output wiped.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "cleanroom/crypto.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* A fixed public scalar (7): reproducible runs matter more here than a
 * secret one, and it keeps k*P == identity impossible for a valid P. */
static uint8_t *fixed_scalar(const cr_suite *s) {
  static uint8_t *k;
  if (k == NULL) {
    if (cr_crypto_init() != 0)
      abort();
    k = cr_scalar_alloc(s);
    if (k == NULL)
      abort();
    memset(k, 0, s->scalar_bytes);
    k[0] = 7;
  }
  return k;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  const cr_suite *s = &cr_suite_ristretto255;
  const uint8_t *k = fixed_scalar(s);

  for (size_t off = 0; off < size; off += 32) {
    uint8_t p[32] = {0}, out[32];
    size_t n = size - off < 32 ? size - off : 32;
    memcpy(p, data + off, n);
    memset(out, 0xaa, sizeof out);

    int rc = s->reblind(out, k, p);
    if (rc == 0) {
      if (crypto_core_ristretto255_is_valid_point(p) != 1 || sodium_is_zero(p, 32) ||
          (p[31] & 0x80) != 0 || (out[31] & 0x80) != 0 ||
          crypto_core_ristretto255_is_valid_point(out) != 1 || sodium_is_zero(out, 32))
        abort();
    } else if (rc == CR_EPROTO || rc == CR_ECRYPTO) {
      if (!sodium_is_zero(out, sizeof out))
        abort();
    } else {
      abort();
    }
  }
  return 0;
}
