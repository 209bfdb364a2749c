/*
 * The elements of a single-match-key data set in bounded memory (issue 17,
 * docs/memory.md): every accepted row goes into a cr_sorter keyed by a
 * 16-byte keyed BLAKE2b of its normalized key, with its row and label, and
 * the distinct keys are read back by merging in that order. Two rows with
 * the same key have the same hash and sit next to each other, the first
 * row first (the sort is stable), so de-duplication keeps the first row's
 * label; the key bytes are compared too, so a hash collision (2^-64 for
 * 2^32 keys) makes two elements, never one.
 *
 * The hash's key is drawn per load (or given by the caller for tests), so
 * the order of the elements is a fresh, uniformly random permutation for
 * each load: the order a session sends them in. Below the budget the
 * sorter keeps everything in memory; above it, its runs are encrypted.
 *
 * Never: writes a key in the clear anywhere, keeps a copy of one without
 * wiping it, or puts one in a message.
 */
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "dataset/dataset_internal.h"

/* A record's payload, lean (it is most of what spills): the data row
 * (1-based ordinal) as a LEB128 varint, with group_by the label as met in
 * the source (a varint too), then the key bytes. */
#define VARINT_MAX 10

struct cr_dataset_elements {
  cr_spill *spill;
  cr_sorter *sorter;
  uint64_t records;
  uint32_t *label_map; /* label as met -> the data set's label; NULL: none */
  size_t nraw;
  uint8_t order_key[crypto_generichash_KEYBYTES];
  cr_buf payload; /* scratch for one record */
  int grouped;    /* records carry a label */
  int finished;
  int spilled, released; /* released: read to the end once, then freed */
};

static size_t varint_put(uint8_t *p, uint64_t v) {
  size_t n = 0;
  while (v >= 0x80) {
    p[n++] = (uint8_t)(v | 0x80);
    v >>= 7;
  }
  p[n++] = (uint8_t)v;
  return n;
}

/* Bytes read, 0 when p[0..len) holds no whole varint. */
static size_t varint_get(const uint8_t *p, size_t len, uint64_t *v) {
  *v = 0;
  for (size_t i = 0; i < len && i < VARINT_MAX; i++) {
    *v |= (uint64_t)(p[i] & 0x7f) << (7 * i);
    if (!(p[i] & 0x80))
      return i + 1;
  }
  return 0;
}

int cr__elements_new(cr_dataset_elements **out, cr_spill *sp, const uint8_t *order_seed,
                     int grouped, cr_error *err) {
  cr_dataset_elements *e = calloc(1, sizeof *e);
  *out = NULL;
  if (e == NULL)
    return cr_error_set(err, CR_ENOMEM, "out of memory");
  cr_buf_init(&e->payload);
  e->spill = sp;
  e->grouped = grouped;
  int rc = cr_sorter_new(&e->sorter, sp, CR_ELEMENT_HASH_BYTES, "the data set's keys", err);
  if (rc != 0) {
    free(e);
    return rc;
  }
  /* The elements are read once, while the session's tables fill: a set
   * that would hold more than a quarter of the budget spills instead (in
   * runs of that size), leaving the rest to the tables (engine.c). */
  if (sp != NULL) {
    cr_spill_stats st;
    cr_spill_stats_get(sp, &st);
    cr_sorter_set_limit(e->sorter, st.memory_bytes / 4);
  }
  if (order_seed != NULL)
    memcpy(e->order_key, order_seed, sizeof e->order_key);
  else
    randombytes_buf(e->order_key, sizeof e->order_key);
  *out = e;
  return 0;
}

void cr__elements_free(cr_dataset_elements *e) {
  if (e == NULL)
    return;
  cr_sorter_free(e->sorter);
  sodium_memzero(e->order_key, sizeof e->order_key);
  cr_buf_free(&e->payload);
  free(e->label_map);
  free(e);
}

