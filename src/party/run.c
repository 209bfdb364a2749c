/*
 * run: one session with the partner's node, with the whole contract around
 * it. The node moves bytes; this file decides what is loaded, admitted,
 * recorded and released, and in which order: the audit line is on disk
 * before the caller hears of a result, and a members file takes its final
 * name only after its release is recorded.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "party/party_internal.h"

int cr__party_keep_row(void *ctx, const char *const *fields, const size_t *lens, size_t n);

static int run_admit(void *ctx, const cr_query *q, const cr_session_result *r, char *msg,
                     size_t cap) {
  cr_party *p = ctx;
  (void)q;
  int rc = cr__trail_admit(&p->trail, r, msg, cap);
  /* Counted for good (or refused): the next run of this identity may count. */
  cr__trail_run_unlock(&p->run_lock_fd);
  return rc;
}

static void run_connected(void *ctx, const char *peer_addr, const uint8_t *peer_fp) {
  cr_party *p = ctx;
  json_t *o = json_object();
  if (peer_addr)
    json_object_set_new(o, "address", cr__jtext(peer_addr));
  if (peer_fp) {
    char hex[CR_SHA256_HEX_BYTES];
    cr_hex_encode(hex, peer_fp, CR_SHA256_BYTES);
    json_object_set_new(o, "peer_cert_sha256", cr__jtext(hex));
  }
  json_object_set_new(o, "peer_role", cr__jtext(cr_role_name(cr_role_other(p->role))));
  (void)cr__trail_event(&p->trail, "connection_accepted", o, NULL);
}

static void run_progress(void *ctx, const cr_session_progress *pr) {
  cr_party *p = ctx;
  if (p->ev.on_progress)
    p->ev.on_progress(p->ev.ctx, pr);
}

/* The session line's extra members: what it cost the node. */
static json_t *run_extra(cr_party *p) {
  json_t *o = json_object();
  json_object_set_new(o, "resources", cr__party_resources(p, p->spill));
  return o;
}

/* run, members: the owner's rows go to a temporary file, the release is
 * recorded, then the file takes its name, so no matched row is ever on
 * disk under its final name without its audit line. */
static int release_members(cr_party *p, const cr_session_result *r, cr_party_session *s,
                           int *recorded, cr_error *err) {
  cr_atomic_file f;
  int rc = cr_atomic_open(&f, p->out_path, 0600, err);
  if (rc)
    return rc;
  rc = cr_dataset_write_matches(p->data, p->t, r->matched, r->matched_on,
                                (const char *const *)p->rq->columns, p->rq->ncolumns,
                                p->filter ? cr__party_keep_row : NULL, p->filter, &f, &s->rows,
                                s->rows_sha256, err);
  s->rows_path = p->out_path;
  s->rows_written = rc == 0;
  if (rc == 0 && (rc = cr__trail_session_end(&p->trail, r, NULL, NULL, s, run_extra(p), err)) == 0)
    *recorded = 1;
  if (rc == 0)
    rc = cr_atomic_commit(&f, err);
  else
    cr_atomic_abort(&f);
  if (rc)
    s->rows_written = 0;
  return rc;
}

/* The names a front end shows with a run's session. */
static void run_names(cr_party *p, cr_party_session *s) {
  s->collaboration = p->t->name;
  s->tmpl = p->t;
  s->partner = p->t->parties[cr_role_other(p->role)].org;
  s->duration_ms = (double)(cr_now_ms() - p->run_t0_ms);
}

static void run_session(void *ctx, const cr_session_result *r, const char *peer_addr,
                        const uint8_t *peer_fp) {
  cr_party *p = ctx;
  cr_error err;
  cr_error_clear(&err);
  p->sessions++;
  cr_party_session s;
  memset(&s, 0, sizeof s);
  s.res = r;
  s.peer_addr = peer_addr;
  s.peer_fp = peer_fp;
  run_names(p, &s);
  /* The audit line goes to disk before the result is shown or written. */
  int rc, recorded = 0;
  if (r->status == CR_SESSION_DONE && r->matched != NULL && p->out_path != NULL)
    rc = release_members(p, r, &s, &recorded, &err);
  else
    rc = cr__trail_session_end(&p->trail, r, peer_addr, peer_fp, NULL, run_extra(p), &err);
  /* What is left of the privacy budget after this session's spend. */
  char bmsg[256];
  (void)cr__trail_budget(&p->trail, &s.budget, bmsg, sizeof bmsg);
  if (rc) {
    snprintf(p->release_msg, sizeof p->release_msg, "the result is withheld: %s",
             cr_error_message(&err, rc));
    s.release_rc = rc;
    s.release_msg = p->release_msg;
    if (r->status == CR_SESSION_DONE && !recorded)
      cr__trail_withheld(&p->trail, r, peer_fp, p->release_msg, NULL);
  }
  /* Reported once the node has closed (on_closed), with this. */
  p->last = s;
  p->last.res = NULL;
  p->last.peer_addr = NULL;
  p->last.peer_fp = NULL;
}

