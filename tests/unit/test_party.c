/*
 * The party layer (include/cleanroom/party.h) with real identities, pinned
 * copies of the example templates and the example data: a provider serving
 * and a consumer running on one loop in this thread, over loopback TLS, as
 * examples/embed/embed.c does. Covers a complete count (both audit logs
 * verify and hold the events docs/audit.md lists), the run limit counted
 * from the audit log (also across a restart), cr_party_open's errors,
 * cr_party_run's refusals before anything is sent, a members release (the
 * rows file and its audit line; an unwritable one is withheld), filters with
 * parameters, that the library installs no signal handler, and
 * cr_party_stop on an idle serve. Every test ends with uv_loop_close() == 0.
 */
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <uv.h>

#include "cleanroom/party.h"
#include "support/fixtures.h"

/* ---- per-test world: a temp dir, two identities, a pinned template ------- */

typedef struct world {
  char root[FX_PATH_MAX];
  fx_parties ids;
  char tmpl[FX_PATH_MAX];
  char audit[2][FX_PATH_MAX]; /* each identity's default audit log */
} world;

static int setup(void **state) {
  world *w = calloc(1, sizeof *w);
  if (w == NULL || fx_tmpdir(w->root, sizeof w->root, "test_party") != 0 ||
      fx_parties_generate(&w->ids, w->root) != 0)
    return -1;
  assert_non_null(fx_join(w->tmpl, sizeof w->tmpl, w->root, "template.json"));
  for (int i = 0; i < 2; i++)
    assert_non_null(fx_join(w->audit[i], sizeof w->audit[i], w->ids.dir[i], "audit.jsonl"));
  *state = w;
  return 0;
}

static int teardown(void **state) {
  world *w = *state;
  if (getenv("CR_TEST_KEEP") == NULL)
    (void)fx_rmtree(w->root);
  else
    print_message("kept %s\n", w->root);
  free(w);
  return 0;
}

/* The example template `example` (e.g. "overlap/template.json") pinned to
 * both identities, with edits (or NULL), at w->tmpl. */
static void pin(world *w, const char *example, const char *edits) {
  char src[FX_PATH_MAX];
  assert_non_null(fx_example(src, sizeof src, example));
  assert_int_equal(
      fx_pin_template(src, w->tmpl, w->ids.hex[FX_PROVIDER], w->ids.hex[FX_CONSUMER], edits), 0);
}

static const char *example(char *buf, size_t cap, const char *rel) {
  const char *p = fx_example(buf, cap, rel);
  assert_non_null(p);
  return p;
}

/* ---- a provider serving once and a consumer running, on one loop ---------- */

typedef struct pair {
  world *w;
  uv_loop_t loop;
  /* what to run */
  const char *prov_data, *cons_data, *query, *out;
  const char *const *params;
  size_t nparams;
  const char *cons_audit; /* NULL: the consumer identity's default log */
  /* the parties, and what they said */
  cr_party *prov, *cons;
  uint8_t pk[2][CR_SIGN_PK_BYTES];
  int serve_rc, cons_open_rc, run_rc;
  cr_error serve_err, cons_err;
  int prov_closed, cons_closed, prov_sessions, listening;
  int prov_rc, cons_rc;
  int cons_have_session;
  cr_session_status cons_status;
  int cons_receives, cons_suppressed;
  uint64_t cons_count;
  int release_rc, rows_written;
  uint64_t rows;
  uint8_t rows_sha256[CR_SHA256_BYTES];
  char rows_path[FX_PATH_MAX];
  int out_seen_during_run; /* the members file existed during the session */
  int progress_calls;
} pair;

static void cons_on_progress(void *ctx, const cr_session_progress *p) {
  pair *x = ctx;
  (void)p;
  x->progress_calls++;
  if (x->out != NULL && fx_exists(x->out))
    x->out_seen_during_run = 1;
}

static void cons_on_closed(void *ctx, int rc, const cr_error *err, const cr_party_session *s) {
  pair *x = ctx;
  x->cons_closed++;
  x->cons_rc = rc;
  if (err != NULL)
    x->cons_err = *err;
  if (s != NULL && s->res != NULL) {
    x->cons_have_session = 1;
    x->cons_status = s->res->status;
    x->cons_receives = s->res->receives;
    x->cons_suppressed = s->res->suppressed;
    x->cons_count = s->res->count;
    x->release_rc = s->release_rc;
    x->rows_written = s->rows_written;
    x->rows = s->rows;
    memcpy(x->rows_sha256, s->rows_sha256, sizeof x->rows_sha256);
    snprintf(x->rows_path, sizeof x->rows_path, "%s", s->rows_path ? s->rows_path : "");
  }
  if (rc != 0)
    cr_party_stop(x->prov); /* a no-op once the provider has finished */
}

