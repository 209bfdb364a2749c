/*
 * The node over real loopback TCP, on loops the tests own: a serving node
 * and a running node on one loop in this thread, or a serving node on a
 * loop in a thread of its own with running nodes (each on its own loop) or
 * scripted raw clients against it. Covers complete sessions (also several
 * at once), stopping in the middle of a session, certificate pinning
 * failures on either side, hostile and broken peers (garbage, no handshake,
 * silence, bad frames, vanishing mid-session) that end only their own
 * connection, the connection cap, timeouts, bind, DNS and connect errors,
 * and that every loop ends with all handles closed (uv_loop_close() == 0)
 * and on_closed called exactly once.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <uv.h>

#include "cleanroom/net.h"
#include "support/memdata.h"
#include "support/fixtures.h"

#define MAX_REPORTS 16

enum { PROV = 0, CONS = 1, STRANGER = 2 };

typedef struct fixture {
  char root[FX_PATH_MAX];
  char dir[3][FX_PATH_MAX];
  cr_identity *id[3];
  uint8_t fp[3][CR_SHA256_BYTES];
} fixture;

static fixture *F;

/* ---- template and data, built by hand (only the structs are read) ------- */

static char *dup_str(const char *s) {
  char *d = malloc(strlen(s) + 1);
  assert_non_null(d);
  strcpy(d, s);
  return d;
}

static cr_template *make_template(const uint8_t *prov_fp, const uint8_t *cons_fp) {
  cr_template *t = calloc(1, sizeof *t);
  assert_non_null(t);
  t->name = dup_str("net test");
  t->suite = dup_str("ristretto255");
  t->match_key.name = dup_str("email");
  memcpy(t->parties[CR_ROLE_PROVIDER].cert_sha256, prov_fp, 32);
  memcpy(t->parties[CR_ROLE_CONSUMER].cert_sha256, cons_fp, 32);
  t->nqueries = 1;
  t->queries = calloc(1, sizeof *t->queries);
  assert_non_null(t->queries);
  t->queries[0].name = dup_str("overlap");
  t->queries[0].kind = CR_QUERY_COUNT;
  t->queries[0].min_count = 10;
  t->queries[0].run_by = CR_ROLE_BIT(CR_ROLE_CONSUMER);
  t->queries[0].results_to = CR_ROLE_BIT(CR_ROLE_CONSUMER) | CR_ROLE_BIT(CR_ROLE_PROVIDER);
  memset(t->sha256, 0x5a, sizeof t->sha256);
  return t;
}

static void free_template(cr_template *t) {
  free(t->queries[0].name);
  free(t->queries);
  free(t->name);
  free(t->suite);
  free(t->match_key.name);
  free(t);
}

/* ---- a serving node, on a loop of its own in a thread --------------------- */

typedef struct report {
  cr_session_result res;
  int has_fp;
  uint8_t fp[32];
  char peer[80];
} report;

typedef struct server {
  cr_node_config cfg;
  cr_template *tmpl;
  cr_dataset *data;
  uv_loop_t loop; /* threaded: the server's own; same-loop tests: unused */
  uv_loop_t *on;  /* the loop the node runs on */
  cr_node *node;
  uv_async_t stop_async; /* threaded: another thread's way to cr_node_stop */
  int threaded;
  uv_thread_t th;
  uv_sem_t ready;
  uv_mutex_t mu;
  char addr[80];
  int start_rc, loop_close_rc;
  int rc; /* from on_closed */
  cr_error err;
  int closed_calls, closed_res_null, listening_calls;
  int n;
  report rep[MAX_REPORTS];
  int stop_after;       /* cr_node_stop after this many reports (0: never) */
  int stop_at_progress; /* cr_node_stop at the first progress report */
  struct client *pair;  /* same loop: the client started once listening */
} server;

typedef struct client {
  cr_node_config cfg;
  cr_template *tmpl;
  cr_dataset *data;
  uv_loop_t loop;
  cr_node *node;
  cr_session_result res; /* from on_closed: its outputs are ours */
  cr_error err;
  int rc, start_rc, loop_close_rc;
  int closed_calls;
  int n;
  report rep;
  int stop_at_progress;
  uv_thread_t th;
} client;

static void record(report *r, const cr_session_result *res, const char *peer, const uint8_t *fp) {
  r->res = *res;
  r->has_fp = fp != NULL;
  if (fp != NULL)
    memcpy(r->fp, fp, 32);
  snprintf(r->peer, sizeof r->peer, "%s", peer ? peer : "");
  if (getenv("CR_TEST_VERBOSE") != NULL)
    print_message("  [%s] %s %s: %s\n", r->peer, res->status == CR_SESSION_DONE ? "DONE" : "FAILED",
                  cr_err_name(res->error), res->error_msg);
}

static void cli_start(client *c, uv_loop_t *loop);

static void srv_on_listening(void *ctx, const char *addr) {
  server *s = ctx;
  snprintf(s->addr, sizeof s->addr, "%s", addr);
  s->listening_calls++;
  if (s->pair != NULL)
    cli_start(s->pair, s->on);
  if (s->threaded)
    uv_sem_post(&s->ready);
}

static void srv_on_session(void *ctx, const cr_session_result *res, const char *peer,
                           const uint8_t *fp) {
  server *s = ctx;
  uv_mutex_lock(&s->mu);
  if (s->n < MAX_REPORTS)
    record(&s->rep[s->n], res, peer, fp);
  s->n++;
  int stop = s->stop_after && s->n >= s->stop_after;
  uv_mutex_unlock(&s->mu);
  if (stop)
    cr_node_stop(s->node); /* on the loop thread */
}

static void srv_on_progress(void *ctx, const cr_session_progress *p) {
  server *s = ctx;
  (void)p;
  if (s->stop_at_progress) {
    s->stop_at_progress = 0;
    cr_node_stop(s->node);
  }
}

