/*
 * Several match keys through the protocol: two sessions back to back in
 * memory on the data of tests/support/multikey.h (whose answers were worked
 * out by hand), both count_of sides, either side running, grouped, members,
 * thresholds of the per-key breakdown; what the side that is not counted
 * does not learn (the frames it gets do not depend on which keys a record
 * has); and a peer that splits, reorders or mislabels records.
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

#include "cleanroom/protocol.h"
#include "protocol/frame.h"
#include "support/multikey.h"

typedef struct party {
  uint8_t pk[crypto_sign_PUBLICKEYBYTES];
  uint8_t sk[crypto_sign_SECRETKEYBYTES];
} party;

static int sign_cb(void *ctx, const uint8_t *msg, size_t len, uint8_t sig[64]) {
  party *p = ctx;
  return crypto_sign_detached(sig, NULL, msg, len, p->sk);
}

/* Rewrites one frame the provider sends (decoded); returns 1 if changed. */
typedef int (*mutate_fn)(Cleanroom__V1__Frame *f, void *ctx);

typedef struct pair {
  cr_template *tp, *tc;
  cr_dataset *dp, *dc;
  party kp, kc;
  cr_session *provider, *consumer;
  cr_buf c2p; /* every byte the consumer sent */
  mutate_fn mutate;
  void *mutate_ctx;
} pair;

typedef struct opts {
  const char *count_of; /* NULL: mk_template_noisy() */
  uint64_t min_count;
  const char *query;
  int provider_runs;
  int grouped;              /* load the group columns */
  const char *consumer_csv; /* NULL: MK_CONSUMER_CSV */
} opts;

static void pair_init(pair *x, const opts *o) {
  memset(x, 0, sizeof *x);
  x->tp = o->count_of ? mk_template(o->count_of, o->min_count) : mk_template_noisy();
  x->tc = o->count_of ? mk_template(o->count_of, o->min_count) : mk_template_noisy();
  x->dp = mk_load(x->tp, CR_ROLE_PROVIDER, MK_PROVIDER_CSV, o->grouped ? "tier" : NULL);
  x->dc = mk_load(x->tc, CR_ROLE_CONSUMER, o->consumer_csv ? o->consumer_csv : MK_CONSUMER_CSV,
                  o->grouped ? "seg" : NULL);
  crypto_sign_keypair(x->kp.pk, x->kp.sk);
  crypto_sign_keypair(x->kc.pk, x->kc.sk);
  cr_buf_init(&x->c2p);
  cr_session_config pc = {0}, cc;
  pc.tmpl = x->tp;
  pc.data = x->dp;
  pc.role = CR_ROLE_PROVIDER;
  pc.software = "test";
  pc.batch_size = 5; /* several batches; records of two points never split */
  pc.sign = sign_cb;
  pc.sign_ctx = &x->kp;
  memcpy(pc.peer_sign_pk, x->kc.pk, 32);
  cc = pc;
  cc.tmpl = x->tc;
  cc.data = x->dc;
  cc.role = CR_ROLE_CONSUMER;
  cc.sign_ctx = &x->kc;
  memcpy(cc.peer_sign_pk, x->kp.pk, 32);
  cr_session_config *runner = o->provider_runs ? &pc : &cc;
  runner->is_runner = 1;
  runner->query = o->query;
  cr_error err;
  if (cr_session_new(&x->provider, &pc, &err) != 0 || cr_session_new(&x->consumer, &cc, &err) != 0)
    fail_msg("%s", err.msg);
  assert_int_equal(cr_session_start(o->provider_runs ? x->provider : x->consumer), 0);
}

static void pair_free(pair *x) {
  cr_session_free(x->provider);
  cr_session_free(x->consumer);
  mk_free(x->dp);
  mk_free(x->dc);
  cr_template_free(x->tp);
  cr_template_free(x->tc);
  cr_buf_free(&x->c2p);
}

