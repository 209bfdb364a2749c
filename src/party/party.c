/*
 * Opening a party: template, identity, role, audit log, signatures; and the
 * data loading every query goes through (filter, parameters, group_by),
 * each load recorded as a data access.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "party/party_internal.h"

static char *dup_or_null(const char *s) { return s ? strdup(s) : NULL; }

void cr__party_refusal(cr_party *p, const char *event, const char *query, const char *why) {
  json_t *ev = json_object();
  if (query)
    json_object_set_new(ev, "query", cr__jtext(query));
  json_object_set_new(ev, "reason", cr__jtext(why));
  (void)cr__trail_event(&p->trail, event, ev, NULL);
}

static const char *mode_name(cr_party_mode m) {
  return m == CR_PARTY_SERVE   ? "serve"
         : m == CR_PARTY_RUN   ? "run"
         : m == CR_PARTY_CHECK ? "check"
                               : "ping";
}

static int record_start(cr_party *p, cr_error *err) {
  char fp[CR_SHA256_HEX_BYTES], pkh[2 * CR_SIGN_PK_BYTES + 1];
  uint8_t pk[CR_SIGN_PK_BYTES];
  cr_hex_encode(fp, cr_identity_fingerprint(p->id), CR_SHA256_BYTES);
  cr_identity_public_key(p->id, pk);
  cr_hex_encode(pkh, pk, sizeof pk);
  json_t *ev = json_object();
  json_object_set_new(ev, "software", cr__jtext(p->software));
  json_object_set_new(ev, "mode", cr__jtext(mode_name(p->mode)));
  json_object_set_new(ev, "role", cr__jtext(cr_role_name(p->role)));
  json_object_set_new(ev, "cert_sha256", cr__jtext(fp));
  json_object_set_new(ev, "public_key", cr__jtext(pkh));
  json_object_set_new(ev, "template_sha256", cr__jtext(p->trail.th));
  json_object_set_new(ev, "template_file", cr__jtext(p->template_path));
  json_object_set_new(ev, p->mode == CR_PARTY_SERVE ? "listen" : "peer",
                      cr__jtext(p->address ? p->address : ""));
  int rc = cr__trail_event(&p->trail, "node_started", ev, err);
  if (rc)
    return cr_error_set(err, CR_EINTERNAL, "cannot write the audit log %s: %s", p->audit_path,
                        err ? err->msg : cr_strerror(rc));
  return 0;
}

int cr_party_open(cr_party **out, const cr_party_config *cfg, cr_error *err) {
  int rc;
  *out = NULL;
  if (cfg == NULL || cfg->template_path == NULL || cfg->identity_dir == NULL ||
      (cfg->mode != CR_PARTY_SERVE && cfg->mode != CR_PARTY_RUN && cfg->mode != CR_PARTY_PING &&
       cfg->mode != CR_PARTY_CHECK))
    return cr_error_set(err, CR_EINVAL, "party: a mode, a template and an identity are required");
  if (cr_crypto_init() != 0)
    return cr_error_set(err, CR_EINTERNAL, "libsodium failed to initialise");
  cr_party *p = calloc(1, sizeof *p);
  if (p == NULL)
    return cr_error_set(err, CR_ENOMEM, "out of memory");
  p->mode = cfg->mode;
  p->software = cfg->software ? cfg->software : CR_PARTY_SOFTWARE;
  p->template_path = strdup(cfg->template_path);
  p->identity_dir = strdup(cfg->identity_dir);
  p->audit_path =
      cfg->audit_path ? strdup(cfg->audit_path) : cr__trail_default_path(cfg->identity_dir);
  if (p->template_path == NULL || p->identity_dir == NULL || p->audit_path == NULL) {
    rc = cr_error_set(err, CR_ENOMEM, "out of memory");
    goto fail;
  }
  if ((rc = cr_template_load(&p->t, cfg->template_path, err)) != 0) {
    if (rc != CR_ENOMEM)
      rc = CR_ETEMPLATE; /* unreadable or invalid: a configuration problem */
    goto fail;
  }
  if ((rc = cr_identity_load(&p->id, cfg->identity_dir, err)) != 0) {
    if (rc != CR_ENOMEM)
      rc = CR_ECONFIG;
    goto fail;
  }
  if (cr_template_role_of(p->t, cr_identity_fingerprint(p->id), &p->role) != 0) {
    char own[CR_SHA256_HEX_BYTES], pp[CR_SHA256_HEX_BYTES], cc[CR_SHA256_HEX_BYTES];
    cr_hex_encode(own, cr_identity_fingerprint(p->id), CR_SHA256_BYTES);
    cr_hex_encode(pp, p->t->parties[CR_ROLE_PROVIDER].cert_sha256, CR_SHA256_BYTES);
    cr_hex_encode(cc, p->t->parties[CR_ROLE_CONSUMER].cert_sha256, CR_SHA256_BYTES);
    rc = cr_error_set(err, CR_ECONFIG,
                      "this identity (%s, certificate %s) is not a party of template %s: the "
                      "provider pins %s and the consumer pins %s; put your fingerprint in the "
                      "template (`cleanroom template pin`, parties.<role>.cert_sha256) and "
                      "agree it with the partner",
                      cfg->identity_dir, own, cfg->template_path, pp, cc);
    goto fail;
  }
  cr_role other = cr_role_other(p->role);
  p->address = dup_or_null(cfg->address                ? cfg->address
                           : p->mode == CR_PARTY_SERVE ? NULL
                                                       : p->t->parties[other].address);
  if (p->address == NULL && p->mode != CR_PARTY_CHECK) {
    rc = cfg->mode == CR_PARTY_SERVE
             ? cr_error_set(err, CR_EUSAGE, "an address to listen on (HOST:PORT) is required")
             : cr_error_set(err, CR_EUSAGE,
                            "the partner's address (HOST:PORT) is required: the template gives "
                            "none for the %s (parties.%s.address)",
                            cr_role_name(other), cr_role_name(other));
    goto fail;
  }

  /* A ping needs neither the signatures nor the log: it says what serve
   * and run would refuse, and pings anyway (a serving node may hold the
   * log). */
  char *sp = cr_template_sig_path(p->t);
  cr_error se;
  cr_error_clear(&se);
  int src = sp ? cr_template_require_sigs(p->t, sp, &se) : CR_ENOMEM;
  free(sp);
  if (src && (p->mode == CR_PARTY_PING || p->mode == CR_PARTY_CHECK))
    snprintf(p->notes[CR_PARTY_NOTE_SIGNATURES], sizeof p->notes[0], "%s",
             cr_error_message(&se, src));

  cr_error ae;
  cr_error_clear(&ae);
  if ((rc = cr__trail_open(&p->trail, p->audit_path, p->id, p->t, &ae)) != 0) {
    if (p->mode == CR_PARTY_PING) {
      snprintf(p->notes[CR_PARTY_NOTE_AUDIT], sizeof p->notes[0],
               "not recorded in the audit log %s: %s", p->audit_path, cr_error_message(&ae, rc));
      memset(&p->trail, 0, sizeof p->trail);
      cr_hex_encode(p->trail.th, p->t->sha256, CR_SHA256_BYTES);
    } else {
      /* A log that does not verify is evidence, not a setting (exit 3). */
      rc = cr_error_set(err, rc == CR_EDATA ? CR_EDATA : CR_ECONFIG,
                        "cannot open the audit log %s: %s%s", p->audit_path,
                        cr_error_message(&ae, rc),
                        p->mode == CR_PARTY_CHECK
                            ? " (a data check is recorded in the audit log like every data "
                              "access; while a node holds this log, give the check its own with "
                              "--audit FILE)"
                            : "");
      goto fail;
    }
  }
  if (p->mode != CR_PARTY_PING && p->mode != CR_PARTY_CHECK) {
    /* From here on every refusal and every data access is in the log. */
    if ((rc = record_start(p, err)) != 0)
      goto fail;
    if (src) {
      cr_error_set(err, src == CR_ENOMEM ? CR_ENOMEM : CR_EREFUSED, "%s",
                   cr_error_message(&se, src));
      cr__party_refusal(p, "template_refused", NULL, cr_error_message(&se, src));
      rc = src == CR_ENOMEM ? CR_ENOMEM : CR_EREFUSED;
      goto fail;
    }
  }
  *out = p;
  return 0;
