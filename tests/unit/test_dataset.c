/* cr_dataset_load: header checks, rejection counting and ratio, de-dup, the
 * file hash, and that no message ever carries a cell of the data. Templates
 * are built by hand (the dataset layer needs only their layout). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cleanroom/dataset.h"
#include "support/dataset_fixture.h"
#include "support/dsiter.h"

static char tmpdir[64];
static char path[128];

static int setup(void **state) {
  (void)state;
  snprintf(tmpdir, sizeof tmpdir, "/tmp/cr_test_dataset_XXXXXX");
  if (mkdtemp(tmpdir) == NULL)
    return -1;
  snprintf(path, sizeof path, "%s/data.csv", tmpdir);
  return 0;
}

static int teardown(void **state) {
  (void)state;
  unlink(path);
  rmdir(tmpdir);
  return 0;
}

static void write_file(const char *data, size_t len) { write_file_at(path, data, len); }

/* Asserts that msg quotes no cell (of 4+ bytes, raw or trimmed) of data,
 * from row `first` on (0: the header row too). */
static void assert_no_cells(const char *msg, const char *data, size_t len, int first) {
  cr_csv *r = NULL;
  const char *const *f;
  const size_t *l;
  size_t nf;
  int row = 0;
  assert_int_equal(cr_csv_open_mem(&r, data, len, "x"), 0);
  while (cr_csv_next(r, &f, &l, &nf, NULL, NULL) == 1) {
    for (size_t i = 0; row >= first && i < nf; i++) {
      const char *s = f[i];
      size_t n = l[i];
      while (n > 0 && (*s == ' ' || *s == '\t')) {
        s++;
        n--;
      }
      while (n > 0 && (s[n - 1] == ' ' || s[n - 1] == '\t'))
        n--;
      if (n < 4)
        continue;
      char *cell = strndup(s, n);
      if (strstr(msg, cell) != NULL)
        fail_msg("error message quotes a cell of the data: %s", msg);
      free(cell);
    }
    row++;
  }
  cr_csv_free(r);
}

/* Writes data, loads it, and on failure checks the message is clean. */
static int load_(const char *data, size_t len, cr_role role, const cr_template *t,
                 const cr_dataset_options *opt, cr_dataset **d, cr_error *e) {
  write_file(data, len);
  cr_error_clear(e);
  int rc = cr_dataset_load(d, path, t, role, opt, e);
  if (rc != 0) {
    assert_null(*d);
    assert_true(e->msg[0] != '\0');
    assert_no_cells(e->msg, data, len, 1);
  }
  return rc;
}

#define LOAD(lit, role, t, opt, d, e) load_(lit, sizeof(lit) - 1, role, t, opt, d, e)

/* The i-th of d's elements in bytewise order (whatever the send order). */
static void assert_key(const cr_dataset *d, size_t i, const char *want) {
  assert_true(i < d->n);
  fx_elems x = fx_elems_sorted(d);
  assert_int_equal(x.e[i].len, strlen(want));
  assert_memory_equal(x.e[i].key, want, strlen(want));
  fx_elems_free(&x);
}

static void test_load_ok(void **state) {
  (void)state;
  static const char data[] = "\xef\xbb\xbf"
                             "email , segment,signup_year\r\n"
                             " Alice@Example.COM ,smart_home,2019\r\n"
                             "alice@example.com,video,2020\r\n"
                             "\"Bob@Example.org\",alarm_only,2018\r\n"
                             "\r\n"
                             "carol@example.net,video,2021\r\n"
                             "\"dave@example.com \",\"video, \"\"hd\"\"\",2017";
  cr_template t;
  cr_dataset *d = NULL;
  cr_error e;
  make_template(&t);
  assert_int_equal(LOAD(data, CR_ROLE_PROVIDER, &t, NULL, &d, &e), 0);
  assert_int_equal(d->rows_read, 5);
  assert_int_equal(d->rows_accepted, 5);
  assert_int_equal(d->rows_rejected, 0);
  assert_int_equal(d->nreject_lines, 0);
  assert_int_equal(d->duplicates, 1);
  assert_int_equal(d->n, 4);
  assert_key(d, 0, "alice@example.com");
  assert_key(d, 1, "bob@example.org");
  assert_key(d, 2, "carol@example.net");
  assert_key(d, 3, "dave@example.com");
  /* One key: the elements are read through cr_dataset_iter only. */
  assert_null(d->bytes);
  assert_null(d->off);
  assert_string_equal(d->path, path);
  uint8_t h[CR_SHA256_BYTES];
  cr_sha256(h, data, sizeof data - 1);
  assert_memory_equal(d->file_sha256, h, sizeof h);
  cr_dataset_free(d);
}

