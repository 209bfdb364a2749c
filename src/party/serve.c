/*
 * serve: one node, one listener, every collaboration of this identity
 * (serve --collaborations DIR; serve --template T --data D is the case of
 * one), with the whole contract around each session.
 *
 * Routing: TLS accepts a certificate that any serving collaboration pins
 * for its partner; once the partner's Hello has arrived, the node asks
 * route() which collaboration it is for (the partner's certificate and the
 * template hash in the Hello: cr__collab_route). The session then runs
 * with that collaboration's template, role, data and audit trail; the
 * collaboration version stays alive (refs) until the session ends, however
 * the directory changes meanwhile.
 *
 * Changes without a restart: the directory (and each sub-directory) is
 * watched (uv_fs_event), looked at every CR_PARTY_RESCAN_MS as well, and on
 * cr_party_reload (the CLI's SIGHUP). A new or changed collaboration is
 * prepared on the loop (conf, template, signatures: quick), its data is
 * loaded and checked on the thread pool, and only then does it replace the
 * old version; a broken one is reported (events, audit log) and the old
 * version keeps serving. A changed data file needs none of this: each
 * session reads the data for itself (its own send order, docs/memory.md).
 *
 * Order, as for run: a session's audit lines are on disk before the
 * caller hears of it.
 */
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "party/party_internal.h"

#define CR_PARTY_RESCAN_MS 2000 /* a look at the files, whatever the watch says */
#define CR_PARTY_SETTLE_MS 300  /* after a change is seen, before reading it */

static void serve_maybe_closed(cr_party *p);

/* ---- events -------------------------------------------------------------------- */

void cr__party_collab_event(cr_party *p, const char *change, const char *name, const cr_collab *c,
                            const char *error) {
  cr_party_collab_info info;
  memset(&info, 0, sizeof info);
  info.change = change;
  info.name = name;
  info.error = error ? error : "";
  if (c != NULL) {
    info.dir = c->dir;
    info.template_path = c->template_path;
    info.t = c->t;
    info.role = c->role;
    info.data = c->conf.data;
    info.audit = c->conf.audit ? c->conf.audit : p->audit_path;
    info.enabled = c->conf.enabled;
  }
  for (size_t i = 0; i < p->ncollabs; i++)
    if (strcmp(p->collabs[i]->name, name) == 0)
      info.serving = p->collabs[i]->conf.enabled;

  /* The node's log, and the collaboration's own if it has one; then the
   * caller hears of it. */
  json_t *o = json_object();
  json_object_set_new(o, "collaboration", cr__jtext(name));
  if (c != NULL) {
    if (c->dir)
      json_object_set_new(o, "dir", cr__jtext(c->dir));
    json_object_set_new(o, "template_file", cr__jtext(c->template_path));
    json_object_set_new(o, "template_sha256", cr__jtext(c->th));
    json_object_set_new(o, "role", cr__jtext(cr_role_name(c->role)));
    json_object_set_new(o, "partner", cr__jtext(c->t->parties[cr_role_other(c->role)].org));
    char fp[CR_SHA256_HEX_BYTES];
    cr_hex_encode(fp, c->t->parties[cr_role_other(c->role)].cert_sha256, CR_SHA256_BYTES);
    json_object_set_new(o, "partner_cert_sha256", cr__jtext(fp));
    json_object_set_new(o, "data", cr__jtext(c->conf.data));
    json_object_set_new(o, "audit", cr__jtext(info.audit));
    if (!c->conf.enabled)
      json_object_set_new(o, "enabled", json_false());
  }
  if (error != NULL && error[0])
    json_object_set_new(o, "reason", cr__jtext(error));
  if (strcmp(change, "refused") == 0)
    json_object_set_new(o, "serving", json_boolean(info.serving));
  char event[64];
  snprintf(event, sizeof event, "collaboration_%s", change);
  if (c != NULL && c->trail.log != NULL && c->trail.log != p->trail.log)
    (void)cr__trail_event((cr_trail *)&c->trail, event, json_deep_copy(o), NULL);
  (void)cr__trail_event(&p->trail, event, o, NULL);
  if (p->ev.on_collab != NULL)
    p->ev.on_collab(p->ev.ctx, &info);
}

/* ---- the session hooks ------------------------------------------------------------ */

/* The connection's connection_accepted line, once. */
static void visit_accepted(cr_visit *v) {
  json_t *o = v->accepted;
  v->accepted = NULL;
  if (o != NULL)
    (void)cr__trail_event(&v->c->trail, "connection_accepted", o, NULL);
}

static int serve_admit(void *ctx, const cr_query *q, const cr_session_result *r, char *msg,
                       size_t cap) {
  cr_visit *v = ctx;
  (void)q;
  visit_accepted(v);
  return cr__trail_admit(&v->c->trail, r, msg, cap);
}

/* The own set for the query the runner names (a worker thread), loaded
 * for this session alone (with the query's filter and group column, if
 * any): its elements' order is the order this session sends them in, drawn
 * afresh for each load, so no two sessions share a load. */
