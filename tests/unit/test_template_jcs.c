/*
 * RFC 8785 (JCS) known answers: the RFC's own examples byte for byte, its
 * Appendix B number table, and the corners where a home-made serializer
 * usually goes wrong (UTF-16 key order, -0, big integers, control chars).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "cleanroom/template.h"

static void expect_canon(const char *in, const char *want) {
  char *out = NULL;
  size_t len = 0;
  cr_error err;
  cr_error_clear(&err);
  int rc = cr_json_canonicalize(in, strlen(in), &out, &len, &err);
  if (rc != 0 || strcmp(out, want) != 0)
    print_error("input %s\n  got  %s (rc %d: %s)\n  want %s\n", in, out ? out : "(null)", rc,
                err.msg, want);
  assert_int_equal(rc, 0);
  assert_string_equal(out, want);
  assert_int_equal(len, strlen(want));

  /* Canonical output is a fixed point. */
  char *again = NULL;
  size_t len2 = 0;
  assert_int_equal(cr_json_canonicalize(out, len, &again, &len2, &err), 0);
  assert_int_equal(len2, len);
  assert_memory_equal(again, out, len);
  free(again);
  free(out);
}

static void expect_reject(const char *in, size_t len) {
  char *out = (char *)1;
  cr_error err;
  cr_error_clear(&err);
  assert_int_equal(cr_json_canonicalize(in, len, &out, NULL, &err), CR_EINVAL);
  assert_null(out);
  assert_true(err.msg[0] != '\0');
}

/* RFC 8785 §3.2.2 input and §3.2.3 output. */
static void test_rfc_sample(void **state) {
  (void)state;
  static const char in[] =
      "{\n"
      "  \"numbers\": [333333333.33333329, 1E30, 4.50,\n"
      "              2e-3, 0.000000000000000000000000001],\n"
      "  \"string\": \"\\u20ac$\\u000F\\u000aA'\\u0042\\u0022\\u005c\\\\\\\"\\/\",\n"
      "  \"literals\": [null, true, false]\n"
      "}";
  static const char want[] =
      "{\"literals\":[null,true,false],\"numbers\":[333333333.3333333,1e+30,4.5,0.002,1e-27],"
      "\"string\":\"\xe2\x82\xac$\\u000f\\nA'B\\\"\\\\\\\\\\\"/\"}";
  expect_canon(in, want);

  /* §3.2.4: the same output as UTF-8 bytes, spot-checked at the Euro sign. */
  char *out = NULL;
  size_t len = 0;
  cr_error err;
  assert_int_equal(cr_json_canonicalize(in, strlen(in), &out, &len, &err), 0);
  const char *euro = strstr(out, "\"string\":\"") + 10;
  assert_int_equal((unsigned char)euro[0], 0xe2);
  assert_int_equal((unsigned char)euro[1], 0x82);
  assert_int_equal((unsigned char)euro[2], 0xac);
  free(out);
}

/* RFC 8785 §3.2.3 sorting example: UTF-16 code units, not UTF-8 bytes. */
static void test_rfc_sorting(void **state) {
  (void)state;
  expect_canon("{\n"
               "  \"\\u20ac\": \"Euro Sign\",\n"
               "  \"\\r\": \"Carriage Return\",\n"
               "  \"\\ufb33\": \"Hebrew Letter Dalet With Dagesh\",\n"
               "  \"1\": \"One\",\n"
               "  \"\\ud83d\\ude00\": \"Emoji: Grinning Face\",\n"
               "  \"\\u0080\": \"Control\",\n"
               "  \"\\u00f6\": \"Latin Small Letter O With Diaeresis\"\n"
               "}",
               "{\"\\r\":\"Carriage Return\",\"1\":\"One\",\"\xc2\x80\":\"Control\","
               "\"\xc3\xb6\":\"Latin Small Letter O With Diaeresis\","
               "\"\xe2\x82\xac\":\"Euro Sign\",\"\xf0\x9f\x98\x80\":\"Emoji: Grinning Face\","
               "\"\xef\xac\xb3\":\"Hebrew Letter Dalet With Dagesh\"}");

  /* U+10000 (surrogates D800 DC00) sorts before U+FFFF and U+E000 in UTF-16. */
  expect_canon("{\"\\uffff\":1,\"\\ud800\\udc00\":2,\"\\ue000\":3,\"\\ud7ff\":4}",
               "{\"\xed\x9f\xbf\":4,\"\xf0\x90\x80\x80\":2,\"\xee\x80\x80\":3,"
               "\"\xef\xbf\xbf\":1}");
  /* Prefixes first; the empty name before all. */
  expect_canon("{\"b\":1,\"aa\":2,\"a\":3,\"\":4,\"B\":5}",
               "{\"\":4,\"B\":5,\"a\":3,\"aa\":2,\"b\":1}");
  /* Nested objects sorted too; arrays keep their order. */
  expect_canon("{ \"z\": [3, {\"y\": 1, \"x\": [ ]}, 1], \"a\": { } }",
               "{\"a\":{},\"z\":[3,{\"x\":[],\"y\":1},1]}");
}

