/*
 * The batched ristretto255 backend (src/crypto/r255x8_*) against the RFCs
 * and libsodium, on every backend this machine can run: always the emulated
 * lanes (the algorithm the AVX-512 IFMA lanes run, compiled on portable C
 * lanes), and the IFMA lanes too where the CPU has them. The differential
 * tests are in test_crypto_r255x8_diff.c.
 *
 *   known answers   RFC 9496 A.1 (generator multiples, through decode,
 *                   scalar multiplication and encode), A.2 (every invalid
 *                   encoding refused, in lanes mixed with valid ones), A.3
 *                   (element derivation); RFC 9380 K.3's SHA-512 messages
 *                   through expand_message_xmd into the batched map
 *   differential    random and edge-case encodings, scalars, uniform bytes:
 *                   every lane compared with libsodium (>= 10^4 inputs in
 *                   all; bench/r255x8_diff runs as many as asked)
 *   the suite       hash_blind_batch and reblind_batch under each backend
 *                   give the one-element functions' bytes, errors and bad
 *                   index
 *
 * Inputs come from a seeded deterministic generator (CR_R255X8_SEED
 * overrides the seed; a failure prints it), so a failure reproduces.
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
#include "crypto/crypto_internal.h"
#include "crypto/r255x8.h"

#include "support/r255x8_diff.h" /* the generator and the constants */
#include "support/vectors.h"

/* ---- deterministic inputs ------------------------------------------------ */

static r255x8_gen gen;
static unsigned long long seed_value = 20;

#define field_p r255x8_p
#define group_l r255x8_l
#define le_add r255x8_le_add
#define le_sub r255x8_le_sub
#define le_small r255x8_le_small

static void rng(void *buf, size_t len) { r255x8_rng(&gen, buf, len); }
static uint32_t rng_u32(void) { return r255x8_u32(&gen); }

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

#define FAIL_AT(be, what, lane)                                                                    \
  fail_msg("%s: %s, lane %d (seed %llu)", (be)->name, (what), (int)(lane), seed_value)

/* ---- RFC 9496 A.1 --------------------------------------------------------- */

static void test_rfc9496_a1_generator_multiples(void **state) {
  (void)state;
  vec_file *vf = vec_load("rfc9496_a1_generator_multiples.txt");
  assert_int_equal(vf->n, 16);
  uint8_t enc[16][32];
  for (size_t i = 0; i < 16; i++) {
    assert_int_equal(strtoul(vec_need(&vf->rec[i], "multiple"), NULL, 10), i);
    hex_exact(enc[i], 32, vec_need(&vf->rec[i], "encoding"));
  }
  vec_free(vf);

  for (size_t b = 0; b < n_backends; b++) {
    const cr_r255x8_backend *be = backends[b];
    uint8_t in[8][32], out[8][32], k[32];

    /* i * B for every listed i, B in all eight lanes. */
    for (size_t l = 0; l < 8; l++)
      memcpy(in[l], enc[1], 32);
    for (unsigned i = 0; i < 16; i++) {
      le_small(k, i);
      assert_int_equal(be->scalarmult(out, k, in), 0xff);
      for (int l = 0; l < 8; l++)
        if (memcmp(out[l], enc[i], 32) != 0)
          FAIL_AT(be, "A.1 i * B", l);
    }
    /* Each multiple decodes (the identity too) and encodes back to itself,
     * and 1 * P = P with eight different points in the lanes. */
    for (size_t half = 0; half < 2; half++) {
      memcpy(in, enc[8 * half], sizeof in);
      assert_int_equal(be->roundtrip(out, in), 0xff);
      assert_memory_equal(out, in, sizeof in);
      le_small(k, 1);
      assert_int_equal(be->scalarmult(out, k, in), 0xff);
      assert_memory_equal(out, in, sizeof in);
    }
    /* (l - 1) * (iB) = -(iB) = (l - i) * B: compared with i * B negated by
     * libsodium. */
    uint8_t one[32], lm1[32];
    le_small(one, 1);
    le_sub(lm1, group_l, one);
    memcpy(in, enc[8], sizeof in);
    assert_int_equal(be->scalarmult(out, lm1, in), 0xff);
    for (int l = 0; l < 8; l++) {
      uint8_t want[32];
      assert_int_equal(crypto_scalarmult_ristretto255(want, lm1, in[l]), 0);
      if (memcmp(out[l], want, 32) != 0)
        FAIL_AT(be, "A.1 (l-1) * iB", l);
    }
  }
}

/* ---- RFC 9496 A.2 --------------------------------------------------------- */

