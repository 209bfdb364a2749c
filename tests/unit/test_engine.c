/*
 * Engine tests: two engines blind and re-blind each other's sets in memory
 * (no frames), the match count, the members bitmap, group cells, invalid
 * points, determinism under injected randomness, and the wipe.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <sodium.h>

#include "cleanroom/engine.h"
#include "support/memdata.h"

static cr_template *make_template(const char *suite) {
  cr_template *t = calloc(1, sizeof *t);
  t->suite = (char *)suite;
  t->match_key.name = (char *)"email";
  memset(t->sha256, 0xab, sizeof t->sha256);
  return t;
}

/* Keys "k<i>" for i in [from, to), sorted bytewise; labels i % nlab. */
/* Deterministic randomness: ChaCha20 keystream, keyed by a seed byte. */
typedef struct stream {
  uint8_t key[crypto_stream_chacha20_KEYBYTES];
  uint64_t ctr;
} stream;

static int stream_rand(void *ctx, uint8_t *buf, size_t len) {
  stream *s = ctx;
  uint8_t nonce[crypto_stream_chacha20_NONCEBYTES] = {0};
  memcpy(nonce, &s->ctr, sizeof s->ctr);
  s->ctr++;
  crypto_stream_chacha20(buf, len, nonce, s->key);
  return 0;
}

static int failing_rand(void *ctx, uint8_t *buf, size_t len) {
  (void)ctx;
  (void)buf;
  (void)len;
  return CR_EIO;
}

/* Every digest the engine returns (cr_engine_returned_next), with labels;
 * max per call: a few, to cover the reader's boundaries. */
static cr_engine_digest *returned_all(cr_engine *e, size_t n, size_t w, size_t dl) {
  cr_engine_digest *out = calloc(n ? n : 1, sizeof *out);
  uint8_t *buf = malloc(8 * w * dl);
  size_t got = 0, k = 0;
  uint32_t lab = 0;
  assert_non_null(out);
  assert_non_null(buf);
  while (got < n) {
    assert_int_equal(cr_engine_returned_next(e, 7 * w, buf, &k, &lab), 0);
    assert_true(k > 0 && k % w == 0 && k <= n - got);
    for (size_t i = 0; i < k; i++) {
      memcpy(out[got + i].d, buf + i * dl, dl);
      out[got + i].label = lab;
    }
    got += k;
  }
  assert_int_equal(cr_engine_returned_next(e, w, buf, &k, &lab), 0);
  assert_int_equal(k, 0);
  free(buf);
  return out;
}

/* Runs a whole exchange between engine a (own role ra) and b; b receives. */
typedef struct run {
  cr_engine *a, *b;
  cr_engine_result res;
} run;

/* Pads per label each side adds in exchange() (0: none). */
static uint64_t g_pad_a, g_pad_b;
/* The spill exchange() and victim() give their engines (NULL: memory). */
static cr_spill *g_spill;

static void blind_all(cr_engine *from, const cr_dataset *d, int labels, uint8_t **pts,
                      uint8_t **labs) {
  size_t pb = cr_engine_point_bytes(from);
  size_t n = (size_t)cr_engine_own_n(from);
  (void)d;
  *pts = malloc(n * pb);
  *labs = labels ? malloc(n * 4) : NULL;
  /* Two calls, to cover a batch boundary. */
  size_t half = n / 2;
  assert_int_equal(cr_engine_blind(from, 0, half, *pts, *labs), 0);
  assert_int_equal(
      cr_engine_blind(from, half, n - half, *pts + half * pb, labels ? *labs + 4 * half : NULL), 0);
}

/* set_own with g_pad pads per label (identity label map when grouped). */
static int set_own(cr_engine *e, const cr_dataset *d, uint64_t pad_each) {
  size_t nl = d->nlabels ? d->nlabels : 1;
  uint64_t pad[8];
  uint32_t map[8];
  for (size_t i = 0; i < nl; i++) {
    pad[i] = pad_each;
    map[i] = (uint32_t)i;
  }
  return cr_engine_set_own(e, d, nl, d->nlabels ? map : NULL, pad);
}