static void prov_on_listening(void *ctx, const char *addr) {
  pair *x = ctx;
  x->listening++;
  cr_party_config pc = {0};
  pc.mode = CR_PARTY_RUN;
  pc.template_path = x->w->tmpl;
  pc.identity_dir = x->w->ids.dir[FX_CONSUMER];
  pc.audit_path = x->cons_audit;
  pc.address = addr;
  x->cons_open_rc = cr_party_open(&x->cons, &pc, &x->cons_err);
  if (x->cons_open_rc != 0) {
    cr_party_stop(x->prov);
    return;
  }
  cr_identity_public_key(cr_party_identity(x->cons), x->pk[FX_CONSUMER]);
  cr_party_run_config rc = {0};
  rc.data = x->cons_data;
  rc.query = x->query;
  rc.params = x->params;
  rc.nparams = x->nparams;
  rc.out = x->out;
  cr_party_events ev = {0};
  ev.on_progress = cons_on_progress;
  ev.on_closed = cons_on_closed;
  ev.ctx = x;
  x->run_rc = cr_party_run(x->cons, &x->loop, &rc, &ev, &x->cons_err);
  if (x->run_rc != 0)
    cr_party_stop(x->prov);
}

static void prov_on_session(void *ctx, const cr_party_session *s) {
  pair *x = ctx;
  (void)s;
  x->prov_sessions++;
}

static void prov_on_closed(void *ctx, int rc, const cr_error *err, const cr_party_session *s) {
  pair *x = ctx;
  (void)err;
  assert_null(s); /* serve reports sessions through on_session */
  x->prov_closed++;
  x->prov_rc = rc;
}

/* Opens both parties, serves once, runs the query, runs the loop to the
 * end; both parties are closed and the loop too (checked) on return. */
static void pair_run(pair *x) {
  assert_int_equal(uv_loop_init(&x->loop), 0);
  cr_party_config pc = {0};
  pc.mode = CR_PARTY_SERVE;
  pc.template_path = x->w->tmpl;
  pc.identity_dir = x->w->ids.dir[FX_PROVIDER];
  pc.address = "127.0.0.1:0";
  cr_error err;
  cr_error_clear(&err);
  int rc = cr_party_open(&x->prov, &pc, &err);
  if (rc != 0)
    fail_msg("provider open: %s", cr_error_message(&err, rc));
  cr_identity_public_key(cr_party_identity(x->prov), x->pk[FX_PROVIDER]);
  cr_party_serve_config sc = {0};
  sc.data = x->prov_data;
  sc.once = 1;
  cr_party_events ev = {0};
  ev.on_listening = prov_on_listening;
  ev.on_session = prov_on_session;
  ev.on_closed = prov_on_closed;
  ev.ctx = x;
  x->serve_rc = cr_party_serve(x->prov, &x->loop, &sc, &ev, &x->serve_err);
  if (x->serve_rc != 0)
    fail_msg("serve: %s", cr_error_message(&x->serve_err, x->serve_rc));
  assert_int_equal(uv_run(&x->loop, UV_RUN_DEFAULT), 0);
  if (getenv("CR_TEST_VERBOSE") != NULL)
    print_message("  consumer rc %s: %s\n", cr_err_name(x->cons_rc),
                  cr_error_message(&x->cons_err, x->cons_rc));
  assert_int_equal(x->listening, 1);
  assert_int_equal(x->prov_closed, 1);
  if (x->cons_open_rc == 0 && x->run_rc == 0)
    assert_int_equal(x->cons_closed, 1);
  cr_party_close(x->cons);
  cr_party_close(x->prov);
  x->cons = x->prov = NULL;
  assert_int_equal(uv_loop_close(&x->loop), 0);
}

static void pair_init(pair *x, world *w, const char *prov_data, const char *cons_data,
                      const char *query) {
  memset(x, 0, sizeof *x);
  x->w = w;
  x->prov_data = prov_data;
  x->cons_data = cons_data;
  x->query = query;
}

/* The log verifies (checkpoints signed by pk, if not NULL); with sessions,
 * every line is under a checkpoint (one follows each session). */
static void verify_log(const char *path, const uint8_t *pk, int sessions) {
  cr_audit_report rep;
  cr_error err;
  cr_error_clear(&err);
  int rc = cr_audit_verify(path, pk, &rep, &err);
  if (rc != 0)
    fail_msg("%s: %s", path, cr_error_message(&err, rc));
  assert_true(rep.lines > 0);
  if (sessions) {
    assert_true(rep.checkpoints >= 1);
    assert_int_equal(rep.unsigned_tail, 0);
  }
}

static void expect_events(const char *path, const char *const *names, const int *counts) {
  for (size_t i = 0; names[i] != NULL; i++) {
    int n = fx_audit_count(path, names[i]);
    if (n != counts[i])
      fail_msg("%s: %d %s events, expected %d", path, n, names[i], counts[i]);
  }
}

/* ---- tests ------------------------------------------------------------------ */

/* The overlap example end to end: count 640 on both sides, both logs
 * verify and hold the whole story. */
