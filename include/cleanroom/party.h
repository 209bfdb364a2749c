/*
 * cleanroom — the party: one side of one collaboration, and its contract.
 *
 * A party is this node's side of a collaboration: the template (and its
 * signatures), the node's identity, its audit log and its data source.
 * Every front end (the cleanroom command, a partner's own service, the
 * benchmark harness) goes through this layer, so none can skip a rule:
 *
 *   - admission: the role comes from the identity's certificate, the
 *     template's signatures are checked when it requires them, run_by and
 *     expiry before anything goes out, the run limit
 *     (limits.max_runs_per_query) counted from the audit log itself;
 *   - data: loaded per query, with the query's `where` filter and typed
 *     parameters, checked against the template's limits;
 *   - audit: every start, data access, connection, session, refusal,
 *     release and receipt is appended (fsync'ed, hash-chained) before
 *     anything is shown, and a signed checkpoint follows each session;
 *   - release: a `members` result is written to a temporary file, its
 *     release recorded, and only then renamed into place.
 *
 * Owns: the sequence above. Never: prints (results and events go to the
 * caller's callbacks), installs signal handlers or creates an event loop
 * (the caller passes its uv_loop_t, as libuv does), logs a match key, a
 * point or a secret.
 *
 * A party runs one thing at a time (serve, run or ping) on the caller's
 * loop: start it, run the loop, on_closed tells when it has finished.
 * Callbacks run on the loop thread.
 *
 * A serving party may hold many collaborations (one node for all of a
 * provider's partners): cr_party_config.collaborations_dir names a
 * directory with one sub-directory per collaboration,
 *
 *   DIR/<name>/template.json        the template both partners agreed
 *   DIR/<name>/template.json.sig    its signatures (where it requires them)
 *   DIR/<name>/collaboration.conf   `key = value`: data = FILE (required),
 *                                   audit, max_sessions, timeout,
 *                                   max_reject_ratio, enabled
 *
 * and each connection is routed to its collaboration by the partner's
 * certificate and the template hash in its Hello. The directory is watched:
 * a new, changed or removed collaboration takes effect within seconds
 * (cr_party_reload looks at once), a broken one is reported and leaves the
 * previous version serving, and sessions in progress keep the version they
 * started with. A changed data file is read again by the next session.
 * serve with template_path and data is the same with one collaboration.
 *
 * Audit logs: one per identity (IDENTITY_DIR/audit.jsonl) by default,
 * shared by every collaboration and by every process of the identity
 * (appends lock the file one at a time); a collaboration may have its own
 * (audit = FILE). Every line a collaboration writes names it
 * ("collaboration", "template_sha256", "partner").
 */
#ifndef CLEANROOM_PARTY_H
#define CLEANROOM_PARTY_H

#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include "cleanroom/audit.h"
#include "cleanroom/common.h"
#include "cleanroom/dataset.h"
#include "cleanroom/net.h"
#include "cleanroom/protocol.h"
#include "cleanroom/template.h"

