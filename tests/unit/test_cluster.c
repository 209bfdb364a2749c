/*
 * The cluster layer (src/cluster): run as `mpirun -np K test_cluster`.
 * Ranks above 0 serve as workers; rank 0 runs the cases, each comparing
 * what the offload computes over the K processes with the same batch
 * computed by this process alone (cr_engine_*_batch): every output byte,
 * the lowest invalid point wherever it falls among the shares, both suites,
 * batches too small to spread, and a stop that fails later batches with a
 * message. With K = 1 there is no offload and the cases check that too.
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

#include "cleanroom/cluster.h"
#include "cleanroom/crypto.h"
#include "cleanroom/engine.h"

static cr_cluster *g_c;
static const cr_engine_offload *g_off;

static const char *SUITES[] = {"ristretto255", "p256"};
/* Below, at and above 16 * K (the smallest batch spread, K = 3), and shares
 * of unequal sizes. */
static const size_t SIZES[] = {0, 1, 5, 47, 48, 49, 301, 1000};

typedef struct batch {
  uint8_t *msgs;
  size_t *lens;
  size_t n, bytes;
} batch;

/* n messages of 0..99 random bytes, laid end to end. */
static batch random_messages(size_t n) {
  batch b = {NULL, calloc(n + 1, sizeof(size_t)), n, 0};
  assert_non_null(b.lens);
  for (size_t i = 0; i < n; i++) {
    b.lens[i] = randombytes_uniform(100);
    b.bytes += b.lens[i];
  }
  b.msgs = malloc(b.bytes + 1);
  assert_non_null(b.msgs);
  randombytes_buf(b.msgs, b.bytes);
  return b;
}

static uint8_t *new_scalar(const cr_suite *s) {
  uint8_t *k = cr_scalar_alloc(s);
  assert_non_null(k);
  assert_int_equal(s->scalar_random(k), 0);
  return k;
}

static void test_hash_blind_matches_one_process(void **state) {
  (void)state;
  for (size_t si = 0; si < 2; si++) {
    const cr_suite *s = cr_suite_find(SUITES[si]);
    assert_non_null(s);
    uint8_t *k = new_scalar(s);
    for (size_t z = 0; z < sizeof SIZES / sizeof SIZES[0]; z++) {
      size_t n = SIZES[z];
      batch b = random_messages(n);
      uint8_t *want = calloc(n + 1, s->point_bytes), *got = calloc(n + 1, s->point_bytes);
      assert_non_null(want);
      assert_non_null(got);
      assert_int_equal(cr_engine_hash_blind_batch(NULL, s, k, b.msgs, b.lens, n, want), 0);
      cr_error err;
      cr_error_clear(&err);
      int rc = g_off ? g_off->hash_blind(g_off->ctx, NULL, s, k, b.msgs, b.lens, n, got, &err)
                     : cr_engine_hash_blind_batch(NULL, s, k, b.msgs, b.lens, n, got);
      assert_int_equal(rc, 0);
      if (n > 0 && memcmp(want, got, n * s->point_bytes) != 0)
        fail_msg("%s, %zu messages: the cluster's points differ from one process's", s->name, n);
      free(want);
      free(got);
      free(b.msgs);
      free(b.lens);
    }
    cr_scalar_free(s, k);
  }
}

/* n valid points of the suite (blinded random messages). */
static uint8_t *valid_points(const cr_suite *s, size_t n) {
  batch b = random_messages(n);
  uint8_t *k = new_scalar(s), *p = calloc(n + 1, s->point_bytes);
  assert_non_null(p);
  assert_int_equal(cr_engine_hash_blind_batch(NULL, s, k, b.msgs, b.lens, n, p), 0);
  cr_scalar_free(s, k);
  free(b.msgs);
  free(b.lens);
  return p;
}

static int reblind(const cr_suite *s, const uint8_t *k, const uint8_t *sid, size_t dl,
                   const uint8_t *pts, size_t n, uint8_t *out, uint64_t *bad) {
  cr_error err;
  cr_error_clear(&err);
  if (g_off)
    return g_off->reblind_digest(g_off->ctx, NULL, s, k, sid, dl, pts, n, out, bad, &err);
  return cr_engine_reblind_digest_batch(NULL, s, k, sid, dl, pts, n, out, bad);
}

static void test_reblind_digest_matches_one_process(void **state) {
  (void)state;
  uint8_t sid[CR_SESSION_ID_BYTES];
  randombytes_buf(sid, sizeof sid);
  for (size_t si = 0; si < 2; si++) {
    const cr_suite *s = cr_suite_find(SUITES[si]);
    uint8_t *k = new_scalar(s);
    for (size_t z = 0; z < sizeof SIZES / sizeof SIZES[0]; z++) {
      for (size_t dl = 5; dl <= 32; dl += 27) {
        size_t n = SIZES[z];
        uint8_t *pts = valid_points(s, n);
        uint8_t *want = calloc(n + 1, dl), *got = calloc(n + 1, dl);
        uint64_t bw = 0, bg = 0;
        assert_int_equal(cr_engine_reblind_digest_batch(NULL, s, k, sid, dl, pts, n, want, &bw), 0);
        assert_int_equal(reblind(s, k, sid, dl, pts, n, got, &bg), 0);
        assert_true(bw == UINT64_MAX && bg == UINT64_MAX);
        if (n > 0 && memcmp(want, got, n * dl) != 0)
          fail_msg("%s, %zu points, %zu-byte digests: the cluster's digests differ", s->name, n,
                   dl);
        free(pts);
        free(want);
        free(got);
      }
    }
    cr_scalar_free(s, k);
  }
}

