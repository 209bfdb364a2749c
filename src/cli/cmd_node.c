/* serve and run: the node's two ways of taking part in a session. */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <signal.h>
#include <sys/resource.h>

#include <uv.h>

#include <jansson.h>

#include "cli/cli.h"
#include "cleanroom/party.h"
#include "cleanroom/dataset.h"

/* ---- serve and run ------------------------------------------------------ */

#define MAX_PARAMS 64

typedef struct node_opts {
  const char *template_path, *identity, *data, *address, *query, *out, *audit;
  const char *data_query;             /* --data-query: a database source's SELECT */
  char delimiter;                     /* --delimiter: a CSV's separator; 0 detects */
  int force;                          /* --force: --out may replace a file */
  const char *collaborations;         /* serve --collaborations DIR */
  int check;                          /* serve --check */
  unsigned retry;                     /* run --retry N */
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
  cr_cli_memory_opts mem; /* --memory, --work-dir, --spill-max */
} node_opts;

typedef struct node_ctx {
  const char *cmd;
  node_opts *o;
  cr_party *party;
  const cr_template *t;
  uv_signal_t sig[3];
  int sig_live;
  /* Progress on stderr: run's one session, serve's per session. */
  int progress_tty;
  const char *progress_phase;
  uint64_t progress_start, progress_last;
  cr_session_progress last; /* run: the latest report (phase: a static string) */
  int have_last;
  uv_timer_t tick; /* run: reprints where it is when nothing new arrives */
  int tick_live;
  struct serve_progress {
    char peer[64];
    const char *phase; /* last printed */
    uint64_t last, start;
    json_t *phases; /* seconds per phase, for its --json line */
    const char *cur;
    uint64_t t0;
  } sp[32]; /* serve: the sessions reported on, by partner address */
  /* run: seconds per phase ("loading", "connecting", then the session's) */
  json_t *phases;
  const char *phase_cur;
  uint64_t phase_t0, session_start;
  int sessions, failed;
  int closed_rc, closed_wire;
  int closed;
  int last_rc, last_wire; /* serve: the last session's outcome (--once) */
  int signum;             /* the signal that stopped the node, 0 if none */
  int collabs_serving;    /* serve: collaborations loaded or added */
} node_ctx;

/* Set by cleanroom-mpi's rank 0 (cr_cli_set_cluster); NULL: one process. */
static const cr_cli_cluster *g_cluster;

void cr_cli_set_cluster(const cr_cli_cluster *c) { g_cluster = c; }

static void report_failure(const char *cmd, const cr_session_result *r, const char *peer_addr) {
  fprintf(stderr, "%s %s: session%s%s failed: %s\n", CR_CLI_PROG, cmd, peer_addr ? " with " : "",
          peer_addr ? peer_addr : "",
          r->error_msg[0] ? cr_cli_safe(r->error_msg) : cr_strerror(r->error));
}

static json_t *resources_json(node_ctx *n, json_t *phases);
static json_t *session_phases(node_ctx *n, const cr_party_session *s);

/* --json: the result, with what it cost (phases, peak RSS, spill). */
static void print_result(node_ctx *n, const cr_party_session *s) {
  const cr_template *t = s->tmpl ? s->tmpl : n->t;
  json_t *phases = session_phases(n, s);
  if (n->o->json)
    cr_cli_print_result_json(s, t, s->peer_addr, resources_json(n, phases));
  else {
    json_decref(phases);
    cr_cli_print_result_human(s, s->peer_addr);
  }
}

/* serve: one line per session on stderr (the node's log): collaboration,
 * partner, query, outcome and duration. Released numbers stay on stdout. */
static void log_session(node_ctx *n, const cr_party_session *s) {
  const cr_session_result *r = s->res;
  const char *outcome;
  if (s->release_rc)
    outcome = "withheld";
  else if (r->status != CR_SESSION_DONE)
    outcome = r->wire_error == CR_WIRE_BUSY ? "busy" : "failed";
  else if (!r->receives)
    outcome = "released to the partner";
  else if (r->suppressed)
    outcome = "suppressed";
  else
    outcome = "released";
  fprintf(stderr,
          "%s %s: session: collaboration=\"%s\" partner=\"%s\" peer=%s query=\"%s\" "
          "outcome=\"%s\" duration_ms=%.0f\n",
          CR_CLI_PROG, n->cmd, cr_cli_safe(s->collaboration), cr_cli_safe(s->partner),
          s->peer_addr ? cr_cli_safe(s->peer_addr) : "-", r->query[0] ? cr_cli_safe(r->query) : "-",
          outcome, s->duration_ms);
}

/* serve: each session as it ends (already recorded in the audit log). */
static void on_session(void *ctx, const cr_party_session *s) {
  node_ctx *n = ctx;
  const cr_session_result *r = s->res;
  n->sessions++;
  n->last_rc = r->status == CR_SESSION_DONE ? 0 : (r->error ? r->error : CR_EINTERNAL);
  n->last_wire = r->wire_error;
  if (r->status != CR_SESSION_DONE) {
    n->failed++;
    report_failure(n->cmd, r, s->peer_addr);
  }
  if (s->collaboration != NULL && !n->o->quiet)
    log_session(n, s);
  if (s->release_rc) {
    cr_cli_errorf(n->cmd, "%s", s->release_msg);
    if (r->status == CR_SESSION_DONE) {
      n->failed++;
      n->last_rc = s->release_rc;
    }
    json_decref(session_phases(n, s));
    return;
  }
  print_result(n, s);
}

static void on_ping(void *ctx, const cr_party_session *s) {
  node_ctx *n = ctx;
  if (!n->o->quiet)
    fprintf(stderr, "%s %s: answered a ping from %s (collaboration \"%s\", partner \"%s\")\n",
            CR_CLI_PROG, n->cmd, s->peer_addr ? cr_cli_safe(s->peer_addr) : "the partner",
            cr_cli_safe(s->collaboration), cr_cli_safe(s->partner));
}

