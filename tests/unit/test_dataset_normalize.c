/* Match-key normalizers (design §6): each with valid and invalid input,
 * chains, composite keys. Match keys are built by hand, not loaded. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "cleanroom/dataset.h"

#define NORMS(...)                                                                                 \
  ((cr_normalizer[]){__VA_ARGS__}), (sizeof((cr_normalizer[]){__VA_ARGS__}) / sizeof(cr_normalizer))

/* One column through the chain; returns what cr_normalize_key returned. */
static int norm1(cr_normalizer *chain, size_t nchain, const char *cc, const char *in, cr_buf *out,
                 cr_reject_reason *why) {
  char *cols[] = {"k"};
  cr_match_key mk = {.name = "k",
                     .columns = cols,
                     .ncolumns = 1,
                     .normalize = chain,
                     .nnormalize = nchain,
                     .default_country_code = (char *)cc};
  const char *vals[] = {in};
  size_t lens[] = {strlen(in)};
  return cr_normalize_key(&mk, vals, lens, out, why);
}

static void ok_(cr_normalizer *chain, size_t n, const char *cc, const char *in, const char *want) {
  cr_buf b;
  cr_reject_reason why;
  cr_buf_init(&b);
  int rc = norm1(chain, n, cc, in, &b, &why);
  if (rc != 0)
    fail_msg("input #%zu-chain rejected (reason %s), expected accepted", n, cr_reject_key(why));
  assert_int_equal(b.len, strlen(want));
  assert_memory_equal(b.data, want, b.len);
  cr_buf_free(&b);
}

static void bad_(cr_normalizer *chain, size_t n, const char *cc, const char *in,
                 cr_reject_reason want) {
  cr_buf b;
  cr_reject_reason why = CR_REJECT_COUNT;
  cr_buf_init(&b);
  assert_int_equal(norm1(chain, n, cc, in, &b, &why), 1);
  assert_int_equal(why, want);
  assert_int_equal(b.len, 0);
  cr_buf_free(&b);
}

#define OK(chain, cc, in, want) ok_(chain, cc, in, want)
#define BAD(chain, cc, in, why) bad_(chain, cc, in, why)

static void test_email(void **state) {
  (void)state;
  OK(NORMS(CR_NORM_EMAIL), NULL, " Alice@Example.COM ", "alice@example.com");
  OK(NORMS(CR_NORM_EMAIL), NULL, "\tBOB.SMITH+tag@Mail.Example.org\r\n",
     "bob.smith+tag@mail.example.org");
  OK(NORMS(CR_NORM_EMAIL), NULL, "J\xc3\x96rg@Example.DE", "j\xc3\x96rg@example.de");
  OK(NORMS(CR_NORM_EMAIL), NULL, "a@b", "a@b");
  BAD(NORMS(CR_NORM_EMAIL), NULL, "", CR_REJECT_MISSING);
  BAD(NORMS(CR_NORM_EMAIL), NULL, "   ", CR_REJECT_EMAIL);
  BAD(NORMS(CR_NORM_EMAIL), NULL, "alice.example.com", CR_REJECT_EMAIL);
  BAD(NORMS(CR_NORM_EMAIL), NULL, "alice@example@com", CR_REJECT_EMAIL);
  BAD(NORMS(CR_NORM_EMAIL), NULL, "@example.com", CR_REJECT_EMAIL);
  BAD(NORMS(CR_NORM_EMAIL), NULL, " alice@ ", CR_REJECT_EMAIL);
  BAD(NORMS(CR_NORM_EMAIL), NULL, "al ice@example.com", CR_REJECT_EMAIL);
  BAD(NORMS(CR_NORM_EMAIL), NULL, "alice@exa\tmple.com", CR_REJECT_EMAIL);
  BAD(NORMS(CR_NORM_EMAIL), NULL, "alice@exa\x01mple.com", CR_REJECT_EMAIL);
}

