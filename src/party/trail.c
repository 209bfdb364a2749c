/*
 * The node's audit trail (docs/audit.md): what serve and run record, and
 * when. Appends are serialised with a mutex: sessions run their admit and
 * load hooks on worker threads. Every append is fsync'ed by the audit
 * module before it returns, and a result is shown only after its
 * result_released line is on disk. Nothing here ever records a match key,
 * a point or a secret: only sizes, hashes, names and what was released.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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

int cr__trail_open(cr_trail *a, const char *path, const cr_identity *id, const cr_template *t,
                   cr_error *err) {
  memset(a, 0, sizeof *a);
  a->id = id;
  a->t = t;
  cr_hex_encode(a->th, t->sha256, CR_SHA256_BYTES);
  pthread_mutex_init(&a->lock, NULL);
  int rc = cr_audit_open(&a->log, path, err);
  if (rc)
    return rc;
  a->open = 1;
  return 0;
}

static void refusals_flush(cr_trail *a, uint64_t now);

void cr__trail_close(cr_trail *a) {
  /* Whatever was recorded since the last session (a refusal, a failed
   * load) gets a signature too before the node lets go of the log. */
  if (a->open)
    refusals_flush(a, cr_now_ms());
  if (a->open && a->unsigned_tail)
    (void)cr__trail_checkpoint(a, NULL);
  if (a->open)
    cr_audit_close(a->log);
  if (a->id != NULL)
    pthread_mutex_destroy(&a->lock);
  free(a->counts);
  memset(a, 0, sizeof *a);
}

int cr__trail_event(cr_trail *a, const char *event, json_t *fields, cr_error *err) {
  if (!a->open) {
    json_decref(fields);
    return 0;
  }
  pthread_mutex_lock(&a->lock);
  char *text = fields ? json_dumps(fields, JSON_COMPACT | JSON_ENCODE_ANY) : NULL;
  int rc = fields && text == NULL ? cr_error_set(err, CR_ENOMEM, "out of memory")
                                  : cr_audit_append(a->log, event, text, err);
  free(text);
  if (rc == 0)
    a->unsigned_tail = 1;
  pthread_mutex_unlock(&a->lock);
  json_decref(fields);
  return rc;
}

int cr__trail_checkpoint(cr_trail *a, cr_error *err) {
  if (!a->open)
    return 0;
  uint8_t pk[CR_SIGN_PK_BYTES];
  cr_identity_public_key(a->id, pk);
  pthread_mutex_lock(&a->lock);
  int rc = cr_audit_checkpoint(a->log, cr_identity_sign, (void *)a->id, pk, err);
  if (rc == 0)
    a->unsigned_tail = 0;
  pthread_mutex_unlock(&a->lock);
  return rc;
}

static int record_receipt(cr_trail *a, const cr_session_result *r, const uint8_t *peer_fp,
                          cr_error *err);

