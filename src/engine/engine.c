/*
 * The engine: blinding, re-blinding, digest tables and matching for one
 * session (include/cleanroom/engine.h). Pure computation on the session's
 * behalf; never logs, never words a message, wipes what held a match key,
 * a digest or the scalar.
 */
#include "cleanroom/engine.h"

#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#define CR_MAX_SET_SIZE ((uint64_t)UINT32_MAX)
/* A zero scalar from 64 uniform bytes has probability 2^-252 per draw:
 * reaching this bound means the randomness is broken. */
#define CR_SCALAR_TRIES 8
/* Elements per range handed to a pool thread: large enough to amortise the
 * hand-off, small enough to balance a 4096-point batch over the cores. */
#define CR_POOL_CHUNK 128
/* Points per call of the suite's batch entry points: a multiple of the
 * eight lanes of the batched ristretto255 backend, and a small stack. */
#define CR_BLIND_GROUP 32
/* Bytes of each point kept to detect reflection and repeats: a peer that
 * wants our digests to match must send our points exactly (a changed byte
 * is another point), so the fingerprint need only not collide by chance:
 * 96 bits, with 10^9 points on each side, collide with probability below
 * 2^-36. Every byte here is spilled twice per element. */
#define CR_FP_BYTES 12
/* When a session's tables cannot all stay in memory, each spills in runs
 * of about 1/CR_SPILL_RUNS of its size (at least CR_SPILL_RUN_MIN): one
 * merge reads them all, and the node's memory stays flat as sets grow
 * instead of filling the budget. */
#define CR_SPILL_RUNS 64
#define CR_SPILL_RUN_MIN ((uint64_t)1 << 20)
#define CR_PAD_SEED_BYTES 32
static const char PAD_LABEL[] = "cleanroom/v1/pad";
#define CR_RANK_PAD UINT32_MAX /* members: a pad's rank among real elements */

/* Uniform draws from the injected stream come in blocks, so the callback is
 * not called per element. */
typedef struct rand_block {
  uint8_t b[1024];
  size_t pos;
} rand_block_t;

struct cr_engine {
  cr_engine_config cfg;
  const cr_suite *suite;
  uint8_t *k; /* sodium_malloc'ed; NULL once wiped */
  int k_wiped;
  cr_engine_plan plan;

  const cr_dataset *data;
  uint32_t *order;      /* send order: order[i] is the element sent i-th (>= real_n: a pad) */
  uint64_t own_n;       /* real_n + pads */
  uint64_t real_n;      /* the dataset's elements (keys, or records) */
  size_t own_w;         /* points per own element */
  uint32_t *wire_label; /* grouped: label of element i (real or pad); NULL otherwise */
  uint8_t pad_seed[CR_PAD_SEED_BYTES];
  uint8_t *own_fp;  /* first CR_FP_BYTES of each own point, by send position */
  uint8_t *peer_fp; /* same of each peer point, by arrival */
  cr_engine_rule rule;

  size_t peer_w;                  /* points per peer element */
  cr_engine_digest *peer_digests; /* arrival order until peer_done, then return order */
  /* Self receives: the peer's digests sorted by digest (a lookup table),
   * or, when the peer's elements are records, in arrival order (its
   * records are counted, against our digests). */
  cr_engine_digest *peer_match;
  uint64_t peer_points;          /* points received */
  cr_engine_digest *own_digests; /* returned by the peer, points */
  uint64_t own_digests_n;
  uint8_t own_last[CR_ENGINE_DIGEST_SLOT]; /* the last own digest taken back */
  uint64_t ret_pos;                        /* returned digests read (cr_engine_returned_next) */
  int prepared, peer_finished;

  /* One match key (stream): the own set is read from the dataset iterator
   * as it is sent and every table is a cr_sorter on cfg.spill; several
   * keys keep the in-memory tables above (order, own_fp, peer_digests...). */
  int stream;
  cr_error err; /* what a sorter or the iterator failed with (names no key) */
  cr_dataset_iter *it;
  uint32_t *label_map; /* dataset label -> wire label (grouped) */
  size_t data_nlabels, nlabels;
  uint64_t *pads_left; /* per wire label */
  uint64_t pads_total_left;
  uint64_t pos;            /* send positions blinded so far */
  uint8_t *is_pad;         /* bit per send position: a pad */
  rand_block_t *rb;        /* the order's randomness, drawn in blocks */
  cr_sorter *own_fp_s;     /* own point fingerprints */
  cr_sorter *peer_fp_s;    /* the peer's point fingerprints */
  cr_sorter *peer_match_s; /* the peer's digests by digest (payload: label when grouped) */
  cr_sorter *peer_ret_s;   /* the peer's digests in return order (may be peer_match_s) */
  cr_sorter *own_dg_s;     /* our digests back, by digest (payload: label, members rank) */
  int consume_data;        /* our elements are read once and given back (release_data) */
  uint64_t own_real_back;  /* members: real send positions among the digests back */
  cr_sorter_iter *ret_it;
  int ret_peeked; /* ret_peek holds the next returned digest */
  cr_engine_digest ret_peek;
};

static int prepare_stream(cr_engine *e, const cr_engine_plan *plan, size_t pw);
static int blind_stream(cr_engine *e, uint64_t first, size_t n, uint8_t *points, uint8_t *labels);
static int reblind_stream(cr_engine *e, const uint8_t *points, const uint8_t *labels, size_t n,
                          uint64_t *bad);
static int peer_done_stream(cr_engine *e);
static int own_add_stream(cr_engine *e, const uint8_t *plain, uint64_t n, uint32_t label,
                          int continues);

int cr_engine_rand_default(void *ctx, uint8_t *buf, size_t len) {
  (void)ctx;
  randombytes_buf(buf, len);
  return 0;
}

static int draw(cr_engine *e, uint8_t *buf, size_t len) {
  return e->cfg.rand(e->cfg.rand_ctx, buf, len) == 0 ? 0 : CR_ECRYPTO;
}

int cr_engine_suite_supported(const char *name) { return cr_suite_find(name) != NULL; }

size_t cr_engine_point_bytes(const cr_engine *e) { return e->suite->point_bytes; }

const char *cr_engine_suite_name(const cr_engine *e) { return e->suite->name; }

uint64_t cr_engine_own_n(const cr_engine *e) { return e->own_n; }

size_t cr_engine_own_width(const cr_engine *e) { return e->own_w ? e->own_w : 1; }

/* Points of the own and the peer's set. */
static uint64_t own_points(const cr_engine *e) { return e->own_n * cr_engine_own_width(e); }
static uint64_t peer_points_total(const cr_engine *e) { return e->plan.peer_n * e->peer_w; }

cr_engine_rule cr_engine_violation(const cr_engine *e) { return e->rule; }

static int violation(cr_engine *e, cr_engine_rule r) {
  e->rule = r;
  return CR_EPROTO;
}

static void free_table(cr_engine_digest **t, uint64_t n) {
  if (*t) {
    sodium_memzero(*t, (size_t)n * sizeof **t);
    free(*t);
    *t = NULL;
  }
}

void cr_engine_wipe(cr_engine *e) {
  if (e->k != NULL) {
    cr_scalar_free(e->suite, e->k);
    e->k = NULL;
  }
  e->k_wiped = 1;
  free_table(&e->peer_digests, peer_points_total(e));
  free_table(&e->peer_match, peer_points_total(e));
  free_table(&e->own_digests, own_points(e));
  sodium_memzero(e->pad_seed, sizeof e->pad_seed);
  if (e->own_fp) {
    sodium_memzero(e->own_fp, (size_t)own_points(e) * CR_FP_BYTES);
    free(e->own_fp);
    e->own_fp = NULL;
  }
  if (e->peer_fp) {
    sodium_memzero(e->peer_fp, (size_t)peer_points_total(e) * CR_FP_BYTES);
    free(e->peer_fp);
    e->peer_fp = NULL;
  }
  free(e->wire_label);
  e->wire_label = NULL;
  sodium_memzero(e->own_last, sizeof e->own_last);
  /* Stream tables: sorters wipe their memory and forget their runs. */
  if (e->ret_it) {
    cr_sorter_iter_free(e->ret_it);
    e->ret_it = NULL;
  }
  sodium_memzero(&e->ret_peek, sizeof e->ret_peek);
  if (e->peer_ret_s != e->peer_match_s)
    cr_sorter_free(e->peer_ret_s);
  e->peer_ret_s = NULL;
  cr_sorter_free(e->peer_match_s);
  e->peer_match_s = NULL;
  cr_sorter_free(e->peer_fp_s);
  e->peer_fp_s = NULL;
  cr_sorter_free(e->own_fp_s);
  e->own_fp_s = NULL;
  cr_sorter_free(e->own_dg_s);
  e->own_dg_s = NULL;
  if (e->it) {
    cr_dataset_iter_free(e->it);
    e->it = NULL;
  }
  if (e->rb) {
    sodium_memzero(e->rb, sizeof *e->rb);
    free(e->rb);
    e->rb = NULL;
  }
  if (e->is_pad) {
    /* Which send positions were pads links points to elements (members). */
    sodium_memzero(e->is_pad, (size_t)(e->own_n + 7) / 8);
    free(e->is_pad);
    e->is_pad = NULL;
  }
  free(e->label_map);
  e->label_map = NULL;
  free(e->pads_left);
  e->pads_left = NULL;
  if (e->order) {
    /* The send order links points to rows (members). */
    sodium_memzero(e->order, (size_t)e->own_n * sizeof *e->order);
    free(e->order);
    e->order = NULL;
  }
}

