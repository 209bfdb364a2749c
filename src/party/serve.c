/*
 * serve and run: a party's sessions on the caller's loop, with the whole
 * contract around them. The node moves bytes; this file decides what is
 * loaded, admitted, recorded and released, and in which order: the audit
 * line is on disk before the caller hears of a result, and a members file
 * takes its final name only after its release is recorded.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "party/party_internal.h"

int cr__party_keep_row(void *ctx, const char *const *fields, const size_t *lens, size_t n);

static int party_admit(void *ctx, const cr_query *q, const cr_session_result *r, char *msg,
                       size_t cap) {
  cr_party *p = ctx;
  (void)q;
  return cr__trail_admit(&p->trail, r, msg, cap);
}

/* The fields naming the partner of a connection: address and certificate. */
static json_t *peer_fields(const char *peer_addr, const uint8_t *peer_fp) {
  json_t *o = json_object();
  if (peer_addr)
    json_object_set_new(o, "address", cr__jtext(peer_addr));
  if (peer_fp) {
    char hex[CR_SHA256_HEX_BYTES];
    cr_hex_encode(hex, peer_fp, CR_SHA256_BYTES);
    json_object_set_new(o, "peer_cert_sha256", cr__jtext(hex));
  }
  return o;
}

static void on_connected(void *ctx, const char *peer_addr, const uint8_t *peer_fp) {
  cr_party *p = ctx;
  json_t *o = peer_fields(peer_addr, peer_fp);
  json_object_set_new(o, "peer_role", cr__jtext(cr_role_name(cr_role_other(p->role))));
  (void)cr__trail_event(&p->trail, "connection_accepted", o, NULL);
}

static void on_listening(void *ctx, const char *addr) {
  cr_party *p = ctx;
  if (p->ev.on_listening)
    p->ev.on_listening(p->ev.ctx, addr);
}

static void on_progress(void *ctx, const cr_session_progress *pr) {
  cr_party *p = ctx;
  if (p->ev.on_progress)
    p->ev.on_progress(p->ev.ctx, pr);
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
  if (rc == 0 && (rc = cr__trail_session_end(&p->trail, r, NULL, NULL, s, err)) == 0)
    *recorded = 1;
  if (rc == 0)
    rc = cr_atomic_commit(&f, err);
  else
    cr_atomic_abort(&f);
  if (rc)
    s->rows_written = 0;
  return rc;
}

static void on_session(void *ctx, const cr_session_result *r, const char *peer_addr,
                       const uint8_t *peer_fp) {
  cr_party *p = ctx;
  cr_error err;
  cr_error_clear(&err);
  p->sessions++;
  if (r->ping && r->status == CR_SESSION_DONE) {
    /* A ping answered: recorded, never reported as a result. */
    json_t *o = peer_fields(peer_addr, peer_fp);
    json_object_set_new(o, "peer_software", cr__jtext(r->peer_software));
    json_object_set_new(o, "template_sha256", cr__jtext(p->trail.th));
    if (cr__trail_event(&p->trail, "ping_answered", o, &err) == 0)
      (void)cr__trail_checkpoint(&p->trail, &err);
    if (p->ev.on_ping)
      p->ev.on_ping(p->ev.ctx, peer_addr);
    return;
  }
  cr_party_session s;
  memset(&s, 0, sizeof s);
  s.res = r;
  s.peer_addr = peer_addr;
  s.peer_fp = peer_fp;
  /* The audit line goes to disk before the result is shown or written. */
  int rc, recorded = 0;
  if (p->mode == CR_PARTY_RUN && r->status == CR_SESSION_DONE && r->matched != NULL &&
      p->out_path != NULL)
    rc = release_members(p, r, &s, &recorded, &err);
  else
    rc = cr__trail_session_end(&p->trail, r, peer_addr, peer_fp, NULL, &err);
  /* What is left of the privacy budget after this session's spend. */
  char bmsg[256];
  (void)cr__trail_budget(&p->trail, &s.budget, bmsg, sizeof bmsg);
  if (rc) {
    snprintf(p->release_msg, sizeof p->release_msg, "the result is withheld: %s",
             cr_error_message(&err, rc));
    s.release_rc = rc;
    s.release_msg = p->release_msg;
    if (r->status == CR_SESSION_DONE && !recorded)
      cr__trail_withheld(&p->trail, r, peer_fp, p->release_msg);
  }
  if (p->mode == CR_PARTY_RUN) {
    /* run reports once the node has closed (on_closed), with this. */
    p->last = s;
    p->last.res = NULL;
    p->last.peer_addr = NULL;
    p->last.peer_fp = NULL;
    return;
  }
  if (p->ev.on_session)
    p->ev.on_session(p->ev.ctx, &s);
}