void cr__trail_withheld(cr_trail *a, const cr_session_result *r, const uint8_t *peer_fp,
                        const char *why) {
  json_t *o = cr__trail_session_fields(a, r);
  json_object_set_new(o, "reason", cr__jtext(why));
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

/* The query's runs so far, counted from the log once, then kept in memory
 * (this node holds the log's lock, so nobody else appends to it). Runs are
 * counted from the log itself, so a restart does not reset them and
 * deleting lines breaks the chain instead of adding runs. Caller holds
 * a->lock. 0 with *out set, or an error with msg. */
static int runs_of(cr_trail *a, const char *query, struct run_count **out, char *msg, size_t cap) {
  cr_error err;
  cr_error_clear(&err);
  for (size_t i = 0; i < a->ncounts; i++)
    if (strcmp(a->counts[i].query, query) == 0) {
      *out = &a->counts[i];
      return 0;
    }
  uint64_t runs = 0;
  const char *kv[] = {"template_sha256", a->th, "query", query, NULL};
  int rc = cr_audit_count(cr_audit_path(a->log), "session_started", kv, &runs, &err);
  if (rc) {
    snprintf(msg, cap, "cannot count this query's runs in the audit log: %s",
             cr_error_message(&err, rc));
    return rc;
  }
  struct run_count *p = realloc(a->counts, (a->ncounts + 1) * sizeof *p);
  if (p == NULL) {
    snprintf(msg, cap, "out of memory");
    return CR_ENOMEM;
  }
  a->counts = p;
  *out = &a->counts[a->ncounts++];
  snprintf((*out)->query, sizeof(*out)->query, "%s", query);
  (*out)->runs = runs;
  return 0;
}

/* CR_EREFUSED with msg when the query's runs have reached the limit. */
static int limit_reached(cr_trail *a, struct run_count *rcnt, char *msg, size_t cap) {
  uint64_t max = a->t->limits.max_runs_per_query;
  if (max == 0 || rcnt->runs < max)
    return 0;
  snprintf(msg, cap,
           "query \"%s\" has run %llu times under this template, its limit "
           "(limits.max_runs_per_query = %llu); agree a new template to run it again",
           rcnt->query, (unsigned long long)rcnt->runs, (unsigned long long)max);
  return CR_EREFUSED;
}

int cr__trail_limit(cr_trail *a, const char *query, char *msg, size_t cap) {
  if (!a->open || a->t->limits.max_runs_per_query == 0)
    return 0;
  struct run_count *rcnt = NULL;
  pthread_mutex_lock(&a->lock);
  int rc = runs_of(a, query, &rcnt, msg, cap);
  if (rc == 0)
    rc = limit_reached(a, rcnt, msg, cap);
  pthread_mutex_unlock(&a->lock);
  return rc;
}

/* ---- privacy budget (docs/privacy.md) ----------------------------------- */

static uint64_t sat_add(uint64_t a, uint64_t b) { return a > UINT64_MAX - b ? UINT64_MAX : a + b; }

typedef struct spend_sum {
  const char *th;
  uint64_t eps, delta;
} spend_sum;

/* One verified line: a session_started of this template with a spend. */
static int add_spend(void *ctx, const char *entry, size_t len) {
  spend_sum *sum = ctx;
  json_t *j = json_loadb(entry, len, 0, NULL);
  json_t *ev = json_object_get(j, "event"), *th = json_object_get(j, "template_sha256");
  json_t *sp = json_object_get(j, "privacy_spend");
  if (json_is_string(ev) && strcmp(json_string_value(ev), "session_started") == 0 &&
      json_is_string(th) && strcmp(json_string_value(th), sum->th) == 0 && json_is_object(sp)) {
    json_t *e = json_object_get(sp, "epsilon_micro"), *d = json_object_get(sp, "delta_femto");
    if (json_is_integer(e) && json_integer_value(e) > 0)
      sum->eps = sat_add(sum->eps, (uint64_t)json_integer_value(e));
    if (json_is_integer(d) && json_integer_value(d) > 0)
      sum->delta = sat_add(sum->delta, (uint64_t)json_integer_value(d));
  }
  json_decref(j);
  return 0;
}

/* The spends so far, added up from the log once (exact integers: no
 * drift however many runs), then kept: this node holds the log's lock, so
 * nobody else appends. Caller holds a->lock. */
static int budget_load(cr_trail *a, char *msg, size_t cap) {
  if (a->budget_loaded)
    return 0;
  cr_error err;
  cr_error_clear(&err);
  spend_sum sum = {a->th, 0, 0};
  int rc = cr_audit_foreach(cr_audit_path(a->log), add_spend, &sum, &err);
  if (rc) {
    snprintf(msg, cap, "cannot add up the privacy budget spent in the audit log: %s",
             cr_error_message(&err, rc));
    return rc;
  }
  a->eps_spent = sum.eps;
  a->delta_spent = sum.delta;
  a->budget_loaded = 1;
  return 0;
}

/* CR_EREFUSED with msg when a run of the query would overspend. */
static int budget_fits(cr_trail *a, const char *query, const cr_noise *n, char *msg, size_t cap) {
  const cr_privacy_budget *b = &a->t->limits.privacy_budget;
  char want[32], left[32], spent[32], total[32];
  if (b->epsilon == 0)
    return 0;
  uint64_t eleft = b->epsilon > a->eps_spent ? b->epsilon - a->eps_spent : 0;
  if (n->epsilon > eleft) {
    snprintf(msg, cap,
             "query \"%s\" would spend epsilon %s of the privacy budget, but only %s of %s is "
             "left (%s spent under this template; limits.privacy_budget.epsilon); agree a new "
             "template to run it again",
             query, cr_dp_decimal(want, sizeof want, n->epsilon, CR_DP_EPSILON_UNIT),
             cr_dp_decimal(left, sizeof left, eleft, CR_DP_EPSILON_UNIT),
             cr_dp_decimal(total, sizeof total, b->epsilon, CR_DP_EPSILON_UNIT),
             cr_dp_decimal(spent, sizeof spent, a->eps_spent, CR_DP_EPSILON_UNIT));
    return CR_EREFUSED;
  }
  uint64_t dleft = b->delta > a->delta_spent ? b->delta - a->delta_spent : 0;
  if (n->delta > dleft) {
    snprintf(msg, cap,
             "query \"%s\" would spend delta %g of the privacy budget, but only %g of %g is left "
             "(%g spent under this template; limits.privacy_budget.delta); agree a new template "
             "to run it again",
             query, (double)n->delta / (double)CR_DP_DELTA_UNIT,
             (double)dleft / (double)CR_DP_DELTA_UNIT, (double)b->delta / (double)CR_DP_DELTA_UNIT,
             (double)a->delta_spent / (double)CR_DP_DELTA_UNIT);
    return CR_EREFUSED;
  }
  return 0;
}

int cr__trail_budget_check(cr_trail *a, const cr_query *q, char *msg, size_t cap) {
  if (!a->open || q->noise.mechanism == CR_NOISE_NONE)
    return 0;
  pthread_mutex_lock(&a->lock);
  int rc = budget_load(a, msg, cap);
  if (rc == 0)
    rc = budget_fits(a, q->name, &q->noise, msg, cap);
  pthread_mutex_unlock(&a->lock);
  return rc;
}

int cr__trail_budget(cr_trail *a, cr_party_budget *out, char *msg, size_t cap) {
  const cr_privacy_budget *b = &a->t->limits.privacy_budget;
  memset(out, 0, sizeof *out);
  if (!a->open || b->epsilon == 0)
    return 0;
  pthread_mutex_lock(&a->lock);
  int rc = budget_load(a, msg, cap);
  if (rc == 0) {
    out->set = 1;
    out->epsilon = b->epsilon;
    out->epsilon_spent = a->eps_spent;
    out->delta = b->delta;
    out->delta_spent = a->delta_spent;
  }
  pthread_mutex_unlock(&a->lock);
  return rc;
}

int cr__trail_admit(cr_trail *a, const cr_session_result *r, char *msg, size_t cap) {
  cr_error err;
  cr_error_clear(&err);
  int rc = 0;
  if (!a->open)
    return 0;
  pthread_mutex_lock(&a->lock);
  struct run_count *rcnt = NULL;
  if (a->t->limits.max_runs_per_query) {
    if ((rc = runs_of(a, r->query, &rcnt, msg, cap)) != 0 ||
        (rc = limit_reached(a, rcnt, msg, cap)) != 0)
      goto out;
  }
  /* A run of a noisy query spends its epsilon now, before anything of it
   * can be released: once a seed share is open the partner can compute the
   * release, so a run that fails later has spent it too. */
  if (r->noisy && ((rc = budget_load(a, msg, cap)) != 0 ||
                   (rc = budget_fits(a, r->query, &r->noise, msg, cap)) != 0))
    goto out;
  json_t *f = cr__trail_session_fields(a, r);
  if (r->noisy) {
    json_t *sp = json_object();
    json_object_set_new(sp, "mechanism", json_string(cr_noise_mechanism_name(r->noise.mechanism)));
    json_object_set_new(sp, "epsilon_micro", json_integer((json_int_t)r->noise.epsilon));
    json_object_set_new(sp, "delta_femto", json_integer((json_int_t)r->noise.delta));
    json_object_set_new(f, "privacy_spend", sp);
  }
  char *text = json_dumps(f, JSON_COMPACT);
  rc = text == NULL ? cr_error_set(&err, CR_ENOMEM, "out of memory")
                    : cr_audit_append(a->log, "session_started", text, &err);
  free(text);
  json_decref(f);
  if (rc)
    snprintf(msg, cap, "cannot record the session in the audit log: %s",
             cr_error_message(&err, rc));
  else {
    a->unsigned_tail = 1;
    if (rcnt != NULL)
      rcnt->runs++;
    if (r->noisy) {
      a->eps_spent = sat_add(a->eps_spent, r->noise.epsilon);
      a->delta_spent = sat_add(a->delta_spent, r->noise.delta);
    }
  }
out:
  pthread_mutex_unlock(&a->lock);
  return rc ? (rc == CR_EREFUSED ? rc : CR_EIO) : 0;
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

/* The certificate is one the template pins (the partner's, or ours). */
static int is_partner(const cr_trail *a, const uint8_t *fp) {
  if (fp == NULL)
    return 0;
  for (int r = 0; r < CR_ROLE_COUNT; r++)
    if (memcmp(fp, a->t->parties[r].cert_sha256, CR_SHA256_BYTES) == 0)
      return 1;
  return 0;
}

/* Writes the count of strangers' refusals left out of the log, if any. */
static void refusals_flush(cr_trail *a, uint64_t now) {
  if (a->refused_dropped == 0)
    return;
  json_t *o = json_object();
  json_object_set_new(o, "connections", json_integer((json_int_t)a->refused_dropped));
  json_object_set_new(o, "window_ms", json_integer((json_int_t)(now - a->refused_window_ms)));
  json_object_set_new(o, "reason",
                      cr__jtext("more refused connections from unauthenticated "
                                "peers than the log records a minute"));
  a->refused_dropped = 0;
  (void)cr__trail_event(a, "connections_refused_summary", o, NULL);
}

/* 1 when this stranger's refusal is only counted, not written. */
static int refusal_throttled(cr_trail *a) {
  uint64_t now = cr_now_ms();
  if (a->refused_window_ms == 0 || now - a->refused_window_ms >= 60000) {
    refusals_flush(a, now);
    a->refused_window_ms = now;
    a->refused_in_window = 0;
  }
  if (a->refused_in_window < CR_TRAIL_REFUSALS_PER_MINUTE) {
    a->refused_in_window++;
    return 0;
  }
  a->refused_dropped++;
  return 1;
}

int cr__trail_session_end(cr_trail *a, const cr_session_result *r, const char *peer_addr,
                          const uint8_t *peer_fp, const cr_party_session *m, cr_error *err) {
  int rc = 0;
  if (!a->open)
    return 0;
  /* A failure before any session frame (TCP, TLS, pinning, timeout) is a
   * refused connection; anything later is an aborted session. */
  int connection_level =
      !r->have_session_id && r->wire_error == 0 &&
      (r->error == CR_ETLS || r->error == CR_EAUTH || r->error == CR_ENET ||
       r->error == CR_ETIMEDOUT || r->error == CR_ECONNRESET || r->error == CR_EREFUSED);
  if (connection_level && !is_partner(a, peer_fp) && refusal_throttled(a))
    return 0;
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
    rc = cr__trail_event(a, "session_aborted", o, err);
  } else {
    json_t *o = cr__trail_session_fields(a, r);
    json_object_set_new(o, "receives", json_boolean(r->receives));
    json_object_set_new(o, "released", cr__trail_released(r, m));
    rc = cr__trail_event(a, "result_released", o, err);
    if (rc == 0)
      rc = record_receipt(a, r, peer_fp, err);
  }
  if (rc == 0)
    rc = cr__trail_checkpoint(a, err);
  return rc;
}