int cr_engine_scalar_wiped(const cr_engine *e) { return e->k == NULL && e->k_wiped; }

int cr_engine_new(cr_engine **out, const cr_engine_config *cfg) {
  uint8_t uniform[CR_SCALAR_UNIFORM_BYTES];
  cr_engine *e = NULL;
  int rc = CR_EINVAL;
  *out = NULL;
  if (cfg == NULL || cfg->tmpl == NULL)
    return CR_EINVAL;
  if ((rc = cr_crypto_init()) != 0)
    return rc;
  e = calloc(1, sizeof *e);
  if (e == NULL)
    return CR_ENOMEM;
  e->cfg = *cfg;
  if (e->cfg.rand == NULL)
    e->cfg.rand = cr_engine_rand_default;
  e->suite = cr_suite_find(cfg->tmpl->suite);
  if (e->suite == NULL) {
    rc = CR_EREFUSED;
    goto fail;
  }
  e->k = cr_scalar_alloc(e->suite);
  if (e->k == NULL) {
    rc = CR_ENOMEM;
    goto fail;
  }
  rc = CR_ECRYPTO;
  for (int i = 0; i < CR_SCALAR_TRIES && rc == CR_ECRYPTO; i++) {
    if (draw(e, uniform, sizeof uniform) != 0)
      break;
    rc = e->suite->scalar_from_uniform(e->k, uniform);
  }
  sodium_memzero(uniform, sizeof uniform);
  if (rc != 0)
    goto fail;
  *out = e;
  return 0;
fail:
  cr_engine_free(e);
  return rc;
}

void cr_engine_free(cr_engine *e) {
  if (e == NULL)
    return;
  cr_engine_wipe(e);
  sodium_memzero(e, sizeof *e);
  free(e);
}

/* Uniform in [0, n) from the injected stream, by rejection (no modulo
 * bias). */
static int uniform_u32(cr_engine *e, rand_block_t *rb, uint32_t n, uint32_t *out) {
  /* Largest multiple of n that fits in 2^32; draws at or above it are redrawn. */
  uint32_t lim = (uint32_t)(((uint64_t)1 << 32) - (((uint64_t)1 << 32) % n));
  for (;;) {
    if (rb->pos + 4 > sizeof rb->b) {
      if (draw(e, rb->b, sizeof rb->b) != 0)
        return CR_ECRYPTO;
      rb->pos = 0;
    }
    const uint8_t *p = rb->b + rb->pos;
    uint32_t v = ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
    rb->pos += 4;
    if (lim == 0 || v < lim) {
      *out = v % n;
      return 0;
    }
  }
}

/* Fisher-Yates with the session's randomness: the order points leave in
 * says nothing of the order of the rows. */
static int set_own_legacy(cr_engine *e, const cr_dataset *d, size_t nlabels,
                          const uint32_t *label_map, const uint64_t *pad) {
  rand_block_t rb;
  int rc = 0;
  uint64_t total = d->n;
  if (d->n == 0 || d->n > CR_MAX_SET_SIZE || nlabels == 0 || pad == NULL)
    return CR_EREFUSED;
  if (e->order != NULL)
    return CR_EINVAL;
  for (size_t l = 0; l < nlabels; l++) {
    if (pad[l] > CR_MAX_SET_SIZE - total)
      return CR_EREFUSED;
    total += pad[l];
  }
  int grouped = label_map != NULL;
  size_t w = cr_dataset_width(d);
  if ((nlabels > 1 && !grouped) || (grouped && d->labels == NULL) || w > CR_TEMPLATE_MAX_KEYS ||
      (w > 1 && d->slots == NULL) || (d->nkeys > 1 && d->value_key == NULL) ||
      total > CR_MAX_SET_SIZE / w)
    return total > CR_MAX_SET_SIZE / w ? CR_EREFUSED : CR_EINVAL;
  e->data = d;
  e->real_n = d->n;
  e->own_n = total;
  e->own_w = w;
  e->order = malloc((size_t)e->own_n * sizeof *e->order);
  e->own_fp = calloc((size_t)(e->own_n * w), CR_FP_BYTES);
  if (grouped)
    e->wire_label = malloc((size_t)e->own_n * sizeof *e->wire_label);
  if (e->order == NULL || e->own_fp == NULL || (grouped && e->wire_label == NULL))
    return CR_ENOMEM;
  for (uint64_t i = 0; i < e->own_n; i++)
    e->order[i] = (uint32_t)i;
  if (grouped) {
    for (uint64_t i = 0; i < e->real_n; i++) {
      uint32_t l = d->labels[i];
      e->wire_label[i] = l < d->nlabels ? label_map[l] : UINT32_MAX;
      if (e->wire_label[i] >= nlabels)
        return CR_EINVAL;
    }
    uint64_t at = e->real_n;
    for (size_t l = 0; l < nlabels; l++)
      for (uint64_t k = 0; k < pad[l]; k++)
        e->wire_label[at++] = (uint32_t)l;
  }
  if (total > e->real_n && draw(e, e->pad_seed, sizeof e->pad_seed) != 0)
    return CR_ECRYPTO;
  rb.pos = sizeof rb.b;
  for (uint64_t i = e->own_n; i > 1 && rc == 0; i--) {
    uint32_t j = 0;
    rc = uniform_u32(e, &rb, (uint32_t)i, &j);
    uint32_t tmp = e->order[i - 1];
    e->order[i - 1] = e->order[j];
    e->order[j] = tmp;
  }
  sodium_memzero(&rb, sizeof rb);
  return rc;
}

/* One match key: records what sending needs (the pads per label, the
 * dataset's iterator); the send order is drawn as points are blinded
 * (cr_engine_blind). */
static int set_own_stream(cr_engine *e, const cr_dataset *d, size_t nlabels,
                          const uint32_t *label_map, const uint64_t *pad, uint64_t total) {
  e->stream = 1;
  e->data = d;
  e->real_n = d->n;
  e->own_n = total;
  e->own_w = 1;
  e->nlabels = nlabels;
  e->pads_left = calloc(nlabels, sizeof *e->pads_left);
  e->is_pad = calloc((size_t)(total + 7) / 8, 1);
  e->rb = calloc(1, sizeof *e->rb);
  if (e->pads_left == NULL || e->is_pad == NULL || e->rb == NULL)
    return CR_ENOMEM;
  e->rb->pos = sizeof e->rb->b;
  for (size_t l = 0; l < nlabels; l++) {
    e->pads_left[l] = pad[l];
    e->pads_total_left += pad[l];
  }
  if (label_map != NULL) {
    e->data_nlabels = d->nlabels;
    e->label_map = malloc((d->nlabels ? d->nlabels : 1) * sizeof *e->label_map);
    if (e->label_map == NULL)
      return CR_ENOMEM;
    for (size_t l = 0; l < d->nlabels; l++) {
      if (label_map[l] >= nlabels)
        return CR_EINVAL;
      e->label_map[l] = label_map[l];
    }
  }
  if (e->pads_total_left > 0 && draw(e, e->pad_seed, sizeof e->pad_seed) != 0)
    return CR_ECRYPTO;
  /* The tables are made when first needed (a ping never needs them). */
  return cr_dataset_iter_new(d, &e->it, &e->err);
}

int cr_engine_set_own(cr_engine *e, const cr_dataset *d, size_t nlabels, const uint32_t *label_map,
                      const uint64_t *pad) {
  uint64_t total = d->n;
  if (e->own_n != 0)
    return CR_EINVAL;
  if (d->nkeys > 1)
    return set_own_legacy(e, d, nlabels, label_map, pad);
  if (d->n == 0 || d->n > CR_MAX_SET_SIZE || nlabels == 0 || pad == NULL)
    return CR_EREFUSED;
  for (size_t l = 0; l < nlabels; l++) {
    if (pad[l] > CR_MAX_SET_SIZE - total)
      return CR_EREFUSED;
    total += pad[l];
  }
  if ((nlabels > 1 && label_map == NULL) || cr_dataset_width(d) > 1 ||
      (label_map != NULL && d->nlabels == 0))
    return CR_EINVAL;
  int rc = set_own_stream(e, d, nlabels, label_map, pad, total);
  if (rc != 0)
    e->own_n = 0;
  return rc;
}

const char *cr_engine_error_message(const cr_engine *e) { return e->err.msg; }

int cr_engine_prepare(cr_engine *e, const cr_engine_plan *plan) {
  size_t pw = plan->peer_width > 1 ? plan->peer_width : 1;
  if (e->stream)
    return prepare_stream(e, plan, pw);
  if (e->order == NULL || plan->digest_bytes == 0 || plan->digest_bytes > CR_MAX_DIGEST_BYTES ||
      plan->peer_n == 0 || plan->peer_n > CR_MAX_SET_SIZE || e->peer_digests != NULL ||
      pw > CR_TEMPLATE_MAX_KEYS || plan->peer_n > CR_MAX_SET_SIZE / pw ||
      (pw > 1 && cr_engine_own_width(e) > 1) || (pw > 1 && plan->members && plan->self_receives))
    return CR_EINVAL;
  e->plan = *plan;
  e->peer_w = pw;
  e->peer_digests = calloc((size_t)peer_points_total(e), sizeof *e->peer_digests);
  e->peer_fp = calloc((size_t)peer_points_total(e), CR_FP_BYTES);
  if (e->peer_digests == NULL || e->peer_fp == NULL)
    return CR_ENOMEM;
  if (plan->self_receives) {
    e->own_digests = calloc((size_t)own_points(e), sizeof *e->own_digests);
    if (e->own_digests == NULL)
      return CR_ENOMEM;
  }
  return 0;
}