/* Whole frames both ways until both are quiet; the provider's frames pass
 * through x->mutate first. */
static void pump(pair *x) {
  for (int rounds = 0; rounds < 100000; rounds++) {
    int moved = 0;
    for (int dir = 0; dir < 2; dir++) {
      cr_session *from = dir ? x->provider : x->consumer;
      cr_session *to = dir ? x->consumer : x->provider;
      const uint8_t *data;
      size_t len;
      cr_session_send(from, &data, &len);
      if (len == 0)
        continue;
      moved = 1;
      if (!dir)
        assert_int_equal(cr_buf_append(&x->c2p, data, len), 0);
      if (!dir || x->mutate == NULL) {
        cr_session_recv(to, data, len);
        cr_session_sent(from, len);
        continue;
      }
      size_t off = 0;
      while (off < len) {
        const uint8_t *payload;
        size_t plen, total;
        uint32_t ann;
        assert_int_equal(cr__frame_peek(data + off, len - off, CR_DEFAULT_MAX_FRAME, &payload,
                                        &plen, &total, &ann),
                         1);
        Cleanroom__V1__Frame *f = cr__frame_decode(payload, plen);
        assert_non_null(f);
        cr_buf out;
        cr_buf_init(&out);
        if (x->mutate(f, x->mutate_ctx))
          assert_int_equal(cr__frame_append(&out, f), 0);
        else
          assert_int_equal(cr_buf_append(&out, data + off, total), 0);
        cr__frame_free(f);
        cr_session_recv(to, out.data, out.len);
        cr_buf_free(&out);
        off += total;
      }
      cr_session_sent(from, len);
    }
    if (!moved)
      return;
  }
  fail_msg("sessions did not finish");
}

static const cr_session_result *done(cr_session *s) {
  const cr_session_result *r = cr_session_result_get(s);
  if (r->status != CR_SESSION_DONE)
    fail_msg("session failed: %s", r->error_msg);
  return r;
}

static void expect_count(const cr_session_result *r, uint64_t count, uint64_t email,
                         uint64_t phone) {
  assert_true(r->receives);
  assert_false(r->suppressed);
  assert_int_equal(r->count, count);
  assert_int_equal(r->nkeys, 2);
  assert_false(r->key_suppressed[0]);
  assert_false(r->key_suppressed[1]);
  assert_int_equal(r->key_count[0], email);
  assert_int_equal(r->key_count[1], phone);
}

static void test_count_any_key(void **state) {
  (void)state;
  /* The consumer's records, counted by both sides, whoever runs. */
  for (int runner = 0; runner < 2; runner++) {
    pair x;
    opts o = {"consumer", 1, "overlap", runner, 0, NULL};
    pair_init(&x, &o);
    pump(&x);
    const cr_session_result *rc = done(x.consumer), *rp = done(x.provider);
    expect_count(rc, 6, 3, 4);
    expect_count(rp, 6, 3, 4);
    /* Records (9) pad to the bucket 12; the provider's 12 values are 12. */
    assert_int_equal(rc->own_set_size, 9);
    assert_int_equal(rp->peer_set_size, 12);
    assert_int_equal(rp->own_set_size, 12);
    assert_null(rc->matched);
    assert_null(rp->matched);
    assert_memory_equal(rc->released_sha256, rp->released_sha256, sizeof rc->released_sha256);
    pair_free(&x);
  }
  /* count_of provider: the provider's 8 records, 7 matched. */
  pair x;
  opts o = {"provider", 1, "overlap", 0, 0, NULL};
  pair_init(&x, &o);
  pump(&x);
  expect_count(done(x.consumer), 7, 4, 4);
  expect_count(done(x.provider), 7, 4, 4);
  assert_int_equal(done(x.provider)->own_set_size, 8);
  pair_free(&x);
}

