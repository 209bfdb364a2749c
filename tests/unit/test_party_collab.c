/*
 * A node serving many collaborations (party layer): collaboration.conf
 * parsing (every key, every kind of mistake named with file, line and
 * key), the routing decision (a partner's certificate and the template its
 * Hello names; one partner in several collaborations; unknown pairs), and
 * one serving party on a loop with a collaborations directory: a consumer
 * pinned in two templates runs each and is routed by hash, a broken
 * collaboration is reported and left out, a third is added and picked up
 * on cr_party_reload, and every line the node writes names its
 * collaboration.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <cmocka.h>
#include <uv.h>

#include "party/party_internal.h"
#include "support/fixtures.h"

/* ---- collaboration.conf ---------------------------------------------------- */

static int parse(const char *text, cr_collab_conf *c, cr_error *err) {
  cr_error_clear(err);
  return cr__collab_conf_parse(text, strlen(text), "dir/collaboration.conf", "/srv/collab", c, err);
}

static void test_conf_keys(void **state) {
  (void)state;
  cr_collab_conf c;
  cr_error err;
  const char *text = "# Brightguard\n"
                     "\n"
                     "data = exports/customers.csv\n"
                     "  audit=\"/var/log/bg audit.jsonl\"  \r\n"
                     "max-sessions = 4\n"
                     "timeout = 20\n"
                     "max_reject_ratio = 0.25\n"
                     "enabled = no\n";
  assert_int_equal(parse(text, &c, &err), 0);
  assert_string_equal(c.data, "/srv/collab/exports/customers.csv");
  assert_string_equal(c.audit, "/var/log/bg audit.jsonl");
  assert_int_equal(c.max_sessions, 4);
  assert_int_equal(c.timeout_ms, 20000);
  assert_true(c.max_reject_ratio > 0.2499 && c.max_reject_ratio < 0.2501);
  assert_int_equal(c.enabled, 0);
  cr__collab_conf_free(&c);

  /* The least: data alone; the rest take their defaults. */
  assert_int_equal(parse("data = /abs/d.csv", &c, &err), 0);
  assert_string_equal(c.data, "/abs/d.csv");
  assert_null(c.audit);
  assert_int_equal(c.max_sessions, 0);
  assert_int_equal(c.timeout_ms, 0);
  assert_true(c.max_reject_ratio == 0);
  assert_int_equal(c.enabled, 1);
  assert_int_equal(c.memory_mib, 0); /* the node's budget */
  assert_null(c.work_dir);
  cr__collab_conf_free(&c);

  /* Issue 17: a budget of its own (MiB) and a work directory (relative to
   * the collaboration's directory). */
  assert_int_equal(parse("data = d.csv\n\nmemory = 64\nwork-dir = scratch\n", &c, &err), 0);
  assert_int_equal(c.memory_mib, 64);
  assert_int_equal(c.memory_line, 3);
  assert_string_equal(c.work_dir, "/srv/collab/scratch");
  cr__collab_conf_free(&c);

  /* Data sources: a CSV's delimiter; sqlite:PATH relative to the directory
   * (the prefix kept); a PostgreSQL URI as written; the data query as
   * written, '=' signs and all. */
  assert_int_equal(parse("data = d.csv\ndelimiter = tab\n", &c, &err), 0);
  assert_string_equal(c.data, "/srv/collab/d.csv");
  assert_int_equal(c.delimiter, '\t');
  assert_null(c.data_query);
  cr__collab_conf_free(&c);
  assert_int_equal(parse("data = sqlite:db/crm.db\n"
                         "data_query = SELECT email FROM clients WHERE active = 1\n",
                         &c, &err),
                   0);
  assert_string_equal(c.data, "sqlite:/srv/collab/db/crm.db");
  assert_string_equal(c.data_query, "SELECT email FROM clients WHERE active = 1");
  assert_int_equal(c.delimiter, 0);
  cr__collab_conf_free(&c);
  assert_int_equal(parse("data = sqlite:/abs/crm.db\ndata-query = SELECT email FROM t\n", &c, &err),
                   0);
  assert_string_equal(c.data, "sqlite:/abs/crm.db");
  cr__collab_conf_free(&c);
  assert_int_equal(parse("data = postgresql://cleanroom@db.internal/crm?sslmode=require\n"
                         "data_query = \"SELECT email FROM customers\"\n",
                         &c, &err),
                   0);
  assert_string_equal(c.data, "postgresql://cleanroom@db.internal/crm?sslmode=require");
  assert_string_equal(c.data_query, "SELECT email FROM customers");
  cr__collab_conf_free(&c);

  /* A ratio of 0 from a person means no rejected row at all. */
  assert_int_equal(parse("data = d.csv\nmax_reject_ratio = 0\n", &c, &err), 0);
  assert_true(c.max_reject_ratio < 0);
  cr__collab_conf_free(&c);
}