static uint32_t get_u32be(const uint8_t *p) {
  return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}

static void put_u32be(uint8_t *p, uint32_t v) {
  p[0] = (uint8_t)(v >> 24);
  p[1] = (uint8_t)(v >> 16);
  p[2] = (uint8_t)(v >> 8);
  p[3] = (uint8_t)v;
}

/* ---- own set ------------------------------------------------------------ */

/* Grows the message arena to hold `need` more bytes after `used`, keeping
 * what is there; the old block held match keys, so it is wiped. */
static int arena_reserve(uint8_t **buf, size_t *cap, size_t used, size_t need) {
  if (*buf != NULL && used + need <= *cap)
    return 0;
  size_t ncap = 2 * (used + need) + 64;
  uint8_t *bigger = malloc(ncap);
  if (bigger == NULL)
    return CR_ENOMEM;
  if (*buf != NULL) {
    memcpy(bigger, *buf, used);
    sodium_memzero(*buf, *cap);
    free(*buf);
  }
  *buf = bigger;
  *cap = ncap;
  return 0;
}

/* The message of own point p = element * width + slot at msg + *used:
 * template_sha256 || u8(len m) || m || v (design §4), m the name of the
 * value's match key so an e-mail never matches a phone; or for a pad
 * "cleanroom/v1/pad" || seed || u64 index, a fresh uniform element that
 * matches no key (index = element * width + slot, so every pad of a session,
 * a padding element's or a record's missing key, is distinct; with one key
 * it is the element's index). */
static int own_message(cr_engine *e, uint32_t idx, size_t slot, uint8_t **msg, size_t *cap,
                       size_t *used, size_t *len) {
  const cr_dataset *d = e->data;
  const cr_template *t = e->cfg.tmpl;
  size_t w = cr_engine_own_width(e);
  uint32_t v = idx >= e->real_n ? CR_DATASET_NO_VALUE
               : w > 1          ? d->slots[(size_t)idx * w + slot]
                                : idx;
  int rc;
  if (v == CR_DATASET_NO_VALUE) {
    size_t need = sizeof PAD_LABEL - 1 + CR_PAD_SEED_BYTES + 8;
    uint64_t index = (uint64_t)idx * w + slot;
    if ((rc = arena_reserve(msg, cap, *used, need)) != 0)
      return rc;
    uint8_t *pm = *msg + *used;
    memcpy(pm, PAD_LABEL, sizeof PAD_LABEL - 1);
    memcpy(pm + sizeof PAD_LABEL - 1, e->pad_seed, CR_PAD_SEED_BYTES);
    for (int b = 0; b < 8; b++)
      pm[need - 8 + b] = (uint8_t)(index >> (56 - 8 * b));
    *len = need;
  } else {
    const char *name = t->match_keys[d->value_key != NULL ? d->value_key[v] : 0].name;
    size_t mlen = strlen(name);
    uint8_t ml = (uint8_t)(mlen > 255 ? 255 : mlen);
    size_t vlen = d->off[v + 1] - d->off[v];
    size_t need = CR_SHA256_BYTES + 1 + ml + vlen;
    if ((rc = arena_reserve(msg, cap, *used, need)) != 0)
      return rc;
    uint8_t *mp = *msg + *used;
    memcpy(mp, t->sha256, CR_SHA256_BYTES);
    mp[CR_SHA256_BYTES] = ml;
    memcpy(mp + CR_SHA256_BYTES + 1, name, ml);
    memcpy(mp + CR_SHA256_BYTES + 1 + ml, d->bytes + d->off[v], vlen);
    *len = need;
  }
  *used += *len;
  return 0;
}

/* ---- the batched crypto: this process's pool, or the party's processes -- */

static _Atomic(const cr_engine_offload *) g_offload;

void cr_engine_set_offload(const cr_engine_offload *o) { g_offload = o; }

typedef struct hb_job {
  const cr_suite *suite;
  const uint8_t *k, *msgs;
  const size_t *offs, *lens;
  uint8_t *points;
} hb_job;

/* k * HashToGroup(message) for messages [begin, end), CR_BLIND_GROUP at a
 * time through the suite's batch entry point. */
static int hb_range(void *ctx, size_t begin, size_t end) {
  hb_job *j = ctx;
  size_t pb = j->suite->point_bytes;
  const uint8_t *msgs[CR_BLIND_GROUP];
  int rc = 0;
  for (size_t g = begin; g < end && rc == 0; g += CR_BLIND_GROUP) {
    size_t m = end - g < CR_BLIND_GROUP ? end - g : CR_BLIND_GROUP;
    for (size_t q = 0; q < m; q++)
      msgs[q] = j->msgs + j->offs[g + q];
    rc = cr_suite_hash_blind_batch(j->suite, j->points + g * pb, j->k, msgs, j->lens + g, m);
  }
  return rc;
}

/* The pool's threads write points through the job. */
// NOLINTBEGIN(readability-non-const-parameter)
int cr_engine_hash_blind_batch(cr_pool *pool, const cr_suite *suite, const uint8_t *k,
                               const uint8_t *msgs, const size_t *lens, size_t n, uint8_t *points) {
  // NOLINTEND(readability-non-const-parameter)
  if (n == 0)
    return 0;
  size_t *offs = malloc(n * sizeof *offs);
  if (offs == NULL)
    return CR_ENOMEM;
  size_t at = 0;
  for (size_t i = 0; i < n; i++) {
    offs[i] = at;
    at += lens[i];
  }
  hb_job job = {suite, k, msgs, offs, lens, points};
  int rc = cr_pool_for(pool, n, CR_POOL_CHUNK, hb_range, &job);
  free(offs);
  return rc;
}

typedef struct rd_job {
  const cr_suite *suite;
  const uint8_t *k, *session_id, *points;
  size_t digest_bytes;
  uint8_t *digests;
  uint64_t bad; /* lowest index of an invalid point */
  pthread_mutex_t mu;
} rd_job;

/* k * P and its digest for points [begin, end), CR_BLIND_GROUP at a time. */
static int rd_range(void *ctx, size_t begin, size_t end) {
  rd_job *j = ctx;
  size_t pb = j->suite->point_bytes, dl = j->digest_bytes;
  uint8_t y[CR_BLIND_GROUP * CR_MAX_POINT_BYTES];
  int rc = 0;
  for (size_t g = begin; g < end; g += CR_BLIND_GROUP) {
    size_t m = end - g < CR_BLIND_GROUP ? end - g : CR_BLIND_GROUP;
    size_t bad = SIZE_MAX;
    if (cr_suite_reblind_batch(j->suite, y, j->k, j->points + g * pb, m, &bad) != 0) {
      uint64_t i = g + (bad < m ? bad : 0);
      pthread_mutex_lock(&j->mu);
      if (i < j->bad)
        j->bad = i;
      pthread_mutex_unlock(&j->mu);
      rc = CR_EPROTO;
      break;
    }
    for (size_t q = 0; q < m; q++)
      cr_digest(j->digests + (g + q) * dl, dl, j->session_id, y + q * pb, pb);
  }
  sodium_memzero(y, sizeof y);
  return rc;
}

int cr_engine_reblind_digest_batch(cr_pool *pool, const cr_suite *suite, const uint8_t *k,
                                   const uint8_t *session_id, size_t digest_bytes,
                                   const uint8_t *points, size_t n, uint8_t *digests,
                                   uint64_t *bad) {
  *bad = UINT64_MAX;
  if (digest_bytes == 0 || digest_bytes > CR_MAX_DIGEST_BYTES)
    return CR_EINVAL;
  rd_job job;
  job.suite = suite;
  job.k = k;
  job.session_id = session_id;
  job.points = points;
  job.digest_bytes = digest_bytes;
  job.digests = digests;
  job.bad = UINT64_MAX;
  pthread_mutex_init(&job.mu, NULL);
  int rc = cr_pool_for(pool, n, CR_POOL_CHUNK, rd_range, &job);
  pthread_mutex_destroy(&job.mu);
  if (rc != 0 && job.bad != UINT64_MAX) {
    *bad = job.bad;
    rc = CR_EPROTO;
  }
  return rc;
}

/* The engine's two heavy steps, through the offload when one is set. */
static int do_hash_blind(cr_engine *e, const uint8_t *msgs, const size_t *lens, size_t n,
                         uint8_t *points) {
  const cr_engine_offload *o = g_offload;
  if (o != NULL)
    return o->hash_blind(o->ctx, e->cfg.pool, e->suite, e->k, msgs, lens, n, points, &e->err);
  return cr_engine_hash_blind_batch(e->cfg.pool, e->suite, e->k, msgs, lens, n, points);
}

static int do_reblind_digest(cr_engine *e, const uint8_t *points, size_t n, uint8_t *digests,
                             uint64_t *bad) {
  const cr_engine_offload *o = g_offload;
  *bad = UINT64_MAX;
  if (o != NULL)
    return o->reblind_digest(o->ctx, e->cfg.pool, e->suite, e->k, e->plan.session_id,
                             e->plan.digest_bytes, points, n, digests, bad, &e->err);
  return cr_engine_reblind_digest_batch(e->cfg.pool, e->suite, e->k, e->plan.session_id,
                                        e->plan.digest_bytes, points, n, digests, bad);
}

/* k * HashToGroup(message) for own elements [first, first + n) of the send
 * order, each element's points in key order (points p = element * width +
 * slot, contiguous): the messages first, then the batch (on the pool or the
 * party's processes), then the labels and our fingerprints. */