static void test_overlap_count(void **state) {
  world *w = *state;
  char pd[FX_PATH_MAX], cd[FX_PATH_MAX];
  pin(w, "overlap/template.json", NULL);
  pair x;
  pair_init(&x, w, example(pd, sizeof pd, "overlap/provider.csv"),
            example(cd, sizeof cd, "overlap/consumer.csv"), "overlap");
  pair_run(&x);
  assert_int_equal(x.cons_rc, 0);
  assert_int_equal(x.prov_rc, 0);
  assert_true(x.cons_have_session);
  assert_int_equal(x.cons_status, CR_SESSION_DONE);
  assert_int_equal(x.release_rc, 0);
  assert_true(x.cons_receives);
  assert_false(x.cons_suppressed);
  assert_int_equal(x.cons_count, 640);
  assert_int_equal(x.prov_sessions, 1);
  assert_true(x.progress_calls > 0);

  static const char *const names[] = {"node_started",    "data_loaded", "session_started",
                                      "result_released", "receipt",     "checkpoint",
                                      "session_aborted", "run_refused", NULL};
  static const int once[] = {1, 1, 1, 1, 1, 1, 0, 0};
  /* The serving provider reads its data at start (the check) and again for
   * the session: each session gets a load of its own (its send order). */
  static const int served[] = {1, 2, 1, 1, 1, 1, 0, 0};
  expect_events(w->audit[FX_CONSUMER], names, once);
  expect_events(w->audit[FX_PROVIDER], names, served);
  json_t *own = fx_audit_event(w->audit[FX_PROVIDER], "data_loaded", 1);
  assert_non_null(own);
  assert_string_equal(json_string_value(json_object_get(own, "query")), "overlap");
  json_decref(own);
  assert_int_equal(fx_audit_count(w->audit[FX_PROVIDER], "connection_accepted"), 1);
  verify_log(w->audit[FX_PROVIDER], x.pk[FX_PROVIDER], 1);
  verify_log(w->audit[FX_CONSUMER], x.pk[FX_CONSUMER], 1);

  /* Both released the same count (results_to: both), to the right roles. */
  for (int i = 0; i < 2; i++) {
    json_t *rel = fx_audit_event(w->audit[i], "result_released", 0);
    assert_non_null(rel);
    assert_string_equal(json_string_value(json_object_get(rel, "query")), "overlap");
    assert_string_equal(json_string_value(json_object_get(rel, "role")),
                        i == FX_PROVIDER ? "provider" : "consumer");
    assert_true(json_is_true(json_object_get(rel, "receives")));
    json_t *released = json_object_get(rel, "released");
    assert_int_equal(json_integer_value(json_object_get(released, "count")), 640);
    json_decref(rel);
  }
  /* The consumer's node_started names its role and certificate. */
  json_t *ns = fx_audit_event(w->audit[FX_CONSUMER], "node_started", 0);
  assert_non_null(ns);
  assert_string_equal(json_string_value(json_object_get(ns, "role")), "consumer");
  assert_string_equal(json_string_value(json_object_get(ns, "cert_sha256")),
                      w->ids.hex[FX_CONSUMER]);
  json_decref(ns);
}

/* max_runs_per_query = 2: two runs, then refusals, also after a restart
 * (fresh parties count the runs from their logs). */
static void test_run_limit(void **state) {
  world *w = *state;
  char pd[FX_PATH_MAX], cd[FX_PATH_MAX];
  pin(w, "overlap/template.json", "{\"limits\": {\"max_runs_per_query\": 2}}");
  example(pd, sizeof pd, "overlap/provider.csv");
  example(cd, sizeof cd, "overlap/consumer.csv");
  for (int run = 1; run <= 2; run++) {
    pair x;
    pair_init(&x, w, pd, cd, "overlap_to_consumer");
    pair_run(&x);
    assert_int_equal(x.cons_rc, 0);
    assert_int_equal(x.cons_count, 640);
  }
  /* Run 3: refused by the consumer's own node before it connects (it
   * counts its runs from its log), naming the limit; nothing is sent. */
  pair x;
  pair_init(&x, w, pd, cd, "overlap_to_consumer");
  pair_run(&x);
  assert_int_equal(x.run_rc, CR_EREFUSED);
  assert_non_null(strstr(x.cons_err.msg, "max_runs_per_query"));
  assert_false(x.cons_have_session);
  for (int i = 0; i < 2; i++) {
    assert_int_equal(fx_audit_count(w->audit[i], "session_started"), 2);
    assert_int_equal(fx_audit_count(w->audit[i], "result_released"), 2);
  }
  assert_int_equal(fx_audit_count(w->audit[FX_CONSUMER], "run_refused"), 1);
  /* Another query is counted on its own. */
  pair_init(&x, w, pd, cd, "overlap");
  pair_run(&x);
  assert_int_equal(x.cons_rc, 0);
  assert_int_equal(x.cons_count, 640);

  /* A restart with a fresh consumer log: the consumer would run, the
   * provider counts its own log and refuses. */
  char fresh[FX_PATH_MAX];
  assert_non_null(fx_join(fresh, sizeof fresh, w->root, "fresh-audit.jsonl"));
  pair_init(&x, w, pd, cd, "overlap_to_consumer");
  x.cons_audit = fresh;
  pair_run(&x);
  assert_int_not_equal(x.cons_rc, 0);
  assert_int_equal(x.cons_rc, CR_EPEER); /* the partner refused it */
  assert_non_null(strstr(x.cons_err.msg, "NOT_ALLOWED"));
  assert_int_equal(fx_audit_count(fresh, "result_released"), 0);
  assert_int_equal(fx_audit_count(fresh, "session_aborted"), 1);
  assert_int_equal(fx_audit_count(w->audit[FX_PROVIDER], "result_released"), 3);
  assert_int_equal(x.prov_rc, CR_EREFUSED);

  /* And a restart of both, with their own logs: still refused (by the
   * consumer's own node first, from its log). */
  pair_init(&x, w, pd, cd, "overlap_to_consumer");
  pair_run(&x);
  assert_int_equal(x.run_rc, CR_EREFUSED);
  assert_non_null(strstr(x.cons_err.msg, "max_runs_per_query"));
  for (int i = 0; i < 2; i++)
    assert_int_equal(fx_audit_count(w->audit[i], "result_released"), 3);
  verify_log(w->audit[FX_PROVIDER], NULL, 1);
  verify_log(w->audit[FX_CONSUMER], NULL, 1);
}