static void test_phone(void **state) {
  (void)state;
  OK(NORMS(CR_NORM_PHONE), NULL, "+49 (30) 1234-5678", "+493012345678");
  OK(NORMS(CR_NORM_PHONE), NULL, "0049 30 12345678", "+493012345678");
  OK(NORMS(CR_NORM_PHONE), NULL, " +1.555.123.4567 ", "+15551234567");
  OK(NORMS(CR_NORM_PHONE), "49", "030 12345678", "+493012345678");
  OK(NORMS(CR_NORM_PHONE), "49", "(030) 1234-5678", "+493012345678");
  OK(NORMS(CR_NORM_PHONE), "1", "555 123 4567", "+15551234567");
  OK(NORMS(CR_NORM_PHONE), "49", "+33 1 23 45 67 89", "+33123456789"); /* + wins */
  OK(NORMS(CR_NORM_PHONE), "49", "0033 1 23 45 67 89", "+33123456789");
  OK(NORMS(CR_NORM_PHONE), NULL, "+12345678", "+12345678");               /* 8 digits */
  OK(NORMS(CR_NORM_PHONE), NULL, "+123456789012345", "+123456789012345"); /* 15 */
  BAD(NORMS(CR_NORM_PHONE), "44", "07", CR_REJECT_PHONE);                 /* +447: too short */
  BAD(NORMS(CR_NORM_PHONE), NULL, "+1234567", CR_REJECT_PHONE);           /* 7 */
  BAD(NORMS(CR_NORM_PHONE), NULL, "+1234567890123456", CR_REJECT_PHONE);  /* 16 */
  BAD(NORMS(CR_NORM_PHONE), NULL, "+0123456789", CR_REJECT_PHONE);
  BAD(NORMS(CR_NORM_PHONE), NULL, "030 12345678", CR_REJECT_PHONE); /* no cc */
  BAD(NORMS(CR_NORM_PHONE), NULL, "+49 30 1234x5678", CR_REJECT_PHONE);
  BAD(NORMS(CR_NORM_PHONE), NULL, "49+3012345678", CR_REJECT_PHONE);
  BAD(NORMS(CR_NORM_PHONE), NULL, "++493012345678", CR_REJECT_PHONE);
  /* Common ways people write numbers (issue 16): the trunk prefix in
   * parentheses after the country code, slashes (DIN 5008's old form),
   * RFC 3966 "tel:", Unicode spaces and dashes from spreadsheets. */
  OK(NORMS(CR_NORM_PHONE), NULL, "+49 (0)151 2345 6789", "+4915123456789");
  OK(NORMS(CR_NORM_PHONE), NULL, "+49 (0) 151-23456789", "+4915123456789");
  OK(NORMS(CR_NORM_PHONE), NULL, "+49(0)30/12345678", "+493012345678");
  OK(NORMS(CR_NORM_PHONE), NULL, "0049 (0)151 23456789", "+4915123456789");
  OK(NORMS(CR_NORM_PHONE), NULL, "+44 (0)20 7946 0958", "+442079460958");
  OK(NORMS(CR_NORM_PHONE), NULL, "+44 ( 0 ) 20 7946 0958", "+442079460958");
  OK(NORMS(CR_NORM_PHONE), "49", "(0)30 12345678", "+493012345678"); /* national: trunk 0 */
  OK(NORMS(CR_NORM_PHONE), "49", "030/12345678", "+493012345678");
  OK(NORMS(CR_NORM_PHONE), NULL, "+49/30/12345678", "+493012345678");
  OK(NORMS(CR_NORM_PHONE), NULL, "tel:+49-30-1234-5678", "+493012345678");
  OK(NORMS(CR_NORM_PHONE), NULL, "TEL:+1 555 123 4567", "+15551234567");
  OK(NORMS(CR_NORM_PHONE), NULL,
     "+49\xc2\xa0"
     "30\xc2\xa0"
     "12345678",
     "+493012345678"); /* NBSP */
  OK(NORMS(CR_NORM_PHONE), NULL,
     "+49\xe2\x80\xaf"
     "30 1234\xe2\x80\x91"
     "5678",
     "+493012345678");
  OK(NORMS(CR_NORM_PHONE), NULL,
     "+1 (415) 555\xe2\x80\x93"
     "0100",
     "+14155550100"); /* en dash */
  OK(NORMS(CR_NORM_PHONE), "44", "020 7946 0958", "+442079460958");
  /* North America: the trunk prefix is 1, written before the 10 digits
   * ("1-206-555-0100", or +1 without the plus): one number, one key. */
  OK(NORMS(CR_NORM_PHONE), "1", "12062001234", "+12062001234");
  OK(NORMS(CR_NORM_PHONE), "1", "1 (206) 200-1234", "+12062001234");
  OK(NORMS(CR_NORM_PHONE), "1", "1-206-200-1234", "+12062001234");
  OK(NORMS(CR_NORM_PHONE), "1", "(206) 200-1234", "+12062001234");
  OK(NORMS(CR_NORM_PHONE), "1", "+1 206 200 1234", "+12062001234");
  /* Only 10 digits after it, an area code 2-9 and country code 1 alone. */
  OK(NORMS(CR_NORM_PHONE), "1", "1206200123", "+11206200123");
  OK(NORMS(CR_NORM_PHONE), "1", "11062001234", "+111062001234");
  OK(NORMS(CR_NORM_PHONE), "44", "12062001234", "+4412062001234");
  OK(NORMS(CR_NORM_PHONE), "1", "001 206 200 1234", "+12062001234");
  /* The trunk "(0)" is only dropped after a country code: otherwise it is
   * a digit like any other. */
  BAD(NORMS(CR_NORM_PHONE), NULL, "+(0)49 30 12345678", CR_REJECT_PHONE);
  BAD(NORMS(CR_NORM_PHONE), NULL, "+49 (0)151 2345 6789 ext. 12", CR_REJECT_PHONE);
  BAD(NORMS(CR_NORM_PHONE), NULL, "+49 151 2345 6789 x12", CR_REJECT_PHONE);
  BAD(NORMS(CR_NORM_PHONE), NULL, "tel:", CR_REJECT_PHONE);
  BAD(NORMS(CR_NORM_PHONE), NULL, "phone: +4930123456", CR_REJECT_PHONE);
  BAD(NORMS(CR_NORM_PHONE), NULL, " - ", CR_REJECT_PHONE);
  BAD(NORMS(CR_NORM_PHONE), NULL, "+", CR_REJECT_PHONE);
  BAD(NORMS(CR_NORM_PHONE), NULL, "", CR_REJECT_MISSING);
  BAD(NORMS(CR_NORM_PHONE), "49", "00", CR_REJECT_PHONE);
  BAD(NORMS(CR_NORM_PHONE), NULL, "+1 234 567 890 123 456 789 012 345 678", CR_REJECT_PHONE);

  /* The country code must be 1-3 digits: a template error, not a row's. */
  cr_buf b;
  cr_reject_reason why;
  cr_buf_init(&b);
  assert_int_equal(norm1(NORMS(CR_NORM_PHONE), "4a", "0301234567", &b, &why), CR_EINVAL);
  assert_int_equal(norm1(NORMS(CR_NORM_PHONE), "", "0301234567", &b, &why), CR_EINVAL);
  assert_int_equal(norm1(NORMS(CR_NORM_PHONE), "1234", "0301234567", &b, &why), CR_EINVAL);
  cr_buf_free(&b);
}

