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
#include <pthread.h>
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
static unsigned sort_and_check(cr_spill *sp, size_t kb, size_t n, unsigned distinct,
                               size_t maxpay) {
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
  unsigned passes = cr__sorter_merge_passes(s);
  cr_sorter_free(s);
  free(want);
  free(pay);
  free(ref);
  return passes;
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
  assert_true(sort_and_check(sp, 16, 200000, 5000, 24) >= 2); /* multi-pass */
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

static cr_spill *open_spill(const char *name, uint64_t memory, uint64_t disk_max, char *dir,
                            size_t cap) {
  fresh_dir(dir, cap, name);
  cr_spill_config cfg = {.work_dir = dir, .memory_bytes = memory, .disk_max_bytes = disk_max};
  cr_spill *sp = NULL;
  cr_error err = {0};
  if (cr_spill_open(&sp, &cfg, NULL, &err) != 0)
    fail_msg("cr_spill_open %s: %s", dir, err.msg);
  return sp;
}

/* Fills a sorter with n records: key = big-endian i % distinct, payload =
 * the 4 bytes of i and `extra` bytes of the marker. */
static const char marker[] = "MARKER-7f3a-plaintext-must-not-reach-disk";

static cr_sorter *fill(cr_spill *sp, size_t n, unsigned distinct, int with_marker) {
  cr_error err = {0};
  cr_sorter *s = NULL;
  assert_int_equal(cr_sorter_new(&s, sp, 8, "the test table", &err), 0);
  uint8_t key[8], pay[64];
  for (size_t i = 0; i < n; i++) {
    uint64_t v = i % distinct;
    for (int j = 0; j < 8; j++)
      key[j] = (uint8_t)(v >> (56 - 8 * j));
    uint32_t seq = (uint32_t)i;
    memcpy(pay, &seq, 4);
    size_t plen = 4;
    if (with_marker) {
      memcpy(pay + 4, marker, sizeof marker - 1);
      plen += sizeof marker - 1;
    }
    assert_int_equal(cr_sorter_add(s, key, pay, plen, &err), 0);
  }
  assert_int_equal(cr_sorter_finish(s, &err), 0);
  return s;
}

/* Reads an iterator to the end, checking the order; returns what it ended with. */
static int drain(cr_sorter_iter *it, size_t *count, cr_error *err) {
  const uint8_t *k, *p;
  size_t pl;
  int r;
  *count = 0;
  uint8_t prev[8] = {0};
  uint32_t prev_seq = 0;
  while ((r = cr_sorter_iter_next(it, &k, &p, &pl, err)) == 1) {
    uint32_t seq;
    memcpy(&seq, p, 4);
    int c = memcmp(prev, k, 8);
    if (*count > 0)
      assert_true(c < 0 || (c == 0 && seq > prev_seq));
    memcpy(prev, k, 8);
    prev_seq = seq;
    (*count)++;
  }
  return r;
}

static void check_iterators_at_once(cr_sorter *s, size_t n) {
  cr_error err = {0};
  cr_sorter_iter *a = NULL, *b = NULL, *c = NULL;
  assert_int_equal(cr_sorter_iter_new(s, &a, &err), 0);
  assert_int_equal(cr_sorter_iter_new(s, &b, &err), 0);
  const uint8_t *ka, *pa, *kb, *pb;
  size_t la, lb;
  /* b starts later and they go on interleaved: each sees every record. */
  for (size_t i = 0; i < n / 3; i++)
    assert_int_equal(cr_sorter_iter_next(a, &ka, &pa, &la, &err), 1);
  for (size_t i = 0; i < n; i++) {
    int ra = cr_sorter_iter_next(a, &ka, &pa, &la, &err);
    int rb = cr_sorter_iter_next(b, &kb, &pb, &lb, &err);
    assert_int_equal(rb, 1);
    assert_int_equal(ra, i + n / 3 < n ? 1 : 0);
  }
  assert_int_equal(cr_sorter_iter_next(b, &kb, &pb, &lb, &err), 0);
  cr_sorter_iter_free(a);
  cr_sorter_iter_free(b);
  size_t count = 0;
  assert_int_equal(cr_sorter_iter_new(s, &c, &err), 0);
  assert_int_equal(drain(c, &count, &err), 0);
  assert_int_equal(count, n);
  cr_sorter_iter_free(c);
}

static void test_iterators_at_once(void **state) {
  (void)state;
  cr_sorter *s = fill(NULL, 300000, 97, 0); /* without a spill: never spills */
  assert_false(cr_sorter_spilled(s));
  assert_int_equal(cr__sorter_run_fd(s), -1);
  cr_sorter_free(s);
  s = fill(NULL, 5000, 97, 0);
  check_iterators_at_once(s, 5000);
  cr_sorter_free(s);
  char dir[300];
  cr_spill *sp = open_spill("iters", 256u << 10, 0, dir, sizeof dir);
  s = fill(sp, 60000, 1013, 1);
  assert_true(cr_sorter_spilled(s));
  check_iterators_at_once(s, 60000);
  cr_sorter_free(s);
  cr_spill_close(sp);
}

/* Key bytes 0 is a log: records come back in insertion order. */
static void test_log_keeps_insertion_order(void **state) {
  (void)state;
  char dir[300];
  cr_spill *sp = open_spill("log", 256u << 10, 0, dir, sizeof dir);
  for (int pass = 0; pass < 2; pass++) {
    cr_error err = {0};
    cr_sorter *s = NULL;
    assert_int_equal(cr_sorter_new(&s, pass ? sp : NULL, 0, "the log", &err), 0);
    for (uint32_t i = 0; i < 100000; i++)
      assert_int_equal(cr_sorter_add(s, NULL, &i, sizeof i, &err), 0);
    assert_int_equal(cr_sorter_finish(s, &err), 0);
    assert_int_equal(cr_sorter_spilled(s), pass);
    cr_sorter_iter *it = NULL;
    assert_int_equal(cr_sorter_iter_new(s, &it, &err), 0);
    const uint8_t *k, *p;
    size_t pl;
    for (uint32_t i = 0; i < 100000; i++) {
      assert_int_equal(cr_sorter_iter_next(it, &k, &p, &pl, &err), 1);
      assert_int_equal(pl, 4);
      uint32_t v;
      memcpy(&v, p, 4);
      assert_int_equal(v, i);
    }
    assert_int_equal(cr_sorter_iter_next(it, &k, &p, &pl, &err), 0);
    cr_sorter_iter_free(it);
    if (pass) /* runs of a log are read one after another, never merged */
      assert_true(cr__sorter_runs(s) > 2 && cr__sorter_merge_passes(s) == 0);
    cr_sorter_free(s);
  }
  cr_spill_close(sp);
}

/* A consuming iterator (the table's last reader) gives the runs' disk back
 * as it reads: the spill's disk figure falls while it reads, the records
 * come back the same and in order, and no reader may start after it. A
 * log's runs, read one after another, too. */
static void test_consume_gives_disk_back(void **state) {
  (void)state;
  char dir[300];
  cr_spill *sp = open_spill("consume", 256u << 10, 0, dir, sizeof dir);
  cr_error err = {0};
  cr_sorter *s = fill(sp, 200000, 50021, 1);
  assert_true(cr_sorter_spilled(s));
  cr_spill_stats st;
  cr_spill_stats_get(sp, &st);
  uint64_t full = st.disk_now;
  assert_true(full > (4u << 20));
  cr_sorter_iter *it = NULL, *late = NULL;
  assert_int_equal(cr_sorter_iter_new(s, &it, &err), 0);
  cr_sorter_iter_consume(it);
  const uint8_t *k, *p;
  size_t pl, count = 0;
  while (count < 150000 && cr_sorter_iter_next(it, &k, &p, &pl, &err) == 1)
    count++;
  cr_spill_stats_get(sp, &st);
  /* Three quarters read: at least half of the disk given back. */
  assert_true(st.disk_now < full / 2);
  assert_true(st.disk_peak >= full); /* the peak stays what it was */
  size_t rest = 0;
  assert_int_equal(drain(it, &rest, &err), 0);
  assert_int_equal(count + rest, 200000);
  cr_sorter_iter_free(it);
  assert_int_equal(cr_sorter_iter_new(s, &late, &err), CR_EINVAL);
  assert_null(late);
  assert_non_null(strstr(err.msg, "the test table"));
  cr_sorter_free(s);
  cr_spill_stats_get(sp, &st);
  assert_int_equal(st.disk_now, 0); /* what was given back is not given twice */

  /* The whole order, checked against a reader that does not consume. */
  s = fill(sp, 60000, 1013, 0);
  cr_sorter_iter *ref = NULL;
  assert_int_equal(cr_sorter_iter_new(s, &ref, &err), 0);
  uint8_t *want = malloc(60000 * 12);
  assert_non_null(want);
  for (size_t i = 0; i < 60000; i++) {
    assert_int_equal(cr_sorter_iter_next(ref, &k, &p, &pl, &err), 1);
    memcpy(want + 12 * i, k, 8);
    memcpy(want + 12 * i + 8, p, 4);
  }
  cr_sorter_iter_free(ref);
  assert_int_equal(cr_sorter_iter_new(s, &it, &err), 0);
  cr_sorter_iter_consume(it);
  for (size_t i = 0; i < 60000; i++) {
    assert_int_equal(cr_sorter_iter_next(it, &k, &p, &pl, &err), 1);
    assert_memory_equal(want + 12 * i, k, 8);
    assert_memory_equal(want + 12 * i + 8, p, 4);
  }
  assert_int_equal(cr_sorter_iter_next(it, &k, &p, &pl, &err), 0);
  cr_sorter_iter_free(it);
  free(want);
  cr_sorter_free(s);

  /* A log. */
  assert_int_equal(cr_sorter_new(&s, sp, 0, "the log", &err), 0);
  for (uint32_t i = 0; i < 300000; i++)
    assert_int_equal(cr_sorter_add(s, NULL, &i, sizeof i, &err), 0);
  assert_int_equal(cr_sorter_finish(s, &err), 0);
  assert_true(cr__sorter_runs(s) > 2);
  cr_spill_stats_get(sp, &st);
  full = st.disk_now;
  assert_int_equal(cr_sorter_iter_new(s, &it, &err), 0);
  cr_sorter_iter_consume(it);
  for (uint32_t i = 0; i < 300000; i++) {
    assert_int_equal(cr_sorter_iter_next(it, &k, &p, &pl, &err), 1);
    uint32_t v;
    memcpy(&v, p, 4);
    assert_int_equal(v, i);
    if (i == 250000) {
      cr_spill_stats_get(sp, &st);
      assert_true(st.disk_now < full / 2);
    }
  }
  assert_int_equal(cr_sorter_iter_next(it, &k, &p, &pl, &err), 0);
  cr_sorter_iter_free(it);
  cr_sorter_free(s);
  cr_spill_stats_get(sp, &st);
  assert_int_equal(st.disk_now, 0);
  cr_spill_close(sp);
  assert_int_equal(count_entries(dir), 0);
}

/* Payloads of 0 and of the maximum, in memory and spilled (records larger
 * than a chunk span chunks). */
static void test_payload_sizes(void **state) {
  (void)state;
  char dir[300];
  cr_spill *sp = open_spill("payload", 256u << 10, 0, dir, sizeof dir);
  uint8_t *big = malloc(CR_SORTER_MAX_PAYLOAD + 1);
  assert_non_null(big);
  for (size_t i = 0; i <= CR_SORTER_MAX_PAYLOAD; i++)
    big[i] = (uint8_t)(i * 31 + 7);
  for (int pass = 0; pass < 2; pass++) {
    cr_error err = {0};
    cr_sorter *s = NULL;
    assert_int_equal(cr_sorter_new(&s, pass ? sp : NULL, 4, "the big table", &err), 0);
    const size_t n = 24;
    for (size_t i = 0; i < n; i++) {
      uint8_t key[4] = {0, 0, 0, (uint8_t)(n - i / 2)}; /* pairs of equal keys, descending */
      size_t len = i % 3 == 0 ? 0 : i % 3 == 1 ? CR_SORTER_MAX_PAYLOAD : 1 + i;
      uint8_t *p = big + (i % 3 == 1 ? 0 : 1);
      assert_int_equal(cr_sorter_add(s, key, len ? p : NULL, len, &err), 0);
    }
    assert_int_equal(cr_sorter_add(s, "kkkk", big, CR_SORTER_MAX_PAYLOAD + 1, &err), CR_EINVAL);
    assert_int_equal(cr_sorter_finish(s, &err), 0);
    assert_int_equal(cr_sorter_spilled(s), pass);
    cr_sorter_iter *it = NULL;
    assert_int_equal(cr_sorter_iter_new(s, &it, &err), 0);
    const uint8_t *k, *p;
    size_t pl;
    for (size_t j = 0; j < n; j++) {
      /* Sorted: the last pair first; within a pair, insertion order. */
      size_t i = (n - 2 - 2 * (j / 2)) + j % 2;
      assert_int_equal(cr_sorter_iter_next(it, &k, &p, &pl, &err), 1);
      assert_int_equal(k[3], (uint8_t)(n - i / 2));
      size_t len = i % 3 == 0 ? 0 : i % 3 == 1 ? CR_SORTER_MAX_PAYLOAD : 1 + i;
      assert_int_equal(pl, len);
      if (len)
        assert_memory_equal(p, big + (i % 3 == 1 ? 0 : 1), len);
    }
    assert_int_equal(cr_sorter_iter_next(it, &k, &p, &pl, &err), 0);
    cr_sorter_iter_free(it);
    cr_sorter_free(s);
  }
  free(big);
  cr_spill_close(sp);
}

static void test_misuse(void **state) {
  (void)state;
  cr_error err = {0};
  cr_sorter *s = NULL;
  assert_int_equal(cr_sorter_new(&s, NULL, CR_SORTER_MAX_KEY + 1, "t", &err), CR_EINVAL);
  assert_int_equal(cr_sorter_new(&s, NULL, 4, "the table", &err), 0);
  cr_sorter_iter *it = NULL;
  assert_int_equal(cr_sorter_iter_new(s, &it, &err), CR_EINVAL);
  assert_int_equal(cr_sorter_add(s, NULL, NULL, 0, &err), CR_EINVAL);
  assert_int_equal(cr_sorter_add(s, "abcd", NULL, 3, &err), CR_EINVAL);
  assert_int_equal(cr_sorter_add(s, "abcd", NULL, 0, &err), 0);
  assert_int_equal(cr_sorter_finish(s, &err), 0);
  assert_int_equal(cr_sorter_finish(s, &err), 0);
  assert_int_equal(cr_sorter_add(s, "abcd", NULL, 0, &err), CR_EINVAL);
  assert_non_null(strstr(err.msg, "the table"));
  assert_int_equal(cr_sorter_count(s), 1);
  cr_sorter_free(s);
  cr_sorter_free(NULL);
  cr_sorter_iter_free(NULL);
  cr_spill_close(NULL);
  cr_spill *sp = NULL;
  cr_spill_config cfg = {.work_dir = "/tmp", .memory_bytes = 0};
  assert_int_equal(cr_spill_open(&sp, &cfg, NULL, &err), CR_EINVAL);
  cfg.work_dir = NULL;
  cfg.memory_bytes = 1 << 20;
  assert_int_equal(cr_spill_open(&sp, &cfg, NULL, &err), CR_EINVAL);
  assert_null(sp);
}

/* The run file holds ciphertext only, has no name, and the private
 * directory holds nothing but its lock. */
static void test_runs_are_encrypted_and_nameless(void **state) {
  (void)state;
  char dir[300];
  cr_spill *sp = open_spill("enc", 256u << 10, 0, dir, sizeof dir);
  cr_sorter *s = fill(sp, 20000, 20000, 1);
  assert_true(cr_sorter_spilled(s));
  int fd = cr__sorter_run_fd(s);
  assert_true(fd >= 0);
  struct stat st;
  assert_int_equal(fstat(fd, &st), 0);
  assert_int_equal(st.st_mode & 0777, 0600);
  assert_int_equal(st.st_nlink, 0); /* no name to leave behind */
  assert_true(st.st_size > 20000 * 8);
  uint8_t *buf = malloc((size_t)st.st_size);
  assert_non_null(buf);
  assert_int_equal(pread(fd, buf, (size_t)st.st_size, 0), st.st_size);
  assert_null(memmem(buf, (size_t)st.st_size, marker, 8));
  assert_null(memmem(buf, (size_t)st.st_size, "MARKER", 6));
  free(buf);
  /* The same through /proc/self/fd, as another reader of it would. */
  char link[64], target[512];
  snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
  ssize_t tl = readlink(link, target, sizeof target - 1);
  assert_true(tl > 0);
  target[tl] = '\0';
  assert_non_null(strstr(target, "(deleted)"));
  /* The private directory: 0700, only the lock. */
  const char *pd = cr_spill_dir(sp);
  assert_int_equal(strncmp(pd, dir, strlen(dir)), 0);
  assert_int_equal(stat(pd, &st), 0);
  assert_int_equal(st.st_mode & 0777, 0700);
  assert_int_equal(count_entries(pd), 1);
  char lock[600];
  snprintf(lock, sizeof lock, "%s/lock", pd);
  assert_int_equal(stat(lock, &st), 0);
  assert_int_equal(st.st_mode & 0777, 0600);
  /* The lock is held: another open file description cannot take it. */
  int lfd = open(lock, O_RDONLY);
  assert_true(lfd >= 0);
  assert_int_equal(flock(lfd, LOCK_EX | LOCK_NB), -1);
  close(lfd);
  cr_sorter_free(s);
  cr_spill_stats sst;
  cr_spill_stats_get(sp, &sst);
  assert_int_equal(sst.disk_now, 0);
  assert_true(sst.disk_peak > 0);
  char pd_copy[600];
  snprintf(pd_copy, sizeof pd_copy, "%s", pd);
  cr_spill_close(sp);
  assert_int_equal(stat(pd_copy, &st), -1);
  assert_int_equal(count_entries(dir), 0);
}

/* Flips one byte of a run at `where` (0: the header, 1: a middle chunk,
 * 2: the last byte) or truncates the file; reading must fail with CR_EIO
 * and the message, never return a wrong record. */
static void tamper_case(int how) {
  char dir[300];
  cr_spill *sp = open_spill("tamper", 256u << 10, 0, dir, sizeof dir);
  cr_sorter *s = fill(sp, 60000, 60000, 0);
  assert_true(cr_sorter_spilled(s));
  int fd = cr__sorter_run_fd(s);
  size_t nruns = cr__sorter_runs(s);
  assert_true(nruns >= 1);
  uint64_t off, len;
  assert_int_equal(cr__sorter_run_span(s, nruns - 1, &off, &len), 0);
  assert_true(len > CR__SPILL_CHUNK + 64);
  if (how <= 2) {
    uint64_t at = how == 0 ? off + 3 : how == 1 ? off + len / 2 : off + len - 1;
    uint8_t b;
    assert_int_equal(pread(fd, &b, 1, (off_t)at), 1);
    b ^= 0x20;
    assert_int_equal(pwrite(fd, &b, 1, (off_t)at), 1);
  } else if (how == 3) {
    assert_int_equal(ftruncate(fd, (off_t)(off + len - 5)), 0); /* cut inside the final chunk */
  } else {
    /* cut at a chunk boundary: the final chunk is missing entirely */
    assert_int_equal(ftruncate(fd, (off_t)(off + 24 + CR__SPILL_CHUNK + 17)), 0);
  }
  cr_error err = {0};
  cr_sorter_iter *it = NULL;
  int rc = cr_sorter_iter_new(s, &it, &err);
  if (rc == 0) {
    size_t count = 0;
    rc = drain(it, &count, &err);
    assert_true(count < 60000);
    cr_sorter_iter_free(it);
  }
  assert_int_equal(rc, CR_EIO);
  assert_string_equal(err.msg, "spill run of the test table is damaged or truncated");
  cr_sorter_free(s);
  cr_spill_close(sp);
  assert_int_equal(count_entries(dir), 0);
}

static void test_tampered_run_is_eio(void **state) {
  (void)state;
  for (int how = 0; how < 5; how++)
    tamper_case(how);
  /* A log's runs are read one after another: a damaged later run is found
   * when the reading gets there, and the iterator stays failed. */
  char dir[300];
  cr_spill *sp = open_spill("tamperlog", 256u << 10, 0, dir, sizeof dir);
  cr_error err = {0};
  cr_sorter *s = NULL;
  assert_int_equal(cr_sorter_new(&s, sp, 0, "the log", &err), 0);
  for (uint32_t i = 0; i < 100000; i++)
    assert_int_equal(cr_sorter_add(s, NULL, &i, sizeof i, &err), 0);
  assert_int_equal(cr_sorter_finish(s, &err), 0);
  assert_true(cr__sorter_runs(s) >= 3);
  uint64_t off, len;
  assert_int_equal(cr__sorter_run_span(s, 1, &off, &len), 0);
  uint8_t b = 0;
  int fd = cr__sorter_run_fd(s);
  assert_int_equal(pread(fd, &b, 1, (off_t)(off + 30)), 1);
  b ^= 1;
  assert_int_equal(pwrite(fd, &b, 1, (off_t)(off + 30)), 1);
  cr_sorter_iter *it = NULL;
  assert_int_equal(cr_sorter_iter_new(s, &it, &err), 0);
  const uint8_t *k, *p;
  size_t pl;
  int r;
  uint32_t n = 0;
  while ((r = cr_sorter_iter_next(it, &k, &p, &pl, &err)) == 1) {
    uint32_t v;
    memcpy(&v, p, 4);
    assert_int_equal(v, n);
    n++;
  }
  assert_int_equal(r, CR_EIO);
  assert_string_equal(err.msg, "spill run of the log is damaged or truncated");
  assert_true(n < 100000);
  assert_int_equal(cr_sorter_iter_next(it, &k, &p, &pl, &err), CR_EIO);
  cr_sorter_iter_free(it);
  cr_sorter_free(s);
  cr_spill_close(sp);
}

static void write_file(const char *path, size_t size) {
  FILE *f = fopen(path, "w");
  assert_non_null(f);
  for (size_t i = 0; i < size; i++)
    fputc('x', f);
  assert_int_equal(fclose(f), 0);
}

/* What a killed process left is removed and counted; a directory whose
 * lock a live process holds is left alone, and so is everything else. */
static void test_recovery(void **state) {
  (void)state;
  char dir[300], p[600];
  fresh_dir(dir, sizeof dir, "recover");
  assert_int_equal(mkdir(dir, 0700), 0);
  snprintf(p, sizeof p, "%s/cleanroom-4242-0badf00d", dir); /* killed: lock free */
  assert_int_equal(mkdir(p, 0700), 0);
  snprintf(p, sizeof p, "%s/cleanroom-4242-0badf00d/lock", dir);
  write_file(p, 0);
  snprintf(p, sizeof p, "%s/cleanroom-4242-0badf00d/run-abc", dir);
  write_file(p, 1000);
  snprintf(p, sizeof p, "%s/cleanroom-4243-00000001", dir); /* killed before its lock */
  assert_int_equal(mkdir(p, 0700), 0);
  snprintf(p, sizeof p, "%s/cleanroom-4243-00000001/x", dir);
  write_file(p, 234);
  snprintf(p, sizeof p, "%s/cleanroom-live", dir); /* a live process */
  assert_int_equal(mkdir(p, 0700), 0);
  snprintf(p, sizeof p, "%s/cleanroom-live/lock", dir);
  write_file(p, 0);
  snprintf(p, sizeof p, "%s/keep", dir); /* not ours */
  assert_int_equal(mkdir(p, 0700), 0);
  snprintf(p, sizeof p, "%s/keep/cleanroom-file", dir);
  write_file(p, 10);
  snprintf(p, sizeof p, "%s/cleanroom-link", dir); /* a link to it: never followed */
  char target[600];
  snprintf(target, sizeof target, "%s/keep", dir);
  assert_int_equal(symlink(target, p), 0);

  int pipefd[2];
  assert_int_equal(pipe(pipefd), 0);
  pid_t child = fork();
  assert_true(child >= 0);
  if (child == 0) {
    alarm(60); /* never outlives a failed test for long */
    snprintf(p, sizeof p, "%s/cleanroom-live/lock", dir);
    int fd = open(p, O_RDONLY);
    if (fd < 0 || flock(fd, LOCK_EX) != 0)
      _exit(1);
    if (write(pipefd[1], "k", 1) != 1)
      _exit(1);
    for (;;)
      pause();
  }
  char c;
  assert_int_equal(read(pipefd[0], &c, 1), 1);
  close(pipefd[0]);
  close(pipefd[1]);

  cr_spill_config cfg = {.work_dir = dir, .memory_bytes = 1 << 20};
  cr_spill *sp = NULL;
  cr_spill_recovered rec;
  cr_error err = {0};
  assert_int_equal(cr_spill_open(&sp, &cfg, &rec, &err), 0);
  assert_int_equal(rec.dirs, 2);
  assert_int_equal(rec.bytes, 1234);
  struct stat st;
  snprintf(p, sizeof p, "%s/cleanroom-4242-0badf00d", dir);
  assert_int_equal(stat(p, &st), -1);
  snprintf(p, sizeof p, "%s/cleanroom-4243-00000001", dir);
  assert_int_equal(stat(p, &st), -1);
  snprintf(p, sizeof p, "%s/cleanroom-live/lock", dir);
  assert_int_equal(stat(p, &st), 0);
  snprintf(p, sizeof p, "%s/keep/cleanroom-file", dir);
  assert_int_equal(stat(p, &st), 0);
  snprintf(p, sizeof p, "%s/cleanroom-link", dir);
  assert_int_equal(lstat(p, &st), 0);

  /* A second spill of this process leaves the first one's directory alone. */
  cr_spill *sp2 = NULL;
  assert_int_equal(cr_spill_open(&sp2, &cfg, &rec, &err), 0);
  assert_int_equal(rec.dirs, 0);
  assert_int_equal(stat(cr_spill_dir(sp), &st), 0);
  cr_spill_close(sp2);
  cr_spill_close(sp);

  /* Once the live process is gone, its directory goes too. */
  kill(child, SIGKILL);
  int status;
  assert_int_equal(waitpid(child, &status, 0), child);
  assert_int_equal(cr_spill_open(&sp, &cfg, &rec, &err), 0);
  assert_int_equal(rec.dirs, 1);
  cr_spill_close(sp);
  snprintf(p, sizeof p, "%s/cleanroom-link", dir);
  assert_int_equal(unlink(p), 0);
  snprintf(p, sizeof p, "%s/keep/cleanroom-file", dir);
  assert_int_equal(unlink(p), 0);
  snprintf(p, sizeof p, "%s/keep", dir);
  assert_int_equal(rmdir(p), 0);
  assert_int_equal(count_entries(dir), 0);
}

/* A child killed while it spills leaves a directory; the next open removes it. */
static void test_recovery_after_sigkill(void **state) {
  (void)state;
  char dir[300];
  fresh_dir(dir, sizeof dir, "killed");
  int pipefd[2];
  assert_int_equal(pipe(pipefd), 0);
  pid_t child = fork();
  assert_true(child >= 0);
  if (child == 0) {
    alarm(60); /* never outlives a failed test for long */
    cr_spill_config cfg = {.work_dir = dir, .memory_bytes = 256u << 10};
    cr_spill *sp = NULL;
    cr_error err = {0};
    if (cr_spill_open(&sp, &cfg, NULL, &err) != 0)
      _exit(1);
    cr_sorter *s = NULL;
    if (cr_sorter_new(&s, sp, 8, "t", &err) != 0)
      _exit(1);
    for (uint64_t i = 0; !cr_sorter_spilled(s); i++)
      if (cr_sorter_add(s, &i, marker, sizeof marker, &err) != 0)
        _exit(1);
    if (write(pipefd[1], "k", 1) != 1)
      _exit(1);
    for (;;)
      pause();
  }
  char c;
  assert_int_equal(read(pipefd[0], &c, 1), 1);
  close(pipefd[0]);
  close(pipefd[1]);
  assert_int_equal(count_entries(dir), 1);
  kill(child, SIGKILL);
  int status;
  assert_int_equal(waitpid(child, &status, 0), child);
  assert_int_equal(count_entries(dir), 1); /* the directory and its lock stay... */
  cr_spill_config cfg = {.work_dir = dir, .memory_bytes = 1 << 20};
  cr_spill *sp = NULL;
  cr_spill_recovered rec;
  cr_error err = {0};
  assert_int_equal(cr_spill_open(&sp, &cfg, &rec, &err), 0);
  assert_int_equal(rec.dirs, 1); /* ...until the next start; the runs had no name */
  assert_int_equal(rec.bytes, 0);
  cr_spill_close(sp);
  assert_int_equal(count_entries(dir), 0);
}

static void test_config_errors(void **state) {
  (void)state;
  char dir[300], p[600];
  fresh_dir(dir, sizeof dir, "conf");
  assert_int_equal(mkdir(dir, 0700), 0);
  snprintf(p, sizeof p, "%s/afile", dir);
  write_file(p, 3);
  cr_spill_config cfg = {.work_dir = p, .memory_bytes = 1 << 20};
  cr_spill *sp = NULL;
  cr_error err = {0};
  assert_int_equal(cr_spill_open(&sp, &cfg, NULL, &err), CR_ECONFIG);
  assert_non_null(strstr(err.msg, p));
  assert_non_null(strstr(err.msg, "not a directory"));
  char sub[700];
  snprintf(sub, sizeof sub, "%s/afile/work", dir);
  cfg.work_dir = sub;
  assert_int_equal(cr_spill_open(&sp, &cfg, NULL, &err), CR_ECONFIG);
  assert_non_null(strstr(err.msg, sub));
  assert_null(sp);
  /* Created with its parents, 0700. */
  snprintf(sub, sizeof sub, "%s/a/b/work", dir);
  cfg.work_dir = sub;
  assert_int_equal(cr_spill_open(&sp, &cfg, NULL, &err), 0);
  struct stat st;
  assert_int_equal(stat(sub, &st), 0);
  assert_int_equal(st.st_mode & 0777, 0700);
  cr_spill_close(sp);
  /* A read-only file system (root may mount one; skipped otherwise). */
  snprintf(sub, sizeof sub, "%s/romount", dir);
  assert_int_equal(mkdir(sub, 0700), 0);
  if (mount("tmpfs", sub, "tmpfs", MS_RDONLY, "size=64k") == 0) {
    cfg.work_dir = sub;
    int rc = cr_spill_open(&sp, &cfg, NULL, &err);
    assert_int_equal(umount2(sub, MNT_DETACH), 0);
    assert_int_equal(rc, CR_ECONFIG);
    assert_non_null(strstr(err.msg, sub));
    assert_non_null(strstr(err.msg, "not writable"));
  }
  if (geteuid() != 0) { /* root writes anywhere */
    snprintf(sub, sizeof sub, "%s/ro", dir);
    assert_int_equal(mkdir(sub, 0500), 0);
    cfg.work_dir = sub;
    assert_int_equal(cr_spill_open(&sp, &cfg, NULL, &err), CR_ECONFIG);
    assert_non_null(strstr(err.msg, sub));
    assert_non_null(strstr(err.msg, "not writable"));
  }
}

/* Adds records until cr_sorter_add fails; returns its code. */
static int add_until_error(cr_sorter *s, size_t max, cr_error *err) {
  uint8_t pay[64];
  memcpy(pay, marker, sizeof marker);
  for (uint64_t i = 0; i < max; i++) {
    uint64_t k = i * 0x9e3779b97f4a7c15u;
    int rc = cr_sorter_add(s, &k, pay, sizeof pay, err);
    if (rc)
      return rc;
  }
  return cr_sorter_finish(s, err);
}

static void test_disk_cap(void **state) {
  (void)state;
  char dir[300];
  cr_spill *sp = open_spill("cap", 256u << 10, 1u << 20, dir, sizeof dir);
  cr_error err = {0};
  cr_sorter *s = NULL;
  assert_int_equal(cr_sorter_new(&s, sp, 8, "the test table", &err), 0);
  assert_int_equal(add_until_error(s, 1000000, &err), CR_EIO);
  assert_non_null(strstr(err.msg, dir));
  assert_non_null(strstr(err.msg, "reached the spill limit of 1 MiB"));
  assert_null(strstr(err.msg, "MARKER"));
  cr_spill_stats st;
  cr_spill_stats_get(sp, &st);
  assert_true(st.disk_now <= 1u << 20);
  cr_sorter_free(s);
  cr_spill_stats_get(sp, &st);
  assert_int_equal(st.disk_now, 0);
  assert_int_equal(st.memory_used, 0);
  cr_spill_close(sp);
  assert_int_equal(count_entries(dir), 0);
}

/* A real full file system: a 256 KiB tmpfs when this may mount (root). */
static void test_disk_full(void **state) {
  (void)state;
  char dir[300];
  fresh_dir(dir, sizeof dir, "full");
  assert_int_equal(mkdir(dir, 0700), 0);
  if (mount("tmpfs", dir, "tmpfs", 0, "size=256k,mode=0700") != 0) {
    rmdir(dir);
    skip();
  }
  cr_spill_config cfg = {.work_dir = dir, .memory_bytes = 256u << 10};
  cr_spill *sp = NULL;
  cr_error err = {0};
  int rc = cr_spill_open(&sp, &cfg, NULL, &err);
  if (rc == 0) {
    cr_sorter *s = NULL;
    assert_int_equal(cr_sorter_new(&s, sp, 8, "the test table", &err), 0);
    rc = add_until_error(s, 1000000, &err);
    cr_sorter_free(s);
    cr_spill_close(sp);
  }
  size_t left = count_entries(dir);
  assert_int_equal(umount2(dir, MNT_DETACH), 0);
  rmdir(dir);
  assert_int_equal(rc, CR_EIO);
  assert_non_null(strstr(err.msg, dir));
  assert_non_null(strstr(err.msg, "is full"));
  assert_non_null(strstr(err.msg, "--work-dir"));
  assert_null(strstr(err.msg, "MARKER"));
  assert_int_equal(left, 0);
}

/* Two sorters on one spill at once, in two threads: each sorts right,
 * and the budget's books balance at the end. */
typedef struct thread_arg {
  cr_spill *sp;
  int ok;
} thread_arg;

static void *sort_thread(void *p) {
  thread_arg *a = p;
  cr_sorter *s = fill(a->sp, 80000, 3001, 0);
  cr_sorter_iter *it = NULL;
  cr_error err = {0};
  size_t count = 0;
  a->ok = cr_sorter_iter_new(s, &it, &err) == 0 && drain(it, &count, &err) == 0 && count == 80000;
  cr_sorter_iter_free(it);
  cr_sorter_free(s);
  return NULL;
}

static void test_shared_budget(void **state) {
  (void)state;
  char dir[300];
  cr_spill *sp = open_spill("shared", 1u << 20, 0, dir, sizeof dir);
  pthread_t t[2];
  thread_arg a[2] = {{sp, 0}, {sp, 0}};
  for (int i = 0; i < 2; i++)
    assert_int_equal(pthread_create(&t[i], NULL, sort_thread, &a[i]), 0);
  for (int i = 0; i < 2; i++)
    assert_int_equal(pthread_join(t[i], NULL), 0);
  assert_true(a[0].ok && a[1].ok);
  cr_spill_stats st;
  cr_spill_stats_get(sp, &st);
  assert_int_equal(st.memory_used, 0);
  assert_int_equal(st.disk_now, 0);
  assert_true(st.runs_written > 2);
  assert_true(st.memory_peak >= st.memory_bytes / 2);
  /* Over the budget only by what each sorter is always granted. */
  assert_true(st.memory_peak <= st.memory_bytes + 2 * 512 * 1024);
  cr_spill_close(sp);
  assert_int_equal(count_entries(dir), 0);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_memory_only),
      cmocka_unit_test(test_large_budget_stays_in_memory),
      cmocka_unit_test(test_tiny_budget_spills_and_merges),
      cmocka_unit_test(test_iterators_at_once),
      cmocka_unit_test(test_log_keeps_insertion_order),
      cmocka_unit_test(test_consume_gives_disk_back),
      cmocka_unit_test(test_payload_sizes),
      cmocka_unit_test(test_misuse),
      cmocka_unit_test(test_runs_are_encrypted_and_nameless),
      cmocka_unit_test(test_tampered_run_is_eio),
      cmocka_unit_test(test_recovery),
      cmocka_unit_test(test_recovery_after_sigkill),
      cmocka_unit_test(test_config_errors),
      cmocka_unit_test(test_disk_cap),
      cmocka_unit_test(test_disk_full),
      cmocka_unit_test(test_shared_budget),
  };
  int rc = cmocka_run_group_tests(tests, NULL, NULL);
  if (work_root[0])
    rm_rf(work_root);
  return rc;
}
