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

struct cr_engine {
  cr_engine_config cfg;
  const cr_suite *suite;
  uint8_t *k; /* sodium_malloc'ed; NULL once wiped */
  int k_wiped;
  cr_engine_plan plan;

  const cr_dataset *data;
  uint32_t *order; /* send order: order[i] is the dataset index sent i-th */
  uint64_t own_n;

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
int cr_engine_set_own(cr_engine *e, const cr_dataset *d) {
  rand_block rb;
  int rc = 0;
  if (d->n == 0 || d->n > CR_MAX_SET_SIZE)
    return CR_EREFUSED;
  if (e->order != NULL)
    return CR_EINVAL;
  e->data = d;
  e->own_n = d->n;
  e->order = malloc((size_t)e->own_n * sizeof *e->order);
  if (e->order == NULL)
    return CR_ENOMEM;
  for (uint64_t i = 0; i < e->own_n; i++)
    e->order[i] = (uint32_t)i;
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
  if (e->peer_digests == NULL)
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

/* k * HashToGroup(template_sha256 || u8(len m) || m || v) (design §4) for
 * own elements [first + begin, first + end) of the send order. */
static int blind_range(void *ctx, size_t begin, size_t end) {
  blind_job *j = ctx;
  cr_engine *e = j->e;
  const cr_dataset *d = e->data;
  const cr_template *t = e->cfg.tmpl;
  size_t pb = e->suite->point_bytes;
  size_t mlen = strlen(t->match_key.name);
  uint8_t ml = (uint8_t)(mlen > 255 ? 255 : mlen);
  uint8_t stackbuf[512], *msg = stackbuf;
  size_t cap = sizeof stackbuf;
  int rc = 0;
  for (size_t i = begin; i < end && rc == 0; i++) {
    uint32_t idx = e->order[j->first + i];
    size_t vlen = d->off[idx + 1] - d->off[idx];
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
    memcpy(msg + CR_SHA256_BYTES + 1, t->match_key.name, ml);
    memcpy(msg + CR_SHA256_BYTES + 1 + ml, d->bytes + d->off[idx], vlen);
    rc = e->suite->hash_blind(j->points + i * pb, e->k, msg, need);
    if (j->labels)
      put_u32be(j->labels + 4 * i, d->labels[idx]);
  }
  /* The buffer held match keys: wipe it. */
  sodium_memzero(msg, cap);
  if (msg != stackbuf)
    free(msg);
  return rc;
}

int cr_engine_blind(cr_engine *e, uint64_t first, size_t n, uint8_t *points, uint8_t *labels) {
  if (e->k == NULL || e->order == NULL || first > e->own_n || n > e->own_n - first ||
      (labels != NULL && e->data->labels == NULL))
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

/* k * P and its digest for points [begin, end) of a batch. */
static int reblind_range(void *ctx, size_t begin, size_t end) {
  reblind_job *j = ctx;
  cr_engine *e = j->e;
  size_t pb = e->suite->point_bytes;
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
    cr_engine_digest *d = &e->peer_digests[e->peer_points + i];
    cr_digest(d->d, e->plan.digest_bytes, e->plan.session_id, y, pb);
    d->label = j->labels ? get_u32be(j->labels + 4 * i) : 0;
    d->index = (uint32_t)(e->peer_points + i);
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
    return job.bad != UINT64_MAX ? CR_EPROTO : rc;
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
    if (!e->plan.members && (continues || i > 0) &&
        memcmp((d - 1)->d, d->d, CR_ENGINE_DIGEST_SLOT) > 0)
      return CR_EPROTO;
  }
  e->own_digests_n += n;
  return 0;
}

const uint8_t *cr_engine_own_last(const cr_engine *e) {
  return e->own_digests != NULL && e->own_digests_n > 0 ? e->own_digests[e->own_digests_n - 1].d
                                                        : NULL;
}

/* ---- the result --------------------------------------------------------- */

/* Counts each own digest found among the peer's; per cell when grouped,
 * per own record when members. Every released number is thresholded here,
 * so nothing below min_count leaves the engine. */
int cr_engine_match(cr_engine *e, cr_role own_role, const size_t nlabels[CR_ROLE_COUNT],
                    int grouped, uint64_t min_count, cr_engine_result *out) {
  cr_role peer = cr_role_other(own_role);
  size_t np = nlabels[CR_ROLE_PROVIDER], nc = nlabels[CR_ROLE_CONSUMER];
  uint64_t total = 0, *cells = NULL;
  int members = e->plan.members;
  memset(out, 0, sizeof *out);
  if (e->own_digests == NULL || e->peer_match == NULL || e->own_digests_n != e->own_n)
    return CR_EINVAL;
  if (grouped) {
    cells = calloc(np * nc, sizeof *cells);
    if (cells == NULL)
      return CR_ENOMEM;
  }
  if (members) {
    out->matched = calloc((size_t)(e->own_n + 7) / 8, 1);
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
    total++;
    if (cells) {
      uint32_t lab[CR_ROLE_COUNT];
      lab[own_role] = o->label;
      lab[peer] = hit->label;
      if (lab[CR_ROLE_PROVIDER] < np && lab[CR_ROLE_CONSUMER] < nc)
        cells[(size_t)lab[CR_ROLE_PROVIDER] * nc + lab[CR_ROLE_CONSUMER]]++;
    }
    if (members) {
      /* Digest i answers the point we sent i-th: own key order[i]. */
      uint32_t key = e->order[o->index];
      out->matched[key / 8] |= (uint8_t)(1u << (key % 8));
    }
  }
  out->count = total;
  out->suppressed = total < min_count;
  if (members && out->suppressed) {
    sodium_memzero(out->matched, (size_t)(e->own_n + 7) / 8);
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
  return 0;
}
