/*
 * cleanroom — node identity and the network node (design §2).
 *
 * Owns: the node's Ed25519 identity (key + self-signed certificate), TLS 1.3
 * with mutual authentication pinned to the template's fingerprints, TCP on
 * the caller's libuv loop, framing of bytes to and from a cr_session,
 * timeouts.
 * Never: looks inside frames (the session does), blocks the loop on crypto
 * (session calls run on the libuv thread pool), prints a key, creates a
 * loop, installs a signal handler or changes process-wide state.
 */
#ifndef CLEANROOM_NET_H
#define CLEANROOM_NET_H

#include <stddef.h>
#include <stdint.h>

#include "cleanroom/dataset.h"
#include "cleanroom/common.h"
#include "cleanroom/protocol.h"
#include "cleanroom/template.h"

#include <uv.h>

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
/*
 * A certificate fingerprint as people paste it: 64 hex digits in either
 * case, with or without colons between pairs (openssl's "A3:09:..."), with
 * or without openssl's "SHA256 Fingerprint=" in front. Returns 0 with fp
 * set; CR_EINVAL when the text is hex digits and colons but not 64 digits
 * (err: "expected 64 hex digits (a SHA-256 fingerprint), got 63", and for
 * 40 that it looks like SHA-1); 1 when the text is not a fingerprint at all
 * (a file name, say), err untouched.
 */
int cr_fingerprint_parse(const char *s, uint8_t fp[CR_SHA256_BYTES], cr_error *err);
/* A fingerprint given as text (cr_fingerprint_parse) or as a certificate
 * file, as the command line takes it: an existing file is read as a
 * certificate; text shaped like a fingerprint but wrong says what is
 * wrong with it instead of "cannot open the certificate". */
CR_NODISCARD int cr_fingerprint_arg(const char *arg, uint8_t fp[CR_SHA256_BYTES], cr_error *err);

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
/* Several pins (a node serving several collaborations): the peer is
 * accepted when accept(accept_ctx, fp) returns 1 for the SHA-256 of its
 * certificate's DER. Called from cr_tls_handshake, on its thread. */
typedef int (*cr_tls_pin_fn)(void *ctx, const uint8_t fp[CR_SHA256_BYTES]);
CR_NODISCARD int cr_tls_new_pinset(cr_tls **out, cr_tls_ctx *ctx, cr_tls_pin_fn accept,
                                   void *accept_ctx, const char *peer_role, cr_error *err);
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
/*
 * The node runs on the caller's libuv loop: it creates no loop, installs no
 * signal handler and changes no process-wide state. Every callback runs on
 * the loop thread; the session's computation runs on the loop's thread pool.
 *
 * SIGPIPE: libuv writes to sockets with write(2), and Linux has no
 * per-socket way to turn a write to a closed connection into EPIPE instead
 * of SIGPIPE. A program embedding the node must therefore ignore SIGPIPE
 * itself (signal(SIGPIPE, SIG_IGN) in main), or a partner that vanishes
 * mid-write kills it. Stopping on SIGINT/SIGTERM is the program's choice
 * too: a uv_signal_t on the same loop that calls cr_node_stop. From another
 * thread, use a uv_async_t whose callback calls cr_node_stop.
 */
typedef struct cr_node cr_node;

/*
 * Serve, several collaborations on one listener: what the node asks the
 * router (cr_node_config.route) for each connection, once the partner has
 * passed TLS and its first frame has arrived.
 */
typedef struct cr_node_route {
  /* In. */
  const uint8_t *peer_fp; /* the partner's certificate (pinned() accepted it) */
  /* The template the first frame names when it is a Hello (a run or a
   * ping; cr_session_hello_template), NULL otherwise. */
  const uint8_t *template_sha256;
  const char *peer_addr; /* "ip:port" */
  /* Out, when route returns 0: the session's configuration, as
   * cr_node_config.session (tmpl, role, data or load, admit, ...; the node
   * sets is_runner, sign, peer_sign_pk and now_unix as for any
   * connection); the router's handle for this connection, given back to
   * on_routed_session; the idle timeout for it (0: the node's). */
  cr_session_config session;
  void *conn;
  unsigned idle_timeout_ms;
  /* Out, when route refuses (returns non-zero): the Error frame's code
   * (CR_WIRE_BUSY, CR_WIRE_TEMPLATE_MISMATCH, ...; sent with the code's
   * fixed text only) and why, for this node (the result's error_msg). */
  int wire_error;
  char msg[400];
} cr_node_route;