/* A collaboration as a line: name, role, partner, template, data. */
static void collab_line(FILE *f, const char *prefix, const cr_party_collab_info *c) {
  fprintf(f, "%s\"%s\"", prefix, cr_cli_safe(c->name));
  if (c->t != NULL) {
    char th[CR_SHA256_HEX_BYTES];
    cr_hex_encode(th, c->t->sha256, CR_SHA256_BYTES);
    cr_role other = cr_role_other(c->role);
    fprintf(f, ": this node is the %s (%s), the partner the %s (%s); template %.16s...",
            cr_role_name(c->role), cr_cli_safe(c->t->parties[c->role].org), cr_role_name(other),
            cr_cli_safe(c->t->parties[other].org), th);
  }
  if (c->data != NULL)
    fprintf(f, "; data %s", cr_cli_safe(c->data));
  if (c->t != NULL && !c->enabled)
    fprintf(f, " (enabled = false: not served)");
  fputc('\n', f);
}

/* serve: the collaborations as they load, change and go. */
static void on_collab(void *ctx, const cr_party_collab_info *c) {
  node_ctx *n = ctx;
  if (strcmp(c->change, "loaded") == 0 || strcmp(c->change, "added") == 0)
    n->collabs_serving++;
  if (strcmp(c->change, "refused") == 0) {
    cr_cli_errorf(n->cmd, "collaboration \"%s\" cannot serve: %s; %s", cr_cli_safe(c->name),
                  cr_cli_safe(c->error),
                  c->serving ? "its previous version keeps serving" : "it is not served");
    return;
  }
  if (n->o->quiet)
    return;
  char prefix[64];
  snprintf(prefix, sizeof prefix, "%s %s: collaboration %s ", CR_CLI_PROG, n->cmd, c->change);
  collab_line(stderr, prefix, c);
}

static void close_signals(node_ctx *n) {
  for (int i = 0; i < n->sig_live; i++)
    if (!uv_is_closing((uv_handle_t *)&n->sig[i]))
      uv_close((uv_handle_t *)&n->sig[i], NULL);
  if (n->tick_live && !uv_is_closing((uv_handle_t *)&n->tick))
    uv_close((uv_handle_t *)&n->tick, NULL);
}

static void on_closed(void *ctx, int rc, const cr_error *err, const cr_party_session *s) {
  node_ctx *n = ctx;
  n->closed = 1;
  n->closed_rc = rc;
  close_signals(n);
  if (strcmp(n->cmd, "run") != 0) {
    if (rc && n->sessions == 0)
      cr_cli_errorf(n->cmd, "%s", cr_cli_safe(cr_error_message(err, rc)));
    return;
  }
  /* run: the one session's outcome, recorded before we print it. */
  const cr_session_result *r = s ? s->res : NULL;
  n->closed_wire = r ? r->wire_error : 0;
  if (rc == 0 && r != NULL && r->status == CR_SESSION_DONE) {
    print_result(n, s);
    return;
  }
  if (s != NULL && s->release_rc) {
    cr_cli_errorf(n->cmd, "%s", s->release_msg);
    n->closed_rc = s->release_rc;
    n->closed_wire = -1; /* withheld: storage (CR_EIO) or an internal failure */
    return;
  }
  if (r != NULL && r->status == CR_SESSION_FAILED)
    report_failure(n->cmd, r, NULL);
  else
    cr_cli_errorf(n->cmd, "%s", cr_cli_safe(cr_error_message(err, rc)));
  if (n->o->json && s != NULL)
    cr_cli_print_result_json(s, n->t, NULL, resources_json(n, session_phases(n, s)));
  if (rc == 0 && r != NULL)
    n->closed_rc = r->error ? r->error : CR_EINTERNAL;
}

/*
 * Progress on stderr, never stdout (so --json stays parseable), at least
 * every CR_PROGRESS_TTY_MS on a terminal and every CR_PROGRESS_LOG_MS in a
 * log, even while nothing arrives from the partner (the tick reprints the
 * last report with the time spent): a run on 150k keys must not look hung.
 * run: on a terminal one line rewritten in place (phase, items, rate, time
 * left); otherwise a line per phase and per interval. serve: a line per
 * session and phase, then per interval, naming the partner and the query.
 */
#define CR_PROGRESS_TTY_MS 2000
#define CR_PROGRESS_LOG_MS 10000

/* Seconds per phase (--json "phases"): the time since the last change is
 * added to the phase that was current, and next becomes current. */
static void phase_switch(json_t **phases, const char **cur, uint64_t *t0, const char *next,
                         uint64_t now) {
  if (*phases == NULL)
    *phases = json_object();
  if (*cur != NULL && *phases != NULL) {
    json_t *had = json_object_get(*phases, *cur);
    double s = (had ? json_real_value(had) : 0.0) + (double)(now - *t0) / 1000.0;
    json_object_set_new(*phases, *cur, json_real(s));
  }
  *cur = next;
  *t0 = now;
}

/* What a session cost this process (--json): the phases (taken, may be
 * NULL), the peak resident set and what the node has spilled so far. */
static json_t *resources_json(node_ctx *n, json_t *phases) {
  json_t *o = json_object();
  if (phases != NULL) {
    /* Milliseconds are enough. */
    const char *k;
    json_t *v;
    json_object_foreach(phases, k, v) {
      json_real_set(v, (double)(long long)(json_real_value(v) * 1000.0 + 0.5) / 1000.0);
    }
    json_object_set_new(o, "phases", phases);
  }
  struct rusage ru;
  memset(&ru, 0, sizeof ru);
  (void)getrusage(RUSAGE_SELF, &ru);
  json_object_set_new(o, "peak_rss_bytes", json_integer((json_int_t)ru.ru_maxrss * 1024));
  cr_spill_stats st;
  cr_party_spill_stats(n->party, &st);
  json_t *sp = json_object();
  json_object_set_new(sp, "bytes_written", json_integer((json_int_t)st.disk_written));
  json_object_set_new(sp, "peak_bytes", json_integer((json_int_t)st.disk_peak));
  json_object_set_new(sp, "runs", json_integer((json_int_t)st.runs_written));
  json_object_set_new(sp, "memory_budget_bytes", json_integer((json_int_t)st.memory_bytes));
  json_object_set_new(sp, "memory_peak_bytes", json_integer((json_int_t)st.memory_peak));
  json_object_set_new(o, "spill", sp);
  if (g_cluster != NULL) {
    /* cleanroom-mpi: the job's processes and hosts (peak_rss_bytes is
     * rank 0's; the other ranks hold one batch share at a time). */
    json_t *cl = json_object(), *hosts = json_array();
    const char *h = g_cluster->hosts ? g_cluster->hosts : "";
    while (*h) {
      size_t len = strcspn(h, ",");
      json_array_append_new(hosts, json_stringn(h, len));
      h += len + (h[len] == ',');
    }
    json_object_set_new(cl, "processes", json_integer((json_int_t)g_cluster->processes));
    json_object_set_new(cl, "hosts", hosts);
    json_object_set_new(cl, "threads_per_process", json_integer((json_int_t)g_cluster->threads));
    json_object_set_new(o, "cluster", cl);
  }
  return o;
}

