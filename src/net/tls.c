/*
 * TLS 1.3 with certificate pinning, over memory BIOs (design §2).
 *
 * No socket here: ciphertext goes in through cr_tls_feed and comes out
 * through cr_tls_take, so the node can drive it from libuv and tests can
 * wire two ends back to back. Trust comes from the template, not from a CA:
 * the peer's leaf certificate must hash (SHA-256 of its DER) to the pin for
 * the peer's role, and the self-signed chain errors OpenSSL reports are
 * ignored for that reason. The pin is checked in the verify callback, so a
 * wrong peer is refused inside the handshake (it gets a bad_certificate
 * alert), and once more on the finished handshake.
 * Never: resumes sessions (no tickets, no cache), negotiates below TLS 1.3.
 */
#include "cleanroom/net.h"
#include "net/net_internal.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <sodium.h>

struct cr_tls_ctx {
  SSL_CTX *ssl_ctx;
  int is_server;
  uint8_t own_fp[CR_SHA256_BYTES];
};

struct cr_tls {
  cr_tls_ctx *ctx;
  SSL *ssl;
  BIO *rbio; /* owned by ssl */
  BIO *wbio; /* owned by ssl */
  uint8_t pin[CR_SHA256_BYTES];
  /* A set of pins instead of one (a node serving several collaborations):
   * a certificate is accepted when accept() says so. */
  cr_tls_pin_fn accept;
  void *accept_ctx;
  char peer_role[32];
  uint8_t seen_fp[CR_SHA256_BYTES];
  int seen;         /* the peer presented a certificate */
  int pin_mismatch; /* ... and it was not the pinned one */
  int done;         /* handshake completed and pin verified */
  int shut;         /* close_notify queued */
  uint8_t peer_pk[CR_SIGN_PK_BYTES];
};

static void fp_hex(char out[CR_SHA256_HEX_BYTES], const uint8_t fp[CR_SHA256_BYTES]) {
  cr_hex_encode(out, fp, CR_SHA256_BYTES);
}

static int x509_fp(X509 *x, uint8_t fp[CR_SHA256_BYTES]) {
  unsigned char *der = NULL;
  int len = i2d_X509(x, &der);
  if (len <= 0) {
    ERR_clear_error();
    return CR_ECRYPTO;
  }
  cr_sha256(fp, der, (size_t)len);
  OPENSSL_free(der);
  return 0;
}

/* The peer's certificate is the pinned one (or one of the pinned ones). */
static int pin_ok(const cr_tls *t, const uint8_t fp[CR_SHA256_BYTES]) {
  if (t->accept != NULL)
    return t->accept(t->accept_ctx, fp) == 1;
  return sodium_memcmp(fp, t->pin, CR_SHA256_BYTES) == 0;
}

static int verify_cb(int ok, X509_STORE_CTX *xs) {
  SSL *ssl = X509_STORE_CTX_get_ex_data(xs, SSL_get_ex_data_X509_STORE_CTX_idx());
  cr_tls *t = ssl != NULL ? SSL_get_app_data(ssl) : NULL;
  (void)ok; /* chain errors are expected: self-signed leaves, no CA */
  if (t == NULL)
    return 0;
  /* Only the leaf matters; certificates above it are ignored, and the
   * leaf's pin is checked again after the handshake. */
  if (X509_STORE_CTX_get_error_depth(xs) != 0)
    return 1;
  X509 *cert = X509_STORE_CTX_get_current_cert(xs);
  uint8_t fp[CR_SHA256_BYTES];
  if (cert == NULL || x509_fp(cert, fp) != 0) {
    X509_STORE_CTX_set_error(xs, X509_V_ERR_UNSPECIFIED);
    return 0;
  }
  memcpy(t->seen_fp, fp, sizeof fp);
  t->seen = 1;
  if (!pin_ok(t, fp)) {
    t->pin_mismatch = 1;
    /* Maps to a bad_certificate alert for the peer. */
    X509_STORE_CTX_set_error(xs, X509_V_ERR_CERT_REJECTED);
    return 0;
  }
  X509_STORE_CTX_set_error(xs, X509_V_OK);
  return 1;
}