/* Consumer b receives; provider a returns its digests. */
static void exchange(run *r, const cr_template *t, const cr_dataset *da, const cr_dataset *db,
                     int members, int grouped_a, uint64_t min_count, cr_rand_fn rnd, void *ra,
                     void *rb) {
  cr_engine_config ca = {t, NULL, rnd, ra, g_spill, 0}, cb = {t, NULL, rnd, rb, g_spill, 0};
  memset(r, 0, sizeof *r);
  assert_int_equal(cr_engine_new(&r->a, &ca), 0);
  assert_int_equal(cr_engine_new(&r->b, &cb), 0);
  assert_int_equal(set_own(r->a, da, g_pad_a), 0);
  assert_int_equal(set_own(r->b, db, g_pad_b), 0);
  uint64_t na = cr_engine_own_n(r->a), nb = cr_engine_own_n(r->b);
  cr_engine_plan pa = {{0}, 16, nb, 0, members, 0, 1, 0};
  cr_engine_plan pbp = {{0}, 16, na, grouped_a, members, 1, 0, 0};
  memset(pa.session_id, 7, sizeof pa.session_id);
  memset(pbp.session_id, 7, sizeof pbp.session_id);
  assert_int_equal(cr_engine_prepare(r->a, &pa), 0);
  assert_int_equal(cr_engine_prepare(r->b, &pbp), 0);

  uint8_t *apts, *alabs, *bpts, *blabs;
  uint64_t bad;
  blind_all(r->a, da, grouped_a, &apts, &alabs);
  blind_all(r->b, db, 0, &bpts, &blabs);
  assert_int_equal(cr_engine_reblind(r->a, bpts, NULL, nb, &bad), 0);
  assert_int_equal(cr_engine_reblind(r->b, apts, alabs, na, &bad), 0);
  assert_int_equal(cr_engine_peer_done(r->a), 0);
  assert_int_equal(cr_engine_peer_done(r->b), 0);
  {
    uint8_t one[16];
    size_t k;
    uint32_t lab;
    /* a does not receive: b returns nothing */
    assert_int_equal(cr_engine_returned_next(r->b, 1, one, &k, &lab), CR_EINVAL);
  }

  /* a returns b's digests in its send order, one label (b not grouped). */
  cr_engine_digest *ret = returned_all(r->a, nb, 1, 16);
  uint8_t *packed = malloc(nb * 16);
  for (size_t i = 0; i < nb; i++)
    memcpy(packed + 16 * i, ret[i].d, 16);
  assert_int_equal(cr_engine_own_add(r->b, packed, nb, 0, 0), 0);
  free(ret);
  size_t nl[CR_ROLE_COUNT] = {grouped_a ? da->nlabels : 1, 1};
  uint64_t *sizes[CR_ROLE_COUNT] = {NULL, NULL};
  assert_int_equal(
      cr_engine_match(r->b, CR_ROLE_CONSUMER, nl, sizes, grouped_a, min_count, &r->res), 0);
  free(packed);
  free(apts);
  free(alabs);
  free(bpts);
  free(blabs);
}

static void run_free(run *r) {
  cr_engine_free(r->a);
  cr_engine_free(r->b);
  free(r->res.cells);
  free(r->res.matched);
}

static void test_count(void **state) {
  (void)state;
  cr_template *t = make_template("ristretto255");
  cr_dataset *da = fx_mem_dataset("k", "", 0, 100, 0), *db = fx_mem_dataset("k", "", 70, 150, 0);
  run r;
  exchange(&r, t, da, db, 0, 0, 1, NULL, NULL, NULL);
  assert_int_equal(r.res.count, 30);
  assert_false(r.res.suppressed);
  assert_null(r.res.cells);
  assert_null(r.res.matched);
  run_free(&r);
  /* Threshold: 30 < 31 is suppressed. */
  exchange(&r, t, da, db, 0, 0, 31, NULL, NULL, NULL);
  assert_true(r.res.suppressed);
  run_free(&r);
  fx_mem_dataset_free(da);
  fx_mem_dataset_free(db);
  free(t);
}

static void test_count_p256(void **state) {
  (void)state;
  cr_template *t = make_template("p256");
  cr_dataset *da = fx_mem_dataset("k", "", 0, 40, 0), *db = fx_mem_dataset("k", "", 30, 60, 0);
  run r;
  exchange(&r, t, da, db, 0, 0, 1, NULL, NULL, NULL);
  assert_int_equal(r.res.count, 10);
  run_free(&r);
  fx_mem_dataset_free(da);
  fx_mem_dataset_free(db);
  free(t);
}

