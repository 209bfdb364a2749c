/*
 * A single-key data set in bounded memory (issue 17): loaded with a tiny
 * memory budget (its elements spilled) and without, the same counts, label
 * sizes, rejections and the same set of elements; the order of the elements
 * (the send order) is drawn per load, reproducible with the same seed and
 * the same whether spilled or not; members rows are identical with and
 * without spilling; a disk cap is a clear error; a large load stays within
 * its budget.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cleanroom/dataset.h"
#include "support/dataset_fixture.h"
#include "support/dsiter.h"

static char tmpdir[64];
static char path[128];
static char workdir[128];
static char outpath[128];

static int setup(void **state) {
  (void)state;
  snprintf(tmpdir, sizeof tmpdir, "/tmp/cr_test_dspill_XXXXXX");
  if (mkdtemp(tmpdir) == NULL)
    return -1;
  snprintf(path, sizeof path, "%s/data.csv", tmpdir);
  snprintf(workdir, sizeof workdir, "%s/work", tmpdir);
  snprintf(outpath, sizeof outpath, "%s/out.csv", tmpdir);
  return 0;
}

static void rm_tree(const char *dir) {
  DIR *dh = opendir(dir);
  if (dh == NULL)
    return;
  struct dirent *e;
  while ((e = readdir(dh)) != NULL) {
    if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
      continue;
    char p[512];
    snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
    struct stat st;
    if (lstat(p, &st) == 0 && S_ISDIR(st.st_mode))
      rm_tree(p);
    else
      unlink(p);
  }
  closedir(dh);
  rmdir(dir);
}

static int teardown(void **state) {
  (void)state;
  rm_tree(tmpdir);
  return 0;
}

/* Row i's key number (a few rows share one) and segment; every 37th row has
 * an invalid e-mail, every 41st an empty one. */
static int key_of(int i, int distinct) {
  return (int)(((unsigned)i * 2654435761u) % (unsigned)distinct);
}
static int seg_of(int i) { return (i * 7) % 5; }
static int bad_row(int i) { return i % 37 == 36 || i % 41 == 40; }

/* email,segment,id: n rows, keys among `distinct`. */
static void write_data(int n, int distinct) {
  FILE *f = fopen(path, "wb");
  assert_non_null(f);
  fputs("email,segment,id\n", f);
  for (int i = 0; i < n; i++) {
    if (i % 41 == 40)
      fprintf(f, ",seg%d,%d\n", seg_of(i), i);
    else if (i % 37 == 36)
      fprintf(f, "not-an-email-%d,seg%d,%d\n", i, seg_of(i), i);
    else
      fprintf(f, "%sUser%d@Example.ORG ,seg%d,%d\n", i % 3 ? "" : " ", key_of(i, distinct),
              seg_of(i), i);
  }
  assert_int_equal(fclose(f), 0);
}

static cr_spill *open_spill(uint64_t memory, uint64_t disk_max) {
  cr_spill *sp = NULL;
  cr_error err;
  cr_spill_config cfg = {.work_dir = workdir, .memory_bytes = memory, .disk_max_bytes = disk_max};
  assert_int_equal(cr_spill_open(&sp, &cfg, NULL, &err), 0);
  return sp;
}

static cr_dataset *load(const cr_template *t, cr_spill *sp, const uint8_t *seed, int grouped) {
  cr_dataset *d = NULL;
  cr_dataset_options opt;
  cr_error err;
  cr_dataset_options_init(&opt);
  opt.max_reject_ratio = 0.2;
  opt.spill = sp;
  opt.order_seed = seed;
  opt.group_column = grouped ? "segment" : NULL;
  int rc = cr_dataset_load(&d, path, t, CR_ROLE_PROVIDER, &opt, &err);
  if (rc != 0)
    fail_msg("load: %s", cr_error_message(&err, rc));
  return d;
}