/* Invalid points in several shares: the lowest index is reported, as by
 * one process, wherever the shares are cut. */
static void test_lowest_invalid_point(void **state) {
  (void)state;
  uint8_t sid[CR_SESSION_ID_BYTES];
  randombytes_buf(sid, sizeof sid);
  /* Share boundaries with K = 3: 400 and 800. */
  const size_t n = 1200;
  const size_t firsts[] = {0, 1, 399, 400, 799, 800, 1199};
  for (size_t si = 0; si < 2; si++) {
    const cr_suite *s = cr_suite_find(SUITES[si]);
    uint8_t *k = new_scalar(s);
    for (size_t f = 0; f < sizeof firsts / sizeof firsts[0]; f++) {
      uint8_t *pts = valid_points(s, n), *out = calloc(n, 32);
      /* All 0xff is no valid encoding in either suite. */
      memset(pts + firsts[f] * s->point_bytes, 0xff, s->point_bytes);
      if (firsts[f] + 500 < n)
        memset(pts + (firsts[f] + 500) * s->point_bytes, 0xff, s->point_bytes);
      uint64_t bad = 0;
      assert_int_equal(reblind(s, k, sid, 16, pts, n, out, &bad), CR_EPROTO);
      if (bad != firsts[f])
        fail_msg("%s: invalid points at %zu and later: reported %llu", s->name, firsts[f],
                 (unsigned long long)bad);
      free(pts);
      free(out);
    }
    cr_scalar_free(s, k);
  }
}

static void test_bad_arguments(void **state) {
  (void)state;
  const cr_suite *s = cr_suite_find("ristretto255");
  uint8_t *k = new_scalar(s), sid[CR_SESSION_ID_BYTES] = {0}, *pts = valid_points(s, 100);
  uint8_t out[100 * 33];
  uint64_t bad = 0;
  assert_int_equal(reblind(s, k, sid, 0, pts, 100, out, &bad), CR_EINVAL);
  assert_int_equal(reblind(s, k, sid, 33, pts, 100, out, &bad), CR_EINVAL);
  cr_scalar_free(s, k);
  free(pts);
}

/* Last: after a stop, every batch fails with CR_ECLUSTER and says why. */
static void test_stop_fails_later_batches(void **state) {
  (void)state;
  if (g_off == NULL)
    skip();
  const cr_suite *s = cr_suite_find("ristretto255");
  uint8_t *k = new_scalar(s);
  batch b = random_messages(200);
  uint8_t *pts = calloc(200, s->point_bytes);
  cr_cluster_interrupt(g_c);
  cr_error err;
  cr_error_clear(&err);
  int rc = g_off->hash_blind(g_off->ctx, NULL, s, k, b.msgs, b.lens, 200, pts, &err);
  assert_int_equal(rc, CR_ECLUSTER);
  assert_non_null(strstr(err.msg, "stopping"));
  free(pts);
  free(b.msgs);
  free(b.lens);
  cr_scalar_free(s, k);
}

int main(int argc, char **argv) {
  cr_error err;
  cr_error_clear(&err);
  if (sodium_init() < 0 || cr_crypto_init() != 0)
    return 1;
  int rc = cr_cluster_init(&g_c, &argc, &argv, &err);
  if (rc != 0) {
    fprintf(stderr, "test_cluster: %s\n", cr_error_message(&err, rc));
    return 1;
  }
  if (cr_cluster_rank(g_c) != 0) {
    rc = cr_cluster_work(g_c, 1, &err);
    cr_cluster_finish(g_c, rc != 0);
    return rc != 0;
  }
  g_off = cr_cluster_offload(g_c);
  printf("test_cluster: %d process(es) on %s; offload %s\n", cr_cluster_size(g_c),
         cr_cluster_hosts(g_c), g_off ? "on" : "off (one process)");
  if ((g_off == NULL) != (cr_cluster_size(g_c) == 1))
    return 1;
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_hash_blind_matches_one_process),
      cmocka_unit_test(test_reblind_digest_matches_one_process),
      cmocka_unit_test(test_lowest_invalid_point),
      cmocka_unit_test(test_bad_arguments),
      cmocka_unit_test(test_stop_fails_later_batches),
  };
  rc = cmocka_run_group_tests(tests, NULL, NULL);
  cr_cluster_finish(g_c, 0);
  return rc;
}