fail:
  cr_party_close(p);
  return rc;
}

void cr_party_close(cr_party *p) {
  if (p == NULL)
    return;
  if (p->node != NULL)
    cr_node_free(p->node);
  cr__trail_close(&p->trail);
  cr_dataset_free(p->data);
  cr_filter_free(p->filter);
  cr_params_free(&p->params);
  free(p->param_names);
  free(p->param_values);
  free(p->out_path);
  free(p->data_path);
  free(p->data_query);
  cr_identity_free(p->id);
  cr_template_free(p->t);
  free(p->template_path);
  free(p->identity_dir);
  free(p->audit_path);
  free(p->address);
  free(p);
}

cr_role cr_party_role(const cr_party *p) { return p->role; }
const cr_template *cr_party_template(const cr_party *p) { return p->t; }
const cr_identity *cr_party_identity(const cr_party *p) { return p->id; }
const char *cr_party_address(const cr_party *p) { return p->address; }
const char *cr_party_audit_path(const cr_party *p) { return p->audit_path; }
const char *cr_party_note(const cr_party *p, int which) {
  return which == CR_PARTY_NOTE_AUDIT ? p->notes[1] : p->notes[0];
}

void cr__party_node_base(cr_party *p, unsigned timeout_ms) {
  memset(&p->nc, 0, sizeof p->nc);
  p->nc.session.tmpl = p->t;
  p->nc.session.role = p->role;
  p->nc.session.software = p->software;
  p->nc.id = p->id;
  p->nc.address = p->address;
  p->nc.handshake_timeout_ms = timeout_ms;
  p->nc.idle_timeout_ms = timeout_ms;
  p->nc.ctx = p;
}

