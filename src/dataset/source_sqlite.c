/*
 * The SQLite row source: `sqlite:PATH` with a data query. The file is
 * opened read-only (SQLITE_OPEN_READONLY; it is never created), the query
 * must be one statement that reads only (sqlite3_stmt_readonly, so no
 * INSERT, no ATTACH, no PRAGMA that writes), and rows are stepped one at a
 * time, never collected. Values are read as text, as the sqlite3 shell
 * prints them; NULL reads as an empty field.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <sqlite3.h>

#include "dataset/dataset_internal.h"

typedef struct sqlite_impl {
  sqlite3 *db;
  sqlite3_stmt *st;
  int ncols;
  uint64_t rows;
  const char **vals;
  size_t *lens;
} sqlite_impl;

static int sq_next(cr_source *s, cr_source_row *row, cr_error *err) {
  sqlite_impl *q = s->impl;
  if (q->st == NULL)
    return 0;
  int r = sqlite3_step(q->st);
  if (r == SQLITE_DONE) {
    sqlite3_finalize(q->st);
    q->st = NULL;
    return 0;
  }
  if (r != SQLITE_ROW)
    /* A step error names no value (it is the engine's message). */
    return cr_error_set(err, CR_EDATA, "%s: the data query failed at row %llu: %s", s->name,
                        (unsigned long long)q->rows + 1, sqlite3_errmsg(q->db));
  q->rows++;
  for (int i = 0; i < q->ncols; i++) {
    if (sqlite3_column_type(q->st, i) == SQLITE_NULL) {
      q->vals[i] = NULL;
      q->lens[i] = 0;
      continue;
    }
    const unsigned char *t = sqlite3_column_text(q->st, i);
    if (t == NULL)
      return cr_error_set(err, CR_ENOMEM, "%s: out of memory", s->name);
    q->vals[i] = (const char *)t;
    q->lens[i] = (size_t)sqlite3_column_bytes(q->st, i);
  }
  int rc = cr__source_take_row(s, q->vals, q->lens, (size_t)q->ncols, q->rows, row);
  if (rc == CR_ENOMEM)
    return cr_error_set(err, rc, "%s: out of memory", s->name);
  if (rc == CR_SOURCE_MALFORMED)
    cr_error_set(err, CR_EDATA, "%s: row %llu: a value is not valid UTF-8 text", s->name,
                 (unsigned long long)q->rows);
  return rc;
}

static void sq_close(cr_source *s) {
  sqlite_impl *q = s->impl;
  if (q == NULL)
    return;
  sqlite3_finalize(q->st);
  sqlite3_close(q->db);
  free(q->vals);
  free(q->lens);
  free(q);
  s->impl = NULL;
}

static const cr_source_ops SQLITE_OPS = {sq_next, NULL, NULL, sq_close};

int cr__source_open_sqlite(cr_source *s, const char *path, const char *query, cr_error *err) {
  struct stat st;
  sqlite_impl *q = calloc(1, sizeof *q);
  if (q == NULL)
    return cr_error_set(err, CR_ENOMEM, "out of memory");
  s->impl = q;
  s->ops = &SQLITE_OPS;
  /* SQLite would say "unable to open database file" for every case. */
  if (stat(path, &st) != 0)
    return cr_error_set(err, CR_EDATA, "%s: cannot open %s: %s", s->name, path, strerror(errno));
  if (!S_ISREG(st.st_mode))
    return cr_error_set(err, CR_EDATA, "%s: %s is not a file", s->name, path);
  int r = sqlite3_open_v2(path, &q->db, SQLITE_OPEN_READONLY, NULL);
  if (r != SQLITE_OK)
    return cr_error_set(err, CR_EDATA, "%s: cannot open the database: %s", s->name,
                        q->db ? sqlite3_errmsg(q->db) : sqlite3_errstr(r));
  sqlite3_extended_result_codes(q->db, 1);
  sqlite3_busy_timeout(q->db, 5000);
  (void)sqlite3_db_config(q->db, SQLITE_DBCONFIG_DEFENSIVE, 1, NULL);
  (void)sqlite3_db_config(q->db, SQLITE_DBCONFIG_ENABLE_LOAD_EXTENSION, 0, NULL);

  const char *tail = NULL;
  r = sqlite3_prepare_v2(q->db, query, -1, &q->st, &tail);
  if (r != SQLITE_OK)
    return cr_error_set(err, CR_EDATA, "%s: the data query does not prepare: %s", s->name,
                        sqlite3_errmsg(q->db));
  if (q->st == NULL)
    return cr_error_set(err, CR_EUSAGE, "%s: the data query is empty", s->name);
  for (; tail != NULL && *tail; tail++) {
    if (*tail != ' ' && *tail != '\t' && *tail != '\n' && *tail != '\r' && *tail != ';')
      return cr_error_set(err, CR_EUSAGE,
                          "%s: the data query holds more than one statement; give one SELECT",
                          s->name);
  }
  if (!sqlite3_stmt_readonly(q->st))
    return cr_error_set(err, CR_EUSAGE,
                        "%s: the data query would change the database; only a query that "
                        "reads (SELECT) is run",
                        s->name);
  q->ncols = sqlite3_column_count(q->st);
  if (q->ncols <= 0)
    return cr_error_set(err, CR_EUSAGE, "%s: the data query returns no columns; give a SELECT",
                        s->name);
  const char **names = calloc((size_t)q->ncols, sizeof *names);
  q->vals = calloc((size_t)q->ncols, sizeof *q->vals);
  q->lens = calloc((size_t)q->ncols, sizeof *q->lens);
  if (names == NULL || q->vals == NULL || q->lens == NULL) {
    free(names);
    return cr_error_set(err, CR_ENOMEM, "out of memory");
  }
  for (int i = 0; i < q->ncols; i++) {
    names[i] = sqlite3_column_name(q->st, i);
    if (names[i] == NULL) {
      free(names);
      return cr_error_set(err, CR_ENOMEM, "out of memory");
    }
  }
  int rc = cr__source_set_columns(s, names, NULL, (size_t)q->ncols);
  free(names);
  if (rc != 0)
    return cr_error_set(err, rc, "out of memory");
  cr__source_hash_columns(s);
  return 0;
}
