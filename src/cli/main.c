/*
 * The cleanroom command: keygen, fingerprint, template, serve, run.
 *
 * Results go to stdout (human text, or one JSON object per session with
 * --json); everything else (progress, warnings, errors) to stderr, so
 * scripts can parse stdout. Exit codes are documented in usage() and
 * docs/cli.md. Never prints a match key, a point or a secret.
 */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>

#include "cleanroom/crypto.h"
#include "cleanroom/dataset.h"
#include "cleanroom/error.h"
#include "cleanroom/net.h"
#include "cleanroom/session.h"
#include "cleanroom/template.h"
#include "cleanroom/util.h"

#define CR_VERSION "0.1.0"
#define CR_SOFTWARE "cleanroom/" CR_VERSION

enum {
  EXIT_OK = 0,
  EXIT_INTERNAL = 1,
  EXIT_USAGE = 2,   /* usage or configuration: flags, template, identity */
  EXIT_DATA = 3,    /* the data file: unreadable, missing columns, too many rejects */
  EXIT_REFUSED = 4, /* refused by the template or by the partner */
  EXIT_NETWORK = 5  /* network, TLS or protocol failure, timeout */
};

static const char *prog = "cleanroom";

static void errorf(const char *cmd, const char *fmt, ...) CR_PRINTF(2, 3);
static void errorf(const char *cmd, const char *fmt, ...) {
  va_list ap;
  fprintf(stderr, "%s %s: error: ", prog, cmd);
  va_start(ap, fmt);
  vfprintf(stderr, fmt, ap);
  va_end(ap);
  fputc('\n', stderr);
}

static int is_refusal_wire(int w) {
  return (w >= CR_WIRE_VERSION && w <= CR_WIRE_SIZE) || w == CR_WIRE_PARAMS ||
         w == CR_WIRE_BUSY;
}

static int exit_code_for(int rc, int wire) {
  switch (rc) {
  case 0:
    return EXIT_OK;
  case CR_EUSAGE:
  case CR_ECONFIG:
  case CR_ETEMPLATE:
  case CR_EINVAL:
    return EXIT_USAGE;
  case CR_EDATA:
    return EXIT_DATA;
  case CR_EREFUSED:
  case CR_EAUTH:
    return EXIT_REFUSED;
  case CR_EPEER:
    return is_refusal_wire(wire) ? EXIT_REFUSED : EXIT_NETWORK;
  case CR_ENET:
  case CR_ETLS:
  case CR_ETIMEDOUT:
  case CR_EPROTO:
  case CR_EIO:
    return EXIT_NETWORK;
  default:
    return EXIT_INTERNAL;
  }
}

static const char EXIT_CODES_HELP[] =
    "Exit codes:\n"
    "  0  success (a suppressed result is a success)\n"
    "  1  internal error\n"
    "  2  usage or configuration error (flags, template, identity)\n"
    "  3  data error (CSV unreadable, missing column, too many rejected rows)\n"
    "  4  refused by the template or by the partner (wrong template, certificate,\n"
    "     query, role, set size)\n"
    "  5  network, TLS or protocol failure, or timeout\n";

static void usage_main(FILE *f) {
  fprintf(f,
          "Usage: cleanroom COMMAND [OPTIONS]\n"
          "\n"
          "A peer-to-peer data clean room node: two partners learn the size of the\n"
          "overlap of their customer lists, as their shared template allows, without\n"
          "either seeing the other's data.\n"
          "\n"
          "Commands:\n"
          "  keygen        create this node's identity (key and certificate)\n"
          "  fingerprint   print a certificate's SHA-256 fingerprint\n"
          "  template      hash or check a collaboration template\n"
          "  serve         wait for the partner and answer its queries\n"
          "  run           connect to the partner and run a query\n"
          "  version       print the version\n"
          "\n"
          "Run `cleanroom COMMAND --help` for a command's options and an example.\n"
          "\n%s",
          EXIT_CODES_HELP);
}

/* ---- keygen, fingerprint ------------------------------------------------ */

