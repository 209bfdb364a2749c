/* serve and run: the node's two ways of taking part in a session. */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>

#include "cli/cli.h"
#include "cleanroom/template_sig.h"

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
                        json_integer(cr_cli_exit_code(r->error, r->wire_error)));
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
  fprintf(stderr, "%s %s: session%s%s failed: %s\n", CR_CLI_PROG, cmd, peer_addr ? " with " : "",
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
  fprintf(stderr, "%s serve: listening on %s (template %s)\n", CR_CLI_PROG, addr, n->o->template_path);
}

static void print_data_summary(const char *cmd, const cr_dataset *d) {
  fprintf(stderr, "%s %s: %s: %llu rows, %llu accepted, %llu rejected, %zu distinct keys", CR_CLI_PROG,
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
           CR_CLI_EXIT_CODES_HELP);
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
           CR_CLI_EXIT_CODES_HELP);
}

int cr_cli_node(const char *cmd, int argc, char **argv) {
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
        cr_cli_errorf(cmd, "--listen is for serve; run connects with --peer HOST:PORT");
        return EXIT_USAGE;
      }
      o.address = optarg;
      break;
    case 'p':
      if (serve) {
        cr_cli_errorf(cmd, "--peer is for run; serve listens with --listen HOST:PORT");
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
        cr_cli_errorf(cmd, "--max-reject-ratio takes a number from 0 to 1, got \"%s\"", optarg);
        return EXIT_USAGE;
      }
      break;
    case 'T': {
      errno = 0;
      unsigned long v = strtoul(optarg, &end, 10);
      if (errno || end == optarg || *end || v == 0 || v > 86400) {
        cr_cli_errorf(cmd, "--timeout takes seconds from 1 to 86400, got \"%s\"", optarg);
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
    cr_cli_errorf(cmd, "unexpected argument \"%s\"", argv[optind]);
    return EXIT_USAGE;
  }
  const char *missing = !o.template_path ? "--template FILE"
                        : !o.identity    ? "--identity DIR"
                        : !o.data        ? "--data CSV"
                        : !o.address     ? (serve ? "--listen HOST:PORT" : "--peer HOST:PORT")
                        : (!serve && !o.query) ? "--query NAME"
                                               : NULL;
  if (missing) {
    cr_cli_errorf(cmd, "%s is required; see `cleanroom %s --help`", missing, cmd);
    return EXIT_USAGE;
  }
  if (serve && o.query) {
    cr_cli_errorf(cmd, "--query is for run; the serving node answers the query the partner runs");
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
    cr_cli_errorf(cmd, "libsodium failed to initialise");
    return EXIT_INTERNAL;
  }
  if ((rc = cr_template_load(&t, o.template_path, &err)) != 0) {
    cr_cli_errorf(cmd, "%s", cr_error_message(&err, rc));
    code = cr_cli_exit_code(rc, 0);
    goto out;
  }
  if ((rc = cr_identity_load(&id, o.identity, &err)) != 0) {
    cr_cli_errorf(cmd, "%s", cr_error_message(&err, rc));
    code = EXIT_USAGE;
    goto out;
  }
  if (cr_template_role_of(t, cr_identity_fingerprint(id), &role) != 0) {
    char own[CR_SHA256_HEX_BYTES], p[CR_SHA256_HEX_BYTES], cns[CR_SHA256_HEX_BYTES];
    cr_hex_encode(own, cr_identity_fingerprint(id), CR_SHA256_BYTES);
    cr_hex_encode(p, t->parties[CR_ROLE_PROVIDER].cert_sha256, CR_SHA256_BYTES);
    cr_hex_encode(cns, t->parties[CR_ROLE_CONSUMER].cert_sha256, CR_SHA256_BYTES);
    cr_cli_errorf(cmd,
           "this identity (%s, certificate %s) is not a party of template %s: the provider "
           "pins %s and the consumer pins %s; put your fingerprint in the template "
           "(parties.<role>.cert_sha256) and agree it with the partner",
           o.identity, own, o.template_path, p, cns);
    code = EXIT_USAGE;
    goto out;
  }

  {
    char *sp = cr_template_sig_path(t);
    rc = sp ? cr_template_require_sigs(t, sp, &err) : CR_ENOMEM;
    free(sp);
    if (rc) {
      cr_cli_errorf(cmd, "%s", cr_error_message(&err, rc));
      code = cr_cli_exit_code(rc, 0);
      goto out;
    }
  }

  /* Checks that need no data first, so a wrong query fails fast. */
  cr_session_config sc = {0};
  sc.tmpl = t;
  sc.data = NULL;
  sc.role = role;
  sc.is_runner = !serve;
  sc.query = o.query;
  if (!serve && (rc = cr_session_check_local(&sc, (int64_t)time(NULL), &err)) != 0) {
    cr_cli_errorf(cmd, "%s", cr_error_message(&err, rc));
    code = cr_cli_exit_code(rc, 0);
    goto out;
  }

  cr_dataset_options dopt = {o.max_reject_ratio};
  if ((rc = cr_dataset_load(&data, o.data, t, role, &dopt, &err)) != 0) {
    cr_cli_errorf(cmd, "%s", cr_error_message(&err, rc));
    code = cr_cli_exit_code(rc, 0);
    goto out;
  }
  print_data_summary(cmd, data);
  sc.data = data;
  if ((rc = cr_session_check_local(&sc, (int64_t)time(NULL), &err)) != 0) {
    cr_cli_errorf(cmd, "%s", cr_error_message(&err, rc));
    code = cr_cli_exit_code(rc, 0);
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
    fprintf(stderr, "%s serve: this node is the %s (%s)\n", CR_CLI_PROG, cr_role_name(role),
            t->parties[role].org);
    rc = cr_node_serve(&nc, &err);
    if (rc && nctx.sessions == 0) {
      cr_cli_errorf(cmd, "%s", cr_error_message(&err, rc));
      code = cr_cli_exit_code(rc, 0);
    } else if (o.once && nctx.sessions > 0) {
      code = cr_cli_exit_code(nctx.last_rc, nctx.last_wire);
    } else {
      code = rc ? cr_cli_exit_code(rc, 0) : EXIT_OK;
    }
  } else {
    cr_session_result res;
    memset(&res, 0, sizeof res);
    fprintf(stderr, "%s run: this node is the %s (%s); running \"%s\" with %s\n", CR_CLI_PROG,
            cr_role_name(role), t->parties[role].org, o.query, o.address);
    rc = cr_node_run(&nc, &res, &err);
    if (rc == 0 && res.status == CR_SESSION_DONE) {
      if (o.json)
        print_result_json(&res, t, NULL);
      else
        print_result_human(&res, NULL);
    } else {
      if (nctx.sessions == 0) /* the node did not report it: say it here */
        cr_cli_errorf(cmd, "%s", cr_error_message(&err, rc));
      if (o.json)
        print_result_json(&res, t, NULL);
      code = cr_cli_exit_code(rc ? rc : res.error, res.wire_error);
    }
  }

out:
  cr_dataset_free(data);
  cr_identity_free(id);
  cr_template_free(t);
  return code;
}

