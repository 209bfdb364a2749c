/*
 * What serve and run write to the audit log (docs/audit.md). Thread-safe:
 * the session hooks (admit, load) run on worker threads.
 */
#ifndef CR_CLI_NODE_AUDIT_H
#define CR_CLI_NODE_AUDIT_H

#include <pthread.h>

#include "cli/cli.h"

typedef struct cr_cli_audit {
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
} cr_cli_audit;

/* DIR/audit.jsonl: each identity keeps its own log. malloc'ed. */
char *cr_cli_audit_default_path(const char *identity_dir);
int cr_cli_audit_open(cr_cli_audit *a, const char *path, const cr_identity *id,
                      const cr_template *t, cr_error *err);
void cr_cli_audit_close(cr_cli_audit *a);
/* Appends one event; takes ownership of fields. */
int cr_cli_audit_event(cr_cli_audit *a, const char *event, json_t *fields, cr_error *err);
int cr_cli_audit_checkpoint(cr_cli_audit *a, cr_error *err);
json_t *cr_cli_audit_data_fields(const cr_dataset *d, const char *query);
json_t *cr_cli_audit_session_fields(const cr_cli_audit *a, const cr_session_result *r);
/* The admit hook's body: enforces max_runs_per_query from the log, then
 * records session_started. 0, CR_EREFUSED (limit) or CR_EIO, msg set. */
int cr_cli_audit_admit(cr_cli_audit *a, const cr_session_result *r, char *msg, size_t cap);
/* connection_refused, session_aborted, or result_released + receipt; then
 * a signed checkpoint. */
int cr_cli_audit_session_end(cr_cli_audit *a, const cr_session_result *r, const char *peer_addr,
                             const uint8_t *peer_fp, const cr_cli_members *m, cr_error *err);

#endif