static void srv_on_closed(void *ctx, int rc, const cr_error *err, cr_session_result *res) {
  server *s = ctx;
  s->rc = rc;
  if (err != NULL)
    s->err = *err;
  s->closed_calls++;
  s->closed_res_null = res == NULL;
  if (s->threaded)
    uv_close((uv_handle_t *)&s->stop_async, NULL);
}

static void srv_on_stop_async(uv_async_t *h) {
  server *s = h->data;
  cr_node_stop(s->node);
}

/* The server's thread: its loop, its node; every handle closed at the end. */
static void srv_thread(void *arg) {
  server *s = arg;
  cr_error_clear(&s->err);
  s->loop_close_rc = -1;
  if (uv_loop_init(&s->loop) != 0) {
    s->start_rc = CR_EINTERNAL;
    uv_sem_post(&s->ready);
    return;
  }
  s->on = &s->loop;
  uv_async_init(&s->loop, &s->stop_async, srv_on_stop_async);
  s->stop_async.data = s;
  s->start_rc = cr_node_serve_start(&s->node, &s->loop, &s->cfg, &s->err);
  if (s->start_rc != 0)
    uv_close((uv_handle_t *)&s->stop_async, NULL);
  uv_run(&s->loop, UV_RUN_DEFAULT);
  cr_node_free(s->node);
  s->loop_close_rc = uv_loop_close(&s->loop);
  uv_sem_post(&s->ready); /* in case it never listened */
}

/* Server = provider. pin_cons: what its template pins for the consumer. */
static void srv_init(server *s, const uint8_t *pin_cons, int n_from, int n_to) {
  memset(s, 0, sizeof *s);
  s->tmpl = make_template(F->fp[PROV], pin_cons);
  s->data = fx_mem_dataset("user", "@example.com", n_from, n_to, 0);
  s->cfg.session.tmpl = s->tmpl;
  s->cfg.id = F->id[PROV];
  s->cfg.session.data = s->data;
  s->cfg.session.role = CR_ROLE_PROVIDER;
  s->cfg.address = "127.0.0.1:0";
  s->cfg.session.software = "test-server";
  s->cfg.on_session = srv_on_session;
  s->cfg.on_listening = srv_on_listening;
  s->cfg.on_progress = srv_on_progress;
  s->cfg.on_closed = srv_on_closed;
  s->cfg.ctx = s;
  uv_sem_init(&s->ready, 0);
  uv_mutex_init(&s->mu);
}

static void srv_start(server *s) {
  s->threaded = 1;
  assert_int_equal(uv_thread_create(&s->th, srv_thread, s), 0);
  uv_sem_wait(&s->ready);
  assert_int_equal(s->start_rc, 0);
  assert_true(strncmp(s->addr, "127.0.0.1:", 10) == 0);
  assert_true(atoi(s->addr + 10) > 0);
}

/* From the test's thread: stop the node on the server's loop. */
static void srv_stop(server *s) { assert_int_equal(uv_async_send(&s->stop_async), 0); }

static int srv_count(server *s) {
  uv_mutex_lock(&s->mu);
  int n = s->n;
  uv_mutex_unlock(&s->mu);
  return n;
}

static void srv_wait(server *s, int n) {
  for (int i = 0; i < 3000 && srv_count(s) < n; i++)
    usleep(10000);
  assert_true(srv_count(s) >= n);
}

static void srv_free_unstarted(server *s) {
  uv_sem_destroy(&s->ready);
  uv_mutex_destroy(&s->mu);
  free_template(s->tmpl);
  fx_mem_dataset_free(s->data);
}

/* After the thread: the node closed once, and so did every handle. */
static void srv_join(server *s) {
  assert_int_equal(uv_thread_join(&s->th), 0);
  assert_int_equal(s->loop_close_rc, 0);
  assert_int_equal(s->closed_calls, 1);
  assert_true(s->closed_res_null);
  srv_free_unstarted(s);
}

/* ---- a running node ------------------------------------------------------- */

static void cli_on_session(void *ctx, const cr_session_result *res, const char *peer,
                           const uint8_t *fp) {
  client *c = ctx;
  c->n++;
  record(&c->rep, res, peer, fp);
}

static void cli_on_progress(void *ctx, const cr_session_progress *p) {
  client *c = ctx;
  (void)p;
  if (c->stop_at_progress) {
    c->stop_at_progress = 0;
    cr_node_stop(c->node);
  }
}

static void cli_on_closed(void *ctx, int rc, const cr_error *err, cr_session_result *res) {
  client *c = ctx;
  c->rc = rc;
  if (err != NULL)
    c->err = *err;
  c->closed_calls++;
  if (res != NULL)
    c->res = *res; /* the outputs are ours now */
}

/* Client = consumer. pin_prov: what its template pins for the provider. */
static void cli_init(client *c, const char *addr, const uint8_t *pin_prov, int n_from, int n_to) {
  memset(c, 0, sizeof *c);
  c->tmpl = make_template(pin_prov, F->fp[CONS]);
  c->data = fx_mem_dataset("user", "@example.com", n_from, n_to, 0);
  c->cfg.session.tmpl = c->tmpl;
  c->cfg.id = F->id[CONS];
  c->cfg.session.data = c->data;
  c->cfg.session.role = CR_ROLE_CONSUMER;
  c->cfg.address = addr;
  c->cfg.session.query = "overlap";
  c->cfg.session.software = "test-client";
  c->cfg.on_session = cli_on_session;
  c->cfg.on_progress = cli_on_progress;
  c->cfg.on_closed = cli_on_closed;
  c->cfg.ctx = c;
}

static void cli_start(client *c, uv_loop_t *loop) {
  cr_error_clear(&c->err);
  c->start_rc = cr_node_run_start(&c->node, loop, &c->cfg, &c->err);
  if (c->start_rc != 0) {
    c->rc = c->start_rc;
    assert_null(c->node);
  }
}

