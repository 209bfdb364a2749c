/*
 * cleanroom — node identity and the network node (design §2).
 *
 * Owns: the node's Ed25519 identity (key + self-signed certificate), TLS 1.3
 * with mutual authentication pinned to the template's fingerprints, the libuv
 * event loop, TCP, framing of bytes to and from a cr_session, timeouts.
 * Never: looks inside frames (the session does), blocks the loop on crypto
 * (session calls run on the libuv thread pool), prints a key.
 */
#ifndef CLEANROOM_NET_H
#define CLEANROOM_NET_H

#include <stddef.h>
#include <stdint.h>

#include "cleanroom/dataset.h"
#include "cleanroom/common.h"
#include "cleanroom/protocol.h"
#include "cleanroom/template.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- Identity ----------------------------------------------------------- */

#define CR_IDENTITY_KEY_FILE "identity.key"
#define CR_IDENTITY_CRT_FILE "identity.crt"

typedef struct cr_identity cr_identity;

/* Creates dir if needed, writes identity.key (0600, PKCS#8 PEM) and
 * identity.crt (self-signed X.509, Ed25519, CN = common_name). Refuses to
 * overwrite an existing key (CR_ECONFIG). fp = SHA-256 of the cert's DER. */
CR_NODISCARD int cr_identity_generate(const char *dir, const char *common_name,
                                      uint8_t fp[CR_SHA256_BYTES], cr_error *err);
CR_NODISCARD int cr_identity_load(cr_identity **out, const char *dir, cr_error *err);
void cr_identity_free(cr_identity *id);
const uint8_t *cr_identity_fingerprint(const cr_identity *id);
/* cr_sign_fn for cr_session_config.sign; ctx is the cr_identity. */
int cr_identity_sign(void *ctx, const uint8_t *msg, size_t len, uint8_t sig[CR_SIGNATURE_BYTES]);
/* The raw Ed25519 public key of a PEM certificate file. */
CR_NODISCARD int cr_cert_file_public_key(const char *path, uint8_t pk[CR_SIGN_PK_BYTES],
                                         cr_error *err);
/* SHA-256 of the DER of a PEM certificate file. */
CR_NODISCARD int cr_cert_fingerprint_file(const char *path, uint8_t fp[CR_SHA256_BYTES],
                                          cr_error *err);

/* The identity's certificate (DER) and raw Ed25519 public key, which is the
 * key a partner verifies cr_identity_sign signatures (receipts, audit
 * checkpoints) with. */
const uint8_t *cr_identity_cert_der(const cr_identity *id, size_t *len);
void cr_identity_public_key(const cr_identity *id, uint8_t pk[CR_SIGN_PK_BYTES]);
/* Raw Ed25519 public key of a DER certificate (CR_EAUTH if it is not Ed25519,
 * CR_EINVAL if the DER does not parse). */
CR_NODISCARD int cr_cert_ed25519_public_key(const uint8_t *der, size_t der_len,
                                            uint8_t pk[CR_SIGN_PK_BYTES]);
/* 0 when sig is a valid Ed25519 signature of msg by pk, else CR_EAUTH. */
CR_NODISCARD int cr_sign_verify(const uint8_t pk[CR_SIGN_PK_BYTES], const uint8_t *msg, size_t len,
                                const uint8_t sig[CR_SIGNATURE_BYTES]);

/* Module-internal (src/net only, not a stable API): the OpenSSL objects
 * behind an identity, for the TLS context. Owned by the identity. */
struct evp_pkey_st;
struct x509_st;
struct evp_pkey_st *cr__identity_pkey(const cr_identity *id);
struct x509_st *cr__identity_x509(const cr_identity *id);
/* For tests: how many node event loops still held a handle when their call
 * returned (each is then force-closed). 0 in a correct build. */
int cr__node_unclean_loops(void);

/* ---- TLS, sans I/O ------------------------------------------------------ */
/*
 * TLS 1.3 with mutual authentication over memory buffers: ciphertext in
 * (cr_tls_feed), ciphertext out (cr_tls_pending / cr_tls_take), plaintext in
 * and out. The node drives it from libuv; tests drive two ends back to back.
 * A peer is accepted only when the SHA-256 of its certificate's DER equals
 * the pin; chain and validity errors are ignored because the pin, not a CA,
 * is the trust anchor. Not thread-safe: one thread per cr_tls at a time.
 */
