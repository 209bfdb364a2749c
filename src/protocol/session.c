/*
 * The protocol session: a pure state machine fed the peer's bytes, producing
 * the bytes to send (design §3–5, docs/protocol.md).
 *
 * Flow, on each side: Hello (runner first; the responder answers after its
 * checks), then the own set as Batch frames and EndOfSet; once the peer's
 * whole set has arrived, its digests go back sorted (when the peer is in
 * results_to) as Digests and EndOfDigests; then Finish with the signed
 * receipt. A side in results_to keeps the digests it computed of the peer's
 * points and counts how many of its own digests (returned by the peer) are
 * among them. For a query with noise (since v4) each side has committed to
 * a share of the noise seed in its Hello and opens it in NoiseSeed once the
 * data is complete both ways; the noise drawn from the shared seed is added
 * to every released number before min_count.
 *
 * Never logs; never puts a key, point or digest in a message; wipes the
 * scalar as soon as the session ends, whichever way.
 */
#include "cleanroom/protocol.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "cleanroom/noise.h"
#include "protocol/frame.h"
#include "protocol/gcs.h"

#define CR_NONCE_BYTES 32
#define CR_DIGEST_SLOT CR_ENGINE_DIGEST_SLOT
/* One call to cr_session_send produces at most about this much. */
#define CR_OUT_CHUNK (256u << 10)
#define CR_MAX_SET_SIZE ((uint64_t)UINT32_MAX)
#define CR_MAX_PARAMS 64
#define CR_MAX_PARAM_BYTES 4096

static const char SESSION_LABEL[] = "cleanroom/v1/session";
static const char RECEIPT_LABEL_V2[] = "cleanroom/v1/receipt";
static const char RECEIPT_LABEL[] = "cleanroom/v3/receipt";
static const char RELEASED_LABEL[] = "cleanroom/v3/released";
/* Since v4: differential privacy (docs/protocol.md "Noise seed"). */
static const char NOISE_COMMIT_LABEL[] = "cleanroom/v4/noise-commit";
static const char NOISE_SEED_LABEL[] = "cleanroom/v4/noise-seed";
#define CR_NOISE_SHARE_BYTES 32

typedef cr_engine_digest ldigest;

/*
 * What this side produces next. The protocol is full duplex: both sides
 * stream their Batch frames at once, and either may finish its set before
 * or after the peer, so one enum cannot say both "what we accept" and "what
 * we send". cr_session_state (public) is the receiving half, this one the
 * sending half; a step of the sending half may wait on the receiving one
 * (next_step says which).
 */
typedef enum cr_send_state {
  CR_SEND_HELLO,          /* runner: on start; responder: in reply to the runner's */
  CR_SEND_SET,            /* Batch frames, once both Hellos are known */
  CR_SEND_END_OF_SET,     /* all our points are out */
  CR_SEND_DIGESTS,        /* the peer's digests back, once its EndOfSet is in */
  CR_SEND_END_OF_DIGESTS, /* all of them are out */
  CR_SEND_NOISE_SEED,     /* a query with noise: once every data frame both ways is done */
  CR_SEND_RELEASED,       /* once every data frame both ways is done (and both seeds) */
  CR_SEND_FINISH,         /* once the peer's Released is in */
  CR_SEND_IDLE,           /* Finish sent, or a ping answered: nothing more */
} cr_send_state;

struct cr_session {
  cr_session_config cfg;
  cr_engine *eng;         /* scalar, blinding, digest tables, matching */
  const cr_query *query;  /* known after the runner's Hello */
  const cr_dataset *data; /* own set: cfg.data, or loaded for the query */
  int data_loaded;        /* data came from cfg.load: give it back to unload */

  cr_session_state recv; /* what the peer may send next */
  cr_send_state send;    /* what this side produces next */
  size_t digest_bytes;
  uint8_t runner_hello_hash[CR_SHA256_BYTES];
  uint8_t responder_hello_hash[CR_SHA256_BYTES];
  uint8_t nonce[CR_NONCE_BYTES];
  int members; /* kind members: digests go back in arrival order */

  /* Own set: next element to send (the engine holds the order). own_n
   * counts the pads too; the labels are the ones that travel (rare labels
   * merged into CR_SESSION_OTHER_LABEL). Counts named points_* or *digests*
   * are points (own_w per own element, peer_w per peer element: the record
   * widths of docs/protocol.md "Records"), the rest elements. */
  uint64_t own_n;
  size_t own_w, peer_w;
  int own_grouped;
  size_t own_nlabels;
  char **own_label_names;  /* own_nlabels, sorted */
  uint64_t *own_true;      /* true keys per label */
  uint64_t *own_buckets;   /* padded size per label, as announced */
  uint32_t *own_label_map; /* dataset label -> own label */
  uint64_t points_sent;    /* elements blinded and sent so far */
  uint64_t batch_seq;

  /* Peer's set (the engine holds its digests). */
  uint64_t peer_n;
  int peer_grouped;
  size_t peer_nlabels;
  uint64_t *peer_label_seen; /* elements received per peer label */
  uint64_t peer_points;      /* points received */
  uint64_t peer_batch_seq;
  int peer_receives; /* peer is in results_to: return its digests */
  uint64_t digests_sent;
  uint64_t digests_seq;
  uint8_t *ret_buf;                        /* digests of one Digests frame */
  uint8_t ret_last[CR_ENGINE_DIGEST_SLOT]; /* the last digest returned: a GCS base */
  uint32_t ret_last_label;

  /* Own digests returned by the peer (only when this side receives). */
  int self_receives;
  uint64_t own_digests_n;
  uint64_t own_digests_seq;
  uint64_t own_label_got; /* elements received for the current own label */
  uint32_t own_label_cur;

  uint8_t transcript[CR_SHA256_BYTES];
  crypto_hash_sha256_state tx_hash; /* every byte sent before Finish */
  crypto_hash_sha256_state rx_hash; /* every byte received before Finish */

  cr_buf in;
  cr_buf out;
  /* The fixed name of the rule the peer broke, sent after the PROTOCOL
   * code's text; a string literal, never formatted. */
  const char *peer_rule;
  int have_peer_released;

  /* Differential privacy (a query with noise; docs/protocol.md "Noise
   * seed"). The exact result waits in `exact` until both seed shares are
   * open; the noisy one then goes to res and the exact one is wiped. */
  int noisy;
  uint8_t noise_share[CR_NOISE_SHARE_BYTES]; /* ours; wiped once the seed is derived */
  uint8_t peer_noise_commitment[CR_SHA256_BYTES];
  uint8_t peer_noise_share[CR_NOISE_SHARE_BYTES];
  int have_peer_noise_share;
  int noise_applied;
  int have_exact;
  cr_engine_result exact;
  cr_session_result res;
};

/* ---- helpers ------------------------------------------------------------ */

const char *cr_wire_error_text(int code) {
  switch (code) {
#define CR__WIRE_TEXT(num, name, text)                                                             \
  case num:                                                                                        \
    return text;
    CR_WIRE_ERROR_MAP(CR__WIRE_TEXT)
#undef CR__WIRE_TEXT
  default:
    return "error";
  }
}

const char *cr_wire_error_name(int code) {
  switch (code) {
#define CR__WIRE_NAME(num, name, text)                                                             \
  case num:                                                                                        \
    return #name;
    CR_WIRE_ERROR_MAP(CR__WIRE_NAME)
#undef CR__WIRE_NAME
  default:
    return "UNKNOWN";
  }
}

static unsigned ceil_log2(uint64_t n) {
  unsigned b = 0;
  while (b < 64 && ((uint64_t)1 << b) < n)
    b++;
  return b;
}

uint32_t cr_session_digest_bytes(uint64_t n_runner, uint64_t n_responder, uint32_t proposal_a,
                                 uint32_t proposal_b) {
  unsigned bits = 40 + ceil_log2(n_runner) + ceil_log2(n_responder);
  uint32_t l = (bits + 7) / 8;
  if (proposal_a > l)
    l = proposal_a;
  if (proposal_b > l)
    l = proposal_b;
  return l > CR_MAX_DIGEST_BYTES ? CR_MAX_DIGEST_BYTES : l;
}

/* The exact result of a noisy query, and every share of its seed. */
static void wipe_noise(cr_session *s) {
  if (s->exact.cells != NULL) {
    sodium_memzero(s->exact.cells, s->exact.ncells * sizeof *s->exact.cells);
    free(s->exact.cells);
  }
  free(s->exact.matched);
  free(s->exact.matched_on);
  sodium_memzero(&s->exact, sizeof s->exact); /* the exact per-key counts too */
  s->have_exact = 0;
  sodium_memzero(s->noise_share, sizeof s->noise_share);
  sodium_memzero(s->peer_noise_share, sizeof s->peer_noise_share);
}

/* The session ended, whichever way: the scalar and every digest go. */
static void release_engine(cr_session *s) {
  if (s->eng != NULL)
    cr_engine_wipe(s->eng);
  free(s->peer_label_seen);
  s->peer_label_seen = NULL;
  free(s->ret_buf); /* wiped after each frame */
  s->ret_buf = NULL;
  sodium_memzero(s->ret_last, sizeof s->ret_last);
  wipe_noise(s);
}

static void free_own_labels(cr_session *s) {
  if (s->own_label_names != NULL)
    for (size_t i = 0; i < s->own_nlabels; i++)
      free(s->own_label_names[i]);
  free(s->own_label_names);
  free(s->own_true);
  free(s->own_buckets);
  free(s->own_label_map);
  s->own_label_names = NULL;
  s->own_true = s->own_buckets = NULL;
  s->own_label_map = NULL;
}

static void free_strv(char **v, size_t n) {
  if (v == NULL)
    return;
  for (size_t i = 0; i < n; i++)
    free(v[i]);
  free(v);
}

void cr_session_result_free_outputs(cr_session_result *res) {
  free_strv(res->param_names, res->nparams);
  free_strv(res->param_values, res->nparams);
  res->param_names = res->param_values = NULL;
  res->nparams = 0;
  for (int r = 0; r < CR_ROLE_COUNT; r++) {
    free_strv(res->labels[r], res->nlabels[r]);
    free(res->label_sizes[r]);
    res->labels[r] = NULL;
    res->label_sizes[r] = NULL;
    res->nlabels[r] = 0;
  }
  free(res->cells);
  res->cells = NULL;
  res->ncells = 0;
  free(res->matched);
  res->matched = NULL;
  free(res->matched_on);
  res->matched_on = NULL;
}

void cr_session_result_take(cr_session *s, cr_session_result *out) {
  *out = s->res;
  /* The session keeps its plain fields (status, error, sizes: status_get
   * and the state machine read them) but no longer points at the heap
   * outputs, which now belong to out. */
  s->res.nparams = 0;
  s->res.param_names = s->res.param_values = NULL;
  for (int r = 0; r < CR_ROLE_COUNT; r++) {
    s->res.nlabels[r] = 0;
    s->res.labels[r] = NULL;
    s->res.label_sizes[r] = NULL;
  }
  s->res.cells = NULL;
  s->res.ncells = 0;
  s->res.matched = NULL;
  s->res.matched_on = NULL;
}

static char *dup_text(const char *src, size_t max) {
  size_t n = strnlen(src, max);
  char *d = malloc(n + 1);
  if (d) {
    memcpy(d, src, n);
    d[n] = '\0';
  }
  return d;
}

/* Keeps only printable ASCII of a peer's text: it may be hostile. */
static void copy_peer_text(char *dst, size_t cap, const char *src) {
  size_t j = 0;
  for (size_t i = 0; src != NULL && src[i] != '\0' && j + 1 < cap; i++) {
    unsigned char c = (unsigned char)src[i];
    dst[j++] = (c >= 0x20 && c < 0x7f) ? (char)c : '?';
  }
  dst[j] = '\0';
}

static int send_frame(cr_session *s, const Cleanroom__V1__Frame *f, int hashed) {
  size_t before = s->out.len;
  int rc = cr__frame_append(&s->out, f);
  if (rc == 0 && hashed)
    crypto_hash_sha256_update(&s->tx_hash, s->out.data + before, s->out.len - before);
  return rc;
}

static void queue_error_frame(cr_session *s, int wire, const char *msg) {
  Cleanroom__V1__Error e = CLEANROOM__V1__ERROR__INIT;
  Cleanroom__V1__Frame f = CLEANROOM__V1__FRAME__INIT;
  e.code = (uint32_t)wire;
  e.message = (char *)msg;
  e.template_sha256.data = (uint8_t *)s->cfg.tmpl->sha256;
  e.template_sha256.len = CR_SHA256_BYTES;
  e.protocol_version = CR_PROTOCOL_VERSION;
  f.msg_case = CLEANROOM__V1__FRAME__MSG_ERROR;
  f.error = &e;
  /* The peer must learn why even if our queue held half-built frames: those
   * stay (they are whole frames), the Error follows them. */
  (void)send_frame(s, &f, 0);
}

/* Fails the session: records why, tells the peer (unless it told us). */
static int fail(cr_session *s, int code, int wire, int from_peer, const char *fmt, ...)
    CR_PRINTF(5, 6);
static int fail(cr_session *s, int code, int wire, int from_peer, const char *fmt, ...) {
  if (s->res.status != CR_SESSION_RUNNING)
    return s->res.error ? s->res.error : code;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(s->res.error_msg, sizeof s->res.error_msg, fmt, ap);
  va_end(ap);
  s->res.status = CR_SESSION_FAILED;
  s->recv = CR_STATE_FAILED;
  s->send = CR_SEND_IDLE;
  s->res.error = code;
  s->res.wire_error = wire;
  s->res.error_from_peer = from_peer;
  s->res.suppressed = 0;
  s->res.count = 0;
  free(s->res.cells);
  s->res.cells = NULL;
  s->res.ncells = 0;
  free(s->res.matched);
  s->res.matched = NULL;
  free(s->res.matched_on);
  s->res.matched_on = NULL;
  s->res.nkeys = 0;
  memset(s->res.key_count, 0, sizeof s->res.key_count);
  if (!from_peer && wire != 0) {
    /* Fixed wording only: res.error_msg may hold our paths, sizes, row
     * counts or parameter values, which stay on this node. */
    char text[160];
    if (wire == CR_WIRE_PROTOCOL && s->peer_rule != NULL)
      snprintf(text, sizeof text, "%s: %s", cr_wire_error_text(wire), s->peer_rule);
    else
      snprintf(text, sizeof text, "%s", cr_wire_error_text(wire));
    queue_error_frame(s, wire, text);
  }
  release_engine(s);
  return code;
}