static int cmd_keygen(int argc, char **argv) {
  static const struct option opts[] = {{"out", required_argument, NULL, 'o'},
                                       {"name", required_argument, NULL, 'n'},
                                       {"json", no_argument, NULL, 'j'},
                                       {"help", no_argument, NULL, 'h'},
                                       {NULL, 0, NULL, 0}};
  const char *out = NULL, *name = "cleanroom-node";
  int json = 0, c;
  while ((c = getopt_long(argc, argv, "o:n:jh", opts, NULL)) != -1) {
    switch (c) {
    case 'o':
      out = optarg;
      break;
    case 'n':
      name = optarg;
      break;
    case 'j':
      json = 1;
      break;
    case 'h':
      printf("Usage: cleanroom keygen --out DIR [--name CN] [--json]\n\n"
             "Creates DIR/identity.key (mode 0600) and DIR/identity.crt (Ed25519,\n"
             "self-signed) and prints the certificate's SHA-256 fingerprint: send it to\n"
             "your partner, who pins it in the template (parties.<role>.cert_sha256).\n"
             "Refuses to overwrite an existing key.\n\n"
             "Example:\n  cleanroom keygen --out ./identity --name \"Acme Security\"\n\n%s",
             EXIT_CODES_HELP);
      return EXIT_OK;
    default:
      return EXIT_USAGE;
    }
  }
  if (out == NULL) {
    errorf("keygen", "--out DIR is required (where to write identity.key and identity.crt)");
    return EXIT_USAGE;
  }
  uint8_t fp[CR_SHA256_BYTES];
  char hex[CR_SHA256_HEX_BYTES];
  cr_error err;
  cr_error_clear(&err);
  int rc = cr_identity_generate(out, name, fp, &err);
  if (rc) {
    errorf("keygen", "%s", cr_error_message(&err, rc));
    return exit_code_for(rc, 0);
  }
  cr_hex_encode(hex, fp, sizeof fp);
  if (json)
    printf("{\"identity\":\"%s\",\"cert_sha256\":\"%s\"}\n", out, hex);
  else
    printf("%s\n", hex);
  fprintf(stderr, "wrote %s/%s and %s/%s; send the fingerprint above to your partner\n", out,
          CR_IDENTITY_KEY_FILE, out, CR_IDENTITY_CRT_FILE);
  return EXIT_OK;
}

static int cmd_fingerprint(int argc, char **argv) {
  if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
    FILE *f = argc < 2 ? stderr : stdout;
    fprintf(f, "Usage: cleanroom fingerprint CERT\n\n"
               "Prints the SHA-256 fingerprint of a PEM certificate (of its DER form), as\n"
               "pinned in a template's parties.<role>.cert_sha256.\n\n"
               "Example:\n  cleanroom fingerprint ./identity/identity.crt\n");
    return argc < 2 ? EXIT_USAGE : EXIT_OK;
  }
  uint8_t fp[CR_SHA256_BYTES];
  char hex[CR_SHA256_HEX_BYTES];
  cr_error err;
  cr_error_clear(&err);
  int rc = cr_cert_fingerprint_file(argv[1], fp, &err);
  if (rc) {
    errorf("fingerprint", "%s", cr_error_message(&err, rc));
    return exit_code_for(rc, 0);
  }
  cr_hex_encode(hex, fp, sizeof fp);
  printf("%s\n", hex);
  return EXIT_OK;
}

/* ---- template ----------------------------------------------------------- */

static void print_template_summary(const cr_template *t) {
  char hex[CR_SHA256_HEX_BYTES];
  cr_hex_encode(hex, t->sha256, CR_SHA256_BYTES);
  printf("template: %s\n", t->name);
  printf("  sha256:    %s\n", hex);
  printf("  suite:     %s\n", t->suite);
  for (int r = 0; r < CR_ROLE_COUNT; r++) {
    cr_hex_encode(hex, t->parties[r].cert_sha256, CR_SHA256_BYTES);
    printf("  %-9s  %s\n             cert %s%s%s\n", cr_role_name((cr_role)r),
           t->parties[r].org, hex, t->parties[r].address ? ", address " : "",
           t->parties[r].address ? t->parties[r].address : "");
  }
  printf("  match key: %s (columns:", t->match_key.name);
  for (size_t i = 0; i < t->match_key.ncolumns; i++)
    printf(" %s", t->match_key.columns[i]);
  printf("; normalize:");
  for (size_t i = 0; i < t->match_key.nnormalize; i++)
    printf(" %s", cr_normalizer_name(t->match_key.normalize[i]));
  printf(")\n  queries:\n");
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
      char buf[32];
      time_t na = (time_t)t->limits.not_after;
      struct tm tm;
      gmtime_r(&na, &tm);
      strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
      printf(" not_after %s", buf);
    }
    printf("\n");
  }
}