int cr_tls_ctx_new(cr_tls_ctx **out, const cr_identity *id, int is_server, cr_error *err) {
  int rc = 0;
  cr_tls_ctx *c = NULL;
  if (out == NULL || id == NULL)
    return cr_error_set(err, CR_EINVAL, "TLS: no identity");
  *out = NULL;
  c = calloc(1, sizeof *c);
  if (c == NULL)
    return cr_error_set(err, CR_ENOMEM, "out of memory");
  c->is_server = is_server;
  memcpy(c->own_fp, cr_identity_fingerprint(id), CR_SHA256_BYTES);
  c->ssl_ctx = SSL_CTX_new(is_server ? TLS_server_method() : TLS_client_method());
  if (c->ssl_ctx == NULL)
    goto fail;
  if (!SSL_CTX_set_min_proto_version(c->ssl_ctx, TLS1_3_VERSION) ||
      !SSL_CTX_set_max_proto_version(c->ssl_ctx, TLS1_3_VERSION))
    goto fail;
  if (SSL_CTX_use_certificate(c->ssl_ctx, cr__identity_x509(id)) != 1 ||
      SSL_CTX_use_PrivateKey(c->ssl_ctx, cr__identity_pkey(id)) != 1 ||
      SSL_CTX_check_private_key(c->ssl_ctx) != 1)
    goto fail;
  /* Both sides must present a certificate; the server thereby requests one. */
  SSL_CTX_set_verify(c->ssl_ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, verify_cb);
  /* Every connection is a fresh, fully authenticated handshake. */
  SSL_CTX_set_options(c->ssl_ctx, SSL_OP_NO_TICKET);
  SSL_CTX_set_session_cache_mode(c->ssl_ctx, SSL_SESS_CACHE_OFF);
  if (!SSL_CTX_set_num_tickets(c->ssl_ctx, 0))
    goto fail;
  *out = c;
  return 0;
fail:;
  unsigned long e = ERR_peek_last_error();
  const char *r = e ? ERR_reason_error_string(e) : NULL;
  rc = cr_error_set(err, CR_ETLS, "cannot set up TLS: %s", r ? r : "unknown error");
  ERR_clear_error();
  cr_tls_ctx_free(c);
  return rc;
}

void cr_tls_ctx_free(cr_tls_ctx *ctx) {
  if (ctx == NULL)
    return;
  SSL_CTX_free(ctx->ssl_ctx);
  free(ctx);
}

int cr_tls_new(cr_tls **out, cr_tls_ctx *ctx, const uint8_t pin[CR_SHA256_BYTES],
               const char *peer_role, cr_error *err) {
  cr_tls *t = NULL;
  if (out == NULL || ctx == NULL || pin == NULL)
    return cr_error_set(err, CR_EINVAL, "TLS: missing argument");
  *out = NULL;
  t = calloc(1, sizeof *t);
  if (t == NULL)
    return cr_error_set(err, CR_ENOMEM, "out of memory");
  t->ctx = ctx;
  memcpy(t->pin, pin, CR_SHA256_BYTES);
  snprintf(t->peer_role, sizeof t->peer_role, "%s", peer_role ? peer_role : "partner");
  t->ssl = SSL_new(ctx->ssl_ctx);
  t->rbio = BIO_new(BIO_s_mem());
  t->wbio = BIO_new(BIO_s_mem());
  if (t->ssl == NULL || t->rbio == NULL || t->wbio == NULL) {
    BIO_free(t->rbio);
    BIO_free(t->wbio);
    SSL_free(t->ssl);
    free(t);
    ERR_clear_error();
    return cr_error_set(err, CR_ENOMEM, "TLS: out of memory");
  }
  /* An empty input BIO means "retry later", not end of stream. */
  BIO_set_mem_eof_return(t->rbio, -1);
  SSL_set_bio(t->ssl, t->rbio, t->wbio);
  SSL_set_app_data(t->ssl, t);
  if (ctx->is_server)
    SSL_set_accept_state(t->ssl);
  else
    SSL_set_connect_state(t->ssl);
  *out = t;
  return 0;
}

int cr_tls_new_pinset(cr_tls **out, cr_tls_ctx *ctx, cr_tls_pin_fn accept, void *accept_ctx,
                      const char *peer_role, cr_error *err) {
  static const uint8_t none[CR_SHA256_BYTES];
  if (accept == NULL)
    return cr_error_set(err, CR_EINVAL, "TLS: missing argument");
  int rc = cr_tls_new(out, ctx, none, peer_role, err);
  if (rc == 0) {
    (*out)->accept = accept;
    (*out)->accept_ctx = accept_ctx;
  }
  return rc;
}

void cr_tls_free(cr_tls *t) {
  if (t == NULL)
    return;
  SSL_free(t->ssl); /* frees both BIOs */
  free(t);
}

int cr_tls_feed(cr_tls *t, const uint8_t *data, size_t len, cr_error *err) {
  while (len > 0) {
    int n = len > INT_MAX ? INT_MAX : (int)len;
    int w = BIO_write(t->rbio, data, n);
    if (w <= 0) {
      ERR_clear_error();
      return cr_error_set(err, CR_ENOMEM, "TLS: out of memory");
    }
    data += w;
    len -= (size_t)w;
  }
  return 0;
}