/* "1.2M" */
static void human_count(char *buf, size_t cap, double v) {
  if (v >= 1e9)
    snprintf(buf, cap, "%.1fG", v / 1e9);
  else if (v >= 1e6)
    snprintf(buf, cap, "%.1fM", v / 1e6);
  else if (v >= 1e4)
    snprintf(buf, cap, "%.0fk", v / 1e3);
  else
    snprintf(buf, cap, "%.0f", v);
}

/* "12s", "3m05s", "1h02m" */
static void human_secs(char *buf, size_t cap, double s) {
  unsigned long t = (unsigned long)(s + 0.5);
  if (t < 60)
    snprintf(buf, cap, "%lus", t);
  else if (t < 3600)
    snprintf(buf, cap, "%lum%02lus", t / 60, t % 60);
  else
    snprintf(buf, cap, "%luh%02lum", t / 3600, (t % 3600) / 60);
}

/* "exchanging sets 120k/2.0M elements, 48k/s, ~40s left": elements are
 * our points sent, the partner's points received and our digests back. */
static void progress_text(char *buf, size_t cap, const cr_session_progress *p, double secs) {
  uint64_t done = p->own_sent + p->peer_received + p->digests_received;
  uint64_t total = p->own_total + p->peer_total + p->digests_due;
  double rate = secs > 0 ? (double)done / secs : 0;
  char d[32], t[32], r[32], left[64] = "";
  human_count(d, sizeof d, (double)done);
  human_count(t, sizeof t, (double)total);
  human_count(r, sizeof r, rate);
  if (rate > 0 && total > done) {
    char l[32];
    human_secs(l, sizeof l, (double)(total - done) / rate);
    snprintf(left, sizeof left, ", ~%s left", l);
  }
  snprintf(buf, cap, "%s %s/%s elements, %s/s%s", p->phase, d, t, r, left);
}

static void progress_print(node_ctx *n, const cr_session_progress *p, uint64_t now) {
  double secs = (double)(now - n->progress_start) / 1000.0;
  /* The rate counts from the first report (the session), not the load. */
  double ssecs = n->session_start ? (double)(now - n->session_start) / 1000.0 : secs;
  char el[32], text[256];
  n->progress_last = now;
  human_secs(el, sizeof el, secs);
  progress_text(text, sizeof text, p, ssecs);
  if (!n->progress_tty) {
    /* A log line: the parts too. */
    fprintf(stderr,
            "%s run: %s: %s (our points %llu/%llu, partner's %llu/%llu, our digests back "
            "%llu/%llu)\n",
            CR_CLI_PROG, el, text, (unsigned long long)p->own_sent,
            (unsigned long long)p->own_total, (unsigned long long)p->peer_received,
            (unsigned long long)p->peer_total, (unsigned long long)p->digests_received,
            (unsigned long long)p->digests_due);
    return;
  }
  fprintf(stderr, "\r%s run: %s: %s\033[K", CR_CLI_PROG, el, text);
  if (strcmp(p->phase, "done") == 0)
    fputc('\n', stderr);
}

static struct serve_progress *serve_entry(node_ctx *n, const char *peer) {
  for (size_t i = 0; i < sizeof n->sp / sizeof n->sp[0]; i++)
    if (n->sp[i].peer[0] && strcmp(n->sp[i].peer, peer) == 0)
      return &n->sp[i];
  return NULL;
}

static void serve_progress(node_ctx *n, const cr_session_progress *p, uint64_t now) {
  const char *peer = p->peer_addr ? p->peer_addr : "the partner";
  struct serve_progress *e = serve_entry(n, peer);
  int done = strcmp(p->phase, "done") == 0;
  if (e == NULL && !done && (p->query == NULL || p->query[0] == '\0'))
    return; /* the runner's Hello has not come yet (or a ping) */
  if (e == NULL) {
    if (done)
      return; /* the result line says it */
    struct serve_progress *oldest = &n->sp[0];
    for (size_t i = 0; i < sizeof n->sp / sizeof n->sp[0]; i++) {
      if (n->sp[i].peer[0] == '\0') {
        oldest = &n->sp[i];
        break;
      }
      if (n->sp[i].last < oldest->last)
        oldest = &n->sp[i];
    }
    e = oldest;
    json_decref(e->phases);
    memset(e, 0, sizeof *e);
    snprintf(e->peer, sizeof e->peer, "%s", peer);
    e->start = now;
  }
  if (e->cur == NULL || strcmp(e->cur, p->phase) != 0)
    phase_switch(&e->phases, &e->cur, &e->t0, p->phase, now);
  int changed = e->phase == NULL || strcmp(e->phase, p->phase) != 0;
  if (done)
    return; /* kept for the session's --json line (on_session) */
  uint64_t every = n->progress_tty ? CR_PROGRESS_TTY_MS : CR_PROGRESS_LOG_MS;
  if (n->o->quiet || (!changed && now - e->last < every))
    return;
  e->phase = p->phase;
  e->last = now;
  char text[200];
  progress_text(text, sizeof text, p, (double)(now - e->start) / 1000.0);
  fprintf(stderr, "%s serve: session with %s (query %s): %s\n", CR_CLI_PROG, cr_cli_safe(peer),
          p->query && p->query[0] ? cr_cli_safe(p->query) : "-", text);
}

/* The phases of the session s ended (taken from where they were kept):
 * run's, or the serve entry of its partner's address. NULL if none. */