/* On a loop of its own, to the end; rc is the start's error or on_closed's. */
static void cli_run(client *c) {
  c->closed_calls = 0;
  c->n = 0;
  c->loop_close_rc = -1;
  cr_session_result_free_outputs(&c->res);
  memset(&c->res, 0, sizeof c->res);
  if (uv_loop_init(&c->loop) != 0) {
    c->rc = CR_EINTERNAL;
    return;
  }
  cli_start(c, &c->loop);
  uv_run(&c->loop, UV_RUN_DEFAULT);
  cr_node_free(c->node);
  c->node = NULL;
  c->loop_close_rc = uv_loop_close(&c->loop);
}

static void cli_thread(void *arg) { cli_run(arg); }

/* A run that started: on_closed once, every handle closed. */
static void cli_check_closed(const client *c) {
  assert_int_equal(c->loop_close_rc, 0);
  assert_int_equal(c->closed_calls, c->start_rc == 0 ? 1 : 0);
}

static void cli_free(client *c) {
  cr_session_result_free_outputs(&c->res); /* on_closed handed them over */
  free_template(c->tmpl);
  fx_mem_dataset_free(c->data);
}

/* ---- both on one loop, in this thread -------------------------------------- */

/* Starts the serving node, and the running node once it listens, on one
 * loop; runs the loop until both have closed; every handle is closed. */
static void pair_run(server *s, client *c) {
  uv_loop_t loop;
  assert_int_equal(uv_loop_init(&loop), 0);
  s->on = &loop;
  s->pair = c;
  c->cfg.address = s->addr; /* filled in before the client starts */
  assert_int_equal(cr_node_serve_start(&s->node, &loop, &s->cfg, &s->err), 0);
  assert_int_equal(s->listening_calls, 0); /* from the loop, not from the start */
  assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
  assert_int_equal(s->listening_calls, 1);
  assert_int_equal(c->start_rc, 0);
  assert_int_equal(s->closed_calls, 1);
  assert_int_equal(c->closed_calls, 1);
  cr_node_free(s->node);
  cr_node_free(c->node);
  assert_int_equal(uv_loop_close(&loop), 0);
}

/* ---- raw peers ----------------------------------------------------------- */

static int tcp_connect(const char *addr) {
  struct sockaddr_in sa;
  memset(&sa, 0, sizeof sa);
  sa.sin_family = AF_INET;
  sa.sin_port = htons((uint16_t)atoi(strchr(addr, ':') + 1));
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  assert_true(fd >= 0);
  struct timeval tv = {10, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof sa), 0);
  return fd;
}

/* Reads until end of stream (or error); returns bytes read, -1 on timeout. */
static long read_to_eof(int fd) {
  char buf[4096];
  long total = 0;
  for (;;) {
    ssize_t n = recv(fd, buf, sizeof buf, 0);
    if (n > 0) {
      total += n;
      continue;
    }
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
      return -1;
    return total;
  }
}

static uint64_t now_ms(void) { return cr_now_ms(); }

typedef struct raw_tls {
  SSL_CTX *ctx;
  SSL *ssl;
  int fd;
} raw_tls;

/* A TLS 1.3 client presenting the consumer's certificate (so it passes the
 * provider's pin), driven by hand with a blocking socket. */
static void raw_tls_connect(raw_tls *r, const char *addr) {
  char p[FX_PATH_MAX];
  r->ctx = SSL_CTX_new(TLS_client_method());
  assert_non_null(r->ctx);
  SSL_CTX_set_verify(r->ctx, SSL_VERIFY_NONE, NULL);
  assert_non_null(fx_join(p, sizeof p, F->dir[CONS], CR_IDENTITY_CRT_FILE));
  assert_int_equal(SSL_CTX_use_certificate_file(r->ctx, p, SSL_FILETYPE_PEM), 1);
  assert_non_null(fx_join(p, sizeof p, F->dir[CONS], CR_IDENTITY_KEY_FILE));
  assert_int_equal(SSL_CTX_use_PrivateKey_file(r->ctx, p, SSL_FILETYPE_PEM), 1);
  r->fd = tcp_connect(addr);
  r->ssl = SSL_new(r->ctx);
  SSL_set_fd(r->ssl, r->fd);
  assert_int_equal(SSL_connect(r->ssl), 1);
}

/* Reads plaintext until the server ends the connection. */
static size_t raw_tls_read_all(raw_tls *r, uint8_t *out, size_t cap) {
  size_t got = 0;
  for (;;) {
    uint8_t buf[4096];
    int n = SSL_read(r->ssl, buf, sizeof buf);
    if (n <= 0)
      break;
    size_t take = (size_t)n < cap - got ? (size_t)n : cap - got;
    memcpy(out + got, buf, take);
    got += take;
  }
  ERR_clear_error();
  return got;
}

static void raw_tls_close(raw_tls *r) {
  SSL_free(r->ssl);
  close(r->fd);
  SSL_CTX_free(r->ctx);
  ERR_clear_error();
}

/* ---- fixture ------------------------------------------------------------- */

static int setup(void **state) {
  fixture *f = calloc(1, sizeof *f);
  cr_error err;
  static const char *names[3] = {"provider", "consumer", "stranger"};
  assert_non_null(f);
  assert_int_equal(fx_tmpdir(f->root, sizeof f->root, "test_net_node"), 0);
  for (int i = 0; i < 3; i++) {
    assert_non_null(fx_join(f->dir[i], sizeof f->dir[i], f->root, names[i]));
    assert_int_equal(cr_identity_generate(f->dir[i], names[i], f->fp[i], &err), 0);
    assert_int_equal(cr_identity_load(&f->id[i], f->dir[i], &err), 0);
  }
  F = f;
  *state = f;
  return 0;
}