static void expect_conf_error(const char *text, const char *what) {
  cr_collab_conf c;
  cr_error err;
  int rc = parse(text, &c, &err);
  if (rc != CR_ECONFIG || strstr(err.msg, what) == NULL)
    fail_msg("conf %s: rc %d, message \"%s\", wanted \"%s\"", text, rc, err.msg, what);
  assert_non_null(strstr(err.msg, "dir/collaboration.conf"));
  assert_null(c.data); /* nothing half-parsed is left */
}

static void test_conf_errors(void **state) {
  (void)state;
  expect_conf_error("data = d.csv\ndta = x\n", "dir/collaboration.conf:2: unknown key \"dta\"");
  expect_conf_error("data = d.csv\ndta = x\n",
                    "the keys are: data, data_query, delimiter, audit, max_sessions");
  /* The data source's keys, checked together (issue 16). */
  expect_conf_error("data = d.csv\ndelimiter = :\n", ":2: \"delimiter\" takes \",\", \";\"");
  expect_conf_error("data = d.csv\ndata_query = SELECT 1\n",
                    "dir/collaboration.conf: data (line 1): ");
  expect_conf_error("data = d.csv\ndata_query = SELECT 1\n", "a data query is for a database");
  expect_conf_error("data = sqlite:crm.db\n", "dir/collaboration.conf: data (line 1): ");
  expect_conf_error("data = sqlite:crm.db\ndata_query = SELECT email FROM t\ndelimiter = ;\n",
                    "dir/collaboration.conf: data (line 1): ");
  expect_conf_error("data = postgresql://u:hunter2@db/crm\ndata_query = SELECT email FROM t\n",
                    "dir/collaboration.conf: data (line 1): ");
  {
    cr_collab_conf pc;
    cr_error pe;
    assert_int_equal(
        parse("data = postgresql://u:hunter2@db/crm\ndata_query = SELECT 1\n", &pc, &pe),
        CR_ECONFIG);
    assert_null(strstr(pe.msg, "hunter2")); /* the password is never repeated */
  }
  expect_conf_error("data = a.csv\ndata = b.csv\n",
                    ":2: \"data\" is given twice (first on line 1)");
  expect_conf_error("data = d.csv\njust words\n", ":2: expected `key = value`");
  expect_conf_error("data = \n", ":1: \"data\" has no value");
  expect_conf_error("audit = a.jsonl\n", "no \"data = ...\" line; it is required");
  expect_conf_error("", "no \"data = ...\" line");
  expect_conf_error("data = d.csv\nmax_sessions = 0\n",
                    ":2: \"max_sessions\" takes a whole number from 1");
  expect_conf_error("data = d.csv\nmax_sessions = -3\n", "\"max_sessions\" takes");
  expect_conf_error("data = d.csv\nmax_sessions = 4x\n", "got \"4x\"");
  expect_conf_error("data = d.csv\ntimeout = 90000\n", "\"timeout\" takes seconds from 1 to 86400");
  expect_conf_error("data = d.csv\nmax_reject_ratio = 1.5\n", "takes a number from 0 to 1");
  expect_conf_error("data = d.csv\nmax_reject_ratio = nan\n", "takes a number from 0 to 1");
  expect_conf_error("data = d.csv\nenabled = maybe\n", "\"enabled\" takes true or false");
  expect_conf_error("data = d.csv\nmemory = 0\n", ":2: \"memory\" takes a whole number from 1");
  expect_conf_error("data = d.csv\nmemory = 1.5G\n", ":2: \"memory\" takes");
  expect_conf_error("data = d.csv\nwork_dir =\n", ":2: \"work_dir\" has no value");
  cr_collab_conf c;
  cr_error err;
  cr_error_clear(&err);
  assert_int_equal(cr__collab_conf_parse("data = a\0b", 10, "x.conf", NULL, &c, &err), CR_ECONFIG);
  assert_non_null(strstr(err.msg, "NUL"));
  /* A missing file names itself. */
  assert_int_equal(cr__collab_conf_load("/nonexistent/collaboration.conf", "/", &c, &err),
                   CR_ECONFIG);
  assert_non_null(strstr(err.msg, "/nonexistent/collaboration.conf"));
}