#define PROTO_FAIL(s, ...) fail((s), CR_EPROTO, CR_WIRE_PROTOCOL, 0, __VA_ARGS__)
/* A protocol error naming the rule the peer broke on the wire too. */
#define RULE_FAIL(s, rule, ...) ((s)->peer_rule = (rule), PROTO_FAIL((s), __VA_ARGS__))

/* The fixed wording of each engine rule, for the wire and our message. */
/* A failure of the engine that is not the peer's: its tables (sorters on
 * the work directory: a full disk or the disk cap, named in the engine's
 * message) or memory. */
static int engine_fail(cr_session *s, int rc, const char *what) {
  const char *why = cr_engine_error_message(s->eng);
  if (rc == CR_ENOMEM && !why[0])
    why = "out of memory";
  /* A process of our cluster failed (cleanroom-mpi): the node is being
   * stopped, by mpirun or by us, so the partner hears ABORTED. */
  return fail(s, rc, rc == CR_ECLUSTER ? CR_WIRE_ABORTED : CR_WIRE_INTERNAL, 0, "%s: %s", what,
              why[0] ? why : cr_strerror(rc));
}

static const char *rule_text(cr_engine_rule r) {
  switch (r) {
  case CR_RULE_POINT_INVALID:
    return "a point is not a valid group element";
  case CR_RULE_POINT_REFLECTED:
    return "a point equals one of ours (reflection)";
  case CR_RULE_POINT_REPEATED:
    return "the same point was sent twice";
  case CR_RULE_DIGEST_ORDER:
    return "returned digests are not strictly increasing";
  case CR_RULE_DIGEST_REPEATED:
    return "the same digest was returned twice";
  case CR_RULE_DIGEST_ECHO:
    return "the returned digests are the ones we sent (echo)";
  case CR_RULE_COUNT_BOUND:
    return "a count exceeds a set size";
  case CR_RULE_NONE:
    break;
  }
  return "protocol rule broken";
}

static void hex32(char out[65], const uint8_t in[32]) { cr_hex_encode(out, in, 32); }

/* ---- local checks ------------------------------------------------------- */

static int check_size(const cr_template *t, uint64_t n, const char *whose, char *msg, size_t cap) {
  if (n == 0) {
    snprintf(msg, cap, "%s set is empty", whose);
    return -1;
  }
  if (n > CR_MAX_SET_SIZE) {
    snprintf(msg, cap, "%s set has %llu elements, more than this engine supports (%llu)", whose,
             (unsigned long long)n, (unsigned long long)CR_MAX_SET_SIZE);
    return -1;
  }
  if (t->limits.min_set_size && n < t->limits.min_set_size) {
    snprintf(msg, cap,
             "%s set has %llu distinct keys; the template requires at least %llu "
             "(limits.min_set_size)",
             whose, (unsigned long long)n, (unsigned long long)t->limits.min_set_size);
    return -1;
  }
  if (t->limits.max_set_size && n > t->limits.max_set_size) {
    snprintf(msg, cap,
             "%s set has %llu distinct keys; the template allows at most %llu "
             "(limits.max_set_size)",
             whose, (unsigned long long)n, (unsigned long long)t->limits.max_set_size);
    return -1;
  }
  return 0;
}

int cr_session_check_local(const cr_session_config *cfg, int64_t now_unix, cr_error *err) {
  const cr_template *t = cfg->tmpl;
  char msg[512];
  if (t == NULL)
    return cr_error_set(err, CR_EINVAL, "session needs a template");
  if (!cr_engine_suite_supported(t->suite))
    return cr_error_set(err, CR_EREFUSED,
                        "the template's suite \"%s\" is not supported by this node "
                        "(supported: ristretto255, p256)",
                        t->suite);
  if (t->limits.not_after && now_unix > t->limits.not_after) {
    char na[CR_TEMPLATE_TIME_BYTES], now[CR_TEMPLATE_TIME_BYTES];
    cr_template_time_iso(t->limits.not_after, na);
    cr_template_time_iso(now_unix, now);
    return cr_error_set(err, CR_EREFUSED,
                        "the template expired on %s (limits.not_after; it is now %s); agree a "
                        "new template with the partner",
                        na, now);
  }
  if (cfg->is_runner && !cfg->ping) {
    const cr_query *q = cfg->query ? cr_template_query(t, cfg->query) : NULL;
    if (q == NULL) {
      char names[256] = "";
      for (size_t i = 0; i < t->nqueries; i++) {
        size_t len = strlen(names);
        snprintf(names + len, sizeof names - len, "%s%s", i ? ", " : "", t->queries[i].name);
      }
      return cr_error_set(err, CR_EREFUSED,
                          "query \"%s\" is not in the template; its queries are: %s",
                          cfg->query ? cfg->query : "(none)", names);
    }
    if (!(q->run_by & CR_ROLE_BIT(cfg->role)))
      return cr_error_set(err, CR_EREFUSED,
                          "the template does not let the %s run query \"%s\" "
                          "(queries.%s.run_by)",
                          cr_role_name(cfg->role), q->name, q->name);
    /* Every declared parameter given once, nothing else. */
    for (size_t i = 0; i < q->nparams; i++) {
      size_t seen = 0;
      for (size_t j = 0; j < cfg->nparams; j++)
        seen += strcmp(cfg->param_names[j], q->params[i].name) == 0;
      if (seen != 1)
        return cr_error_set(err, CR_EREFUSED,
                            "query \"%s\" needs parameter \"%s\" exactly once "
                            "(--param %s=VALUE)",
                            q->name, q->params[i].name, q->params[i].name);
    }
    for (size_t j = 0; j < cfg->nparams; j++) {
      size_t known = 0;
      for (size_t i = 0; i < q->nparams; i++)
        known += strcmp(cfg->param_names[j], q->params[i].name) == 0;
      if (!known)
        return cr_error_set(err, CR_EREFUSED,
                            "query \"%s\" declares no parameter \"%s\" (queries.%s.params)",
                            q->name, cfg->param_names[j], q->name);
    }
    /* Grouped data has label names (per-element labels may be spilled). */
    if (q->group_by[cfg->role] && cfg->data != NULL && cfg->data->label_names == NULL)
      return cr_error_set(err, CR_EINVAL,
                          "query \"%s\" groups our set by \"%s\": load the data with that "
                          "group column",
                          q->name, q->group_by[cfg->role]);
  }
  if (cfg->data != NULL && check_size(t, cfg->data->n, "our", msg, sizeof msg) != 0)
    return cr_error_set(err, CR_EREFUSED, "%s", msg);
  return 0;
}

/* ---- lifecycle ---------------------------------------------------------- */

static int set_labels(cr_session_result *res, cr_role r, size_t n, char *const *names,
                      const uint64_t *sizes, uint64_t total, int from_peer);

static int cmp_str(const void *a, const void *b) {
  return strcmp(*(char *const *)a, *(char *const *)b);
}

static size_t find_name(char **names, size_t n, const char *name) {
  size_t i = 0;
  while (i < n && strcmp(names[i], name) != 0)
    i++;
  return i;
}

/*
 * Takes the own set for the query: its TRUE size against the template's
 * limits (decided here, the message stays local), rare labels merged into
 * CR_SESSION_OTHER_LABEL (fewer keys than the query's min_count: one run
 * cannot carry hundreds of single-record probes, and their names never
 * leave), each label padded up to its bucket; the engine adds the pads and
 * shuffles. 0, CR_EREFUSED with msg (size), or another code with msg.
 */
static int setup_own_set(cr_session *s, const cr_dataset *d, char *msg, size_t cap) {
  const cr_template *t = s->cfg.tmpl;
  const cr_query *q = s->query;
  int rc = 0;
  uint64_t *pad = NULL, total = 0;
  s->data = d;
  /* d is not NULL: the caller returns when s->cfg.load gives none (cppcheck
   * does not see the load callback set d through &d). */
  // cppcheck-suppress nullPointerRedundantCheck
  s->res.own_set_size = d->n;
  // cppcheck-suppress nullPointerRedundantCheck
  if (check_size(t, d->n, "our", msg, cap) != 0)
    return CR_EREFUSED;
  s->own_w = cr_template_record_width(t, s->cfg.role);
  if (cr_dataset_width(d) != s->own_w ||
      (cr_template_nkeys(t) > 1 && (d->nkeys != cr_template_nkeys(t) || d->value_key == NULL))) {
    snprintf(msg, cap,
             "our data was loaded for %zu match key(s) as %s, the template has %zu and counts "
             "the %s's records",
             d->nkeys > 1 ? d->nkeys : (size_t)1, cr_dataset_width(d) > 1 ? "records" : "values",
             cr_template_nkeys(t), cr_role_name(t->count_of));
    return CR_EINVAL;
  }
  s->own_grouped = q->group_by[s->cfg.role] != NULL;
  if (s->own_grouped && (d->label_names == NULL || d->nlabels == 0)) {
    snprintf(msg, cap, "our data was loaded without the group column \"%s\"",
             q->group_by[s->cfg.role]);
    return CR_EINVAL;
  }
  size_t nd = s->own_grouped ? d->nlabels : 1, k = 0;
  s->own_label_names = calloc(nd + 1, sizeof *s->own_label_names);
  s->own_true = calloc(nd + 1, sizeof *s->own_true);
  s->own_buckets = calloc(nd + 1, sizeof *s->own_buckets);
  s->own_label_map = calloc(nd, sizeof *s->own_label_map);
  pad = calloc(nd + 1, sizeof *pad);
  if (!s->own_label_names || !s->own_true || !s->own_buckets || !s->own_label_map || !pad)
    goto oom;
  if (s->own_grouped) {
    int merged = 0;
    for (size_t j = 0; j < nd; j++) {
      if (d->label_sizes[j] >= q->min_count) {
        if ((s->own_label_names[k++] = dup_text(d->label_names[j], CR_DATASET_MAX_LABEL_BYTES)) ==
            NULL)
          goto oom;
      } else {
        merged = 1;
      }
    }
    if (merged && find_name(s->own_label_names, k, CR_SESSION_OTHER_LABEL) == k &&
        (s->own_label_names[k++] = dup_text(CR_SESSION_OTHER_LABEL, 16)) == NULL)
      goto oom;
    s->own_nlabels = k;
    qsort(s->own_label_names, k, sizeof *s->own_label_names, cmp_str);
    for (size_t j = 0; j < nd; j++) {
      const char *to =
          d->label_sizes[j] >= q->min_count ? d->label_names[j] : CR_SESSION_OTHER_LABEL;
      size_t w = find_name(s->own_label_names, k, to);
      s->own_label_map[j] = (uint32_t)w;
      s->own_true[w] += d->label_sizes[j];
    }
  } else {
    if ((s->own_label_names[0] = dup_text("", 1)) == NULL)
      goto oom;
    s->own_nlabels = k = 1;
    s->own_true[0] = d->n;
  }
  for (size_t l = 0; l < k; l++) {
    uint64_t b = cr_template_bucket(t, s->own_true[l]);
    if (b > CR_MAX_SET_SIZE || b > CR_MAX_SET_SIZE - total) {
      snprintf(msg, cap,
               "our set padded to the template's size buckets would exceed %llu elements, "
               "more than this engine supports",
               (unsigned long long)CR_MAX_SET_SIZE);
      rc = CR_EREFUSED;
      goto out;
    }
    s->own_buckets[l] = b;
    pad[l] = b - s->own_true[l];
    total += b;
  }
  rc = cr_engine_set_own(s->eng, d, k, s->own_grouped ? s->own_label_map : NULL, pad);
  if (rc != 0) {
    const char *why = cr_engine_error_message(s->eng);
    snprintf(msg, cap, "cannot take our set (%s)", why[0] ? why : cr_strerror(rc));
    goto out;
  }
  s->own_n = cr_engine_own_n(s->eng);
  s->res.own_set_bucket = s->own_n;
  if (set_labels(&s->res, s->cfg.role, s->own_grouped ? k : 0, s->own_label_names, s->own_true,
                 d->n, 0) != 0)
    goto oom;
out:
  free(pad);
  return rc;
oom:
  free(pad);
  snprintf(msg, cap, "out of memory");
  return CR_ENOMEM;
}

/* The result's label list for one role: the dataset's, or one "" label. */
static int set_labels(cr_session_result *res, cr_role r, size_t n, char *const *names,
                      const uint64_t *sizes, uint64_t total, int from_peer) {
  res->nlabels[r] = n ? n : 1;
  res->labels[r] = calloc(res->nlabels[r], sizeof *res->labels[r]);
  res->label_sizes[r] = calloc(res->nlabels[r], sizeof *res->label_sizes[r]);
  if (res->labels[r] == NULL || res->label_sizes[r] == NULL)
    return CR_ENOMEM;
  for (size_t i = 0; i < res->nlabels[r]; i++) {
    const char *name = n ? names[i] : "";
    if (from_peer) {
      char clean[CR_DATASET_MAX_LABEL_BYTES + 1];
      copy_peer_text(clean, sizeof clean, name);
      res->labels[r][i] = dup_text(clean, sizeof clean);
    } else {
      res->labels[r][i] = dup_text(name, CR_DATASET_MAX_LABEL_BYTES);
    }
    if (res->labels[r][i] == NULL)
      return CR_ENOMEM;
    res->label_sizes[r][i] = n ? sizes[i] : total;
  }
  return 0;
}

/* Our share of the noise seed, for a query with noise. */
static int draw_noise_share(cr_session *s) {
  s->noisy = 1;
  return s->cfg.rand ? s->cfg.rand(s->cfg.rand_ctx, s->noise_share, sizeof s->noise_share)
                     : cr_engine_rand_default(NULL, s->noise_share, sizeof s->noise_share);
}

/* SHA-256("cleanroom/v4/noise-commit" || u8 role || share): the role binds
 * a commitment to its side, so a partner cannot echo ours and open it
 * after we do. */
