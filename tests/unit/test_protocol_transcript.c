/*
 * Transcript known-answer tests: two sessions back to back in memory, with
 * fixed signing keys and injected deterministic randomness, must send
 * exactly the frames recorded in tests/vectors/transcript_<case>.txt, byte
 * for byte, and reach the recorded session id and result.
 *
 * Vector file format (one file per case; '#' lines are comments; every
 * other line is "key = value", in this order):
 *   case = <name>                  count | group_by | members | noise | noise_group_by
 *   query = <query name>
 *   protocol_version = <n>         CR_PROTOCOL_VERSION the file was made with
 *   session_id = <hex>
 *   transcript_sha256 = <hex>
 *   consumer.count = <n>           (likewise provider.*; count, suppressed)
 *   consumer.suppressed = <0|1>
 *   consumer.cells = <p>:<c>=<count>[s] ...   (group_by; s: suppressed)
 *   consumer.matched = <hex>                  (members bitmap)
 *   consumer.by_key = <key>=<count>[s] ...    (several match keys)
 *   c2p.<i> = <hex>                the i-th frame the consumer (runner) sent,
 *                                  4-byte length prefix included
 *   p2c.<i> = <hex>                the i-th frame the provider sent
 * The test renders the run in this format and compares it with the file.
 *
 * Fixed inputs: template as built below (sha256 = 32 x 0xab, size buckets
 * floor 16 ratio 2), provider keys
 * user0..user11, consumer keys user6..user19 (see support/memdata.h; labels seg<i % 3>), batch_size
 * 5, Ed25519 keys from crypto_sign_seed_keypair(seed = 32 x 0x01 provider, 32 x 0x02 consumer);
 * randomness: call number i (from 0) of a side's rand returns the first len bytes of ChaCha20(key,
 * nonce = u64le(i)), key = 32 bytes {side, seed, 0...} (side 'P' or 'C', seed 1).
 *
 * The multikey case: tests/support/multikey.h's template (two match keys,
 * count_of consumer, min_count 1) and data, query overlap, with the same
 * keys, randomness and batch size.
 *
 * Regenerate (after an intended wire change; bump the version and say so in
 * docs/protocol.md): CR_REGENERATE_VECTORS=1 ./test_protocol_transcript, or
 * ./test_protocol_transcript --regenerate.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <sodium.h>

#include "cleanroom/protocol.h"
#include "support/memdata.h"
#include "support/multikey.h"
#include "protocol/frame.h"

static int g_regenerate;

typedef struct party {
  uint8_t pk[crypto_sign_PUBLICKEYBYTES];
  uint8_t sk[crypto_sign_SECRETKEYBYTES];
} party;

static int sign_cb(void *ctx, const uint8_t *msg, size_t len, uint8_t sig[64]) {
  party *p = ctx;
  return crypto_sign_detached(sig, NULL, msg, len, p->sk);
}

typedef struct stream {
  uint8_t key[crypto_stream_chacha20_KEYBYTES];
  uint64_t calls;
} stream;

static int stream_rand(void *ctx, uint8_t *buf, size_t len) {
  stream *s = ctx;
  uint8_t nonce[crypto_stream_chacha20_NONCEBYTES];
  for (size_t i = 0; i < sizeof nonce; i++)
    nonce[i] = (uint8_t)(s->calls >> (8 * i));
  s->calls++;
  return crypto_stream_chacha20(buf, len, nonce, s->key) == 0 ? 0 : CR_ECRYPTO;
}

static char *dup_str(const char *s) {
  char *d = malloc(strlen(s) + 1);
  strcpy(d, s);
  return d;
}

static cr_template *make_template(void) {
  cr_template *t = calloc(1, sizeof *t);
  t->name = dup_str("transcript");
  t->suite = dup_str("ristretto255");
  t->match_key.name = dup_str("email");
  t->nqueries = 5;
  t->queries = calloc(5, sizeof *t->queries);
  const char *names[5] = {"overlap", "by_segment", "my_matches", "noisy_overlap",
                          "noisy_by_segment"};
  for (int i = 0; i < 5; i++) {
    t->queries[i].name = dup_str(names[i]);
    t->queries[i].kind = CR_QUERY_COUNT;
    t->queries[i].min_count = 2;
    t->queries[i].run_by = CR_ROLE_BIT(CR_ROLE_CONSUMER);
    t->queries[i].results_to = CR_ROLE_BIT(CR_ROLE_CONSUMER);
  }
  t->queries[0].results_to |= CR_ROLE_BIT(CR_ROLE_PROVIDER);
  t->queries[1].group_by[CR_ROLE_PROVIDER] = dup_str("segment");
  t->queries[2].kind = CR_QUERY_MEMBERS;
  /* Since v4: noise (a discrete Laplace with epsilon 1, released to both;
   * a discrete Gaussian with sigma 2 per cell). */
  t->queries[3].results_to |= CR_ROLE_BIT(CR_ROLE_PROVIDER);
  t->queries[3].noise.mechanism = CR_NOISE_DISCRETE_LAPLACE;
  t->queries[3].noise.epsilon = 1000000;
  t->queries[4].group_by[CR_ROLE_PROVIDER] = dup_str("segment");
  t->queries[4].noise.mechanism = CR_NOISE_DISCRETE_GAUSSIAN;
  t->queries[4].noise.sigma = 2000;
  t->queries[4].noise.sigma_given = true;
  t->queries[4].noise.delta = 1000000;
  t->queries[4].noise.epsilon = 1500000;
  memset(t->sha256, 0xab, sizeof t->sha256);
  /* Size buckets 16, 32, 64...: the sets pad to 16 (per label for
   * by_segment), so the vectors show pads without growing large. */
  t->limits.size_buckets.floor = 16;
  t->limits.size_buckets.ratio = 2.0;
  return t;
}

