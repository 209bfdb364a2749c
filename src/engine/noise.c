/*
 * Exact samplers for differentially private counts (include/cleanroom/
 * noise.h): Canonne, Kamath, Steinke 2020, "The Discrete Gaussian for
 * Differential Privacy" (NeurIPS), Algorithms 1 (Bernoulli(exp(-gamma))),
 * 2 (discrete Laplace) and 3 (discrete Gaussian).
 *
 * Every probability is a ratio of integers and every draw a uniform
 * integer obtained by rejection from random bytes, so the distributions
 * are exactly the ones named: no floating point touches a sample. The
 * Gaussian's acceptance test needs up to about 110-bit integers, held in
 * unsigned __int128 (GCC and Clang on every platform Debian builds for).
 */
#include "cleanroom/noise.h"

#include <math.h>
#include <string.h>

#include <sodium.h>

__extension__ typedef unsigned __int128 u128;

static int draw(cr_rand_fn rand, void *ctx, uint8_t *buf, size_t len) {
  int rc = rand ? rand(ctx, buf, len) : cr_engine_rand_default(NULL, buf, len);
  return rc ? (rc < 0 ? rc : CR_ECRYPTO) : 0;
}

static unsigned bit_length(u128 x) {
  unsigned b = 0;
  while (x != 0) {
    b++;
    x >>= 1;
  }
  return b;
}

/* Uniform in [0, m), m >= 1: the fewest bytes that hold m - 1, the bits
 * above it masked, values >= m rejected (each try succeeds with
 * probability > 1/2). */
static int uniform(cr_rand_fn rand, void *ctx, u128 m, u128 *out) {
  unsigned bits = bit_length(m - 1);
  size_t nbytes = (bits + 7) / 8;
  u128 mask = bits >= 128 ? ~(u128)0 : (((u128)1 << bits) - 1);
  uint8_t b[16];
  if (m <= 1) {
    *out = 0;
    return 0;
  }
  for (;;) {
    int rc = draw(rand, ctx, b, nbytes);
    if (rc)
      return rc;
    u128 x = 0;
    for (size_t i = 0; i < nbytes; i++)
      x = (x << 8) | b[i];
    x &= mask;
    if (x < m) {
      *out = x;
      sodium_memzero(b, sizeof b);
      return 0;
    }
  }
}

/* Bernoulli(num / den), num <= den. */
static int bern(cr_rand_fn rand, void *ctx, u128 num, u128 den, int *out) {
  u128 u = 0;
  int rc = uniform(rand, ctx, den, &u);
  if (rc == 0)
    *out = u < num;
  return rc;
}

int cr_noise_bernoulli(cr_rand_fn rand, void *ctx, uint64_t num, uint64_t den, int *out) {
  if (den == 0 || num > den || out == NULL)
    return CR_EINVAL;
  return bern(rand, ctx, num, den, out);
}

/* Bernoulli(exp(-n/d)) for n/d in [0, 1] (Algorithm 1, first branch):
 * K = 1; while Bernoulli(gamma / K) succeeds, K++; 1 when K is odd.
 * Bernoulli(gamma / K) is drawn as Bernoulli(n/d) and Bernoulli(1/K)
 * together (independent: the product of their probabilities), so no
 * product d * K is ever formed. */
static int bern_exp_le1(cr_rand_fn rand, void *ctx, u128 n, u128 d, int *out) {
  uint64_t k = 1;
  for (;;) {
    int a = 0, rc = bern(rand, ctx, n, d, &a);
    if (rc == 0 && a)
      rc = bern(rand, ctx, 1, k, &a);
    if (rc)
      return rc;
    if (!a)
      break;
    k++;
  }
  *out = (int)(k & 1);
  return 0;
}

/* Bernoulli(exp(-n/d)), any n/d >= 0 (Algorithm 1): floor(gamma) draws of
 * Bernoulli(exp(-1)), all of which must succeed, then one of
 * Bernoulli(exp(-(gamma - floor(gamma)))). */
static int bern_exp(cr_rand_fn rand, void *ctx, u128 n, u128 d, int *out) {
  if (n <= d)
    return bern_exp_le1(rand, ctx, n, d, out);
  u128 whole = n / d;
  for (u128 i = 0; i < whole; i++) {
    int b = 0, rc = bern_exp_le1(rand, ctx, 1, 1, &b);
    if (rc)
      return rc;
    if (!b) {
      *out = 0;
      return 0;
    }
  }
  return bern_exp_le1(rand, ctx, n % d, d, out);
}

int cr_noise_bernoulli_exp(cr_rand_fn rand, void *ctx, uint64_t num, uint64_t den, int *out) {
  if (den == 0 || out == NULL)
    return CR_EINVAL;
  return bern_exp(rand, ctx, num, den, out);
}