typedef struct cr_tls_ctx cr_tls_ctx;
typedef struct cr_tls cr_tls;

CR_NODISCARD int cr_tls_ctx_new(cr_tls_ctx **out, const cr_identity *id, int is_server,
                                cr_error *err);
void cr_tls_ctx_free(cr_tls_ctx *ctx);

/* pin: the fingerprint the peer must present; peer_role names the peer in
 * messages ("provider"). ctx must outlive the connection. */
CR_NODISCARD int cr_tls_new(cr_tls **out, cr_tls_ctx *ctx, const uint8_t pin[CR_SHA256_BYTES],
                            const char *peer_role, cr_error *err);
void cr_tls_free(cr_tls *t);

/* Ciphertext received from the peer. */
CR_NODISCARD int cr_tls_feed(cr_tls *t, const uint8_t *data, size_t len, cr_error *err);
/*
 * Advances the handshake: 1 when it has completed (the peer's certificate
 * matched the pin), 0 when more input is needed, or CR_EAUTH when
 * authentication failed (the peer presented another certificate: the message
 * names the expected and the presented fingerprints; or the peer rejected
 * ours: the message names ours) or CR_ETLS (anything else: not TLS 1.3,
 * garbage, no certificate). Output to send (including alerts) is pending
 * either way. In TLS 1.3 the client finishes first, so a server's rejection
 * of the client's certificate reaches the client from cr_tls_read.
 */
int cr_tls_handshake(cr_tls *t, cr_error *err);
/* Appends decrypted plaintext to out, at most max bytes. 0, 1 when the peer
 * has sent close_notify, CR_EAUTH when the peer rejected our certificate, or
 * CR_ETLS. */
int cr_tls_read(cr_tls *t, cr_buf *out, size_t max, cr_error *err);
/* Encrypts all of data (after the handshake). 0 or CR_ETLS. */
CR_NODISCARD int cr_tls_write(cr_tls *t, const uint8_t *data, size_t len, cr_error *err);
/* Queues close_notify. */
void cr_tls_shutdown(cr_tls *t);
/* Ciphertext waiting to be sent, and taking it (returns bytes copied). */
size_t cr_tls_pending(const cr_tls *t);
size_t cr_tls_take(cr_tls *t, uint8_t *out, size_t cap);
/* After a completed handshake: fingerprint and Ed25519 key of the peer's
 * certificate. While or after a failed handshake, the fingerprint the peer
 * presented, if any (returns CR_EINVAL when none was seen). pk may be NULL. */
int cr_tls_peer(const cr_tls *t, uint8_t fp[CR_SHA256_BYTES], uint8_t pk[CR_SIGN_PK_BYTES]);

/* ---- Node --------------------------------------------------------------- */

