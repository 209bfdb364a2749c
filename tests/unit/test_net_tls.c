/*
 * TLS with certificate pinning, sans I/O: two cr_tls ends wired back to back
 * through memory, no sockets. Checks that the right pins complete a TLS 1.3
 * handshake with mutual authentication, that a wrong pin fails on both
 * sides with messages naming the fingerprints, that a pin set (a node
 * serving several collaborations) accepts exactly its certificates, and
 * that peers without a
 * certificate, with an older TLS version or sending garbage are refused.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <openssl/err.h>
#include <openssl/ssl.h>

#include "cleanroom/net.h"

typedef struct fixture {
  char root[64];
  char dir[3][128]; /* provider, consumer, stranger */
  cr_identity *id[3];
  uint8_t fp[3][CR_SHA256_BYTES];
} fixture;

enum { PROV = 0, CONS = 1, STRANGER = 2 };

static void rm_identity(const char *dir) {
  char p[256];
  snprintf(p, sizeof p, "%s/%s", dir, CR_IDENTITY_KEY_FILE);
  unlink(p);
  snprintf(p, sizeof p, "%s/%s", dir, CR_IDENTITY_CRT_FILE);
  unlink(p);
  rmdir(dir);
}

static int setup(void **state) {
  fixture *f = calloc(1, sizeof *f);
  cr_error err;
  static const char *names[3] = {"provider", "consumer", "stranger"};
  assert_non_null(f);
  snprintf(f->root, sizeof f->root, "/tmp/cr_test_net_tlsXXXXXX");
  assert_non_null(mkdtemp(f->root));
  for (int i = 0; i < 3; i++) {
    snprintf(f->dir[i], sizeof f->dir[i], "%s/%s", f->root, names[i]);
    assert_int_equal(cr_identity_generate(f->dir[i], names[i], f->fp[i], &err), 0);
    assert_int_equal(cr_identity_load(&f->id[i], f->dir[i], &err), 0);
  }
  *state = f;
  return 0;
}

static int teardown(void **state) {
  fixture *f = *state;
  for (int i = 0; i < 3; i++) {
    cr_identity_free(f->id[i]);
    rm_identity(f->dir[i]);
  }
  rmdir(f->root);
  free(f);
  return 0;
}

typedef struct ends {
  cr_tls_ctx *sctx, *cctx;
  cr_tls *server, *client;
  int srv_rc, cli_rc;
  cr_error srv_err, cli_err;
} ends;

/* Server = provider, client = consumer; each pins what it is told to. */
static void ends_init(ends *e, fixture *f, const uint8_t *server_pin, const uint8_t *client_pin) {
  cr_error err;
  memset(e, 0, sizeof *e);
  assert_int_equal(cr_tls_ctx_new(&e->sctx, f->id[PROV], 1, &err), 0);
  assert_int_equal(cr_tls_ctx_new(&e->cctx, f->id[CONS], 0, &err), 0);
  assert_int_equal(cr_tls_new(&e->server, e->sctx, server_pin, "consumer", &err), 0);
  assert_int_equal(cr_tls_new(&e->client, e->cctx, client_pin, "provider", &err), 0);
}

static void ends_free(ends *e) {
  cr_tls_free(e->server);
  cr_tls_free(e->client);
  cr_tls_ctx_free(e->sctx);
  cr_tls_ctx_free(e->cctx);
}

/* Moves every pending byte from a to b; returns how many moved. */
static size_t move(cr_tls *a, cr_tls *b) {
  uint8_t buf[4096];
  size_t total = 0, n;
  cr_error err;
  while ((n = cr_tls_take(a, buf, sizeof buf)) > 0) {
    assert_int_equal(cr_tls_feed(b, buf, n, &err), 0);
    total += n;
  }
  return total;
}

/* Runs both handshakes until both finish or nothing moves any more. */
static void handshake(ends *e) {
  for (int round = 0; round < 20; round++) {
    if (e->cli_rc == 0)
      e->cli_rc = cr_tls_handshake(e->client, &e->cli_err);
    size_t m1 = move(e->client, e->server);
    if (e->srv_rc == 0)
      e->srv_rc = cr_tls_handshake(e->server, &e->srv_err);
    size_t m2 = move(e->server, e->client);
    if (e->cli_rc != 0 && e->srv_rc != 0 && m1 == 0 && m2 == 0)
      return;
    if (m1 == 0 && m2 == 0 && round > 2)
      return;
  }
}

static void hex(char out[65], const uint8_t fp[32]) { cr_hex_encode(out, fp, 32); }