static void test_members(void **state) {
  (void)state;
  cr_template *t = make_template("ristretto255");
  cr_dataset *da = fx_mem_dataset("k", "", 0, 50, 0), *db = fx_mem_dataset("k", "", 40, 80, 0);
  run r;
  exchange(&r, t, da, db, 1, 0, 1, NULL, NULL, NULL);
  assert_int_equal(r.res.count, 10);
  assert_non_null(r.res.matched);
  /* Bit i set exactly for own keys k40..k49 (dataset order). */
  for (size_t i = 0; i < db->n; i++) {
    char key[16] = {0};
    memcpy(key, db->bytes + db->off[i], db->off[i + 1] - db->off[i]);
    int want = atoi(key + 1) < 50;
    assert_int_equal((r.res.matched[i / 8] >> (i % 8)) & 1, want);
  }
  run_free(&r);
  fx_mem_dataset_free(da);
  fx_mem_dataset_free(db);
  free(t);
}

static void test_grouped(void **state) {
  (void)state;
  cr_template *t = make_template("ristretto255");
  cr_dataset *da = fx_mem_dataset("k", "", 0, 60, 3), *db = fx_mem_dataset("k", "", 0, 30, 0);
  run r;
  exchange(&r, t, da, db, 0, 1, 10, NULL, NULL, NULL);
  assert_int_equal(r.res.ncells, 3);
  for (size_t i = 0; i < 3; i++) {
    assert_int_equal(r.res.cells[i].label[CR_ROLE_PROVIDER], i);
    assert_int_equal(r.res.cells[i].count, 10); /* k0..k29 split evenly */
    assert_false(r.res.cells[i].suppressed);
  }
  assert_int_equal(r.res.count, 0); /* the total is not released */
  run_free(&r);
  exchange(&r, t, da, db, 0, 1, 11, NULL, NULL, NULL);
  for (size_t i = 0; i < 3; i++) {
    assert_true(r.res.cells[i].suppressed);
    assert_int_equal(r.res.cells[i].count, 0);
  }
  run_free(&r);
  fx_mem_dataset_free(da);
  fx_mem_dataset_free(db);
  free(t);
}

/* Same seed: same points; another seed: other points, same count. */
static void test_deterministic(void **state) {
  (void)state;
  cr_template *t = make_template("ristretto255");
  cr_dataset *d = fx_mem_dataset("k", "", 0, 20, 0);
  uint8_t p[3][20 * 32];
  for (int i = 0; i < 3; i++) {
    stream st;
    memset(&st, 0, sizeof st);
    st.key[0] = (uint8_t)(i == 2 ? 2 : 1);
    cr_engine_config c = {t, NULL, stream_rand, &st, NULL, 0};
    cr_engine *e;
    assert_int_equal(cr_engine_new(&e, &c), 0);
    assert_int_equal(set_own(e, d, 0), 0);
    assert_int_equal(cr_engine_blind(e, 0, d->n, p[i], NULL), 0);
    cr_engine_free(e);
  }
  assert_memory_equal(p[0], p[1], sizeof p[0]);
  assert_memory_not_equal(p[0], p[2], sizeof p[0]);

  stream s1 = {{3}, 0}, s2 = {{4}, 0};
  cr_dataset *db = fx_mem_dataset("k", "", 10, 30, 0);
  run r;
  exchange(&r, t, d, db, 0, 0, 1, stream_rand, &s1, &s2);
  assert_int_equal(r.res.count, 10);
  run_free(&r);
  fx_mem_dataset_free(db);
  fx_mem_dataset_free(d);
  free(t);
}

static void test_bad_point_and_rand(void **state) {
  (void)state;
  cr_template *t = make_template("ristretto255");
  cr_dataset *d = fx_mem_dataset("k", "", 0, 4, 0);
  cr_engine_config c = {t, NULL, NULL, NULL, NULL, 0};
  cr_engine *e;
  assert_int_equal(cr_engine_new(&e, &c), 0);
  assert_int_equal(set_own(e, d, 0), 0);
  cr_engine_plan p = {{0}, 16, 4, 0, 0, 1, 1, 0};
  assert_int_equal(cr_engine_prepare(e, &p), 0);
  uint8_t pts[4 * 32];
  assert_int_equal(cr_engine_blind(e, 0, 4, pts, NULL), 0);
  memset(pts + 2 * 32, 0, 32); /* point 2: the identity */
  uint64_t bad = 0;
  assert_int_equal(cr_engine_reblind(e, pts, NULL, 4, &bad), CR_EPROTO);
  assert_int_equal(bad, 2);
  /* More points than announced. */
  assert_int_not_equal(cr_engine_reblind(e, pts, NULL, 5, &bad), 0);
  assert_false(cr_engine_scalar_wiped(e));
  cr_engine_wipe(e);
  assert_true(cr_engine_scalar_wiped(e));
  assert_int_not_equal(cr_engine_blind(e, 0, 1, pts, NULL), 0);
  cr_engine_free(e);

  /* A randomness source that fails: no engine. */
  cr_engine_config cf = {t, NULL, failing_rand, NULL, NULL, 0};
  assert_int_equal(cr_engine_new(&e, &cf), CR_ECRYPTO);
  assert_null(e);
  cr_template *u = make_template("nope");
  cr_engine_config cu = {u, NULL, NULL, NULL, NULL, 0};
  assert_int_equal(cr_engine_new(&e, &cu), CR_EREFUSED);
  assert_false(cr_engine_suite_supported("nope"));
  assert_true(cr_engine_suite_supported("p256"));
  free(u);
  fx_mem_dataset_free(d);
  free(t);
}