static int open_party(cr_party **p, world *w, cr_party_mode mode, const char *tmpl,
                      const char *identity, cr_error *err) {
  cr_party_config pc = {0};
  pc.mode = mode;
  pc.template_path = tmpl;
  pc.identity_dir = identity;
  pc.address = "127.0.0.1:1";
  cr_error_clear(err);
  (void)w;
  return cr_party_open(p, &pc, err);
}

static void test_open_errors(void **state) {
  world *w = *state;
  cr_party *p = NULL;
  cr_error err;
  char path[FX_PATH_MAX];

  /* No such template. */
  assert_non_null(fx_join(path, sizeof path, w->root, "no-such-template.json"));
  assert_int_equal(open_party(&p, w, CR_PARTY_SERVE, path, w->ids.dir[FX_PROVIDER], &err),
                   CR_ETEMPLATE);
  assert_null(p);
  /* Not a template. */
  assert_non_null(fx_join(path, sizeof path, w->root, "broken.json"));
  FILE *f = fopen(path, "w");
  assert_non_null(f);
  fputs("{\"format\": \"cleanroom-template/1\", \"parties\": ", f);
  fclose(f);
  assert_int_equal(open_party(&p, w, CR_PARTY_RUN, path, w->ids.dir[FX_CONSUMER], &err),
                   CR_ETEMPLATE);
  assert_null(p);
  /* A valid template that pins somebody else. */
  pin(w, "overlap/template.json", NULL);
  char stranger[FX_PATH_MAX];
  uint8_t sfp[CR_SHA256_BYTES];
  assert_non_null(fx_join(stranger, sizeof stranger, w->root, "stranger-id"));
  assert_int_equal(cr_identity_generate(stranger, "stranger", sfp, &err), 0);
  assert_int_equal(open_party(&p, w, CR_PARTY_SERVE, w->tmpl, stranger, &err), CR_ECONFIG);
  assert_null(p);
  assert_non_null(strstr(err.msg, w->ids.hex[FX_PROVIDER]));
  assert_non_null(strstr(err.msg, w->ids.hex[FX_CONSUMER]));
  assert_non_null(strstr(err.msg, "not a party"));
  /* require_signatures without a signature file: refused, and recorded. */
  pin(w, "overlap/template.json", "{\"require_signatures\": true}");
  assert_int_equal(open_party(&p, w, CR_PARTY_SERVE, w->tmpl, w->ids.dir[FX_PROVIDER], &err),
                   CR_EREFUSED);
  assert_null(p);
  assert_int_equal(open_party(&p, w, CR_PARTY_RUN, w->tmpl, w->ids.dir[FX_CONSUMER], &err),
                   CR_EREFUSED);
  assert_null(p);
  for (int i = 0; i < 2; i++) {
    assert_int_equal(fx_audit_count(w->audit[i], "node_started"), 1);
    assert_int_equal(fx_audit_count(w->audit[i], "template_refused"), 1);
    verify_log(w->audit[i], NULL, 0);
  }
  /* Signed by one party only: still refused. */
  cr_template *t = NULL;
  cr_identity *id = NULL;
  cr_role role;
  assert_int_equal(cr_template_load(&t, w->tmpl, &err), 0);
  assert_int_equal(cr_identity_load(&id, w->ids.dir[FX_PROVIDER], &err), 0);
  char *sig = cr_template_sig_path(t);
  assert_non_null(sig);
  assert_int_equal(cr_template_sign(t, sig, id, &role, &err), 0);
  assert_int_equal(role, CR_ROLE_PROVIDER);
  cr_identity_free(id);
  assert_int_equal(open_party(&p, w, CR_PARTY_RUN, w->tmpl, w->ids.dir[FX_CONSUMER], &err),
                   CR_EREFUSED);
  assert_null(p);
  assert_int_equal(fx_audit_count(w->audit[FX_CONSUMER], "template_refused"), 2);
  /* Signed by both: opens. */
  assert_int_equal(cr_identity_load(&id, w->ids.dir[FX_CONSUMER], &err), 0);
  assert_int_equal(cr_template_sign(t, sig, id, &role, &err), 0);
  assert_int_equal(role, CR_ROLE_CONSUMER);
  cr_identity_free(id);
  free(sig);
  cr_template_free(t);
  assert_int_equal(open_party(&p, w, CR_PARTY_RUN, w->tmpl, w->ids.dir[FX_CONSUMER], &err), 0);
  assert_non_null(p);
  assert_int_equal(cr_party_role(p), CR_ROLE_CONSUMER);
  cr_party_close(p);
}