static int teardown(void **state) {
  fixture *f = *state;
  for (int i = 0; i < 3; i++)
    cr_identity_free(f->id[i]);
  (void)fx_rmtree(f->root);
  free(f);
  return 0;
}

static void hex(char out[65], const uint8_t fp[32]) { cr_hex_encode(out, fp, 32); }

/* ---- tests --------------------------------------------------------------- */

static void test_full_session(void **state) {
  (void)state;
  server s;
  client c;
  srv_init(&s, F->fp[CONS], 0, 6000);
  s.cfg.once = 1;
  srv_start(&s);
  /* Several batches each way (4096 points per batch). */
  cli_init(&c, s.addr, F->fp[PROV], 2000, 12000);
  cli_run(&c);
  srv_join(&s);

  assert_int_equal(c.rc, 0);
  assert_int_equal(c.res.status, CR_SESSION_DONE);
  assert_int_equal(c.res.count, 4000);
  assert_int_equal(c.res.own_set_size, 10000);
  /* Protocol v3: the peer's size is its bucket (default ladder). */
  assert_int_equal(c.res.peer_set_size, cr_template_bucket(c.cfg.session.tmpl, 6000));
  assert_true(c.res.peer_set_size_is_bucket);
  assert_string_equal(c.res.peer_software, "test-server");
  assert_int_equal(c.n, 1);
  assert_true(c.rep.has_fp);
  assert_memory_equal(c.rep.fp, F->fp[PROV], 32);
  assert_string_equal(c.rep.peer, s.addr);

  assert_int_equal(s.rc, 0);
  assert_int_equal(s.n, 1);
  assert_int_equal(s.rep[0].res.status, CR_SESSION_DONE);
  assert_int_equal(s.rep[0].res.count, 4000);
  assert_memory_equal(s.rep[0].res.session_id, c.res.session_id, 32);
  assert_true(s.rep[0].has_fp);
  assert_memory_equal(s.rep[0].fp, F->fp[CONS], 32);
  assert_true(strncmp(s.rep[0].peer, "127.0.0.1:", 10) == 0);
  cli_check_closed(&c);
  cli_free(&c);
}

/* "localhost" may resolve to ::1 first; the client falls back to the next
 * address when a connection is refused. */
static void test_localhost_fallback(void **state) {
  (void)state;
  server s;
  client c;
  char addr[64];
  srv_init(&s, F->fp[CONS], 0, 300);
  s.cfg.once = 1;
  srv_start(&s);
  snprintf(addr, sizeof addr, "localhost:%s", strchr(s.addr, ':') + 1);
  cli_init(&c, addr, F->fp[PROV], 100, 400);
  cli_run(&c);
  srv_join(&s);
  assert_int_equal(c.rc, 0);
  assert_int_equal(c.res.count, 200);
  assert_int_equal(s.rc, 0);
  cli_free(&c);
}

static void test_concurrent_sessions(void **state) {
  (void)state;
  server s;
  client c[3];
  srv_init(&s, F->fp[CONS], 0, 3000);
  s.stop_after = 3;
  srv_start(&s);
  for (int i = 0; i < 3; i++) {
    cli_init(&c[i], s.addr, F->fp[PROV], 1000 * (i + 1), 1000 * (i + 1) + 2500);
    assert_int_equal(uv_thread_create(&c[i].th, cli_thread, &c[i]), 0);
  }
  for (int i = 0; i < 3; i++) {
    assert_int_equal(uv_thread_join(&c[i].th), 0);
    assert_int_equal(c[i].rc, 0);
    assert_int_equal(c[i].res.status, CR_SESSION_DONE);
  }
  /* Overlaps 2000, 1000 and 0 (below min_count: suppressed). */
  assert_int_equal(c[0].res.count, 2000);
  assert_int_equal(c[1].res.count, 1000);
  assert_int_equal(c[2].res.suppressed, 1);
  srv_join(&s);
  assert_int_equal(s.rc, 0);
  assert_int_equal(s.n, 3);
  for (int i = 0; i < 3; i++)
    assert_int_equal(s.rep[i].res.status, CR_SESSION_DONE);
  for (int i = 0; i < 3; i++) {
    cli_check_closed(&c[i]);
    cli_free(&c[i]);
  }
}

static void test_client_pins_wrong_provider(void **state) {
  (void)state;
  server s;
  client c;
  char want[65], seen[65];
  srv_init(&s, F->fp[CONS], 0, 100);
  s.cfg.once = 1; /* an authentication failure ends a once server */
  srv_start(&s);
  cli_init(&c, s.addr, F->fp[STRANGER], 0, 100);
  cli_run(&c);
  srv_join(&s);

  hex(want, F->fp[STRANGER]);
  hex(seen, F->fp[PROV]);
  assert_int_equal(c.rc, CR_EAUTH);
  assert_non_null(strstr(c.err.msg, want));
  assert_non_null(strstr(c.err.msg, seen));
  assert_int_equal(c.res.status, CR_SESSION_FAILED);
  assert_int_equal(c.res.error, CR_EAUTH);
  assert_int_equal(c.n, 1);
  assert_true(c.rep.has_fp); /* the certificate it was shown */
  assert_memory_equal(c.rep.fp, F->fp[PROV], 32);

  assert_int_equal(s.rc, CR_EAUTH);
  assert_non_null(strstr(s.err.msg, "rejected"));
  assert_int_equal(s.n, 1);
  assert_int_equal(s.rep[0].res.status, CR_SESSION_FAILED);
  assert_int_equal(s.rep[0].res.error, CR_EAUTH);
  assert_int_equal(s.rep[0].res.have_session_id, 0);
  assert_false(s.rep[0].has_fp); /* the consumer never showed its certificate */
  assert_non_null(strstr(s.rep[0].res.error_msg, "rejected"));
  assert_non_null(strstr(s.rep[0].res.error_msg, seen));
  cli_free(&c);
}