typedef struct cr_node_config {
  /*
   * The session configuration, embedded (tmpl, data, role, query, software,
   * max_frame, batch_size, digest_bytes, admit/admit_ctx, load/unload/
   * load_ctx, ping, pool, param_names/param_values/nparams). The node fills
   * in, per connection: is_runner, sign/sign_ctx (cr_identity_sign with id,
   * when sign is NULL), peer_sign_pk (from the peer's certificate) and
   * now_unix. Serve ignores query, ping and the parameters (the runner names
   * them); with load set, serve uses data only for the checks made before
   * listening and loads the set per session. software NULL: "cleanroom".
   */
  cr_session_config session;
  const cr_identity *id;
  const char *address;           /* serve: listen HOST:PORT; run: peer HOST:PORT */
  int once;                      /* serve: stop after the first connection past TLS */
  unsigned handshake_timeout_ms; /* 0: 10000; also bounds DNS and TCP connect */
  unsigned idle_timeout_ms;      /* 0: 30000; only whole frames from the peer
                                    (or our answers) restart it */
  unsigned max_sessions;         /* serve: concurrent sessions; 0: 16 */
  /* Serve, before authentication (see "Connections before authentication"
   * below). accept_timeout_ms: the time an accepted connection has to
   * complete the TLS handshake; 0: the smaller of handshake_timeout_ms and
   * 5000. max_pending: connections not yet authenticated at once; 0: the
   * larger of 64 and 4 * max_sessions. max_pending_per_ip: of those, from
   * one source address; 0: the larger of max_pending / 4 and max_sessions
   * (a partner may start max_sessions runs at once). */
  unsigned accept_timeout_ms;
  unsigned max_pending;
  unsigned max_pending_per_ip;

  /*
   * Serve, several collaborations (optional; all three or none). With
   * route set, session.tmpl may be NULL and the node does not check the
   * identity against it: the router does, per collaboration.
   *   pinned: the TLS handshake accepts a partner's certificate when this
   *     returns 1 (any collaboration pins it), instead of the pin
   *     session.tmpl has for the other role;
   *   route: once the partner's first frame has arrived, chooses the
   *     session for the connection (see cr_node_route) or refuses it
   *     (the partner gets an Error frame with r->wire_error, the
   *     connection closes and on_session reports it, as a BUSY refusal);
   *   on_routed_session: instead of on_session for a connection route()
   *     accepted, exactly once, after the session has been freed (its
   *     unload hook has run), with the result (valid during the call) and
   *     route's r->conn.
   * All on the loop thread. max_sessions still caps the sessions of the
   * whole node (BUSY before routing); a router may refuse BUSY on its own
   * (per collaboration) too.
   */
  int (*pinned)(void *ctx, const uint8_t fp[CR_SHA256_BYTES]);
  int (*route)(void *ctx, cr_node_route *r);
  void (*on_routed_session)(void *ctx, void *conn, const cr_session_result *res,
                            const char *peer_addr, const uint8_t *peer_fp);

  /* Callbacks, all on the loop thread, with ctx. All optional. */

  /* Every connection that ends: a completed session (res->status == DONE),
   * a failed one, or a refused connection (res->status == FAILED,
   * res->have_session_id == 0). peer_addr is "ip:port" (run: the address
   * as given until TCP connects), peer_fp the peer's certificate
   * fingerprint or NULL when the handshake did not get that far. res and
   * its outputs are only valid during the call. */
  void (*on_session)(void *ctx, const cr_session_result *res, const char *peer_addr,
                     const uint8_t *peer_fp);
  /* A peer has passed the TLS handshake with the pinned certificate
   * (before any frame). */
  void (*on_connected)(void *ctx, const char *peer_addr, const uint8_t *peer_fp);
  /* Run, optional: TCP connected to peer_addr ("ip:port"), before TLS (a
   * ping tells "the host answered" from "nothing answered" with it). */
  void (*on_tcp_connected)(void *ctx, const char *peer_addr);
  /* After each step of a session's work, where it is (progress reports). */
  void (*on_progress)(void *ctx, const cr_session_progress *p);
  /* Serve: listening, with the bound address (port 0 resolved). Fires from
   * the loop, never from inside cr_node_serve_start; not at all when the
   * node is stopped before the loop first runs. */
  void (*on_listening)(void *ctx, const char *addr);
  /*
   * Fires exactly once, when the node has closed all of its handles (serve:
   * after cr_node_stop or `once`; run: after the session's connection
   * closed, on_session having been called before). rc: 0, or the CR_E* of
   * the failure (run: the session's; serve with once: the first session's;
   * serve otherwise 0); err explains it (NULL when rc is 0). res: run only,
   * the result, whose heap outputs now belong to the callee (free them with
   * cr_session_result_free_outputs; without on_closed the node frees them),
   * NULL for serve. cr_node_free may be called from it.
   */
  void (*on_closed)(void *ctx, int rc, const cr_error *err, cr_session_result *res);
  void *ctx;
} cr_node_config;

