/*
 * The engine under several match keys: two engines exchange the sets of
 * tests/support/multikey.h in memory (no frames), the counted side's records
 * of two points, the other side's single values. Any-match counting from
 * either side (our returned records against the peer's values, or the
 * peer's records against our returned values), cells of grouped counts,
 * the members bitmap with the keys matched, pads for missing keys, and what
 * a peer that moves digests between records can and cannot do to a count.
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

#include "cleanroom/engine.h"
#include "support/multikey.h"

#define DL 16 /* digest bytes */

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

/* Pads: pad[l] per label l (identity label map when grouped). */
static void set_own(cr_engine *e, const cr_dataset *d, uint64_t pad_each) {
  size_t nl = d->nlabels ? d->nlabels : 1;
  uint64_t pad[8];
  uint32_t map[8];
  for (size_t i = 0; i < nl; i++) {
    pad[i] = pad_each;
    map[i] = (uint32_t)i;
  }
  assert_int_equal(cr_engine_set_own(e, d, nl, d->nlabels ? map : NULL, pad), 0);
}

/* Rewrites the digests the receiver takes back (n points), e.g. a lie. */
typedef void (*tamper_fn)(cr_engine_digest *ret, size_t n, size_t w);

typedef struct xcfg {
  int c_receives, n_receives, members, grouped;
  uint64_t min_count, pad;
  tamper_fn tamper;
} xcfg;

typedef struct xrun {
  cr_engine *c, *n; /* the counted side (records), the other */
  cr_engine_result rc, rn;
  int rc_rc, rn_rc; /* what cr_engine_match returned */
} xrun;

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

static void give_back(cr_engine *from, cr_engine *to, size_t w, size_t n_elems, tamper_fn tamper) {
  size_t n = n_elems * w;
  cr_engine_digest *ret = returned_all(from, n, w, DL);
  if (tamper)
    tamper(ret, n, w);
  uint8_t *packed = malloc(n * DL);
  /* Label runs, each a call (records whole). */
  size_t start = 0;
  while (start < n) {
    size_t end = start;
    while (end < n && ret[end].label == ret[start].label)
      end += w;
    for (size_t i = start; i < end; i++)
      memcpy(packed + i * DL, ret[i].d, DL);
    int rc = cr_engine_own_add(to, packed + start * DL, end - start, ret[start].label, 0);
    if (rc != 0) {
      free(ret);
      free(packed);
      return;
    }
    start = end;
  }
  free(ret);
  free(packed);
}

static void exchange(xrun *x, const cr_template *t, const cr_dataset *dc, const cr_dataset *dn,
                     const xcfg *k) {
  stream sc = {{'c'}, 0}, sn = {{'n'}, 0};
  cr_engine_config cc = {t, NULL, stream_rand, &sc, NULL, 0},
                   cn = {t, NULL, stream_rand, &sn, NULL, 0};
  memset(x, 0, sizeof *x);
  assert_int_equal(cr_engine_new(&x->c, &cc), 0);
  assert_int_equal(cr_engine_new(&x->n, &cn), 0);
  set_own(x->c, dc, k->pad);
  set_own(x->n, dn, k->pad);
  assert_int_equal(cr_engine_own_width(x->c), 2);
  assert_int_equal(cr_engine_own_width(x->n), 1);
  uint64_t nc = cr_engine_own_n(x->c), nn = cr_engine_own_n(x->n);
  cr_engine_plan pc = {{0}, DL, nn, k->grouped, k->members, k->c_receives, k->n_receives, 1};
  cr_engine_plan pn = {{0}, DL, nc, k->grouped, k->members, k->n_receives, k->c_receives, 2};
  memset(pc.session_id, 9, sizeof pc.session_id);
  memset(pn.session_id, 9, sizeof pn.session_id);
  assert_int_equal(cr_engine_prepare(x->c, &pc), 0);
  assert_int_equal(cr_engine_prepare(x->n, &pn), 0);
  size_t pb = cr_engine_point_bytes(x->c);
  uint8_t *cp = malloc(nc * 2 * pb), *np = malloc(nn * pb);
  uint8_t *cl = k->grouped ? malloc(nc * 4) : NULL, *nl = k->grouped ? malloc(nn * 4) : NULL;
  /* Two calls each, across an element boundary. */
  assert_int_equal(cr_engine_blind(x->c, 0, 3, cp, cl), 0);
  assert_int_equal(cr_engine_blind(x->c, 3, nc - 3, cp + 3 * 2 * pb, cl ? cl + 12 : NULL), 0);
  assert_int_equal(cr_engine_blind(x->n, 0, nn, np, nl), 0);
  uint64_t bad;
  assert_int_equal(cr_engine_reblind(x->n, cp, cl, 5, &bad), 0);
  assert_int_equal(cr_engine_reblind(x->n, cp + 5 * 2 * pb, cl ? cl + 20 : NULL, nc - 5, &bad), 0);
  assert_int_equal(cr_engine_reblind(x->c, np, nl, nn, &bad), 0);
  assert_int_equal(cr_engine_peer_done(x->c), 0);
  assert_int_equal(cr_engine_peer_done(x->n), 0);
  size_t nlab[CR_ROLE_COUNT] = {k->grouped ? dn->nlabels : 1, k->grouped ? dc->nlabels : 1};
  uint64_t *sizes[CR_ROLE_COUNT] = {NULL, NULL};
  if (k->c_receives) {
    give_back(x->n, x->c, 2, nc, k->tamper);
    x->rc_rc =
        cr_engine_match(x->c, CR_ROLE_CONSUMER, nlab, sizes, k->grouped, k->min_count, &x->rc);
  }
  if (k->n_receives) {
    give_back(x->c, x->n, 1, nn, NULL);
    x->rn_rc =
        cr_engine_match(x->n, CR_ROLE_PROVIDER, nlab, sizes, k->grouped, k->min_count, &x->rn);
  }
  free(cp);
  free(np);
  free(cl);
  free(nl);
}

