/* template hash, check, pin. */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>

#include "cleanroom/dataset.h"
#include "cleanroom/noise.h"
#include "cleanroom/party.h"
#include "cli/cli.h"

/* ---- template ----------------------------------------------------------- */

static void print_template_summary(const cr_template *t) {
  char hex[CR_SHA256_HEX_BYTES];
  cr_hex_encode(hex, t->sha256, CR_SHA256_BYTES);
  printf("template: %s\n", t->name);
  printf("  sha256:    %s\n", hex);
  printf("  suite:     %s\n", t->suite);
  for (int r = 0; r < CR_ROLE_COUNT; r++) {
    cr_hex_encode(hex, t->parties[r].cert_sha256, CR_SHA256_BYTES);
    printf("  %-9s  %s\n             cert %s%s%s\n", cr_role_name((cr_role)r), t->parties[r].org,
           hex, t->parties[r].address ? ", address " : "",
           t->parties[r].address ? t->parties[r].address : "");
  }
  for (size_t k = 0; k < cr_template_nkeys(t); k++) {
    const cr_match_key *mk = &t->match_keys[k];
    printf("  match key: %s (columns:", mk->name);
    if (mk->columns != NULL) {
      for (size_t i = 0; i < mk->ncolumns; i++)
        printf(" %s", mk->columns[i]);
    } else {
      /* Per party: each side's own names for the same key. */
      for (int r = 0; r < CR_ROLE_COUNT; r++) {
        const char *const *cols = cr_match_key_columns(mk, (cr_role)r);
        printf("%s %s", r ? ";" : "", cr_role_name((cr_role)r));
        for (size_t i = 0; i < mk->ncolumns; i++)
          printf("%s%s", i ? ", " : " ", cols[i]);
      }
    }
    printf("; normalize:");
    if (mk->normalize != NULL) {
      for (size_t i = 0; i < mk->nnormalize; i++)
        printf(" %s", cr_normalizer_name(mk->normalize[i]));
    } else {
      /* Per party: each side's chain to the same value. */
      for (int r = 0; r < CR_ROLE_COUNT; r++) {
        size_t n = 0;
        const cr_normalizer *chain = cr_match_key_normalizers(mk, (cr_role)r, &n);
        printf("%s %s", r ? ";" : "", cr_role_name((cr_role)r));
        for (size_t i = 0; i < n; i++)
          printf("%s%s", i ? ", " : " ", cr_normalizer_name(chain[i]));
      }
    }
    if (mk->default_country_code)
      printf("; default country code %s", mk->default_country_code);
    printf(")\n");
  }
  if (cr_template_nkeys(t) > 1)
    printf("  match:     any key; counts the %s's records (rows sharing a key value are one "
           "record)\n",
           cr_role_name(t->count_of));
  printf("  queries:\n");
  for (size_t i = 0; i < t->nqueries; i++) {
    const cr_query *q = &t->queries[i];
    printf("    %s: %s, run by", q->name, q->kind == CR_QUERY_COUNT ? "count" : "members");
    for (int r = 0; r < CR_ROLE_COUNT; r++)
      if (q->run_by & CR_ROLE_BIT(r))
        printf(" %s", cr_role_name((cr_role)r));
    printf(", result to");
    for (int r = 0; r < CR_ROLE_COUNT; r++)
      if (q->results_to & CR_ROLE_BIT(r))
        printf(" %s", cr_role_name((cr_role)r));
    printf(", released only if >= %llu\n", (unsigned long long)q->min_count);
    /* What each side's node does to its own rows: the partner reviews it. */
    for (int r = 0; r < CR_ROLE_COUNT; r++)
      if (q->group_by[r] != NULL)
        printf("      group_by %s: %s\n", cr_role_name((cr_role)r), q->group_by[r]);
    for (int r = 0; r < CR_ROLE_COUNT; r++)
      if (q->where[r] != NULL)
        printf("      where %s: %s\n", cr_role_name((cr_role)r), q->where[r]);
    if (q->nparams > 0) {
      printf("      params:");
      for (size_t k = 0; k < q->nparams; k++)
        printf("%s %s (%s)", k ? "," : "", q->params[k].name,
               cr_param_type_name(q->params[k].type));
      printf(" (given by the runner)\n");
    }
    if (q->kind == CR_QUERY_MEMBERS) {
      printf("      columns written:");
      if (q->ncolumns == 0)
        printf(" all of the owner's");
      for (size_t k = 0; k < q->ncolumns; k++)
        printf("%s %s", k ? "," : "", q->columns[k]);
      printf("\n");
    }
    if (q->noise.mechanism != CR_NOISE_NONE) {
      /* The expected error, from the mechanism's probability mass. */
      const cr_noise *n = &q->noise;
      char e[32], sg[32];
      cr_dp_decimal(e, sizeof e, n->epsilon, CR_DP_EPSILON_UNIT);
      if (n->mechanism == CR_NOISE_DISCRETE_GAUSSIAN)
        printf("      noise: discrete Gaussian, sigma %s%s, spends epsilon %s%s and delta %g a run",
               cr_dp_decimal(sg, sizeof sg, n->sigma, CR_DP_SIGMA_UNIT),
               n->sigma_given ? "" : " (from epsilon and delta)", e,
               n->sigma_given ? " (from sigma and delta)" : "",
               (double)n->delta / (double)CR_DP_DELTA_UNIT);
      else
        printf("      noise: discrete Laplace, epsilon %s (scale %.6g), spends epsilon %s a run", e,
               cr_noise_scale(n), e);
      printf("; +-%llu at 95%% (each released number, before min_count)\n",
             (unsigned long long)cr_noise_interval(n, 0.95));
    }
  }
  if (t->limits.privacy_budget.epsilon) {
    const cr_privacy_budget *b = &t->limits.privacy_budget;
    char e[32];
    printf("  privacy budget: epsilon %s",
           cr_dp_decimal(e, sizeof e, b->epsilon, CR_DP_EPSILON_UNIT));
    if (b->delta)
      printf(", delta %g", (double)b->delta / (double)CR_DP_DELTA_UNIT);
    printf(" for all runs together (each node counts its own audit log)%s\n",
           b->allow_members ? "; members queries allowed" : "");
  }
  if (t->limits.min_set_size || t->limits.max_set_size || t->limits.not_after ||
      t->limits.max_runs_per_query) {
    printf("  limits:");
    if (t->limits.min_set_size)
      printf(" min_set_size %llu", (unsigned long long)t->limits.min_set_size);
    if (t->limits.max_set_size)
      printf(" max_set_size %llu", (unsigned long long)t->limits.max_set_size);
    if (t->limits.max_runs_per_query)
      printf(" max_runs_per_query %llu", (unsigned long long)t->limits.max_runs_per_query);
    if (t->limits.not_after) {
      char buf[CR_TEMPLATE_TIME_BYTES];
      cr_template_time_iso(t->limits.not_after, buf);
      printf(" not_after %s", buf);
    }
    printf("\n");
  }
}

