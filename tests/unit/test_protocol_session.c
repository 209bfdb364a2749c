/*
 * Protocol tests: two sessions back to back through memory buffers, and
 * scripted wrong or hostile peers. No sockets, no files.
 */
#define _GNU_SOURCE /* memmem, RTLD_NEXT */
#include <dlfcn.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <sodium.h>

#include "cleanroom/protocol.h"
#include "support/memdata.h"
#include "protocol/frame.h"

/* ---- fixtures ------------------------------------------------------------ */

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

/* A template built by hand: the protocol layer only reads the struct. */
static cr_template *make_template(uint64_t min_count) {
  cr_template *t = calloc(1, sizeof *t);
  t->name = dup_str("test");
  t->suite = dup_str("ristretto255");
  t->match_key.name = dup_str("email");
  t->nqueries = 6;
  t->queries = calloc(6, sizeof *t->queries);
  const char *names[6] = {"overlap",    "overlap_to_consumer", "provider_runs",
                          "by_segment", "my_matches",          "with_params"};
  for (int i = 0; i < 6; i++) {
    t->queries[i].name = dup_str(names[i]);
    t->queries[i].kind = CR_QUERY_COUNT;
    t->queries[i].min_count = min_count;
  }
  t->queries[0].run_by = CR_ROLE_BIT(CR_ROLE_CONSUMER);
  t->queries[0].results_to = CR_ROLE_BIT(CR_ROLE_CONSUMER) | CR_ROLE_BIT(CR_ROLE_PROVIDER);
  t->queries[1].run_by = CR_ROLE_BIT(CR_ROLE_CONSUMER);
  t->queries[1].results_to = CR_ROLE_BIT(CR_ROLE_CONSUMER);
  t->queries[2].run_by = CR_ROLE_BIT(CR_ROLE_PROVIDER);
  t->queries[2].results_to = CR_ROLE_BIT(CR_ROLE_PROVIDER);
  for (int i = 3; i < 6; i++) {
    t->queries[i].run_by = CR_ROLE_BIT(CR_ROLE_CONSUMER);
    t->queries[i].results_to = CR_ROLE_BIT(CR_ROLE_CONSUMER);
  }
  t->queries[3].group_by[CR_ROLE_PROVIDER] = dup_str("segment");
  t->queries[4].kind = CR_QUERY_MEMBERS;
  t->queries[5].nparams = 1;
  t->queries[5].params = calloc(1, sizeof *t->queries[5].params);
  t->queries[5].params[0].name = dup_str("min_age");
  t->queries[5].params[0].type = CR_PARAM_INTEGER;
  memset(t->sha256, 0xab, sizeof t->sha256);
  /* A small ladder, so the sets of these tests pad to a few hundred points
   * at most; 2, 3 and 20 are the sizes the scripted peers announce. */
  static const uint64_t edges[] = {2, 3, 20, 40, 64, 128, 256, 512};
  memcpy(t->limits.size_buckets.edges, edges, sizeof edges);
  t->limits.size_buckets.nedges = sizeof edges / sizeof edges[0];
  return t;
}

static void free_template(cr_template *t) {
  for (size_t i = 0; i < t->nqueries; i++) {
    free(t->queries[i].name);
    free(t->queries[i].group_by[CR_ROLE_PROVIDER]);
    for (size_t j = 0; j < t->queries[i].nparams; j++)
      free(t->queries[i].params[j].name);
    free(t->queries[i].params);
  }
  free(t->queries);
  free(t->name);
  free(t->suite);
  free(t->match_key.name);
  free(t);
}

/* The number in key i ("user<num>@example.com"); keys are not
 * NUL-terminated, so copy before parsing. */
static int key_num(const cr_dataset *d, size_t i) {
  char buf[64];
  size_t len = d->off[i + 1] - d->off[i];
  if (len >= sizeof buf)
    len = sizeof buf - 1;
  memcpy(buf, d->bytes + d->off[i], len);
  buf[len] = '\0';
  return atoi(buf + 4);
}

/* Labels "seg<i % nlab>" on the keys of fx_mem_dataset (sorted by key). */
static void label_dataset(cr_dataset *d, int nlab) {
  d->nlabels = (size_t)nlab;
  d->label_names = calloc((size_t)nlab, sizeof *d->label_names);
  d->label_sizes = calloc((size_t)nlab, sizeof *d->label_sizes);
  d->labels = calloc(d->n, sizeof *d->labels);
  for (int j = 0; j < nlab; j++) {
    char buf[16];
    snprintf(buf, sizeof buf, "seg%d", j);
    d->label_names[j] = dup_str(buf);
  }
  for (size_t i = 0; i < d->n; i++) {
    int num = key_num(d, i);
    d->labels[i] = (uint32_t)(num % nlab);
    d->label_sizes[d->labels[i]]++;
  }
}

typedef struct pair {
  cr_template *tp, *tc;
  cr_dataset *dp, *dc;
  party kp, kc;
  cr_session *provider;      /* responder */
  cr_session *consumer;      /* runner */
  cr_buf wire_c2p, wire_p2c; /* everything each side sent */
} pair;

static void pair_init(pair *x, int p_from, int p_to, int c_from, int c_to, uint64_t min_count,
                      const char *query) {
  memset(x, 0, sizeof *x);
  x->tp = make_template(min_count);
  x->tc = make_template(min_count);
  x->dp = fx_mem_dataset("user", "@example.com", p_from, p_to, 0);
  x->dc = fx_mem_dataset("user", "@example.com", c_from, c_to, 0);
  crypto_sign_keypair(x->kp.pk, x->kp.sk);
  crypto_sign_keypair(x->kc.pk, x->kc.sk);
  cr_buf_init(&x->wire_c2p);
  cr_buf_init(&x->wire_p2c);

  cr_session_config pc = {0}, cc = {0};
  pc.tmpl = x->tp;
  pc.data = x->dp;
  pc.role = CR_ROLE_PROVIDER;
  pc.software = "test";
  pc.batch_size = 37; /* several batches, uneven last one */
  pc.sign = sign_cb;
  pc.sign_ctx = &x->kp;
  memcpy(pc.peer_sign_pk, x->kc.pk, 32);
  cc = pc;
  cc.tmpl = x->tc;
  cc.data = x->dc;
  cc.role = CR_ROLE_CONSUMER;
  cc.is_runner = 1;
  cc.query = query;
  cc.sign_ctx = &x->kc;
  memcpy(cc.peer_sign_pk, x->kp.pk, 32);
  assert_int_equal(cr_session_new(&x->provider, &pc, NULL), 0);
  assert_int_equal(cr_session_new(&x->consumer, &cc, NULL), 0);
}

static void pair_free(pair *x) {
  cr_session_free(x->provider);
  cr_session_free(x->consumer);
  free_template(x->tp);
  free_template(x->tc);
  fx_mem_dataset_free(x->dp);
  fx_mem_dataset_free(x->dc);
  cr_buf_free(&x->wire_c2p);
  cr_buf_free(&x->wire_p2c);
}

/* Moves bytes both ways until neither side has anything to say. `chunk`
 * limits how many bytes are delivered per call (1 = byte at a time). */
static void pump(pair *x, size_t chunk) {
  for (int rounds = 0; rounds < 100000; rounds++) {
    int moved = 0;
    cr_session *from[2] = {x->consumer, x->provider};
    cr_session *to[2] = {x->provider, x->consumer};
    cr_buf *log[2] = {&x->wire_c2p, &x->wire_p2c};
    for (int d = 0; d < 2; d++) {
      const uint8_t *data;
      size_t len;
      cr_session_send(from[d], &data, &len);
      if (len == 0)
        continue;
      size_t n = len < chunk ? len : chunk;
      assert_int_equal(cr_buf_append(log[d], data, n), 0);
      cr_session_recv(to[d], data, n);
      cr_session_sent(from[d], n);
      moved = 1;
    }
    if (!moved)
      return;
  }
  fail_msg("sessions did not settle");
}

/* ---- tests: two honest sessions ------------------------------------------ */

static void test_count_both_receive(void **state) {
  (void)state;
  pair x;
  /* provider 0..199, consumer 120..369: overlap 80 */
  pair_init(&x, 0, 200, 120, 370, 50, "overlap");
  assert_int_equal(cr_session_start(x.consumer), 0);
  pump(&x, SIZE_MAX);
  const cr_session_result *rp = cr_session_result_get(x.provider);
  const cr_session_result *rc = cr_session_result_get(x.consumer);
  assert_int_equal(rc->status, CR_SESSION_DONE);
  assert_int_equal(rp->status, CR_SESSION_DONE);
  assert_true(rc->receives && rp->receives);
  assert_int_equal(rc->count, 80);
  assert_int_equal(rp->count, 80);
  assert_false(rc->suppressed);
  /* Issue 13: the peer's size is a bucket (256 for 200 and for 250); the
   * exact own size stays local. */
  assert_int_equal(rc->own_set_size, 250);
  assert_int_equal(rc->own_set_bucket, 256);
  assert_int_equal(rc->peer_set_size, 256);
  assert_int_equal(rp->peer_set_size, 256);
  assert_true(rc->peer_set_size_is_bucket && rp->peer_set_size_is_bucket);
  assert_memory_equal(rc->released_sha256, rp->released_sha256, sizeof rc->released_sha256);
  assert_memory_equal(rc->session_id, rp->session_id, 32);
  assert_memory_equal(rc->transcript_sha256, rp->transcript_sha256, 32);
  assert_string_equal(rp->query, "overlap");
  /* ceil((40 + 8 + 8) / 8) = 7 */
  assert_int_equal(rc->digest_bytes, 7);
  assert_true(cr_session_scalar_wiped(x.consumer));
  assert_true(cr_session_scalar_wiped(x.provider));
  assert_int_equal(cr_session_state_get(x.consumer), CR_STATE_DONE);
  assert_int_equal(cr_session_state_get(x.provider), CR_STATE_DONE);
  pair_free(&x);
}