static void free_template(cr_template *t) {
  for (size_t i = 0; i < t->nqueries; i++) {
    free(t->queries[i].name);
    free(t->queries[i].group_by[CR_ROLE_PROVIDER]);
  }
  free(t->queries);
  free(t->name);
  free(t->suite);
  free(t->match_key.name);
  free(t);
}

/* ---- rendering ----------------------------------------------------------- */

static void put(cr_buf *out, const char *fmt, ...) CR_PRINTF(2, 3);
static void put(cr_buf *out, const char *fmt, ...) {
  char line[512];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(line, sizeof line, fmt, ap);
  va_end(ap);
  assert_int_equal(cr_buf_append(out, line, strlen(line)), 0);
}

static void put_hex(cr_buf *out, const char *key, const uint8_t *p, size_t n) {
  char *hex = malloc(2 * n + 1);
  cr_hex_encode(hex, p, n);
  put(out, "%s = ", key);
  assert_int_equal(cr_buf_append(out, hex, 2 * n), 0);
  put(out, "\n");
  free(hex);
}

static void put_frames(cr_buf *out, const char *dir, const cr_buf *wire) {
  size_t off = 0, i = 0;
  while (off < wire->len) {
    const uint8_t *p;
    size_t plen, total;
    uint32_t announced;
    assert_int_equal(cr__frame_peek(wire->data + off, wire->len - off, CR_DEFAULT_MAX_FRAME, &p,
                                    &plen, &total, &announced),
                     1);
    char key[32];
    snprintf(key, sizeof key, "%s.%zu", dir, i++);
    put_hex(out, key, wire->data + off, total);
    off += total;
  }
}

static void put_result(cr_buf *out, const char *who, const cr_session_result *r, size_t own_n) {
  put(out, "%s.count = %llu\n", who, (unsigned long long)r->count);
  put(out, "%s.suppressed = %d\n", who, r->suppressed);
  if (r->ncells) {
    put(out, "%s.cells =", who);
    for (size_t i = 0; i < r->ncells; i++)
      put(out, " %u:%u=%llu%s", r->cells[i].label[CR_ROLE_PROVIDER],
          r->cells[i].label[CR_ROLE_CONSUMER], (unsigned long long)r->cells[i].count,
          r->cells[i].suppressed ? "s" : "");
    put(out, "\n");
  }
  if (r->matched) {
    char key[64];
    snprintf(key, sizeof key, "%s.matched", who);
    put_hex(out, key, r->matched, (own_n + 7) / 8);
  }
  if (r->nkeys) {
    put(out, "%s.by_key =", who);
    static const char *names[2] = {"email", "phone"};
    for (size_t k = 0; k < r->nkeys && k < 2; k++)
      put(out, " %s=%llu%s", names[k], (unsigned long long)r->key_count[k],
          r->key_suppressed[k] ? "s" : "");
    put(out, "\n");
  }
}

/* ---- one run -------------------------------------------------------------- */

typedef struct tcase {
  const char *name;
  const char *query;
  int grouped;  /* provider side grouped */
  int multikey; /* tests/support/multikey.h */
} tcase;

