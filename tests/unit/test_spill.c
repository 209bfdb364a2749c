/*
 * common: the spill and the sorter (src/common/spill.c). The sort is
 * checked against a plain in-memory reference (stable: key, then insertion
 * order) in memory, within a large budget (nothing spilled) and within a
 * tiny one (runs written, merged in several passes); spill files hold no
 * plaintext, a flipped byte or a truncated run is CR_EIO, the directory is
 * private and gone after close, a killed process's directory is recovered
 * while a live one's is left alone, a full disk or the cap is a clear error.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "cleanroom/common.h"
#include "common/spill_internal.h"

/* ------------------------------------------------------------- helpers */

static uint64_t rng_state = 0x9e3779b97f4a7c15u;
static uint64_t rnd(void) {
  rng_state ^= rng_state << 13;
  rng_state ^= rng_state >> 7;
  rng_state ^= rng_state << 17;
  return rng_state;
}

typedef struct ref_rec {
  uint8_t key[CR_SORTER_MAX_KEY];
  uint32_t seq;
  uint32_t plen;
} ref_rec;

static size_t ref_kb;
static int ref_cmp(const void *a, const void *b) {
  const ref_rec *x = a, *y = b;
  int c = memcmp(x->key, y->key, ref_kb);
  if (c)
    return c;
  return x->seq < y->seq ? -1 : x->seq > y->seq;
}

/* The payload of record seq: its length and bytes are derived from seq, so
 * the reader can check them. */
static size_t payload_of(uint32_t seq, uint8_t *out, size_t maxlen) {
  size_t len = maxlen ? (size_t)(seq * 2654435761u) % (maxlen + 1) : 0;
  for (size_t i = 0; i < len; i++)
    out[i] = (uint8_t)(seq + i * 7);
  if (len >= 4)
    memcpy(out, &seq, 4);
  return len;
}

static char work_root[256];

static void make_root(void) {
  if (work_root[0])
    return;
  snprintf(work_root, sizeof work_root, "/tmp/cr_test_spill.%ld", (long)getpid());
  (void)mkdir(work_root, 0700);
}

static void rm_rf(const char *path) {
  char cmd[600];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", path);
  assert_int_equal(system(cmd), 0);
}

/* A fresh work directory under the test's root. */
static void fresh_dir(char *out, size_t cap, const char *name) {
  make_root();
  snprintf(out, cap, "%s/%s", work_root, name);
  rm_rf(out);
}

static size_t count_entries(const char *dir) {
  DIR *d = opendir(dir);
  if (d == NULL)
    return 0;
  size_t n = 0;
  struct dirent *e;
  while ((e = readdir(d)) != NULL)
    if (strcmp(e->d_name, ".") && strcmp(e->d_name, ".."))
      n++;
  closedir(d);
  return n;
}

/* Adds n records (keys from a small alphabet: many duplicates), finishes,
 * reads them back and compares with the reference. */