static void run_closed(void *ctx, int rc, const cr_error *err, cr_session_result *node_res) {
  cr_party *p = ctx;
  cr_session_result held, *res = NULL;
  if (node_res != NULL) {
    held = *node_res; /* its heap outputs are ours now */
    res = &held;
  }
  cr_party_session s;
  cr_party_session *sp = NULL;
  cr_error e;
  cr_error_clear(&e);
  if (err != NULL)
    e = *err;
  if (res != NULL && (res->status != CR_SESSION_RUNNING || rc)) {
    s = p->last;
    s.res = res;
    sp = &s;
    if (rc == 0 && res->status == CR_SESSION_DONE && s.release_rc != 0) {
      rc = s.release_rc;
      cr_error_set(&e, rc, "%s", s.release_msg);
    }
  }
  if (p->sessions == 0 && rc != 0) {
    /* The node did not report a session: the connection failed. */
    json_t *ev = json_object();
    json_object_set_new(ev, "peer", cr__jtext(p->address));
    json_object_set_new(ev, "error", cr__jtext(cr_err_name(rc)));
    json_object_set_new(ev, "reason", cr__jtext(cr_error_message(&e, rc)));
    (void)cr__trail_event(&p->trail, "run_failed", ev, NULL);
  }
  cr__trail_run_unlock(&p->run_lock_fd); /* never admitted */
  p->running = 0;
  cr_node_free(p->node); /* allowed from inside on_closed */
  p->node = NULL;
  if (p->ev.on_closed)
    p->ev.on_closed(p->ev.ctx, rc, &e, sp);
  if (res != NULL)
    cr_session_result_free_outputs(res);
}

