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
#include "cleanroom/error.h"
#include "cleanroom/session.h"
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
int cr_identity_sign(void *ctx, const uint8_t *msg, size_t len,
                     uint8_t sig[CR_SIGNATURE_BYTES]);
/* SHA-256 of the DER of a PEM certificate file. */
CR_NODISCARD int cr_cert_fingerprint_file(const char *path, uint8_t fp[CR_SHA256_BYTES],
                                          cr_error *err);

/* ---- Node --------------------------------------------------------------- */

typedef struct cr_node_config {
  const cr_template *tmpl;
  const cr_identity *id;
  const cr_dataset *data;
  cr_role role;               /* own role (from the identity's fingerprint) */
  const char *address;        /* serve: listen HOST:PORT; run: peer HOST:PORT */
  const char *query;          /* run only */
  int once;                   /* serve: exit after one session */
  unsigned handshake_timeout_ms; /* 0: 10000 */
  unsigned idle_timeout_ms;      /* 0: 30000 */
  size_t max_frame;              /* 0: CR_DEFAULT_MAX_FRAME */
  unsigned max_sessions;         /* serve: concurrent sessions; 0: 16 */
  const char *software;

  /* Called on the loop thread for every connection that ends: a completed
   * session (res->status == DONE), a failed one, or a refused connection
   * (res->status == FAILED, res->have_session_id == 0). peer_addr is
   * "ip:port", peer_fp the peer's certificate fingerprint or NULL when the
   * handshake did not get that far. Serve mode: runs for every connection. */
  void (*on_session)(void *ctx, const cr_session_result *res, const char *peer_addr,
                     const uint8_t *peer_fp);
  /* Called once listening, with the bound address (serve only). */
  void (*on_listening)(void *ctx, const char *addr);
  void *ctx;
} cr_node_config;

/*
 * Connects to cfg->address, completes TLS (refusing a peer whose certificate
 * is not the one pinned for the other role), runs cfg->query, fills *res.
 * Returns 0 when the session completed, else the CR_E* of the failure
 * (CR_ENET, CR_ETLS, CR_EAUTH, CR_ETIMEDOUT, CR_EPEER, CR_EPROTO, ...), with
 * err explaining it.
 */
CR_NODISCARD int cr_node_run(const cr_node_config *cfg, cr_session_result *res,
                             cr_error *err);

/*
 * Listens on cfg->address and serves sessions until SIGINT/SIGTERM (or, with
 * once, until the first connection that passes TLS has ended). A failed
 * session never stops the node. Returns 0, or a setup error (bind failure);
 * with once, the failed session's code.
 */
CR_NODISCARD int cr_node_serve(const cr_node_config *cfg, cr_error *err);

#ifdef __cplusplus
}
#endif
#endif
