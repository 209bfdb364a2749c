/*
 * Fuzz target: the CSV reader over arbitrary bytes, and every normalizer
 * chain over the fields it yields. Checks the reader's promises (fields are
 * NUL-terminated at their length, contain no NUL, records start on
 * non-decreasing lines) and that normalization either accepts a non-empty
 * key or names a reason. Any violation aborts.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cleanroom/dataset.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const cr_normalizer chains[][2] = {
    {CR_NORM_EMAIL, 0},
    {CR_NORM_PHONE, 0},
    {CR_NORM_TEXT, 0},
    {CR_NORM_HASHED_SHA256, 0},
    {CR_NORM_EMAIL, CR_NORM_SHA256},
    {CR_NORM_TEXT, CR_NORM_PHONE},
};
static const size_t chain_len[] = {1, 1, 1, 1, 2, 2};

static void check_key(const cr_match_key *mk, const char *const *vals, const size_t *lens,
                      cr_buf *out) {
  cr_reject_reason why = CR_REJECT_COUNT;
  int rc = cr_normalize_key(mk, vals, lens, out, &why);
  if (rc < 0 || rc > 1)
    abort();
  if (rc == 1 && (why >= CR_REJECT_COUNT || out->len != 0))
    abort();
  if (rc == 0 && out->len == 0)
    abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  cr_csv *r = NULL;
  cr_buf out;
  cr_error err;
  char *cols[] = {"a", "b"};
  cr_match_key mk = {.name = "k", .columns = cols};
  cr_buf_init(&out);
  if (cr_csv_open_mem(&r, (const char *)data, size, "fuzz.csv") != 0)
    return 0;
  uint64_t last_line = 0;
  for (;;) {
    const char *const *f;
    const size_t *l;
    size_t nf;
    uint64_t line;
    int rc = cr_csv_next(r, &f, &l, &nf, &line, &err);
    if (rc < 0) {
      if (rc != CR_EDATA || strstr(err.msg, "fuzz.csv") == NULL)
        abort();
      break;
    }
    if (rc == 0)
      break;
    if (nf == 0 || line < last_line || line < 1)
      abort();
    last_line = line;
    for (size_t i = 0; i < nf; i++)
      if (f[i][l[i]] != '\0' || memchr(f[i], 0, l[i]) != NULL)
        abort();
    for (size_t c = 0; c < sizeof chains / sizeof chains[0]; c++) {
      mk.normalize = (cr_normalizer *)chains[c];
      mk.nnormalize = chain_len[c];
      mk.default_country_code = (c & 1) ? "49" : NULL;
      mk.ncolumns = 1;
      for (size_t i = 0; i < nf; i++)
        check_key(&mk, &f[i], &l[i], &out);
      if (nf >= 2) {
        mk.ncolumns = 2;
        check_key(&mk, f, l, &out);
      }
    }
  }
  /* The reader's own bytes, as a raw value: no CSV structure at all. */
  if (size > 0) {
    const char *v[] = {(const char *)data};
    size_t vl[] = {size};
    for (size_t c = 0; c < sizeof chains / sizeof chains[0]; c++) {
      mk.normalize = (cr_normalizer *)chains[c];
      mk.nnormalize = chain_len[c];
      mk.ncolumns = 1;
      mk.default_country_code = "1";
      check_key(&mk, v, vl, &out);
    }
  }
  uint8_t h[CR_SHA256_BYTES];
  if (cr_csv_sha256(r, h) != 0)
    abort();
  cr_csv_free(r);

  /* Recovery mode with a detected separator (issue 16): every malformed
   * record moves reading forward (lines strictly increase, so the loop
   * ends), no record is handed out past a malformed one's start without
   * the line advancing, and the hash still covers exactly the input. */
  if (cr_csv_open_mem(&r, (const char *)data, size, "fuzz.csv") != 0)
    return 0;
  cr_csv_set_recover(r, 1);
  char delim = 0;
  if (cr_csv_detect_delimiter(r, &delim, &err) != 0 ||
      (delim != ',' && delim != ';' && delim != '\t' && delim != '|'))
    abort();
  uint64_t prev = 0;
  size_t guard = 0;
  for (;;) {
    const char *const *f;
    const size_t *l;
    size_t nf;
    uint64_t line = 0;
    int rc = cr_csv_next(r, &f, &l, &nf, &line, &err);
    if (rc == 0)
      break;
    if (rc < 0) {
      if (rc != CR_EDATA || strstr(err.msg, "fuzz.csv") == NULL)
        abort();
      break;
    }
    if (line < 1 || line <= prev || ++guard > size + 1)
      abort();
    prev = line;
    if (rc == CR_CSV_MALFORMED) {
      cr_reject_reason why = cr_csv_last_reject(r);
      if ((why != CR_REJECT_MALFORMED && why != CR_REJECT_ENCODING) ||
          strstr(err.msg, "fuzz.csv") == NULL)
        abort();
      continue;
    }
    for (size_t i = 0; i < nf; i++)
      if (f[i][l[i]] != '\0' || memchr(f[i], 0, l[i]) != NULL)
        abort();
  }
  cr_csv_free(r);
  cr_buf_free(&out);
  return 0;
}