int cr_noise_laplace(cr_rand_fn rand, void *ctx, uint64_t s, uint64_t t, int64_t *out) {
  if (s == 0 || t == 0 || out == NULL)
    return CR_EINVAL;
  for (;;) {
    u128 u = 0;
    int d = 0, b = 0, rc = uniform(rand, ctx, t, &u);
    if (rc == 0)
      rc = bern_exp_le1(rand, ctx, u, t, &d);
    if (rc)
      return rc;
    if (!d)
      continue;
    uint64_t v = 0;
    for (;;) {
      int a = 0;
      if ((rc = bern_exp_le1(rand, ctx, 1, 1, &a)) != 0)
        return rc;
      if (!a)
        break;
      v++;
    }
    u128 x = (u128)u + (u128)t * v; /* < 2^128: t, v < 2^64 */
    u128 y = x / s;
    if ((rc = bern(rand, ctx, 1, 2, &b)) != 0)
      return rc;
    if (b && y == 0)
      continue;
    if (y > (u128)INT64_MAX)
      return CR_EINTERNAL; /* v > 2^40 or so: probability below e^-10^12 */
    *out = b ? -(int64_t)y : (int64_t)y;
    return 0;
  }
}

#define GAUSS_MAX_NUM ((uint64_t)1 << 54)
#define GAUSS_MAX_DEN ((uint64_t)1 << 20)
#define GAUSS_MAX_T (((uint64_t)1 << 17) + 1)
/* When (|Y| b t - a)^2 would not fit 128 bits, gamma >= 2^128 / 2^110. */
#define GAUSS_HUGE_GAMMA ((uint64_t)1 << 18)

int cr_noise_gaussian(cr_rand_fn rand, void *ctx, uint64_t num, uint64_t den, int64_t *out) {
  if (num == 0 || den == 0 || num > GAUSS_MAX_NUM || den > GAUSS_MAX_DEN || out == NULL)
    return CR_EINVAL;
  /* f = floor(sigma): the largest f with f^2 den <= num, exactly. */
  uint64_t f = (uint64_t)sqrt((double)num / (double)den);
  while (f > 0 && f * f * den > num)
    f--;
  while ((f + 1) * (f + 1) * den <= num)
    f++;
  uint64_t t = f + 1;
  if (t > GAUSS_MAX_T)
    return CR_EINVAL;
  /* gamma = (|Y| - sigma^2/t)^2 / (2 sigma^2) = (|Y| den t - num)^2 / (2 num den t^2). */
  u128 dd = (u128)2 * num * den * t * t; /* <= 2^110 */
  for (;;) {
    int64_t y = 0;
    int c = 0, rc = cr_noise_laplace(rand, ctx, 1, t, &y);
    if (rc)
      return rc;
    uint64_t ay = y < 0 ? (uint64_t)0 - (uint64_t)y : (uint64_t)y;
    u128 m = (u128)ay * den * t; /* < 2^63 * 2^37 */
    u128 diff = m >= num ? m - num : (u128)num - m;
    if (diff >> 64) {
      /* gamma >= 2^18: GAUSS_HUGE_GAMMA draws of Bernoulli(exp(-1)) must
       * all succeed before the rest would even matter. */
      int all = 1;
      for (uint64_t i = 0; i < GAUSS_HUGE_GAMMA && all; i++)
        if ((rc = bern_exp_le1(rand, ctx, 1, 1, &all)) != 0)
          return rc;
      if (!all)
        continue;
      return CR_EINTERNAL;
    }
    if ((rc = bern_exp(rand, ctx, diff * diff, dd, &c)) != 0)
      return rc;
    if (c) {
      *out = y;
      return 0;
    }
  }
}

static uint64_t gcd64(uint64_t a, uint64_t b) {
  while (b != 0) {
    uint64_t r = a % b;
    a = b;
    b = r;
  }
  return a;
}

int cr_noise_sample(const cr_noise *n, cr_rand_fn rand, void *ctx, int64_t *out) {
  if (n == NULL)
    return CR_EINVAL;
  if (n->mechanism == CR_NOISE_DISCRETE_LAPLACE && n->epsilon > 0) {
    /* scale 1/epsilon = UNIT / epsilon = t / s */
    uint64_t g = gcd64(CR_DP_EPSILON_UNIT, n->epsilon);
    return cr_noise_laplace(rand, ctx, n->epsilon / g, CR_DP_EPSILON_UNIT / g, out);
  }
  if (n->mechanism == CR_NOISE_DISCRETE_GAUSSIAN && n->sigma > 0 && n->sigma <= CR_DP_MAX_SIGMA) {
    uint64_t num = n->sigma * n->sigma, den = CR_DP_SIGMA_UNIT * CR_DP_SIGMA_UNIT;
    uint64_t g = gcd64(num, den);
    return cr_noise_gaussian(rand, ctx, num / g, den / g, out);
  }
  return CR_EINVAL;
}

