/*
 * The report's model: one walk over the audit log (docs/audit.md, "Events")
 * gathering, per collaboration (template hash), the node's identity, the
 * partner's certificate, the queries and each query's runs with their
 * outcome. Only what the log holds; a field of the wrong type is ignored
 * rather than guessed.
 */
#include <stdio.h>
#include <string.h>

#include "cli/cli.h"
#include "cli/report.h"

void cr_report_model_init(cr_report_model *m) {
  memset(m, 0, sizeof *m);
  m->collabs = json_array();
  m->by_hash = json_object();
  m->sessions = json_object();
  m->node_keys = json_object();
  m->ckpt_keys = json_object();
}

void cr_report_model_free(cr_report_model *m) {
  json_decref(m->collabs);
  json_decref(m->by_hash);
  json_decref(m->sessions);
  json_decref(m->node_keys);
  json_decref(m->ckpt_keys);
  memset(m, 0, sizeof *m);
}

static const char *str(json_t *e, const char *k) {
  return json_string_value(json_object_get(e, k));
}

/* Copies e[k] into o[k] if present. */
static void copy(json_t *o, json_t *e, const char *k) {
  json_t *v = json_object_get(e, k);
  if (v != NULL)
    json_object_set(o, k, v);
}

static json_t *collab_get(cr_report_model *m, const char *hash) {
  const char *h = hash ? hash : "";
  json_t *c = json_object_get(m->by_hash, h);
  if (c != NULL)
    return c;
  c = json_object();
  json_object_set_new(c, "template_sha256", json_string(h));
  json_object_set_new(c, "queries", json_object());
  json_object_set_new(c, "query_order", json_array());
  json_object_set_new(c, "events", json_array()); /* refusals not tied to a query */
  json_object_set_new(c, "peer_certs", json_object());
  json_object_set_new(c, "roles", json_object());
  json_object_set_new(c, "own_certs", json_object());
  json_object_set_new(c, "template_files", json_object());
  json_object_set_new(c, "data", json_array());
  json_object_set(m->by_hash, h, c);
  json_array_append_new(m->collabs, c);
  return c;
}

/* The collaboration an entry belongs to: its own template_sha256, else the
 * one of the last node_started. */
static json_t *collab_of(cr_report_model *m, json_t *e) {
  const char *h = str(e, "template_sha256");
  if (h != NULL)
    return collab_get(m, h);
  if (m->current == NULL)
    m->current = collab_get(m, "");
  return m->current;
}

static json_t *query_get(json_t *c, const char *name) {
  const char *q = name ? name : "";
  json_t *qs = json_object_get(c, "queries");
  json_t *o = json_object_get(qs, q);
  if (o != NULL)
    return o;
  o = json_object();
  json_object_set_new(o, "name", json_string(q));
  json_object_set_new(o, "runs", json_array());
  json_object_set_new(o, "sessions_started", json_integer(0));
  json_object_set(qs, q, o);
  json_array_append_new(json_object_get(c, "query_order"), json_string(q));
  json_decref(o);
  return o;
}

static json_t *new_run(json_t *q, json_t *e) {
  json_t *r = json_object();
  copy(r, e, "time");
  json_object_set_new(r, "line", json_integer(json_integer_value(json_object_get(e, "seq")) + 1));
  json_object_set_new(r, "outcome", json_string("started"));
  json_array_append_new(json_object_get(q, "runs"), r);
  return r;
}

/* The run of a session event: the one its session_started opened, or a new
 * row (an abort or refusal before a session id existed). */
static json_t *run_of(cr_report_model *m, json_t *c, json_t *e) {
  const char *sid = str(e, "session_id");
  json_t *r = sid ? json_object_get(m->sessions, sid) : NULL;
  if (r == NULL) {
    r = new_run(query_get(c, str(e, "query")), e);
    if (sid != NULL)
      json_object_set(m->sessions, sid, r);
  }
  static const char *keys[] = {"session_id",
                               "params",
                               "role",
                               "is_runner",
                               "own_set_size",
                               "peer_set_size",
                               "peer_set_size_is_bucket"};
  for (size_t i = 0; i < sizeof keys / sizeof *keys; i++)
    copy(r, e, keys[i]);
  return r;
}