static void test_breakdown_thresholds(void **state) {
  (void)state;
  /* min_count 2: the count (6) is released, but e-mail and phone (3, 4)
   * with the count would show the one record matched on both keys. */
  pair x;
  opts o = {"consumer", 2, "to_consumer", 0, 0, NULL};
  pair_init(&x, &o);
  pump(&x);
  const cr_session_result *r = done(x.consumer);
  assert_false(r->suppressed);
  assert_int_equal(r->count, 6);
  assert_int_equal(r->nkeys, 2);
  for (int k = 0; k < 2; k++) {
    assert_true(r->key_suppressed[k]);
    assert_int_equal(r->key_count[k], 0);
  }
  /* The provider is not in results_to: nothing at all. */
  const cr_session_result *rp = done(x.provider);
  assert_false(rp->receives);
  assert_int_equal(rp->count, 0);
  assert_int_equal(rp->nkeys, 0);
  pair_free(&x);
  /* min_count 7: the count itself is suppressed, and with it every key. */
  o.min_count = 7;
  pair_init(&x, &o);
  pump(&x);
  r = done(x.consumer);
  assert_true(r->suppressed);
  assert_int_equal(r->count, 0);
  assert_true(r->key_suppressed[0] && r->key_suppressed[1]);
  pair_free(&x);
}

static void test_grouped_cells(void **state) {
  (void)state;
  pair x;
  opts o = {"consumer", 1, "by_tier_seg", 0, 1, NULL};
  pair_init(&x, &o);
  pump(&x);
  const cr_session_result *rs[2] = {done(x.consumer), done(x.provider)};
  for (int i = 0; i < 2; i++) {
    const cr_session_result *r = rs[i];
    assert_true(r->grouped);
    assert_int_equal(r->nkeys, 0); /* no per-key breakdown per cell */
    assert_int_equal(r->ncells, 4);
    assert_string_equal(r->labels[CR_ROLE_PROVIDER][0], "gold");
    assert_string_equal(r->labels[CR_ROLE_CONSUMER][1], "s2");
    /* R1 counts in gold/s1 and silver/s1: its keys matched two tiers. */
    static const uint64_t want[4] = {2, 0, 2, 3}; /* gold s1, gold s2, silver s1, silver s2 */
    for (int c = 0; c < 4; c++) {
      assert_int_equal(r->cells[c].count, want[c]);
      assert_int_equal(r->cells[c].suppressed, want[c] == 0);
    }
  }
  pair_free(&x);
}

static void test_members_which_key(void **state) {
  (void)state;
  pair x;
  opts o = {"consumer", 1, "mine", 0, 0, NULL};
  pair_init(&x, &o);
  pump(&x);
  const cr_session_result *r = done(x.consumer);
  assert_int_equal(r->count, 6);
  assert_non_null(r->matched);
  assert_non_null(r->matched_on);
  /* Records in file order: R1 c2 c3 c4 c5 c6 c7 c11 R12. */
  static const uint8_t on[9] = {3, 1, 2, 2, 1, 2, 0, 0, 0};
  for (int i = 0; i < 9; i++) {
    assert_int_equal((r->matched[i / 8] >> (i % 8)) & 1, on[i] != 0);
    assert_int_equal(r->matched_on[i], on[i]);
  }
  assert_int_equal(r->key_count[0], 3);
  assert_int_equal(r->key_count[1], 4);
  /* The provider learns no record, no key, no count. */
  const cr_session_result *rp = done(x.provider);
  assert_false(rp->receives);
  assert_null(rp->matched);
  assert_null(rp->matched_on);
  assert_int_equal(rp->count, 0);
  pair_free(&x);

  /* count_of provider: the provider owns the records (p1..p8). */
  opts o2 = {"provider", 1, "mine", 1, 0, NULL};
  pair_init(&x, &o2);
  pump(&x);
  r = done(x.provider);
  static const uint8_t on2[8] = {1, 1, 2, 2, 3, 0, 2, 1};
  for (int i = 0; i < 8; i++)
    assert_int_equal(r->matched_on[i], on2[i]);
  assert_null(done(x.consumer)->matched);
  pair_free(&x);
}