/* Builds "email,segment\n" then n rows, row i (1-based) bad when bad(i). */
static char *build(int n, int (*bad)(int), size_t *len) {
  cr_buf b;
  char line[96];
  cr_buf_init(&b);
  assert_int_equal(cr_buf_append(&b, "email,segment\n", 14), 0);
  for (int i = 1; i <= n; i++) {
    int k;
    switch (bad ? bad(i) : 0) {
    case 1:
      k = snprintf(line, sizeof line, "person%04d.example.com,video\n", i);
      break;
    case 2:
      k = snprintf(line, sizeof line, ",video\n");
      break;
    case 3:
      k = snprintf(line, sizeof line, "person%04d@example.com\n", i);
      break;
    default:
      k = snprintf(line, sizeof line, "Person%04d@Example.com,video\n", i % 50);
      break;
    }
    assert_int_equal(cr_buf_append(&b, line, (size_t)k), 0);
  }
  /* Not strndup: b is not NUL-terminated, which ASan's strict string
   * checks (on in scripts/test.sh) rightly report. */
  char *s = malloc(b.len + 1);
  assert_non_null(s);
  memcpy(s, b.data, b.len);
  s[b.len] = '\0';
  *len = b.len;
  cr_buf_free(&b);
  return s;
}

static int bad_two_of_20(int i) { return i == 4 ? 1 : i == 9 ? 2 : 0; }

static void test_reject_ratio(void **state) {
  (void)state;
  cr_template t;
  cr_dataset *d = NULL;
  cr_error e;
  size_t len;
  make_template(&t);
  char *data = build(20, bad_two_of_20, &len);

  /* 2 of 20 = 10% > 5%. */
  assert_int_equal(load_(data, len, CR_ROLE_PROVIDER, &t, NULL, &d, &e), CR_EDATA);
  assert_non_null(strstr(e.msg, path));
  assert_non_null(strstr(e.msg, "2 of 20"));
  assert_non_null(strstr(e.msg, "invalid_email 1"));
  assert_non_null(strstr(e.msg, "missing_value 1"));
  assert_non_null(strstr(e.msg, "lines: 5, 10")); /* header is line 1 */
  assert_non_null(strstr(e.msg, "--max-reject-ratio"));
  assert_non_null(strstr(e.msg, "0.10"));
  assert_null(strstr(e.msg, "person0004")); /* also checked by load_ */

  /* Exactly at the allowed ratio passes. */
  cr_dataset_options opt;
  cr_dataset_options_init(&opt);
  assert_true(opt.max_reject_ratio == CR_DATASET_DEFAULT_MAX_REJECT_RATIO);
  opt.max_reject_ratio = 0.10;
  assert_int_equal(load_(data, len, CR_ROLE_PROVIDER, &t, &opt, &d, &e), 0);
  assert_int_equal(d->rows_read, 20);
  assert_int_equal(d->rows_accepted, 18);
  assert_int_equal(d->rows_rejected, 2);
  assert_int_equal(d->rejected[CR_REJECT_EMAIL], 1);
  assert_int_equal(d->rejected[CR_REJECT_MISSING], 1);
  assert_int_equal(d->nreject_lines, 2);
  assert_int_equal(d->reject_lines[0], 5);
  assert_int_equal(d->reject_lines[1], 10);
  assert_int_equal(d->n, 18);
  assert_int_equal(d->duplicates, 0);
  cr_dataset_free(d);
  free(data);

  /* Zero tolerance. */
  opt.max_reject_ratio = 0.0;
  data = build(20, bad_two_of_20, &len);
  assert_int_equal(load_(data, len, CR_ROLE_PROVIDER, &t, &opt, &d, &e), CR_EDATA);
  free(data);
}

