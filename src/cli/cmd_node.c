/* serve and run: the node's two ways of taking part in a session. */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "cli/cli.h"
#include "cli/node_audit.h"
#include "cleanroom/dataset.h"
#include "cleanroom/template_sig.h"

/* ---- serve and run ------------------------------------------------------ */

#define MAX_PARAMS 64

typedef struct node_opts {
  const char *template_path, *identity, *data, *address, *query, *out, *audit;
  const char *param_args[MAX_PARAMS]; /* NAME=VALUE as given */
  const char *param_names[MAX_PARAMS];
  const char *param_values[MAX_PARAMS];
  size_t nparams;
  int once, json;
  int quiet; /* --quiet: no informational stderr lines ("listening on" stays) */
  double max_reject_ratio;
  unsigned timeout_ms;
  unsigned max_sessions;
  unsigned threads;
} node_opts;

typedef struct node_ctx {
  const char *cmd;
  node_opts *o;
  const cr_template *t;
  cr_role role;
  const cr_dataset *data; /* loaded at start; serves queries without group_by */
  const cr_query *rq;     /* run: the query */
  cr_filter *filter;      /* run: our side's filter, bound to our file */
  cr_cli_audit audit;
  /* run: what a members result wrote, and whether releasing it failed. */
  cr_cli_members members;
  int have_members;
  int release_rc;
  char release_msg[600];
  /* run: progress reports */
  int progress_tty;
  const char *progress_phase;
  uint64_t progress_start, progress_last;
  int sessions, failed;
  int last_rc, last_wire;
  /* The node on this command's loop, and how it ended (on_closed). */
  cr_node *node;
  uv_signal_t sig[2];
  int sig_live;
  int closed_rc;
  cr_error closed_err;
  cr_session_result closed_res;
} node_ctx;

/* The library installs no signal handler: serve stops on SIGINT/SIGTERM
 * through watchers of its own on the loop. */
static void on_stop_signal(uv_signal_t *h, int signum) {
  (void)signum;
  node_ctx *n = h->data;
  cr_node_stop(n->node);
}

static void on_node_closed(void *ctx, int rc, const cr_error *err, cr_session_result *res) {
  node_ctx *n = ctx;
  n->closed_rc = rc;
  if (err != NULL)
    n->closed_err = *err;
  if (res != NULL)
    n->closed_res = *res; /* its outputs are ours now */
  if (n->sig_live) {
    n->sig_live = 0;
    for (int i = 0; i < 2; i++)
      uv_close((uv_handle_t *)&n->sig[i], NULL);
  }
}

/* Runs the node on a loop of this command's own until it has closed: rc and
 * err say how it ended, *res (run) is the result. */
static int node_exec(node_ctx *n, const cr_node_config *nc, int serve, cr_session_result *res,
                     cr_error *err) {
  uv_loop_t loop;
  int rc = uv_loop_init(&loop);
  if (rc < 0)
    return cr_error_set(err, CR_EINTERNAL, "cannot start the event loop: %s", uv_strerror(rc));
  rc = serve ? cr_node_serve_start(&n->node, &loop, nc, err)
             : cr_node_run_start(&n->node, &loop, nc, err);
  if (rc == 0) {
    if (serve) {
      static const int signums[2] = {SIGINT, SIGTERM};
      for (int i = 0; i < 2; i++) {
        uv_signal_init(&loop, &n->sig[i]);
        n->sig[i].data = n;
        uv_signal_start(&n->sig[i], on_stop_signal, signums[i]);
      }
      n->sig_live = 1;
    }
    uv_run(&loop, UV_RUN_DEFAULT);
    cr_node_free(n->node);
    n->node = NULL;
    rc = n->closed_rc;
    if (rc != 0 && err != NULL)
      *err = n->closed_err;
    if (res != NULL)
      *res = n->closed_res;
  }
  (void)uv_loop_close(&loop);
  return rc;
}