int cr_party_run(cr_party *p, uv_loop_t *loop, const cr_party_run_config *cfg,
                 const cr_party_events *ev, cr_error *err) {
  int rc;
  if (p->mode != CR_PARTY_RUN || cfg == NULL || cfg->data == NULL || cfg->query == NULL ||
      loop == NULL)
    return cr_error_set(err, CR_EINVAL, "party: run needs a party opened to run, data and a query");
  if (p->running || p->node != NULL)
    return cr_error_set(err, CR_EINVAL, "party: already serving or running");
  if (ev)
    p->ev = *ev;
  /* Flags first: the source's options and the partner's address are
   * checked before anything is loaded. */
  cr_source_options so = {cfg->data_query, cfg->delimiter};
  if ((rc = cr_source_validate(cfg->data, &so, err)) != 0 ||
      (rc = cr_node_check_address(p->address, err)) != 0 ||
      (rc = cr__party_set_source(p, cfg->data, cfg->data_query, cfg->delimiter, err)) != 0)
    return rc;
  free(p->out_path);
  p->out_path = cfg->out ? strdup(cfg->out) : NULL;
  if (cfg->out && p->out_path == NULL)
    return cr_error_set(err, CR_ENOMEM, "out of memory");
  p->max_reject_ratio = cfg->max_reject_ratio;
  memset(&p->last, 0, sizeof p->last);
  p->sessions = 0;
  p->run_t0_ms = cr_now_ms();

  /* Checks that need no data first, so a wrong query fails fast. */
  const cr_query *q = cr_template_query(p->t, cfg->query);
  cr_params_free(&p->params);
  free(p->param_names);
  free(p->param_values);
  p->param_names = p->param_values = NULL;
  if (q != NULL) {
    /* Parameters typed as the template declares them; their canonical
     * text is what goes to the partner and into both audit logs. */
    rc = cr_params_from_args(&p->params, cfg->params, cfg->nparams, q->params, q->nparams, err);
    if (rc) {
      cr__party_refusal(p, "run_refused", cfg->query, cr_error_message(err, rc));
      return rc == CR_ENOMEM ? rc : CR_EREFUSED;
    }
  }
  size_t np = q ? p->params.n : 0;
  p->param_names = calloc(np + 1, sizeof *p->param_names);
  p->param_values = calloc(np + 1, sizeof *p->param_values);
  if (p->param_names == NULL || p->param_values == NULL)
    return cr_error_set(err, CR_ENOMEM, "out of memory");
  for (size_t i = 0; i < np; i++) {
    p->param_names[i] = p->params.v[i].name;
    p->param_values[i] = p->params.v[i].text;
  }
  cr_session_config sc;
  memset(&sc, 0, sizeof sc);
  sc.tmpl = p->t;
  sc.role = p->role;
  sc.is_runner = 1;
  sc.query = cfg->query;
  sc.param_names = p->param_names;
  sc.param_values = p->param_values;
  sc.nparams = np;
  if ((rc = cr_session_check_local(&sc, (int64_t)time(NULL), err)) != 0) {
    cr__party_refusal(p, "run_refused", cfg->query, cr_error_message(err, rc));
    return rc;
  }
  if (q == NULL) /* not reached: cr_session_check_local refuses a query not in the template */
    return cr_error_set(err, CR_EINTERNAL, "query not in the template");
  /* Our own count of the query's runs, and of the privacy budget (every
   * writer of this log: other runs of this identity included), before the
   * partner is bothered; the run is counted (and its epsilon spent) for
   * good, atomically with the check, at admission. */
  char lmsg[512];
  if ((rc = cr__trail_limit(&p->trail, q->name, lmsg, sizeof lmsg)) != 0 ||
      (rc = cr__trail_budget_check(&p->trail, q, lmsg, sizeof lmsg)) != 0) {
    cr__party_refusal(p, "run_refused", cfg->query, lmsg);
    return cr_error_set(err, rc, "%s", lmsg);
  }
  if (q->kind == CR_QUERY_MEMBERS && (q->results_to & CR_ROLE_BIT(p->role)) && cfg->out == NULL)
    return cr_error_set(err, CR_EUSAGE,
                        "query \"%s\" returns this side's matched rows: name the file to "
                        "write them to with --out FILE",
                        q->name);
  if (cfg->out != NULL && !cfg->overwrite_out && access(cfg->out, F_OK) == 0)
    return cr_error_set(err, CR_EUSAGE,
                        "--out %s exists; the matched rows would replace it. Name another file, "
                        "or pass --force to replace it",
                        cfg->out);
  if (cfg->out != NULL) {
    /* The rows file must be writable before the partner spends a run on it. */
    cr_atomic_file f;
    cr_error fe;
    if (cr_atomic_open(&f, cfg->out, 0600, &fe) != 0)
      return cr_error_set(err, CR_EUSAGE, "--out %s cannot be written: %s", cfg->out, fe.msg);
    cr_atomic_abort(&f);
  }
  p->rq = q;
  cr_dataset_free(p->data);
  p->data = NULL;
  cr_filter_free(p->filter);
  p->filter = NULL;
  if ((rc = cr__party_load_start(p, q, err)) != 0)
    return rc;
  sc.data = p->data;
  if ((rc = cr_session_check_local(&sc, (int64_t)time(NULL), err)) != 0) {
    cr__party_refusal(p, "run_refused", cfg->query, cr_error_message(err, rc));
    return rc;
  }
  /* A limited query (a run limit, or a privacy budget it spends from):
   * this identity's runs of it (other processes too) go one at a time
   * from here to their admission, and the count is made again under that
   * lock, so the limit is exact however many run at once (the others
   * wait, then run or are refused here, naming the limit). */
  if (p->t->limits.max_runs_per_query != 0 ||
      (q->noise.mechanism != CR_NOISE_NONE && p->t->limits.privacy_budget.epsilon != 0)) {
    if ((rc = cr__trail_run_lock(&p->trail, &p->run_lock_fd, lmsg, sizeof lmsg)) != 0)
      return cr_error_set(err, rc, "%s", lmsg); /* CR_EIO, CR_ETIMEDOUT or CR_ENOMEM */
    if ((rc = cr__trail_limit(&p->trail, q->name, lmsg, sizeof lmsg)) != 0 ||
        (rc = cr__trail_budget_check(&p->trail, q, lmsg, sizeof lmsg)) != 0) {
      cr__trail_run_unlock(&p->run_lock_fd);
      cr__party_refusal(p, "run_refused", cfg->query, lmsg);
      return cr_error_set(err, rc, "%s", lmsg);
    }
  }

  p->loop = loop;
  cr__party_node_base(p, cfg->timeout_ms);
  p->nc.session.data = p->data;
  p->nc.session.pool = cfg->pool;
  p->nc.session.spill = p->spill;
  p->nc.session.release_data = 1; /* loaded for this run alone */
  p->nc.session.admit = run_admit;
  p->nc.session.admit_ctx = p;
  p->nc.session.is_runner = 1;
  p->nc.session.query = q->name;
  p->nc.session.param_names = p->param_names;
  p->nc.session.param_values = p->param_values;
  p->nc.session.nparams = np;
  p->nc.on_session = run_session;
  p->nc.on_progress = run_progress;
  p->nc.on_connected = run_connected;
  p->nc.on_closed = run_closed;
  if ((rc = cr_node_run_start(&p->node, loop, &p->nc, err)) != 0) {
    cr__trail_run_unlock(&p->run_lock_fd);
    return rc;
  }
  p->running = 1;
  return 0;
}
