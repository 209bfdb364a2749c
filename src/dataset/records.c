/*
 * A data set under several match keys (dataset.h "Several match keys"):
 * each row's keys normalized one by one (an empty or invalid key is
 * skipped, a row with no valid key rejected), the distinct (key, value)
 * pairs collected, and on the counted side the rows merged into records.
 *
 * Why rows sharing a value are one record: an e-mail or a phone number
 * stands for one person on both sides, so two rows with the same e-mail
 * that both matched would count one person twice; and each value must go
 * on the wire once (the partner refuses a point sent twice, and a repeat
 * would tell it that two of our rows share a key). Rows are merged
 * transitively (union-find), in file order, so the result does not depend
 * on anything but the file.
 *
 * Never puts a value in a message; wipes every buffer that held one.
 */
#include <stdlib.h>
#include <string.h>

#include "dataset/dataset_internal.h"

typedef struct entry {
  size_t off;   /* in the arena */
  uint32_t len; /* a normalized value is at most a few MiB (a CSV field) */
  uint32_t row; /* accepted rows, from 0, in file order */
  uint32_t key; /* index into the template's match keys */
  uint32_t value;
} entry;

struct cr__records {
  const cr_template *t;
  cr_role role; /* the loading party: its key columns and normalizers */
  size_t nkeys;
  int counted; /* the role whose records are counted */
  size_t *keycol[CR_TEMPLATE_MAX_KEYS];
  const char **vals;
  size_t *vlens;
  size_t maxcols;
  cr_buf key;   /* normalization scratch */
  cr_buf arena; /* normalized values, back to back */
  entry *e;
  size_t ne, cap;
  size_t staged; /* entries of the row being staged */
  uint64_t pend_missing[CR_TEMPLATE_MAX_KEYS], pend_invalid[CR_TEMPLATE_MAX_KEYS];
  uint64_t key_missing[CR_TEMPLATE_MAX_KEYS], key_invalid[CR_TEMPLATE_MAX_KEYS];
  uint32_t *row_label;
  size_t nrows, row_cap;
};

void cr__records_free(cr__records *b) {
  if (b == NULL)
    return;
  for (size_t k = 0; k < CR_TEMPLATE_MAX_KEYS; k++)
    free(b->keycol[k]);
  free(b->vals);
  free(b->vlens);
  cr_buf_free(&b->key); /* wipes the values it held */
  cr_buf_free(&b->arena);
  free(b->e);
  free(b->row_label);
  free(b);
}

int cr__records_new(cr__records **out, const cr_template *t, cr_role role, char *const *hdr,
                    size_t nhdr) {
  cr__records *b = calloc(1, sizeof *b);
  *out = NULL;
  if (b == NULL)
    return CR_ENOMEM;
  b->t = t;
  b->role = role;
  b->nkeys = cr_template_nkeys(t);
  b->counted = cr_template_record_width(t, role) > 1;
  cr_buf_init(&b->key);
  cr_buf_init(&b->arena);
  for (size_t k = 0; k < b->nkeys; k++) {
    const cr_match_key *mk = &t->match_keys[k];
    if (mk->ncolumns == 0 || (b->keycol[k] = calloc(mk->ncolumns, sizeof(size_t))) == NULL) {
      cr__records_free(b);
      return mk->ncolumns == 0 ? CR_EINVAL : CR_ENOMEM;
    }
    if (mk->ncolumns > b->maxcols)
      b->maxcols = mk->ncolumns;
    /* The loading party's names for the key's columns (per party or shared),
     * found as the loader finds every column: case-insensitively. */
    const char *const *names = cr_match_key_columns(mk, role);
    if (names == NULL) {
      cr__records_free(b);
      return CR_EINVAL;
    }
    for (size_t c = 0; c < mk->ncolumns; c++) {
      size_t i = 0;
      while (i < nhdr && !cr__colname_eq(hdr[i], names[c]))
        i++;
      if (i == nhdr) {
        cr__records_free(b);
        return CR_EINVAL;
      }
      b->keycol[k][c] = i;
    }
  }
  b->vals = calloc(b->maxcols, sizeof *b->vals);
  b->vlens = calloc(b->maxcols, sizeof *b->vlens);
  if (b->vals == NULL || b->vlens == NULL) {
    cr__records_free(b);
    return CR_ENOMEM;
  }
  *out = b;
  return 0;
}

static void unstage(cr__records *b) {
  b->ne -= b->staged;
  b->staged = 0;
  memset(b->pend_missing, 0, sizeof b->pend_missing);
  memset(b->pend_invalid, 0, sizeof b->pend_invalid);
}

