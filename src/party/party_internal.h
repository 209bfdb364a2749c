/*
 * Inside the party layer: the party object, its audit logs and trails
 * (what serve, run and ping write to the audit log, docs/audit.md), and
 * the collaborations a serving node holds. The trail is thread-safe: the
 * session hooks (admit, load) run on worker threads.
 */
#ifndef CR_PARTY_INTERNAL_H
#define CR_PARTY_INTERNAL_H

#include <pthread.h>
#include <sys/types.h>

#include <jansson.h>

#include "cleanroom/party.h"

/* ---- audit logs and trails ------------------------------------------------ */

/*
 * One audit log as this process writes it: the handle, a mutex (one
 * thread at a time per handle; the file lock inside the audit module
 * serialises the other writers: other collaborations' handles, other
 * processes of the identity), and what the party keeps from the log itself.
 * Shared by every collaboration of a party that writes to the same file.
 */
typedef struct cr_log {
  struct cr_log *next; /* the party's open logs */
  unsigned refs;       /* loop thread */
  char *path;
  dev_t dev; /* the file, to share one handle between equal paths */
  ino_t ino;
  cr_audit *audit;
  pthread_mutex_t lock;
  const cr_identity *id;
  /* session_started lines per (template, query), counted from every line
   * of the log (the audit module's watch sees the lines at open, those
   * other writers append, and ours), so the run limit is exact whoever
   * wrote them. Under lock. */
  struct cr_run_count {
    char th[CR_SHA256_HEX_BYTES];
    char query[128];
    uint64_t runs;
  } * counts;
  size_t ncounts;
  int counts_lost;   /* out of memory while counting: limits refuse */
  int unsigned_tail; /* our events since our last checkpoint */
  /* limits.privacy_budget: the spends (session_started lines with a
   * privacy_spend) per template, summed from every line of the log by the
   * same watch, so exact whoever wrote them. CR_DP_*_UNIT fixed point. */
  struct cr_spend {
    char th[CR_SHA256_HEX_BYTES];
    uint64_t eps, delta;
  } * spends;
  size_t nspends;
  /* Strangers' refused connections (at most CR_TRAIL_REFUSALS_PER_MINUTE
   * lines a minute) and the partner's pings (CR_TRAIL_PINGS_PER_MINUTE):
   * the rest are counted and summed up in one line, so nobody can grow the
   * log (and fsync it) at the rate of their connections. */
  struct cr_log_throttle {
    uint64_t window_ms;
    unsigned in_window;
    uint64_t dropped;
  } refused, pings;
} cr_log;
#define CR_TRAIL_REFUSALS_PER_MINUTE 20
#define CR_TRAIL_PINGS_PER_MINUTE 20

/* Opens (or creates) the log, reading it whole once (counts). */
int cr__log_open(cr_log **out, const char *path, const cr_identity *id, cr_error *err);
/* Drops a reference; the last one signs what is unsigned and closes. */
void cr__log_release(cr_log *l);

/*
 * What one collaboration (or the node itself) writes: its log, and the
 * names it adds to every event (collaboration, template, partner) so that
 * one log holds many collaborations and stays readable per collaboration.
 */
#define CR_COLLAB_NAME_MAX 128
typedef struct cr_trail {
  cr_log *log; /* NULL: nothing is recorded (a ping that cannot open it) */
  int open;    /* log != NULL */
  const cr_identity *id;
  const cr_template *t; /* NULL: the node's own events (no collaboration) */
  char th[CR_SHA256_HEX_BYTES];
  char collab[CR_COLLAB_NAME_MAX]; /* "" when none */
  cr_role role;
  /* The node's trail while serving several collaborations: which
   * certificates are partners (their refusals are never throttled). NULL:
   * the template's pins. */
  int (*pinned)(void *ctx, const uint8_t *fp);
  void *pinned_ctx;
} cr_trail;

/* DIR/audit.jsonl: each identity keeps its own log. malloc'ed. */
char *cr__trail_default_path(const char *identity_dir);
/* A trail on an open log (takes a reference); t NULL for node events. */
void cr__trail_init(cr_trail *a, cr_log *log, const cr_identity *id, const cr_template *t,
                    cr_role role, const char *collab);