static int serve_load(void *ctx, const cr_query *q, const cr_session_result *res,
                      const cr_dataset **out, char *msg, size_t cap) {
  cr_visit *v = ctx;
  cr_collab *c = v->c;
  if (q->kind == CR_QUERY_MEMBERS && (q->results_to & CR_ROLE_BIT(c->role))) {
    snprintf(msg, cap,
             "query \"%s\" returns the %s's matched rows; the %s must run it "
             "(`cleanroom run --out FILE`), not serve it",
             q->name, cr_role_name(c->role), cr_role_name(c->role));
    return CR_EREFUSED;
  }
  cr_error err;
  cr_error_clear(&err);
  cr_params params = {0};
  /* Both nodes check the parameters against their declared types. */
  int rc = cr_params_from_pairs(&params, (const char *const *)res->param_names,
                                (const char *const *)res->param_values, res->nparams, q->params,
                                q->nparams, &err);
  if (rc) {
    snprintf(msg, cap, "%s", cr_error_message(&err, rc));
    return CR_EREFUSED;
  }
  cr_file_sig sig;
  rc = cr__collab_load_for(c, q, &params, &v->own, &sig, msg, cap);
  cr_params_free(&params);
  if (rc)
    return rc;
  v->used = cr__data_used(v->own, &sig);
  *out = v->own;
  return 0;
}

static void serve_unload(void *ctx, const cr_dataset *d) {
  cr_visit *v = ctx;
  (void)d;
  cr_dataset_free(v->own);
  v->own = NULL;
}

/* ---- the node's hooks ---------------------------------------------------------------- */

static int serve_pinned(void *ctx, const uint8_t fp[CR_SHA256_BYTES]) {
  cr_party *p = ctx;
  return cr__collab_pins(p->collabs, p->ncollabs, fp);
}

static int trail_pinned(void *ctx, const uint8_t *fp) {
  cr_party *p = ctx;
  return fp != NULL && cr__collab_pins(p->collabs, p->ncollabs, fp);
}

static unsigned live_sessions(const cr_party *p, const char *name) {
  unsigned n = 0;
  for (const cr_visit *v = p->visits; v != NULL; v = v->next)
    n += strcmp(v->c->name, name) == 0;
  return n;
}

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

static int serve_route(void *ctx, cr_node_route *r) {
  cr_party *p = ctx;
  int wire = 0;
  cr_collab *c = cr__collab_route(p->collabs, p->ncollabs, r->peer_fp, r->template_sha256, &wire,
                                  r->msg, sizeof r->msg);
  if (c == NULL) {
    r->wire_error = wire;
    return CR_EREFUSED;
  }
  if (c->conf.max_sessions && live_sessions(p, c->name) >= c->conf.max_sessions) {
    r->wire_error = CR_WIRE_BUSY;
    snprintf(r->msg, sizeof r->msg,
             "busy, retry later: collaboration %s has %u session(s) in progress (max_sessions = "
             "%u in %s)",
             c->name, live_sessions(p, c->name), c->conf.max_sessions,
             c->conf_path ? c->conf_path : "its configuration");
    return CR_EREFUSED;
  }
  cr_visit *v = calloc(1, sizeof *v);
  if (v == NULL) {
    r->wire_error = CR_WIRE_INTERNAL;
    snprintf(r->msg, sizeof r->msg, "out of memory");
    return CR_ENOMEM;
  }
  v->p = p;
  v->c = c;
  c->refs++;
  v->t0_ms = cr_now_ms();
  v->next = p->visits;
  if (p->visits)
    p->visits->prev = v;
  p->visits = v;

  json_t *o = peer_fields(r->peer_addr, r->peer_fp);
  json_object_set_new(o, "peer_role", cr__jtext(cr_role_name(cr_role_other(c->role))));
  /* Written when the session is admitted or ends: a partner's pings are
   * throttled with their answers (cr__trail_ping), so a ping loop cannot
   * grow the log at its own rate. */
  v->accepted = o;

  cr_session_config *sc = &r->session;
  sc->tmpl = c->t;
  sc->role = c->role;
  sc->software = p->software;
  sc->pool = p->pool;
  sc->admit = serve_admit;
  sc->admit_ctx = v;
  sc->load = serve_load;
  sc->unload = serve_unload;
  sc->load_ctx = v;
  sc->spill = c->spill; /* the node's, or the collaboration's own */
  sc->release_data = 1; /* each session loads the data for itself */
  r->conn = v;
  r->idle_timeout_ms = c->conf.timeout_ms;
  return 0;
}

/* A routed session has ended and been freed: record it, tell the caller,
 * let go of the collaboration version. */