int cr__records_row(cr__records *b, const char *const *fields, const size_t *lens,
                    cr_reject_reason *why) {
  int any_invalid = 0;
  cr_reject_reason first = CR_REJECT_MISSING;
  unstage(b);
  if (b->nrows >= UINT32_MAX)
    return CR_ENOMEM;
  for (size_t k = 0; k < b->nkeys; k++) {
    const cr_match_key *mk = &b->t->match_keys[k];
    cr_reject_reason r = CR_REJECT_MISSING;
    for (size_t c = 0; c < mk->ncolumns; c++) {
      b->vals[c] = fields[b->keycol[k][c]];
      b->vlens[c] = lens[b->keycol[k][c]];
    }
    int rc = cr_normalize_key_as(mk, b->role, b->vals, b->vlens, &b->key, &r);
    if (rc < 0) {
      unstage(b);
      return rc;
    }
    if (rc == 1) {
      if (r == CR_REJECT_MISSING) {
        b->pend_missing[k]++;
      } else {
        b->pend_invalid[k]++;
        if (!any_invalid)
          first = r;
        any_invalid = 1;
      }
      continue;
    }
    if (b->ne == b->cap) {
      size_t cap = b->cap ? 2 * b->cap : 1024;
      entry *p = realloc(b->e, cap * sizeof *p);
      if (p == NULL) {
        unstage(b);
        return CR_ENOMEM;
      }
      b->e = p;
      b->cap = cap;
    }
    if (b->key.len > UINT32_MAX) {
      unstage(b);
      return CR_ENOMEM;
    }
    entry *x = &b->e[b->ne++];
    x->off = b->arena.len;
    x->len = (uint32_t)b->key.len;
    x->row = (uint32_t)b->nrows;
    x->key = (uint32_t)k;
    x->value = 0;
    b->staged++;
    if ((rc = cr_buf_append(&b->arena, b->key.data, b->key.len)) != 0) {
      unstage(b);
      return rc;
    }
  }
  if (b->staged == 0) {
    *why = any_invalid ? first : CR_REJECT_MISSING;
    unstage(b);
    return 1;
  }
  return 0;
}

void cr__records_staged(const cr__records *b, const uint8_t **v, size_t *len) {
  *v = NULL;
  *len = 0;
  if (b->staged == 0)
    return;
  const entry *x = &b->e[b->ne - b->staged];
  *v = b->arena.data + x->off;
  *len = x->len;
}

int cr__records_commit(cr__records *b, uint32_t label) {
  if (b->staged == 0)
    return CR_EINVAL;
  if (b->nrows == b->row_cap) {
    size_t cap = b->row_cap ? 2 * b->row_cap : 1024;
    uint32_t *p = realloc(b->row_label, cap * sizeof *p);
    if (p == NULL)
      return CR_ENOMEM;
    b->row_label = p;
    b->row_cap = cap;
  }
  b->row_label[b->nrows++] = label;
  for (size_t k = 0; k < b->nkeys; k++) {
    b->key_missing[k] += b->pend_missing[k];
    b->key_invalid[k] += b->pend_invalid[k];
  }
  b->staged = 0;
  memset(b->pend_missing, 0, sizeof b->pend_missing);
  memset(b->pend_invalid, 0, sizeof b->pend_invalid);
  return 0;
}

/* An entry with its value's bytes, for sorting (the arena is final). */
typedef struct sref {
  const uint8_t *p;
  entry *e;
} sref;

/* Key, then value bytewise (shorter first on a common prefix), then row. */
static int cmp_sref(const void *pa, const void *pb) {
  const sref *a = pa, *b = pb;
  const entry *x = a->e, *y = b->e;
  if (x->key != y->key)
    return x->key < y->key ? -1 : 1;
  size_t n = x->len < y->len ? x->len : y->len;
  int c = n ? memcmp(a->p, b->p, n) : 0;
  if (c != 0)
    return c;
  if (x->len != y->len)
    return x->len < y->len ? -1 : 1;
  return (x->row > y->row) - (x->row < y->row);
}

static int same_value(const sref *a, const sref *b) {
  return a->e->key == b->e->key && a->e->len == b->e->len &&
         (a->e->len == 0 || memcmp(a->p, b->p, a->e->len) == 0);
}

static uint32_t uf_find(uint32_t *parent, uint32_t x) {
  while (parent[x] != x) {
    parent[x] = parent[parent[x]]; /* path halving */
    x = parent[x];
  }
  return x;
}

/* The smaller root wins, so a record's root is its first row. */
static void uf_union(uint32_t *parent, uint32_t a, uint32_t b) {
  a = uf_find(parent, a);
  b = uf_find(parent, b);
  if (a < b)
    parent[b] = a;
  else if (b < a)
    parent[a] = b;
}