static void test_count_byte_at_a_time(void **state) {
  (void)state;
  pair x;
  pair_init(&x, 0, 60, 30, 100, 10, "overlap");
  assert_int_equal(cr_session_start(x.consumer), 0);
  pump(&x, 1);
  assert_int_equal(cr_session_result_get(x.consumer)->status, CR_SESSION_DONE);
  assert_int_equal(cr_session_result_get(x.consumer)->count, 30);
  assert_int_equal(cr_session_result_get(x.provider)->count, 30);
  pair_free(&x);
}

static void test_disjoint_sets(void **state) {
  (void)state;
  pair x;
  pair_init(&x, 0, 100, 100, 200, 1, "overlap");
  assert_int_equal(cr_session_start(x.consumer), 0);
  pump(&x, SIZE_MAX);
  assert_int_equal(cr_session_result_get(x.consumer)->status, CR_SESSION_DONE);
  assert_int_equal(cr_session_result_get(x.consumer)->count, 0);
  assert_true(cr_session_result_get(x.consumer)->suppressed);
  pair_free(&x);
}

/* Parses a recorded stream into its frames; calls fn for each. */
typedef void (*frame_fn)(const Cleanroom__V1__Frame *f, void *ctx);
static void for_each_frame(const cr_buf *wire, frame_fn fn, void *ctx) {
  size_t off = 0;
  while (off < wire->len) {
    const uint8_t *p;
    size_t plen, total;
    assert_int_equal(cr__frame_peek(wire->data + off, wire->len - off, CR_DEFAULT_MAX_FRAME, &p,
                                    &plen, &total, NULL),
                     1);
    Cleanroom__V1__Frame *f = cr__frame_decode(p, plen);
    assert_non_null(f);
    fn(f, ctx);
    cr__frame_free(f);
    off += total;
  }
}

typedef struct frame_stats {
  int counts[17]; /* by msg_case (NoiseSeed is 16) */
  uint8_t last[32];
  size_t last_len;
  int unsorted;
  uint64_t digests;
  int coded;
} frame_stats;

static void count_frames(const Cleanroom__V1__Frame *f, void *ctx) {
  frame_stats *st = ctx;
  st->counts[f->msg_case]++;
  if (f->msg_case == CLEANROOM__V1__FRAME__MSG_DIGESTS && f->digests->gcs_count > 0) {
    /* Golomb-Rice coded: sorted by construction (the decoder refuses a
     * decreasing value); count them. */
    st->digests += f->digests->gcs_count;
    st->coded++;
  } else if (f->msg_case == CLEANROOM__V1__FRAME__MSG_DIGESTS) {
    size_t l = 7;
    for (size_t i = 0; i + l <= f->digests->digests.len; i += l) {
      if (st->last_len && memcmp(st->last, f->digests->digests.data + i, l) > 0)
        st->unsorted = 1;
      memcpy(st->last, f->digests->digests.data + i, l);
      st->last_len = l;
      st->digests++;
    }
  }
}

/* The provider is not in results_to: it gets no digests and no count; the
 * consumer's digests come back sorted; no key crosses the wire in clear. */
static void test_consumer_only_provider_learns_nothing(void **state) {
  (void)state;
  pair x;
  pair_init(&x, 0, 200, 120, 370, 50, "overlap_to_consumer");
  assert_int_equal(cr_session_start(x.consumer), 0);
  pump(&x, SIZE_MAX);
  const cr_session_result *rp = cr_session_result_get(x.provider);
  const cr_session_result *rc = cr_session_result_get(x.consumer);
  assert_int_equal(rc->status, CR_SESSION_DONE);
  assert_int_equal(rp->status, CR_SESSION_DONE);
  assert_int_equal(rc->count, 80);
  assert_false(rp->receives);
  assert_int_equal(rp->count, 0);
  assert_int_equal(rp->peer_set_size, 256); /* the bucket of 250 */

  frame_stats to_provider = {0}, to_consumer = {0};
  for_each_frame(&x.wire_c2p, count_frames, &to_provider);
  for_each_frame(&x.wire_p2c, count_frames, &to_consumer);
  assert_int_equal(to_provider.counts[CLEANROOM__V1__FRAME__MSG_DIGESTS], 0);
  assert_int_equal(to_provider.counts[CLEANROOM__V1__FRAME__MSG_END_OF_DIGESTS], 0);
  assert_true(to_consumer.counts[CLEANROOM__V1__FRAME__MSG_DIGESTS] > 0);
  assert_int_equal(to_consumer.digests, 256); /* 250 keys and 6 pads */
  assert_false(to_consumer.unsorted);
  assert_true(to_consumer.coded > 0); /* 7-byte digests go Golomb-Rice coded */

  /* No key, in any form a reader would recognise, is on the wire. */
  const char *probe[] = {"user150@example.com", "user5@example.com", "example.com"};
  for (size_t i = 0; i < 3; i++) {
    assert_null(memmem(x.wire_c2p.data, x.wire_c2p.len, probe[i], strlen(probe[i])));
    assert_null(memmem(x.wire_p2c.data, x.wire_p2c.len, probe[i], strlen(probe[i])));
  }
  pair_free(&x);
}

static void test_below_min_count_is_suppressed(void **state) {
  (void)state;
  pair x;
  pair_init(&x, 0, 200, 190, 300, 100, "overlap"); /* overlap 10 < 100 */
  assert_int_equal(cr_session_start(x.consumer), 0);
  pump(&x, SIZE_MAX);
  const cr_session_result *rc = cr_session_result_get(x.consumer);
  const cr_session_result *rp = cr_session_result_get(x.provider);
  assert_int_equal(rc->status, CR_SESSION_DONE);
  assert_true(rc->suppressed);
  assert_true(rp->suppressed);
  assert_int_equal(rc->min_count, 100);
  pair_free(&x);
}

/* cr_session_result_take moves the heap outputs: they outlive the session
 * and the session's copy is left without them. */
static void test_result_take(void **state) {
  (void)state;
  pair x;
  pair_init(&x, 0, 60, 30, 100, 10, "my_matches");
  assert_int_equal(cr_session_start(x.consumer), 0);
  pump(&x, SIZE_MAX);
  cr_session_result out;
  memset(&out, 0, sizeof out);
  cr_session_result_take(x.consumer, &out);
  const cr_session_result *left = cr_session_result_get(x.consumer);
  assert_int_equal(out.status, CR_SESSION_DONE);
  assert_int_equal(left->status, CR_SESSION_DONE);
  assert_int_equal(out.count, 30);
  assert_non_null(out.matched);
  assert_non_null(out.labels[CR_ROLE_CONSUMER]);
  assert_null(left->matched);
  assert_null(left->labels[CR_ROLE_CONSUMER]);
  assert_int_equal(left->nlabels[CR_ROLE_CONSUMER], 0);
  pair_free(&x); /* frees the session: out's outputs must survive (ASan) */
  size_t bits = 0;
  for (size_t i = 0; i < 70; i++)
    bits += (out.matched[i / 8] >> (i % 8)) & 1;
  assert_int_equal(bits, 30);
  cr_session_result_free_outputs(&out);
  assert_null(out.matched);
}

/* ---- tests: refusals ---------------------------------------------------- */

static void expect_refusal(pair *x, int wire) {
  assert_int_equal(cr_session_start(x->consumer), 0);
  pump(x, SIZE_MAX);
  const cr_session_result *rp = cr_session_result_get(x->provider);
  const cr_session_result *rc = cr_session_result_get(x->consumer);
  assert_int_equal(rp->status, CR_SESSION_FAILED);
  assert_int_equal(rc->status, CR_SESSION_FAILED);
  assert_int_equal(rp->error, CR_EREFUSED);
  assert_int_equal(rc->error, CR_EPEER);
  assert_int_equal(rp->wire_error, wire);
  assert_int_equal(rc->wire_error, wire);
  assert_true(rc->error_from_peer);
  assert_int_equal(rc->count, 0);
  assert_true(cr_session_scalar_wiped(x->provider));
  assert_true(cr_session_scalar_wiped(x->consumer));
  /* No point left either side after a refusal. */
  frame_stats a = {0};
  for_each_frame(&x->wire_p2c, count_frames, &a);
  assert_int_equal(a.counts[CLEANROOM__V1__FRAME__MSG_BATCH], 0);
}