/* Everything but the elements' order agrees. */
static void assert_same_set(const cr_dataset *a, const cr_dataset *b) {
  assert_int_equal(a->n, b->n);
  assert_int_equal(a->rows_read, b->rows_read);
  assert_int_equal(a->rows_accepted, b->rows_accepted);
  assert_int_equal(a->rows_rejected, b->rows_rejected);
  assert_int_equal(a->duplicates, b->duplicates);
  assert_memory_equal(a->rejected, b->rejected, sizeof a->rejected);
  assert_memory_equal(a->reject_lines, b->reject_lines, sizeof a->reject_lines);
  assert_memory_equal(a->file_sha256, b->file_sha256, sizeof a->file_sha256);
  assert_int_equal(a->nlabels, b->nlabels);
  assert_int_equal(a->label_conflicts, b->label_conflicts);
  for (size_t j = 0; j < a->nlabels; j++) {
    assert_string_equal(a->label_names[j], b->label_names[j]);
    assert_int_equal(a->label_sizes[j], b->label_sizes[j]);
  }
  fx_elems x = fx_elems_sorted(a), y = fx_elems_sorted(b);
  assert_int_equal(x.n, y.n);
  for (size_t i = 0; i < x.n; i++) {
    assert_int_equal(x.e[i].len, y.e[i].len);
    assert_memory_equal(x.e[i].key, y.e[i].key, x.e[i].len);
    assert_int_equal(x.e[i].label, y.e[i].label);
  }
  fx_elems_free(&x);
  fx_elems_free(&y);
}

/* 1 when both iterate their elements in the same order. */
static int same_order(const cr_dataset *a, const cr_dataset *b) {
  fx_elems x = fx_elems_read(a), y = fx_elems_read(b);
  int same = x.n == y.n;
  for (size_t i = 0; same && i < x.n; i++)
    same = x.e[i].len == y.e[i].len && memcmp(x.e[i].key, y.e[i].key, x.e[i].len) == 0 &&
           x.e[i].label == y.e[i].label;
  fx_elems_free(&x);
  fx_elems_free(&y);
  return same;
}

/* Counts computed from the generator alone, labels its first rows'. */
static void assert_expected(const cr_dataset *d, int n, int distinct, int grouped) {
  int *first = malloc((size_t)distinct * sizeof *first);
  int *conflict = calloc((size_t)distinct, sizeof *conflict);
  assert_non_null(first);
  assert_non_null(conflict);
  for (int k = 0; k < distinct; k++)
    first[k] = -1;
  uint64_t accepted = 0, keys = 0, conflicts = 0, sizes[5] = {0};
  for (int i = 0; i < n; i++) {
    if (bad_row(i))
      continue;
    accepted++;
    int k = key_of(i, distinct);
    if (first[k] < 0) {
      first[k] = i;
      keys++;
      sizes[seg_of(i)]++;
    } else if (seg_of(first[k]) != seg_of(i) && !conflict[k]) {
      conflict[k] = 1;
      conflicts++;
    }
  }
  assert_int_equal(d->rows_read, n);
  assert_int_equal(d->rows_accepted, accepted);
  assert_int_equal(d->n, keys);
  assert_int_equal(d->duplicates, accepted - keys);
  if (grouped) {
    assert_int_equal(d->label_conflicts, conflicts);
    size_t j = 0;
    for (int s = 0; s < 5; s++) {
      if (sizes[s] == 0)
        continue;
      char name[8];
      snprintf(name, sizeof name, "seg%d", s);
      assert_string_equal(d->label_names[j], name);
      assert_int_equal(d->label_sizes[j], sizes[s]);
      j++;
    }
    assert_int_equal(d->nlabels, j);
    /* Every element carries its first row's label. */
    fx_elems x = fx_elems_read(d);
    for (size_t e = 0; e < x.n; e++) {
      char key[64];
      assert_true(x.e[e].len < sizeof key);
      memcpy(key, x.e[e].key, x.e[e].len);
      key[x.e[e].len] = '\0';
      int k = -1;
      assert_int_equal(sscanf(key, "user%d@example.org", &k), 1);
      char want[8];
      snprintf(want, sizeof want, "seg%d", seg_of(first[k]));
      assert_string_equal(d->label_names[x.e[e].label], want);
    }
    fx_elems_free(&x);
  }
  free(first);
  free(conflict);
}

static const uint8_t seed_a[32] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10};
static const uint8_t seed_b[32] = {11, 12, 13, 14, 15, 16, 17, 18, 19, 20};

