/*
 * The node's audit trail (docs/audit.md): what serve and run record, and
 * when. Appends are serialised with a mutex: sessions run their admit and
 * load hooks on worker threads. Every append is fsync'ed by the audit
 * module before it returns, and a result is shown only after its
 * result_released line is on disk. Nothing here ever records a match key,
 * a point or a secret: only sizes, hashes, names and what was released.
 */
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cleanroom/noise.h"
#include "party/party_internal.h"

json_t *cr__jtext(const char *s) {
  size_t n = s ? strlen(s) : 0;
  char stackbuf[256], *buf = 4 * n + 1 <= sizeof stackbuf ? stackbuf : malloc(4 * n + 1);
  if (buf == NULL)
    return json_string("");
  json_t *j = json_string(cr_text_clean(buf, 4 * n + 1, s));
  if (buf != stackbuf)
    free(buf);
  return j ? j : json_string("");
}

void cr__jset(json_t *o, const char *key, json_t *value) {
  json_t *k = cr__jtext(key);
  json_object_set_new(o, json_string_value(k), value);
  json_decref(k);
}

static json_t *hexj(const uint8_t *b, size_t n) {
  char hex[2 * 64 + 1];
  cr_hex_encode(hex, b, n);
  return cr__jtext(hex);
}

char *cr__trail_default_path(const char *identity_dir) {
  size_t n = strlen(identity_dir) + sizeof "/audit.jsonl";
  char *p = malloc(n);
  if (p)
    snprintf(p, n, "%s/audit.jsonl", identity_dir);
  return p;
}

/* ---- the log ------------------------------------------------------------- */

static int contains(const char *s, size_t len, const char *needle) {
  size_t n = strlen(needle);
  for (const char *p = s; n <= len - (size_t)(p - s);) {
    const char *q = memchr(p, needle[0], len - (size_t)(p - s) - n + 1);
    if (q == NULL)
      return 0;
    if (memcmp(q, needle, n) == 0)
      return 1;
    p = q + 1;
  }
  return 0;
}

static uint64_t sat_add(uint64_t a, uint64_t b) { return a > UINT64_MAX - b ? UINT64_MAX : a + b; }

/* A session_started line's privacy_spend, added to its template's sum. */
static void add_spend(cr_log *l, const char *th, json_t *sp) {
  json_t *e = json_object_get(sp, "epsilon_micro"), *d = json_object_get(sp, "delta_femto");
  size_t i = 0;
  while (i < l->nspends && strcmp(l->spends[i].th, th) != 0)
    i++;
  if (i == l->nspends) {
    struct cr_spend *ns = realloc(l->spends, (l->nspends + 1) * sizeof *ns);
    if (ns == NULL) {
      l->counts_lost = 1; /* a lower sum would let a run overspend: refuse instead */
      return;
    }
    l->spends = ns;
    memset(&ns[i], 0, sizeof ns[i]);
    snprintf(ns[i].th, sizeof ns[i].th, "%s", th);
    l->nspends++;
  }
  if (json_is_integer(e) && json_integer_value(e) > 0)
    l->spends[i].eps = sat_add(l->spends[i].eps, (uint64_t)json_integer_value(e));
  if (json_is_integer(d) && json_integer_value(d) > 0)
    l->spends[i].delta = sat_add(l->spends[i].delta, (uint64_t)json_integer_value(d));
}

/* The audit module's watch: every line of the log, ours or not. Keeps the
 * session_started counts per (template, query) and the privacy spends per
 * template. Caller of the audit call holds l->lock (or the log is being
 * opened). */
static int log_watch(void *ctx, const char *entry, size_t len) {
  cr_log *l = ctx;
  /* Cheap filter first: most lines are not session_started. */
  if (!contains(entry, len, "\"session_started\""))
    return 0;
  json_t *e = json_loadb(entry, len, 0, NULL);
  if (e == NULL)
    return 0;
  const char *ev = json_string_value(json_object_get(e, "event"));
  const char *th = json_string_value(json_object_get(e, "template_sha256"));
  const char *q = json_string_value(json_object_get(e, "query"));
  if (ev != NULL && strcmp(ev, "session_started") == 0 && th != NULL && q != NULL &&
      strlen(th) < CR_SHA256_HEX_BYTES && strlen(q) < sizeof l->counts->query) {
    size_t i = 0;
    while (i < l->ncounts &&
           !(strcmp(l->counts[i].th, th) == 0 && strcmp(l->counts[i].query, q) == 0))
      i++;
    if (i == l->ncounts) {
      struct cr_run_count *nc = realloc(l->counts, (l->ncounts + 1) * sizeof *nc);
      if (nc != NULL) {
        l->counts = nc;
        memset(&nc[i], 0, sizeof nc[i]);
        snprintf(nc[i].th, sizeof nc[i].th, "%s", th);
        snprintf(nc[i].query, sizeof nc[i].query, "%s", q);
        l->ncounts++;
      }
    }
    /* Out of memory drops the count to a lower one: refuse it instead. */
    if (i < l->ncounts)
      l->counts[i].runs++;
    else
      l->counts_lost = 1;
    json_t *sp = json_object_get(e, "privacy_spend");
    if (json_is_object(sp))
      add_spend(l, th, sp);
  }
  json_decref(e);
  return 0;
}