/* cr_party_run refuses before anything goes out (no partner listens at
 * 127.0.0.1:1, and the loop has nothing to run). */
static void test_run_refusals(void **state) {
  world *w = *state;
  cr_party *p = NULL;
  cr_error err;
  char cd[FX_PATH_MAX], missing[FX_PATH_MAX], out[FX_PATH_MAX];
  uv_loop_t loop;
  assert_int_equal(uv_loop_init(&loop), 0);
  cr_party_run_config rc = {0};

  /* An unknown query. */
  pin(w, "overlap/template.json", NULL);
  assert_int_equal(open_party(&p, w, CR_PARTY_RUN, w->tmpl, w->ids.dir[FX_CONSUMER], &err), 0);
  rc.data = example(cd, sizeof cd, "overlap/consumer.csv");
  rc.query = "no_such_query";
  assert_int_equal(cr_party_run(p, &loop, &rc, NULL, &err), CR_EREFUSED);
  json_t *j = fx_audit_event(w->audit[FX_CONSUMER], "run_refused", 0);
  assert_non_null(j);
  assert_string_equal(json_string_value(json_object_get(j, "query")), "no_such_query");
  json_decref(j);
  /* A data file that does not exist. */
  assert_non_null(fx_join(missing, sizeof missing, w->root, "no-such-data.csv"));
  rc.data = missing;
  rc.query = "overlap";
  assert_int_equal(cr_party_run(p, &loop, &rc, NULL, &err), CR_EDATA);
  j = fx_audit_event(w->audit[FX_CONSUMER], "data_load_failed", 0);
  assert_non_null(j);
  assert_string_equal(json_string_value(json_object_get(j, "file")), missing);
  json_decref(j);
  assert_int_equal(fx_audit_count(w->audit[FX_CONSUMER], "data_loaded"), 0);
  cr_party_close(p);

  /* A members query for this side without a file to write the rows to. */
  pin(w, "rideshare/template.json", NULL);
  assert_int_equal(open_party(&p, w, CR_PARTY_RUN, w->tmpl, w->ids.dir[FX_CONSUMER], &err), 0);
  rc.data = example(cd, sizeof cd, "rideshare/app.csv");
  rc.query = "season_ticket_riders";
  assert_int_equal(cr_party_run(p, &loop, &rc, NULL, &err), CR_EUSAGE);
  assert_non_null(strstr(err.msg, "--out"));
  /* Parameters the query does not declare. */
  static const char *const bad[] = {"min_age=18"};
  rc.query = "riders_count";
  rc.params = bad;
  rc.nparams = 1;
  assert_non_null(fx_join(out, sizeof out, w->root, "unused.csv"));
  assert_int_equal(cr_party_run(p, &loop, &rc, NULL, &err), CR_EREFUSED);
  assert_int_equal(fx_audit_count(w->audit[FX_CONSUMER], "run_refused"), 2);
  assert_int_equal(fx_audit_count(w->audit[FX_CONSUMER], "data_loaded"), 0);
  cr_party_close(p);

  /* The pharma filter's parameters are typed: min_age=eighteen is refused. */
  pin(w, "pharma/template.json", NULL);
  assert_int_equal(open_party(&p, w, CR_PARTY_RUN, w->tmpl, w->ids.dir[FX_CONSUMER], &err), 0);
  static const char *const typed[] = {"codes=E11", "min_age=eighteen", "max_age=65"};
  rc.data = example(cd, sizeof cd, "pharma/registry.csv");
  rc.query = "eligible_patients";
  rc.params = typed;
  rc.nparams = 3;
  assert_int_equal(cr_party_run(p, &loop, &rc, NULL, &err), CR_EREFUSED);
  assert_int_equal(fx_audit_count(w->audit[FX_CONSUMER], "run_refused"), 3);
  cr_party_close(p);

  assert_int_equal(uv_run(&loop, UV_RUN_NOWAIT), 0);
  assert_int_equal(uv_loop_close(&loop), 0);
  assert_false(fx_exists(out));
  verify_log(w->audit[FX_CONSUMER], NULL, 0);
}

/* rideshare: the consumer runs the members query and gets its own matched
 * rows (user_id,email) in a file that takes its name only after the run. */
