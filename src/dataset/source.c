/*
 * Row sources: which kind a --data string names, and what every kind
 * shares (columns, the handed-out row, the hash of a database's rows).
 * Each kind lives in its own file (source_csv.c, source_sqlite.c,
 * source_pg.c); the dataset and members code only see cr_source.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "dataset/dataset_internal.h"

cr_source_kind cr_source_kind_of(const char *data) {
  if (data == NULL)
    return CR_SOURCE_CSV;
  if (strncasecmp(data, "postgresql://", 13) == 0 || strncasecmp(data, "postgres://", 11) == 0)
    return CR_SOURCE_POSTGRESQL;
  if (strncmp(data, "sqlite:", 7) == 0)
    return CR_SOURCE_SQLITE;
  return CR_SOURCE_CSV;
}

const char *cr_source_kind_name(cr_source_kind k) {
  switch (k) {
  case CR_SOURCE_SQLITE:
    return "SQLite";
  case CR_SOURCE_POSTGRESQL:
    return "PostgreSQL";
  default:
    return "CSV";
  }
}

int cr__colname_eq(const char *a, const char *b) { return strcasecmp(a, b) == 0; }

static int is_ws(char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f';
}

int cr__source_set_columns(cr_source *s, const char *const *names, const size_t *lens, size_t n) {
  char **cols = calloc(n ? n : 1, sizeof *cols);
  if (cols == NULL)
    return CR_ENOMEM;
  for (size_t i = 0; i < n; i++) {
    const char *v = names[i] ? names[i] : "";
    size_t len = lens ? lens[i] : strlen(v);
    while (len > 0 && is_ws(*v)) {
      v++;
      len--;
    }
    while (len > 0 && is_ws(v[len - 1]))
      len--;
    if ((cols[i] = strndup(v, len)) == NULL) {
      cr_strv_free(cols, i);
      return CR_ENOMEM;
    }
  }
  cr_strv_free(s->columns, s->ncolumns);
  s->columns = cols;
  s->ncolumns = n;
  return 0;
}

static void hash_u64(crypto_hash_sha256_state *h, uint64_t v) {
  uint8_t b[8];
  for (int i = 0; i < 8; i++)
    b[i] = (uint8_t)(v >> (56 - 8 * i));
  crypto_hash_sha256_update(h, b, sizeof b);
}

void cr__source_hash_columns(cr_source *s) {
  static const char label[] = "cleanroom/v1/rows";
  crypto_hash_sha256_update(&s->sha, (const uint8_t *)label, sizeof label - 1);
  hash_u64(&s->sha, s->ncolumns);
  for (size_t i = 0; i < s->ncolumns; i++) {
    size_t n = strlen(s->columns[i]);
    hash_u64(&s->sha, n);
    crypto_hash_sha256_update(&s->sha, (const uint8_t *)s->columns[i], n);
  }
}

int cr__source_take_row(cr_source *s, const char *const *values, const size_t *lens, size_t n,
                        uint64_t pos, cr_source_row *row) {
  memset(row, 0, sizeof *row);
  row->pos = pos;
  /* Every row is hashed as read, readable or not, so the hash is that of
   * the rows, not of what we made of them. A NULL has a length no value
   * can have. */
  hash_u64(&s->sha, n);
  for (size_t i = 0; i < n; i++) {
    hash_u64(&s->sha, values[i] ? lens[i] : UINT64_MAX);
    if (values[i] && lens[i])
      crypto_hash_sha256_update(&s->sha, (const uint8_t *)values[i], lens[i]);
  }
  for (size_t i = 0; i < n; i++) {
    if (values[i] == NULL)
      continue;
    if (memchr(values[i], 0, lens[i]) != NULL ||
        !cr__utf8_valid((const uint8_t *)values[i], lens[i])) {
      row->malformed = CR_REJECT_ENCODING;
      return CR_SOURCE_MALFORMED;
    }
  }
  if (n > s->fields_cap) {
    const char **f = realloc(s->fields, n * sizeof *f);
    if (f == NULL)
      return CR_ENOMEM;
    s->fields = f;
    size_t *l = realloc(s->lens, n * sizeof *l);
    if (l == NULL)
      return CR_ENOMEM;
    s->lens = l;
    s->fields_cap = n;
  }
  /* Copied with a NUL each (libpq's and SQLite's values are valid only
   * until their next call, and fields are handed out as C strings). */
  cr_buf_reset(&s->rowbuf);
  size_t total = 0;
  for (size_t i = 0; i < n; i++)
    total += (values[i] ? lens[i] : 0) + 1;
  if (cr_buf_reserve(&s->rowbuf, total ? total : 1) != 0)
    return CR_ENOMEM;
  size_t off = 0;
  for (size_t i = 0; i < n; i++) {
    size_t len = values[i] ? lens[i] : 0;
    if (len)
      memcpy(s->rowbuf.data + off, values[i], len);
    s->rowbuf.data[off + len] = '\0';
    s->lens[i] = len;
    off += len + 1;
  }
  s->rowbuf.len = off;
  off = 0;
  for (size_t i = 0; i < n; i++) {
    s->fields[i] = (const char *)s->rowbuf.data + off;
    off += s->lens[i] + 1;
  }
  row->fields = s->fields;
  row->lens = s->lens;
  row->n = n;
  return 1;
}