static void report_failure(const char *cmd, const cr_session_result *r, const char *peer_addr) {
  fprintf(stderr, "%s %s: session%s%s failed: %s\n", CR_CLI_PROG, cmd, peer_addr ? " with " : "",
          peer_addr ? peer_addr : "", r->error_msg[0] ? r->error_msg : cr_strerror(r->error));
}

static int keep_row(void *ctx, const char *const *fields, const size_t *lens, size_t n) {
  return cr_filter_eval(ctx, fields, lens, n);
}

/* run, members: the owner's rows go to a temporary file, the release is
 * recorded, then the file takes its name, so no matched row is ever on
 * disk under its final name without its audit line. */
static int release_members(node_ctx *n, const cr_session_result *r, cr_error *err) {
  size_t len = strlen(n->o->out) + sizeof ".partial";
  char *tmp = malloc(len);
  if (tmp == NULL)
    return cr_error_set(err, CR_ENOMEM, "out of memory");
  snprintf(tmp, len, "%s.partial", n->o->out);
  int rc = cr_dataset_write_matches(n->data, n->t, r->matched, (const char *const *)n->rq->columns,
                                    n->rq->ncolumns, n->filter ? keep_row : NULL, n->filter, tmp,
                                    &n->members.rows, n->members.sha256, err);
  n->members.path = n->o->out;
  if (rc == 0)
    rc = cr_cli_audit_session_end(&n->audit, r, NULL, NULL, &n->members, err);
  if (rc == 0 && rename(tmp, n->o->out) != 0)
    rc = cr_error_set(err, CR_EIO, "cannot rename %s to %s: %s", tmp, n->o->out, strerror(errno));
  if (rc)
    unlink(tmp);
  free(tmp);
  n->have_members = rc == 0;
  return rc;
}

static void on_session(void *ctx, const cr_session_result *r, const char *peer_addr,
                       const uint8_t *peer_fp) {
  node_ctx *n = ctx;
  cr_error err;
  cr_error_clear(&err);
  int serve = strcmp(n->cmd, "serve") == 0;
  n->sessions++;
  n->last_rc = r->status == CR_SESSION_DONE ? 0 : (r->error ? r->error : CR_EINTERNAL);
  n->last_wire = r->wire_error;
  if (r->status != CR_SESSION_DONE) {
    n->failed++;
    report_failure(n->cmd, r, peer_addr);
  }
  if (r->ping && r->status == CR_SESSION_DONE) {
    /* A ping answered: recorded, never printed as a result. */
    json_t *o = json_object();
    if (peer_addr)
      json_object_set_new(o, "address", json_string(peer_addr));
    if (peer_fp) {
      char hex[CR_SHA256_HEX_BYTES];
      cr_hex_encode(hex, peer_fp, CR_SHA256_BYTES);
      json_object_set_new(o, "peer_cert_sha256", json_string(hex));
    }
    json_object_set_new(o, "peer_software", json_string(r->peer_software));
    json_object_set_new(o, "template_sha256", json_string(n->audit.th));
    if (cr_cli_audit_event(&n->audit, "ping_answered", o, &err) != 0 ||
        cr_cli_audit_checkpoint(&n->audit, &err) != 0)
      cr_cli_errorf(n->cmd, "audit log: %s", err.msg);
    else if (!n->o->quiet)
      fprintf(stderr, "%s %s: answered a ping from %s\n", CR_CLI_PROG, n->cmd,
              peer_addr ? peer_addr : "the partner");
    return;
  }
  /* The audit line goes to disk before the result is shown or written. */
  int rc;
  if (!serve && r->status == CR_SESSION_DONE && r->matched != NULL)
    rc = release_members(n, r, &err);
  else
    rc = cr_cli_audit_session_end(&n->audit, r, peer_addr, peer_fp, NULL, &err);
  if (rc) {
    n->release_rc = rc;
    snprintf(n->release_msg, sizeof n->release_msg, "the result is withheld: %s",
             cr_error_message(&err, rc));
    cr_cli_errorf(n->cmd, "%s", n->release_msg);
    if (r->status == CR_SESSION_DONE) {
      n->failed++;
      n->last_rc = rc;
    }
    return;
  }
  /* serve prints each session as it ends; run prints once it returns. */
  if (serve) {
    if (n->o->json)
      cr_cli_print_result_json(r, n->t, peer_addr, NULL);
    else
      cr_cli_print_result_human(r, peer_addr, NULL);
  }
}

