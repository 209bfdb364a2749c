/*
 * Inside the dataset layer: the row-source vtable each kind of source
 * implements (source_csv.c, source_sqlite.c, source_pg.c; source.c holds
 * what they share), helpers the files share, and the builder of a data set
 * from rows when the template has several match keys (records.c), called
 * by the loader (dataset.c) for each row it accepts, whatever the source.
 */
#ifndef CR_DATASET_INTERNAL_H
#define CR_DATASET_INTERNAL_H

#include <sodium.h>
#include <stddef.h>
#include <stdint.h>

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

typedef struct cr__records cr__records;

/*
 * A builder for template t and the loading party's role. hdr (nhdr names)
 * is the file's header: every key column must be in it (the loader checked
 * the template's required columns, which hold them). CR_EINVAL when one is
 * not, CR_ENOMEM.
 */
CR_NODISCARD int cr__records_new(cr__records **out, const cr_template *t, cr_role role,
                                 char *const *hdr, size_t nhdr);
void cr__records_free(cr__records *b);

/*
 * Normalizes every key of one row (fields in header order). Returns 0 when
 * at least one key is valid: the row's values are staged and the caller
 * must call cr__records_commit next. Returns 1 when none is (*why:
 * CR_REJECT_MISSING when every key is empty, else the first invalid key's
 * reason): nothing is staged. Negative: CR_EINVAL (a key the normalizer
 * cannot apply, e.g. a bad default_country_code), CR_ENOMEM.
 */
int cr__records_row(cr__records *b, const char *const *fields, const size_t *lens,
                    cr_reject_reason *why);
/* The staged row's first valid key value (key order), for a masked sample
 * (dry run); valid until the next call. NULL, 0 when nothing is staged. */
void cr__records_staged(const cr__records *b, const uint8_t **v, size_t *len);
/* Commits the staged row with its label (an index into the loader's label
 * table, 0 when not grouped). */
CR_NODISCARD int cr__records_commit(cr__records *b, uint32_t label);

/*
 * Builds d's values, its elements (records on the counted side, values on
 * the other), the per-key skip counts and the merge counts. *labels gets
 * each element's label (its first row's; malloc'ed, n entries) when grouped,
 * NULL otherwise; d->label_conflicts counts elements whose rows carry
 * different labels. CR_ENOMEM, or CR_EDATA when the set exceeds 2^32 - 1
 * values.
 */
CR_NODISCARD int cr__records_finish(cr__records *b, cr_dataset *d, int grouped, uint32_t **labels);

/* ---- single-key elements (elements.c) -------------------------------------- */

/* Bytes of the keyed hash that order the elements: 64 bits, since keys
 * whose hashes are equal are still told apart by their bytes (the cursor
 * compares them), and every byte here is spilled once per row. */
#define CR_ELEMENT_HASH_BYTES 8
/* The longest normalized key a data set takes (a sorter's payload, less
 * the row and label, varints). */
#define CR_ELEMENT_MAX_KEY_BYTES (CR_SORTER_MAX_PAYLOAD - 20)

/* The sorter of accepted rows, keyed by the keyed hash of their key; the
 * hash key is order_seed (32 bytes) or random; grouped: rows carry labels. */
CR_NODISCARD int cr__elements_new(cr_dataset_elements **out, cr_spill *sp,
                                  const uint8_t *order_seed, int grouped, cr_error *err);
void cr__elements_free(cr_dataset_elements *e);
/* One accepted row: its key, data row ordinal (1-based) and label as met.
 * CR_EDATA (no message: the caller names the row) for a key longer than
 * CR_ELEMENT_MAX_KEY_BYTES; the sorter's errors (CR_EIO: disk full). */
CR_NODISCARD int cr__elements_add(cr_dataset_elements *e, const uint8_t *key, size_t len,
                                  uint64_t row, uint32_t label, cr_error *err);
/* No more rows: forgets the hash key, sorts. */
CR_NODISCARD int cr__elements_finish(cr_dataset_elements *e, cr_error *err);
/* Takes map (malloc'ed): label as met -> the data set's label. */
void cr__elements_set_labels(cr_dataset_elements *e, uint32_t *map, size_t nraw);
uint32_t cr__elements_label(const cr_dataset_elements *e, uint32_t raw);
int cr__elements_spilled(const cr_dataset_elements *e);
/* The spill the data set was loaded with (NULL: memory only). */
cr_spill *cr__elements_spill(const cr_dataset_elements *e);

/* One row's record, read back in the elements' order. */
typedef struct cr__record {
  const uint8_t *key; /* valid until the next cr__cursor_next */
  size_t len;
  uint64_t row;         /* data row ordinal, 1-based */
  uint32_t raw_label;   /* as met in the source */
  uint32_t first_label; /* the element's (its first row's), as met */
  uint64_t elem;        /* the element's index in the order */
  int fresh;            /* the element's first row */
  int new_conflict;     /* the first row of the element with another label */
} cr__record;

/* Every row's record, in the elements' order, duplicates marked. */
typedef struct cr__cursor {
  cr_sorter_iter *it;
  int grouped;
  uint8_t hash[CR_ELEMENT_HASH_BYTES];
  int have_hash;
  cr_buf arena; /* the current hash's distinct keys */
  void *group;
  size_t ngroup, group_cap;
  uint64_t elems;
} cr__cursor;

CR_NODISCARD int cr__cursor_open(cr__cursor *c, const cr_dataset_elements *e, cr_error *err);
/* 1 with *r, 0 at the end, or a negative CR_E*. */
int cr__cursor_next(cr__cursor *c, cr__record *r, cr_error *err);
void cr__cursor_close(cr__cursor *c);

#endif
