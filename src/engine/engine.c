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
/* Elements per call of the suite's batch entry points: a multiple of the
 * eight lanes of the batched ristretto255 backend, and a small stack. */
#define CR_BLIND_GROUP 32
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
  uint64_t real_n;      /* the dataset's keys */
  uint32_t *wire_label; /* grouped: label of element i (real or pad); NULL otherwise */
  uint8_t pad_seed[CR_PAD_SEED_BYTES];
  uint8_t *own_fp;  /* first CR_FP_BYTES of each own point, by send position */
  uint8_t *peer_fp; /* same of each peer point, by arrival */
  cr_engine_rule rule;

  cr_engine_digest *peer_digests; /* arrival order until peer_done, then send order */
  cr_engine_digest *peer_match;   /* sorted by digest (self receives) */
  uint64_t peer_points;
  cr_engine_digest *own_digests; /* returned by the peer */
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
  free_table(&e->peer_digests, e->plan.peer_n);
  free_table(&e->peer_match, e->plan.peer_n);
  free_table(&e->own_digests, e->own_n);
  sodium_memzero(e->pad_seed, sizeof e->pad_seed);
  if (e->own_fp) {
    sodium_memzero(e->own_fp, (size_t)e->own_n * CR_FP_BYTES);
    free(e->own_fp);
    e->own_fp = NULL;
  }
  if (e->peer_fp) {
    sodium_memzero(e->peer_fp, (size_t)e->plan.peer_n * CR_FP_BYTES);
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
  if ((nlabels > 1 && !grouped) || (grouped && d->labels == NULL))
    return CR_EINVAL;
  e->data = d;
  e->real_n = d->n;
  e->own_n = total;
  e->order = malloc((size_t)e->own_n * sizeof *e->order);
  e->own_fp = calloc((size_t)e->own_n, CR_FP_BYTES);
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
  if (e->order == NULL || plan->digest_bytes == 0 || plan->digest_bytes > CR_MAX_DIGEST_BYTES ||
      plan->peer_n == 0 || plan->peer_n > CR_MAX_SET_SIZE || e->peer_digests != NULL)
    return CR_EINVAL;
  e->plan = *plan;
  e->peer_digests = calloc((size_t)plan->peer_n, sizeof *e->peer_digests);
  e->peer_fp = calloc((size_t)plan->peer_n, CR_FP_BYTES);
  if (e->peer_digests == NULL || e->peer_fp == NULL)
    return CR_ENOMEM;
  if (plan->self_receives) {
    e->own_digests = calloc((size_t)e->own_n, sizeof *e->own_digests);
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

/* Grows the message arena to hold `need` more bytes after `used`, keeping
 * what is there; the old block held match keys, so it is wiped. */
static int arena_reserve(uint8_t **buf, size_t *cap, const uint8_t *stackbuf, size_t used,
                         size_t need) {
  if (used + need <= *cap)
    return 0;
  size_t ncap = 2 * (used + need);
  uint8_t *bigger = malloc(ncap);
  if (bigger == NULL)
    return CR_ENOMEM;
  memcpy(bigger, *buf, used);
  sodium_memzero(*buf, *cap);
  if (*buf != stackbuf)
    free(*buf);
  *buf = bigger;
  *cap = ncap;
  return 0;
}

/* k * HashToGroup(template_sha256 || u8(len m) || m || v) (design §4) for
 * own elements [first + begin, first + end) of the send order, CR_BLIND_GROUP
 * at a time through the suite's batch entry point (the batched backends
 * blind eight lanes per call). */
static int blind_range(void *ctx, size_t begin, size_t end) {
  blind_job *j = ctx;
  cr_engine *e = j->e;
  const cr_dataset *d = e->data;
  const cr_template *t = e->cfg.tmpl;
  size_t pb = e->suite->point_bytes;
  size_t mlen = strlen(t->match_key.name);
  uint8_t ml = (uint8_t)(mlen > 255 ? 255 : mlen);
  uint8_t stackbuf[2048], *msg = stackbuf;
  size_t cap = sizeof stackbuf;
  const uint8_t *msgs[CR_BLIND_GROUP];
  size_t lens[CR_BLIND_GROUP], offs[CR_BLIND_GROUP];
  int rc = 0;
  for (size_t g = begin; g < end && rc == 0; g += CR_BLIND_GROUP) {
    size_t m = end - g < CR_BLIND_GROUP ? end - g : CR_BLIND_GROUP;
    size_t used = 0;
    for (size_t q = 0; q < m && rc == 0; q++) {
      size_t i = g + q;
      uint32_t idx = e->order[j->first + i];
      if (idx >= e->real_n) {
        /* A pad: a fresh uniform element that matches no key. */
        size_t need = sizeof PAD_LABEL - 1 + CR_PAD_SEED_BYTES + 8;
        if ((rc = arena_reserve(&msg, &cap, stackbuf, used, need)) != 0)
          break;
        uint8_t *pm = msg + used;
        memcpy(pm, PAD_LABEL, sizeof PAD_LABEL - 1);
        memcpy(pm + sizeof PAD_LABEL - 1, e->pad_seed, CR_PAD_SEED_BYTES);
        for (int b = 0; b < 8; b++)
          pm[need - 8 + b] = (uint8_t)((uint64_t)idx >> (56 - 8 * b));
        offs[q] = used;
        lens[q] = need;
        used += need;
        if (j->labels)
          put_u32be(j->labels + 4 * i, e->wire_label[idx]);
        continue;
      }
      size_t vlen = d->off[idx + 1] - d->off[idx];
      size_t need = CR_SHA256_BYTES + 1 + ml + vlen;
      if ((rc = arena_reserve(&msg, &cap, stackbuf, used, need)) != 0)
        break;
      uint8_t *mp = msg + used;
      memcpy(mp, t->sha256, CR_SHA256_BYTES);
      mp[CR_SHA256_BYTES] = ml;
      memcpy(mp + CR_SHA256_BYTES + 1, t->match_key.name, ml);
      memcpy(mp + CR_SHA256_BYTES + 1 + ml, d->bytes + d->off[idx], vlen);
      offs[q] = used;
      lens[q] = need;
      used += need;
      if (j->labels)
        put_u32be(j->labels + 4 * i, e->wire_label ? e->wire_label[idx] : d->labels[idx]);
    }
    if (rc != 0)
      break;
    for (size_t q = 0; q < m; q++)
      msgs[q] = msg + offs[q];
    rc = cr_suite_hash_blind_batch(e->suite, j->points + g * pb, e->k, msgs, lens, m);
    for (size_t q = 0; q < m; q++)
      memcpy(e->own_fp + (j->first + g + q) * CR_FP_BYTES, j->points + (g + q) * pb, CR_FP_BYTES);
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

/* k * P and its digest for points [begin, end) of a batch, CR_BLIND_GROUP
 * at a time through the suite's batch entry point. */
static int reblind_range(void *ctx, size_t begin, size_t end) {
  reblind_job *j = ctx;
  cr_engine *e = j->e;
  size_t pb = e->suite->point_bytes;
  uint8_t y[CR_BLIND_GROUP * CR_MAX_POINT_BYTES];
  int rc = 0;
  for (size_t g = begin; g < end; g += CR_BLIND_GROUP) {
    size_t m = end - g < CR_BLIND_GROUP ? end - g : CR_BLIND_GROUP;
    size_t bad = SIZE_MAX;
    if (cr_suite_reblind_batch(e->suite, y, e->k, j->points + g * pb, m, &bad) != 0) {
      size_t i = g + (bad < m ? bad : 0);
      pthread_mutex_lock(&j->mu);
      if (i < j->bad)
        j->bad = i;
      pthread_mutex_unlock(&j->mu);
      rc = CR_EPROTO;
      break;
    }
    for (size_t q = 0; q < m; q++) {
      size_t i = g + q;
      memcpy(e->peer_fp + (e->peer_points + i) * CR_FP_BYTES, j->points + i * pb, CR_FP_BYTES);
      cr_engine_digest *dg = &e->peer_digests[e->peer_points + i];
      cr_digest(dg->d, e->plan.digest_bytes, e->plan.session_id, y + q * pb, pb);
      dg->label = j->labels ? get_u32be(j->labels + 4 * i) : 0;
      dg->index = (uint32_t)(e->peer_points + i);
    }
  }
  sodium_memzero(y, sizeof y);
  return rc;
}

int cr_engine_reblind(cr_engine *e, const uint8_t *points, const uint8_t *labels, size_t n,
                      uint64_t *bad) {
  *bad = UINT64_MAX;
  if (e->k == NULL || e->peer_digests == NULL || n > e->plan.peer_n - e->peer_points)
    return CR_EINVAL;
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

int cr_engine_peer_done(cr_engine *e) {
  size_t n = (size_t)e->plan.peer_n;
  if (e->peer_digests == NULL || e->peer_points != e->plan.peer_n)
    return CR_EINVAL;
  if (e->plan.self_receives) {
    /* Our own lookup table of the peer's digests, by digest. */
    e->peer_match = malloc(n * sizeof *e->peer_match);
    if (e->peer_match == NULL)
      return CR_ENOMEM;
    memcpy(e->peer_match, e->peer_digests, n * sizeof *e->peer_match);
    qsort(e->peer_match, n, sizeof *e->peer_match, cmp_digest);
  }
  /* count: sorted per label, which hides the order the peer sent its points
   * in (design §5). members: the peer's own order, so it can tell which of
   * its records matched; that is what the template grants the owner. */
  if (e->plan.peer_receives && !e->plan.members)
    qsort(e->peer_digests, n, sizeof *e->peer_digests, cmp_label_digest);
  if (!e->plan.peer_receives)
    free_table(&e->peer_digests, e->plan.peer_n);
  return 0;
}

const cr_engine_digest *cr_engine_returned(const cr_engine *e) { return e->peer_digests; }

/* ---- own digests back --------------------------------------------------- */

int cr_engine_own_add(cr_engine *e, const uint8_t *plain, uint64_t n, uint32_t label,
                      int continues) {
  size_t l = e->plan.digest_bytes;
  if (e->own_digests == NULL || n > e->own_n - e->own_digests_n)
    return CR_EINVAL;
  for (uint64_t i = 0; i < n; i++) {
    cr_engine_digest *d = &e->own_digests[e->own_digests_n + i];
    memcpy(d->d, plain + i * l, l);
    d->label = label;
    d->index = (uint32_t)(e->own_digests_n + i);
    /* Strictly increasing: an equal neighbour would count a match twice. */
    if (!e->plan.members && (continues || i > 0) &&
        memcmp((d - 1)->d, d->d, CR_ENGINE_DIGEST_SLOT) >= 0)
      return violation(e, CR_RULE_DIGEST_ORDER);
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

/* The rules on what the peer sent that matching depends on (engine.h). */
static int check_peer(cr_engine *e) {
  size_t own = (size_t)e->own_n, peer = (size_t)e->plan.peer_n;
  int rc = 0;
  uint8_t *fp = malloc(own * CR_FP_BYTES);
  uint8_t *pfp = malloc(peer * CR_FP_BYTES);
  cr_engine_digest *mine = malloc(own * sizeof *mine);
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
  /* The peer's set is de-duplicated: a point twice is a lie. */
  memcpy(pfp, e->peer_fp, peer * CR_FP_BYTES);
  qsort(pfp, peer, CR_FP_BYTES, cmp_fp);
  for (size_t i = 1; i < peer && rc == 0; i++)
    if (memcmp(pfp + (i - 1) * CR_FP_BYTES, pfp + i * CR_FP_BYTES, CR_FP_BYTES) == 0)
      rc = violation(e, CR_RULE_POINT_REPEATED);
  if (rc)
    goto out;
  /* Our points are distinct, so are their digests (up to the 2^-40 false
   * match the digest length allows): a digest twice would count twice. */
  memcpy(mine, e->own_digests, own * sizeof *mine);
  qsort(mine, own, sizeof *mine, cmp_digest);
  for (size_t i = 1; i < own && rc == 0; i++)
    if (memcmp(mine[i - 1].d, mine[i].d, CR_ENGINE_DIGEST_SLOT) == 0)
      rc = violation(e, CR_RULE_DIGEST_REPEATED);
  /* Echo: the digests we returned to the peer, handed back as ours. */
  if (rc == 0 && e->plan.peer_receives && own == peer) {
    size_t i = 0;
    while (i < own && memcmp(mine[i].d, e->peer_match[i].d, CR_ENGINE_DIGEST_SLOT) == 0)
      i++;
    if (i == own)
      rc = violation(e, CR_RULE_DIGEST_ECHO);
  }
out:
  if (mine)
    sodium_memzero(mine, own * sizeof *mine);
  free(mine);
  free(fp);
  free(pfp);
  return rc;
}

/* Counts each own digest found among the peer's; per cell when grouped,
 * per own record when members. Every released number is thresholded here,
 * so nothing below min_count leaves the engine. */
int cr_engine_match(cr_engine *e, cr_role own_role, const size_t nlabels[CR_ROLE_COUNT],
                    uint64_t *const sizes[CR_ROLE_COUNT], int grouped, uint64_t min_count,
                    cr_engine_result *out) {
  cr_role peer = cr_role_other(own_role);
  size_t np = nlabels[CR_ROLE_PROVIDER], nc = nlabels[CR_ROLE_CONSUMER];
  uint64_t total = 0, *cells = NULL;
  int members = e->plan.members, rc;
  memset(out, 0, sizeof *out);
  if (e->own_digests == NULL || e->peer_match == NULL || e->own_digests_n != e->own_n ||
      e->own_fp == NULL || e->peer_fp == NULL)
    return CR_EINVAL;
  if ((rc = check_peer(e)) != 0)
    return rc;
  if (grouped) {
    cells = calloc(np * nc, sizeof *cells);
    if (cells == NULL)
      return CR_ENOMEM;
  }
  if (members) {
    out->matched = calloc((size_t)(e->real_n + 7) / 8, 1);
    if (out->matched == NULL) {
      free(cells);
      return CR_ENOMEM;
    }
  }
  for (uint64_t i = 0; i < e->own_n; i++) {
    const cr_engine_digest *o = &e->own_digests[i];
    const cr_engine_digest *hit =
        bsearch(o, e->peer_match, (size_t)e->plan.peer_n, sizeof *e->peer_match, cmp_digest);
    if (hit == NULL)
      continue;
    if (members) {
      /* Digest i answers the point we sent i-th: own element order[i]; a
       * pad (order >= real_n) is no record and never counts. */
      uint32_t key = e->order[o->index];
      if (key >= e->real_n)
        continue;
      out->matched[key / 8] |= (uint8_t)(1u << (key % 8));
    }
    total++;
    if (cells) {
      uint32_t lab[CR_ROLE_COUNT];
      lab[own_role] = o->label;
      lab[peer] = hit->label;
      if (lab[CR_ROLE_PROVIDER] < np && lab[CR_ROLE_CONSUMER] < nc)
        cells[(size_t)lab[CR_ROLE_PROVIDER] * nc + lab[CR_ROLE_CONSUMER]]++;
    }
  }
  /* Impossible for an honest peer once the checks above passed; kept so no
   * later change can release a count no input could give. */
  rc = total > e->own_n || total > e->plan.peer_n ? violation(e, CR_RULE_COUNT_BOUND) : 0;
  for (size_t a = 0; cells && rc == 0 && a < np; a++)
    for (size_t b = 0; rc == 0 && b < nc; b++) {
      uint64_t v = cells[a * nc + b];
      if ((sizes[CR_ROLE_PROVIDER] && v > sizes[CR_ROLE_PROVIDER][a]) ||
          (sizes[CR_ROLE_CONSUMER] && v > sizes[CR_ROLE_CONSUMER][b]))
        rc = violation(e, CR_RULE_COUNT_BOUND);
    }
  if (rc) {
    if (cells) {
      sodium_memzero(cells, np * nc * sizeof *cells);
      free(cells);
    }
    if (out->matched) {
      sodium_memzero(out->matched, (size_t)(e->real_n + 7) / 8);
      free(out->matched);
    }
    memset(out, 0, sizeof *out);
    return rc;
  }
  out->suppressed = total < min_count;
  /* Suppressed means absent: no value is held where a later layer could
   * print it. */
  out->count = out->suppressed ? 0 : total;
  if (members && out->suppressed) {
    sodium_memzero(out->matched, (size_t)(e->real_n + 7) / 8);
    free(out->matched);
    out->matched = NULL;
  }
  if (cells) {
    out->cells = calloc(np * nc, sizeof *out->cells);
    if (out->cells == NULL) {
      free(cells);
      return CR_ENOMEM;
    }
    out->ncells = np * nc;
    for (size_t a = 0; a < np; a++) {
      for (size_t b = 0; b < nc; b++) {
        cr_engine_cell *c = &out->cells[a * nc + b];
        uint64_t v = cells[a * nc + b];
        c->label[CR_ROLE_PROVIDER] = (uint32_t)a;
        c->label[CR_ROLE_CONSUMER] = (uint32_t)b;
        c->suppressed = v < min_count;
        c->count = c->suppressed ? 0 : v;
      }
    }
    sodium_memzero(cells, np * nc * sizeof *cells);
    free(cells);
    /* The total would reveal the sum of the suppressed cells. */
    out->count = 0;
    out->suppressed = 0;
  }
  sodium_memzero(&total, sizeof total); /* a plain store would be optimized away */
  return 0;
}
