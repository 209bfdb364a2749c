/* CSV reader: RFC 4180 cases, the accepted extensions, every refusal (with
 * its line number, and without the data in the message), limits, streams. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cleanroom/dataset.h"

/* Up to 8 records of up to 8 fields, copied out of the reader. */
typedef struct rows {
  size_t n;
  size_t nf[8];
  char *f[8][8];
  size_t len[8][8];
  uint64_t line[8];
} rows;

static void rows_free(rows *r) {
  for (size_t i = 0; i < r->n; i++)
    for (size_t j = 0; j < r->nf[i] && j < 8; j++)
      free(r->f[i][j]);
  memset(r, 0, sizeof *r);
}

/* Reads all of data; returns the reader's final code (0 at a clean end). */
static int read_all(const char *data, size_t len, rows *out, cr_error *err) {
  cr_csv *r = NULL;
  memset(out, 0, sizeof *out);
  assert_int_equal(cr_csv_open_mem(&r, data, len, "t.csv"), 0);
  int rc;
  for (;;) {
    const char *const *f;
    const size_t *l;
    size_t nf;
    uint64_t line;
    rc = cr_csv_next(r, &f, &l, &nf, &line, err);
    if (rc <= 0)
      break;
    assert_true(out->n < 8);
    out->nf[out->n] = nf;
    out->line[out->n] = line;
    for (size_t j = 0; j < nf && j < 8; j++) {
      assert_int_equal(f[j][l[j]], '\0'); /* handed out as C strings too */
      out->f[out->n][j] = malloc(l[j] + 1);
      memcpy(out->f[out->n][j], f[j], l[j] + 1);
      out->len[out->n][j] = l[j];
    }
    out->n++;
  }
  cr_csv_free(r);
  return rc;
}

#define READ_OK(lit, rw)                                                                           \
  do {                                                                                             \
    cr_error e_;                                                                                   \
    cr_error_clear(&e_);                                                                           \
    assert_int_equal(read_all(lit, sizeof(lit) - 1, rw, &e_), 0);                                  \
  } while (0)

static void test_plain(void **state) {
  (void)state;
  rows r;
  READ_OK("email,segment\na@x.org,video\nb@y.org,alarm_only\n", &r);
  assert_int_equal(r.n, 3);
  assert_int_equal(r.nf[0], 2);
  assert_string_equal(r.f[0][0], "email");
  assert_string_equal(r.f[2][1], "alarm_only");
  assert_int_equal(r.line[0], 1);
  assert_int_equal(r.line[2], 3);
  rows_free(&r);
}

static void test_quoted(void **state) {
  (void)state;
  rows r;
  READ_OK("a,b,c\n\"x, y\",\"say \"\"hi\"\"\",\"two\nlines\"\nnext,\"\",\n", &r);
  assert_int_equal(r.n, 3);
  assert_int_equal(r.nf[1], 3);
  assert_string_equal(r.f[1][0], "x, y");
  assert_string_equal(r.f[1][1], "say \"hi\"");
  assert_string_equal(r.f[1][2], "two\nlines");
  assert_int_equal(r.line[1], 2);
  assert_int_equal(r.line[2], 4); /* the embedded newline counts */
  assert_int_equal(r.nf[2], 3);
  assert_string_equal(r.f[2][0], "next");
  assert_int_equal(r.len[2][1], 0);
  assert_int_equal(r.len[2][2], 0);
  rows_free(&r);
}

static void test_crlf_cr_and_no_final_newline(void **state) {
  (void)state;
  rows r;
  READ_OK("a,b\r\n1,\"q\r\nz\"\r\n3,4\r5,6", &r);
  assert_int_equal(r.n, 4);
  assert_string_equal(r.f[0][1], "b");
  assert_string_equal(r.f[1][1], "q\r\nz"); /* content kept byte for byte */
  assert_int_equal(r.line[2], 4);
  assert_string_equal(r.f[2][1], "4");
  assert_string_equal(r.f[3][0], "5");
  assert_string_equal(r.f[3][1], "6");
  assert_int_equal(r.line[3], 5);
  rows_free(&r);
}