/*
 * The filters of every query, both parties' (the loader takes them as text:
 * each node parses only its own side's, so a filter the partner cannot
 * parse would otherwise show only when the partner's node starts). Prints
 * the errors as the loader's are printed, each indented (a message has the
 * filter and a caret on lines of their own); returns how many.
 */
/* An error message as a JSON string: its lines kept (a filter's error shows
 * the filter and a caret), made safe only when it is not UTF-8. */
static json_t *message_json(const char *m) {
  json_t *j = json_string(m);
  return j ? j : cr_cli_jtext(m);
}

static size_t check_filters(const char *path, const cr_template *t, json_t *jerrors) {
  size_t nerr = 0;
  for (int pass = 0; pass < 2; pass++) {
    size_t n = 0;
    for (size_t i = 0; i < t->nqueries; i++) {
      for (int r = 0; r < CR_ROLE_COUNT; r++) {
        cr_filter *f = NULL;
        cr_error err;
        cr_error_clear(&err);
        if (t->queries[i].where[r] == NULL)
          continue;
        int rc = cr_filter_parse_where(&f, &t->queries[i], (cr_role)r, &err);
        cr_filter_free(f);
        if (rc == 0)
          continue;
        n++;
        if (pass == 0)
          continue;
        if (jerrors != NULL) {
          json_array_append_new(jerrors, message_json(cr_error_message(&err, rc)));
          continue;
        }
        if (n == 1)
          fprintf(stderr, "%s: %zu error%s:\n", path, nerr, nerr == 1 ? "" : "s");
        fputs("  ", stderr);
        for (const char *m = cr_error_message(&err, rc); *m != '\0'; m++) {
          fputc(*m, stderr);
          if (*m == '\n')
            fputs("  ", stderr);
        }
        fputc('\n', stderr);
      }
    }
    if ((nerr = n) == 0)
      break;
  }
  return nerr;
}