static void test_server_pins_wrong_consumer(void **state) {
  (void)state;
  server s;
  client c;
  char want[65], seen[65];
  srv_init(&s, F->fp[STRANGER], 0, 100);
  s.cfg.once = 1;
  srv_start(&s);
  cli_init(&c, s.addr, F->fp[PROV], 0, 100);
  cli_run(&c);
  srv_join(&s);

  hex(want, F->fp[STRANGER]);
  hex(seen, F->fp[CONS]);
  assert_int_equal(s.n, 1);
  assert_int_equal(s.rep[0].res.status, CR_SESSION_FAILED);
  assert_int_equal(s.rep[0].res.error, CR_EAUTH);
  assert_non_null(strstr(s.rep[0].res.error_msg, want));
  assert_non_null(strstr(s.rep[0].res.error_msg, seen));
  assert_true(s.rep[0].has_fp);
  assert_memory_equal(s.rep[0].fp, F->fp[CONS], 32);

  assert_int_equal(s.rc, CR_EAUTH);
  assert_int_equal(c.rc, CR_EAUTH);
  assert_int_equal(c.res.status, CR_SESSION_FAILED);
  assert_int_equal(c.res.error, CR_EAUTH);
  assert_non_null(strstr(c.err.msg, "rejected"));
  assert_non_null(strstr(c.err.msg, seen));
  assert_int_equal(c.n, 1);
  cli_free(&c);
}

static void test_garbage_client_dropped_server_keeps_serving(void **state) {
  (void)state;
  server s;
  client c;
  srv_init(&s, F->fp[CONS], 0, 500);
  s.cfg.once = 1; /* stops after the first connection that passes TLS */
  srv_start(&s);

  int fd = tcp_connect(s.addr);
  static const char junk[] = "GET / HTTP/1.0\r\n\r\n";
  assert_int_equal(send(fd, junk, sizeof junk - 1, 0), (ssize_t)(sizeof junk - 1));
  long n = read_to_eof(fd);
  assert_true(n >= 0); /* an alert at most, then the end */
  close(fd);
  srv_wait(&s, 1);

  /* Bytes, then a silent close before any handshake. */
  fd = tcp_connect(s.addr);
  assert_int_equal(send(fd, "\x16\x03\x01", 3, 0), 3);
  close(fd);
  srv_wait(&s, 2);

  cli_init(&c, s.addr, F->fp[PROV], 400, 900);
  cli_run(&c);
  srv_join(&s);
  assert_int_equal(c.rc, 0);
  assert_int_equal(c.res.count, 100);
  assert_int_equal(s.rc, 0);
  assert_int_equal(s.n, 3);
  assert_int_equal(s.rep[0].res.error, CR_ETLS);
  assert_non_null(strstr(s.rep[0].res.error_msg, "TLS 1.3"));
  assert_false(s.rep[0].has_fp);
  assert_int_equal(s.rep[1].res.status, CR_SESSION_FAILED);
  assert_int_equal(s.rep[2].res.status, CR_SESSION_DONE);
  cli_check_closed(&c);
  cli_free(&c);
}

static void test_handshake_timeout(void **state) {
  (void)state;
  server s;
  srv_init(&s, F->fp[CONS], 0, 100);
  s.cfg.handshake_timeout_ms = 300;
  s.stop_after = 1;
  srv_start(&s);
  uint64_t t0 = now_ms();
  int fd = tcp_connect(s.addr);
  assert_true(read_to_eof(fd) >= 0); /* the server hangs up */
  uint64_t dt = now_ms() - t0;
  close(fd);
  srv_join(&s);
  assert_true(dt >= 250);
  assert_true(dt < 5000);
  assert_int_equal(s.rc, 0);
  assert_int_equal(s.n, 1);
  assert_int_equal(s.rep[0].res.error, CR_ETIMEDOUT);
  assert_non_null(strstr(s.rep[0].res.error_msg, "300 ms"));
}

/* Frames are "u32 big-endian length || protobuf Frame"; Error is field 7. */
static int looks_like_error_frame(const uint8_t *b, size_t n) {
  if (n < 5)
    return 0;
  uint32_t len = (uint32_t)b[0] << 24 | (uint32_t)b[1] << 16 | (uint32_t)b[2] << 8 | b[3];
  return len > 0 && len + 4 <= n && b[4] == ((7 << 3) | 2);
}

static void test_idle_timeout_sends_error(void **state) {
  (void)state;
  server s;
  raw_tls r;
  uint8_t buf[4096];
  srv_init(&s, F->fp[CONS], 0, 100);
  s.cfg.once = 1;
  s.cfg.idle_timeout_ms = 300;
  srv_start(&s);
  raw_tls_connect(&r, s.addr);
  /* Say nothing: the responder waits for Hello, then gives up. */
  size_t n = raw_tls_read_all(&r, buf, sizeof buf);
  raw_tls_close(&r);
  srv_join(&s);
  assert_true(looks_like_error_frame(buf, n));
  assert_int_equal(s.rc, CR_ETIMEDOUT);
  assert_non_null(strstr(s.err.msg, "300 ms"));
  assert_int_equal(s.n, 1);
  assert_int_equal(s.rep[0].res.error, CR_ETIMEDOUT);
  assert_int_equal(s.rep[0].res.wire_error, CR_WIRE_TIMEOUT);
  assert_true(s.rep[0].has_fp);
}