static json_t *session_phases(node_ctx *n, const cr_party_session *s) {
  uint64_t now = cr_now_ms();
  json_t *ph = NULL;
  if (strcmp(n->cmd, "run") == 0) {
    if (n->phase_cur != NULL && strcmp(n->phase_cur, "done") != 0)
      phase_switch(&n->phases, &n->phase_cur, &n->phase_t0, "done", now);
    ph = n->phases;
    n->phases = NULL;
    n->phase_cur = NULL;
    return ph;
  }
  struct serve_progress *e = s->peer_addr ? serve_entry(n, s->peer_addr) : NULL;
  if (e == NULL)
    return NULL;
  if (e->cur != NULL && strcmp(e->cur, "done") != 0)
    phase_switch(&e->phases, &e->cur, &e->t0, "done", now);
  ph = e->phases;
  memset(e, 0, sizeof *e);
  return ph;
}

static void on_progress(void *ctx, const cr_session_progress *p) {
  node_ctx *n = ctx;
  uint64_t now = cr_now_ms();
  if (strcmp(n->cmd, "serve") == 0) {
    serve_progress(n, p, now);
    return;
  }
  if (n->progress_start == 0)
    n->progress_start = now;
  if (n->session_start == 0)
    n->session_start = now;
  int phase_changed = n->progress_phase == NULL || strcmp(n->progress_phase, p->phase) != 0;
  if (phase_changed)
    phase_switch(&n->phases, &n->phase_cur, &n->phase_t0, p->phase, now);
  n->last = *p;
  n->last.query = NULL;
  n->last.peer_addr = NULL;
  n->have_last = 1;
  n->progress_phase = p->phase;
  if (n->o->quiet)
    return;
  uint64_t every = n->progress_tty ? CR_PROGRESS_TTY_MS : CR_PROGRESS_LOG_MS;
  if (phase_changed ? strcmp(p->phase, "done") != 0 || n->progress_tty
                    : now - n->progress_last >= every)
    progress_print(n, p, now);
}

/* run: where it is, again, when nothing has been printed for an interval. */
static void on_tick(uv_timer_t *t) {
  node_ctx *n = t->data;
  uint64_t now = cr_now_ms();
  uint64_t every = n->progress_tty ? CR_PROGRESS_TTY_MS : CR_PROGRESS_LOG_MS;
  if (n->o->quiet || now - n->progress_last + 50 < every)
    return;
  if (n->have_last) {
    progress_print(n, &n->last, now);
  } else {
    n->progress_last = now;
    fprintf(stderr, "%s%s run: %.0fs: connecting to %s%s", n->progress_tty ? "\r" : "", CR_CLI_PROG,
            (double)(now - n->progress_start) / 1000.0, n->o->address,
            n->progress_tty ? "\033[K" : "\n");
  }
}

static void on_listening(void *ctx, const char *addr) {
  node_ctx *n = ctx;
  if (n->o->collaborations) {
    fprintf(stderr, "%s serve: listening on %s (collaborations in %s)\n", CR_CLI_PROG, addr,
            n->o->collaborations);
    if (n->collabs_serving == 0)
      fprintf(stderr,
              "%s serve: warning: no collaboration serves yet; one added to %s (a "
              "sub-directory with %s and %s) is picked up without a restart\n",
              CR_CLI_PROG, n->o->collaborations, CR_COLLAB_TEMPLATE_FILE, CR_COLLAB_CONF_FILE);
  } else
    fprintf(stderr, "%s serve: listening on %s (template %s)\n", CR_CLI_PROG, addr,
            n->o->template_path);
}

static void on_data(void *ctx, const cr_dataset *d) {
  node_ctx *n = ctx;
  if (n->o->quiet)
    return;
  fprintf(stderr, "%s %s: %s: %llu rows, %llu accepted, %llu rejected, %zu distinct keys",
          CR_CLI_PROG, n->cmd, d->path ? d->path : "data", (unsigned long long)d->rows_read,
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
    fprintf(stderr, "; first at %s", d->pos_unit ? d->pos_unit : "line");
    for (size_t i = 0; i < d->nreject_lines; i++)
      fprintf(stderr, "%s %llu", i ? "," : "", (unsigned long long)d->reject_lines[i]);
    fprintf(stderr, ")");
  }
  fprintf(stderr, "\n");
  cr_cli_print_data_keys(d, n->t);
}

/* SIGINT / SIGTERM: the program's decision, not the library's. SIGHUP
 * (serve): look at the collaborations again now. */
static void on_signal(uv_signal_t *h, int signum) {
  node_ctx *n = h->data;
  if (signum == SIGHUP) {
    if (!n->o->quiet)
      fprintf(stderr, "%s %s: SIGHUP: looking for changed collaborations\n", CR_CLI_PROG, n->cmd);
    (void)cr_party_reload(n->party);
    return;
  }
  if (n->signum == 0)
    n->signum = signum;
  if (g_cluster != NULL && g_cluster->on_stop != NULL)
    g_cluster->on_stop(g_cluster->ctx);
  cr_party_stop(n->party);
}

/* SIGHUP before serve listens (its data loading, which can take minutes):
 * the default action would end the node, and under systemd a reload then
 * stops the service for good (a death by SIGHUP is a clean exit to it).
 * Remembered instead, and acted on once the node listens. */
static volatile sig_atomic_t g_early_hup;
static void early_hup(int signum) {
  (void)signum;
  g_early_hup = 1;
}

/* serve --check: each collaboration, ok or why not. */
typedef struct check_ctx {
  int json;
  size_t ok, bad;
} check_ctx;

static void on_check(void *ctx, const cr_party_collab_info *c) {
  check_ctx *k = ctx;
  int good = strcmp(c->change, "refused") != 0;
  good ? k->ok++ : k->bad++;
  if (k->json) {
    json_t *o = json_object();
    json_object_set_new(o, "collaboration", cr_cli_jtext(c->name));
    json_object_set_new(o, "ok", json_boolean(good));
    if (c->t != NULL) {
      char th[CR_SHA256_HEX_BYTES];
      cr_hex_encode(th, c->t->sha256, CR_SHA256_BYTES);
      json_object_set_new(o, "template_sha256", json_string(th));
      json_object_set_new(o, "role", json_string(cr_role_name(c->role)));
      json_object_set_new(o, "partner", cr_cli_jtext(c->t->parties[cr_role_other(c->role)].org));
    }
    if (c->data)
      json_object_set_new(o, "data", cr_cli_jtext(c->data));
    if (!good)
      json_object_set_new(o, "error", cr_cli_jtext(c->error));
    cr_cli_json_print(o);
    return;
  }
  if (good)
    collab_line(stdout, "ok    ", c);
  else
    printf("FAIL  \"%s\": %s\n", cr_cli_safe(c->name), cr_cli_safe(c->error));
}