int cr__log_open(cr_log **out, const char *path, const cr_identity *id, cr_error *err) {
  *out = NULL;
  cr_log *l = calloc(1, sizeof *l);
  if (l == NULL || (l->path = strdup(path)) == NULL) {
    free(l);
    return cr_error_set(err, CR_ENOMEM, "out of memory");
  }
  l->id = id;
  l->refs = 1;
  pthread_mutex_init(&l->lock, NULL);
  int rc = cr_audit_open_watch(&l->audit, path, log_watch, l, err);
  if (rc) {
    pthread_mutex_destroy(&l->lock);
    free(l->counts);
    free(l->spends);
    free(l->path);
    free(l);
    return rc;
  }
  struct stat st;
  if (stat(path, &st) == 0) {
    l->dev = st.st_dev;
    l->ino = st.st_ino;
  }
  *out = l;
  return 0;
}

static void throttles_flush(cr_log *l, uint64_t now);
static int log_event(cr_log *l, const char *event, json_t *fields, cr_error *err);
static int log_checkpoint(cr_log *l, cr_error *err);

void cr__log_release(cr_log *l) {
  if (l == NULL || --l->refs > 0)
    return;
  /* Whatever was recorded since the last session (a refusal, a failed
   * load) gets a signature too before the node lets go of the log. */
  throttles_flush(l, cr_now_ms());
  if (l->unsigned_tail)
    (void)log_checkpoint(l, NULL);
  cr_audit_close(l->audit);
  pthread_mutex_destroy(&l->lock);
  free(l->counts);
  free(l->spends);
  free(l->path);
  free(l);
}

static int log_event(cr_log *l, const char *event, json_t *fields, cr_error *err) {
  pthread_mutex_lock(&l->lock);
  char *text = fields ? json_dumps(fields, JSON_COMPACT | JSON_ENCODE_ANY) : NULL;
  int rc = fields && text == NULL ? cr_error_set(err, CR_ENOMEM, "out of memory")
                                  : cr_audit_append(l->audit, event, text, err);
  free(text);
  if (rc == 0)
    l->unsigned_tail = 1;
  pthread_mutex_unlock(&l->lock);
  return rc;
}

static int log_checkpoint(cr_log *l, cr_error *err) {
  uint8_t pk[CR_SIGN_PK_BYTES];
  cr_identity_public_key(l->id, pk);
  pthread_mutex_lock(&l->lock);
  int rc = cr_audit_checkpoint(l->audit, cr_identity_sign, (void *)l->id, pk, err);
  if (rc == 0)
    l->unsigned_tail = 0;
  pthread_mutex_unlock(&l->lock);
  return rc;
}

/* ---- a trail on a log ------------------------------------------------------ */

void cr__trail_init(cr_trail *a, cr_log *log, const cr_identity *id, const cr_template *t,
                    cr_role role, const char *collab) {
  memset(a, 0, sizeof *a);
  a->log = log;
  a->open = log != NULL;
  if (log != NULL)
    log->refs++;
  a->id = id;
  a->t = t;
  a->role = role;
  if (t != NULL)
    cr_hex_encode(a->th, t->sha256, CR_SHA256_BYTES);
  snprintf(a->collab, sizeof a->collab, "%s", collab ? collab : "");
}

int cr__trail_open(cr_trail *a, const char *path, const cr_identity *id, const cr_template *t,
                   cr_error *err) {
  cr_log *l = NULL;
  cr_role role = CR_ROLE_PROVIDER;
  memset(a, 0, sizeof *a);
  if (t != NULL)
    cr_hex_encode(a->th, t->sha256, CR_SHA256_BYTES);
  int rc = cr__log_open(&l, path, id, err);
  if (rc)
    return rc;
  if (t != NULL)
    (void)cr_template_role_of(t, cr_identity_fingerprint(id), &role);
  cr__trail_init(a, l, id, t, role, t ? t->name : NULL);
  cr__log_release(l); /* the trail holds it now */
  return 0;
}

void cr__trail_close(cr_trail *a) {
  cr__log_release(a->log);
  memset(a, 0, sizeof *a);
}

/* The names a collaboration's events carry, unless already set. */
static void trail_names(const cr_trail *a, json_t *o) {
  if (a->collab[0] && json_object_get(o, "collaboration") == NULL)
    json_object_set_new(o, "collaboration", cr__jtext(a->collab));
  if (a->t == NULL)
    return;
  if (json_object_get(o, "template_sha256") == NULL)
    json_object_set_new(o, "template_sha256", cr__jtext(a->th));
  cr_role other = cr_role_other(a->role);
  if (json_object_get(o, "partner") == NULL)
    json_object_set_new(o, "partner", cr__jtext(a->t->parties[other].org));
  if (json_object_get(o, "partner_cert_sha256") == NULL)
    json_object_set_new(o, "partner_cert_sha256",
                        hexj(a->t->parties[other].cert_sha256, CR_SHA256_BYTES));
}

