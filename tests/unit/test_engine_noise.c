/*
 * The exact noise samplers (src/engine/noise.c) against their probability
 * mass functions: a chi-square test over 10^5 draws per parameter, with a
 * fixed seed through the injected randomness (a ChaCha20 stream), and a
 * check that the same test rejects a slightly different parameter (so it
 * can fail). The Bernoulli primitives against their probabilities, the
 * rejection of out-of-range bytes byte by byte, the seeded stream, and
 * the expected error shown to people.
 */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <sodium.h>

#include "cleanroom/noise.h"

#define DRAWS 100000

static cr_noise_stream g_stream;

/* The injected randomness: a ChaCha20 stream from a fixed seed. */
static void seed(uint8_t tag) {
  uint8_t key[32];
  memset(key, 0, sizeof key);
  key[0] = 'T';
  key[1] = tag;
  cr_noise_stream_init(&g_stream, key, 7);
}

/* ---- scripted bytes ------------------------------------------------------- */

typedef struct script {
  const uint8_t *bytes;
  size_t n, pos, calls;
} script;

static int script_rand(void *ctx, uint8_t *buf, size_t len) {
  script *s = ctx;
  s->calls++;
  if (s->pos + len > s->n)
    return CR_ECRYPTO;
  memcpy(buf, s->bytes + s->pos, len);
  s->pos += len;
  return 0;
}

static int failing_rand(void *ctx, uint8_t *buf, size_t len) {
  (void)ctx;
  (void)buf;
  (void)len;
  return CR_ECRYPTO;
}

/* Bernoulli(1/3) draws one byte masked to 2 bits: 3 is rejected, 0 is a
 * success, 1 and 2 failures; nothing else is read. */
static void test_uniform_rejection(void **state) {
  (void)state;
  static const uint8_t b[] = {0xff, 0x07, 0xfe, 0x00, 0x01};
  script s = {b, sizeof b, 0, 0};
  int out = -1;
  assert_int_equal(cr_noise_bernoulli(script_rand, &s, 1, 3, &out), 0);
  assert_int_equal(out, 0); /* 0xff -> 3 rejected, 0x07 -> 3 rejected, 0xfe -> 2 */
  assert_int_equal(s.calls, 3);
  assert_int_equal(cr_noise_bernoulli(script_rand, &s, 1, 3, &out), 0);
  assert_int_equal(out, 1); /* 0x00 */
  assert_int_equal(cr_noise_bernoulli(script_rand, &s, 1, 3, &out), 0);
  assert_int_equal(out, 0); /* 0x01 */
  assert_int_equal(s.calls, 5);
  /* Certain outcomes still consume nothing they do not need. */
  assert_int_equal(cr_noise_bernoulli(script_rand, &s, 1, 1, &out), 0);
  assert_int_equal(out, 1);
  assert_int_equal(s.calls, 5);
  /* Bad arguments and a failing source. */
  assert_int_equal(cr_noise_bernoulli(script_rand, &s, 4, 3, &out), CR_EINVAL);
  assert_int_equal(cr_noise_bernoulli(script_rand, &s, 0, 0, &out), CR_EINVAL);
  assert_int_equal(cr_noise_bernoulli_exp(script_rand, &s, 1, 0, &out), CR_EINVAL);
  assert_int_equal(cr_noise_bernoulli(failing_rand, NULL, 1, 3, &out), CR_ECRYPTO);
  int64_t x;
  assert_int_equal(cr_noise_laplace(failing_rand, NULL, 1, 2, &x), CR_ECRYPTO);
  assert_int_equal(cr_noise_gaussian(failing_rand, NULL, 4, 1, &x), CR_ECRYPTO);
  assert_int_equal(cr_noise_laplace(script_rand, &s, 0, 2, &x), CR_EINVAL);
  assert_int_equal(cr_noise_gaussian(script_rand, &s, 0, 1, &x), CR_EINVAL);
  assert_int_equal(cr_noise_gaussian(script_rand, &s, (1ULL << 54) + 1, 1, &x), CR_EINVAL);
  cr_noise none = {0};
  assert_int_equal(cr_noise_sample(&none, script_rand, &s, &x), CR_EINVAL);
}

/* |observed - expected| frequency within 5 standard errors. */
static void assert_freq(uint64_t hits, uint64_t n, double p, const char *what) {
  double f = (double)hits / (double)n, se = sqrt(p * (1.0 - p) / (double)n);
  if (fabs(f - p) > 5.0 * se + 1e-12)
    fail_msg("%s: frequency %.5f, expected %.5f (5 se = %.5f)", what, f, p, 5.0 * se);
}