static void noise_commitment(cr_role role, const uint8_t share[CR_NOISE_SHARE_BYTES],
                             uint8_t out[CR_SHA256_BYTES]) {
  crypto_hash_sha256_state st;
  uint8_t r = (uint8_t)role;
  crypto_hash_sha256_init(&st);
  crypto_hash_sha256_update(&st, (const uint8_t *)NOISE_COMMIT_LABEL,
                            sizeof NOISE_COMMIT_LABEL - 1);
  crypto_hash_sha256_update(&st, &r, 1);
  crypto_hash_sha256_update(&st, share, CR_NOISE_SHARE_BYTES);
  crypto_hash_sha256_final(&st, out);
}

int cr_session_new(cr_session **out, const cr_session_config *cfg, cr_error *err) {
  int rc = 0;
  cr_session *s = NULL;
  *out = NULL;
  if (cfg == NULL || cfg->tmpl == NULL || cfg->sign == NULL ||
      (cfg->data == NULL && !(cfg->is_runner && cfg->ping) &&
       (cfg->is_runner || cfg->load == NULL)))
    return cr_error_set(err, CR_EINVAL, "session config incomplete");
  if (cfg->nparams > CR_MAX_PARAMS)
    return cr_error_set(err, CR_EINVAL, "too many parameters (at most %d)", CR_MAX_PARAMS);
  s = calloc(1, sizeof *s);
  if (s == NULL)
    return cr_error_set(err, CR_ENOMEM, "out of memory");
  s->cfg = *cfg;
  s->own_w = s->peer_w = 1;
  if (s->cfg.max_frame == 0)
    s->cfg.max_frame = CR_DEFAULT_MAX_FRAME;
  if (s->cfg.batch_size == 0)
    s->cfg.batch_size = CR_DEFAULT_BATCH;
  if (s->cfg.digest_bytes > CR_MAX_DIGEST_BYTES)
    s->cfg.digest_bytes = CR_MAX_DIGEST_BYTES;
  if (s->cfg.software == NULL)
    s->cfg.software = "cleanroom";
  cr_buf_init(&s->in);
  cr_buf_init(&s->out);
  crypto_hash_sha256_init(&s->tx_hash);
  crypto_hash_sha256_init(&s->rx_hash);

  s->res.status = CR_SESSION_RUNNING;
  s->res.role = cfg->role;
  s->res.is_runner = cfg->is_runner;
  memcpy(s->res.peer_sign_pk, cfg->peer_sign_pk, CR_SIGN_PK_BYTES);
  {
    /* Zero: the template's pins, which the transport has checked. */
    static const uint8_t zero[CR_SHA256_BYTES];
    const cr_template *t = cfg->tmpl;
    int own_set = memcmp(cfg->own_cert_sha256, zero, CR_SHA256_BYTES) != 0;
    int peer_set = memcmp(cfg->peer_cert_sha256, zero, CR_SHA256_BYTES) != 0;
    memcpy(s->res.own_cert_sha256,
           own_set ? cfg->own_cert_sha256 : t->parties[cfg->role].cert_sha256, CR_SHA256_BYTES);
    memcpy(s->res.peer_cert_sha256,
           peer_set ? cfg->peer_cert_sha256 : t->parties[cr_role_other(cfg->role)].cert_sha256,
           CR_SHA256_BYTES);
  }

  /* All of the session's randomness (scalar, shuffle, nonce) comes from
   * cfg->rand, so a test can replay a whole transcript. */
  cr_engine_config ec = {cfg->tmpl,     cfg->pool,  cfg->rand,
                         cfg->rand_ctx, cfg->spill, cfg->release_data};
  if ((rc = cr_engine_new(&s->eng, &ec)) != 0) {
    if (rc == CR_EREFUSED)
      cr_error_set(err, rc, "suite \"%s\" is not supported", cfg->tmpl->suite);
    else if (rc == CR_ENOMEM)
      cr_error_set(err, rc, "cannot allocate secure memory for the scalar");
    else
      cr_error_set(err, rc, "cannot draw the session scalar");
    goto fail;
  }
  s->res.ping = cfg->ping && cfg->is_runner;
  if (cfg->is_runner && !s->res.ping) {
    s->query = cfg->query ? cr_template_query(cfg->tmpl, cfg->query) : NULL;
    if (s->query == NULL) {
      rc = cr_error_set(err, CR_EREFUSED, "query \"%s\" is not in the template",
                        cfg->query ? cfg->query : "(none)");
      goto fail;
    }
    snprintf(s->res.query, sizeof s->res.query, "%s", s->query->name);
    if (s->query->group_by[cfg->role] != NULL && cfg->data->label_names == NULL) {
      rc = cr_error_set(err, CR_EINVAL,
                        "query \"%s\" groups our set by \"%s\", but the data "
                        "was loaded without that column",
                        s->query->name, s->query->group_by[cfg->role]);
      goto fail;
    }
    s->res.nparams = cfg->nparams;
    s->res.param_names = calloc(cfg->nparams + 1, sizeof *s->res.param_names);
    s->res.param_values = calloc(cfg->nparams + 1, sizeof *s->res.param_values);
    if (s->res.param_names == NULL || s->res.param_values == NULL) {
      rc = cr_error_set(err, CR_ENOMEM, "out of memory");
      goto fail;
    }
    for (size_t i = 0; i < cfg->nparams; i++) {
      s->res.param_names[i] = dup_text(cfg->param_names[i], CR_MAX_PARAM_BYTES);
      s->res.param_values[i] = dup_text(cfg->param_values[i], CR_MAX_PARAM_BYTES);
      if (s->res.param_names[i] == NULL || s->res.param_values[i] == NULL) {
        rc = cr_error_set(err, CR_ENOMEM, "out of memory");
        goto fail;
      }
    }
  }
  /* The runner's set is known now; a responder's only once it has admitted
   * the runner's Hello (admission first). */
  if (cfg->is_runner && !s->res.ping) {
    char msg[400];
    if ((rc = setup_own_set(s, cfg->data, msg, sizeof msg)) != 0) {
      cr_error_set(err, rc, "%s", msg);
      goto fail;
    }
  }
  rc = cfg->rand ? cfg->rand(cfg->rand_ctx, s->nonce, sizeof s->nonce)
                 : cr_engine_rand_default(NULL, s->nonce, sizeof s->nonce);
  if (rc != 0) {
    rc = cr_error_set(err, CR_ECRYPTO, "cannot draw the session nonce");
    goto fail;
  }
  /* The runner knows its query: a noisy one needs our seed share now (its
   * commitment goes in Hello). The responder draws its own on Hello. */
  if (s->query != NULL && s->query->noise.mechanism != CR_NOISE_NONE && draw_noise_share(s) != 0) {
    rc = cr_error_set(err, CR_ECRYPTO, "cannot draw the noise seed share");
    goto fail;
  }
  *out = s;
  return 0;
fail:
  cr_session_free(s);
  return rc;
}

void cr_session_free(cr_session *s) {
  if (s == NULL)
    return;
  release_engine(s);
  cr_engine_free(s->eng);
  free_own_labels(s);
  cr_session_result_free_outputs(&s->res);
  if (s->data_loaded && s->cfg.unload != NULL)
    s->cfg.unload(s->cfg.load_ctx, s->data);
  cr_buf_free(&s->in);
  cr_buf_free(&s->out);
  sodium_memzero(s, sizeof *s);
  free(s);
}

int cr_session_scalar_wiped(const cr_session *s) {
  return s->eng == NULL || cr_engine_scalar_wiped(s->eng);
}

cr_session_status cr_session_status_get(const cr_session *s) { return s->res.status; }

const cr_session_result *cr_session_result_get(const cr_session *s) { return &s->res; }

void cr_session_abort(cr_session *s, int code, int wire_code, const char *msg) {
  fail(s, code, wire_code, 0, "%s", msg ? msg : cr_strerror(code));
}

/* ---- Hello -------------------------------------------------------------- */

static int send_hello(cr_session *s) {
  Cleanroom__V1__Hello h = CLEANROOM__V1__HELLO__INIT;
  Cleanroom__V1__Frame f = CLEANROOM__V1__FRAME__INIT;
  Cleanroom__V1__Hello__ParamsEntry *entries = NULL, **eptr = NULL;
  int rc = 0;
  h.protocol_version = CR_PROTOCOL_VERSION;
  h.software = (char *)s->cfg.software;
  h.role = (char *)cr_role_name(s->cfg.role);
  h.template_sha256.data = (uint8_t *)s->cfg.tmpl->sha256;
  h.template_sha256.len = CR_SHA256_BYTES;
  h.query = (char *)(s->query ? s->query->name : "");
  h.suite = s->cfg.tmpl->suite;
  h.set_size = s->res.ping ? 0 : s->own_n; /* the bucket; a ping reveals no size */
  /* Since v4: records of own_w points (0: single values, as before). */
  h.record_keys = s->res.ping || s->own_w <= 1 ? 0 : (uint32_t)s->own_w;
  h.digest_bytes = s->cfg.digest_bytes;
  h.nonce.data = s->nonce;
  h.nonce.len = sizeof s->nonce;
  uint8_t commitment[CR_SHA256_BYTES];
  if (s->noisy) {
    noise_commitment(s->cfg.role, s->noise_share, commitment);
    h.noise_commitment.data = commitment;
    h.noise_commitment.len = sizeof commitment;
  }
  if (s->cfg.is_runner && s->res.nparams > 0) {
    entries = calloc(s->res.nparams, sizeof *entries);
    // NOLINTNEXTLINE(bugprone-sizeof-expression): eptr is an array of pointers
    eptr = calloc(s->res.nparams, sizeof *eptr);
    if (entries == NULL || eptr == NULL) {
      rc = fail(s, CR_ENOMEM, CR_WIRE_INTERNAL, 0, "out of memory");
      goto out;
    }
    for (size_t i = 0; i < s->res.nparams; i++) {
      cleanroom__v1__hello__params_entry__init(&entries[i]);
      entries[i].key = s->res.param_names[i];
      entries[i].value = s->res.param_values[i];
      eptr[i] = &entries[i];
    }
    h.n_params = s->res.nparams;
    h.params = eptr;
  }
  if (s->own_grouped) {
    h.n_group_labels = s->own_nlabels;
    h.group_labels = s->own_label_names;
    h.n_group_sizes = s->own_nlabels;
    h.group_sizes = s->own_buckets;
  }
  f.msg_case = CLEANROOM__V1__FRAME__MSG_HELLO;
  f.hello = &h;

  size_t before = s->out.len;
  if ((rc = send_frame(s, &f, 1)) != 0) {
    rc = fail(s, rc, CR_WIRE_INTERNAL, 0, "cannot encode Hello");
    goto out;
  }
  uint8_t *dst = s->cfg.is_runner ? s->runner_hello_hash : s->responder_hello_hash;
  cr_sha256(dst, s->out.data + before + CR_FRAME_HEADER_BYTES,
            s->out.len - before - CR_FRAME_HEADER_BYTES);
  if (s->cfg.is_runner) {
    memcpy(s->res.run_id, s->runner_hello_hash, CR_SHA256_BYTES);
    s->res.have_run_id = 1;
  }
  s->send = CR_SEND_SET;
out:
  free(entries);
  free(eptr);
  return rc;
}

static int refuse(cr_session *s, int wire, const char *fmt, ...) CR_PRINTF(3, 4);
static int refuse(cr_session *s, int wire, const char *fmt, ...) {
  char msg[512];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  return fail(s, CR_EREFUSED, wire, 0, "%s", msg);
}

/* The admit hook said no: CR_EREFUSED is the contract's refusal (a run
 * limit, the privacy budget: the peer is told NOT_ALLOWED); any other code
 * is this node's own failure (its audit log cannot be written, say), which
 * retrying may cure: the peer is told INTERNAL, and the code is kept. */
static int admit_failed(cr_session *s, int rc, const char *why) {
  if (rc == CR_EREFUSED || rc >= 0)
    return refuse(s, CR_WIRE_NOT_ALLOWED, "%s", why[0] ? why : "refused by this node");
  return fail(s, rc, CR_WIRE_INTERNAL, 0, "%s", why[0] ? why : cr_strerror(rc));
}

static void derive_session(cr_session *s) {
  crypto_hash_sha256_state st;
  uint8_t id[CR_SHA256_BYTES];
  crypto_hash_sha256_init(&st);
  crypto_hash_sha256_update(&st, (const uint8_t *)SESSION_LABEL, sizeof SESSION_LABEL - 1);
  crypto_hash_sha256_update(&st, s->runner_hello_hash, sizeof s->runner_hello_hash);
  crypto_hash_sha256_update(&st, s->responder_hello_hash, sizeof s->responder_hello_hash);
  crypto_hash_sha256_final(&st, id);
  memcpy(s->res.session_id, id, sizeof id);
  s->res.have_session_id = 1;
}

/* Responder: the parameters the runner sent, checked against the query's
 * declarations by name (types are checked where they are used: the data
 * loader parses each value as its declared type). */