/* Accepts a 64-hex fingerprint or a certificate file. */
static int fingerprint_arg(const char *arg, char hex[CR_SHA256_HEX_BYTES], cr_error *err) {
  uint8_t fp[CR_SHA256_BYTES];
  if (strlen(arg) == 64 && cr_hex_decode(fp, sizeof fp, arg) == 0) {
    cr_hex_encode(hex, fp, sizeof fp);
    return 0;
  }
  int rc = cr_cert_fingerprint_file(arg, fp, err);
  if (rc)
    return rc;
  cr_hex_encode(hex, fp, sizeof fp);
  return 0;
}

/* template pin: writes a copy of a template with the parties' fingerprints
 * (and optionally the provider's address) filled in. */
static int cmd_template_pin(int argc, char **argv) {
  static const struct option opts[] = {{"provider", required_argument, NULL, 'p'},
                                       {"consumer", required_argument, NULL, 'c'},
                                       {"address", required_argument, NULL, 'a'},
                                       {"out", required_argument, NULL, 'o'},
                                       {"help", no_argument, NULL, 'h'},
                                       {NULL, 0, NULL, 0}};
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
    errorf("template pin", "needs FILE, --out FILE and at least one of --provider, "
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
    errorf("template pin", "%s", cr_error_message(&err, rc));
    return EXIT_USAGE;
  }
  json_error_t jerr;
  json_t *root = json_load_file(in, JSON_REJECT_DUPLICATES, &jerr);
  if (root == NULL) {
    errorf("template pin", "%s:%d:%d: %s", in, jerr.line, jerr.column, jerr.text);
    return EXIT_USAGE;
  }
  json_t *parties = json_object_get(root, "parties");
  json_t *p = parties ? json_object_get(parties, "provider") : NULL;
  json_t *cn = parties ? json_object_get(parties, "consumer") : NULL;
  if (!json_is_object(p) || !json_is_object(cn)) {
    errorf("template pin", "%s: $.parties.provider and $.parties.consumer must be objects", in);
    json_decref(root);
    return EXIT_USAGE;
  }
  if (prov)
    json_object_set_new(p, "cert_sha256", json_string(hp));
  if (cons)
    json_object_set_new(cn, "cert_sha256", json_string(hc));
  if (addr)
    json_object_set_new(p, "address", json_string(addr));
  rc = json_dump_file(root, out, JSON_INDENT(2)) == 0 ? 0 : CR_EIO;
  json_decref(root);
  if (rc) {
    errorf("template pin", "cannot write %s: %s", out, strerror(errno));
    return EXIT_USAGE;
  }
  cr_template *t = NULL;
  if ((rc = cr_template_load(&t, out, &err)) != 0) {
    errorf("template pin", "wrote %s but it does not validate: %s", out,
           cr_error_message(&err, rc));
    return exit_code_for(rc, 0);
  }
  char hex[CR_SHA256_HEX_BYTES];
  cr_hex_encode(hex, t->sha256, CR_SHA256_BYTES);
  printf("%s\n", hex);
  fprintf(stderr, "wrote %s (template sha256 above); both partners must use this file\n", out);
  cr_template_free(t);
  return EXIT_OK;
}