static void on_connected(void *ctx, const char *peer_addr, const uint8_t *peer_fp) {
  node_ctx *n = ctx;
  cr_error err;
  json_t *o = json_object();
  if (peer_addr)
    json_object_set_new(o, "address", json_string(peer_addr));
  if (peer_fp) {
    char hex[CR_SHA256_HEX_BYTES];
    cr_hex_encode(hex, peer_fp, CR_SHA256_BYTES);
    json_object_set_new(o, "peer_cert_sha256", json_string(hex));
  }
  json_object_set_new(o, "peer_role", json_string(cr_role_name(cr_role_other(n->role))));
  if (cr_cli_audit_event(&n->audit, "connection_accepted", o, &err) != 0)
    cr_cli_errorf(n->cmd, "audit log: %s", err.msg);
}

/* run: progress on stderr. On a terminal, one line rewritten in place
 * (phase, items, rate, time left) at most four times a second; otherwise a
 * line per phase. Never on stdout, so --json stays parseable. */
static void on_progress(void *ctx, const cr_session_progress *p) {
  node_ctx *n = ctx;
  if (n->o->quiet)
    return;
  uint64_t now = cr_now_ms();
  if (n->progress_start == 0)
    n->progress_start = now;
  int phase_changed = n->progress_phase == NULL || strcmp(n->progress_phase, p->phase) != 0;
  if (!n->progress_tty) {
    if (phase_changed && strcmp(p->phase, "done") != 0)
      fprintf(stderr, "%s run: %s (our points %llu/%llu, partner's %llu/%llu)\n", CR_CLI_PROG,
              p->phase, (unsigned long long)p->own_sent, (unsigned long long)p->own_total,
              (unsigned long long)p->peer_received, (unsigned long long)p->peer_total);
    n->progress_phase = p->phase;
    return;
  }
  if (!phase_changed && now - n->progress_last < 250)
    return;
  n->progress_last = now;
  n->progress_phase = p->phase;
  uint64_t done = p->own_sent + p->peer_received + p->digests_received;
  uint64_t total = p->own_total + p->peer_total + p->digests_due;
  double secs = (double)(now - n->progress_start) / 1000.0;
  double rate = secs > 0 ? (double)done / secs : 0;
  char left[32] = "";
  if (rate > 0 && total > done)
    snprintf(left, sizeof left, ", ~%.0fs left", (double)(total - done) / rate);
  fprintf(stderr, "\r%s run: %-17s %llu/%llu items, %.0f/s%s\033[K", CR_CLI_PROG, p->phase,
          (unsigned long long)done, (unsigned long long)total, rate, left);
  if (strcmp(p->phase, "done") == 0)
    fputc('\n', stderr);
}

static int node_admit(void *ctx, const cr_session_result *r, char *msg, size_t cap) {
  node_ctx *n = ctx;
  return cr_cli_audit_admit(&n->audit, r, msg, cap);
}

static void on_listening(void *ctx, const char *addr) {
  node_ctx *n = ctx;
  fprintf(stderr, "%s serve: listening on %s (template %s)\n", CR_CLI_PROG, addr,
          n->o->template_path);
}