int cr__elements_add(cr_dataset_elements *e, const uint8_t *key, size_t len, uint64_t row,
                     uint32_t label, cr_error *err) {
  uint8_t h[crypto_generichash_BYTES_MIN], head[2 * VARINT_MAX];
  if (len > CR_ELEMENT_MAX_KEY_BYTES)
    return CR_EDATA; /* the caller names the row */
  /* The first CR_ELEMENT_HASH_BYTES of the keyed hash are the sort key. */
  crypto_generichash(h, sizeof h, key, len, e->order_key, sizeof e->order_key);
  size_t hl = varint_put(head, row);
  if (e->grouped)
    hl += varint_put(head + hl, label);
  cr_buf_reset(&e->payload);
  int rc = cr_buf_append(&e->payload, head, hl);
  rc = rc ? rc : cr_buf_append(&e->payload, key, len);
  if (rc != 0)
    return cr_error_set(err, rc, "out of memory");
  rc = cr_sorter_add(e->sorter, h, e->payload.data, e->payload.len, err);
  sodium_memzero(h, sizeof h);
  if (rc == 0)
    e->records++;
  return rc;
}

int cr__elements_finish(cr_dataset_elements *e, cr_error *err) {
  sodium_memzero(e->order_key, sizeof e->order_key);
  cr_buf_free(&e->payload);
  cr_buf_init(&e->payload);
  int rc = cr_sorter_finish(e->sorter, err);
  if (rc == 0)
    e->finished = 1;
  return rc;
}

void cr__elements_set_labels(cr_dataset_elements *e, uint32_t *map, size_t nraw) {
  free(e->label_map);
  e->label_map = map;
  e->nraw = nraw;
}

int cr__elements_spilled(const cr_dataset_elements *e) {
  return e->released ? e->spilled : cr_sorter_spilled(e->sorter);
}

cr_spill *cr__elements_spill(const cr_dataset_elements *e) { return e->spill; }

/* ---- reading the distinct elements back -------------------------------------- */

/* The distinct keys of the current hash (one, unless two keys collide). */
typedef struct group_key {
  size_t off, len; /* in the cursor's arena */
  uint64_t elem;
  uint32_t label; /* the first row's, as met */
  int conflict;   /* counted in label_conflicts */
} group_key;

int cr__cursor_open(cr__cursor *c, const cr_dataset_elements *e, cr_error *err) {
  memset(c, 0, sizeof *c);
  cr_buf_init(&c->arena);
  if (e != NULL && e->released)
    return cr_error_set(err, CR_EINVAL,
                        "the data set's elements were sent and released: load the data again");
  if (e == NULL || !e->finished)
    return cr_error_set(err, CR_EINVAL, "the data set's elements are not loaded");
  c->grouped = e->grouped;
  return cr_sorter_iter_new(e->sorter, &c->it, err);
}

void cr__cursor_close(cr__cursor *c) {
  cr_sorter_iter_free(c->it);
  c->it = NULL;
  sodium_memzero(c->hash, sizeof c->hash);
  cr_buf_free(&c->arena); /* wipes */
  free(c->group);
  c->group = NULL;
  c->ngroup = c->group_cap = 0;
}

int cr__cursor_next(cr__cursor *c, cr__record *r, cr_error *err) {
  const uint8_t *k = NULL, *p = NULL;
  size_t plen = 0;
  int rc = cr_sorter_iter_next(c->it, &k, &p, &plen, err);
  if (rc <= 0)
    return rc;
  memset(r, 0, sizeof *r);
  uint64_t label = 0;
  size_t used = varint_get(p, plen, &r->row), ul = 0;
  if (used > 0 && c->grouped && (ul = varint_get(p + used, plen - used, &label)) == 0)
    used = 0;
  if (used == 0 || label > UINT32_MAX)
    return cr_error_set(err, CR_EINTERNAL, "the data set's keys: a record is damaged");
  used += ul;
  r->raw_label = (uint32_t)label;
  r->key = p + used;
  r->len = plen - used;
  if (!c->have_hash || memcmp(c->hash, k, sizeof c->hash) != 0) {
    /* A new hash: a new group. */
    memcpy(c->hash, k, sizeof c->hash);
    c->have_hash = 1;
    c->ngroup = 0;
    cr_buf_reset(&c->arena);
  } else {
    for (size_t i = 0; i < c->ngroup; i++) {
      group_key *g = &((group_key *)c->group)[i];
      if (g->len == r->len &&
          (r->len == 0 || memcmp(c->arena.data + g->off, r->key, r->len) == 0)) {
        r->fresh = 0;
        r->elem = g->elem;
        r->first_label = g->label;
        /* The first row of this key with another label counts the key once. */
        r->new_conflict = g->label != r->raw_label && !g->conflict;
        g->conflict |= r->new_conflict;
        return 1;
      }
    }
  }
  if (c->ngroup == c->group_cap) {
    size_t cap = c->group_cap ? c->group_cap * 2 : 4;
    group_key *ng = realloc(c->group, cap * sizeof *ng);
    if (ng == NULL)
      return cr_error_set(err, CR_ENOMEM, "out of memory");
    c->group = ng;
    c->group_cap = cap;
  }
  group_key *g = &((group_key *)c->group)[c->ngroup++];
  g->off = c->arena.len;
  g->len = r->len;
  g->elem = c->elems++;
  g->label = r->raw_label;
  g->conflict = 0;
  if ((rc = cr_buf_append(&c->arena, r->key, r->len)) != 0)
    return cr_error_set(err, rc, "out of memory");
  r->fresh = 1;
  r->elem = g->elem;
  r->first_label = r->raw_label;
  return 1;
}