/* The example collaboration.conf (examples/systemd): each commented
 * `key = value` line, uncommented, is a valid line (a note after a value
 * would be part of it), and a note written after a value is refused with a
 * hint. */
static void test_conf_example(void **state) {
  (void)state;
  FILE *f = fopen(CR_SOURCE_DIR "/examples/systemd/collaboration.conf", "r");
  assert_non_null(f);
  char line[512];
  int tried = 0;
  while (fgets(line, sizeof line, f) != NULL) {
    char key[64];
    const char *s = line;
    if (s[0] != '#')
      continue;
    s++;
    while (*s == ' ')
      s++;
    size_t kl = strspn(s, "abcdefghijklmnopqrstuvwxyz_");
    if (kl == 0 || kl >= sizeof key || strncmp(s + kl, " = ", 3) != 0)
      continue;
    memcpy(key, s, kl);
    key[kl] = '\0';
    if (strcmp(key, "data") == 0)
      continue;
    char text[600];
    snprintf(text, sizeof text, "data = d.csv\n%s", s);
    if (strcmp(key, "data_query") == 0)
      continue; /* a database's: needs data = a database */
    cr_collab_conf c;
    cr_error err;
    if (parse(text, &c, &err) != 0)
      fail_msg("examples/systemd/collaboration.conf: \"%s\" uncommented: %s", s, err.msg);
    cr__collab_conf_free(&c);
    tried++;
  }
  fclose(f);
  assert_true(tried >= 8);
  expect_conf_error("data = d.csv\ntimeout = 30  # seconds\n",
                    "got \"30  # seconds\"; a comment goes on a line of its own");
  expect_conf_error("data = d.csv\nmax_sessions = 4   (its cap)\n",
                    "; a comment goes on a line of its own");
}

/* ---- routing ---------------------------------------------------------------- */

typedef struct fake {
  cr_template t;
  cr_collab c;
} fake;

/* A collaboration where this node is the provider, the partner pins
 * partner_byte everywhere, and the template hash is template_byte. */
static void fake_init(fake *f, const char *name, uint8_t partner_byte, uint8_t template_byte) {
  memset(f, 0, sizeof *f);
  memset(f->t.parties[CR_ROLE_CONSUMER].cert_sha256, partner_byte, CR_SHA256_BYTES);
  memset(f->t.parties[CR_ROLE_PROVIDER].cert_sha256, 0xee, CR_SHA256_BYTES);
  memset(f->t.sha256, template_byte, CR_SHA256_BYTES);
  f->c.t = &f->t;
  f->c.role = CR_ROLE_PROVIDER;
  f->c.name = (char *)name;
  f->c.conf.enabled = 1;
}