int cr__trail_write_error(int rc) {
  switch (rc) {
  case CR_EIO:
  case CR_ENOMEM:
    return rc;
  case CR_ETIMEDOUT:
    return CR_ECONFIG;
  default:
    return CR_EINTERNAL;
  }
}

int cr__trail_event(cr_trail *a, const char *event, json_t *fields, cr_error *err) {
  if (!a->open) {
    json_decref(fields);
    return 0;
  }
  if (fields == NULL && (a->collab[0] || a->t != NULL))
    fields = json_object();
  if (fields != NULL && json_is_object(fields))
    trail_names(a, fields);
  int rc = log_event(a->log, event, fields, err);
  json_decref(fields);
  return rc;
}

int cr__trail_checkpoint(cr_trail *a, cr_error *err) {
  if (!a->open)
    return 0;
  return log_checkpoint(a->log, err);
}

static int record_receipt(cr_trail *a, const cr_session_result *r, const uint8_t *peer_fp,
                          cr_error *err);

void cr__trail_withheld(cr_trail *a, const cr_session_result *r, const uint8_t *peer_fp,
                        const char *why, json_t *extra) {
  json_t *o = cr__trail_session_fields(a, r);
  json_object_set_new(o, "reason", cr__jtext(why));
  if (extra != NULL)
    json_object_update(o, extra);
  json_decref(extra);
  /* The session completed: its receipt is evidence even though nothing
   * was shown. */
  if (cr__trail_event(a, "result_withheld", o, NULL) == 0 &&
      record_receipt(a, r, peer_fp, NULL) == 0)
    (void)cr__trail_checkpoint(a, NULL);
}

json_t *cr__trail_data_fields(const cr_dataset *d, const cr_template *t, const char *query) {
  json_t *rej = json_object();
  for (int i = 0; i < CR_REJECT_COUNT; i++)
    if (d->rejected[i])
      json_object_set_new(rej, cr_reject_key((cr_reject_reason)i),
                          json_integer((json_int_t)d->rejected[i]));
  json_t *o = json_object();
  json_object_set_new(o, "file", cr__jtext(d->path ? d->path : ""));
  json_object_set_new(o, "file_sha256", hexj(d->file_sha256, CR_SHA256_BYTES));
  json_object_set_new(o, "rows_read", json_integer((json_int_t)d->rows_read));
  json_object_set_new(o, "rows_accepted", json_integer((json_int_t)d->rows_accepted));
  json_object_set_new(o, "rows_rejected", json_integer((json_int_t)d->rows_rejected));
  json_object_set_new(o, "rejected", rej);
  json_object_set_new(o, "distinct_keys", json_integer((json_int_t)d->n));
  if (d->nkeys > 1 && t != NULL) {
    /* Several match keys: what the set is made of, and each key's skips. */
    if (cr_dataset_width(d) > 1) {
      json_object_set_new(o, "records", json_integer((json_int_t)d->n));
      json_object_set_new(o, "rows_merged", json_integer((json_int_t)d->rows_merged));
      json_object_set_new(o, "values_unsent", json_integer((json_int_t)d->values_unsent));
    } else {
      json_object_set_new(o, "distinct_values", json_integer((json_int_t)d->n));
    }
    json_t *keys = json_object();
    for (size_t k = 0; k < d->nkeys && k < cr_template_nkeys(t); k++) {
      json_t *kv = json_object();
      json_object_set_new(kv, "missing", json_integer((json_int_t)d->key_missing[k]));
      json_object_set_new(kv, "invalid", json_integer((json_int_t)d->key_invalid[k]));
      cr__jset(keys, t->match_keys[k].name, kv);
    }
    json_object_set_new(o, "keys", keys);
  }
  if (d->nlabels)
    json_object_set_new(o, "groups", json_integer((json_int_t)d->nlabels));
  if (query)
    json_object_set_new(o, "query", cr__jtext(query));
  return o;
}

static double share(uint64_t part, uint64_t whole) {
  return whole ? (double)part / (double)whole : 0.0;
}

static json_t *cells_json(const cr_session_result *r) {
  json_t *cells = json_array();
  for (size_t i = 0; i < r->ncells; i++) {
    const cr_session_cell *c = &r->cells[i];
    size_t a = c->label[CR_ROLE_PROVIDER], b = c->label[CR_ROLE_CONSUMER];
    json_t *o = json_object();
    json_object_set_new(o, "provider", cr__jtext(r->labels[CR_ROLE_PROVIDER][a]));
    json_object_set_new(o, "consumer", cr__jtext(r->labels[CR_ROLE_CONSUMER][b]));
    if (c->suppressed) {
      json_object_set_new(o, "suppressed", json_true());
    } else {
      json_object_set_new(o, "count", json_integer((json_int_t)c->count));
      json_object_set_new(o, "share_of_provider_group",
                          json_real(share(c->count, r->label_sizes[CR_ROLE_PROVIDER][a])));
      json_object_set_new(o, "share_of_consumer_group",
                          json_real(share(c->count, r->label_sizes[CR_ROLE_CONSUMER][b])));
    }
    json_array_append_new(cells, o);
  }
  return cells;
}