/* ---- template check --json ------------------------------------------------ */

static json_t *roles_json(unsigned mask) {
  json_t *a = json_array();
  for (int r = 0; r < CR_ROLE_COUNT; r++)
    if (mask & CR_ROLE_BIT(r))
      json_array_append_new(a, json_string(cr_role_name((cr_role)r)));
  return a;
}

static json_t *strv_json(char *const *v, size_t n) {
  json_t *a = json_array();
  for (size_t i = 0; i < n; i++)
    json_array_append_new(a, cr_cli_jtext(v[i]));
  return a;
}

/* A per-role map of texts (group_by, where), or NULL when neither is set. */
static json_t *role_texts_json(char *const v[CR_ROLE_COUNT]) {
  json_t *o = NULL;
  for (int r = 0; r < CR_ROLE_COUNT; r++) {
    if (v[r] == NULL)
      continue;
    if (o == NULL)
      o = json_object();
    json_object_set_new(o, cr_role_name((cr_role)r), cr_cli_jtext(v[r]));
  }
  return o;
}

/* The contract as one object: what the text summary shows. */
static json_t *template_json(const cr_template *t) {
  char hex[CR_SHA256_HEX_BYTES];
  json_t *o = json_object();
  cr_hex_encode(hex, t->sha256, CR_SHA256_BYTES);
  json_object_set_new(o, "sha256", json_string(hex));
  json_object_set_new(o, "name", cr_cli_jtext(t->name));
  json_object_set_new(o, "suite", cr_cli_jtext(t->suite));
  json_t *parties = json_object();
  for (int r = 0; r < CR_ROLE_COUNT; r++) {
    json_t *p = json_object();
    json_object_set_new(p, "org", cr_cli_jtext(t->parties[r].org));
    cr_hex_encode(hex, t->parties[r].cert_sha256, CR_SHA256_BYTES);
    json_object_set_new(p, "cert_sha256", json_string(hex));
    json_object_set_new(p, "address",
                        t->parties[r].address ? cr_cli_jtext(t->parties[r].address) : json_null());
    json_object_set_new(parties, cr_role_name((cr_role)r), p);
  }
  json_object_set_new(o, "parties", parties);
  json_t *keys = json_array();
  for (size_t k = 0; k < cr_template_nkeys(t); k++) {
    const cr_match_key *mk = &t->match_keys[k];
    json_t *x = json_object();
    json_object_set_new(x, "name", cr_cli_jtext(mk->name));
    json_t *cols = json_object();
    for (int r = 0; r < CR_ROLE_COUNT; r++)
      json_object_set_new(
          cols, cr_role_name((cr_role)r),
          strv_json((char *const *)cr_match_key_columns(mk, (cr_role)r), mk->ncolumns));
    json_object_set_new(x, "columns", cols);
    json_t *norm = json_object();
    for (int r = 0; r < CR_ROLE_COUNT; r++) {
      size_t n = 0;
      const cr_normalizer *chain = cr_match_key_normalizers(mk, (cr_role)r, &n);
      json_t *a = json_array();
      for (size_t i = 0; i < n; i++)
        json_array_append_new(a, json_string(cr_normalizer_name(chain[i])));
      json_object_set_new(norm, cr_role_name((cr_role)r), a);
    }
    json_object_set_new(x, "normalize", norm);
    if (mk->default_country_code)
      json_object_set_new(x, "default_country_code", cr_cli_jtext(mk->default_country_code));
    json_array_append_new(keys, x);
  }
  json_object_set_new(o, "match_keys", keys);
  if (cr_template_nkeys(t) > 1)
    json_object_set_new(o, "count_of", json_string(cr_role_name(t->count_of)));
  json_t *qs = json_array();
  for (size_t i = 0; i < t->nqueries; i++) {
    const cr_query *q = &t->queries[i];
    json_t *x = json_object();
    json_object_set_new(x, "name", cr_cli_jtext(q->name));
    json_object_set_new(x, "kind", json_string(q->kind == CR_QUERY_COUNT ? "count" : "members"));
    json_object_set_new(x, "run_by", roles_json(q->run_by));
    json_object_set_new(x, "results_to", roles_json(q->results_to));
    json_object_set_new(x, "min_count", json_integer((json_int_t)q->min_count));
    json_t *g = role_texts_json(q->group_by), *w = role_texts_json(q->where);
    if (g != NULL)
      json_object_set_new(x, "group_by", g);
    if (w != NULL)
      json_object_set_new(x, "where", w);
    if (q->nparams > 0) {
      json_t *p = json_object();
      for (size_t k = 0; k < q->nparams; k++)
        json_object_set_new(p, q->params[k].name,
                            json_string(cr_param_type_name(q->params[k].type)));
      json_object_set_new(x, "params", p);
    }
    if (q->kind == CR_QUERY_MEMBERS)
      json_object_set_new(x, "columns", strv_json(q->columns, q->ncolumns));
    if (q->noise.mechanism != CR_NOISE_NONE)
      json_object_set_new(x, "noise", json_string(cr_noise_mechanism_name(q->noise.mechanism)));
    json_array_append_new(qs, x);
  }
  json_object_set_new(o, "queries", qs);
  json_t *l = json_object();
  const cr_limits *lim = &t->limits;
  if (lim->min_set_size)
    json_object_set_new(l, "min_set_size", json_integer((json_int_t)lim->min_set_size));
  if (lim->max_set_size)
    json_object_set_new(l, "max_set_size", json_integer((json_int_t)lim->max_set_size));
  if (lim->max_runs_per_query)
    json_object_set_new(l, "max_runs_per_query", json_integer((json_int_t)lim->max_runs_per_query));
  if (lim->not_after) {
    char na[CR_TEMPLATE_TIME_BYTES];
    cr_template_time_iso(lim->not_after, na);
    json_object_set_new(l, "not_after", json_string(na));
  }
  json_object_set_new(o, "limits", l);
  json_object_set_new(o, "expired",
                      json_boolean(lim->not_after && (int64_t)time(NULL) > lim->not_after));
  json_object_set_new(o, "require_signatures", json_boolean(t->require_signatures));
  return o;
}

