/*
 * Row sources (issue 16): CSV dialects (separator detected or given, BOM,
 * CRLF, header names in any case and spacing), malformed rows rejected and
 * counted with their line instead of refusing the file, files that are not
 * CSV named for what they look like, the SQLite source (read-only, one
 * reading statement, NULLs, hash, members), what the PostgreSQL source
 * refuses before connecting, per-party key columns, masked samples and the
 * dry run. The PostgreSQL source against a real server is in
 * tests/e2e/test_datasources.sh.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sqlite3.h>

#include "cleanroom/dataset.h"
#include "support/dataset_fixture.h"
#include "support/dsiter.h"

static char tmpdir[64];
static char path[160];
static char dbpath[160];

static int setup(void **state) {
  (void)state;
  snprintf(tmpdir, sizeof tmpdir, "/tmp/cr_test_source_XXXXXX");
  if (mkdtemp(tmpdir) == NULL)
    return -1;
  snprintf(path, sizeof path, "%s/data.csv", tmpdir);
  snprintf(dbpath, sizeof dbpath, "%s/data.db", tmpdir);
  return 0;
}

static int teardown(void **state) {
  (void)state;
  unlink(path);
  unlink(dbpath);
  rmdir(tmpdir);
  return 0;
}

static void write_file(const char *data, size_t len) { write_file_at(path, data, len); }

static int load_csv(const char *data, size_t len, const cr_template *t, cr_role role,
                    const cr_dataset_options *opt, cr_dataset **d, cr_error *e) {
  write_file(data, len);
  cr_error_clear(e);
  return cr_dataset_load(d, path, t, role, opt, e);
}
#define LOAD(lit, t, role, opt, d, e) load_csv(lit, sizeof(lit) - 1, t, role, opt, d, e)

/* The i-th of d's elements in bytewise order (whatever the send order). */
static void assert_key(const cr_dataset *d, size_t i, const char *want) {
  assert_true(i < d->n);
  fx_elems x = fx_elems_sorted(d);
  assert_int_equal(x.e[i].len, strlen(want));
  assert_memory_equal(x.e[i].key, want, strlen(want));
  fx_elems_free(&x);
}

/* ---- CSV dialects ---------------------------------------------------------- */

static void test_delimiters_detected(void **state) {
  (void)state;
  cr_template t;
  cr_dataset *d = NULL;
  cr_error e;
  make_template(&t);
  static const struct {
    const char *data;
    char delim;
  } cases[] = {
      {"email,segment\na@x.org,video\nb@x.org,alarm\n", ','},
      {"email;segment\na@x.org;video\nb@x.org;alarm\n", ';'},
      {"email\tsegment\na@x.org\tvideo\nb@x.org\talarm\n", '\t'},
      {"email|segment\na@x.org|video\nb@x.org|alarm\n", '|'},
      /* A comma inside a ;-separated field: ';' is the one every line has
       * as often as the header. */
      {"email;segment\na@x.org;\"video, hd\"\nb@x.org;alarm, basic\n", ';'},
      /* Excel's German export: BOM, ';', CRLF. */
      {"\xef\xbb\xbf"
       "email;segment\r\na@x.org;video\r\nb@x.org;alarm\r\n",
       ';'},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    assert_int_equal(
        load_csv(cases[i].data, strlen(cases[i].data), &t, CR_ROLE_PROVIDER, NULL, &d, &e), 0);
    assert_int_equal(d->delimiter, cases[i].delim);
    assert_int_equal(d->rows_accepted, 2);
    assert_int_equal(d->n, 2);
    assert_key(d, 0, "a@x.org");
    assert_string_equal(d->columns[1], "segment");
    cr_dataset_free(d);
  }
}

static void test_delimiter_given(void **state) {
  (void)state;
  cr_template t;
  cr_dataset *d = NULL;
  cr_error e;
  cr_dataset_options opt;
  make_template(&t);
  cr_dataset_options_init(&opt);
  /* The header alone would suggest ',' (one comma), the partner says ';'. */
  opt.delimiter = ';';
  assert_int_equal(LOAD("email;segment,x\na@x.org;video,1\n", &t, CR_ROLE_CONSUMER, &opt, &d, &e),
                   0);
  assert_int_equal(d->delimiter, ';');
  assert_string_equal(d->columns[1], "segment,x");
  cr_dataset_free(d);
  /* Forced ',' on a ;-file: one column, and the error says what it found. */
  opt.delimiter = ',';
  assert_int_equal(LOAD("email;segment\na@x.org;video\n", &t, CR_ROLE_PROVIDER, &opt, &d, &e),
                   CR_EDATA);
  assert_non_null(strstr(e.msg, "missing column \"email\""));
  opt.delimiter = ':';
  assert_int_equal(LOAD("email\na@x.org\n", &t, CR_ROLE_CONSUMER, &opt, &d, &e), CR_EUSAGE);
  assert_non_null(strstr(e.msg, "delimiter"));
}

