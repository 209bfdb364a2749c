/*
 * The p256 suite: known answers read from tests/vectors/
 *   RFC 9380 K.1    expand_message_xmd(SHA-256)
 *   RFC 9380 J.1.1  P256_XMD:SHA-256_SSWU_RO_ (P, and u[0], u[1], Q0, Q1)
 * then the suite's API: registry entry, blinding algebra (k * H, and
 * commutativity), fixed multiples of the generator, refusal of hostile peer
 * points, scalar range, digests over 33-byte points, thread safety of the
 * lazy curve set-up, and OpenSSL's error queue left clean.
 * Every count is pinned so that a truncated vector file fails instead of
 * passing vacuously.
 *
 * The session-level check (a Hello naming another suite under the same
 * template hash is refused with wire code SUITE) needs the protocol module,
 * which this crypto test does not link; it belongs in test_protocol_session.
 */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <openssl/err.h>
#include <sodium.h>

#include "cleanroom/crypto.h"
#include "crypto/crypto_internal.h"

#define PB CR_P256_POINT_BYTES
#define SB CR_P256_SCALAR_BYTES
#define UB CR_P256_UNCOMPRESSED_BYTES

#include "support/vectors.h"

/* The RFC's five messages, in its order; "q128_"/"a512_" spelled out. */
static void expect_rfc_msg(size_t i, const char *msg) {
  char want[600];
  switch (i % 5) {
  case 0:
    want[0] = '\0';
    break;
  case 1:
    strcpy(want, "abc");
    break;
  case 2:
    strcpy(want, "abcdef0123456789");
    break;
  case 3:
    strcpy(want, "q128_");
    memset(want + 5, 'q', 128);
    want[133] = '\0';
    break;
  default:
    strcpy(want, "a512_");
    memset(want + 5, 'a', 512);
    want[517] = '\0';
    break;
  }
  assert_string_equal(msg, want);
}

static int setup(void **state) {
  (void)state;
  return cr_crypto_init();
}

/* 0x04 || x || y -> 0x02/0x03 || x */
static void compress(uint8_t out[PB], const uint8_t in[UB]) {
  assert_int_equal(in[0], 0x04);
  out[0] = (uint8_t)(0x02 | (in[UB - 1] & 1));
  memcpy(out + 1, in + 1, 32);
}

static void hex_point(uint8_t out[PB], const char *hex) { hex_exact(out, PB, hex); }

/* Generator, 2G and -G = (n-1)G (SEC 2 §2.4.2 for G; 2G and -G computed
 * independently with affine arithmetic in Python when this was written). */
static const char hex_g[] = "036b17d1f2e12c4247f8bce6e563a440f277037d812deb33a0f4a13945d898c296";
static const char hex_2g[] = "037cf27b188d034f7e8a52380304b51ac3c08969e277f21b35a60b48fc47669978";
static const char hex_neg_g[] =
    "026b17d1f2e12c4247f8bce6e563a440f277037d812deb33a0f4a13945d898c296";
/* The field prime p and the group order n, big endian. */
static const char hex_p[] = "ffffffff00000001000000000000000000000000ffffffffffffffffffffffff";
static const char hex_n[] = "ffffffff00000000ffffffffffffffffbce6faada7179e84f3b9cac2fc632551";

/* ---- thread safety: first use of the suite from several threads ---------- */

#define TH_N 4
#define TH_MSGS 8

typedef struct th_arg {
  const uint8_t *k;
  uint8_t out[TH_MSGS][PB];
  int rc;
} th_arg;

static void *th_blind(void *p) {
  th_arg *a = p;
  a->rc = 0;
  for (unsigned i = 0; i < TH_MSGS && a->rc == 0; i++) {
    char m[32];
    int n = snprintf(m, sizeof m, "user%u@example.com", i);
    a->rc = cr_suite_p256.hash_blind(a->out[i], a->k, (const uint8_t *)m, (size_t)n);
  }
  return NULL;
}

