/*
 * Differential privacy in the protocol (since v4): two sessions back to
 * back in memory, and tampered frames between them. Both sides release the
 * same noisy number; the noise differs from run to run and is centred on
 * the exact count; min_count applies to the noisy value; a side that opens
 * a seed share other than the one it committed to, or that leaves its
 * commitment out, is refused and nothing is released; a result released to
 * both sides must be the same on both; queries without noise send no seed.
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
#include "cleanroom/protocol.h"
#include "support/memdata.h"
#include "protocol/frame.h"

typedef struct party {
  uint8_t pk[crypto_sign_PUBLICKEYBYTES];
  uint8_t sk[crypto_sign_SECRETKEYBYTES];
} party;

static int sign_cb(void *ctx, const uint8_t *msg, size_t len, uint8_t sig[64]) {
  party *p = ctx;
  return crypto_sign_detached(sig, NULL, msg, len, p->sk);
}

static char *dup_str(const char *s) {
  char *d = malloc(strlen(s) + 1);
  strcpy(d, s);
  return d;
}

enum { Q_NOISY = 0, Q_NOISY_TO_CONSUMER, Q_NOISY_GROUPED, Q_EXACT, NQ };

/* Hand-built: noisy (Laplace, epsilon 0.5, to both), noisy_to_consumer
 * (Laplace, epsilon 1), noisy_by_segment (Gaussian sigma 2, provider
 * grouped, to both), exact (no noise, to both). */
static cr_template *make_template(uint64_t min_count) {
  static const char *names[NQ] = {"noisy", "noisy_to_consumer", "noisy_by_segment", "exact"};
  cr_template *t = calloc(1, sizeof *t);
  t->name = dup_str("dp");
  t->suite = dup_str("ristretto255");
  t->match_key.name = dup_str("email");
  t->nqueries = NQ;
  t->queries = calloc(NQ, sizeof *t->queries);
  for (int i = 0; i < NQ; i++) {
    cr_query *q = &t->queries[i];
    q->name = dup_str(names[i]);
    q->kind = CR_QUERY_COUNT;
    q->min_count = min_count;
    q->run_by = CR_ROLE_BIT(CR_ROLE_CONSUMER);
    q->results_to = CR_ROLE_BIT(CR_ROLE_CONSUMER) | CR_ROLE_BIT(CR_ROLE_PROVIDER);
    q->noise.mechanism = CR_NOISE_DISCRETE_LAPLACE;
    q->noise.epsilon = 500000;
  }
  t->queries[Q_NOISY_TO_CONSUMER].results_to = CR_ROLE_BIT(CR_ROLE_CONSUMER);
  t->queries[Q_NOISY_TO_CONSUMER].noise.epsilon = 1000000;
  cr_noise *g = &t->queries[Q_NOISY_GROUPED].noise;
  g->mechanism = CR_NOISE_DISCRETE_GAUSSIAN;
  g->sigma = 2000;
  g->sigma_given = true;
  g->delta = 1000000;
  g->epsilon = 1500000;
  t->queries[Q_NOISY_GROUPED].group_by[CR_ROLE_PROVIDER] = dup_str("segment");
  memset(&t->queries[Q_EXACT].noise, 0, sizeof(cr_noise));
  t->limits.privacy_budget.epsilon = 100000000;
  t->limits.privacy_budget.delta = 1000000000;
  memset(t->sha256, 0xcd, sizeof t->sha256);
  static const uint64_t edges[] = {16, 32, 64, 128, 256};
  memcpy(t->limits.size_buckets.edges, edges, sizeof edges);
  t->limits.size_buckets.nedges = sizeof edges / sizeof edges[0];
  return t;
}

static void free_template(cr_template *t) {
  for (size_t i = 0; i < t->nqueries; i++) {
    free(t->queries[i].name);
    free(t->queries[i].group_by[CR_ROLE_PROVIDER]);
  }
  free(t->queries);
  free(t->name);
  free(t->suite);
  free(t->match_key.name);
  free(t);
}