static void test_bom_and_blank_lines(void **state) {
  (void)state;
  rows r;
  READ_OK("\xef\xbb\xbf"
          "email\n\na@x.org\r\n\r\n\n",
          &r);
  assert_int_equal(r.n, 2);
  assert_string_equal(r.f[0][0], "email"); /* BOM dropped */
  assert_string_equal(r.f[1][0], "a@x.org");
  assert_int_equal(r.line[1], 3);
  rows_free(&r);

  /* A BOM later in the file is data, and a lone empty quoted field is a
   * record (unlike a blank line). */
  READ_OK("a\n\xef\xbb\xbfx\n\"\"\n", &r);
  assert_int_equal(r.n, 3);
  assert_string_equal(r.f[1][0], "\xef\xbb\xbfx");
  assert_int_equal(r.nf[2], 1);
  assert_int_equal(r.len[2][0], 0);
  rows_free(&r);

  READ_OK("", &r);
  assert_int_equal(r.n, 0);
  READ_OK("\xef\xbb\xbf", &r);
  assert_int_equal(r.n, 0);
}

static void test_utf8_valid(void **state) {
  (void)state;
  rows r;
  READ_OK("name\nJ\xc3\xb6rg\n\xe2\x82\xac\n\xf0\x9f\x98\x80\n\xef\xbf\xbf\n", &r);
  assert_int_equal(r.n, 5);
  assert_string_equal(r.f[1][0], "J\xc3\xb6rg");
  rows_free(&r);
}

/* Expects a CR_EDATA naming t.csv and `line`, and not containing `secret`. */
static void expect_error(const char *data, size_t len, const char *line, const char *secret) {
  rows r;
  cr_error e;
  cr_error_clear(&e);
  int rc = read_all(data, len, &r, &e);
  rows_free(&r);
  assert_int_equal(rc, CR_EDATA);
  assert_int_equal(e.code, CR_EDATA);
  assert_non_null(strstr(e.msg, "t.csv"));
  assert_non_null(strstr(e.msg, line));
  if (secret != NULL)
    assert_null(strstr(e.msg, secret));
}

#define EXPECT_ERROR(lit, line, secret) expect_error(lit, sizeof(lit) - 1, line, secret)

static void test_errors(void **state) {
  (void)state;
  /* Unterminated quote: reported at the line the field starts on. */
  EXPECT_ERROR("email\nok@x.org\n\"secret@x.org\nmore", "line 3", "secret");
  EXPECT_ERROR("a,b\nsecret\"x,1\n", "line 2", "secret");          /* quote in unquoted */
  EXPECT_ERROR("a,b\n\"secret\"x,1\n", "line 2", "secret");        /* text after quote */
  EXPECT_ERROR("a\nsecret\xff\n", "line 2", "secret");             /* invalid byte */
  EXPECT_ERROR("a\nsecret\xc0\xaf\n", "line 2", "secret");         /* overlong */
  EXPECT_ERROR("a\nsecret\xed\xa0\x80\n", "line 2", "secret");     /* surrogate */
  EXPECT_ERROR("a\nsecret\xe2\x82", "line 2", "secret");           /* truncated */
  EXPECT_ERROR("a\nsecret\xf4\x90\x80\x80\n", "line 2", "secret"); /* > U+10FFFF */
  EXPECT_ERROR("a\n\"multi\nline\",\"secret\xfe\"\n", "line 3", "secret");
  EXPECT_ERROR("a\nsec\0ret\n", "line 2", "sec");
  /* Invalid UTF-8 names the field. */
  EXPECT_ERROR("a,b\nx,secret\x80\n", "field 2", "secret");
}