void cr_party_stop(cr_party *p) {
  if (p != NULL && p->node != NULL)
    cr_node_stop(p->node);
}

/* ---- data ----------------------------------------------------------------- */

int cr__party_set_source(cr_party *p, const char *data, const char *query, char delimiter,
                         cr_error *err) {
  char *d = strdup(data), *q = query ? strdup(query) : NULL;
  if (d == NULL || (query && q == NULL)) {
    free(d);
    free(q);
    return cr_error_set(err, CR_ENOMEM, "out of memory");
  }
  free(p->data_path);
  free(p->data_query);
  p->data_path = d;
  p->data_query = q;
  p->delimiter = delimiter;
  return 0;
}

void cr__party_load_options(const cr_party *p, cr_dataset_options *opt) {
  cr_dataset_options_init(opt);
  if (p->max_reject_ratio != 0)
    opt->max_reject_ratio = p->max_reject_ratio > 0 ? p->max_reject_ratio : 0.0;
  opt->data_query = p->data_query;
  opt->delimiter = p->delimiter;
}

/* The data access fields of the audit log: the source, and for a database
 * the query (what was read is as much part of the access as where). */
static json_t *data_fields(const cr_party *p, const cr_dataset *d, const char *query) {
  json_t *o = cr__trail_data_fields(d, p->t, query);
  json_object_set_new(o, "source", cr__jtext(cr_source_kind_name(d->source_kind)));
  if (d->data_query != NULL)
    json_object_set_new(o, "data_query", cr__jtext(d->data_query));
  return o;
}

static int keep_row(void *ctx, const char *const *fields, const size_t *lens, size_t n) {
  return cr_filter_eval(ctx, fields, lens, n);
}

/* The own set at start: run loads it for its query (filter, group_by and
 * parameters); serve loads it whole, for the checks made before listening
 * and for queries that neither filter nor group this side. */
