/*
 * The engine: blinding, re-blinding, digest tables and matching for one
 * session (include/cleanroom/engine.h). Pure computation on the session's
 * behalf; never logs, never words a message, wipes what held a match key,
 * a digest or the scalar.
 */
#include "cleanroom/engine.h"

#include <pthread.h>
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
/* Bytes of each point kept to detect reflection: a peer that wants our
 * digests to match must send our points exactly, and 128 bits cannot
 * collide by chance nor be forged. */
#define CR_FP_BYTES 16
#define CR_PAD_SEED_BYTES 32
static const char PAD_LABEL[] = "cleanroom/v1/pad";

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
};

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
 * bias). Bytes come in blocks so the callback is not called per element. */
typedef struct rand_block {
  uint8_t b[1024];
  size_t pos;
} rand_block;

static int uniform_u32(cr_engine *e, rand_block *rb, uint32_t n, uint32_t *out) {
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
int cr_engine_set_own(cr_engine *e, const cr_dataset *d, size_t nlabels, const uint32_t *label_map,
                      const uint64_t *pad) {
  rand_block rb;
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

int cr_engine_prepare(cr_engine *e, const cr_engine_plan *plan) {
  size_t pw = plan->peer_width > 1 ? plan->peer_width : 1;
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

typedef struct blind_job {
  cr_engine *e;
  uint64_t first;
  uint8_t *points;
  uint8_t *labels;
} blind_job;

/* A pad: k * HashToGroup("cleanroom/v1/pad" || seed || u64 index), a fresh
 * uniform element that matches no key. index = element * width + slot, so
 * every pad of a session (a padding element's, or a record's missing key)
 * is distinct; with one key it is the element's index. */
static int blind_pad(cr_engine *e, uint8_t *point, uint64_t index) {
  uint8_t pm[sizeof PAD_LABEL - 1 + CR_PAD_SEED_BYTES + 8];
  memcpy(pm, PAD_LABEL, sizeof PAD_LABEL - 1);
  memcpy(pm + sizeof PAD_LABEL - 1, e->pad_seed, CR_PAD_SEED_BYTES);
  for (int b = 0; b < 8; b++)
    pm[sizeof pm - 8 + b] = (uint8_t)(index >> (56 - 8 * b));
  int rc = e->suite->hash_blind(point, e->k, pm, sizeof pm);
  sodium_memzero(pm, sizeof pm);
  return rc;
}

/* k * HashToGroup(template_sha256 || u8(len m) || m || v) (design §4) for
 * own elements [first + begin, first + end) of the send order, each
 * element's points in key order; m is the name of the value's match key,
 * so an e-mail never matches a phone. */
static int blind_range(void *ctx, size_t begin, size_t end) {
  blind_job *j = ctx;
  cr_engine *e = j->e;
  const cr_dataset *d = e->data;
  const cr_template *t = e->cfg.tmpl;
  size_t pb = e->suite->point_bytes, w = cr_engine_own_width(e);
  uint8_t stackbuf[512], *msg = stackbuf;
  size_t cap = sizeof stackbuf;
  int rc = 0;
  for (size_t i = begin; i < end && rc == 0; i++) {
    uint32_t idx = e->order[j->first + i];
    for (size_t slot = 0; slot < w && rc == 0; slot++) {
      uint8_t *point = j->points + (i * w + slot) * pb;
      uint32_t v = idx >= e->real_n ? CR_DATASET_NO_VALUE
                   : w > 1          ? d->slots[(size_t)idx * w + slot]
                                    : idx;
      if (v == CR_DATASET_NO_VALUE) {
        rc = blind_pad(e, point, (uint64_t)idx * w + slot);
      } else {
        const char *name = t->match_keys[d->value_key != NULL ? d->value_key[v] : 0].name;
        size_t mlen = strlen(name);
        uint8_t ml = (uint8_t)(mlen > 255 ? 255 : mlen);
        size_t vlen = d->off[v + 1] - d->off[v];
        size_t need = CR_SHA256_BYTES + 1 + ml + vlen;
        if (need > cap) {
          uint8_t *bigger = malloc(need);
          if (bigger == NULL) {
            rc = CR_ENOMEM;
            break;
          }
          if (msg != stackbuf) {
            sodium_memzero(msg, cap);
            free(msg);
          }
          msg = bigger;
          cap = need;
        }
        memcpy(msg, t->sha256, CR_SHA256_BYTES);
        msg[CR_SHA256_BYTES] = ml;
        memcpy(msg + CR_SHA256_BYTES + 1, name, ml);
        memcpy(msg + CR_SHA256_BYTES + 1 + ml, d->bytes + d->off[v], vlen);
        rc = e->suite->hash_blind(point, e->k, msg, need);
      }
      memcpy(e->own_fp + ((j->first + i) * w + slot) * CR_FP_BYTES, point, CR_FP_BYTES);
    }
    if (j->labels)
      put_u32be(j->labels + 4 * i, e->wire_label     ? e->wire_label[idx]
                                   : idx < e->real_n ? d->labels[idx]
                                                     : 0);
  }
  /* The buffer held match keys: wipe it. */
  sodium_memzero(msg, cap);
  if (msg != stackbuf)
    free(msg);
  return rc;
}

// NOLINTNEXTLINE(readability-non-const-parameter): the workers write points and labels via job
int cr_engine_blind(cr_engine *e, uint64_t first, size_t n, uint8_t *points, uint8_t *labels) {
  if (e->k == NULL || e->order == NULL || first > e->own_n || n > e->own_n - first ||
      (labels != NULL && e->wire_label == NULL))
    return CR_EINVAL;
  blind_job job = {e, first, points, labels};
  return cr_pool_for(e->cfg.pool, n, CR_POOL_CHUNK, blind_range, &job);
}

/* ---- the peer's set ----------------------------------------------------- */

typedef struct reblind_job {
  cr_engine *e;
  const uint8_t *points;
  const uint8_t *labels;
  uint64_t bad; /* lowest index of an invalid point */
  pthread_mutex_t mu;
} reblind_job;

/* k * P and its digest for points [begin, end) of a batch; an element's
 * label goes with each of its points. */
static int reblind_range(void *ctx, size_t begin, size_t end) {
  reblind_job *j = ctx;
  cr_engine *e = j->e;
  size_t pb = e->suite->point_bytes, w = e->peer_w;
  uint8_t y[CR_MAX_POINT_BYTES];
  int rc = 0;
  for (size_t i = begin; i < end; i++) {
    if (e->suite->reblind(y, e->k, j->points + i * pb) != 0) {
      pthread_mutex_lock(&j->mu);
      if (i < j->bad)
        j->bad = i;
      pthread_mutex_unlock(&j->mu);
      rc = CR_EPROTO;
      break;
    }
    memcpy(e->peer_fp + (e->peer_points + i) * CR_FP_BYTES, j->points + i * pb, CR_FP_BYTES);
    cr_engine_digest *d = &e->peer_digests[e->peer_points + i];
    cr_digest(d->d, e->plan.digest_bytes, e->plan.session_id, y, pb);
    d->label = j->labels ? get_u32be(j->labels + 4 * (i / w)) : 0;
    d->index = (uint32_t)(e->peer_points + i);
  }
  sodium_memzero(y, sizeof y);
  return rc;
}

int cr_engine_reblind(cr_engine *e, const uint8_t *points, const uint8_t *labels, size_t n,
                      uint64_t *bad) {
  *bad = UINT64_MAX;
  if (e->k == NULL || e->peer_digests == NULL ||
      n > (peer_points_total(e) - e->peer_points) / e->peer_w)
    return CR_EINVAL;
  n *= e->peer_w; /* points from here */
  reblind_job job;
  job.e = e;
  job.points = points;
  job.labels = e->plan.peer_grouped ? labels : NULL;
  job.bad = UINT64_MAX;
  pthread_mutex_init(&job.mu, NULL);
  int rc = cr_pool_for(e->cfg.pool, n, CR_POOL_CHUNK, reblind_range, &job);
  pthread_mutex_destroy(&job.mu);
  if (rc != 0) {
    *bad = job.bad;
    return job.bad != UINT64_MAX ? violation(e, CR_RULE_POINT_INVALID) : rc;
  }
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
  return 0;
}

const cr_engine_digest *cr_engine_returned(const cr_engine *e) { return e->peer_digests; }

/* ---- own digests back --------------------------------------------------- */

int cr_engine_own_add(cr_engine *e, const uint8_t *plain, uint64_t n, uint32_t label,
                      int continues) {
  size_t l = e->plan.digest_bytes, w = cr_engine_own_width(e);
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
  return 0;
}

const uint8_t *cr_engine_own_last(const cr_engine *e) {
  return e->own_digests != NULL && e->own_digests_n > 0 ? e->own_digests[e->own_digests_n - 1].d
                                                        : NULL;
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
  int members = e->plan.members, rc;
  cr_engine_digest *mine = NULL;
  const cr_engine_digest *hits[CR_TEMPLATE_MAX_KEYS];
  tally *t = NULL;
  memset(out, 0, sizeof *out);
  if (e->own_digests == NULL || e->peer_match == NULL || e->own_digests_n != own_points(e) ||
      e->own_fp == NULL || e->peer_fp == NULL || (members && peer_records))
    return CR_EINVAL;
  if ((rc = check_peer(e, &mine)) != 0)
    return rc;
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
  if (!peer_records) {
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