/* Accepts a fingerprint (64 hex, with or without colons) or a certificate
 * file. */
static int fingerprint_arg(const char *arg, char hex[CR_SHA256_HEX_BYTES], cr_error *err) {
  uint8_t fp[CR_SHA256_BYTES];
  int rc = cr_fingerprint_arg(arg, fp, err);
  if (rc)
    return rc;
  cr_hex_encode(hex, fp, sizeof fp);
  return 0;
}

/* A template file that cannot be read is a usage or configuration problem
 * (exit 2: a wrong path), not a storage one (7 is for files the node must
 * write). */
static int template_exit(int rc) { return rc == CR_EIO ? EXIT_USAGE : cr_cli_exit_code(rc, 0); }

/* template pin: writes a copy of a template with the parties' fingerprints
 * (and optionally the provider's address) filled in. */
static int cmd_template_pin(int argc, char **argv) {
  static const struct option opts[] = {
      {"provider", required_argument, NULL, 'p'}, {"consumer", required_argument, NULL, 'c'},
      {"address", required_argument, NULL, 'a'},  {"out", required_argument, NULL, 'o'},
      {"help", no_argument, NULL, 'h'},           {NULL, 0, NULL, 0}};
  const char *prov = NULL, *cons = NULL, *addr = NULL, *out = NULL;
  int c;
  optind = 1;
  while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
    switch (c) {
    case 'p':
      prov = optarg;
      break;
    case 'c':
      cons = optarg;
      break;
    case 'a':
      addr = optarg;
      break;
    case 'o':
      out = optarg;
      break;
    case 'h':
      printf("Usage: cleanroom template pin FILE [--provider CERT|HEX] [--consumer CERT|HEX]\n"
             "                                [--address HOST:PORT] --out FILE\n\n"
             "Writes a copy of the template with the parties' certificate fingerprints\n"
             "(parties.<role>.cert_sha256) and the provider's address filled in, then\n"
             "validates it. Each fingerprint may be given as a certificate file or as 64\n"
             "hex digits (the output of `cleanroom keygen` or `cleanroom fingerprint`).\n\n"
             "Example:\n"
             "  cleanroom template pin draft.json --provider acme.crt \\\n"
             "      --consumer 3f2a...c9 --address acme.example:7443 --out template.json\n");
      return EXIT_OK;
    default:
      return EXIT_USAGE;
    }
  }
  if (optind >= argc || out == NULL || (prov == NULL && cons == NULL && addr == NULL)) {
    cr_cli_errorf("template pin", "needs FILE, --out FILE and at least one of --provider, "
                                  "--consumer, --address; see `cleanroom template pin --help`");
    return EXIT_USAGE;
  }
  const char *in = argv[optind];
  cr_error err;
  cr_error_clear(&err);
  char hp[CR_SHA256_HEX_BYTES], hc[CR_SHA256_HEX_BYTES];
  int rc;
  if ((prov && (rc = fingerprint_arg(prov, hp, &err)) != 0) ||
      (cons && (rc = fingerprint_arg(cons, hc, &err)) != 0)) {
    cr_cli_errorf("template pin", "%s", cr_error_message(&err, rc));
    return EXIT_USAGE;
  }
  json_error_t jerr;
  char *raw = NULL;
  size_t rawlen = 0;
  if ((rc = cr_read_file(in, CR_TEMPLATE_MAX_BYTES, &raw, &rawlen, &err)) != 0) {
    cr_cli_errorf("template pin", "%s", cr_error_message(&err, rc));
    return EXIT_USAGE;
  }
  /* A byte order mark (Notepad's) is not JSON; the loader skips it too. */
  size_t skip = rawlen >= 3 && memcmp(raw, "\xef\xbb\xbf", 3) == 0 ? 3 : 0;
  json_t *root = json_loadb(raw + skip, rawlen - skip, JSON_REJECT_DUPLICATES, &jerr);
  free(raw);
  if (root == NULL) {
    cr_cli_errorf("template pin", "%s:%d:%d: %s", in, jerr.line, jerr.column, jerr.text);
    return EXIT_USAGE;
  }
  json_t *parties = json_object_get(root, "parties");
  json_t *p = parties ? json_object_get(parties, "provider") : NULL;
  json_t *cn = parties ? json_object_get(parties, "consumer") : NULL;
  if (!json_is_object(p) || !json_is_object(cn)) {
    cr_cli_errorf("template pin", "%s: $.parties.provider and $.parties.consumer must be objects",
                  in);
    json_decref(root);
    return EXIT_USAGE;
  }
  if (prov)
    json_object_set_new(p, "cert_sha256", json_string(hp));
  if (cons)
    json_object_set_new(cn, "cert_sha256", json_string(hc));
  if (addr)
    json_object_set_new(p, "address", json_string(addr));
  char *text = json_dumps(root, JSON_INDENT(2));
  json_decref(root);
  if (text == NULL) {
    cr_cli_errorf("template pin", "out of memory");
    return EXIT_INTERNAL;
  }
  size_t len = strlen(text);
  char *nl = realloc(text, len + 2);
  if (nl == NULL) {
    free(text);
    cr_cli_errorf("template pin", "out of memory");
    return EXIT_INTERNAL;
  }
  text = nl;
  text[len++] = '\n';
  text[len] = '\0';
  /* Validated before it is written: a pin that makes the template invalid
   * (both parties with one fingerprint, say) leaves an existing --out as
   * it was. */
  cr_template *t = NULL;
  if ((rc = cr_template_parse(&t, text, len, out, &err)) != 0) {
    free(text);
    cr_cli_errorf("template pin", "%s would not validate, so it was not written: %s", out,
                  cr_error_message(&err, rc));
    return template_exit(rc);
  }
  rc = cr_file_write_atomic(out, text, len, 0644, &err);
  free(text);
  if (rc) {
    cr_template_free(t);
    cr_cli_errorf("template pin", "cannot write %s: %s", out, cr_error_message(&err, rc));
    return EXIT_STORAGE;
  }
  char hex[CR_SHA256_HEX_BYTES];
  cr_hex_encode(hex, t->sha256, CR_SHA256_BYTES);
  printf("%s\n", hex);
  fprintf(stderr, "wrote %s (template sha256 above); both partners must use this file\n", out);
  cr_template_free(t);
  return EXIT_OK;
}