static void test_bad_frame_ends_only_that_connection(void **state) {
  (void)state;
  server s;
  raw_tls r;
  client c;
  uint8_t buf[4096];
  srv_init(&s, F->fp[CONS], 0, 300);
  s.stop_after = 3;
  srv_start(&s);

  /* A zero-length frame: a protocol error, answered with an Error frame. */
  raw_tls_connect(&r, s.addr);
  assert_int_equal(SSL_write(r.ssl, "\0\0\0\0", 4), 4);
  size_t n = raw_tls_read_all(&r, buf, sizeof buf);
  raw_tls_close(&r);
  assert_true(looks_like_error_frame(buf, n));
  srv_wait(&s, 1);

  /* A frame announcing 2 GiB. */
  raw_tls_connect(&r, s.addr);
  assert_int_equal(SSL_write(r.ssl, "\x80\0\0\0garbage", 11), 11);
  n = raw_tls_read_all(&r, buf, sizeof buf);
  raw_tls_close(&r);
  assert_true(looks_like_error_frame(buf, n));
  srv_wait(&s, 2);

  cli_init(&c, s.addr, F->fp[PROV], 200, 400);
  cli_run(&c);
  srv_join(&s);
  assert_int_equal(c.rc, 0);
  assert_int_equal(c.res.count, 100);
  assert_int_equal(s.rc, 0);
  assert_int_equal(s.n, 3);
  assert_int_equal(s.rep[0].res.error, CR_EPROTO);
  assert_int_equal(s.rep[1].res.error, CR_EPROTO);
  assert_int_equal(s.rep[2].res.status, CR_SESSION_DONE);
  cli_free(&c);
}

static void test_peer_vanishes_mid_session(void **state) {
  (void)state;
  server s;
  raw_tls r;
  srv_init(&s, F->fp[CONS], 0, 100);
  s.cfg.once = 1;
  srv_start(&s);
  raw_tls_connect(&r, s.addr);
  /* Half a frame header, then gone. */
  assert_int_equal(SSL_write(r.ssl, "\0\0", 2), 2);
  raw_tls_close(&r);
  srv_join(&s);
  assert_int_equal(s.rc, CR_ECONNRESET);
  if (strstr(s.err.msg, "closed the connection") == NULL ||
      strstr(s.err.msg, "before the session completed") == NULL)
    fail_msg("unexpected message: %s", s.err.msg);
  assert_int_equal(s.n, 1);
  assert_int_equal(s.rep[0].res.status, CR_SESSION_FAILED);
}

/* Changed on purpose (issue 14): connections in the TLS handshake used to
 * be capped at max_sessions with the NEWEST refused, which let 16 idle
 * connections lock the partner out. Now the cap is max_pending and the
 * OLDEST unauthenticated connection makes room. */
static void test_max_sessions(void **state) {
  (void)state;
  server s;
  srv_init(&s, F->fp[CONS], 0, 100);
  s.cfg.max_sessions = 1;
  s.cfg.max_pending = 1;
  s.cfg.handshake_timeout_ms = 5000;
  s.stop_after = 2;
  srv_start(&s);
  int a = tcp_connect(s.addr);
  usleep(200000); /* let the server accept it */
  int b = tcp_connect(s.addr);
  uint64_t t0 = now_ms();
  assert_int_equal(read_to_eof(a), 0); /* the older one closed at once */
  assert_true(now_ms() - t0 < 2000);
  close(a);
  srv_wait(&s, 1);
  close(b);
  srv_join(&s);
  assert_int_equal(s.n, 2);
  assert_int_equal(s.rep[0].res.error, CR_EREFUSED);
  assert_non_null(strstr(s.rep[0].res.error_msg, "max_pending"));
  assert_non_null(strstr(s.rep[0].res.error_msg, "newer connection"));
  assert_int_equal(s.rep[1].res.error, CR_ETLS); /* b, closed by its peer */
}

/* Strangers holding many idle connections do not keep the partner out: with
 * 3 x max_pending idle TCP connections open (16 of them, from the same
 * address as the partner), the partner's session completes at its first
 * attempt, and the node holds at most max_pending of them. */
static void test_idle_connections_do_not_starve_partner(void **state) {
  (void)state;
  server s;
  client c;
  enum { IDLE = 48 };
  int fds[IDLE];
  srv_init(&s, F->fp[CONS], 0, 500);
  s.cfg.max_sessions = 2;
  s.cfg.max_pending = 16;
  s.cfg.max_pending_per_ip = 16;
  s.cfg.handshake_timeout_ms = 20000; /* the idle ones would outlast the test */
  s.cfg.accept_timeout_ms = 20000;
  srv_start(&s);
  for (int i = 0; i < IDLE; i++)
    fds[i] = tcp_connect(s.addr);
  /* The server closes the oldest: 32 of them see their end of stream. */
  int closed = 0;
  for (int i = 0; i < IDLE - 16; i++) {
    assert_int_equal(read_to_eof(fds[i]), 0);
    closed++;
  }
  srv_wait(&s, closed);
  cli_init(&c, s.addr, F->fp[PROV], 400, 900);
  uint64_t t0 = now_ms();
  cli_run(&c);
  uint64_t dt = now_ms() - t0;
  assert_int_equal(c.rc, 0);
  assert_int_equal(c.res.status, CR_SESSION_DONE);
  assert_int_equal(c.res.count, 100);
  assert_true(dt < 10000);
  cli_check_closed(&c);
  cli_free(&c);
  for (int i = 0; i < IDLE; i++)
    close(fds[i]);
  srv_stop(&s);
  srv_join(&s);
  assert_int_equal(s.rep[0].res.error, CR_EREFUSED);
  assert_non_null(strstr(s.rep[0].res.error_msg, "max_pending"));
  assert_int_equal(s.n, IDLE + 1); /* each idle connection, and the session */
}

/* A start that fails has opened nothing: the loop closes without running,
 * and no callback has fired. */
static int serve_start_fails(server *s) {
  uv_loop_t loop;
  cr_node *n = (cr_node *)&loop; /* must be reset */
  assert_int_equal(uv_loop_init(&loop), 0);
  cr_error_clear(&s->err);
  int rc = cr_node_serve_start(&n, &loop, &s->cfg, &s->err);
  assert_int_not_equal(rc, 0);
  assert_null(n);
  assert_int_equal(uv_loop_close(&loop), 0);
  assert_int_equal(s->listening_calls + s->closed_calls + s->n, 0);
  return rc;
}