static void test_bernoulli(void **state) {
  (void)state;
  static const struct {
    uint64_t num, den;
  } c[] = {{1, 3}, {7, 10}, {0, 5}, {5, 5}, {123456789, 1000000007}};
  seed(1);
  for (size_t i = 0; i < sizeof c / sizeof c[0]; i++) {
    uint64_t hits = 0;
    for (int k = 0; k < DRAWS; k++) {
      int b = 0;
      assert_int_equal(cr_noise_bernoulli(cr_noise_stream_read, &g_stream, c[i].num, c[i].den, &b),
                       0);
      hits += (uint64_t)b;
    }
    if (c[i].num == 0)
      assert_int_equal(hits, 0);
    if (c[i].num == c[i].den)
      assert_int_equal(hits, DRAWS);
    assert_freq(hits, DRAWS, (double)c[i].num / (double)c[i].den, "Bernoulli(num/den)");
  }
}

static void test_bernoulli_exp(void **state) {
  (void)state;
  static const struct {
    uint64_t num, den;
  } c[] = {{0, 1}, {1, 2}, {1, 1}, {3, 2}, {7, 3}, {5, 1}, {999999, 1000000}};
  seed(2);
  for (size_t i = 0; i < sizeof c / sizeof c[0]; i++) {
    uint64_t hits = 0;
    for (int k = 0; k < DRAWS; k++) {
      int b = 0;
      assert_int_equal(
          cr_noise_bernoulli_exp(cr_noise_stream_read, &g_stream, c[i].num, c[i].den, &b), 0);
      hits += (uint64_t)b;
    }
    if (c[i].num == 0)
      assert_int_equal(hits, DRAWS);
    assert_freq(hits, DRAWS, exp(-(double)c[i].num / (double)c[i].den), "Bernoulli(exp(-g))");
  }
}

/* ---- chi-square against the probability mass function -------------------- */

typedef double (*pmf_fn)(int64_t x, double param);

/* P(x) = (1 - p) / (1 + p) p^|x|, p = exp(-1/scale). */
static double laplace_pmf(int64_t x, double scale) {
  double p = exp(-1.0 / scale);
  return (1.0 - p) / (1.0 + p) * pow(p, fabs((double)x));
}

/* P(x) = exp(-x^2 / 2 sigma^2) / sum over all integers. */
static double gauss_pmf(int64_t x, double sigma) {
  double z = 0.0;
  int64_t lim = (int64_t)(12.0 * sigma) + 20;
  for (int64_t y = -lim; y <= lim; y++)
    z += exp(-(double)(y * y) / (2.0 * sigma * sigma));
  return exp(-(double)(x * x) / (2.0 * sigma * sigma)) / z;
}

#define MAXV 4000

/* Chi-square of the counts (indexed x + MAXV) against pmf: every value
 * with expected count >= 5 its own bin, both tails pooled. *df set. */
static double chi2(const uint64_t *counts, uint64_t n, pmf_fn pmf, double param, int *df) {
  double stat = 0.0, lo_e = 0.0, hi_e = 0.0;
  uint64_t lo_o = 0, hi_o = 0;
  int bins = 0;
  int64_t lo = 0, hi = 0;
  while (lo > -MAXV + 1 && pmf(lo - 1, param) * (double)n >= 5.0)
    lo--;
  while (hi < MAXV - 1 && pmf(hi + 1, param) * (double)n >= 5.0)
    hi++;
  double inside = 0.0;
  for (int64_t x = lo; x <= hi; x++) {
    double e = pmf(x, param) * (double)n;
    double o = (double)counts[x + MAXV];
    stat += (o - e) * (o - e) / e;
    inside += e;
    bins++;
  }
  for (int64_t x = -MAXV; x < lo; x++)
    lo_o += counts[x + MAXV];
  for (int64_t x = hi + 1; x < MAXV; x++)
    hi_o += counts[x + MAXV];
  lo_e = hi_e = ((double)n - inside) / 2.0; /* symmetric tails */
  if (lo_e > 0.0) {
    stat += ((double)lo_o - lo_e) * ((double)lo_o - lo_e) / lo_e;
    stat += ((double)hi_o - hi_e) * ((double)hi_o - hi_e) / hi_e;
    bins += 2;
  }
  *df = bins - 1;
  return stat;
}

/* The chi-square quantile at 1 - 0.001 (Wilson-Hilferty). */
static double chi2_critical(int df) {
  double k = (double)df, z = 3.090;
  double a = 1.0 - 2.0 / (9.0 * k) + z * sqrt(2.0 / (9.0 * k));
  return k * a * a * a;
}