static void test_rfc9496_a2_invalid_encodings(void **state) {
  (void)state;
  vec_file *vf = vec_load("rfc9496_a2_invalid_encodings.txt");
  assert_int_equal(vf->n, 29);
  uint8_t bad[29][32];
  for (size_t i = 0; i < vf->n; i++)
    hex_exact(bad[i], 32, vec_need(&vf->rec[i], "encoding"));
  vec_free(vf);

  for (size_t b = 0; b < n_backends; b++) {
    const cr_r255x8_backend *be = backends[b];
    /* Each invalid encoding in every lane position, the other lanes valid
     * points: exactly that lane fails, the others are untouched by it. */
    for (size_t i = 0; i < 29; i++) {
      uint8_t in[8][32], out[8][32], k[32];
      size_t pos = i % 8;
      for (size_t l = 0; l < 8; l++)
        crypto_core_ristretto255_random(in[l]);
      memcpy(in[pos], bad[i], 32);
      unsigned want_mask = 0xffu & ~(1u << pos);
      if (be->roundtrip(out, in) != want_mask)
        FAIL_AT(be, "A.2 invalid encoding accepted by decode", pos);
      for (size_t l = 0; l < 8; l++) {
        static const uint8_t identity[32];
        const uint8_t *want = l == pos ? identity : in[l];
        if (memcmp(out[l], want, 32) != 0)
          FAIL_AT(be, "A.2 roundtrip output", l);
      }
      crypto_core_ristretto255_scalar_random(k);
      if (be->scalarmult(out, k, in) != want_mask)
        FAIL_AT(be, "A.2 invalid encoding accepted by scalarmult", pos);
      assert_true(sodium_is_zero(out[pos], 32));
    }
    /* All 29, eight at a time: nothing decodes. */
    for (size_t i = 0; i < 29; i += 8) {
      uint8_t in[8][32], out[8][32];
      for (size_t l = 0; l < 8; l++)
        memcpy(in[l], bad[(i + l) % 29], 32);
      assert_int_equal(be->roundtrip(out, in), 0);
      assert_true(sodium_is_zero(out[0], sizeof out));
    }
  }
}

/* ---- RFC 9496 A.3 --------------------------------------------------------- */

static void test_rfc9496_a3_element_derivation(void **state) {
  (void)state;
  vec_file *vf = vec_load("rfc9496_a3_element_derivation.txt");
  assert_int_equal(vf->n, 11);
  uint8_t in[16][64], want[16][32];
  for (size_t i = 0; i < 16; i++) {
    hex_exact(in[i], 64, vec_need(&vf->rec[i % 11], "I"));
    hex_exact(want[i], 32, vec_need(&vf->rec[i % 11], "O"));
  }
  vec_free(vf);

  for (size_t b = 0; b < n_backends; b++) {
    const cr_r255x8_backend *be = backends[b];
    for (size_t half = 0; half < 2; half++) {
      uint8_t out[8][32], k[32];
      be->from_uniform(out, (const uint8_t(*)[64])in[8 * half]);
      assert_memory_equal(out, want[8 * half], sizeof out);
      /* 1 * derive(I) through the blinding entry point. */
      le_small(k, 1);
      be->hash_blind(out, k, (const uint8_t(*)[64])in[8 * half]);
      assert_memory_equal(out, want[8 * half], sizeof out);
    }
  }
}

/* ---- RFC 9380 K.3 messages through the batched hash ----------------------- */

static void test_rfc9380_k3_hash_to_group(void **state) {
  (void)state;
  vec_file *vf = vec_load("rfc9380_expand_message_xmd_sha512.txt");
  const char *dst = vec_need(&vf->rec[0], "DST");
  const char *msgs[8];
  size_t n_msgs = 0;
  /* K.3's distinct messages (each is listed for two output lengths). */
  for (size_t i = 1; i < vf->n; i++) {
    const char *m = vec_need(&vf->rec[i], "msg");
    int seen = 0;
    for (size_t j = 0; j < n_msgs; j++)
      seen |= strcmp(msgs[j], m) == 0;
    if (!seen && n_msgs < 8)
      msgs[n_msgs++] = m;
  }
  assert_int_equal(n_msgs, 5);
  /* Each with K.3's DST and with the suite's own: ten hashes in two
   * batches of eight lanes (the spare lanes repeat the first ones). */
  uint8_t uniform[16][64], want[16][32];
  for (size_t i = 0; i < 16; i++) {
    const char *m = msgs[(i % 10) / 2];
    const char *d = (i % 10) % 2 == 0 ? dst : CR_R255_DST;
    assert_int_equal(cr_expand_message_xmd_sha512(uniform[i], 64, (const uint8_t *)m, strlen(m),
                                                  (const uint8_t *)d, strlen(d)),
                     0);
    assert_int_equal(cr_r255_hash_to_group(want[i], (const uint8_t *)m, strlen(m),
                                           (const uint8_t *)d, strlen(d)),
                     0);
  }
  vec_free(vf);
  for (size_t b = 0; b < n_backends; b++) {
    for (size_t half = 0; half < 2; half++) {
      uint8_t out[8][32];
      backends[b]->from_uniform(out, (const uint8_t(*)[64])uniform[8 * half]);
      assert_memory_equal(out, want[8 * half], sizeof out);
    }
  }
}