/* Padding never changes a count, a cell or a members bit: the same
 * exchanges with hundreds of pads on both sides give the same results, and
 * disjoint padded sets give 0. */
static void test_padding_never_matches(void **state) {
  (void)state;
  cr_template *t = make_template("ristretto255");
  cr_dataset *da = fx_mem_dataset("k", "", 0, 100, 0), *db = fx_mem_dataset("k", "", 70, 150, 0);
  cr_dataset *dg = fx_mem_dataset("k", "", 0, 60, 3), *dz = fx_mem_dataset("k", "", 500, 540, 0);
  run r;
  g_pad_a = 300;
  g_pad_b = 250;
  exchange(&r, t, da, db, 0, 0, 1, NULL, NULL, NULL);
  assert_int_equal(cr_engine_own_n(r.b), db->n + 250);
  assert_int_equal(r.res.count, 30);
  run_free(&r);
  exchange(&r, t, da, dz, 0, 0, 0, NULL, NULL, NULL); /* disjoint: 0, even unthresholded */
  assert_int_equal(r.res.count, 0);
  run_free(&r);
  /* members: the bitmap covers the real keys only, k70..k99 set. */
  exchange(&r, t, da, db, 1, 0, 1, NULL, NULL, NULL);
  assert_int_equal(r.res.count, 30);
  for (size_t i = 0; i < db->n; i++) {
    char key[16] = {0};
    memcpy(key, db->bytes + db->off[i], db->off[i + 1] - db->off[i]);
    assert_int_equal((r.res.matched[i / 8] >> (i % 8)) & 1, atoi(key + 1) < 100);
  }
  run_free(&r);
  /* group_by: pads carry their label and never add to a cell. */
  exchange(&r, t, dg, db, 0, 1, 1, NULL, NULL, NULL);
  assert_int_equal(r.res.ncells, 3);
  uint64_t sum = 0;
  for (size_t i = 0; i < 3; i++)
    sum += r.res.cells[i].count;
  assert_int_equal(sum, 0); /* k0..k59 against k70..k149 */
  run_free(&r);
  g_pad_a = g_pad_b = 0;
  fx_mem_dataset_free(da);
  fx_mem_dataset_free(db);
  fx_mem_dataset_free(dg);
  fx_mem_dataset_free(dz);
  free(t);
}

/* A suppressed count is 0 in the result, not only flagged. */
static void test_suppressed_is_zero(void **state) {
  (void)state;
  cr_template *t = make_template("ristretto255");
  cr_dataset *da = fx_mem_dataset("k", "", 0, 100, 0), *db = fx_mem_dataset("k", "", 70, 150, 0);
  run r;
  exchange(&r, t, da, db, 0, 0, 31, NULL, NULL, NULL);
  assert_true(r.res.suppressed);
  assert_int_equal(r.res.count, 0);
  run_free(&r);
  exchange(&r, t, da, db, 1, 0, 31, NULL, NULL, NULL);
  assert_true(r.res.suppressed);
  assert_int_equal(r.res.count, 0);
  assert_null(r.res.matched);
  run_free(&r);
  fx_mem_dataset_free(da);
  fx_mem_dataset_free(db);
  free(t);
}

/* One engine that receives and returns; its peer's points and returned
 * digests are chosen by the test. */
static cr_engine *victim(const cr_template *t, const cr_dataset *d, uint64_t peer_n,
                         uint8_t **pts) {
  cr_engine_config c = {t, NULL, NULL, NULL, g_spill, 0};
  cr_engine *e;
  uint8_t *labs;
  assert_int_equal(cr_engine_new(&e, &c), 0);
  assert_int_equal(set_own(e, d, 0), 0);
  cr_engine_plan p = {{0}, 16, peer_n, 0, 0, 1, 1, 0};
  assert_int_equal(cr_engine_prepare(e, &p), 0);
  blind_all(e, d, 0, pts, &labs);
  return e;
}