/* With noise (docs/privacy.md) the count is released noisy, the same on
 * both sides, and the per-key breakdown not at all: it would be more
 * numbers, and exact. */
static void test_noisy_count_only(void **state) {
  (void)state;
  pair x;
  opts o = {NULL, 1, "noisy", 0, 0, NULL};
  pair_init(&x, &o);
  pump(&x);
  const cr_session_result *rc = done(x.consumer), *rp = done(x.provider);
  for (int i = 0; i < 2; i++) {
    const cr_session_result *r = i ? rp : rc;
    assert_true(r->noisy);
    assert_int_equal(r->nkeys, 0);
    assert_int_equal(r->nmatch_keys, 2);
    for (int k = 0; k < 2; k++)
      assert_int_equal(r->key_count[k], 0);
  }
  assert_int_equal(rc->count, rp->count);
  assert_int_equal(rc->suppressed, rp->suppressed);
  assert_memory_equal(rc->released_sha256, rp->released_sha256, sizeof rc->released_sha256);
  pair_free(&x);
}

/* Two consumers with 9 records each that differ only in which keys their
 * records hold: every frame the provider receives has the same length, so
 * their record structure does not show (only the bucket and the width). */
static void test_structure_hidden(void **state) {
  (void)state;
  static const char EMAILS_ONLY[] = "user,email,phone,seg\n"
                                    "u1,a@x.example,,s1\nu2,b@x.example,,s1\nu3,c@x.example,,s1\n"
                                    "u4,d@x.example,,s1\nu5,e@x.example,,s1\nu6,f@x.example,,s1\n"
                                    "u7,g@x.example,,s1\nu8,h@x.example,,s1\nu9,i@x.example,,s1\n";
  static const char BOTH[] = "user,email,phone,seg\n"
                             "u1,a@y.example,+15551000001,s1\nu2,b@y.example,+15551000002,s1\n"
                             "u3,c@y.example,+15551000003,s1\nu4,d@y.example,+15551000004,s1\n"
                             "u5,e@y.example,+15551000005,s1\nu6,,+15551000006,s1\n"
                             "u7,,+15551000007,s1\nu8,h@y.example,+15551000008,s1\n"
                             "u9,i@y.example,+15551000009,s1\n";
  const char *csv[2] = {EMAILS_ONLY, BOTH};
  size_t nframes[2] = {0, 0}, lens[2][64];
  for (int v = 0; v < 2; v++) {
    pair x;
    opts o = {"consumer", 1, "to_consumer", 0, 0, csv[v]};
    pair_init(&x, &o);
    pump(&x);
    (void)done(x.consumer);
    size_t off = 0;
    while (off < x.c2p.len) {
      const uint8_t *p;
      size_t plen, total;
      uint32_t ann;
      assert_int_equal(cr__frame_peek(x.c2p.data + off, x.c2p.len - off, CR_DEFAULT_MAX_FRAME, &p,
                                      &plen, &total, &ann),
                       1);
      Cleanroom__V1__Frame *f = cr__frame_decode(p, plen);
      if (f->msg_case == CLEANROOM__V1__FRAME__MSG_HELLO) {
        assert_int_equal(f->hello->set_size, 12); /* the bucket of 9 */
        assert_int_equal(f->hello->record_keys, 2);
      }
      cr__frame_free(f);
      lens[v][nframes[v]++] = total;
      off += total;
    }
    pair_free(&x);
  }
  assert_int_equal(nframes[0], nframes[1]);
  for (size_t i = 0; i < nframes[0]; i++)
    assert_int_equal(lens[0][i], lens[1][i]);
}

/* ---- a provider that lies about the consumer's records ------------------- */