/* A pin set needs its function. */
static void tls_no_accept_fn_refused(fixture *f) {
  cr_tls_ctx *ctx = NULL;
  cr_tls *t = NULL;
  cr_error err;
  assert_int_equal(cr_tls_ctx_new(&ctx, f->id[PROV], 1, &err), 0);
  assert_int_equal(cr_tls_new_pinset(&t, ctx, NULL, NULL, "partner", &err), CR_EINVAL);
  assert_null(t);
  cr_tls_ctx_free(ctx);
}

static void test_pinned_handshake_and_data(void **state) {
  fixture *f = *state;
  ends e;
  cr_error err;
  ends_init(&e, f, f->fp[CONS], f->fp[PROV]);
  handshake(&e);
  assert_int_equal(e.cli_rc, 1);
  assert_int_equal(e.srv_rc, 1);

  /* Each side learned the other's fingerprint and Ed25519 key. */
  uint8_t fp[32], pk[32], want_pk[32];
  assert_int_equal(cr_tls_peer(e.client, fp, pk), 0);
  assert_memory_equal(fp, f->fp[PROV], 32);
  cr_identity_public_key(f->id[PROV], want_pk);
  assert_memory_equal(pk, want_pk, 32);
  assert_int_equal(cr_tls_peer(e.server, fp, pk), 0);
  assert_memory_equal(fp, f->fp[CONS], 32);
  cr_identity_public_key(f->id[CONS], want_pk);
  assert_memory_equal(pk, want_pk, 32);

  /* Application data both ways, including a record-spanning message. */
  size_t big_len = 100000;
  uint8_t *big = malloc(big_len);
  assert_non_null(big);
  for (size_t i = 0; i < big_len; i++)
    big[i] = (uint8_t)(i * 7);
  assert_int_equal(cr_tls_write(e.client, big, big_len, &err), 0);
  move(e.client, e.server);
  cr_buf in;
  cr_buf_init(&in);
  assert_int_equal(cr_tls_read(e.server, &in, SIZE_MAX, &err), 0);
  assert_int_equal(in.len, big_len);
  assert_memory_equal(in.data, big, big_len);
  cr_buf_reset(&in);
  assert_int_equal(cr_tls_write(e.server, (const uint8_t *)"pong", 4, &err), 0);
  move(e.server, e.client);
  assert_int_equal(cr_tls_read(e.client, &in, SIZE_MAX, &err), 0);
  assert_int_equal(in.len, 4);
  assert_memory_equal(in.data, "pong", 4);

  /* Reads respect max. */
  cr_buf_reset(&in);
  assert_int_equal(cr_tls_write(e.client, big, 1000, &err), 0);
  move(e.client, e.server);
  assert_int_equal(cr_tls_read(e.server, &in, 10, &err), 0);
  assert_int_equal(in.len, 10);
  assert_int_equal(cr_tls_read(e.server, &in, SIZE_MAX, &err), 0);
  assert_int_equal(in.len, 1000);

  /* close_notify is seen as the end of the stream. */
  cr_buf_reset(&in);
  cr_tls_shutdown(e.client);
  move(e.client, e.server);
  assert_int_equal(cr_tls_read(e.server, &in, SIZE_MAX, &err), 1);
  assert_int_equal(cr_tls_write(e.client, big, 1, &err), CR_ETLS);

  cr_buf_free(&in);
  free(big);
  ends_free(&e);
}

static void test_client_pin_mismatch(void **state) {
  fixture *f = *state;
  ends e;
  char want[65], seen[65];
  /* The consumer's template pins a stranger as the provider. */
  ends_init(&e, f, f->fp[CONS], f->fp[STRANGER]);
  handshake(&e);
  assert_int_equal(e.cli_rc, CR_EAUTH);
  hex(want, f->fp[STRANGER]);
  hex(seen, f->fp[PROV]);
  assert_non_null(strstr(e.cli_err.msg, want));
  assert_non_null(strstr(e.cli_err.msg, seen));
  assert_non_null(strstr(e.cli_err.msg, "expected"));
  assert_non_null(strstr(e.cli_err.msg, "provider"));
  /* The provider learns its certificate was rejected, and which one. */
  assert_int_equal(e.srv_rc, CR_EAUTH);
  assert_non_null(strstr(e.srv_err.msg, "rejected"));
  assert_non_null(strstr(e.srv_err.msg, seen));
  uint8_t fp[32];
  assert_int_equal(cr_tls_peer(e.client, fp, NULL), 0); /* seen, though refused */
  assert_memory_equal(fp, f->fp[PROV], 32);
  assert_int_equal(cr_tls_peer(e.client, fp, fp), CR_EINVAL); /* no key: not accepted */
  ends_free(&e);
}

