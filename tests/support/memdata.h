/*
 * In-memory data sets for unit tests that drive the engine, the session or
 * the node without files: keys PREFIX<i>SUFFIX for i in [from, to), sorted
 * bytewise as cr_dataset_load would leave them. With nlab > 0, the key made
 * from i gets label i % nlab, named "seg<j>".
 */
#ifndef CR_TEST_SUPPORT_MEMDATA_H
#define CR_TEST_SUPPORT_MEMDATA_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cleanroom/dataset.h"

typedef struct fx_mem_key {
  char text[64];
  int num;
} fx_mem_key;

static inline int fx_mem_key_cmp(const void *a, const void *b) {
  return strcmp(((const fx_mem_key *)a)->text, ((const fx_mem_key *)b)->text);
}

static inline cr_dataset *fx_mem_dataset(const char *prefix, const char *suffix, int from, int to,
                                         int nlab) {
  size_t n = (size_t)(to - from), total = 0;
  fx_mem_key *keys = calloc(n ? n : 1, sizeof *keys);
  cr_dataset *d = calloc(1, sizeof *d);
  if (keys == NULL || d == NULL)
    abort();
  for (size_t i = 0; i < n; i++) {
    keys[i].num = from + (int)i;
    snprintf(keys[i].text, sizeof keys[i].text, "%s%d%s", prefix, keys[i].num, suffix);
    total += strlen(keys[i].text);
  }
  qsort(keys, n, sizeof *keys, fx_mem_key_cmp);
  d->n = n;
  d->bytes = malloc(total ? total : 1);
  d->off = calloc(n + 1, sizeof *d->off);
  if (d->bytes == NULL || d->off == NULL)
    abort();
  if (nlab > 0) {
    d->nlabels = (size_t)nlab;
    d->label_names = calloc((size_t)nlab, sizeof *d->label_names);
    d->label_sizes = calloc((size_t)nlab, sizeof *d->label_sizes);
    d->labels = calloc(n ? n : 1, sizeof *d->labels);
    if (d->label_names == NULL || d->label_sizes == NULL || d->labels == NULL)
      abort();
    for (int j = 0; j < nlab; j++) {
      d->label_names[j] = malloc(16);
      if (d->label_names[j] == NULL)
        abort();
      snprintf(d->label_names[j], 16, "seg%d", j);
    }
  }
  for (size_t i = 0; i < n; i++) {
    size_t l = strlen(keys[i].text);
    memcpy(d->bytes + d->off[i], keys[i].text, l);
    d->off[i + 1] = d->off[i] + l;
    if (nlab > 0) {
      d->labels[i] = (uint32_t)(keys[i].num % nlab);
      d->label_sizes[d->labels[i]]++;
    }
  }
  free(keys);
  return d;
}

static inline void fx_mem_dataset_free(cr_dataset *d) {
  if (d == NULL)
    return;
  for (size_t j = 0; j < d->nlabels; j++)
    free(d->label_names[j]);
  free(d->label_names);
  free(d->label_sizes);
  free(d->labels);
  free(d->bytes);
  free(d->off);
  free(d);
}

#endif
