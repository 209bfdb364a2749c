/*
 * Behaviour of the crypto module's API: argument limits, the ristretto255
 * suite's blinding algebra, the refusal of hostile peer points, digests and
 * scalar storage. The RFC known answers live in test_crypto_vectors.c.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>
#include <sodium.h>

#include "cleanroom/crypto.h"

/* RFC 9496 A.1: the generator B and 2*B. */
static const uint8_t enc_b[32] = {0xe2, 0xf2, 0xae, 0x0a, 0x6a, 0xbc, 0x4e, 0x71, 0xa8, 0x84, 0xa9,
                                  0x61, 0xc5, 0x00, 0x51, 0x5f, 0x58, 0xe3, 0x0b, 0x6a, 0xa5, 0x82,
                                  0xdd, 0x8d, 0xb6, 0xa6, 0x59, 0x45, 0xe0, 0x8d, 0x2d, 0x76};

static const uint8_t dst_quux[] = "QUUX-V01-CS02-with-expander-SHA512-256";

static int setup(void **state) {
  (void)state;
  return cr_crypto_init();
}

static void msg_of(uint8_t *buf, size_t cap, size_t *len, unsigned i) {
  int n = snprintf((char *)buf, cap, "user%u@example.com", i);
  assert_true(n > 0 && (size_t)n < cap);
  *len = (size_t)n;
}

/* ---- init and registry ------------------------------------------------- */

static void test_init_idempotent(void **state) {
  (void)state;
  assert_int_equal(cr_crypto_init(), 0);
  assert_int_equal(cr_crypto_init(), 0);
}

static void test_suite_find(void **state) {
  (void)state;
  const cr_suite *s = cr_suite_find("ristretto255");
  assert_ptr_equal(s, &cr_suite_ristretto255);
  assert_string_equal(s->name, "ristretto255");
  assert_int_equal(s->point_bytes, 32);
  assert_int_equal(s->scalar_bytes, 32);
  assert_non_null(s->scalar_random);
  assert_non_null(s->hash_blind);
  assert_non_null(s->reblind);

  assert_null(cr_suite_find("unknown"));
  assert_null(cr_suite_find(""));
  assert_null(cr_suite_find(NULL));
  assert_null(cr_suite_find("RISTRETTO255"));
  assert_null(cr_suite_find("ristretto255 "));
  assert_null(cr_suite_find("ristretto"));
}

/* ---- expand_message_xmd limits ----------------------------------------- */

static void test_expand_limits(void **state) {
  (void)state;
  static uint8_t out[255 * 64 + 1];
  uint8_t dst[256];
  memset(dst, 'D', sizeof dst);
  const uint8_t msg[] = "abc";

  /* RFC 9380 §5.3.1: ell <= 255, DST <= 255 bytes; §3.1: DST non-empty. */
  assert_int_equal(cr_expand_message_xmd_sha512(out, 255 * 64, msg, 3, dst, 255), 0);
  assert_int_equal(cr_expand_message_xmd_sha512(out, 255 * 64 + 1, msg, 3, dst, 255), CR_EINVAL);
  assert_int_equal(cr_expand_message_xmd_sha512(out, 32, msg, 3, dst, 256), CR_EINVAL);
  assert_int_equal(cr_expand_message_xmd_sha512(out, 32, msg, 3, dst, 0), CR_EINVAL);
  assert_int_equal(cr_expand_message_xmd_sha512(out, 32, msg, 3, NULL, 5), CR_EINVAL);
  assert_int_equal(cr_expand_message_xmd_sha512(out, 0, msg, 3, dst, 5), CR_EINVAL);
  assert_int_equal(cr_expand_message_xmd_sha512(NULL, 32, msg, 3, dst, 5), CR_EINVAL);
  assert_int_equal(cr_expand_message_xmd_sha512(out, 32, NULL, 3, dst, 5), CR_EINVAL);
  assert_int_equal(cr_expand_message_xmd_sha512(out, 32, NULL, 0, dst, 5), 0);
}