static void xrun_free(xrun *x) {
  cr_engine_free(x->c);
  cr_engine_free(x->n);
  cr_engine_result *rs[2] = {&x->rc, &x->rn};
  for (int i = 0; i < 2; i++) {
    free(rs[i]->cells);
    free(rs[i]->matched);
    free(rs[i]->matched_on);
  }
}

typedef struct fixture {
  cr_template *t;
  cr_dataset *dc, *dn;
} fixture;

static void fx_open(fixture *f, int grouped) {
  f->t = mk_template("consumer", 1);
  f->dc = mk_load(f->t, CR_ROLE_CONSUMER, MK_CONSUMER_CSV, grouped ? "seg" : NULL);
  f->dn = mk_load(f->t, CR_ROLE_PROVIDER, MK_PROVIDER_CSV, grouped ? "tier" : NULL);
}

static void fx_close(fixture *f) {
  mk_free(f->dc);
  mk_free(f->dn);
  cr_template_free(f->t);
}

static void test_any_match_both_sides(void **state) {
  (void)state;
  fixture f;
  fx_open(&f, 0);
  for (uint64_t pad = 0; pad < 4; pad += 3) {
    xrun x;
    xcfg k = {1, 1, 0, 0, 1, pad, NULL};
    exchange(&x, f.t, f.dc, f.dn, &k);
    /* The counted side counts its records from its returned tuples; the
     * other side counts the same records as they arrived, against its own
     * returned values: the same answer. */
    cr_engine_result *rs[2] = {&x.rc, &x.rn};
    assert_int_equal(x.rc_rc, 0);
    assert_int_equal(x.rn_rc, 0);
    for (int i = 0; i < 2; i++) {
      assert_int_equal(rs[i]->count, 6);
      assert_int_equal(rs[i]->nkeys, 2);
      assert_int_equal(rs[i]->key_count[0], 3);
      assert_int_equal(rs[i]->key_count[1], 4);
      assert_null(rs[i]->matched);
    }
    xrun_free(&x);
  }
  fx_close(&f);
}