static void test_template_mismatch_shows_both_hashes(void **state) {
  (void)state;
  pair x;
  pair_init(&x, 0, 50, 0, 50, 1, "overlap");
  x.tc->sha256[0] ^= 1;
  expect_refusal(&x, CR_WIRE_TEMPLATE_MISMATCH);
  char hp[65], hc[65];
  cr_hex_encode(hp, x.tp->sha256, 32);
  cr_hex_encode(hc, x.tc->sha256, 32);
  const char *m = cr_session_result_get(x.consumer)->error_msg;
  assert_non_null(strstr(m, hp));
  assert_non_null(strstr(m, hc));
  assert_non_null(strstr(m, "TEMPLATE_MISMATCH"));
  /* Each hash labelled from the reader's side (issue 16: the runner was
   * shown "the partner's hash is <ours>"). */
  char want[256];
  snprintf(want, sizeof want, "this node (the consumer) loaded %s, the partner loaded %s", hc, hp);
  if (strstr(m, want) == NULL)
    fail_msg("runner's message: %s", m);
  const char *mp = cr_session_result_get(x.provider)->error_msg;
  snprintf(want, sizeof want, "the provider loaded %s, the consumer loaded %s", hp, hc);
  if (strstr(mp, want) == NULL)
    fail_msg("responder's message: %s", mp);
  pair_free(&x);
}

/* Version 2: the refusing side's Error frame carries its template hash and
 * protocol version, so the runner (which never saw the peer's Hello) can
 * tell what differs without parsing the message. */
static void test_error_frame_structured(void **state) {
  (void)state;
  pair x;
  pair_init(&x, 0, 50, 0, 50, 1, "overlap");
  x.tc->sha256[0] ^= 1;
  expect_refusal(&x, CR_WIRE_TEMPLATE_MISMATCH);
  const cr_session_result *rc = cr_session_result_get(x.consumer);
  assert_true(rc->error_from_peer);
  assert_true(rc->have_peer_template);
  assert_memory_equal(rc->peer_template_sha256, x.tp->sha256, 32);
  assert_int_equal(rc->peer_protocol_version, CR_PROTOCOL_VERSION);
  /* The refusal frame a node sends without a session names the version. */
  cr_buf b;
  cr_buf_init(&b);
  assert_int_equal(cr_session_refusal_frame(&b, CR_WIRE_BUSY, "busy"), 0);
  Cleanroom__V1__Frame *f = cr__frame_decode(b.data + 4, b.len - 4);
  assert_non_null(f);
  assert_int_equal(f->error->protocol_version, CR_PROTOCOL_VERSION);
  assert_int_equal(f->error->template_sha256.len, 0);
  cr__frame_free(f);
  cr_buf_free(&b);
  pair_free(&x);
}

static void test_unknown_query_refused(void **state) {
  (void)state;
  pair x;
  pair_init(&x, 0, 50, 0, 50, 1, "overlap");
  /* The runner's copy names a query the responder's copy lacks. */
  free(x.tc->queries[1].name);
  x.tc->queries[1].name = dup_str("secret_query");
  cr_session_free(x.consumer);
  cr_session_config cc = {0};
  cc.tmpl = x.tc;
  cc.data = x.dc;
  cc.role = CR_ROLE_CONSUMER;
  cc.is_runner = 1;
  cc.query = "secret_query";
  cc.sign = sign_cb;
  cc.sign_ctx = &x.kc;
  assert_int_equal(cr_session_new(&x.consumer, &cc, NULL), 0);
  expect_refusal(&x, CR_WIRE_UNKNOWN_QUERY);
  pair_free(&x);
}

static void test_role_not_in_run_by_refused(void **state) {
  (void)state;
  pair x;
  pair_init(&x, 0, 50, 0, 50, 1, "provider_runs"); /* consumer may not run it */
  expect_refusal(&x, CR_WIRE_NOT_ALLOWED);
  pair_free(&x);
}

static void test_size_limits_refused(void **state) {
  (void)state;
  pair x;
  /* The responder's true size (23) is below min_set_size: it decides so
   * itself, after admission, and tells the runner only SIZE. */
  pair_init(&x, 0, 23, 0, 50, 1, "overlap");
  x.tp->limits.min_set_size = 30;
  x.tc->limits.min_set_size = 30;
  expect_refusal(&x, CR_WIRE_SIZE);
  assert_non_null(strstr(cr_session_result_get(x.provider)->error_msg, "min_set_size"));
  assert_non_null(strstr(cr_session_result_get(x.provider)->error_msg, "23"));
  /* Issue 13: the refusal never carries our size, nor any wording of ours. */
  const char *m = cr_session_result_get(x.consumer)->error_msg;
  assert_null(strstr(m, "23"));
  assert_null(strstr(m, "min_set_size"));
  assert_non_null(strstr(m, cr_wire_error_text(CR_WIRE_SIZE)));
  /* No Hello from the provider either: nothing that depends on its data. */
  frame_stats a = {0};
  for_each_frame(&x.wire_p2c, count_frames, &a);
  assert_int_equal(a.counts[CLEANROOM__V1__FRAME__MSG_HELLO], 0);
  pair_free(&x);
}

static int admit_none(void *ctx, const cr_query *q, const cr_session_result *res, char *msg,
                      size_t cap) {
  int *calls = ctx;
  (*calls)++;
  /* Admission first: no session id, no own size, the query and the peer's
   * bucket are known. */
  assert_false(res->have_session_id);
  assert_int_equal(res->own_set_size, 0);
  assert_int_equal(res->peer_set_size, 64);
  assert_string_equal(q->name, "overlap");
  assert_string_equal(res->query, "overlap");
  snprintf(msg, cap, "the run limit of query \"%s\" is reached", res->query);
  return CR_EREFUSED;
}

/* The pair's provider made again from pc (its hooks, data or load): the
 * template, role, signing key and the consumer's key are the pair's. */
static void provider_again(pair *x, cr_session_config *pc) {
  cr_session_free(x->provider);
  pc->tmpl = x->tp;
  pc->role = CR_ROLE_PROVIDER;
  pc->sign = sign_cb;
  pc->sign_ctx = &x->kp;
  memcpy(pc->peer_sign_pk, x->kc.pk, 32);
  assert_int_equal(cr_session_new(&x->provider, pc, NULL), 0);
}

/* A node's admit hook (run limits) refuses after the Hellos: no point is
 * sent by the refusing side and nothing is released on either. */
static void test_admit_refusal(void **state) {
  (void)state;
  pair x;
  int calls = 0;
  pair_init(&x, 0, 50, 0, 50, 1, "overlap");
  cr_session_config pc = {0};
  pc.data = x.dp;
  pc.admit = admit_none;
  pc.admit_ctx = &calls;
  provider_again(&x, &pc);
  expect_refusal(&x, CR_WIRE_NOT_ALLOWED);
  assert_int_equal(calls, 1);
  /* The reason stays local (issue 13: fixed wording on the wire). */
  assert_non_null(strstr(cr_session_result_get(x.provider)->error_msg, "run limit"));
  assert_null(strstr(cr_session_result_get(x.consumer)->error_msg, "run limit"));
  assert_non_null(strstr(cr_session_result_get(x.consumer)->error_msg,
                         cr_wire_error_text(CR_WIRE_NOT_ALLOWED)));
  pair_free(&x);
}

static int admit_log_full(void *ctx, const cr_query *q, const cr_session_result *res, char *msg,
                          size_t cap) {
  (void)ctx;
  (void)q;
  (void)res;
  snprintf(msg, cap, "cannot record the session in the audit log: No space left on device");
  return CR_EIO;
}

/* The admit hook's own failure (its audit log cannot be written) is not
 * the contract's refusal: the peer is told INTERNAL (retrying may help; its
 * run exits 5, not 4 "refused"), this side keeps the code (CR_EIO: exit 7),
 * and nothing is sent or released. */
static void test_admit_failure_is_internal(void **state) {
  (void)state;
  pair x;
  pair_init(&x, 0, 50, 0, 50, 1, "overlap");
  cr_session_config pc = {0};
  pc.data = x.dp;
  pc.admit = admit_log_full;
  provider_again(&x, &pc);
  assert_int_equal(cr_session_start(x.consumer), 0);
  pump(&x, SIZE_MAX);
  const cr_session_result *rp = cr_session_result_get(x.provider);
  const cr_session_result *rc = cr_session_result_get(x.consumer);
  assert_int_equal(rp->status, CR_SESSION_FAILED);
  assert_int_equal(rc->status, CR_SESSION_FAILED);
  assert_int_equal(rp->error, CR_EIO);
  assert_int_equal(rp->wire_error, CR_WIRE_INTERNAL);
  assert_int_equal(rc->error, CR_EPEER);
  assert_int_equal(rc->wire_error, CR_WIRE_INTERNAL);
  assert_int_equal(rc->count, 0);
  assert_non_null(strstr(rp->error_msg, "audit log"));
  assert_null(strstr(rc->error_msg, "audit log")); /* the reason stays local */
  frame_stats a = {0};
  for_each_frame(&x.wire_p2c, count_frames, &a);
  assert_int_equal(a.counts[CLEANROOM__V1__FRAME__MSG_BATCH], 0);
  pair_free(&x);
}

/* A long-running node checks the template's expiry on every Hello. */
static void test_expired_template_refused_on_hello(void **state) {
  (void)state;
  pair x;
  pair_init(&x, 0, 50, 0, 50, 1, "overlap");
  x.tp->limits.not_after = 1000;
  x.tc->limits.not_after = 1000;
  cr_session_config pc = {0};
  pc.data = x.dp;
  pc.now_unix = 2000;
  provider_again(&x, &pc);
  expect_refusal(&x, CR_WIRE_NOT_ALLOWED);
  assert_non_null(strstr(cr_session_result_get(x.provider)->error_msg, "expired"));
  pair_free(&x);
}