static double from_bits(uint64_t bits) {
  double d;
  memcpy(&d, &bits, sizeof d);
  return d;
}

/* RFC 8785 Appendix B, plus powers of two cross-checked with CPython's
 * shortest round-trip repr (there the rounding interval is lopsided). */
static void test_rfc_numbers(void **state) {
  (void)state;
  static const struct {
    uint64_t bits;
    const char *want;
  } v[] = {
      {0x0000000000000000ULL, "0"},
      {0x8000000000000000ULL, "0"},
      {0x0000000000000001ULL, "5e-324"},
      {0x8000000000000001ULL, "-5e-324"},
      {0x7fefffffffffffffULL, "1.7976931348623157e+308"},
      {0xffefffffffffffffULL, "-1.7976931348623157e+308"},
      {0x4340000000000000ULL, "9007199254740992"},
      {0xc340000000000000ULL, "-9007199254740992"},
      {0x4430000000000000ULL, "295147905179352830000"},
      {0x44b52d02c7e14af5ULL, "9.999999999999997e+22"},
      {0x44b52d02c7e14af6ULL, "1e+23"},
      {0x44b52d02c7e14af7ULL, "1.0000000000000001e+23"},
      {0x444b1ae4d6e2ef4eULL, "999999999999999700000"},
      {0x444b1ae4d6e2ef4fULL, "999999999999999900000"},
      {0x444b1ae4d6e2ef50ULL, "1e+21"},
      {0x3eb0c6f7a0b5ed8cULL, "9.999999999999997e-7"},
      {0x3eb0c6f7a0b5ed8dULL, "0.000001"},
      {0x41b3de4355555553ULL, "333333333.3333332"},
      {0x41b3de4355555554ULL, "333333333.33333325"},
      {0x41b3de4355555555ULL, "333333333.3333333"},
      {0x41b3de4355555556ULL, "333333333.3333334"},
      {0x41b3de4355555557ULL, "333333333.33333343"},
      {0xbecbf647612f3696ULL, "-0.0000033333333333333333"},
      {0x43143ff3c1cb0959ULL, "1424953923781206.2"}, /* tie: round to even */
      {0x0060000000000000ULL, "7.120236347223045e-307"},
      {0x0e80000000000000ULL, "7.678447687145631e-239"},
      {0x1690000000000000ULL, "5.225680706521042e-200"},
      {0x2160000000000000ULL, "6.256509672447191e-148"},
      {0x39e0000000000000ULL, "6.310887241768095e-30"},
      {0x4790000000000000ULL, "5.316911983139664e+36"},
      {0x5300000000000000ULL, "6.518515124270356e+91"},
      {0x5e00000000000000ULL, "6.243497100631985e+144"},
  };
  for (size_t i = 0; i < sizeof v / sizeof v[0]; i++) {
    char in[64];
    /* 17 significant digits name the double exactly. */
    snprintf(in, sizeof in, "[%.17g]", from_bits(v[i].bits));
    char want[64];
    snprintf(want, sizeof want, "[%s]", v[i].want);
    expect_canon(in, want);
  }
}

