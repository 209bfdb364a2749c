/*
 * The batched ristretto255 backend (src/crypto/r255x8_*) against libsodium
 * on >= 10^4 inputs per run, every lane compared (tests/support/r255x8_diff.h
 * describes the inputs: random and edge-case encodings, scalars 0, 1, l - 1,
 * l, l + 1, 2^255 - 1, ..., uniform strings; lanes mixing valid and invalid
 * inputs), on every backend this machine can run (the emulated lanes always,
 * the AVX-512 IFMA lanes where the CPU has them). bench/r255x8_diff runs the
 * same checks on as many inputs as asked (10^7 once, docs/crypto-backends.md).
 * Deterministic: CR_R255X8_SEED overrides the seed (a failure prints it),
 * CR_R255X8_SCALE multiplies the counts.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <sodium.h>

#include "cleanroom/crypto.h"
#include "crypto/r255x8.h"

#include "support/r255x8_diff.h"

/* ---- deterministic inputs ------------------------------------------------ */

static r255x8_gen gen;
static unsigned long long seed_value = 20;

/* ---- backends ------------------------------------------------------------ */

static const cr_r255x8_backend *backends[2];
static size_t n_backends;

static int setup(void **state) {
  (void)state;
  if (cr_crypto_init() != 0)
    return -1;
  const char *env = getenv("CR_R255X8_SEED");
  if (env != NULL)
    seed_value = strtoull(env, NULL, 10);
  r255x8_gen_init(&gen, seed_value);
  backends[n_backends++] = &cr__r255x8_emulated;
  if (cr__r255x8_ifma != NULL && cr__r255x8_cpu_has_ifma())
    backends[n_backends++] = cr__r255x8_ifma;
  fprintf(stderr, "r255x8: seed %llu; backends:", seed_value);
  for (size_t i = 0; i < n_backends; i++)
    fprintf(stderr, " %s", backends[i]->name);
  fprintf(stderr, "%s\n",
          n_backends == 1 ? " (this CPU has no AVX-512 IFMA: the IFMA lanes are not run)" : "");
  return 0;
}

/* ---- differential (tests/support/r255x8_diff.h) ------------------------- */

/* Batches of eight lanes per backend; >= 10^4 inputs in all at the default
 * sizes (CR_R255X8_SCALE multiplies them; bench/r255x8_diff runs 10^7). */
#define DIFF_DECODE_BATCHES 656    /* 5248 encodings */
#define DIFF_SCALARMULT_BATCHES 96 /* 768 points, 96 scalars */
#define DIFF_UNIFORM_BATCHES 448   /* 3584 uniform strings */
#define DIFF_HASH_BLIND_BATCHES 64 /* 512 uniform strings, 64 scalars */

static size_t scaled(size_t n) {
  const char *s = getenv("CR_R255X8_SCALE");
  size_t f = s != NULL ? (size_t)strtoul(s, NULL, 10) : 1;
  return n * (f ? f : 1);
}

static void diff_run(int op, size_t batches) {
  for (size_t b = 0; b < n_backends; b++) {
    unsigned valid = 0;
    size_t nb = scaled(batches);
    for (size_t it = 0; it < nb; it++) {
      char why[128];
      if (r255x8_diff_batch(backends[b], &gen, op, it, &valid, why, sizeof why) != 0)
        fail_msg("%s: batch %zu: %s (seed %llu)", backends[b]->name, it, why, seed_value);
    }
    /* Valid and invalid inputs both well represented, or the generator
     * is broken and the test proves less than it says. */
    if (op == R255X8_DECODE || op == R255X8_SCALARMULT) {
      assert_true(valid > nb * 8 / 4);
      assert_true(valid < nb * 8 * 7 / 8);
    }
  }
}

static void test_diff_decode(void **state) {
  (void)state;
  diff_run(R255X8_DECODE, DIFF_DECODE_BATCHES);
}

static void test_diff_scalarmult(void **state) {
  (void)state;
  diff_run(R255X8_SCALARMULT, DIFF_SCALARMULT_BATCHES);
}

static void test_diff_from_uniform(void **state) {
  (void)state;
  diff_run(R255X8_FROM_UNIFORM, DIFF_UNIFORM_BATCHES);
}

static void test_diff_hash_blind(void **state) {
  (void)state;
  diff_run(R255X8_HASH_BLIND, DIFF_HASH_BLIND_BATCHES);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_diff_decode),
      cmocka_unit_test(test_diff_scalarmult),
      cmocka_unit_test(test_diff_from_uniform),
      cmocka_unit_test(test_diff_hash_blind),
  };
  return cmocka_run_group_tests(tests, setup, NULL);
}