static void give_back(cr_engine *e, size_t n) {
  cr_engine_digest *ret = returned_all(e, n, 1, 16);
  uint8_t *packed = malloc(n * 16);
  for (size_t i = 0; i < n; i++)
    memcpy(packed + 16 * i, ret[i].d, 16);
  assert_int_equal(cr_engine_own_add(e, packed, n, 0, 0), 0);
  free(packed);
  free(ret);
}

static int match_rule(cr_engine *e) {
  size_t nl[CR_ROLE_COUNT] = {1, 1};
  uint64_t *sizes[CR_ROLE_COUNT] = {NULL, NULL};
  cr_engine_result res;
  int rc = cr_engine_match(e, CR_ROLE_CONSUMER, nl, sizes, 0, 1, &res);
  assert_int_equal(rc, CR_EPROTO);
  assert_null(res.cells);
  assert_null(res.matched);
  assert_int_equal(res.count, 0);
  return (int)cr_engine_violation(e);
}

/* Issue 14: a peer that reflects our points and echoes our digests, or
 * repeats points or digests, gets a protocol error naming the rule. */
static void lying_peer(int n) {
  cr_template *t = make_template("ristretto255");
  cr_dataset *d = fx_mem_dataset("k", "", 0, n, 0),
             *o = fx_mem_dataset("k", "", 100000, 100000 + n, 0);
  uint8_t *pts, *opts, *olabs;
  uint64_t bad;

  /* Reflection: our own points as the peer's set, our digests echoed. */
  cr_engine *e = victim(t, d, d->n, &pts);
  assert_int_equal(cr_engine_reblind(e, pts, NULL, d->n, &bad), 0);
  assert_int_equal(cr_engine_peer_done(e), 0);
  give_back(e, d->n);
  assert_int_equal(match_rule(e), CR_RULE_POINT_REFLECTED);
  cr_engine_free(e);
  free(pts);

  /* Echo: an honest-looking set, but the digests we returned come back. */
  cr_engine_config c = {t, NULL, NULL, NULL, g_spill, 0};
  cr_engine *peer;
  assert_int_equal(cr_engine_new(&peer, &c), 0);
  assert_int_equal(set_own(peer, o, 0), 0);
  blind_all(peer, o, 0, &opts, &olabs);
  /* The peer's points as sent (one match key: a set is blinded once, in
   * order), for the cases below that tamper with a copy. */
  uint8_t *orig = malloc(o->n * 32);
  memcpy(orig, opts, o->n * 32);
  e = victim(t, d, o->n, &pts);
  assert_int_equal(cr_engine_reblind(e, opts, NULL, o->n, &bad), 0);
  assert_int_equal(cr_engine_peer_done(e), 0);
  give_back(e, o->n);
  assert_int_equal(match_rule(e), CR_RULE_DIGEST_ECHO);
  cr_engine_free(e);
  free(pts);

  /* A point twice in the peer's set. */
  e = victim(t, d, o->n, &pts);
  memcpy(opts + 32, opts, 32);
  assert_int_equal(cr_engine_reblind(e, opts, NULL, o->n, &bad), 0);
  assert_int_equal(cr_engine_peer_done(e), 0);
  uint8_t *junk = calloc(d->n, 16);
  for (size_t i = 0; i < d->n; i++)
    for (int b = 0; b < 4; b++) /* strictly increasing, distinct */
      junk[16 * i + 12 + b] = (uint8_t)((i + 1) >> (24 - 8 * b));
  assert_int_equal(cr_engine_own_add(e, junk, d->n, 0, 0), 0);
  assert_int_equal(match_rule(e), CR_RULE_POINT_REPEATED);
  cr_engine_free(e);
  free(pts);

  /* The same digest under two labels (each run strictly increasing). */
  cr_engine_config c2 = {t, NULL, NULL, NULL, g_spill, 0};
  assert_int_equal(cr_engine_new(&e, &c2), 0);
  assert_int_equal(set_own(e, d, 0), 0);
  cr_engine_plan p = {{0}, 16, o->n, 0, 0, 1, 0, 0};
  assert_int_equal(cr_engine_prepare(e, &p), 0);
  blind_all(e, d, 0, &pts, &olabs);
  memcpy(opts, orig, o->n * 32);
  assert_int_equal(cr_engine_reblind(e, opts, NULL, o->n, &bad), 0);
  assert_int_equal(cr_engine_peer_done(e), 0);
  assert_int_equal(cr_engine_own_add(e, junk, d->n / 2, 0, 0), 0);
  assert_int_equal(cr_engine_own_add(e, junk, d->n - d->n / 2, 1, 0), 0);
  assert_int_equal(match_rule(e), CR_RULE_DIGEST_REPEATED);
  cr_engine_free(e);

  free(junk);
  free(pts);
  free(opts);
  free(orig);
  cr_engine_free(peer);
  fx_mem_dataset_free(d);
  fx_mem_dataset_free(o);
  free(t);
}