static void test_server_pin_mismatch(void **state) {
  fixture *f = *state;
  ends e;
  cr_error err;
  char want[65], seen[65], prov[65];
  /* The provider's template pins a stranger as the consumer. */
  ends_init(&e, f, f->fp[STRANGER], f->fp[PROV]);
  handshake(&e);
  assert_int_equal(e.srv_rc, CR_EAUTH);
  hex(want, f->fp[STRANGER]);
  hex(seen, f->fp[CONS]);
  hex(prov, f->fp[PROV]);
  assert_non_null(strstr(e.srv_err.msg, want));
  assert_non_null(strstr(e.srv_err.msg, seen));
  assert_non_null(strstr(e.srv_err.msg, "consumer"));
  /* In TLS 1.3 the client finishes first; the refusal reaches it as an
   * alert on its first read, naming both certificates. */
  assert_int_equal(e.cli_rc, 1);
  cr_buf in;
  cr_buf_init(&in);
  int r = cr_tls_read(e.client, &in, SIZE_MAX, &err);
  assert_int_equal(r, CR_EAUTH);
  assert_non_null(strstr(err.msg, "rejected"));
  assert_non_null(strstr(err.msg, seen)); /* its own */
  assert_non_null(strstr(err.msg, prov)); /* the one the provider showed */
  assert_int_equal(in.len, 0);
  cr_buf_free(&in);
  ends_free(&e);
}

/* A node serving several collaborations: the server accepts any
 * certificate its pin set accepts, and refuses the others in the
 * handshake, naming the one it saw. */
typedef struct pinset {
  const uint8_t *allowed[2];
  int calls;
} pinset;

static int pinset_accept(void *ctx, const uint8_t fp[CR_SHA256_BYTES]) {
  pinset *ps = ctx;
  ps->calls++;
  for (int i = 0; i < 2; i++)
    if (ps->allowed[i] != NULL && memcmp(ps->allowed[i], fp, CR_SHA256_BYTES) == 0)
      return 1;
  return 0;
}

static void test_pin_set(void **state) {
  fixture *f = *state;
  cr_error err;
  char seen[65];
  for (int round = 0; round < 2; round++) {
    /* Round 0: the consumer is in the set; round 1: only the stranger. */
    pinset ps = {{round == 0 ? f->fp[CONS] : f->fp[STRANGER], f->fp[STRANGER]}, 0};
    ends e;
    memset(&e, 0, sizeof e);
    assert_int_equal(cr_tls_ctx_new(&e.sctx, f->id[PROV], 1, &err), 0);
    assert_int_equal(cr_tls_ctx_new(&e.cctx, f->id[CONS], 0, &err), 0);
    assert_int_equal(cr_tls_new_pinset(&e.server, e.sctx, pinset_accept, &ps, "partner", &err), 0);
    assert_int_equal(cr_tls_new(&e.client, e.cctx, f->fp[PROV], "provider", &err), 0);
    handshake(&e);
    assert_true(ps.calls >= 1);
    if (round == 0) {
      assert_int_equal(e.srv_rc, 1);
      assert_int_equal(e.cli_rc, 1);
      uint8_t fp[32], pk[32];
      assert_int_equal(cr_tls_peer(e.server, fp, pk), 0);
      assert_memory_equal(fp, f->fp[CONS], 32);
    } else {
      assert_int_equal(e.srv_rc, CR_EAUTH);
      hex(seen, f->fp[CONS]);
      assert_non_null(strstr(e.srv_err.msg, seen));
      assert_non_null(strstr(e.srv_err.msg, "not pinned by any collaboration"));
    }
    ends_free(&e);
  }
  tls_no_accept_fn_refused(f);
}

static void test_garbage_is_refused(void **state) {
  fixture *f = *state;
  ends e;
  cr_error err;
  ends_init(&e, f, f->fp[CONS], f->fp[PROV]);
  static const char http[] = "GET / HTTP/1.1\r\nHost: x\r\n\r\n";
  assert_int_equal(cr_tls_feed(e.server, (const uint8_t *)http, sizeof http - 1, &err), 0);
  int r = cr_tls_handshake(e.server, &err);
  assert_int_equal(r, CR_ETLS);
  assert_non_null(strstr(err.msg, "TLS 1.3"));
  /* Reading or writing a failed connection fails too. */
  cr_buf in;
  cr_buf_init(&in);
  assert_int_equal(cr_tls_read(e.server, &in, SIZE_MAX, &err), CR_ETLS);
  assert_int_equal(cr_tls_write(e.server, (const uint8_t *)"x", 1, &err), CR_ETLS);
  cr_buf_free(&in);

  /* Random bytes that look like a TLS record header. */
  cr_tls_free(e.server);
  assert_int_equal(cr_tls_new(&e.server, e.sctx, f->fp[CONS], "consumer", &err), 0);
  uint8_t junk[512];
  junk[0] = 0x16;
  junk[1] = 0x03;
  junk[2] = 0x01;
  junk[3] = 0x01;
  junk[4] = 0xfb;
  for (size_t i = 5; i < sizeof junk; i++)
    junk[i] = (uint8_t)(i * 131 + 17);
  assert_int_equal(cr_tls_feed(e.server, junk, sizeof junk, &err), 0);
  assert_true(cr_tls_handshake(e.server, &err) < 0);
  assert_true(cr_tls_pending(e.server) > 0); /* an alert for the peer */
  ends_free(&e);
}