/* The digest length of the session (ctx: the pair). */
static size_t dlen(void *ctx) {
  const pair *x = ctx;
  return cr_session_result_get(x->consumer)->digest_bytes;
}

static int drop_one_digest(Cleanroom__V1__Frame *f, void *ctx) {
  if (f->msg_case != CLEANROOM__V1__FRAME__MSG_DIGESTS || f->digests->seq != 0)
    return 0;
  f->digests->digests.len -= dlen(ctx);
  return 1;
}

static int swap_records(Cleanroom__V1__Frame *f, void *ctx) {
  if (f->msg_case != CLEANROOM__V1__FRAME__MSG_DIGESTS || f->digests->seq != 0)
    return 0;
  /* Records 0 and 1 (two digests each) trade places: out of order. */
  size_t l = dlen(ctx);
  uint8_t *d = f->digests->digests.data, tmp[64];
  memcpy(tmp, d, 2 * l);
  memcpy(d, d + 2 * l, 2 * l);
  memcpy(d + 2 * l, tmp, 2 * l);
  return 1;
}

static int move_match(Cleanroom__V1__Frame *f, void *ctx) {
  /* The phone digests of records 0 and 1 trade places: the tuples change,
   * no digest repeats. A lie the consumer cannot see (docs/security.md
   * says what it can do to a count). */
  if (f->msg_case != CLEANROOM__V1__FRAME__MSG_DIGESTS || f->digests->seq != 0)
    return 0;
  size_t l = dlen(ctx);
  uint8_t *d = f->digests->digests.data, tmp[32];
  memcpy(tmp, d + l, l);
  memcpy(d + l, d + 3 * l, l);
  memcpy(d + 3 * l, tmp, l);
  return 1;
}

static void test_lying_peer(void **state) {
  (void)state;
  struct {
    mutate_fn fn;
    const char *want;
  } cases[] = {
      {drop_one_digest, "splits a record"},
      {swap_records, "returned digests are not strictly increasing"},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    pair x;
    opts o = {"consumer", 1, "to_consumer", 0, 0, NULL};
    pair_init(&x, &o);
    x.mutate = cases[i].fn;
    x.mutate_ctx = &x;
    pump(&x);
    const cr_session_result *r = cr_session_result_get(x.consumer);
    assert_int_equal(r->status, CR_SESSION_FAILED);
    if (strstr(r->error_msg, cases[i].want) == NULL)
      fail_msg("case %zu: %s", i, r->error_msg);
    assert_int_equal(r->wire_error, CR_WIRE_PROTOCOL);
    assert_int_equal(r->count, 0);
    pair_free(&x);
  }
  /* Digests moved between two records: not a rule the consumer can check
   * (test_engine_multikey bounds what a lying provider gains), but changed
   * in flight the transcripts differ and nothing is released. */
  pair x;
  opts o = {"consumer", 1, "to_consumer", 0, 0, NULL};
  pair_init(&x, &o);
  x.mutate = move_match;
  x.mutate_ctx = &x;
  pump(&x);
  const cr_session_result *r = cr_session_result_get(x.consumer);
  assert_int_equal(r->status, CR_SESSION_FAILED);
  assert_int_equal(r->count, 0);
  r = cr_session_result_get(x.provider);
  assert_int_equal(r->status, CR_SESSION_FAILED);
  if (strstr(r->error_msg, "transcript hash differs") == NULL)
    fail_msg("%s", r->error_msg);
  pair_free(&x);
}

/* A consumer whose Hello announces single values where the template counts
 * its records, or records where it should send values. */
static int set_record_keys(Cleanroom__V1__Frame *f, void *ctx) {
  if (f->msg_case != CLEANROOM__V1__FRAME__MSG_HELLO)
    return 0;
  f->hello->record_keys = *(uint32_t *)ctx;
  return 1;
}