/* Deterministic randomness per side and run: ChaCha20 from a fixed key. */
typedef struct stream {
  uint8_t key[32];
  uint64_t calls;
} stream;

static int stream_rand(void *ctx, uint8_t *buf, size_t len) {
  stream *s = ctx;
  uint8_t nonce[crypto_stream_chacha20_NONCEBYTES];
  for (size_t i = 0; i < sizeof nonce; i++)
    nonce[i] = (uint8_t)(s->calls >> (8 * i));
  s->calls++;
  return crypto_stream_chacha20(buf, len, nonce, s->key) == 0 ? 0 : CR_ECRYPTO;
}

/* Rewrites a frame on its way (msg_case, direction 0 consumer->provider, 1
 * back); returns 1 when it changed f (then re-encoded), or -1 to insert
 * `extra` after it. */
typedef int (*filter_fn)(Cleanroom__V1__Frame *f, int dir, void *ctx);

typedef struct pair {
  cr_template *tp, *tc;
  cr_dataset *dp, *dc;
  party kp, kc;
  stream rp, rc;
  cr_session *provider, *consumer;
  cr_buf wire[2];
  cr_buf pending[2]; /* bytes not yet a whole frame */
} pair;

static void pair_init(pair *x, int p_from, int p_to, int c_from, int c_to, uint64_t min_count,
                      int query, uint32_t run, int grouped) {
  memset(x, 0, sizeof *x);
  x->tp = make_template(min_count);
  x->tc = make_template(min_count);
  x->dp = fx_mem_dataset("user", "@example.com", p_from, p_to, grouped ? 3 : 0);
  x->dc = fx_mem_dataset("user", "@example.com", c_from, c_to, 0);
  crypto_sign_keypair(x->kp.pk, x->kp.sk);
  crypto_sign_keypair(x->kc.pk, x->kc.sk);
  x->rp.key[0] = 'P';
  x->rc.key[0] = 'C';
  memcpy(x->rp.key + 1, &run, sizeof run);
  memcpy(x->rc.key + 1, &run, sizeof run);
  for (int d = 0; d < 2; d++) {
    cr_buf_init(&x->wire[d]);
    cr_buf_init(&x->pending[d]);
  }
  cr_session_config pc = {0}, cc;
  pc.tmpl = x->tp;
  pc.data = x->dp;
  pc.role = CR_ROLE_PROVIDER;
  pc.software = "test";
  pc.batch_size = 20;
  pc.sign = sign_cb;
  pc.sign_ctx = &x->kp;
  pc.rand = stream_rand;
  pc.rand_ctx = &x->rp;
  memcpy(pc.peer_sign_pk, x->kc.pk, 32);
  cc = pc;
  cc.tmpl = x->tc;
  cc.data = x->dc;
  cc.role = CR_ROLE_CONSUMER;
  cc.is_runner = 1;
  cc.query = x->tc->queries[query].name;
  cc.sign_ctx = &x->kc;
  cc.rand_ctx = &x->rc;
  memcpy(cc.peer_sign_pk, x->kp.pk, 32);
  assert_int_equal(cr_session_new(&x->provider, &pc, NULL), 0);
  assert_int_equal(cr_session_new(&x->consumer, &cc, NULL), 0);
  assert_int_equal(cr_session_start(x->consumer), 0);
}

static void pair_free(pair *x) {
  cr_session_free(x->provider);
  cr_session_free(x->consumer);
  free_template(x->tp);
  free_template(x->tc);
  fx_mem_dataset_free(x->dp);
  fx_mem_dataset_free(x->dc);
  for (int d = 0; d < 2; d++) {
    cr_buf_free(&x->wire[d]);
    cr_buf_free(&x->pending[d]);
  }
}

