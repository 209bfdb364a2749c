/*
 * r255x8_dudect: a dudect-style timing test of the batched ristretto255
 * scalar multiplication (Reparaz, Balasch, Verbauwhede, "Dude, is my code
 * constant time?", 2017): fixed versus random scalars.
 *
 *   r255x8_dudect [--n N] [--backend emulated|avx512ifma] [--fixed one|zero|lminus1]
 *
 * N timed calls of scalarmult (eight random valid points each, from a pool)
 * with the class of each call drawn at random: class 0 uses the fixed
 * scalar (1 by default: 63 of its 64 digits select the identity entry of the
 * table), class 1 a fresh random scalar. Welch's t-statistic of the two
 * classes' times is printed for all calls and for the calls below several
 * percentiles (dudect's cropping, which drops the slow tail other processes
 * cause). |t| above 4.5 is evidence of a timing difference; a constant-time
 * computation stays below it however large N grows. One JSON object on
 * stdout. The valgrind check (tests/unit/ct_r255x8.c) is the proof of the
 * data flow; this measures the compiled code on this CPU.
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <sodium.h>

#include "cleanroom/crypto.h"
#include "crypto/r255x8.h"

typedef struct welch {
  double n[2], mean[2], m2[2];
} welch;

static void welch_add(welch *w, int c, double x) {
  w->n[c] += 1;
  double d = x - w->mean[c];
  w->mean[c] += d / w->n[c];
  w->m2[c] += d * (x - w->mean[c]);
}

static double welch_t(const welch *w) {
  if (w->n[0] < 2 || w->n[1] < 2)
    return 0;
  double v0 = w->m2[0] / (w->n[0] - 1), v1 = w->m2[1] / (w->n[1] - 1);
  double se = sqrt(v0 / w->n[0] + v1 / w->n[1]);
  return se > 0 ? (w->mean[0] - w->mean[1]) / se : 0;
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

static double now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

int main(int argc, char **argv) {
  size_t n = 4000;
  const char *backend = "emulated", *fixed = "one";
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
      printf("Usage: r255x8_dudect [--n N] [--backend emulated|avx512ifma] "
             "[--fixed one|zero|lminus1]\n"
             "Welch's t of scalarmult times, fixed vs random scalars; JSON on stdout.\n");
      return 0;
    } else if (strcmp(argv[i], "--n") == 0 && i + 1 < argc) {
      char *end;
      errno = 0;
      unsigned long v = strtoul(argv[++i], &end, 10);
      if (errno || *end != '\0' || v < 100 || v > 100000000UL) {
        fprintf(stderr, "r255x8_dudect: bad --n (100 .. 10^8)\n");
        return 2;
      }
      n = (size_t)v;
    } else if (strcmp(argv[i], "--backend") == 0 && i + 1 < argc) {
      backend = argv[++i];
    } else if (strcmp(argv[i], "--fixed") == 0 && i + 1 < argc) {
      fixed = argv[++i];
    } else {
      fprintf(stderr, "r255x8_dudect: unknown argument '%s' (--help)\n", argv[i]);
      return 2;
    }
  }
  if (cr_crypto_init() != 0)
    return 1;
  const cr_r255x8_backend *be = &cr__r255x8_emulated;
  if (strcmp(backend, "avx512ifma") == 0 || strcmp(backend, "ifma") == 0) {
    if (cr__r255x8_ifma == NULL || !cr__r255x8_cpu_has_ifma()) {
      fprintf(stderr, "r255x8_dudect: this machine cannot run the AVX-512 IFMA backend\n");
      return 77;
    }
    be = cr__r255x8_ifma;
  } else if (strcmp(backend, "emulated") != 0) {
    fprintf(stderr, "r255x8_dudect: unknown backend '%s'\n", backend);
    return 2;
  }
  uint8_t kfix[32] = {0};
  if (strcmp(fixed, "one") == 0) {
    kfix[0] = 1;
  } else if (strcmp(fixed, "lminus1") == 0) {
    static const uint8_t lm1[32] = {0xec, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58,
                                    0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9, 0xde, 0x14,
                                    0,    0,    0,    0,    0,    0,    0,    0,
                                    0,    0,    0,    0,    0,    0,    0,    0x10};
    memcpy(kfix, lm1, 32);
  } else if (strcmp(fixed, "zero") != 0) {
    fprintf(stderr, "r255x8_dudect: unknown --fixed '%s' (one, zero, lminus1)\n", fixed);
    return 2;
  }

  enum { POOL = 64 };
  static uint8_t pool[POOL][8][32];
  for (size_t i = 0; i < POOL; i++)
    for (int l = 0; l < 8; l++)
      crypto_core_ristretto255_random(pool[i][l]);
  double *t = malloc(n * sizeof *t), *sorted = malloc(n * sizeof *sorted);
  unsigned char *cls = malloc(n);
  if (t == NULL || sorted == NULL || cls == NULL)
    return 1;
  randombytes_buf(cls, n);

  uint8_t out[8][32], k[32];
  for (size_t i = 0; i < 20; i++) /* warm up */
    (void)be->scalarmult(out, kfix, (const uint8_t(*)[32])pool[i % POOL]);
  for (size_t i = 0; i < n; i++) {
    cls[i] &= 1;
    /* The scalar is prepared before the clock starts, whatever the class. */
    if (cls[i])
      crypto_core_ristretto255_scalar_random(k);
    else
      memcpy(k, kfix, 32);
    const uint8_t(*in)[32] = (const uint8_t(*)[32])pool[i % POOL];
    double t0 = now_ns();
    (void)be->scalarmult(out, k, in);
    t[i] = now_ns() - t0;
  }

  memcpy(sorted, t, n * sizeof *t);
  qsort(sorted, n, sizeof *sorted, cmp_double);
  static const double pct[] = {1.0, 0.99, 0.9, 0.75, 0.5};
  printf("{\"backend\":\"%s\",\"fixed\":\"%s\",\"n\":%zu,\"median_us\":%.1f,\"t\":{", be->name,
         fixed, n, sorted[n / 2] / 1e3);
  double max_abs = 0;
  for (size_t p = 0; p < sizeof pct / sizeof pct[0]; p++) {
    double cut = sorted[(size_t)((double)(n - 1) * pct[p])];
    welch w;
    memset(&w, 0, sizeof w);
    for (size_t i = 0; i < n; i++)
      if (t[i] <= cut)
        welch_add(&w, cls[i], t[i]);
    double tv = welch_t(&w);
    if (fabs(tv) > max_abs)
      max_abs = fabs(tv);
    printf("%s\"below_p%g\":%.2f", p ? "," : "", pct[p] * 100, tv);
  }
  printf("},\"max_abs_t\":%.2f,\"verdict\":\"%s\"}\n", max_abs,
         max_abs > 4.5 ? "timing difference (|t| > 4.5)" : "no evidence of a leak (|t| <= 4.5)");
  free(t);
  free(sorted);
  free(cls);
  return 0;
}