/* A raw OpenSSL client, for peers our own code would never be. */
static SSL_CTX *raw_client_ctx(int max_version, const fixture *f, int with_cert) {
  SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
  assert_non_null(ctx);
  SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
  if (max_version)
    assert_int_equal(SSL_CTX_set_max_proto_version(ctx, max_version), 1);
  if (with_cert) {
    char p[256];
    snprintf(p, sizeof p, "%s/%s", f->dir[CONS], CR_IDENTITY_CRT_FILE);
    assert_int_equal(SSL_CTX_use_certificate_file(ctx, p, SSL_FILETYPE_PEM), 1);
    snprintf(p, sizeof p, "%s/%s", f->dir[CONS], CR_IDENTITY_KEY_FILE);
    assert_int_equal(SSL_CTX_use_PrivateKey_file(ctx, p, SSL_FILETYPE_PEM), 1);
  }
  return ctx;
}

/* Runs a raw client against a cr_tls server; returns the server's result. */
static int raw_against_server(fixture *f, SSL_CTX *cctx, cr_error *serr) {
  cr_tls_ctx *sctx = NULL;
  cr_tls *server = NULL;
  cr_error err;
  assert_int_equal(cr_tls_ctx_new(&sctx, f->id[PROV], 1, &err), 0);
  assert_int_equal(cr_tls_new(&server, sctx, f->fp[CONS], "consumer", &err), 0);
  SSL *ssl = SSL_new(cctx);
  BIO *rb = BIO_new(BIO_s_mem()), *wb = BIO_new(BIO_s_mem());
  BIO_set_mem_eof_return(rb, -1);
  SSL_set_bio(ssl, rb, wb);
  SSL_set_connect_state(ssl);
  int srv = 0;
  uint8_t buf[8192];
  for (int round = 0; round < 20 && srv == 0; round++) {
    (void)SSL_do_handshake(ssl);
    int n;
    while ((n = BIO_read(wb, buf, sizeof buf)) > 0)
      assert_int_equal(cr_tls_feed(server, buf, (size_t)n, &err), 0);
    srv = cr_tls_handshake(server, serr);
    size_t m;
    while ((m = cr_tls_take(server, buf, sizeof buf)) > 0)
      BIO_write(rb, buf, (int)m);
  }
  /* Some failures only show once the client has sent its Finished. */
  if (srv == 1) {
    (void)SSL_do_handshake(ssl);
    cr_buf in;
    cr_buf_init(&in);
    srv = cr_tls_read(server, &in, SIZE_MAX, serr);
    cr_buf_free(&in);
  }
  ERR_clear_error();
  SSL_free(ssl);
  cr_tls_free(server);
  cr_tls_ctx_free(sctx);
  return srv;
}

static void test_client_without_certificate(void **state) {
  fixture *f = *state;
  cr_error err;
  SSL_CTX *cctx = raw_client_ctx(0, f, 0);
  cr_error_clear(&err);
  int r = raw_against_server(f, cctx, &err);
  assert_int_equal(r, CR_EAUTH);
  assert_non_null(strstr(err.msg, "no certificate"));
  SSL_CTX_free(cctx);
}

static void test_tls12_refused(void **state) {
  fixture *f = *state;
  cr_error err;
  SSL_CTX *cctx = raw_client_ctx(TLS1_2_VERSION, f, 1);
  cr_error_clear(&err);
  int r = raw_against_server(f, cctx, &err);
  assert_int_equal(r, CR_ETLS);
  assert_non_null(strstr(err.msg, "TLS"));
  SSL_CTX_free(cctx);
}

static void test_raw_client_with_right_cert_accepted(void **state) {
  fixture *f = *state;
  cr_error err;
  SSL_CTX *cctx = raw_client_ctx(0, f, 1);
  cr_error_clear(&err);
  /* 0: handshake done and no application data yet. */
  assert_int_equal(raw_against_server(f, cctx, &err), 0);
  SSL_CTX_free(cctx);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_pinned_handshake_and_data),
      cmocka_unit_test(test_client_pin_mismatch),
      cmocka_unit_test(test_server_pin_mismatch),
      cmocka_unit_test(test_pin_set),
      cmocka_unit_test(test_garbage_is_refused),
      cmocka_unit_test(test_client_without_certificate),
      cmocka_unit_test(test_tls12_refused),
      cmocka_unit_test(test_raw_client_with_right_cert_accepted),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}