/* ---- the suite's batch entry points ----------------------------------------- */

/* Under each backend the batch functions must give what the one-element
 * functions give: bytes, return codes, the index of the first bad point. */
static void suite_batch_round(const char *backend) {
  const cr_suite *s = &cr_suite_ristretto255;
  cr__crypto_backend_force(backend);
  uint8_t *k = cr_scalar_alloc(s);
  assert_non_null(k);
  assert_int_equal(s->scalar_random(k), 0);

  static const size_t sizes[] = {0, 1, 7, 8, 9, 20};
  for (size_t si = 0; si < sizeof sizes / sizeof sizes[0]; si++) {
    size_t n = sizes[si];
    uint8_t msgbuf[20][48], got[20][32], want[20][32], pts[20][32];
    const uint8_t *msgs[20];
    size_t lens[20];
    for (size_t i = 0; i < n; i++) {
      lens[i] = rng_u32() % sizeof msgbuf[i];
      rng(msgbuf[i], lens[i]);
      msgs[i] = msgbuf[i];
      assert_int_equal(s->hash_blind(want[i], k, msgs[i], lens[i]), 0);
    }
    memset(got, 0xaa, sizeof got);
    assert_int_equal(cr_suite_hash_blind_batch(s, got[0], k, msgs, lens, n), 0);
    assert_memory_equal(got, want, n * 32);

    /* Reblind: all good, then one bad point at each position in turn (of
     * each kind the suite refuses), then two bad points. */
    for (size_t i = 0; i < n; i++) {
      crypto_core_ristretto255_random(pts[i]);
      assert_int_equal(s->reblind(want[i], k, pts[i]), 0);
    }
    size_t bad = 0;
    assert_int_equal(cr_suite_reblind_batch(s, got[0], k, pts[0], n, &bad), 0);
    assert_int_equal(bad, SIZE_MAX);
    assert_memory_equal(got, want, n * 32);
    for (size_t pos = 0; pos < n; pos++) {
      /* Every position of the short batches; lane and batch edges of the
       * long one (it spans three batches of eight). */
      if (n > 9 && pos != 0 && pos != 7 && pos != 8 && pos != 15 && pos != 16 && pos != n - 1)
        continue;
      uint8_t keep[32];
      memcpy(keep, pts[pos], 32);
      for (int kind = 0; kind < 3; kind++) {
        if (kind == 0)
          memset(pts[pos], 0, 32); /* the identity */
        else if (kind == 1)
          pts[pos][31] |= 0x80; /* bit 255 */
        else
          le_sub(pts[pos], field_p, keep); /* negative */
        memset(got, 0xaa, sizeof got);
        assert_int_equal(cr_suite_reblind_batch(s, got[0], k, pts[0], n, &bad), CR_EPROTO);
        assert_int_equal(bad, pos);
        assert_true(sodium_is_zero(got[0], n * 32));
        if (pos + 2 < n) { /* a later bad point does not hide the first */
          uint8_t keep2[32];
          memcpy(keep2, pts[pos + 2], 32);
          memset(pts[pos + 2], 0, 32);
          assert_int_equal(cr_suite_reblind_batch(s, got[0], k, pts[0], n, &bad), CR_EPROTO);
          assert_int_equal(bad, pos);
          memcpy(pts[pos + 2], keep2, 32);
        }
        memcpy(pts[pos], keep, 32);
      }
    }
  }
  /* A zero scalar: every product is the identity, refused as libsodium
   * refuses it. */
  if (1) {
    uint8_t m[3] = {1, 2, 3}, out[32], p[32];
    const uint8_t *mp = m;
    size_t ml = sizeof m, bad = 0;
    memset(k, 0, 32);
    assert_int_equal(cr_suite_hash_blind_batch(s, out, k, &mp, &ml, 1), CR_ECRYPTO);
    assert_true(sodium_is_zero(out, sizeof out));
    crypto_core_ristretto255_random(p);
    assert_int_equal(cr_suite_reblind_batch(s, out, k, p, 1, &bad), CR_ECRYPTO);
    assert_int_equal(bad, 0);
    assert_true(sodium_is_zero(out, sizeof out));
  }
  cr_scalar_free(s, k);
}

