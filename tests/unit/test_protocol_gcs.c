/* Golomb-Rice coding of sorted digests: round trips, size, hostile input. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <sodium.h>

#include "protocol/gcs.h"

static int cmp(const void *a, const void *b, size_t len) { return memcmp(a, b, len); }
static size_t g_len;
static int cmp_g(const void *a, const void *b) { return cmp(a, b, g_len); }

/* n random sorted values of len bytes. */
static uint8_t *random_sorted(size_t len, size_t n) {
  uint8_t *v = malloc(n * len);
  randombytes_buf(v, n * len);
  g_len = len;
  qsort(v, n, len, cmp_g);
  return v;
}

static void roundtrip(size_t len, size_t n, const uint8_t *base) {
  uint8_t *v = random_sorted(len, n);
  if (base != NULL) /* values never fall below the base (0x80 00 ...) */
    for (size_t i = 0; i < n; i++)
      v[i * len] |= 0x80;
  g_len = len;
  qsort(v, n, len, cmp_g);
  cr_buf out;
  cr_buf_init(&out);
  unsigned k = cr__gcs_k(len, n);
  assert_int_equal(cr__gcs_encode(&out, v, len, len, n, k, base), 0);
  uint8_t *back = malloc(n * len);
  const char *why = NULL;
  assert_int_equal(cr__gcs_decode(out.data, out.len, len, n, k, base, back, &why), 0);
  assert_memory_equal(v, back, n * len);
  /* About 8L - log2(n) + 2 bits each. */
  double bits = 8.0 * (double)out.len / (double)n;
  unsigned lg = 0;
  while (((size_t)1 << lg) < n)
    lg++;
  if (n >= 64 && bits > 8.0 * (double)len - lg + 2.6)
    fail_msg("%zu values of %zu bytes cost %.2f bits each", n, len, bits);
  free(back);
  free(v);
  cr_buf_free(&out);
}

static void test_roundtrips(void **state) {
  (void)state;
  size_t lens[] = {5, 7, 9, 10, 12, 16};
  size_t ns[] = {1, 2, 100, 4096, 65536};
  for (size_t i = 0; i < sizeof lens / sizeof *lens; i++)
    for (size_t j = 0; j < sizeof ns / sizeof *ns; j++)
      roundtrip(lens[i], ns[j], NULL);
  uint8_t base[16] = {0x80};
  roundtrip(9, 1000, base);
}

static void test_equal_and_extreme_values(void **state) {
  (void)state;
  uint8_t v[4 * 9];
  memset(v, 0, 9);
  memset(v + 9, 0, 9);
  memset(v + 18, 0xff, 9);
  memset(v + 27, 0xff, 9);
  cr_buf out;
  cr_buf_init(&out);
  assert_int_equal(cr__gcs_encode(&out, v, 9, 9, 4, cr__gcs_k(9, 4), NULL), 0);
  uint8_t back[sizeof v];
  const char *why;
  assert_int_equal(cr__gcs_decode(out.data, out.len, 9, 4, cr__gcs_k(9, 4), NULL, back, &why), 0);
  assert_memory_equal(v, back, sizeof v);
  cr_buf_free(&out);
  /* Decreasing input is refused by the encoder. */
  cr_buf_init(&out);
  assert_int_equal(cr__gcs_encode(&out, v + 18, 9, 9, 2, 60, NULL) == 0, 1);
  uint8_t dec[18];
  memcpy(dec, v + 18, 9);
  memset(dec + 9, 0, 9);
  assert_int_equal(cr__gcs_encode(&out, dec, 9, 9, 2, 60, NULL), CR_EINVAL);
  cr_buf_free(&out);
}

static void expect_bad(const uint8_t *in, size_t in_len, size_t len, uint64_t n, unsigned k,
                       const char *needle) {
  uint8_t out[64 * 16];
  const char *why = "";
  assert_int_equal(cr__gcs_decode(in, in_len, len, n, k, NULL, out, &why), CR_EPROTO);
  if (strstr(why, needle) == NULL)
    fail_msg("reason \"%s\" lacks \"%s\"", why, needle);
}

static void test_hostile_input(void **state) {
  (void)state;
  uint8_t ones[64];
  memset(ones, 0xff, sizeof ones);
  uint8_t zeros[64] = {0};
  /* An endless unary quotient: capped by the digest range. */
  expect_bad(ones, sizeof ones, 5, 1, 38, "larger than the digest range");
  /* Too few bits for the values announced. */
  expect_bad(zeros, 1, 5, 2, 38, "end too early");
  /* Bytes after the last value. */
  expect_bad(zeros, 64, 5, 1, 38, "bytes follow");
  /* Non-zero padding: one value of k=3 bits "0 000" then padding 1. */
  uint8_t pad[1] = {0x01};
  expect_bad(pad, 1, 1, 1, 3, "padding");
  /* A sum past the range: two values each near the maximum. */
  uint8_t big[3] = {0x7f, 0xdf, 0xc0}; /* q=0 r=0xff (k=8, len=1), then q=0 r=0xff */
  expect_bad(big, 3, 1, 2, 8, "larger than the digest range");
  /* Parameters out of range. */
  expect_bad(zeros, 8, 17, 1, 0, "out of range");
  expect_bad(zeros, 8, 5, 1, 41, "out of range");
}

int main(void) {
  if (sodium_init() < 0)
    return 1;
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_roundtrips),
      cmocka_unit_test(test_equal_and_extreme_values),
      cmocka_unit_test(test_hostile_input),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