static void serve_routed_end(void *ctx, void *conn, const cr_session_result *r,
                             const char *peer_addr, const uint8_t *peer_fp) {
  cr_party *p = ctx;
  cr_visit *v = conn;
  cr_collab *c = v->c;
  cr_error err;
  cr_error_clear(&err);
  double ms = (double)(cr_now_ms() - v->t0_ms);
  cr_party_session s;
  memset(&s, 0, sizeof s);
  s.res = r;
  s.peer_addr = peer_addr;
  s.peer_fp = peer_fp;
  s.collaboration = c->name;
  s.tmpl = c->t;
  s.partner = c->t->parties[cr_role_other(c->role)].org;
  s.duration_ms = ms;
  if (r->ping && r->status == CR_SESSION_DONE) {
    /* A ping answered: recorded, never reported as a result. */
    json_t *o = peer_fields(peer_addr, peer_fp);
    json_object_set_new(o, "peer_software", cr__jtext(r->peer_software));
    json_t *accepted = v->accepted;
    v->accepted = NULL;
    (void)cr__trail_ping(&c->trail, accepted, o, &err);
    if (p->ev.on_ping)
      p->ev.on_ping(p->ev.ctx, &s);
  } else {
    visit_accepted(v);
    json_t *extra = json_object();
    if (v->used != NULL)
      json_object_set(extra, "data", v->used);
    json_object_set_new(extra, "duration_ms", json_integer((json_int_t)ms));
    json_object_set_new(extra, "resources", cr__party_resources(p, c->spill));
    int rc =
        cr__trail_session_end(&c->trail, r, peer_addr, peer_fp, NULL, json_deep_copy(extra), &err);
    /* What is left of the privacy budget after this session's spend. */
    char bmsg[256];
    (void)cr__trail_budget(&c->trail, &s.budget, bmsg, sizeof bmsg);
    char msg[600];
    if (rc) {
      snprintf(msg, sizeof msg, "the result is withheld: %s", cr_error_message(&err, rc));
      s.release_rc = rc;
      s.release_msg = msg;
      if (r->status == CR_SESSION_DONE)
        cr__trail_withheld(&c->trail, r, peer_fp, msg, json_deep_copy(extra));
    }
    json_decref(extra);
    if (p->ev.on_session)
      p->ev.on_session(p->ev.ctx, &s);
  }
  if (v->prev)
    v->prev->next = v->next;
  else
    p->visits = v->next;
  if (v->next)
    v->next->prev = v->prev;
  json_decref(v->used);
  json_decref(v->accepted);
  free(v);
  cr__collab_unref(c);
}

/* A connection refused before it had a collaboration: a stranger's TLS,
 * BUSY, a template no collaboration with this partner has. */
static void serve_refused(void *ctx, const cr_session_result *r0, const char *peer_addr,
                          const uint8_t *peer_fp) {
  cr_party *p = ctx;
  cr_error err;
  cr_error_clear(&err);
  /* A certificate no collaboration pins: say which ones they pin (the
   * partner never sees this; its TLS alert says only bad_certificate). */
  cr_session_result copy = *r0;
  const cr_session_result *r = r0;
  if (r0->error == CR_EAUTH && peer_fp != NULL && !r0->error_from_peer &&
      strstr(r0->error_msg, "not pinned by any collaboration") != NULL) {
    char seen[CR_SHA256_HEX_BYTES], fp[CR_SHA256_HEX_BYTES];
    cr_hex_encode(seen, peer_fp, CR_SHA256_BYTES);
    /* A collaboration with enabled = false pins it: the partner is right,
     * the collaboration is not served (say so, not "expected X, got X"). */
    const cr_collab *off = NULL;
    for (size_t i = 0; i < p->ncollabs && off == NULL; i++) {
      const cr_collab *c = p->collabs[i];
      if (!c->conf.enabled &&
          memcmp(c->t->parties[cr_role_other(c->role)].cert_sha256, peer_fp, CR_SHA256_BYTES) == 0)
        off = c;
    }
    if (off != NULL) {
      snprintf(copy.error_msg, sizeof copy.error_msg,
               "the peer's certificate %s is the %s's of collaboration %s, which is not served "
               "(enabled = false in %s): set enabled = true to serve it",
               seen, cr_role_name(cr_role_other(off->role)), off->name,
               off->conf_path ? off->conf_path : "its collaboration.conf");
    } else if (p->ncollabs == 1) {
      /* One collaboration: the words of a node with one template. */
      const cr_collab *c = p->collabs[0];
      cr_role other = cr_role_other(c->role);
      cr_hex_encode(fp, c->t->parties[other].cert_sha256, CR_SHA256_BYTES);
      snprintf(copy.error_msg, sizeof copy.error_msg,
               "the partner's certificate is not the one the template pins for the %s: "
               "expected %s but the peer presented %s",
               cr_role_name(other), fp, seen);
    } else {
      size_t n = (size_t)snprintf(copy.error_msg, sizeof copy.error_msg,
                                  "the peer's certificate %s is not pinned by any collaboration "
                                  "this node serves",
                                  seen);
      for (size_t i = 0; i < p->ncollabs && n + 1 < sizeof copy.error_msg; i++) {
        const cr_collab *c = p->collabs[i];
        cr_role other = cr_role_other(c->role);
        cr_hex_encode(fp, c->t->parties[other].cert_sha256, CR_SHA256_BYTES);
        n += (size_t)snprintf(copy.error_msg + n, sizeof copy.error_msg - n,
                              "%s %s expects the %s %.16s...", i ? "," : ";", c->name,
                              cr_role_name(other), fp);
        if (!c->conf.enabled && n + 1 < sizeof copy.error_msg)
          n += (size_t)snprintf(copy.error_msg + n, sizeof copy.error_msg - n, " (not served)");
      }
    }
    r = &copy;
  }
  int rc = cr__trail_session_end(&p->trail, r, peer_addr, peer_fp, NULL, NULL, &err);
  cr_party_session s;
  memset(&s, 0, sizeof s);
  s.res = r;
  s.peer_addr = peer_addr;
  s.peer_fp = peer_fp;
  char msg[600];
  if (rc) {
    snprintf(msg, sizeof msg, "cannot record it in the audit log: %s", cr_error_message(&err, rc));
    s.release_rc = rc;
    s.release_msg = msg;
  }
  if (p->ev.on_session)
    p->ev.on_session(p->ev.ctx, &s);
}