static int blind_elements(cr_engine *e, uint64_t first, size_t n, uint8_t *points,
                          uint8_t *labels) {
  const cr_dataset *d = e->data;
  size_t pb = e->suite->point_bytes, w = cr_engine_own_width(e), np = n * w;
  uint8_t *msg = NULL;
  size_t cap = 0, used = 0;
  size_t *lens = malloc((np ? np : 1) * sizeof *lens);
  int rc = lens == NULL ? CR_ENOMEM : 0;
  for (size_t p = 0; p < np && rc == 0; p++)
    rc = own_message(e, e->order[first + p / w], p % w, &msg, &cap, &used, &lens[p]);
  if (rc == 0)
    rc = do_hash_blind(e, msg, lens, np, points);
  for (size_t i = 0; i < n && rc == 0 && labels != NULL; i++) {
    uint32_t idx = e->order[first + i];
    put_u32be(labels + 4 * i, e->wire_label     ? e->wire_label[idx]
                              : idx < e->real_n ? d->labels[idx]
                                                : 0);
  }
  for (size_t p = 0; p < np && rc == 0; p++)
    memcpy(e->own_fp + (first * w + p) * CR_FP_BYTES, points + p * pb, CR_FP_BYTES);
  /* The arena held match keys: wipe it. */
  if (msg != NULL) {
    sodium_memzero(msg, cap);
    free(msg);
  }
  free(lens);
  return rc;
}

int cr_engine_blind(cr_engine *e, uint64_t first, size_t n, uint8_t *points, uint8_t *labels) {
  if (e->stream)
    return e->k == NULL ? CR_EINVAL : blind_stream(e, first, n, points, labels);
  if (e->k == NULL || e->order == NULL || first > e->own_n || n > e->own_n - first ||
      (labels != NULL && e->wire_label == NULL))
    return CR_EINVAL;
  return blind_elements(e, first, n, points, labels);
}

/* ---- the peer's set ----------------------------------------------------- */

/* k * P and its digest for each point of a batch, into the tables by
 * arrival; an element's label goes with each of its points. */
int cr_engine_reblind(cr_engine *e, const uint8_t *points, const uint8_t *labels, size_t n,
                      uint64_t *bad) {
  *bad = UINT64_MAX;
  if (e->stream)
    return e->k == NULL ? CR_EINVAL : reblind_stream(e, points, labels, n, bad);
  if (e->k == NULL || e->peer_digests == NULL ||
      n > (peer_points_total(e) - e->peer_points) / e->peer_w)
    return CR_EINVAL;
  size_t w = e->peer_w, pb = e->suite->point_bytes, dl = e->plan.digest_bytes;
  n *= w; /* points from here */
  const uint8_t *lab = e->plan.peer_grouped ? labels : NULL;
  uint8_t *dgs = malloc((n ? n : 1) * dl);
  if (dgs == NULL)
    return CR_ENOMEM;
  int rc = do_reblind_digest(e, points, n, dgs, bad);
  if (rc != 0) {
    sodium_memzero(dgs, (n ? n : 1) * dl);
    free(dgs);
    return *bad != UINT64_MAX ? violation(e, CR_RULE_POINT_INVALID) : rc;
  }
  for (size_t i = 0; i < n; i++) {
    memcpy(e->peer_fp + (e->peer_points + i) * CR_FP_BYTES, points + i * pb, CR_FP_BYTES);
    cr_engine_digest *dg = &e->peer_digests[e->peer_points + i];
    memcpy(dg->d, dgs + i * dl, dl);
    dg->label = lab ? get_u32be(lab + 4 * (i / w)) : 0;
    dg->index = (uint32_t)(e->peer_points + i);
  }
  sodium_memzero(dgs, n * dl);
  free(dgs);
  e->peer_points += n;
  return 0;
}

static int cmp_digest(const void *a, const void *b) {
  return memcmp(((const cr_engine_digest *)a)->d, ((const cr_engine_digest *)b)->d,
                CR_ENGINE_DIGEST_SLOT);
}

static int cmp_label_digest(const void *a, const void *b) {
  const cr_engine_digest *x = a, *y = b;
  if (x->label != y->label)
    return x->label < y->label ? -1 : 1;
  return memcmp(x->d, y->d, CR_ENGINE_DIGEST_SLOT);
}

/* A record of the peer's: its digests, width of them, in key order. */
typedef struct rec_ref {
  const cr_engine_digest *d;
  size_t w;
} rec_ref;

/* Label, then the digests in key order. */
static int cmp_label_record(const void *a, const void *b) {
  const rec_ref *x = a, *y = b;
  if (x->d->label != y->d->label)
    return x->d->label < y->d->label ? -1 : 1;
  for (size_t k = 0; k < x->w; k++) {
    int c = memcmp(x->d[k].d, y->d[k].d, CR_ENGINE_DIGEST_SLOT);
    if (c != 0)
      return c;
  }
  return 0;
}

/* count with records: records sorted, each record's digests kept together
 * in key order (the peer counts a record once whatever matches in it). */
static int sort_records(cr_engine *e) {
  size_t n = (size_t)e->plan.peer_n, w = e->peer_w;
  rec_ref *r = malloc((n ? n : 1) * sizeof *r);
  cr_engine_digest *out = malloc((n > 0 ? n * w : 1) * sizeof *out);
  if (r == NULL || out == NULL) {
    free(r);
    free(out);
    return CR_ENOMEM;
  }
  for (size_t i = 0; i < n; i++) {
    r[i].d = &e->peer_digests[i * w];
    r[i].w = w;
  }
  qsort(r, n, sizeof *r, cmp_label_record);
  for (size_t i = 0; i < n; i++)
    memcpy(&out[i * w], r[i].d, w * sizeof *out);
  free(r);
  free_table(&e->peer_digests, n * w);
  e->peer_digests = out;
  return 0;
}

int cr_engine_peer_done(cr_engine *e) {
  size_t n = (size_t)peer_points_total(e);
  if (e->stream)
    return peer_done_stream(e);
  if (e->peer_digests == NULL || e->peer_points != peer_points_total(e))
    return CR_EINVAL;
  if (e->plan.self_receives) {
    /* Our own lookup table of the peer's digests, by digest; or, when the
     * peer's elements are records, those records as they arrived. */
    e->peer_match = malloc(n * sizeof *e->peer_match);
    if (e->peer_match == NULL)
      return CR_ENOMEM;
    memcpy(e->peer_match, e->peer_digests, n * sizeof *e->peer_match);
    if (e->peer_w == 1)
      qsort(e->peer_match, n, sizeof *e->peer_match, cmp_digest);
  }
  /* count: sorted per label, which hides the order the peer sent its points
   * in (design §5). members: the peer's own order, so it can tell which of
   * its records matched; that is what the template grants the owner. */
  if (e->plan.peer_receives && !e->plan.members) {
    if (e->peer_w == 1)
      qsort(e->peer_digests, n, sizeof *e->peer_digests, cmp_label_digest);
    else if (sort_records(e) != 0)
      return CR_ENOMEM;
  }
  if (!e->plan.peer_receives)
    free_table(&e->peer_digests, n);
  e->peer_finished = 1;
  return 0;
}

/* ---- own digests back --------------------------------------------------- */

int cr_engine_own_add(cr_engine *e, const uint8_t *plain, uint64_t n, uint32_t label,
                      int continues) {
  size_t l = e->plan.digest_bytes, w = cr_engine_own_width(e);
  if (e->stream)
    return own_add_stream(e, plain, n, label, continues);
  if (e->own_digests == NULL || n > own_points(e) - e->own_digests_n || n % w != 0 ||
      e->own_digests_n % w != 0)
    return CR_EINVAL;
  for (uint64_t i = 0; i < n; i++) {
    cr_engine_digest *d = &e->own_digests[e->own_digests_n + i];
    memcpy(d->d, plain + i * l, l);
    d->label = label;
    d->index = (uint32_t)(e->own_digests_n + i);
  }
  /* Elements strictly increasing: an equal neighbour would count a match
   * twice (a record compares its digests in key order). */
  if (!e->plan.members) {
    for (uint64_t i = 0; i < n; i += w) {
      const cr_engine_digest *cur = &e->own_digests[e->own_digests_n + i];
      if (!continues && i == 0)
        continue;
      const cr_engine_digest *prev = cur - w;
      int c = 0;
      for (size_t k = 0; k < w && c == 0; k++)
        c = memcmp(prev[k].d, cur[k].d, CR_ENGINE_DIGEST_SLOT);
      if (c >= 0)
        return violation(e, CR_RULE_DIGEST_ORDER);
    }
  }
  e->own_digests_n += n;
  if (n > 0)
    memcpy(e->own_last, e->own_digests[e->own_digests_n - 1].d, sizeof e->own_last);
  return 0;
}

const uint8_t *cr_engine_own_last(const cr_engine *e) {
  return e->own_digests_n > 0 ? e->own_last : NULL;
}

/* ---- the result --------------------------------------------------------- */

static int cmp_fp(const void *a, const void *b) { return memcmp(a, b, CR_FP_BYTES); }

/* The rules on what the peer sent that matching depends on (engine.h).
 * *sorted_own gets our returned digests sorted by digest (the caller frees
 * it, wiped), for matching the peer's records against. */
