/*
 * Printing a session's result: one JSON object (--json) or a few lines for
 * people. Only what the session released is printed: a suppressed number is
 * shown as suppressed, never as a value. Shares of each side's set (overlap
 * rates) go with every released count. A noisy release says so, with its
 * mechanism, epsilon and 95% interval, and the privacy budget left.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "cleanroom/noise.h"
#include "cli/cli.h"

static double share(uint64_t part, uint64_t whole) {
  return whole ? (double)part / (double)whole : 0.0;
}

/* The released object exactly as the audit log recorded it. */
static json_t *released_json(const cr_party_session *s) {
  char *txt = cr_party_released_json(s);
  json_t *j = txt ? json_loads(txt, JSON_DECODE_ANY, NULL) : NULL;
  free(txt);
  return j ? j : json_null();
}

/* Reals rounded to 4 significant digits (shares are estimates), except
 * the privacy numbers under "noise", which keep every digit they have. The
 * document is printed with 15 digits, so a rounded value prints short. */
static void round_reals(json_t *j) {
  const char *key;
  json_t *v;
  size_t i;
  if (json_is_object(j)) {
    json_object_foreach(j, key, v) {
      if (strcmp(key, "noise") == 0)
        continue;
      if (json_is_real(v)) {
        char b[32];
        snprintf(b, sizeof b, "%.4g", json_real_value(v));
        json_real_set(v, strtod(b, NULL));
      } else {
        round_reals(v);
      }
    }
  } else if (json_is_array(j)) {
    for (i = 0; i < json_array_size(j); i++)
      round_reals(json_array_get(j, i));
  }
}

static double dp_value(uint64_t units, uint64_t unit) { return (double)units / (double)unit; }

/* "privacy_budget": {"epsilon": total, "spent": e, "left": e [, "delta",
 * "delta_spent", "delta_left"]}: what this node's audit log counts. */
static json_t *budget_json(const cr_party_budget *b) {
  json_t *o = json_object();
  uint64_t left = b->epsilon > b->epsilon_spent ? b->epsilon - b->epsilon_spent : 0;
  json_object_set_new(o, "epsilon", json_real(dp_value(b->epsilon, CR_DP_EPSILON_UNIT)));
  json_object_set_new(o, "spent", json_real(dp_value(b->epsilon_spent, CR_DP_EPSILON_UNIT)));
  json_object_set_new(o, "left", json_real(dp_value(left, CR_DP_EPSILON_UNIT)));
  if (b->delta) {
    uint64_t dleft = b->delta > b->delta_spent ? b->delta - b->delta_spent : 0;
    json_object_set_new(o, "delta", json_real(dp_value(b->delta, CR_DP_DELTA_UNIT)));
    json_object_set_new(o, "delta_spent", json_real(dp_value(b->delta_spent, CR_DP_DELTA_UNIT)));
    json_object_set_new(o, "delta_left", json_real(dp_value(dleft, CR_DP_DELTA_UNIT)));
  }
  return o;
}

void cr_cli_print_result_json(const cr_party_session *s, const cr_template *t,
                              const char *peer_addr, json_t *extra) {
  const cr_session_result *r = s->res;
  char sid[CR_SHA256_HEX_BYTES] = "", th[CR_SHA256_HEX_BYTES];
  if (r->have_session_id)
    cr_hex_encode(sid, r->session_id, CR_SESSION_ID_BYTES);
  /* t is NULL for a connection refused before it had a collaboration (a
   * node serving several: a stranger, BUSY, an unknown template). */
  if (t != NULL)
    cr_hex_encode(th, t->sha256, CR_SHA256_BYTES);
  json_t *o = json_object();
  json_object_set_new(o, "status", json_string(r->status == CR_SESSION_DONE ? "ok" : "failed"));
  json_object_set_new(o, "query", cr_cli_jtext(r->query));
  if (s->collaboration != NULL)
    json_object_set_new(o, "collaboration", cr_cli_jtext(s->collaboration));
  if (r->query[0] && t != NULL) {
    const cr_query *q = cr_template_query(t, r->query);
    if (q)
      json_object_set_new(o, "kind",
                          json_string(q->kind == CR_QUERY_MEMBERS ? "members" : "count"));
  }
  json_object_set_new(o, "role", json_string(cr_role_name(r->role)));
  json_object_set_new(o, "template_sha256", t != NULL ? json_string(th) : json_null());
  json_object_set_new(o, "session_id", r->have_session_id ? json_string(sid) : json_null());
  if (peer_addr)
    json_object_set_new(o, "peer", cr_cli_jtext(peer_addr));
  json_object_set_new(o, "own_set_size", json_integer((json_int_t)r->own_set_size));
  json_object_set_new(o, "peer_set_size", json_integer((json_int_t)r->peer_set_size));
  /* Protocol v3: the partner announces a bucket of its padded set. */
  json_object_set_new(o, "peer_set_size_bucket", json_boolean(r->peer_set_size_is_bucket));
  json_t *w = json_object();
  json_object_set_new(w, "bytes_sent", json_integer((json_int_t)r->bytes_sent));
  json_object_set_new(w, "bytes_received", json_integer((json_int_t)r->bytes_received));
  json_object_set_new(w, "digest_bytes", json_integer((json_int_t)r->digest_bytes));
  json_object_set_new(o, "wire", w);
  if (r->nparams) {
    json_t *p = json_object();
    for (size_t i = 0; i < r->nparams; i++)
      json_object_set_new(p, cr_cli_safe(r->param_names[i]), cr_cli_jtext(r->param_values[i]));
    json_object_set_new(o, "params", p);
  }
  round_reals(o);
  if (r->status == CR_SESSION_DONE) {
    json_t *rel = released_json(s);
    round_reals(rel);
    json_object_set_new(o, "released", rel);
  } else {
    json_object_set_new(o, "released", json_null());
    json_t *e = json_object();
    json_object_set_new(e, "code", json_string(cr_err_name(r->error)));
    if (r->wire_error)
      json_object_set_new(e, "wire", json_string(cr_wire_error_name(r->wire_error)));
    json_object_set_new(e, "from_peer", json_boolean(r->error_from_peer));
    json_object_set_new(e, "message", cr_cli_jtext(r->error_msg));
    json_object_set_new(e, "exit_code", json_integer(cr_cli_exit_code(r->error, r->wire_error)));
    json_object_set_new(o, "error", e);
  }
  if (s->budget.set)
    json_object_set_new(o, "privacy_budget", budget_json(&s->budget));
  if (extra != NULL) {
    json_object_update(o, extra);
    json_decref(extra);
  }
  char *text = json_dumps(o, JSON_COMPACT | JSON_ENSURE_ASCII | JSON_REAL_PRECISION(15));
  if (text) {
    printf("%s\n", text);
    free(text);
  }
  json_decref(o);
  fflush(stdout);
}