static void test_number_forms(void **state) {
  (void)state;
  static const struct {
    const char *in, *want;
  } v[] = {
      {"1E30", "1e+30"},
      {"4.50", "4.5"},
      {"2e-3", "0.002"},
      {"0.0000001", "1e-7"},
      {"1e-7", "1e-7"},
      {"0.000001", "0.000001"},
      {"-0", "0"},
      {"-0.0", "0"},
      {"0e10", "0"},
      {"100", "100"},
      {"1e2", "100"},
      {"100.000", "100"},
      {"-42", "-42"},
      {"1e20", "100000000000000000000"},
      {"1e21", "1e+21"},
      {"123456789012345678901234", "1.2345678901234569e+23"},
      {"9007199254740993", "9007199254740992"},         /* 2^53 + 1 is not a double */
      {"18446744073709551616", "18446744073709552000"}, /* past int64: still a double */
      {"-9223372036854775808", "-9223372036854776000"},
      {"0.1", "0.1"},
      {"0.30000000000000004", "0.30000000000000004"},
      {"1.5e-10", "1.5e-10"},
      {"12.5e5", "1250000"},
      {"1e-400", "0"}, /* underflows to zero, as in ECMAScript */
  };
  for (size_t i = 0; i < sizeof v / sizeof v[0]; i++)
    expect_canon(v[i].in, v[i].want);
}

static void test_strings(void **state) {
  (void)state;
  /* Only " \ and C0 controls are escaped; \b \f \n \r \t by name, the rest
   * as lowercase \u00xx; DEL, non-ASCII and U+2028 stay literal. */
  expect_canon("\"\\u0000\\u0001\\u001F\\b\\f\\n\\r\\t\\u007f\"",
               "\"\\u0000\\u0001\\u001f\\b\\f\\n\\r\\t\x7f\"");
  expect_canon("\"\\/\\\"\\\\\"", "\"/\\\"\\\\\"");
  expect_canon("\"\\u00e9\\u2028\\ud83d\\ude00\"", "\"\xc3\xa9\xe2\x80\xa8\xf0\x9f\x98\x80\"");
  expect_canon("\"\xc3\xa9\"", "\"\xc3\xa9\"");
  expect_canon("  [ \"a\" , true,false , null ]  ", "[\"a\",true,false,null]");
  expect_canon("\"\"", "\"\"");
  expect_canon("[]", "[]");
  expect_canon("{}", "{}");
}

static void test_rejects(void **state) {
  (void)state;
  static const char *const bad[] = {
      "{\"a\":1,\"a\":2}",         /* duplicate names: not I-JSON */
      "{\"a\":{\"b\":1,\"b\":1}}", /* nested duplicate */
      "\"\\ud800\"",               /* lone surrogate */
      "\"\\udc00\\ud800\"",        /* reversed pair */
      "\"\xff\"",                  /* invalid UTF-8 */
      "\"\xc0\xaf\"",              /* overlong */
      "1e400",                     /* not a finite double */
      "-1e400",
      "NaN",
      "[1,]",
      "{} {}",
      "",
      "{\"a\\u0000\":1}", /* jansson cannot hold a NUL in a name */
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
    expect_reject(bad[i], strlen(bad[i]));

  /* An embedded NUL byte (not an escape) is not JSON. */
  expect_reject("\"a\0b\"", 5);

  char *out = NULL;
  cr_error err;
  assert_int_equal(cr_json_canonicalize("1", 1, NULL, NULL, &err), CR_EINVAL);
  assert_int_equal(cr_json_canonicalize(NULL, 3, &out, NULL, &err), CR_EINVAL);
  assert_int_equal(cr_json_canonicalize("1", 1, &out, NULL, NULL), 0); /* err optional */
  assert_string_equal(out, "1");
  free(out);
}

/* Deep nesting is bounded by jansson's depth limit, not our stack. */
static void test_deep(void **state) {
  (void)state;
  enum { D = 2000 };
  char *in = malloc(2 * D + 2);
  assert_non_null(in);
  memset(in, '[', D);
  memset(in + D, ']', D);
  in[2 * D] = '\0';
  char *out = NULL;
  size_t len = 0;
  cr_error err;
  assert_int_equal(cr_json_canonicalize(in, 2 * D, &out, &len, &err), 0);
  assert_string_equal(out, in);
  free(out);
  free(in);

  in = malloc(2 * 5000 + 1);
  assert_non_null(in);
  memset(in, '[', 5000);
  memset(in + 5000, ']', 5000);
  expect_reject(in, 10000);
  free(in);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_rfc_sample),  cmocka_unit_test(test_rfc_sorting),
      cmocka_unit_test(test_rfc_numbers), cmocka_unit_test(test_number_forms),
      cmocka_unit_test(test_strings),     cmocka_unit_test(test_rejects),
      cmocka_unit_test(test_deep),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