/* A refusal: the partner said no (a refusal wire error), or this node's
 * contract did (EREFUSED); anything else that stopped a session is an abort. */
static int is_refusal(json_t *e) {
  const char *err = str(e, "error");
  const char *w = str(e, "wire_error");
  if (err && strcmp(err, "EREFUSED") == 0)
    return 1;
  if (w == NULL)
    return 0;
  static const char *refusals[] = {"VERSION",       "ROLE",        "TEMPLATE_MISMATCH",
                                   "UNKNOWN_QUERY", "NOT_ALLOWED", "SUITE",
                                   "SIZE",          "PARAMS",      "BUSY"};
  for (size_t i = 0; i < sizeof refusals / sizeof *refusals; i++)
    if (strcmp(w, refusals[i]) == 0)
      return 1;
  return 0;
}

/* The partner's receipt signature, checked again exactly as `audit verify`
 * does (docs/protocol.md, "Finish"). */
static int receipt_ok(json_t *e) {
  char why[256];
  return cr_cli_receipt_check(e, why, sizeof why) == 0;
}

static void set_add(json_t *c, const char *set, const char *v) {
  if (v != NULL && v[0])
    json_object_set_new(json_object_get(c, set), v, json_true());
}

static int entry(cr_report_model *m, json_t *e) {
  const char *ev = str(e, "event");
  uint64_t line = (uint64_t)json_integer_value(json_object_get(e, "seq")) + 1;
  if (m->stop_line && line >= m->stop_line)
    return 1;
  m->entries++;
  if (ev == NULL)
    return 0;
  if (strcmp(ev, "checkpoint") == 0) {
    m->checkpoints++;
    const char *pk = str(e, "public_key");
    if (pk != NULL) {
      json_t *n = json_object_get(m->ckpt_keys, pk);
      json_object_set_new(m->ckpt_keys, pk, json_integer(n ? json_integer_value(n) + 1 : 1));
    }
    return 0;
  }
  if (strcmp(ev, "node_started") == 0) {
    json_t *c = collab_get(m, str(e, "template_sha256"));
    m->current = c;
    set_add(c, "roles", str(e, "role"));
    set_add(c, "own_certs", str(e, "cert_sha256"));
    set_add(c, "template_files", str(e, "template_file"));
    if (str(e, "public_key") && str(e, "cert_sha256"))
      json_object_set(m->node_keys, str(e, "public_key"), json_object_get(e, "cert_sha256"));
    if (json_object_get(c, "first_time") == NULL && json_object_get(e, "time"))
      json_object_set(c, "first_time", json_object_get(e, "time"));
    return 0;
  }
  json_t *c = collab_of(m, e);
  if (strcmp(ev, "connection_accepted") == 0 || strcmp(ev, "ping") == 0 ||
      strcmp(ev, "ping_answered") == 0) {
    set_add(c, "peer_certs", str(e, "peer_cert_sha256"));
  } else if (strcmp(ev, "receipt") == 0) {
    if (!receipt_ok(e)) {
      m->bad_line = line;
      snprintf(m->bad_reason, sizeof m->bad_reason,
               "line %llu: the partner's receipt signature does not verify",
               (unsigned long long)line);
      return 1;
    }
    m->receipts++;
    set_add(c, "peer_certs", str(e, "peer_cert_sha256"));
    const char *sid = str(e, "session_id");
    json_t *r = sid ? json_object_get(m->sessions, sid) : NULL;
    if (r != NULL)
      json_object_set_new(r, "receipt", json_true());
  } else if (strcmp(ev, "session_started") == 0) {
    json_t *q = query_get(c, str(e, "query"));
    json_object_set_new(
        q, "sessions_started",
        json_integer(json_integer_value(json_object_get(q, "sessions_started")) + 1));
    json_t *r = run_of(m, c, e);
    json_object_set(r, "time", json_object_get(e, "time"));
    /* A noisy query's run spends its epsilon when it is admitted, whether it
     * completes or not (docs/privacy.md): summed exactly, in millionths. */
    json_t *sp = json_object_get(e, "privacy_spend");
    json_t *em = json_object_get(sp, "epsilon_micro");
    if (json_is_integer(em) && json_integer_value(em) > 0) {
      json_t *sum = json_object_get(c, "privacy_spent_micro");
      json_object_set_new(c, "privacy_spent_micro",
                          json_integer(json_integer_value(sum) + json_integer_value(em)));
    }
  } else if (strcmp(ev, "result_released") == 0) {
    json_t *r = run_of(m, c, e);
    json_t *rel = json_object_get(e, "released");
    json_object_set_new(r, "end_time", json_deep_copy(json_object_get(e, "time")));
    if (rel != NULL)
      json_object_set(r, "released", rel);
    const char *out = "nothing"; /* completed, nothing released to this side */
    if (json_is_object(rel))
      out = json_is_true(json_object_get(rel, "suppressed")) ? "suppressed" : "released";
    json_object_set_new(r, "outcome", json_string(out));
  } else if (strcmp(ev, "result_withheld") == 0 || strcmp(ev, "session_aborted") == 0) {
    json_t *r = run_of(m, c, e);
    int withheld = ev[7] == 'w';
    json_object_set_new(r, "outcome",
                        json_string(withheld        ? "withheld"
                                    : is_refusal(e) ? "refused"
                                                    : "aborted"));
    copy(r, e, "reason");
    copy(r, e, "from_peer");
    copy(r, e, "wire_error");
    copy(r, e, "error");
  } else if (strcmp(ev, "run_refused") == 0 && str(e, "query") != NULL) {
    json_t *r = new_run(query_get(c, str(e, "query")), e);
    json_object_set_new(r, "outcome", json_string("refused"));
    json_object_set_new(r, "by_self", json_true());
    copy(r, e, "reason");
  } else if (strcmp(ev, "run_refused") == 0 || strcmp(ev, "serve_refused") == 0 ||
             strcmp(ev, "template_refused") == 0 || strcmp(ev, "connection_refused") == 0 ||
             strcmp(ev, "run_failed") == 0 || strcmp(ev, "data_load_failed") == 0 ||
             strcmp(ev, "audit_repaired") == 0) {
    json_t *o = json_object();
    json_object_set_new(o, "event", json_string(ev));
    json_object_set_new(o, "line", json_integer((json_int_t)line));
    static const char *keys[] = {"time",  "reason",     "address", "peer",  "peer_cert_sha256",
                                 "error", "wire_error", "file",    "query", "dropped_bytes"};
    for (size_t i = 0; i < sizeof keys / sizeof *keys; i++)
      copy(o, e, keys[i]);
    json_array_append_new(json_object_get(c, "events"), o);
  } else if (strcmp(ev, "data_loaded") == 0 || strcmp(ev, "data_checked") == 0) {
    /* A data check (a dry run) is a data access too; "event" tells them apart. */
    json_t *o = json_object();
    json_object_set_new(o, "event", json_string(ev));
    static const char *keys[] = {"time",          "file",     "rows_read",     "rows_accepted",
                                 "rows_rejected", "rejected", "distinct_keys", "query",
                                 "source",        "verdict"};
    for (size_t i = 0; i < sizeof keys / sizeof *keys; i++)
      copy(o, e, keys[i]);
    json_array_append_new(json_object_get(c, "data"), o);
  }
  return 0;
}

int cr_report_model_entry(void *ctx, const char *text, size_t len) {
  json_t *e = json_loadb(text, len, 0, NULL);
  if (e == NULL)
    return CR_EDATA; /* cannot happen: the audit module parsed it */
  int rc = entry(ctx, e);
  json_decref(e);
  return rc;
}