static void test_header_case_and_spaces(void **state) {
  (void)state;
  cr_template t;
  cr_dataset *d = NULL;
  cr_error e;
  make_template(&t);
  assert_int_equal(LOAD("\xef\xbb\xbf  EMAIL ;\tSegment \r\n x@y.org ;video\r\n", &t,
                        CR_ROLE_PROVIDER, NULL, &d, &e),
                   0);
  assert_key(d, 0, "x@y.org");
  assert_string_equal(d->columns[0], "EMAIL"); /* as written, trimmed */
  cr_dataset_free(d);
  /* Two columns differing only in case are the same column. */
  assert_int_equal(
      LOAD("email,segment,Email\na@x.org,v,b@x.org\n", &t, CR_ROLE_PROVIDER, NULL, &d, &e),
      CR_EDATA);
  assert_non_null(strstr(e.msg, "twice"));
  /* group_by and filters find their columns in any case too. */
  cr_dataset_options opt;
  cr_dataset_options_init(&opt);
  opt.group_column = "SEGMENT";
  cr_filter *f = NULL;
  cr_param_decl none[1];
  assert_int_equal(cr_filter_parse(&f, "Segment = 'video'", none, 0, "q", &e), 0);
  opt.filter = f;
  assert_int_equal(LOAD("Email,segment\na@x.org,video\nb@x.org,alarm\nc@x.org,video\n", &t,
                        CR_ROLE_PROVIDER, &opt, &d, &e),
                   0);
  assert_int_equal(d->rows_filtered, 1);
  assert_int_equal(d->n, 2);
  assert_int_equal(d->nlabels, 1);
  assert_string_equal(d->label_names[0], "video");
  cr_dataset_free(d);
  cr_filter_free(f);
}

/* ---- Malformed rows ---------------------------------------------------------- */

static void test_malformed_rows_counted(void **state) {
  (void)state;
  cr_template t;
  cr_dataset *d = NULL;
  cr_error e;
  cr_dataset_options opt;
  make_template(&t);
  cr_dataset_options_init(&opt);
  opt.max_reject_ratio = 1.0;
  static const char data[] = "email,segment\n"
                             "a@x.org,video\n"          /* 2 */
                             "bo\"b@x.org,video\n"      /* 3: quote in unquoted field */
                             "c@x.org,\"video\"hd\n"    /* 4: text after closing quote */
                             "d@x.org,video,extra\n"    /* 5: field count */
                             "\"e@x.org,video\n"        /* 6: quote never closed here... */
                             "f@x.org,video\n"          /* 7: ...read again from here */
                             "g@x.org,\"two\nlines\"\n" /* 8-9: a real multi-line field */
                             "h\xc3@x.org,video\n"      /* 10: not UTF-8 */
                             "i@x.org,\"x\" ,\"y\"\n"   /* 11: text after closing quote */
                             "j@x.org,video\n";         /* 12 */
  assert_int_equal(LOAD(data, &t, CR_ROLE_PROVIDER, &opt, &d, &e), 0);
  assert_int_equal(d->rows_read, 10);
  assert_int_equal(d->rows_accepted, 4); /* a, f, g, j */
  assert_int_equal(d->rejected[CR_REJECT_MALFORMED], 4);
  assert_int_equal(d->rejected[CR_REJECT_COLUMNS], 1);
  assert_int_equal(d->rejected[CR_REJECT_ENCODING], 1);
  assert_int_equal(d->nreject_lines, 5);
  static const uint64_t want[] = {3, 4, 5, 6, 10};
  for (size_t i = 0; i < 5; i++)
    assert_int_equal(d->reject_lines[i], want[i]);
  assert_int_equal(d->n, 4);
  assert_key(d, 0, "a@x.org");
  assert_key(d, 1, "f@x.org");
  assert_key(d, 2, "g@x.org");
  assert_key(d, 3, "j@x.org");
  cr_dataset_free(d);

  /* At the default ratio the same file is refused, with the reasons and
   * the lines, and none of the rows' text. */
  assert_int_equal(LOAD(data, &t, CR_ROLE_PROVIDER, NULL, &d, &e), CR_EDATA);
  assert_non_null(strstr(e.msg, "malformed_row 4"));
  assert_non_null(strstr(e.msg, "wrong_column_count 1"));
  assert_non_null(strstr(e.msg, "first rejected lines: 3, 4, 5, 6, 10"));
  assert_null(strstr(e.msg, "x.org"));
}

