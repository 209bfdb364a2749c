/*
 * A loaded single-key data set's elements, read with cr_dataset_iter for
 * tests: in the iterator's order (the order a session sends them), or
 * sorted bytewise to compare with what a file holds whatever the order.
 */
#ifndef CR_TEST_SUPPORT_DSITER_H
#define CR_TEST_SUPPORT_DSITER_H

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cleanroom/dataset.h"

typedef struct fx_elem {
  uint8_t *key;
  size_t len;
  uint32_t label;
  size_t at; /* its place in the iterator's order */
} fx_elem;

typedef struct fx_elems {
  fx_elem *e;
  size_t n;
} fx_elems;

static inline int fx_elem_cmp(const void *a, const void *b) {
  const fx_elem *x = a, *y = b;
  size_t n = x->len < y->len ? x->len : y->len;
  int c = n ? memcmp(x->key, y->key, n) : 0;
  return c ? c : (x->len > y->len) - (x->len < y->len);
}

/* Every element in the iterator's order; aborts unless there are d->n. */
static inline fx_elems fx_elems_read(const cr_dataset *d) {
  fx_elems x = {NULL, 0};
  cr_dataset_iter *it = NULL;
  cr_error err;
  size_t cap = d->n ? d->n : 1;
  if ((x.e = calloc(cap, sizeof *x.e)) == NULL || cr_dataset_iter_new(d, &it, &err) != 0)
    abort();
  for (;;) {
    const uint8_t *k;
    size_t len;
    uint32_t label;
    int rc = cr_dataset_iter_next(it, &k, &len, &label, &err);
    if (rc < 0 || (rc == 1 && x.n >= cap))
      abort();
    if (rc == 0)
      break;
    fx_elem *e = &x.e[x.n];
    if ((e->key = malloc(len ? len : 1)) == NULL)
      abort();
    memcpy(e->key, k, len);
    e->len = len;
    e->label = label;
    e->at = x.n++;
  }
  cr_dataset_iter_free(it);
  if (x.n != d->n)
    abort();
  return x;
}

/* The same, sorted bytewise. */
static inline fx_elems fx_elems_sorted(const cr_dataset *d) {
  fx_elems x = fx_elems_read(d);
  qsort(x.e, x.n, sizeof *x.e, fx_elem_cmp);
  return x;
}

static inline void fx_elems_free(fx_elems *x) {
  for (size_t i = 0; i < x->n; i++)
    free(x->e[i].key);
  free(x->e);
  x->e = NULL;
  x->n = 0;
}

/* The element whose key is `key` (NUL-terminated), or NULL. */
static inline const fx_elem *fx_elems_find(const fx_elems *x, const char *key) {
  size_t len = strlen(key);
  for (size_t i = 0; i < x->n; i++)
    if (x->e[i].len == len && memcmp(x->e[i].key, key, len) == 0)
      return &x->e[i];
  return NULL;
}

#endif