/* Runs first, so the threads race for the lazy curve set-up. */
static void test_concurrent_first_use(void **state) {
  (void)state;
  uint8_t k[SB];
  memset(k, 0, sizeof k);
  k[SB - 1] = 5;
  pthread_t t[TH_N];
  th_arg a[TH_N];
  memset(a, 0, sizeof a);
  for (int i = 0; i < TH_N; i++) {
    a[i].k = k;
    assert_int_equal(pthread_create(&t[i], NULL, th_blind, &a[i]), 0);
  }
  for (int i = 0; i < TH_N; i++)
    assert_int_equal(pthread_join(t[i], NULL), 0);
  for (int i = 0; i < TH_N; i++) {
    assert_int_equal(a[i].rc, 0);
    assert_memory_equal(a[i].out, a[0].out, sizeof a[0].out);
  }
}

/* ---- RFC 9380 K.1 ------------------------------------------------------ */

static void test_rfc9380_k1_expand_message_xmd_sha256(void **state) {
  (void)state;
  vec_file *vf = vec_load("rfc9380_expand_message_xmd_sha256.txt");
  assert_int_equal(vf->n, 11);

  const vec_record *hdr = &vf->rec[0];
  const char *dst = vec_need(hdr, "DST");
  assert_string_equal(vec_need(hdr, "name"), "expand_message_xmd");
  assert_string_equal(vec_need(hdr, "hash"), "SHA256");
  assert_string_equal(dst, "QUUX-V01-CS02-with-expander-SHA256-128");

  size_t n32 = 0, n128 = 0;
  for (size_t i = 1; i < vf->n; i++) {
    const vec_record *r = &vf->rec[i];
    const char *msg = vec_need(r, "msg");
    expect_rfc_msg(i - 1, msg);
    const char *lib = vec_need(r, "len_in_bytes");
    char *endp = NULL;
    unsigned long len = strtoul(lib, &endp, 16);
    assert_true(strncmp(lib, "0x", 2) == 0 && *endp == '\0');
    assert_true(len == 0x20 || len == 0x80);
    uint8_t want[0x80], got[0x80];
    hex_exact(want, len, vec_need(r, "uniform_bytes"));
    memset(got, 0, sizeof got);
    assert_int_equal(cr_expand_message_xmd_sha256(got, len, (const uint8_t *)msg, strlen(msg),
                                                  (const uint8_t *)dst, strlen(dst)),
                     0);
    assert_memory_equal(got, want, len);
    if (len == 0x20)
      n32++;
    else
      n128++;
  }
  /* K.1 has five messages, each at 0x20 and 0x80. */
  assert_int_equal(n32, 5);
  assert_int_equal(n128, 5);
  vec_free(vf);
}

/* ---- RFC 9380 J.1.1 ---------------------------------------------------- */

static void fe_pair(uint8_t out[64], const vec_record *r, const char *kx, const char *ky) {
  hex_exact(out, 32, vec_need(r, kx));
  hex_exact(out + 32, 32, vec_need(r, ky));
}