/* A stray opening quote near the top does not swallow the file, even when
 * the file is larger than the reader's chunk (the reader seeks back). */
static void test_stray_quote_large_file(void **state) {
  (void)state;
  cr_template t;
  cr_dataset *d = NULL;
  cr_error e;
  cr_dataset_options opt;
  make_template(&t);
  cr_dataset_options_init(&opt);
  cr_buf b;
  cr_buf_init(&b);
  assert_int_equal(cr_buf_append(&b, "email,segment\n\"broken@x.org,video\n", 34), 0);
  char line[64];
  for (int i = 0; i < 20000; i++) {
    int n = snprintf(line, sizeof line, "user%d@example.com,seg%d\n", i, i % 3);
    assert_int_equal(cr_buf_append(&b, line, (size_t)n), 0);
  }
  assert_int_equal(load_csv((const char *)b.data, b.len, &t, CR_ROLE_PROVIDER, &opt, &d, &e), 0);
  assert_int_equal(d->rows_read, 20001);
  assert_int_equal(d->rows_rejected, 1);
  assert_int_equal(d->rejected[CR_REJECT_MALFORMED], 1);
  assert_int_equal(d->reject_lines[0], 2);
  assert_int_equal(d->n, 20000);
  /* The hash is that of the file, each byte once, though some were read
   * twice. */
  uint8_t want[CR_SHA256_BYTES];
  cr_sha256(want, b.data, b.len);
  assert_memory_equal(d->file_sha256, want, sizeof want);
  cr_dataset_free(d);
  cr_buf_free(&b);
}

static void test_csv_reader_recover(void **state) {
  (void)state;
  cr_csv *r = NULL;
  cr_error e;
  const char *const *f;
  const size_t *l;
  size_t nf;
  uint64_t line;
  static const char data[] = "a;b\r\n\"x;y\r\n1;\"2\"\r\nq\"r;s\r\n3;4";
  assert_int_equal(cr_csv_open_mem(&r, data, sizeof data - 1, "t.csv"), 0);
  cr_csv_set_recover(r, 1);
  char delim = 0;
  assert_int_equal(cr_csv_detect_delimiter(r, &delim, &e), 0);
  assert_int_equal(delim, ';');
  assert_int_equal(cr_csv_next(r, &f, &l, &nf, &line, &e), 1);
  assert_int_equal(cr_csv_next(r, &f, &l, &nf, &line, &e), CR_CSV_MALFORMED);
  assert_int_equal(line, 2);
  assert_int_equal(cr_csv_last_reject(r), CR_REJECT_MALFORMED);
  assert_non_null(strstr(e.msg, "t.csv"));
  assert_int_equal(cr_csv_next(r, &f, &l, &nf, &line, &e), 1);
  assert_int_equal(line, 3);
  assert_string_equal(f[1], "2");
  assert_int_equal(cr_csv_next(r, &f, &l, &nf, &line, &e), CR_CSV_MALFORMED);
  assert_int_equal(line, 4);
  assert_int_equal(cr_csv_next(r, &f, &l, &nf, &line, &e), 1);
  assert_int_equal(line, 5);
  assert_string_equal(f[0], "3");
  assert_int_equal(cr_csv_next(r, &f, &l, &nf, &line, &e), 0);
  cr_csv_free(r);

  /* Strict mode (the default) still stops at the first bad record. */
  assert_int_equal(cr_csv_open_mem(&r, data, sizeof data - 1, "t.csv"), 0);
  assert_int_equal(cr_csv_set_delimiter(r, ';'), 0);
  assert_int_equal(cr_csv_set_delimiter(r, 'x'), CR_EINVAL);
  assert_int_equal(cr_csv_next(r, &f, &l, &nf, &line, &e), 1);
  assert_int_equal(cr_csv_next(r, &f, &l, &nf, &line, &e), CR_EDATA);
  cr_csv_free(r);
}