uint32_t cr__elements_label(const cr_dataset_elements *e, uint32_t raw) {
  return e->label_map != NULL && raw < e->nraw ? e->label_map[raw] : 0;
}

/* ---- the iterator ------------------------------------------------------------- */

struct cr_dataset_iter {
  const cr_dataset *d;
  cr__cursor c; /* the elements' order (a data set that was loaded) */
  size_t next;  /* a data set built in memory: index order */
  int ended;    /* the last element was given */
};

int cr_dataset_iter_new(const cr_dataset *d, cr_dataset_iter **out, cr_error *err) {
  if (out != NULL)
    *out = NULL;
  if (out == NULL || d == NULL || cr_dataset_width(d) > 1)
    return cr_error_set(err, CR_EINVAL, "cr_dataset_iter_new: invalid argument");
  cr_dataset_iter *it = calloc(1, sizeof *it);
  if (it == NULL)
    return cr_error_set(err, CR_ENOMEM, "out of memory");
  it->d = d;
  cr_buf_init(&it->c.arena);
  if (d->elements != NULL) {
    int rc = cr__cursor_open(&it->c, d->elements, err);
    if (rc != 0) {
      cr__cursor_close(&it->c);
      free(it);
      return rc;
    }
  }
  *out = it;
  return 0;
}

int cr_dataset_iter_next(cr_dataset_iter *it, const uint8_t **key, size_t *len, uint32_t *label,
                         cr_error *err) {
  const cr_dataset *d = it->d;
  if (d->elements == NULL) {
    /* Built in memory (several keys' values, tests): in index order. */
    if (it->next >= d->n)
      return 0;
    size_t i = it->next++;
    *key = d->bytes + d->off[i];
    *len = d->off[i + 1] - d->off[i];
    *label = d->labels ? d->labels[i] : 0;
    return 1;
  }
  for (;;) {
    cr__record r;
    int rc = cr__cursor_next(&it->c, &r, err);
    if (rc <= 0) {
      it->ended = rc == 0;
      return rc;
    }
    if (!r.fresh)
      continue; /* a later row of a key already given */
    *key = r.key;
    *len = r.len;
    *label = cr__elements_label(d->elements, r.raw_label);
    return 1;
  }
}

void cr_dataset_iter_release(cr_dataset_iter *it) {
  if (it == NULL)
    return;
  cr_dataset_elements *e = it->d->elements;
  int at_end = e != NULL && e->finished && it->ended;
  cr__cursor_close(&it->c);
  if (at_end) {
    e->spilled = cr_sorter_spilled(e->sorter);
    cr_sorter_free(e->sorter); /* wipes its memory, closes its runs */
    e->sorter = NULL;
    e->finished = 0;
    e->released = 1;
  }
  free(it);
}

void cr_dataset_iter_free(cr_dataset_iter *it) {
  if (it == NULL)
    return;
  cr__cursor_close(&it->c);
  free(it);
}