static int cmd_template(int argc, char **argv) {
  const char *sub = argc >= 2 ? argv[1] : NULL;
  if (sub && strcmp(sub, "pin") == 0)
    return cmd_template_pin(argc - 1, argv + 1);
  if (sub == NULL || strcmp(sub, "--help") == 0 || strcmp(sub, "-h") == 0 || argc < 3 ||
      (strcmp(sub, "hash") != 0 && strcmp(sub, "check") != 0)) {
    FILE *f = (sub && (strcmp(sub, "--help") == 0 || strcmp(sub, "-h") == 0)) ? stdout : stderr;
    fprintf(f, "Usage: cleanroom template hash FILE\n"
               "       cleanroom template check FILE\n"
               "       cleanroom template pin FILE --provider CERT --consumer CERT --out FILE\n\n"
               "hash   prints the template's identity: the SHA-256 of its RFC 8785 canonical\n"
               "       form, so formatting and key order do not change it. Both partners\n"
               "       must see the same hash.\n"
               "check  validates the template and prints a summary of the contract; every\n"
               "       error names the JSON path, the value found and what is expected.\n"
               "pin    writes a copy with the parties' fingerprints filled in (see\n"
               "       `cleanroom template pin --help`).\n\n"
               "Example:\n  cleanroom template check examples/overlap/template.json\n\n%s",
            EXIT_CODES_HELP);
    return f == stdout ? EXIT_OK : EXIT_USAGE;
  }
  cr_template *t = NULL;
  cr_error err;
  cr_error_clear(&err);
  int rc;
  if (strcmp(sub, "check") == 0) {
    char **errors = NULL;
    size_t nerr = 0;
    rc = cr_template_check(argv[2], &t, &errors, &nerr);
    if (rc) {
      if (nerr == 0)
        errorf("template check", "%s: %s", argv[2], cr_strerror(rc));
      else
        fprintf(stderr, "%s: %zu error%s:\n", argv[2], nerr, nerr == 1 ? "" : "s");
      for (size_t i = 0; i < nerr; i++)
        fprintf(stderr, "  %s\n", errors[i]);
      cr_template_errors_free(errors, nerr);
      cr_template_free(t);
      return exit_code_for(rc, 0);
    }
  } else if ((rc = cr_template_load(&t, argv[2], &err)) != 0) {
    errorf("template", "%s", cr_error_message(&err, rc));
    return exit_code_for(rc, 0);
  }
  if (strcmp(sub, "hash") == 0) {
    char hex[CR_SHA256_HEX_BYTES];
    cr_hex_encode(hex, t->sha256, CR_SHA256_BYTES);
    printf("%s\n", hex);
  } else {
    print_template_summary(t);
    printf("template OK\n");
  }
  cr_template_free(t);
  return EXIT_OK;
}

/* ---- serve and run ------------------------------------------------------ */

typedef struct node_opts {
  const char *template_path, *identity, *data, *address, *query;
  int once, json;
  double max_reject_ratio;
  unsigned timeout_ms;
} node_opts;

typedef struct node_ctx {
  const char *cmd;
  node_opts *o;
  const cr_template *t;
  int sessions, failed;
  int last_rc, last_wire;
} node_ctx;

