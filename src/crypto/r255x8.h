/*
 * Inside the crypto layer: the batched ristretto255 backends (eight lanes
 * per call) and the dispatcher that picks one once per process. Design,
 * proofs and the hardware limits: docs/crypto-backends.md.
 *
 *   avx512ifma  r255x8_ifma.c  AVX-512 IFMA, chosen when CPUID reports
 *                              avx512f + avx512ifma and the OS saves ZMM state
 *   emulated    r255x8_emul.c  the same algorithm on portable C lanes; chosen
 *                              only by CLEANROOM_CRYPTO=emulated (a test and
 *                              diagnostic mode: correct everywhere, slower
 *                              than libsodium)
 *   libsodium   (no table)     the one-element suite functions, the reference
 *
 * Every function takes exactly eight lanes; a caller with fewer fills the
 * rest with copies of a real input and discards their outputs.
 */
#ifndef CR_CRYPTO_R255X8_H
#define CR_CRYPTO_R255X8_H

#include <stdint.h>

#define CR_R255X8_LANES 8

typedef struct cr_r255x8_backend {
  const char *name; /* "avx512ifma", "emulated" */

  /* RFC 9496 decode of each lane (every check: canonical, bit 255 clear,
   * non-negative, square, t non-negative, y non-zero) then encode. Returns
   * the lanes that decoded (bit i = lane i); a lane that did not encodes the
   * identity (32 zero bytes). A test hook for the decoder and encoder. */
  unsigned (*roundtrip)(uint8_t out[8][32], const uint8_t in[8][32]);

  /* RFC 9496 §4.3.4 element derivation from 64 uniform bytes, encoded
   * (libsodium's crypto_core_ristretto255_from_hash). */
  void (*from_uniform)(uint8_t out[8][32], const uint8_t in[8][64]);

  /* out = encode(k * decode(in)) per lane with one scalar k (bit 255 of k
   * ignored, as crypto_scalarmult_ristretto255 does). Returns the lanes
   * that decoded; the others output the identity. Only the identity check on
   * out is left to the caller. */
  unsigned (*scalarmult)(uint8_t out[8][32], const uint8_t k[32], const uint8_t in[8][32]);

  /* out = encode(k * from_uniform(uniform)) per lane. */
  void (*hash_blind)(uint8_t out[8][32], const uint8_t k[32], const uint8_t uniform[8][64]);
} cr_r255x8_backend;

/* The portable lanes (always built). */
extern const cr_r255x8_backend cr__r255x8_emulated;

/* The AVX-512 IFMA lanes, or NULL when this build could not compile them
 * (a compiler without -mavx512ifma, not x86-64). Callable only when
 * cr__r255x8_cpu_has_ifma() says so. */
extern const cr_r255x8_backend *const cr__r255x8_ifma;

/* CPUID leaf 7 EBX bits 16 (avx512f) and 21 (avx512ifma), and XCR0 bits
 * 1, 2, 5, 6, 7 (SSE, AVX, opmask, ZMM0-15 upper halves, ZMM16-31): the OS
 * saves the state the instructions use. */
int cr__r255x8_cpu_has_ifma(void);

/* One call of each entry point against libsodium on fixed public inputs:
 * 0 when every byte and lane mask agrees, -1 otherwise. The dispatcher runs
 * it before using a backend (backend.c). */
int cr__r255x8_selftest(const cr_r255x8_backend *be);

/* The backend chosen once for this process (CLEANROOM_CRYPTO, then the CPU;
 * see cr_crypto_backend_name in cleanroom/crypto.h); NULL means libsodium. */
const cr_r255x8_backend *cr__r255x8_backend(void);

#endif