static void test_error_is_sticky(void **state) {
  (void)state;
  const char data[] = "a\n\"open\n";
  cr_csv *r = NULL;
  cr_error e;
  const char *const *f;
  const size_t *l;
  size_t nf;
  uint64_t line;
  assert_int_equal(cr_csv_open_mem(&r, data, sizeof data - 1, "t.csv"), 0);
  assert_int_equal(cr_csv_next(r, &f, &l, &nf, &line, &e), 1);
  assert_int_equal(cr_csv_next(r, &f, &l, &nf, &line, &e), CR_EDATA);
  cr_error_clear(&e);
  assert_int_equal(cr_csv_next(r, &f, &l, &nf, &line, &e), CR_EDATA);
  assert_non_null(strstr(e.msg, "line 2"));
  cr_csv_free(r);
}

static void test_field_names(void **state) {
  (void)state;
  const char data[] = "a,b,c\n1,2,3\nx,y,secret\xff\n";
  const char *names[] = {"a", NULL, "c"};
  cr_csv *r = NULL;
  cr_error e;
  const char *const *f;
  const size_t *l;
  size_t nf;
  uint64_t line;
  assert_int_equal(cr_csv_open_mem(&r, data, sizeof data - 1, "t.csv"), 0);
  assert_int_equal(cr_csv_next(r, &f, &l, &nf, &line, &e), 1);
  assert_int_equal(cr_csv_set_field_names(r, names, 3), 0);
  assert_int_equal(cr_csv_set_field_names(r, names, 3), 0); /* replaces */
  assert_int_equal(cr_csv_next(r, &f, &l, &nf, &line, &e), 1);
  assert_int_equal(cr_csv_next(r, &f, &l, &nf, &line, &e), CR_EDATA);
  assert_non_null(strstr(e.msg, "t.csv: line 3: field 3 (column \"c\") is not valid UTF-8"));
  assert_null(strstr(e.msg, "secret"));
  cr_csv_free(r);

  const char data2[] = "a,b\nx,\"y\"z\n";
  assert_int_equal(cr_csv_open_mem(&r, data2, sizeof data2 - 1, "t.csv"), 0);
  assert_int_equal(cr_csv_set_field_names(r, names, 3), 0);
  assert_int_equal(cr_csv_next(r, &f, &l, &nf, &line, &e), 1);
  assert_int_equal(cr_csv_next(r, &f, &l, &nf, &line, &e), CR_EDATA);
  assert_non_null(strstr(e.msg, "line 2: field 2 has text after"));
  cr_csv_free(r);
}

static void test_limits(void **state) {
  (void)state;
  size_t max = CR_CSV_MAX_FIELD_BYTES;
  char *buf = malloc(6 * max + 64);
  cr_error e;
  rows r;

  /* A field of exactly the limit passes, one byte more does not. */
  memcpy(buf, "a\n", 2);
  memset(buf + 2, 'x', max);
  assert_int_equal(read_all(buf, 2 + max, &r, &e), 0);
  assert_int_equal(r.n, 2);
  assert_int_equal(r.len[1][0], max);
  rows_free(&r);
  memset(buf + 2, 'x', max + 1);
  assert_int_equal(read_all(buf, 3 + max, &r, &e), CR_EDATA);
  rows_free(&r);
  assert_non_null(strstr(e.msg, "line 2"));
  assert_non_null(strstr(e.msg, "limit per field"));
  assert_null(strstr(e.msg, "xxxx"));

  /* Quoted too. */
  buf[2] = '"';
  memset(buf + 3, 'x', max + 1);
  buf[max + 4] = '"';
  assert_int_equal(read_all(buf, max + 5, &r, &e), CR_EDATA);
  rows_free(&r);
  assert_non_null(strstr(e.msg, "limit per field"));

  /* Record limit: five fields just under the field limit. */
  size_t n = 2;
  for (int i = 0; i < 5; i++) {
    memset(buf + n, 'y', max - 1);
    n += max - 1;
    buf[n++] = ',';
  }
  buf[n - 1] = '\n';
  assert_int_equal(read_all(buf, n, &r, &e), CR_EDATA);
  rows_free(&r);
  assert_non_null(strstr(e.msg, "limit per record"));

  /* Too many fields. */
  n = 2;
  for (unsigned i = 0; i < CR_CSV_MAX_FIELDS; i++)
    buf[n++] = ',';
  assert_int_equal(read_all(buf, n, &r, &e), CR_EDATA);
  rows_free(&r);
  assert_non_null(strstr(e.msg, "more than"));
  free(buf);
}