/* ---- Files that are not CSV -------------------------------------------------- */

static void test_not_csv(void **state) {
  (void)state;
  cr_template t;
  cr_dataset *d = NULL;
  cr_error e;
  make_template(&t);
  static const struct {
    const char *bytes;
    size_t len;
    const char *name;
    const char *says;
  } cases[] = {
      {"PK\x03\x04\x14\x00\x06\x00junk", 12, "customers.xlsx", "Excel workbook (.xlsx"},
      {"PK\x03\x04\x14\x00\x06\x00junk", 12, "customers.csv", "ZIP archive"},
      {"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1xx", 10, "old.xls", ".xls"},
      {"\x1f\x8b\x08\x00\x00\x00", 6, "data.csv.gz", "gzip"},
      {"BZh91AY", 7, "data.csv.bz2", "bzip2"},
      {"\xfd"
       "7zXZ\x00\x00",
       7, "data.csv.xz", "xz"},
      {"%PDF-1.7\n", 9, "report.pdf", "PDF"},
      {"\xff\xfe"
       "e\0m\0a\0i\0l\0\n\0",
       14, "unicode.txt", "UTF-16"},
      {"e\0m\0a\0i\0l\0,\0s\0e\0g\0\n\0a\0@\0b\0", 26, "nobom.csv", "UTF-16 text without"},
      {"\xef\xbb\xbf"
       "email\nab\0cd\n",
       15, "nul.csv", "NUL"},
      {"SQLite format 3\0\x10\x00", 18, "data.db", "sqlite:PATH"},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    char p2[200];
    snprintf(p2, sizeof p2, "%s/%s", tmpdir, cases[i].name);
    FILE *f = fopen(p2, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(cases[i].bytes, 1, cases[i].len, f), cases[i].len);
    fclose(f);
    cr_error_clear(&e);
    assert_int_equal(cr_dataset_load(&d, p2, &t, CR_ROLE_CONSUMER, NULL, &e), CR_EDATA);
    assert_null(d);
    if (strstr(e.msg, cases[i].says) == NULL)
      fail_msg("%s: expected \"%s\" in: %s", cases[i].name, cases[i].says, e.msg);
    assert_non_null(strstr(e.msg, "not a CSV file"));
    assert_non_null(strstr(e.msg, p2));
    unlink(p2);
  }
  /* A directory, a missing file. */
  assert_int_equal(cr_dataset_load(&d, tmpdir, &t, CR_ROLE_CONSUMER, NULL, &e), CR_EDATA);
  assert_non_null(strstr(e.msg, "directory"));
  /* A query for a CSV is a misuse. */
  cr_dataset_options opt;
  cr_dataset_options_init(&opt);
  opt.data_query = "SELECT email FROM t";
  assert_int_equal(LOAD("email\na@b.org\n", &t, CR_ROLE_CONSUMER, &opt, &d, &e), CR_EUSAGE);
  assert_non_null(strstr(e.msg, "database"));
}

/* ---- SQLite ---------------------------------------------------------------- */

static void sql(sqlite3 *db, const char *s) {
  char *msg = NULL;
  if (sqlite3_exec(db, s, NULL, NULL, &msg) != SQLITE_OK)
    fail_msg("sqlite: %s: %s", s, msg ? msg : "?");
}

static void make_db(void) {
  sqlite3 *db = NULL;
  unlink(dbpath);
  assert_int_equal(sqlite3_open(dbpath, &db), SQLITE_OK);
  sql(db,
      "CREATE TABLE customers (id INTEGER PRIMARY KEY, mail TEXT, seg TEXT, age INTEGER);"
      "INSERT INTO customers (mail, seg, age) VALUES"
      " (' Alice@Example.com ', 'video', 34), ('bob@example.com', 'alarm', 51),"
      " ('carol@example.com', 'video', NULL), (NULL, 'video', 20),"
      " ('not-an-email', 'alarm', 40), ('alice@example.com', 'alarm', 34);"
      "INSERT INTO customers (mail, seg, age) VALUES (CAST(x'64ff40782e6f7267' AS TEXT), 'v', 1);");
  sqlite3_close(db);
}

static void sqlite_data(char *buf, size_t cap) { snprintf(buf, cap, "sqlite:%s", dbpath); }