/* What a side's set is made of (docs/queries.md "Several match keys"). */
static const char *set_unit(const cr_session_result *r, int records) {
  if (r->nmatch_keys <= 1)
    return "distinct keys";
  return records ? "records" : "distinct key values";
}

/* Several keys: what the count counts, and the records matched per key. */
static void print_by_key(const cr_session_result *r) {
  printf("  counted:       %s records with a match on any key, each once\n",
         r->count_of == r->role ? "our" : "the partner's");
  if (r->nkeys < 2) {
    if (r->noisy)
      printf("  by key:        not released (a noisy query releases its count only)\n");
    return;
  }
  int withheld = 1;
  for (size_t k = 0; k < r->nkeys; k++)
    withheld = withheld && r->key_suppressed[k];
  if (withheld) {
    printf("  by key:        withheld (a combination of keys is below %llu)\n",
           (unsigned long long)r->min_count);
    return;
  }
  printf("  by key:       ");
  for (size_t k = 0; k < r->nkeys; k++) {
    if (r->key_suppressed[k])
      printf("%s %s suppressed", k ? "," : "", cr_cli_safe(r->key_names[k]));
    else
      printf("%s %s %llu", k ? "," : "", cr_cli_safe(r->key_names[k]),
             (unsigned long long)r->key_count[k]);
  }
  printf(" (a record matched on several keys is in each)\n");
}

void cr_cli_print_data_keys(const cr_dataset *d, const cr_template *t) {
  if (d->nkeys <= 1 || t == NULL)
    return;
  if (cr_dataset_width(d) > 1)
    fprintf(stderr, "  %zu records (%llu rows merged by a shared key value)", d->n,
            (unsigned long long)d->rows_merged);
  else
    fprintf(stderr, "  %zu distinct key values", d->n);
  for (size_t k = 0; k < d->nkeys && k < cr_template_nkeys(t); k++)
    if (d->key_missing[k] || d->key_invalid[k])
      fprintf(stderr, "; %s skipped: %llu empty, %llu invalid", cr_cli_safe(t->match_keys[k].name),
              (unsigned long long)d->key_missing[k], (unsigned long long)d->key_invalid[k]);
  if (d->values_unsent)
    fprintf(stderr, "; %llu values superseded in merged records",
            (unsigned long long)d->values_unsent);
  fprintf(stderr, "\n");
}

/* "discrete Laplace, epsilon 0.5" / "discrete Gaussian, sigma 2, epsilon
 * 1.5, delta 1e-09" */
static void noise_words(char *out, size_t cap, const cr_noise *n) {
  char e[32], sg[32];
  cr_dp_decimal(e, sizeof e, n->epsilon, CR_DP_EPSILON_UNIT);
  if (n->mechanism == CR_NOISE_DISCRETE_GAUSSIAN)
    snprintf(out, cap, "discrete Gaussian, sigma %s, epsilon %s, delta %g",
             cr_dp_decimal(sg, sizeof sg, n->sigma, CR_DP_SIGMA_UNIT), e,
             (double)n->delta / (double)CR_DP_DELTA_UNIT);
  else
    snprintf(out, cap, "discrete Laplace, epsilon %s", e);
}