/* Runs the case with the given seed; renders it into out; returns the
 * consumer's count. */
static uint64_t run_case(const tcase *tc, uint8_t seed, cr_buf *out) {
  cr_template *tp, *tcn;
  cr_dataset *dp, *dc;
  if (tc->multikey) {
    tp = mk_template("consumer", 1);
    tcn = mk_template("consumer", 1);
    dp = mk_load(tp, CR_ROLE_PROVIDER, MK_PROVIDER_CSV, NULL);
    dc = mk_load(tcn, CR_ROLE_CONSUMER, MK_CONSUMER_CSV, NULL);
  } else {
    tp = make_template();
    tcn = make_template();
    dp = fx_mem_dataset("user", "@example.com", 0, 12, tc->grouped ? 3 : 0);
    dc = fx_mem_dataset("user", "@example.com", 6, 20, 0);
  }
  party kp, kc;
  uint8_t sp[32], sc[32];
  memset(sp, 0x01, sizeof sp);
  memset(sc, 0x02, sizeof sc);
  crypto_sign_seed_keypair(kp.pk, kp.sk, sp);
  crypto_sign_seed_keypair(kc.pk, kc.sk, sc);
  stream rp = {{'P', seed}, 0}, rc = {{'C', seed}, 0};

  cr_session_config pc = {0}, cc;
  pc.tmpl = tp;
  pc.data = dp;
  pc.role = CR_ROLE_PROVIDER;
  pc.software = "cleanroom-test";
  pc.batch_size = 5;
  pc.sign = sign_cb;
  pc.sign_ctx = &kp;
  pc.rand = stream_rand;
  pc.rand_ctx = &rp;
  memcpy(pc.peer_sign_pk, kc.pk, 32);
  cc = pc;
  cc.tmpl = tcn;
  cc.data = dc;
  cc.role = CR_ROLE_CONSUMER;
  cc.is_runner = 1;
  cc.query = tc->query;
  cc.sign_ctx = &kc;
  cc.rand_ctx = &rc;
  memcpy(cc.peer_sign_pk, kp.pk, 32);
  cr_session *p, *c;
  assert_int_equal(cr_session_new(&p, &pc, NULL), 0);
  assert_int_equal(cr_session_new(&c, &cc, NULL), 0);
  assert_int_equal(cr_session_start(c), 0);

  cr_buf c2p, p2c;
  cr_buf_init(&c2p);
  cr_buf_init(&p2c);
  for (int rounds = 0;; rounds++) {
    assert_true(rounds < 10000);
    int moved = 0;
    cr_session *from[2] = {c, p}, *to[2] = {p, c};
    cr_buf *log[2] = {&c2p, &p2c};
    for (int d = 0; d < 2; d++) {
      const uint8_t *data;
      size_t len;
      cr_session_send(from[d], &data, &len);
      if (len == 0)
        continue;
      assert_int_equal(cr_buf_append(log[d], data, len), 0);
      cr_session_recv(to[d], data, len);
      cr_session_sent(from[d], len);
      moved = 1;
    }
    if (!moved)
      break;
  }
  const cr_session_result *r = cr_session_result_get(c), *q = cr_session_result_get(p);
  if (r->status != CR_SESSION_DONE || q->status != CR_SESSION_DONE)
    fail_msg("case %s did not complete: %s / %s", tc->name, r->error_msg, q->error_msg);

  put(out, "# cleanroom transcript known-answer vector; format and inputs:\n");
  put(out, "# tests/unit/test_protocol_transcript.c. Regenerate with\n");
  put(out, "# CR_REGENERATE_VECTORS=1 build/tests/test_protocol_transcript\n");
  put(out, "case = %s\n", tc->name);
  put(out, "query = %s\n", tc->query);
  put(out, "protocol_version = %d\n", CR_PROTOCOL_VERSION);
  put_hex(out, "session_id", r->session_id, sizeof r->session_id);
  put_hex(out, "transcript_sha256", r->transcript_sha256, sizeof r->transcript_sha256);
  put_result(out, "consumer", r, dc->n);
  put_result(out, "provider", q, dp->n);
  put_frames(out, "c2p", &c2p);
  put_frames(out, "p2c", &p2c);
  uint64_t count = r->count;
  if (tc->grouped)
    for (size_t i = 0; i < r->ncells; i++)
      count += r->cells[i].count;

  cr_buf_free(&c2p);
  cr_buf_free(&p2c);
  cr_session_free(p);
  cr_session_free(c);
  if (tc->multikey) {
    cr_template_free(tp);
    cr_template_free(tcn);
    mk_free(dp);
    mk_free(dc);
  } else {
    free_template(tp);
    free_template(tcn);
    fx_mem_dataset_free(dp);
    fx_mem_dataset_free(dc);
  }
  return count;
}