/* A session's progress (from the runner's Hello on), to the front end. */
static void serve_progress(void *ctx, const cr_session_progress *pr) {
  cr_party *p = ctx;
  if (p->ev.on_progress)
    p->ev.on_progress(p->ev.ctx, pr);
}

static void serve_listening(void *ctx, const char *addr) {
  cr_party *p = ctx;
  if (p->ev.on_listening)
    p->ev.on_listening(p->ev.ctx, addr);
}

static void serve_node_closed(void *ctx, int rc, const cr_error *err, cr_session_result *res) {
  cr_party *p = ctx;
  (void)res; /* serve: NULL */
  p->serve_rc = rc;
  cr_error_clear(&p->serve_err);
  if (err != NULL)
    p->serve_err = *err;
  cr_node_free(p->node); /* allowed from inside on_closed */
  p->node = NULL;
  p->node_closed = 1;
  cr__party_collabs_stop(p); /* --once: the node stopped by itself */
  serve_maybe_closed(p);
}

/* on_closed once the node and every handle of ours are gone. */
static void serve_maybe_closed(cr_party *p) {
  if (!p->running || !p->node_closed || p->handles_live > 0 || p->reload != NULL)
    return;
  p->running = 0;
  if (p->ev.on_closed)
    p->ev.on_closed(p->ev.ctx, p->serve_rc, p->serve_rc ? &p->serve_err : NULL, NULL);
}

/* ---- the collaborations and their changes ------------------------------------------------ */

void cr__srcs_free(cr_srcs *s) {
  for (size_t i = 0; i < s->n; i++) {
    if (s->names)
      free(s->names[i]);
    if (s->dirs)
      free(s->dirs[i]);
    if (s->tpaths)
      free(s->tpaths[i]);
  }
  free(s->v);
  free(s->names);
  free(s->dirs);
  free(s->tpaths);
  memset(s, 0, sizeof *s);
}

/* serve --template: the collaboration is named after the template. */
static const char *single_name(const cr_party *p) {
  if (p->t != NULL && p->t->name != NULL && p->t->name[0])
    return p->t->name;
  const char *slash = strrchr(p->template_path, '/');
  return slash ? slash + 1 : p->template_path;
}