static void on_closed(void *ctx, int rc, const cr_error *err, cr_session_result *node_res) {
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
  if (p->mode == CR_PARTY_RUN && res != NULL && (res->status != CR_SESSION_RUNNING || rc)) {
    s = p->last;
    s.res = res;
    sp = &s;
    if (rc == 0 && res->status == CR_SESSION_DONE && s.release_rc != 0) {
      rc = s.release_rc;
      cr_error_set(&e, rc, "%s", s.release_msg);
    }
  }
  if (p->mode == CR_PARTY_RUN && p->sessions == 0 && rc != 0) {
    /* The node did not report a session: the connection failed. */
    json_t *ev = json_object();
    json_object_set_new(ev, "peer", cr__jtext(p->address));
    json_object_set_new(ev, "error", cr__jtext(cr_err_name(rc)));
    json_object_set_new(ev, "reason", cr__jtext(cr_error_message(&e, rc)));
    (void)cr__trail_event(&p->trail, "run_failed", ev, NULL);
  }
  p->running = 0;
  cr_node_free(p->node); /* allowed from inside on_closed */
  p->node = NULL;
  if (p->ev.on_closed)
    p->ev.on_closed(p->ev.ctx, rc, &e, sp);
  if (res != NULL)
    cr_session_result_free_outputs(res);
}

/* The node's configuration common to serve and run. */
static void node_setup(cr_party *p, uv_loop_t *loop, const cr_party_events *ev, unsigned timeout_ms,
                       cr_pool *pool) {
  p->loop = loop;
  if (ev)
    p->ev = *ev;
  cr__party_node_base(p, timeout_ms);
  cr_session_config *sc = &p->nc.session;
  sc->data = p->data;
  sc->pool = pool;
  sc->admit = party_admit;
  sc->admit_ctx = p;
  p->nc.on_session = on_session;
  p->nc.on_connected = on_connected;
  p->nc.on_listening = on_listening;
  p->nc.on_progress = on_progress;
  p->nc.on_closed = on_closed;
}

static int serve_checks(cr_party *p, cr_error *err);

static int busy(cr_party *p, cr_error *err) {
  if (p->running || p->node != NULL)
    return cr_error_set(err, CR_EINVAL, "party: already serving or running");
  return 0;
}

int cr_party_serve(cr_party *p, uv_loop_t *loop, const cr_party_serve_config *cfg,
                   const cr_party_events *ev, cr_error *err) {
  int rc;
  if (p->mode != CR_PARTY_SERVE || cfg == NULL || cfg->data == NULL || loop == NULL)
    return cr_error_set(err, CR_EINVAL, "party: serve needs a party opened to serve, and data");
  if ((rc = busy(p, err)) != 0)
    return rc;
  if (ev)
    p->ev = *ev;
  /* What needs no data first, so a flag that is wrong fails at once: the
   * source's options, then the port, bound now and kept (issue 16: a port
   * in use was found only after loading the whole data set). */
  cr_source_options so = {cfg->data_query, cfg->delimiter};
  if ((rc = cr_source_validate(cfg->data, &so, err)) != 0 ||
      (rc = cr__party_set_source(p, cfg->data, cfg->data_query, cfg->delimiter, err)) != 0)
    return rc;
  int fd = -1;
  if ((rc = cr_node_listen(loop, p->address, &fd, err)) != 0) {
    cr__party_refusal(p, "serve_refused", NULL, cr_error_message(err, rc));
    return rc;
  }
  p->max_reject_ratio = cfg->max_reject_ratio;
  cr_dataset_free(p->data);
  p->data = NULL;
  if ((rc = serve_checks(p, err)) != 0) {
    close(fd);
    return rc;
  }

  node_setup(p, loop, ev, cfg->timeout_ms, cfg->pool);
  p->nc.session.load = cr__party_load;
  p->nc.session.unload = cr__party_unload;
  p->nc.session.load_ctx = p;
  p->nc.once = cfg->once;
  p->nc.max_sessions = cfg->max_sessions;
  if ((rc = cr_node_serve_start_fd(&p->node, loop, &p->nc, fd, err)) != 0)
    return rc;
  p->running = 1;
  return 0;
}

