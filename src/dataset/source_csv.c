/*
 * The CSV row source: a file read by the streaming reader (csv.c) in
 * recovery mode, so a malformed row is counted like any other bad row
 * instead of refusing the file; the separator detected or given; and,
 * before any parsing, a look at the first bytes so that a spreadsheet
 * workbook, an archive or UTF-16 text is named for what it is rather than
 * reported as a CSV with strange columns.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "dataset/dataset_internal.h"

#define SNIFF_BYTES 4096

typedef struct csv_impl {
  FILE *f;
  cr_csv *csv;
} csv_impl;

static int has_suffix(const char *s, const char *suffix) {
  size_t n = strlen(s), m = strlen(suffix);
  if (m > n)
    return 0;
  for (size_t i = 0; i < m; i++) {
    char a = s[n - m + i], b = suffix[i];
    if (a >= 'A' && a <= 'Z')
      a = (char)(a + 32);
    if (a != b)
      return 0;
  }
  return 1;
}

/*
 * What the first bytes say the file is, when it is not text a CSV reader
 * should parse: a sentence for the message, or NULL.
 */
static const char *sniff(const uint8_t *b, size_t n, const char *path) {
  static const struct {
    const char *magic;
    size_t len;
    const char *what;
  } magic[] = {
      {"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1", 8,
       "an old Excel workbook (.xls, OLE2): open it and save it as \"CSV UTF-8\""},
      {"\x1f\x8b", 2, "gzip-compressed: decompress it first (gunzip)"},
      {"BZh", 3, "bzip2-compressed: decompress it first (bunzip2)"},
      {"\xfd"
       "7zXZ\x00",
       6, "xz-compressed: decompress it first (unxz)"},
      {"\x28\xb5\x2f\xfd", 4, "zstd-compressed: decompress it first (unzstd)"},
      {"7z\xbc\xaf\x27\x1c", 6, "a 7-Zip archive: extract the CSV from it first"},
      {"%PDF-", 5, "a PDF document, not a CSV file"},
      {"SQLite format 3", 16,
       "an SQLite database: name it as --data sqlite:PATH with --data-query 'SELECT ...'"},
      {"PAR1", 4, "a Parquet file: export it as CSV"},
      {"\x7f"
       "ELF",
       4, "a program (ELF), not a CSV file"},
      {"\x00\x00\xfe\xff", 4, "UTF-32 text: save it as UTF-8"},
      {"\xff\xfe\x00\x00", 4, "UTF-32 text: save it as UTF-8"},
      {"\xff\xfe", 2, "UTF-16 text (as Excel's \"Unicode text\" saves it): save it as UTF-8"},
      {"\xfe\xff", 2, "UTF-16 text: save it as UTF-8"},
  };
  if (n >= 4 && memcmp(b, "PK\x03\x04", 4) == 0) {
    if (has_suffix(path, ".xlsx") || has_suffix(path, ".xlsm"))
      return "an Excel workbook (.xlsx, a ZIP archive): open it and save it as \"CSV UTF-8\"";
    if (has_suffix(path, ".ods"))
      return "an OpenDocument spreadsheet (.ods, a ZIP archive): save it as CSV (UTF-8)";
    return "a ZIP archive (an .xlsx or .ods spreadsheet?): export the sheet as CSV (UTF-8)";
  }
  for (size_t i = 0; i < sizeof magic / sizeof magic[0]; i++)
    if (n >= magic[i].len && memcmp(b, magic[i].magic, magic[i].len) == 0)
      return magic[i].what;
  /* UTF-16 without a byte order mark: ASCII text with every other byte 0. */
  size_t zero_even = 0, zero_odd = 0, nul = 0;
  for (size_t i = 0; i < n; i++) {
    if (b[i] == 0) {
      nul++;
      if (i % 2)
        zero_odd++;
      else
        zero_even++;
    }
  }
  if (n >= 16 && (zero_odd * 10 >= n * 3 || zero_even * 10 >= n * 3) &&
      (zero_odd == 0 || zero_even == 0 || zero_odd > 4 * zero_even || zero_even > 4 * zero_odd))
    return "UTF-16 text without a byte order mark: save it as UTF-8";
  if (nul > 0)
    return "a binary file (it holds NUL bytes), not CSV text: export the data as CSV (UTF-8)";
  return NULL;
}