int cr__srcs_list(cr_party *p, cr_srcs *s, cr_error *err) {
  memset(s, 0, sizeof *s);
  if (p->collab_dir == NULL) {
    s->v = calloc(1, sizeof *s->v);
    s->names = calloc(1, sizeof *s->names);
    s->dirs = calloc(1, sizeof *s->dirs);
    s->tpaths = calloc(1, sizeof *s->tpaths);
    if (!s->v || !s->names || !s->dirs || !s->tpaths ||
        (s->names[0] = strdup(single_name(p))) == NULL ||
        (s->tpaths[0] = strdup(p->template_path)) == NULL) {
      cr__srcs_free(s);
      return cr_error_set(err, CR_ENOMEM, "out of memory");
    }
    s->n = 1;
    s->v[0].name = s->names[0];
    s->v[0].template_path = s->tpaths[0];
    s->v[0].data = p->data_path;
    s->v[0].data_query = p->data_query;
    s->v[0].delimiter = p->delimiter;
    /* The template read at open; a reload reads the file again. */
    s->v[0].t = p->running ? NULL : p->t;
    return 0;
  }
  DIR *d = opendir(p->collab_dir);
  if (d == NULL)
    return cr_error_set(err, CR_ECONFIG, "cannot read the collaborations directory %s: %s",
                        p->collab_dir, strerror(errno));
  size_t cap = 0;
  struct dirent *e;
  int rc = 0;
  while ((e = readdir(d)) != NULL) {
    if (e->d_name[0] == '.')
      continue; /* hidden: ., .., and directories being prepared (.new) */
    size_t n = strlen(p->collab_dir) + 1 + strlen(e->d_name) + 1;
    char *path = malloc(n);
    struct stat st;
    if (path == NULL) {
      rc = cr_error_set(err, CR_ENOMEM, "out of memory");
      break;
    }
    snprintf(path, n, "%s/%s", p->collab_dir, e->d_name);
    if (stat(path, &st) != 0 || !S_ISDIR(st.st_mode) || strlen(e->d_name) >= CR_COLLAB_NAME_MAX) {
      free(path);
      continue;
    }
    if (s->n == cap) {
      cap = cap ? 2 * cap : 8;
      char **nn = realloc(s->names, cap * sizeof *nn);
      if (nn)
        s->names = nn;
      char **nd = realloc(s->dirs, cap * sizeof *nd);
      if (nd)
        s->dirs = nd;
      if (!nn || !nd) {
        free(path);
        rc = cr_error_set(err, CR_ENOMEM, "out of memory");
        break;
      }
    }
    s->names[s->n] = strdup(e->d_name);
    s->dirs[s->n] = path;
    if (s->names[s->n] == NULL) {
      free(path);
      rc = cr_error_set(err, CR_ENOMEM, "out of memory");
      break;
    }
    s->n++;
  }
  closedir(d);
  if (rc == 0 && s->n > 0) {
    /* Sorted by name, the directories with them. */
    for (size_t i = 1; i < s->n; i++)
      for (size_t j = i; j > 0 && strcmp(s->names[j - 1], s->names[j]) > 0; j--) {
        char *t = s->names[j];
        s->names[j] = s->names[j - 1];
        s->names[j - 1] = t;
        t = s->dirs[j];
        s->dirs[j] = s->dirs[j - 1];
        s->dirs[j - 1] = t;
      }
    s->v = calloc(s->n, sizeof *s->v);
    s->tpaths = calloc(s->n, sizeof *s->tpaths);
    if (s->v == NULL || s->tpaths == NULL)
      rc = cr_error_set(err, CR_ENOMEM, "out of memory");
    for (size_t i = 0; rc == 0 && i < s->n; i++) {
      size_t n = strlen(s->dirs[i]) + 1 + sizeof CR_COLLAB_TEMPLATE_FILE;
      if ((s->tpaths[i] = malloc(n)) == NULL) {
        rc = cr_error_set(err, CR_ENOMEM, "out of memory");
        break;
      }
      snprintf(s->tpaths[i], n, "%s/%s", s->dirs[i], CR_COLLAB_TEMPLATE_FILE);
      s->v[i].name = s->names[i];
      s->v[i].dir = s->dirs[i];
      s->v[i].template_path = s->tpaths[i];
    }
  }
  if (rc)
    cr__srcs_free(s);
  return rc;
}

static ssize_t find_collab(const cr_party *p, const char *name) {
  for (size_t i = 0; i < p->ncollabs; i++)
    if (strcmp(p->collabs[i]->name, name) == 0)
      return (ssize_t)i;
  return -1;
}

static ssize_t find_failed(const cr_party *p, const char *name) {
  for (size_t i = 0; i < p->nfailed; i++)
    if (strcmp(p->failed[i].name, name) == 0)
      return (ssize_t)i;
  return -1;
}

static void forget_failed(cr_party *p, const char *name) {
  ssize_t i = find_failed(p, name);
  if (i < 0)
    return;
  free(p->failed[i].name);
  p->failed[i] = p->failed[--p->nfailed];
}

/* A version that did not load: reported (the previous one, if any, keeps
 * serving), and not tried again until one of its files changes. */
static void refuse_version(cr_party *p, const char *name, const cr_file_sig sigs[3],
                           const cr_collab *c, int rc, const cr_error *err) {
  ssize_t i = find_failed(p, name);
  if (i < 0) {
    struct cr_failed *nf = realloc(p->failed, (p->nfailed + 1) * sizeof *nf);
    char *dup = strdup(name);
    if (nf == NULL || dup == NULL) {
      if (nf)
        p->failed = nf;
      free(dup);
    } else {
      p->failed = nf;
      i = (ssize_t)p->nfailed++;
      p->failed[i].name = dup;
    }
  }
  if (i >= 0) {
    memcpy(p->failed[i].sigs, sigs, sizeof p->failed[i].sigs);
    p->failed[i].rc = rc;
  }
  /* The fields of the version refused, when it got as far as its
   * template; "serving" says whether an earlier version still serves. */
  cr__party_collab_event(p, "refused", name, c, cr_error_message(err, rc));
}

/* The version c takes name's place (or joins); the old one lives on in
 * the sessions that hold it. 0, or CR_ECONFIG when another collaboration
 * already serves the same template. */
static int install(cr_party *p, cr_collab *c, int at_start, cr_error *err) {
  for (size_t i = 0; i < p->ncollabs; i++)
    if (strcmp(p->collabs[i]->name, c->name) != 0 && strcmp(p->collabs[i]->th, c->th) == 0)
      return cr_error_set(err, CR_ECONFIG,
                          "%s: the same template (%s) as collaboration %s, which serves it "
                          "already; a template is one collaboration",
                          c->template_path, c->th, p->collabs[i]->name);
  ssize_t i = find_collab(p, c->name);
  const char *change = at_start ? "loaded" : i >= 0 ? "changed" : "added";
  if (i >= 0) {
    cr_collab *old = p->collabs[i];
    p->collabs[i] = c;
    cr__collab_unref(old);
  } else {
    // NOLINTNEXTLINE(bugprone-sizeof-expression): an array of pointers
    cr_collab **nv = realloc(p->collabs, (p->ncollabs + 1) * sizeof *nv);
    if (nv == NULL)
      return cr_error_set(err, CR_ENOMEM, "out of memory");
    p->collabs = nv;
    p->collabs[p->ncollabs++] = c;
  }
  forget_failed(p, c->name);
  if (p->collab_dir != NULL || !at_start)
    cr__party_collab_event(p, change, c->name, c, NULL);
  return 0;
}