static void print_data_summary(const char *cmd, const cr_dataset *d) {
  fprintf(stderr, "%s %s: %s: %llu rows, %llu accepted, %llu rejected, %zu distinct keys",
          CR_CLI_PROG, cmd, d->path ? d->path : "data", (unsigned long long)d->rows_read,
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

/* serve: the own set for a query. Queries that neither group nor filter
 * this side use the set loaded at start; the others load the file again
 * with their group column (every such load is a data access of its own). */
static int serve_load(void *ctx, const cr_query *q, const cr_session_result *res,
                      const cr_dataset **out, char *msg, size_t cap) {
  node_ctx *n = ctx;
  (void)res;
  if (q->kind == CR_QUERY_MEMBERS && (q->results_to & CR_ROLE_BIT(n->role))) {
    snprintf(msg, cap,
             "query \"%s\" returns the %s's matched rows; the %s must run it "
             "(`cleanroom run --out FILE`), not serve it",
             q->name, cr_role_name(n->role), cr_role_name(n->role));
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
  if (q->group_by[n->role] == NULL && q->where[n->role] == NULL) {
    cr_params_free(&params);
    *out = n->data;
    return 0;
  }
  if (q->where[n->role] != NULL && (rc = cr_filter_parse(&filter, q->where[n->role], q->params,
                                                         q->nparams, q->name, &err)) != 0) {
    snprintf(msg, cap, "%s", cr_error_message(&err, rc));
    cr_params_free(&params);
    return rc;
  }
  cr_dataset_options opt;
  cr_dataset_options_init(&opt);
  opt.max_reject_ratio = n->o->max_reject_ratio;
  opt.group_column = q->group_by[n->role];
  opt.filter = filter;
  opt.params = &params;
  cr_dataset *d = NULL;
  rc = cr_dataset_load(&d, n->o->data, n->t, n->role, &opt, &err);
  cr_filter_free(filter);
  cr_params_free(&params);
  if (rc) {
    snprintf(msg, cap, "%s", cr_error_message(&err, rc));
    json_t *o = json_object();
    json_object_set_new(o, "file", json_string(n->o->data));
    json_object_set_new(o, "query", json_string(q->name));
    json_object_set_new(o, "reason", json_string(msg));
    (void)cr_cli_audit_event(&n->audit, "data_load_failed", o, &err);
    return rc;
  }
  if ((rc = cr_cli_audit_event(&n->audit, "data_loaded", cr_cli_audit_data_fields(d, q->name),
                               &err)) != 0) {
    snprintf(msg, cap, "cannot record the data access in the audit log: %s", err.msg);
    cr_dataset_free(d);
    return rc;
  }
  *out = d;
  return 0;
}

static void serve_unload(void *ctx, const cr_dataset *d) {
  node_ctx *n = ctx;
  if (d != n->data)
    cr_dataset_free((cr_dataset *)d);
}

static void audit_refusal(node_ctx *n, const char *event, const char *why) {
  json_t *ev = json_object();
  if (n->o->query)
    json_object_set_new(ev, "query", json_string(n->o->query));
  json_object_set_new(ev, "reason", json_string(why));
  (void)cr_cli_audit_event(&n->audit, event, ev, NULL);
}

static void node_help(const char *cmd) {
  if (strcmp(cmd, "serve") == 0)
    printf("Usage: cleanroom serve --template T --identity DIR --data CSV --listen HOST:PORT\n"
           "                       [--once] [--json] [--max-reject-ratio R] [--timeout SEC]\n"
           "                       [--max-sessions N] [--threads N] [--audit FILE]\n"
           "                       [--quiet] [--config FILE]\n\n"
           "Waits for the partner's node and answers the queries the template lets it run.\n"
           "The node's role is the template party whose cert_sha256 is this identity's.\n"
           "Each session's result is printed when it ends (one JSON object per line with\n"
           "--json). A failed session never stops the node; --once exits after the first\n"
           "session, with its status. --max-sessions N (default 16) caps the sessions in\n"
           "progress: past it the partner is told \"busy, retry later\" (its run exits 4).\n"
           "--quiet drops the informational stderr lines (data summary, role); the line\n"
           "\"listening on HOST:PORT\" is always printed, since scripts read the port from it.\n"
           "--config FILE reads `key = value` lines (keys: the long options, e.g.\n"
           "template, identity, data, listen, json = true); command-line flags override it.\n\n"
           "Example:\n"
           "  cleanroom serve --template template.json --identity ./identity \\\n"
           "      --data customers.csv --listen 0.0.0.0:7443\n"
           "  cleanroom serve --config /etc/cleanroom/serve.conf\n\n%s",
           CR_CLI_EXIT_CODES_HELP);
  else
    printf("Usage: cleanroom run --template T --identity DIR --data CSV --peer HOST:PORT\n"
           "                     --query NAME [--param NAME=VALUE]... [--out FILE] [--json]\n"
           "                     [--max-reject-ratio R] [--timeout SEC] [--threads N]\n"
           "                     [--audit FILE] [--quiet] [--config FILE]\n\n"
           "Connects to the partner's node and runs a query of the template. Prints what\n"
           "the template releases to this side: the overlap count if it reaches the query's\n"
           "min_count, otherwise that it was suppressed.\n"
           "--json prints one object: query, role, session_id, own_set_size, peer_set_size,\n"
           "released ({\"count\": N}, {\"suppressed\": true, \"min_count\": M} or null).\n\n"
           "--param NAME=VALUE gives a query's parameter (repeat for each; a string_list\n"
           "is comma-separated). A members query writes this side's matched rows to\n"
           "--out FILE (CSV, written atomically), only if the total reaches min_count.\n"
           "--quiet drops the informational stderr lines; --config FILE reads options\n"
           "from `key = value` lines (see `cleanroom serve --help`).\n"
           "Check the way to the partner first with `cleanroom ping`.\n\n"
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
                                       {"max-sessions", required_argument, NULL, 'M'},
                                       {"param", required_argument, NULL, 'P'},
                                       {"out", required_argument, NULL, 'o'},
                                       {"audit", required_argument, NULL, 'A'},
                                       {"threads", required_argument, NULL, 'N'},
                                       {"quiet", no_argument, NULL, 'Q'},
                                       {"help", no_argument, NULL, 'h'},
                                       {NULL, 0, NULL, 0}};
  node_opts o = {0};
  o.max_reject_ratio = 0.05;
  int c;
  /* --config FILE: its options go before the command line's (src/cli/config.c). */
  if (cr_cli_config_apply(cmd, &argc, &argv) != 0)
    return EXIT_USAGE;
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
    case 'M': {
      errno = 0;
      unsigned long v = strtoul(optarg, &end, 10);
      if (!serve) {
        cr_cli_errorf(cmd, "--max-sessions is for serve");
        return EXIT_USAGE;
      }
      if (errno || end == optarg || *end || v == 0 || v > 100000) {
        cr_cli_errorf(cmd, "--max-sessions takes a number from 1 to 100000, got \"%s\"", optarg);
        return EXIT_USAGE;
      }
      o.max_sessions = (unsigned)v;
      break;
    }
    case 'P': {
      const char *eq = strchr(optarg, '=');
      if (serve) {
        cr_cli_errorf(cmd, "--param is for run; the serving node takes the runner's parameters");
        return EXIT_USAGE;
      }
      if (eq == NULL || eq == optarg || o.nparams == MAX_PARAMS) {
        cr_cli_errorf(cmd, "--param takes NAME=VALUE (at most %d), got \"%s\"", MAX_PARAMS, optarg);
        return EXIT_USAGE;
      }
      o.param_args[o.nparams++] = optarg;
      break;
    }
    case 'A':
      o.audit = optarg;
      break;
    case 'N': {
      errno = 0;
      unsigned long v = strtoul(optarg, &end, 10);
      if (errno || end == optarg || *end || v == 0 || v > 256) {
        cr_cli_errorf(cmd, "--threads takes a number from 1 to 256, got \"%s\"", optarg);
        return EXIT_USAGE;
      }
      o.threads = (unsigned)v;
      break;
    }
    case 'o':
      if (serve) {
        cr_cli_errorf(cmd, "--out is for run (the rows a members query returns to its owner)");
        return EXIT_USAGE;
      }
      o.out = optarg;
      break;
    case 'Q':
      o.quiet = 1;
      break;
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
  const char *missing = !o.template_path       ? "--template FILE"
                        : !o.identity          ? "--identity DIR"
                        : !o.data              ? "--data CSV"
                        : !o.address           ? (serve ? "--listen HOST:PORT" : "--peer HOST:PORT")
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
  node_ctx nctx;
  char *audit_path = NULL;
  cr_params params = {0};
  cr_filter *filter = NULL;
  cr_pool *pool = NULL;
  memset(&nctx, 0, sizeof nctx);
  nctx.cmd = cmd;
  nctx.o = &o;

  if ((rc = cr_crypto_init()) != 0) {
    cr_cli_errorf(cmd, "libsodium failed to initialise");
    return EXIT_INTERNAL;
  }
  if ((rc = cr_template_load(&t, o.template_path, &err)) != 0) {
    cr_cli_errorf(cmd, "%s", cr_error_message(&err, rc));
    code = EXIT_USAGE; /* unreadable or invalid: a configuration problem */
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

  /* From here on every refusal and every data access is in the log. */
  audit_path = o.audit ? strdup(o.audit) : cr_cli_audit_default_path(o.identity);
  if (audit_path == NULL || (rc = cr_cli_audit_open(&nctx.audit, audit_path, id, t, &err)) != 0) {
    cr_cli_errorf(cmd, "cannot open the audit log %s: %s", audit_path ? audit_path : "",
                  cr_error_message(&err, rc ? rc : CR_ENOMEM));
    code = EXIT_USAGE;
    goto out;
  }
  {
    char fp[CR_SHA256_HEX_BYTES], pkh[2 * CR_SIGN_PK_BYTES + 1];
    uint8_t pk[CR_SIGN_PK_BYTES];
    cr_hex_encode(fp, cr_identity_fingerprint(id), CR_SHA256_BYTES);
    cr_identity_public_key(id, pk);
    cr_hex_encode(pkh, pk, sizeof pk);
    json_t *ev = json_object();
    json_object_set_new(ev, "software", json_string(CR_SOFTWARE));
    json_object_set_new(ev, "mode", json_string(cmd));
    json_object_set_new(ev, "role", json_string(cr_role_name(role)));
    json_object_set_new(ev, "cert_sha256", json_string(fp));
    json_object_set_new(ev, "public_key", json_string(pkh));
    json_object_set_new(ev, "template_sha256", json_string(nctx.audit.th));
    json_object_set_new(ev, "template_file", json_string(o.template_path));
    json_object_set_new(ev, serve ? "listen" : "peer", json_string(o.address));
    if (!serve)
      json_object_set_new(ev, "query", json_string(o.query));
    if ((rc = cr_cli_audit_event(&nctx.audit, "node_started", ev, &err)) != 0) {
      cr_cli_errorf(cmd, "cannot write the audit log %s: %s", audit_path, err.msg);
      code = EXIT_INTERNAL;
      goto out;
    }
  }

  {
    char *sp = cr_template_sig_path(t);
    rc = sp ? cr_template_require_sigs(t, sp, &err) : CR_ENOMEM;
    free(sp);
    if (rc) {
      cr_cli_errorf(cmd, "%s", cr_error_message(&err, rc));
      audit_refusal(&nctx, "template_refused", cr_error_message(&err, rc));
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
  sc.param_names = o.param_names;
  sc.param_values = o.param_values;
  sc.nparams = o.nparams;
  const cr_query *rq = serve ? NULL : cr_template_query(t, o.query);
  if (rq != NULL) {
    /* Parameters typed as the template declares them; their canonical
     * text is what goes to the partner and into both audit logs. */
    rc = cr_params_from_args(&params, o.param_args, o.nparams, rq->params, rq->nparams, &err);
    if (rc) {
      /* Parameters the template's declarations refuse: a refusal (4). */
      cr_cli_errorf(cmd, "%s", cr_error_message(&err, rc));
      audit_refusal(&nctx, "run_refused", cr_error_message(&err, rc));
      code = EXIT_REFUSED;
      goto out;
    }
    for (size_t i = 0; i < params.n; i++) {
      o.param_names[i] = params.v[i].name;
      o.param_values[i] = params.v[i].text;
    }
    o.nparams = params.n;
    sc.nparams = o.nparams;
  }
  if (!serve && (rc = cr_session_check_local(&sc, (int64_t)time(NULL), &err)) != 0) {
    cr_cli_errorf(cmd, "%s", cr_error_message(&err, rc));
    audit_refusal(&nctx, "run_refused", cr_error_message(&err, rc));
    code = cr_cli_exit_code(rc, 0);
    goto out;
  }
  if (rq != NULL && rq->kind == CR_QUERY_MEMBERS && (rq->results_to & CR_ROLE_BIT(role)) &&
      o.out == NULL) {
    cr_cli_errorf(cmd,
                  "query \"%s\" returns this side's matched rows: name the file to "
                  "write them to with --out FILE",
                  rq->name);
    code = EXIT_USAGE;
    goto out;
  }

  if (rq != NULL) {
    if (rq->where[role] != NULL && (rc = cr_filter_parse(&filter, rq->where[role], rq->params,
                                                         rq->nparams, rq->name, &err)) != 0) {
      cr_cli_errorf(cmd, "%s", cr_error_message(&err, rc));
      code = EXIT_USAGE;
      goto out;
    }
  }
  cr_dataset_options dopt;
  cr_dataset_options_init(&dopt);
  dopt.max_reject_ratio = o.max_reject_ratio;
  dopt.group_column = rq ? rq->group_by[role] : NULL;
  dopt.filter = filter;
  dopt.params = &params;
  if ((rc = cr_dataset_load(&data, o.data, t, role, &dopt, &err)) != 0) {
    cr_cli_errorf(cmd, "%s", cr_error_message(&err, rc));
    json_t *ev = json_object();
    json_object_set_new(ev, "file", json_string(o.data));
    json_object_set_new(ev, "reason", json_string(cr_error_message(&err, rc)));
    (void)cr_cli_audit_event(&nctx.audit, "data_load_failed", ev, NULL);
    code = rc == CR_EIO ? EXIT_DATA : cr_cli_exit_code(rc, 0);
    goto out;
  }
  if (!o.quiet)
    print_data_summary(cmd, data);
  if ((rc = cr_cli_audit_event(&nctx.audit, "data_loaded", cr_cli_audit_data_fields(data, o.query),
                               &err)) != 0) {
    cr_cli_errorf(cmd, "cannot write the audit log: %s", err.msg);
    code = EXIT_INTERNAL;
    goto out;
  }
  sc.data = data;
  if ((rc = cr_session_check_local(&sc, (int64_t)time(NULL), &err)) != 0) {
    cr_cli_errorf(cmd, "%s", cr_error_message(&err, rc));
    audit_refusal(&nctx, serve ? "serve_refused" : "run_refused", cr_error_message(&err, rc));
    code = cr_cli_exit_code(rc, 0);
    goto out;
  }

  if (serve) {
    /* Every filter this node may have to apply must parse and find its
     * columns in our file, before anyone connects. */
    for (size_t i = 0; i < t->nqueries; i++) {
      const cr_query *q = &t->queries[i];
      cr_filter *f = NULL;
      const char *const *cols;
      if (q->where[role] == NULL)
        continue;
      if ((rc = cr_filter_parse(&f, q->where[role], q->params, q->nparams, q->name, &err)) != 0) {
        cr_cli_errorf(cmd, "%s", cr_error_message(&err, rc));
        code = EXIT_USAGE;
        goto out;
      }
      size_t nc = cr_filter_columns(f, &cols);
      for (size_t j = 0; j < nc && rc == 0; j++) {
        size_t k = 0;
        while (k < data->ncolumns && strcmp(data->columns[k], cols[j]) != 0)
          k++;
        if (k == data->ncolumns) {
          cr_cli_errorf(cmd, "query \"%s\" filters on column \"%s\", which %s does not have",
                        q->name, cols[j], o.data);
          rc = CR_EDATA;
        }
      }
      cr_filter_free(f);
      if (rc) {
        code = EXIT_DATA;
        goto out;
      }
    }
  }

  nctx.cmd = cmd;
  nctx.o = &o;
  nctx.t = t;
  nctx.role = role;
  nctx.data = data;
  nctx.rq = rq;
  nctx.filter = filter;
  cr_node_config nc = {0};
  nc.session.tmpl = t;
  nc.id = id;
  nc.session.data = data;
  nc.session.role = role;
  nc.address = o.address;
  nc.session.query = o.query;
  nc.once = o.once;
  nc.idle_timeout_ms = o.timeout_ms;
  nc.handshake_timeout_ms = o.timeout_ms;
  nc.max_sessions = o.max_sessions;
  nc.session.software = CR_SOFTWARE;
  nc.on_session = on_session;
  nc.on_listening = on_listening;
  nc.on_connected = on_connected;
  nc.on_progress = serve ? NULL : on_progress;
  nc.on_closed = on_node_closed;
  nctx.progress_tty = isatty(2);
  nc.session.admit = node_admit;
  nc.session.admit_ctx = &nctx;
  nc.session.load = serve ? serve_load : NULL;
  nc.session.unload = serve ? serve_unload : NULL;
  nc.session.load_ctx = &nctx;
  nc.session.param_names = o.param_names;
  nc.session.param_values = o.param_values;
  nc.session.nparams = o.nparams;
  nc.ctx = &nctx;
  /* The calling thread works too: threads - 1 helpers. */
  unsigned threads = o.threads ? o.threads : cr_cpu_count();
  if (threads > 1 && (rc = cr_pool_new(&pool, threads - 1)) != 0) {
    cr_cli_errorf(cmd, "cannot start %u worker threads: %s", threads - 1, cr_strerror(rc));
    code = EXIT_INTERNAL;
    goto out;
  }
  nc.session.pool = pool;

  if (serve) {
    if (!o.quiet)
      fprintf(stderr, "%s serve: this node is the %s (%s)\n", CR_CLI_PROG, cr_role_name(role),
              t->parties[role].org);
    rc = node_exec(&nctx, &nc, 1, NULL, &err);
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
    if (!o.quiet)
      fprintf(stderr, "%s run: this node is the %s (%s); running \"%s\" with %s\n", CR_CLI_PROG,
              cr_role_name(role), t->parties[role].org, o.query, o.address);
    rc = node_exec(&nctx, &nc, 0, &res, &err);
    if (rc == 0 && res.status == CR_SESSION_DONE && nctx.release_rc == 0) {
      cr_cli_members *mp = nctx.have_members ? &nctx.members : NULL;
      if (o.json)
        cr_cli_print_result_json(&res, t, NULL, mp);
      else
        cr_cli_print_result_human(&res, NULL, mp);
    } else if (rc == 0 && nctx.release_rc != 0) {
      /* Completed, but its release could not be recorded or written. */
      code = EXIT_INTERNAL;
    } else {
      if (nctx.sessions == 0) /* the node did not report it: say it here */
        cr_cli_errorf(cmd, "%s", cr_error_message(&err, rc));
      if (nctx.sessions == 0 && rc != 0) {
        json_t *ev = json_object();
        json_object_set_new(ev, "peer", json_string(o.address));
        json_object_set_new(ev, "error", json_string(cr_err_name(rc)));
        json_object_set_new(ev, "reason", json_string(cr_error_message(&err, rc)));
        (void)cr_cli_audit_event(&nctx.audit, "run_failed", ev, NULL);
      }
      if (o.json)
        cr_cli_print_result_json(&res, t, NULL, NULL);
      code = cr_cli_exit_code(rc ? rc : res.error, res.wire_error);
    }
    cr_session_result_free_outputs(&res);
  }

out:
  cr_pool_free(pool);
  cr_filter_free(filter);
  cr_params_free(&params);
  cr_cli_audit_close(&nctx.audit);
  free(audit_path);
  cr_dataset_free(data);
  cr_identity_free(id);
  cr_template_free(t);
  return code;
}