static json_t *groups_json(const cr_session_result *r, cr_role role) {
  json_t *g = json_array();
  for (size_t i = 0; i < r->nlabels[role]; i++) {
    json_t *o = json_object();
    json_object_set_new(o, "label", cr__jtext(r->labels[role][i]));
    json_object_set_new(o, "size", json_integer((json_int_t)r->label_sizes[role][i]));
    json_array_append_new(g, o);
  }
  return g;
}

/* Several match keys: whose records the count counts, and per key the
 * records with a match on it (each released or suppressed on its own). */
static void by_key_json(json_t *rel, const cr_session_result *r) {
  json_t *keys = json_array();
  for (size_t k = 0; k < r->nkeys && k < CR_TEMPLATE_MAX_KEYS; k++) {
    json_t *o = json_object();
    json_object_set_new(o, "key", cr__jtext(r->key_names[k]));
    if (r->key_suppressed[k])
      json_object_set_new(o, "suppressed", json_true());
    else
      json_object_set_new(o, "count", json_integer((json_int_t)r->key_count[k]));
    json_array_append_new(keys, o);
  }
  json_object_set_new(rel, "by_key", keys);
}

/* What the noise of a noisy release was (docs/privacy.md): mechanism,
 * epsilon (and delta, sigma), scale, and the +-error_95 within which the
 * true value lies with probability 95%. */
static json_t *noise_json(const cr_noise *n) {
  json_t *o = json_object();
  json_object_set_new(o, "mechanism", json_string(cr_noise_mechanism_name(n->mechanism)));
  json_object_set_new(o, "epsilon", json_real((double)n->epsilon / (double)CR_DP_EPSILON_UNIT));
  if (n->mechanism == CR_NOISE_DISCRETE_GAUSSIAN) {
    json_object_set_new(o, "delta", json_real((double)n->delta / (double)CR_DP_DELTA_UNIT));
    json_object_set_new(o, "sigma", json_real((double)n->sigma / (double)CR_DP_SIGMA_UNIT));
  }
  json_object_set_new(o, "scale", json_real(cr_noise_scale(n)));
  json_object_set_new(o, "stddev", json_real(sqrt(cr_noise_variance(n))));
  json_object_set_new(o, "error_95", json_integer((json_int_t)cr_noise_interval(n, 0.95)));
  return o;
}

json_t *cr__trail_released(const cr_session_result *r, const cr_party_session *m) {
  if (r->status != CR_SESSION_DONE || !r->receives)
    return json_null();
  json_t *rel = json_object();
  /* The numbers below are noisy (noise added, then min_count applied). */
  if (r->noisy)
    json_object_set_new(rel, "noise", noise_json(&r->noise));
  if (r->grouped) {
    json_object_set_new(rel, "cells", cells_json(r));
    json_object_set_new(rel, "min_count", json_integer((json_int_t)r->min_count));
    json_object_set_new(rel, "provider_groups", groups_json(r, CR_ROLE_PROVIDER));
    json_object_set_new(rel, "consumer_groups", groups_json(r, CR_ROLE_CONSUMER));
  } else if (r->suppressed) {
    json_object_set_new(rel, "suppressed", json_true());
    json_object_set_new(rel, "min_count", json_integer((json_int_t)r->min_count));
  } else {
    json_object_set_new(rel, "count", json_integer((json_int_t)r->count));
    json_object_set_new(rel, "share_of_own", json_real(share(r->count, r->own_set_size)));
    json_object_set_new(rel, "share_of_peer", json_real(share(r->count, r->peer_set_size)));
    if (r->nmatch_keys > 1)
      json_object_set_new(rel, "count_of", json_string(cr_role_name(r->count_of)));
    if (r->nkeys > 1) /* not with noise: its count only */
      by_key_json(rel, r);
    if (m != NULL && m->rows_written && m->rows_path != NULL) {
      json_object_set_new(rel, "rows_file", cr__jtext(m->rows_path));
      json_object_set_new(rel, "rows", json_integer((json_int_t)m->rows));
      json_object_set_new(rel, "rows_file_sha256", hexj(m->rows_sha256, CR_SHA256_BYTES));
    }
  }
  return rel;
}

char *cr_party_released_json(const cr_party_session *s) {
  if (s == NULL || s->res == NULL)
    return NULL;
  json_t *j = cr__trail_released(s->res, s);
  char *out = j ? json_dumps(j, JSON_COMPACT | JSON_ENCODE_ANY | JSON_REAL_PRECISION(17)) : NULL;
  json_decref(j);
  return out;
}

static json_t *params_json(const cr_session_result *r) {
  json_t *p = json_object();
  for (size_t i = 0; i < r->nparams; i++)
    cr__jset(p, r->param_names[i], cr__jtext(r->param_values[i]));
  return p;
}