static void remove_collab(cr_party *p, size_t i) {
  cr_collab *c = p->collabs[i];
  // NOLINTNEXTLINE(bugprone-sizeof-expression): an array of pointers
  memmove(&p->collabs[i], &p->collabs[i + 1], (p->ncollabs - i - 1) * sizeof *p->collabs);
  p->ncollabs--;
  cr__party_collab_event(p, "removed", c->name, c, NULL);
  cr__collab_unref(c);
}

/* A reload's data checks, on the thread pool. */
typedef struct cr_reload {
  uv_work_t work;
  cr_party *p;
  size_t n;
  struct job {
    cr_collab *c;
    int rc;
    cr_error err;
  } * jobs;
} cr_reload;

static void reload_work(uv_work_t *w) {
  cr_reload *r = w->data;
  for (size_t i = 0; i < r->n; i++) {
    cr_error_clear(&r->jobs[i].err);
    r->jobs[i].rc = cr__collab_check_data(r->jobs[i].c, 0, NULL, &r->jobs[i].err);
  }
}

static void rescan(cr_party *p);
static void watch_dirs(cr_party *p);

static void reload_done(uv_work_t *w, int status) {
  cr_reload *r = w->data;
  cr_party *p = r->p;
  (void)status;
  for (size_t i = 0; i < r->n; i++) {
    struct job *j = &r->jobs[i];
    if (j->rc == 0 && !p->stopping)
      j->rc = install(p, j->c, 0, &j->err);
    if (j->rc != 0 && !p->stopping)
      refuse_version(p, j->c->name, j->c->sigs, j->c, j->rc, &j->err);
    if (j->rc != 0 || p->stopping)
      cr__collab_unref(j->c);
  }
  free(r->jobs);
  free(r);
  p->reload = NULL;
  if (p->stopping) {
    serve_maybe_closed(p);
    return;
  }
  if (p->reload_again) {
    p->reload_again = 0;
    rescan(p);
  }
}

/* Looks at the sources: removes what is gone, prepares what is new or
 * changed (and was not already refused as it is), and checks their data
 * on the thread pool. Loop thread. */
static void rescan(cr_party *p) {
  if (p->stopping)
    return;
  if (p->reload != NULL) {
    p->reload_again = 1; /* after the one in flight */
    return;
  }
  cr_srcs s;
  cr_error err;
  cr_error_clear(&err);
  if (cr__srcs_list(p, &s, &err) != 0) {
    /* The directory itself is unreadable (or gone): report once, keep
     * serving what there is. */
    if (!p->dir_failed)
      cr__party_collab_event(p, "refused", p->collab_dir ? p->collab_dir : "", NULL, err.msg);
    p->dir_failed = 1;
    return;
  }
  p->dir_failed = 0;
  for (size_t i = p->ncollabs; i-- > 0;) {
    size_t k = 0;
    while (k < s.n && strcmp(s.names[k], p->collabs[i]->name) != 0)
      k++;
    if (k == s.n)
      remove_collab(p, i);
  }
  for (size_t i = p->nfailed; i-- > 0;) {
    size_t k = 0;
    while (k < s.n && strcmp(s.names[k], p->failed[i].name) != 0)
      k++;
    if (k == s.n)
      forget_failed(p, p->failed[i].name);
  }
  cr_reload *r = calloc(1, sizeof *r);
  if (r != NULL)
    r->jobs = calloc(s.n ? s.n : 1, sizeof *r->jobs);
  if (r == NULL || r->jobs == NULL) {
    free(r);
    cr__srcs_free(&s);
    return; /* the next look tries again */
  }
  r->p = p;
  for (size_t i = 0; i < s.n; i++) {
    cr_file_sig sigs[3];
    cr__collab_sigs(&s.v[i], sigs);
    ssize_t cur = find_collab(p, s.names[i]), bad = find_failed(p, s.names[i]);
    int same = 1;
    for (int k = 0; k < 3 && cur >= 0; k++)
      same = same && cr__file_sig_equal(&sigs[k], &p->collabs[cur]->sigs[k]);
    if (cur >= 0 && same)
      continue;
    same = 1;
    for (int k = 0; k < 3 && bad >= 0; k++)
      same = same && cr__file_sig_equal(&sigs[k], &p->failed[bad].sigs[k]);
    if (bad >= 0 && same)
      continue;
    cr_collab *c = NULL;
    cr_error_clear(&err);
    int rc = cr__collab_prepare(p, &s.v[i], 0, &c, &err);
    if (rc != 0) {
      refuse_version(p, s.names[i], sigs, NULL, rc, &err);
      continue;
    }
    r->jobs[r->n++].c = c;
  }
  cr__srcs_free(&s);
  watch_dirs(p);
  if (r->n == 0) {
    free(r->jobs);
    free(r);
    return;
  }
  r->work.data = r;
  if (uv_queue_work(p->loop, &r->work, reload_work, reload_done) != 0) {
    for (size_t i = 0; i < r->n; i++)
      cr__collab_unref(r->jobs[i].c);
    free(r->jobs);
    free(r);
    return;
  }
  p->reload = r;
}