/*
 * Start on the caller's loop and return at once: 0 with *out set, or a
 * setup error with nothing left open and no callback fired.
 *
 * Setup errors (both): CR_EUSAGE (an address that is not HOST:PORT; run:
 * no host, or no query for a run that is not a ping), CR_EINVAL (no
 * template, identity or data set, invalid role), CR_ECONFIG (this node's
 * certificate is not the one the template pins for session.role: the
 * partner would refuse it), CR_EREFUSED (cr_session_check_local: query,
 * role, set size, expiry), CR_ENOMEM, CR_ETLS (TLS context). Serve also:
 * CR_EDNS (the listen host does not resolve), CR_ENET (bind or listen
 * failed: "cannot listen on ADDR: address already in use").
 *
 * Failures after the start arrive through on_session and on_closed:
 * CR_EDNS (the peer's host name not found), CR_ECONNREFUSED (nothing
 * listens there), CR_ETIMEDOUT (DNS, connect, TLS handshake or idle
 * timeout), CR_ECONNRESET (the connection was reset, or the peer closed it
 * before the session completed), CR_ENET (other network errors: unreachable
 * host or network), CR_ETLS (the peer does not speak TLS 1.3 with us),
 * CR_EAUTH (the peer's certificate is not the pinned one, or the peer
 * rejected ours), CR_EPEER / CR_EREFUSED / CR_EPROTO (the session: see
 * res->wire_error and res->error_from_peer).
 *
 * Serve: listens on cfg->address and serves sessions until cr_node_stop
 * (or, with once, until the first connection that passes TLS has ended). A
 * failed session never stops the node. "Passes TLS", for once: the
 * connection got as far as certificate authentication, whether it passed (a
 * session ran) or failed it (CR_EAUTH). Connections that never speak TLS 1.3
 * (port scanners, garbage, handshake timeouts), busy refusals and pings do
 * not count, so they cannot end a node waiting for its partner.
 *
 * max_sessions: a partner that completes TLS while max_sessions sessions are
 * in progress gets an Error frame CR_WIRE_BUSY ("busy, retry later: N
 * session(s) in progress") and the connection closes (reported with
 * CR_EREFUSED and wire_error BUSY).
 *
 * Connections before authentication (serve). Anyone can open a TCP
 * connection, and anyone can complete a TLS handshake from the client's
 * side with a certificate of their own; neither may keep the pinned
 * partner out. The policy:
 *   - a new connection is always accepted, and it is never the one closed
 *     to make room: when max_pending_per_ip connections from its source
 *     address (or max_pending in all) have not authenticated yet, one of
 *     them is closed at once (reported with CR_EREFUSED, "closed to make
 *     room for a newer connection"): one already refused (only its alert
 *     left to deliver) first, then one that has sent nothing, then one
 *     whose handshake is under way; the OLDEST of that kind. A partner
 *     that connects therefore gets its handshake (milliseconds) unless
 *     that many newer connections that also start a handshake arrive from
 *     its address (or from anywhere) meanwhile; `run` does not retry, so
 *     in that case it fails with CR_ETLS or CR_ECONNRESET and may simply
 *     be run again;
 *   - an accepted connection has accept_timeout_ms (default 5 s, separate
 *     from the session's idle timeout) to complete TLS;
 *   - a peer whose certificate is not the pinned one is refused as soon as
 *     its certificate arrives (CR_EAUTH): the alert is sent, and the socket
 *     is closed once the peer closes or after 1 s at most, whether or not
 *     the peer keeps its end open;
 *   - TCP keepalive (60 s) on every connection;
 *   - a hard cap on open connections: max_pending + 2 * max_sessions
 *     (sessions in progress, as many finishing their graceful close, and
 *     the pending ones), lowered to RLIMIT_NOFILE - 64 when the fd limit is
 *     smaller. At the cap, the oldest connection that is not a session in
 *     progress is closed to make room. The node's descriptors are thus at
 *     most that cap plus a handful (listener, loop, audit log), and its
 *     memory per connection is bounded (about 70 KB of buffers plus the
 *     TLS state before authentication).
 *   - out of descriptors all the same (EMFILE or ENFILE, the limit being
 *     shared with the rest of the process): libuv accepts and drops what
 *     is waiting using a descriptor it keeps in reserve, so the listener
 *     never spins; the node then closes its oldest connection that is not
 *     a session in progress, so that the next one can be accepted (a
 *     partner retrying gets in).
 *
 * Run: connects to cfg->address (every address it resolves to, in turn),
 * completes TLS (refusing a peer whose certificate is not the one pinned for
 * the other role), runs session.query (or a ping), and ends.
 *
 * cfg (and what it points to) must outlive the node.
 */