int cr__records_finish(cr__records *b, cr_dataset *d, int grouped, uint32_t **labels) {
  int rc = CR_ENOMEM;
  size_t ne = b->ne, nv = 0, total = 0;
  sref *perm = malloc((ne ? ne : 1) * sizeof *perm);
  uint32_t *first_row = NULL, *parent = NULL, *rec_of_row = NULL, *out_label = NULL;
  uint8_t *conflict = NULL;
  *labels = NULL;
  if (perm == NULL)
    goto out;
  if (ne >= UINT32_MAX) {
    rc = CR_EDATA;
    goto out;
  }
  for (size_t i = 0; i < ne; i++) {
    perm[i].e = &b->e[i];
    perm[i].p = b->arena.data + b->e[i].off;
  }
  qsort(perm, ne, sizeof *perm, cmp_sref);

  /* Distinct values, in (key, value) order, each with its first row. */
  for (size_t i = 0; i < ne; i++) {
    if (i == 0 || !same_value(&perm[i - 1], &perm[i])) {
      nv++;
      total += perm[i].e->len;
    }
    perm[i].e->value = (uint32_t)(nv - 1);
  }
  d->nkeys = b->nkeys;
  d->nvalues = nv;
  d->off = malloc((nv + 1) * sizeof *d->off);
  d->bytes = malloc(total ? total : 1);
  d->value_key = malloc(nv ? nv : 1);
  first_row = malloc((nv ? nv : 1) * sizeof *first_row);
  if (d->off == NULL || d->bytes == NULL || d->value_key == NULL || first_row == NULL)
    goto out;
  size_t pos = 0;
  for (size_t i = 0; i < ne; i++) {
    const entry *x = perm[i].e;
    if (i > 0 && perm[i - 1].e->value == x->value)
      continue;
    d->off[x->value] = pos;
    memcpy(d->bytes + pos, b->arena.data + x->off, x->len);
    pos += x->len;
    d->value_key[x->value] = (uint8_t)x->key;
    first_row[x->value] = x->row; /* rows ascend within a value */
  }
  d->off[nv] = pos;
  for (size_t k = 0; k < b->nkeys; k++) {
    d->key_missing[k] = b->key_missing[k];
    d->key_invalid[k] = b->key_invalid[k];
  }

  if (!b->counted) {
    /* The other side: its elements are the values themselves. */
    d->n = nv;
    d->width = 1;
    d->duplicates = ne - nv;
    if (grouped) {
      out_label = malloc((nv ? nv : 1) * sizeof *out_label);
      if (out_label == NULL)
        goto out;
      for (size_t v = 0; v < nv; v++)
        out_label[v] = b->row_label[first_row[v]];
      int differs = 0;
      for (size_t i = 0; i < ne; i++) {
        /* Each value once: at the first of its rows with another label. */
        uint32_t v = perm[i].e->value;
        if (i == 0 || perm[i - 1].e->value != v)
          differs = 0;
        if (!differs && b->row_label[perm[i].e->row] != out_label[v]) {
          differs = 1;
          d->label_conflicts++;
        }
      }
    }
    rc = 0;
    goto out;
  }

  /* The counted side: rows sharing a value are one record. */
  size_t nr = b->nrows, nrec = 0, w = b->nkeys;
  parent = malloc((nr ? nr : 1) * sizeof *parent);
  rec_of_row = malloc((nr ? nr : 1) * sizeof *rec_of_row);
  if (parent == NULL || rec_of_row == NULL)
    goto out;
  for (size_t r = 0; r < nr; r++)
    parent[r] = (uint32_t)r;
  for (size_t i = 1; i < ne; i++)
    if (perm[i - 1].e->value == perm[i].e->value)
      uf_union(parent, perm[i - 1].e->row, perm[i].e->row);
  /* Records numbered in the file order of their first rows. */
  for (size_t r = 0; r < nr; r++) {
    uint32_t root = uf_find(parent, (uint32_t)r);
    rec_of_row[r] = root == r ? (uint32_t)nrec++ : rec_of_row[root];
  }
  d->n = nrec;
  d->width = w;
  d->rows_merged = nr - nrec;
  d->duplicates = nr - nrec;
  d->slots = malloc((nrec ? nrec * w : 1) * sizeof *d->slots);
  d->value_record = malloc((nv ? nv : 1) * sizeof *d->value_record);
  if (d->slots == NULL || d->value_record == NULL)
    goto out;
  for (size_t i = 0; i < nrec * w; i++)
    d->slots[i] = CR_DATASET_NO_VALUE;
  /* Entries in file order (rows ascending): a key's first value wins. */
  size_t sent = 0;
  for (size_t i = 0; i < ne; i++) {
    const entry *x = &b->e[i];
    uint32_t *slot = &d->slots[(size_t)rec_of_row[x->row] * w + x->key];
    if (*slot == CR_DATASET_NO_VALUE) {
      *slot = x->value;
      sent++;
    }
  }
  d->values_unsent = nv - sent;
  for (size_t v = 0; v < nv; v++)
    d->value_record[v] = rec_of_row[first_row[v]];
  if (grouped) {
    out_label = calloc(nrec ? nrec : 1, sizeof *out_label);
    conflict = calloc(nrec ? nrec : 1, 1);
    if (out_label == NULL || conflict == NULL)
      goto out;
    for (size_t r = 0; r < nr; r++)
      if (parent[r] == r) /* a record's root is its first row */
        out_label[rec_of_row[r]] = b->row_label[r];
    for (size_t r = 0; r < nr; r++) {
      uint32_t rec = rec_of_row[r];
      if (b->row_label[r] != out_label[rec] && !conflict[rec]) {
        conflict[rec] = 1;
        d->label_conflicts++;
      }
    }
  }
  rc = 0;
out:
  if (rc == 0 && grouped) {
    *labels = out_label;
    out_label = NULL;
  }
  free(out_label);
  free(conflict);
  free(parent);
  free(rec_of_row);
  free(first_row);
  free(perm);
  return rc;
}