/* Opens the log at path and a trail on it. */
int cr__trail_open(cr_trail *a, const char *path, const cr_identity *id, const cr_template *t,
                   cr_error *err);
void cr__trail_close(cr_trail *a);
/* Appends one event; takes ownership of fields. A collaboration's trail
 * adds "collaboration", "template_sha256" and "partner" (the other
 * party's organisation) and "partner_cert_sha256" unless set. */
int cr__trail_event(cr_trail *a, const char *event, json_t *fields, cr_error *err);
/* The code for a node whose audit log could not take an event (rc from
 * cr__trail_event): CR_EIO (the file cannot be written: local storage) and
 * CR_ENOMEM as they are, CR_ETIMEDOUT (another process holds the log)
 * CR_ECONFIG (give this node its own log), anything else CR_EINTERNAL. */
int cr__trail_write_error(int rc);
int cr__trail_checkpoint(cr_trail *a, cr_error *err);
/* A ping answered: its connection_accepted (accepted, may be NULL),
 * ping_answered (fields) and a checkpoint, or, past
 * CR_TRAIL_PINGS_PER_MINUTE in this minute, only counted (summed up in
 * pings_answered_summary). Takes both. Loop thread. */
int cr__trail_ping(cr_trail *a, json_t *accepted, json_t *fields, cr_error *err);
json_t *cr__trail_data_fields(const cr_dataset *d, const cr_template *t, const char *query);
json_t *cr__trail_session_fields(const cr_trail *a, const cr_session_result *r);
/* The released object recorded in result_released (json null if none). */
json_t *cr__trail_released(const cr_session_result *r, const cr_party_session *m);
/* Before a run: CR_EREFUSED with msg when the query's runs under this
 * template have reached limits.max_runs_per_query (nothing is recorded). */
int cr__trail_limit(cr_trail *a, const char *query, char *msg, size_t cap);
/* The admit hook's body: under the log's file lock, enforces
 * max_runs_per_query and limits.privacy_budget from the log (every
 * writer's lines) and records session_started (with the run's
 * privacy_spend for a query with noise), as one step. 0, CR_EREFUSED
 * (limit, budget) or the log's failure as cr__trail_write_error gives it,
 * msg set. */
int cr__trail_admit(cr_trail *a, const cr_session_result *r, char *msg, size_t cap);
/* The runs of a query so far (-1 when the log cannot be read). */
int64_t cr__trail_runs(cr_trail *a, const char *query);
/* Before a run of q: CR_EREFUSED with msg (spent and left) when its
 * epsilon or delta would exceed what is left of limits.privacy_budget
 * (nothing is recorded). 0 for a query without noise. */
int cr__trail_budget_check(cr_trail *a, const cr_query *q, char *msg, size_t cap);
/* The budget as spent so far (budget.set 0 without one, or without a
 * template: a node's own trail). */
int cr__trail_budget(cr_trail *a, cr_party_budget *out, char *msg, size_t cap);
/*
 * run, a query with a run limit or a privacy budget: the runs of one
 * identity (all its processes) go one at a time from their count to their
 * admission, so that two cannot both count the last run (or the last of
 * the budget) as free: an exclusive flock on LOG_PATH.runs.lock, waited
 * for (polled) up to CR_TRAIL_RUN_LOCK_WAIT_MS. 0 with *fd set (-1 when
 * nothing is recorded), or an error with msg: CR_EIO (the lock file cannot
 * be opened or locked), CR_ETIMEDOUT (held longer than the wait), CR_ENOMEM.
 */
#define CR_TRAIL_RUN_LOCK_SUFFIX ".runs.lock"
#define CR_TRAIL_RUN_LOCK_WAIT_MS 120000u
int cr__trail_run_lock(cr_trail *a, int *fd, char *msg, size_t cap);
void cr__trail_run_unlock(int *fd);
/* A completed session whose release could not be recorded or written:
 * result_withheld with the reason, then a checkpoint. extra (taken, may
 * be NULL) is merged into the line. */
void cr__trail_withheld(cr_trail *a, const cr_session_result *r, const uint8_t *peer_fp,
                        const char *why, json_t *extra);