static void test_suite_batch(void **state) {
  (void)state;
  suite_batch_round("portable");
  assert_string_equal(cr_crypto_backend_name(), "libsodium");
  suite_batch_round("emulated");
  assert_string_equal(cr_crypto_backend_name(), "emulated");
  if (n_backends > 1) {
    suite_batch_round("ifma");
    assert_string_equal(cr_crypto_backend_name(), "avx512ifma");
  }
  cr__crypto_backend_force("auto");
  assert_string_equal(cr_crypto_backend_name(), n_backends > 1 ? "avx512ifma" : "libsodium");
}

/* The dispatcher follows CPUID: "ifma" on a CPU without it stays on
 * libsodium, whatever the build contains. */
static void test_dispatch(void **state) {
  (void)state;
  cr__crypto_backend_force("ifma");
  if (cr__r255x8_ifma != NULL && cr__r255x8_cpu_has_ifma())
    assert_string_equal(cr_crypto_backend_name(), "avx512ifma");
  else
    assert_string_equal(cr_crypto_backend_name(), "libsodium");
  cr__crypto_backend_force("portable");
  assert_string_equal(cr_crypto_backend_name(), "libsodium");
  cr__crypto_backend_force("emulated");
  assert_string_equal(cr_crypto_backend_name(), "emulated");
  cr__crypto_backend_force(NULL);
  assert_string_equal(cr_crypto_backend_name(), cr__r255x8_ifma != NULL && cr__r255x8_cpu_has_ifma()
                                                    ? "avx512ifma"
                                                    : "libsodium");
}

/* ---- the self-test the dispatcher runs before choosing a backend --------- */

/* A backend that is the emulated one but for one wrong output: which entry
 * point, which lane, and how, are set per case. */
static int broken_fn, broken_lane;

static void flip(uint8_t out[8][32], int fn) {
  if (broken_fn == fn)
    out[broken_lane][broken_lane * 3 % 32] ^= 0x10;
}

static unsigned broken_roundtrip(uint8_t out[8][32], const uint8_t in[8][32]) {
  unsigned m = cr__r255x8_emulated.roundtrip(out, in);
  flip(out, 1);
  return broken_fn == 5 ? m ^ (1u << broken_lane) : m;
}

static void broken_from_uniform(uint8_t out[8][32], const uint8_t in[8][64]) {
  cr__r255x8_emulated.from_uniform(out, in);
  flip(out, 2);
}

static unsigned broken_scalarmult(uint8_t out[8][32], const uint8_t k[32],
                                  const uint8_t in[8][32]) {
  unsigned m = cr__r255x8_emulated.scalarmult(out, k, in);
  flip(out, 3);
  return broken_fn == 6 ? m ^ (1u << broken_lane) : m;
}

static void broken_hash_blind(uint8_t out[8][32], const uint8_t k[32], const uint8_t u[8][64]) {
  cr__r255x8_emulated.hash_blind(out, k, u);
  flip(out, 4);
}

static const cr_r255x8_backend broken = {"broken", broken_roundtrip, broken_from_uniform,
                                         broken_scalarmult, broken_hash_blind};

/* Every backend this machine runs passes; one wrong byte or lane mask in
 * any entry point, in any lane (invalid lanes included), fails it. */
static void test_selftest(void **state) {
  (void)state;
  for (size_t b = 0; b < n_backends; b++)
    assert_int_equal(cr__r255x8_selftest(backends[b]), 0);
  broken_fn = 0;
  assert_int_equal(cr__r255x8_selftest(&broken), 0); /* the control: nothing broken */
  for (broken_fn = 1; broken_fn <= 6; broken_fn++)
    for (broken_lane = 0; broken_lane < 8; broken_lane++) {
      if (cr__r255x8_selftest(&broken) != -1)
        fail_msg("a broken entry point %d in lane %d passed the self-test", broken_fn, broken_lane);
    }
  /* A backend that passes is chosen with no note. */
  cr__crypto_backend_force("emulated");
  assert_string_equal(cr_crypto_backend_name(), "emulated");
  assert_null(cr_crypto_backend_note());
  cr__crypto_backend_force(NULL);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_rfc9496_a1_generator_multiples),
      cmocka_unit_test(test_rfc9496_a2_invalid_encodings),
      cmocka_unit_test(test_rfc9496_a3_element_derivation),
      cmocka_unit_test(test_rfc9380_k3_hash_to_group),
      cmocka_unit_test(test_suite_batch),
      cmocka_unit_test(test_dispatch),
      cmocka_unit_test(test_selftest),
  };
  return cmocka_run_group_tests(tests, setup, NULL);
}