static void test_lying_peer(void **state) {
  (void)state;
  lying_peer(40);
}

/* Own digests out of order are refused for count, allowed for members. */
static void test_own_order(void **state) {
  (void)state;
  cr_template *t = make_template("ristretto255");
  cr_dataset *d = fx_mem_dataset("k", "", 0, 2, 0);
  cr_engine_config c = {t, NULL, NULL, NULL, NULL, 0};
  cr_engine *e;
  uint8_t dig[32];
  memset(dig, 0x22, 16);
  memset(dig + 16, 0x11, 16);
  for (int members = 0; members < 2; members++) {
    assert_int_equal(cr_engine_new(&e, &c), 0);
    assert_int_equal(set_own(e, d, 0), 0);
    cr_engine_plan p = {{0}, 16, 2, 0, members, 1, 0, 0};
    assert_int_equal(cr_engine_prepare(e, &p), 0);
    /* Before our points are sent: refused (members: digests come back
     * only for points sent; count: out of order anyway). */
    assert_int_equal(cr_engine_own_add(e, dig, 2, 0, 0), CR_EPROTO);
    cr_engine_free(e);
    assert_int_equal(cr_engine_new(&e, &c), 0);
    assert_int_equal(set_own(e, d, 0), 0);
    assert_int_equal(cr_engine_prepare(e, &p), 0);
    uint8_t pts[2 * 32];
    assert_int_equal(cr_engine_blind(e, 0, 2, pts, NULL), 0);
    assert_int_equal(cr_engine_own_add(e, dig, 2, 0, 0), members ? 0 : CR_EPROTO);
    cr_engine_free(e);
  }
  /* Equal neighbours are refused too (issue 14: they counted twice). */
  memset(dig + 16, 0x22, 16);
  assert_int_equal(cr_engine_new(&e, &c), 0);
  assert_int_equal(set_own(e, d, 0), 0);
  cr_engine_plan p = {{0}, 16, 2, 0, 0, 1, 0, 0};
  assert_int_equal(cr_engine_prepare(e, &p), 0);
  assert_int_equal(cr_engine_own_add(e, dig, 2, 0, 0), CR_EPROTO);
  assert_int_equal(cr_engine_violation(e), CR_RULE_DIGEST_ORDER);
  cr_engine_free(e);
  fx_mem_dataset_free(d);
  free(t);
}

/* Both suites derive a scalar from 64 bytes, rejecting zero. */
static void test_scalar_from_uniform(void **state) {
  (void)state;
  const cr_suite *suites[2] = {&cr_suite_ristretto255, &cr_suite_p256};
  assert_int_equal(cr_crypto_init(), 0);
  for (int i = 0; i < 2; i++) {
    uint8_t u[CR_SCALAR_UNIFORM_BYTES] = {0}, k[32], k2[32];
    assert_int_equal(suites[i]->scalar_from_uniform(k, u), CR_ECRYPTO);
    u[63] = 5;
    assert_int_equal(suites[i]->scalar_from_uniform(k, u), 0);
    /* Little-endian (r255) or big-endian (p256): 5 either way round. */
    uint8_t five[32] = {0};
    five[i == 0 ? 0 : 31] = 5;
    if (i == 0) {
      memset(u, 0, sizeof u);
      u[0] = 5;
      assert_int_equal(suites[i]->scalar_from_uniform(k, u), 0);
    }
    assert_memory_equal(k, five, 32);
    randombytes_buf(u, sizeof u);
    assert_int_equal(suites[i]->scalar_from_uniform(k, u), 0);
    assert_int_equal(suites[i]->scalar_from_uniform(k2, u), 0);
    assert_memory_equal(k, k2, 32);
  }
}

/* ---- spilling (issue 17) ------------------------------------------------- */

/* A private work directory for a spill of `mem` bytes (disk capped at
 * disk_max when not 0). */
static cr_spill *spill_open(char *dir, size_t cap, uint64_t mem, uint64_t disk_max) {
  snprintf(dir, cap, "/tmp/cr-test-engine-XXXXXX");
  assert_non_null(mkdtemp(dir));
  cr_spill_config c = {dir, mem, disk_max};
  cr_spill *sp = NULL;
  cr_error err;
  assert_int_equal(cr_spill_open(&sp, &c, NULL, &err), 0);
  return sp;
}