static void test_members_release(void **state) {
  world *w = *state;
  char pd[FX_PATH_MAX], cd[FX_PATH_MAX], outdir[FX_PATH_MAX], out[FX_PATH_MAX + 16];
  pin(w, "rideshare/template.json", NULL);
  assert_non_null(fx_join(outdir, sizeof outdir, w->root, "out"));
  assert_int_equal(mkdir(outdir, 0700), 0);
  assert_non_null(fx_join(out, sizeof out, outdir, "riders.csv"));
  pair x;
  pair_init(&x, w, example(pd, sizeof pd, "rideshare/team.csv"),
            example(cd, sizeof cd, "rideshare/app.csv"), "season_ticket_riders");
  x.out = out;
  pair_run(&x);
  assert_int_equal(x.cons_rc, 0);
  assert_int_equal(x.release_rc, 0);
  assert_int_equal(x.cons_status, CR_SESSION_DONE);
  assert_int_equal(x.cons_count, 400); /* distinct matched e-mails */
  assert_true(x.rows_written);
  assert_int_equal(x.rows, 428); /* app rows with a matched e-mail */
  assert_string_equal(x.rows_path, out);
  assert_true(x.progress_calls > 0);
  assert_false(x.out_seen_during_run);

  /* The file: a header and x.rows rows of the template's columns (CSV,
   * CRLF line ends), and the hash the session reported. */
  size_t len = 0;
  char *text = fx_read_file(out, &len);
  assert_non_null(text);
  int header_ok = strncmp(text, "user_id,email\r\n", 15) == 0;
  uint64_t lines = 0;
  for (size_t i = 0; i < len; i++)
    lines += text[i] == '\n';
  uint8_t sha[CR_SHA256_BYTES];
  char shahex[CR_SHA256_HEX_BYTES];
  cr_sha256(sha, text, len);
  cr_hex_encode(shahex, sha, sizeof sha);
  free(text);
  assert_true(header_ok);
  assert_int_equal(lines, x.rows + 1);
  assert_memory_equal(sha, x.rows_sha256, sizeof sha);
  /* Nothing else in the directory (no temporary file left behind). */
  DIR *d = opendir(outdir);
  assert_non_null(d);
  int entries = 0;
  struct dirent *e;
  while ((e = readdir(d)) != NULL)
    if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0)
      entries++;
  closedir(d);
  assert_int_equal(entries, 1);

  /* The consumer's release names the file, its rows and its hash. */
  json_t *rel = fx_audit_event(w->audit[FX_CONSUMER], "result_released", 0);
  assert_non_null(rel);
  json_t *r = json_object_get(rel, "released");
  assert_string_equal(json_string_value(json_object_get(r, "rows_file")), out);
  assert_int_equal(json_integer_value(json_object_get(r, "rows")), 428);
  assert_int_equal(json_integer_value(json_object_get(r, "count")), 400);
  assert_string_equal(json_string_value(json_object_get(r, "rows_file_sha256")), shahex);
  json_decref(rel);
  /* The provider released nothing to itself, and wrote no rows. */
  rel = fx_audit_event(w->audit[FX_PROVIDER], "result_released", 0);
  assert_non_null(rel);
  assert_true(json_is_false(json_object_get(rel, "receives")));
  assert_true(json_is_null(json_object_get(rel, "released")));
  json_decref(rel);
  verify_log(w->audit[FX_PROVIDER], x.pk[FX_PROVIDER], 1);
  verify_log(w->audit[FX_CONSUMER], x.pk[FX_CONSUMER], 1);
}

/* A members file that cannot be created is refused before the partner is
 * contacted: no session, no run spent, no file, and the refusal's lines are
 * signed when the party closes. */
static void test_members_unwritable_out(void **state) {
  world *w = *state;
  char pd[FX_PATH_MAX], cd[FX_PATH_MAX], out[FX_PATH_MAX];
  pin(w, "rideshare/template.json", NULL);
  assert_non_null(fx_join(out, sizeof out, w->root, "no-such-dir/riders.csv"));
  pair x;
  pair_init(&x, w, example(pd, sizeof pd, "rideshare/team.csv"),
            example(cd, sizeof cd, "rideshare/app.csv"), "season_ticket_riders");
  x.out = out;
  pair_run(&x);
  assert_int_equal(x.run_rc, CR_EUSAGE);
  assert_non_null(strstr(x.cons_err.msg, "cannot be written"));
  assert_false(x.rows_written);
  assert_false(fx_exists(out));
  assert_int_equal(fx_audit_count(w->audit[FX_CONSUMER], "result_released"), 0);
  assert_int_equal(fx_audit_count(w->audit[FX_CONSUMER], "session_started"), 0);
  assert_int_equal(fx_audit_count(w->audit[FX_PROVIDER], "session_started"), 0);
  /* Every line is under a checkpoint (written at close). */
  verify_log(w->audit[FX_CONSUMER], x.pk[FX_CONSUMER], 1);
}

/* members: an --out file that exists is refused before the partner is
 * contacted, unless the caller allows replacing it (issue 16). */
static void test_members_existing_out(void **state) {
  world *w = *state;
  char pd[FX_PATH_MAX], cd[FX_PATH_MAX], out[FX_PATH_MAX];
  pin(w, "rideshare/template.json", NULL);
  assert_non_null(fx_join(out, sizeof out, w->root, "riders.csv"));
  FILE *f = fopen(out, "w");
  assert_non_null(f);
  fputs("precious\n", f);
  fclose(f);
  pair x;
  pair_init(&x, w, example(pd, sizeof pd, "rideshare/team.csv"),
            example(cd, sizeof cd, "rideshare/app.csv"), "season_ticket_riders");
  x.out = out;
  pair_run(&x);
  assert_int_equal(x.run_rc, CR_EUSAGE);
  assert_non_null(strstr(x.cons_err.msg, "--force"));
  assert_int_equal(fx_audit_count(w->audit[FX_CONSUMER], "session_started"), 0);
  f = fopen(out, "r");
  char buf[32] = {0};
  assert_non_null(fgets(buf, sizeof buf, f));
  fclose(f);
  assert_string_equal(buf, "precious\n");
}

