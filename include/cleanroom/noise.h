/*
 * cleanroom — exact noise for differentially private counts (part of the
 * engine layer; docs/privacy.md).
 *
 * Owns: samplers of the discrete Laplace and the discrete Gaussian
 * distributions in integer arithmetic on a stream of uniform random bytes
 * (Canonne, Kamath, Steinke 2020, "The Discrete Gaussian for Differential
 * Privacy", Algorithms 1 to 3); the seeded stream a session derives each
 * noisy number's randomness from; the expected error of a mechanism, for
 * people.
 * Never: samples with floating point (the low bits of a floating-point
 * Laplace sample leak the value it was added to, Mironov 2012: here every
 * probability is an exact ratio of integers); draws randomness of its own
 * (all of it comes from the rand callback, so tests are reproducible);
 * logs, or keeps a seed without wiping it.
 *
 * Every sampler returns 0 with *out set, or a negative CR_E* code: the
 * callback's failure, or CR_EINTERNAL when an exact computation would
 * leave 128-bit arithmetic (possible only after events of probability
 * below e^-500000: the caller then releases nothing rather than
 * approximate).
 */
#ifndef CLEANROOM_NOISE_H
#define CLEANROOM_NOISE_H

#include <stddef.h>
#include <stdint.h>

#include "cleanroom/common.h"
#include "cleanroom/engine.h" /* cr_rand_fn */
#include "cleanroom/template.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Bernoulli(num / den): *out is 1 with probability num/den (num <= den,
 * den > 0; CR_EINVAL otherwise). */
CR_NODISCARD int cr_noise_bernoulli(cr_rand_fn rand, void *ctx, uint64_t num, uint64_t den,
                                    int *out);

/* Bernoulli(exp(-num / den)), den > 0 (CKS Algorithm 1). */
CR_NODISCARD int cr_noise_bernoulli_exp(cr_rand_fn rand, void *ctx, uint64_t num, uint64_t den,
                                        int *out);

/* The discrete Laplace with scale t/s: P(x) proportional to
 * exp(-|x| * s / t), s, t >= 1 (CKS Algorithm 2). */
CR_NODISCARD int cr_noise_laplace(cr_rand_fn rand, void *ctx, uint64_t s, uint64_t t, int64_t *out);

/* The discrete Gaussian with sigma^2 = num / den: P(x) proportional to
 * exp(-x^2 / (2 sigma^2)) (CKS Algorithm 3). num <= 2^54, den <= 2^20 and
 * sigma <= 2^17 (CR_EINVAL otherwise): the template's sigma (at most
 * 100000, in thousandths) always fits. */
CR_NODISCARD int cr_noise_gaussian(cr_rand_fn rand, void *ctx, uint64_t num, uint64_t den,
                                   int64_t *out);

/* One draw of the query's mechanism: the discrete Laplace with scale
 * 1/epsilon, or the discrete Gaussian with sigma, both exact rationals of
 * the template's fixed point. CR_EINVAL for CR_NOISE_NONE. */
CR_NODISCARD int cr_noise_sample(const cr_noise *n, cr_rand_fn rand, void *ctx, int64_t *out);

/*
 * A deterministic stream of uniform bytes: ChaCha20 (IETF, libsodium) keyed
 * with a 32-byte seed, nonce 0^4 || u64be(index), block counter from 0. A
 * session gives each released number its own index, so the numbers get
 * independent noise from one shared seed. cr_noise_stream_read has the
 * shape of cr_rand_fn (ctx: the stream).
 */
typedef struct cr_noise_stream {
  uint8_t key[32];
  uint8_t nonce[12];
  uint32_t block;
  uint8_t buf[64];
  size_t pos; /* bytes of buf used */
} cr_noise_stream;
void cr_noise_stream_init(cr_noise_stream *s, const uint8_t key[32], uint64_t index);
int cr_noise_stream_read(void *ctx, uint8_t *buf, size_t len);
void cr_noise_stream_wipe(cr_noise_stream *s);

/*
 * For people (never for sampling): the smallest k with P(|X| <= k) >=
 * level, computed from the mechanism's probability mass function (the
 * true value is within +-k of a released one with that probability); its
 * variance; and its scale (1/epsilon for the Laplace, sigma for the
 * Gaussian). 0 for CR_NOISE_NONE.
 */
uint64_t cr_noise_interval(const cr_noise *n, double level);
double cr_noise_variance(const cr_noise *n);
double cr_noise_scale(const cr_noise *n);

#ifdef __cplusplus
}
#endif
#endif