static void print_result_json(const cr_session_result *r, const cr_template *t,
                              const char *peer_addr) {
  char sid[CR_SHA256_HEX_BYTES] = "", th[CR_SHA256_HEX_BYTES];
  if (r->have_session_id)
    cr_hex_encode(sid, r->session_id, CR_SESSION_ID_BYTES);
  cr_hex_encode(th, t->sha256, CR_SHA256_BYTES);
  json_t *o = json_object();
  json_object_set_new(o, "status", json_string(r->status == CR_SESSION_DONE ? "ok" : "failed"));
  json_object_set_new(o, "query", json_string(r->query));
  json_object_set_new(o, "role", json_string(cr_role_name(r->role)));
  json_object_set_new(o, "template_sha256", json_string(th));
  json_object_set_new(o, "session_id", r->have_session_id ? json_string(sid) : json_null());
  if (peer_addr)
    json_object_set_new(o, "peer", json_string(peer_addr));
  json_object_set_new(o, "own_set_size", json_integer((json_int_t)r->own_set_size));
  json_object_set_new(o, "peer_set_size", json_integer((json_int_t)r->peer_set_size));
  if (r->status == CR_SESSION_DONE) {
    json_t *rel = json_null();
    if (r->receives) {
      rel = json_object();
      if (r->suppressed) {
        json_object_set_new(rel, "suppressed", json_true());
        json_object_set_new(rel, "min_count", json_integer((json_int_t)r->min_count));
      } else {
        json_object_set_new(rel, "count", json_integer((json_int_t)r->count));
      }
    }
    json_object_set_new(o, "released", rel);
  } else {
    json_object_set_new(o, "released", json_null());
    json_t *e = json_object();
    json_object_set_new(e, "code", json_string(cr_err_name(r->error)));
    if (r->wire_error)
      json_object_set_new(e, "wire", json_string(cr_wire_error_name(r->wire_error)));
    json_object_set_new(e, "from_peer", json_boolean(r->error_from_peer));
    json_object_set_new(e, "message", json_string(r->error_msg));
    json_object_set_new(e, "exit_code",
                        json_integer(exit_code_for(r->error, r->wire_error)));
    json_object_set_new(o, "error", e);
  }
  char *s = json_dumps(o, JSON_COMPACT | JSON_ENSURE_ASCII);
  if (s) {
    printf("%s\n", s);
    free(s);
  }
  json_decref(o);
  fflush(stdout);
}

static void print_result_human(const cr_session_result *r, const char *peer_addr) {
  char sid[CR_SHA256_HEX_BYTES] = "";
  if (r->have_session_id)
    cr_hex_encode(sid, r->session_id, CR_SESSION_ID_BYTES);
  if (r->status != CR_SESSION_DONE)
    return; /* failures are reported on stderr */
  printf("query %s: %s, session %s%s%s\n", r->query, cr_role_name(r->role), sid,
         peer_addr ? ", partner " : "", peer_addr ? peer_addr : "");
  printf("  our set:       %llu distinct keys\n", (unsigned long long)r->own_set_size);
  printf("  partner's set: %llu distinct keys\n", (unsigned long long)r->peer_set_size);
  if (!r->receives)
    printf("  released:      nothing to this side (the template sends this query's result "
           "to the partner only)\n");
  else if (r->suppressed)
    printf("  overlap:       suppressed (fewer than %llu, the query's min_count)\n",
           (unsigned long long)r->min_count);
  else
    printf("  overlap:       %llu (%.1f%% of our set, %.1f%% of the partner's)\n",
           (unsigned long long)r->count, 100.0 * (double)r->count / (double)r->own_set_size,
           100.0 * (double)r->count / (double)r->peer_set_size);
  fflush(stdout);
}

static void report_failure(const char *cmd, const cr_session_result *r, const char *peer_addr) {
  fprintf(stderr, "%s %s: session%s%s failed: %s\n", prog, cmd, peer_addr ? " with " : "",
          peer_addr ? peer_addr : "", r->error_msg[0] ? r->error_msg : cr_strerror(r->error));
}

static void on_session(void *ctx, const cr_session_result *r, const char *peer_addr,
                       const uint8_t *peer_fp) {
  node_ctx *n = ctx;
  (void)peer_fp;
  n->sessions++;
  n->last_rc = r->status == CR_SESSION_DONE ? 0 : (r->error ? r->error : CR_EINTERNAL);
  n->last_wire = r->wire_error;
  if (r->status != CR_SESSION_DONE) {
    n->failed++;
    report_failure(n->cmd, r, peer_addr);
  }
  /* serve prints each session as it ends; run prints once it returns. */
  if (strcmp(n->cmd, "serve") == 0) {
    if (n->o->json)
      print_result_json(r, n->t, peer_addr);
    else
      print_result_human(r, peer_addr);
  }
}

static void on_listening(void *ctx, const char *addr) {
  node_ctx *n = ctx;
  fprintf(stderr, "%s serve: listening on %s (template %s)\n", prog, addr, n->o->template_path);
}

