/*
 * Sessions whose engine tables spill (issue 17): two sessions back to back
 * in memory, once with every table in memory and once with a cr_spill of a
 * 64 KiB budget (the sorters write encrypted runs and merge them), must give
 * the same count, group_by cells and members bitmap; a disk cap the tables
 * exceed fails the session cleanly: CR_EIO naming the work directory,
 * nothing released, the peer told.
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

#include "cleanroom/protocol.h"
#include "support/memdata.h"

#define N 1200 /* elements per side: several runs per table at 64 KiB */

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

static char *email_cols[] = {"email"};
static cr_normalizer email_norm[] = {CR_NORM_EMAIL};

/* overlap: a count both sides receive; by_segment: grouped by the
 * provider's segment, to the consumer; my_matches: members, to the
 * consumer. Sizes pad to 2048: a few hundred pads per side. */
static cr_template *make_template(void) {
  cr_template *t = calloc(1, sizeof *t);
  const char *names[3] = {"overlap", "by_segment", "my_matches"};
  t->name = dup_str("spill");
  t->suite = dup_str("ristretto255");
  t->match_key.name = dup_str("email");
  t->match_key.columns = email_cols; /* for cr_dataset_load */
  t->match_key.ncolumns = 1;
  t->match_key.normalize = email_norm;
  t->match_key.nnormalize = 1;
  t->nqueries = 3;
  t->queries = calloc(3, sizeof *t->queries);
  for (int i = 0; i < 3; i++) {
    t->queries[i].name = dup_str(names[i]);
    t->queries[i].kind = CR_QUERY_COUNT;
    t->queries[i].min_count = 1;
    t->queries[i].run_by = CR_ROLE_BIT(CR_ROLE_CONSUMER);
    t->queries[i].results_to = CR_ROLE_BIT(CR_ROLE_CONSUMER);
  }
  t->queries[0].results_to |= CR_ROLE_BIT(CR_ROLE_PROVIDER);
  t->queries[1].group_by[CR_ROLE_PROVIDER] = dup_str("segment");
  t->queries[2].kind = CR_QUERY_MEMBERS;
  memset(t->sha256, 0xab, sizeof t->sha256);
  static const uint64_t edges[] = {16, 256, 2048, 4096};
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

/* Labels "seg<i % 3>" by the key's number (keys "user<i>@example.com"). */
static void label_dataset(cr_dataset *d) {
  d->nlabels = 3;
  d->label_names = calloc(3, sizeof *d->label_names);
  d->label_sizes = calloc(3, sizeof *d->label_sizes);
  d->labels = calloc(d->n, sizeof *d->labels);
  for (int j = 0; j < 3; j++) {
    char buf[16];
    snprintf(buf, sizeof buf, "seg%d", j);
    d->label_names[j] = dup_str(buf);
  }
  for (size_t i = 0; i < d->n; i++) {
    char buf[64] = {0};
    memcpy(buf, d->bytes + d->off[i], d->off[i + 1] - d->off[i]);
    d->labels[i] = (uint32_t)(atoi(buf + 4) % 3);
    d->label_sizes[d->labels[i]]++;
  }
}

typedef struct fixture {
  cr_template *tp, *tc;
  cr_dataset *dp, *dc;
  party kp, kc;
} fixture;

/* What one run released to the consumer (and the provider's count). */
typedef struct outcome {
  int c_status, p_status, c_error;
  char c_msg[512];
  uint64_t count, p_count;
  cr_session_cell cells[3];
  size_t ncells;
  uint8_t matched[(N + 7) / 8];
  int has_matched;
} outcome;

static void pump(cr_session *c, cr_session *p) {
  for (int rounds = 0; rounds < 1000000; rounds++) {
    int moved = 0;
    cr_session *from[2] = {c, p}, *to[2] = {p, c};
    for (int d = 0; d < 2; d++) {
      const uint8_t *data;
      size_t len;
      cr_session_send(from[d], &data, &len);
      if (len == 0)
        continue;
      cr_session_recv(to[d], data, len);
      cr_session_sent(from[d], len);
      moved = 1;
    }
    if (!moved)
      return;
  }
  fail_msg("sessions did not settle");
}

static void run(fixture *x, const char *query, cr_spill *sp_c, cr_spill *sp_p, outcome *o) {
  cr_session_config pc = {0}, cc = {0};
  cr_session *p, *c;
  pc.tmpl = x->tp;
  pc.data = x->dp;
  pc.spill = sp_p;
  pc.role = CR_ROLE_PROVIDER;
  pc.batch_size = 97;
  pc.sign = sign_cb;
  pc.sign_ctx = &x->kp;
  memcpy(pc.peer_sign_pk, x->kc.pk, 32);
  cc = pc;
  cc.tmpl = x->tc;
  cc.data = x->dc;
  cc.spill = sp_c;
  cc.role = CR_ROLE_CONSUMER;
  cc.is_runner = 1;
  cc.query = query;
  cc.sign_ctx = &x->kc;
  memcpy(cc.peer_sign_pk, x->kp.pk, 32);
  assert_int_equal(cr_session_new(&p, &pc, NULL), 0);
  assert_int_equal(cr_session_new(&c, &cc, NULL), 0);
  assert_int_equal(cr_session_start(c), 0);
  pump(c, p);
  const cr_session_result *rc = cr_session_result_get(c), *rp = cr_session_result_get(p);
  memset(o, 0, sizeof *o);
  o->c_status = rc->status;
  o->p_status = rp->status;
  o->c_error = rc->error;
  snprintf(o->c_msg, sizeof o->c_msg, "%s", rc->error_msg);
  o->count = rc->count;
  o->p_count = rp->count;
  o->ncells = rc->ncells;
  assert_true(rc->ncells <= 3);
  if (rc->ncells)
    memcpy(o->cells, rc->cells, rc->ncells * sizeof *rc->cells);
  if (rc->matched) {
    memcpy(o->matched, rc->matched, (x->dc->n + 7) / 8);
    o->has_matched = 1;
  }
  if (rc->status != CR_SESSION_DONE) {
    /* Failed: nothing released. */
    assert_int_equal(rc->count, 0);
    assert_null(rc->cells);
    assert_null(rc->matched);
  }
  cr_session_free(c);
  cr_session_free(p);
}

static cr_spill *spill_open(char *dir, size_t cap, uint64_t disk_max) {
  snprintf(dir, cap, "/tmp/cr-test-proto-XXXXXX");
  assert_non_null(mkdtemp(dir));
  cr_spill_config cfg = {dir, 64 * 1024, disk_max};
  cr_spill *sp = NULL;
  cr_error err;
  assert_int_equal(cr_spill_open(&sp, &cfg, NULL, &err), 0);
  return sp;
}

static void spill_close(cr_spill *sp, const char *dir) {
  cr_spill_stats st;
  cr_spill_stats_get(sp, &st);
  assert_int_equal(st.disk_now, 0); /* every table gone with its session */
  assert_int_equal(st.memory_used, 0);
  cr_spill_close(sp);
  assert_int_equal(rmdir(dir), 0); /* nothing left */
}

static int setup(void **state) {
  fixture *x = calloc(1, sizeof *x);
  x->tp = make_template();
  x->tc = make_template();
  x->dp = fx_mem_dataset("user", "@example.com", 0, N, 0);
  x->dc = fx_mem_dataset("user", "@example.com", N / 2, N + N / 2, 0);
  label_dataset(x->dp);
  crypto_sign_keypair(x->kp.pk, x->kp.sk);
  crypto_sign_keypair(x->kc.pk, x->kc.sk);
  *state = x;
  return 0;
}

static int teardown(void **state) {
  fixture *x = *state;
  free_template(x->tp);
  free_template(x->tc);
  fx_mem_dataset_free(x->dp);
  fx_mem_dataset_free(x->dc);
  free(x);
  return 0;
}

/* Count, cells and members: the same with both sides spilling. */
static void test_spilled_same_result(void **state) {
  fixture *x = *state;
  char dc[64], dp[64];
  cr_spill *sc = spill_open(dc, sizeof dc, 0), *sp = spill_open(dp, sizeof dp, 0);
  const char *queries[3] = {"overlap", "by_segment", "my_matches"};
  for (int q = 0; q < 3; q++) {
    outcome mem, disk;
    run(x, queries[q], NULL, NULL, &mem);
    run(x, queries[q], sc, sp, &disk);
    assert_int_equal(mem.c_status, CR_SESSION_DONE);
    assert_int_equal(disk.c_status, CR_SESSION_DONE);
    assert_int_equal(disk.p_status, CR_SESSION_DONE);
    assert_int_equal(mem.count, disk.count);
    assert_int_equal(mem.p_count, disk.p_count);
    assert_int_equal(mem.ncells, disk.ncells);
    assert_memory_equal(mem.cells, disk.cells, sizeof mem.cells);
    assert_int_equal(mem.has_matched, disk.has_matched);
    assert_memory_equal(mem.matched, disk.matched, sizeof mem.matched);
    if (q == 0) {
      assert_int_equal(disk.count, N / 2);
      assert_int_equal(disk.p_count, N / 2);
    } else if (q == 1) {
      assert_int_equal(disk.ncells, 3);
      assert_int_equal(disk.cells[0].count + disk.cells[1].count + disk.cells[2].count, N / 2);
    } else {
      assert_true(disk.has_matched);
      for (size_t j = 0; j < x->dc->n; j++) { /* the consumer's keys below N matched */
        char buf[64] = {0};
        memcpy(buf, x->dc->bytes + x->dc->off[j], x->dc->off[j + 1] - x->dc->off[j]);
        assert_int_equal((disk.matched[j / 8] >> (j % 8)) & 1, atoi(buf + 4) < N);
      }
    }
  }
  cr_spill_stats a, b;
  cr_spill_stats_get(sc, &a);
  cr_spill_stats_get(sp, &b);
  assert_true(a.disk_written > 0 && b.disk_written > 0); /* both really spilled */
  spill_close(sc, dc);
  spill_close(sp, dp);
}

/* The consumer's work directory capped below what its tables need: its
 * session fails with CR_EIO naming the directory, nothing is released, and
 * the provider is told (its session fails too, with no result). */
static void test_disk_cap_fails_cleanly(void **state) {
  fixture *x = *state;
  char dc[64];
  cr_spill *sc = spill_open(dc, sizeof dc, 8192);
  outcome o;
  run(x, "overlap", sc, NULL, &o);
  assert_int_equal(o.c_status, CR_SESSION_FAILED);
  assert_int_equal(o.c_error, CR_EIO);
  assert_non_null(strstr(o.c_msg, dc));
  assert_int_equal(o.p_status, CR_SESSION_FAILED);
  assert_int_equal(o.count, 0);
  assert_int_equal(o.p_count, 0);
  spill_close(sc, dc);
}

/* Progress names where the time goes: the consumer of a count both sides
 * receive passes through every phase, in order, "sorting" and "matching"
 * included (frames delivered one at a time, progress read between). */
static void test_progress_phases(void **state) {
  fixture *x = *state;
  static const char *const want[] = {"exchanging sets", "sorting", "returning digests", "matching",
                                     "done"};
  cr_session_config pc = {0}, cc = {0};
  cr_session *p, *c;
  /* Small sets: every phase shows whatever the size. */
  cr_dataset *dp = fx_mem_dataset("user", "@example.com", 0, 200, 0);
  cr_dataset *dc = fx_mem_dataset("user", "@example.com", 100, 300, 0);
  pc.tmpl = x->tp;
  pc.data = dp;
  pc.role = CR_ROLE_PROVIDER;
  pc.batch_size = 31;
  pc.sign = sign_cb;
  pc.sign_ctx = &x->kp;
  memcpy(pc.peer_sign_pk, x->kc.pk, 32);
  cc = pc;
  cc.tmpl = x->tc;
  cc.data = dc;
  cc.role = CR_ROLE_CONSUMER;
  cc.is_runner = 1;
  cc.query = "overlap";
  cc.sign_ctx = &x->kc;
  memcpy(cc.peer_sign_pk, x->kp.pk, 32);
  assert_int_equal(cr_session_new(&p, &pc, NULL), 0);
  assert_int_equal(cr_session_new(&c, &cc, NULL), 0);
  assert_int_equal(cr_session_start(c), 0);
  size_t next = 0;
  int seen[5] = {0};
  for (int rounds = 0; rounds < 1000000; rounds++) {
    int moved = 0;
    cr_session *from[2] = {c, p}, *to[2] = {p, c};
    for (int d = 0; d < 2; d++) {
      const uint8_t *data;
      size_t len;
      cr_session_send(from[d], &data, &len);
      if (len == 0)
        continue;
      /* One frame at a time (u32 big-endian length, then the frame). */
      size_t one = len < 4 ? len
                           : 4 + (((size_t)data[0] << 24) | ((size_t)data[1] << 16) |
                                  ((size_t)data[2] << 8) | data[3]);
      len = one < len ? one : len;
      cr_session_recv(to[d], data, len);
      cr_session_sent(from[d], len);
      moved = 1;
      cr_session_progress pr;
      cr_session_progress_get(c, &pr);
      /* Phases only move forward; every one shows. */
      for (size_t i = 0; i < sizeof want / sizeof want[0]; i++)
        if (strcmp(pr.phase, want[i]) == 0) {
          assert_true(i + 1 >= next);
          seen[i] = 1;
          next = i + 1;
        }
    }
    if (!moved)
      break;
  }
  assert_int_equal(cr_session_status_get(c), CR_SESSION_DONE);
  for (size_t i = 0; i < sizeof want / sizeof want[0]; i++)
    assert_true(seen[i]);
  assert_int_equal(cr_session_result_get(c)->count, 100);
  cr_session_free(c);
  cr_session_free(p);
  fx_mem_dataset_free(dp);
  fx_mem_dataset_free(dc);
}

/* Data sets loaded from files into a tiny spill (the dataset's own sorter
 * spilled: no per-element labels or keys in memory, the keyed order of
 * one seed) and sessions spilling too: the group_by cells and the members
 * bitmap (bit j = the j-th element of the consumer's iterator) are right. */
static void write_csv(const char *path, int from, int to, int grouped) {
  FILE *f = fopen(path, "w");
  assert_non_null(f);
  fprintf(f, grouped ? "email,segment\n" : "email\n");
  for (int i = from; i < to; i++)
    if (grouped)
      fprintf(f, "user%d@example.com,seg%d\n", i, i % 3);
    else
      fprintf(f, "user%d@example.com\n", i);
  assert_int_equal(fclose(f), 0);
}

static cr_dataset *load(const cr_template *t, const char *path, cr_role role, cr_spill *sp,
                        const char *group) {
  static const uint8_t seed[32] = {7};
  cr_dataset *d = NULL;
  cr_dataset_options opt;
  cr_error err;
  cr_dataset_options_init(&opt);
  opt.spill = sp;
  opt.order_seed = seed;
  opt.group_column = group;
  int rc = cr_dataset_load(&d, path, t, role, &opt, &err);
  if (rc != 0)
    fail_msg("load: %s", cr_error_message(&err, rc));
  return d;
}

static void test_loaded_and_spilled(void **state) {
  fixture *x = *state;
  char dc[64], dp[64], ccsv[128], pgcsv[128];
  cr_spill *sc = spill_open(dc, sizeof dc, 0), *sp = spill_open(dp, sizeof dp, 0);
  snprintf(pgcsv, sizeof pgcsv, "%s/pg.csv", dp);
  snprintf(ccsv, sizeof ccsv, "%s/c.csv", dc);
  write_csv(pgcsv, 0, N, 1);
  write_csv(ccsv, N / 2, N + N / 2, 0);
  cr_dataset *dpg = load(x->tp, pgcsv, CR_ROLE_PROVIDER, sp, "segment");
  cr_dataset *dcl = load(x->tc, ccsv, CR_ROLE_CONSUMER, sc, NULL);
  assert_int_equal(dpg->nlabels, 3);
  cr_spill_stats ds;
  cr_spill_stats_get(sp, &ds);
  assert_true(ds.disk_written > 0); /* the provider's elements are on disk */
  assert_null(dpg->labels);         /* no per-element labels in memory */
  cr_dataset *keep_p = x->dp, *keep_c = x->dc;
  x->dp = dpg;
  x->dc = dcl;
  outcome g, m;
  run(x, "by_segment", sc, sp, &g);
  run(x, "my_matches", sc, sp, &m);
  x->dp = keep_p;
  x->dc = keep_c;
  assert_int_equal(g.c_status, CR_SESSION_DONE);
  assert_int_equal(g.ncells, 3);
  for (size_t i = 0; i < 3; i++) /* keys N/2..N-1 split evenly by i % 3 */
    assert_int_equal(g.cells[i].count, N / 6);
  assert_int_equal(m.c_status, CR_SESSION_DONE);
  assert_int_equal(m.count, N / 2);
  assert_true(m.has_matched);
  /* Bit j: the j-th element of the consumer's iterator (its keyed order). */
  cr_dataset_iter *it;
  cr_error err;
  assert_int_equal(cr_dataset_iter_new(dcl, &it, &err), 0);
  const uint8_t *key;
  size_t len, j = 0;
  uint32_t lab;
  while (cr_dataset_iter_next(it, &key, &len, &lab, &err) == 1) {
    char buf[64] = {0};
    memcpy(buf, key, len < sizeof buf - 1 ? len : sizeof buf - 1);
    assert_int_equal((m.matched[j / 8] >> (j % 8)) & 1, atoi(buf + 4) < N);
    j++;
  }
  cr_dataset_iter_free(it);
  assert_int_equal(j, N);
  cr_spill_stats a;
  cr_spill_stats_get(sc, &a);
  assert_true(a.disk_written > 0);
  cr_dataset_free(dpg);
  cr_dataset_free(dcl);
  unlink(pgcsv);
  unlink(ccsv);
  spill_close(sc, dc);
  spill_close(sp, dp);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_spilled_same_result, setup, teardown),
      cmocka_unit_test_setup_teardown(test_disk_cap_fails_cleanly, setup, teardown),
      cmocka_unit_test_setup_teardown(test_progress_phases, setup, teardown),
      cmocka_unit_test_setup_teardown(test_loaded_and_spilled, setup, teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