static void test_sqlite_source(void **state) {
  (void)state;
  cr_template t;
  cr_dataset *d = NULL;
  cr_error e;
  cr_dataset_options opt;
  char data[200];
  make_template(&t);
  make_db();
  sqlite_data(data, sizeof data);
  struct stat before, after;
  assert_int_equal(stat(dbpath, &before), 0);

  cr_dataset_options_init(&opt);
  opt.max_reject_ratio = 1.0;
  opt.data_query = "SELECT mail AS Email, seg AS segment, age FROM customers ORDER BY id;";
  assert_int_equal(cr_dataset_load(&d, data, &t, CR_ROLE_PROVIDER, &opt, &e), 0);
  assert_int_equal(d->source_kind, CR_SOURCE_SQLITE);
  assert_string_equal(d->pos_unit, "row");
  assert_int_equal(d->rows_read, 7);
  assert_int_equal(d->rows_accepted, 4);
  assert_int_equal(d->rejected[CR_REJECT_MISSING], 1); /* the NULL */
  assert_int_equal(d->rejected[CR_REJECT_EMAIL], 1);
  assert_int_equal(d->rejected[CR_REJECT_ENCODING], 1); /* the blob that is not UTF-8 */
  assert_int_equal(d->reject_lines[0], 4);
  assert_int_equal(d->reject_lines[1], 5);
  assert_int_equal(d->reject_lines[2], 7);
  assert_int_equal(d->n, 3);
  assert_int_equal(d->duplicates, 1);
  assert_key(d, 0, "alice@example.com");
  assert_int_equal(d->ncolumns, 3);
  assert_string_equal(d->columns[2], "age");
  uint8_t h1[CR_SHA256_BYTES];
  memcpy(h1, d->file_sha256, sizeof h1);
  cr_dataset_free(d);

  /* The same rows hash the same; one changed value does not. */
  assert_int_equal(cr_dataset_load(&d, data, &t, CR_ROLE_PROVIDER, &opt, &e), 0);
  assert_memory_equal(d->file_sha256, h1, sizeof h1);
  cr_dataset_free(d);

  /* A filter and group_by over query columns, as over a CSV header. */
  cr_filter *f = NULL;
  assert_int_equal(cr_filter_parse(&f, "age >= 30", NULL, 0, "q", &e), 0);
  opt.filter = f;
  opt.group_column = "segment";
  assert_int_equal(cr_dataset_load(&d, data, &t, CR_ROLE_PROVIDER, &opt, &e), 0);
  assert_int_equal(d->rows_filtered, 2); /* NULL age, 20 (the blob's row is malformed first) */
  assert_int_equal(d->nlabels, 2);
  cr_dataset_free(d);
  cr_filter_free(f);
  opt.filter = NULL;
  opt.group_column = NULL;

  /* Never written: the file is as it was. */
  assert_int_equal(stat(dbpath, &after), 0);
  assert_int_equal(before.st_size, after.st_size);
  assert_int_equal(before.st_mtime, after.st_mtime);
}