static void print_budget_human(const cr_party_budget *b) {
  char spent[32], total[32], left[32];
  uint64_t l = b->epsilon > b->epsilon_spent ? b->epsilon - b->epsilon_spent : 0;
  printf("  privacy budget: epsilon %s of %s spent, %s left",
         cr_dp_decimal(spent, sizeof spent, b->epsilon_spent, CR_DP_EPSILON_UNIT),
         cr_dp_decimal(total, sizeof total, b->epsilon, CR_DP_EPSILON_UNIT),
         cr_dp_decimal(left, sizeof left, l, CR_DP_EPSILON_UNIT));
  if (b->delta)
    printf("; delta %g of %g spent", (double)b->delta_spent / (double)CR_DP_DELTA_UNIT,
           (double)b->delta / (double)CR_DP_DELTA_UNIT);
  printf(" (this node's audit log)\n");
}

void cr_cli_print_result_human(const cr_party_session *s, const char *peer_addr) {
  const cr_session_result *r = s->res;
  char sid[CR_SHA256_HEX_BYTES] = "";
  if (r->status != CR_SESSION_DONE)
    return; /* failures are reported on stderr */
  if (r->have_session_id)
    cr_hex_encode(sid, r->session_id, CR_SESSION_ID_BYTES);
  printf("query %s: %s, session %s%s%s\n", cr_cli_safe(r->query), cr_role_name(r->role), sid,
         peer_addr ? ", partner " : "", peer_addr ? peer_addr : "");
  for (size_t i = 0; i < r->nparams; i++)
    printf("  parameter:     %s = %s\n", cr_cli_safe(r->param_names[i]),
           cr_cli_safe(r->param_values[i]));
  printf("  our set:       %llu %s%s\n", (unsigned long long)r->own_set_size,
         set_unit(r, r->own_records),
         r->own_records ? " (rows that share a key value are one record)" : "");
  if (r->peer_set_size_is_bucket)
    printf("  partner's set: at most %llu %s (a size bucket, not the exact size)\n",
           (unsigned long long)r->peer_set_size, set_unit(r, r->peer_records));
  else
    printf("  partner's set: %llu %s\n", (unsigned long long)r->peer_set_size,
           set_unit(r, r->peer_records));
  if (!r->receives) {
    printf("  released:      nothing to this side (the template sends this query's result "
           "to the partner only)\n");
  } else if (r->grouped) {
    if (r->noisy) {
      char nw[160];
      noise_words(nw, sizeof nw, &r->noise);
      printf("  noise:         every cell is noisy (%s): the true overlap is within +-%llu of "
             "it with 95%% probability\n",
             nw, (unsigned long long)cr_noise_interval(&r->noise, 0.95));
    }
    printf("  overlap per group (each released only if %s>= %llu):\n",
           r->noisy ? "its noisy value " : "", (unsigned long long)r->min_count);
    printf("    %-20s %-20s %10s %9s %9s\n", "provider group", "consumer group", "overlap",
           "of prov.", "of cons.");
    for (size_t i = 0; i < r->ncells; i++) {
      const cr_session_cell *c = &r->cells[i];
      size_t a = c->label[CR_ROLE_PROVIDER], b = c->label[CR_ROLE_CONSUMER];
      const char *la =
          r->labels[CR_ROLE_PROVIDER][a][0] ? cr_cli_safe(r->labels[CR_ROLE_PROVIDER][a]) : "(all)";
      const char *lb =
          r->labels[CR_ROLE_CONSUMER][b][0] ? cr_cli_safe(r->labels[CR_ROLE_CONSUMER][b]) : "(all)";
      if (c->suppressed)
        printf("    %-20s %-20s %10s\n", la, lb, "suppressed");
      else
        printf("    %-20s %-20s %10llu %8.1f%% %8.1f%%\n", la, lb, (unsigned long long)c->count,
               100.0 * share(c->count, r->label_sizes[CR_ROLE_PROVIDER][a]),
               100.0 * share(c->count, r->label_sizes[CR_ROLE_CONSUMER][b]));
    }
  } else if (r->suppressed) {
    printf("  overlap:       suppressed (%s than %llu, the query's min_count)\n",
           r->noisy ? "its noisy value is less" : "fewer", (unsigned long long)r->min_count);
  } else {
    /* Against the partner's bucket, the share is a lower bound. */
    printf("  overlap:       %llu (%.1f%% of our set, %s%.1f%% of the partner's)\n",
           (unsigned long long)r->count, 100.0 * share(r->count, r->own_set_size),
           r->peer_set_size_is_bucket ? "at least " : "",
           100.0 * share(r->count, r->peer_set_size));
    if (r->nmatch_keys > 1)
      print_by_key(r);
    if (s->rows_written && s->rows_path != NULL)
      printf("  matched rows:  %llu written to %s\n", (unsigned long long)s->rows, s->rows_path);
    if (r->noisy) {
      char nw[160];
      noise_words(nw, sizeof nw, &r->noise);
      printf("  noise:         the overlap is noisy (%s): the true overlap is within +-%llu of "
             "%llu with 95%% probability\n",
             nw, (unsigned long long)cr_noise_interval(&r->noise, 0.95),
             (unsigned long long)r->count);
    }
  }
  if (s->budget.set)
    print_budget_human(&s->budget);
  fflush(stdout);
}