CR_NODISCARD int cr_node_serve_start(cr_node **out, uv_loop_t *loop, const cr_node_config *cfg,
                                     cr_error *err);
/*
 * The two halves of cr_node_serve_start, for a front end that must know
 * the port is its own before it does anything slow (loading the data):
 * cr_node_listen resolves HOST:PORT and binds and listens (CR_EUSAGE for a
 * malformed address, CR_EDNS, CR_ENET for a port in use), handing back the
 * socket; cr_node_serve_start_fd serves on it and owns it from then on,
 * failure included. A socket never started is closed with close(2).
 */
CR_NODISCARD int cr_node_listen(uv_loop_t *loop, const char *address, int *fd, cr_error *err);
CR_NODISCARD int cr_node_serve_start_fd(cr_node **out, uv_loop_t *loop, const cr_node_config *cfg,
                                        int fd, cr_error *err);
/* HOST:PORT as the node reads it (CR_EUSAGE naming what is wrong), without
 * resolving it: for checking a flag before anything else. */
CR_NODISCARD int cr_node_check_address(const char *address, cr_error *err);
CR_NODISCARD int cr_node_run_start(cr_node **out, uv_loop_t *loop, const cr_node_config *cfg,
                                   cr_error *err);

/* Loop thread only. Stops listening, aborts the sessions in progress (the
 * partner is sent an Error frame ABORTED; the session ends with
 * CR_EREFUSED), closes every handle; on_closed follows from the loop.
 * Idempotent, and a no-op once on_closed has fired. */
void cr_node_stop(cr_node *n);

/*
 * How long a stopping node (cr_node_stop) waits at most, after its last
 * frame, for the partner to close (default 5000 ms, as for any session's
 * end): waiting lets the partner read our Error frame before our close
 * could reset the connection. A process that is killed soon after it is
 * told to stop sets it shorter, so that the session reaches the audit log
 * first: cleanroom-mpi sets 300 ms (mpirun sends SIGKILL 1 s after
 * SIGTERM). Process-wide; set it before starting nodes.
 */
void cr_node_set_stop_linger(unsigned ms);

/* After on_closed (or inside it). NULL is a no-op. */
void cr_node_free(cr_node *n);

#ifdef __cplusplus
}
#endif
#endif