#ifdef __cplusplus
extern "C" {
#endif

#define CR_PARTY_SOFTWARE "cleanroom/0.1.0"
/* The files of a collaboration's sub-directory. */
#define CR_COLLAB_TEMPLATE_FILE "template.json"
#define CR_COLLAB_CONF_FILE "collaboration.conf"

/* ---- Template signatures ------------------------------------------------- */
/*
 * Each party signs the template's canonical SHA-256 with its node identity.
 * The signatures live next to the template, in FILE.sig (JSON), each with
 * the signer's certificate, so anyone holding the template can check them
 * against the fingerprints the template pins. A template with
 * "require_signatures": true is served or run only when both parties'
 * signatures are present and valid.
 *
 * Signed message: "cleanroom/v1/template-signature" || template_sha256.
 */
#define CR_TEMPLATE_SIG_FORMAT "cleanroom-template-signatures/1"
#define CR_TEMPLATE_SIG_SUFFIX ".sig"

typedef struct cr_template_sig_status {
  int present[CR_ROLE_COUNT];
  int valid[CR_ROLE_COUNT];
  char why[CR_ROLE_COUNT][256]; /* why a present signature is invalid */
  /* The file is for another version of the template: its template_sha256
   * (hex), which `template sign` replaces, dropping those signatures. */
  int other_template;
  char other_sha256[CR_SHA256_HEX_BYTES];
} cr_template_sig_status;

/* FILE.sig for a template loaded from FILE; malloc'ed. */
char *cr_template_sig_path(const cr_template *t);

/*
 * Adds (or replaces) this identity's signature in sig_path (created if
 * missing; written atomically). The identity must be one of the template's
 * parties; *role_out tells which. CR_ECONFIG otherwise.
 */
CR_NODISCARD int cr_template_sign(const cr_template *t, const char *sig_path, const cr_identity *id,
                                  cr_role *role_out, cr_error *err);

/*
 * Reads sig_path and checks every signature in it: the certificate's
 * fingerprint equals the template's pin for that role, the signature
 * verifies, and the file is for this template's hash. A missing file is not
 * an error (nothing present). CR_ETEMPLATE for a malformed file.
 */
CR_NODISCARD int cr_template_verify_sigs(const cr_template *t, const char *sig_path,
                                         cr_template_sig_status *st, cr_error *err);

/* When t->require_signatures: 0 if both are present and valid, else
 * CR_EREFUSED with a message saying which is missing or invalid and how to
 * add it. Always 0 when the template does not require signatures. */
CR_NODISCARD int cr_template_require_sigs(const cr_template *t, const char *sig_path,
                                          cr_error *err);

/* ---- Opening a party ------------------------------------------------------ */

typedef struct cr_party cr_party;

typedef enum cr_party_mode {
  CR_PARTY_SERVE = 1,
  CR_PARTY_RUN,
  CR_PARTY_PING,
  CR_PARTY_CHECK /* a dry run of the data (cr_party_check_data): no network */
} cr_party_mode;

typedef struct cr_party_config {
  cr_party_mode mode;
  const char *template_path; /* NULL for serve with collaborations_dir */
  const char *identity_dir;
  /* The node's audit log (and each collaboration's, unless its conf names
   * another). NULL: IDENTITY_DIR/audit.jsonl. */
  const char *audit_path;
  /* serve: HOST:PORT to listen on. run and ping: the partner's HOST:PORT;
   * NULL: the template's address for the partner (parties.<role>.address). */
  const char *address;
  const char *software; /* NULL: CR_PARTY_SOFTWARE */
  /* serve: one sub-directory per collaboration, instead of template_path
   * (see the top of this file). */
  const char *collaborations_dir;
  /*
   * Memory and spilling (issue 17, docs/memory.md). memory_bytes: the
   * node's budget (0: CR_PARTY_MEMORY_DEFAULT_MIB MiB). The sorters of
   * every session and data load of this process share one cr_spill with
   * cr_party_sorter_budget(memory_bytes); the rest (TLS, frames, the worker
   * pool, the libraries) is the reserve. work_dir: where runs spill (0700,
   * created if missing; NULL: IDENTITY_DIR/work). spill_max_bytes: a cap on
   * the spill files on disk at once (0: the file system's free space).
   * serve, run and data check open the spill; a ping loads no data.
   */
  uint64_t memory_bytes;
  const char *work_dir;
  uint64_t spill_max_bytes;
  /*
   * A node spread over an MPI job (cleanroom-mpi, docs/scale-out.md):
   * cluster_processes K (0: a single process, the default) and the hosts
   * they run on ("a,b"), recorded with every session in the audit log.
   */
  unsigned cluster_processes;
  const char *cluster_hosts;
} cr_party_config;

#define CR_PARTY_MEMORY_DEFAULT_MIB 256u
/* What a node needs beside its sorters (measured: docs/memory.md). */
#define CR_PARTY_MEMORY_RESERVE_MIB 24u
/* The sorters' share of a budget: budget - reserve, but never less than a
 * quarter of the budget (so `--memory 1` still works, slowly: 256 KiB). */
uint64_t cr_party_sorter_budget(uint64_t memory_bytes);
/* IDENTITY_DIR/work; malloc'ed. */
char *cr_party_default_work_dir(const char *identity_dir);

/*
 * Loads the template and the identity, finds this node's role (the party
 * whose cert_sha256 is the identity's fingerprint), opens the audit log and
 * records node_started, then checks the template's signatures where it
 * requires them (a refusal is recorded as template_refused).
 *
 * Errors: CR_ETEMPLATE / CR_ECONFIG / CR_EUSAGE for the template, the
 * identity, a role that is not a party of the template, no address, or an
 * audit log that cannot be opened (serve, run); CR_EREFUSED for missing or
 * invalid signatures (serve, run). A ping never fails on the audit log or
 * the signatures: cr_party_note() says what serve and run would refuse.
 */
CR_NODISCARD int cr_party_open(cr_party **out, const cr_party_config *cfg, cr_error *err);
/* Closes the audit log; only once nothing is running (after on_closed). */
void cr_party_close(cr_party *p);

/* The template of run, ping and serve --template; NULL (and role
 * meaningless) for serve with collaborations_dir. */
cr_role cr_party_role(const cr_party *p);
const cr_template *cr_party_template(const cr_party *p);
const cr_identity *cr_party_identity(const cr_party *p);
/* The address serve listens on, or the partner's address for run and ping. */
const char *cr_party_address(const cr_party *p);
const char *cr_party_audit_path(const cr_party *p);
/* Ping: why serve and run would refuse this template ("" if they would
 * not); CR_PARTY_NOTE_AUDIT: why the ping is not in the audit log. */
enum { CR_PARTY_NOTE_SIGNATURES = 0, CR_PARTY_NOTE_AUDIT = 1, CR_PARTY_NOTE_SPILL = 2 };
/* CR_PARTY_NOTE_SPILL: what opening the work directory removed of nodes
 * killed before they could clean up ("" when nothing), also recorded in the
 * audit log as spill_recovered. */

/* The node's spill (NULL for a ping), its work directory and its figures
 * so far (all zero without a spill). Thread-safe. */
const char *cr_party_work_dir(const cr_party *p);
void cr_party_spill_stats(const cr_party *p, cr_spill_stats *st);
const char *cr_party_note(const cr_party *p, int which);

/* ---- Privacy budget (docs/privacy.md) ------------------------------------ */

/*
 * limits.privacy_budget as this node's audit log counts it: every admitted
 * run of a query with noise spends the query's epsilon (and delta) when it
 * is admitted, before anything of it can be released, whether it later
 * completes or not; the spends are read from the log (session_started
 * lines), so a restart does not reset them. Exact fixed point.
 */
typedef struct cr_party_budget {
  int set;                         /* the template has limits.privacy_budget */
  uint64_t epsilon, epsilon_spent; /* millionths (CR_DP_EPSILON_UNIT) */
  uint64_t delta, delta_spent;     /* 10^-15ths (CR_DP_DELTA_UNIT) */
} cr_party_budget;

/* The budget now (serve and run parties; read from the log once, then
 * kept). budget.set 0 when the template has none. CR_EDATA / CR_EIO when
 * the log cannot be read. */
CR_NODISCARD int cr_party_budget_get(cr_party *p, cr_party_budget *out, cr_error *err);

/* ---- Sessions ----------------------------------------------------------- */

/* One session as it ended, after its audit lines are on disk. */
typedef struct cr_party_session {
  const cr_session_result *res;
  const char *peer_addr;  /* "ip:port" or NULL */
  const uint8_t *peer_fp; /* the partner's certificate fingerprint, or NULL */
  /*
   * 0: what res says was released is recorded and may be shown. Otherwise
   * the session completed but its release could not be recorded or
   * written (CR_E* in release_rc, why in release_msg): it is withheld and
   * must not be shown.
   */
  int release_rc;
  const char *release_msg;
  /* Run, members: the owner's matched rows, written to rows_path. */
  int rows_written;
  const char *rows_path;
  uint64_t rows;
  uint8_t rows_sha256[CR_SHA256_BYTES];
  /* Which collaboration (NULL for a connection refused before it had one:
   * a stranger, BUSY, an unknown template), its template and the partner's
   * organisation, and how long the session took (from the partner's Hello
   * to its end; run: from the start). */
  const char *collaboration;
  const cr_template *tmpl;
  const char *partner;
  double duration_ms;
  /* The privacy budget after this session's spend (budget.set 0 when the
   * template has none). */
  cr_party_budget budget;
} cr_party_session;

/* A change to a serving node's collaborations (cr_party_events.on_collab),
 * also recorded in the audit log as collaboration_<change>. */
typedef struct cr_party_collab_info {
  /* "loaded" (at start), "added", "changed", "removed", or "refused" (a
   * version that did not load: error says why; serving says whether a
   * previous version still serves). */
  const char *change;
  const char *name;
  const char *dir;           /* NULL for serve --template */
  const char *template_path; /* NULL when not known */
  const cr_template *t;      /* NULL when the template did not load */
  cr_role role;
  const char *data;
  const char *audit;
  const char *error; /* "" unless refused */
  int serving;
  int enabled; /* its conf says enabled (a disabled one is loaded, not served) */
} cr_party_collab_info;

/*
 * The "released" object of a session (JSON, malloc'ed; "null" when nothing
 * is released to this side): what the audit log records in result_released,
 * so a front end that prints it shows exactly what was recorded. NULL when
 * out of memory.
 */
char *cr_party_released_json(const cr_party_session *s);

typedef struct cr_party_events {
  /* serve and run: the data set loaded at start (for a summary). */
  void (*on_data)(void *ctx, const cr_dataset *d);
  /* serve: listening, with the bound address. */
  void (*on_listening)(void *ctx, const char *addr);
  /* Every session or refused connection, once recorded. */
  void (*on_session)(void *ctx, const cr_party_session *s);
  /* serve: a ping answered (recorded as ping_answered), with the
   * collaboration it was for. */
  void (*on_ping)(void *ctx, const cr_party_session *s);
  /* serve: a collaboration loaded, added, changed, removed or refused. */
  void (*on_collab)(void *ctx, const cr_party_collab_info *c);
  /* run: where the session is. */
  void (*on_progress)(void *ctx, const cr_session_progress *p);
  /*
   * Exactly once after a successful start, when the party has stopped and
   * closed every handle: rc 0, or the failure (run: the session's; serve
   * with once: that session's). Run: the session's result, NULL if the
   * connection failed before one started; it belongs to the party and is
   * valid during the callback only.
   */
  void (*on_closed)(void *ctx, int rc, const cr_error *err, const cr_party_session *s);
  void *ctx;
} cr_party_events;

typedef struct cr_party_serve_config {
  /* The data source (cr_source_open): a CSV path, sqlite:PATH or a
   * postgresql:// URI (never with a password); data_query is the SELECT a
   * database source needs; delimiter a CSV's separator (0: detected).
   * serve --template only: NULL with collaborations_dir (each
   * collaboration.conf names its own: data, data_query, delimiter). */
  const char *data;
  const char *data_query;
  char delimiter;
  /* Share of rows that may be rejected before the load fails: 0 the
   * dataset default (5%), negative none at all. A collaboration's conf
   * may say otherwise. */
  double max_reject_ratio;
  int once;              /* stop after the first connection past TLS */
  unsigned max_sessions; /* the whole node's; 0: 16 */
  unsigned timeout_ms;   /* handshake and idle; 0: the node's defaults */
  cr_pool *pool;         /* blinding workers; NULL: none */
} cr_party_serve_config;

/*
 * Loads each collaboration's data set (recorded as data_loaded), checks it
 * against its template (set size, every `where` filter's columns), and
 * starts serving on loop (and watching the collaborations directory).
 * With collaborations_dir, a collaboration that does not load is reported
 * (on_collab, audit log) and left out; the others serve. Each session is admitted from the runner's
 * query and the run limit, loads its own set for the query (filter, parameters, group_by), and is
 * recorded from session_started to its release and receipt. Returns 0 (serving; on_closed follows)
 * or the setup failure, recorded and with nothing left running: CR_EDATA (data), CR_EREFUSED (the
 * template's limits), CR_EUSAGE / CR_ECONFIG, CR_ENET (cannot listen), CR_EIO (the work
 * directory is full or its cap reached while loading).
 */
CR_NODISCARD int cr_party_serve(cr_party *p, uv_loop_t *loop, const cr_party_serve_config *cfg,
                                const cr_party_events *ev, cr_error *err);

typedef struct cr_party_run_config {
  const char *data; /* as for serve, with data_query and delimiter */
  const char *data_query;
  char delimiter;
  double max_reject_ratio; /* as for serve */
  const char *query;
  const char *const *params; /* "NAME=VALUE", as typed by a user */
  size_t nparams;
  const char *out;     /* members: where this side's matched rows go */
  int overwrite_out;   /* out may replace an existing file (--force); else CR_EUSAGE */
  unsigned timeout_ms; /* 0: the node's defaults */
  cr_pool *pool;
} cr_party_run_config;

/*
 * Checks the query (it exists, this role may run it, the template has not
 * expired, the parameters fit their declared types: CR_EREFUSED, recorded
 * as run_refused), loads the own set for it (CR_EDATA; CR_EIO when the
 * work directory is full or its cap reached), then connects to
 * the partner on loop and runs it. 0: running, on_closed follows with the
 * outcome (the release already recorded, and a members file in place).
 */
CR_NODISCARD int cr_party_run(cr_party *p, uv_loop_t *loop, const cr_party_run_config *cfg,
                              const cr_party_events *ev, cr_error *err);

/* ---- Data check (a dry run) ----------------------------------------------- */

typedef struct cr_party_check_config {
  const char *data, *data_query; /* as for serve and run */
  char delimiter;
  /* The query whose filter, parameters and group_by to apply (NULL: the
   * whole set, as serve loads it at start). */
  const char *query;
  const char *const *params; /* "NAME=VALUE" */
  size_t nparams;
  double max_reject_ratio; /* as for serve */
  size_t samples;          /* masked keys to show; 0: 5 */
} cr_party_check_config;

typedef struct cr_party_data_check {
  /* The set as serve or run would load it for the query, loaded as a dry
   * run (too many rejected rows does not stop it: data->refusal says so). */
  cr_dataset *data;
  const cr_query *query; /* NULL when none was given */
  int runs_query;        /* this role may run the query (else the partner runs it) */
  /* 0 when serve and run would take this data; else what they would say:
   * CR_EDATA (rejected rows), CR_EREFUSED (the template's limits, a filter
   * keeping nothing, an expired template). */
  int verdict;
  char verdict_msg[1024];
  uint64_t announced; /* the size bucket Hello would carry for this set */
} cr_party_data_check;

/*
 * `cleanroom data check`: loads the data for the query exactly as serve or
 * run would (source, filter, parameters, group_by, normalization), as a
 * dry run with masked samples, and checks it against the template's limits.
 * Nothing goes on the network. The access is recorded in the audit log as
 * data_checked (the design records every data access; a check is not a
 * session, so no session line and no node_started). Returns 0 with *out
 * filled (free with cr_party_check_free) whatever the verdict; CR_EUSAGE or
 * CR_EREFUSED for a query or parameters that do not fit the template;
 * CR_EDATA when the source cannot be read at all, CR_EIO when the work
 * directory is full or its cap reached (both recorded).
 */
CR_NODISCARD int cr_party_check_data(cr_party *p, const cr_party_check_config *cfg,
                                     cr_party_data_check *out, cr_error *err);
void cr_party_check_free(cr_party_data_check *c);

/* ---- Ping --------------------------------------------------------------- */

/* What went wrong with a ping, from error codes and structured fields. */
#define CR_PING_PROBLEM_MAP(XX)                                                                    \
  XX(NONE, "none")                                                                                 \
  XX(DNS, "dns")                                                                                   \
  XX(REFUSED, "refused")                                                                           \
  XX(UNREACHABLE, "unreachable")                                                                   \
  XX(TIMEOUT, "timeout")                                                                           \
  XX(CONNECTION_LOST, "connection_lost")                                                           \
  XX(TLS, "tls")                                                                                   \
  XX(WRONG_CERTIFICATE, "wrong_certificate")                                                       \
  XX(OUR_CERTIFICATE_REJECTED, "our_certificate_rejected")                                         \
  XX(TEMPLATE_MISMATCH, "template_mismatch")                                                       \
  XX(PROTOCOL_VERSION, "protocol_version")                                                         \
  XX(ROLE, "role")                                                                                 \
  XX(SUITE, "suite")                                                                               \
  XX(BUSY, "busy")                                                                                 \
  XX(REFUSED_BY_PEER, "refused_by_peer")                                                           \
  XX(PEER_ERROR, "peer_error")                                                                     \
  XX(PROTOCOL, "protocol")                                                                         \
  XX(ERROR, "error")

typedef enum cr_ping_problem {
#define CR__PING_ENUM(name, text) CR_PING_##name,
  CR_PING_PROBLEM_MAP(CR__PING_ENUM)
#undef CR__PING_ENUM
} cr_ping_problem;
/* "template_mismatch"; NULL for NONE. */
const char *cr_ping_problem_name(cr_ping_problem p);

typedef struct cr_party_ping_report {
  cr_ping_problem problem;
  int rc;              /* CR_E* of the failure, 0 when the partner answered */
  int wire_error;      /* CR_WIRE_* sent or received, 0 if none */
  const char *message; /* the failure in words ("" when none) */
  int local;           /* failed before anything went out: a local problem */
  int reachable;       /* the host answered (TCP connected, or refused after it) */
  int tcp_ok;          /* TCP connected */
  int tls_ok;          /* TLS completed with the pinned certificate */
  char peer_addr[128]; /* the address that answered (ip:port), "" if none */
  int have_peer_fp;
  uint8_t peer_fp[CR_SHA256_BYTES]; /* the certificate the partner presented */
  int have_peer_template;           /* the partner said which template it loaded */
  uint8_t peer_template[CR_SHA256_BYTES];
  unsigned peer_version; /* 0: not known */
  char peer_software[64];
  double connect_ms; /* DNS + TCP + TLS; < 0 when TLS did not complete */
  double rtt_ms;     /* TLS end to session end; < 0 unless it answered */
  double total_ms;
} cr_party_ping_report;

/*
 * A ping: TLS with the pinned certificate and a Hello exchange with no query
 * and no data, recorded as a `ping` line (unless the audit log could not be
 * opened: cr_party_note). The report arrives in on_ping_done, on the loop,
 * before on_closed. 0: started; else a local failure.
 */
CR_NODISCARD int cr_party_ping(cr_party *p, uv_loop_t *loop, unsigned timeout_ms,
                               void (*on_ping_done)(void *ctx, const cr_party_ping_report *r),
                               const cr_party_events *ev, cr_error *err);
/* What to do about a ping's problem, in a sentence; NULL for NONE. */
const char *cr_party_ping_advice(const cr_party *p, const cr_party_ping_report *r);

/* Loop thread: stops a serve (sessions in progress are aborted) or a run;
 * on_closed follows. */
void cr_party_stop(cr_party *p);

/* Loop thread, serving: looks for new, changed and removed collaborations
 * now (the CLI calls it on SIGHUP); what changed is reported through
 * on_collab within moments (data checks run on the thread pool). 0, or
 * CR_EINVAL when not serving. */
int cr_party_reload(cr_party *p);

/*
 * serve --check: loads every collaboration as serve would (conf,
 * template, role, signatures, data and its checks against the template)
 * and reports each through report (change "loaded" or "refused"), without
 * opening an audit log or serving. cfg as for cr_party_open (mode SERVE;
 * template_path or collaborations_dir); scfg->data for template_path.
 * 0 when every collaboration is good; otherwise the CR_E* of the first
 * broken one (CR_ECONFIG, CR_ETEMPLATE, CR_EREFUSED, CR_EDATA), and err
 * says how many are broken.
 */
CR_NODISCARD int cr_party_check(const cr_party_config *cfg, const cr_party_serve_config *scfg,
                                void (*report)(void *ctx, const cr_party_collab_info *c), void *ctx,
                                cr_error *err);

#ifdef __cplusplus
}
#endif
#endif