/* Moves whole frames both ways (through filter, if any) until both settle. */
static void pump(pair *x, filter_fn filter, void *ctx, const Cleanroom__V1__Frame *extra) {
  for (int rounds = 0; rounds < 100000; rounds++) {
    int moved = 0;
    cr_session *from[2] = {x->consumer, x->provider}, *to[2] = {x->provider, x->consumer};
    for (int d = 0; d < 2; d++) {
      const uint8_t *data;
      size_t len;
      cr_session_send(from[d], &data, &len);
      if (len == 0)
        continue;
      assert_int_equal(cr_buf_append(&x->pending[d], data, len), 0);
      cr_session_sent(from[d], len);
      moved = 1;
      size_t off = 0;
      cr_buf out;
      cr_buf_init(&out);
      for (;;) {
        const uint8_t *p;
        size_t plen, total;
        if (cr__frame_peek(x->pending[d].data + off, x->pending[d].len - off, CR_DEFAULT_MAX_FRAME,
                           &p, &plen, &total, NULL) != 1)
          break;
        Cleanroom__V1__Frame *f = cr__frame_decode(p, plen);
        assert_non_null(f);
        int changed = filter ? filter(f, d, ctx) : 0;
        if (changed == 1)
          assert_int_equal(cr__frame_append(&out, f), 0);
        else
          assert_int_equal(cr_buf_append(&out, x->pending[d].data + off, total), 0);
        if (changed == -1)
          assert_int_equal(cr__frame_append(&out, extra), 0);
        cr__frame_free(f);
        off += total;
      }
      cr_buf_consume(&x->pending[d], off);
      assert_int_equal(cr_buf_append(&x->wire[d], out.data, out.len), 0);
      cr_session_recv(to[d], out.data, out.len);
      cr_buf_free(&out);
    }
    if (!moved)
      return;
  }
  fail_msg("sessions did not settle");
}

static int count_kind(const cr_buf *wire, int msg_case) {
  size_t off = 0;
  int n = 0;
  while (off < wire->len) {
    const uint8_t *p;
    size_t plen, total;
    assert_int_equal(cr__frame_peek(wire->data + off, wire->len - off, CR_DEFAULT_MAX_FRAME, &p,
                                    &plen, &total, NULL),
                     1);
    Cleanroom__V1__Frame *f = cr__frame_decode(p, plen);
    assert_non_null(f);
    n += (int)f->msg_case == msg_case;
    cr__frame_free(f);
    off += total;
  }
  return n;
}

/* ---- honest runs --------------------------------------------------------- */

#define RUNS 40

/* Provider user0..59, consumer user30..99: the exact overlap is 30. Over
 * 40 runs: both sides hold the same noisy value each time, the values
 * vary, their mean is within 4 standard errors of 30 and their variance
 * near the mechanism's. */