static void test_bind_error(void **state) {
  (void)state;
  server s;
  char addr[64];
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in sa;
  socklen_t len = sizeof sa;
  memset(&sa, 0, sizeof sa);
  sa.sin_family = AF_INET;
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof sa), 0);
  assert_int_equal(listen(fd, 1), 0);
  assert_int_equal(getsockname(fd, (struct sockaddr *)&sa, &len), 0);
  snprintf(addr, sizeof addr, "127.0.0.1:%d", ntohs(sa.sin_port));

  srv_init(&s, F->fp[CONS], 0, 100);
  s.cfg.address = addr;
  assert_int_equal(serve_start_fails(&s), CR_ENET);
  char want[128];
  snprintf(want, sizeof want, "cannot listen on %s: address already in use", addr);
  assert_string_equal(s.err.msg, want);
  close(fd);

  s.cfg.address = "localhost";
  assert_int_equal(serve_start_fails(&s), CR_EUSAGE);
  s.cfg.address = "127.0.0.1:99999";
  assert_int_equal(serve_start_fails(&s), CR_EUSAGE);
  s.cfg.address = "::1:7443";
  assert_int_equal(serve_start_fails(&s), CR_EUSAGE);
  assert_non_null(strstr(s.err.msg, "[::1]"));
  /* A listen host that does not resolve. */
  s.cfg.address = "no-such-host.invalid:0";
  assert_int_equal(serve_start_fails(&s), CR_EDNS);
  /* An identity that is not the template's provider. */
  s.cfg.address = "127.0.0.1:0";
  s.cfg.id = F->id[STRANGER];
  assert_int_equal(serve_start_fails(&s), CR_ECONFIG);
  assert_non_null(strstr(s.err.msg, "not the one the template pins"));
  /* No data set and no loader. */
  s.cfg.id = F->id[PROV];
  s.cfg.session.data = NULL;
  assert_int_equal(serve_start_fails(&s), CR_EINVAL);
  s.cfg.session.data = s.data;
  srv_free_unstarted(&s);
}

static void test_connect_errors(void **state) {
  (void)state;
  client c;
  char addr[64];
  /* A port nobody listens on. */
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in sa;
  socklen_t len = sizeof sa;
  memset(&sa, 0, sizeof sa);
  sa.sin_family = AF_INET;
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof sa), 0);
  assert_int_equal(getsockname(fd, (struct sockaddr *)&sa, &len), 0);
  close(fd);
  snprintf(addr, sizeof addr, "127.0.0.1:%d", ntohs(sa.sin_port));

  cli_init(&c, addr, F->fp[PROV], 0, 100);
  cli_run(&c);
  assert_int_equal(c.start_rc, 0);
  assert_int_equal(c.rc, CR_ECONNREFUSED);
  assert_non_null(strstr(c.err.msg, "cannot connect to"));
  assert_non_null(strstr(c.err.msg, "connection refused"));
  assert_int_equal(c.n, 1);
  assert_int_equal(c.rep.res.status, CR_SESSION_FAILED);
  assert_int_equal(c.rep.res.error, CR_ECONNREFUSED);
  assert_int_equal(c.res.error, CR_ECONNREFUSED);
  assert_false(c.rep.has_fp);
  cli_check_closed(&c);

  /* A query the template does not have: refused before connecting. */
  c.cfg.session.query = "nope";
  cli_run(&c);
  assert_int_equal(c.rc, CR_EREFUSED);
  assert_int_equal(c.start_rc, CR_EREFUSED);
  assert_int_equal(c.n, 0);
  cli_check_closed(&c);
  c.cfg.session.query = "overlap";
  c.cfg.address = "no-port";
  cli_run(&c);
  assert_int_equal(c.rc, CR_EUSAGE);
  cli_check_closed(&c);
  /* No query, and not a ping. */
  c.cfg.address = addr;
  c.cfg.session.query = NULL;
  cli_run(&c);
  assert_int_equal(c.rc, CR_EUSAGE);
  cli_check_closed(&c);
  cli_free(&c);
}

/* A host name that does not resolve: CR_EDNS, through on_session and
 * on_closed (the resolution is asynchronous). */
static void test_dns_failure(void **state) {
  (void)state;
  client c;
  cli_init(&c, "no-such-host.invalid:7443", F->fp[PROV], 0, 100);
  c.cfg.handshake_timeout_ms = 20000;
  cli_run(&c);
  assert_int_equal(c.start_rc, 0);
  assert_int_equal(c.rc, CR_EDNS);
  assert_non_null(strstr(c.err.msg, "cannot resolve"));
  assert_non_null(strstr(c.err.msg, "no-such-host.invalid"));
  assert_int_equal(c.n, 1);
  assert_int_equal(c.rep.res.error, CR_EDNS);
  assert_int_equal(c.res.status, CR_SESSION_FAILED);
  cli_check_closed(&c);
  cli_free(&c);
}

static void test_stop_from_another_thread(void **state) {
  (void)state;
  server s;
  srv_init(&s, F->fp[CONS], 0, 100);
  srv_start(&s);
  /* An idle connection is aborted by the stop, not waited for. */
  int fd = tcp_connect(s.addr);
  usleep(50000);
  srv_stop(&s);
  assert_true(read_to_eof(fd) >= 0);
  close(fd);
  srv_join(&s);
  assert_int_equal(s.rc, 0);
  assert_int_equal(s.n, 1);
  assert_int_equal(s.rep[0].res.error, CR_EREFUSED);
  assert_non_null(strstr(s.rep[0].res.error_msg, "stopped"));
}

/* Stopped before the loop first runs: nothing listened for, on_closed all
 * the same, and the loop closes. */