static int take_params(cr_session *s, const Cleanroom__V1__Hello *h) {
  const cr_query *q = s->query;
  if (h->n_params > CR_MAX_PARAMS)
    return refuse(s, CR_WIRE_PARAMS, "the partner sent %zu parameters, at most %d are allowed",
                  h->n_params, CR_MAX_PARAMS);
  s->res.param_names = calloc(h->n_params + 1, sizeof *s->res.param_names);
  s->res.param_values = calloc(h->n_params + 1, sizeof *s->res.param_values);
  if (s->res.param_names == NULL || s->res.param_values == NULL)
    return fail(s, CR_ENOMEM, CR_WIRE_INTERNAL, 0, "out of memory");
  s->res.nparams = 0; /* counts the entries filled below */
  for (size_t i = 0; i < h->n_params; i++) {
    const char *k = h->params[i]->key ? h->params[i]->key : "";
    const char *v = h->params[i]->value ? h->params[i]->value : "";
    size_t declared = 0;
    for (size_t j = 0; j < q->nparams; j++)
      declared += strcmp(q->params[j].name, k) == 0;
    if (!declared)
      return refuse(s, CR_WIRE_PARAMS, "query \"%s\" declares no parameter \"%.64s\"", q->name, k);
    for (size_t j = 0; j < i; j++)
      if (strcmp(s->res.param_names[j], k) == 0)
        return refuse(s, CR_WIRE_PARAMS, "the partner sent parameter \"%.64s\" twice", k);
    if (strlen(v) > CR_MAX_PARAM_BYTES)
      return refuse(s, CR_WIRE_PARAMS, "parameter \"%.64s\" is longer than %d bytes", k,
                    CR_MAX_PARAM_BYTES);
    s->res.param_names[i] = dup_text(k, CR_MAX_PARAM_BYTES);
    s->res.param_values[i] = dup_text(v, CR_MAX_PARAM_BYTES);
    s->res.nparams = i + 1;
    if (s->res.param_names[i] == NULL || s->res.param_values[i] == NULL)
      return fail(s, CR_ENOMEM, CR_WIRE_INTERNAL, 0, "out of memory");
  }
  for (size_t j = 0; j < q->nparams; j++) {
    size_t given = 0;
    for (size_t i = 0; i < s->res.nparams; i++)
      given += strcmp(q->params[j].name, s->res.param_names[i]) == 0;
    if (!given)
      return refuse(s, CR_WIRE_PARAMS,
                    "query \"%s\" needs parameter \"%s\", the partner "
                    "sent none",
                    q->name, q->params[j].name);
  }
  /* Each value against its declared type, before admission: a refusal for a
   * value is the same PARAMS whatever our data holds. The party parses the
   * values again when it loads. */
  cr_params pv = {0};
  cr_error perr;
  cr_error_clear(&perr);
  int rc = cr_params_from_pairs(&pv, (const char *const *)s->res.param_names,
                                (const char *const *)s->res.param_values, s->res.nparams, q->params,
                                q->nparams, &perr);
  cr_params_free(&pv);
  if (rc == CR_ENOMEM)
    return fail(s, CR_ENOMEM, CR_WIRE_INTERNAL, 0, "out of memory");
  if (rc != 0)
    return refuse(s, CR_WIRE_PARAMS, "the partner's parameters do not fit query \"%s\": %s",
                  q->name, cr_error_message(&perr, rc));
  return 0;
}

/* The peer's announced size (a bucket, or a sum of label buckets) against
 * the template: its true size is within the limits only if this holds. */
static int check_peer_size(cr_session *s, const Cleanroom__V1__Hello *h, cr_role peer_role,
                           char *msg, size_t cap) {
  const cr_template *t = s->cfg.tmpl;
  uint64_t n = h->set_size;
  if (n == 0 || n > CR_MAX_SET_SIZE) {
    snprintf(msg, cap,
             "the partner announced a set of %llu elements: empty, or more than this engine "
             "supports (%llu)",
             (unsigned long long)n, (unsigned long long)CR_MAX_SET_SIZE);
    return -1;
  }
  if (t->limits.min_set_size && n < t->limits.min_set_size) {
    snprintf(msg, cap, "the partner's set (bucket %llu) is below limits.min_set_size (%llu)",
             (unsigned long long)n, (unsigned long long)t->limits.min_set_size);
    return -1;
  }
  if (t->limits.max_set_size && s->query->group_by[peer_role] == NULL &&
      n > cr_template_bucket(t, t->limits.max_set_size)) {
    snprintf(msg, cap,
             "the partner's set (bucket %llu) is above the bucket of limits.max_set_size (%llu)",
             (unsigned long long)n, (unsigned long long)t->limits.max_set_size);
    return -1;
  }
  return 0;
}

/* The peer's group labels: present exactly when the query groups the peer's
 * side; sizes add up to its set size. */
static int take_peer_labels(cr_session *s, const Cleanroom__V1__Hello *h, cr_role peer_role) {
  int grouped = s->query->group_by[peer_role] != NULL;
  const cr_template *t = s->cfg.tmpl;
  /* A size on the template's ladder: an honest node announces nothing
   * else, and a size off the ladder would be an exact one. */
  if (!grouped) {
    if (h->n_group_labels != 0 || h->n_group_sizes != 0)
      return PROTO_FAIL(s, "the partner sent group labels for a side the query does not group");
    if (!cr_template_is_bucket(t, h->set_size))
      return RULE_FAIL(s, "a set size is not a bucket of the template's ladder",
                       "the partner announced a set size that is not a bucket of the template's "
                       "size ladder (limits.size_buckets)");
    s->peer_nlabels = 1;
    return set_labels(&s->res, peer_role, 0, NULL, NULL, h->set_size, 1) == 0
               ? 0
               : fail(s, CR_ENOMEM, CR_WIRE_INTERNAL, 0, "out of memory");
  }
  if (h->n_group_labels == 0 || h->n_group_labels != h->n_group_sizes ||
      h->n_group_labels > CR_DATASET_MAX_LABELS)
    return PROTO_FAIL(s,
                      "the partner sent %zu group labels and %zu sizes; expected 1 to %d of "
                      "each",
                      h->n_group_labels, h->n_group_sizes, CR_DATASET_MAX_LABELS);
  uint64_t total = 0;
  for (size_t i = 0; i < h->n_group_labels; i++) {
    if (h->group_sizes[i] == 0 || h->group_sizes[i] > h->set_size ||
        strlen(h->group_labels[i]) > CR_DATASET_MAX_LABEL_BYTES)
      return PROTO_FAIL(s, "the partner's group %zu is empty, too large or too long a name", i);
    if (!cr_template_is_bucket(t, h->group_sizes[i]))
      return RULE_FAIL(s, "a set size is not a bucket of the template's ladder",
                       "the partner announced a size for its group %zu that is not a bucket of "
                       "the template's size ladder (limits.size_buckets)",
                       i);
    if (t->limits.max_set_size && h->group_sizes[i] > cr_template_bucket(t, t->limits.max_set_size))
      return refuse(s, CR_WIRE_SIZE,
                    "the partner's group %zu is larger than the bucket of "
                    "limits.max_set_size",
                    i);
    total += h->group_sizes[i];
  }
  if (total != h->set_size)
    return PROTO_FAIL(s, "the partner's group sizes add up to %llu, not its set size %llu",
                      (unsigned long long)total, (unsigned long long)h->set_size);
  s->peer_grouped = 1;
  s->peer_nlabels = h->n_group_labels;
  s->peer_label_seen = calloc(s->peer_nlabels, sizeof *s->peer_label_seen);
  if (s->peer_label_seen == NULL ||
      set_labels(&s->res, peer_role, h->n_group_labels, h->group_labels, h->group_sizes,
                 h->set_size, 1) != 0)
    return fail(s, CR_ENOMEM, CR_WIRE_INTERNAL, 0, "out of memory");
  return 0;
}

static int on_hello(cr_session *s, const Cleanroom__V1__Hello *h, const uint8_t *payload,
                    size_t payload_len) {
  const cr_template *t = s->cfg.tmpl;
  char ours[65], theirs[65], msg[512];
  cr_role peer_role;
  int rc;

  if (s->cfg.is_runner && s->send == CR_SEND_HELLO)
    return PROTO_FAIL(s, "the partner sent Hello before ours");
  copy_peer_text(s->res.peer_software, sizeof s->res.peer_software, h->software);
  s->res.peer_protocol_version = h->protocol_version;
  if (h->template_sha256.len == CR_SHA256_BYTES) {
    memcpy(s->res.peer_template_sha256, h->template_sha256.data, CR_SHA256_BYTES);
    s->res.have_peer_template = 1;
  }

  if (h->protocol_version != CR_PROTOCOL_VERSION)
    return refuse(s, CR_WIRE_VERSION,
                  "the partner speaks protocol version %u, this node speaks %u; "
                  "upgrade the older node",
                  h->protocol_version, CR_PROTOCOL_VERSION);
  if (cr_role_parse(h->role, &peer_role) != 0 || peer_role == s->cfg.role)
    return refuse(s, CR_WIRE_ROLE,
                  "the partner claims role \"%.32s\" but this node is the %s; the "
                  "other party must be the %s",
                  h->role ? h->role : "", cr_role_name(s->cfg.role),
                  cr_role_name(cr_role_other(s->cfg.role)));
  hex32(ours, t->sha256);
  if (h->template_sha256.len != CR_SHA256_BYTES ||
      sodium_memcmp(h->template_sha256.data, t->sha256, CR_SHA256_BYTES) != 0) {
    if (h->template_sha256.len == CR_SHA256_BYTES)
      hex32(theirs, h->template_sha256.data);
    else
      snprintf(theirs, sizeof theirs, "(malformed)");
    /* Labelled by role, not "ours"/"the partner's": this text is read on
     * both sides (the partner gets it in the Error frame). */
    cr_role pr = cr_role_other(s->cfg.role);
    return refuse(s, CR_WIRE_TEMPLATE_MISMATCH,
                  "the templates differ: the %s loaded %s, the %s loaded %s; both "
                  "sides must load the same template (compare `cleanroom template hash`)",
                  cr_role_name(s->cfg.role), ours, cr_role_name(pr), theirs);
  }
  if (h->suite == NULL || strcmp(h->suite, t->suite) != 0)
    return refuse(s, CR_WIRE_SUITE, "the partner uses suite \"%.32s\", the template says \"%s\"",
                  h->suite ? h->suite : "", t->suite);
  if (t->limits.not_after && s->cfg.now_unix > t->limits.not_after) {
    char na[CR_TEMPLATE_TIME_BYTES];
    cr_template_time_iso(t->limits.not_after, na);
    return refuse(s, CR_WIRE_NOT_ALLOWED,
                  "the template expired on %s (limits.not_after); agree a new template", na);
  }

  const char *qname = h->query ? h->query : "";
  /* A ping: the checks above passed; answer (or accept the answer) and end.
   * Nothing is loaded, no size is sent, no scalar is used. */
  if (qname[0] == '\0' && (s->res.ping || !s->cfg.is_runner)) {
    if (h->set_size != 0 || h->n_params != 0 || h->n_group_labels != 0 || h->record_keys != 0)
      return PROTO_FAIL(s, "the partner's ping carries data");
    if (!s->cfg.is_runner) {
      s->res.ping = 1;
      if ((rc = send_hello(s)) != 0)
        return rc;
    }
    s->res.status = CR_SESSION_DONE;
    s->recv = CR_STATE_DONE;
    s->send = CR_SEND_IDLE;
    release_engine(s);
    return 0;
  }
  if (s->res.ping)
    return PROTO_FAIL(s, "the partner answered our ping with query \"%.64s\"", qname);
  if (!s->cfg.is_runner) {
    const cr_query *q = cr_template_query(t, qname);
    if (q == NULL)
      return refuse(s, CR_WIRE_UNKNOWN_QUERY, "query \"%.64s\" is not in the template", qname);
    snprintf(s->res.query, sizeof s->res.query, "%s", q->name);
    if (!(q->run_by & CR_ROLE_BIT(peer_role)))
      return refuse(s, CR_WIRE_NOT_ALLOWED,
                    "the template does not let the %s run query \"%s\" (queries.%s.run_by)",
                    cr_role_name(peer_role), q->name, q->name);
    s->query = q;
    if ((rc = take_params(s, h)) != 0)
      return rc;
  } else {
    if (strcmp(qname, s->query->name) != 0)
      return PROTO_FAIL(s, "the partner answered for query \"%.64s\", we asked for \"%s\"", qname,
                        s->query->name);
    if (h->n_params != 0)
      return PROTO_FAIL(s, "the partner's answer carries parameters; only the runner sends them");
  }
  if (h->nonce.len != CR_NONCE_BYTES)
    return PROTO_FAIL(s, "the partner's Hello nonce is %zu bytes, expected %d", h->nonce.len,
                      CR_NONCE_BYTES);
  if (h->digest_bytes > CR_MAX_DIGEST_BYTES)
    return PROTO_FAIL(s, "the partner proposes %u-byte digests, at most %d are allowed",
                      h->digest_bytes, CR_MAX_DIGEST_BYTES);
  /* A query with noise: each side commits to its share of the noise seed
   * here, before any set is sent (docs/protocol.md "Noise seed"). */
  s->res.noisy = s->query->noise.mechanism != CR_NOISE_NONE;
  s->res.noise = s->query->noise;
  if (s->res.noisy && s->query->kind == CR_QUERY_MEMBERS)
    return refuse(s, CR_WIRE_NOT_ALLOWED,
                  "query \"%s\" combines members with noise, which this node does not run",
                  s->query->name);
  if (s->res.noisy && h->noise_commitment.len != CR_SHA256_BYTES)
    return RULE_FAIL(s, "a noisy query without a noise seed commitment",
                     "the partner's Hello for query \"%s\", which has noise, carries no "
                     "commitment to a noise seed share (%zu bytes, expected %d)",
                     s->query->name, h->noise_commitment.len, CR_SHA256_BYTES);
  if (!s->res.noisy && h->noise_commitment.len != 0)
    return PROTO_FAIL(s,
                      "the partner sent a noise seed commitment for query \"%s\", which has "
                      "no noise",
                      s->query->name);
  if (s->res.noisy)
    memcpy(s->peer_noise_commitment, h->noise_commitment.data, CR_SHA256_BYTES);
  if (check_peer_size(s, h, peer_role, msg, sizeof msg) != 0)
    return refuse(s, CR_WIRE_SIZE, "%s", msg);
  if ((rc = take_peer_labels(s, h, peer_role)) != 0)
    return rc;
  /* Several match keys: the counted side sends records (one point per key),
   * the other side single values; the template says which is which. */
  s->peer_w = cr_template_record_width(t, peer_role);
  if (h->record_keys != (s->peer_w > 1 ? s->peer_w : 0))
    return RULE_FAIL(s, "records of another width than the template's match keys",
                     "the partner announced records of %u keys; the template's match keys and "
                     "count_of say %zu",
                     h->record_keys, s->peer_w > 1 ? s->peer_w : (size_t)0);
  if (h->set_size > CR_MAX_SET_SIZE / s->peer_w)
    return refuse(s, CR_WIRE_SIZE,
                  "the partner's %llu records of %zu keys are more points than this engine "
                  "supports",
                  (unsigned long long)h->set_size, s->peer_w);

  s->res.kind = s->query->kind;
  s->members = s->query->kind == CR_QUERY_MEMBERS;
  s->res.grouped = s->query->group_by[CR_ROLE_PROVIDER] || s->query->group_by[CR_ROLE_CONSUMER];
  if (s->members && s->res.grouped)
    return refuse(s, CR_WIRE_NOT_ALLOWED,
                  "query \"%s\" combines members with group_by, which "
                  "this node does not run",
                  s->query->name);
  /* Several keys: members go to the counted side, whose records they are
   * (the template refuses anything else; a hand-built one may not). */
  if (s->members && cr_template_nkeys(t) > 1 && s->query->results_to != CR_ROLE_BIT(t->count_of))
    return refuse(s, CR_WIRE_NOT_ALLOWED,
                  "query \"%s\" returns members to a side whose records are not counted "
                  "(count_of)",
                  s->query->name);

  s->peer_n = h->set_size;
  s->res.peer_set_size = s->peer_n;
  s->res.peer_set_size_is_bucket = 1;
  uint8_t *dst = s->cfg.is_runner ? s->responder_hello_hash : s->runner_hello_hash;
  cr_sha256(dst, payload, payload_len);
  if (!s->cfg.is_runner) {
    memcpy(s->res.run_id, s->runner_hello_hash, CR_SHA256_BYTES);
    s->res.have_run_id = 1;
  }

  s->res.nmatch_keys = cr_template_nkeys(t);
  for (size_t k = 0; k < s->res.nmatch_keys; k++)
    snprintf(s->res.key_names[k], sizeof s->res.key_names[k], "%s",
             t->match_keys[k].name ? t->match_keys[k].name : "");
  s->res.count_of = t->count_of;
  s->res.own_records = cr_template_record_width(t, s->cfg.role) > 1;
  s->res.peer_records = s->peer_w > 1;
  s->self_receives = (s->query->results_to & CR_ROLE_BIT(s->cfg.role)) != 0;
  s->peer_receives = (s->query->results_to & CR_ROLE_BIT(peer_role)) != 0;
  s->res.receives = s->self_receives;
  s->res.min_count = s->query->min_count;

  if (!s->cfg.is_runner) {
    /* Admission first: everything above was decided from the runner's
     * Hello alone. The run is recorded (and the run limit applied) before
     * a byte of our data is read or anything that depends on it is sent. */
    if (s->cfg.admit != NULL) {
      char why[400] = "";
      rc = s->cfg.admit(s->cfg.admit_ctx, s->query, &s->res, why, sizeof why);
      if (rc != 0)
        return admit_failed(s, rc, why);
    }
    const cr_dataset *d = s->cfg.data;
    if (d == NULL) {
      char why[400] = "";
      rc = s->cfg.load(s->cfg.load_ctx, s->query, &s->res, &d, why, sizeof why);
      if (rc == CR_EREFUSED)
        return refuse(s, CR_WIRE_PARAMS, "%s", why[0] ? why : "the parameters do not fit");
      if (rc != 0 || d == NULL)
        return fail(s, rc ? rc : CR_EINTERNAL, CR_WIRE_INTERNAL, 0, "cannot load our data: %s",
                    why[0] ? why : cr_strerror(rc));
      s->data = d;
      s->data_loaded = 1;
    }
    /* Our TRUE size against the limits, decided here; the partner is told
     * only SIZE, with the code's fixed text. */
    rc = setup_own_set(s, d, msg, sizeof msg);
    if (rc == CR_EREFUSED)
      return refuse(s, CR_WIRE_SIZE, "%s", msg);
    if (rc != 0)
      return fail(s, rc, CR_WIRE_INTERNAL, 0, "%s", msg);
  }

  /* Points, not elements: the chance of a false match grows with them. */
  uint64_t n_runner = s->cfg.is_runner ? s->own_n * s->own_w : s->peer_n * s->peer_w;
  uint64_t n_responder = s->cfg.is_runner ? s->peer_n * s->peer_w : s->own_n * s->own_w;
  s->digest_bytes =
      cr_session_digest_bytes(n_runner, n_responder, s->cfg.digest_bytes, h->digest_bytes);
  s->res.digest_bytes = (uint32_t)s->digest_bytes;
  if (!s->cfg.is_runner) {
    if (s->res.noisy && draw_noise_share(s) != 0)
      return fail(s, CR_ECRYPTO, CR_WIRE_INTERNAL, 0, "cannot draw the noise seed share");
    if ((rc = send_hello(s)) != 0)
      return rc;
  }
  derive_session(s);
  /* The runner admits once it knows the session (its own data was loaded
   * before it connected; nothing of the responder's is ours to protect). */
  if (s->cfg.is_runner && s->cfg.admit != NULL) {
    char why[400] = "";
    rc = s->cfg.admit(s->cfg.admit_ctx, s->query, &s->res, why, sizeof why);
    if (rc != 0)
      return admit_failed(s, rc, why);
  }

  cr_engine_plan plan;
  memset(&plan, 0, sizeof plan);
  memcpy(plan.session_id, s->res.session_id, CR_SESSION_ID_BYTES);
  plan.digest_bytes = s->digest_bytes;
  plan.peer_n = s->peer_n;
  plan.peer_width = s->peer_w;
  plan.peer_grouped = s->peer_grouped;
  plan.members = s->members;
  plan.self_receives = s->self_receives;
  plan.peer_receives = s->peer_receives;
  if ((rc = cr_engine_prepare(s->eng, &plan)) != 0)
    return engine_fail(s, rc, "cannot make room for the partner's digests");
  s->recv = CR_STATE_EXPECT_SET;
  return 0;
}