static void test_rfc9380_j11_hash_to_curve(void **state) {
  (void)state;
  vec_file *vf = vec_load("rfc9380_p256_xmd_sha256_sswu_ro.txt");
  assert_int_equal(vf->n, 6);

  const vec_record *hdr = &vf->rec[0];
  const char *dst = vec_need(hdr, "dst");
  assert_string_equal(vec_need(hdr, "suite"), "P256_XMD:SHA-256_SSWU_RO_");
  assert_string_equal(dst, "QUUX-V01-CS02-with-P256_XMD:SHA-256_SSWU_RO_");

  size_t checked = 0;
  for (size_t i = 1; i < vf->n; i++) {
    const vec_record *r = &vf->rec[i];
    const char *msg = vec_need(r, "msg");
    expect_rfc_msg(i - 1, msg);
    uint8_t want_p[64], want_q0[64], want_q1[64], want_u0[32], want_u1[32];
    fe_pair(want_p, r, "P.x", "P.y");
    fe_pair(want_q0, r, "Q0.x", "Q0.y");
    fe_pair(want_q1, r, "Q1.x", "Q1.y");
    hex_exact(want_u0, 32, vec_need(r, "u[0]"));
    hex_exact(want_u1, 32, vec_need(r, "u[1]"));

    uint8_t p[UB], q0[UB], q1[UB], u0[32], u1[32], p2[UB];
    assert_int_equal(cr__p256_hash_to_curve_trace(p, u0, u1, q0, q1, (const uint8_t *)msg,
                                                  strlen(msg), (const uint8_t *)dst, strlen(dst)),
                     0);
    assert_memory_equal(u0, want_u0, 32);
    assert_memory_equal(u1, want_u1, 32);
    assert_int_equal(q0[0], 0x04);
    assert_memory_equal(q0 + 1, want_q0, 64);
    assert_int_equal(q1[0], 0x04);
    assert_memory_equal(q1 + 1, want_q1, 64);
    assert_int_equal(p[0], 0x04);
    assert_memory_equal(p + 1, want_p, 64);

    /* The public entry point gives the same P. */
    assert_int_equal(cr_p256_hash_to_curve(p2, (const uint8_t *)msg, strlen(msg),
                                           (const uint8_t *)dst, strlen(dst)),
                     0);
    assert_memory_equal(p2, p, sizeof p);
    checked++;
  }
  assert_int_equal(checked, 5);
  vec_free(vf);
}

/* ---- registry and argument limits ------------------------------------- */

static void test_suite_find(void **state) {
  (void)state;
  const cr_suite *s = cr_suite_find("p256");
  assert_ptr_equal(s, &cr_suite_p256);
  assert_string_equal(s->name, "p256");
  assert_int_equal(s->point_bytes, 33);
  assert_int_equal(s->scalar_bytes, 32);
  assert_non_null(s->scalar_random);
  assert_non_null(s->hash_blind);
  assert_non_null(s->reblind);
  assert_ptr_equal(cr_suite_find("ristretto255"), &cr_suite_ristretto255);
  assert_null(cr_suite_find("P256"));
  assert_null(cr_suite_find("p-256"));
  assert_null(cr_suite_find("p256 "));
  assert_null(cr_suite_find("prime256v1"));
  assert_string_equal(CR_P256_DST, "cleanroom-v1-P256_XMD:SHA-256_SSWU_RO_");

  uint8_t *k = cr_scalar_alloc(s);
  assert_non_null(k);
  cr_scalar_free(s, k);
}

static void test_expand_sha256_limits(void **state) {
  (void)state;
  static uint8_t out[255 * 32 + 1];
  uint8_t dst[256];
  memset(dst, 'D', sizeof dst);
  const uint8_t msg[] = "m";

  assert_int_equal(cr_expand_message_xmd_sha256(out, 255 * 32, msg, 1, dst, 16), 0);
  assert_int_equal(cr_expand_message_xmd_sha256(out, 255 * 32 + 1, msg, 1, dst, 16), CR_EINVAL);
  assert_int_equal(cr_expand_message_xmd_sha256(out, 0, msg, 1, dst, 16), CR_EINVAL);
  assert_int_equal(cr_expand_message_xmd_sha256(NULL, 32, msg, 1, dst, 16), CR_EINVAL);
  assert_int_equal(cr_expand_message_xmd_sha256(out, 32, msg, 1, dst, 255), 0);
  assert_int_equal(cr_expand_message_xmd_sha256(out, 32, msg, 1, dst, 256), CR_EINVAL);
  assert_int_equal(cr_expand_message_xmd_sha256(out, 32, msg, 1, dst, 0), CR_EINVAL);
  assert_int_equal(cr_expand_message_xmd_sha256(out, 32, msg, 1, NULL, 16), CR_EINVAL);
  assert_int_equal(cr_expand_message_xmd_sha256(out, 32, NULL, 1, dst, 16), CR_EINVAL);
  assert_int_equal(cr_expand_message_xmd_sha256(out, 32, NULL, 0, dst, 16), 0);

  /* A prefix of a longer output is not the shorter output (the length is
   * bound into b_0), and SHA-256 differs from SHA-512. */
  uint8_t a[32], b[64], c[32];
  assert_int_equal(cr_expand_message_xmd_sha256(a, 32, msg, 1, dst, 16), 0);
  assert_int_equal(cr_expand_message_xmd_sha256(b, 64, msg, 1, dst, 16), 0);
  assert_int_equal(cr_expand_message_xmd_sha512(c, 32, msg, 1, dst, 16), 0);
  assert_memory_not_equal(a, b, 32);
  assert_memory_not_equal(a, c, 32);
}