json_t *cr__trail_session_fields(const cr_trail *a, const cr_session_result *r) {
  json_t *o = json_object();
  if (r->have_session_id)
    json_object_set_new(o, "session_id", hexj(r->session_id, CR_SESSION_ID_BYTES));
  /* Ties a run's admission (before the session id exists on the
   * responder) to its end. */
  if (r->have_run_id)
    json_object_set_new(o, "run_id", hexj(r->run_id, CR_SHA256_BYTES));
  json_object_set_new(o, "template_sha256", cr__jtext(a->th));
  json_object_set_new(o, "query", cr__jtext(r->query));
  json_object_set_new(o, "role", cr__jtext(cr_role_name(r->role)));
  json_object_set_new(o, "is_runner", json_boolean(r->is_runner));
  json_object_set_new(o, "params", params_json(r));
  json_object_set_new(o, "own_set_size", json_integer((json_int_t)r->own_set_size));
  json_object_set_new(o, "peer_set_size", json_integer((json_int_t)r->peer_set_size));
  /* Protocol v3: the partner announces a bucket of its padded set. */
  if (r->peer_set_size_is_bucket)
    json_object_set_new(o, "peer_set_size_is_bucket", json_true());
  return o;
}

/* The query's runs so far under this trail's template: the session_started
 * lines of the log, whoever wrote them (the log's watch counts every line;
 * cr_audit_lock or _sync has just caught up with the other writers).
 * Caller holds the log's mutex. Runs are counted from the log itself, so a
 * restart does not reset them and deleting lines breaks the chain instead
 * of adding runs. */
static uint64_t runs_of(const cr_trail *a, const char *query) {
  const cr_log *l = a->log;
  for (size_t i = 0; i < l->ncounts; i++)
    if (strcmp(l->counts[i].th, a->th) == 0 && strcmp(l->counts[i].query, query) == 0)
      return l->counts[i].runs;
  return 0;
}

/* CR_EREFUSED with msg when the query's runs have reached the limit. */
static int limit_reached(const cr_trail *a, const char *query, char *msg, size_t cap) {
  uint64_t max = a->t->limits.max_runs_per_query;
  if (max == 0)
    return 0;
  if (a->log->counts_lost) {
    snprintf(msg, cap, "cannot count this query's runs (out of memory)");
    return CR_ENOMEM;
  }
  uint64_t runs = runs_of(a, query);
  if (runs < max)
    return 0;
  snprintf(msg, cap,
           "query \"%s\" has run %llu times under this template, its limit "
           "(limits.max_runs_per_query = %llu); agree a new template to run it again",
           query, (unsigned long long)runs, (unsigned long long)max);
  return CR_EREFUSED;
}

int cr__trail_limit(cr_trail *a, const char *query, char *msg, size_t cap) {
  if (!a->open || a->t == NULL || a->t->limits.max_runs_per_query == 0)
    return 0;
  cr_error err;
  cr_error_clear(&err);
  pthread_mutex_lock(&a->log->lock);
  int rc = cr_audit_sync(a->log->audit, &err);
  if (rc)
    snprintf(msg, cap, "cannot count this query's runs in the audit log: %s",
             cr_error_message(&err, rc));
  else
    rc = limit_reached(a, query, msg, cap);
  pthread_mutex_unlock(&a->log->lock);
  return rc;
}

int64_t cr__trail_runs(cr_trail *a, const char *query) {
  if (!a->open || a->t == NULL)
    return -1;
  pthread_mutex_lock(&a->log->lock);
  int64_t n = cr_audit_sync(a->log->audit, NULL) == 0 ? (int64_t)runs_of(a, query) : -1;
  pthread_mutex_unlock(&a->log->lock);
  return n;
}

/* ---- privacy budget (docs/privacy.md) ----------------------------------- */

/* The spends under this trail's template so far: the privacy_spend of
 * every session_started line of the log, whoever wrote it (the log's watch
 * adds them up, exact integers: no drift however many runs). Caller holds
 * the log's mutex, just after catching up with the other writers. */
static void spent_of(const cr_trail *a, uint64_t *eps, uint64_t *delta) {
  const cr_log *l = a->log;
  *eps = *delta = 0;
  for (size_t i = 0; i < l->nspends; i++)
    if (strcmp(l->spends[i].th, a->th) == 0) {
      *eps = l->spends[i].eps;
      *delta = l->spends[i].delta;
      return;
    }
}

/* CR_EREFUSED with msg when a run of the query would overspend. */
static int budget_fits(const cr_trail *a, const char *query, const cr_noise *n, char *msg,
                       size_t cap) {
  const cr_privacy_budget *b = &a->t->limits.privacy_budget;
  char want[32], left[32], spent[32], total[32];
  if (b->epsilon == 0)
    return 0;
  if (a->log->counts_lost) {
    snprintf(msg, cap, "cannot add up the privacy budget spent (out of memory)");
    return CR_ENOMEM;
  }
  uint64_t eps_spent, delta_spent;
  spent_of(a, &eps_spent, &delta_spent);
  uint64_t eleft = b->epsilon > eps_spent ? b->epsilon - eps_spent : 0;
  if (n->epsilon > eleft) {
    snprintf(msg, cap,
             "query \"%s\" would spend epsilon %s of the privacy budget, but only %s of %s is "
             "left (%s spent under this template; limits.privacy_budget.epsilon); agree a new "
             "template to run it again",
             query, cr_dp_decimal(want, sizeof want, n->epsilon, CR_DP_EPSILON_UNIT),
             cr_dp_decimal(left, sizeof left, eleft, CR_DP_EPSILON_UNIT),
             cr_dp_decimal(total, sizeof total, b->epsilon, CR_DP_EPSILON_UNIT),
             cr_dp_decimal(spent, sizeof spent, eps_spent, CR_DP_EPSILON_UNIT));
    return CR_EREFUSED;
  }
  uint64_t dleft = b->delta > delta_spent ? b->delta - delta_spent : 0;
  if (n->delta > dleft) {
    snprintf(msg, cap,
             "query \"%s\" would spend delta %g of the privacy budget, but only %g of %g is left "
             "(%g spent under this template; limits.privacy_budget.delta); agree a new template "
             "to run it again",
             query, (double)n->delta / (double)CR_DP_DELTA_UNIT,
             (double)dleft / (double)CR_DP_DELTA_UNIT, (double)b->delta / (double)CR_DP_DELTA_UNIT,
             (double)delta_spent / (double)CR_DP_DELTA_UNIT);
    return CR_EREFUSED;
  }
  return 0;
}

