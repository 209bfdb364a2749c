/*
 * Inside the dataset layer: the row-source vtable each kind of source
 * implements (source_csv.c, source_sqlite.c, source_pg.c; source.c holds
 * what they share), and helpers the files share.
 */
#ifndef CR_DATASET_INTERNAL_H
#define CR_DATASET_INTERNAL_H

#include <sodium.h>

#include "cleanroom/dataset.h"

/* Strict UTF-8 (RFC 3629). */
int cr__utf8_valid(const uint8_t *s, size_t n);

typedef struct cr_source_ops {
  int (*next)(cr_source *s, cr_source_row *row, cr_error *err);
  int (*sha256)(cr_source *s, uint8_t out[CR_SHA256_BYTES]);
  int (*set_field_names)(cr_source *s, const char *const *names, size_t n); /* may be NULL */
  void (*close)(cr_source *s);                                              /* frees impl */
} cr_source_ops;

struct cr_source {
  const cr_source_ops *ops;
  void *impl;
  cr_source_kind kind;
  char *name;
  char delimiter;
  char **columns;
  size_t ncolumns;
  /* Databases: the hash of the columns and rows read (cr_source_sha256). */
  crypto_hash_sha256_state sha;
  int done; /* next has returned 0 */
  /* Databases: one row's fields as handed out (NUL-terminated copies). */
  cr_buf rowbuf;
  const char **fields;
  size_t *lens;
  size_t fields_cap;
};

/* Takes a copy of names[0..n) (lens may be NULL), trimmed, as the columns. */
int cr__source_set_columns(cr_source *s, const char *const *names, const size_t *lens, size_t n);
/* Databases: hashes the column names (once, after cr__source_set_columns). */
void cr__source_hash_columns(cr_source *s);
/*
 * Databases: one row into s->fields / s->lens (values[i] NULL for SQL
 * NULL, read as empty) and into the hash. Returns 1, or CR_SOURCE_MALFORMED
 * with row->malformed set when a value is not UTF-8 or holds a NUL byte,
 * or CR_ENOMEM.
 */
int cr__source_take_row(cr_source *s, const char *const *values, const size_t *lens, size_t n,
                        uint64_t pos, cr_source_row *row);

int cr__source_open_csv(cr_source *s, const char *path, const cr_source_options *opt,
                        cr_error *err);
int cr__source_open_sqlite(cr_source *s, const char *path, const char *query, cr_error *err);
int cr__source_open_pg(cr_source *s, const char *uri, const char *query, cr_error *err);
/* CR_EUSAGE for a URI libpq cannot parse or that holds a password. */
int cr__pg_uri_check(const char *uri, cr_error *err);

/* ASCII case-insensitive equality of two column names. */
int cr__colname_eq(const char *a, const char *b);

#endif