static void test_hash_to_curve_args(void **state) {
  (void)state;
  uint8_t out[UB];
  const uint8_t dst[] = "DST";
  memset(out, 0xaa, sizeof out);
  assert_int_equal(cr_p256_hash_to_curve(out, (const uint8_t *)"x", 1, dst, 0), CR_EINVAL);
  assert_true(sodium_is_zero(out, sizeof out));
  memset(out, 0xaa, sizeof out);
  assert_int_equal(cr_p256_hash_to_curve(out, NULL, 1, dst, 3), CR_EINVAL);
  assert_true(sodium_is_zero(out, sizeof out));
  assert_int_equal(cr_p256_hash_to_curve(NULL, (const uint8_t *)"x", 1, dst, 3), CR_EINVAL);
  /* The empty message is a message like any other. */
  assert_int_equal(cr_p256_hash_to_curve(out, NULL, 0, dst, 3), 0);
  assert_int_equal(out[0], 0x04);
}

/* ---- blinding algebra ----------------------------------------------------- */

static void msg_of(uint8_t *buf, size_t cap, size_t *len, unsigned i) {
  int n = snprintf((char *)buf, cap, "user%u@example.com", i);
  assert_true(n > 0 && (size_t)n < cap);
  *len = (size_t)n;
}

/* hash_blind with k = 1 is H(msg) under the suite's DST, compressed; and
 * hash_blind(k) = reblind(k, hash_blind(1)). */
static void test_hash_blind_is_k_times_hash(void **state) {
  (void)state;
  const cr_suite *s = &cr_suite_p256;
  uint8_t one[SB] = {0}, *k = cr_scalar_alloc(s);
  one[SB - 1] = 1;
  assert_non_null(k);
  assert_int_equal(s->scalar_random(k), 0);

  for (unsigned i = 0; i < 16; i++) {
    uint8_t m[64], h[UB], hc[PB], x1[PB], xk[PB], rk[PB];
    size_t mlen;
    msg_of(m, sizeof m, &mlen, i);
    assert_int_equal(
        cr_p256_hash_to_curve(h, m, mlen, (const uint8_t *)CR_P256_DST, sizeof CR_P256_DST - 1), 0);
    compress(hc, h);
    assert_int_equal(s->hash_blind(x1, one, m, mlen), 0);
    assert_memory_equal(x1, hc, PB);

    assert_int_equal(s->hash_blind(xk, k, m, mlen), 0);
    assert_int_equal(s->reblind(rk, k, x1), 0);
    assert_memory_equal(xk, rk, PB);
    assert_memory_not_equal(xk, x1, PB);
    assert_true(xk[0] == 0x02 || xk[0] == 0x03);
  }
  /* The suite's DST is its own: not the RFC test DST. */
  uint8_t h1[UB], h2[UB];
  assert_int_equal(cr_p256_hash_to_curve(h1, (const uint8_t *)"abc", 3,
                                         (const uint8_t *)CR_P256_DST, sizeof CR_P256_DST - 1),
                   0);
  static const char quux[] = "QUUX-V01-CS02-with-P256_XMD:SHA-256_SSWU_RO_";
  assert_int_equal(
      cr_p256_hash_to_curve(h2, (const uint8_t *)"abc", 3, (const uint8_t *)quux, sizeof quux - 1),
      0);
  assert_memory_not_equal(h1, h2, UB);
  cr_scalar_free(s, k);
}