static int bad_many(int i) { return i % 10 == 0 ? 1 + (i / 10) % 3 : 0; }

static void test_reject_lines_and_dedup(void **state) {
  (void)state;
  cr_template t;
  cr_dataset *d = NULL;
  cr_error e;
  size_t len;
  cr_dataset_options opt = {.max_reject_ratio = 0.2};
  make_template(&t);
  char *data = build(1000, bad_many, &len);
  assert_int_equal(load_(data, len, CR_ROLE_PROVIDER, &t, &opt, &d, &e), 0);
  assert_int_equal(d->rows_read, 1000);
  assert_int_equal(d->rows_rejected, 100);
  assert_int_equal(d->rows_accepted, 900);
  assert_int_equal(d->rejected[CR_REJECT_EMAIL] + d->rejected[CR_REJECT_MISSING] +
                       d->rejected[CR_REJECT_COLUMNS],
                   100);
  assert_true(d->rejected[CR_REJECT_COLUMNS] > 0);
  assert_int_equal(d->nreject_lines, CR_DATASET_MAX_REJECT_LINES);
  for (size_t i = 0; i < CR_DATASET_MAX_REJECT_LINES; i++)
    assert_int_equal(d->reject_lines[i], 10 * (i + 1) + 1);
  /* Good rows have keys i % 50, and every i with i % 10 == 0 is a bad row. */
  size_t distinct = 0;
  for (int k = 0; k < 50; k++)
    distinct += (k % 10) != 0;
  assert_int_equal(d->n, distinct);
  assert_int_equal(d->duplicates, 900 - distinct);
  /* The iterator gives each distinct key once. */
  fx_elems x = fx_elems_sorted(d);
  for (size_t i = 1; i < x.n; i++)
    assert_true(fx_elem_cmp(&x.e[i - 1], &x.e[i]) < 0);
  fx_elems_free(&x);
  cr_dataset_free(d);
  free(data);
}

static void test_missing_columns(void **state) {
  (void)state;
  cr_template t;
  cr_dataset *d = NULL;
  cr_error e;
  make_template(&t);

  assert_int_equal(
      LOAD("email,signup_year\nzed@example.com,2019\n", CR_ROLE_PROVIDER, &t, NULL, &d, &e),
      CR_EDATA);
  assert_non_null(strstr(e.msg, path));
  assert_non_null(strstr(e.msg, "\"segment\""));
  assert_non_null(strstr(e.msg, "provider"));
  assert_non_null(strstr(e.msg, "email, signup_year"));

  /* The consumer needs no segment. */
  assert_int_equal(
      LOAD("email,policy_type\nzed@example.com,home\n", CR_ROLE_CONSUMER, &t, NULL, &d, &e), 0);
  cr_dataset_free(d);
  d = NULL;

  /* Match-key column not among required_columns. */
  t.nrequired_columns[CR_ROLE_CONSUMER] = 0;
  assert_int_equal(
      LOAD("mail,policy_type\nzed@example.com,home\n", CR_ROLE_CONSUMER, &t, NULL, &d, &e),
      CR_EDATA);
  assert_non_null(strstr(e.msg, "\"email\""));
  assert_non_null(strstr(e.msg, "match key"));
  assert_non_null(strstr(e.msg, "mail, policy_type"));
}

/* A file without a header row: its first record must not be shown as the
 * "columns found". */
