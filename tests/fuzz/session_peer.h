/*
 * Shared by the session fuzz targets (fuzz_protocol_session.c,
 * fuzz_protocol_multikey.c): a responder (provider) session whose peer, the
 * consumer, is the fuzzer. The target builds its template and data, may
 * prefix the fuzzed bytes with valid frames (a Hello, the whole set and
 * EndOfSet) so the fuzzer reaches every state, and hands the bytes to
 * fz_feed, which checks that no fuzzed session ever completes.
 */
#ifndef CR_TESTS_FUZZ_SESSION_PEER_H
#define CR_TESTS_FUZZ_SESSION_PEER_H

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "cleanroom/protocol.h"
#include "protocol/frame.h"

/* The peer's set: 4 elements, a value of the size ladder (protocol v3 sends
 * buckets only) that the fuzz templates set to 4, 8, 16, ... */
#define FZ_N_PEER 4
/* The widest record the peer sends (two match keys). */
#define FZ_MAX_WIDTH 2

static int fz_sign_cb(void *ctx, const uint8_t *msg, size_t len, uint8_t sig[64]) {
  return crypto_sign_detached(sig, NULL, msg, len, ctx);
}

/* The query the peer runs: "overlap", a count for both sides. */
static void fz_overlap_query(cr_query *q) {
  memset(q, 0, sizeof *q);
  q->name = "overlap";
  q->kind = CR_QUERY_COUNT;
  q->run_by = CR_ROLE_BIT(CR_ROLE_CONSUMER);
  q->results_to = CR_ROLE_BIT(CR_ROLE_CONSUMER) | CR_ROLE_BIT(CR_ROLE_PROVIDER);
  q->min_count = 1;
}

/* A ristretto255 template with one query, q, whose hash is 32 bytes of
 * sha_byte and whose size ladder is 4, 8, 16, ...; the target names its
 * match keys. */
static void fz_template(cr_template *t, cr_query *q, uint8_t sha_byte) {
  fz_overlap_query(q);
  memset(t, 0, sizeof *t);
  t->suite = "ristretto255";
  t->queries = q;
  t->nqueries = 1;
  memset(t->sha256, sha_byte, sizeof t->sha256);
  t->limits.size_buckets.floor = 4;
  t->limits.size_buckets.ratio = 2.0;
}

/* The peer's Hello for "overlap" with FZ_N_PEER elements; noise_commitment
 * (32 bytes) or NULL; record_keys 0 for single points. */
static void fz_append_hello(cr_buf *b, const uint8_t sha[32], const uint8_t *noise_commitment,
                            uint32_t record_keys) {
  Cleanroom__V1__Hello m = CLEANROOM__V1__HELLO__INIT;
  Cleanroom__V1__Frame f = CLEANROOM__V1__FRAME__INIT;
  uint8_t nonce[32] = {7};
  if (noise_commitment != NULL) {
    m.noise_commitment.data = (uint8_t *)noise_commitment;
    m.noise_commitment.len = 32;
  }
  m.protocol_version = CR_PROTOCOL_VERSION;
  m.role = "consumer";
  m.template_sha256.data = (uint8_t *)sha;
  m.template_sha256.len = 32;
  m.query = "overlap";
  m.suite = "ristretto255";
  m.set_size = FZ_N_PEER;
  m.record_keys = record_keys;
  m.nonce.data = nonce;
  m.nonce.len = 32;
  f.msg_case = CLEANROOM__V1__FRAME__MSG_HELLO;
  f.hello = &m;
  (void)cr__frame_append(b, &f);
}

/* The peer's whole set: one Batch of FZ_N_PEER elements of width points
 * each (1 to FZ_MAX_WIDTH), then EndOfSet. */
static void fz_append_set(cr_buf *b, size_t width) {
  uint8_t pts[32 * FZ_N_PEER * FZ_MAX_WIDTH], k[32];
  size_t n = FZ_N_PEER * width;
  if (width < 1 || width > FZ_MAX_WIDTH)
    abort();
  memset(k, 0, sizeof k);
  k[0] = 5;
  for (size_t i = 0; i < n; i++) {
    uint8_t msg = (uint8_t)i;
    (void)cr_suite_ristretto255.hash_blind(pts + 32 * i, k, &msg, 1);
  }
  Cleanroom__V1__Batch m = CLEANROOM__V1__BATCH__INIT;
  Cleanroom__V1__Frame f = CLEANROOM__V1__FRAME__INIT;
  m.points.data = pts;
  m.points.len = 32 * n;
  f.msg_case = CLEANROOM__V1__FRAME__MSG_BATCH;
  f.batch = &m;
  (void)cr__frame_append(b, &f);
  Cleanroom__V1__EndOfSet e = CLEANROOM__V1__END_OF_SET__INIT;
  Cleanroom__V1__Frame f2 = CLEANROOM__V1__FRAME__INIT;
  e.count = n;
  f2.msg_case = CLEANROOM__V1__FRAME__MSG_END_OF_SET;
  f2.end_of_set = &e;
  (void)cr__frame_append(b, &f2);
}

/* Our (the provider's) started session over t and d; the peer's signing key
 * is one the fuzzer does not hold, so it cannot forge the receipt. */
static cr_session *fz_session_new(const cr_template *t, const cr_dataset *d) {
  static uint8_t pk[32], sk[64];
  static int init;
  if (!init) {
    if (cr_crypto_init() != 0)
      abort();
    crypto_sign_keypair(pk, sk);
    init = 1;
  }
  cr_session_config c = {0};
  c.tmpl = t;
  c.data = d;
  c.role = CR_ROLE_PROVIDER;
  c.sign = fz_sign_cb;
  c.sign_ctx = sk;
  c.max_frame = 1 << 16;
  memcpy(c.peer_sign_pk, pk, 32);
  cr_session *s = NULL;
  if (cr_session_new(&s, &c, NULL) != 0)
    abort();
  if (cr_session_start(s) != 0)
    abort();
  return s;
}

/* Feeds s the valid prefix, then the fuzzed bytes in two pieces (to
 * exercise reassembly), sending between them; aborts if the session
 * completed, then frees s and the prefix. */
static void fz_feed(cr_session *s, cr_buf *prefix, const uint8_t *data, size_t size) {
  if (prefix->len)
    (void)cr_session_recv(s, prefix->data, prefix->len);
  size_t half = size / 2;
  (void)cr_session_recv(s, data, half);
  const uint8_t *out;
  size_t out_len;
  (void)cr_session_send(s, &out, &out_len);
  cr_session_sent(s, out_len);
  (void)cr_session_recv(s, data + half, size - half);
  (void)cr_session_send(s, &out, &out_len);

  const cr_session_result *r = cr_session_result_get(s);
  /* A fuzzer cannot forge our peer's receipt signature, so no fuzzed
   * session may ever complete. */
  if (r->status == CR_SESSION_DONE)
    abort();
  cr_session_free(s);
  cr_buf_free(prefix);
}

#endif