static void test_both_sides_same_noisy_value(void **state) {
  (void)state;
  double sum = 0.0, sum2 = 0.0;
  int distinct = 0, off_exact = 0;
  uint64_t seen[RUNS];
  for (uint32_t run = 0; run < RUNS; run++) {
    pair x;
    pair_init(&x, 0, 60, 30, 100, 1, Q_NOISY, run, 0);
    pump(&x, NULL, NULL, NULL);
    const cr_session_result *rc = cr_session_result_get(x.consumer);
    const cr_session_result *rp = cr_session_result_get(x.provider);
    if (rc->status != CR_SESSION_DONE || rp->status != CR_SESSION_DONE)
      fail_msg("run %u: %s / %s", run, rc->error_msg, rp->error_msg);
    assert_true(rc->noisy && rp->noisy);
    assert_int_equal(rc->noise.mechanism, CR_NOISE_DISCRETE_LAPLACE);
    assert_int_equal(rc->noise.epsilon, 500000);
    assert_false(rc->suppressed);
    assert_int_equal(rc->count, rp->count);
    assert_memory_equal(rc->released_sha256, rp->released_sha256, sizeof rc->released_sha256);
    /* Each side opened one seed share, after its data. */
    assert_int_equal(count_kind(&x.wire[0], CLEANROOM__V1__FRAME__MSG_NOISE_SEED), 1);
    assert_int_equal(count_kind(&x.wire[1], CLEANROOM__V1__FRAME__MSG_NOISE_SEED), 1);
    int dup = 0;
    for (uint32_t k = 0; k < run; k++)
      dup |= seen[k] == rc->count;
    distinct += !dup;
    off_exact += rc->count != 30;
    seen[run] = rc->count;
    sum += (double)rc->count;
    sum2 += (double)rc->count * (double)rc->count;
    pair_free(&x);
  }
  cr_noise nz = {CR_NOISE_DISCRETE_LAPLACE, 500000, 0, 0, false};
  double var = cr_noise_variance(&nz), mean = sum / RUNS;
  double svar = (sum2 - RUNS * mean * mean) / (RUNS - 1);
  assert_true(distinct >= 5);
  assert_true(off_exact >= RUNS / 2);
  if (fabs(mean - 30.0) > 4.0 * sqrt(var / RUNS))
    fail_msg("mean %.2f, exact 30, 4 se = %.2f", mean, 4.0 * sqrt(var / RUNS));
  if (svar < 0.3 * var || svar > 3.0 * var)
    fail_msg("variance %.2f, the mechanism's %.2f", svar, var);
}

/* The same randomness gives the same noisy value (the transcript is
 * reproducible); other randomness, another one. */
static void test_noise_follows_both_shares(void **state) {
  (void)state;
  uint64_t v[3];
  uint32_t runs[3] = {7, 7, 8};
  for (int i = 0; i < 3; i++) {
    pair x;
    pair_init(&x, 0, 60, 30, 100, 1, Q_NOISY, runs[i], 0);
    pump(&x, NULL, NULL, NULL);
    assert_int_equal(cr_session_result_get(x.consumer)->status, CR_SESSION_DONE);
    v[i] = cr_session_result_get(x.consumer)->count;
    pair_free(&x);
  }
  assert_int_equal(v[0], v[1]);
  /* A different provider share alone changes the seed: run the consumer
   * with run 7's randomness and the provider with run 8's. */
  int differs = 0;
  for (uint32_t r = 100; r < 110 && !differs; r++) {
    pair x;
    pair_init(&x, 0, 60, 30, 100, 1, Q_NOISY, 7, 0);
    cr_session_free(x.provider);
    memcpy(x.rp.key + 1, &r, sizeof r);
    x.rp.calls = 0;
    cr_session_config pc = {0};
    pc.tmpl = x.tp;
    pc.data = x.dp;
    pc.role = CR_ROLE_PROVIDER;
    pc.batch_size = 20;
    pc.sign = sign_cb;
    pc.sign_ctx = &x.kp;
    pc.rand = stream_rand;
    pc.rand_ctx = &x.rp;
    memcpy(pc.peer_sign_pk, x.kc.pk, 32);
    assert_int_equal(cr_session_new(&x.provider, &pc, NULL), 0);
    pump(&x, NULL, NULL, NULL);
    assert_int_equal(cr_session_result_get(x.consumer)->status, CR_SESSION_DONE);
    differs = cr_session_result_get(x.consumer)->count != v[0];
    pair_free(&x);
  }
  assert_true(differs);
}

/* min_count applies to the noisy value: with min_count equal to the exact
 * count (30), some runs are suppressed and some released, and every
 * released value is at least min_count. */