static void test_missing_header_row(void **state) {
  (void)state;
  static const char data[] = "zed@example.com,smart_home,+49 30 1234567,Zed Zedson\n"
                             "amy@example.com,video,+49 30 7654321,Amy Amison\n";
  cr_template t;
  cr_dataset *d = NULL;
  cr_error e;
  make_template(&t);
  assert_int_equal(LOAD(data, CR_ROLE_PROVIDER, &t, NULL, &d, &e), CR_EDATA);
  assert_no_cells(e.msg, data, sizeof data - 1, 0);
  assert_non_null(strstr(e.msg, "header row missing"));
}

static void test_duplicate_header(void **state) {
  (void)state;
  cr_template t;
  cr_dataset *d = NULL;
  cr_error e;
  make_template(&t);
  assert_int_equal(LOAD("email,segment,email\nzed@example.com,video,zed@example.com\n",
                        CR_ROLE_PROVIDER, &t, NULL, &d, &e),
                   CR_EDATA);
  assert_non_null(strstr(e.msg, "\"email\" twice"));
  assert_non_null(strstr(e.msg, "columns 1 and 3"));
  /* Unnamed columns may repeat (a trailing comma makes one). */
  assert_int_equal(
      LOAD("email,segment,,\nzed@example.com,video,,\n", CR_ROLE_PROVIDER, &t, NULL, &d, &e), 0);
  cr_dataset_free(d);
}

static void test_empty_and_all_rejected(void **state) {
  (void)state;
  cr_template t;
  cr_dataset *d = NULL;
  cr_error e;
  cr_dataset_options all = {.max_reject_ratio = 1.0};
  make_template(&t);
  assert_int_equal(LOAD("", CR_ROLE_PROVIDER, &t, NULL, &d, &e), CR_EDATA);
  assert_non_null(strstr(e.msg, "empty"));
  assert_int_equal(LOAD("\n\n", CR_ROLE_PROVIDER, &t, NULL, &d, &e), CR_EDATA);
  assert_int_equal(LOAD("email,segment\n", CR_ROLE_PROVIDER, &t, NULL, &d, &e), CR_EDATA);
  assert_non_null(strstr(e.msg, "no data rows"));
  assert_int_equal(
      LOAD("email,segment\nnobody-at-all,video\n,video\n", CR_ROLE_PROVIDER, &t, &all, &d, &e),
      CR_EDATA);
  assert_non_null(strstr(e.msg, "no row has a valid match key"));
  assert_non_null(strstr(e.msg, "missing_value 1, invalid_email 1"));
  assert_non_null(strstr(e.msg, "lines: 2, 3"));
}

/* A row the CSV reader cannot read is rejected and counted, with its line,
 * like a row whose key does not normalize: the rest of the file loads. */
static void test_csv_errors_propagate(void **state) {
  (void)state;
  cr_template t;
  cr_dataset *d = NULL;
  cr_error e;
  cr_dataset_options opt;
  cr_dataset_options_init(&opt);
  make_template(&t);
  /* Over the default ratio: refused, the message counting the reasons and
   * giving the line, never the bytes. */
  assert_int_equal(LOAD("email,segment\nzed@example.com,video\nsecret\xff@example.com,video\n",
                        CR_ROLE_PROVIDER, &t, NULL, &d, &e),
                   CR_EDATA);
  assert_non_null(strstr(e.msg, path));
  assert_non_null(strstr(e.msg, "invalid_encoding 1"));
  assert_non_null(strstr(e.msg, "first rejected lines: 3"));
  assert_non_null(strstr(e.msg, "UTF-8"));
  assert_null(strstr(e.msg, "secret"));
  /* Allowed by the ratio: the other rows load. */
  opt.max_reject_ratio = 0.5;
  assert_int_equal(LOAD("email,segment\nzed@example.com,video\nsecret\xff@example.com,video\n",
                        CR_ROLE_PROVIDER, &t, &opt, &d, &e),
                   0);
  assert_int_equal(d->rows_read, 2);
  assert_int_equal(d->rows_accepted, 1);
  assert_int_equal(d->rejected[CR_REJECT_ENCODING], 1);
  assert_int_equal(d->reject_lines[0], 3);
  cr_dataset_free(d);
  /* An unterminated quote costs its own line only: the reader goes back to
   * the line after it. */
  assert_int_equal(LOAD("email,segment\nzed@example.com,video\n\"secret@example.com,video\n"
                        "amy@example.com,alarm\n",
                        CR_ROLE_PROVIDER, &t, &opt, &d, &e),
                   0);
  assert_int_equal(d->rows_read, 3);
  assert_int_equal(d->rows_accepted, 2);
  assert_int_equal(d->rejected[CR_REJECT_MALFORMED], 1);
  assert_int_equal(d->reject_lines[0], 3);
  assert_int_equal(d->n, 2);
  cr_dataset_free(d);
}