/* serve: the own set loaded at start and checked against the template, and
 * every filter this node may have to apply against its columns. */
static int serve_checks(cr_party *p, cr_error *err) {
  int rc;
  if ((rc = cr__party_load_start(p, NULL, err)) != 0)
    return rc;

  /* The own set against the template's limits, before anyone connects. */
  cr_session_config sc;
  memset(&sc, 0, sizeof sc);
  sc.tmpl = p->t;
  sc.data = p->data;
  sc.role = p->role;
  if ((rc = cr_session_check_local(&sc, (int64_t)time(NULL), err)) != 0) {
    cr__party_refusal(p, "serve_refused", NULL, cr_error_message(err, rc));
    return rc;
  }
  /* Every filter this node may have to apply must parse and find its
   * columns in our file. */
  for (size_t i = 0; i < p->t->nqueries; i++) {
    const cr_query *q = &p->t->queries[i];
    cr_filter *f = NULL;
    const char *const *cols;
    if (q->where[p->role] == NULL)
      continue;
    if ((rc = cr_filter_parse(&f, q->where[p->role], q->params, q->nparams, q->name, err)) != 0)
      return rc == CR_ENOMEM ? rc : CR_EUSAGE;
    size_t nc = cr_filter_columns(f, &cols);
    for (size_t j = 0; j < nc && rc == 0; j++) {
      size_t k = 0;
      while (k < p->data->ncolumns && strcasecmp(p->data->columns[k], cols[j]) != 0)
        k++;
      if (k == p->data->ncolumns)
        rc = cr_error_set(err, CR_EDATA,
                          "query \"%s\" filters on column \"%s\", which %s does not have", q->name,
                          cols[j], p->data_path);
    }
    cr_filter_free(f);
    if (rc)
      return rc;
  }
  return 0;
}

int cr_party_run(cr_party *p, uv_loop_t *loop, const cr_party_run_config *cfg,
                 const cr_party_events *ev, cr_error *err) {
  int rc;
  if (p->mode != CR_PARTY_RUN || cfg == NULL || cfg->data == NULL || cfg->query == NULL ||
      loop == NULL)
    return cr_error_set(err, CR_EINVAL, "party: run needs a party opened to run, data and a query");
  if ((rc = busy(p, err)) != 0)
    return rc;
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
  /* Our own count of the query's runs, and of the privacy budget, before
   * the partner is bothered (the partner counts its own and refuses as
   * well). */
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

  node_setup(p, loop, ev, cfg->timeout_ms, cfg->pool);
  p->nc.session.is_runner = 1;
  p->nc.session.query = q->name;
  p->nc.session.param_names = p->param_names;
  p->nc.session.param_values = p->param_values;
  p->nc.session.nparams = np;
  if ((rc = cr_node_run_start(&p->node, loop, &p->nc, err)) != 0)
    return rc;
  p->running = 1;
  return 0;
}

int cr_party_budget_get(cr_party *p, cr_party_budget *out, cr_error *err) {
  char msg[256];
  int rc = cr__trail_budget(&p->trail, out, msg, sizeof msg);
  return rc ? cr_error_set(err, rc, "%s", msg) : 0;
}