static void test_breakdown_withheld(void **state) {
  (void)state;
  fixture f;
  fx_open(&f, 0);
  xrun x;
  /* 1 record matched on both keys: below 2, so no breakdown at all. */
  xcfg k = {1, 0, 0, 0, 2, 0, NULL};
  exchange(&x, f.t, f.dc, f.dn, &k);
  assert_int_equal(x.rc.count, 6);
  assert_true(x.rc.key_suppressed[0] && x.rc.key_suppressed[1]);
  assert_int_equal(x.rc.key_count[0] + x.rc.key_count[1], 0);
  xrun_free(&x);
  /* min_count 6: the count (6) is released; every combination (1 on both
   * keys, 2 on e-mail only, 3 on phone only) is below it. */
  k.min_count = 6;
  exchange(&x, f.t, f.dc, f.dn, &k);
  assert_int_equal(x.rc.count, 6);
  assert_false(x.rc.suppressed);
  assert_true(x.rc.key_suppressed[0] && x.rc.key_suppressed[1]);
  xrun_free(&x);
  k.min_count = 7;
  exchange(&x, f.t, f.dc, f.dn, &k);
  assert_true(x.rc.suppressed);
  assert_int_equal(x.rc.count, 0);
  xrun_free(&x);
  fx_close(&f);
}

static void test_cells_once_per_label(void **state) {
  (void)state;
  fixture f;
  fx_open(&f, 1);
  xrun x;
  xcfg k = {1, 1, 0, 1, 1, 1, NULL};
  exchange(&x, f.t, f.dc, f.dn, &k);
  static const uint64_t want[4] = {2, 0, 2, 3}; /* gold s1, gold s2, silver s1, silver s2 */
  cr_engine_result *rs[2] = {&x.rc, &x.rn};
  for (int i = 0; i < 2; i++) {
    assert_int_equal(rs[i]->ncells, 4);
    assert_int_equal(rs[i]->nkeys, 0);
    for (int c = 0; c < 4; c++)
      assert_int_equal(rs[i]->cells[c].count, want[c]);
  }
  xrun_free(&x);
  fx_close(&f);
}

static void test_members_keys(void **state) {
  (void)state;
  fixture f;
  fx_open(&f, 0);
  xrun x;
  xcfg k = {1, 0, 1, 0, 1, 3, NULL};
  exchange(&x, f.t, f.dc, f.dn, &k);
  assert_int_equal(x.rc_rc, 0);
  static const uint8_t on[9] = {3, 1, 2, 2, 1, 2, 0, 0, 0};
  for (int i = 0; i < 9; i++)
    assert_int_equal(x.rc.matched_on[i], on[i]);
  assert_int_equal(x.rc.matched[0], 0x3f);
  assert_int_equal(x.rc.matched[1], 0);
  xrun_free(&x);
  fx_close(&f);
}

/* A lying peer moves every matched digest of the counted side into a
 * record of its own (it cannot make digests that match): our count rises
 * to the matched values, never above. Repeating one is refused. */
static void spread_matches(cr_engine_digest *ret, size_t n, size_t w) {
  /* Swap slot 1 of each record with slot 1 of the next: tuples change. */
  for (size_t i = 0; i + 2 * w <= n; i += 2 * w) {
    cr_engine_digest tmp = ret[i + 1];
    ret[i + 1] = ret[i + w + 1];
    ret[i + w + 1] = tmp;
  }
}

static void repeat_one(cr_engine_digest *ret, size_t n, size_t w) {
  (void)w;
  memcpy(ret[n - 1].d, ret[0].d, sizeof ret[0].d);
}

static void test_lying_peer_bound(void **state) {
  (void)state;
  fixture f;
  fx_open(&f, 0);
  xrun x;
  xcfg k = {1, 0, 1, 0, 1, 0, spread_matches}; /* members: arrival order, no sort check */
  exchange(&x, f.t, f.dc, f.dn, &k);
  assert_int_equal(x.rc_rc, 0);
  /* The consumer's records hold 7 matching values (R1 two, five others). */
  assert_true(x.rc.count <= 7);
  xrun_free(&x);
  k.tamper = repeat_one;
  exchange(&x, f.t, f.dc, f.dn, &k);
  assert_int_equal(x.rc_rc, CR_EPROTO);
  assert_int_equal(cr_engine_violation(x.c), CR_RULE_DIGEST_REPEATED);
  assert_null(x.rc.matched);
  xrun_free(&x);
  fx_close(&f);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_any_match_both_sides), cmocka_unit_test(test_breakdown_withheld),
      cmocka_unit_test(test_cells_once_per_label), cmocka_unit_test(test_members_keys),
      cmocka_unit_test(test_lying_peer_bound),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