/* 10^5 draws of the mechanism into counts; returns the sample mean. */
static double sample(const cr_noise *nz, uint64_t *counts) {
  double sum = 0.0;
  memset(counts, 0, sizeof(uint64_t) * 2 * MAXV);
  for (int i = 0; i < DRAWS; i++) {
    int64_t x = 0;
    assert_int_equal(cr_noise_sample(nz, cr_noise_stream_read, &g_stream, &x), 0);
    if (x <= -MAXV)
      x = -MAXV;
    if (x >= MAXV)
      x = MAXV - 1;
    counts[x + MAXV]++;
    sum += (double)x;
  }
  return sum / DRAWS;
}

static void check_fit(const cr_noise *nz, pmf_fn pmf, double param, double wrong_param) {
  uint64_t *counts = calloc(2 * MAXV, sizeof *counts);
  assert_non_null(counts);
  double mean = sample(nz, counts);
  int df = 0;
  double stat = chi2(counts, DRAWS, pmf, param, &df);
  if (stat > chi2_critical(df))
    fail_msg("%s %g: chi-square %.1f with %d df, above %.1f",
             cr_noise_mechanism_name(nz->mechanism), param, stat, df, chi2_critical(df));
  /* The mean of a symmetric distribution: within 5 standard errors of 0. */
  double se = sqrt(cr_noise_variance(nz) / DRAWS);
  assert_true(fabs(mean) <= 5.0 * se);
  /* The test has power: a parameter 15% off is rejected. */
  double wrong = chi2(counts, DRAWS, pmf, wrong_param, &df);
  if (!(wrong > chi2_critical(df)))
    fail_msg("%s %g: chi-square against %g is %.1f (%d df), not above %.1f",
             cr_noise_mechanism_name(nz->mechanism), param, wrong_param, wrong, df,
             chi2_critical(df));
  free(counts);
}

static void test_laplace_fits_pmf(void **state) {
  (void)state;
  static const uint64_t eps[] = {500000, 1000000, 100000, 2500000, 333333};
  seed(3);
  for (size_t i = 0; i < sizeof eps / sizeof eps[0]; i++) {
    cr_noise nz = {CR_NOISE_DISCRETE_LAPLACE, eps[i], 0, 0, false};
    double scale = (double)CR_DP_EPSILON_UNIT / (double)eps[i];
    assert_true(fabs(cr_noise_scale(&nz) - scale) < 1e-9);
    check_fit(&nz, laplace_pmf, scale, scale * 1.15);
  }
}

static void test_gaussian_fits_pmf(void **state) {
  (void)state;
  static const uint64_t sigma[] = {1000, 3500, 500, 12345, 250};
  seed(4);
  for (size_t i = 0; i < sizeof sigma / sizeof sigma[0]; i++) {
    cr_noise nz = {CR_NOISE_DISCRETE_GAUSSIAN, 1, 1, sigma[i], true};
    double s = (double)sigma[i] / (double)CR_DP_SIGMA_UNIT;
    check_fit(&nz, gauss_pmf, s, s * 1.15);
    /* The discrete Gaussian's variance is at most sigma^2 (CKS Cor. 9). */
    assert_true(cr_noise_variance(&nz) <= s * s + 1e-9);
  }
}

/* The Gaussian with an arbitrary rational sigma^2 (here 7/3), directly. */
static void test_gaussian_rational(void **state) {
  (void)state;
  uint64_t *counts = calloc(2 * MAXV, sizeof *counts);
  assert_non_null(counts);
  seed(5);
  for (int i = 0; i < DRAWS; i++) {
    int64_t x = 0;
    assert_int_equal(cr_noise_gaussian(cr_noise_stream_read, &g_stream, 7, 3, &x), 0);
    assert_true(x > -MAXV && x < MAXV);
    counts[x + MAXV]++;
  }
  int df = 0;
  double stat = chi2(counts, DRAWS, gauss_pmf, sqrt(7.0 / 3.0), &df);
  assert_true(stat <= chi2_critical(df));
  free(counts);
}

/* ---- the seeded stream ----------------------------------------------------- */