static void test_route(void **state) {
  (void)state;
  fake a, b, lim, d;
  fake_init(&a, "a", 0x01, 0xa0);     /* partner 1 */
  fake_init(&b, "b", 0x02, 0xb0);     /* partner 2 */
  fake_init(&lim, "lim", 0x01, 0xc0); /* partner 1 again, another template */
  fake_init(&d, "d", 0x04, 0xd0);     /* partner 4, disabled */
  d.c.conf.enabled = 0;
  cr_collab *all[] = {&a.c, &b.c, &lim.c, &d.c};
  uint8_t p1[32], p2[32], p3[32], p4[32], ta[32], tb[32], tc[32], tx[32];
  memset(p1, 0x01, 32);
  memset(p2, 0x02, 32);
  memset(p3, 0x03, 32);
  memset(p4, 0x04, 32);
  memset(ta, 0xa0, 32);
  memset(tb, 0xb0, 32);
  memset(tc, 0xc0, 32);
  memset(tx, 0x99, 32);
  char msg[400];
  int wire = 0;

  /* TLS: partners of serving collaborations only. */
  assert_true(cr__collab_pins(all, 4, p1));
  assert_true(cr__collab_pins(all, 4, p2));
  assert_false(cr__collab_pins(all, 4, p3));
  assert_false(cr__collab_pins(all, 4, p4)); /* disabled */
  assert_false(cr__collab_pins(all, 4, NULL));

  /* The exact pair. */
  assert_ptr_equal(cr__collab_route(all, 4, p1, ta, &wire, msg, sizeof msg), &a.c);
  assert_ptr_equal(cr__collab_route(all, 4, p2, tb, &wire, msg, sizeof msg), &b.c);
  /* A partner in two collaborations picks by the template hash. */
  assert_ptr_equal(cr__collab_route(all, 4, p1, tc, &wire, msg, sizeof msg), &lim.c);
  /* ... and with an unknown hash (or no Hello) gets neither: which one
   * would refuse it is not ours to guess. */
  assert_null(cr__collab_route(all, 4, p1, tx, &wire, msg, sizeof msg));
  assert_int_equal(wire, CR_WIRE_TEMPLATE_MISMATCH);
  assert_non_null(strstr(msg, "a, lim"));
  assert_non_null(strstr(msg, "9999999999"));
  assert_null(cr__collab_route(all, 4, p1, NULL, &wire, msg, sizeof msg));
  assert_non_null(strstr(msg, "not a Hello"));
  /* A partner with one collaboration: that one, whatever it asks (its
   * session refuses another template, with both hashes). */
  assert_ptr_equal(cr__collab_route(all, 4, p2, tx, &wire, msg, sizeof msg), &b.c);
  assert_ptr_equal(cr__collab_route(all, 4, p2, NULL, &wire, msg, sizeof msg), &b.c);
  /* Another partner's template is not a way in. */
  assert_ptr_equal(cr__collab_route(all, 4, p2, ta, &wire, msg, sizeof msg), &b.c);
  /* Nobody's partner (removed since TLS), a disabled one, no certificate. */
  assert_null(cr__collab_route(all, 4, p3, ta, &wire, msg, sizeof msg));
  assert_non_null(strstr(msg, "any longer"));
  assert_null(cr__collab_route(all, 4, p4, tx, &wire, msg, sizeof msg));
  assert_null(cr__collab_route(all, 4, NULL, ta, &wire, msg, sizeof msg));
  assert_null(cr__collab_route(all, 0, p1, ta, &wire, msg, sizeof msg));
}

/* ---- one node, several collaborations, on a loop ---------------------------- */

typedef struct world {
  char root[FX_PATH_MAX], dir[FX_PATH_MAX], data[FX_PATH_MAX], cons_data[FX_PATH_MAX];
  fx_parties ids;
  uv_loop_t loop;
  uv_timer_t next;
  cr_party *prov, *cons;
  char addr[128];
  int step;
  /* what the node said */
  char sessions[8][64];
  int nsessions;
  char collab_events[8][80];
  int ncollab;
  int prov_closed, prov_rc;
  /* what the consumer got */
  uint64_t counts[8];
  int runs, run_rc[8];
} world;

/* DIR/name/template.json (pinned, named name) and its conf. */
static void make_collab(world *w, const char *name, const char *conf_extra) {
  char d[FX_PATH_MAX], src[FX_PATH_MAX], t[FX_PATH_MAX], c[FX_PATH_MAX], edits[200];
  assert_non_null(fx_join(d, sizeof d, w->dir, name));
  assert_int_equal(mkdir(d, 0700), 0);
  assert_non_null(fx_example(src, sizeof src, "overlap/template.json"));
  assert_non_null(fx_join(t, sizeof t, d, "template.json"));
  snprintf(edits, sizeof edits, "{\"name\": \"collaboration %s\"}", name);
  assert_int_equal(fx_pin_template(src, t, w->ids.hex[FX_PROVIDER], w->ids.hex[FX_CONSUMER], edits),
                   0);
  assert_non_null(fx_join(c, sizeof c, d, "collaboration.conf"));
  FILE *f = fopen(c, "w");
  assert_non_null(f);
  fprintf(f, "data = %s\n%s", w->data, conf_extra ? conf_extra : "");
  fclose(f);
}

static void on_next(uv_timer_t *t);

static void cons_closed(void *ctx, int rc, const cr_error *err, const cr_party_session *s) {
  world *w = ctx;
  (void)err;
  w->run_rc[w->runs] = rc;
  w->counts[w->runs] = s && s->res && s->res->status == CR_SESSION_DONE ? s->res->count : 0;
  w->runs++;
  uv_timer_start(&w->next, on_next, 0, 0); /* the next step, outside this callback */
}