int cr__trail_budget_check(cr_trail *a, const cr_query *q, char *msg, size_t cap) {
  if (!a->open || a->t == NULL || q->noise.mechanism == CR_NOISE_NONE)
    return 0;
  cr_error err;
  cr_error_clear(&err);
  pthread_mutex_lock(&a->log->lock);
  int rc = cr_audit_sync(a->log->audit, &err);
  if (rc)
    snprintf(msg, cap, "cannot add up the privacy budget spent in the audit log: %s",
             cr_error_message(&err, rc));
  else
    rc = budget_fits(a, q->name, &q->noise, msg, cap);
  pthread_mutex_unlock(&a->log->lock);
  return rc;
}

int cr__trail_budget(cr_trail *a, cr_party_budget *out, char *msg, size_t cap) {
  memset(out, 0, sizeof *out);
  if (!a->open || a->t == NULL || a->t->limits.privacy_budget.epsilon == 0)
    return 0;
  const cr_privacy_budget *b = &a->t->limits.privacy_budget;
  cr_error err;
  cr_error_clear(&err);
  pthread_mutex_lock(&a->log->lock);
  int rc = cr_audit_sync(a->log->audit, &err);
  if (rc) {
    snprintf(msg, cap, "cannot add up the privacy budget spent in the audit log: %s",
             cr_error_message(&err, rc));
  } else {
    out->set = 1;
    out->epsilon = b->epsilon;
    out->delta = b->delta;
    spent_of(a, &out->epsilon_spent, &out->delta_spent);
  }
  pthread_mutex_unlock(&a->log->lock);
  return rc;
}

int cr__trail_admit(cr_trail *a, const cr_session_result *r, char *msg, size_t cap) {
  cr_error err;
  cr_error_clear(&err);
  int rc = 0;
  if (!a->open)
    return 0;
  cr_log *l = a->log;
  json_t *f = cr__trail_session_fields(a, r);
  trail_names(a, f);
  /* A run of a noisy query spends its epsilon at admission, before
   * anything of it can be released: once a seed share is open the partner
   * can compute the release, so a run that fails later has spent it too. */
  if (r->noisy) {
    json_t *sp = json_object();
    json_object_set_new(sp, "mechanism", json_string(cr_noise_mechanism_name(r->noise.mechanism)));
    json_object_set_new(sp, "epsilon_micro", json_integer((json_int_t)r->noise.epsilon));
    json_object_set_new(sp, "delta_femto", json_integer((json_int_t)r->noise.delta));
    json_object_set_new(f, "privacy_spend", sp);
  }
  char *text = json_dumps(f, JSON_COMPACT);
  json_decref(f);
  if (text == NULL) {
    snprintf(msg, cap, "out of memory");
    return CR_ENOMEM;
  }
  pthread_mutex_lock(&l->lock);
  /* Count and record under the file lock: two sessions (of this node, or
   * of any process writing this log) cannot both take the last run, or
   * the last of the privacy budget. */
  if ((rc = cr_audit_lock(l->audit, &err)) != 0) {
    snprintf(msg, cap, "cannot record the session in the audit log: %s",
             cr_error_message(&err, rc));
    goto out;
  }
  if (a->t != NULL && (rc = limit_reached(a, r->query, msg, cap)) == 0 &&
      (!r->noisy || (rc = budget_fits(a, r->query, &r->noise, msg, cap)) == 0)) {
    rc = cr_audit_append(l->audit, "session_started", text, &err);
    if (rc)
      snprintf(msg, cap, "cannot record the session in the audit log: %s",
               cr_error_message(&err, rc));
    else
      l->unsigned_tail = 1;
  }
  cr_audit_unlock(l->audit);
out:
  pthread_mutex_unlock(&l->lock);
  free(text);
  /* A refusal, or the log's own failure as cr__trail_write_error says. */
  return rc ? (rc == CR_EREFUSED ? rc : cr__trail_write_error(rc)) : 0;
}

/* The partner's signed receipt: everything needed to check it again
 * offline (docs/protocol.md, "Finish"). */