static void test_bad_arguments(void **state) {
  (void)state;
  cr_template t;
  cr_dataset *d = NULL;
  cr_error e;
  cr_dataset_options opt;
  make_template(&t);
  write_file("email,segment\na@b.c,x\n", 22);
  assert_int_equal(cr_dataset_load(&d, "/nonexistent/x.csv", &t, CR_ROLE_PROVIDER, NULL, &e),
                   CR_EDATA);
  assert_non_null(strstr(e.msg, "/nonexistent/x.csv"));
  double bad[] = {-0.1, 1.5, NAN};
  for (int i = 0; i < 3; i++) {
    opt.max_reject_ratio = bad[i];
    assert_int_equal(cr_dataset_load(&d, path, &t, CR_ROLE_PROVIDER, &opt, &e), CR_EINVAL);
    assert_non_null(strstr(e.msg, "--max-reject-ratio"));
  }
  assert_int_equal(cr_dataset_load(&d, path, &t, (cr_role)7, NULL, &e), CR_EINVAL);
  assert_int_equal(cr_dataset_load(&d, path, NULL, CR_ROLE_PROVIDER, NULL, &e), CR_EINVAL);
  assert_null(d);
  /* A country code that is not 1-3 digits is the template's fault. */
  char *cols[] = {"email"};
  cr_normalizer ph[] = {CR_NORM_PHONE};
  t.match_key.columns = cols;
  t.match_key.normalize = ph;
  t.match_key.default_country_code = "x1";
  assert_int_equal(cr_dataset_load(&d, path, &t, CR_ROLE_PROVIDER, NULL, &e), CR_EINVAL);
  assert_non_null(strstr(e.msg, "default_country_code"));
  cr_dataset_free(NULL);
}

static void test_composite_phone(void **state) {
  (void)state;
  static const char data[] = "name,phone,zip\n"
                             "x,030 1234-5678, 10115\n"
                             "y,+49 30 12345678,10115 \n"
                             "z,(030) 12345678,80331\n"
                             "w,12,80331\n";
  char *cols[] = {"phone", "zip"};
  cr_normalizer chain[] = {CR_NORM_PHONE};
  cr_template t;
  cr_dataset *d = NULL;
  cr_error e;
  cr_dataset_options opt = {.max_reject_ratio = 0.25};
  make_template(&t);
  t.match_key.columns = cols;
  t.match_key.ncolumns = 2;
  t.match_key.normalize = chain;
  t.match_key.default_country_code = "49";
  t.nrequired_columns[CR_ROLE_CONSUMER] = 0;
  /* The zip goes through "phone" too, so it fails: a chain applies to every
   * column. Use text for a clean composite below. */
  assert_int_equal(LOAD(data, CR_ROLE_CONSUMER, &t, &opt, &d, &e), CR_EDATA);
  cr_normalizer chain2[] = {CR_NORM_TEXT};
  t.match_key.normalize = chain2;
  assert_int_equal(LOAD(data, CR_ROLE_CONSUMER, &t, &opt, &d, &e), 0);
  assert_int_equal(d->n, 4);
  assert_key(d, 0,
             "(030) 12345678\x1f"
             "80331");
  cr_dataset_free(d);
  d = NULL;

  char *one[] = {"phone"};
  t.match_key.columns = one;
  t.match_key.ncolumns = 1;
  t.match_key.normalize = chain;
  assert_int_equal(LOAD(data, CR_ROLE_CONSUMER, &t, &opt, &d, &e), 0);
  assert_int_equal(d->rows_accepted, 3);
  assert_int_equal(d->rejected[CR_REJECT_PHONE], 1);
  assert_int_equal(d->n, 1);
  assert_int_equal(d->duplicates, 2);
  assert_key(d, 0, "+493012345678");
  cr_dataset_free(d);
}