static void test_stop_before_running(void **state) {
  (void)state;
  server s;
  uv_loop_t loop;
  srv_init(&s, F->fp[CONS], 0, 100);
  assert_int_equal(uv_loop_init(&loop), 0);
  assert_int_equal(cr_node_serve_start(&s.node, &loop, &s.cfg, &s.err), 0);
  cr_node_stop(s.node);
  cr_node_stop(s.node);                /* idempotent */
  assert_int_equal(s.closed_calls, 0); /* from the loop, not from the stop */
  assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
  assert_int_equal(s.closed_calls, 1);
  assert_int_equal(s.rc, 0);
  assert_true(s.closed_res_null);
  assert_int_equal(s.listening_calls, 0);
  assert_int_equal(s.n, 0);
  cr_node_stop(s.node); /* after on_closed: nothing */
  assert_int_equal(s.closed_calls, 1);
  cr_node_free(s.node);
  assert_int_equal(uv_loop_close(&loop), 0);
  srv_free_unstarted(&s);
}

/* Both nodes on one loop, in this thread. */
static void test_one_loop_session(void **state) {
  (void)state;
  server s;
  client c;
  srv_init(&s, F->fp[CONS], 0, 5000);
  s.cfg.once = 1;
  cli_init(&c, NULL, F->fp[PROV], 1000, 9000);
  pair_run(&s, &c);
  assert_int_equal(c.rc, 0);
  assert_int_equal(c.res.status, CR_SESSION_DONE);
  assert_int_equal(c.res.count, 4000);
  assert_int_equal(c.res.own_set_size, 8000);
  assert_int_equal(c.n, 1);
  assert_memory_equal(c.rep.fp, F->fp[PROV], 32);
  assert_int_equal(s.rc, 0);
  assert_true(s.closed_res_null);
  assert_int_equal(s.n, 1);
  assert_int_equal(s.rep[0].res.status, CR_SESSION_DONE);
  assert_int_equal(s.rep[0].res.count, 4000);
  assert_memory_equal(s.rep[0].res.session_id, c.res.session_id, 32);
  srv_free_unstarted(&s);
  cli_free(&c);
}

/* cr_node_stop on the running node in the middle of its session: the
 * partner is told ABORTED, on_closed reports the abort with the result. */
static void test_stop_run_mid_session(void **state) {
  (void)state;
  server s;
  client c;
  srv_init(&s, F->fp[CONS], 0, 3000);
  s.cfg.once = 1;
  cli_init(&c, NULL, F->fp[PROV], 1000, 4000);
  c.stop_at_progress = 1; /* after the first step of the session's work */
  pair_run(&s, &c);
  assert_int_equal(c.stop_at_progress, 0);
  assert_int_equal(c.rc, CR_EREFUSED);
  assert_non_null(strstr(c.err.msg, "stopped"));
  assert_int_equal(c.res.status, CR_SESSION_FAILED);
  assert_int_equal(c.res.error, CR_EREFUSED);
  assert_int_equal(c.res.wire_error, CR_WIRE_ABORTED);
  assert_int_equal(c.res.error_from_peer, 0);
  assert_int_equal(c.n, 1);
  /* The serving node heard it from the wire (once: that session's code). */
  assert_int_equal(s.n, 1);
  assert_int_equal(s.rep[0].res.status, CR_SESSION_FAILED);
  assert_int_equal(s.rep[0].res.wire_error, CR_WIRE_ABORTED);
  assert_int_equal(s.rep[0].res.error_from_peer, 1);
  assert_int_equal(s.rc, s.rep[0].res.error);
  assert_int_not_equal(s.rc, 0);
  srv_free_unstarted(&s);
  cli_free(&c);
}

/* cr_node_stop on the serving node in the middle of a session. */
static void test_stop_serve_mid_session(void **state) {
  (void)state;
  server s;
  client c;
  srv_init(&s, F->fp[CONS], 0, 3000);
  s.stop_at_progress = 1; /* not once: only the stop ends it */
  cli_init(&c, NULL, F->fp[PROV], 1000, 4000);
  pair_run(&s, &c);
  assert_int_equal(s.stop_at_progress, 0);
  assert_int_equal(s.rc, 0);
  assert_int_equal(s.n, 1);
  assert_int_equal(s.rep[0].res.status, CR_SESSION_FAILED);
  assert_int_equal(s.rep[0].res.error, CR_EREFUSED);
  assert_int_equal(s.rep[0].res.wire_error, CR_WIRE_ABORTED);
  assert_int_not_equal(c.rc, 0);
  assert_int_equal(c.res.status, CR_SESSION_FAILED);
  assert_int_equal(c.res.wire_error, CR_WIRE_ABORTED);
  assert_int_equal(c.res.error_from_peer, 1);
  srv_free_unstarted(&s);
  cli_free(&c);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_full_session),
      cmocka_unit_test(test_localhost_fallback),
      cmocka_unit_test(test_concurrent_sessions),
      cmocka_unit_test(test_client_pins_wrong_provider),
      cmocka_unit_test(test_server_pins_wrong_consumer),
      cmocka_unit_test(test_garbage_client_dropped_server_keeps_serving),
      cmocka_unit_test(test_handshake_timeout),
      cmocka_unit_test(test_idle_timeout_sends_error),
      cmocka_unit_test(test_bad_frame_ends_only_that_connection),
      cmocka_unit_test(test_peer_vanishes_mid_session),
      cmocka_unit_test(test_max_sessions),
      cmocka_unit_test(test_idle_connections_do_not_starve_partner),
      cmocka_unit_test(test_bind_error),
      cmocka_unit_test(test_connect_errors),
      cmocka_unit_test(test_dns_failure),
      cmocka_unit_test(test_stop_from_another_thread),
      cmocka_unit_test(test_stop_before_running),
      cmocka_unit_test(test_one_loop_session),
      cmocka_unit_test(test_stop_run_mid_session),
      cmocka_unit_test(test_stop_serve_mid_session),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}