static int is_cert_alert(int reason) {
  switch (reason) {
  case SSL_R_SSLV3_ALERT_BAD_CERTIFICATE:
  case SSL_R_SSLV3_ALERT_UNSUPPORTED_CERTIFICATE:
  case SSL_R_SSLV3_ALERT_CERTIFICATE_REVOKED:
  case SSL_R_SSLV3_ALERT_CERTIFICATE_EXPIRED:
  case SSL_R_SSLV3_ALERT_CERTIFICATE_UNKNOWN:
  case SSL_R_TLSV1_ALERT_UNKNOWN_CA:
  case SSL_R_TLSV1_ALERT_ACCESS_DENIED:
  case SSL_R_TLSV13_ALERT_CERTIFICATE_REQUIRED:
    return 1;
  default:
    return 0;
  }
}

static int is_version_error(int reason) {
  switch (reason) {
  case SSL_R_WRONG_VERSION_NUMBER:
  case SSL_R_UNSUPPORTED_PROTOCOL:
  case SSL_R_TLSV1_ALERT_PROTOCOL_VERSION:
  case SSL_R_UNKNOWN_PROTOCOL:
  case SSL_R_HTTP_REQUEST:
  case SSL_R_HTTPS_PROXY_REQUEST:
  case SSL_R_PACKET_LENGTH_TOO_LONG:
  case SSL_R_RECORD_LENGTH_MISMATCH:
    return 1;
  default:
    return 0;
  }
}

/* Turns the failure left on the OpenSSL error queue into a message a person
 * can act on, and clears the queue. */
static int tls_failure(cr_tls *t, int ssl_err, const char *when, cr_error *err) {
  char own[CR_SHA256_HEX_BYTES], want[CR_SHA256_HEX_BYTES], seen[CR_SHA256_HEX_BYTES];
  unsigned long e = ERR_peek_last_error();
  int reason = ERR_GET_REASON(e);
  const char *text = e ? ERR_reason_error_string(e) : NULL;
  int rc;

  fp_hex(own, t->ctx->own_fp);
  fp_hex(want, t->pin);
  if (t->seen)
    fp_hex(seen, t->seen_fp);
  else
    snprintf(seen, sizeof seen, "(none)");

  if (t->pin_mismatch && t->accept != NULL) {
    rc = cr_error_set(err, CR_EAUTH,
                      "the peer's certificate %s is not pinned by any collaboration this node "
                      "serves (as the %s)",
                      seen, t->peer_role);
  } else if (t->pin_mismatch) {
    rc = cr_error_set(err, CR_EAUTH,
                      "the partner's certificate is not the one the template pins for "
                      "the %s: expected %s but the peer presented %s",
                      t->peer_role, want, seen);
  } else if (e != 0 && ERR_GET_LIB(e) == ERR_LIB_SSL && is_cert_alert(reason)) {
    /* Authentication failed, on the partner's side: CR_EAUTH too, so both
     * ends of a pinning mismatch report the same kind of failure. */
    if (t->seen)
      rc = cr_error_set(err, CR_EAUTH,
                        "the partner rejected this node's certificate %s (%s): its "
                        "template must pin that fingerprint for this node's role; the "
                        "partner presented %s, the certificate pinned for the %s",
                        own, text ? text : "alert", seen, t->peer_role);
    else
      rc = cr_error_set(err, CR_EAUTH,
                        "the partner rejected this node's certificate %s (%s): its "
                        "template must pin that fingerprint for this node's role",
                        own, text ? text : "alert");
  } else if (e != 0 && ERR_GET_LIB(e) == ERR_LIB_SSL &&
             reason == SSL_R_PEER_DID_NOT_RETURN_A_CERTIFICATE) {
    rc = cr_error_set(err, CR_EAUTH, "the partner presented no certificate; expected %s for the %s",
                      want, t->peer_role);
  } else if (e != 0 && ERR_GET_LIB(e) == ERR_LIB_SSL && is_version_error(reason)) {
    rc = cr_error_set(err, CR_ETLS,
                      "TLS %s failed: the partner does not speak TLS 1.3 (%s); is "
                      "this the address of a cleanroom node?",
                      when, text ? text : "unexpected data");
  } else if (ssl_err == SSL_ERROR_SYSCALL || e == 0) {
    rc = cr_error_set(err, CR_ETLS, "TLS %s failed: the connection ended unexpectedly", when);
  } else {
    rc = cr_error_set(err, CR_ETLS, "TLS %s failed: %s", when, text ? text : "unknown error");
  }
  ERR_clear_error();
  return rc;
}