/* k1 * (k2 * H(v)) == k2 * (k1 * H(v)): the equality the protocol counts. */
static void test_blinding_commutes(void **state) {
  (void)state;
  const cr_suite *s = &cr_suite_p256;
  uint8_t *k1 = cr_scalar_alloc(s), *k2 = cr_scalar_alloc(s);
  assert_non_null(k1);
  assert_non_null(k2);
  assert_int_equal(s->scalar_random(k1), 0);
  assert_int_equal(s->scalar_random(k2), 0);
  assert_memory_not_equal(k1, k2, SB);

  uint8_t prev[PB] = {0};
  for (unsigned i = 0; i < 32; i++) {
    uint8_t m[64], a[PB], b[PB], ab[PB], ba[PB];
    size_t mlen;
    msg_of(m, sizeof m, &mlen, i);
    assert_int_equal(s->hash_blind(a, k1, m, mlen), 0);
    assert_int_equal(s->hash_blind(b, k2, m, mlen), 0);
    assert_memory_not_equal(a, b, PB);
    assert_int_equal(s->reblind(ab, k2, a), 0);
    assert_int_equal(s->reblind(ba, k1, b), 0);
    assert_memory_equal(ab, ba, PB);
    /* Distinct values, distinct doubly-blinded points. */
    assert_memory_not_equal(ab, prev, PB);
    memcpy(prev, ab, PB);
  }
  cr_scalar_free(s, k1);
  cr_scalar_free(s, k2);
}

/* Fixed multiples of the generator through reblind: 1, 2 and n - 1. */
static void test_reblind_generator_multiples(void **state) {
  (void)state;
  const cr_suite *s = &cr_suite_p256;
  uint8_t g[PB], g2[PB], ng[PB], out[PB], k[SB];
  hex_point(g, hex_g);
  hex_point(g2, hex_2g);
  hex_point(ng, hex_neg_g);

  memset(k, 0, sizeof k);
  k[SB - 1] = 1;
  assert_int_equal(s->reblind(out, k, g), 0);
  assert_memory_equal(out, g, PB);
  k[SB - 1] = 2;
  assert_int_equal(s->reblind(out, k, g), 0);
  assert_memory_equal(out, g2, PB);
  hex_exact(k, SB, hex_n);
  k[SB - 1]--; /* n - 1 (n ends in 0x51) */
  assert_int_equal(s->reblind(out, k, g), 0);
  assert_memory_equal(out, ng, PB);
}

/* ---- hostile peer points --------------------------------------------------- */

static void expect_refused(const uint8_t *k, const uint8_t *pt, const char *what) {
  uint8_t out[PB];
  memset(out, 0xaa, sizeof out);
  int rc = cr_suite_p256.reblind(out, k, pt);
  if (rc != CR_EPROTO)
    fail_msg("%s: reblind returned %d, expected CR_EPROTO", what, rc);
  if (!sodium_is_zero(out, sizeof out))
    fail_msg("%s: output not wiped", what);
  /* Nothing left in OpenSSL's error queue for the TLS code on this thread. */
  if (ERR_peek_error() != 0)
    fail_msg("%s: OpenSSL error queue not restored", what);
}