static void print_data_summary(const char *cmd, const cr_dataset *d) {
  fprintf(stderr, "%s %s: %s: %llu rows, %llu accepted, %llu rejected, %zu distinct keys", prog,
          cmd, d->path ? d->path : "data", (unsigned long long)d->rows_read,
          (unsigned long long)d->rows_accepted, (unsigned long long)d->rows_rejected, d->n);
  if (d->rows_rejected) {
    fprintf(stderr, " (");
    int first = 1;
    for (int i = 0; i < CR_REJECT_COUNT; i++) {
      if (d->rejected[i] == 0)
        continue;
      fprintf(stderr, "%s%s %llu", first ? "" : ", ", cr_reject_key((cr_reject_reason)i),
              (unsigned long long)d->rejected[i]);
      first = 0;
    }
    fprintf(stderr, "; first at line");
    for (size_t i = 0; i < d->nreject_lines; i++)
      fprintf(stderr, "%s %llu", i ? "," : "", (unsigned long long)d->reject_lines[i]);
    fprintf(stderr, ")");
  }
  fprintf(stderr, "\n");
}

static void node_help(const char *cmd) {
  if (strcmp(cmd, "serve") == 0)
    printf("Usage: cleanroom serve --template T --identity DIR --data CSV --listen HOST:PORT\n"
           "                       [--once] [--json] [--max-reject-ratio R] [--timeout SEC]\n\n"
           "Waits for the partner's node and answers the queries the template lets it run.\n"
           "The node's role is the template party whose cert_sha256 is this identity's.\n"
           "Each session's result is printed when it ends (one JSON object per line with\n"
           "--json). A failed session never stops the node; --once exits after the first\n"
           "session, with its status.\n\n"
           "Example:\n"
           "  cleanroom serve --template template.json --identity ./identity \\\n"
           "      --data customers.csv --listen 0.0.0.0:7443\n\n%s",
           EXIT_CODES_HELP);
  else
    printf("Usage: cleanroom run --template T --identity DIR --data CSV --peer HOST:PORT\n"
           "                     --query NAME [--json] [--max-reject-ratio R] [--timeout SEC]\n\n"
           "Connects to the partner's node and runs a query of the template. Prints what\n"
           "the template releases to this side: the overlap count if it reaches the query's\n"
           "min_count, otherwise that it was suppressed.\n"
           "--json prints one object: query, role, session_id, own_set_size, peer_set_size,\n"
           "released ({\"count\": N}, {\"suppressed\": true, \"min_count\": M} or null).\n\n"
           "Example:\n"
           "  cleanroom run --template template.json --identity ./identity \\\n"
           "      --data policyholders.csv --peer acme.example:7443 --query overlap\n\n%s",
           EXIT_CODES_HELP);
}