static void test_check_local(void **state) {
  (void)state;
  cr_template *t = make_template(1);
  cr_dataset *d = fx_mem_dataset("user", "@example.com", 0, 10, 0);
  cr_session_config c = {0};
  cr_error err;
  c.tmpl = t;
  c.data = d;
  c.role = CR_ROLE_CONSUMER;
  c.is_runner = 1;
  c.query = "overlap";
  assert_int_equal(cr_session_check_local(&c, 1000, &err), 0);
  c.query = "nope";
  assert_int_equal(cr_session_check_local(&c, 1000, &err), CR_EREFUSED);
  assert_non_null(strstr(err.msg, "overlap_to_consumer"));
  c.query = "provider_runs";
  assert_int_equal(cr_session_check_local(&c, 1000, &err), CR_EREFUSED);
  assert_non_null(strstr(err.msg, "run_by"));
  c.query = "overlap";
  t->limits.not_after = 500;
  assert_int_equal(cr_session_check_local(&c, 1000, &err), CR_EREFUSED);
  assert_non_null(strstr(err.msg, "expired"));
  t->limits.not_after = 0;
  t->limits.max_set_size = 5;
  assert_int_equal(cr_session_check_local(&c, 1000, &err), CR_EREFUSED);
  assert_non_null(strstr(err.msg, "max_set_size"));
  free_template(t);
  fx_mem_dataset_free(d);
}

static void test_digest_bytes(void **state) {
  (void)state;
  assert_int_equal(cr_session_digest_bytes(1, 1, 0, 0), 5);
  assert_int_equal(cr_session_digest_bytes(1 << 20, 1 << 20, 0, 0), 10);
  assert_int_equal(cr_session_digest_bytes(1000, 1000, 16, 0), 16);
  assert_int_equal(cr_session_digest_bytes(1000, 1000, 0, 40), 32);
}

/* ---- tests: hostile peers ----------------------------------------------- */

/* A responder (provider) facing scripted bytes; returns it for checks. */
typedef struct hostile {
  cr_template *t;
  cr_dataset *d;
  party me, peer;
  cr_session *s;
} hostile;

static void hostile_init(hostile *h, int runner) {
  memset(h, 0, sizeof *h);
  h->t = make_template(1);
  h->d = fx_mem_dataset("user", "@example.com", 0, 20, 0);
  crypto_sign_keypair(h->me.pk, h->me.sk);
  crypto_sign_keypair(h->peer.pk, h->peer.sk);
  cr_session_config c = {0};
  c.tmpl = h->t;
  c.data = h->d;
  c.role = runner ? CR_ROLE_CONSUMER : CR_ROLE_PROVIDER;
  c.is_runner = runner;
  c.query = runner ? "overlap" : NULL;
  c.sign = sign_cb;
  c.sign_ctx = &h->me;
  memcpy(c.peer_sign_pk, h->peer.pk, 32);
  assert_int_equal(cr_session_new(&h->s, &c, NULL), 0);
  assert_int_equal(cr_session_start(h->s), 0);
}

static void hostile_free(hostile *h) {
  cr_session_free(h->s);
  free_template(h->t);
  fx_mem_dataset_free(h->d);
}

static void feed_frame(hostile *h, Cleanroom__V1__Frame *f) {
  cr_buf b;
  cr_buf_init(&b);
  assert_int_equal(cr__frame_append(&b, f), 0);
  cr_session_recv(h->s, b.data, b.len);
  cr_buf_free(&b);
}

static void feed_hello(hostile *h, const char *role, uint64_t set_size) {
  Cleanroom__V1__Hello m = CLEANROOM__V1__HELLO__INIT;
  Cleanroom__V1__Frame f = CLEANROOM__V1__FRAME__INIT;
  uint8_t nonce[32] = {1};
  m.protocol_version = CR_PROTOCOL_VERSION;
  m.role = (char *)role;
  m.template_sha256.data = h->t->sha256;
  m.template_sha256.len = 32;
  m.query = "overlap";
  m.suite = "ristretto255";
  m.set_size = set_size;
  m.nonce.data = nonce;
  m.nonce.len = 32;
  f.msg_case = CLEANROOM__V1__FRAME__MSG_HELLO;
  f.hello = &m;
  feed_frame(h, &f);
}

static void feed_batch(hostile *h, uint64_t seq, const uint8_t *pts, size_t len) {
  Cleanroom__V1__Batch m = CLEANROOM__V1__BATCH__INIT;
  Cleanroom__V1__Frame f = CLEANROOM__V1__FRAME__INIT;
  m.seq = seq;
  m.points.data = (uint8_t *)pts;
  m.points.len = len;
  f.msg_case = CLEANROOM__V1__FRAME__MSG_BATCH;
  f.batch = &m;
  feed_frame(h, &f);
}

static void feed_eos(hostile *h, uint64_t count) {
  Cleanroom__V1__EndOfSet m = CLEANROOM__V1__END_OF_SET__INIT;
  Cleanroom__V1__Frame f = CLEANROOM__V1__FRAME__INIT;
  m.count = count;
  f.msg_case = CLEANROOM__V1__FRAME__MSG_END_OF_SET;
  f.end_of_set = &m;
  feed_frame(h, &f);
}

static void collect_last_error(const Cleanroom__V1__Frame *f, void *ctx) {
  if (f->msg_case == CLEANROOM__V1__FRAME__MSG_ERROR)
    *(uint32_t *)ctx = f->error->code;
}

/* The session failed with a protocol error, told the peer, released nothing. */
static void expect_protocol_failure(hostile *h, const char *needle) {
  const cr_session_result *r = cr_session_result_get(h->s);
  assert_int_equal(r->status, CR_SESSION_FAILED);
  assert_int_equal(r->error, CR_EPROTO);
  assert_int_equal(r->count, 0);
  assert_true(cr_session_scalar_wiped(h->s));
  if (needle && strstr(r->error_msg, needle) == NULL)
    fail_msg("message \"%s\" lacks \"%s\"", r->error_msg, needle);
  const uint8_t *data;
  size_t len;
  cr_session_send(h->s, &data, &len);
  cr_buf out = {(uint8_t *)data, len, len};
  uint32_t code = 0;
  for_each_frame(&out, collect_last_error, &code);
  assert_int_equal(code, CR_WIRE_PROTOCOL);
  /* Further input is ignored, never crashes. */
  cr_session_recv(h->s, (const uint8_t *)"\0\0\0\1x", 5);
}

static void test_hostile_zero_length(void **state) {
  (void)state;
  hostile h;
  hostile_init(&h, 0);
  cr_session_recv(h.s, (const uint8_t *)"\0\0\0\0", 4);
  expect_protocol_failure(&h, "frames must be 1 to");
  hostile_free(&h);
}

static void test_hostile_oversize(void **state) {
  (void)state;
  hostile h;
  hostile_init(&h, 0);
  cr_session_recv(h.s, (const uint8_t *)"\x7f\xff\xff\xff", 4);
  expect_protocol_failure(&h, "2147483647");
  hostile_free(&h);
}

static void test_hostile_garbage(void **state) {
  (void)state;
  hostile h;
  hostile_init(&h, 0);
  cr_session_recv(h.s, (const uint8_t *)"\0\0\0\4\xff\xff\xff\xff", 8);
  expect_protocol_failure(&h, "not a valid frame");
  hostile_free(&h);
}

static void test_hostile_batch_before_hello(void **state) {
  (void)state;
  hostile h;
  hostile_init(&h, 0);
  uint8_t pts[32] = {0};
  feed_batch(&h, 0, pts, 32);
  expect_protocol_failure(&h, "before Hello");
  hostile_free(&h);
}

static void test_hostile_second_hello(void **state) {
  (void)state;
  hostile h;
  hostile_init(&h, 0);
  feed_hello(&h, "consumer", 20);
  assert_int_equal(cr_session_status_get(h.s), CR_SESSION_RUNNING);
  feed_hello(&h, "consumer", 20);
  expect_protocol_failure(&h, "second Hello");
  hostile_free(&h);
}

/* The receiving state: Hello expected first, then the set; a frame the
 * state does not take names the state in the message. */
static void test_state_names_the_state(void **state) {
  (void)state;
  hostile h;
  hostile_init(&h, 0);
  assert_int_equal(cr_session_state_get(h.s), CR_STATE_EXPECT_HELLO);
  feed_hello(&h, "consumer", 20);
  assert_int_equal(cr_session_state_get(h.s), CR_STATE_EXPECT_SET);
  feed_eos(&h, 0);
  expect_protocol_failure(&h, "announced 20 points, sent 0");
  assert_int_equal(cr_session_state_get(h.s), CR_STATE_FAILED);
  hostile_free(&h);

  hostile_init(&h, 0);
  feed_hello(&h, "consumer", 20);
  feed_hello(&h, "consumer", 20);
  expect_protocol_failure(&h, cr_session_state_name(CR_STATE_EXPECT_SET));
  hostile_free(&h);
  assert_string_equal(cr_session_state_name(CR_STATE_EXPECT_FINISH), "expecting Finish");
}