static void node_help(const char *cmd) {
  if (strcmp(cmd, "serve") == 0)
    printf("Usage: cleanroom serve --template T --identity DIR --data SOURCE --listen HOST:PORT\n"
           "                       [--data-query SQL] [--delimiter D]\n"
           "       cleanroom serve --collaborations DIR --identity DIR --listen HOST:PORT\n"
           "                       [--once] [--json] [--max-reject-ratio R] [--timeout SEC]\n"
           "                       [--max-sessions N] [--threads N] [--audit FILE]\n"
           "                       [--quiet] [--config FILE] [--check]\n"
           "                       [--memory MiB] [--work-dir DIR] [--spill-max SIZE]\n\n"
           "Waits for the partners' nodes and answers the queries their templates let them\n"
           "run. The node's role in each collaboration is the template party whose\n"
           "cert_sha256 is this identity's.\n\n"
           "One collaboration: --template T --data SOURCE. All of them, on one listener:\n"
           "--collaborations DIR, one sub-directory per collaboration:\n"
           "  DIR/NAME/template.json       the template (and template.json.sig where it\n"
           "                               requires signatures)\n"
           "  DIR/NAME/collaboration.conf  `key = value` lines: data = SOURCE (required),\n"
           "                               data_query = SQL, delimiter = D,\n"
           "                               audit = FILE, max_sessions = N, timeout = SEC,\n"
           "                               max_reject_ratio = R, enabled = true|false,\n"
           "                               memory = MiB, work_dir = DIR (a budget and a\n"
           "                               work directory of its own: docs/memory.md)\n"
           "A partner's connection goes to the collaboration whose template pins its\n"
           "certificate and whose hash its Hello names. The directory is watched: a new,\n"
           "changed or removed collaboration takes effect within seconds (SIGHUP: at\n"
           "once); a broken one is reported and its previous version keeps serving;\n"
           "sessions in progress finish with the version they began with. A changed data\n"
           "file is read again by the next session. --check loads every collaboration\n"
           "(template, signatures, conf, data) and exits: 0 if all can serve.\n\n"
           "Each session's result is printed when it ends (one JSON object per line with\n"
           "--json), and a line on stderr names its collaboration, partner, query, outcome\n"
           "and duration. A failed session never stops the node; --once exits after the\n"
           "first session, with its status. --max-sessions N (default 16) caps the sessions\n"
           "in progress: past it the partner is told \"busy, retry later\" (its run exits 6).\n"
           "The audit log is the identity's (DIR/audit.jsonl, or --audit FILE), shared with\n"
           "every collaboration and with `run`s of the same identity.\n"
           "--quiet drops the informational stderr lines (data summary, role, sessions);\n"
           "\"listening on HOST:PORT\" and errors are always printed.\n"
           "--config FILE reads `key = value` lines (keys: the long options, e.g.\n"
           "collaborations, identity, data, data_query, listen, json = true); command-line\n"
           "flags override it. The port is bound before any data is loaded, so a port in\n"
           "use fails at once.\n"
           "All sessions of the node share its --memory budget and work directory (a\n"
           "collaboration may have a lower budget of its own: memory = MiB). With --json each\n"
           "session's line also has \"phases\" (seconds per phase), \"peak_rss_bytes\" and\n"
           "\"spill\" (the node's: bytes_written, peak_bytes, runs).\n\n%s\n%s\n"
           "Examples:\n"
           "  cleanroom serve --template template.json --identity ./identity \\\n"
           "      --data customers.csv --listen 0.0.0.0:7443\n"
           "  cleanroom serve --template template.json --identity ./identity \\\n"
           "      --data postgresql://cleanroom@db.internal/crm --listen 0.0.0.0:7443 \\\n"
           "      --data-query 'SELECT email, segment FROM customers WHERE active'\n"
           "  cleanroom serve --collaborations /etc/cleanroom/collaborations \\\n"
           "      --identity /var/lib/cleanroom/identity --listen 0.0.0.0:7443\n"
           "  cleanroom serve --config /etc/cleanroom/serve.conf\n\n%s",
           CR_CLI_DATA_SOURCES_HELP, CR_CLI_MEMORY_HELP, CR_CLI_EXIT_CODES_HELP);
  else
    printf("Usage: cleanroom run --template T --identity DIR --data SOURCE --query NAME\n"
           "                     [--data-query SQL] [--delimiter D]\n"
           "                     [--peer HOST:PORT] [--param NAME=VALUE]...\n"
           "                     [--out FILE [--force]] [--json] [--max-reject-ratio R]\n"
           "                     [--timeout SEC] [--retry N] [--threads N] [--audit FILE]\n"
           "                     [--quiet] [--config FILE]\n"
           "                     [--memory MiB] [--work-dir DIR] [--spill-max SIZE]\n\n"
           "Connects to the partner's node and runs a query of the template. Prints what\n"
           "the template releases to this side: the overlap count if it reaches the query's\n"
           "min_count, otherwise that it was suppressed.\n"
           "--json prints one object: query, role, session_id, own_set_size, peer_set_size,\n"
           "released ({\"count\": N}, {\"suppressed\": true, \"min_count\": M} or null).\n"
           "A query with noise (docs/privacy.md) releases noisy numbers: released gains\n"
           "\"noise\" (mechanism, epsilon, scale, error_95) and the object\n"
           "\"privacy_budget\" (epsilon, spent, left); a run that would spend more than\n"
           "is left of limits.privacy_budget is refused (exit 4) with what is spent and left.\n"
           "The object also says what the run cost: \"phases\" (seconds per phase: loading,\n"
           "connecting, then the session's), \"peak_rss_bytes\" and \"spill\" (bytes_written,\n"
           "peak_bytes, runs). Progress goes to stderr: phase, elements done/total, rate and\n"
           "time left, every 2 s on a terminal and every 10 s otherwise.\n\n"
           "--peer defaults to the partner's address in the template\n"
           "(parties.<role>.address). --param NAME=VALUE gives a query's parameter (repeat\n"
           "for each; a string_list is comma-separated). A members query writes this side's\n"
           "matched rows to --out FILE (CSV, written atomically), only if the total reaches\n"
           "min_count; an existing FILE is refused unless --force. --retry N: when the\n"
           "partner's node is busy (exit 6) or not listening, try again up to N times,\n"
           "waiting 1, 2, 4... seconds (at most 30) in between.\n"
           "Several runs of one identity may run at once: they share its audit log.\n"
           "--quiet drops the informational stderr lines; --config FILE reads options\n"
           "from `key = value` lines (see `cleanroom serve --help`).\n"
           "Check the way to the partner first with `cleanroom ping`, and the data with\n"
           "`cleanroom data check`.\n\n%s\n%s\n"
           "Example:\n"
           "  cleanroom run --template template.json --identity ./identity \\\n"
           "      --data policyholders.csv --peer acme.example:7443 --query overlap\n"
           "  cleanroom run --template template.json --identity ./identity \\\n"
           "      --data sqlite:/srv/crm.db --data-query 'SELECT mail AS email FROM clients' \\\n"
           "      --peer acme.example:7443 --query overlap\n\n%s",
           CR_CLI_DATA_SOURCES_HELP, CR_CLI_MEMORY_HELP, CR_CLI_EXIT_CODES_HELP);
}