/* The same load in memory and spilled under a budget far below its size. */
static void test_spilled_same_set(void **state) {
  (void)state;
  cr_template t;
  make_template(&t);
  const int n = 6000, distinct = 2500;
  write_data(n, distinct);
  cr_spill *sp = open_spill(1, 0); /* every sorter's minimum: 64 KiB */
  for (int grouped = 0; grouped <= 1; grouped++) {
    cr_dataset *mem = load(&t, NULL, seed_a, grouped);
    cr_dataset *disk = load(&t, sp, seed_a, grouped);
    assert_expected(mem, n, distinct, grouped);
    assert_expected(disk, n, distinct, grouped);
    assert_same_set(mem, disk);
    /* The order depends on the seed alone, not on where the elements are. */
    assert_true(same_order(mem, disk));
    cr_spill_stats st;
    cr_spill_stats_get(sp, &st);
    assert_true(st.runs_written > 0);
    /* One key: no per-element arrays, spilled or not (the iterator only). */
    assert_null(disk->bytes);
    assert_null(disk->off);
    assert_null(disk->labels);
    assert_null(mem->bytes);
    assert_null(mem->off);
    assert_null(mem->labels);
    /* Two iterators in a row read the same (spilled runs are read again). */
    assert_true(same_order(disk, disk));
    cr_dataset_free(mem);
    cr_dataset_free(disk);
  }
  cr_spill_stats st;
  cr_spill_stats_get(sp, &st);
  assert_int_equal(st.memory_used, 0);
  assert_int_equal(st.disk_now, 0);
  cr_spill_close(sp);
}

/* The order: a permutation drawn per load (a seed makes it reproducible). */
static void test_order_per_load(void **state) {
  (void)state;
  cr_template t;
  make_template(&t);
  write_data(2000, 1500);
  cr_dataset *a1 = load(&t, NULL, seed_a, 1), *a2 = load(&t, NULL, seed_a, 1);
  cr_dataset *b = load(&t, NULL, seed_b, 1);
  cr_dataset *r1 = load(&t, NULL, NULL, 1), *r2 = load(&t, NULL, NULL, 1);
  assert_true(same_order(a1, a2));
  assert_false(same_order(a1, b));
  assert_false(same_order(r1, r2));
  assert_false(same_order(a1, r1));
  assert_same_set(a1, b);
  assert_same_set(a1, r1);
  assert_same_set(r1, r2);
  /* Not the bytewise order either: the order says nothing of the keys. */
  fx_elems x = fx_elems_read(r1), y = fx_elems_sorted(r1);
  size_t same_place = 0;
  for (size_t i = 0; i < x.n; i++)
    same_place += x.e[i].len == y.e[i].len && memcmp(x.e[i].key, y.e[i].key, x.e[i].len) == 0;
  assert_true(same_place < x.n / 10);
  fx_elems_free(&x);
  fx_elems_free(&y);
  cr_dataset_free(a1);
  cr_dataset_free(a2);
  cr_dataset_free(b);
  cr_dataset_free(r1);
  cr_dataset_free(r2);
}

/* The rows write_matches should give for keys k with k % 3 == 0: every
 * accepted row of them, in file order, columns id and segment. */
static char *expected_members(int n, int distinct) {
  size_t cap = 64 + (size_t)n * 24, len = 0;
  char *s = malloc(cap);
  assert_non_null(s);
  len += (size_t)snprintf(s, cap, "id,segment\r\n");
  for (int i = 0; i < n; i++) {
    if (bad_row(i) || key_of(i, distinct) % 3 != 0)
      continue;
    len += (size_t)snprintf(s + len, cap - len, "%d,seg%d\r\n", i, seg_of(i));
  }
  return s;
}

/* bit j for the iterator's j-th element when its key number % 3 == 0. */
static uint8_t *matched_thirds(const cr_dataset *d) {
  uint8_t *m = calloc(d->n / 8 + 1, 1);
  assert_non_null(m);
  fx_elems x = fx_elems_read(d);
  for (size_t j = 0; j < x.n; j++) {
    char key[64];
    int k = -1;
    memcpy(key, x.e[j].key, x.e[j].len);
    key[x.e[j].len] = '\0';
    assert_int_equal(sscanf(key, "user%d@example.org", &k), 1);
    if (k % 3 == 0)
      m[j / 8] |= (uint8_t)(1u << (j % 8));
  }
  fx_elems_free(&x);
  return m;
}