/* A valid point: the blinding of some message under a random scalar. */
static void valid_point(uint8_t out[32], int i) {
  uint8_t k[32], msg[8];
  crypto_core_ristretto255_scalar_random(k);
  memcpy(msg, &i, sizeof i);
  assert_int_equal(cr_suite_ristretto255.hash_blind(out, k, msg, sizeof msg), 0);
}

static void test_hostile_identity_point(void **state) {
  (void)state;
  hostile h;
  hostile_init(&h, 0);
  feed_hello(&h, "consumer", 20);
  uint8_t pts[64] = {0};
  valid_point(pts, 1); /* second point stays the identity (all zero) */
  feed_batch(&h, 0, pts, 64);
  expect_protocol_failure(&h, "point 1");
  hostile_free(&h);
}

static void test_hostile_noncanonical_point(void **state) {
  (void)state;
  hostile h;
  hostile_init(&h, 0);
  feed_hello(&h, "consumer", 20);
  uint8_t pts[32];
  memset(pts, 0xff, sizeof pts); /* > field prime: not canonical */
  feed_batch(&h, 0, pts, 32);
  expect_protocol_failure(&h, "not a valid ristretto255 element");
  hostile_free(&h);
}

static void test_hostile_wrong_seq(void **state) {
  (void)state;
  hostile h;
  hostile_init(&h, 0);
  feed_hello(&h, "consumer", 20);
  uint8_t pts[32];
  valid_point(pts, 1);
  feed_batch(&h, 0, pts, 32);
  feed_batch(&h, 0, pts, 32); /* repeated seq */
  expect_protocol_failure(&h, "sequence number 0, expected 1");
  hostile_free(&h);
}

static void test_hostile_ragged_batch(void **state) {
  (void)state;
  hostile h;
  hostile_init(&h, 0);
  feed_hello(&h, "consumer", 20);
  uint8_t pts[40] = {0};
  feed_batch(&h, 0, pts, 40);
  expect_protocol_failure(&h, "multiple");
  hostile_free(&h);
}

static void test_hostile_more_points_than_announced(void **state) {
  (void)state;
  hostile h;
  hostile_init(&h, 0);
  feed_hello(&h, "consumer", 2);
  uint8_t pts[96];
  for (int i = 0; i < 3; i++)
    valid_point(pts + 32 * i, i);
  feed_batch(&h, 0, pts, 96);
  expect_protocol_failure(&h, "more points");
  hostile_free(&h);
}

static void test_hostile_fewer_points_than_announced(void **state) {
  (void)state;
  hostile h;
  hostile_init(&h, 0);
  feed_hello(&h, "consumer", 3);
  uint8_t pts[32];
  valid_point(pts, 0);
  feed_batch(&h, 0, pts, 32);
  feed_eos(&h, 1);
  expect_protocol_failure(&h, "announced 3 points, sent 1");
  hostile_free(&h);
}

static void test_hostile_digests_before_end_of_set(void **state) {
  (void)state;
  hostile h;
  hostile_init(&h, 1); /* runner receives in "overlap" */
  feed_hello(&h, "provider", 20);
  assert_int_equal(cr_session_status_get(h.s), CR_SESSION_RUNNING);
  Cleanroom__V1__Digests m = CLEANROOM__V1__DIGESTS__INIT;
  Cleanroom__V1__Frame f = CLEANROOM__V1__FRAME__INIT;
  uint8_t d[14] = {0};
  m.digests.data = d;
  m.digests.len = sizeof d;
  f.msg_case = CLEANROOM__V1__FRAME__MSG_DIGESTS;
  f.digests = &m;
  feed_frame(&h, &f);
  expect_protocol_failure(&h, "before its EndOfSet");
  hostile_free(&h);
}

static void test_hostile_finish_too_early(void **state) {
  (void)state;
  hostile h;
  hostile_init(&h, 0);
  feed_hello(&h, "consumer", 20);
  Cleanroom__V1__Finish m = CLEANROOM__V1__FINISH__INIT;
  Cleanroom__V1__Frame f = CLEANROOM__V1__FRAME__INIT;
  f.msg_case = CLEANROOM__V1__FRAME__MSG_FINISH;
  f.finish = &m;
  feed_frame(&h, &f);
  expect_protocol_failure(&h, "before the session's data was complete");
  hostile_free(&h);
}

/* A man in the middle (or a lying peer) flips a byte of the receipt: the
 * honest side must not release its result. */
static void test_forged_receipt_releases_nothing(void **state) {
  (void)state;
  pair x;
  pair_init(&x, 0, 40, 20, 60, 1, "overlap");
  /* The consumer verifies with a key that is not the provider's. */
  party other;
  crypto_sign_keypair(other.pk, other.sk);
  cr_session_free(x.consumer);
  cr_session_config cc = {0};
  cc.tmpl = x.tc;
  cc.data = x.dc;
  cc.role = CR_ROLE_CONSUMER;
  cc.is_runner = 1;
  cc.query = "overlap";
  cc.sign = sign_cb;
  cc.sign_ctx = &x.kc;
  memcpy(cc.peer_sign_pk, other.pk, 32);
  assert_int_equal(cr_session_new(&x.consumer, &cc, NULL), 0);
  assert_int_equal(cr_session_start(x.consumer), 0);
  pump(&x, SIZE_MAX);
  const cr_session_result *rc = cr_session_result_get(x.consumer);
  assert_int_equal(rc->status, CR_SESSION_FAILED);
  assert_non_null(strstr(rc->error_msg, "signature"));
  assert_int_equal(rc->count, 0);
  pair_free(&x);
}

static void test_peer_error_text_is_sanitised(void **state) {
  (void)state;
  hostile h;
  hostile_init(&h, 0);
  Cleanroom__V1__Error m = CLEANROOM__V1__ERROR__INIT;
  Cleanroom__V1__Frame f = CLEANROOM__V1__FRAME__INIT;
  m.code = CR_WIRE_INTERNAL;
  m.message = "boom\x1b[2J\n";
  f.msg_case = CLEANROOM__V1__FRAME__MSG_ERROR;
  f.error = &m;
  feed_frame(&h, &f);
  const cr_session_result *r = cr_session_result_get(h.s);
  assert_int_equal(r->status, CR_SESSION_FAILED);
  assert_int_equal(r->error, CR_EPEER);
  assert_null(strchr(r->error_msg, '\x1b'));
  assert_null(strchr(r->error_msg, '\n'));
  hostile_free(&h);
}

/* group_by on the provider's side: a count per (provider label, consumer
 * label) cell, each thresholded; the total is not released. */
static void test_group_by_cells(void **state) {
  (void)state;
  pair x;
  memset(&x, 0, sizeof x);
  x.tp = make_template(27);
  x.tc = make_template(27);
  x.dp = fx_mem_dataset("user", "@example.com", 0, 200, 0);
  x.dc = fx_mem_dataset("user", "@example.com", 120, 370, 0);
  label_dataset(x.dp, 3);
  crypto_sign_keypair(x.kp.pk, x.kp.sk);
  crypto_sign_keypair(x.kc.pk, x.kc.sk);
  cr_session_config pc = {0}, cc = {0};
  pc.tmpl = x.tp;
  pc.data = x.dp;
  pc.role = CR_ROLE_PROVIDER;
  pc.batch_size = 37;
  pc.sign = sign_cb;
  pc.sign_ctx = &x.kp;
  memcpy(pc.peer_sign_pk, x.kc.pk, 32);
  cc = pc;
  cc.tmpl = x.tc;
  cc.data = x.dc;
  cc.role = CR_ROLE_CONSUMER;
  cc.is_runner = 1;
  cc.query = "by_segment";
  cc.sign_ctx = &x.kc;
  memcpy(cc.peer_sign_pk, x.kp.pk, 32);
  assert_int_equal(cr_session_new(&x.provider, &pc, NULL), 0);
  assert_int_equal(cr_session_new(&x.consumer, &cc, NULL), 0);
  assert_int_equal(cr_session_start(x.consumer), 0);
  pump(&x, SIZE_MAX);
  const cr_session_result *rc = cr_session_result_get(x.consumer);
  const cr_session_result *rp = cr_session_result_get(x.provider);
  assert_int_equal(rc->status, CR_SESSION_DONE);
  assert_int_equal(rp->status, CR_SESSION_DONE);
  assert_true(rc->grouped);
  assert_int_equal(rc->nlabels[CR_ROLE_PROVIDER], 3);
  assert_int_equal(rc->nlabels[CR_ROLE_CONSUMER], 1);
  assert_string_equal(rc->labels[CR_ROLE_PROVIDER][2], "seg2");
  assert_int_equal(rc->ncells, 3);
  /* overlap 120..199: 27 with i%3==0, 27 with 1, 26 with 2 (< 27) */
  assert_int_equal(rc->cells[0].count, 27);
  assert_false(rc->cells[0].suppressed);
  assert_int_equal(rc->cells[1].count, 27);
  assert_true(rc->cells[2].suppressed);
  assert_int_equal(rc->cells[2].count, 0);
  assert_int_equal(rc->count, 0); /* the total would reveal the suppressed cell */
  assert_false(rp->receives);
  assert_null(rp->cells);
  pair_free(&x);
}