/* Larger than the reader's chunk, with key cells straddling chunk ends. */
static void test_large_file(void **state) {
  (void)state;
  cr_template t;
  cr_dataset *d = NULL;
  cr_error e;
  make_template(&t);
  FILE *f = fopen(path, "wb");
  assert_non_null(f);
  fputs("segment,email\n", f);
  for (int i = 0; i < 60000; i++)
    fprintf(f, "seg%d,\"  User%05d@Example.COM\"\n", i % 7, i % 40000);
  assert_int_equal(fclose(f), 0);
  assert_int_equal(cr_dataset_load(&d, path, &t, CR_ROLE_PROVIDER, NULL, &e), 0);
  assert_int_equal(d->rows_read, 60000);
  assert_int_equal(d->n, 40000);
  assert_int_equal(d->duplicates, 20000);
  assert_key(d, 0, "user00000@example.com");
  assert_key(d, 39999, "user39999@example.com");
  uint8_t h[CR_SHA256_BYTES];
  assert_int_equal(cr_sha256_file(h, path, &e), 0);
  assert_memory_equal(d->file_sha256, h, sizeof h);
  cr_dataset_free(d);
}

/* group_by: labels sorted, a key keeps its first row's label, a label met
 * only on duplicate rows is dropped. */
static void test_group_labels(void **state) {
  (void)state;
  cr_template t;
  cr_dataset *d = NULL;
  cr_error e;
  make_template(&t);
  const char *csv = "email,segment\n"
                    "a@x.example,video\n"
                    "b@x.example, alarm \n"
                    "A@x.example,smart\n"
                    "c@x.example,video\n";
  cr_dataset_options opt;
  cr_dataset_options_init(&opt);
  opt.group_column = "segment";
  assert_int_equal(load_(csv, strlen(csv), CR_ROLE_PROVIDER, &t, &opt, &d, &e), 0);
  assert_int_equal(d->n, 3);
  assert_int_equal(d->nlabels, 2);
  assert_string_equal(d->label_names[0], "alarm");
  assert_string_equal(d->label_names[1], "video");
  assert_int_equal(d->label_sizes[0], 1);
  assert_int_equal(d->label_sizes[1], 2);
  assert_int_equal(d->label_conflicts, 1);
  /* Each key's label, its first row's, whatever the order. */
  fx_elems x = fx_elems_read(d);
  assert_int_equal(fx_elems_find(&x, "a@x.example")->label, 1);
  assert_int_equal(fx_elems_find(&x, "b@x.example")->label, 0);
  assert_int_equal(fx_elems_find(&x, "c@x.example")->label, 1);
  fx_elems_free(&x);
  cr_dataset_free(d);
  d = NULL;
  opt.group_column = "region";
  assert_int_equal(load_(csv, strlen(csv), CR_ROLE_PROVIDER, &t, &opt, &d, &e), CR_EDATA);
  assert_non_null(strstr(e.msg, "region"));
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_load_ok),
      cmocka_unit_test(test_group_labels),
      cmocka_unit_test(test_reject_ratio),
      cmocka_unit_test(test_reject_lines_and_dedup),
      cmocka_unit_test(test_missing_columns),
      cmocka_unit_test(test_missing_header_row),
      cmocka_unit_test(test_duplicate_header),
      cmocka_unit_test(test_empty_and_all_rejected),
      cmocka_unit_test(test_csv_errors_propagate),
      cmocka_unit_test(test_bad_arguments),
      cmocka_unit_test(test_composite_phone),
      cmocka_unit_test(test_large_file),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}