static char *write_members(const cr_dataset *d, const cr_template *t, const uint8_t *matched,
                           int *rc_out, uint64_t *rows) {
  cr_atomic_file af;
  cr_error err;
  const char *cols[] = {"id", "segment"};
  assert_int_equal(cr_atomic_open(&af, outpath, 0600, &err), 0);
  int rc =
      cr_dataset_write_matches(d, t, matched, NULL, cols, 2, NULL, NULL, &af, rows, NULL, &err);
  *rc_out = rc;
  if (rc != 0) {
    cr_atomic_abort(&af);
    assert_int_equal(access(outpath, F_OK), -1);
    return strdup(err.msg);
  }
  assert_int_equal(cr_atomic_commit(&af, &err), 0);
  FILE *f = fopen(outpath, "rb");
  assert_non_null(f);
  fseek(f, 0, SEEK_END);
  long size = ftell(f);
  fseek(f, 0, SEEK_SET);
  char *s = malloc((size_t)size + 1);
  assert_non_null(s);
  assert_int_equal(fread(s, 1, (size_t)size, f), (size_t)size);
  s[size] = '\0';
  fclose(f);
  unlink(outpath);
  return s;
}

static void test_members_spilled(void **state) {
  (void)state;
  cr_template t;
  make_template(&t);
  const int n = 5000, distinct = 1800;
  write_data(n, distinct);
  char *want = expected_members(n, distinct);
  cr_spill *sp = open_spill(1, 0);
  /* Different orders (seeds), spilled or not: the same rows. */
  cr_dataset *mem = load(&t, NULL, seed_a, 0);
  cr_dataset *disk = load(&t, sp, seed_b, 1);
  uint8_t *m_mem = matched_thirds(mem), *m_disk = matched_thirds(disk);
  int rc;
  uint64_t rows_mem = 0, rows_disk = 0;
  char *got_mem = write_members(mem, &t, m_mem, &rc, &rows_mem);
  assert_int_equal(rc, 0);
  char *got_disk = write_members(disk, &t, m_disk, &rc, &rows_disk);
  assert_int_equal(rc, 0);
  assert_string_equal(got_mem, want);
  assert_string_equal(got_disk, want);
  assert_int_equal(rows_mem, rows_disk);
  assert_true(rows_mem > 1000);
  free(got_mem);
  free(got_disk);

  /* Nothing matched: the header alone. */
  memset(m_disk, 0, disk->n / 8 + 1);
  char *none = write_members(disk, &t, m_disk, &rc, &rows_disk);
  assert_int_equal(rc, 0);
  assert_string_equal(none, "id,segment\r\n");
  assert_int_equal(rows_disk, 0);
  free(none);

  /* The file changed since the load: nothing is written. */
  FILE *f = fopen(path, "ab");
  assert_non_null(f);
  fputs("late@example.org,seg1,99999\n", f);
  fclose(f);
  char *msg = write_members(disk, &t, m_mem, &rc, &rows_disk);
  assert_int_equal(rc, CR_EDATA);
  assert_non_null(strstr(msg, "changed since it was loaded"));
  assert_null(strstr(msg, "example.org"));
  free(msg);

  free(m_mem);
  free(m_disk);
  free(want);
  cr_dataset_free(mem);
  cr_dataset_free(disk);
  cr_spill_close(sp);
}

/* A disk cap the set does not fit: CR_EIO naming the work directory, no set. */
static void test_disk_cap(void **state) {
  (void)state;
  cr_template t;
  make_template(&t);
  write_data(20000, 15000);
  cr_spill *sp = open_spill(1, 64 << 10);
  cr_dataset *d = NULL;
  cr_dataset_options opt;
  cr_error err;
  cr_dataset_options_init(&opt);
  opt.max_reject_ratio = 0.2;
  opt.spill = sp;
  assert_int_equal(cr_dataset_load(&d, path, &t, CR_ROLE_PROVIDER, &opt, &err), CR_EIO);
  assert_null(d);
  assert_non_null(strstr(err.msg, workdir));
  assert_null(strstr(err.msg, "example.org"));
  cr_spill_stats st;
  cr_spill_stats_get(sp, &st);
  assert_int_equal(st.disk_now, 0);
  assert_int_equal(st.memory_used, 0);
  cr_spill_close(sp);
}