int cr_tls_handshake(cr_tls *t, cr_error *err) {
  if (t->done)
    return 1;
  if (t->shut)
    return cr_error_set(err, CR_ETLS, "TLS handshake failed: connection closed");
  ERR_clear_error();
  int r = SSL_do_handshake(t->ssl);
  if (r != 1) {
    int e = SSL_get_error(t->ssl, r);
    if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE)
      return 0;
    return tls_failure(t, e, "handshake", err);
  }
  /* Belt and braces: the callback ran on this very certificate, but the
   * session's receipt key comes from here, so check the pin here too. */
  X509 *peer = SSL_get0_peer_certificate(t->ssl);
  uint8_t fp[CR_SHA256_BYTES];
  if (peer == NULL)
    return cr_error_set(err, CR_EAUTH, "the partner presented no certificate");
  if (x509_fp(peer, fp) != 0)
    return cr_error_set(err, CR_ETLS, "cannot encode the partner's certificate");
  memcpy(t->seen_fp, fp, sizeof fp);
  t->seen = 1;
  if (!pin_ok(t, fp)) {
    t->pin_mismatch = 1;
    return tls_failure(t, SSL_ERROR_SSL, "handshake", err);
  }
  size_t len = sizeof t->peer_pk;
  EVP_PKEY *pk = X509_get0_pubkey(peer);
  if (pk == NULL || EVP_PKEY_get_base_id(pk) != EVP_PKEY_ED25519 ||
      EVP_PKEY_get_raw_public_key(pk, t->peer_pk, &len) != 1 || len != sizeof t->peer_pk) {
    ERR_clear_error();
    return cr_error_set(err, CR_EAUTH,
                        "the partner's certificate does not hold an Ed25519 key "
                        "(needed to verify its signed receipt)");
  }
  t->done = 1;
  return 1;
}

int cr_tls_read(cr_tls *t, cr_buf *out, size_t max, cr_error *err) {
  size_t got = 0;
  if (!t->done)
    return cr_error_set(err, CR_ETLS, "TLS: read before the handshake completed");
  while (got < max) {
    size_t chunk = max - got < 16384 ? max - got : 16384;
    if (cr_buf_reserve(out, chunk) != 0)
      return cr_error_set(err, CR_ENOMEM, "out of memory");
    ERR_clear_error();
    int r = SSL_read(t->ssl, out->data + out->len, (int)chunk);
    if (r > 0) {
      out->len += (size_t)r;
      got += (size_t)r;
      continue;
    }
    int e = SSL_get_error(t->ssl, r);
    if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE)
      return 0;
    if (e == SSL_ERROR_ZERO_RETURN) {
      ERR_clear_error();
      return 1;
    }
    return tls_failure(t, e, "connection", err);
  }
  return 0;
}

int cr_tls_write(cr_tls *t, const uint8_t *data, size_t len, cr_error *err) {
  if (!t->done || t->shut)
    return cr_error_set(err, CR_ETLS, "TLS: the connection is not open for writing");
  while (len > 0) {
    int n = len > (1u << 30) ? (1 << 30) : (int)len;
    ERR_clear_error();
    int w = SSL_write(t->ssl, data, n);
    if (w <= 0)
      return tls_failure(t, SSL_get_error(t->ssl, w), "write", err);
    data += w;
    len -= (size_t)w;
  }
  return 0;
}

void cr_tls_shutdown(cr_tls *t) {
  if (t->shut)
    return;
  t->shut = 1;
  if (!t->done)
    return;
  ERR_clear_error();
  (void)SSL_shutdown(t->ssl);
  ERR_clear_error();
}

size_t cr_tls_pending(const cr_tls *t) { return BIO_ctrl_pending(t->wbio); }

size_t cr_tls_take(cr_tls *t, uint8_t *out, size_t cap) {
  size_t got = 0;
  while (got < cap) {
    size_t want = cap - got;
    int n = BIO_read(t->wbio, out + got, want > INT_MAX ? INT_MAX : (int)want);
    if (n <= 0)
      break;
    got += (size_t)n;
  }
  ERR_clear_error();
  return got;
}

int cr_tls_peer(const cr_tls *t, uint8_t fp[CR_SHA256_BYTES], uint8_t pk[CR_SIGN_PK_BYTES]) {
  if (!t->seen || (pk != NULL && !t->done))
    return CR_EINVAL;
  if (fp != NULL)
    memcpy(fp, t->seen_fp, CR_SHA256_BYTES);
  if (pk != NULL)
    memcpy(pk, t->peer_pk, CR_SIGN_PK_BYTES);
  return 0;
}
