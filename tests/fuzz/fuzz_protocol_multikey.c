/*
 * Fuzz target: a responder session under a template with two match keys,
 * fed arbitrary bytes from its peer. The first input byte picks how much
 * valid protocol precedes the fuzzed bytes (byte % 3: none, a valid Hello,
 * Hello and the whole set and EndOfSet) and which side's records are
 * counted ((byte / 3) % 2: the peer's, so its Batch frames carry records
 * of two points; or ours, so the digests it returns are records). The
 * session must never crash, leak, or report a result it did not complete.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "cleanroom/protocol.h"
#include "protocol/frame.h"

/* The peer's set: 4 elements (a bucket of the ladder 4, 8, ...). */
#define N_PEER 4

static int sign_cb(void *ctx, const uint8_t *msg, size_t len, uint8_t sig[64]) {
  return crypto_sign_detached(sig, NULL, msg, len, ctx);
}

static void append_hello(cr_buf *b, const uint8_t sha[32], uint32_t record_keys) {
  Cleanroom__V1__Hello m = CLEANROOM__V1__HELLO__INIT;
  Cleanroom__V1__Frame f = CLEANROOM__V1__FRAME__INIT;
  uint8_t nonce[32] = {7};
  m.protocol_version = CR_PROTOCOL_VERSION;
  m.role = "consumer";
  m.template_sha256.data = (uint8_t *)sha;
  m.template_sha256.len = 32;
  m.query = "overlap";
  m.suite = "ristretto255";
  m.set_size = N_PEER;
  m.record_keys = record_keys;
  m.nonce.data = nonce;
  m.nonce.len = 32;
  f.msg_case = CLEANROOM__V1__FRAME__MSG_HELLO;
  f.hello = &m;
  (void)cr__frame_append(b, &f);
}

static void append_set(cr_buf *b, size_t width) {
  uint8_t pts[32 * N_PEER * 2], k[32];
  size_t n = N_PEER * width;
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

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static uint8_t pk[32], sk[64];
  static int init;
  if (!init) {
    if (cr_crypto_init() != 0)
      abort();
    crypto_sign_keypair(pk, sk);
    init = 1;
  }
  int level = size > 0 ? data[0] % 3 : 0;
  int ours_counted = size > 0 ? (data[0] / 3) % 2 : 0;
  if (size > 0) {
    data++;
    size--;
  }
  cr_query q = {0};
  q.name = "overlap";
  q.kind = CR_QUERY_COUNT;
  q.run_by = CR_ROLE_BIT(CR_ROLE_CONSUMER);
  q.results_to = CR_ROLE_BIT(CR_ROLE_CONSUMER) | CR_ROLE_BIT(CR_ROLE_PROVIDER);
  q.min_count = 1;
  cr_template t;
  memset(&t, 0, sizeof t);
  t.suite = "ristretto255";
  t.match_keys[0].name = "email";
  t.match_keys[1].name = "phone";
  t.nmatch_keys = 2;
  t.count_of = ours_counted ? CR_ROLE_PROVIDER : CR_ROLE_CONSUMER;
  t.queries = &q;
  t.nqueries = 1;
  memset(t.sha256, 0x22, sizeof t.sha256);
  t.limits.size_buckets.floor = 4;
  t.limits.size_buckets.ratio = 2.0;

  /* Our set: values a@x.example (e-mail), +15550000001 and +15550000002
   * (phones); as records {e-mail, first phone} and {none, second phone}
   * when ours are counted, else the three values. */
  uint8_t bytes[] = "a@x.example"
                    "+15550000001"
                    "+15550000002";
  size_t off[] = {0, 11, 23, 35};
  uint8_t value_key[] = {0, 1, 1};
  uint32_t slots[] = {0, 1, CR_DATASET_NO_VALUE, 2};
  uint32_t value_record[] = {0, 0, 1};
  cr_dataset d;
  memset(&d, 0, sizeof d);
  d.bytes = bytes;
  d.off = off;
  d.nkeys = 2;
  d.nvalues = 3;
  d.value_key = value_key;
  if (ours_counted) {
    d.n = 2;
    d.width = 2;
    d.slots = slots;
    d.value_record = value_record;
  } else {
    d.n = 3;
    d.width = 1;
  }

  cr_session_config c = {0};
  c.tmpl = &t;
  c.data = &d;
  c.role = CR_ROLE_PROVIDER;
  c.sign = sign_cb;
  c.sign_ctx = sk;
  c.max_frame = 1 << 16;
  memcpy(c.peer_sign_pk, pk, 32);
  cr_session *s = NULL;
  if (cr_session_new(&s, &c, NULL) != 0)
    abort();

  cr_buf prefix;
  cr_buf_init(&prefix);
  size_t peer_w = ours_counted ? 1 : 2;
  if (level >= 1)
    append_hello(&prefix, t.sha256, peer_w > 1 ? (uint32_t)peer_w : 0);
  if (level >= 2)
    append_set(&prefix, peer_w);
  if (prefix.len)
    (void)cr_session_recv(s, prefix.data, prefix.len);
  size_t half = size / 2;
  (void)cr_session_recv(s, data, half);
  const uint8_t *out;
  size_t out_len;
  (void)cr_session_send(s, &out, &out_len);
  cr_session_sent(s, out_len);
  (void)cr_session_recv(s, data + half, size - half);
  (void)cr_session_send(s, &out, &out_len);

  const cr_session_result *r = cr_session_result_get(s);
  /* No fuzzed session may complete: the peer's receipt cannot be forged. */
  if (r->status == CR_SESSION_DONE)
    abort();
  cr_session_free(s);
  cr_buf_free(&prefix);
  return 0;
}