static int check_peer(cr_engine *e, cr_engine_digest **sorted_own) {
  size_t own = (size_t)own_points(e), peer = (size_t)peer_points_total(e);
  int rc = 0;
  uint8_t *fp = malloc(own * CR_FP_BYTES);
  uint8_t *pfp = malloc(peer * CR_FP_BYTES);
  cr_engine_digest *mine = malloc(own * sizeof *mine), *theirs = NULL;
  *sorted_own = NULL;
  if (fp == NULL || pfp == NULL || mine == NULL) {
    rc = CR_ENOMEM;
    goto out;
  }
  /* Reflection: our own points sent back as the peer's set. */
  memcpy(fp, e->own_fp, own * CR_FP_BYTES);
  qsort(fp, own, CR_FP_BYTES, cmp_fp);
  for (size_t i = 0; i < peer && rc == 0; i++)
    if (bsearch(e->peer_fp + i * CR_FP_BYTES, fp, own, CR_FP_BYTES, cmp_fp) != NULL)
      rc = violation(e, CR_RULE_POINT_REFLECTED);
  /* The peer's set is de-duplicated (and its pads are distinct): a point
   * twice is a lie. */
  memcpy(pfp, e->peer_fp, peer * CR_FP_BYTES);
  qsort(pfp, peer, CR_FP_BYTES, cmp_fp);
  for (size_t i = 1; i < peer && rc == 0; i++)
    if (memcmp(pfp + (i - 1) * CR_FP_BYTES, pfp + i * CR_FP_BYTES, CR_FP_BYTES) == 0)
      rc = violation(e, CR_RULE_POINT_REPEATED);
  if (rc)
    goto out;
  /* Our points are distinct, so are their digests (up to the 2^-40 false
   * match the digest length allows): a digest twice would count twice, or
   * move a match into another of our records. */
  memcpy(mine, e->own_digests, own * sizeof *mine);
  qsort(mine, own, sizeof *mine, cmp_digest);
  for (size_t i = 1; i < own && rc == 0; i++)
    if (memcmp(mine[i - 1].d, mine[i].d, CR_ENGINE_DIGEST_SLOT) == 0)
      rc = violation(e, CR_RULE_DIGEST_REPEATED);
  /* Echo: the digests we returned to the peer, handed back as ours. */
  if (rc == 0 && e->plan.peer_receives && own == peer) {
    const cr_engine_digest *ps = e->peer_match;
    if (e->peer_w > 1) {
      if ((theirs = malloc(peer * sizeof *theirs)) == NULL) {
        rc = CR_ENOMEM;
        goto out;
      }
      memcpy(theirs, e->peer_match, peer * sizeof *theirs);
      qsort(theirs, peer, sizeof *theirs, cmp_digest);
      ps = theirs;
    }
    size_t i = 0;
    while (i < own && memcmp(mine[i].d, ps[i].d, CR_ENGINE_DIGEST_SLOT) == 0)
      i++;
    if (i == own)
      rc = violation(e, CR_RULE_DIGEST_ECHO);
  }
out:
  if (theirs) {
    sodium_memzero(theirs, peer * sizeof *theirs);
    free(theirs);
  }
  if (rc == 0) {
    *sorted_own = mine;
  } else if (mine) {
    sodium_memzero(mine, own * sizeof *mine);
    free(mine);
  }
  free(fp);
  free(pfp);
  return rc;
}

/* What counting found, before any threshold. */
typedef struct tally {
  uint64_t total;
  uint64_t *cells;           /* grouped */
  uint64_t by_mask[1u << 8]; /* records by the set of keys they matched on */
} tally;

/*
 * Counts one element of the counted side: hits[k] is the other side's
 * digest its key k matched (NULL: none), rec_label its label, rec_role the
 * role it belongs to. Returns the mask of matched keys (0: not counted).
 */
static unsigned count_element(tally *t, const cr_engine_digest *const *hits, size_t w,
                              uint32_t rec_label, cr_role rec_role, const size_t *nlabels) {
  unsigned mask = 0;
  size_t np = nlabels[CR_ROLE_PROVIDER], nc = nlabels[CR_ROLE_CONSUMER];
  for (size_t k = 0; k < w; k++)
    if (hits[k] != NULL)
      mask |= 1u << k;
  if (mask == 0)
    return 0;
  t->total++;
  t->by_mask[mask]++;
  if (t->cells != NULL) {
    /* Once per label of the other side among the hits. */
    for (size_t k = 0; k < w; k++) {
      if (hits[k] == NULL)
        continue;
      size_t first = 0;
      while (first < k && (hits[first] == NULL || hits[first]->label != hits[k]->label))
        first++;
      if (first < k)
        continue;
      uint32_t lab[CR_ROLE_COUNT];
      lab[rec_role] = rec_label;
      lab[cr_role_other(rec_role)] = hits[k]->label;
      if (lab[CR_ROLE_PROVIDER] < np && lab[CR_ROLE_CONSUMER] < nc)
        t->cells[(size_t)lab[CR_ROLE_PROVIDER] * nc + lab[CR_ROLE_CONSUMER]]++;
    }
  }
  return mask;
}

/* The per-key breakdown of a count (engine.h, cr_engine_result). */
static void key_breakdown(const tally *t, size_t nkeys, uint64_t min_count, int suppressed,
                          cr_engine_result *out) {
  int withhold = suppressed;
  out->nkeys = nkeys;
  for (unsigned m = 1; m < (1u << nkeys); m++)
    if (t->by_mask[m] > 0 && t->by_mask[m] < min_count)
      withhold = 1;
  for (size_t k = 0; k < nkeys; k++) {
    uint64_t v = 0;
    for (unsigned m = 1; m < (1u << nkeys); m++)
      if (m & (1u << k))
        v += t->by_mask[m];
    out->key_suppressed[k] = (uint8_t)(withhold || v < min_count);
    out->key_count[k] = out->key_suppressed[k] ? 0 : v;
  }
}

static void free_result(cr_engine_result *out, uint64_t real_n) {
  if (out->matched) {
    sodium_memzero(out->matched, (size_t)(real_n + 7) / 8);
    free(out->matched);
  }
  if (out->matched_on) {
    sodium_memzero(out->matched_on, (size_t)real_n);
    free(out->matched_on);
  }
  free(out->cells);
  memset(out, 0, sizeof *out);
}

/* ---- one match key: streaming own set, sorter tables -------------------- */

/* The message of a pad at send position `pos`, or of a key value of the
 * template's match key (own_message's layout), appended to the arena. */
static int stream_message(cr_engine *e, const uint8_t *key, size_t len, uint64_t pos, uint8_t **msg,
                          size_t *cap, size_t *used, size_t *mlen) {
  const cr_template *t = e->cfg.tmpl;
  int rc;
  if (key == NULL) {
    size_t need = sizeof PAD_LABEL - 1 + CR_PAD_SEED_BYTES + 8;
    if ((rc = arena_reserve(msg, cap, *used, need)) != 0)
      return rc;
    uint8_t *pm = *msg + *used;
    memcpy(pm, PAD_LABEL, sizeof PAD_LABEL - 1);
    memcpy(pm + sizeof PAD_LABEL - 1, e->pad_seed, CR_PAD_SEED_BYTES);
    for (int b = 0; b < 8; b++)
      pm[need - 8 + b] = (uint8_t)(pos >> (56 - 8 * b));
    *mlen = need;
  } else {
    const char *name = t->match_keys[0].name;
    size_t nl = strlen(name);
    uint8_t ml = (uint8_t)(nl > 255 ? 255 : nl);
    size_t need = CR_SHA256_BYTES + 1 + ml + len;
    if ((rc = arena_reserve(msg, cap, *used, need)) != 0)
      return rc;
    uint8_t *mp = *msg + *used;
    memcpy(mp, t->sha256, CR_SHA256_BYTES);
    mp[CR_SHA256_BYTES] = ml;
    memcpy(mp + CR_SHA256_BYTES + 1, name, ml);
    memcpy(mp + CR_SHA256_BYTES + 1 + ml, key, len);
    *mlen = need;
  }
  *used += *mlen;
  return 0;
}

/* Draws what send position e->pos holds: a pad with probability
 * pads_left / positions_left (sequential sampling: every interleaving of
 * the pads with the dataset's order is equally likely), its label in
 * proportion to the pads left per label. *pad_label gets the pad's label,
 * or UINT32_MAX for the dataset's next element. */
static int draw_position(cr_engine *e, uint32_t *pad_label) {
  uint64_t left = e->own_n - e->pos;
  uint32_t r = 0;
  int rc;
  *pad_label = UINT32_MAX;
  if (e->pads_total_left == 0)
    return 0;
  if (e->pads_total_left < left) {
    if ((rc = uniform_u32(e, e->rb, (uint32_t)left, &r)) != 0)
      return rc;
    if (r >= e->pads_total_left)
      return 0;
  }
  r = 0;
  if (e->nlabels > 1 && (rc = uniform_u32(e, e->rb, (uint32_t)e->pads_total_left, &r)) != 0)
    return rc;
  size_t l = 0;
  while (r >= e->pads_left[l]) {
    r -= (uint32_t)e->pads_left[l];
    l++;
  }
  e->pads_left[l]--;
  e->pads_total_left--;
  *pad_label = (uint32_t)l;
  return 0;
}