static void test_record_width_checked(void **state) {
  (void)state;
  /* The provider answers: its Hello must say 0 (values); with record_keys
   * 2 the consumer refuses. */
  uint32_t lie = 2;
  pair x;
  opts o = {"consumer", 1, "overlap", 0, 0, NULL};
  pair_init(&x, &o);
  x.mutate = set_record_keys;
  x.mutate_ctx = &lie;
  pump(&x);
  const cr_session_result *r = cr_session_result_get(x.consumer);
  assert_int_equal(r->status, CR_SESSION_FAILED);
  assert_non_null(strstr(r->error_msg, "announced records of 2 keys"));
  assert_int_equal(r->wire_error, CR_WIRE_PROTOCOL);
  pair_free(&x);
  /* count_of provider: the provider must say 2; 0 is refused. */
  lie = 0;
  opts o2 = {"provider", 1, "overlap", 0, 0, NULL};
  pair_init(&x, &o2);
  x.mutate = set_record_keys;
  x.mutate_ctx = &lie;
  pump(&x);
  r = cr_session_result_get(x.consumer);
  assert_int_equal(r->status, CR_SESSION_FAILED);
  assert_non_null(strstr(r->error_msg, "announced records of 0 keys"));
  pair_free(&x);
}

/* An older peer is refused by name: version 4 (phone keys of another
 * meaning; its frames are ours) as much as version 3 (one key only,
 * before records). */
static void test_older_peer_refused(void **state) {
  (void)state;
  pair x;
  opts o = {"consumer", 1, "overlap", 0, 0, NULL};
  pair_init(&x, &o);
  cr_buf hello;
  cr_buf_init(&hello);
  Cleanroom__V1__Hello m = CLEANROOM__V1__HELLO__INIT;
  Cleanroom__V1__Frame f = CLEANROOM__V1__FRAME__INIT;
  uint8_t nonce[32] = {1};
  m.protocol_version = 4;
  m.role = "consumer";
  m.template_sha256.data = x.tp->sha256;
  m.template_sha256.len = 32;
  m.query = "overlap";
  m.suite = "ristretto255";
  m.set_size = 12;
  m.nonce.data = nonce;
  m.nonce.len = 32;
  f.msg_case = CLEANROOM__V1__FRAME__MSG_HELLO;
  f.hello = &m;
  assert_int_equal(cr__frame_append(&hello, &f), 0);
  cr_session_recv(x.provider, hello.data, hello.len);
  const cr_session_result *r = cr_session_result_get(x.provider);
  assert_int_equal(r->status, CR_SESSION_FAILED);
  assert_int_equal(r->wire_error, CR_WIRE_VERSION);
  assert_non_null(strstr(r->error_msg, "protocol version 4, this node speaks 5"));
  /* The refusal tells the peer our version. */
  const uint8_t *out;
  size_t len;
  cr_session_send(x.provider, &out, &len);
  const uint8_t *p;
  size_t plen, total;
  uint32_t ann;
  assert_int_equal(cr__frame_peek(out, len, CR_DEFAULT_MAX_FRAME, &p, &plen, &total, &ann), 1);
  Cleanroom__V1__Frame *e = cr__frame_decode(p, plen);
  assert_int_equal(e->msg_case, CLEANROOM__V1__FRAME__MSG_ERROR);
  assert_int_equal(e->error->protocol_version, 5);
  cr__frame_free(e);
  cr_buf_free(&hello);
  pair_free(&x);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_count_any_key),        cmocka_unit_test(test_breakdown_thresholds),
      cmocka_unit_test(test_grouped_cells),        cmocka_unit_test(test_members_which_key),
      cmocka_unit_test(test_structure_hidden),     cmocka_unit_test(test_lying_peer),
      cmocka_unit_test(test_record_width_checked), cmocka_unit_test(test_older_peer_refused),
      cmocka_unit_test(test_noisy_count_only),
  };
  if (cr_crypto_init() != 0)
    return 1;
  return cmocka_run_group_tests(tests, NULL, NULL);
}
