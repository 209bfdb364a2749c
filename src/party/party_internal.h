/*
 * Inside the party layer: the party object, and its audit trail (what
 * serve, run and ping write to the audit log, docs/audit.md). The trail is
 * thread-safe: the session hooks (admit, load) run on worker threads.
 */
#ifndef CR_PARTY_INTERNAL_H
#define CR_PARTY_INTERNAL_H

#include <pthread.h>

#include <jansson.h>

#include "cleanroom/party.h"

typedef struct cr_trail {
  cr_audit *log;
  int open;
  pthread_mutex_t lock;
  const cr_identity *id;
  const cr_template *t;
  char th[CR_SHA256_HEX_BYTES];
  /* Runs per query, counted from the log once, then kept here: this node
   * holds the log's lock, so nobody else appends to it. */
  struct run_count {
    char query[128];
    uint64_t runs;
  } * counts;
  size_t ncounts;
  int unsigned_tail; /* events since the last checkpoint */
  /* limits.privacy_budget: the spends of this template's session_started
   * lines, summed from the log once, then kept (like counts). */
  int budget_loaded;
  uint64_t eps_spent, delta_spent; /* CR_DP_*_UNIT fixed point */
  /* Strangers' refused connections: at most CR_TRAIL_REFUSALS_PER_MINUTE
   * lines a minute, the rest counted and summed up in one line, so nobody
   * can grow the log (and fsync it) at the rate of their connections. */
  uint64_t refused_window_ms;
  unsigned refused_in_window;
  uint64_t refused_dropped;
} cr_trail;
#define CR_TRAIL_REFUSALS_PER_MINUTE 20

/* DIR/audit.jsonl: each identity keeps its own log. malloc'ed. */
char *cr__trail_default_path(const char *identity_dir);
int cr__trail_open(cr_trail *a, const char *path, const cr_identity *id, const cr_template *t,
                   cr_error *err);
void cr__trail_close(cr_trail *a);
/* Appends one event; takes ownership of fields. */
int cr__trail_event(cr_trail *a, const char *event, json_t *fields, cr_error *err);
int cr__trail_checkpoint(cr_trail *a, cr_error *err);
json_t *cr__trail_data_fields(const cr_dataset *d, const cr_template *t, const char *query);
json_t *cr__trail_session_fields(const cr_trail *a, const cr_session_result *r);
/* The released object recorded in result_released (json null if none). */
json_t *cr__trail_released(const cr_session_result *r, const cr_party_session *m);
/* Before a run: CR_EREFUSED with msg when the query's runs under this
 * template have reached limits.max_runs_per_query (nothing is recorded). */
int cr__trail_limit(cr_trail *a, const char *query, char *msg, size_t cap);
/* The admit hook's body: enforces max_runs_per_query and
 * limits.privacy_budget from the log, then records session_started (with
 * the run's privacy_spend for a query with noise). 0, CR_EREFUSED (limit,
 * budget) or CR_EIO, msg set. */
int cr__trail_admit(cr_trail *a, const cr_session_result *r, char *msg, size_t cap);
/* Before a run of q: CR_EREFUSED with msg (spent and left) when its
 * epsilon or delta would exceed what is left of limits.privacy_budget
 * (nothing is recorded). 0 for a query without noise. */
int cr__trail_budget_check(cr_trail *a, const cr_query *q, char *msg, size_t cap);
/* The budget as spent so far (budget.set 0 without one). */
int cr__trail_budget(cr_trail *a, cr_party_budget *out, char *msg, size_t cap);
/* A completed session whose release could not be recorded or written:
 * result_withheld with the reason, then a checkpoint. */
void cr__trail_withheld(cr_trail *a, const cr_session_result *r, const uint8_t *peer_fp,
                        const char *why);
/* connection_refused, session_aborted, or result_released + receipt; then
 * a signed checkpoint. */
int cr__trail_session_end(cr_trail *a, const cr_session_result *r, const char *peer_addr,
                          const uint8_t *peer_fp, const cr_party_session *m, cr_error *err);

/* json_string of s made safe (cr_text_clean): peer text, paths, messages.
 * NULL s gives "". */
json_t *cr__jtext(const char *s);
/* Sets o[key] = value with the key made safe; takes value. */
void cr__jset(json_t *o, const char *key, json_t *value);

struct cr_party {
  cr_party_mode mode;
  char *template_path;
  char *identity_dir;
  char *audit_path;
  char *address;
  const char *software;
  cr_template *t;
  cr_identity *id;
  cr_role role;
  cr_trail trail;
  char notes[2][1400];

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
  /* run */
  const cr_query *rq;
  cr_filter *filter;
  cr_params params;
  char *out_path;
  const char **param_names, **param_values;
  cr_party_session last; /* run: the session as reported */
  char release_msg[600];
  int sessions;
  /* ping */
  void (*on_ping_done)(void *ctx, const cr_party_ping_report *r);
  cr_party_ping_report ping;
  char ping_msg[CR_ERROR_MSG_MAX];
  uint64_t ping_t0, ping_tls;
};

/* p->nc zeroed, then what every node of this party shares: template, role,
 * software, identity, address, timeouts, ctx = p. */
void cr__party_node_base(cr_party *p, unsigned timeout_ms);
/* serve: the own set for a query (cr_session_config.load). */
int cr__party_load(void *ctx, const cr_query *q, const cr_session_result *res,
                   const cr_dataset **out, char *msg, size_t cap);
void cr__party_unload(void *ctx, const cr_dataset *d);
/* An event with the query (if any) and a reason. */
void cr__party_refusal(cr_party *p, const char *event, const char *query, const char *why);
/* Loads p->data for query q (NULL: no filter, no group). */
int cr__party_load_start(cr_party *p, const cr_query *q, cr_error *err);
/* Takes a config's data source (path, query, delimiter) into p. */
int cr__party_set_source(cr_party *p, const char *data, const char *query, char delimiter,
                         cr_error *err);
/* The options every load of p's data starts from (ratio, source). */
void cr__party_load_options(const cr_party *p, cr_dataset_options *opt);

#endif