static int blind_stream(cr_engine *e, uint64_t first, size_t n, uint8_t *points, uint8_t *labels) {
  size_t pb = e->suite->point_bytes, cap = (n ? n : 1) * 96, used = 0;
  uint8_t *arena = malloc(cap);
  size_t *offs = malloc((n ? n : 1) * sizeof *offs), *lens = malloc((n ? n : 1) * sizeof *lens);
  int rc = 0;
  if (first != e->pos || n > e->own_n - e->pos || e->it == NULL ||
      (labels != NULL && e->label_map == NULL)) {
    rc = CR_EINVAL;
    goto out;
  }
  if (offs == NULL || lens == NULL || arena == NULL) {
    rc = CR_ENOMEM;
    goto out;
  }
  /* Our points' fingerprints serve the checks made when matching: a side
   * that receives nothing keeps none. */
  if (e->own_fp_s == NULL && (!e->prepared || e->plan.self_receives) &&
      (rc = cr_sorter_new(&e->own_fp_s, e->cfg.spill, CR_FP_BYTES, "our blinded points",
                          &e->err)) != 0)
    goto out;
  for (size_t i = 0; i < n && rc == 0; i++) {
    uint32_t wl = 0, pad_label;
    const uint8_t *key = NULL;
    size_t len = 0;
    if ((rc = draw_position(e, &pad_label)) != 0)
      break;
    if (pad_label != UINT32_MAX) {
      wl = pad_label;
      e->is_pad[e->pos / 8] |= (uint8_t)(1u << (e->pos % 8));
    } else {
      uint32_t dl = 0;
      int got = cr_dataset_iter_next(e->it, &key, &len, &dl, &e->err);
      if (got <= 0) {
        rc = got == 0 ? CR_EINVAL : got; /* 0: fewer elements than d->n */
        break;
      }
      if (e->label_map != NULL) {
        if (dl >= e->data_nlabels) {
          rc = CR_EINVAL;
          break;
        }
        wl = e->label_map[dl];
      }
    }
    if (labels)
      put_u32be(labels + 4 * i, wl);
    offs[i] = used;
    rc = stream_message(e, key, len, e->pos, &arena, &cap, &used, &lens[i]);
    e->pos++;
  }
  if (rc == 0) {
    rc = do_hash_blind(e, arena, lens, n, points);
  }
  for (size_t i = 0; i < n && rc == 0 && e->own_fp_s != NULL; i++)
    rc = cr_sorter_add(e->own_fp_s, points + i * pb, NULL, 0, &e->err);
  if (rc == 0 && e->pos == e->own_n) {
    /* Every element sent: the dataset holds no more. */
    const uint8_t *key;
    size_t len;
    uint32_t dl;
    rc = cr_dataset_iter_next(e->it, &key, &len, &dl, &e->err);
    if (rc > 0)
      rc = CR_EINVAL;
    if (rc == 0 && e->consume_data)
      cr_dataset_iter_release(e->it); /* sent: what is left of it goes too */
    else
      cr_dataset_iter_free(e->it);
    e->it = NULL;
    if (rc == 0 && e->own_fp_s != NULL)
      rc = cr_sorter_finish(e->own_fp_s, &e->err);
  }
out:
  /* The arena held match keys. */
  if (arena) {
    sodium_memzero(arena, cap);
    free(arena);
  }
  free(offs);
  free(lens);
  if (rc != 0 && e->it != NULL) {
    /* A failed call leaves the order broken: no later call may go on. */
    cr_dataset_iter_free(e->it);
    e->it = NULL;
  }
  return rc;
}

/* A sorter's memory per record: key, payload and its length, two index
 * entries (see docs/memory.md). */
static uint64_t table_bytes(uint64_t records, size_t key, size_t payload) {
  return records * (key + payload + 1 + 32);
}

/* Decides, once both sizes are known, whether the session's tables stay in
 * memory: when all of them fit in what the budget has left, they do and
 * nothing touches the disk. Otherwise each one that is written spills in
 * runs of about 1/CR_SPILL_RUNS of its size, within its share of the
 * budget: the tables go to disk anyway, and holding more of them only
 * saves runs. So a small side facing a large one keeps its own (small)
 * tables in memory and streams the partner's through small runs, and a
 * node's memory stays flat as the sets grow. */
static void plan_memory(cr_engine *e) {
  if (e->cfg.spill == NULL)
    return;
  size_t dl = e->plan.digest_bytes;
  uint64_t own = e->own_n, peer = e->plan.peer_n;
  int own_grouped = e->label_map != NULL, members = e->plan.members;
  struct {
    cr_sorter *s;
    uint64_t bytes;
  } t[5];
  size_t nt = 0;
  uint64_t sum = 0;
  if (e->plan.self_receives) {
    t[nt].s = e->own_fp_s;
    t[nt++].bytes = table_bytes(own, CR_FP_BYTES, 0);
    t[nt].s = e->peer_fp_s;
    t[nt++].bytes = table_bytes(peer, CR_FP_BYTES, 0);
    t[nt].s = e->peer_match_s;
    t[nt++].bytes = table_bytes(peer, dl, e->plan.peer_grouped ? 4 : 0);
    t[nt].s = e->own_dg_s;
    t[nt++].bytes = table_bytes(own, dl, (own_grouped ? 4 : 0) + (members ? 4 : 0));
  }
  if (e->peer_ret_s != NULL && e->peer_ret_s != e->peer_match_s) {
    t[nt].s = e->peer_ret_s;
    t[nt++].bytes = table_bytes(peer, dl + (e->plan.peer_grouped ? 4 : 0), 0);
  }
  for (size_t i = 0; i < nt; i++)
    sum += t[i].bytes;
  cr_spill_stats st;
  cr_spill_stats_get(e->cfg.spill, &st);
  uint64_t avail = st.memory_used < st.memory_bytes ? st.memory_bytes - st.memory_used : 0;
  if (sum == 0 || sum <= avail)
    return;
  for (size_t i = 0; i < nt; i++) {
    uint64_t share = (uint64_t)((double)avail * ((double)t[i].bytes / (double)sum));
    uint64_t cap = t[i].bytes / CR_SPILL_RUNS;
    if (cap < CR_SPILL_RUN_MIN)
      cap = CR_SPILL_RUN_MIN;
    if (cap > share)
      cap = share; /* cr_sorter_set_limit keeps its own minimum */
    cr_sorter_set_limit(t[i].s, cap);
  }
}

/* The peer's digests in the order they go back: count, by label then
 * digest (key: u32 label || digest; when the peer is not grouped, the
 * matching table itself, by digest); members, in arrival order (a log). */
static int prepare_stream(cr_engine *e, const cr_engine_plan *plan, size_t pw) {
  size_t dl = plan->digest_bytes;
  int rc = 0;
  if (e->prepared || plan->digest_bytes == 0 || plan->digest_bytes > CR_MAX_DIGEST_BYTES ||
      plan->peer_n == 0 || plan->peer_n > CR_MAX_SET_SIZE || pw != 1)
    return CR_EINVAL;
  e->plan = *plan;
  e->peer_w = 1;
  e->prepared = 1;
  /* Fingerprints and the matching table serve the side that matches. */
  if (plan->self_receives && ((rc = cr_sorter_new(&e->peer_fp_s, e->cfg.spill, CR_FP_BYTES,
                                                  "the partner's points", &e->err)) != 0 ||
                              (rc = cr_sorter_new(&e->peer_match_s, e->cfg.spill, dl,
                                                  "the partner's digests", &e->err)) != 0))
    return rc;
  if (plan->peer_receives) {
    if (plan->members)
      rc = cr_sorter_new(&e->peer_ret_s, e->cfg.spill, 0, "the partner's digests to return",
                         &e->err);
    else if (!plan->peer_grouped && e->peer_match_s != NULL)
      e->peer_ret_s = e->peer_match_s; /* already in digest order */
    else
      rc = cr_sorter_new(&e->peer_ret_s, e->cfg.spill, plan->peer_grouped ? 4 + dl : dl,
                         "the partner's digests to return", &e->err);
    if (rc != 0)
      return rc;
  }
  /* Our fingerprints (made here, not at the first send, so the plan below
   * sees every table). */
  if (rc == 0 && plan->self_receives && e->own_fp_s == NULL)
    rc = cr_sorter_new(&e->own_fp_s, e->cfg.spill, CR_FP_BYTES, "our blinded points", &e->err);
  if (rc == 0 && plan->self_receives)
    rc = cr_sorter_new(&e->own_dg_s, e->cfg.spill, dl, "our digests", &e->err);
  if (rc == 0)
    plan_memory(e);
  /* Nothing reads our elements after this session but the send (unless our
   * matched rows are written from them): their spill goes as they go, and
   * what is left once all are sent. */
  if (rc == 0 && e->cfg.release_data && e->it != NULL && !(plan->members && plan->self_receives)) {
    cr_dataset_iter_consume(e->it);
    e->consume_data = 1;
  }
  return rc;
}

static int reblind_stream(cr_engine *e, const uint8_t *points, const uint8_t *labels, size_t n,
                          uint64_t *bad) {
  size_t pb = e->suite->point_bytes, dl = e->plan.digest_bytes;
  uint8_t key[4 + CR_MAX_DIGEST_BYTES], lab[4] = {0};
  int rc;
  if (!e->prepared || e->peer_finished || n > peer_points_total(e) - e->peer_points ||
      (e->plan.peer_grouped && labels == NULL))
    return CR_EINVAL;
  uint8_t *digests = malloc((n ? n : 1) * dl);
  if (digests == NULL)
    return CR_ENOMEM;
  rc = do_reblind_digest(e, points, n, digests, bad);
  if (rc != 0 && *bad != UINT64_MAX)
    rc = violation(e, CR_RULE_POINT_INVALID);
  int grouped = e->plan.peer_grouped;
  for (size_t i = 0; i < n && rc == 0; i++) {
    const uint8_t *dg = digests + i * dl;
    if (grouped)
      memcpy(lab, labels + 4 * i, 4);
    if (e->peer_fp_s != NULL)
      rc = cr_sorter_add(e->peer_fp_s, points + i * pb, NULL, 0, &e->err);
    if (rc == 0 && e->peer_match_s != NULL)
      rc = cr_sorter_add(e->peer_match_s, dg, grouped ? lab : NULL, grouped ? 4 : 0, &e->err);
    if (rc == 0 && e->peer_ret_s != NULL && e->peer_ret_s != e->peer_match_s) {
      if (e->plan.members) {
        rc = cr_sorter_add(e->peer_ret_s, NULL, dg, dl, &e->err);
      } else if (!grouped) {
        rc = cr_sorter_add(e->peer_ret_s, dg, NULL, 0, &e->err);
      } else {
        memcpy(key, lab, 4);
        memcpy(key + 4, dg, dl);
        rc = cr_sorter_add(e->peer_ret_s, key, NULL, 0, &e->err);
      }
    }
  }
  sodium_memzero(key, sizeof key);
  sodium_memzero(digests, (n ? n : 1) * dl);
  free(digests);
  if (rc == 0)
    e->peer_points += n;
  return rc;
}

