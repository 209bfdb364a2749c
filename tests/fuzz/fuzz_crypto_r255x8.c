/*
 * Fuzz target: the batched ristretto255 decoder (src/crypto/r255x8_*)
 * against libsodium's on arbitrary bytes, cut into 32-byte encodings, eight
 * lanes per batch (a short tail is zero-padded, a short batch repeats its
 * first lane). Every lane must get libsodium's verdict (plus RFC 9496's bit
 * 255 rule, which libsodium 1.0.18 does not apply) and, when valid, encode
 * back to itself; k * P with a fixed public scalar must equal libsodium's.
 * Runs every backend the machine has (the emulated lanes always; the AVX-512
 * IFMA lanes where the CPU has them). Aborts on any difference.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "cleanroom/crypto.h"
#include "crypto/r255x8.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check(const cr_r255x8_backend *be, const uint8_t in[8][32]) {
  static const uint8_t k[32] = {7, 1, 2, 3}; /* public: reproducible runs */
  uint8_t out[8][32], prod[8][32];
  unsigned ok = be->roundtrip(out, in);
  unsigned ok2 = be->scalarmult(prod, k, in);
  if (ok != ok2)
    abort();
  for (int l = 0; l < 8; l++) {
    int v = (in[l][31] & 0x80) == 0 && crypto_core_ristretto255_is_valid_point(in[l]) == 1;
    if (((ok >> l) & 1u) != (unsigned)v)
      abort();
    uint8_t want[32] = {0};
    if (v && crypto_scalarmult_ristretto255(want, k, in[l]) != 0)
      memset(want, 0, sizeof want);
    if (v ? memcmp(out[l], in[l], 32) != 0 : !sodium_is_zero(out[l], 32))
      abort();
    if (memcmp(prod[l], want, 32) != 0)
      abort();
  }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static int ready;
  if (!ready) {
    if (cr_crypto_init() != 0)
      abort();
    ready = 1;
  }
  for (size_t off = 0; off < size || off == 0; off += 8 * 32) {
    uint8_t in[8][32] = {{0}};
    size_t n = size - off < 8 * 32 ? size - off : 8 * 32;
    if (n > 0)
      memcpy(in, data + off, n);
    size_t lanes = (n + 31) / 32;
    for (size_t l = lanes; l < 8 && lanes > 0; l++)
      memcpy(in[l], in[0], 32);
    check(&cr__r255x8_emulated, (const uint8_t(*)[32])in);
    if (cr__r255x8_ifma != NULL && cr__r255x8_cpu_has_ifma())
      check(cr__r255x8_ifma, (const uint8_t(*)[32])in);
    if (size == 0)
      break;
  }
  return 0;
}