typedef struct cr_node_config {
  const cr_template *tmpl;
  const cr_identity *id;
  const cr_dataset *data;
  cr_role role;                  /* own role (from the identity's fingerprint) */
  const char *address;           /* serve: listen HOST:PORT; run: peer HOST:PORT */
  const char *query;             /* run only */
  int once;                      /* serve: exit after one session */
  unsigned handshake_timeout_ms; /* 0: 10000 */
  unsigned idle_timeout_ms;      /* 0: 30000; only whole frames from the peer
                                    (or our answers) restart it */
  size_t max_frame;              /* 0: CR_DEFAULT_MAX_FRAME */
  unsigned max_sessions;         /* serve: concurrent sessions (and TLS
                                    handshakes); 0: 16 */
  const char *software;

  /* Called on the loop thread for every connection that ends: a completed
   * session (res->status == DONE), a failed one, or a refused connection
   * (res->status == FAILED, res->have_session_id == 0). peer_addr is
   * "ip:port", peer_fp the peer's certificate fingerprint or NULL when the
   * handshake did not get that far. Serve mode: runs for every connection. */
  void (*on_session)(void *ctx, const cr_session_result *res, const char *peer_addr,
                     const uint8_t *peer_fp);
  /* Called on the loop thread when a peer has passed the TLS handshake
   * with the pinned certificate (before any frame). Optional. */
  void (*on_connected)(void *ctx, const char *peer_addr, const uint8_t *peer_fp);
  /* Optional: called on the loop thread after each step of a session's
   * work, with where it is (for progress reports). */
  void (*on_progress)(void *ctx, const cr_session_progress *p);
  /* Called once listening, with the bound address (serve only). */
  void (*on_listening)(void *ctx, const char *addr);
  /* Optional: passed to every session as cr_session_config.admit (with
   * ctx). It runs on a worker thread, possibly for several sessions at
   * once, so it must lock what it shares. */
  int (*admit)(void *ctx, const cr_session_result *res, char *msg, size_t cap);
  /* Serve, optional: load the own set per query (cr_session_config.load);
   * when set, `data` is used only for the checks made before listening. */
  int (*load)(void *ctx, const cr_query *q, const cr_session_result *res, const cr_dataset **out,
              char *msg, size_t cap);
  void (*unload)(void *ctx, const cr_dataset *d);
  /* Run: a ping instead of a query (cr_session_config.ping); data may be
   * NULL. */
  int ping;
  /* Worker threads for every session's blinding loops (NULL: none). */
  cr_pool *pool;
  /* Run: the query's parameters, sent in Hello. */
  const char *const *param_names;
  const char *const *param_values;
  size_t nparams;
  void *ctx;

  /* Serve only, optional: firing it (from any thread) stops the node as
   * SIGINT/SIGTERM do. */
  struct cr_node_stopper *stopper;
} cr_node_config;

/*
 * Connects to cfg->address, completes TLS (refusing a peer whose certificate
 * is not the one pinned for the other role), runs cfg->query, fills *res.
 * The result's heap outputs (cells, matched, labels, params) then belong to
 * the caller: free them with cr_session_result_free_outputs().
 * Returns 0 when the session completed, else the CR_E* of the failure
 * (CR_ENET, CR_ETLS, CR_EAUTH, CR_ETIMEDOUT, CR_EPEER, CR_EPROTO, ...), with
 * err explaining it.
 *
 * Before any byte goes out (both run and serve): the session's own-side
 * checks (cr_session_check_local: query, role, set size, expiry; CR_EREFUSED)
 * and that this node's certificate is the one the template pins for
 * cfg->role (CR_ECONFIG). Those return without calling on_session.
 */
CR_NODISCARD int cr_node_run(const cr_node_config *cfg, cr_session_result *res, cr_error *err);

/*
 * Listens on cfg->address and serves sessions until SIGINT/SIGTERM (or, with
 * once, until the first connection that passes TLS has ended). A failed
 * session never stops the node. Returns 0, or a setup error (bind failure);
 * with once, the failed session's code.
 *
 * "Passes TLS", for once: the connection got as far as certificate
 * authentication, whether it passed (a session ran) or failed it (a partner
 * with the wrong pin or certificate: CR_EAUTH). Connections that never speak
 * TLS 1.3 (port scanners, garbage, handshake timeouts) do not count, so they
 * cannot end a node waiting for its partner; nor does a busy refusal.
 *
 * max_sessions: a partner that completes TLS while max_sessions sessions
 * are in progress gets an Error frame CR_WIRE_BUSY ("busy, retry later: N
 * session(s) in progress") and the connection closes (reported with
 * CR_EREFUSED and wire_error BUSY; its `run` exits 4). Connections still in
 * the TLS handshake are capped at max_sessions too: past that, a new one is
 * accepted and closed at once (CR_EREFUSED), before any TLS.
 * SIGPIPE is set to ignored if it had the default action.
 */
CR_NODISCARD int cr_node_serve(const cr_node_config *cfg, cr_error *err);

/*
 * A thread-safe way to stop cr_node_serve without a signal (tests, embedders).
 * Firing before the node runs makes it stop as soon as it is listening. One
 * stopper serves one cr_node_serve call at a time; free it after that call
 * has returned.
 */
typedef struct cr_node_stopper cr_node_stopper;
CR_NODISCARD int cr_node_stopper_new(cr_node_stopper **out);
void cr_node_stopper_fire(cr_node_stopper *st);
void cr_node_stopper_free(cr_node_stopper *st);

#ifdef __cplusplus
}
#endif
#endif