/* connection_refused, session_aborted, or result_released + receipt; then
 * a signed checkpoint. extra (taken, may be NULL) is merged into the
 * session line (the data the session used, its duration). */
int cr__trail_session_end(cr_trail *a, const cr_session_result *r, const char *peer_addr,
                          const uint8_t *peer_fp, const cr_party_session *m, json_t *extra,
                          cr_error *err);
/* 1 when fp is a certificate the trail's template pins. */
int cr__trail_pins(const cr_trail *a, const uint8_t *fp);

/* json_string of s made safe (cr_text_clean): peer text, paths, messages.
 * NULL s gives "". */
json_t *cr__jtext(const char *s);
/* Sets o[key] = value with the key made safe; takes value. */
void cr__jset(json_t *o, const char *key, json_t *value);

/* ---- collaboration.conf ----------------------------------------------------- */

/*
 * A collaboration's own settings (collaboration.conf, `key = value` lines).
 * The keys are a table in conf.c: one line there adds a key.
 */
typedef struct cr_collab_conf {
  char *data;              /* data = SOURCE (required): a CSV, sqlite:PATH or postgresql:// URI */
  char *data_query;        /* data_query = SELECT ...: a database source's rows */
  char delimiter;          /* delimiter = , ; tab |: a CSV's separator (0: detected) */
  char *audit;             /* audit = FILE: its own audit log (default: the node's) */
  double max_reject_ratio; /* 0: the node's; < 0: no rejected row at all */
  unsigned max_sessions;   /* 0: no cap of its own (the node's applies) */
  unsigned timeout_ms;     /* idle, for its sessions; 0: the node's */
  int enabled;             /* enabled = false: loaded, checked, not served */
  /* memory = MiB, work_dir = DIR: a spill of the collaboration's own for its
   * sessions and loads (docs/memory.md); 0 / NULL: the node's. */
  unsigned memory_mib;
  char *work_dir;
  unsigned long memory_line; /* where memory was set, for errors */
} cr_collab_conf;

/* Parses a conf file's text; relative paths are taken from basedir. Every
 * error names origin, the line and the key. CR_ECONFIG or CR_ENOMEM. */
int cr__collab_conf_parse(const char *text, size_t len, const char *origin, const char *basedir,
                          cr_collab_conf *c, cr_error *err);
int cr__collab_conf_load(const char *path, const char *basedir, cr_collab_conf *c, cr_error *err);
void cr__collab_conf_free(cr_collab_conf *c);
/* "data, data_query, delimiter, audit, max_sessions, timeout, max_reject_ratio, enabled" */
const char *cr__collab_conf_keys(void);

/* ---- collaborations --------------------------------------------------------- */

/* What a file was when it was read: a changed one is read again. */
typedef struct cr_file_sig {
  int exists;
  dev_t dev;
  ino_t ino;
  off_t size;
  int64_t mtime_ns, ctime_ns;
} cr_file_sig;
void cr__file_sig(const char *path, cr_file_sig *s);
int cr__file_sig_equal(const cr_file_sig *a, const cr_file_sig *b);

/*
 * One version of a collaboration: a template this identity is a party of,
 * its signatures, its conf and its data checked. Immutable once loaded
 * (sessions load their data themselves); a changed directory gives a new
 * version, and the old
 * one lives on until the last session holding it ends (refs, loop thread).
 */
typedef struct cr_collab {
  unsigned refs;
  char *name;
  char *dir; /* NULL: serve --template */
  char *template_path, *sig_path, *conf_path;
  cr_file_sig sigs[3]; /* template, .sig, conf when read */
  cr_template *t;
  int owns_t;
  cr_role role;
  char th[CR_SHA256_HEX_BYTES];
  cr_collab_conf conf;
  cr_trail trail;
  double max_reject_ratio; /* conf or the node's */
  /* Where its loads and sessions spill: the node's, or its own (conf
   * memory / work_dir; owns_spill), closed with the version. */
  cr_spill *spill;
  int owns_spill;
} cr_collab;

/* Where a collaboration comes from. */
typedef struct cr_collab_src {
  const char *name;
  const char *dir;           /* NULL: single template (serve --template) */
  const char *template_path; /* dir/template.json, or the --template file */
  const char *data;          /* single: --data */
  const char *data_query;    /* single: --data-query */
  char delimiter;            /* single: --delimiter */
  cr_template *t;            /* single: already loaded (borrowed) */
} cr_collab_src;