/* data check: the set as a run would load it, a verdict, recorded as
 * data_checked with a checkpoint; no node_started, no session, nothing
 * counted against a query; a password in a URI never reaches the log. */
static void test_data_check(void **state) {
  world *w = *state;
  cr_party *p = NULL;
  cr_error err;
  char pd[FX_PATH_MAX];
  pin(w, "insurance/template.json", NULL);
  cr_party_config pc = {0};
  pc.mode = CR_PARTY_CHECK;
  pc.template_path = w->tmpl;
  pc.identity_dir = w->ids.dir[FX_PROVIDER];
  assert_int_equal(cr_party_open(&p, &pc, &err), 0); /* no address needed */
  cr_party_check_config cc = {0};
  cr_party_data_check res;
  cc.data = example(pd, sizeof pd, "insurance/acme.csv");
  cc.query = "overlap_by_segment";
  assert_int_equal(cr_party_check_data(p, &cc, &res, &err), 0);
  assert_non_null(res.data);
  assert_int_equal(res.verdict, 0);
  assert_ptr_equal(res.query, cr_template_query(cr_party_template(p), "overlap_by_segment"));
  assert_false(res.runs_query); /* the consumer runs it */
  assert_int_equal(res.data->nlabels, 4);
  assert_int_equal(res.data->nsamples, 5);
  assert_int_equal(res.announced, cr_template_bucket(cr_party_template(p), res.data->n));
  cr_party_check_free(&res);
  /* An unknown query and a password: refused, nothing loaded. */
  cc.query = "nope";
  assert_int_equal(cr_party_check_data(p, &cc, &res, &err), CR_EUSAGE);
  cc.query = NULL;
  cc.data = "postgresql://u:hunter2pw@db/crm";
  cc.data_query = "SELECT email, segment FROM c";
  assert_int_equal(cr_party_check_data(p, &cc, &res, &err), CR_EUSAGE);
  assert_null(strstr(err.msg, "hunter2pw"));
  /* A file that is not there: recorded, CR_EDATA. */
  cc.data = "/nonexistent/acme.csv";
  cc.data_query = NULL;
  assert_int_equal(cr_party_check_data(p, &cc, &res, &err), CR_EDATA);
  cr_party_close(p);
  assert_int_equal(fx_audit_count(w->audit[FX_PROVIDER], "data_checked"), 2);
  assert_int_equal(fx_audit_count(w->audit[FX_PROVIDER], "node_started"), 0);
  assert_int_equal(fx_audit_count(w->audit[FX_PROVIDER], "session_started"), 0);
  assert_int_equal(fx_audit_count(w->audit[FX_PROVIDER], "data_loaded"), 0);
  verify_log(w->audit[FX_PROVIDER], NULL, 0);
  char *log = fx_read_file(w->audit[FX_PROVIDER], NULL);
  assert_non_null(log);
  assert_null(strstr(log, "hunter2pw"));
  assert_null(strstr(log, "@")); /* no key, no e-mail address */
  free(log);
}

/* pharma: the provider filters its records with the consumer's parameters
 * (README ground truth: 116), and the filtered load is recorded. */
static void test_filtered_count_with_params(void **state) {
  world *w = *state;
  char pd[FX_PATH_MAX], cd[FX_PATH_MAX];
  pin(w, "pharma/template.json", NULL);
  static const char *const params[] = {"codes=E11,E10", "min_age=18", "max_age=65"};
  pair x;
  pair_init(&x, w, example(pd, sizeof pd, "pharma/hospital.csv"),
            example(cd, sizeof cd, "pharma/registry.csv"), "eligible_patients");
  x.params = params;
  x.nparams = 3;
  pair_run(&x);
  assert_int_equal(x.cons_rc, 0);
  assert_int_equal(x.cons_count, 116);
  /* The provider loaded its file twice: whole at start, filtered for the query. */
  assert_int_equal(fx_audit_count(w->audit[FX_PROVIDER], "data_loaded"), 2);
  json_t *dl = fx_audit_event(w->audit[FX_PROVIDER], "data_loaded", 1);
  assert_non_null(dl);
  assert_string_equal(json_string_value(json_object_get(dl, "query")), "eligible_patients");
  assert_int_equal(json_integer_value(json_object_get(dl, "distinct_keys")), 341);
  json_decref(dl);
  /* Both logs carry the parameters as sent. */
  for (int i = 0; i < 2; i++) {
    json_t *ss = fx_audit_event(w->audit[i], "session_started", 0);
    assert_non_null(ss);
    json_t *ps = json_object_get(ss, "params");
    assert_string_equal(json_string_value(json_object_get(ps, "min_age")), "18");
    assert_string_equal(json_string_value(json_object_get(ps, "max_age")), "65");
    assert_non_null(json_string_value(json_object_get(ps, "codes")));
    json_decref(ss);
  }
}

/* The library sets no signal disposition: a full serve and run leaves
 * every handler as the program set it. */