static void test_expand_length_is_bound(void **state) {
  (void)state;
  uint8_t a[64], b[64], c[130];
  const uint8_t msg[] = "abc";
  /* len_in_bytes is hashed into b_0, so a shorter output is not a prefix. */
  assert_int_equal(cr_expand_message_xmd_sha512(a, 32, msg, 3, dst_quux, sizeof dst_quux - 1), 0);
  assert_int_equal(cr_expand_message_xmd_sha512(b, 64, msg, 3, dst_quux, sizeof dst_quux - 1), 0);
  assert_memory_not_equal(a, b, 32);
  /* Non-multiple of 64 bytes: the last block is truncated, not padded. */
  assert_int_equal(cr_expand_message_xmd_sha512(c, 130, msg, 3, dst_quux, sizeof dst_quux - 1), 0);
  assert_int_equal(cr_expand_message_xmd_sha512(a, 64, msg, 3, dst_quux, sizeof dst_quux - 2), 0);
  assert_memory_not_equal(a, b, 64);
}

/* ---- hash to group ----------------------------------------------------- */

static void test_hash_to_group_composition(void **state) {
  (void)state;
  uint8_t uniform[64], want[32], got[32];
  const uint8_t msg[] = "abcdef0123456789";
  assert_int_equal(
      cr_expand_message_xmd_sha512(uniform, 64, msg, sizeof msg - 1, dst_quux, sizeof dst_quux - 1),
      0);
  assert_int_equal(crypto_core_ristretto255_from_hash(want, uniform), 0);
  assert_int_equal(cr_r255_hash_to_group(got, msg, sizeof msg - 1, dst_quux, sizeof dst_quux - 1),
                   0);
  assert_memory_equal(got, want, 32);
  assert_int_equal(crypto_core_ristretto255_is_valid_point(got), 1);

  uint8_t long_dst[256];
  memset(long_dst, 'x', sizeof long_dst);
  memset(got, 0xaa, sizeof got);
  assert_int_equal(cr_r255_hash_to_group(got, msg, 3, long_dst, sizeof long_dst), CR_EINVAL);
  assert_true(sodium_is_zero(got, sizeof got));
}

static void test_hash_blind_is_k_times_hash(void **state) {
  (void)state;
  const cr_suite *s = &cr_suite_ristretto255;
  uint8_t *k = cr_scalar_alloc(s);
  assert_non_null(k);
  assert_int_equal(s->scalar_random(k), 0);

  uint8_t x[32], want[32], got[32];
  const uint8_t msg[] = "alice@example.com";
  assert_int_equal(cr_r255_hash_to_group(x, msg, sizeof msg - 1, (const uint8_t *)CR_R255_DST,
                                         sizeof CR_R255_DST - 1),
                   0);
  assert_int_equal(crypto_scalarmult_ristretto255(want, k, x), 0);
  assert_int_equal(s->hash_blind(got, k, msg, sizeof msg - 1), 0);
  assert_memory_equal(got, want, 32);

  /* Deterministic for a given k, and an empty key still maps somewhere. */
  assert_int_equal(s->hash_blind(x, k, msg, sizeof msg - 1), 0);
  assert_memory_equal(x, got, 32);
  assert_int_equal(s->hash_blind(x, k, NULL, 0), 0);
  assert_memory_not_equal(x, got, 32);
  cr_scalar_free(s, k);
}

/* ---- blinding algebra -------------------------------------------------- */

static void test_blinding_commutes(void **state) {
  (void)state;
  const cr_suite *s = &cr_suite_ristretto255;
  uint8_t *k1 = cr_scalar_alloc(s), *k2 = cr_scalar_alloc(s);
  assert_non_null(k1);
  assert_non_null(k2);

  for (unsigned i = 0; i < 32; i++) {
    assert_int_equal(s->scalar_random(k1), 0);
    assert_int_equal(s->scalar_random(k2), 0);
    uint8_t msg[64], a1[32], a12[32], a2[32], a21[32];
    size_t len;
    msg_of(msg, sizeof msg, &len, i);
    /* Provider blinds with k1, consumer re-blinds with k2, and vice versa. */
    assert_int_equal(s->hash_blind(a1, k1, msg, len), 0);
    assert_int_equal(s->reblind(a12, k2, a1), 0);
    assert_int_equal(s->hash_blind(a2, k2, msg, len), 0);
    assert_int_equal(s->reblind(a21, k1, a2), 0);
    assert_memory_equal(a12, a21, 32);
    assert_memory_not_equal(a1, a2, 32);
    assert_memory_not_equal(a1, a12, 32);
  }
  cr_scalar_free(s, k1);
  cr_scalar_free(s, k2);
}