static void print_sig_status(const cr_template *t, const char *sig_path,
                             const cr_template_sig_status *st) {
  printf("  signatures (%s)%s:\n", sig_path, t->require_signatures ? ", both required" : "");
  for (int r = 0; r < CR_ROLE_COUNT; r++) {
    const char *what = !st->present[r] ? "missing" : st->valid[r] ? "valid" : "INVALID";
    printf("    %-9s %s%s%s\n", cr_role_name((cr_role)r), what,
           st->present[r] && !st->valid[r] ? ": " : "",
           st->present[r] && !st->valid[r] ? st->why[r] : "");
  }
}

/* template sign FILE --identity DIR [--signatures F]
 * template verify FILE [--signatures F] */
static int cmd_template_sigs(const char *sub, int argc, char **argv) {
  static const struct option opts[] = {{"identity", required_argument, NULL, 'i'},
                                       {"signatures", required_argument, NULL, 's'},
                                       {"help", no_argument, NULL, 'h'},
                                       {NULL, 0, NULL, 0}};
  int sign = strcmp(sub, "sign") == 0, c;
  const char *identity = NULL, *sig_path = NULL;
  char cmd[32];
  snprintf(cmd, sizeof cmd, "template %s", sub);
  optind = 1;
  while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
    switch (c) {
    case 'i':
      identity = optarg;
      break;
    case 's':
      sig_path = optarg;
      break;
    case 'h':
      printf("Usage: cleanroom template sign FILE --identity DIR [--signatures SIGFILE]\n"
             "       cleanroom template verify FILE [--signatures SIGFILE]\n\n"
             "sign    adds this node's Ed25519 signature over the template's canonical hash\n"
             "        to SIGFILE (default FILE.sig), with its certificate; the identity must\n"
             "        be one of the template's parties.\n"
             "verify  checks every signature in SIGFILE against the certificates the\n"
             "        template pins; exits 0 only if both parties' signatures are valid.\n"
             "A template with \"require_signatures\": true is served or run only when both\n"
             "are present and valid.\n\n"
             "Example:\n"
             "  cleanroom template sign template.json --identity ./identity\n"
             "  cleanroom template verify template.json\n\n%s",
             CR_CLI_EXIT_CODES_HELP);
      return EXIT_OK;
    default:
      return EXIT_USAGE;
    }
  }
  if (optind >= argc || (sign && identity == NULL)) {
    cr_cli_errorf(cmd, "needs FILE%s; see `cleanroom template %s --help`",
                  sign ? " and --identity DIR" : "", sub);
    return EXIT_USAGE;
  }
  cr_error err;
  cr_error_clear(&err);
  cr_template *t = NULL;
  cr_identity *id = NULL;
  char *def_path = NULL;
  int rc, code = EXIT_OK;
  if ((rc = cr_template_load(&t, argv[optind], &err)) != 0) {
    cr_cli_errorf(cmd, "%s", cr_error_message(&err, rc));
    return template_exit(rc);
  }
  if (sig_path == NULL)
    sig_path = def_path = cr_template_sig_path(t);
  if (sign) {
    cr_role role;
    /* Signing a version the file's signatures are not for drops them: if
     * the partner signed that other version, the two copies differ. */
    cr_template_sig_status before;
    cr_error ignored;
    if (cr_template_verify_sigs(t, sig_path, &before, &ignored) != 0)
      memset(&before, 0, sizeof before);
    if ((rc = cr_identity_load(&id, identity, &err)) != 0 ||
        (rc = cr_template_sign(t, sig_path, id, &role, &err)) != 0) {
      cr_cli_errorf(cmd, "%s", cr_error_message(&err, rc));
      /* The identity is configuration; a signatures file that cannot be
       * written (the only CR_EIO of signing) is local storage. */
      code = id != NULL && rc == CR_EIO ? EXIT_STORAGE : EXIT_USAGE;
      goto out;
    }
    fprintf(stderr, "signed as the %s (%s); signatures are in %s\n", cr_role_name(role),
            t->parties[role].org, sig_path);
    cr_role other = cr_role_other(role);
    if (before.other_template && before.present[other]) {
      char hex[CR_SHA256_HEX_BYTES];
      cr_hex_encode(hex, t->sha256, CR_SHA256_BYTES);
      fprintf(stderr,
              "cleanroom template sign: warning: %s held the %s's signature for another "
              "version of the template (%s), not this one (%s); it was dropped. If the %s "
              "signed that version, your copies differ: compare `cleanroom template hash` "
              "with the partner before you send the file back\n",
              sig_path, cr_role_name(other), before.other_sha256, hex, cr_role_name(other));
    }
  }
  cr_template_sig_status st;
  if ((rc = cr_template_verify_sigs(t, sig_path, &st, &err)) != 0) {
    cr_cli_errorf(cmd, "%s", cr_error_message(&err, rc));
    code = template_exit(rc);
    goto out;
  }
  print_sig_status(t, sig_path, &st);
  if (!sign) {
    for (int r = 0; r < CR_ROLE_COUNT; r++)
      if (!st.valid[r])
        code = EXIT_REFUSED;
    if (code != EXIT_OK)
      cr_cli_errorf(cmd, "the template is not signed by both parties");
  }