static void test_text(void **state) {
  (void)state;
  OK(NORMS(CR_NORM_TEXT), NULL, "  Hello \t  WORLD\r\n", "hello world");
  OK(NORMS(CR_NORM_TEXT), NULL,
     "\xc3\x84"
     "BC d",
     "\xc3\x84"
     "bc d"); /* ASCII only */
  OK(NORMS(CR_NORM_TEXT), NULL,
     "a\x1f\x1f"
     "b",
     "a b");
  OK(NORMS(CR_NORM_TEXT), NULL, "x", "x");
  BAD(NORMS(CR_NORM_TEXT), NULL, " \t\n ", CR_REJECT_TEXT);
  BAD(NORMS(CR_NORM_TEXT), NULL, "", CR_REJECT_MISSING);
}

static void sha_hex(const char *s, char hex[65]) {
  uint8_t h[CR_SHA256_BYTES];
  cr_sha256(h, s, strlen(s));
  cr_hex_encode(hex, h, sizeof h);
}

static void test_sha256(void **state) {
  (void)state;
  /* FIPS 180-2 "abc". */
  OK(NORMS(CR_NORM_SHA256), NULL, "abc",
     "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  char want[65];
  sha_hex("alice@example.com", want);
  OK(NORMS(CR_NORM_EMAIL, CR_NORM_SHA256), NULL, " Alice@Example.COM ", want);
  /* The partner who only has hashes reaches the same value. */
  char upper[65];
  for (int i = 0; i < 64; i++)
    upper[i] = (char)(want[i] >= 'a' && want[i] <= 'f' ? want[i] - 32 : want[i]);
  upper[64] = '\0';
  OK(NORMS(CR_NORM_HASHED_SHA256), NULL, upper, want);
  /* Rejection stops the chain with the failing normalizer's reason. */
  BAD(NORMS(CR_NORM_EMAIL, CR_NORM_SHA256), NULL, "not-an-email", CR_REJECT_EMAIL);
  /* Hash of a hash, and normalizer after a hash. */
  sha_hex("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad", want);
  OK(NORMS(CR_NORM_SHA256, CR_NORM_SHA256), NULL, "abc", want);
  BAD(NORMS(CR_NORM_SHA256, CR_NORM_EMAIL), NULL, "a@b", CR_REJECT_EMAIL);
}

static void test_hashed_sha256(void **state) {
  (void)state;
  OK(NORMS(CR_NORM_HASHED_SHA256), NULL,
     "  BA7816BF8F01CFEA414140DE5DAE2223B00361A396177A9CB410FF61F20015AD\t",
     "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  BAD(NORMS(CR_NORM_HASHED_SHA256), NULL,
      "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015a", CR_REJECT_HEX);
  BAD(NORMS(CR_NORM_HASHED_SHA256), NULL,
      "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad0", CR_REJECT_HEX);
  BAD(NORMS(CR_NORM_HASHED_SHA256), NULL,
      "ga7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad", CR_REJECT_HEX);
  BAD(NORMS(CR_NORM_HASHED_SHA256), NULL,
      "ba7816bf8f01cfea414140de5dae2223 00361a396177a9cb410ff61f20015ad", CR_REJECT_HEX);
  BAD(NORMS(CR_NORM_HASHED_SHA256), NULL, "", CR_REJECT_MISSING);
}

static void test_composite(void **state) {
  (void)state;
  char *cols[] = {"email", "zip"};
  cr_normalizer chain[] = {CR_NORM_TEXT};
  cr_match_key mk = {
      .name = "email_zip", .columns = cols, .ncolumns = 2, .normalize = chain, .nnormalize = 1};
  cr_buf b;
  cr_reject_reason why;
  cr_buf_init(&b);
  assert_int_equal(cr_buf_append(&b, "stale", 5), 0);

  const char *v1[] = {" A@B.com ", "  12345 "};
  assert_int_equal(cr_normalize_key(&mk, v1, NULL, &b, &why), 0);
  assert_int_equal(b.len, 13);
  assert_memory_equal(b.data,
                      "a@b.com\x1f"
                      "12345",
                      13); /* overwritten, not appended */

  const char *v2[] = {"a@b.com", ""};
  assert_int_equal(cr_normalize_key(&mk, v2, NULL, &b, &why), 1);
  assert_int_equal(why, CR_REJECT_MISSING);

  const char *v3[] = {"a@b.com", " \t"};
  assert_int_equal(cr_normalize_key(&mk, v3, NULL, &b, &why), 1);
  assert_int_equal(why, CR_REJECT_TEXT);

  /* Without a normalizer, a value holding the separator would be ambiguous. */
  mk.nnormalize = 0;
  const char *v4[] = {"a\x1f"
                      "b",
                      "c"};
  assert_int_equal(cr_normalize_key(&mk, v4, NULL, &b, &why), 1);
  assert_int_equal(why, CR_REJECT_TEXT);
  const char *v5[] = {"a b", "C"};
  assert_int_equal(cr_normalize_key(&mk, v5, NULL, &b, &why), 0);
  assert_memory_equal(b.data,
                      "a b\x1f"
                      "C",
                      5);

  /* Lengths are honoured: a value need not be NUL-terminated. */
  mk.nnormalize = 1;
  const char *v6[] = {"XYZ-ignored", "q"};
  size_t l6[] = {3, 1};
  assert_int_equal(cr_normalize_key(&mk, v6, l6, &b, &why), 0);
  assert_int_equal(b.len, 5);
  assert_memory_equal(b.data, "xyz\x1fq", 5);
  cr_buf_free(&b);
}

static void test_invalid_arguments(void **state) {
  (void)state;
  char *cols[] = {"k"};
  cr_normalizer chain[] = {(cr_normalizer)99};
  cr_match_key mk = {
      .name = "k", .columns = cols, .ncolumns = 1, .normalize = chain, .nnormalize = 1};
  cr_buf b;
  cr_reject_reason why;
  const char *v[] = {"x"};
  cr_buf_init(&b);
  assert_int_equal(cr_normalize_key(&mk, v, NULL, &b, &why), CR_EINVAL);
  assert_int_equal(cr_normalize_key(NULL, v, NULL, &b, &why), CR_EINVAL);
  mk.ncolumns = 0;
  assert_int_equal(cr_normalize_key(&mk, v, NULL, &b, &why), CR_EINVAL);
  cr_buf_free(&b);
}

static void test_reject_names(void **state) {
  (void)state;
  assert_string_equal(cr_reject_key(CR_REJECT_MISSING), "missing_value");
  assert_string_equal(cr_reject_key(CR_REJECT_EMAIL), "invalid_email");
  assert_string_equal(cr_reject_key(CR_REJECT_PHONE), "invalid_phone");
  assert_string_equal(cr_reject_key(CR_REJECT_TEXT), "invalid_text");
  assert_string_equal(cr_reject_key(CR_REJECT_HEX), "invalid_sha256_hex");
  assert_string_equal(cr_reject_key(CR_REJECT_COLUMNS), "wrong_column_count");
  assert_string_equal(cr_reject_key(CR_REJECT_COUNT), "unknown");
  for (int r = 0; r < CR_REJECT_COUNT; r++)
    assert_true(strlen(cr_reject_text((cr_reject_reason)r)) > 10);
}

/* Normalizers per party: each role's chain to the same value (raw e-mails
 * hashed on one side, hex hashes checked on the other); without a role a
 * per-party key is refused, never left raw. */
static void test_party_chains(void **state) {
  (void)state;
  char *cols[] = {"k"};
  cr_normalizer prov[] = {CR_NORM_EMAIL, CR_NORM_SHA256};
  cr_normalizer cons[] = {CR_NORM_HASHED_SHA256};
  cr_match_key mk = {.name = "k", .columns = cols, .ncolumns = 1};
  mk.party_normalize[CR_ROLE_PROVIDER] = prov;
  mk.nparty_normalize[CR_ROLE_PROVIDER] = 2;
  mk.party_normalize[CR_ROLE_CONSUMER] = cons;
  mk.nparty_normalize[CR_ROLE_CONSUMER] = 1;
  cr_buf a, b;
  cr_reject_reason why;
  cr_buf_init(&a);
  cr_buf_init(&b);
  const char *raw[] = {" Alice@Example.COM "};
  /* sha256("alice@example.com"), upper case as some exports write it. */
  const char *hashed[] = {"FF8D9819FC0E12BF0D24892E45987E249A28DCE836A85CAD60E28EAAA8C6D976"};
  assert_int_equal(cr_normalize_key_as(&mk, CR_ROLE_PROVIDER, raw, NULL, &a, &why), 0);
  assert_int_equal(cr_normalize_key_as(&mk, CR_ROLE_CONSUMER, hashed, NULL, &b, &why), 0);
  assert_int_equal(a.len, 64);
  assert_int_equal(b.len, 64);
  assert_memory_equal(a.data, b.data, 64);
  assert_int_equal(cr_normalize_key_as(&mk, CR_ROLE_CONSUMER, raw, NULL, &b, &why), 1);
  assert_int_equal(why, CR_REJECT_HEX);
  assert_int_equal(cr_normalize_key(&mk, raw, NULL, &a, &why), CR_EINVAL);
  cr_buf_free(&a);
  cr_buf_free(&b);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_email),        cmocka_unit_test(test_phone),
      cmocka_unit_test(test_party_chains), cmocka_unit_test(test_text),
      cmocka_unit_test(test_sha256),       cmocka_unit_test(test_hashed_sha256),
      cmocka_unit_test(test_composite),    cmocka_unit_test(test_invalid_arguments),
      cmocka_unit_test(test_reject_names),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