/* ---- sets and digests --------------------------------------------------- */

static uint32_t get_u32be(const uint8_t *p) {
  return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}

static int on_batch(cr_session *s, const Cleanroom__V1__Batch *b) {
  size_t pb = cr_engine_point_bytes(s->eng), eb = pb * s->peer_w;
  if (b->seq != s->peer_batch_seq)
    return PROTO_FAIL(s, "the partner's Batch has sequence number %llu, expected %llu",
                      (unsigned long long)b->seq, (unsigned long long)s->peer_batch_seq);
  if (b->points.len == 0 || b->points.len % eb != 0)
    return PROTO_FAIL(s,
                      "the partner's Batch %llu holds %zu bytes, not a positive multiple "
                      "of the %zu-byte %s size",
                      (unsigned long long)b->seq, b->points.len, eb,
                      s->peer_w > 1 ? "record" : "point");
  uint64_t n = b->points.len / eb; /* elements */
  if (n > (s->peer_n * s->peer_w - s->peer_points) / s->peer_w)
    return PROTO_FAIL(s, "the partner sent more %s than the %llu it announced",
                      s->peer_w > 1 ? "records" : "points", (unsigned long long)s->peer_n);
  if (!s->peer_grouped && b->labels.len != 0)
    return PROTO_FAIL(s, "the partner sent labels for a side the query does not group");
  if (s->peer_grouped) {
    if (b->labels.len != 4 * n)
      return PROTO_FAIL(s, "the partner's Batch %llu has %zu label bytes for %llu %s",
                        (unsigned long long)b->seq, b->labels.len, (unsigned long long)n,
                        s->peer_w > 1 ? "records" : "points");
    for (uint64_t i = 0; i < n; i++) {
      uint32_t l = get_u32be(b->labels.data + 4 * i);
      if (l >= s->peer_nlabels ||
          s->peer_label_seen[l] >= s->res.label_sizes[cr_role_other(s->cfg.role)][l])
        return PROTO_FAIL(s,
                          "%s %llu of the partner's Batch %llu has label %u, unknown or "
                          "beyond the size announced for it",
                          s->peer_w > 1 ? "record" : "point", (unsigned long long)i,
                          (unsigned long long)b->seq, l);
      s->peer_label_seen[l]++;
    }
  }
  uint64_t bad = UINT64_MAX;
  int rc = cr_engine_reblind(s->eng, b->points.data, s->peer_grouped ? b->labels.data : NULL,
                             (size_t)n, &bad);
  if (rc == CR_EPROTO)
    return RULE_FAIL(s, rule_text(CR_RULE_POINT_INVALID),
                     "point %llu of the partner's Batch %llu is not a valid %s element "
                     "(non-canonical encoding or identity)",
                     (unsigned long long)bad, (unsigned long long)b->seq,
                     cr_engine_suite_name(s->eng));
  if (rc != 0)
    return engine_fail(s, rc, "cannot re-blind the partner's points");
  s->peer_points += n * s->peer_w;
  s->peer_batch_seq++;
  return 0;
}

static int on_end_of_set(cr_session *s, const Cleanroom__V1__EndOfSet *e) {
  if (e->count != s->peer_points || s->peer_points != s->peer_n * s->peer_w)
    return PROTO_FAIL(s,
                      "the partner announced %llu points, sent %llu and counted %llu in "
                      "EndOfSet",
                      (unsigned long long)(s->peer_n * s->peer_w),
                      (unsigned long long)s->peer_points, (unsigned long long)e->count);
  s->recv = s->self_receives ? CR_STATE_EXPECT_DIGESTS
            : s->noisy       ? CR_STATE_EXPECT_NOISE_SEED
                             : CR_STATE_EXPECT_RELEASED;
  /* The engine sorts: for matching, and (count) per label for return. */
  int rc = cr_engine_peer_done(s->eng);
  if (rc != 0)
    return engine_fail(s, rc, "cannot sort the partner's digests");
  return 0;
}

static int on_digests(cr_session *s, const Cleanroom__V1__Digests *d) {
  size_t l = s->digest_bytes;
  if (d->seq != s->own_digests_seq)
    return PROTO_FAIL(s, "the partner's Digests has sequence number %llu, expected %llu",
                      (unsigned long long)d->seq, (unsigned long long)s->own_digests_seq);
  int coded = d->gcs.len > 0 || d->gcs_count > 0;
  /* Records travel plain: their digests are not one sorted sequence. */
  if (coded && (d->digests.len != 0 || s->members || l > CR_GCS_MAX_BYTES || d->gcs_count == 0 ||
                s->own_w > 1))
    return PROTO_FAIL(s,
                      "the partner's Digests %llu mixes coded and plain digests, or codes "
                      "digests that cannot be",
                      (unsigned long long)d->seq);
  if (!coded && (d->digests.len == 0 || d->digests.len % l != 0))
    return PROTO_FAIL(s,
                      "the partner's Digests %llu holds %zu bytes, not a positive multiple "
                      "of the %zu-byte digest size",
                      (unsigned long long)d->seq, d->digests.len, l);
  uint64_t n = coded ? d->gcs_count : d->digests.len / l;
  if (n > s->own_n * s->own_w - s->own_digests_n)
    return PROTO_FAIL(s, "the partner returned more digests than the %llu points we sent",
                      (unsigned long long)(s->own_n * s->own_w));
  if (n % s->own_w != 0)
    return PROTO_FAIL(s,
                      "the partner's Digests %llu splits a record: %llu digests for records "
                      "of %zu",
                      (unsigned long long)d->seq, (unsigned long long)n, s->own_w);
  uint64_t ne = n / s->own_w; /* elements */
  /* Labels come in ascending order, each complete before the next. */
  if (d->label >= s->own_nlabels || d->label < s->own_label_cur)
    return PROTO_FAIL(s, "the partner returned digests for label %u out of order", d->label);
  if (d->label != s->own_label_cur) {
    if (s->own_label_got != s->own_buckets[s->own_label_cur])
      return PROTO_FAIL(s, "the partner moved on from label %u after %llu of its %llu digests",
                        s->own_label_cur, (unsigned long long)s->own_label_got,
                        (unsigned long long)s->own_buckets[s->own_label_cur]);
    s->own_label_cur = d->label;
    s->own_label_got = 0;
  }
  if (ne > s->own_buckets[d->label] - s->own_label_got)
    return PROTO_FAIL(s, "the partner returned more digests for label %u than it holds", d->label);
  const uint8_t *plain = d->digests.data;
  uint8_t *decoded = NULL;
  if (coded) {
    const char *why = "";
    const uint8_t *base =
        s->own_label_got > 0 && d->label == s->own_label_cur ? cr_engine_own_last(s->eng) : NULL;
    decoded = malloc((size_t)n * l);
    if (decoded == NULL)
      return fail(s, CR_ENOMEM, CR_WIRE_INTERNAL, 0, "out of memory");
    if (cr__gcs_decode(d->gcs.data, d->gcs.len, l, n, d->rice_k, base, decoded, &why) != 0) {
      free(decoded);
      return PROTO_FAIL(s, "the partner's coded Digests %llu do not decode: %s",
                        (unsigned long long)d->seq, why);
    }
    plain = decoded;
  }
  int rc = cr_engine_own_add(s->eng, plain, n, d->label, s->own_label_got > 0);
  if (decoded) {
    sodium_memzero(decoded, (size_t)n * l);
    free(decoded);
  }
  if (rc == CR_EPROTO)
    return RULE_FAIL(s, rule_text(CR_RULE_DIGEST_ORDER),
                     "the partner returned digests out of order: %s (Digests %llu)",
                     rule_text(CR_RULE_DIGEST_ORDER), (unsigned long long)d->seq);
  if (rc != 0)
    return engine_fail(s, rc, "cannot take our digests back");
  s->own_digests_n += n;
  s->own_label_got += ne;
  s->own_digests_seq++;
  return 0;
}

/* The engine matches and thresholds; the result takes its outputs. */
static int compute_result(cr_session *s) {
  cr_engine_result r;
  cr_role me = s->cfg.role;
  uint64_t *sizes[CR_ROLE_COUNT];
  sizes[me] = s->own_buckets;
  sizes[cr_role_other(me)] = s->res.label_sizes[cr_role_other(me)];
  /* A noisy query is thresholded after its noise (apply_noise): the
   * engine gives the exact numbers, which stay here until then. */
  uint64_t min_count = s->noisy ? 0 : s->query->min_count;
  int rc = cr_engine_match(s->eng, me, s->res.nlabels, sizes, s->res.grouped, min_count, &r);
  if (rc == CR_EPROTO) {
    const char *rule = rule_text(cr_engine_violation(s->eng));
    return RULE_FAIL(s, rule, "the partner broke a rule: %s; nothing is released", rule);
  }
  if (rc != 0)
    return engine_fail(s, rc, "cannot match");
  if (s->noisy) {
    /* Only the count (or the cells) is released with noise: a per-key
     * breakdown would be more numbers for the privacy budget, and exact
     * ones (docs/privacy.md); it stays here and is wiped with the rest. */
    s->exact = r;
    s->have_exact = 1;
    return 0;
  }
  s->res.count = r.count;
  s->res.suppressed = r.suppressed;
  s->res.cells = r.cells;
  s->res.ncells = r.ncells;
  s->res.matched = r.matched;
  s->res.matched_on = r.matched_on;
  s->res.nkeys = r.nkeys;
  for (size_t k = 0; k < r.nkeys; k++) {
    s->res.key_count[k] = r.key_count[k];
    s->res.key_suppressed[k] = r.key_suppressed[k];
  }
  return 0;
}