static void test_distinct_messages_distinct_points(void **state) {
  (void)state;
  enum { N = 128 };
  const cr_suite *s = &cr_suite_ristretto255;
  static uint8_t pts[N][32];
  uint8_t *k = cr_scalar_alloc(s);
  assert_non_null(k);
  assert_int_equal(s->scalar_random(k), 0);

  for (unsigned i = 0; i < N; i++) {
    uint8_t msg[64];
    size_t len;
    msg_of(msg, sizeof msg, &len, i);
    assert_int_equal(s->hash_blind(pts[i], k, msg, len), 0);
  }
  for (unsigned i = 0; i < N; i++)
    for (unsigned j = i + 1; j < N; j++)
      assert_memory_not_equal(pts[i], pts[j], 32);

  /* One byte of difference, and the same message under another key. */
  uint8_t a[32], b[32];
  assert_int_equal(s->hash_blind(a, k, (const uint8_t *)"abc", 3), 0);
  assert_int_equal(s->hash_blind(b, k, (const uint8_t *)"abd", 3), 0);
  assert_memory_not_equal(a, b, 32);
  uint8_t *k2 = cr_scalar_alloc(s);
  assert_non_null(k2);
  assert_int_equal(s->scalar_random(k2), 0);
  assert_int_equal(s->hash_blind(b, k2, (const uint8_t *)"abc", 3), 0);
  assert_memory_not_equal(a, b, 32);
  cr_scalar_free(s, k2);
  cr_scalar_free(s, k);
}

/* ---- hostile peer points ------------------------------------------------ */

static void test_reblind_rejects(void **state) {
  (void)state;
  const cr_suite *s = &cr_suite_ristretto255;
  uint8_t *k = cr_scalar_alloc(s);
  assert_non_null(k);
  assert_int_equal(s->scalar_random(k), 0);
  uint8_t out[32], bad[32];

  /* Identity: libsodium 1.0.18 calls it a valid point; we must not. */
  memset(bad, 0, sizeof bad);
  assert_int_equal(crypto_core_ristretto255_is_valid_point(bad), 1);
  memset(out, 0xaa, sizeof out);
  assert_int_equal(s->reblind(out, k, bad), CR_EPROTO);
  assert_true(sodium_is_zero(out, sizeof out));

  /* B with bit 255 set: the same field element, non-canonically encoded. */
  memcpy(bad, enc_b, sizeof bad);
  bad[31] |= 0x80;
  memset(out, 0xaa, sizeof out);
  assert_int_equal(s->reblind(out, k, bad), CR_EPROTO);
  assert_true(sodium_is_zero(out, sizeof out));

  /* s = p and s = p + 1 (the encodings of 0 and 1 plus p). */
  static const uint8_t s_p[32] = {0xed, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
                                  0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
                                  0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f};
  memcpy(bad, s_p, sizeof bad);
  assert_int_equal(s->reblind(out, k, bad), CR_EPROTO);
  bad[0] = 0xee;
  assert_int_equal(s->reblind(out, k, bad), CR_EPROTO);
  assert_true(sodium_is_zero(out, sizeof out));

  /* A valid point times a zero scalar is the identity: our failure, not the
   * peer's, and the output is still wiped. */
  uint8_t zero[32] = {0};
  memset(out, 0xaa, sizeof out);
  assert_int_equal(s->reblind(out, zero, enc_b), CR_ECRYPTO);
  assert_true(sodium_is_zero(out, sizeof out));
  memset(out, 0xaa, sizeof out);
  assert_int_equal(s->hash_blind(out, zero, (const uint8_t *)"abc", 3), CR_ECRYPTO);
  assert_true(sodium_is_zero(out, sizeof out));

  /* Missing arguments. */
  assert_int_equal(s->reblind(out, k, NULL), CR_EINVAL);
  assert_int_equal(s->reblind(out, NULL, enc_b), CR_EINVAL);
  assert_int_equal(s->reblind(NULL, k, enc_b), CR_EINVAL);
  assert_int_equal(s->hash_blind(NULL, k, (const uint8_t *)"abc", 3), CR_EINVAL);
  assert_int_equal(s->hash_blind(out, NULL, (const uint8_t *)"abc", 3), CR_EINVAL);
  assert_int_equal(s->hash_blind(out, k, NULL, 3), CR_EINVAL);
  assert_int_equal(s->scalar_random(NULL), CR_EINVAL);

  /* And a valid peer point still works after all that. */
  assert_int_equal(s->reblind(out, k, enc_b), 0);
  assert_int_equal(crypto_core_ristretto255_is_valid_point(out), 1);
  cr_scalar_free(s, k);
}