out:
  free(def_path);
  cr_identity_free(id);
  cr_template_free(t);
  return code;
}

static void template_usage(FILE *f) {
  fprintf(f,
          "Usage: cleanroom template hash FILE [--json]\n"
          "       cleanroom template check FILE [--json]\n"
          "       cleanroom template pin FILE --provider CERT --consumer CERT --out FILE\n"
          "       cleanroom template sign FILE --identity DIR\n"
          "       cleanroom template verify FILE\n\n"
          "hash   prints the template's identity: the SHA-256 of its RFC 8785 canonical\n"
          "       form, so formatting and key order do not change it. Both partners\n"
          "       must see the same hash.\n"
          "check  validates the template and prints a summary of the contract; every\n"
          "       error names the JSON path, the value found and what is expected. An\n"
          "       expired template (limits.not_after in the past) is valid but warned\n"
          "       about: serve and run refuse it. Both parties' where filters are\n"
          "       parsed too. --json: one object on stdout, valid or not (\"valid\",\n"
          "       \"errors\", and for a valid one the contract and its signatures).\n"
          "pin    writes a copy with the parties' fingerprints filled in (see\n"
          "       `cleanroom template pin --help`).\n"
          "sign   adds this node's signature to FILE.sig; verify checks them (see\n"
          "       `cleanroom template sign --help`).\n\n"
          "Example:\n  cleanroom template check examples/overlap/template.json\n\n%s",
          CR_CLI_EXIT_CODES_HELP);
}