static void test_stream(void **state) {
  (void)state;
  uint8_t key[32], a[300], b[300], c[300];
  for (int i = 0; i < 32; i++)
    key[i] = (uint8_t)i;
  cr_noise_stream s;
  cr_noise_stream_init(&s, key, 0);
  assert_int_equal(cr_noise_stream_read(&s, a, sizeof a), 0);
  /* The same bytes read in odd pieces across block boundaries. */
  cr_noise_stream_init(&s, key, 0);
  size_t off = 0, piece = 1;
  while (off < sizeof b) {
    size_t n = piece < sizeof b - off ? piece : sizeof b - off;
    assert_int_equal(cr_noise_stream_read(&s, b + off, n), 0);
    off += n;
    piece = piece * 3 % 97 + 1;
  }
  assert_memory_equal(a, b, sizeof a);
  /* ChaCha20-IETF, nonce 0^4 || u64be(index), counter 0: libsodium's own. */
  uint8_t nonce[12] = {0};
  crypto_stream_chacha20_ietf(c, sizeof c, nonce, key);
  assert_memory_equal(a, c, sizeof a);
  /* Another index, another stream. */
  cr_noise_stream_init(&s, key, 1);
  assert_int_equal(cr_noise_stream_read(&s, b, sizeof b), 0);
  assert_memory_not_equal(a, b, sizeof a);
  nonce[11] = 1;
  crypto_stream_chacha20_ietf(c, sizeof c, nonce, key);
  assert_memory_equal(b, c, sizeof b);
  cr_noise_stream_wipe(&s);
  uint8_t zero[sizeof s];
  memset(zero, 0, sizeof zero);
  assert_memory_equal(&s, zero, sizeof s);
}

/* ---- expected error ---------------------------------------------------------- */

static uint64_t brute_interval(pmf_fn pmf, double param, double level) {
  double acc = pmf(0, param);
  uint64_t k = 0;
  while (acc < level) {
    k++;
    acc += 2.0 * pmf((int64_t)k, param);
  }
  return k;
}

static void test_interval(void **state) {
  (void)state;
  static const uint64_t eps[] = {500000, 1000000, 100000, 2500000, 1};
  for (size_t i = 0; i < sizeof eps / sizeof eps[0]; i++) {
    cr_noise nz = {CR_NOISE_DISCRETE_LAPLACE, eps[i], 0, 0, false};
    double scale = (double)CR_DP_EPSILON_UNIT / (double)eps[i];
    uint64_t k = cr_noise_interval(&nz, 0.95);
    if (eps[i] > 1)
      assert_int_equal(k, brute_interval(laplace_pmf, scale, 0.95));
    /* The defining property, from the closed form of the tail. */
    double p = exp(-1.0 / scale);
    assert_true(2.0 * pow(p, (double)k + 1.0) / (1.0 + p) <= 0.05);
    if (k > 0)
      assert_true(2.0 * pow(p, (double)k) / (1.0 + p) > 0.05);
    /* Variance 2p / (1 - p)^2. */
    assert_true(fabs(cr_noise_variance(&nz) - 2.0 * p / ((1.0 - p) * (1.0 - p))) <=
                1e-9 * cr_noise_variance(&nz));
  }
  /* epsilon 0.5: +-6 at 95%; epsilon 1: +-3. */
  cr_noise half = {CR_NOISE_DISCRETE_LAPLACE, 500000, 0, 0, false};
  cr_noise one = {CR_NOISE_DISCRETE_LAPLACE, 1000000, 0, 0, false};
  assert_int_equal(cr_noise_interval(&half, 0.95), 6);
  assert_int_equal(cr_noise_interval(&one, 0.95), 3);
  static const uint64_t sigma[] = {1000, 3500, 500, 12345, 100000000};
  for (size_t i = 0; i < sizeof sigma / sizeof sigma[0]; i++) {
    cr_noise nz = {CR_NOISE_DISCRETE_GAUSSIAN, 1, 1, sigma[i], true};
    double s = (double)sigma[i] / (double)CR_DP_SIGMA_UNIT;
    uint64_t k = cr_noise_interval(&nz, 0.95);
    if (sigma[i] < 100000)
      assert_int_equal(k, brute_interval(gauss_pmf, s, 0.95));
    assert_true(fabs((double)k - 1.96 * s) <= 1.0 + 0.01 * s); /* about 1.96 sigma */
  }
  cr_noise none = {0};
  assert_int_equal(cr_noise_interval(&none, 0.95), 0);
  assert_true(cr_noise_variance(&none) == 0.0);
}

int main(void) {
  if (sodium_init() < 0)
    return 1;
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_uniform_rejection),
      cmocka_unit_test(test_bernoulli),
      cmocka_unit_test(test_bernoulli_exp),
      cmocka_unit_test(test_laplace_fits_pmf),
      cmocka_unit_test(test_gaussian_fits_pmf),
      cmocka_unit_test(test_gaussian_rational),
      cmocka_unit_test(test_stream),
      cmocka_unit_test(test_interval),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