/* serve --check: every collaboration, then the exit code. */
static int check_serve(const char *cmd, const node_opts *o) {
  cr_party_config pc = {0};
  pc.mode = CR_PARTY_SERVE;
  pc.template_path = o->template_path;
  pc.collaborations_dir = o->collaborations;
  pc.identity_dir = o->identity;
  pc.audit_path = o->audit;
  pc.software = CR_SOFTWARE;
  pc.memory_bytes = o->mem.memory_bytes;
  pc.work_dir = o->mem.work_dir;
  pc.spill_max_bytes = o->mem.spill_max_bytes;
  cr_party_serve_config sc = {0};
  sc.data = o->data;
  sc.max_reject_ratio = o->max_reject_ratio > 0 ? o->max_reject_ratio : -1.0;
  check_ctx k = {o->json, 0, 0};
  cr_error err;
  cr_error_clear(&err);
  int rc = cr_party_check(&pc, &sc, on_check, &k, &err);
  if (rc == 0) {
    if (!o->json)
      printf("%zu collaboration(s) can serve\n", k.ok);
    return EXIT_OK;
  }
  cr_cli_errorf(cmd, "%s", cr_cli_safe(cr_error_message(&err, rc)));
  return cr_cli_exit_code(rc, 0);
}

/* The wait before retry number `attempt` (1, 2, ...): 1, 2, 4... s, at
 * most 30, with a quarter of jitter so that many runs do not come back at
 * once. */