static void test_sqlite_refusals(void **state) {
  (void)state;
  cr_template t;
  cr_dataset *d = NULL;
  cr_error e;
  cr_dataset_options opt;
  char data[200];
  make_template(&t);
  make_db();
  sqlite_data(data, sizeof data);
  cr_dataset_options_init(&opt);
  static const struct {
    const char *query;
    int rc;
    const char *says;
  } cases[] = {
      {NULL, CR_EUSAGE, "needs a data query"},
      {"DELETE FROM customers", CR_EUSAGE, "would change the database"},
      {"SELECT mail AS email FROM customers; DELETE FROM customers", CR_EUSAGE,
       "more than one statement"},
      /* SQLite counts ATTACH as read-only; it returns no rows, so it is
       * refused (and never stepped, so no file is created). */
      {"ATTACH DATABASE '/tmp/cr_never.db' AS x", CR_EUSAGE, "no columns"},
      {"SELECT nope FROM customers", CR_EDATA, "no such column"},
      {"SELECT mail FROM customers", CR_EDATA, "missing column \"email\""},
      {"SELECT mail AS email, seg AS email FROM customers", CR_EDATA, "twice"},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    opt.data_query = cases[i].query;
    cr_error_clear(&e);
    assert_int_equal(cr_dataset_load(&d, data, &t, CR_ROLE_CONSUMER, &opt, &e), cases[i].rc);
    if (strstr(e.msg, cases[i].says) == NULL)
      fail_msg("query %zu: expected \"%s\" in: %s", i, cases[i].says, e.msg);
  }
  assert_int_equal(access("/tmp/cr_never.db", F_OK), -1);
  /* Still all rows there. */
  sqlite3 *db = NULL;
  sqlite3_stmt *st = NULL;
  assert_int_equal(sqlite3_open(dbpath, &db), SQLITE_OK);
  assert_int_equal(sqlite3_prepare_v2(db, "SELECT count(*) FROM customers", -1, &st, NULL), 0);
  assert_int_equal(sqlite3_step(st), SQLITE_ROW);
  assert_int_equal(sqlite3_column_int(st, 0), 7);
  sqlite3_finalize(st);
  sqlite3_close(db);

  /* A file that is not there is not created. */
  char missing[220];
  snprintf(missing, sizeof missing, "sqlite:%s/none.db", tmpdir);
  opt.data_query = "SELECT 1 AS email";
  assert_int_equal(cr_dataset_load(&d, missing, &t, CR_ROLE_CONSUMER, &opt, &e), CR_EDATA);
  assert_non_null(strstr(e.msg, "No such file"));
  snprintf(missing, sizeof missing, "%s/none.db", tmpdir);
  assert_int_equal(access(missing, F_OK), -1);
  /* A delimiter is for CSV. */
  opt.delimiter = ';';
  assert_int_equal(cr_dataset_load(&d, data, &t, CR_ROLE_CONSUMER, &opt, &e), CR_EUSAGE);
}

static void test_sqlite_members(void **state) {
  (void)state;
  cr_template t;
  cr_dataset *d = NULL;
  cr_error e;
  cr_dataset_options opt;
  char data[200], out[200];
  make_template(&t);
  make_db();
  sqlite_data(data, sizeof data);
  cr_dataset_options_init(&opt);
  opt.max_reject_ratio = 1.0;
  opt.data_query = "SELECT id, mail AS email, seg AS segment FROM customers ORDER BY id";
  assert_int_equal(cr_dataset_load(&d, data, &t, CR_ROLE_CONSUMER, &opt, &e), 0);
  fx_elems x = fx_elems_read(d);
  const fx_elem *ae = fx_elems_find(&x, "alice@example.com");
  assert_non_null(ae);
  size_t alice = ae->at; /* bit j: the iterator's j-th element */
  fx_elems_free(&x);
  uint8_t matched[8] = {0};
  matched[alice / 8] |= (uint8_t)(1u << (alice % 8));
  snprintf(out, sizeof out, "%s/out.csv", tmpdir);
  cr_atomic_file af;
  uint64_t rows = 0;
  const char *cols[] = {"ID", "segment"};
  assert_int_equal(cr_atomic_open(&af, out, 0600, &e), 0);
  assert_int_equal(
      cr_dataset_write_matches(d, &t, matched, NULL, cols, 2, NULL, NULL, &af, &rows, NULL, &e), 0);
  assert_int_equal(cr_atomic_commit(&af, &e), 0);
  assert_int_equal(rows, 2); /* both rows of alice */
  FILE *f = fopen(out, "rb");
  char buf[256] = {0};
  assert_non_null(f);
  size_t n = fread(buf, 1, sizeof buf - 1, f);
  fclose(f);
  buf[n] = '\0';
  /* The source's own names head the file, whatever case the template uses. */
  assert_string_equal(buf, "id,segment\r\n1,video\r\n6,alarm\r\n");
  unlink(out);

  /* The table changed between loading and writing: nothing is kept. */
  sqlite3 *db = NULL;
  assert_int_equal(sqlite3_open(dbpath, &db), SQLITE_OK);
  sql(db, "UPDATE customers SET seg = 'gone' WHERE id = 2");
  sqlite3_close(db);
  assert_int_equal(cr_atomic_open(&af, out, 0600, &e), 0);
  assert_int_equal(
      cr_dataset_write_matches(d, &t, matched, NULL, cols, 2, NULL, NULL, &af, &rows, NULL, &e),
      CR_EDATA);
  cr_atomic_abort(&af);
  assert_non_null(strstr(e.msg, "changed since it was loaded"));
  assert_int_equal(access(out, F_OK), -1);
  cr_dataset_free(d);
}

/* ---- PostgreSQL: what is refused before connecting -------------------------- */