/* The exact value plus one draw of the query's noise, then min_count on
 * the noisy value (a negative one is 0, below any min_count >= 1). */
static int noisy_value(cr_session *s, const uint8_t seed[CR_SHA256_BYTES], uint64_t index,
                       uint64_t exact, uint64_t *count, int *suppressed) {
  cr_noise_stream st;
  int64_t x = 0;
  cr_noise_stream_init(&st, seed, index);
  int rc = cr_noise_sample(&s->query->noise, cr_noise_stream_read, &st, &x);
  cr_noise_stream_wipe(&st);
  if (rc != 0)
    return rc;
  uint64_t v;
  if (x >= 0)
    v = exact > UINT64_MAX - (uint64_t)x ? UINT64_MAX : exact + (uint64_t)x;
  else
    v = (uint64_t)0 - (uint64_t)x >= exact ? 0 : exact - ((uint64_t)0 - (uint64_t)x);
  *suppressed = v < s->query->min_count;
  *count = *suppressed ? 0 : v;
  return 0;
}

/*
 * Both shares are open: seed = SHA-256("cleanroom/v4/noise-seed" ||
 * session_id || runner's share || responder's share). Number i of the
 * release (the count: 0; cells: row-major index) gets the noise drawn from
 * the ChaCha20 stream of the seed with nonce i (cr_noise_stream), so the
 * numbers are independent and both sides draw the same. The seed and the
 * exact numbers are wiped.
 */
static int apply_noise(cr_session *s) {
  crypto_hash_sha256_state st;
  uint8_t seed[CR_SHA256_BYTES];
  const uint8_t *own = s->noise_share, *peer = s->peer_noise_share;
  int rc = 0;
  crypto_hash_sha256_init(&st);
  crypto_hash_sha256_update(&st, (const uint8_t *)NOISE_SEED_LABEL, sizeof NOISE_SEED_LABEL - 1);
  crypto_hash_sha256_update(&st, s->res.session_id, CR_SESSION_ID_BYTES);
  crypto_hash_sha256_update(&st, s->cfg.is_runner ? own : peer, CR_NOISE_SHARE_BYTES);
  crypto_hash_sha256_update(&st, s->cfg.is_runner ? peer : own, CR_NOISE_SHARE_BYTES);
  crypto_hash_sha256_final(&st, seed);
  sodium_memzero(&st, sizeof st);
  s->noise_applied = 1;
  if (s->self_receives) {
    if (!s->have_exact) {
      rc = CR_EINTERNAL;
    } else if (s->res.grouped) {
      for (size_t i = 0; rc == 0 && i < s->exact.ncells; i++) {
        cr_engine_cell *c = &s->exact.cells[i];
        rc = noisy_value(s, seed, i, c->count, &c->count, &c->suppressed);
      }
      if (rc == 0) {
        s->res.cells = s->exact.cells;
        s->res.ncells = s->exact.ncells;
        s->exact.cells = NULL;
        s->exact.ncells = 0;
      }
    } else {
      rc = noisy_value(s, seed, 0, s->exact.count, &s->res.count, &s->res.suppressed);
    }
  }
  sodium_memzero(seed, sizeof seed);
  wipe_noise(s);
  if (rc != 0)
    return fail(s, rc, CR_WIRE_INTERNAL, 0, "cannot draw the noise of the release (%s)",
                cr_strerror(rc));
  return 0;
}

static int on_end_of_digests(cr_session *s, const Cleanroom__V1__EndOfDigests *e) {
  if (e->count != s->own_digests_n || s->own_digests_n != s->own_n * s->own_w ||
      s->own_label_got != s->own_buckets[s->own_label_cur] ||
      s->own_label_cur + 1 != s->own_nlabels)
    return PROTO_FAIL(s,
                      "the partner returned %llu digests (EndOfDigests says %llu) for our "
                      "%llu points, or not all of a label's",
                      (unsigned long long)s->own_digests_n, (unsigned long long)e->count,
                      (unsigned long long)(s->own_n * s->own_w));
  s->recv = s->noisy ? CR_STATE_EXPECT_NOISE_SEED : CR_STATE_EXPECT_RELEASED;
  return compute_result(s);
}

/* ---- NoiseSeed (since v4) ------------------------------------------------- */

/* Our share, once every data frame both ways is done: the partner can no
 * longer change its set or its returned digests when it learns it. */
static int send_noise_seed(cr_session *s) {
  Cleanroom__V1__NoiseSeed n = CLEANROOM__V1__NOISE_SEED__INIT;
  Cleanroom__V1__Frame f = CLEANROOM__V1__FRAME__INIT;
  n.seed_share.data = s->noise_share;
  n.seed_share.len = sizeof s->noise_share;
  f.msg_case = CLEANROOM__V1__FRAME__MSG_NOISE_SEED;
  f.noise_seed = &n;
  int rc = send_frame(s, &f, 1);
  if (rc)
    return fail(s, rc, CR_WIRE_INTERNAL, 0, "cannot encode NoiseSeed");
  s->send = CR_SEND_RELEASED;
  return s->have_peer_noise_share ? apply_noise(s) : 0;
}

static int on_noise_seed(cr_session *s, const Cleanroom__V1__NoiseSeed *n) {
  uint8_t want[CR_SHA256_BYTES];
  if (n->seed_share.len != CR_NOISE_SHARE_BYTES)
    return PROTO_FAIL(s, "the partner's NoiseSeed holds %zu bytes, expected %d", n->seed_share.len,
                      CR_NOISE_SHARE_BYTES);
  noise_commitment(cr_role_other(s->cfg.role), n->seed_share.data, want);
  if (sodium_memcmp(want, s->peer_noise_commitment, CR_SHA256_BYTES) != 0)
    return RULE_FAIL(s, "the noise seed does not match its commitment",
                     "the partner opened a noise seed share that does not match the commitment "
                     "in its Hello; nothing is released");
  memcpy(s->peer_noise_share, n->seed_share.data, CR_NOISE_SHARE_BYTES);
  s->have_peer_noise_share = 1;
  s->recv = CR_STATE_EXPECT_RELEASED;
  return s->send > CR_SEND_NOISE_SEED ? apply_noise(s) : 0;
}

/* ---- Released, Finish --------------------------------------------------- */

/* Every data frame both ways is done: ours up to Released, the peer's too. */
static int data_complete(const cr_session *s) {
  return s->res.status == CR_SESSION_RUNNING && s->recv >= CR_STATE_EXPECT_RELEASED &&
         s->recv <= CR_STATE_DONE && s->send >= CR_SEND_RELEASED && (!s->noisy || s->noise_applied);
}

/* Recomputed on each call from copies of the running hashes: once the data
 * is complete no hashed frame changes them (Released, Finish and Error are
 * not hashed), so both calls (our Finish, the peer's) see the same value. */
static void ensure_transcript(cr_session *s) {
  crypto_hash_sha256_state tx = s->tx_hash, rx = s->rx_hash, st;
  uint8_t htx[CR_SHA256_BYTES], hrx[CR_SHA256_BYTES];
  crypto_hash_sha256_final(&tx, htx);
  crypto_hash_sha256_final(&rx, hrx);
  crypto_hash_sha256_init(&st);
  /* Runner's stream first, so both sides hash the same bytes. */
  crypto_hash_sha256_update(&st, s->cfg.is_runner ? htx : hrx, CR_SHA256_BYTES);
  crypto_hash_sha256_update(&st, s->cfg.is_runner ? hrx : htx, CR_SHA256_BYTES);
  crypto_hash_sha256_final(&st, s->transcript);
  memcpy(s->res.transcript_sha256, s->transcript, CR_SHA256_BYTES);
}

static void put_be(crypto_hash_sha256_state *st, uint64_t v, int bytes) {
  uint8_t b[8];
  for (int i = 0; i < bytes; i++)
    b[i] = (uint8_t)(v >> (8 * (bytes - 1 - i)));
  crypto_hash_sha256_update(st, b, (size_t)bytes);
}

/*
 * What this side was released, canonically (docs/protocol.md "Released"):
 * SHA-256("cleanroom/v3/released" || session_id || u8 role || u8 receives
 * [|| u8 grouped || (not grouped) u8 suppressed || u64 count [|| (several
 * keys, since v4) u8 nkeys || per key u8 suppressed || u64 count] |
 * (grouped) u32 ncells || per cell row-major u8 suppressed || u64 count]).
 * A members
 * release is hashed as its count: the matched records themselves stay out,
 * or the hash would let the partner test guesses about them.
 */
static void released_hash(const cr_session_result *res, cr_role role, int receives,
                          uint8_t out[CR_SHA256_BYTES]) {
  crypto_hash_sha256_state st;
  crypto_hash_sha256_init(&st);
  crypto_hash_sha256_update(&st, (const uint8_t *)RELEASED_LABEL, sizeof RELEASED_LABEL - 1);
  crypto_hash_sha256_update(&st, res->session_id, CR_SESSION_ID_BYTES);
  put_be(&st, (uint64_t)role, 1);
  put_be(&st, (uint64_t)(receives != 0), 1);
  if (receives) {
    put_be(&st, (uint64_t)(res->grouped != 0), 1);
    if (!res->grouped) {
      put_be(&st, (uint64_t)(res->suppressed != 0), 1);
      put_be(&st, res->suppressed ? 0 : res->count, 8);
      /* Since v4, several keys: the per-key breakdown. */
      if (res->nkeys > 1) {
        put_be(&st, (uint64_t)res->nkeys, 1);
        for (size_t k = 0; k < res->nkeys; k++) {
          put_be(&st, (uint64_t)(res->key_suppressed[k] != 0), 1);
          put_be(&st, res->key_suppressed[k] ? 0 : res->key_count[k], 8);
        }
      }
    } else {
      put_be(&st, (uint64_t)res->ncells, 4);
      for (size_t i = 0; i < res->ncells; i++) {
        put_be(&st, (uint64_t)(res->cells[i].suppressed != 0), 1);
        put_be(&st, res->cells[i].suppressed ? 0 : res->cells[i].count, 8);
      }
    }
  }
  crypto_hash_sha256_final(&st, out);
}

static void put_num(uint8_t *num, uint64_t v, int bytes) {
  for (int i = 0; i < bytes; i++)
    num[i] = (uint8_t)(v >> (8 * (bytes - 1 - i)));
}

int cr_session_receipt_message_v2(cr_buf *m, const uint8_t session_id[CR_SESSION_ID_BYTES],
                                  const uint8_t transcript[CR_SHA256_BYTES], const char *query,
                                  uint64_t n_runner, uint64_t n_responder) {
  uint8_t num[8];
  size_t qlen = strlen(query);
  int rc = cr_buf_append(m, RECEIPT_LABEL_V2, sizeof RECEIPT_LABEL_V2 - 1);
  rc = rc ? rc : cr_buf_append(m, session_id, CR_SESSION_ID_BYTES);
  rc = rc ? rc : cr_buf_append(m, transcript, CR_SHA256_BYTES);
  put_num(num, qlen, 4);
  rc = rc ? rc : cr_buf_append(m, num, 4);
  rc = rc ? rc : cr_buf_append(m, query, qlen);
  put_num(num, n_runner, 8);
  rc = rc ? rc : cr_buf_append(m, num, 8);
  put_num(num, n_responder, 8);
  rc = rc ? rc : cr_buf_append(m, num, 8);
  return rc;
}

int cr_session_receipt_message(cr_buf *m, const cr_session_receipt *r) {
  uint8_t num[8];
  size_t qlen = strlen(r->query);
  int rc = cr_buf_append(m, RECEIPT_LABEL, sizeof RECEIPT_LABEL - 1);
  num[0] = (uint8_t)r->signer;
  rc = rc ? rc : cr_buf_append(m, num, 1);
  for (int k = 0; k < CR_ROLE_COUNT; k++)
    rc = rc ? rc : cr_buf_append(m, r->cert_sha256[k], CR_SHA256_BYTES);
  rc = rc ? rc : cr_buf_append(m, r->template_sha256, CR_SHA256_BYTES);
  rc = rc ? rc : cr_buf_append(m, r->session_id, CR_SESSION_ID_BYTES);
  rc = rc ? rc : cr_buf_append(m, r->transcript, CR_SHA256_BYTES);
  put_num(num, qlen, 4);
  rc = rc ? rc : cr_buf_append(m, num, 4);
  rc = rc ? rc : cr_buf_append(m, r->query, qlen);
  put_num(num, r->n_runner, 8);
  rc = rc ? rc : cr_buf_append(m, num, 8);
  put_num(num, r->n_responder, 8);
  rc = rc ? rc : cr_buf_append(m, num, 8);
  for (int k = 0; k < CR_ROLE_COUNT; k++)
    rc = rc ? rc : cr_buf_append(m, r->released_sha256[k], CR_SHA256_BYTES);
  return rc;
}

/* The receipt of a result as signed by `signer`. */
static void result_receipt(const cr_session_result *res, const uint8_t template_sha256[32],
                           cr_role signer, cr_session_receipt *r) {
  cr_role me = res->role, peer = cr_role_other(res->role);
  memset(r, 0, sizeof *r);
  r->signer = signer;
  memcpy(r->cert_sha256[me], res->own_cert_sha256, CR_SHA256_BYTES);
  memcpy(r->cert_sha256[peer], res->peer_cert_sha256, CR_SHA256_BYTES);
  memcpy(r->template_sha256, template_sha256, CR_SHA256_BYTES);
  memcpy(r->session_id, res->session_id, CR_SESSION_ID_BYTES);
  memcpy(r->transcript, res->transcript_sha256, CR_SHA256_BYTES);
  r->query = res->query;
  r->n_runner = res->is_runner ? res->own_set_bucket : res->peer_set_size;
  r->n_responder = res->is_runner ? res->peer_set_size : res->own_set_bucket;
  memcpy(r->released_sha256, res->released_sha256, sizeof r->released_sha256);
}

void cr_session_peer_receipt(const cr_session_result *res, cr_session_receipt *r) {
  result_receipt(res, res->peer_template_sha256, cr_role_other(res->role), r);
}

