/*
 * The node over real loopback TCP: a cr_node_serve in a thread of its own
 * (each call runs its own loop) and cr_node_run or scripted raw clients
 * against it. Covers complete sessions (also several at once), certificate
 * pinning failures on either side, hostile and broken peers (garbage, no
 * handshake, silence, bad frames, vanishing mid-session) that end only their
 * own connection, the connection cap, timeouts, bind and connect errors,
 * and that every loop ends with all handles closed.
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

#define MAX_REPORTS 16

enum { PROV = 0, CONS = 1, STRANGER = 2 };

typedef struct fixture {
  char root[64];
  char dir[3][128];
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

static int cmp_str(const void *a, const void *b) {
  return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Keys "user<i>@example.com" for i in [from, to). */
static cr_dataset *make_dataset(int from, int to) {
  int n = to - from;
  char **keys = calloc((size_t)n, sizeof *keys);
  size_t total = 0;
  assert_non_null(keys);
  for (int i = 0; i < n; i++) {
    char buf[64];
    snprintf(buf, sizeof buf, "user%d@example.com", from + i);
    keys[i] = dup_str(buf);
    total += strlen(buf);
  }
  qsort(keys, (size_t)n, sizeof *keys, cmp_str);
  cr_dataset *d = calloc(1, sizeof *d);
  assert_non_null(d);
  d->n = (size_t)n;
  d->bytes = malloc(total ? total : 1);
  d->off = calloc((size_t)n + 1, sizeof *d->off);
  for (int i = 0; i < n; i++) {
    size_t l = strlen(keys[i]);
    memcpy(d->bytes + d->off[i], keys[i], l);
    d->off[i + 1] = d->off[i] + l;
    free(keys[i]);
  }
  free(keys);
  return d;
}

static void free_dataset(cr_dataset *d) {
  free(d->bytes);
  free(d->off);
  free(d);
}

/* ---- a server in a thread ----------------------------------------------- */

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
  cr_node_stopper *stopper;
  uv_thread_t th;
  uv_sem_t ready;
  uv_mutex_t mu;
  char addr[80];
  int rc;
  cr_error err;
  int n;
  report rep[MAX_REPORTS];
  int stop_after; /* fire the stopper after this many reports (0: never) */
} server;

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

static void srv_on_listening(void *ctx, const char *addr) {
  server *s = ctx;
  snprintf(s->addr, sizeof s->addr, "%s", addr);
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
    cr_node_stopper_fire(s->stopper);
}

static void srv_thread(void *arg) {
  server *s = arg;
  cr_error_clear(&s->err);
  s->rc = cr_node_serve(&s->cfg, &s->err);
  uv_sem_post(&s->ready); /* in case it never listened */
}

/* Server = provider. pin_cons: what its template pins for the consumer. */
static void srv_init(server *s, const uint8_t *pin_cons, int n_from, int n_to) {
  memset(s, 0, sizeof *s);
  s->tmpl = make_template(F->fp[PROV], pin_cons);
  s->data = make_dataset(n_from, n_to);
  assert_int_equal(cr_node_stopper_new(&s->stopper), 0);
  s->cfg.tmpl = s->tmpl;
  s->cfg.id = F->id[PROV];
  s->cfg.data = s->data;
  s->cfg.role = CR_ROLE_PROVIDER;
  s->cfg.address = "127.0.0.1:0";
  s->cfg.software = "test-server";
  s->cfg.on_session = srv_on_session;
  s->cfg.on_listening = srv_on_listening;
  s->cfg.ctx = s;
  s->cfg.stopper = s->stopper;
  uv_sem_init(&s->ready, 0);
  uv_mutex_init(&s->mu);
}

static void srv_start(server *s) {
  assert_int_equal(uv_thread_create(&s->th, srv_thread, s), 0);
  uv_sem_wait(&s->ready);
  assert_true(strncmp(s->addr, "127.0.0.1:", 10) == 0);
  assert_true(atoi(s->addr + 10) > 0);
}

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

static void srv_join(server *s) {
  assert_int_equal(uv_thread_join(&s->th), 0);
  uv_sem_destroy(&s->ready);
  uv_mutex_destroy(&s->mu);
  cr_node_stopper_free(s->stopper);
  free_template(s->tmpl);
  free_dataset(s->data);
}