/* The consumer runs "overlap" with the template of collaboration name. */
static void run_consumer(world *w, const char *name) {
  char t[FX_PATH_MAX], d[FX_PATH_MAX];
  assert_non_null(fx_join(d, sizeof d, w->dir, name));
  assert_non_null(fx_join(t, sizeof t, d, "template.json"));
  cr_party_config pc = {0};
  pc.mode = CR_PARTY_RUN;
  pc.template_path = t;
  pc.identity_dir = w->ids.dir[FX_CONSUMER];
  pc.address = w->addr;
  cr_error err;
  cr_error_clear(&err);
  int rc = cr_party_open(&w->cons, &pc, &err);
  if (rc)
    fail_msg("consumer open: %s", err.msg);
  cr_party_run_config r = {0};
  r.data = w->cons_data;
  r.query = "overlap";
  cr_party_events ev = {0};
  ev.on_closed = cons_closed;
  ev.ctx = w;
  rc = cr_party_run(w->cons, &w->loop, &r, &ev, &err);
  if (rc)
    fail_msg("run: %s", err.msg);
}

static void on_next(uv_timer_t *t) {
  world *w = t->data;
  cr_party_close(w->cons);
  w->cons = NULL;
  switch (w->step++) {
  case 0:
    run_consumer(w, "one");
    break;
  case 1:
    run_consumer(w, "two");
    break;
  case 2:
    /* A third collaboration, picked up on cr_party_reload. */
    make_collab(w, "three", NULL);
    assert_int_equal(cr_party_reload(w->prov), 0);
    break;
  case 3:
    run_consumer(w, "three");
    break;
  default:
    cr_party_stop(w->prov);
    uv_close((uv_handle_t *)&w->next, NULL);
    break;
  }
}

static void prov_listening(void *ctx, const char *addr) {
  world *w = ctx;
  snprintf(w->addr, sizeof w->addr, "%s", addr);
  uv_timer_start(&w->next, on_next, 0, 0);
}

static void prov_session(void *ctx, const cr_party_session *s) {
  world *w = ctx;
  if (w->nsessions < 8)
    snprintf(w->sessions[w->nsessions++], 64, "%s:%s", s->collaboration ? s->collaboration : "-",
             s->res->status == CR_SESSION_DONE ? "ok" : "failed");
}

static void prov_collab(void *ctx, const cr_party_collab_info *c) {
  world *w = ctx;
  if (w->ncollab < 8)
    snprintf(w->collab_events[w->ncollab++], 80, "%s %s", c->change, c->name);
  if (strcmp(c->change, "added") == 0 && strcmp(c->name, "three") == 0)
    uv_timer_start(&w->next, on_next, 0, 0);
}

static void prov_closed(void *ctx, int rc, const cr_error *err, const cr_party_session *s) {
  world *w = ctx;
  (void)err;
  (void)s;
  w->prov_closed++;
  w->prov_rc = rc;
}