static int receipt_message(const cr_session *s, cr_role signer, cr_buf *m) {
  cr_session_receipt r;
  result_receipt(&s->res, s->cfg.tmpl->sha256, signer, &r);
  return cr_session_receipt_message(m, &r);
}

static void maybe_done(cr_session *s) {
  if (s->res.status == CR_SESSION_RUNNING && s->send == CR_SEND_IDLE && s->recv == CR_STATE_DONE) {
    s->res.status = CR_SESSION_DONE;
    if (!s->self_receives) {
      s->res.count = 0;
      s->res.suppressed = 0;
      s->res.nkeys = 0;
    }
    release_engine(s);
  }
}

/* Our release, committed before either side signs, so each receipt covers
 * both releases. */
static int send_released(cr_session *s) {
  Cleanroom__V1__Released r = CLEANROOM__V1__RELEASED__INIT;
  Cleanroom__V1__Frame f = CLEANROOM__V1__FRAME__INIT;
  ensure_transcript(s);
  released_hash(&s->res, s->cfg.role, s->self_receives, s->res.released_sha256[s->cfg.role]);
  r.released_sha256.data = s->res.released_sha256[s->cfg.role];
  r.released_sha256.len = CR_SHA256_BYTES;
  f.msg_case = CLEANROOM__V1__FRAME__MSG_RELEASED;
  f.released = &r;
  int rc = send_frame(s, &f, 0);
  if (rc)
    return fail(s, rc, CR_WIRE_INTERNAL, 0, "cannot encode Released");
  s->send = CR_SEND_FINISH;
  return 0;
}

static int on_released(cr_session *s, const Cleanroom__V1__Released *r) {
  if (!data_complete(s))
    return PROTO_FAIL(s, "the partner sent Released before the session's data was complete");
  if (r->released_sha256.len != CR_SHA256_BYTES)
    return PROTO_FAIL(s, "the partner's Released holds %zu bytes, expected %d",
                      r->released_sha256.len, CR_SHA256_BYTES);
  /* A side not in results_to was released nothing: both know that hash. */
  if (!s->peer_receives) {
    uint8_t want[CR_SHA256_BYTES];
    released_hash(&s->res, cr_role_other(s->cfg.role), 0, want);
    if (sodium_memcmp(want, r->released_sha256.data, CR_SHA256_BYTES) != 0)
      return PROTO_FAIL(s, "the partner claims a release, but the query releases nothing to it");
  }
  /* Since v4: a result released to both sides is one result. Both hold the
   * same numbers (the same noisy ones, for a query with noise), so the
   * partner's commitment must be the hash of ours under its role. */
  if (s->peer_receives && s->self_receives) {
    uint8_t want[CR_SHA256_BYTES];
    released_hash(&s->res, cr_role_other(s->cfg.role), 1, want);
    if (sodium_memcmp(want, r->released_sha256.data, CR_SHA256_BYTES) != 0)
      return RULE_FAIL(s, "the two releases differ",
                       "the partner committed to a release that differs from ours (each side "
                       "must hold the same numbers); nothing is released");
  }
  memcpy(s->res.released_sha256[cr_role_other(s->cfg.role)], r->released_sha256.data,
         CR_SHA256_BYTES);
  s->have_peer_released = 1;
  s->recv = CR_STATE_EXPECT_FINISH;
  return 0;
}

static int send_finish(cr_session *s) {
  Cleanroom__V1__Finish fin = CLEANROOM__V1__FINISH__INIT;
  Cleanroom__V1__Frame f = CLEANROOM__V1__FRAME__INIT;
  uint8_t sig[CR_SIGNATURE_BYTES];
  cr_buf m;
  cr_buf_init(&m);
  ensure_transcript(s);
  int rc = receipt_message(s, s->cfg.role, &m);
  if (rc == 0)
    rc = s->cfg.sign(s->cfg.sign_ctx, m.data, m.len, sig);
  cr_buf_free(&m);
  if (rc != 0)
    return fail(s, CR_ECRYPTO, CR_WIRE_INTERNAL, 0, "cannot sign the session receipt");
  fin.transcript_sha256.data = s->transcript;
  fin.transcript_sha256.len = CR_SHA256_BYTES;
  fin.signature.data = sig;
  fin.signature.len = sizeof sig;
  f.msg_case = CLEANROOM__V1__FRAME__MSG_FINISH;
  f.finish = &fin;
  rc = send_frame(s, &f, 0);
  if (rc)
    return fail(s, rc, CR_WIRE_INTERNAL, 0, "cannot encode Finish");
  s->send = CR_SEND_IDLE;
  maybe_done(s);
  return 0;
}

static int on_finish(cr_session *s, const Cleanroom__V1__Finish *fin) {
  if (!data_complete(s) || s->send < CR_SEND_FINISH || !s->have_peer_released)
    return PROTO_FAIL(s, "the partner sent Finish before both releases were committed");
  ensure_transcript(s);
  if (fin->transcript_sha256.len != CR_SHA256_BYTES ||
      sodium_memcmp(fin->transcript_sha256.data, s->transcript, CR_SHA256_BYTES) != 0)
    return PROTO_FAIL(s, "the partner's transcript hash differs from ours: the two nodes did "
                         "not see the same session");
  if (fin->signature.len != CR_SIGNATURE_BYTES)
    return PROTO_FAIL(s, "the partner's receipt signature is %zu bytes, expected %d",
                      fin->signature.len, CR_SIGNATURE_BYTES);
  cr_buf m;
  cr_buf_init(&m);
  int rc = receipt_message(s, cr_role_other(s->cfg.role), &m);
  int bad = rc != 0 || crypto_sign_verify_detached(fin->signature.data, m.data, m.len,
                                                   s->cfg.peer_sign_pk) != 0;
  cr_buf_free(&m);
  if (bad)
    return PROTO_FAIL(s, "the partner's receipt signature does not verify against its "
                         "certificate");
  memcpy(s->res.peer_signature, fin->signature.data, CR_SIGNATURE_BYTES);
  s->recv = CR_STATE_DONE;
  maybe_done(s);
  return 0;
}

static int on_error(cr_session *s, const Cleanroom__V1__Error *e) {
  char text[400];
  copy_peer_text(text, sizeof text, e->message);
  /* Version 2 fields; absent (0 / empty) from an older peer or a refusal
   * sent before a session existed: keep what its Hello said, if anything. */
  if (e->protocol_version != 0)
    s->res.peer_protocol_version = e->protocol_version;
  if (e->template_sha256.len == CR_SHA256_BYTES) {
    memcpy(s->res.peer_template_sha256, e->template_sha256.data, CR_SHA256_BYTES);
    s->res.have_peer_template = 1;
  }
  int refusal = e->code >= CR_WIRE_VERSION && e->code <= CR_WIRE_SIZE;
  refusal = refusal || e->code == CR_WIRE_PARAMS || e->code == CR_WIRE_BUSY;
  /* The peer's text is fixed wording; the structured fields say what
   * differs. */
  char detail[200] = "";
  if (e->code == CR_WIRE_TEMPLATE_MISMATCH && e->template_sha256.len == CR_SHA256_BYTES) {
    /* Our own words from the structured field: the partner's text says
     * "ours" meaning its own (older nodes did), which read here is the
     * wrong way round. */
    char ours[65], theirs[65];
    hex32(ours, s->cfg.tmpl->sha256);
    hex32(theirs, e->template_sha256.data);
    return fail(s, CR_EPEER, (int)e->code, 1,
                "the partner refused the session (%s): the templates differ: this node (the "
                "%s) loaded %s, the partner loaded %s; both sides must load the same template "
                "(compare `cleanroom template hash`)",
                cr_wire_error_name((int)e->code), cr_role_name(s->cfg.role), ours, theirs);
  } else if (e->code == CR_WIRE_VERSION && e->protocol_version != 0) {
    snprintf(detail, sizeof detail, " (the partner speaks version %u, this node %u)",
             e->protocol_version, (unsigned)CR_PROTOCOL_VERSION);
  }
  return fail(s, CR_EPEER, (int)e->code, 1, "the partner %s the session (%s): %s%s",
              refusal ? "refused" : "aborted", cr_wire_error_name((int)e->code), text, detail);
}

/* ---- bytes in ----------------------------------------------------------- */

const char *cr_session_state_name(cr_session_state st) {
  switch (st) {
  case CR_STATE_EXPECT_HELLO:
    return "expecting Hello";
  case CR_STATE_EXPECT_SET:
    return "expecting Batch or EndOfSet";
  case CR_STATE_EXPECT_DIGESTS:
    return "expecting Digests or EndOfDigests";
  case CR_STATE_EXPECT_NOISE_SEED:
    return "expecting NoiseSeed";
  case CR_STATE_EXPECT_RELEASED:
    return "expecting Released";
  case CR_STATE_EXPECT_FINISH:
    return "expecting Finish";
  case CR_STATE_DONE:
    return "done";
  case CR_STATE_FAILED:
    return "failed";
  }
  return "unknown";
}

cr_session_state cr_session_state_get(const cr_session *s) { return s->recv; }

/* A frame the current state does not accept: the specific reason, then
 * the state by name. */
static int unexpected(cr_session *s, int msg) {
  const char *name = cr__frame_name(msg);
  const char *st_name = cr_session_state_name(s->recv);
  cr_session_state st = s->recv;
  if (st == CR_STATE_EXPECT_HELLO)
    return PROTO_FAIL(s, "the partner sent %s before Hello (this session is %s)", name, st_name);
  if (msg == CLEANROOM__V1__FRAME__MSG__NOT_SET)
    return PROTO_FAIL(s, "the partner sent a frame with no message in it");
  switch (msg) {
  case CLEANROOM__V1__FRAME__MSG_HELLO:
    return PROTO_FAIL(s, "the partner sent a second Hello (this session is %s)", st_name);
  case CLEANROOM__V1__FRAME__MSG_BATCH:
    return PROTO_FAIL(s, "the partner sent Batch after EndOfSet (this session is %s)", st_name);
  case CLEANROOM__V1__FRAME__MSG_END_OF_SET:
    return PROTO_FAIL(s, "the partner sent a second EndOfSet (this session is %s)", st_name);
  case CLEANROOM__V1__FRAME__MSG_DIGESTS:
    if (!s->self_receives)
      return PROTO_FAIL(s,
                        "the partner sent Digests, but this side receives no result of "
                        "query \"%s\" (this session is %s)",
                        s->query->name, st_name);
    if (st == CR_STATE_EXPECT_SET)
      return PROTO_FAIL(s, "the partner sent Digests before its EndOfSet (this session is %s)",
                        st_name);
    return PROTO_FAIL(s, "the partner sent Digests after EndOfDigests (this session is %s)",
                      st_name);
  case CLEANROOM__V1__FRAME__MSG_END_OF_DIGESTS:
    if (!s->self_receives || st == CR_STATE_EXPECT_SET)
      return PROTO_FAIL(s, "the partner sent EndOfDigests out of order (this session is %s)",
                        st_name);
    return PROTO_FAIL(s, "the partner sent a second EndOfDigests (this session is %s)", st_name);
  case CLEANROOM__V1__FRAME__MSG_NOISE_SEED:
    if (!s->noisy)
      return PROTO_FAIL(s,
                        "the partner sent NoiseSeed for query \"%s\", which has no noise (this "
                        "session is %s)",
                        s->query->name, st_name);
    if (st > CR_STATE_EXPECT_NOISE_SEED)
      return PROTO_FAIL(s, "the partner sent a second NoiseSeed (this session is %s)", st_name);
    return PROTO_FAIL(s,
                      "the partner sent NoiseSeed before the session's data was complete (this "
                      "session is %s)",
                      st_name);
  case CLEANROOM__V1__FRAME__MSG_RELEASED:
    if (st > CR_STATE_EXPECT_RELEASED)
      return PROTO_FAIL(s, "the partner sent a second Released (this session is %s)", st_name);
    return PROTO_FAIL(s,
                      "the partner sent Released before the session's data was complete (this "
                      "session is %s)",
                      st_name);
  case CLEANROOM__V1__FRAME__MSG_FINISH:
    if (st == CR_STATE_DONE)
      return PROTO_FAIL(s, "the partner sent a second Finish (this session is %s)", st_name);
    return PROTO_FAIL(s,
                      "the partner sent Finish before the session's data was complete (this "
                      "session is %s)",
                      st_name);
  default:
    return PROTO_FAIL(s, "the partner sent %s while this session is %s", name, st_name);
  }
}

static int dispatch(cr_session *s, const uint8_t *payload, size_t len, const uint8_t *raw,
                    size_t raw_len) {
  Cleanroom__V1__Frame *f = cr__frame_decode(payload, len);
  if (f == NULL)
    return PROTO_FAIL(s, "the partner sent %zu bytes that are not a valid frame", len);
  int rc = 0;
  int msg = f->msg_case;
  if (msg != CLEANROOM__V1__FRAME__MSG_FINISH && msg != CLEANROOM__V1__FRAME__MSG_ERROR &&
      msg != CLEANROOM__V1__FRAME__MSG_RELEASED)
    crypto_hash_sha256_update(&s->rx_hash, raw, raw_len);
  if (msg == CLEANROOM__V1__FRAME__MSG_ERROR) {
    /* Accepted in every state: the peer may give up at any point. */
    rc = on_error(s, f->error);
    goto out;
  }
  /* Each state accepts exactly its frames (picotls style). */
  switch (s->recv) {
  case CR_STATE_EXPECT_HELLO:
    if (msg == CLEANROOM__V1__FRAME__MSG_HELLO) {
      rc = on_hello(s, f->hello, payload, len);
      goto out;
    }
    break;
  case CR_STATE_EXPECT_SET:
    if (msg == CLEANROOM__V1__FRAME__MSG_BATCH) {
      rc = on_batch(s, f->batch);
      goto out;
    }
    if (msg == CLEANROOM__V1__FRAME__MSG_END_OF_SET) {
      rc = on_end_of_set(s, f->end_of_set);
      goto out;
    }
    break;
  case CR_STATE_EXPECT_DIGESTS:
    if (msg == CLEANROOM__V1__FRAME__MSG_DIGESTS) {
      rc = on_digests(s, f->digests);
      goto out;
    }
    if (msg == CLEANROOM__V1__FRAME__MSG_END_OF_DIGESTS) {
      rc = on_end_of_digests(s, f->end_of_digests);
      goto out;
    }
    break;
  case CR_STATE_EXPECT_NOISE_SEED:
    if (msg == CLEANROOM__V1__FRAME__MSG_NOISE_SEED) {
      rc = on_noise_seed(s, f->noise_seed);
      goto out;
    }
    break;
  case CR_STATE_EXPECT_RELEASED:
    if (msg == CLEANROOM__V1__FRAME__MSG_RELEASED) {
      rc = on_released(s, f->released);
      goto out;
    }
    break;
  case CR_STATE_EXPECT_FINISH:
    if (msg == CLEANROOM__V1__FRAME__MSG_FINISH) {
      rc = on_finish(s, f->finish);
      goto out;
    }
    break;
  case CR_STATE_DONE:
  case CR_STATE_FAILED:
    break;
  }
  rc = unexpected(s, msg);
out:
  cr__frame_free(f);
  return rc;
}