int cr__party_load_start(cr_party *p, const cr_query *q, cr_error *err) {
  int rc;
  if (q != NULL && q->where[p->role] != NULL &&
      (rc = cr_filter_parse(&p->filter, q->where[p->role], q->params, q->nparams, q->name, err)) !=
          0)
    return rc == CR_ENOMEM ? rc : CR_EUSAGE;
  cr_dataset_options dopt;
  cr__party_load_options(p, &dopt);
  dopt.group_column = q ? q->group_by[p->role] : NULL;
  dopt.filter = p->filter;
  dopt.params = &p->params;
  if ((rc = cr_dataset_load(&p->data, p->data_path, p->t, p->role, &dopt, err)) != 0) {
    json_t *ev = json_object();
    json_object_set_new(ev, "file", cr__jtext(p->data_path));
    json_object_set_new(ev, "reason", cr__jtext(cr_error_message(err, rc)));
    (void)cr__trail_event(&p->trail, "data_load_failed", ev, NULL);
    return rc == CR_EIO ? CR_EDATA : rc;
  }
  cr_error ae;
  if (cr__trail_event(&p->trail, "data_loaded", data_fields(p, p->data, q ? q->name : NULL), &ae) !=
      0)
    return cr_error_set(err, CR_EINTERNAL, "cannot write the audit log: %s", ae.msg);
  if (p->ev.on_data)
    p->ev.on_data(p->ev.ctx, p->data);
  return 0;
}

/* serve: the own set for a query. Queries that neither group nor filter
 * this side use the set loaded at start; the others load the file again
 * with their group column (every such load is a data access of its own). */
int cr__party_load(void *ctx, const cr_query *q, const cr_session_result *res,
                   const cr_dataset **out, char *msg, size_t cap) {
  cr_party *p = ctx;
  if (q->kind == CR_QUERY_MEMBERS && (q->results_to & CR_ROLE_BIT(p->role))) {
    snprintf(msg, cap,
             "query \"%s\" returns the %s's matched rows; the %s must run it "
             "(`cleanroom run --out FILE`), not serve it",
             q->name, cr_role_name(p->role), cr_role_name(p->role));
    return CR_EREFUSED;
  }
  cr_error err;
  cr_error_clear(&err);
  cr_params params = {0};
  cr_filter *filter = NULL;
  /* Both nodes check the parameters against their declared types. */
  int rc = cr_params_from_pairs(&params, (const char *const *)res->param_names,
                                (const char *const *)res->param_values, res->nparams, q->params,
                                q->nparams, &err);
  if (rc) {
    snprintf(msg, cap, "%s", cr_error_message(&err, rc));
    return CR_EREFUSED;
  }
  if (q->group_by[p->role] == NULL && q->where[p->role] == NULL) {
    cr_params_free(&params);
    *out = p->data;
    return 0;
  }
  if (q->where[p->role] != NULL && (rc = cr_filter_parse(&filter, q->where[p->role], q->params,
                                                         q->nparams, q->name, &err)) != 0) {
    snprintf(msg, cap, "%s", cr_error_message(&err, rc));
    cr_params_free(&params);
    return rc;
  }
  cr_dataset_options opt;
  cr__party_load_options(p, &opt);
  opt.group_column = q->group_by[p->role];
  opt.filter = filter;
  opt.params = &params;
  cr_dataset *d = NULL;
  rc = cr_dataset_load(&d, p->data_path, p->t, p->role, &opt, &err);
  cr_filter_free(filter);
  cr_params_free(&params);
  if (rc) {
    snprintf(msg, cap, "%s", cr_error_message(&err, rc));
    json_t *o = json_object();
    json_object_set_new(o, "file", cr__jtext(p->data_path));
    json_object_set_new(o, "query", cr__jtext(q->name));
    json_object_set_new(o, "reason", cr__jtext(msg));
    (void)cr__trail_event(&p->trail, "data_load_failed", o, &err);
    return rc;
  }
  if ((rc = cr__trail_event(&p->trail, "data_loaded", data_fields(p, d, q->name), &err)) != 0) {
    snprintf(msg, cap, "cannot record the data access in the audit log: %s", err.msg);
    cr_dataset_free(d);
    return rc;
  }
  *out = d;
  return 0;
}

void cr__party_unload(void *ctx, const cr_dataset *d) {
  cr_party *p = ctx;
  if (d != p->data)
    cr_dataset_free((cr_dataset *)d);
}

/* Kept for the row filter of a members release. */
int cr__party_keep_row(void *ctx, const char *const *fields, const size_t *lens, size_t n);
int cr__party_keep_row(void *ctx, const char *const *fields, const size_t *lens, size_t n) {
  return keep_row(ctx, fields, lens, n);
}