int cr__party_reload(cr_party *p) {
  rescan(p);
  return 0;
}

int cr_party_reload(cr_party *p) {
  if (p == NULL || p->mode != CR_PARTY_SERVE || !p->running || p->stopping)
    return CR_EINVAL;
  return cr__party_reload(p);
}

/* ---- watching ---------------------------------------------------------------------- */

static void on_handle_closed(uv_handle_t *h) {
  cr_party *p = h->data;
  if (h != (uv_handle_t *)&p->reload_timer)
    free(h);
  p->handles_live--;
  serve_maybe_closed(p);
}

static void on_rescan_timer(uv_timer_t *t) {
  cr_party *p = t->data;
  rescan(p);
}

static void on_fs_event(uv_fs_event_t *h, const char *filename, int events, int status) {
  cr_party *p = h->data;
  (void)filename;
  (void)events;
  (void)status;
  if (p->stopping || !p->reload_timer_live)
    return;
  /* Let the writer finish (a copy, a rename), then look once. */
  uv_timer_start(&p->reload_timer, on_rescan_timer, CR_PARTY_SETTLE_MS, CR_PARTY_RESCAN_MS);
}

/* Closes the watches (their memory goes in the close callback). */
static void unwatch(cr_party *p) {
  uv_fs_event_t **w = p->watch;
  size_t n = p->nwatch;
  p->watch = NULL;
  p->nwatch = 0;
  for (size_t i = 0; w != NULL && i < n; i++)
    uv_close((uv_handle_t *)w[i], on_handle_closed);
  free(w);
}

/* Watches the directory and each collaboration's sub-directory (again
 * after each look: sub-directories come and go). */
static void watch_dirs(cr_party *p) {
  if (p->collab_dir == NULL || p->stopping)
    return;
  cr_srcs s;
  cr_error err;
  if (cr__srcs_list(p, &s, &err) != 0)
    return;
  /* The same sub-directories as last time: the watches stand. */
  size_t klen = 1;
  for (size_t i = 0; i < s.n; i++)
    klen += strlen(s.names[i]) + 1;
  char *key = malloc(klen);
  if (key != NULL) {
    size_t at = 0;
    for (size_t i = 0; i < s.n; i++) {
      size_t n = strlen(s.names[i]);
      memcpy(key + at, s.names[i], n);
      key[at + n] = '/';
      at += n + 1;
    }
    key[at] = '\0';
    if (p->watch_key != NULL && p->watch != NULL && strcmp(key, p->watch_key) == 0) {
      free(key);
      cr__srcs_free(&s);
      return;
    }
  }
  free(p->watch_key);
  p->watch_key = key;
  unwatch(p);
  // NOLINTNEXTLINE(bugprone-sizeof-expression): an array of pointers
  uv_fs_event_t **w = calloc(s.n + 1, sizeof *w);
  size_t nw = 0;
  for (size_t i = 0; w != NULL && i <= s.n; i++) {
    uv_fs_event_t *h = calloc(1, sizeof *h);
    if (h == NULL)
      break;
    uv_fs_event_init(p->loop, h);
    h->data = p;
    p->handles_live++;
    if (uv_fs_event_start(h, on_fs_event, i == 0 ? p->collab_dir : s.dirs[i - 1], 0) != 0) {
      uv_close((uv_handle_t *)h, on_handle_closed); /* the periodic look still sees changes */
      continue;
    }
    uv_unref((uv_handle_t *)h); /* the node keeps the loop alive */
    w[nw++] = h;
  }
  p->watch = w;
  p->nwatch = nw;
  cr__srcs_free(&s);
}

void cr__party_collabs_stop(cr_party *p) {
  if (p->stopping)
    return;
  p->stopping = 1;
  unwatch(p);
  free(p->watch_key);
  p->watch_key = NULL;
  if (p->reload_timer_live) {
    p->reload_timer_live = 0;
    uv_close((uv_handle_t *)&p->reload_timer, on_handle_closed);
  }
}

void cr__party_collabs_free(cr_party *p) {
  for (size_t i = 0; i < p->ncollabs; i++)
    cr__collab_unref(p->collabs[i]);
  free(p->collabs);
  p->collabs = NULL;
  p->ncollabs = 0;
  for (size_t i = 0; i < p->nfailed; i++)
    free(p->failed[i].name);
  free(p->failed);
  p->failed = NULL;
  p->nfailed = 0;
}

/* The collaborations at start, synchronously: the one template (a failure
 * is serve's), or every sub-directory (a broken one is reported and left
 * out; the node serves the others). */