int cr_session_recv(cr_session *s, const uint8_t *data, size_t len) {
  if (s->res.status != CR_SESSION_RUNNING)
    return s->res.status == CR_SESSION_FAILED ? s->res.error : 0;
  s->res.bytes_received += len;
  int rc = cr_buf_append(&s->in, data, len);
  if (rc)
    return fail(s, rc, CR_WIRE_INTERNAL, 0, "out of memory for input");
  size_t off = 0;
  while (s->res.status == CR_SESSION_RUNNING) {
    const uint8_t *payload;
    size_t plen, total;
    uint32_t announced = 0;
    int r = cr__frame_peek(s->in.data + off, s->in.len - off, s->cfg.max_frame, &payload, &plen,
                           &total, &announced);
    if (r == 0)
      break;
    if (r < 0) {
      rc = PROTO_FAIL(s,
                      "the partner announced a frame of %u bytes; frames must be 1 to %zu "
                      "bytes",
                      announced, s->cfg.max_frame);
      break;
    }
    rc = dispatch(s, payload, plen, s->in.data + off, total);
    off += total;
  }
  cr_buf_consume(&s->in, off);
  if (s->res.status == CR_SESSION_FAILED)
    return s->res.error;
  return rc;
}

/* ---- bytes out ---------------------------------------------------------- */

int cr_session_start(cr_session *s) {
  /* Idempotent: only a runner that has not sent its Hello sends it. */
  if (!s->cfg.is_runner || s->send != CR_SEND_HELLO || s->res.status != CR_SESSION_RUNNING)
    return 0;
  return send_hello(s);
}

static int produce_batch(cr_session *s) {
  size_t pb = cr_engine_point_bytes(s->eng), w = s->own_w;
  /* batch_size points, whole elements (at least one). */
  uint64_t n = s->own_n - s->points_sent, per = s->cfg.batch_size / w ? s->cfg.batch_size / w : 1;
  if (n > per)
    n = per;
  uint8_t *points = malloc((size_t)n * w * pb);
  uint8_t *labels = s->own_grouped ? malloc((size_t)n * 4) : NULL;
  if (points == NULL || (s->own_grouped && labels == NULL)) {
    free(points);
    free(labels);
    return fail(s, CR_ENOMEM, CR_WIRE_INTERNAL, 0, "out of memory");
  }
  int rc = cr_engine_blind(s->eng, s->points_sent, (size_t)n, points, labels);
  if (rc == 0) {
    Cleanroom__V1__Batch b = CLEANROOM__V1__BATCH__INIT;
    Cleanroom__V1__Frame f = CLEANROOM__V1__FRAME__INIT;
    b.seq = s->batch_seq;
    b.points.data = points;
    b.points.len = (size_t)n * w * pb;
    if (labels) {
      b.labels.data = labels;
      b.labels.len = (size_t)n * 4;
    }
    f.msg_case = CLEANROOM__V1__FRAME__MSG_BATCH;
    f.batch = &b;
    rc = send_frame(s, &f, 1);
  }
  free(points);
  free(labels);
  if (rc)
    return engine_fail(s, rc, "cannot blind or encode our points");
  s->points_sent += n;
  s->batch_seq++;
  if (s->points_sent == s->own_n)
    s->send = CR_SEND_END_OF_SET;
  return 0;
}

static int produce_end_of_set(cr_session *s) {
  Cleanroom__V1__EndOfSet e = CLEANROOM__V1__END_OF_SET__INIT;
  Cleanroom__V1__Frame f = CLEANROOM__V1__FRAME__INIT;
  e.count = s->points_sent * s->own_w;
  f.msg_case = CLEANROOM__V1__FRAME__MSG_END_OF_SET;
  f.end_of_set = &e;
  int rc = send_frame(s, &f, 1);
  if (rc)
    return fail(s, rc, CR_WIRE_INTERNAL, 0, "cannot encode EndOfSet");
  s->send = s->peer_receives ? CR_SEND_DIGESTS : s->noisy ? CR_SEND_NOISE_SEED : CR_SEND_RELEASED;
  return 0;
}

/* One Digests frame: the next run of the peer's digests sharing a label. */
static int produce_digests(cr_session *s) {
  size_t l = s->digest_bytes, w = s->peer_w;
  uint64_t start = s->digests_sent, total = s->peer_n * w;
  size_t max = s->cfg.batch_size * 4 >= w ? s->cfg.batch_size * 4 : w, n = 0;
  uint32_t label = 0;
  if (s->ret_buf == NULL && (s->ret_buf = malloc(max * l)) == NULL)
    return fail(s, CR_ENOMEM, CR_WIRE_INTERNAL, 0, "out of memory");
  /* Whole elements (a record's digests stay in one frame), one label. */
  int rc = cr_engine_returned_next(s->eng, max, s->ret_buf, &n, &label);
  if (rc != 0)
    return engine_fail(s, rc, "cannot read the partner's digests back");
  if (n == 0 || n > total - start)
    return fail(s, CR_EINVAL, CR_WIRE_INTERNAL, 0,
                "the partner's digests to return number %llu, not the %llu received",
                (unsigned long long)start + n, (unsigned long long)total);
  Cleanroom__V1__Digests d = CLEANROOM__V1__DIGESTS__INIT;
  Cleanroom__V1__Frame f = CLEANROOM__V1__FRAME__INIT;
  d.seq = s->digests_seq;
  d.label = s->members ? 0 : label;
  cr_buf coded;
  cr_buf_init(&coded);
  if (!s->members && l <= CR_GCS_MAX_BYTES && w == 1) {
    /* Sorted and uniform: Golomb-Rice coded, from the previous frame's
     * last digest of the same label. */
    const uint8_t *base = start > 0 && s->ret_last_label == label ? s->ret_last : NULL;
    uint64_t run = s->res.label_sizes[cr_role_other(s->cfg.role)][label];
    unsigned k = cr__gcs_k(l, run);
    rc = cr__gcs_encode(&coded, s->ret_buf, l, l, n, k, base);
    d.gcs.data = coded.data;
    d.gcs.len = coded.len;
    d.gcs_count = n;
    d.rice_k = k;
  } else {
    d.digests.data = s->ret_buf;
    d.digests.len = n * l;
  }
  f.msg_case = CLEANROOM__V1__FRAME__MSG_DIGESTS;
  f.digests = &d;
  if (rc == 0)
    rc = send_frame(s, &f, 1);
  if (coded.data != NULL)
    sodium_memzero(coded.data, coded.len); /* the digests, coded */
  cr_buf_free(&coded);
  memcpy(s->ret_last, s->ret_buf + (n - 1) * l, l);
  s->ret_last_label = label;
  sodium_memzero(s->ret_buf, n * l);
  if (rc)
    return fail(s, rc, CR_WIRE_INTERNAL, 0, "cannot encode Digests");
  s->digests_sent += n;
  s->digests_seq++;
  if (s->digests_sent == total)
    s->send = CR_SEND_END_OF_DIGESTS;
  return 0;
}

static int produce_end_of_digests(cr_session *s) {
  Cleanroom__V1__EndOfDigests e = CLEANROOM__V1__END_OF_DIGESTS__INIT;
  Cleanroom__V1__Frame f = CLEANROOM__V1__FRAME__INIT;
  e.count = s->digests_sent;
  f.msg_case = CLEANROOM__V1__FRAME__MSG_END_OF_DIGESTS;
  f.end_of_digests = &e;
  int rc = send_frame(s, &f, 1);
  if (rc)
    return fail(s, rc, CR_WIRE_INTERNAL, 0, "cannot encode EndOfDigests");
  s->send = s->noisy ? CR_SEND_NOISE_SEED : CR_SEND_RELEASED;
  s->res.digests_returned = 1;
  return 0;
}

/* The send state when its frame can be produced now; CR_SEND_IDLE when
 * nothing can (done, or waiting on the peer). */
static cr_send_state next_step(const cr_session *s) {
  if (s->res.status != CR_SESSION_RUNNING || s->recv == CR_STATE_EXPECT_HELLO)
    return CR_SEND_IDLE;
  switch (s->send) {
  case CR_SEND_SET:
  case CR_SEND_END_OF_SET:
    return s->send;
  case CR_SEND_DIGESTS:
  case CR_SEND_END_OF_DIGESTS:
    /* The peer's digests are sorted only once its whole set is in. */
    return s->recv > CR_STATE_EXPECT_SET ? s->send : CR_SEND_IDLE;
  case CR_SEND_NOISE_SEED:
    /* Every data frame both ways: ours are out (this state), the peer's
     * are in (its NoiseSeed may even be in already). */
    return s->recv >= CR_STATE_EXPECT_NOISE_SEED && s->recv <= CR_STATE_DONE ? CR_SEND_NOISE_SEED
                                                                             : CR_SEND_IDLE;
  case CR_SEND_RELEASED:
    return data_complete(s) ? CR_SEND_RELEASED : CR_SEND_IDLE;
  case CR_SEND_FINISH:
    /* Both releases committed: ours sent, the peer's received. */
    return s->have_peer_released ? CR_SEND_FINISH : CR_SEND_IDLE;
  case CR_SEND_HELLO: /* sent by start (runner) or on the runner's Hello */
  case CR_SEND_IDLE:
    break;
  }
  return CR_SEND_IDLE;
}

int cr_session_want_send(const cr_session *s) {
  return s->out.len > 0 || next_step(s) != CR_SEND_IDLE;
}

int cr_session_send(cr_session *s, const uint8_t **data, size_t *len) {
  cr_send_state step;
  /* Queued bytes go out first: producing more (blinding) before returning
   * them would hold e.g. the Hello reply back behind a batch of work. */
  if (s->out.len == 0) {
    while (s->out.len < CR_OUT_CHUNK && (step = next_step(s)) != CR_SEND_IDLE) {
      int rc = 0;
      switch (step) {
      case CR_SEND_SET:
        rc = produce_batch(s);
        break;
      case CR_SEND_END_OF_SET:
        rc = produce_end_of_set(s);
        break;
      case CR_SEND_DIGESTS:
        rc = produce_digests(s);
        break;
      case CR_SEND_END_OF_DIGESTS:
        rc = produce_end_of_digests(s);
        break;
      case CR_SEND_NOISE_SEED:
        rc = send_noise_seed(s);
        break;
      case CR_SEND_RELEASED:
        rc = send_released(s);
        break;
      case CR_SEND_FINISH:
        rc = send_finish(s);
        break;
      case CR_SEND_HELLO:
      case CR_SEND_IDLE:
        break;
      }
      if (rc)
        break;
    }
  }
  *data = s->out.data;
  *len = s->out.len;
  return s->res.status == CR_SESSION_FAILED && s->out.len == 0 ? s->res.error : 0;
}

void cr_session_sent(cr_session *s, size_t n) {
  if (n > s->out.len)
    n = s->out.len;
  s->res.bytes_sent += n;
  cr_buf_consume(&s->out, n);
}

void cr_session_progress_get(const cr_session *s, cr_session_progress *p) {
  memset(p, 0, sizeof *p);
  p->own_sent = s->points_sent * s->own_w;
  p->own_total = s->own_n * s->own_w;
  p->peer_received = s->peer_points;
  p->peer_total = s->peer_n * s->peer_w;
  p->digests_received = s->own_digests_n;
  p->digests_due = s->self_receives ? s->own_n * s->own_w : 0;
  p->query = s->res.query;
  if (s->res.status != CR_SESSION_RUNNING)
    p->phase = "done";
  else if (s->recv == CR_STATE_EXPECT_HELLO)
    p->phase = "hello";
  else if (s->send <= CR_SEND_END_OF_SET ||
           (s->recv == CR_STATE_EXPECT_SET && s->peer_points < s->peer_n * s->peer_w))
    p->phase = "exchanging sets";
  /* The engine's tables (sorters, spilled beyond the memory budget): the
   * partner's set is in and sorted at its EndOfSet, the first digests back
   * come from merging the runs; our digests all back, the merge-join. */
  else if (s->recv == CR_STATE_EXPECT_SET || (s->send == CR_SEND_DIGESTS && s->digests_sent == 0))
    p->phase = "sorting";
  else if (s->recv == CR_STATE_EXPECT_DIGESTS && s->own_digests_n == s->own_n * s->own_w)
    p->phase = "matching";
  else if (s->recv == CR_STATE_EXPECT_DIGESTS || s->send == CR_SEND_DIGESTS ||
           s->send == CR_SEND_END_OF_DIGESTS)
    p->phase = "returning digests";
  else
    p->phase = "finishing";
}

/* For a node serving several collaborations (net/node.c routes a
 * connection before its session exists): only reads which template the
 * runner's Hello names. No state, no check; the session created next
 * decodes the same frame again and checks everything. */
int cr_session_hello_template(const uint8_t *payload, size_t len, uint8_t out[CR_SHA256_BYTES]) {
  Cleanroom__V1__Frame *f = cr__frame_decode(payload, len);
  int rc = CR_EPROTO;
  if (f != NULL && f->msg_case == CLEANROOM__V1__FRAME__MSG_HELLO && f->hello != NULL &&
      f->hello->template_sha256.len == CR_SHA256_BYTES) {
    memcpy(out, f->hello->template_sha256.data, CR_SHA256_BYTES);
    rc = 0;
  }
  cr__frame_free(f);
  return rc;
}