static void spill_close(cr_spill *sp, const char *dir) {
  cr_spill_close(sp);
  assert_int_equal(rmdir(dir), 0); /* nothing left in it */
}

#define SPILL_N 2000 /* elements per side: several 64 KiB runs per table (12-byte fingerprints) */

/* Count, cells and the members bitmap are the same whether the tables
 * stayed in memory or were spilled to a 64 KiB budget and merged. */
static void test_spill_same_result(void **state) {
  (void)state;
  cr_template *t = make_template("ristretto255");
  cr_dataset *da = fx_mem_dataset("k", "", 0, SPILL_N, 3);
  cr_dataset *db = fx_mem_dataset("k", "", SPILL_N / 2, SPILL_N + SPILL_N / 2, 0);
  char dir[64];
  cr_spill *sp = spill_open(dir, sizeof dir, 64 * 1024, 0);
  g_pad_a = 200;
  g_pad_b = 300;
  for (int mode = 0; mode < 3; mode++) {
    int members = mode == 2, grouped = mode == 1;
    run r[2];
    for (int spilled = 0; spilled < 2; spilled++) {
      stream sa, sb;
      memset(&sa, 0, sizeof sa);
      memset(&sb, 0, sizeof sb);
      sa.key[0] = 1;
      sb.key[0] = 2;
      g_spill = spilled ? sp : NULL;
      exchange(&r[spilled], t, da, db, members, grouped, 1, stream_rand, &sa, &sb);
    }
    g_spill = NULL;
    assert_int_equal(r[0].res.count, r[1].res.count);
    assert_int_equal(r[0].res.suppressed, r[1].res.suppressed);
    assert_int_equal(r[0].res.ncells, r[1].res.ncells);
    for (size_t i = 0; i < r[0].res.ncells; i++)
      assert_memory_equal(&r[0].res.cells[i], &r[1].res.cells[i], sizeof r[0].res.cells[i]);
    if (grouped) {
      uint64_t sum = 0;
      for (size_t i = 0; i < r[1].res.ncells; i++)
        sum += r[1].res.cells[i].count;
      assert_int_equal(sum, SPILL_N / 2);
    } else {
      assert_int_equal(r[1].res.count, SPILL_N / 2);
    }
    if (members) {
      assert_non_null(r[1].res.matched);
      assert_memory_equal(r[0].res.matched, r[1].res.matched, (db->n + 7) / 8);
      /* Bit j: element j of b's iterator, k1500..k2999 are the matches. */
      for (size_t j = 0; j < db->n; j++) {
        char key[16] = {0};
        memcpy(key, db->bytes + db->off[j], db->off[j + 1] - db->off[j]);
        assert_int_equal((r[1].res.matched[j / 8] >> (j % 8)) & 1, atoi(key + 1) < SPILL_N);
      }
    }
    run_free(&r[0]);
    run_free(&r[1]);
  }
  g_pad_a = g_pad_b = 0;
  cr_spill_stats st;
  cr_spill_stats_get(sp, &st);
  assert_true(st.disk_written > 0); /* the tables really spilled */
  assert_true(st.runs_written > 2);
  assert_int_equal(st.disk_now, 0); /* every table is gone */
  assert_int_equal(st.memory_used, 0);
  spill_close(sp, dir);
  fx_mem_dataset_free(da);
  fx_mem_dataset_free(db);
  free(t);
}

/* The checks on a lying peer hold when the tables are spilled. */
static void test_lying_peer_spilled(void **state) {
  (void)state;
  char dir[64];
  cr_spill *sp = spill_open(dir, sizeof dir, 64 * 1024, 0);
  g_spill = sp;
  lying_peer(SPILL_N);
  g_spill = NULL;
  cr_spill_stats st;
  cr_spill_stats_get(sp, &st);
  assert_true(st.disk_written > 0);
  spill_close(sp, dir);
}

/* A disk cap the tables exceed: the engine fails cleanly, with CR_EIO and
 * a message naming the work directory. */
