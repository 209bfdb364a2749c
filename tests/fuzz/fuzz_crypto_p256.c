/*
 * Fuzz target: arbitrary peer bytes through the p256 reblind, the suite's
 * one entry point that takes wire input. The input is cut into 33-byte
 * points (a short tail is zero-padded). Must never crash, and must keep its
 * contract: 0 only for a 0x02/0x03 prefix with x < p, giving a canonical
 * compressed point (which reblinds by 1 to itself); otherwise CR_EPROTO
 * with the output wiped. The whole input is also hashed as a message,
 * which must always succeed.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "cleanroom/crypto.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define PB CR_P256_POINT_BYTES
#define SB CR_P256_SCALAR_BYTES

/* p, big endian. */
static const uint8_t field_p[32] = {
    0xff, 0xff, 0xff, 0xff, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff};

/* Fixed public scalars 7 and 1 (big endian): reproducible runs matter more
 * here than secret ones, and 7 * P is never the identity for a valid P. */
static uint8_t *scalar_of(const cr_suite *s, uint8_t **slot, uint8_t v) {
  if (*slot == NULL) {
    if (cr_crypto_init() != 0)
      abort();
    *slot = cr_scalar_alloc(s);
    if (*slot == NULL)
      abort();
    memset(*slot, 0, s->scalar_bytes);
    (*slot)[SB - 1] = v;
  }
  return *slot;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static uint8_t *k7, *k1;
  const cr_suite *s = &cr_suite_p256;
  const uint8_t *k = scalar_of(s, &k7, 7);
  const uint8_t *one = scalar_of(s, &k1, 1);

  for (size_t off = 0; off < size; off += PB) {
    uint8_t p[PB] = {0}, out[PB], again[PB];
    size_t n = size - off < PB ? size - off : PB;
    memcpy(p, data + off, n);
    memset(out, 0xaa, sizeof out);

    int rc = s->reblind(out, k, p);
    if (rc == 0) {
      if ((p[0] != 0x02 && p[0] != 0x03) || memcmp(p + 1, field_p, 32) >= 0 ||
          (out[0] != 0x02 && out[0] != 0x03) || memcmp(out + 1, field_p, 32) >= 0)
        abort();
      if (s->reblind(again, one, out) != 0 || memcmp(again, out, PB) != 0)
        abort();
    } else if (rc == CR_EPROTO) {
      if (!sodium_is_zero(out, sizeof out))
        abort();
    } else {
      abort();
    }
  }

  if (size <= 4096) {
    uint8_t h[PB];
    if (s->hash_blind(h, k, data, size) != 0 || (h[0] != 0x02 && h[0] != 0x03))
      abort();
  }
  return 0;
}