static unsigned retry_wait_ms(unsigned attempt) {
  unsigned ms = attempt >= 6 ? 30000u : 1000u << (attempt - 1);
  if (ms > 30000u)
    ms = 30000u;
  return ms - ms / 4 + (unsigned)(cr_now_ms() % (ms / 2 + 1));
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
                                       {"data-query", required_argument, NULL, 'D'},
                                       {"delimiter", required_argument, NULL, 'L'},
                                       {"force", no_argument, NULL, 'F'},
                                       {"collaborations", required_argument, NULL, 'C'},
                                       {"check", no_argument, NULL, 'K'},
                                       {"retry", required_argument, NULL, 'R'},
                                       {"memory", required_argument, NULL, CR_CLI_OPT_MEMORY},
                                       {"work-dir", required_argument, NULL, CR_CLI_OPT_WORK_DIR},
                                       {"spill-max", required_argument, NULL, CR_CLI_OPT_SPILL_MAX},
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
      unsigned long v;
      if (cr_cli_parse_uint(cmd, "--timeout", "seconds from", optarg, 1, 86400, &v) != 0)
        return EXIT_USAGE;
      o.timeout_ms = (unsigned)v * 1000u;
      break;
    }
    case 'M': {
      unsigned long v;
      if (!serve) {
        cr_cli_errorf(cmd, "--max-sessions is for serve");
        return EXIT_USAGE;
      }
      if (cr_cli_parse_uint(cmd, "--max-sessions", "a number from", optarg, 1, 100000, &v) != 0)
        return EXIT_USAGE;
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
      unsigned long v;
      if (cr_cli_parse_uint(cmd, "--threads", "a number from", optarg, 1, 256, &v) != 0)
        return EXIT_USAGE;
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
    case 'D':
      o.data_query = optarg;
      break;
    case 'L':
      if (cr_cli_parse_delimiter(cmd, optarg, &o.delimiter) != 0)
        return EXIT_USAGE;
      break;
    case 'F':
      if (serve) {
        cr_cli_errorf(cmd, "--force is for run (it lets --out replace a file)");
        return EXIT_USAGE;
      }
      o.force = 1;
      break;
    case 'C':
      if (!serve) {
        cr_cli_errorf(cmd, "--collaborations is for serve; run takes one --template");
        return EXIT_USAGE;
      }
      o.collaborations = optarg;
      break;
    case 'K':
      if (!serve) {
        cr_cli_errorf(cmd, "--check is for serve (check a template with `cleanroom template "
                           "check`)");
        return EXIT_USAGE;
      }
      o.check = 1;
      break;
    case 'R': {
      unsigned long v;
      if (serve) {
        cr_cli_errorf(cmd, "--retry is for run");
        return EXIT_USAGE;
      }
      if (cr_cli_parse_uint(cmd, "--retry", "a number from", optarg, 0, 100, &v) != 0)
        return EXIT_USAGE;
      o.retry = (unsigned)v;
      break;
    }
    case CR_CLI_OPT_MEMORY:
    case CR_CLI_OPT_WORK_DIR:
    case CR_CLI_OPT_SPILL_MAX:
      if (cr_cli_parse_memory_opt(cmd, c, optarg, &o.mem) != 0)
        return EXIT_USAGE;
      break;
    case 'h':
      node_help(cmd);
      return EXIT_OK;
    default:
      fprintf(stderr, "Run `%s %s --help` for the options.\n", CR_CLI_PROG, cmd);
      return EXIT_USAGE;
    }
  }
  if (optind < argc) {
    cr_cli_errorf(cmd, "unexpected argument \"%s\"", argv[optind]);
    return EXIT_USAGE;
  }
  if (serve && o.collaborations && (o.template_path || o.data)) {
    cr_cli_errorf(cmd, "--collaborations DIR serves every collaboration in DIR, each with the "
                       "data its collaboration.conf names: drop --template and --data");
    return EXIT_USAGE;
  }
  int dir_mode = serve && o.collaborations != NULL;
  const char *missing = !dir_mode && !o.template_path ? "--template FILE (or --collaborations DIR)"
                        : !o.identity                 ? "--identity DIR"
                        : !dir_mode && !o.data        ? "--data SOURCE"
                        : serve && !o.address && !o.check ? "--listen HOST:PORT"
                        : (!serve && !o.query)            ? "--query NAME"
                                                          : NULL;
  if (!serve && !o.template_path)
    missing = "--template FILE";
  if (missing) {
    cr_cli_errorf(cmd, "%s is required; see `%s %s --help`", missing, CR_CLI_PROG, cmd);
    return EXIT_USAGE;
  }
  if (serve && o.query) {
    cr_cli_errorf(cmd, "--query is for run; the serving node answers the query the partner runs");
    return EXIT_USAGE;
  }
  if (o.force && o.out == NULL) {
    cr_cli_errorf(cmd, "--force goes with --out FILE (it lets the matched rows replace FILE)");
    return EXIT_USAGE;
  }
  {
    /* The data source's flags before anything is opened or loaded. */
    cr_source_options so = {o.data_query, o.delimiter};
    cr_error ve;
    int vrc = o.data ? cr_source_validate(o.data, &so, &ve) : 0;
    if (vrc != 0) {
      cr_cli_errorf(cmd, "%s", cr_error_message(&ve, vrc));
      return cr_cli_exit_code(vrc, 0);
    }
    if (o.address && (vrc = cr_node_check_address(o.address, &ve)) != 0) {
      cr_cli_errorf(cmd, "--%s %s", serve ? "listen" : "peer", cr_error_message(&ve, vrc));
      return EXIT_USAGE;
    }
  }
  if (o.check)
    return check_serve(cmd, &o);
  if (serve) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = early_hup;
    sa.sa_flags = SA_RESTART; /* the data's reads go on */
    sigemptyset(&sa.sa_mask);
    (void)sigaction(SIGHUP, &sa, NULL);
  }

  int rc = 0, code = EXIT_OK;
  cr_error err;
  cr_error_clear(&err);
  cr_party *party = NULL;
  cr_pool *pool = NULL;
  node_ctx nctx;
  uv_loop_t loop;
  int loop_live = 0;
  unsigned attempt = 0;
  memset(&nctx, 0, sizeof nctx);
  nctx.cmd = cmd;
  nctx.o = &o;

  cr_party_config pc = {0};
  pc.mode = serve ? CR_PARTY_SERVE : CR_PARTY_RUN;
  pc.template_path = dir_mode ? NULL : o.template_path;
  pc.collaborations_dir = dir_mode ? o.collaborations : NULL;
  pc.identity_dir = o.identity;
  pc.audit_path = o.audit;
  pc.address = o.address;
  pc.software = CR_SOFTWARE;
  pc.memory_bytes = o.mem.memory_bytes;
  pc.work_dir = o.mem.work_dir;
  pc.spill_max_bytes = o.mem.spill_max_bytes;
  if (g_cluster != NULL) {
    pc.cluster_processes = g_cluster->processes;
    pc.cluster_hosts = g_cluster->hosts;
  }
  if ((rc = cr_party_open(&party, &pc, &err)) != 0) {
    cr_cli_errorf(cmd, "%s", cr_error_message(&err, rc));
    code = cr_cli_exit_code(rc, 0);
    goto out;
  }
  {
    /* What a killed node left in the work directory, removed (and logged). */
    const char *note = cr_party_note(party, CR_PARTY_NOTE_SPILL);
    if (note[0])
      fprintf(stderr, "%s %s: work directory: %s\n", CR_CLI_PROG, cmd, cr_cli_safe(note));
  }
  nctx.party = party;
  nctx.t = cr_party_template(party);
  cr_role role = cr_party_role(party);

  /* The calling thread works too: threads - 1 helpers. */
  unsigned threads = o.threads                                 ? o.threads
                     : g_cluster != NULL && g_cluster->threads ? g_cluster->threads
                                                               : cr_cpu_count();
  if (g_cluster != NULL && g_cluster->processes > 1 && !o.quiet)
    fprintf(stderr, "%s %s: %u processes on %u host(s) (%s), %u threads each\n", CR_CLI_PROG, cmd,
            g_cluster->processes, g_cluster->nhosts, cr_cli_safe(g_cluster->hosts), threads);
  if (threads > 1 && (rc = cr_pool_new(&pool, threads - 1)) != 0) {
    cr_cli_errorf(cmd, "cannot start %u worker threads: %s", threads - 1, cr_strerror(rc));
    code = EXIT_INTERNAL;
    goto out;
  }
  if ((rc = uv_loop_init(&loop)) < 0) {
    cr_cli_errorf(cmd, "cannot start the event loop: %s", uv_strerror(rc));
    code = EXIT_INTERNAL;
    goto out;
  }
  loop_live = 1;
  nctx.progress_tty = isatty(2);
  cr_party_events ev = {0};
  ev.on_data = on_data;
  ev.on_listening = on_listening;
  ev.on_session = on_session;
  ev.on_ping = on_ping;
  ev.on_collab = on_collab;
  ev.on_progress = on_progress;
  ev.on_closed = on_closed;
  ev.ctx = &nctx;
  /* 0 from the user means no rejected row at all; the party's 0 is its default. */
  double ratio = o.max_reject_ratio > 0 ? o.max_reject_ratio : -1.0;

  const cr_template *t = nctx.t;