static void srv_free_unstarted(server *s) {
  uv_sem_destroy(&s->ready);
  uv_mutex_destroy(&s->mu);
  cr_node_stopper_free(s->stopper);
  free_template(s->tmpl);
  free_dataset(s->data);
}

/* ---- a cr_node_run client ----------------------------------------------- */

typedef struct client {
  cr_node_config cfg;
  cr_template *tmpl;
  cr_dataset *data;
  cr_session_result res;
  cr_error err;
  int rc;
  int n;
  report rep;
  uv_thread_t th;
} client;

static void cli_on_session(void *ctx, const cr_session_result *res, const char *peer,
                           const uint8_t *fp) {
  client *c = ctx;
  c->n++;
  record(&c->rep, res, peer, fp);
}

/* Client = consumer. pin_prov: what its template pins for the provider. */
static void cli_init(client *c, const char *addr, const uint8_t *pin_prov, int n_from, int n_to) {
  memset(c, 0, sizeof *c);
  c->tmpl = make_template(pin_prov, F->fp[CONS]);
  c->data = make_dataset(n_from, n_to);
  c->cfg.tmpl = c->tmpl;
  c->cfg.id = F->id[CONS];
  c->cfg.data = c->data;
  c->cfg.role = CR_ROLE_CONSUMER;
  c->cfg.address = addr;
  c->cfg.query = "overlap";
  c->cfg.software = "test-client";
  c->cfg.on_session = cli_on_session;
  c->cfg.ctx = c;
}

static void cli_run(client *c) {
  cr_error_clear(&c->err);
  c->rc = cr_node_run(&c->cfg, &c->res, &c->err);
}

static void cli_thread(void *arg) { cli_run(arg); }

static void cli_free(client *c) {
  cr_session_result_free_outputs(&c->res); /* cr_node_run hands them over */
  free_template(c->tmpl);
  free_dataset(c->data);
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
  char p[256];
  r->ctx = SSL_CTX_new(TLS_client_method());
  assert_non_null(r->ctx);
  SSL_CTX_set_verify(r->ctx, SSL_VERIFY_NONE, NULL);
  snprintf(p, sizeof p, "%s/%s", F->dir[CONS], CR_IDENTITY_CRT_FILE);
  assert_int_equal(SSL_CTX_use_certificate_file(r->ctx, p, SSL_FILETYPE_PEM), 1);
  snprintf(p, sizeof p, "%s/%s", F->dir[CONS], CR_IDENTITY_KEY_FILE);
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
  snprintf(f->root, sizeof f->root, "/tmp/cr_test_net_nodeXXXXXX");
  assert_non_null(mkdtemp(f->root));
  for (int i = 0; i < 3; i++) {
    snprintf(f->dir[i], sizeof f->dir[i], "%s/%s", f->root, names[i]);
    assert_int_equal(cr_identity_generate(f->dir[i], names[i], f->fp[i], &err), 0);
    assert_int_equal(cr_identity_load(&f->id[i], f->dir[i], &err), 0);
  }
  F = f;
  *state = f;
  return 0;
}

static int teardown(void **state) {
  fixture *f = *state;
  char p[256];
  for (int i = 0; i < 3; i++) {
    cr_identity_free(f->id[i]);
    snprintf(p, sizeof p, "%s/%s", f->dir[i], CR_IDENTITY_KEY_FILE);
    unlink(p);
    snprintf(p, sizeof p, "%s/%s", f->dir[i], CR_IDENTITY_CRT_FILE);
    unlink(p);
    rmdir(f->dir[i]);
  }
  rmdir(f->root);
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
  assert_int_equal(c.res.peer_set_size, 6000);
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
  cli_free(&c);
  assert_int_equal(cr__node_unclean_loops(), 0);
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
  for (int i = 0; i < 3; i++)
    cli_free(&c[i]);
  assert_int_equal(cr__node_unclean_loops(), 0);
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
  cli_free(&c);
  assert_int_equal(cr__node_unclean_loops(), 0);
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
  assert_int_equal(s.rc, CR_ENET);
  if (strstr(s.err.msg, "closed the connection") == NULL ||
      strstr(s.err.msg, "before the session completed") == NULL)
    fail_msg("unexpected message: %s", s.err.msg);
  assert_int_equal(s.n, 1);
  assert_int_equal(s.rep[0].res.status, CR_SESSION_FAILED);
}