static void test_spill_disk_cap(void **state) {
  (void)state;
  cr_template *t = make_template("ristretto255");
  cr_dataset *d = fx_mem_dataset("k", "", 0, SPILL_N, 0);
  char dir[64];
  cr_spill *sp = spill_open(dir, sizeof dir, 64 * 1024, 4096);
  cr_engine_config c = {t, NULL, NULL, NULL, sp, 0};
  cr_engine *e;
  assert_int_equal(cr_engine_new(&e, &c), 0);
  assert_int_equal(set_own(e, d, 0), 0);
  cr_engine_plan p = {{0}, 16, 10, 0, 0, 1, 1, 0};
  assert_int_equal(cr_engine_prepare(e, &p), 0);
  uint8_t *pts = malloc(d->n * 32);
  int rc = 0;
  for (size_t at = 0; at < d->n && rc == 0; at += 100)
    rc = cr_engine_blind(e, at, 100, pts + at * 32, NULL);
  assert_int_equal(rc, CR_EIO);
  assert_non_null(strstr(cr_engine_error_message(e), dir));
  /* The set is broken: no later call goes on. */
  assert_int_equal(cr_engine_blind(e, d->n, 0, pts, NULL), CR_EINVAL);
  cr_engine_free(e);
  cr_spill_stats st;
  cr_spill_stats_get(sp, &st);
  assert_int_equal(st.disk_now, 0);    /* every run gone */
  assert_int_equal(st.memory_used, 0); /* every table's memory given back */
  free(pts);
  spill_close(sp, dir);
  fx_mem_dataset_free(d);
  free(t);
}

/* One key: real elements leave in the dataset's order; pads are spread
 * among them (sequential sampling), as many per label as asked. */
static void test_pads_interleaved(void **state) {
  (void)state;
  cr_template *t = make_template("ristretto255");
  cr_dataset *d = fx_mem_dataset("k", "", 0, 300, 1);
  size_t n = d->n, np = 100, total = n + np;
  uint8_t *a = malloc(total * 32), *la = malloc(total * 4), *b = malloc(n * 32);
  uint32_t map[1] = {0};
  uint64_t pad[2] = {0, np}, nopad[1] = {0};
  stream s1, s2;
  memset(&s1, 0, sizeof s1);
  memset(&s2, 0, sizeof s2);
  s1.key[0] = s2.key[0] = 9;
  cr_engine_config c1 = {t, NULL, stream_rand, &s1, NULL, 0},
                   c2 = {t, NULL, stream_rand, &s2, NULL, 0};
  cr_engine *e1, *e2;
  assert_int_equal(cr_engine_new(&e1, &c1), 0);
  assert_int_equal(cr_engine_new(&e2, &c2), 0); /* the same scalar */
  assert_int_equal(cr_engine_set_own(e1, d, 2, map, pad), 0);
  assert_int_equal(cr_engine_set_own(e2, d, 1, NULL, nopad), 0);
  assert_int_equal(cr_engine_own_n(e1), total);
  for (size_t at = 0; at < total; at += 64)
    assert_int_equal(
        cr_engine_blind(e1, at, total - at < 64 ? total - at : 64, a + at * 32, la + at * 4), 0);
  assert_int_equal(cr_engine_blind(e2, 0, n, b, NULL), 0);
  size_t real = 0, pads = 0, first_pad = total, last_pad = 0;
  for (size_t i = 0; i < total; i++) {
    uint32_t l = ((uint32_t)la[4 * i] << 24) | ((uint32_t)la[4 * i + 1] << 16) |
                 ((uint32_t)la[4 * i + 2] << 8) | la[4 * i + 3];
    if (l == 1) {
      pads++;
      first_pad = i < first_pad ? i : first_pad;
      last_pad = i;
      continue;
    }
    assert_int_equal(l, 0);
    assert_memory_equal(a + i * 32, b + real * 32, 32); /* the dataset's order */
    real++;
  }
  assert_int_equal(real, n);
  assert_int_equal(pads, np);
  assert_true(first_pad < total / 4 && last_pad > 3 * total / 4); /* spread, not appended */
  cr_engine_free(e1);
  cr_engine_free(e2);
  free(a);
  free(la);
  free(b);
  fx_mem_dataset_free(d);
  free(t);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_count),
      cmocka_unit_test(test_count_p256),
      cmocka_unit_test(test_members),
      cmocka_unit_test(test_grouped),
      cmocka_unit_test(test_deterministic),
      cmocka_unit_test(test_bad_point_and_rand),
      cmocka_unit_test(test_own_order),
      cmocka_unit_test(test_scalar_from_uniform),
      cmocka_unit_test(test_padding_never_matches),
      cmocka_unit_test(test_suppressed_is_zero),
      cmocka_unit_test(test_lying_peer),
      cmocka_unit_test(test_lying_peer_spilled),
      cmocka_unit_test(test_spill_same_result),
      cmocka_unit_test(test_spill_disk_cap),
      cmocka_unit_test(test_pads_interleaved),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