static int csv_next(cr_source *s, cr_source_row *row, cr_error *err) {
  csv_impl *c = s->impl;
  const char *const *f = NULL;
  const size_t *l = NULL;
  size_t nf = 0;
  uint64_t line = 0;
  memset(row, 0, sizeof *row);
  int rc = cr_csv_next(c->csv, &f, &l, &nf, &line, err);
  /* The data file's read error is the data's (exit 3); CR_EIO from a load
   * is left to the work directory (full, or its cap reached). */
  if (rc == CR_EIO) {
    if (err != NULL)
      err->code = CR_EDATA;
    return CR_EDATA;
  }
  if (rc == CR_CSV_MALFORMED) {
    row->pos = line;
    row->malformed = cr_csv_last_reject(c->csv);
    return CR_SOURCE_MALFORMED;
  }
  if (rc == 1) {
    row->fields = f;
    row->lens = l;
    row->n = nf;
    row->pos = line;
  }
  return rc;
}

static int csv_sha256(cr_source *s, uint8_t out[CR_SHA256_BYTES]) {
  csv_impl *c = s->impl;
  return cr_csv_sha256(c->csv, out);
}

static int csv_names(cr_source *s, const char *const *names, size_t n) {
  csv_impl *c = s->impl;
  return cr_csv_set_field_names(c->csv, names, n);
}

static void csv_close(cr_source *s) {
  csv_impl *c = s->impl;
  if (c == NULL)
    return;
  cr_csv_free(c->csv);
  if (c->f != NULL)
    fclose(c->f);
  free(c);
  s->impl = NULL;
}

static const cr_source_ops CSV_OPS = {csv_next, csv_sha256, csv_names, csv_close};

int cr__source_open_csv(cr_source *s, const char *path, const cr_source_options *opt,
                        cr_error *err) {
  int rc;
  struct stat st;
  csv_impl *c = calloc(1, sizeof *c);
  if (c == NULL)
    return cr_error_set(err, CR_ENOMEM, "out of memory");
  s->impl = c;
  s->ops = &CSV_OPS;
  c->f = fopen(path, "rb");
  if (c->f == NULL)
    return cr_error_set(err, CR_EDATA, "%s: cannot open: %s", path, strerror(errno));
  if (fstat(fileno(c->f), &st) == 0 && S_ISDIR(st.st_mode))
    return cr_error_set(err, CR_EDATA, "%s: is a directory, not a CSV file", path);
  if (fstat(fileno(c->f), &st) == 0 && S_ISREG(st.st_mode)) {
    uint8_t head[SNIFF_BYTES];
    size_t n = fread(head, 1, sizeof head, c->f);
    if (ferror(c->f))
      return cr_error_set(err, CR_EDATA, "%s: cannot read: %s", path, strerror(errno));
    const char *what = sniff(head, n, path);
    if (what != NULL)
      return cr_error_set(err, CR_EDATA, "%s: this is not a CSV file: it looks like %s", path,
                          what);
    if (fseek(c->f, 0, SEEK_SET) != 0)
      return cr_error_set(err, CR_EDATA, "%s: cannot read: %s", path, strerror(errno));
  }
  if ((rc = cr_csv_open_stream(&c->csv, c->f, path)) != 0)
    return cr_error_set(err, rc, "%s: out of memory", path);
  cr_csv_set_recover(c->csv, 1);
  if (opt->delimiter != 0) {
    if (cr_csv_set_delimiter(c->csv, opt->delimiter) != 0)
      return cr_error_set(err, CR_EUSAGE, "%s: bad delimiter", path);
  } else if ((rc = cr_csv_detect_delimiter(c->csv, &s->delimiter, err)) != 0) {
    return rc == CR_EIO ? CR_EDATA : rc;
  }
  s->delimiter = cr_csv_delimiter(c->csv);

  /* The header: the first record, which must be readable. */
  const char *const *f = NULL;
  const size_t *l = NULL;
  size_t nf = 0;
  uint64_t line = 0;
  cr_error e;
  cr_error_clear(&e);
  rc = cr_csv_next(c->csv, &f, &l, &nf, &line, &e);
  if (rc == 0)
    return cr_error_set(err, CR_EDATA, "%s: the file is empty (expected a header row)", path);
  if (rc == CR_CSV_MALFORMED)
    return cr_error_set(err, CR_EDATA, "the header row cannot be read: %s", e.msg);
  if (rc < 0) {
    if (err != NULL)
      *err = e;
    return rc == CR_EIO ? CR_EDATA : rc;
  }
  if ((rc = cr__source_set_columns(s, f, l, nf)) != 0)
    return cr_error_set(err, rc, "%s: out of memory", path);
  return 0;
}