static void test_serve_collaborations(void **state) {
  (void)state;
  world *w = calloc(1, sizeof *w);
  assert_non_null(w);
  assert_int_equal(fx_tmpdir(w->root, sizeof w->root, "test_party_collab"), 0);
  assert_int_equal(fx_parties_generate(&w->ids, w->root), 0);
  assert_non_null(fx_join(w->dir, sizeof w->dir, w->root, "collabs"));
  assert_int_equal(mkdir(w->dir, 0700), 0);
  assert_non_null(fx_example(w->data, sizeof w->data, "overlap/provider.csv"));
  assert_non_null(fx_example(w->cons_data, sizeof w->cons_data, "overlap/consumer.csv"));
  make_collab(w, "one", NULL);
  make_collab(w, "two", "max_sessions = 2\n");
  /* A broken one: reported and left out, the others serve. */
  char bad[FX_PATH_MAX], f[FX_PATH_MAX];
  assert_non_null(fx_join(bad, sizeof bad, w->dir, "bad"));
  assert_int_equal(mkdir(bad, 0700), 0);
  assert_non_null(fx_join(f, sizeof f, bad, "collaboration.conf"));
  FILE *fp = fopen(f, "w");
  assert_non_null(fp);
  fprintf(fp, "data = %s\nbogus = 1\n", w->data);
  fclose(fp);

  assert_int_equal(uv_loop_init(&w->loop), 0);
  uv_timer_init(&w->loop, &w->next);
  w->next.data = w;
  cr_party_config pc = {0};
  pc.mode = CR_PARTY_SERVE;
  pc.collaborations_dir = w->dir;
  pc.identity_dir = w->ids.dir[FX_PROVIDER];
  pc.address = "127.0.0.1:0";
  cr_error err;
  cr_error_clear(&err);
  int rc = cr_party_open(&w->prov, &pc, &err);
  if (rc)
    fail_msg("open: %s", err.msg);
  assert_null(cr_party_template(w->prov)); /* one per collaboration */
  cr_party_serve_config sc = {0};
  cr_party_events ev = {0};
  ev.on_listening = prov_listening;
  ev.on_session = prov_session;
  ev.on_collab = prov_collab;
  ev.on_closed = prov_closed;
  ev.ctx = w;
  rc = cr_party_serve(w->prov, &w->loop, &sc, &ev, &err);
  if (rc)
    fail_msg("serve: %s", err.msg);
  assert_int_equal(uv_run(&w->loop, UV_RUN_DEFAULT), 0);
  assert_int_equal(w->prov_closed, 1);
  assert_int_equal(w->prov_rc, 0);
  cr_party_close(w->cons);
  cr_party_close(w->prov);
  assert_int_equal(uv_loop_close(&w->loop), 0);

  /* At start: bad refused (sorted first), one and two loaded; then three. */
  assert_true(w->ncollab >= 4);
  assert_string_equal(w->collab_events[0], "refused bad");
  assert_string_equal(w->collab_events[1], "loaded one");
  assert_string_equal(w->collab_events[2], "loaded two");
  assert_string_equal(w->collab_events[3], "added three");
  /* Three runs of one consumer identity, each routed by its template. */
  assert_int_equal(w->runs, 3);
  for (int i = 0; i < 3; i++) {
    assert_int_equal(w->run_rc[i], 0);
    assert_int_equal(w->counts[i], 640);
  }
  assert_int_equal(w->nsessions, 3);
  assert_string_equal(w->sessions[0], "one:ok");
  assert_string_equal(w->sessions[1], "two:ok");
  assert_string_equal(w->sessions[2], "three:ok");

  /* One log for the node and its collaborations; it verifies, and every
   * session line names its collaboration, partner and data. */
  char plog[FX_PATH_MAX];
  assert_non_null(fx_join(plog, sizeof plog, w->ids.dir[FX_PROVIDER], "audit.jsonl"));
  cr_audit_report rep;
  assert_int_equal(cr_audit_verify(plog, NULL, &rep, &err), 0);
  assert_int_equal(rep.unsigned_tail, 0);
  assert_int_equal(fx_audit_count(plog, "result_released"), 3);
  assert_int_equal(fx_audit_count(plog, "collaboration_refused"), 1);
  assert_int_equal(fx_audit_count(plog, "collaboration_added"), 1);
  static const char *const names[] = {"one", "two", "three"};
  for (int i = 0; i < 3; i++) {
    json_t *e = fx_audit_event(plog, "result_released", i);
    assert_non_null(e);
    assert_string_equal(json_string_value(json_object_get(e, "collaboration")), names[i]);
    assert_string_equal(json_string_value(json_object_get(e, "partner")), "HomeSure Insurance");
    assert_string_equal(json_string_value(json_object_get(e, "partner_cert_sha256")),
                        w->ids.hex[FX_CONSUMER]);
    json_t *data = json_object_get(e, "data");
    assert_non_null(json_object_get(data, "sha256"));
    assert_non_null(json_object_get(data, "mtime"));
    assert_true(json_integer_value(json_object_get(data, "size")) > 0);
    json_decref(e);
  }
  json_t *ns = fx_audit_event(plog, "node_started", 0);
  assert_non_null(ns);
  assert_string_equal(json_string_value(json_object_get(ns, "collaborations")), w->dir);
  json_decref(ns);
  if (getenv("CR_TEST_KEEP") == NULL)
    (void)fx_rmtree(w->root);
  free(w);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_conf_keys),
      cmocka_unit_test(test_conf_errors),
      cmocka_unit_test(test_conf_example),
      cmocka_unit_test(test_route),
      cmocka_unit_test(test_serve_collaborations),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