static void test_min_count_after_noise(void **state) {
  (void)state;
  int suppressed = 0, released = 0;
  for (uint32_t run = 0; run < 24; run++) {
    pair x;
    pair_init(&x, 0, 60, 30, 100, 30, Q_NOISY, 1000 + run, 0);
    pump(&x, NULL, NULL, NULL);
    const cr_session_result *rc = cr_session_result_get(x.consumer);
    const cr_session_result *rp = cr_session_result_get(x.provider);
    assert_int_equal(rc->status, CR_SESSION_DONE);
    assert_int_equal(rc->suppressed, rp->suppressed);
    assert_int_equal(rc->count, rp->count);
    if (rc->suppressed) {
      assert_int_equal(rc->count, 0);
      suppressed++;
    } else {
      assert_true(rc->count >= 30);
      released++;
    }
    pair_free(&x);
  }
  assert_true(suppressed > 0);
  assert_true(released > 0);
}

/* A side outside results_to still commits and opens its share, and is
 * released nothing. */
static void test_noise_to_one_side(void **state) {
  (void)state;
  pair x;
  pair_init(&x, 0, 60, 30, 100, 1, Q_NOISY_TO_CONSUMER, 3, 0);
  pump(&x, NULL, NULL, NULL);
  const cr_session_result *rc = cr_session_result_get(x.consumer);
  const cr_session_result *rp = cr_session_result_get(x.provider);
  assert_int_equal(rc->status, CR_SESSION_DONE);
  assert_int_equal(rp->status, CR_SESSION_DONE);
  assert_true(rc->receives);
  assert_false(rp->receives);
  assert_int_equal(rp->count, 0);
  assert_null(rp->cells);
  assert_true(rc->count > 20 && rc->count < 40);
  assert_int_equal(count_kind(&x.wire[1], CLEANROOM__V1__FRAME__MSG_NOISE_SEED), 1);
  assert_int_equal(count_kind(&x.wire[1], CLEANROOM__V1__FRAME__MSG_DIGESTS) > 0, 1);
  pair_free(&x);
}

/* Every cell gets its own noise; both sides hold the same cells. Provider
 * user0..59 in seg0..2, consumer user30..99: 10 matches per cell. */
static void test_grouped_cells_noisy(void **state) {
  (void)state;
  int differ = 0;
  for (uint32_t run = 0; run < 6; run++) {
    pair x;
    pair_init(&x, 0, 60, 30, 100, 1, Q_NOISY_GROUPED, 50 + run, 1);
    pump(&x, NULL, NULL, NULL);
    const cr_session_result *rc = cr_session_result_get(x.consumer);
    const cr_session_result *rp = cr_session_result_get(x.provider);
    if (rc->status != CR_SESSION_DONE)
      fail_msg("%s", rc->error_msg);
    assert_int_equal(rc->ncells, 3);
    assert_int_equal(rp->ncells, 3);
    for (size_t i = 0; i < 3; i++) {
      assert_int_equal(rc->cells[i].count, rp->cells[i].count);
      assert_int_equal(rc->cells[i].suppressed, rp->cells[i].suppressed);
      assert_true(rc->cells[i].count <= 10 + 20);
    }
    differ |= rc->cells[0].count != rc->cells[1].count || rc->cells[1].count != rc->cells[2].count;
    pair_free(&x);
  }
  assert_true(differ); /* independent noise per cell */
}

/* A query without noise is what it was: exact, no commitment, no seed. */
static void test_exact_query_unchanged(void **state) {
  (void)state;
  pair x;
  pair_init(&x, 0, 60, 30, 100, 1, Q_EXACT, 4, 0);
  pump(&x, NULL, NULL, NULL);
  const cr_session_result *rc = cr_session_result_get(x.consumer);
  assert_int_equal(rc->status, CR_SESSION_DONE);
  assert_false(rc->noisy);
  assert_int_equal(rc->count, 30);
  assert_int_equal(cr_session_result_get(x.provider)->count, 30);
  assert_int_equal(count_kind(&x.wire[0], CLEANROOM__V1__FRAME__MSG_NOISE_SEED), 0);
  assert_int_equal(count_kind(&x.wire[1], CLEANROOM__V1__FRAME__MSG_NOISE_SEED), 0);
  pair_free(&x);
}