/* The sources of collaborations now: the sub-directories of the
 * directory (sorted by name, hidden ones skipped: prepare a new one as
 * .name and rename it), or the one template. */
typedef struct cr_srcs {
  cr_collab_src *v;
  char **names, **dirs, **tpaths;
  size_t n;
} cr_srcs;
int cr__srcs_list(cr_party *p, cr_srcs *s, cr_error *err);
void cr__srcs_free(cr_srcs *s);

/*
 * A new version, in two steps. prepare (loop thread: quick): the conf, the
 * template, this identity's role, the signatures where the template
 * requires them, and (unless check_only) the trail on its audit log.
 * check_data (any thread: reads the data): the data loads and fits the
 * template (set size, expiry, every filter's columns); the version keeps
 * none of it (*loaded, may be NULL: the set, the caller's to free; NULL
 * when check_only). Errors name the file: CR_ECONFIG, CR_ETEMPLATE,
 * CR_EREFUSED (signatures, limits), CR_EDATA.
 */
int cr__collab_prepare(cr_party *p, const cr_collab_src *src, int check_only, cr_collab **out,
                       cr_error *err);
int cr__collab_check_data(cr_collab *c, int check_only, cr_dataset **loaded, cr_error *err);
void cr__collab_unref(cr_collab *c);
/* The 3 files of a version as they are now. */
void cr__collab_sigs(const cr_collab_src *src, cr_file_sig sigs[3]);

/*
 * Routing (loop thread): among the collaborations (n of them), the one
 * for a partner's certificate and the template its Hello names (NULL: no
 * Hello). The exact pair if there is one; else, when one collaboration
 * alone pins the partner, that one (its session then refuses a template
 * mismatch with the usual message, both hashes included). NULL with msg
 * and *wire set when none fits.
 */
cr_collab *cr__collab_route(cr_collab *const *c, size_t n, const uint8_t *peer_fp,
                            const uint8_t *template_sha256, int *wire, char *msg, size_t cap);
/* 1 when a serving collaboration pins fp for its partner. */
int cr__collab_pins(cr_collab *const *c, size_t n, const uint8_t *fp);

/* The data of one session (a worker thread), loaded for its query (its
 * filter with params, its group column, if any), recorded as a data access
 * of its own. Every session gets its own load: the elements' order (the
 * order the set is sent in) is drawn per load. */
int cr__collab_load_for(cr_collab *c, const cr_query *q, const cr_params *params, cr_dataset **out,
                        cr_file_sig *sig, char *msg, size_t cap);
/* {"file","size","mtime","sha256","rows_accepted","distinct_keys"}: the data a session used. */
json_t *cr__data_used(const cr_dataset *d, const cr_file_sig *sig);

/* One connection routed to a collaboration, until its session ends. */
typedef struct cr_visit {
  cr_party *p;
  cr_collab *c;
  struct cr_visit *prev, *next;
  uint64_t t0_ms;
  /* Set by the load hook (a worker), read once the session is freed. */
  cr_dataset *own; /* loaded for this session alone */
  json_t *used;    /* cr__data_used of what the session got */
  /* connection_accepted's fields, written when the session is admitted or
   * ends, whichever is first; a ping's is throttled with its answer. */
  json_t *accepted;
} cr_visit;

/* ---- the party -------------------------------------------------------------- */

struct cr_party {
  cr_party_mode mode;
  char *template_path;
  char *identity_dir;
  char *audit_path;
  char *address;
  char *collab_dir; /* serve --collaborations */
  const char *software;
  cr_template *t; /* run, ping, serve --template */
  cr_identity *id;
  cr_role role;
  cr_trail trail; /* run, ping: the template's; serve: the node's own */
  char notes[3][1400];
  /* Memory and spilling (issue 17): the node's one spill, shared by every
   * data load and session of this party (NULL for a ping). */
  cr_spill *spill;
  char *work_dir;
  uint64_t memory_bytes, spill_max_bytes;
  unsigned cluster_processes; /* 0: one process */
  char *cluster_hosts;