static void test_no_signal_handlers(void **state) {
  world *w = *state;
  static const int sigs[] = {SIGPIPE, SIGINT, SIGTERM, SIGHUP, SIGCHLD, SIGUSR1};
  enum { NSIG_CHECKED = sizeof sigs / sizeof sigs[0] };
  struct sigaction before[NSIG_CHECKED], after[NSIG_CHECKED];
  for (int i = 0; i < NSIG_CHECKED; i++)
    assert_int_equal(sigaction(sigs[i], NULL, &before[i]), 0);
  assert_true(before[0].sa_handler == SIG_IGN); /* main's, as the library requires */

  char pd[FX_PATH_MAX], cd[FX_PATH_MAX];
  pin(w, "overlap/template.json", NULL);
  pair x;
  pair_init(&x, w, example(pd, sizeof pd, "overlap/provider.csv"),
            example(cd, sizeof cd, "overlap/consumer.csv"), "overlap");
  pair_run(&x);
  assert_int_equal(x.cons_rc, 0);
  assert_int_equal(x.cons_count, 640);

  for (int i = 0; i < NSIG_CHECKED; i++) {
    assert_int_equal(sigaction(sigs[i], NULL, &after[i]), 0);
    if (before[i].sa_handler != after[i].sa_handler ||
        (before[i].sa_flags & SA_SIGINFO) != (after[i].sa_flags & SA_SIGINFO))
      fail_msg("signal %d: its handler changed during serve and run", sigs[i]);
  }
}

/* cr_party_stop on a serve with no session: on_closed once, rc 0, nothing
 * left on the loop. */
typedef struct stopper {
  cr_party *p;
  int listening, closed, rc, sessions;
} stopper;

static void stop_on_listening(void *ctx, const char *addr) {
  stopper *s = ctx;
  (void)addr;
  s->listening++;
  cr_party_stop(s->p);
  cr_party_stop(s->p); /* twice is harmless */
}

static void stop_on_session(void *ctx, const cr_party_session *ps) {
  stopper *s = ctx;
  (void)ps;
  s->sessions++;
}

static void stop_on_closed(void *ctx, int rc, const cr_error *err, const cr_party_session *ps) {
  stopper *s = ctx;
  (void)err;
  assert_null(ps);
  s->closed++;
  s->rc = rc;
}

static void test_stop_idle_serve(void **state) {
  world *w = *state;
  char pd[FX_PATH_MAX];
  pin(w, "overlap/template.json", NULL);
  uv_loop_t loop;
  assert_int_equal(uv_loop_init(&loop), 0);
  stopper s = {0};
  cr_error err;
  cr_party_serve_config sc = {0};
  sc.data = example(pd, sizeof pd, "overlap/provider.csv");
  cr_party_events ev = {0};
  ev.on_listening = stop_on_listening;
  ev.on_session = stop_on_session;
  ev.on_closed = stop_on_closed;
  ev.ctx = &s;
  cr_party_config pc = {0};
  pc.mode = CR_PARTY_SERVE;
  pc.template_path = w->tmpl;
  pc.identity_dir = w->ids.dir[FX_PROVIDER];
  pc.address = "127.0.0.1:0";
  assert_int_equal(cr_party_open(&s.p, &pc, &err), 0);
  assert_int_equal(cr_party_serve(s.p, &loop, &sc, &ev, &err), 0);
  /* A second start while serving is refused. */
  assert_int_equal(cr_party_serve(s.p, &loop, &sc, &ev, &err), CR_EINVAL);
  assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
  assert_int_equal(s.listening, 1);
  assert_int_equal(s.closed, 1);
  assert_int_equal(s.rc, 0);
  assert_int_equal(s.sessions, 0);
  cr_party_stop(s.p); /* after on_closed: a no-op */
  assert_int_equal(uv_run(&loop, UV_RUN_NOWAIT), 0);
  cr_party_close(s.p);
  assert_int_equal(uv_loop_close(&loop), 0);
  assert_int_equal(fx_audit_count(w->audit[FX_PROVIDER], "session_started"), 0);
  assert_int_equal(fx_audit_count(w->audit[FX_PROVIDER], "data_loaded"), 1);
}

int main(void) {
  /* Process-wide decisions are the program's: the library sets none. */
  signal(SIGPIPE, SIG_IGN);
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_overlap_count, setup, teardown),
      cmocka_unit_test_setup_teardown(test_run_limit, setup, teardown),
      cmocka_unit_test_setup_teardown(test_open_errors, setup, teardown),
      cmocka_unit_test_setup_teardown(test_run_refusals, setup, teardown),
      cmocka_unit_test_setup_teardown(test_members_release, setup, teardown),
      cmocka_unit_test_setup_teardown(test_members_unwritable_out, setup, teardown),
      cmocka_unit_test_setup_teardown(test_members_existing_out, setup, teardown),
      cmocka_unit_test_setup_teardown(test_data_check, setup, teardown),
      cmocka_unit_test_setup_teardown(test_filtered_count_with_params, setup, teardown),
      cmocka_unit_test_setup_teardown(test_no_signal_handlers, setup, teardown),
      cmocka_unit_test_setup_teardown(test_stop_idle_serve, setup, teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