/* A stream larger than the reader's chunk: same records as from memory, and
 * the hash covers exactly the bytes read. */
static void test_stream_and_hash(void **state) {
  (void)state;
  cr_buf b;
  cr_buf_init(&b);
  assert_int_equal(cr_buf_append(&b,
                                 "\xef\xbb\xbf"
                                 "id,\"note\"\r\n",
                                 14),
                   0);
  char line[128];
  for (int i = 0; i < 20000; i++) {
    int n = snprintf(line, sizeof line, "%d,\"n, %d\nwith \"\"quote\"\"\"\r\n", i, i);
    assert_int_equal(cr_buf_append(&b, line, (size_t)n), 0);
  }
  FILE *f = tmpfile();
  assert_non_null(f);
  assert_int_equal(fwrite(b.data, 1, b.len, f), b.len);
  rewind(f);

  cr_csv *r = NULL;
  cr_error e;
  uint8_t h[CR_SHA256_BYTES], want[CR_SHA256_BYTES];
  assert_int_equal(cr_csv_open_stream(&r, f, "s.csv"), 0);
  const char *const *fl;
  const size_t *l;
  size_t nf;
  uint64_t ln;
  assert_int_equal(cr_csv_next(r, &fl, &l, &nf, &ln, &e), 1);
  assert_string_equal(fl[0], "id");
  assert_int_equal(cr_csv_sha256(r, h), CR_EINVAL); /* not at the end yet */
  int count = 0, rc;
  while ((rc = cr_csv_next(r, &fl, &l, &nf, &ln, &e)) == 1) {
    char want_note[64];
    snprintf(want_note, sizeof want_note, "n, %d\nwith \"quote\"", count);
    assert_int_equal(nf, 2);
    assert_int_equal(atoi(fl[0]), count);
    assert_string_equal(fl[1], want_note);
    assert_int_equal(ln, 2 + 2 * (uint64_t)count);
    count++;
  }
  assert_int_equal(rc, 0);
  assert_int_equal(count, 20000);
  assert_int_equal(cr_csv_sha256(r, h), 0);
  cr_sha256(want, b.data, b.len);
  assert_memory_equal(h, want, sizeof h);
  cr_csv_free(r);
  fclose(f);

  /* The memory reader hashes the same. */
  assert_int_equal(cr_csv_open_mem(&r, (const char *)b.data, b.len, "m"), 0);
  assert_int_equal(cr_csv_sha256(r, h), 0);
  assert_memory_equal(h, want, sizeof h);
  cr_csv_free(r);
  cr_buf_free(&b);
}

static void test_bad_arguments(void **state) {
  (void)state;
  cr_csv *r = NULL;
  assert_int_equal(cr_csv_open_mem(&r, NULL, 3, "x"), CR_EINVAL);
  assert_int_equal(cr_csv_open_stream(&r, NULL, "x"), CR_EINVAL);
  assert_int_equal(cr_csv_open_mem(&r, NULL, 0, NULL), 0);
  const char *const *f;
  const size_t *l;
  size_t nf;
  assert_int_equal(cr_csv_next(r, &f, &l, &nf, NULL, NULL), 0);
  cr_csv_free(r);
  cr_csv_free(NULL);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_plain),
      cmocka_unit_test(test_quoted),
      cmocka_unit_test(test_crlf_cr_and_no_final_newline),
      cmocka_unit_test(test_bom_and_blank_lines),
      cmocka_unit_test(test_utf8_valid),
      cmocka_unit_test(test_errors),
      cmocka_unit_test(test_error_is_sticky),
      cmocka_unit_test(test_field_names),
      cmocka_unit_test(test_limits),
      cmocka_unit_test(test_stream_and_hash),
      cmocka_unit_test(test_bad_arguments),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
