#ifndef CLEANROOM_PROTOCOL_H
#define CLEANROOM_PROTOCOL_H

#include <stddef.h>
#include <stdint.h>

#include "cleanroom/common.h"
#include "cleanroom/engine.h" /* the engine's cells; crypto.h sizes; dataset.h, template.h */
#include "cleanroom/template.h"

#ifdef __cplusplus
extern "C" {
#endif

/*
 * cleanroom — one protocol session, sans I/O (design §3–5).
 *
 * Owns: the frame sequence Hello / Batch / EndOfSet / Digests / EndOfDigests
 * / NoiseSeed / Released / Finish / Error, every check on what the peer
 * sends, blinding of the own set and re-blinding of the peer's, digest
 * return and matching, the noise of a noisy query (a seed both sides
 * commit to before and open after the sets, docs/protocol.md "Noise
 * seed"), the threshold, and the signed receipt.
 * Never: touches a socket, a file or the clock; logs anything; releases a
 * result before the session has completed (both Finish frames exchanged and
 * the peer's receipt verified).
 *
 * Bytes in (cr_session_recv), bytes out (cr_session_send / cr_session_sent).
 * The stream is a sequence of frames, each `u32 big-endian length` then that
 * many bytes of a protobuf cleanroom.v1.Frame. Calls on one session must not
 * overlap, but may come from any thread: the node runs them on worker
 * threads because recv and send do the blinding work.
 */

/* 2: Error frames carry the sender's template_sha256 and protocol_version.
 * 3: admission before data; set sizes as buckets (padded sets); fixed
 *    wording on the wire; the Released frame; receipts cover roles,
 *    certificates, template and both releases (docs/protocol.md).
 * 4: differential privacy (issue 18): Hello.noise_commitment and the
 *    NoiseSeed frame for queries with noise; when both sides receive a
 *    result, each checks the partner committed to the same release.
 *    Several match keys (issue 19): the counted side sends records (Hello
 *    record_keys), digests go back grouped per record, the release covers
 *    the per-key breakdown.
 * 5: the same frames; what a phone key means changed (a North American
 *    number written with its trunk '1' and no '+', "12065550100" under
 *    default_country_code 1, is +12065550100, no longer +112065550100), so
 *    a version 4 node, whose points for such phones differ, is refused
 *    rather than silently matching fewer people. */
#define CR_PROTOCOL_VERSION 5
#define CR_DEFAULT_MAX_FRAME (16u << 20)
#define CR_DEFAULT_BATCH 4096
#define CR_SIGN_PK_BYTES 32

/* Error codes carried in Error frames (stable wire values). The text is the
 * whole message a session sends with the code (plus, for PROTOCOL, the
 * fixed name of the rule the peer broke): never a path, a size, a row
 * count, a parameter value or anything else of ours. */
#define CR_WIRE_ERROR_MAP(XX)                                                                      \
  XX(1, VERSION, "protocol versions differ")                                                       \
  XX(2, ROLE, "both nodes claim the same role")                                                    \
  XX(3, TEMPLATE_MISMATCH, "the templates differ")                                                 \
  XX(4, UNKNOWN_QUERY, "the query is not in the template")                                         \
  XX(5, NOT_ALLOWED, "the template does not allow this run")                                       \
  XX(6, SUITE, "the crypto suites differ")                                                         \
  XX(7, SIZE, "a set size is outside the template's limits")                                       \
  XX(8, PROTOCOL, "protocol violation")                                                            \
  XX(9, INTERNAL, "internal error")                                                                \
  XX(10, TIMEOUT, "timed out")                                                                     \
  XX(11, BUSY, "busy, retry later")                                                                \
  XX(12, PARAMS, "query parameters do not match the template")                                     \
  XX(13, ABORTED, "aborted by the operator")

typedef enum cr_wire_error {
#define CR__WIRE_ENUM(num, name, text) CR_WIRE_##name = (num),
  CR_WIRE_ERROR_MAP(CR__WIRE_ENUM)
#undef CR__WIRE_ENUM
} cr_wire_error;
const char *cr_wire_error_name(int code); /* "TEMPLATE_MISMATCH" */
const char *cr_wire_error_text(int code); /* "the templates differ" */

typedef struct cr_session_result cr_session_result;
/* One cell of a grouped count: the engine's (label per role, count, 0 when
 * suppressed). */
typedef cr_engine_cell cr_session_cell;

typedef struct cr_session_config {
  const cr_template *tmpl;
  const cr_dataset *data; /* own set; must outlive the session */
  cr_spill *spill;        /* the engine's tables beyond the memory budget; NULL: memory only */
  int release_data;       /* 1: `data` (or what load gives) serves this session alone:
                             cr_engine_config.release_data */
  cr_role role;           /* own role */
  int is_runner;          /* 1: sends Hello first and names the query */
  const char *query;      /* runner: the query to run; responder: NULL */
  const char *software;   /* e.g. "cleanroom/0.1.0" */
  size_t max_frame;       /* 0: CR_DEFAULT_MAX_FRAME */
  size_t batch_size;      /* points per Batch; 0: CR_DEFAULT_BATCH */
  uint32_t digest_bytes;  /* proposal; 0: the minimum the sizes need */
  cr_sign_fn sign;        /* signs the receipt with the node's identity */
  void *sign_ctx;
  uint8_t peer_sign_pk[CR_SIGN_PK_BYTES]; /* peer's Ed25519 key, from its cert */
  int64_t now_unix;                       /* current time for limits.not_after; 0: not checked */
  /* SHA-256 of the own and the peer's certificate (DER), signed into the
   * receipt. All zero: the template's pins for the two roles (equal to the
   * certificates once the transport has checked the pins). */
  uint8_t own_cert_sha256[CR_SHA256_BYTES];
  uint8_t peer_cert_sha256[CR_SHA256_BYTES];
  /*
   * Admission (docs/protocol.md "Admission first"). Called once per
   * session, before anything that depends on the own data:
   * - responder: as soon as the runner's Hello has passed every check that
   *   needs no data (version, roles, template, suite, expiry, the query
   *   exists and the runner may run it, parameter names and values against
   *   their declared types, the runner's bucket), BEFORE load() and before
   *   the responder's Hello. res holds the query, the parameters and the
   *   peer's size (a bucket); own_set_size is 0 and there is no session id
   *   yet. The hook records the run (it counts whether the session later
   *   succeeds or not) and applies the run limit.
   * - runner: once the responder's Hello has passed its checks, before any
   *   point is sent; res also holds both buckets and the session id.
   * Return 0 to go on, CR_EREFUSED with a message in msg to refuse (kept
   * in res.error_msg; the peer is told NOT_ALLOWED with the fixed text
   * only), or another negative code for a local failure (the audit log
   * cannot be written: the peer is told INTERNAL, res.error keeps the
   * code).
   * NULL: admit.
   */
  int (*admit)(void *ctx, const cr_query *q, const struct cr_session_result *res, char *msg,
               size_t cap);
  void *admit_ctx;

  /* Runner: a ping. Hello only (query "", set size 0): both sides check
   * version, roles, template and suite, then the session ends DONE with
   * res.ping set; no data is loaded, blinded or revealed. */
  int ping;

  /* Worker threads for the blinding loops (NULL: this thread only). */
  cr_pool *pool;

  /* All of the session's randomness (the Hello nonce, the scalar, the
   * shuffle of the own set, the share of a noise seed) comes from here: fill buf with len uniform
   * bytes, return 0 (ngtcp2's rand callback). NULL: libsodium's
   * randombytes_buf. Tests pass a fixed stream to replay a transcript. */
  int (*rand)(void *ctx, uint8_t *buf, size_t len);
  void *rand_ctx;

  /* Runner: the run's parameters (name=value text), sent in Hello. */
  const char *const *param_names;
  const char *const *param_values;
  size_t nparams;

  /*
   * Responder, when data is NULL: loads the own set for the query the
   * runner names (its filter, its group_by column), with the run's
   * parameters in res->param_names/param_values. Called only after admit
   * has accepted the session. Return 0 with *out set, CR_EREFUSED with msg
   * for parameters that do not fit the template (the runner is told
   * PARAMS), another code for a local failure (the runner is told
   * INTERNAL). msg stays local (res.error_msg): the peer gets the fixed text
   * of the code only. The own size limits (min/max_set_size) are then
   * checked by the session on the true size. unload (if set) is called
   * with the dataset when the session is freed.
   */
  int (*load)(void *ctx, const cr_query *q, const struct cr_session_result *res,
              const cr_dataset **out, char *msg, size_t cap);
  void (*unload)(void *ctx, const cr_dataset *d);
  void *load_ctx;
} cr_session_config;

typedef enum cr_session_status {
  CR_SESSION_RUNNING = 0,
  CR_SESSION_DONE,  /* completed; result valid */
  CR_SESSION_FAILED /* aborted; nothing released */
} cr_session_status;

struct cr_session_result {
  cr_session_status status;
  char query[128];
  cr_role role;
  int is_runner;
  uint8_t session_id[CR_SESSION_ID_BYTES];
  int have_session_id;
  /* SHA-256 of the runner's Hello frame: known on both sides before
   * admission (the session id is not, on the responder), so an audit log
   * can tie a run's admission to its end. */
  uint8_t run_id[CR_SHA256_BYTES];
  int have_run_id;
  uint64_t own_set_size;   /* the true size (distinct keys); stays local */
  uint64_t own_set_bucket; /* what our Hello announced: the padded size */
  uint64_t peer_set_size;  /* what the peer's Hello announced */
  /* 1: peer_set_size (and label_sizes of the peer) are buckets of the
   * template's ladder, not the peer's exact size: front ends must say so. */
  int peer_set_size_is_bucket;
  uint32_t digest_bytes;
  char peer_software[64];
  uint64_t bytes_sent;     /* frame bytes this side produced (before TLS) */
  uint64_t bytes_received; /* frame bytes the peer sent */

  /* Valid when status == DONE. */
  int receives;   /* this side is in results_to */
  int suppressed; /* count < min_count */
  uint64_t count; /* receives && !suppressed; 0 otherwise (suppressed means absent) */
  uint64_t min_count;
  /*
   * Differential privacy (since v4): the query has noise, so count and
   * every cell are noisy: the exact value plus independent noise of
   * `noise` (the template's), then min_count applied to the noisy value.
   * Both sides of a query that releases to both hold the same noisy
   * numbers; the exact ones never leave the session. Set once the Hellos
   * are exchanged.
   */
  int noisy;
  cr_noise noise;
  uint8_t transcript_sha256[CR_SHA256_BYTES];
  uint8_t peer_signature[CR_SIGNATURE_BYTES]; /* verified receipt */
  uint8_t peer_sign_pk[CR_SIGN_PK_BYTES];     /* the key it verified with */
  /* What the receipts cover besides the above (cr_session_receipt), so an
   * audit log can check the peer's receipt again: both certificates, each
   * side's release hash (released_sha256[role]; docs/protocol.md
   * "Released"). Valid when status == DONE. */
  uint8_t own_cert_sha256[CR_SHA256_BYTES];
  uint8_t peer_cert_sha256[CR_SHA256_BYTES];
  uint8_t released_sha256[CR_ROLE_COUNT][CR_SHA256_BYTES];
  /* 1 once this side has returned the peer's digests (EndOfDigests sent):
   * a session that fails after this has released digests without a
   * receipt, and the audit log says so. */
  int digests_returned;

  /* Valid when status == FAILED. */
  int error;           /* CR_E* code */
  int wire_error;      /* CR_WIRE_* sent or received, 0 if none */
  int error_from_peer; /* 1: the peer sent an Error frame */
  char error_msg[512];

  int ping; /* the session was a ping (DONE: the peer answered) */
  /* From the peer's Hello, or (version 2) its Error frame, whichever
   * arrived: diagnosis without parsing error_msg. */
  uint32_t peer_protocol_version;
  uint8_t peer_template_sha256[CR_SHA256_BYTES];
  int have_peer_template; /* peer_template_sha256 is set */

  /* The query's shape, known once the Hellos are exchanged. */
  int kind;    /* CR_QUERY_COUNT or CR_QUERY_MEMBERS */
  int grouped; /* group_by: the cells hold the result; count is not released */
  uint64_t peer_label_sizes_total;

  /*
   * Heap outputs. They belong to the session (freed by cr_session_free)
   * until cr_session_result_take() moves them to the caller's struct, which
   * then frees them with cr_session_result_free_outputs().
   */
  size_t nparams;
  char **param_names; /* the run's parameters, as sent in the runner's Hello */
  char **param_values;
  /* Labels per role as they travel: under group_by, a side's labels with
   * fewer own keys than the query's min_count are merged into one label
   * CR_SESSION_OTHER_LABEL. label_sizes: own side the true sizes (local),
   * the peer's side its buckets. */
  size_t nlabels[CR_ROLE_COUNT]; /* 1 for a side that is not grouped */
  char **labels[CR_ROLE_COUNT];  /* label names per role ("" when not grouped) */
  uint64_t *label_sizes[CR_ROLE_COUNT];
  /* Grouped count, DONE and receives: ncells = nlabels[provider] *
   * nlabels[consumer], row-major by provider label. A cell below
   * min_count has suppressed = 1 and count = 0. */
  cr_session_cell *cells;
  size_t ncells;
  /* Members, DONE, receives and not suppressed: bit i (matched[i / 8] >>
   * (i % 8) & 1) is set when own key i (cr_dataset order) matched; with
   * several match keys, own record i. */
  uint8_t *matched;
  /* Members with several match keys: per own record, a bit per match key
   * (template order) it matched on; NULL otherwise. */
  uint8_t *matched_on;
  /* Several match keys, DONE, receives, not grouped: per key, the counted
   * side's records with a match on that key; each thresholded (engine.h,
   * cr_engine_result). nkeys 0: no breakdown. */
  size_t nkeys;
  uint64_t key_count[CR_TEMPLATE_MAX_KEYS];
  uint8_t key_suppressed[CR_TEMPLATE_MAX_KEYS];
  /* Several match keys, known once the Hellos are exchanged: the key names
   * (template order), whose records are counted, and whether each side's
   * set (own_set_size, peer_set_size) is of records or of key values. */
  size_t nmatch_keys; /* 1 for one key */
  char key_names[CR_TEMPLATE_MAX_KEYS][CR_TEMPLATE_MAX_NAME + 1];
  cr_role count_of;
  int own_records, peer_records;
};

void cr_session_result_free_outputs(cr_session_result *res);

typedef struct cr_session cr_session;

CR_NODISCARD int cr_session_new(cr_session **out, const cr_session_config *cfg, cr_error *err);
/* Wipes the scalar and every buffer. */
void cr_session_free(cr_session *s);

/* Runner: queues Hello. Responder: no-op. */
CR_NODISCARD int cr_session_start(cr_session *s);

/*
 * Feeds bytes received from the peer (any split). Returns 0, or a negative
 * code once the session has failed (an Error frame is then queued for the
 * peer unless the peer sent one).
 */
int cr_session_recv(cr_session *s, const uint8_t *data, size_t len);

/*
 * Bytes to send next. May produce more frames (and do the blinding work for
 * them) when the queue is short. *len == 0 means nothing to send now.
 * The bytes stay valid until cr_session_sent() or cr_session_free().
 */
int cr_session_send(cr_session *s, const uint8_t **data, size_t *len);
void cr_session_sent(cr_session *s, size_t n);
/* 1 when cr_session_send would return bytes (queued or producible). */
int cr_session_want_send(const cr_session *s);

/*
 * Fails the session from outside (timeout, peer vanished, operator): queues
 * an Error frame with wire_code (0: none) and records msg.
 */
void cr_session_abort(cr_session *s, int code, int wire_code, const char *msg);

cr_session_status cr_session_status_get(const cr_session *s);

/*
 * What the session accepts from the peer next (each state exactly these
 * frames, plus Error in any state; anything else fails the session with a
 * message naming the frame and the state). The session also has a sending
 * half (what it produces next), internal: the protocol is full duplex.
 */
typedef enum cr_session_state {
  CR_STATE_EXPECT_HELLO = 0,  /* Hello (the runner's, or the responder's answer) */
  CR_STATE_EXPECT_SET,        /* Batch, EndOfSet */
  CR_STATE_EXPECT_DIGESTS,    /* Digests, EndOfDigests (this side receives) */
  CR_STATE_EXPECT_NOISE_SEED, /* NoiseSeed (since v4; a query with noise) */
  CR_STATE_EXPECT_RELEASED,   /* Released */
  CR_STATE_EXPECT_FINISH,     /* Finish */
  CR_STATE_DONE,              /* the peer's Finish verified; nothing more */
  CR_STATE_FAILED             /* the session failed; input is ignored */
} cr_session_state;
cr_session_state cr_session_state_get(const cr_session *s);
/* "expecting Batch or EndOfSet", for messages. */
const char *cr_session_state_name(cr_session_state st);
/* Always valid; fields fill in as the session proceeds. */
const cr_session_result *cr_session_result_get(const cr_session *s);

/*
 * The checks a node makes on its own side before it connects or answers:
 * the query exists, this role may run it (runner only), the own set size is
 * within the template's limits and the template has not expired (now_unix:
 * the current time, passed in so tests are deterministic). CR_EREFUSED with
 * a message saying what to change.
 */
CR_NODISCARD int cr_session_check_local(const cr_session_config *cfg, int64_t now_unix,
                                        cr_error *err);

/* Design §3: max(proposals, ceil((40 + log2 n_P + log2 n_C) / 8)), at most 32. */
uint32_t cr_session_digest_bytes(uint64_t n_runner, uint64_t n_responder, uint32_t proposal_a,
                                 uint32_t proposal_b);

/*
 * Moves the result to out, heap outputs included (params, labels, label
 * sizes, cells, matched): out owns them and frees them with
 * cr_session_result_free_outputs(). The session's copy keeps its plain
 * fields (status, error, sizes) but its heap outputs are left empty (NULL,
 * counts 0), so cr_session_free() frees nothing of out's.
 */
void cr_session_result_take(cr_session *s, cr_session_result *out);

#define CR_SESSION_OTHER_LABEL "(other)"

/* What one side's receipt (its Finish signature) covers. */
typedef struct cr_session_receipt {
  cr_role signer;                                      /* the role of the node that signed */
  uint8_t cert_sha256[CR_ROLE_COUNT][CR_SHA256_BYTES]; /* by role */
  uint8_t template_sha256[CR_SHA256_BYTES];
  uint8_t session_id[CR_SESSION_ID_BYTES];
  uint8_t transcript[CR_SHA256_BYTES];
  const char *query;
  uint64_t n_runner, n_responder;                          /* the buckets the Hellos announced */
  uint8_t released_sha256[CR_ROLE_COUNT][CR_SHA256_BYTES]; /* by role */
} cr_session_receipt;

/*
 * The message each side signs in Finish (docs/protocol.md "Finish"):
 * "cleanroom/v3/receipt" || u8 signer role || cert provider || cert consumer
 * || template_sha256 || session_id || transcript || u32 len(query) || query
 * || u64 n_runner || u64 n_responder || released provider || released
 * consumer, integers big-endian, roles 0 provider / 1 consumer. Appended
 * to m; also used to check a receipt again from an audit log.
 */
CR_NODISCARD int cr_session_receipt_message(cr_buf *m, const cr_session_receipt *r);
/* The version 2 receipt, for audit logs written before version 3:
 * "cleanroom/v1/receipt" || session_id || transcript || u32 len(query) ||
 * query || u64 n_runner || u64 n_responder. */
CR_NODISCARD int cr_session_receipt_message_v2(cr_buf *m,
                                               const uint8_t session_id[CR_SESSION_ID_BYTES],
                                               const uint8_t transcript[CR_SHA256_BYTES],
                                               const char *query, uint64_t n_runner,
                                               uint64_t n_responder);
/* The receipt of res as the peer signed it (status DONE). */
void cr_session_peer_receipt(const cr_session_result *res, cr_session_receipt *r);

/*
 * For the transport, which never builds or parses a frame itself:
 *
 * cr_session_refusal_frame appends one framed Error frame (wire_code, text)
 * to out: what a node sends when it refuses a connection without creating a
 * session (BUSY). text must be fixed wording, never data.
 *
 * cr_session_frame_length reads a frame's 4-byte length prefix: 0 with *len
 * set when 1 <= len <= max_frame (0: CR_DEFAULT_MAX_FRAME), CR_EPROTO
 * otherwise (the session will refuse that frame).
 */
#define CR_FRAME_HEADER_BYTES 4
CR_NODISCARD int cr_session_refusal_frame(cr_buf *out, int wire_code, const char *text);
CR_NODISCARD int cr_session_frame_length(const uint8_t hdr[CR_FRAME_HEADER_BYTES], size_t max_frame,
                                         uint32_t *len);

/*
 * For a transport serving several collaborations, which must pick the
 * session's template before creating the session: the template hash a
 * frame (its payload, after the length prefix) names, when it is a Hello.
 * 0 with out set; CR_EPROTO when the bytes are not a Frame holding a Hello
 * with a 32-byte template hash (the session, once created, says what is
 * wrong with them). Decodes only; checks nothing else.
 */
CR_NODISCARD int cr_session_hello_template(const uint8_t *payload, size_t len,
                                           uint8_t out[CR_SHA256_BYTES]);

/* Where a session is, for progress reports. */
typedef struct cr_session_progress {
  /* "hello", "exchanging sets", "sorting" (the partner's set is in: its
   * tables are sorted and their runs merged for the digests going back),
   * "returning digests", "matching" (our digests are all back: the
   * merge-join and the checks), "finishing", "done" */
  const char *phase;
  uint64_t own_sent, own_total;           /* our points sent */
  uint64_t peer_received, peer_total;     /* the partner's points received */
  uint64_t digests_received, digests_due; /* our digests back from the partner */
  const char *query;     /* the query ("" before the runner's Hello; valid during the call) */
  const char *peer_addr; /* "ip:port" (set by the node; NULL from the session itself) */
} cr_session_progress;

/* Not while another thread is inside a call on s. */
void cr_session_progress_get(const cr_session *s, cr_session_progress *p);

/* For tests: 1 when the session's scalar memory has been wiped. */
int cr_session_scalar_wiped(const cr_session *s);

#ifdef __cplusplus
}
#endif
#endif
