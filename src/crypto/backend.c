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
#include <stdlib.h>
#include <string.h>

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

static pthread_once_t choose_once = PTHREAD_ONCE_INIT;
static const cr_r255x8_backend *chosen;

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

static void choose(void) {
  // NOLINTNEXTLINE(concurrency-mt-unsafe): read once, under pthread_once
  chosen = backend_by_name(getenv("CLEANROOM_CRYPTO"));
}

const cr_r255x8_backend *cr__r255x8_backend(void) {
  pthread_once(&choose_once, choose);
  return chosen;
}

void cr__crypto_backend_force(const char *name) {
  pthread_once(&choose_once, choose);
  chosen = backend_by_name(name);
}

const char *cr_crypto_backend_name(void) {
  const cr_r255x8_backend *b = cr__r255x8_backend();
  return b != NULL ? b->name : "libsodium";
}