static int cmd_node(const char *cmd, int argc, char **argv) {
  int serve = strcmp(cmd, "serve") == 0;
  static const struct option opts[] = {{"template", required_argument, NULL, 't'},
                                       {"identity", required_argument, NULL, 'i'},
                                       {"data", required_argument, NULL, 'd'},
                                       {"listen", required_argument, NULL, 'l'},
                                       {"peer", required_argument, NULL, 'p'},
                                       {"query", required_argument, NULL, 'q'},
                                       {"once", no_argument, NULL, '1'},
                                       {"json", no_argument, NULL, 'j'},
                                       {"max-reject-ratio", required_argument, NULL, 'r'},
                                       {"timeout", required_argument, NULL, 'T'},
                                       {"help", no_argument, NULL, 'h'},
                                       {NULL, 0, NULL, 0}};
  node_opts o = {0};
  o.max_reject_ratio = 0.05;
  int c;
  while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
    char *end = NULL;
    switch (c) {
    case 't':
      o.template_path = optarg;
      break;
    case 'i':
      o.identity = optarg;
      break;
    case 'd':
      o.data = optarg;
      break;
    case 'l':
      if (!serve) {
        errorf(cmd, "--listen is for serve; run connects with --peer HOST:PORT");
        return EXIT_USAGE;
      }
      o.address = optarg;
      break;
    case 'p':
      if (serve) {
        errorf(cmd, "--peer is for run; serve listens with --listen HOST:PORT");
        return EXIT_USAGE;
      }
      o.address = optarg;
      break;
    case 'q':
      o.query = optarg;
      break;
    case '1':
      o.once = 1;
      break;
    case 'j':
      o.json = 1;
      break;
    case 'r':
      errno = 0;
      o.max_reject_ratio = strtod(optarg, &end);
      if (errno || end == optarg || *end || o.max_reject_ratio < 0 || o.max_reject_ratio > 1) {
        errorf(cmd, "--max-reject-ratio takes a number from 0 to 1, got \"%s\"", optarg);
        return EXIT_USAGE;
      }
      break;
    case 'T': {
      errno = 0;
      unsigned long v = strtoul(optarg, &end, 10);
      if (errno || end == optarg || *end || v == 0 || v > 86400) {
        errorf(cmd, "--timeout takes seconds from 1 to 86400, got \"%s\"", optarg);
        return EXIT_USAGE;
      }
      o.timeout_ms = (unsigned)v * 1000u;
      break;
    }
    case 'h':
      node_help(cmd);
      return EXIT_OK;
    default:
      fprintf(stderr, "Run `cleanroom %s --help` for the options.\n", cmd);
      return EXIT_USAGE;
    }
  }
  if (optind < argc) {
    errorf(cmd, "unexpected argument \"%s\"", argv[optind]);
    return EXIT_USAGE;
  }
  const char *missing = !o.template_path ? "--template FILE"
                        : !o.identity    ? "--identity DIR"
                        : !o.data        ? "--data CSV"
                        : !o.address     ? (serve ? "--listen HOST:PORT" : "--peer HOST:PORT")
                        : (!serve && !o.query) ? "--query NAME"
                                               : NULL;
  if (missing) {
    errorf(cmd, "%s is required; see `cleanroom %s --help`", missing, cmd);
    return EXIT_USAGE;
  }
  if (serve && o.query) {
    errorf(cmd, "--query is for run; the serving node answers the query the partner runs");
    return EXIT_USAGE;
  }

  int rc = 0, code = EXIT_OK;
  cr_error err;
  cr_error_clear(&err);
  cr_template *t = NULL;
  cr_identity *id = NULL;
  cr_dataset *data = NULL;
  cr_role role;

  if ((rc = cr_crypto_init()) != 0) {
    errorf(cmd, "libsodium failed to initialise");
    return EXIT_INTERNAL;
  }
  if ((rc = cr_template_load(&t, o.template_path, &err)) != 0) {
    errorf(cmd, "%s", cr_error_message(&err, rc));
    code = exit_code_for(rc, 0);
    goto out;
  }
  if ((rc = cr_identity_load(&id, o.identity, &err)) != 0) {
    errorf(cmd, "%s", cr_error_message(&err, rc));
    code = EXIT_USAGE;
    goto out;
  }
  if (cr_template_role_of(t, cr_identity_fingerprint(id), &role) != 0) {
    char own[CR_SHA256_HEX_BYTES], p[CR_SHA256_HEX_BYTES], cns[CR_SHA256_HEX_BYTES];
    cr_hex_encode(own, cr_identity_fingerprint(id), CR_SHA256_BYTES);
    cr_hex_encode(p, t->parties[CR_ROLE_PROVIDER].cert_sha256, CR_SHA256_BYTES);
    cr_hex_encode(cns, t->parties[CR_ROLE_CONSUMER].cert_sha256, CR_SHA256_BYTES);
    errorf(cmd,
           "this identity (%s, certificate %s) is not a party of template %s: the provider "
           "pins %s and the consumer pins %s; put your fingerprint in the template "
           "(parties.<role>.cert_sha256) and agree it with the partner",
           o.identity, own, o.template_path, p, cns);
    code = EXIT_USAGE;
    goto out;
  }

  /* Checks that need no data first, so a wrong query fails fast. */
  cr_session_config sc = {0};
  sc.tmpl = t;
  sc.data = NULL;
  sc.role = role;
  sc.is_runner = !serve;
  sc.query = o.query;
  if (!serve && (rc = cr_session_check_local(&sc, (int64_t)time(NULL), &err)) != 0) {
    errorf(cmd, "%s", cr_error_message(&err, rc));
    code = exit_code_for(rc, 0);
    goto out;
  }

  cr_dataset_options dopt = {o.max_reject_ratio};
  if ((rc = cr_dataset_load(&data, o.data, t, role, &dopt, &err)) != 0) {
    errorf(cmd, "%s", cr_error_message(&err, rc));
    code = exit_code_for(rc, 0);
    goto out;
  }
  print_data_summary(cmd, data);
  sc.data = data;
  if ((rc = cr_session_check_local(&sc, (int64_t)time(NULL), &err)) != 0) {
    errorf(cmd, "%s", cr_error_message(&err, rc));
    code = exit_code_for(rc, 0);
    goto out;
  }

  node_ctx nctx = {0};
  nctx.cmd = cmd;
  nctx.o = &o;
  nctx.t = t;
  cr_node_config nc = {0};
  nc.tmpl = t;
  nc.id = id;
  nc.data = data;
  nc.role = role;
  nc.address = o.address;
  nc.query = o.query;
  nc.once = o.once;
  nc.idle_timeout_ms = o.timeout_ms;
  nc.handshake_timeout_ms = o.timeout_ms;
  nc.software = CR_SOFTWARE;
  nc.on_session = on_session;
  nc.on_listening = on_listening;
  nc.ctx = &nctx;

  if (serve) {
    fprintf(stderr, "%s serve: this node is the %s (%s)\n", prog, cr_role_name(role),
            t->parties[role].org);
    rc = cr_node_serve(&nc, &err);
    if (rc && nctx.sessions == 0) {
      errorf(cmd, "%s", cr_error_message(&err, rc));
      code = exit_code_for(rc, 0);
    } else if (o.once && nctx.sessions > 0) {
      code = exit_code_for(nctx.last_rc, nctx.last_wire);
    } else {
      code = rc ? exit_code_for(rc, 0) : EXIT_OK;
    }
  } else {
    cr_session_result res;
    memset(&res, 0, sizeof res);
    fprintf(stderr, "%s run: this node is the %s (%s); running \"%s\" with %s\n", prog,
            cr_role_name(role), t->parties[role].org, o.query, o.address);
    rc = cr_node_run(&nc, &res, &err);
    if (rc == 0 && res.status == CR_SESSION_DONE) {
      if (o.json)
        print_result_json(&res, t, NULL);
      else
        print_result_human(&res, NULL);
    } else {
      if (nctx.sessions == 0) /* the node did not report it: say it here */
        errorf(cmd, "%s", cr_error_message(&err, rc));
      if (o.json)
        print_result_json(&res, t, NULL);
      code = exit_code_for(rc ? rc : res.error, res.wire_error);
    }
  }