static void test_max_sessions(void **state) {
  (void)state;
  server s;
  srv_init(&s, F->fp[CONS], 0, 100);
  s.cfg.max_sessions = 1;
  s.cfg.handshake_timeout_ms = 5000;
  s.stop_after = 2;
  srv_start(&s);
  int a = tcp_connect(s.addr);
  usleep(200000); /* let the server accept it */
  int b = tcp_connect(s.addr);
  uint64_t t0 = now_ms();
  assert_int_equal(read_to_eof(b), 0); /* closed at once */
  assert_true(now_ms() - t0 < 2000);
  close(b);
  srv_wait(&s, 1);
  close(a);
  srv_join(&s);
  assert_int_equal(s.n, 2);
  assert_int_equal(s.rep[0].res.error, CR_EREFUSED);
  assert_non_null(strstr(s.rep[0].res.error_msg, "max_sessions"));
  assert_int_equal(s.rep[1].res.error, CR_ETLS);
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
  cr_error_clear(&s.err);
  int rc = cr_node_serve(&s.cfg, &s.err);
  assert_int_equal(rc, CR_ENET);
  char want[128];
  snprintf(want, sizeof want, "cannot listen on %s: address already in use", addr);
  assert_string_equal(s.err.msg, want);
  assert_int_equal(s.n, 0);
  close(fd);

  s.cfg.address = "localhost";
  assert_int_equal(cr_node_serve(&s.cfg, &s.err), CR_EUSAGE);
  s.cfg.address = "127.0.0.1:99999";
  assert_int_equal(cr_node_serve(&s.cfg, &s.err), CR_EUSAGE);
  s.cfg.address = "::1:7443";
  assert_int_equal(cr_node_serve(&s.cfg, &s.err), CR_EUSAGE);
  assert_non_null(strstr(s.err.msg, "[::1]"));
  /* An identity that is not the template's provider. */
  s.cfg.address = "127.0.0.1:0";
  s.cfg.id = F->id[STRANGER];
  assert_int_equal(cr_node_serve(&s.cfg, &s.err), CR_ECONFIG);
  assert_non_null(strstr(s.err.msg, "not the one the template pins"));
  srv_free_unstarted(&s);
  assert_int_equal(cr__node_unclean_loops(), 0);
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
  assert_int_equal(c.rc, CR_ENET);
  assert_non_null(strstr(c.err.msg, "cannot connect to"));
  assert_non_null(strstr(c.err.msg, "connection refused"));
  assert_int_equal(c.n, 1);
  assert_int_equal(c.rep.res.status, CR_SESSION_FAILED);
  assert_false(c.rep.has_fp);

  /* A query the template does not have: refused before connecting. */
  c.n = 0;
  c.cfg.query = "nope";
  cli_run(&c);
  assert_int_equal(c.rc, CR_EREFUSED);
  assert_int_equal(c.n, 0);
  c.cfg.query = "overlap";
  c.cfg.address = "no-port";
  cli_run(&c);
  assert_int_equal(c.rc, CR_EUSAGE);
  cli_free(&c);
  assert_int_equal(cr__node_unclean_loops(), 0);
}

static void test_stopper(void **state) {
  (void)state;
  server s;
  srv_init(&s, F->fp[CONS], 0, 100);
  srv_start(&s);
  /* An idle connection is aborted by the stop, not waited for. */
  int fd = tcp_connect(s.addr);
  usleep(50000);
  cr_node_stopper_fire(s.stopper);
  assert_true(read_to_eof(fd) >= 0);
  close(fd);
  srv_join(&s);
  assert_int_equal(s.rc, 0);
  assert_int_equal(s.n, 1);

  /* Fired before the node runs: it stops as soon as it listens. */
  srv_init(&s, F->fp[CONS], 0, 100);
  cr_node_stopper_fire(s.stopper);
  srv_start(&s);
  srv_join(&s);
  assert_int_equal(s.rc, 0);
  assert_int_equal(s.n, 0);
  assert_int_equal(cr__node_unclean_loops(), 0);
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
      cmocka_unit_test(test_bind_error),
      cmocka_unit_test(test_connect_errors),
      cmocka_unit_test(test_stopper),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}