/* ---- scalars ------------------------------------------------------------ */

static void test_scalar_random(void **state) {
  (void)state;
  const cr_suite *s = &cr_suite_ristretto255;
  /* L, the group order, little endian: every scalar must be below it. */
  static const uint8_t order[32] = {0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58,
                                    0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9, 0xde, 0x14,
                                    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
                                    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x10};
  uint8_t *k = cr_scalar_alloc(s);
  assert_non_null(k);
  uint8_t prev[32] = {0};
  for (int i = 0; i < 1000; i++) {
    assert_int_equal(s->scalar_random(k), 0);
    assert_false(sodium_is_zero(k, 32));
    int below = 0;
    for (int j = 31; j >= 0; j--)
      if (k[j] != order[j]) {
        below = k[j] < order[j];
        break;
      }
    assert_true(below);
    assert_memory_not_equal(k, prev, 32);
    memcpy(prev, k, 32);
  }
  sodium_memzero(prev, sizeof prev);
  cr_scalar_free(s, k);

  assert_null(cr_scalar_alloc(NULL));
  cr_scalar_free(s, NULL);
}

/* ---- digests ------------------------------------------------------------ */

static void test_digest(void **state) {
  (void)state;
  uint8_t sid[CR_SESSION_ID_BYTES];
  for (size_t i = 0; i < sizeof sid; i++)
    sid[i] = (uint8_t)i;

  /* SHA-512("cleanroom/v1/digest" || 00 01 .. 1f || B), computed with
   * Python's hashlib, first 32 bytes. */
  static const uint8_t kat[32] = {0xdc, 0xfa, 0xda, 0x8d, 0x7d, 0x55, 0x4a, 0x32, 0xa8, 0xcf, 0xbe,
                                  0x8c, 0xcb, 0xd4, 0x7a, 0xcc, 0xc3, 0x32, 0xc9, 0x12, 0x0c, 0x2b,
                                  0x93, 0xcb, 0x5e, 0xad, 0x82, 0x01, 0x57, 0x12, 0xe1, 0x35};
  uint8_t full[32], d[40];
  cr_digest(full, 32, sid, enc_b, 32);
  assert_memory_equal(full, kat, 32);

  /* Every shorter digest is a prefix, and nothing past len is written. */
  for (size_t len = 1; len <= 32; len++) {
    memset(d, 0xaa, sizeof d);
    cr_digest(d, len, sid, enc_b, 32);
    assert_memory_equal(d, full, len);
    for (size_t j = len; j < sizeof d; j++)
      assert_int_equal(d[j], 0xaa);
  }
  memset(d, 0xaa, sizeof d);
  cr_digest(d, 0, sid, enc_b, 32);
  assert_int_equal(d[0], 0xaa);

  /* Past 32 bytes: the digest, then zeros, never more hash output. */
  memset(d, 0xaa, sizeof d);
  cr_digest(d, sizeof d, sid, enc_b, 32);
  assert_memory_equal(d, full, 32);
  for (size_t j = 32; j < sizeof d; j++)
    assert_int_equal(d[j], 0);

  /* Bound to the session and to the point. */
  uint8_t other[32];
  sid[0] ^= 1;
  cr_digest(other, 32, sid, enc_b, 32);
  assert_memory_not_equal(other, full, 32);
  sid[0] ^= 1;
  uint8_t p2[32];
  memcpy(p2, enc_b, sizeof p2);
  p2[5] ^= 1;
  cr_digest(other, 32, sid, p2, 32);
  assert_memory_not_equal(other, full, 32);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_init_idempotent),
      cmocka_unit_test(test_suite_find),
      cmocka_unit_test(test_expand_limits),
      cmocka_unit_test(test_expand_length_is_bound),
      cmocka_unit_test(test_hash_to_group_composition),
      cmocka_unit_test(test_hash_blind_is_k_times_hash),
      cmocka_unit_test(test_blinding_commutes),
      cmocka_unit_test(test_distinct_messages_distinct_points),
      cmocka_unit_test(test_reblind_rejects),
      cmocka_unit_test(test_scalar_random),
      cmocka_unit_test(test_digest),
  };
  return cmocka_run_group_tests(tests, setup, NULL);
}
