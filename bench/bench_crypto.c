/*
 * bench_crypto: the per-element cost of a suite's operations on one core,
 * the numbers the harness (bench/run.sh) turns into a crypto-bound time.
 *
 *   bench_crypto [--suite ristretto255|p256] [--n N] [--reps R]
 *                [--backend auto|portable|emulated|ifma]
 *
 * For R repetitions over N distinct messages shaped like the engine's
 * (template hash || u8 len || key name || normalized e-mail, ~60 bytes) it
 * times, per element:
 *   hash_blind  k * HashToGroup(msg)            (each side, own set)
 *   reblind     k * P with the decoding checks   (each side, peer's set)
 *   digest      SHA-512 of the shared point      (each side, peer's set)
 * and prints one JSON object with the best (lowest) repetition: other load on
 * the machine only ever adds time, so the minimum is the closest to the
 * operation's own cost. The figures are thread CPU time
 * (CLOCK_THREAD_CPUTIME_ID), which another process competing for the core
 * inflates much less than wall time; the medians ("*_median_us") and the best
 * wall times ("*_wall_us") are printed too.
 *
 * The same run also times the batch entry points the engine calls
 * (cr_suite_hash_blind_batch, cr_suite_reblind_batch) on the ristretto255
 * backend of this process ("backend": avx512ifma where the CPU has it,
 * libsodium otherwise; --backend or CLEANROOM_CRYPTO choose another, see
 * docs/crypto-backends.md): "batch_hash_blind_us", "batch_reblind_us", and
 * their ratio to the one-element (libsodium) figures. The batch outputs are
 * checked byte for byte against the one-element ones.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cleanroom/crypto.h"
#include "crypto/crypto_internal.h"

static double now(clockid_t c) {
  struct timespec ts;
  clock_gettime(c, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

/* Sorts v and returns its median; v[0] is then the lowest. */
static double sort_median(double *v, size_t n) {
  qsort(v, n, sizeof *v, cmp_double);
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

static void usage(FILE *f) {
  fprintf(f, "Usage: bench_crypto [--suite ristretto255|p256] [--n N] [--reps R]\n"
             "                    [--backend auto|portable|emulated|ifma]\n"
             "Per-element CPU time of hash_blind, reblind and digest on one core, best\n"
             "(and median) of R repetitions over N distinct e-mail-shaped messages, one\n"
             "element at a time (libsodium) and through the batch entry points on the\n"
             "chosen ristretto255 backend; one JSON object on stdout.\n"
             "Defaults: --suite ristretto255 --n 2048 --reps 5, the process's backend\n"
             "(CLEANROOM_CRYPTO, else the CPU).\n");
}

static int parse_size(const char *s, size_t *out) {
  char *end;
  errno = 0;
  unsigned long long v = strtoull(s, &end, 10);
  if (errno || *s == '\0' || *end != '\0' || v == 0 || v > 100000000ULL)
    return -1;
  *out = (size_t)v;
  return 0;
}

int main(int argc, char **argv) {
  const char *suite_name = "ristretto255";
  const char *backend = NULL;
  size_t n = 2048, reps = 5;

  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
      usage(stdout);
      return 0;
    } else if (strcmp(argv[i], "--suite") == 0 && i + 1 < argc) {
      suite_name = argv[++i];
    } else if (strcmp(argv[i], "--backend") == 0 && i + 1 < argc) {
      backend = argv[++i];
      if (strcmp(backend, "auto") != 0 && strcmp(backend, "portable") != 0 &&
          strcmp(backend, "emulated") != 0 && strcmp(backend, "ifma") != 0) {
        fprintf(stderr, "bench_crypto: bad --backend (auto, portable, emulated, ifma)\n");
        return 2;
      }
    } else if (strcmp(argv[i], "--n") == 0 && i + 1 < argc) {
      if (parse_size(argv[++i], &n) != 0) {
        fprintf(stderr, "bench_crypto: bad --n\n");
        return 2;
      }
    } else if (strcmp(argv[i], "--reps") == 0 && i + 1 < argc) {
      if (parse_size(argv[++i], &reps) != 0 || reps > 1000) {
        fprintf(stderr, "bench_crypto: bad --reps\n");
        return 2;
      }
    } else {
      usage(stderr);
      return 2;
    }
  }

  if (cr_crypto_init() != 0) {
    fprintf(stderr, "bench_crypto: crypto init failed\n");
    return 1;
  }
  const cr_suite *suite = cr_suite_find(suite_name);
  if (suite == NULL) {
    fprintf(stderr, "bench_crypto: unknown suite '%s' (ristretto255, p256)\n", suite_name);
    return 2;
  }
  if (backend != NULL)
    cr__crypto_backend_force(backend);
  if (backend != NULL && strcmp(backend, "ifma") == 0 &&
      strcmp(cr_crypto_backend_name(), "avx512ifma") != 0) {
    fprintf(stderr, "bench_crypto: this machine cannot run the AVX-512 IFMA backend\n");
    return 77;
  }

  size_t pb = suite->point_bytes;
  uint8_t *k = cr_scalar_alloc(suite);
  uint8_t *k2 = cr_scalar_alloc(suite);
  uint8_t *msgs = malloc(n * 96);
  size_t *lens = malloc(n * sizeof *lens);
  uint8_t *pts = malloc(n * pb);
  uint8_t *out = malloc(n * pb);
  uint8_t *dig = malloc(n * CR_MAX_DIGEST_BYTES);
  uint8_t *out2 = malloc(n * pb);
  const uint8_t **mp = malloc(n * sizeof *mp);
  double *t_bh = calloc(reps, sizeof *t_bh), *t_br = calloc(reps, sizeof *t_br);
  double *t_hb = calloc(reps, sizeof *t_hb), *t_rb = calloc(reps, sizeof *t_rb);
  double *t_dg = calloc(reps, sizeof *t_dg), *w_hb = calloc(reps, sizeof *w_hb);
  double *w_rb = calloc(reps, sizeof *w_rb), *w_dg = calloc(reps, sizeof *w_dg);
  if (!k || !k2 || !msgs || !lens || !pts || !out || !dig || !t_hb || !t_rb || !t_dg || !w_hb ||
      !w_rb || !w_dg || !out2 || !mp || !t_bh || !t_br) {
    fprintf(stderr, "bench_crypto: out of memory\n");
    return 1;
  }
  if (suite->scalar_random(k) != 0 || suite->scalar_random(k2) != 0) {
    fprintf(stderr, "bench_crypto: scalar_random failed\n");
    return 1;
  }

  /* Messages as the session builds them: template hash (32 bytes), u8 length
   * of the key name, the key name, the normalized value. */
  uint8_t th[32];
  for (size_t j = 0; j < sizeof th; j++)
    th[j] = (uint8_t)(0x5a ^ (j * 37));
  for (size_t i = 0; i < n; i++) {
    uint8_t *m = msgs + i * 96;
    memcpy(m, th, 32);
    m[32] = 5;
    memcpy(m + 33, "email", 5);
    int w = snprintf((char *)m + 38, 96 - 38, "user.%zu.%zu@example.com", i, (i * 7919) % 1000);
    lens[i] = 38 + (size_t)w;
    mp[i] = m;
  }
  uint8_t sid[CR_SESSION_ID_BYTES];
  memset(sid, 0x42, sizeof sid);

  /* Peer points: the same messages blinded with another scalar. */
  for (size_t i = 0; i < n; i++) {
    if (suite->hash_blind(pts + i * pb, k2, msgs + i * 96, lens[i]) != 0) {
      fprintf(stderr, "bench_crypto: hash_blind failed\n");
      return 1;
    }
  }

  for (size_t r = 0; r < reps; r++) {
    double c0 = now(CLOCK_THREAD_CPUTIME_ID), w0 = now(CLOCK_MONOTONIC);
    for (size_t i = 0; i < n; i++)
      if (suite->hash_blind(out + i * pb, k, msgs + i * 96, lens[i]) != 0)
        return 1;
    double c1 = now(CLOCK_THREAD_CPUTIME_ID), w1 = now(CLOCK_MONOTONIC);
    for (size_t i = 0; i < n; i++)
      if (suite->reblind(out + i * pb, k, pts + i * pb) != 0)
        return 1;
    double c2 = now(CLOCK_THREAD_CPUTIME_ID), w2 = now(CLOCK_MONOTONIC);
    for (size_t i = 0; i < n; i++)
      cr_digest(dig + i * CR_MAX_DIGEST_BYTES, CR_MAX_DIGEST_BYTES, sid, out + i * pb, pb);
    double c3 = now(CLOCK_THREAD_CPUTIME_ID), w3 = now(CLOCK_MONOTONIC);
    t_hb[r] = (c1 - c0) * 1e6 / (double)n;
    t_rb[r] = (c2 - c1) * 1e6 / (double)n;
    t_dg[r] = (c3 - c2) * 1e6 / (double)n;
    w_hb[r] = (w1 - w0) * 1e6 / (double)n;
    w_rb[r] = (w2 - w1) * 1e6 / (double)n;
    w_dg[r] = (w3 - w2) * 1e6 / (double)n;

    /* The batch entry points on the chosen backend, checked against the
     * one-element results just computed (out holds k * pts). */
    size_t bad;
    double b0 = now(CLOCK_THREAD_CPUTIME_ID);
    if (cr_suite_reblind_batch(suite, out2, k, pts, n, &bad) != 0)
      return 1;
    double b1 = now(CLOCK_THREAD_CPUTIME_ID);
    if (memcmp(out2, out, n * pb) != 0) {
      fprintf(stderr, "bench_crypto: batch reblind differs from reblind\n");
      return 1;
    }
    if (cr_suite_hash_blind_batch(suite, out2, k, mp, lens, n) != 0)
      return 1;
    double b2 = now(CLOCK_THREAD_CPUTIME_ID);
    t_br[r] = (b1 - b0) * 1e6 / (double)n;
    t_bh[r] = (b2 - b1) * 1e6 / (double)n;
  }
  /* out2 holds the batch hash_blind: compare with the one-element form. */
  for (size_t i = 0; i < n; i++) {
    if (suite->hash_blind(out + i * pb, k, msgs + i * 96, lens[i]) != 0)
      return 1;
  }
  if (memcmp(out2, out, n * pb) != 0) {
    fprintf(stderr, "bench_crypto: batch hash_blind differs from hash_blind\n");
    return 1;
  }

  double m_hb = sort_median(t_hb, reps), m_rb = sort_median(t_rb, reps);
  double m_dg = sort_median(t_dg, reps);
  double m_bh = sort_median(t_bh, reps), m_br = sort_median(t_br, reps);
  (void)sort_median(w_hb, reps);
  (void)sort_median(w_rb, reps);
  (void)sort_median(w_dg, reps);
  printf("{\"suite\":\"%s\",\"n\":%zu,\"reps\":%zu,\"clock\":\"thread_cpu\","
         "\"hash_blind_us\":%.3f,\"reblind_us\":%.3f,\"digest_us\":%.3f,"
         "\"hash_blind_median_us\":%.3f,\"reblind_median_us\":%.3f,\"digest_median_us\":%.3f,"
         "\"hash_blind_wall_us\":%.3f,\"reblind_wall_us\":%.3f,\"digest_wall_us\":%.3f,"
         "\"backend\":\"%s\",\"batch_hash_blind_us\":%.3f,\"batch_reblind_us\":%.3f,"
         "\"batch_hash_blind_median_us\":%.3f,\"batch_reblind_median_us\":%.3f,"
         "\"batch_over_one_hash_blind\":%.3f,\"batch_over_one_reblind\":%.3f}\n",
         suite->name, n, reps, t_hb[0], t_rb[0], t_dg[0], m_hb, m_rb, m_dg, w_hb[0], w_rb[0],
         w_dg[0], strcmp(suite->name, "ristretto255") == 0 ? cr_crypto_backend_name() : "openssl",
         t_bh[0], t_br[0], m_bh, m_br, t_bh[0] / t_hb[0], t_br[0] / t_rb[0]);

  cr_scalar_free(suite, k);
  cr_scalar_free(suite, k2);
  free(msgs);
  free(lens);
  free(pts);
  free(out);
  free(dig);
  free(out2);
  free(mp);
  free(t_bh);
  free(t_br);
  free(t_hb);
  free(t_rb);
  free(t_dg);
  free(w_hb);
  free(w_rb);
  free(w_dg);
  return 0;
}