static void test_members_to_owner(void **state) {
  (void)state;
  pair x;
  pair_init(&x, 0, 200, 120, 370, 50, "my_matches");
  assert_int_equal(cr_session_start(x.consumer), 0);
  pump(&x, SIZE_MAX);
  const cr_session_result *rc = cr_session_result_get(x.consumer);
  const cr_session_result *rp = cr_session_result_get(x.provider);
  assert_int_equal(rc->status, CR_SESSION_DONE);
  assert_int_equal(rc->count, 80);
  assert_non_null(rc->matched);
  int wrong = 0, set = 0;
  for (size_t i = 0; i < x.dc->n; i++) {
    int num = key_num(x.dc, i);
    int bit = (rc->matched[i / 8] >> (i % 8)) & 1;
    set += bit;
    wrong += bit != (num < 200);
  }
  assert_int_equal(set, 80);
  assert_int_equal(wrong, 0);
  /* The provider learns nothing of which records matched, nor the count. */
  assert_false(rp->receives);
  assert_null(rp->matched);
  assert_int_equal(rp->count, 0);
  frame_stats to_provider = {0};
  for_each_frame(&x.wire_c2p, count_frames, &to_provider);
  assert_int_equal(to_provider.counts[CLEANROOM__V1__FRAME__MSG_DIGESTS], 0);
  pair_free(&x);
}

static void test_members_below_min_count_releases_no_rows(void **state) {
  (void)state;
  pair x;
  pair_init(&x, 0, 200, 190, 300, 50, "my_matches"); /* 10 < 50 */
  assert_int_equal(cr_session_start(x.consumer), 0);
  pump(&x, SIZE_MAX);
  const cr_session_result *rc = cr_session_result_get(x.consumer);
  assert_int_equal(rc->status, CR_SESSION_DONE);
  assert_true(rc->suppressed);
  assert_null(rc->matched);
  pair_free(&x);
}

typedef struct loader {
  cr_dataset *d;
  int calls, unloads;
  char seen[64];
  int refuse;
} loader;

static int load_cb(void *ctx, const cr_query *q, const cr_session_result *res,
                   const cr_dataset **out, char *msg, size_t cap) {
  loader *l = ctx;
  l->calls++;
  assert_string_equal(q->name, "with_params");
  assert_int_equal(res->nparams, 1);
  snprintf(l->seen, sizeof l->seen, "%s=%s", res->param_names[0], res->param_values[0]);
  if (l->refuse) {
    snprintf(msg, cap, "parameter min_age: expected an integer");
    return CR_EREFUSED;
  }
  *out = l->d;
  return 0;
}

static void unload_cb(void *ctx, const cr_dataset *d) {
  loader *l = ctx;
  assert_ptr_equal(d, l->d);
  l->unloads++;
}

/* The responder loads its set per query, with the runner's parameters. */
static void run_with_params(int refuse, const char *value) {
  pair x;
  loader l = {0};
  l.refuse = refuse;
  pair_init(&x, 0, 100, 50, 150, 1, "overlap");
  l.d = x.dp;
  cr_session_free(x.provider);
  cr_session_free(x.consumer);
  cr_session_config pc = {0}, cc = {0};
  pc.tmpl = x.tp;
  pc.role = CR_ROLE_PROVIDER;
  pc.sign = sign_cb;
  pc.sign_ctx = &x.kp;
  pc.load = load_cb;
  pc.unload = unload_cb;
  pc.load_ctx = &l;
  memcpy(pc.peer_sign_pk, x.kc.pk, 32);
  const char *names[1] = {"min_age"}, *values[1] = {value};
  cc.tmpl = x.tc;
  cc.data = x.dc;
  cc.role = CR_ROLE_CONSUMER;
  cc.is_runner = 1;
  cc.query = "with_params";
  cc.param_names = names;
  cc.param_values = values;
  cc.nparams = 1;
  cc.sign = sign_cb;
  cc.sign_ctx = &x.kc;
  memcpy(cc.peer_sign_pk, x.kp.pk, 32);
  assert_int_equal(cr_session_check_local(&cc, 0, NULL), 0);
  assert_int_equal(cr_session_new(&x.provider, &pc, NULL), 0);
  assert_int_equal(cr_session_new(&x.consumer, &cc, NULL), 0);
  if (refuse) {
    expect_refusal(&x, CR_WIRE_PARAMS);
  } else {
    assert_int_equal(cr_session_start(x.consumer), 0);
    pump(&x, SIZE_MAX);
    assert_int_equal(cr_session_result_get(x.consumer)->status, CR_SESSION_DONE);
    assert_int_equal(cr_session_result_get(x.consumer)->count, 50);
    assert_string_equal(cr_session_result_get(x.provider)->param_values[0], value);
  }
  /* Issue 13: a value that does not parse as its declared type is refused
   * from the Hello alone, before admission: the data is never loaded. */
  assert_int_equal(l.calls, refuse ? 0 : 1);
  if (!refuse) {
    char want[64];
    snprintf(want, sizeof want, "min_age=%s", value);
    assert_string_equal(l.seen, want);
  } else {
    /* The value stays local; the runner is told PARAMS in fixed words. */
    assert_non_null(strstr(cr_session_result_get(x.provider)->error_msg, "min_age"));
    assert_null(strstr(cr_session_result_get(x.consumer)->error_msg, value));
  }
  cr_session_free(x.provider);
  x.provider = NULL;
  assert_int_equal(l.unloads, refuse ? 0 : 1); /* a refused load holds nothing */
  pair_free(&x);
}

static void test_params_reach_the_responder(void **state) {
  (void)state;
  run_with_params(0, "18");
}

static void test_params_refused_by_the_responder(void **state) {
  (void)state;
  run_with_params(1, "eighteen");
}

static void test_params_checked_locally(void **state) {
  (void)state;
  cr_template *t = make_template(1);
  cr_dataset *d = fx_mem_dataset("user", "@example.com", 0, 10, 0);
  cr_session_config c = {0};
  cr_error err;
  c.tmpl = t;
  c.data = d;
  c.role = CR_ROLE_CONSUMER;
  c.is_runner = 1;
  c.query = "with_params";
  assert_int_equal(cr_session_check_local(&c, 0, &err), CR_EREFUSED);
  assert_non_null(strstr(err.msg, "--param min_age="));
  const char *names[2] = {"min_age", "colour"}, *values[2] = {"18", "red"};
  c.param_names = names;
  c.param_values = values;
  c.nparams = 2;
  assert_int_equal(cr_session_check_local(&c, 0, &err), CR_EREFUSED);
  assert_non_null(strstr(err.msg, "colour"));
  c.nparams = 1;
  assert_int_equal(cr_session_check_local(&c, 0, &err), 0);
  free_template(t);
  fx_mem_dataset_free(d);
}

/* ---- secrets: the scalar's memory ---------------------------------------- */

/*
 * The session scalar lives in sodium_malloc'ed memory: mlock()ed when it is
 * allocated, zeroed by sodium_free and only then munlock()ed and unmapped.
 * These two wrappers (the dynamic linker prefers them to libc's for
 * libsodium's calls) log each locked region while a test watches, and look
 * at its bytes at munlock(): what held the scalar must be all zero by then.
 * So the tests below see the very memory, not just a flag.
 */
#define WATCH_MAX 32
static struct {
  const volatile uint8_t *p;
  size_t len;
  int live;
} watch[WATCH_MAX];
static int watch_on, watch_n, watch_dirty;

typedef int (*lock_fn)(const void *, size_t);

int mlock(const void *addr, size_t len) {
  static lock_fn real;
  if (real == NULL)
    real = (lock_fn)dlsym(RTLD_NEXT, "mlock");
  if (watch_on && watch_n < WATCH_MAX) {
    watch[watch_n].p = addr;
    watch[watch_n].len = len;
    watch[watch_n].live = 1;
    watch_n++;
  }
  return real != NULL ? real(addr, len) : 0;
}

int munlock(const void *addr, size_t len) {
  static lock_fn real;
  if (real == NULL)
    real = (lock_fn)dlsym(RTLD_NEXT, "munlock");
  for (int i = 0; watch_on && i < watch_n; i++) {
    if (!watch[i].live || watch[i].p != addr)
      continue;
    watch[i].live = 0;
    for (size_t j = 0; j < watch[i].len; j++)
      if (watch[i].p[j] != 0) {
        watch_dirty++;
        break;
      }
  }
  return real != NULL ? real(addr, len) : 0;
}

static void watch_start(void) {
  memset(watch, 0, sizeof watch);
  watch_n = watch_dirty = 0;
  watch_on = 1;
}

static int watch_live(void) {
  int n = 0;
  for (int i = 0; i < watch_n; i++)
    n += watch[i].live;
  return n;
}

/* Live regions hold the scalar (and sodium's 0xdb fill): not all zero. */
static int watch_live_nonzero(void) {
  int n = 0;
  for (int i = 0; i < watch_n; i++) {
    if (!watch[i].live)
      continue;
    for (size_t j = 0; j < watch[i].len; j++)
      if (watch[i].p[j] != 0) {
        n++;
        break;
      }
  }
  return n;
}