static char *read_file(const char *path, size_t *len) {
  FILE *f = fopen(path, "rb");
  if (f == NULL)
    return NULL;
  fseek(f, 0, SEEK_END);
  long n = ftell(f);
  fseek(f, 0, SEEK_SET);
  char *b = malloc((size_t)n + 1);
  *len = fread(b, 1, (size_t)n, f);
  b[*len] = '\0';
  fclose(f);
  return b;
}

static void check_case(const tcase *tc) {
  char path[1024];
  snprintf(path, sizeof path, "%s/transcript_%s.txt", CR_VECTORS_DIR, tc->name);
  cr_buf got;
  cr_buf_init(&got);
  run_case(tc, 1, &got);
  if (g_regenerate) {
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(got.data, 1, got.len, f), got.len);
    fclose(f);
    printf("wrote %s\n", path);
  }
  size_t wlen = 0;
  char *want = read_file(path, &wlen);
  if (want == NULL)
    fail_msg("cannot read %s (regenerate with CR_REGENERATE_VECTORS=1)", path);
  if (wlen != got.len || memcmp(want, got.data, wlen) != 0) {
    /* Name the first line that differs. */
    size_t i = 0, line = 1;
    while (i < wlen && i < got.len && want[i] == (char)got.data[i]) {
      if (want[i] == '\n')
        line++;
      i++;
    }
    fail_msg("%s differs from this run at line %zu", path, line);
  }
  free(want);
  cr_buf_free(&got);
}

static const tcase CASES[] = {
    {"count", "overlap", 0, 0},
    {"group_by", "by_segment", 1, 0},
    {"members", "my_matches", 0, 0},
    {"noise", "noisy_overlap", 0, 0},
    {"noise_group_by", "noisy_by_segment", 1, 0},
    {"multikey", "overlap", 0, 1},
};

static void test_transcript_count(void **state) {
  (void)state;
  check_case(&CASES[0]);
}

static void test_transcript_group_by(void **state) {
  (void)state;
  check_case(&CASES[1]);
}

static void test_transcript_members(void **state) {
  (void)state;
  check_case(&CASES[2]);
}

static void test_transcript_noise(void **state) {
  (void)state;
  check_case(&CASES[3]);
}

static void test_transcript_noise_group_by(void **state) {
  (void)state;
  check_case(&CASES[4]);
}

static void test_transcript_multikey(void **state) {
  (void)state;
  check_case(&CASES[5]);
}

/* The randomness matters: another seed gives other frames (nonce, points,
 * order), the same run twice gives the same bytes, and the count holds. */
static void test_other_seed(void **state) {
  (void)state;
  cr_buf a, b, c;
  cr_buf_init(&a);
  cr_buf_init(&b);
  cr_buf_init(&c);
  uint64_t na = run_case(&CASES[0], 1, &a);
  uint64_t nb = run_case(&CASES[0], 2, &b);
  uint64_t nc = run_case(&CASES[0], 1, &c);
  assert_int_equal(na, 6); /* user6..user11 */
  assert_int_equal(nb, na);
  assert_int_equal(nc, na);
  assert_int_equal(a.len, c.len);
  assert_memory_equal(a.data, c.data, a.len);
  assert_true(a.len != b.len || memcmp(a.data, b.data, a.len) != 0);
  cr_buf_free(&a);
  cr_buf_free(&b);
  cr_buf_free(&c);
}

int main(int argc, char **argv) {
  const char *env = getenv("CR_REGENERATE_VECTORS");
  g_regenerate = (env != NULL && env[0] != '\0' && strcmp(env, "0") != 0) ||
                 (argc > 1 && strcmp(argv[1], "--regenerate") == 0);
  if (sodium_init() < 0)
    return 1;
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_transcript_count),
      cmocka_unit_test(test_transcript_group_by),
      cmocka_unit_test(test_transcript_members),
      cmocka_unit_test(test_transcript_noise),
      cmocka_unit_test(test_transcript_noise_group_by),
      cmocka_unit_test(test_transcript_multikey),
      cmocka_unit_test(test_other_seed),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