static void test_pg_refusals(void **state) {
  (void)state;
  cr_template t;
  cr_dataset *d = NULL;
  cr_error e;
  cr_dataset_options opt;
  make_template(&t);
  cr_dataset_options_init(&opt);
  opt.data_query = "SELECT email FROM customers";
  static const char *const with_password[] = {
      "postgresql://alice:s3cretPW@db.example/crm",
      "postgres://alice:s3cretPW@db.example:5432/crm?sslmode=require",
      "postgresql://alice@db.example/crm?password=s3cretPW",
  };
  for (size_t i = 0; i < 3; i++) {
    cr_error_clear(&e);
    assert_int_equal(cr_dataset_load(&d, with_password[i], &t, CR_ROLE_CONSUMER, &opt, &e),
                     CR_EUSAGE);
    assert_null(strstr(e.msg, "s3cretPW"));
    assert_non_null(strstr(e.msg, "PGPASSWORD"));
    assert_non_null(strstr(e.msg, ".pgpass"));
  }
  assert_int_equal(cr_source_kind_of("postgresql://x/y"), CR_SOURCE_POSTGRESQL);
  assert_int_equal(cr_source_kind_of("POSTGRES://x/y"), CR_SOURCE_POSTGRESQL);
  assert_int_equal(cr_source_kind_of("sqlite:/x.db"), CR_SOURCE_SQLITE);
  assert_int_equal(cr_source_kind_of("./sqlite:x"), CR_SOURCE_CSV);
  assert_int_equal(cr_source_kind_of("data.csv"), CR_SOURCE_CSV);
  /* No query: refused before connecting. */
  opt.data_query = NULL;
  assert_int_equal(cr_dataset_load(&d, "postgresql:///crm", &t, CR_ROLE_CONSUMER, &opt, &e),
                   CR_EUSAGE);
  assert_non_null(strstr(e.msg, "--data-query"));
  /* A server that is not there: a data error naming the source. */
  char uri[256];
  snprintf(uri, sizeof uri, "postgresql:///crm?host=%s&port=1&connect_timeout=2", tmpdir);
  opt.data_query = "SELECT 1 AS email";
  assert_int_equal(cr_dataset_load(&d, uri, &t, CR_ROLE_CONSUMER, &opt, &e), CR_EDATA);
  assert_non_null(strstr(e.msg, "cannot connect"));
  assert_non_null(strstr(e.msg, uri));
  assert_int_equal(cr_dataset_load(&d, "postgresql://a:b:c@[", &t, CR_ROLE_CONSUMER, &opt, &e),
                   CR_EUSAGE);
}

/* ---- Per-party key columns ----------------------------------------------------- */

static void test_per_party_columns(void **state) {
  (void)state;
  cr_template t;
  cr_dataset *d = NULL;
  cr_error e;
  static char *prov[] = {"mobil"}, *cons[] = {"phone_number"};
  static char *preq[] = {"mobil"}, *creq[] = {"phone_number"};
  static cr_normalizer phone[] = {CR_NORM_PHONE};
  make_template(&t);
  t.match_key.name = "phone";
  t.match_key.columns = NULL;
  t.match_key.party_columns[CR_ROLE_PROVIDER] = prov;
  t.match_key.party_columns[CR_ROLE_CONSUMER] = cons;
  t.match_key.normalize = phone;
  t.match_key.default_country_code = "49";
  t.required_columns[CR_ROLE_PROVIDER] = preq;
  t.nrequired_columns[CR_ROLE_PROVIDER] = 1;
  t.required_columns[CR_ROLE_CONSUMER] = creq;
  t.nrequired_columns[CR_ROLE_CONSUMER] = 1;
  assert_int_equal(LOAD("Name;Mobil\nA;+49 (0)151 2345 6789\nB;0151 9876543\n", &t,
                        CR_ROLE_PROVIDER, NULL, &d, &e),
                   0);
  assert_int_equal(d->n, 2);
  assert_key(d, 0, "+4915123456789");
  cr_dataset_free(d);
  assert_int_equal(LOAD("phone_number\n+4915123456789\n", &t, CR_ROLE_CONSUMER, NULL, &d, &e), 0);
  assert_key(d, 0, "+4915123456789");
  cr_dataset_free(d);
  /* Each side needs its own name. */
  assert_int_equal(LOAD("mobil\n+4915123456789\n", &t, CR_ROLE_CONSUMER, NULL, &d, &e), CR_EDATA);
  assert_non_null(strstr(e.msg, "missing column \"phone_number\""));
}