static void test_scalar_memory_wiped(void **state) {
  (void)state;
  /* A completed session: wiped as it completes, before cr_session_free. */
  pair x;
  watch_start();
  pair_init(&x, 0, 40, 20, 60, 1, "overlap");
  assert_int_equal(watch_n, 2); /* one scalar per side */
  assert_int_equal(watch_live(), 2);
  assert_int_equal(watch_live_nonzero(), 2);
  assert_int_equal(cr_session_start(x.consumer), 0);
  pump(&x, SIZE_MAX);
  assert_int_equal(cr_session_status_get(x.consumer), CR_SESSION_DONE);
  assert_int_equal(cr_session_status_get(x.provider), CR_SESSION_DONE);
  assert_int_equal(watch_live(), 0);
  assert_int_equal(watch_dirty, 0);
  assert_true(cr_session_scalar_wiped(x.consumer));
  assert_true(cr_session_scalar_wiped(x.provider));
  pair_free(&x);

  /* Aborted by a hostile peer (a zero-length frame). */
  hostile h;
  watch_start();
  hostile_init(&h, 0);
  assert_int_equal(watch_live(), 1);
  assert_int_equal(watch_live_nonzero(), 1);
  assert_true(cr_session_recv(h.s, (const uint8_t *)"\0\0\0\0", 4) < 0);
  assert_int_equal(cr_session_status_get(h.s), CR_SESSION_FAILED);
  assert_int_equal(watch_live(), 0);
  assert_int_equal(watch_dirty, 0);
  assert_true(cr_session_scalar_wiped(h.s));
  hostile_free(&h);

  /* Aborted from outside (a timeout, say), then freed. */
  watch_start();
  hostile_init(&h, 1);
  assert_int_equal(watch_live(), 1);
  cr_session_abort(h.s, CR_ETIMEDOUT, CR_WIRE_TIMEOUT, "timed out");
  assert_int_equal(watch_live(), 0);
  assert_int_equal(watch_dirty, 0);
  hostile_free(&h);

  /* Freed while still running (the connection vanished). */
  watch_start();
  hostile_init(&h, 1);
  assert_int_equal(watch_live(), 1);
  assert_false(cr_session_scalar_wiped(h.s));
  hostile_free(&h);
  assert_int_equal(watch_live(), 0);
  assert_int_equal(watch_dirty, 0);
  watch_on = 0;
}

/* A ping: Hellos only; both sides end DONE, no size or data revealed. */
static void test_ping(void **state) {
  (void)state;
  pair x;
  pair_init(&x, 0, 50, 0, 60, 1, "overlap");
  cr_session_free(x.consumer);
  cr_session_config cc = {0};
  cc.tmpl = x.tc;
  cc.role = CR_ROLE_CONSUMER;
  cc.is_runner = 1;
  cc.ping = 1;
  cc.software = "pinger/1";
  cc.sign = sign_cb;
  cc.sign_ctx = &x.kc;
  assert_int_equal(cr_session_check_local(&cc, 0, NULL), 0);
  assert_int_equal(cr_session_new(&x.consumer, &cc, NULL), 0);
  assert_int_equal(cr_session_start(x.consumer), 0);
  pump(&x, SIZE_MAX);
  const cr_session_result *rc = cr_session_result_get(x.consumer);
  const cr_session_result *rp = cr_session_result_get(x.provider);
  assert_int_equal(rc->status, CR_SESSION_DONE);
  assert_int_equal(rp->status, CR_SESSION_DONE);
  assert_true(rc->ping && rp->ping);
  assert_int_equal(rc->peer_set_size, 0); /* the provider's size is not revealed */
  assert_int_equal(rc->peer_protocol_version, CR_PROTOCOL_VERSION);
  assert_memory_equal(rc->peer_template_sha256, x.tp->sha256, 32);
  assert_string_equal(rp->peer_software, "pinger/1");
  frame_stats st = {0};
  for_each_frame(&x.wire_p2c, count_frames, &st);
  assert_int_equal(st.counts[CLEANROOM__V1__FRAME__MSG_HELLO], 1);
  assert_int_equal(st.counts[CLEANROOM__V1__FRAME__MSG_BATCH], 0);
  pair_free(&x);
}

static void test_ping_template_mismatch(void **state) {
  (void)state;
  pair x;
  pair_init(&x, 0, 50, 0, 60, 1, "overlap");
  x.tc->sha256[5] ^= 0x40;
  cr_session_free(x.consumer);
  cr_session_config cc = {0};
  cc.tmpl = x.tc;
  cc.role = CR_ROLE_CONSUMER;
  cc.is_runner = 1;
  cc.ping = 1;
  cc.sign = sign_cb;
  cc.sign_ctx = &x.kc;
  assert_int_equal(cr_session_new(&x.consumer, &cc, NULL), 0);
  expect_refusal(&x, CR_WIRE_TEMPLATE_MISMATCH);
  pair_free(&x);
}

/* ---- issue 13/14: buckets, merged labels, lying peers ------------------- */

/* Hello carries the bucket, never the exact size. */
static void find_hello_size(const Cleanroom__V1__Frame *f, void *ctx) {
  if (f->msg_case == CLEANROOM__V1__FRAME__MSG_HELLO)
    *(uint64_t *)ctx = f->hello->set_size;
}

static void test_hello_carries_the_bucket(void **state) {
  (void)state;
  pair x;
  pair_init(&x, 0, 200, 120, 370, 50, "overlap");
  assert_int_equal(cr_session_start(x.consumer), 0);
  pump(&x, SIZE_MAX);
  uint64_t sp = 0, sc = 0;
  for_each_frame(&x.wire_p2c, find_hello_size, &sp);
  for_each_frame(&x.wire_c2p, find_hello_size, &sc);
  assert_int_equal(sp, cr_template_bucket(x.tp, 200));
  assert_int_equal(sc, cr_template_bucket(x.tc, 250));
  assert_int_equal(sp, 256);
  assert_int_equal(sc, 256);
  /* Padding changed no number: overlap 120..199. */
  assert_int_equal(cr_session_result_get(x.consumer)->count, 80);
  assert_int_equal(cr_session_result_get(x.provider)->count, 80);
  pair_free(&x);
}

/* A suppressed count is 0 in the result, not only flagged. */
static void test_suppressed_count_is_zero(void **state) {
  (void)state;
  pair x;
  pair_init(&x, 0, 200, 190, 300, 100, "overlap"); /* overlap 10 < 100 */
  assert_int_equal(cr_session_start(x.consumer), 0);
  pump(&x, SIZE_MAX);
  const cr_session_result *rc = cr_session_result_get(x.consumer);
  const cr_session_result *rp = cr_session_result_get(x.provider);
  assert_int_equal(rc->status, CR_SESSION_DONE);
  assert_true(rc->suppressed && rp->suppressed);
  assert_int_equal(rc->count, 0);
  assert_int_equal(rp->count, 0);
  pair_free(&x);
}

/* group_by: a label with fewer keys than min_count is merged into
 * "(other)"; its name never reaches the peer. */
static void test_rare_labels_merged(void **state) {
  (void)state;
  pair x;
  pair_init(&x, 0, 200, 0, 200, 27, "by_segment");
  cr_session_free(x.provider);
  cr_session_free(x.consumer);
  label_dataset(x.dp, 3);
  /* seg2: keys 0..4 only; the rest alternate seg0/seg1. */
  memset(x.dp->label_sizes, 0, 3 * sizeof *x.dp->label_sizes);
  for (size_t i = 0; i < x.dp->n; i++) {
    int num = key_num(x.dp, i);
    x.dp->labels[i] = num < 5 ? 2u : (uint32_t)(num % 2);
    x.dp->label_sizes[x.dp->labels[i]]++;
  }
  cr_session_config pc = {0}, cc = {0};
  pc.tmpl = x.tp;
  pc.data = x.dp;
  pc.role = CR_ROLE_PROVIDER;
  pc.sign = sign_cb;
  pc.sign_ctx = &x.kp;
  memcpy(pc.peer_sign_pk, x.kc.pk, 32);
  cc = pc;
  cc.tmpl = x.tc;
  cc.data = x.dc;
  cc.role = CR_ROLE_CONSUMER;
  cc.is_runner = 1;
  cc.query = "by_segment";
  cc.sign_ctx = &x.kc;
  memcpy(cc.peer_sign_pk, x.kp.pk, 32);
  assert_int_equal(cr_session_new(&x.provider, &pc, NULL), 0);
  assert_int_equal(cr_session_new(&x.consumer, &cc, NULL), 0);
  assert_int_equal(cr_session_start(x.consumer), 0);
  pump(&x, SIZE_MAX);
  const cr_session_result *rc = cr_session_result_get(x.consumer);
  assert_int_equal(rc->status, CR_SESSION_DONE);
  assert_int_equal(rc->nlabels[CR_ROLE_PROVIDER], 3);
  assert_string_equal(rc->labels[CR_ROLE_PROVIDER][0], CR_SESSION_OTHER_LABEL);
  assert_string_equal(rc->labels[CR_ROLE_PROVIDER][1], "seg0");
  assert_string_equal(rc->labels[CR_ROLE_PROVIDER][2], "seg1");
  assert_null(memmem(x.wire_p2c.data, x.wire_p2c.len, "seg2", 4));
  /* (other) holds the 5 keys: its cell is suppressed and zero. */
  assert_true(rc->cells[0].suppressed);
  assert_int_equal(rc->cells[0].count, 0);
  assert_int_equal(rc->cells[1].count + rc->cells[2].count, 195);
  pair_free(&x);
}

/* Drains everything the session has to send into out. */
static void drain(cr_session *s, cr_buf *out) {
  for (;;) {
    const uint8_t *data;
    size_t len;
    cr_session_send(s, &data, &len);
    if (len == 0)
      return;
    assert_int_equal(cr_buf_append(out, data, len), 0);
    cr_session_sent(s, len);
  }
}