static void test_reblind_rejects(void **state) {
  (void)state;
  const cr_suite *s = &cr_suite_p256;
  uint8_t *k = cr_scalar_alloc(s);
  assert_non_null(k);
  assert_int_equal(s->scalar_random(k), 0);
  uint8_t g[PB], pt[PB], out[PB];
  hex_point(g, hex_g);

  /* Every prefix but 0x02 / 0x03 in front of a valid x. */
  for (unsigned pre = 0; pre < 256; pre++) {
    if (pre == 0x02 || pre == 0x03)
      continue;
    memcpy(pt, g, PB);
    pt[0] = (uint8_t)pre;
    expect_refused(k, pt, "wrong prefix");
  }

  /* 33 zero bytes; the SEC1 infinity byte followed by anything. */
  memset(pt, 0, PB);
  expect_refused(k, pt, "33 zero bytes");
  memset(pt, 0xff, PB);
  pt[0] = 0x00;
  expect_refused(k, pt, "infinity prefix");

  /* x >= p: p itself, p + 5 (5 is the x of a real point, so this would be a
   * second encoding of it) and 2^256 - 1; under both prefixes. */
  static const char *const big_x[] = {
      hex_p,
      "ffffffff00000001000000000000000000000001000000000000000000000004",
      "ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff",
  };
  for (size_t i = 0; i < sizeof big_x / sizeof big_x[0]; i++) {
    for (uint8_t pre = 2; pre <= 3; pre++) {
      pt[0] = pre;
      hex_exact(pt + 1, 32, big_x[i]);
      expect_refused(k, pt, "x >= p");
    }
  }

  /* x on no point: x^3 - 3x + b is a non-square for x = 1..4. The same x
   * plus one is fine for 5 (checked below), so the refusal is the curve's. */
  for (uint8_t x = 1; x <= 4; x++) {
    for (uint8_t pre = 2; pre <= 3; pre++) {
      memset(pt, 0, PB);
      pt[0] = pre;
      pt[PB - 1] = x;
      expect_refused(k, pt, "x not on the curve");
    }
  }
  memset(pt, 0, PB);
  pt[0] = 0x02;
  pt[PB - 1] = 5;
  assert_int_equal(s->reblind(out, k, pt), 0);
  /* x = 0 is a real point too (y^2 = b): accepted, not mistaken for the
   * identity. */
  memset(pt, 0, PB);
  pt[0] = 0x03;
  assert_int_equal(s->reblind(out, k, pt), 0);

  /* An uncompressed point is not an encoding of this suite: the reader
   * takes exactly 33 bytes and the 0x04 prefix is refused. */
  uint8_t h[UB];
  assert_int_equal(cr_p256_hash_to_curve(h, (const uint8_t *)"u", 1, (const uint8_t *)CR_P256_DST,
                                         sizeof CR_P256_DST - 1),
                   0);
  expect_refused(k, h, "65-byte uncompressed point");

  /* A few thousand random encodings: nothing but CR_EPROTO or success, and
   * success only for 0x02/0x03 prefixes. */
  size_t accepted = 0;
  for (unsigned i = 0; i < 2000; i++) {
    randombytes_buf(pt, PB);
    pt[0] = (uint8_t)(2 + (i & 1));
    memset(out, 0xaa, sizeof out);
    int rc = s->reblind(out, k, pt);
    if (rc == 0) {
      accepted++;
      assert_true(out[0] == 0x02 || out[0] == 0x03);
    } else {
      assert_int_equal(rc, CR_EPROTO);
      assert_true(sodium_is_zero(out, sizeof out));
    }
  }
  /* About half of all x are on the curve. */
  assert_in_range(accepted, 800, 1200);
  assert_int_equal(ERR_peek_error(), 0);
  cr_scalar_free(s, k);
}

/* ---- scalars ------------------------------------------------------------ */