int cr_source_validate(const char *data, const cr_source_options *opt, cr_error *err) {
  cr_source_options none = {NULL, 0};
  if (data == NULL || data[0] == '\0')
    return cr_error_set(err, CR_EUSAGE,
                        "no data source given (a CSV file, sqlite:PATH or a "
                        "postgresql:// URI)");
  if (opt == NULL)
    opt = &none;
  cr_source_kind kind = cr_source_kind_of(data);
  if (kind == CR_SOURCE_CSV) {
    if (opt->query != NULL)
      return cr_error_set(err, CR_EUSAGE,
                          "%s: a data query is for a database source (sqlite:PATH or a "
                          "postgresql:// URI); a CSV file is read whole",
                          data);
    if (opt->delimiter != 0 && opt->delimiter != ',' && opt->delimiter != ';' &&
        opt->delimiter != '\t' && opt->delimiter != '|')
      return cr_error_set(err, CR_EUSAGE,
                          "%s: the delimiter must be ',', ';', tab or '|' (--delimiter)", data);
    return 0;
  }
  if (kind == CR_SOURCE_POSTGRESQL) {
    int rc = cr__pg_uri_check(data, err);
    if (rc != 0)
      return rc;
  }
  const char *name = data;
  if (opt->delimiter != 0)
    return cr_error_set(err, CR_EUSAGE, "%s: a delimiter is for a CSV file, not a database", name);
  if (opt->query == NULL || opt->query[0] == '\0')
    return cr_error_set(err, CR_EUSAGE,
                        "%s: a %s source needs a data query (--data-query 'SELECT ...', "
                        "config key data_query) naming the columns the template uses",
                        name, cr_source_kind_name(kind));
  if (strlen(opt->query) > CR_SOURCE_MAX_QUERY)
    return cr_error_set(err, CR_EUSAGE, "%s: the data query is longer than %u bytes", name,
                        CR_SOURCE_MAX_QUERY);
  if (kind == CR_SOURCE_SQLITE && data[7] == '\0')
    return cr_error_set(err, CR_EUSAGE, "sqlite: needs a file: sqlite:PATH");
  return 0;
}

int cr_source_open(cr_source **out, const char *data, const cr_source_options *opt, cr_error *err) {
  int rc;
  cr_source_options none = {NULL, 0};
  if (out != NULL)
    *out = NULL;
  if (out == NULL || data == NULL || data[0] == '\0')
    return cr_error_set(err, CR_EUSAGE,
                        "no data source given (a CSV file, sqlite:PATH or a "
                        "postgresql:// URI)");
  if (opt == NULL)
    opt = &none;
  cr_source *s = calloc(1, sizeof *s);
  if (s == NULL)
    return cr_error_set(err, CR_ENOMEM, "out of memory");
  s->kind = cr_source_kind_of(data);
  cr_buf_init(&s->rowbuf);
  crypto_hash_sha256_init(&s->sha);
  /* A URI with a password is never kept, even as a name for messages. */
  if ((rc = cr_source_validate(data, opt, err)) != 0)
    goto fail;
  if ((s->name = strdup(data)) == NULL) {
    rc = cr_error_set(err, CR_ENOMEM, "out of memory");
    goto fail;
  }
  if (s->kind == CR_SOURCE_CSV)
    rc = cr__source_open_csv(s, data, opt, err);
  else if (s->kind == CR_SOURCE_SQLITE)
    rc = cr__source_open_sqlite(s, data + 7, opt->query, err);
  else
    rc = cr__source_open_pg(s, data, opt->query, err);
  if (rc != 0)
    goto fail;
  *out = s;
  return 0;
fail:
  cr_source_close(s);
  return rc;
}

void cr_source_close(cr_source *s) {
  if (s == NULL)
    return;
  if (s->ops != NULL && s->ops->close != NULL)
    s->ops->close(s);
  cr_strv_free(s->columns, s->ncolumns);
  cr_buf_free(&s->rowbuf);
  free(s->fields);
  free(s->lens);
  free(s->name);
  free(s);
}

cr_source_kind cr_source_kind_get(const cr_source *s) { return s->kind; }
const char *cr_source_name(const cr_source *s) { return s->name; }
const char *cr_source_unit(const cr_source *s) { return s->kind == CR_SOURCE_CSV ? "line" : "row"; }
char cr_source_delimiter(const cr_source *s) { return s->delimiter; }

size_t cr_source_columns(const cr_source *s, const char *const **names) {
  if (names != NULL)
    *names = (const char *const *)s->columns;
  return s->ncolumns;
}

int cr_source_set_field_names(cr_source *s, const char *const *names, size_t n) {
  if (s == NULL)
    return CR_EINVAL;
  return s->ops->set_field_names ? s->ops->set_field_names(s, names, n) : 0;
}

int cr_source_next(cr_source *s, cr_source_row *row, cr_error *err) {
  if (s == NULL || row == NULL)
    return cr_error_set(err, CR_EINVAL, "cr_source_next: invalid argument");
  int rc = s->ops->next(s, row, err);
  if (rc == 0)
    s->done = 1;
  return rc;
}

int cr_source_sha256(cr_source *s, uint8_t out[CR_SHA256_BYTES]) {
  if (s == NULL || out == NULL)
    return CR_EINVAL;
  if (s->ops->sha256 != NULL)
    return s->ops->sha256(s, out);
  if (!s->done)
    return CR_EINVAL;
  crypto_hash_sha256_state copy = s->sha;
  crypto_hash_sha256_final(&copy, out);
  return 0;
}