typedef struct replay {
  hostile *h;
  int kinds; /* bit per msg_case fed back */
} replay;

static void feed_back(const Cleanroom__V1__Frame *f, void *ctx) {
  replay *r = ctx;
  if ((r->kinds >> f->msg_case) & 1)
    feed_frame(r->h, (Cleanroom__V1__Frame *)f);
}

static void last_error_text(const Cleanroom__V1__Frame *f, void *ctx) {
  if (f->msg_case == CLEANROOM__V1__FRAME__MSG_ERROR)
    snprintf((char *)ctx, 160, "%s", f->error->message);
}

/* Issue 14 (1): the peer sends our own points back as its set and our
 * Digests back as its digests. The session refuses: reflection. */
static void test_reflection_refused(void **state) {
  (void)state;
  hostile h;
  hostile_init(&h, 0);
  feed_hello(&h, "consumer", 20);
  cr_buf out;
  cr_buf_init(&out);
  drain(h.s, &out); /* Hello, Batch, EndOfSet */
  replay r = {&h,
              (1 << CLEANROOM__V1__FRAME__MSG_BATCH) | (1 << CLEANROOM__V1__FRAME__MSG_END_OF_SET)};
  for_each_frame(&out, feed_back, &r);
  cr_buf_free(&out);
  cr_buf_init(&out);
  drain(h.s, &out); /* our Digests, EndOfDigests: echoed */
  r.kinds =
      (1 << CLEANROOM__V1__FRAME__MSG_DIGESTS) | (1 << CLEANROOM__V1__FRAME__MSG_END_OF_DIGESTS);
  for_each_frame(&out, feed_back, &r);
  cr_buf_free(&out);
  expect_protocol_failure(&h, "reflection");
  cr_buf_init(&out);
  drain(h.s, &out);
  char text[160] = "";
  for_each_frame(&out, last_error_text, text);
  assert_non_null(strstr(text, "reflection"));
  cr_buf_free(&out);
  hostile_free(&h);
}

/* Issue 14 (2): the same digest returned again and again. */
static void test_repeated_digests_refused(void **state) {
  (void)state;
  hostile h;
  hostile_init(&h, 0);
  feed_hello(&h, "consumer", 20);
  cr_buf out;
  cr_buf_init(&out);
  drain(h.s, &out);
  cr_buf_free(&out);
  uint8_t pts[20 * 32];
  for (int i = 0; i < 20; i++)
    crypto_core_ristretto255_random(pts + 32 * i);
  feed_batch(&h, 0, pts, sizeof pts);
  feed_eos(&h, 20);
  size_t l = cr_session_result_get(h.s)->digest_bytes;
  uint8_t digs[20 * 32];
  memset(digs, 0x5a, sizeof digs);
  Cleanroom__V1__Digests m = CLEANROOM__V1__DIGESTS__INIT;
  Cleanroom__V1__Frame f = CLEANROOM__V1__FRAME__INIT;
  m.digests.data = digs;
  m.digests.len = 20 * l;
  f.msg_case = CLEANROOM__V1__FRAME__MSG_DIGESTS;
  f.digests = &m;
  feed_frame(&h, &f);
  expect_protocol_failure(&h, "strictly increasing");
  hostile_free(&h);
}

/* Receipts as evidence: the peer's receipt, rebuilt from the result alone
 * (as an audit log does), verifies; changing any covered field breaks it. */
static void test_receipt_covers_roles_certs_and_releases(void **state) {
  (void)state;
  pair x;
  pair_init(&x, 0, 60, 30, 100, 10, "overlap");
  assert_int_equal(cr_session_start(x.consumer), 0);
  pump(&x, SIZE_MAX);
  const cr_session_result *rc = cr_session_result_get(x.consumer);
  assert_int_equal(rc->status, CR_SESSION_DONE);
  cr_session_receipt r;
  cr_session_peer_receipt(rc, &r);
  assert_int_equal(r.signer, CR_ROLE_PROVIDER);
  assert_memory_equal(r.cert_sha256[CR_ROLE_PROVIDER], x.tp->parties[CR_ROLE_PROVIDER].cert_sha256,
                      32);
  for (int field = 0; field < 5; field++) {
    cr_session_receipt t = r;
    if (field == 1)
      t.signer = CR_ROLE_CONSUMER;
    if (field == 2)
      t.cert_sha256[CR_ROLE_CONSUMER][0] ^= 1;
    if (field == 3)
      t.released_sha256[CR_ROLE_PROVIDER][0] ^= 1;
    if (field == 4)
      t.template_sha256[0] ^= 1;
    cr_buf m;
    cr_buf_init(&m);
    assert_int_equal(cr_session_receipt_message(&m, &t), 0);
    int ok = crypto_sign_verify_detached(rc->peer_signature, m.data, m.len, x.kp.pk) == 0;
    assert_int_equal(ok, field == 0);
    cr_buf_free(&m);
  }
  pair_free(&x);
}

/* Admission first: the responder's load hook runs only after admit. */
static int admit_count(void *ctx, const cr_query *q, const cr_session_result *res, char *msg,
                       size_t cap) {
  (void)q;
  (void)res;
  (void)msg;
  (void)cap;
  int *order = ctx;
  order[0] = ++order[2];
  return 0;
}

static int load_after_admit(void *ctx, const cr_query *q, const cr_session_result *res,
                            const cr_dataset **out, char *msg, size_t cap) {
  (void)q;
  (void)res;
  (void)msg;
  (void)cap;
  void **c = ctx;
  int *order = c[0];
  order[1] = ++order[2];
  *out = c[1];
  return 0;
}

static void test_admit_before_load(void **state) {
  (void)state;
  pair x;
  int order[3] = {0};
  pair_init(&x, 0, 50, 0, 50, 1, "overlap");
  void *lctx[2] = {order, x.dp};
  cr_session_config pc = {0};
  pc.admit = admit_count;
  pc.admit_ctx = order;
  pc.load = load_after_admit;
  pc.load_ctx = lctx;
  provider_again(&x, &pc);
  assert_int_equal(cr_session_start(x.consumer), 0);
  pump(&x, SIZE_MAX);
  assert_int_equal(cr_session_result_get(x.consumer)->status, CR_SESSION_DONE);
  assert_int_equal(order[0], 1); /* admit first */
  assert_int_equal(order[1], 2); /* then load */
  pair_free(&x);
}

int main(void) {
  if (cr_crypto_init() != 0)
    return 1;
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_count_both_receive),
      cmocka_unit_test(test_state_names_the_state),
      cmocka_unit_test(test_result_take),
      cmocka_unit_test(test_error_frame_structured),
      cmocka_unit_test(test_count_byte_at_a_time),
      cmocka_unit_test(test_disjoint_sets),
      cmocka_unit_test(test_consumer_only_provider_learns_nothing),
      cmocka_unit_test(test_below_min_count_is_suppressed),
      cmocka_unit_test(test_template_mismatch_shows_both_hashes),
      cmocka_unit_test(test_unknown_query_refused),
      cmocka_unit_test(test_role_not_in_run_by_refused),
      cmocka_unit_test(test_size_limits_refused),
      cmocka_unit_test(test_admit_refusal),
      cmocka_unit_test(test_admit_failure_is_internal),
      cmocka_unit_test(test_expired_template_refused_on_hello),
      cmocka_unit_test(test_check_local),
      cmocka_unit_test(test_group_by_cells),
      cmocka_unit_test(test_ping),
      cmocka_unit_test(test_ping_template_mismatch),
      cmocka_unit_test(test_hello_carries_the_bucket),
      cmocka_unit_test(test_suppressed_count_is_zero),
      cmocka_unit_test(test_rare_labels_merged),
      cmocka_unit_test(test_reflection_refused),
      cmocka_unit_test(test_repeated_digests_refused),
      cmocka_unit_test(test_receipt_covers_roles_certs_and_releases),
      cmocka_unit_test(test_admit_before_load),
      cmocka_unit_test(test_members_to_owner),
      cmocka_unit_test(test_members_below_min_count_releases_no_rows),
      cmocka_unit_test(test_params_reach_the_responder),
      cmocka_unit_test(test_params_refused_by_the_responder),
      cmocka_unit_test(test_params_checked_locally),
      cmocka_unit_test(test_digest_bytes),
      cmocka_unit_test(test_hostile_zero_length),
      cmocka_unit_test(test_hostile_oversize),
      cmocka_unit_test(test_hostile_garbage),
      cmocka_unit_test(test_hostile_batch_before_hello),
      cmocka_unit_test(test_hostile_second_hello),
      cmocka_unit_test(test_hostile_identity_point),
      cmocka_unit_test(test_hostile_noncanonical_point),
      cmocka_unit_test(test_hostile_wrong_seq),
      cmocka_unit_test(test_hostile_ragged_batch),
      cmocka_unit_test(test_hostile_more_points_than_announced),
      cmocka_unit_test(test_hostile_fewer_points_than_announced),
      cmocka_unit_test(test_hostile_digests_before_end_of_set),
      cmocka_unit_test(test_hostile_finish_too_early),
      cmocka_unit_test(test_forged_receipt_releases_nothing),
      cmocka_unit_test(test_peer_error_text_is_sanitised),
      cmocka_unit_test(test_scalar_memory_wiped),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
