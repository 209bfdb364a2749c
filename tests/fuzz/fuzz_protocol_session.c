/*
 * Fuzz target: a responder session fed arbitrary bytes from its peer.
 * The first input byte picks how much valid protocol precedes the fuzzed
 * bytes (% 3 == 0: none, 1: a valid Hello, 2: Hello and the whole set and
 * EndOfSet), so the fuzzer reaches every state; values 3 to 5 (mod 6) do
 * the same for a query with noise (protocol v4: the Hello carries a noise
 * seed commitment, and NoiseSeed frames are expected after the data). The session must never
 * crash, leak, or report a result it did not complete.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "cleanroom/protocol.h"
#include "protocol/frame.h"

/* The peer's set: a value of the template's size ladder (protocol v3 sends
 * buckets only), which the fuzz template sets to 4, 8, 16, ... */
#define N_PEER 4

static int sign_cb(void *ctx, const uint8_t *msg, size_t len, uint8_t sig[64]) {
  return crypto_sign_detached(sig, NULL, msg, len, ctx);
}

/* The fuzzing peer's (consumer's) noise seed share is 32 bytes of 3:
 * commitment SHA-256("cleanroom/v4/noise-commit" || u8 1 || share). */
static void noise_commitment(uint8_t out[32]) {
  static const char label[] = "cleanroom/v4/noise-commit";
  uint8_t msg[sizeof label - 1 + 1 + 32];
  memcpy(msg, label, sizeof label - 1);
  msg[sizeof label - 1] = 1;
  memset(msg + sizeof label, 3, 32);
  crypto_hash_sha256(out, msg, sizeof msg);
}

static void append_hello(cr_buf *b, const uint8_t sha[32], int noisy) {
  Cleanroom__V1__Hello m = CLEANROOM__V1__HELLO__INIT;
  Cleanroom__V1__Frame f = CLEANROOM__V1__FRAME__INIT;
  uint8_t nonce[32] = {7}, commitment[32];
  if (noisy) {
    noise_commitment(commitment);
    m.noise_commitment.data = commitment;
    m.noise_commitment.len = 32;
  }
  m.protocol_version = CR_PROTOCOL_VERSION;
  m.role = "consumer";
  m.template_sha256.data = (uint8_t *)sha;
  m.template_sha256.len = 32;
  m.query = "overlap";
  m.suite = "ristretto255";
  m.set_size = N_PEER;
  m.nonce.data = nonce;
  m.nonce.len = 32;
  f.msg_case = CLEANROOM__V1__FRAME__MSG_HELLO;
  f.hello = &m;
  (void)cr__frame_append(b, &f);
}

static void append_set(cr_buf *b) {
  uint8_t pts[32 * N_PEER], k[32];
  memset(k, 0, sizeof k);
  k[0] = 5;
  for (int i = 0; i < N_PEER; i++) {
    uint8_t msg = (uint8_t)i;
    (void)cr_suite_ristretto255.hash_blind(pts + 32 * i, k, &msg, 1);
  }
  Cleanroom__V1__Batch m = CLEANROOM__V1__BATCH__INIT;
  Cleanroom__V1__Frame f = CLEANROOM__V1__FRAME__INIT;
  m.points.data = pts;
  m.points.len = sizeof pts;
  f.msg_case = CLEANROOM__V1__FRAME__MSG_BATCH;
  f.batch = &m;
  (void)cr__frame_append(b, &f);
  Cleanroom__V1__EndOfSet e = CLEANROOM__V1__END_OF_SET__INIT;
  Cleanroom__V1__Frame f2 = CLEANROOM__V1__FRAME__INIT;
  e.count = N_PEER;
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
  cr_query q = {0};
  q.name = "overlap";
  q.kind = CR_QUERY_COUNT;
  q.run_by = CR_ROLE_BIT(CR_ROLE_CONSUMER);
  q.results_to = CR_ROLE_BIT(CR_ROLE_CONSUMER) | CR_ROLE_BIT(CR_ROLE_PROVIDER);
  q.min_count = 1;
  cr_template t = {0};
  t.suite = "ristretto255";
  t.match_key.name = "email";
  t.queries = &q;
  t.nqueries = 1;
  memset(t.sha256, 0x11, sizeof t.sha256);
  t.limits.size_buckets.floor = 4;
  t.limits.size_buckets.ratio = 2.0;
  uint8_t bytes[] = "a@x.example"
                    "b@x.example";
  size_t off[] = {0, 11, 22};
  cr_dataset d = {0};
  d.n = 2;
  d.bytes = bytes;
  d.off = off;

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
  if (cr_session_start(s) != 0)
    abort();

  int mode = size > 0 ? data[0] % 6 : 0, noisy = mode >= 3;
  mode %= 3;
  if (noisy) {
    q.noise.mechanism = CR_NOISE_DISCRETE_LAPLACE;
    q.noise.epsilon = 500000;
  }
  cr_buf prefix;
  cr_buf_init(&prefix);
  if (size > 0) {
    data++;
    size--;
  }
  if (mode >= 1)
    append_hello(&prefix, t.sha256, noisy);
  if (mode >= 2)
    append_set(&prefix);
  if (prefix.len)
    (void)cr_session_recv(s, prefix.data, prefix.len);
  /* Feed in two pieces to exercise reassembly. */
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
  cr_buf_free(&prefix);
  return 0;
}