static int record_receipt(cr_trail *a, const cr_session_result *r, const uint8_t *peer_fp,
                          cr_error *err) {
  json_t *rc_o = json_object();
  json_object_set_new(rc_o, "session_id", hexj(r->session_id, CR_SESSION_ID_BYTES));
  json_object_set_new(rc_o, "query", cr__jtext(r->query));
  json_object_set_new(rc_o, "transcript_sha256", hexj(r->transcript_sha256, CR_SHA256_BYTES));
  /* Everything the partner's receipt covers (cr_session_receipt), so
   * `audit verify` can check it again. */
  cr_session_receipt rcpt;
  cr_session_peer_receipt(r, &rcpt);
  json_object_set_new(rc_o, "receipt_version", json_integer(3));
  json_object_set_new(rc_o, "signer_role", cr__jtext(cr_role_name(rcpt.signer)));
  json_object_set_new(rc_o, "template_sha256", hexj(rcpt.template_sha256, CR_SHA256_BYTES));
  json_object_set_new(rc_o, "provider_cert_sha256",
                      hexj(rcpt.cert_sha256[CR_ROLE_PROVIDER], CR_SHA256_BYTES));
  json_object_set_new(rc_o, "consumer_cert_sha256",
                      hexj(rcpt.cert_sha256[CR_ROLE_CONSUMER], CR_SHA256_BYTES));
  json_object_set_new(rc_o, "n_runner", json_integer((json_int_t)rcpt.n_runner));
  json_object_set_new(rc_o, "n_responder", json_integer((json_int_t)rcpt.n_responder));
  json_object_set_new(rc_o, "provider_released_sha256",
                      hexj(rcpt.released_sha256[CR_ROLE_PROVIDER], CR_SHA256_BYTES));
  json_object_set_new(rc_o, "consumer_released_sha256",
                      hexj(rcpt.released_sha256[CR_ROLE_CONSUMER], CR_SHA256_BYTES));
  if (peer_fp)
    json_object_set_new(rc_o, "peer_cert_sha256", hexj(peer_fp, CR_SHA256_BYTES));
  json_object_set_new(rc_o, "peer_public_key", hexj(r->peer_sign_pk, CR_SIGN_PK_BYTES));
  json_object_set_new(rc_o, "peer_signature", hexj(r->peer_signature, CR_SIGNATURE_BYTES));
  return cr__trail_event(a, "receipt", rc_o, err);
}

int cr__trail_pins(const cr_trail *a, const uint8_t *fp) {
  if (fp == NULL || a->t == NULL)
    return 0;
  for (int r = 0; r < CR_ROLE_COUNT; r++)
    if (memcmp(fp, a->t->parties[r].cert_sha256, CR_SHA256_BYTES) == 0)
      return 1;
  return 0;
}

/* What is counted rather than written, past a number of lines a minute. */
typedef struct throttle_kind {
  const char *event, *count, *reason;
  unsigned per_minute;
} throttle_kind;

static const throttle_kind refusals = {
    "connections_refused_summary", "connections",
    "more refused connections from unauthenticated peers than the log records a minute",
    CR_TRAIL_REFUSALS_PER_MINUTE};
static const throttle_kind pings = {"pings_answered_summary", "pings",
                                    "more pings from partners than the log records a minute",
                                    CR_TRAIL_PINGS_PER_MINUTE};

/* Writes the count left out of the log, if any. Loop thread (refusals and
 * pings are recorded there). */
static void throttle_flush(cr_log *l, struct cr_log_throttle *t, const throttle_kind *k,
                           uint64_t now) {
  if (t->dropped == 0)
    return;
  json_t *o = json_object();
  json_object_set_new(o, k->count, json_integer((json_int_t)t->dropped));
  json_object_set_new(o, "window_ms", json_integer((json_int_t)(now - t->window_ms)));
  json_object_set_new(o, "reason", cr__jtext(k->reason));
  t->dropped = 0;
  (void)log_event(l, k->event, o, NULL);
  json_decref(o);
}

static void throttles_flush(cr_log *l, uint64_t now) {
  throttle_flush(l, &l->refused, &refusals, now);
  throttle_flush(l, &l->pings, &pings, now);
}

/* 1 when this event is only counted, not written. */
static int throttled(cr_log *l, struct cr_log_throttle *t, const throttle_kind *k) {
  uint64_t now = cr_now_ms();
  if (t->window_ms == 0 || now - t->window_ms >= 60000) {
    throttle_flush(l, t, k, now);
    t->window_ms = now;
    t->in_window = 0;
  }
  if (t->in_window < k->per_minute) {
    t->in_window++;
    return 0;
  }
  t->dropped++;
  return 1;
}

int cr__trail_ping(cr_trail *a, json_t *accepted, json_t *fields, cr_error *err) {
  if (!a->open || throttled(a->log, &a->log->pings, &pings)) {
    json_decref(accepted);
    json_decref(fields);
    return 0;
  }
  int rc = accepted != NULL ? cr__trail_event(a, "connection_accepted", accepted, err) : 0;
  if (rc == 0)
    rc = cr__trail_event(a, "ping_answered", fields, err);
  else
    json_decref(fields);
  return rc ? rc : cr__trail_checkpoint(a, err);
}