static void test_scalar_random(void **state) {
  (void)state;
  const cr_suite *s = &cr_suite_p256;
  uint8_t n[SB], prev[SB] = {0};
  hex_exact(n, SB, hex_n);
  uint8_t *k = cr_scalar_alloc(s);
  assert_non_null(k);
  unsigned top_set = 0;
  for (unsigned i = 0; i < 1000; i++) {
    assert_int_equal(s->scalar_random(k), 0);
    assert_false(sodium_is_zero(k, SB));
    assert_true(memcmp(k, n, SB) < 0);
    assert_memory_not_equal(k, prev, SB);
    memcpy(prev, k, SB);
    top_set += k[0] >> 7;
  }
  /* Uniform in [1, n-1]: the top bit is set about half the time (n is just
   * under 2^256). */
  assert_in_range(top_set, 400, 600);
  assert_int_equal(s->scalar_random(NULL), CR_EINVAL);

  /* Out-of-range scalars are refused, outputs wiped: 0, n, 2^256 - 1. */
  uint8_t g[PB], out[PB];
  hex_point(g, hex_g);
  const uint8_t *bad[3];
  uint8_t zero[SB] = {0}, ff[SB];
  memset(ff, 0xff, sizeof ff);
  bad[0] = zero;
  bad[1] = n;
  bad[2] = ff;
  for (int i = 0; i < 3; i++) {
    memset(out, 0xaa, sizeof out);
    assert_int_equal(s->reblind(out, bad[i], g), CR_EINVAL);
    assert_true(sodium_is_zero(out, sizeof out));
    memset(out, 0xaa, sizeof out);
    assert_int_equal(s->hash_blind(out, bad[i], (const uint8_t *)"m", 1), CR_EINVAL);
    assert_true(sodium_is_zero(out, sizeof out));
  }
  memset(out, 0xaa, sizeof out);
  assert_int_equal(s->hash_blind(out, NULL, (const uint8_t *)"m", 1), CR_EINVAL);
  assert_int_equal(s->reblind(out, k, NULL), CR_EINVAL);
  assert_int_equal(s->hash_blind(NULL, k, (const uint8_t *)"m", 1), CR_EINVAL);
  assert_int_equal(ERR_peek_error(), 0);
  cr_scalar_free(s, k);
}

/* ---- digests over 33-byte points ---------------------------------------- */

static void test_digest(void **state) {
  (void)state;
  const cr_suite *s = &cr_suite_p256;
  uint8_t sid[CR_SESSION_ID_BYTES], y[PB], d[32], want[crypto_hash_sha512_BYTES];
  randombytes_buf(sid, sizeof sid);
  uint8_t *k = cr_scalar_alloc(s);
  assert_non_null(k);
  assert_int_equal(s->scalar_random(k), 0);
  assert_int_equal(s->hash_blind(y, k, (const uint8_t *)"v", 1), 0);

  /* Design §4: SHA-512("cleanroom/v1/digest" || session_id || enc(Y))[0..l). */
  static const char tag[] = "cleanroom/v1/digest";
  crypto_hash_sha512_state st;
  crypto_hash_sha512_init(&st);
  crypto_hash_sha512_update(&st, (const uint8_t *)tag, sizeof tag - 1);
  crypto_hash_sha512_update(&st, sid, sizeof sid);
  crypto_hash_sha512_update(&st, y, PB);
  crypto_hash_sha512_final(&st, want);
  for (size_t len = 5; len <= 32; len++) {
    memset(d, 0, sizeof d);
    cr_digest(d, len, sid, y, s->point_bytes);
    assert_memory_equal(d, want, len);
  }
  /* All 33 bytes count: the prefix (the sign of y) is part of enc(Y). */
  uint8_t y2[PB], d2[32];
  memcpy(y2, y, PB);
  y2[0] ^= 0x01;
  cr_digest(d, 32, sid, y, PB);
  cr_digest(d2, 32, sid, y2, PB);
  assert_memory_not_equal(d, d2, 32);
  cr_digest(d2, 32, sid, y, 32);
  assert_memory_not_equal(d, d2, 32);
  cr_scalar_free(s, k);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_concurrent_first_use),
      cmocka_unit_test(test_rfc9380_k1_expand_message_xmd_sha256),
      cmocka_unit_test(test_rfc9380_j11_hash_to_curve),
      cmocka_unit_test(test_suite_find),
      cmocka_unit_test(test_expand_sha256_limits),
      cmocka_unit_test(test_hash_to_curve_args),
      cmocka_unit_test(test_hash_blind_is_k_times_hash),
      cmocka_unit_test(test_blinding_commutes),
      cmocka_unit_test(test_reblind_generator_multiples),
      cmocka_unit_test(test_reblind_rejects),
      cmocka_unit_test(test_scalar_random),
      cmocka_unit_test(test_digest),
  };
  return cmocka_run_group_tests(tests, setup, NULL);
}