static int peer_done_stream(cr_engine *e) {
  int rc = 0;
  if (!e->prepared || e->peer_finished || e->peer_points != peer_points_total(e))
    return CR_EINVAL;
  e->peer_finished = 1;
  if (e->peer_fp_s != NULL && (rc = cr_sorter_finish(e->peer_fp_s, &e->err)) != 0)
    return rc;
  if (e->peer_match_s != NULL && (rc = cr_sorter_finish(e->peer_match_s, &e->err)) != 0)
    return rc;
  if (e->peer_ret_s != NULL && e->peer_ret_s != e->peer_match_s &&
      (rc = cr_sorter_finish(e->peer_ret_s, &e->err)) != 0)
    return rc;
  if (e->peer_ret_s != NULL)
    rc = cr_sorter_iter_new(e->peer_ret_s, &e->ret_it, &e->err);
  return rc;
}

/* The next returned digest into e->ret_peek (1), 0 at the end. */
static int ret_fetch(cr_engine *e) {
  if (e->ret_peeked)
    return 1;
  if (!e->stream) {
    if (e->peer_digests == NULL || e->ret_pos >= peer_points_total(e))
      return 0;
    e->ret_peek = e->peer_digests[e->ret_pos++];
    e->ret_peeked = 1;
    return 1;
  }
  const uint8_t *key, *pl;
  size_t pl_len, dl = e->plan.digest_bytes;
  if (e->ret_it == NULL)
    return 0;
  int rc = cr_sorter_iter_next(e->ret_it, &key, &pl, &pl_len, &e->err);
  if (rc == 0) {
    /* All returned: the reader's buffers go now, before matching. */
    cr_sorter_iter_free(e->ret_it);
    e->ret_it = NULL;
  }
  if (rc <= 0)
    return rc;
  memset(&e->ret_peek, 0, sizeof e->ret_peek);
  if (e->plan.members) {
    if (pl_len != dl)
      return CR_EINVAL;
    memcpy(e->ret_peek.d, pl, dl);
  } else if (!e->plan.peer_grouped) {
    memcpy(e->ret_peek.d, key, dl);
  } else {
    e->ret_peek.label = get_u32be(key);
    memcpy(e->ret_peek.d, key + 4, dl);
  }
  e->ret_peeked = 1;
  return 1;
}

int cr_engine_returned_next(cr_engine *e, size_t max, uint8_t *out, size_t *n, uint32_t *label) {
  size_t dl = e->plan.digest_bytes, w = e->peer_w ? e->peer_w : 1;
  int rc;
  *n = 0;
  *label = 0;
  if (!e->plan.peer_receives || !e->peer_finished || max < w)
    return CR_EINVAL;
  /* Whole elements (a record's digests together), one label for count. */
  while (*n + w <= max) {
    for (size_t k = 0; k < w; k++) {
      if ((rc = ret_fetch(e)) < 0)
        return rc;
      if (rc == 0)
        return k == 0 ? 0 : CR_EINVAL;
      if (k == 0 && *n > 0 && !e->plan.members && e->ret_peek.label != *label)
        return 0;
      if (*n == 0)
        *label = e->ret_peek.label;
      memcpy(out + (*n + k) * dl, e->ret_peek.d, dl);
      e->ret_peeked = 0;
    }
    *n += w;
  }
  return 0;
}

static int own_add_stream(cr_engine *e, const uint8_t *plain, uint64_t n, uint32_t label,
                          int continues) {
  size_t l = e->plan.digest_bytes;
  uint8_t pl[8];
  int rc = 0;
  if (e->own_dg_s == NULL || n > own_points(e) - e->own_digests_n || (n > 0 && plain == NULL))
    return CR_EINVAL;
  /* Strictly increasing: an equal neighbour would count a match twice. */
  if (!e->plan.members) {
    for (uint64_t i = 0; i < n; i++) {
      const uint8_t *prev = i > 0 ? plain + (i - 1) * l : continues ? e->own_last : NULL;
      if (prev != NULL && memcmp(prev, plain + i * l, l) >= 0)
        return violation(e, CR_RULE_DIGEST_ORDER);
    }
  }
  int grouped = e->label_map != NULL;
  put_u32be(pl, label);
  for (uint64_t i = 0; i < n && rc == 0; i++) {
    size_t pl_len = grouped ? 4 : 0;
    if (e->plan.members) {
      /* Back in our send order: the rank among real positions is the
       * dataset iterator's element. */
      uint64_t p = e->own_digests_n + i;
      uint32_t rank = CR_RANK_PAD;
      if (p >= e->pos) /* a digest for a point we have not sent yet */
        return violation(e, CR_RULE_DIGEST_ORDER);
      if (!(e->is_pad[p / 8] & (1u << (p % 8))))
        rank = (uint32_t)e->own_real_back++;
      put_u32be(pl + pl_len, rank);
      pl_len += 4;
    }
    rc = cr_sorter_add(e->own_dg_s, plain + i * l, pl, pl_len, &e->err);
  }
  sodium_memzero(pl, sizeof pl);
  if (rc != 0)
    return rc;
  if (n > 0) {
    memset(e->own_last, 0, sizeof e->own_last);
    memcpy(e->own_last, plain + (n - 1) * l, l);
  }
  e->own_digests_n += n;
  return 0;
}

/* A sorted stream's next record, copied: key (kb bytes) and payload (at
 * most 8 bytes, *pl_len of them). 1, 0 at the end, or a negative code. */
static int next_rec(cr_engine *e, cr_sorter_iter *it, size_t kb, uint8_t *key, uint8_t pl[8],
                    size_t *pl_len) {
  const uint8_t *k = NULL, *p = NULL;
  size_t n = 0;
  int rc = cr_sorter_iter_next(it, &k, &p, &n, &e->err);
  if (rc != 1)
    return rc;
  if ((kb > 0 && k == NULL) || n > 8 || (n > 0 && p == NULL))
    return CR_EINVAL;
  if (kb > 0)
    memcpy(key, k, kb);
  if (n > 0)
    memcpy(pl, p, n);
  *pl_len = n;
  return 1;
}

/* Reflection and repeated points, by merging the sorted fingerprints of
 * our points and the peer's. */
static int check_points_stream(cr_engine *e) {
  cr_sorter_iter *oi = NULL, *pi = NULL;
  uint8_t own[CR_FP_BYTES], cur[CR_FP_BYTES], prev[CR_FP_BYTES], pl[8];
  size_t pl_len = 0;
  int rc, orc = 0, reflected = 0, repeated = 0, have_prev = 0;
  if ((rc = cr_sorter_iter_new(e->own_fp_s, &oi, &e->err)) != 0 ||
      (rc = cr_sorter_iter_new(e->peer_fp_s, &pi, &e->err)) != 0)
    goto out;
  orc = next_rec(e, oi, CR_FP_BYTES, own, pl, &pl_len);
  while (orc >= 0 && (rc = next_rec(e, pi, CR_FP_BYTES, cur, pl, &pl_len)) == 1) {
    if (have_prev && memcmp(prev, cur, CR_FP_BYTES) == 0)
      repeated = 1;
    memcpy(prev, cur, CR_FP_BYTES);
    have_prev = 1;
    while (orc == 1 && memcmp(own, cur, CR_FP_BYTES) < 0)
      orc = next_rec(e, oi, CR_FP_BYTES, own, pl, &pl_len);
    if (orc == 1 && memcmp(own, cur, CR_FP_BYTES) == 0)
      reflected = 1;
  }
  if (orc < 0)
    rc = orc;
  if (rc == 0)
    rc = reflected  ? violation(e, CR_RULE_POINT_REFLECTED)
         : repeated ? violation(e, CR_RULE_POINT_REPEATED)
                    : 0;
out:
  sodium_memzero(own, sizeof own);
  sodium_memzero(cur, sizeof cur);
  sodium_memzero(prev, sizeof prev);
  cr_sorter_iter_free(oi);
  cr_sorter_iter_free(pi);
  return rc;
}

/* Merge-joins our digests (sorted) with the peer's: counts, cells and the
 * members bitmap into t/out; checks no own digest repeats and that ours
 * are not exactly the peer's (echo). */