int cr__party_collabs_start(cr_party *p, const cr_party_serve_config *cfg, cr_error *err) {
  (void)cfg;
  cr_srcs s;
  int rc = cr__srcs_list(p, &s, err);
  if (rc)
    return rc;
  for (size_t i = 0; i < s.n; i++) {
    cr_collab *c = NULL;
    cr_error e;
    cr_error_clear(&e);
    rc = cr__collab_prepare(p, &s.v[i], 0, &c, &e);
    cr_dataset *d = NULL;
    if (rc == 0 && (rc = cr__collab_check_data(c, 0, &d, &e)) == 0)
      rc = install(p, c, 1, &e);
    if (rc == 0 && p->ev.on_data != NULL && d != NULL)
      p->ev.on_data(p->ev.ctx, d);
    cr_dataset_free(d);
    if (rc != 0 && c != NULL)
      cr__collab_unref(c);
    if (rc != 0 && p->collab_dir == NULL) {
      if (err)
        *err = e;
      cr__srcs_free(&s);
      return rc;
    }
    if (rc != 0) {
      cr_file_sig sigs[3];
      cr__collab_sigs(&s.v[i], sigs);
      refuse_version(p, s.names[i], sigs, NULL, rc, &e);
    }
  }
  cr__srcs_free(&s);
  return 0;
}

/* ---- serve ------------------------------------------------------------------------ */

int cr_party_serve(cr_party *p, uv_loop_t *loop, const cr_party_serve_config *cfg,
                   const cr_party_events *ev, cr_error *err) {
  int rc;
  if (p->mode != CR_PARTY_SERVE || cfg == NULL || loop == NULL ||
      (p->collab_dir == NULL && cfg->data == NULL))
    return cr_error_set(err, CR_EINVAL, "party: serve needs a party opened to serve, and data");
  if (p->running || p->node != NULL)
    return cr_error_set(err, CR_EINVAL, "party: already serving or running");
  if (ev)
    p->ev = *ev;
  p->loop = loop;
  /* What needs no data first, so a flag that is wrong fails at once: the
   * source's options (serve --template), then the port, bound now and
   * kept (issue 16: a port in use was found only after loading the whole
   * data set; with many collaborations, after loading all of them). */
  if (cfg->data != NULL) {
    cr_source_options so = {cfg->data_query, cfg->delimiter};
    if ((rc = cr_source_validate(cfg->data, &so, err)) != 0 ||
        (rc = cr__party_set_source(p, cfg->data, cfg->data_query, cfg->delimiter, err)) != 0)
      return rc;
  } else {
    free(p->data_path);
    free(p->data_query);
    p->data_path = p->data_query = NULL;
    p->delimiter = 0;
  }
  int fd = -1;
  if ((rc = cr_node_listen(loop, p->address, &fd, err)) != 0) {
    cr__party_refusal(p, "serve_refused", NULL, cr_error_message(err, rc));
    return rc;
  }
  p->max_reject_ratio = cfg->max_reject_ratio;
  p->pool = cfg->pool;
  p->stopping = 0;
  p->node_closed = 0;
  if ((rc = cr__party_collabs_start(p, cfg, err)) != 0) {
    close(fd);
    goto fail;
  }

  cr__party_node_base(p, cfg->timeout_ms);
  p->nc.session.tmpl = NULL; /* per connection, from the router */
  p->nc.pinned = serve_pinned;
  p->nc.route = serve_route;
  p->nc.on_routed_session = serve_routed_end;
  p->nc.on_session = serve_refused;
  p->nc.on_listening = serve_listening;
  p->nc.on_progress = serve_progress;
  p->nc.on_closed = serve_node_closed;
  p->nc.once = cfg->once;
  p->nc.max_sessions = cfg->max_sessions;
  p->trail.pinned = trail_pinned;
  p->trail.pinned_ctx = p;
  if ((rc = cr_node_serve_start_fd(&p->node, loop, &p->nc, fd, err)) != 0) {
    cr__party_refusal(p, "serve_refused", NULL, cr_error_message(err, rc));
    goto fail;
  }
  p->running = 1;
  uv_timer_init(loop, &p->reload_timer);
  p->reload_timer.data = p;
  p->reload_timer_live = 1;
  p->handles_live++;
  uv_timer_start(&p->reload_timer, on_rescan_timer, CR_PARTY_RESCAN_MS, CR_PARTY_RESCAN_MS);
  uv_unref((uv_handle_t *)&p->reload_timer); /* the node keeps the loop alive */
  watch_dirs(p);
  return 0;
fail:
  cr__party_collabs_free(p);
  return rc;
}

void cr_party_stop(cr_party *p) {
  if (p == NULL)
    return;
  if (p->mode == CR_PARTY_SERVE && p->running)
    cr__party_collabs_stop(p);
  if (p->node != NULL)
    cr_node_stop(p->node);
}

int cr_party_budget_get(cr_party *p, cr_party_budget *out, cr_error *err) {
  char msg[256];
  int rc = cr__trail_budget(&p->trail, out, msg, sizeof msg);
  return rc ? cr_error_set(err, rc, "%s", msg) : 0;
}