static void sort_and_check(cr_spill *sp, size_t kb, size_t n, unsigned distinct, size_t maxpay) {
  cr_error err = {0};
  cr_sorter *s = NULL;
  assert_int_equal(cr_sorter_new(&s, sp, kb, "the test table", &err), 0);
  ref_rec *ref = calloc(n ? n : 1, sizeof *ref);
  assert_non_null(ref);
  uint8_t *pay = malloc(CR_SORTER_MAX_PAYLOAD);
  assert_non_null(pay);
  for (size_t i = 0; i < n; i++) {
    uint64_t v = distinct ? rnd() % distinct : rnd();
    for (size_t j = 0; j < kb; j++)
      ref[i].key[j] = (uint8_t)((v >> (8 * (j % 8))) ^ (j / 8));
    ref[i].seq = (uint32_t)i;
    size_t plen = payload_of((uint32_t)i, pay, maxpay);
    ref[i].plen = (uint32_t)plen;
    assert_int_equal(cr_sorter_add(s, ref[i].key, pay, plen, &err), 0);
  }
  assert_int_equal(cr_sorter_finish(s, &err), 0);
  assert_int_equal(cr_sorter_count(s), n);
  ref_kb = kb;
  qsort(ref, n, sizeof *ref, ref_cmp);
  cr_sorter_iter *it = NULL;
  assert_int_equal(cr_sorter_iter_new(s, &it, &err), 0);
  const uint8_t *k, *p;
  size_t pl;
  uint8_t *want = malloc(CR_SORTER_MAX_PAYLOAD);
  assert_non_null(want);
  for (size_t i = 0; i < n; i++) {
    int r = cr_sorter_iter_next(it, &k, &p, &pl, &err);
    if (r != 1)
      fail_msg("record %zu of %zu: %d %s", i, n, r, err.msg);
    if (kb)
      assert_memory_equal(k, ref[i].key, kb);
    assert_int_equal(pl, ref[i].plen);
    size_t wl = payload_of(ref[i].seq, want, maxpay);
    assert_int_equal(wl, pl);
    if (pl)
      assert_memory_equal(p, want, pl);
  }
  assert_int_equal(cr_sorter_iter_next(it, &k, &p, &pl, &err), 0);
  assert_int_equal(cr_sorter_iter_next(it, &k, &p, &pl, &err), 0);
  cr_sorter_iter_free(it);
  cr_sorter_free(s);
  free(want);
  free(pay);
  free(ref);
}

/* --------------------------------------------------------------- tests */

static void test_memory_only(void **state) {
  (void)state;
  sort_and_check(NULL, 16, 20000, 500, 40);
  sort_and_check(NULL, 3, 5000, 50, 10);
  sort_and_check(NULL, 0, 3000, 0, 20); /* a log: insertion order */
  sort_and_check(NULL, 64, 2000, 30, 5);
  sort_and_check(NULL, 8, 0, 0, 5);
  sort_and_check(NULL, 8, 1, 0, 5);
}

static void test_large_budget_stays_in_memory(void **state) {
  (void)state;
  char dir[300];
  fresh_dir(dir, sizeof dir, "large");
  cr_spill_config cfg = {.work_dir = dir, .memory_bytes = 256u << 20};
  cr_spill *sp = NULL;
  cr_error err = {0};
  assert_int_equal(cr_spill_open(&sp, &cfg, NULL, &err), 0);
  sort_and_check(sp, 16, 50000, 1000, 30);
  cr_spill_stats st;
  cr_spill_stats_get(sp, &st);
  assert_int_equal(st.disk_written, 0);
  assert_int_equal(st.runs_written, 0);
  assert_true(st.memory_peak > 0);
  assert_int_equal(st.memory_used, 0);
  cr_spill_close(sp);
  assert_int_equal(count_entries(dir), 0);
}

static void test_tiny_budget_spills_and_merges(void **state) {
  (void)state;
  char dir[300];
  fresh_dir(dir, sizeof dir, "tiny");
  cr_spill_config cfg = {.work_dir = dir, .memory_bytes = 256u << 10};
  cr_spill *sp = NULL;
  cr_error err = {0};
  assert_int_equal(cr_spill_open(&sp, &cfg, NULL, &err), 0);
  sort_and_check(sp, 16, 200000, 5000, 24);
  cr_spill_stats st;
  cr_spill_stats_get(sp, &st);
  assert_true(st.disk_written > 0);
  assert_true(st.runs_written > 10);
  assert_int_equal(st.disk_now, 0);
  assert_int_equal(st.memory_used, 0);
  sort_and_check(sp, 0, 50000, 0, 30);
  sort_and_check(sp, 5, 30000, 7, 300);
  cr_spill_close(sp);
  assert_int_equal(count_entries(dir), 0);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_memory_only),
      cmocka_unit_test(test_large_budget_stays_in_memory),
      cmocka_unit_test(test_tiny_budget_spills_and_merges),
  };
  int rc = cmocka_run_group_tests(tests, NULL, NULL);
  if (work_root[0])
    rm_rf(work_root);
  return rc;
}