/* ---- tampering ------------------------------------------------------------ */

typedef struct tamper {
  int dir;      /* which direction to touch */
  int msg_case; /* which frame */
  int what;     /* 0 flip a share byte, 1 drop the commitment, 2 add one, 3 flip release */
  int done;
} tamper;

static int tamper_filter(Cleanroom__V1__Frame *f, int dir, void *ctx) {
  tamper *t = ctx;
  if (dir != t->dir || (int)f->msg_case != t->msg_case || t->done)
    return 0;
  t->done = 1;
  switch (t->what) {
  case 0:
    f->noise_seed->seed_share.data[5] ^= 1;
    return 1;
  case 1:
    f->hello->noise_commitment.len = 0;
    return 1;
  case 2:
    /* protobuf-c frees the unpacked frame's fields with free() */
    free(f->hello->noise_commitment.data);
    f->hello->noise_commitment.data = calloc(1, 32);
    f->hello->noise_commitment.len = 32;
    return 1;
  case 3:
    f->released->released_sha256.data[0] ^= 1;
    return 1;
  case 4:
    return -1; /* insert the extra frame after this one */
  case 5:
    f->hello->protocol_version = 3;
    return 1;
  default:
    return 0;
  }
}

/* The receiving side failed with a protocol error naming `rule`; the
 * other side was told; neither released anything. */
static void expect_refused(pair *x, cr_session *victim, const char *rule) {
  const cr_session_result *v = cr_session_result_get(victim);
  cr_session *other_s = victim == x->consumer ? x->provider : x->consumer;
  const cr_session_result *o = cr_session_result_get(other_s);
  assert_int_equal(v->status, CR_SESSION_FAILED);
  assert_int_equal(v->error, CR_EPROTO);
  if (strstr(v->error_msg, rule) == NULL)
    fail_msg("message \"%s\" lacks \"%s\"", v->error_msg, rule);
  assert_int_equal(o->status, CR_SESSION_FAILED);
  assert_int_equal(o->error, CR_EPEER);
  assert_int_equal(o->wire_error, CR_WIRE_PROTOCOL);
  assert_int_equal(v->count, 0);
  assert_int_equal(o->count, 0);
  assert_null(v->cells);
  assert_true(cr_session_scalar_wiped(victim));
}

static void test_wrong_seed_refused(void **state) {
  (void)state;
  /* The provider opens a share other than the one it committed to. */
  pair x;
  tamper t = {1, CLEANROOM__V1__FRAME__MSG_NOISE_SEED, 0, 0};
  pair_init(&x, 0, 60, 30, 100, 1, Q_NOISY, 5, 0);
  pump(&x, tamper_filter, &t, NULL);
  assert_true(t.done);
  expect_refused(&x, x.consumer, "does not match the commitment");
  pair_free(&x);
  /* And the consumer (runner) likewise. */
  tamper u = {0, CLEANROOM__V1__FRAME__MSG_NOISE_SEED, 0, 0};
  pair_init(&x, 0, 60, 30, 100, 1, Q_NOISY_TO_CONSUMER, 6, 0);
  pump(&x, tamper_filter, &u, NULL);
  expect_refused(&x, x.provider, "does not match the commitment");
  pair_free(&x);
}

static void test_missing_commitment_refused(void **state) {
  (void)state;
  pair x;
  tamper t = {0, CLEANROOM__V1__FRAME__MSG_HELLO, 1, 0};
  pair_init(&x, 0, 60, 30, 100, 1, Q_NOISY, 7, 0);
  pump(&x, tamper_filter, &t, NULL);
  expect_refused(&x, x.provider, "carries no commitment to a noise seed share");
  /* Refused from the Hello alone: the provider sent no point. */
  assert_int_equal(count_kind(&x.wire[1], CLEANROOM__V1__FRAME__MSG_BATCH), 0);
  pair_free(&x);
  /* A commitment for a query without noise is refused too. */
  tamper u = {1, CLEANROOM__V1__FRAME__MSG_HELLO, 2, 0};
  pair_init(&x, 0, 60, 30, 100, 1, Q_EXACT, 8, 0);
  pump(&x, tamper_filter, &u, NULL);
  expect_refused(&x, x.consumer, "which has no noise");
  pair_free(&x);
}