int cr__trail_session_end(cr_trail *a, const cr_session_result *r, const char *peer_addr,
                          const uint8_t *peer_fp, const cr_party_session *m, json_t *extra,
                          cr_error *err) {
  int rc = 0;
  if (!a->open) {
    json_decref(extra);
    return 0;
  }
  /* A failure before any session frame (TCP, TLS, pinning, timeout) is a
   * refused connection; anything later is an aborted session. */
  int connection_level =
      !r->have_session_id && r->wire_error == 0 &&
      (r->error == CR_ETLS || r->error == CR_EAUTH || r->error == CR_ENET ||
       r->error == CR_ETIMEDOUT || r->error == CR_ECONNRESET || r->error == CR_EREFUSED);
  if (connection_level &&
      !(a->pinned != NULL ? a->pinned(a->pinned_ctx, peer_fp) : cr__trail_pins(a, peer_fp)) &&
      throttled(a->log, &a->log->refused, &refusals)) {
    json_decref(extra);
    return 0;
  }
  if (connection_level) {
    json_t *o = json_object();
    if (peer_addr)
      json_object_set_new(o, "address", cr__jtext(peer_addr));
    if (peer_fp)
      json_object_set_new(o, "peer_cert_sha256", hexj(peer_fp, CR_SHA256_BYTES));
    json_object_set_new(o, "error", cr__jtext(cr_err_name(r->error)));
    if (r->wire_error)
      json_object_set_new(o, "wire_error", cr__jtext(cr_wire_error_name(r->wire_error)));
    json_object_set_new(o, "from_peer", json_boolean(r->error_from_peer));
    json_object_set_new(o, "reason", cr__jtext(r->error_msg));
    rc = cr__trail_event(a, "connection_refused", o, err);
  } else if (r->status != CR_SESSION_DONE) {
    json_t *o = cr__trail_session_fields(a, r);
    if (peer_addr)
      json_object_set_new(o, "address", cr__jtext(peer_addr));
    json_object_set_new(o, "error", cr__jtext(cr_err_name(r->error)));
    if (r->wire_error)
      json_object_set_new(o, "wire_error", cr__jtext(cr_wire_error_name(r->wire_error)));
    json_object_set_new(o, "from_peer", json_boolean(r->error_from_peer));
    json_object_set_new(o, "reason", cr__jtext(r->error_msg));
    /* Our digests went to the partner but no receipt came back. */
    if (r->digests_returned)
      json_object_set_new(o, "digests_returned", json_true());
    if (extra != NULL)
      json_object_update(o, extra);
    rc = cr__trail_event(a, "session_aborted", o, err);
  } else {
    json_t *o = cr__trail_session_fields(a, r);
    json_object_set_new(o, "receives", json_boolean(r->receives));
    json_object_set_new(o, "released", cr__trail_released(r, m));
    if (extra != NULL)
      json_object_update(o, extra);
    rc = cr__trail_event(a, "result_released", o, err);
    if (rc == 0)
      rc = record_receipt(a, r, peer_fp, err);
  }
  json_decref(extra);
  if (rc == 0)
    rc = cr__trail_checkpoint(a, err);
  return rc;
}

/* ---- run: one limited run of the identity at a time, count to admission -- */

int cr__trail_run_lock(cr_trail *a, int *fd_out, char *msg, size_t cap) {
  *fd_out = -1;
  if (!a->open)
    return 0;
  size_t n = strlen(a->log->path) + sizeof CR_TRAIL_RUN_LOCK_SUFFIX;
  char *path = malloc(n);
  if (path == NULL) {
    snprintf(msg, cap, "out of memory");
    return CR_ENOMEM;
  }
  snprintf(path, n, "%s%s", a->log->path, CR_TRAIL_RUN_LOCK_SUFFIX);
  int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (fd < 0) {
    snprintf(msg, cap, "cannot open %s: %s", path, strerror(errno));
    free(path);
    return CR_EIO;
  }
  /* Held only from a run's count to its admission (a connection and a
   * Hello exchange), so the wait is short; polled, so that it is bounded. */
  uint64_t waited_us = 0, step_us = 1000;
  for (;;) {
    if (flock(fd, LOCK_EX | LOCK_NB) == 0)
      break;
    if (errno != EWOULDBLOCK && errno != EINTR) {
      snprintf(msg, cap, "cannot lock %s: %s", path, strerror(errno));
      close(fd);
      free(path);
      return CR_EIO;
    }
    if (waited_us >= (uint64_t)CR_TRAIL_RUN_LOCK_WAIT_MS * 1000u) {
      snprintf(msg, cap,
               "another run of this identity has held %s for %u s, waiting to be admitted by "
               "its partner; try again",
               path, CR_TRAIL_RUN_LOCK_WAIT_MS / 1000u);
      close(fd);
      free(path);
      return CR_ETIMEDOUT; /* a wait, not a storage failure */
    }
    struct timespec ts = {0, (long)step_us * 1000L};
    (void)nanosleep(&ts, NULL);
    waited_us += step_us;
    if (step_us < 50000)
      step_us *= 2;
  }
  free(path);
  *fd_out = fd;
  return 0;
}

void cr__trail_run_unlock(int *fd) {
  if (*fd >= 0) {
    close(*fd); /* releases the flock */
    *fd = -1;
  }
}