/* A key longer than a record may hold: a clear error naming the line. */
static void test_key_too_long(void **state) {
  (void)state;
  cr_template t;
  make_template(&t);
  static cr_normalizer text[] = {CR_NORM_TEXT};
  t.match_key.normalize = text;
  size_t big = CR_SORTER_MAX_PAYLOAD + 10;
  FILE *f = fopen(path, "wb");
  assert_non_null(f);
  fputs("email,segment\na,s\n", f);
  for (size_t i = 0; i < big; i++)
    fputc('k', f);
  fputs(",s\n", f);
  fclose(f);
  cr_dataset *d = NULL;
  cr_error err;
  assert_int_equal(cr_dataset_load(&d, path, &t, CR_ROLE_PROVIDER, NULL, &err), CR_EDATA);
  assert_null(d);
  assert_non_null(strstr(err.msg, "line 3"));
  assert_non_null(strstr(err.msg, "bytes long"));
  assert_null(strstr(err.msg, "kkkk"));
}

/* ~200k rows under a 1 MiB budget: spilled, within the budget, the same
 * counts as in memory. */
static void test_large_bounded(void **state) {
  (void)state;
  cr_template t;
  make_template(&t);
  const int n = 200000, distinct = 150000;
  write_data(n, distinct);
  const uint64_t budget = 1u << 20;
  cr_spill *sp = open_spill(budget, 0);
  cr_dataset *disk = load(&t, sp, NULL, 1);
  cr_spill_stats st;
  cr_spill_stats_get(sp, &st);
  assert_true(st.runs_written > 1);
  assert_true(st.disk_peak > 0);
  /* The budget, passed at most by a sorter's minimum and the buffers a
   * merge cannot do without (docs/memory.md), never by the set's ~9 MB. */
  assert_true(st.memory_peak <= budget + (256u << 10));
  assert_null(disk->bytes);
  cr_dataset *mem = load(&t, NULL, NULL, 1);
  assert_expected(disk, n, distinct, 1);
  assert_same_set(mem, disk);
  cr_dataset_free(mem);
  cr_dataset_free(disk);
  cr_spill_stats_get(sp, &st);
  assert_int_equal(st.disk_now, 0);
  assert_int_equal(st.memory_used, 0);
  cr_spill_close(sp);
}

/* A set read once to the end and released (what a session does once it
 * has sent its elements): its spill leaves the disk at once, a later
 * iterator is refused with a clear message, and the counts remain. */
static void test_release_after_sending(void **state) {
  (void)state;
  cr_template t;
  make_template(&t);
  const int n = 20000, distinct = 15000;
  write_data(n, distinct);
  cr_spill *sp = open_spill(256u << 10, 0);
  cr_dataset *d = load(&t, sp, NULL, 1);
  assert_expected(d, n, distinct, 1);
  uint64_t keys = d->n;
  cr_spill_stats st;
  cr_spill_stats_get(sp, &st);
  assert_true(st.disk_now > 0); /* spilled */
  cr_dataset_iter *it;
  cr_error err;
  /* Released before the end: nothing is freed. */
  assert_int_equal(cr_dataset_iter_new(d, &it, &err), 0);
  const uint8_t *key;
  size_t len, got = 0;
  uint32_t lab;
  assert_int_equal(cr_dataset_iter_next(it, &key, &len, &lab, &err), 1);
  cr_dataset_iter_release(it);
  cr_spill_stats_get(sp, &st);
  assert_true(st.disk_now > 0);
  /* Read to the end, then released: the runs are gone. */
  assert_int_equal(cr_dataset_iter_new(d, &it, &err), 0);
  while (cr_dataset_iter_next(it, &key, &len, &lab, &err) == 1)
    got++;
  assert_int_equal(got, keys);
  cr_dataset_iter_release(it);
  cr_spill_stats_get(sp, &st);
  assert_int_equal(st.disk_now, 0);
  assert_int_equal(st.memory_used, 0);
  assert_int_equal(cr_dataset_iter_new(d, &it, &err), CR_EINVAL);
  assert_null(it);
  assert_non_null(strstr(err.msg, "released"));
  assert_int_equal(d->n, keys); /* the counts stay */
  assert_int_equal(d->rows_read, n);
  cr_dataset_free(d);
  cr_spill_close(sp);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_spilled_same_set),      cmocka_unit_test(test_order_per_load),
      cmocka_unit_test(test_members_spilled),       cmocka_unit_test(test_disk_cap),
      cmocka_unit_test(test_key_too_long),          cmocka_unit_test(test_large_bounded),
      cmocka_unit_test(test_release_after_sending),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}
