/*
 * Which ristretto255 backend this process uses, decided once: the batched
 * AVX-512 IFMA lanes when the CPU and the OS support them, libsodium
 * otherwise. CLEANROOM_CRYPTO overrides (read once, at the first use):
 *   portable   libsodium, whatever the CPU (the reference path)
 *   emulated   the batched algorithm on portable C lanes: a test and
 *              diagnostic mode that runs the IFMA backend's exact algorithm on
 *              any machine (several times slower than libsodium)
 *   ifma       the IFMA lanes when supported, else libsodium
 *   auto       (or unset, or anything else) the default above
 * Every backend gives bit-identical results, so the choice never shows on
 * the wire; it only changes speed. Never prints: a library does not write to
 * the caller's stderr (cr_crypto_backend_name tells what was chosen).
 */
#include "cleanroom/crypto.h"
#include "crypto/crypto_internal.h"
#include "crypto/r255x8.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <cpuid.h>
#define CR_HAVE_CPUID 1
#endif

int cr__r255x8_cpu_has_ifma(void) {
#ifdef CR_HAVE_CPUID
  unsigned a, b, c, d;
  if (!__get_cpuid(1, &a, &b, &c, &d))
    return 0;
  /* OSXSAVE (ECX bit 27): XGETBV is usable and the OS manages XCR0. */
  if (!(c & (1u << 27)))
    return 0;
  unsigned lo, hi;
  __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
  (void)hi;
  const unsigned zmm_state = (1u << 1) | (1u << 2) | (1u << 5) | (1u << 6) | (1u << 7);
  if ((lo & zmm_state) != zmm_state)
    return 0;
  if (__get_cpuid_max(0, NULL) < 7)
    return 0;
  __cpuid_count(7, 0, a, b, c, d);
  const unsigned avx512f = 1u << 16, avx512ifma = 1u << 21;
  return (b & avx512f) && (b & avx512ifma);
#else
  return 0;
#endif
}

/* ---- the self-test a batched backend passes before it is chosen --------
 *
 * The IFMA lanes are chosen by CPUID alone, and a machine without them (the
 * one this project is developed on) can run their algorithm only on the
 * emulated lanes: the intrinsics themselves, the compiler's code for them
 * and the CPU's are first executed on a user's machine. So before a batched
 * backend is used, one call of each entry point is checked byte for byte
 * against libsodium on fixed public inputs (valid and invalid encodings, one
 * scalar); a backend that differs anywhere is not chosen, and the process
 * stays on libsodium, with cr_crypto_backend_note saying why. It costs eight
 * lanes of each entry point (under a millisecond on IFMA). */

static void selftest_bytes(uint8_t *out, size_t len, const char *what, unsigned i) {
  uint8_t in[40] = {0};
  size_t n = strlen(what) < 32 ? strlen(what) : 32;
  // NOLINTNEXTLINE(bugprone-not-null-terminated-result): bytes to hash, not a string
  memcpy(in, what, n);
  in[n] = (uint8_t)i;
  crypto_generichash(out, len, in, n + 1, NULL, 0);
}

int cr__r255x8_selftest(const cr_r255x8_backend *be) {
  uint8_t uniform[8][64], k[32], wide[64];
  uint8_t points[8][32], out[8][32], want[32];
  for (unsigned i = 0; i < 8; i++)
    selftest_bytes(uniform[i], 64, "cleanroom r255x8 self-test u", i);
  selftest_bytes(wide, 64, "cleanroom r255x8 self-test k", 0);
  crypto_core_ristretto255_scalar_reduce(k, wide);

  /* Element derivation. */
  be->from_uniform(out, (const uint8_t(*)[64])uniform);
  for (unsigned i = 0; i < 8; i++) {
    crypto_core_ristretto255_from_hash(points[i], uniform[i]);
    if (memcmp(out[i], points[i], 32) != 0)
      return -1;
  }
  /* Lane 6: a non-canonical encoding (p + 1: all ones but the top bit and
   * the low byte 0xee); lane 7: a negative field element (1). Neither
   * decodes, in libsodium or here. */
  memset(points[6], 0xff, 32);
  points[6][0] = 0xee;
  points[6][31] = 0x7f;
  memset(points[7], 0, 32);
  points[7][0] = 1;
  const uint8_t zero[32] = {0};
  unsigned want_valid = 0;
  for (unsigned i = 0; i < 8; i++)
    if (crypto_core_ristretto255_is_valid_point(points[i]))
      want_valid |= 1u << i;
  if (want_valid != 0x3fu)
    return -1;
  /* Decode and encode. */
  if (be->roundtrip(out, (const uint8_t(*)[32])points) != want_valid)
    return -1;
  for (unsigned i = 0; i < 8; i++)
    if (memcmp(out[i], i < 6 ? points[i] : zero, 32) != 0)
      return -1;
  /* One scalar across the lanes. */
  if (be->scalarmult(out, k, (const uint8_t(*)[32])points) != want_valid)
    return -1;
  for (unsigned i = 0; i < 8; i++) {
    if (i < 6) {
      if (crypto_scalarmult_ristretto255(want, k, points[i]) != 0)
        return -1;
    } else {
      memset(want, 0, sizeof want);
    }
    if (memcmp(out[i], want, 32) != 0)
      return -1;
  }
  /* Hash and blind. */
  be->hash_blind(out, k, (const uint8_t(*)[64])uniform);
  for (unsigned i = 0; i < 8; i++) {
    uint8_t h[32];
    crypto_core_ristretto255_from_hash(h, uniform[i]);
    if (crypto_scalarmult_ristretto255(want, k, h) != 0 || memcmp(out[i], want, 32) != 0)
      return -1;
  }
  return 0;
}

static pthread_once_t choose_once = PTHREAD_ONCE_INIT;
static const cr_r255x8_backend *chosen;
static char chosen_note[160];

static const cr_r255x8_backend *ifma_if_supported(void) {
  return cr__r255x8_ifma != NULL && cr__r255x8_cpu_has_ifma() ? cr__r255x8_ifma : NULL;
}

static const cr_r255x8_backend *backend_by_name(const char *v) {
  if (v != NULL && (strcmp(v, "portable") == 0 || strcmp(v, "libsodium") == 0))
    return NULL;
  if (v != NULL && strcmp(v, "emulated") == 0)
    return &cr__r255x8_emulated;
  return ifma_if_supported();
}

/* The backend if it passes its self-test, else libsodium and a note. */
static const cr_r255x8_backend *checked(const cr_r255x8_backend *be) {
  chosen_note[0] = '\0';
  if (be == NULL || cr__r255x8_selftest(be) == 0)
    return be;
  (void)snprintf(chosen_note, sizeof chosen_note,
                 "the %s backend failed its known-answer self-test against libsodium on "
                 "this CPU and is not used",
                 be->name);
  return NULL;
}

static void choose(void) {
  // NOLINTNEXTLINE(concurrency-mt-unsafe): read once, under pthread_once
  chosen = checked(backend_by_name(getenv("CLEANROOM_CRYPTO")));
}

const cr_r255x8_backend *cr__r255x8_backend(void) {
  pthread_once(&choose_once, choose);
  return chosen;
}

void cr__crypto_backend_force(const char *name) {
  pthread_once(&choose_once, choose);
  chosen = checked(backend_by_name(name));
}

const char *cr_crypto_backend_name(void) {
  const cr_r255x8_backend *b = cr__r255x8_backend();
  return b != NULL ? b->name : "libsodium";
}

const char *cr_crypto_backend_note(void) {
  (void)cr__r255x8_backend();
  return chosen_note[0] != '\0' ? chosen_note : NULL;
}