/* A share opened before the data is complete is out of order. */
static void test_early_seed_refused(void **state) {
  (void)state;
  pair x;
  uint8_t share[32] = {1};
  Cleanroom__V1__NoiseSeed n = CLEANROOM__V1__NOISE_SEED__INIT;
  Cleanroom__V1__Frame extra = CLEANROOM__V1__FRAME__INIT;
  n.seed_share.data = share;
  n.seed_share.len = sizeof share;
  extra.msg_case = CLEANROOM__V1__FRAME__MSG_NOISE_SEED;
  extra.noise_seed = &n;
  tamper t = {1, CLEANROOM__V1__FRAME__MSG_HELLO, 4, 0};
  pair_init(&x, 0, 60, 30, 100, 1, Q_NOISY, 9, 0);
  pump(&x, tamper_filter, &t, &extra);
  expect_refused(&x, x.consumer, "NoiseSeed before the session's data was complete");
  pair_free(&x);
}

/* Since v4 a result released to both sides is one result: a partner that
 * commits to another release is refused (here without noise). */
static void test_release_mismatch_refused(void **state) {
  (void)state;
  pair x;
  tamper t = {1, CLEANROOM__V1__FRAME__MSG_RELEASED, 3, 0};
  pair_init(&x, 0, 60, 30, 100, 1, Q_EXACT, 10, 0);
  pump(&x, tamper_filter, &t, NULL);
  expect_refused(&x, x.consumer, "differs from ours");
  pair_free(&x);
}

/* A version 3 node (no noise seeds, no release check) is refused with a
 * message naming both versions, on both sides, before any data. */
static void test_v3_peer_refused(void **state) {
  (void)state;
  pair x;
  tamper t = {0, CLEANROOM__V1__FRAME__MSG_HELLO, 5, 0};
  pair_init(&x, 0, 60, 30, 100, 1, Q_EXACT, 11, 0);
  pump(&x, tamper_filter, &t, NULL);
  const cr_session_result *rp = cr_session_result_get(x.provider);
  const cr_session_result *rc = cr_session_result_get(x.consumer);
  assert_int_equal(rp->status, CR_SESSION_FAILED);
  assert_int_equal(rp->wire_error, CR_WIRE_VERSION);
  assert_non_null(
      strstr(rp->error_msg, "the partner speaks protocol version 3, this node speaks 5"));
  assert_int_equal(rc->status, CR_SESSION_FAILED);
  assert_int_equal(rc->wire_error, CR_WIRE_VERSION);
  assert_int_equal(rc->peer_protocol_version, 5);
  assert_non_null(strstr(rc->error_msg, "protocol versions differ"));
  assert_int_equal(count_kind(&x.wire[1], CLEANROOM__V1__FRAME__MSG_BATCH), 0);
  pair_free(&x);
}

int main(void) {
  if (sodium_init() < 0)
    return 1;
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_both_sides_same_noisy_value),
      cmocka_unit_test(test_noise_follows_both_shares),
      cmocka_unit_test(test_min_count_after_noise),
      cmocka_unit_test(test_noise_to_one_side),
      cmocka_unit_test(test_grouped_cells_noisy),
      cmocka_unit_test(test_exact_query_unchanged),
      cmocka_unit_test(test_wrong_seed_refused),
      cmocka_unit_test(test_missing_commitment_refused),
      cmocka_unit_test(test_early_seed_refused),
      cmocka_unit_test(test_release_mismatch_refused),
      cmocka_unit_test(test_v3_peer_refused),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
