/*
 * `cleanroom data check`: the data as serve or run would load it for a
 * query, without the partner. The same source, filter, parameters,
 * group_by and normalization (cr_dataset_load, as a dry run), the same
 * checks against the template's limits (cr_session_check_local), and the
 * size bucket Hello would announce. Nothing goes on the network.
 *
 * Audit: the design records every data access (docs/audit.md), and a check
 * reads the whole source, so it is recorded as `data_checked` (source,
 * hash, counts, verdict) with a signed checkpoint. It is not a session: no
 * node_started, no session line, nothing counted against a query's runs.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "party/party_internal.h"

#define CHECK_DEFAULT_SAMPLES 5

void cr_party_check_free(cr_party_data_check *c) {
  if (c == NULL)
    return;
  cr_dataset_free(c->data);
  memset(c, 0, sizeof *c);
}

static void record(cr_party *p, const cr_party_data_check *c, const char *query, int rc,
                   const char *why) {
  json_t *o;
  if (c != NULL && c->data != NULL) {
    o = cr__trail_data_fields(c->data, p->t, query);
    json_object_set_new(o, "source", cr__jtext(cr_source_kind_name(c->data->source_kind)));
    if (c->data->data_query != NULL)
      json_object_set_new(o, "data_query", cr__jtext(c->data->data_query));
    json_object_set_new(o, "rows_filtered", json_integer((json_int_t)c->data->rows_filtered));
    json_object_set_new(o, "verdict", cr__jtext(c->verdict ? cr_err_name(c->verdict) : "ok"));
    if (c->verdict)
      json_object_set_new(o, "reason", cr__jtext(c->verdict_msg));
  } else {
    o = json_object();
    json_object_set_new(o, "file", cr__jtext(p->data_path));
    if (query)
      json_object_set_new(o, "query", cr__jtext(query));
    json_object_set_new(o, "verdict", cr__jtext(cr_err_name(rc)));
    json_object_set_new(o, "reason", cr__jtext(why));
  }
  cr_error e;
  if (cr__trail_event(&p->trail, "data_checked", o, &e) == 0)
    (void)cr__trail_checkpoint(&p->trail, &e);
}

int cr_party_check_data(cr_party *p, const cr_party_check_config *cfg, cr_party_data_check *out,
                        cr_error *err) {
  int rc;
  cr_filter *filter = NULL;
  cr_params params = {0};
  if (out != NULL)
    memset(out, 0, sizeof *out);
  if (p == NULL || cfg == NULL || out == NULL || cfg->data == NULL || p->mode != CR_PARTY_CHECK)
    return cr_error_set(err, CR_EINVAL, "party: a check needs a party opened to check, and data");
  cr_source_options so = {cfg->data_query, cfg->delimiter};
  if ((rc = cr_source_validate(cfg->data, &so, err)) != 0 ||
      (rc = cr__party_set_source(p, cfg->data, cfg->data_query, cfg->delimiter, err)) != 0)
    return rc;
  p->max_reject_ratio = cfg->max_reject_ratio;

  const cr_query *q = NULL;
  if (cfg->query != NULL) {
    q = cr_template_query(p->t, cfg->query);
    if (q == NULL) {
      char names[256] = "";
      for (size_t i = 0; i < p->t->nqueries; i++) {
        size_t len = strlen(names);
        snprintf(names + len, sizeof names - len, "%s%s", i ? ", " : "", p->t->queries[i].name);
      }
      return cr_error_set(err, CR_EUSAGE,
                          "query \"%s\" is not in the template; its queries are: %s", cfg->query,
                          names);
    }
    /* Parameters as the runner types them; serve would get the same from
     * the partner's Hello. Only needed when this side's filter uses them. */
    if (cfg->nparams > 0 || q->where[p->role] != NULL) {
      rc = cr_params_from_args(&params, cfg->params, cfg->nparams, q->params, q->nparams, err);
      if (rc)
        return rc == CR_ENOMEM ? rc : CR_EUSAGE;
    }
    if (q->where[p->role] != NULL && (rc = cr_filter_parse_where(&filter, q, p->role, err)) != 0) {
      cr_params_free(&params);
      return rc == CR_ENOMEM ? rc : CR_EUSAGE;
    }
  }
  out->query = q;
  out->runs_query = q != NULL && (q->run_by & CR_ROLE_BIT(p->role)) != 0;

  cr_dataset_options opt;
  cr__party_load_options(p, &opt);
  opt.group_column = q ? q->group_by[p->role] : NULL;
  opt.filter = filter;
  opt.params = &params;
  opt.dry_run = 1;
  opt.samples = cfg->samples ? cfg->samples : CHECK_DEFAULT_SAMPLES;
  rc = cr_dataset_load(&out->data, p->data_path, p->t, p->role, &opt, err);
  cr_filter_free(filter);
  cr_params_free(&params);
  if (rc) {
    record(p, NULL, cfg->query, rc, cr_error_message(err, rc));
    return rc; /* CR_EIO: the work directory is full (exit 7), not the data */
  }

  /* What serve and run would say: the rows first, then the template. */
  const cr_dataset *d = out->data;
  if (d->refusal_rc) {
    out->verdict = d->refusal_rc;
    snprintf(out->verdict_msg, sizeof out->verdict_msg, "%s", d->refusal);
  } else {
    cr_session_config sc;
    cr_error le;
    memset(&sc, 0, sizeof sc);
    cr_error_clear(&le);
    sc.tmpl = p->t;
    sc.role = p->role;
    sc.data = d;
    if ((rc = cr_session_check_local(&sc, (int64_t)time(NULL), &le)) != 0) {
      out->verdict = rc;
      snprintf(out->verdict_msg, sizeof out->verdict_msg, "%s", cr_error_message(&le, rc));
    }
  }
  out->announced = cr_template_bucket(p->t, d->n);
  record(p, out, cfg->query, 0, NULL);
  return 0;
}