out:
  cr_dataset_free(data);
  cr_identity_free(id);
  cr_template_free(t);
  return code;
}

int main(int argc, char **argv) {
  signal(SIGPIPE, SIG_IGN);
  if (argc < 2) {
    usage_main(stderr);
    return EXIT_USAGE;
  }
  const char *cmd = argv[1];
  if (strcmp(cmd, "--help") == 0 || strcmp(cmd, "-h") == 0 || strcmp(cmd, "help") == 0) {
    usage_main(stdout);
    return EXIT_OK;
  }
  if (strcmp(cmd, "version") == 0 || strcmp(cmd, "--version") == 0) {
    printf("%s\n", CR_SOFTWARE);
    return EXIT_OK;
  }
  /* Each command parses its own options from argv[1..]. */
  argc--;
  argv++;
  optind = 1;
  if (strcmp(cmd, "keygen") == 0)
    return cmd_keygen(argc, argv);
  if (strcmp(cmd, "fingerprint") == 0)
    return cmd_fingerprint(argc, argv);
  if (strcmp(cmd, "template") == 0)
    return cmd_template(argc, argv);
  if (strcmp(cmd, "serve") == 0 || strcmp(cmd, "run") == 0)
    return cmd_node(cmd, argc, argv);
  fprintf(stderr, "%s: unknown command \"%s\"\n\n", prog, cmd);
  usage_main(stderr);
  return EXIT_USAGE;
}