again:
  if (serve) {
    if (!o.quiet && t != NULL)
      fprintf(stderr, "%s serve: this node is the %s (%s); loading the data (%s) ...\n",
              CR_CLI_PROG, cr_role_name(role), t->parties[role].org,
              cr_source_kind_name(cr_source_kind_of(o.data)));
    cr_party_serve_config sc = {0};
    sc.data = o.data;
    sc.data_query = o.data_query;
    sc.delimiter = o.delimiter;
    sc.max_reject_ratio = ratio;
    sc.once = o.once;
    sc.max_sessions = o.max_sessions;
    sc.timeout_ms = o.timeout_ms;
    sc.pool = pool;
    rc = cr_party_serve(party, &loop, &sc, &ev, &err);
  } else {
    cr_party_run_config rcfg = {0};
    rcfg.data = o.data;
    rcfg.data_query = o.data_query;
    rcfg.delimiter = o.delimiter;
    rcfg.overwrite_out = o.force;
    rcfg.max_reject_ratio = ratio;
    rcfg.query = o.query;
    rcfg.params = o.param_args;
    rcfg.nparams = o.nparams;
    rcfg.out = o.out;
    rcfg.timeout_ms = o.timeout_ms;
    rcfg.pool = pool;
    if (!o.quiet && attempt == 0) {
      fprintf(stderr, "%s run: this node is the %s (%s); running \"%s\" with %s\n", CR_CLI_PROG,
              cr_role_name(role), t->parties[role].org, o.query, cr_party_address(party));
      fprintf(stderr, "%s run: loading the data (%s) ...\n", CR_CLI_PROG,
              cr_source_kind_name(cr_source_kind_of(o.data)));
    }
    nctx.progress_start = cr_now_ms();
    nctx.progress_last = nctx.progress_start;
    phase_switch(&nctx.phases, &nctx.phase_cur, &nctx.phase_t0, "loading", nctx.progress_start);
    rc = cr_party_run(party, &loop, &rcfg, &ev, &err);
    if (rc == 0) {
      /* Loaded; the session's own phases follow its first report. */
      phase_switch(&nctx.phases, &nctx.phase_cur, &nctx.phase_t0, "connecting", cr_now_ms());
      uv_timer_init(&loop, &nctx.tick);
      nctx.tick.data = &nctx;
      nctx.tick_live = 1;
      unsigned every = nctx.progress_tty ? CR_PROGRESS_TTY_MS : CR_PROGRESS_LOG_MS;
      uv_timer_start(&nctx.tick, on_tick, every, every);
      uv_unref((uv_handle_t *)&nctx.tick); /* the node keeps the loop alive */
    }
  }
  if (rc) {
    cr_cli_errorf(cmd, "%s", cr_error_message(&err, rc));
    code = cr_cli_exit_code(rc, 0);
    goto out;
  }
  static const int signums[3] = {SIGINT, SIGTERM, SIGHUP};
  int nsig = serve ? 3 : 2; /* SIGHUP reloads a serving node's collaborations */
  for (int i = 0; i < nsig; i++) {
    uv_signal_init(&loop, &nctx.sig[i]);
    nctx.sig_live = i + 1;
    nctx.sig[i].data = &nctx;
    uv_signal_start(&nctx.sig[i], on_signal, signums[i]);
    uv_unref((uv_handle_t *)&nctx.sig[i]); /* the node keeps the loop alive */
  }
  if (serve && g_early_hup) {
    /* A SIGHUP while the node was loading: look now. */
    g_early_hup = 0;
    if (!o.quiet)
      fprintf(stderr, "%s %s: SIGHUP (while loading): looking for changed collaborations\n",
              CR_CLI_PROG, cmd);
    (void)cr_party_reload(party);
  }
  uv_run(&loop, UV_RUN_DEFAULT);
  if (!nctx.closed) {
    cr_cli_errorf(cmd, "the node stopped without reporting why");
    code = EXIT_INTERNAL;
  } else if (!serve && nctx.signum != 0 && nctx.closed_rc != 0) {
    /* Interrupted: the partner was sent ABORTED and the abort recorded;
     * the shell's convention for a death by signal, 128 + its number. */
    code = 128 + nctx.signum;
  } else if (!serve) {
    /* Withheld (closed_wire -1): the rows file or the audit line could not
     * be written (CR_EIO: local storage, as serve --once says too), or an
     * internal failure. */
    code = nctx.closed_wire >= 0      ? cr_cli_exit_code(nctx.closed_rc, nctx.closed_wire)
           : nctx.closed_rc == CR_EIO ? EXIT_STORAGE
                                      : EXIT_INTERNAL;
  } else if (o.once && nctx.sessions > 0) {
    code = cr_cli_exit_code(nctx.last_rc, nctx.last_wire);
  } else {
    code = nctx.closed_rc ? cr_cli_exit_code(nctx.closed_rc, 0) : EXIT_OK;
  }
  /* run --retry: busy, or nothing listening yet (a node restarting). */
  if (!serve && nctx.closed && nctx.signum == 0 && attempt < o.retry &&
      (code == EXIT_BUSY || nctx.closed_rc == CR_ECONNREFUSED)) {
    attempt++;
    unsigned ms = retry_wait_ms(attempt);
    if (!o.quiet)
      fprintf(stderr, "%s run: %s; retrying in %.1f s (retry %u of %u)\n", CR_CLI_PROG,
              code == EXIT_BUSY ? "the partner's node is busy" : "nothing listens there yet",
              ms / 1000.0, attempt, o.retry);
    close_signals(&nctx);
    uv_run(&loop, UV_RUN_DEFAULT); /* the signal handles close */
    struct timespec ts = {(time_t)(ms / 1000), (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
      ;
    node_ctx keep = nctx;
    json_decref(keep.phases); /* each attempt counts its own */
    memset(&nctx, 0, sizeof nctx);
    nctx.cmd = keep.cmd;
    nctx.o = keep.o;
    nctx.party = keep.party;
    nctx.t = keep.t;
    nctx.progress_tty = keep.progress_tty;
    goto again;
  }

out:
  if (loop_live) {
    close_signals(&nctx);
    uv_run(&loop, UV_RUN_DEFAULT);
    if (uv_loop_close(&loop) != 0)
      cr_cli_errorf(cmd, "the event loop still held handles at exit");
  }
  json_decref(nctx.phases);
  for (size_t i = 0; i < sizeof nctx.sp / sizeof nctx.sp[0]; i++)
    json_decref(nctx.sp[i].phases);
  cr_party_close(party);
  cr_pool_free(pool);
  return code;
}