/* ---- Masked samples and the dry run ------------------------------------------ */

static void test_mask_key(void **state) {
  (void)state;
  char out[64];
  cr_dataset_mask_key((const uint8_t *)"alice@example.com", 17, out, sizeof out);
  assert_string_equal(out, "a\xe2\x80\xa6m");
  cr_dataset_mask_key((const uint8_t *)"+4915123456789", 14, out, sizeof out);
  assert_string_equal(out, "+\xe2\x80\xa6"
                           "9");
  cr_dataset_mask_key((const uint8_t *)"j\xc3\xb6rg@x.de", 10, out, sizeof out);
  assert_string_equal(out, "j\xe2\x80\xa6"
                           "e");
  cr_dataset_mask_key((const uint8_t *)"\xc3\xb6rjan\xc3\xa9", 8, out, sizeof out);
  assert_string_equal(out, "\xc3\xb6\xe2\x80\xa6\xc3\xa9");
  cr_dataset_mask_key((const uint8_t *)"abcd", 4, out, sizeof out);
  assert_string_equal(out, "a\xe2\x80\xa6");
  cr_dataset_mask_key((const uint8_t *)"ab", 2, out, sizeof out);
  assert_string_equal(out, "\xe2\x80\xa6");
  cr_dataset_mask_key((const uint8_t *)"smith\x1f"
                                       "1980-01-02",
                      16, out, sizeof out);
  assert_string_equal(out, "s\xe2\x80\xa6h | 1\xe2\x80\xa6"
                           "2");
  cr_dataset_mask_key((const uint8_t *)"alice@example.com", 17, out, 4);
  assert_string_equal(out, ""); /* no room: nothing, never a cut key */
}

static void test_dry_run(void **state) {
  (void)state;
  cr_template t;
  cr_dataset *d = NULL;
  cr_error e;
  cr_dataset_options opt;
  make_template(&t);
  cr_dataset_options_init(&opt);
  opt.dry_run = 1;
  opt.samples = 3;
  static const char data[] = "email,segment\nAlice@Example.com,video\nnope,video\nzed@x.org,a\n"
                             "bob@y.org,a\nbad,a\n";
  assert_int_equal(LOAD(data, &t, CR_ROLE_PROVIDER, &opt, &d, &e), 0);
  assert_int_equal(d->refusal_rc, CR_EDATA); /* 2 of 5 rejected: a real run refuses */
  assert_non_null(strstr(d->refusal, "2 of 5 data rows rejected"));
  assert_int_equal(d->nsamples, 3);
  assert_string_equal(d->samples[0], "a\xe2\x80\xa6m");
  assert_int_equal(d->sample_pos[0], 2);
  assert_int_equal(d->sample_pos[1], 4);
  for (size_t i = 0; i < d->nsamples; i++) {
    assert_null(strstr(d->samples[i], "alice"));
    assert_null(strstr(d->samples[i], "example"));
  }
  cr_dataset_free(d);
  /* Nothing accepted: a dry run still reports, with no keys. */
  assert_int_equal(LOAD("email,segment\nnope,video\n", &t, CR_ROLE_PROVIDER, &opt, &d, &e), 0);
  assert_int_equal(d->refusal_rc, CR_EDATA);
  assert_int_equal(d->n, 0);
  assert_int_equal(d->nsamples, 0);
  cr_dataset_free(d);
  /* Without dry_run the same fails. */
  opt.dry_run = 0;
  assert_int_equal(LOAD(data, &t, CR_ROLE_PROVIDER, &opt, &d, &e), CR_EDATA);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_delimiters_detected),
      cmocka_unit_test(test_delimiter_given),
      cmocka_unit_test(test_header_case_and_spaces),
      cmocka_unit_test(test_malformed_rows_counted),
      cmocka_unit_test(test_stray_quote_large_file),
      cmocka_unit_test(test_csv_reader_recover),
      cmocka_unit_test(test_not_csv),
      cmocka_unit_test(test_sqlite_source),
      cmocka_unit_test(test_sqlite_refusals),
      cmocka_unit_test(test_sqlite_members),
      cmocka_unit_test(test_pg_refusals),
      cmocka_unit_test(test_per_party_columns),
      cmocka_unit_test(test_mask_key),
      cmocka_unit_test(test_dry_run),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}