static int tally_stream(cr_engine *e, cr_role own_role, const size_t *nlabels, tally *t,
                        cr_engine_result *out) {
  cr_sorter_iter *oi = NULL, *pi = NULL;
  uint8_t own[CR_ENGINE_DIGEST_SLOT], peer[CR_ENGINE_DIGEST_SLOT], prev[CR_ENGINE_DIGEST_SLOT];
  uint8_t opl[8], ppl[8];
  size_t opl_len = 0, ppl_len = 0, dl = e->plan.digest_bytes;
  cr_engine_digest hit;
  const cr_engine_digest *hits[1];
  int rc, prc = 0, repeated = 0, have_prev = 0, all_equal = 1;
  int own_grouped = e->label_map != NULL, members = e->plan.members;
  memset(&hit, 0, sizeof hit);
  memset(opl, 0, sizeof opl);
  memset(ppl, 0, sizeof ppl);
  if ((rc = cr_sorter_finish(e->own_dg_s, &e->err)) != 0 ||
      (rc = cr_sorter_iter_new(e->own_dg_s, &oi, &e->err)) != 0 ||
      (rc = cr_sorter_iter_new(e->peer_match_s, &pi, &e->err)) != 0)
    goto out;
  prc = next_rec(e, pi, dl, peer, ppl, &ppl_len);
  while (prc >= 0 && (rc = next_rec(e, oi, dl, own, opl, &opl_len)) == 1) {
    if (have_prev && memcmp(prev, own, dl) == 0)
      repeated = 1;
    memcpy(prev, own, dl);
    have_prev = 1;
    while (prc == 1 && memcmp(peer, own, dl) < 0) {
      all_equal = 0;
      prc = next_rec(e, pi, dl, peer, ppl, &ppl_len);
    }
    hits[0] = NULL;
    if (prc == 1 && memcmp(peer, own, dl) == 0) {
      hit.label = ppl_len >= 4 ? get_u32be(ppl) : 0;
      hits[0] = &hit;
      prc = next_rec(e, pi, dl, peer, ppl, &ppl_len);
    } else {
      all_equal = 0;
    }
    uint32_t own_label = own_grouped && opl_len >= 4 ? get_u32be(opl) : 0;
    uint32_t rank = members && opl_len >= 4 ? get_u32be(opl + opl_len - 4) : CR_RANK_PAD;
    if (members && rank == CR_RANK_PAD)
      continue; /* a pad is no element and never counts */
    unsigned mask = count_element(t, hits, 1, own_label, own_role, nlabels);
    if (mask != 0 && members && rank < e->real_n)
      out->matched[rank / 8] |= (uint8_t)(1u << (rank % 8));
  }
  if (prc < 0)
    rc = prc;
  if (rc == 0 && prc == 1)
    all_equal = 0;
  if (rc == 0 && repeated)
    rc = violation(e, CR_RULE_DIGEST_REPEATED);
  /* Echo: the digests we returned to the peer, handed back as ours. */
  if (rc == 0 && all_equal && e->plan.peer_receives && own_points(e) == peer_points_total(e))
    rc = violation(e, CR_RULE_DIGEST_ECHO);
out:
  sodium_memzero(own, sizeof own);
  sodium_memzero(peer, sizeof peer);
  sodium_memzero(prev, sizeof prev);
  sodium_memzero(&hit, sizeof hit);
  cr_sorter_iter_free(oi);
  cr_sorter_iter_free(pi);
  return rc;
}

/* Counts each element of the counted side with a match; per cell when
 * grouped, per own element when members. Every released number is
 * thresholded here, so nothing below min_count leaves the engine. */
int cr_engine_match(cr_engine *e, cr_role own_role, const size_t nlabels[CR_ROLE_COUNT],
                    uint64_t *const sizes[CR_ROLE_COUNT], int grouped, uint64_t min_count,
                    cr_engine_result *out) {
  cr_role peer = cr_role_other(own_role);
  size_t np = nlabels[CR_ROLE_PROVIDER], nc = nlabels[CR_ROLE_CONSUMER];
  size_t ow = cr_engine_own_width(e), pw = e->peer_w;
  /* Whose elements are counted: ours (records, or with one key either
   * side's, the same number), or the peer's records. */
  int peer_records = pw > 1;
  size_t w = peer_records ? pw : ow;
  int members = e->plan.members, stream = e->stream, rc;
  cr_engine_digest *mine = NULL;
  const cr_engine_digest *hits[CR_TEMPLATE_MAX_KEYS];
  tally *t = NULL;
  memset(out, 0, sizeof *out);
  if (stream) {
    if (e->own_dg_s == NULL || e->peer_match_s == NULL || e->own_fp_s == NULL ||
        e->peer_fp_s == NULL || e->own_digests_n != own_points(e) || e->pos != e->own_n ||
        !e->peer_finished)
      return CR_EINVAL;
    if ((rc = check_points_stream(e)) != 0)
      return rc;
  } else {
    if (e->own_digests == NULL || e->peer_match == NULL || e->own_digests_n != own_points(e) ||
        e->own_fp == NULL || e->peer_fp == NULL || (members && peer_records))
      return CR_EINVAL;
    if ((rc = check_peer(e, &mine)) != 0)
      return rc;
  }
  t = calloc(1, sizeof *t);
  if (t == NULL || (grouped && (t->cells = calloc(np * nc, sizeof *t->cells)) == NULL)) {
    rc = CR_ENOMEM;
    goto out;
  }
  if (members) {
    out->matched = calloc((size_t)(e->real_n + 7) / 8, 1);
    if (out->matched == NULL || (ow > 1 && (out->matched_on = calloc(e->real_n, 1)) == NULL)) {
      rc = CR_ENOMEM;
      goto out;
    }
  }
  if (stream) {
    if ((rc = tally_stream(e, own_role, nlabels, t, out)) != 0)
      goto out;
  } else if (!peer_records) {
    size_t npeer = (size_t)peer_points_total(e);
    for (uint64_t i = 0; i < e->own_n; i++) {
      /* members: element i is the one we sent i-th, own element order[i];
       * a pad (order >= real_n) is no record and never counts. */
      if (members && e->order[i] >= e->real_n)
        continue;
      const cr_engine_digest *o = &e->own_digests[i * ow];
      for (size_t k = 0; k < ow; k++)
        hits[k] = bsearch(&o[k], e->peer_match, npeer, sizeof *e->peer_match, cmp_digest);
      unsigned mask = count_element(t, hits, ow, o->label, own_role, nlabels);
      if (mask != 0 && members) {
        uint32_t key = e->order[i];
        out->matched[key / 8] |= (uint8_t)(1u << (key % 8));
        if (out->matched_on)
          out->matched_on[key] = (uint8_t)mask;
      }
    }
  } else {
    size_t own = (size_t)own_points(e);
    for (uint64_t i = 0; i < e->plan.peer_n; i++) {
      const cr_engine_digest *p = &e->peer_match[i * pw];
      for (size_t k = 0; k < pw; k++)
        hits[k] = bsearch(&p[k], mine, own, sizeof *mine, cmp_digest);
      (void)count_element(t, hits, pw, p->label, peer, nlabels);
    }
  }
  /* Impossible for an honest peer once the checks above passed; kept so no
   * later change can release a count no input could give. A counted
   * element matched distinct digests of the other side: at most one
   * element per point there. */
  {
    uint64_t rec_n = peer_records ? e->plan.peer_n : e->own_n;
    uint64_t other_pts = peer_records ? own_points(e) : peer_points_total(e);
    rc = t->total > rec_n || t->total > other_pts ? violation(e, CR_RULE_COUNT_BOUND) : 0;
  }
  for (size_t a = 0; t->cells && rc == 0 && a < np; a++)
    for (size_t b = 0; rc == 0 && b < nc; b++) {
      uint64_t v = t->cells[a * nc + b];
      if ((sizes[CR_ROLE_PROVIDER] && v > sizes[CR_ROLE_PROVIDER][a]) ||
          (sizes[CR_ROLE_CONSUMER] && v > sizes[CR_ROLE_CONSUMER][b]))
        rc = violation(e, CR_RULE_COUNT_BOUND);
    }
  if (rc)
    goto out;
  out->suppressed = t->total < min_count;
  /* Suppressed means absent: no value is held where a later layer could
   * print it. */
  out->count = out->suppressed ? 0 : t->total;
  if (members && out->suppressed) {
    sodium_memzero(out->matched, (size_t)(e->real_n + 7) / 8);
    free(out->matched);
    out->matched = NULL;
    if (out->matched_on) {
      sodium_memzero(out->matched_on, (size_t)e->real_n);
      free(out->matched_on);
      out->matched_on = NULL;
    }
  }
  if (w > 1 && !grouped)
    key_breakdown(t, w, min_count, out->suppressed, out);
  if (t->cells) {
    out->cells = calloc(np * nc, sizeof *out->cells);
    if (out->cells == NULL) {
      rc = CR_ENOMEM;
      goto out;
    }
    out->ncells = np * nc;
    for (size_t a = 0; a < np; a++) {
      for (size_t b = 0; b < nc; b++) {
        cr_engine_cell *c = &out->cells[a * nc + b];
        uint64_t v = t->cells[a * nc + b];
        c->label[CR_ROLE_PROVIDER] = (uint32_t)a;
        c->label[CR_ROLE_CONSUMER] = (uint32_t)b;
        c->suppressed = v < min_count;
        c->count = c->suppressed ? 0 : v;
      }
    }
    /* The total would reveal the sum of the suppressed cells. */
    out->count = 0;
    out->suppressed = 0;
  }
out:
  if (rc)
    free_result(out, e->real_n);
  if (t != NULL) {
    if (t->cells) {
      sodium_memzero(t->cells, np * nc * sizeof *t->cells);
      free(t->cells);
    }
    sodium_memzero(t, sizeof *t); /* the exact counts */
    free(t);
  }
  if (mine) {
    sodium_memzero(mine, (size_t)own_points(e) * sizeof *mine);
    free(mine);
  }
  return rc;
}