  /* What is running (one thing at a time). */
  uv_loop_t *loop;
  cr_node *node;
  cr_node_config nc;
  cr_party_events ev;
  int running;
  /* serve and run */
  cr_dataset *data;
  char *data_path;
  char *data_query; /* database sources; NULL for a CSV */
  char delimiter;   /* CSV; 0: detected */
  double max_reject_ratio;
  /* serve: the collaborations serving now, the sessions in progress */
  cr_collab **collabs;
  size_t ncollabs;
  struct cr_failed {
    char *name;
    cr_file_sig sigs[3];
    int rc;
  } * failed; /* versions that did not load, not tried again until changed */
  size_t nfailed;
  int dir_failed; /* the directory could not be read (reported once) */
  int node_closed, serve_rc;
  cr_error serve_err;
  unsigned handles_live; /* watches and the timer, until closed */
  cr_visit *visits;
  cr_pool *pool;
  unsigned timeout_ms;
  /* serve: watching for changes */
  uv_fs_event_t **watch;
  size_t nwatch;
  char *watch_key; /* the sub-directories watched, "a/b/c/" */
  uv_timer_t reload_timer;
  int reload_timer_live;
  int reload_due;           /* a change was seen: rescan when the timer fires */
  struct cr_reload *reload; /* a reload on the thread pool, or NULL */
  int reload_again;         /* another change came in meanwhile */
  int stopping;
  /* run */
  const cr_query *rq;
  cr_filter *filter;
  cr_params params;
  char *out_path;
  const char **param_names, **param_values;
  cr_party_session last; /* run: the session as reported */
  int run_lock_fd;       /* cr__trail_run_lock, -1 when not held */
  char release_msg[600];
  int sessions;
  uint64_t run_t0_ms;
  /* ping */
  void (*on_ping_done)(void *ctx, const cr_party_ping_report *r);
  cr_party_ping_report ping;
  char ping_msg[CR_ERROR_MSG_MAX];
  uint64_t ping_t0, ping_tls;
};

/* p->nc zeroed, then what every node of this party shares: template, role,
 * software, identity, address, timeouts, ctx = p. */
void cr__party_node_base(cr_party *p, unsigned timeout_ms);
/* An event with the query (if any) and a reason. */
void cr__party_refusal(cr_party *p, const char *event, const char *query, const char *why);
/* run: loads p->data for query q (NULL: no filter, no group). */
int cr__party_load_start(cr_party *p, const cr_query *q, cr_error *err);
/* Takes a config's data source (path, query, delimiter) into p. */
int cr__party_set_source(cr_party *p, const char *data, const char *query, char delimiter,
                         cr_error *err);
/* The options every load of p's data starts from (ratio, source). */
void cr__party_load_options(const cr_party *p, cr_dataset_options *opt);
/* Opens a spill with a node budget (bytes; the sorters get
 * cr_party_sorter_budget of it) in work_dir, disk cap max (0: none); what it
 * removed of killed processes goes to note (may be NULL) and, when a trail
 * is given, into its audit log as spill_recovered. */
int cr__party_spill_open(cr_spill **out, const char *work_dir, uint64_t memory_bytes,
                         uint64_t disk_max, cr_trail *trail, char *note, size_t cap, cr_error *err);
/* What a session cost the node, for its audit line: {"peak_rss_bytes",
 * "spill": {"bytes_written", "peak_bytes", "runs"}} (the process's peak and
 * what sp has spilled so far; NULL sp: no spill member). */
json_t *cr__party_resources(const cr_party *p, cr_spill *sp);
/* The log at path, shared with the party's other users of it (one
 * reference for the caller). Loop thread. */
int cr__party_log(cr_party *p, const char *path, cr_log **out, cr_error *err);
/* serve: the collaborations, the router and the watch (collab.c). */
int cr__party_collabs_start(cr_party *p, const cr_party_serve_config *cfg, cr_error *err);
void cr__party_collabs_stop(cr_party *p);
void cr__party_collabs_free(cr_party *p);
int cr__party_reload(cr_party *p);
/* A change to the serving collaborations, to the caller and the log. */
void cr__party_collab_event(cr_party *p, const char *change, const char *name, const cr_collab *c,
                            const char *error);

#endif