static int is_help(const char *a) {
  return a != NULL && (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0);
}

/* check: the template's expiry, in words (stderr), after the summary. */
static void warn_expiry(const cr_template *t) {
  if (t->limits.not_after == 0)
    return;
  char na[CR_TEMPLATE_TIME_BYTES];
  cr_template_time_iso(t->limits.not_after, na);
  int64_t now = (int64_t)time(NULL);
  if (now > t->limits.not_after)
    fprintf(stderr,
            "cleanroom template check: warning: the template expired on %s "
            "(limits.not_after): serve and run refuse it; agree a new template with the "
            "partner\n",
            na);
  else if (t->limits.not_after - now < 30 * 86400)
    fprintf(stderr,
            "cleanroom template check: warning: the template expires on %s "
            "(limits.not_after), in %lld day(s)\n",
            na, (long long)((t->limits.not_after - now) / 86400));
}

int cr_cli_template(int argc, char **argv) {
  const char *sub = argc >= 2 ? argv[1] : NULL;
  if (sub && (strcmp(sub, "sign") == 0 || strcmp(sub, "verify") == 0))
    return cmd_template_sigs(sub, argc - 1, argv + 1);
  if (sub && strcmp(sub, "pin") == 0)
    return cmd_template_pin(argc - 1, argv + 1);
  if (is_help(sub) || (sub && (strcmp(sub, "hash") == 0 || strcmp(sub, "check") == 0) &&
                       argc >= 3 && is_help(argv[2]))) {
    template_usage(stdout);
    return EXIT_OK;
  }
  if (sub == NULL || (strcmp(sub, "hash") != 0 && strcmp(sub, "check") != 0)) {
    if (sub != NULL)
      fprintf(stderr, "cleanroom template: unknown subcommand \"%s\"\n\n", cr_cli_safe(sub));
    template_usage(stderr);
    return EXIT_USAGE;
  }
  char cmd[32];
  snprintf(cmd, sizeof cmd, "template %s", sub);
  /* FILE and an optional --json, in either order. */
  const char *file = NULL;
  int json = 0, nfiles = 0;
  for (int i = 2; i < argc; i++) {
    if (strcmp(argv[i], "--json") == 0) {
      json = 1;
    } else if (argv[i][0] == '-' && argv[i][1] != '\0') {
      cr_cli_errorf(cmd, "unknown option \"%s\"; see `cleanroom template --help`",
                    cr_cli_safe(argv[i]));
      return EXIT_USAGE;
    } else {
      file = argv[i];
      nfiles++;
    }
  }
  if (nfiles != 1) {
    cr_cli_errorf(cmd, nfiles == 0 ? "needs FILE; see `cleanroom template --help`"
                                   : "takes one FILE; see `cleanroom template --help`");
    return EXIT_USAGE;
  }
  cr_template *t = NULL;
  cr_error err;
  cr_error_clear(&err);
  int rc;
  if (strcmp(sub, "check") == 0) {
    char **errors = NULL;
    size_t nerr = 0;
    rc = cr_template_check(file, &t, &errors, &nerr);
    json_t *jerrors = json ? json_array() : NULL;
    if (rc == 0 && check_filters(file, t, jerrors) > 0)
      rc = CR_ETEMPLATE;
    if (rc) {
      if (json) {
        /* One object on stdout, valid or not; the errors as the text lists them. */
        for (size_t i = 0; i < nerr; i++)
          json_array_append_new(jerrors, message_json(errors[i]));
        if (json_array_size(jerrors) == 0)
          json_array_append_new(jerrors, message_json(cr_strerror(rc)));
        size_t n = json_array_size(jerrors);
        json_t *o = json_object();
        json_object_set_new(o, "file", cr_cli_jtext(file));
        json_object_set_new(o, "valid", json_false());
        json_object_set_new(o, "errors", jerrors);
        cr_cli_json_print(o);
        cr_cli_errorf(cmd, "%s: %zu error%s (listed in \"errors\" on standard output)",
                      cr_cli_safe(file), n, n == 1 ? "" : "s");
      } else if (nerr == 0 && t == NULL) {
        cr_cli_errorf(cmd, "%s: %s", file, cr_strerror(rc));
      } else if (rc == CR_EIO) {
        cr_cli_errorf(cmd, "%s", errors[0]);
      } else if (nerr > 0) {
        fprintf(stderr, "%s: %zu error%s:\n", file, nerr, nerr == 1 ? "" : "s");
      }
      for (size_t i = 0; !json && rc != CR_EIO && i < nerr; i++)
        fprintf(stderr, "  %s\n", errors[i]);
      cr_template_errors_free(errors, nerr);
      cr_template_free(t);
      return template_exit(rc);
    }
    json_decref(jerrors);
  } else if ((rc = cr_template_load(&t, file, &err)) != 0) {
    cr_cli_errorf(cmd, "%s", cr_error_message(&err, rc));
    return template_exit(rc);
  }
  if (strcmp(sub, "hash") == 0) {
    char hex[CR_SHA256_HEX_BYTES];
    cr_hex_encode(hex, t->sha256, CR_SHA256_BYTES);
    if (json) {
      json_t *o = json_object();
      json_object_set_new(o, "file", cr_cli_jtext(file));
      json_object_set_new(o, "sha256", json_string(hex));
      cr_cli_json_print(o);
    } else {
      printf("%s\n", hex);
    }
  } else if (json) {
    json_t *o = json_object();
    json_object_set_new(o, "file", cr_cli_jtext(file));
    json_object_set_new(o, "valid", json_true());
    json_object_set_new(o, "errors", json_array());
    json_object_update_new(o, template_json(t));
    char *sp = cr_template_sig_path(t);
    cr_template_sig_status st;
    json_t *sj = json_object();
    json_object_set_new(sj, "file", sp ? cr_cli_jtext(sp) : json_null());
    if (sp != NULL && cr_template_verify_sigs(t, sp, &st, &err) == 0) {
      for (int r = 0; r < CR_ROLE_COUNT; r++) {
        json_t *x = json_object();
        json_object_set_new(x, "status",
                            json_string(!st.present[r] ? "missing"
                                        : st.valid[r]  ? "valid"
                                                       : "invalid"));
        if (st.present[r] && !st.valid[r])
          json_object_set_new(x, "why", cr_cli_jtext(st.why[r]));
        json_object_set_new(sj, cr_role_name((cr_role)r), x);
      }
    } else if (sp != NULL) {
      json_object_set_new(sj, "error", cr_cli_jtext(cr_error_message(&err, CR_ETEMPLATE)));
    }
    free(sp);
    json_object_set_new(o, "signatures", sj);
    cr_cli_json_print(o);
    warn_expiry(t);
  } else {
    print_template_summary(t);
    char *sp = cr_template_sig_path(t);
    cr_template_sig_status st;
    if (sp != NULL && cr_template_verify_sigs(t, sp, &st, &err) == 0)
      print_sig_status(t, sp, &st);
    else if (sp != NULL)
      printf("  signatures: %s\n", cr_error_message(&err, CR_ETEMPLATE));
    free(sp);
    if (t->limits.not_after && (int64_t)time(NULL) > t->limits.not_after) {
      char na[CR_TEMPLATE_TIME_BYTES];
      cr_template_time_iso(t->limits.not_after, na);
      printf("template OK, but EXPIRED on %s: serve and run refuse it\n", na);
    } else {
      printf("template OK\n");
    }
    warn_expiry(t);
  }
  cr_template_free(t);
  return EXIT_OK;
}