/* ---- the seeded stream ---------------------------------------------------- */

void cr_noise_stream_init(cr_noise_stream *s, const uint8_t key[32], uint64_t index) {
  memset(s, 0, sizeof *s);
  memcpy(s->key, key, sizeof s->key);
  for (int i = 0; i < 8; i++)
    s->nonce[4 + i] = (uint8_t)(index >> (56 - 8 * i));
  s->pos = sizeof s->buf; /* empty */
}

int cr_noise_stream_read(void *ctx, uint8_t *buf, size_t len) {
  static const uint8_t zero[64];
  cr_noise_stream *s = ctx;
  while (len > 0) {
    if (s->pos == sizeof s->buf) {
      if (s->block == UINT32_MAX)
        return CR_ECRYPTO; /* 256 GiB from one number: never */
      if (crypto_stream_chacha20_ietf_xor_ic(s->buf, zero, sizeof s->buf, s->nonce, s->block,
                                             s->key) != 0)
        return CR_ECRYPTO;
      s->block++;
      s->pos = 0;
    }
    size_t n = sizeof s->buf - s->pos;
    if (n > len)
      n = len;
    memcpy(buf, s->buf + s->pos, n);
    s->pos += n;
    buf += n;
    len -= n;
  }
  return 0;
}

void cr_noise_stream_wipe(cr_noise_stream *s) { sodium_memzero(s, sizeof *s); }

/* ---- for people ------------------------------------------------------------- */

static double laplace_p(const cr_noise *n) {
  return exp(-(double)n->epsilon / (double)CR_DP_EPSILON_UNIT);
}

static double gauss_sigma(const cr_noise *n) { return (double)n->sigma / (double)CR_DP_SIGMA_UNIT; }

/* Sums of the Gaussian's weights exp(-x^2 / 2 sigma^2) for |x| <= limit
 * (the rest is below 10^-30 of the total). */
static uint64_t gauss_limit(double sigma) { return (uint64_t)ceil(12.0 * sigma) + 20; }

uint64_t cr_noise_interval(const cr_noise *n, double level) {
  if (n == NULL || !(level > 0.0 && level < 1.0))
    return 0;
  if (n->mechanism == CR_NOISE_DISCRETE_LAPLACE && n->epsilon > 0) {
    /* P(|X| > k) = 2 p^(k+1) / (1 + p), p = exp(-epsilon). */
    double p = laplace_p(n), tail = 1.0 - level;
    double k0 = floor(log(tail * (1.0 + p) / 2.0) / log(p)) - 1.0;
    uint64_t k = k0 > 0.0 ? (uint64_t)k0 : 0;
    while (2.0 * pow(p, (double)k + 1.0) / (1.0 + p) > tail)
      k++;
    while (k > 0 && 2.0 * pow(p, (double)k) / (1.0 + p) <= tail)
      k--;
    return k;
  }
  if (n->mechanism == CR_NOISE_DISCRETE_GAUSSIAN && n->sigma > 0) {
    double s = gauss_sigma(n), z = 1.0, acc;
    uint64_t lim = gauss_limit(s);
    for (uint64_t x = 1; x <= lim; x++)
      z += 2.0 * exp(-((double)x * (double)x) / (2.0 * s * s));
    acc = 1.0;
    uint64_t k = 0;
    while (acc / z < level && k < lim) {
      k++;
      acc += 2.0 * exp(-((double)k * (double)k) / (2.0 * s * s));
    }
    return k;
  }
  return 0;
}

double cr_noise_variance(const cr_noise *n) {
  if (n == NULL)
    return 0.0;
  if (n->mechanism == CR_NOISE_DISCRETE_LAPLACE && n->epsilon > 0) {
    double p = laplace_p(n);
    return 2.0 * p / ((1.0 - p) * (1.0 - p));
  }
  if (n->mechanism == CR_NOISE_DISCRETE_GAUSSIAN && n->sigma > 0) {
    double s = gauss_sigma(n), z = 1.0, m2 = 0.0;
    uint64_t lim = gauss_limit(s);
    for (uint64_t x = 1; x <= lim; x++) {
      double w = exp(-((double)x * (double)x) / (2.0 * s * s));
      z += 2.0 * w;
      m2 += 2.0 * (double)x * (double)x * w;
    }
    return m2 / z;
  }
  return 0.0;
}

double cr_noise_scale(const cr_noise *n) {
  if (n == NULL)
    return 0.0;
  if (n->mechanism == CR_NOISE_DISCRETE_LAPLACE && n->epsilon > 0)
    return (double)CR_DP_EPSILON_UNIT / (double)n->epsilon;
  if (n->mechanism == CR_NOISE_DISCRETE_GAUSSIAN)
    return gauss_sigma(n);
  return 0.0;
}
