/* `where` filters and run parameters: every operator, precedence, the
 * number/string rules, typed parameter parsing and each of its refusals,
 * parse errors with their exact positions and caret lines, bind errors,
 * limits, and the design's example over a few rows. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cleanroom/dataset.h"

static cr_param_decl decls[] = {
    {"codes", CR_PARAM_STRING_LIST}, {"min_age", CR_PARAM_INTEGER}, {"max_age", CR_PARAM_INTEGER},
    {"who", CR_PARAM_STRING},        {"score", CR_PARAM_NUMBER},
};
#define NDECLS (sizeof decls / sizeof decls[0])

static const char *const std_args[] = {"codes=E11, E10", "min_age=18", "max_age=65", "who=Ann",
                                       "score=2.5"};

static const char *const header[] = {"dx_code", "age", "name", "score", "first name", "zip"};
#define NCOLS (sizeof header / sizeof header[0])

/* Parses, binds to the standard params and header, evaluates one row. */
static int keep_row(const char *text, const char *const *row, size_t n) {
  cr_filter *f = NULL;
  cr_params p = {NULL, 0};
  cr_error err;
  size_t lens[16];
  cr_error_clear(&err);
  int rc = cr_filter_parse(&f, text, decls, NDECLS, "t", &err);
  if (rc != 0)
    fail_msg("parse of \"%s\" failed: %s", text, err.msg);
  assert_int_equal(cr_params_from_args(&p, std_args, 5, decls, NDECLS, &err), 0);
  rc = cr_filter_bind(f, &p, header, NCOLS, &err);
  if (rc != 0)
    fail_msg("bind of \"%s\" failed: %s", text, err.msg);
  cr_params_free(&p); /* bind copied what it needs */
  for (size_t i = 0; i < n; i++)
    lens[i] = strlen(row[i]);
  int r = cr_filter_eval(f, row, lens, n);
  assert_true(r == 0 || r == 1);
  /* Without lens, on NUL-terminated fields: the same answer. */
  assert_int_equal(cr_filter_eval(f, row, NULL, n), r);
  cr_filter_free(f);
  return r;
}

/* Row: dx_code, age, name, score, first name, zip. */
#define KEEP(text, ...)                                                                            \
  keep_row(text, (const char *const[]){__VA_ARGS__},                                               \
           sizeof((const char *const[]){__VA_ARGS__}) / sizeof(const char *))
#define AGE(text, age) KEEP(text, "E11", age, "Ann", "1", "Ann Lee", "01234")
#define NAME(text, name) KEEP(text, "E11", "40", name, "1", "Ann Lee", "01234")

/* Expects a parse error; returns its position and checks the caret line. */
static int parse_err(const char *text, const char *want, cr_error *err) {
  cr_filter *f = (cr_filter *)1;
  cr_error_clear(err);
  int rc = cr_filter_parse(&f, text, decls, NDECLS, "q.where.provider", err);
  if (rc != CR_ETEMPLATE)
    fail_msg("\"%s\": expected a parse error, got %d (%s)", text, rc, err->msg);
  assert_null(f);
  assert_int_equal(strncmp(err->msg, "q.where.provider: ", 18), 0);
  const char *p = strstr(err->msg, ": position ");
  if (p == NULL)
    fail_msg("\"%s\": no position in \"%s\"", text, err->msg);
  int pos = atoi(p + 11);
  if (want != NULL && strstr(err->msg, want) == NULL)
    fail_msg("\"%s\": \"%s\" not in \"%s\"", text, want, err->msg);
  /* Short ASCII text: excerpt is the text, caret under byte pos-1. */
  const char *caret = strrchr(err->msg, '\n');
  assert_non_null(caret);
  caret++;
  size_t tl = strlen(text), ascii = 1;
  for (size_t i = 0; i < tl; i++)
    if ((unsigned char)text[i] >= 0x80 || (unsigned char)text[i] < 0x20)
      ascii = 0;
  if (tl <= 100 && ascii) {
    assert_int_equal(strlen(caret), (size_t)pos);
    assert_int_equal(caret[pos - 1], '^');
    assert_int_equal(strspn(caret, " "), (size_t)(pos - 1));
  }
  return pos;
}

static void test_compare_numeric(void **state) {
  (void)state;
  assert_int_equal(AGE("age = 40", "40"), 1);
  assert_int_equal(AGE("age = 40", "41"), 0);
  assert_int_equal(AGE("age != 40", "41"), 1);
  assert_int_equal(AGE("age != 40", "40"), 0);
  assert_int_equal(AGE("age <> 40", "40"), 0);
  assert_int_equal(AGE("age < 40", "39"), 1);
  assert_int_equal(AGE("age < 40", "40"), 0);
  assert_int_equal(AGE("age <= 40", "40"), 1);
  assert_int_equal(AGE("age <= 40", "41"), 0);
  assert_int_equal(AGE("age > 40", "41"), 1);
  assert_int_equal(AGE("age > 40", "40"), 0);
  assert_int_equal(AGE("age >= 40", "40"), 1);
  assert_int_equal(AGE("age >= 40", "39.99"), 0);
  assert_int_equal(AGE("age>=-2.5e1", "-25"), 1);
  assert_int_equal(AGE("age < -2.5E+1", "-25"), 0);
  /* Whitespace, a sign, "5." and ".5" read as numbers in a field. */
  assert_int_equal(AGE("age = 7", " 7 \t"), 1);
  assert_int_equal(AGE("age = 7", "+7"), 1);
  assert_int_equal(AGE("age = 7", "7."), 1);
  assert_int_equal(AGE("age = 0.5", ".5"), 1);
  assert_int_equal(AGE("age = 40", "4e1"), 1);
  /* Parameters. */
  assert_int_equal(AGE("age >= :min_age", "18"), 1);
  assert_int_equal(AGE("age >= :min_age", "17"), 0);
  assert_int_equal(KEEP("score < :score", "E11", "1", "x", "2.49", "", ""), 1);
  assert_int_equal(KEEP("score < :score", "E11", "1", "x", "2.5", "", ""), 0);
}

static void test_compare_string(void **state) {
  (void)state;
  assert_int_equal(NAME("name = 'Ann'", "Ann"), 1);
  assert_int_equal(NAME("name = 'Ann'", "  Ann\t"), 1); /* field trimmed */
  assert_int_equal(NAME("name = 'Ann'", "ann"), 0);     /* case-sensitive */
  assert_int_equal(NAME("name = ' Ann'", "Ann"), 0);    /* literal not trimmed */
  assert_int_equal(NAME("name != 'Ann'", "Bob"), 1);
  assert_int_equal(NAME("name != 'Ann'", "Ann"), 0);
  assert_int_equal(NAME("name < 'B'", "Ann"), 1);
  assert_int_equal(NAME("name < 'Ann'", "An"), 1); /* a prefix sorts first */
  assert_int_equal(NAME("name <= 'Ann'", "Ann"), 1);
  assert_int_equal(NAME("name > 'Ann'", "Anna"), 1);
  assert_int_equal(NAME("name >= 'b'", "B"), 0); /* bytes: 'B' < 'b' */
  assert_int_equal(NAME("name = 'it''s'", "it's"), 1);
  assert_int_equal(NAME("name = ''", "   "), 1);
  assert_int_equal(NAME("name = 'é'", "é"), 1);
  assert_int_equal(NAME("name = :who", " Ann "), 1);
  assert_int_equal(NAME("name = :who", "Anne"), 0);
  assert_int_equal(KEEP("\"first name\" = 'Ann Lee'", "E11", "40", "x", "1", "Ann Lee", ""), 1);
  assert_int_equal(KEEP("\"first name\" = 'Ann'", "E11", "40", "x", "1", "Ann Lee", ""), 0);
}

static void test_numeric_vs_string(void **state) {
  (void)state;
  /* A number compares numerically, a string byte for byte. */
  assert_int_equal(KEEP("zip = 1234", "", "", "", "", "", "01234"), 1);
  assert_int_equal(KEEP("zip = '1234'", "", "", "", "", "", "01234"), 0);
  assert_int_equal(KEEP("zip = '01234'", "", "", "", "", "", " 01234 "), 1);
  assert_int_equal(AGE("age = 42.0", "42"), 1);
  assert_int_equal(AGE("age = '42.0'", "42"), 0);
  assert_int_equal(AGE("age < 9", "10"), 0);   /* numeric: 10 > 9 */
  assert_int_equal(AGE("age < '9'", "10"), 1); /* bytes: "10" < "9" */
  /* Integers compare exactly past 2^53, where doubles would not tell. */
  assert_int_equal(AGE("age = 9007199254740993", "9007199254740992"), 0);
  assert_int_equal(AGE("age = 9007199254740993", "9007199254740993"), 1);
  assert_int_equal(AGE("age > 9007199254740992", "9007199254740993"), 1);
}

static void test_unparsable_numbers(void **state) {
  (void)state;
  static const char *const bad[] = {"",      "abc", "12abc",    "0x10", "inf", "nan",
                                    "1e999", "--1", "1,5",      "1 2",  "-",   ".",
                                    "1e",    "e5",  "infinity", "1.2.3"};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    const char *ops[] = {"age = 5",
                         "age != 5",
                         "age < 5",
                         "age <= 5",
                         "age > 5",
                         "age >= 5",
                         "age BETWEEN 0 AND 10",
                         "age NOT BETWEEN 6 AND 10",
                         "age IN (5, 6)",
                         "age NOT IN (5, 6)",
                         "age >= :min_age"};
    for (size_t k = 0; k < sizeof ops / sizeof ops[0]; k++)
      if (AGE(ops[k], bad[i]) != 0)
        fail_msg("\"%s\" kept a row whose age is \"%s\"", ops[k], bad[i]);
  }
  /* NOT of a false comparison is true (two-valued logic, documented). */
  assert_int_equal(AGE("NOT age > 5", "abc"), 1);
  assert_int_equal(AGE("NOT (age IN (5, 6))", "abc"), 1);
  /* A long field is not a number (no allocation while evaluating). */
  char longnum[200];
  memset(longnum, '0', sizeof longnum - 2);
  longnum[sizeof longnum - 2] = '1';
  longnum[sizeof longnum - 1] = '\0';
  assert_int_equal(AGE("age = 1", longnum), 0);
  assert_int_equal(AGE("age = 1", longnum + 80), 1); /* 119 bytes */
}

static void test_precedence(void **state) {
  (void)state;
  /* a OR b AND c is a OR (b AND c). */
  const char *t = "age = 1 OR age = 2 AND name = 'x'";
  assert_int_equal(KEEP(t, "", "1", "y", "", "", ""), 1);
  assert_int_equal(KEEP(t, "", "2", "y", "", "", ""), 0);
  assert_int_equal(KEEP(t, "", "2", "x", "", "", ""), 1);
  /* b AND c OR a: the same. */
  assert_int_equal(KEEP("age = 2 AND name = 'x' OR age = 1", "", "1", "y", "", "", ""), 1);
  /* NOT binds tighter than AND: (NOT a) AND c. */
  t = "NOT age = 1 AND name = 'x'";
  assert_int_equal(KEEP(t, "", "2", "x", "", "", ""), 1);
  assert_int_equal(KEEP(t, "", "1", "y", "", "", ""), 0); /* NOT(a AND c) would keep */
  /* Parentheses override. */
  t = "(age = 1 OR age = 2) AND name = 'x'";
  assert_int_equal(KEEP(t, "", "1", "y", "", "", ""), 0);
  assert_int_equal(KEEP(t, "", "2", "x", "", "", ""), 1);
  t = "NOT (age = 1 AND name = 'x')";
  assert_int_equal(KEEP(t, "", "1", "y", "", "", ""), 1);
  assert_int_equal(KEEP(t, "", "1", "x", "", "", ""), 0);
  /* Keywords in any case. */
  assert_int_equal(KEEP("age between 1 and 5 Or not name in ('x')", "", "9", "y", "", "", ""), 1);
  assert_int_equal(KEEP("age BeTwEeN 1 AnD 5 oR NoT name iN ('y')", "", "9", "y", "", "", ""), 0);
}

static void test_not_and_parentheses(void **state) {
  (void)state;
  assert_int_equal(AGE("NOT age = 1", "1"), 0);
  assert_int_equal(AGE("NOT NOT age = 1", "1"), 1);
  assert_int_equal(AGE("NOT NOT NOT age = 1", "1"), 0);
  assert_int_equal(AGE("((((age = 1))))", "1"), 1);
  assert_int_equal(AGE("(NOT (age = 1)) OR (age = 1)", "7"), 1);
  assert_int_equal(AGE("NOT(age=1)AND(age=2)", "2"), 1);
  /* A long flat chain: n-ary, no depth problem. */
  char buf[4096];
  size_t w = 0;
  for (int i = 0; i < 300; i++)
    w += (size_t)snprintf(buf + w, sizeof buf - w, "%sage!=%d", i ? " AND " : "", i);
  assert_true(w < CR_FILTER_MAX_TEXT);
  assert_int_equal(AGE(buf, "300"), 1);
  assert_int_equal(AGE(buf, "299"), 0);
}

static void test_between(void **state) {
  (void)state;
  const char *t = "age BETWEEN 18 AND 65";
  assert_int_equal(AGE(t, "17"), 0);
  assert_int_equal(AGE(t, "17.999"), 0);
  assert_int_equal(AGE(t, "18"), 1); /* inclusive */
  assert_int_equal(AGE(t, "40"), 1);
  assert_int_equal(AGE(t, "65"), 1); /* inclusive */
  assert_int_equal(AGE(t, "65.001"), 0);
  t = "age NOT BETWEEN 18 AND 65";
  assert_int_equal(AGE(t, "17"), 1);
  assert_int_equal(AGE(t, "18"), 0);
  assert_int_equal(AGE(t, "65"), 0);
  assert_int_equal(AGE(t, "66"), 1);
  t = "age BETWEEN :min_age AND :max_age";
  assert_int_equal(AGE(t, "18"), 1);
  assert_int_equal(AGE(t, "65"), 1);
  assert_int_equal(AGE(t, "66"), 0);
  assert_int_equal(AGE("age BETWEEN 5 AND 1", "3"), 0); /* empty range */
  /* Strings: byte order, inclusive (ISO dates sort this way). */
  t = "name BETWEEN '2024-01-01' AND '2024-12-31'";
  assert_int_equal(NAME(t, "2024-01-01"), 1);
  assert_int_equal(NAME(t, "2024-06-30"), 1);
  assert_int_equal(NAME(t, "2024-12-31"), 1);
  assert_int_equal(NAME(t, "2025-01-01"), 0);
  assert_int_equal(NAME("name NOT BETWEEN 'b' AND 'd'", "a"), 1);
  assert_int_equal(NAME("name BETWEEN :who AND 'Z'", "Bob"), 1);
  /* BETWEEN's AND is not the logical AND. */
  assert_int_equal(AGE("age BETWEEN 1 AND 5 AND age != 3", "3"), 0);
  assert_int_equal(AGE("age BETWEEN 1 AND 5 AND age != 3", "4"), 1);
}

static void test_in_list(void **state) {
  (void)state;
  const char *t = "dx_code IN ('E11', 'E10', 'I10')";
  assert_int_equal(KEEP(t, "E11", "", "", "", "", ""), 1);
  assert_int_equal(KEEP(t, " I10 ", "", "", "", "", ""), 1);
  assert_int_equal(KEEP(t, "e11", "", "", "", "", ""), 0);
  assert_int_equal(KEEP(t, "E1", "", "", "", "", ""), 0);
  assert_int_equal(KEEP(t, "", "", "", "", "", ""), 0);
  assert_int_equal(KEEP("dx_code NOT IN ('E11','E10')", "E12", "", "", "", "", ""), 1);
  assert_int_equal(KEEP("dx_code NOT IN ('E11','E10')", "E10", "", "", "", "", ""), 0);
  t = "age IN (18, 21.5, -3, 9007199254740993)";
  assert_int_equal(AGE(t, "18"), 1);
  assert_int_equal(AGE(t, "18.0"), 1);
  assert_int_equal(AGE(t, "21.5"), 1);
  assert_int_equal(AGE(t, "-3"), 1);
  assert_int_equal(AGE(t, "19"), 0);
  assert_int_equal(AGE(t, "9007199254740993"), 1);
  assert_int_equal(AGE(t, "9007199254740992"), 0);
  assert_int_equal(AGE("age NOT IN (1, 2)", "3"), 1);
  assert_int_equal(AGE("age NOT IN (1, 2)", "2"), 0);
  assert_int_equal(AGE("age IN ('18')", "18"), 1);
  assert_int_equal(AGE("age IN ('18')", "18.0"), 0);
  /* A full list of 1024 items, searched. */
  char *buf = malloc(CR_FILTER_MAX_TEXT + 1);
  assert_non_null(buf);
  size_t w = (size_t)snprintf(buf, CR_FILTER_MAX_TEXT, "age IN (");
  for (unsigned i = 0; i < CR_FILTER_MAX_LIST; i++)
    w += (size_t)snprintf(buf + w, CR_FILTER_MAX_TEXT + 1 - w, "%u%s", (i * 37) % 100,
                          i + 1 < CR_FILTER_MAX_LIST ? "," : ")");
  assert_true(w <= CR_FILTER_MAX_TEXT);
  for (unsigned v = 0; v < 100; v++) {
    char age[8];
    snprintf(age, sizeof age, "%u", v);
    assert_int_equal(AGE(buf, age), 1);
  }
  assert_int_equal(AGE(buf, "100"), 0);
  assert_int_equal(AGE(buf, "-1"), 0);
  assert_int_equal(AGE(buf, "0.5"), 0);
  free(buf);
}

static void test_in_param(void **state) {
  (void)state;
  const char *t = "dx_code IN :codes";
  assert_int_equal(KEEP(t, "E11", "", "", "", "", ""), 1);
  assert_int_equal(KEEP(t, " E10\t", "", "", "", "", ""), 1);
  assert_int_equal(KEEP(t, "E12", "", "", "", "", ""), 0);
  assert_int_equal(KEEP(t, "e11", "", "", "", "", ""), 0);
  assert_int_equal(KEEP("dx_code NOT IN :codes", "E12", "", "", "", "", ""), 1);
  assert_int_equal(KEEP("dx_code NOT IN :codes", "E10", "", "", "", "", ""), 0);
}

static void test_design_example(void **state) {
  (void)state;
  static const char *const args[] = {"codes=E11,E10", "min_age=18", "max_age=65"};
  static const char *const rows[][3] = {
      {"a@x.org", "E11", "18"},   /* keep: low end */
      {"b@x.org", "E10", "65"},   /* keep: high end */
      {"c@x.org", "E10", "66"},   /* drop: too old */
      {"d@x.org", "E12", "40"},   /* drop: code */
      {"e@x.org", "E11", "17"},   /* drop: too young */
      {"f@x.org", "E11", ""},     /* drop: no age */
      {"g@x.org", " E11 ", "40"}, /* keep: trimmed */
  };
  static const int want[] = {1, 1, 0, 0, 0, 0, 1};
  static const char *const hdr[] = {"email", "dx_code", "age"};
  cr_filter *f = NULL;
  cr_params p = {NULL, 0};
  cr_error err;
  const char *const *cols;
  assert_int_equal(cr_filter_parse(&f, "dx_code IN :codes AND age BETWEEN :min_age AND :max_age",
                                   decls, 3, "eligible_patients", &err),
                   0);
  assert_int_equal(cr_filter_columns(f, &cols), 2);
  assert_string_equal(cols[0], "dx_code");
  assert_string_equal(cols[1], "age");
  assert_int_equal(cr_params_from_args(&p, args, 3, decls, 3, &err), 0);
  assert_int_equal(p.n, 3);
  assert_string_equal(p.v[0].name, "codes");
  assert_string_equal(p.v[0].text, "E11,E10");
  assert_string_equal(p.v[1].text, "18");
  assert_int_equal(cr_filter_bind(f, &p, hdr, 3, &err), 0);
  for (size_t i = 0; i < sizeof want / sizeof want[0]; i++)
    if (cr_filter_eval(f, rows[i], NULL, 3) != want[i])
      fail_msg("row %zu: expected %d", i, want[i]);
  /* The partner validates the same canonical texts into the same values. */
  const char *names[3], *texts[3];
  cr_params q = {NULL, 0};
  for (size_t i = 0; i < 3; i++) {
    names[i] = p.v[i].name;
    texts[i] = p.v[i].text;
  }
  assert_int_equal(cr_params_from_pairs(&q, names, texts, 3, decls, 3, &err), 0);
  for (size_t i = 0; i < 3; i++)
    assert_string_equal(q.v[i].text, p.v[i].text);
  /* Rebinding with another header order gives the same answers. */
  static const char *const hdr2[] = {"age", "email", "dx_code"};
  assert_int_equal(cr_filter_bind(f, &q, hdr2, 3, &err), 0);
  for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
    const char *r2[3] = {rows[i][2], rows[i][0], rows[i][1]};
    assert_int_equal(cr_filter_eval(f, r2, NULL, 3), want[i]);
  }
  cr_params_free(&q);
  cr_params_free(&p);
  cr_params_free(&p); /* idempotent */
  cr_filter_free(f);
}

static void test_columns(void **state) {
  (void)state;
  cr_filter *f = NULL;
  cr_error err;
  const char *const *cols;
  assert_int_equal(cr_filter_parse(&f, "b = 1 OR \"a b\" = 2 OR b = 3 OR \"say \"\"hi\"\"\" = 'x'",
                                   decls, NDECLS, NULL, &err),
                   0);
  assert_int_equal(cr_filter_columns(f, &cols), 3);
  assert_string_equal(cols[0], "b");
  assert_string_equal(cols[1], "a b");
  assert_string_equal(cols[2], "say \"hi\"");
  /* Keywords quoted become names; dotted and dashed names are names. */
  cr_filter_free(f);
  assert_int_equal(
      cr_filter_parse(&f, "\"AND\" = 1 AND x.y-z = 2 AND _k9 = 'v'", decls, NDECLS, NULL, &err), 0);
  assert_int_equal(cr_filter_columns(f, &cols), 3);
  assert_string_equal(cols[0], "AND");
  assert_string_equal(cols[1], "x.y-z");
  assert_string_equal(cols[2], "_k9");
  cr_filter_free(f);
  assert_int_equal(cr_filter_columns(NULL, &cols), 0);
  cr_filter_free(NULL);
}

static void test_params_parsing(void **state) {
  (void)state;
  cr_params p = {NULL, 0};
  cr_error err;
  static const char *const a[] = {" score = 1e3", "who=  O'Brien, Jr.  ",
                                  "codes= a\\,b , c\\\\d,\\x ,é ", "max_age=-0", "min_age=+018"};
  /* " score " is not the name "score": names are exact. */
  assert_int_equal(cr_params_from_args(&p, a, 5, decls, NDECLS, &err), CR_EUSAGE);
  assert_null(p.v);
  static const char *const b[] = {"score= 1e3", "who=  O'Brien, Jr.  ",
                                  "codes= a\\,b , c\\\\d,\\x ,é ", "max_age=-0", "min_age=+018"};
  assert_int_equal(cr_params_from_args(&p, b, 5, decls, NDECLS, &err), 0);
  assert_int_equal(p.n, NDECLS);
  /* Declaration order, whatever the arguments' order. */
  assert_string_equal(p.v[0].name, "codes");
  assert_int_equal(p.v[0].type, CR_PARAM_STRING_LIST);
  assert_int_equal(p.v[0].nitems, 4);
  assert_string_equal(p.v[0].items[0], "a,b");
  assert_string_equal(p.v[0].items[1], "c\\d");
  assert_string_equal(p.v[0].items[2], "\\x"); /* other backslashes are kept */
  assert_string_equal(p.v[0].items[3], "é");
  assert_string_equal(p.v[0].text, "a\\,b,c\\\\d,\\\\x,é");
  assert_string_equal(p.v[1].text, "18");
  assert_int_equal(p.v[1].integer, 18);
  assert_string_equal(p.v[2].text, "0");
  assert_string_equal(p.v[3].text, "O'Brien, Jr.");
  assert_string_equal(p.v[4].text, "1000");
  assert_true(p.v[4].number == 1000.0);
  assert_ptr_equal(cr_params_get(&p, "who"), &p.v[3]);
  assert_null(cr_params_get(&p, "nobody"));
  cr_params_free(&p);
  assert_null(p.v);
}

static void test_params_canonical(void **state) {
  (void)state;
  static const struct {
    cr_param_type type;
    const char *in, *canon;
  } cases[] = {
      {CR_PARAM_INTEGER, "42", "42"},
      {CR_PARAM_INTEGER, " -0042 ", "-42"},
      {CR_PARAM_INTEGER, "9223372036854775807", "9223372036854775807"},
      {CR_PARAM_INTEGER, "-9223372036854775808", "-9223372036854775808"},
      {CR_PARAM_NUMBER, "2.50", "2.5"},
      {CR_PARAM_NUMBER, "0.1", "0.1"},
      {CR_PARAM_NUMBER, "+7", "7"},
      {CR_PARAM_NUMBER, "1e20", "1e+20"},
      {CR_PARAM_NUMBER, "-1.5e-7", "-1.5e-07"},
      {CR_PARAM_NUMBER, "123456789.123456789", "123456789.12345679"},
      {CR_PARAM_STRING, "", ""},
      {CR_PARAM_STRING, " a b ", "a b"},
      {CR_PARAM_STRING_LIST, "x", "x"},
      {CR_PARAM_STRING_LIST, "x , y,z", "x,y,z"},
      {CR_PARAM_STRING_LIST, "a\\,b,a\\\\", "a\\,b,a\\\\"},
      {CR_PARAM_STRING_LIST, "tail\\", "tail\\\\"},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    cr_param_decl d = {"p", cases[i].type};
    const char *name = "p";
    cr_params p = {NULL, 0}, q = {NULL, 0};
    cr_error err;
    if (cr_params_from_pairs(&p, &name, &cases[i].in, 1, &d, 1, &err) != 0)
      fail_msg("case %zu: %s", i, err.msg);
    assert_string_equal(p.v[0].text, cases[i].canon);
    /* Canonical text is a fixed point. */
    const char *t = p.v[0].text;
    assert_int_equal(cr_params_from_pairs(&q, &name, &t, 1, &d, 1, &err), 0);
    assert_string_equal(q.v[0].text, cases[i].canon);
    assert_int_equal(q.v[0].nitems, p.v[0].nitems);
    assert_true(q.v[0].number == p.v[0].number);
    assert_true(q.v[0].integer == p.v[0].integer);
    cr_params_free(&p);
    cr_params_free(&q);
  }
}

/* Expects a parameter error; the message must name the parameter and never
 * quote the value. */
static void param_err(cr_param_type type, const char *value, const char *want) {
  cr_param_decl d = {"the_param", type};
  char arg[70000];
  const char *argp = arg, *name = "the_param";
  cr_params p = {(cr_param_value *)1, 7};
  cr_error err;
  snprintf(arg, sizeof arg, "the_param=%s", value);
  assert_int_equal(cr_params_from_args(&p, &argp, 1, &d, 1, &err), CR_EUSAGE);
  assert_null(p.v);
  assert_int_equal(p.n, 0);
  if (strstr(err.msg, "--param the_param") == NULL || strstr(err.msg, want) == NULL)
    fail_msg("\"%s\" as %s: \"%s\" lacks \"%s\"", value, cr_param_type_name(type), err.msg, want);
  if (strlen(value) >= 3 && strstr(err.msg, value) != NULL)
    fail_msg("the value \"%s\" is in the message \"%s\"", value, err.msg);
  /* The partner's copy: the same refusal, as a protocol error. */
  assert_int_equal(cr_params_from_pairs(&p, &name, &value, 1, &d, 1, &err), CR_EPROTO);
  assert_non_null(strstr(err.msg, "the_param from the partner"));
  assert_non_null(strstr(err.msg, want));
}

static void test_params_errors(void **state) {
  (void)state;
  param_err(CR_PARAM_INTEGER, "18.5", "expected an integer");
  param_err(CR_PARAM_INTEGER, "abc", "expected an integer");
  param_err(CR_PARAM_INTEGER, "", "expected an integer");
  param_err(CR_PARAM_INTEGER, "1e3", "expected an integer");
  param_err(CR_PARAM_INTEGER, "0x10", "expected an integer");
  param_err(CR_PARAM_INTEGER, "1 2", "expected an integer");
  param_err(CR_PARAM_INTEGER, "9223372036854775808", "out of range");
  param_err(CR_PARAM_INTEGER, "-9223372036854775809", "out of range");
  param_err(CR_PARAM_NUMBER, "abc", "expected a number");
  param_err(CR_PARAM_NUMBER, "", "expected a number");
  param_err(CR_PARAM_NUMBER, "inf", "expected a number");
  param_err(CR_PARAM_NUMBER, "nan", "expected a number");
  param_err(CR_PARAM_NUMBER, "0x1p3", "expected a number");
  param_err(CR_PARAM_NUMBER, ".5", "expected a number");
  param_err(CR_PARAM_NUMBER, "1e999", "out of range");
  param_err(CR_PARAM_STRING_LIST, "", "found an empty value");
  param_err(CR_PARAM_STRING_LIST, "  ", "found an empty value");
  param_err(CR_PARAM_STRING_LIST, "abc,,def", "item 2 is empty");
  param_err(CR_PARAM_STRING_LIST, "abc,   ,def", "item 2 is empty");
  param_err(CR_PARAM_STRING_LIST, "abc,", "item 2 is empty");
  param_err(CR_PARAM_STRING_LIST, ",abc", "item 1 is empty");
  param_err(CR_PARAM_STRING_LIST, "abc\x01", "control character");
  param_err(CR_PARAM_STRING, "secret\ttab", "control character");
  param_err(CR_PARAM_STRING, "bad\xc3(utf8", "invalid UTF-8");
  param_err(CR_PARAM_STRING, "overlong\xc0\xaf", "invalid UTF-8");
  param_err(CR_PARAM_STRING, "surrogate\xed\xa0\x80", "invalid UTF-8");
  param_err(CR_PARAM_STRING, "esc\x1b[31m", "control character");
  /* Too many items, too long a value. */
  char *big = malloc(CR_PARAM_MAX_TEXT + 2);
  assert_non_null(big);
  size_t w = 0;
  for (unsigned i = 0; i <= CR_FILTER_MAX_LIST; i++)
    w += (size_t)snprintf(big + w, 16, "%s%u", i ? "," : "", i);
  param_err(CR_PARAM_STRING_LIST, big, "more than 1024 items");
  big[w - 5] = '\0'; /* 1024 items: fine */
  {
    cr_param_decl d = {"l", CR_PARAM_STRING_LIST};
    cr_params p = {NULL, 0};
    cr_error err;
    const char *n = "l", *v = big;
    assert_int_equal(cr_params_from_pairs(&p, &n, &v, 1, &d, 1, &err), 0);
    assert_int_equal(p.v[0].nitems, CR_FILTER_MAX_LIST);
    cr_params_free(&p);
  }
  memset(big, 'a', CR_PARAM_MAX_TEXT + 1);
  big[CR_PARAM_MAX_TEXT + 1] = '\0';
  param_err(CR_PARAM_STRING, big, "longer than 65536 bytes");
  free(big);
}

static void test_params_names(void **state) {
  (void)state;
  cr_params p = {NULL, 0};
  cr_error err;
  const char *a1[] = {"codes=E11", "min_age=1", "max_age=2", "who=x"};
  assert_int_equal(cr_params_from_args(&p, a1, 4, decls, NDECLS, &err), CR_EUSAGE);
  assert_string_equal(err.msg, "--param score=<number> is missing");
  const char *a2[] = {"codes=E11", "min_age=1", "max_age=2", "who=x", "score=1", "extra=1"};
  assert_int_equal(cr_params_from_args(&p, a2, 6, decls, NDECLS, &err), CR_EUSAGE);
  assert_string_equal(err.msg, "--param extra: the query declares no such parameter");
  const char *a3[] = {"codes=E11", "min_age=1", "min_age=2"};
  assert_int_equal(cr_params_from_args(&p, a3, 3, decls, NDECLS, &err), CR_EUSAGE);
  assert_string_equal(err.msg, "--param min_age: given twice");
  const char *a4[] = {"codes"};
  assert_int_equal(cr_params_from_args(&p, a4, 1, decls, NDECLS, &err), CR_EUSAGE);
  assert_string_equal(err.msg, "--param #1: expected name=value");
  const char *a5[] = {"=E11"};
  assert_int_equal(cr_params_from_args(&p, a5, 1, decls, NDECLS, &err), CR_EUSAGE);
  assert_string_equal(err.msg, "--param #1: expected name=value");
  /* A name that is not a name is not echoed. */
  const char *a6[] = {"codes=E11", "\x1b[2J=1"};
  assert_int_equal(cr_params_from_args(&p, a6, 2, decls, NDECLS, &err), CR_EUSAGE);
  assert_string_equal(err.msg, "--param #2: not the name of a declared parameter");
  assert_null(p.v);
  /* No declarations, no arguments: empty. */
  assert_int_equal(cr_params_from_args(&p, NULL, 0, NULL, 0, &err), 0);
  assert_null(p.v);
  assert_int_equal(p.n, 0);
  /* From the partner. */
  const char *n1[] = {"codes", "codes"}, *t1[] = {"a", "b"};
  assert_int_equal(cr_params_from_pairs(&p, n1, t1, 2, decls, 1, &err), CR_EPROTO);
  assert_string_equal(err.msg, "parameter codes from the partner: given twice");
  assert_int_equal(cr_params_from_pairs(&p, n1, t1, 0, decls, 1, &err), CR_EPROTO);
  assert_string_equal(err.msg, "parameter codes (string_list) is missing from the partner's Hello");
  const char *n2[] = {"zzz"};
  assert_int_equal(cr_params_from_pairs(&p, n2, t1, 1, decls, 1, &err), CR_EPROTO);
  assert_string_equal(err.msg,
                      "parameter zzz from the partner: the query declares no such parameter");
  /* Bad arguments. */
  assert_int_equal(cr_params_from_pairs(NULL, n2, t1, 1, decls, 1, &err), CR_EINVAL);
  cr_param_decl bad = {NULL, CR_PARAM_STRING};
  assert_int_equal(cr_params_from_args(&p, NULL, 0, &bad, 1, &err), CR_EINVAL);
  cr_params_free(NULL);
}

static void test_parse_errors(void **state) {
  (void)state;
  cr_error err;
  static const struct {
    const char *text;
    int pos;
    const char *want;
  } cases[] = {
      {"", 1, "expected a column name, NOT or '(' but found end of input"},
      {"   ", 4, "but found end of input"},
      {"age >", 6, "expected a string, a number or a :parameter but found end of input"},
      {"age 5", 5,
       "expected a comparison (=, !=, <, <=, >, >=), IN, NOT IN, BETWEEN or NOT "
       "BETWEEN but found number 5"},
      {"age = 5 5", 9, "expected AND, OR or the end of the filter but found number 5"},
      {"age = 5 name = 'x'", 9, "but found name name"},
      {"(age = 5", 9, "expected AND, OR or ')' but found end of input"},
      {"age = 5)", 8, "expected AND, OR or the end of the filter but found ')'"},
      {"()", 2, "expected a column name, NOT or '(' but found ')'"},
      {"age IN ()", 9, "expected a string or a number but found ')'"},
      {"age IN (1, 'a')", 12, "expected a number (a list holds one kind) but found string 'a'"},
      {"age IN ('a', 1)", 14, "expected a string (a list holds one kind) but found number 1"},
      {"age IN (1 2)", 11, "expected ',' or ')' but found number 2"},
      {"age IN (1,)", 11, "expected a number but found ')'"},
      {"age IN (:min_age)", 9, "expected a string or a number but found parameter :min_age"},
      {"age IN 5", 8, "expected '(' or a :parameter after IN but found number 5"},
      {"name = 'abc", 8, "unterminated string"},
      {"name = 'it''s", 8, "unterminated string"},
      {"\"first name = 1", 1, "unterminated quoted name"},
      {"\"\" = 1", 1, "empty quoted name"},
      {"age = 1.2.3", 7, "malformed number"},
      {"age = 5x", 7, "malformed number"},
      {"age = 1e", 7, "malformed number"},
      {"age = 1.", 7, "malformed number"},
      {"age = 007e+", 7, "malformed number"},
      {"age = .5", 7, "unexpected character '.'"},
      {"age = - 5", 7, "unexpected character '-'"},
      {"age = :", 7, "expected a parameter name after ':'"},
      {"age = :9", 7, "expected a parameter name after ':'"},
      {"age ! 5", 5, "unexpected '!' (not equal is written !=)"},
      {"age == 5", 6, "expected a string, a number or a :parameter but found '='"},
      {"age = 5 # x", 9, "unexpected character '#'"},
      {"age = \x01", 7, "unexpected byte 0x01"},
      {"age = 1e999", 7, "number out of range"},
      {"age IN (1, -1e400)", 12, "number out of range"},
      {"age BETWEEN 1 5", 15, "expected AND (BETWEEN low AND high) but found number 5"},
      {"age BETWEEN 1 OR 5", 15, "expected AND (BETWEEN low AND high) but found OR"},
      {"age BETWEEN 1 AND 'x'", 19,
       "BETWEEN bounds must be of one kind, found a number and a string"},
      {"age BETWEEN :who AND 5", 22, "found a string and a number"},
      {"age NOT 5", 9, "expected IN or BETWEEN after NOT but found number 5"},
      {"age NOT = 5", 9, "expected IN or BETWEEN after NOT but found '='"},
      {"AND age = 1", 1, "expected a column name, NOT or '(' but found AND"},
      {"age = 1 AND", 12, "but found end of input"},
      {"age = 1 OR OR age = 2", 12, "expected a column name, NOT or '(' but found OR"},
      {"NOT", 4, "but found end of input"},
      {"'age' = 1", 1, "expected a column name, NOT or '(' but found string 'age'"},
      {"5 = age", 1, "expected a column name, NOT or '(' but found number 5"},
      {"age = name", 7, "expected a string, a number or a :parameter but found name name"},
      {"age > :nope", 7, "parameter :nope is not declared in the query's params"},
      {"age > :codes", 7, "parameter :codes is a string_list, which can only be used after IN"},
      {"dx_code IN :min_age", 12, "IN needs a string_list parameter, but :min_age is an integer"},
      {"dx_code IN :who", 12, "but :who is a string"},
      {"dx_code IN :undeclared", 12, "parameter :undeclared is not declared"},
      {"age BETWEEN :min_age AND :codes", 26, "only be used after IN"},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    int pos = parse_err(cases[i].text, cases[i].want, &err);
    if (pos != cases[i].pos)
      fail_msg("\"%s\": position %d, expected %d (%s)", cases[i].text, pos, cases[i].pos, err.msg);
  }
}

static void test_parse_error_message(void **state) {
  (void)state;
  cr_error err;
  cr_filter *f = NULL;
  /* The design example with its second AND missing: the whole message. */
  assert_int_equal(cr_filter_parse(&f, "dx_code IN :codes AND age BETWEEN :min_age max_age", decls,
                                   NDECLS, "$.queries.eligible.where.provider", &err),
                   CR_ETEMPLATE);
  assert_string_equal(err.msg,
                      "$.queries.eligible.where.provider: position 44: expected AND (BETWEEN "
                      "low AND high) but found name max_age\n"
                      "dx_code IN :codes AND age BETWEEN :min_age max_age\n"
                      "                                           ^");
  /* Without an origin: "filter". */
  assert_int_equal(cr_filter_parse(&f, "x >", decls, NDECLS, NULL, &err), CR_ETEMPLATE);
  assert_int_equal(strncmp(err.msg, "filter: position 4: ", 20), 0);
  /* Multi-byte characters take one column; newlines and tabs show as spaces. */
  assert_int_equal(parse_err("name = 'é€' AND\n\t5", NULL, &err), 21);
  const char *nl = strchr(err.msg, '\n');
  assert_string_equal(nl, "\nname = 'é€' AND  5\n"
                          "                 ^"); /* 17 columns */
  /* A long text: a window around the position, marked with "...". */
  char text[CR_FILTER_MAX_TEXT + 1];
  size_t w = 0;
  while (w < 3000)
    w += (size_t)snprintf(text + w, sizeof text - w, "age != %04zu AND ", w % 10000);
  snprintf(text + w, sizeof text - w,
           "age ! 1 AND age != 2 AND age != 3 AND age != 4 AND "
           "age != 5 AND age != 6 AND age != 7 AND age != 8");
  int pos = parse_err(text, "unexpected '!'", &err);
  assert_int_equal(pos, (int)w + 5);
  const char *line = strchr(err.msg, '\n') + 1, *caret = strchr(line, '\n') + 1;
  assert_int_equal(strncmp(line, "...", 3), 0);
  size_t col = strlen(caret) - 1;
  assert_int_equal(caret[col], '^');
  assert_int_equal(line[col], '!');
  assert_non_null(strstr(line, "...\n"));
  assert_true(strlen(err.msg) < 400);
  /* Invalid arguments. */
  assert_int_equal(cr_filter_parse(NULL, "x = 1", decls, NDECLS, NULL, &err), CR_EINVAL);
  assert_int_equal(cr_filter_parse(&f, NULL, decls, NDECLS, NULL, &err), CR_EINVAL);
  assert_null(f);
  assert_int_equal(cr_filter_parse(&f, "x = 1", NULL, 1, NULL, &err), CR_EINVAL);
}

static void test_limits(void **state) {
  (void)state;
  cr_error err;
  cr_filter *f = NULL;
  char *buf = malloc(2 * CR_FILTER_MAX_TEXT);
  assert_non_null(buf);
  /* Length: 4096 bytes parse, 4097 do not. */
  memset(buf, ' ', CR_FILTER_MAX_TEXT);
  memcpy(buf, "age = 1", 7);
  buf[CR_FILTER_MAX_TEXT] = '\0';
  assert_int_equal(cr_filter_parse(&f, buf, decls, NDECLS, "q", &err), 0);
  cr_filter_free(f);
  buf[CR_FILTER_MAX_TEXT] = ' ';
  buf[CR_FILTER_MAX_TEXT + 1] = '\0';
  assert_int_equal(cr_filter_parse(&f, buf, decls, NDECLS, "q", &err), CR_ETEMPLATE);
  assert_string_equal(err.msg, "q: the filter is 4097 bytes long, at most 4096");
  assert_null(f);
  /* Depth: 64 parentheses parse, the 65th is refused where it stands. */
  for (unsigned d = CR_FILTER_MAX_DEPTH; d <= CR_FILTER_MAX_DEPTH + 1; d++) {
    size_t w = 0;
    for (unsigned i = 0; i < d; i++)
      buf[w++] = '(';
    w += (size_t)sprintf(buf + w, "age = 1");
    for (unsigned i = 0; i < d; i++)
      buf[w++] = ')';
    buf[w] = '\0';
    if (d == CR_FILTER_MAX_DEPTH) {
      assert_int_equal(AGE(buf, "1"), 1);
    } else {
      assert_int_equal(parse_err(buf, "nested deeper than 64 levels", &err), 65);
    }
  }
  /* NOT counts as a level too. */
  for (unsigned d = CR_FILTER_MAX_DEPTH; d <= CR_FILTER_MAX_DEPTH + 1; d++) {
    size_t w = 0;
    for (unsigned i = 0; i < d; i++)
      w += (size_t)sprintf(buf + w, "NOT ");
    sprintf(buf + w, "age = 1");
    if (d == CR_FILTER_MAX_DEPTH) {
      assert_int_equal(AGE(buf, "1"), 1); /* an even number of NOTs */
    } else {
      assert_int_equal(parse_err(buf, "nested deeper", &err), 4 * 64 + 1);
    }
  }
  /* Mixed: 32 "NOT (" pairs reach 64; one more NOT is too deep. */
  {
    size_t w = 0;
    for (unsigned i = 0; i < 32; i++)
      w += (size_t)sprintf(buf + w, "NOT (");
    w += (size_t)sprintf(buf + w, "NOT age = 1");
    for (unsigned i = 0; i < 32; i++)
      buf[w++] = ')';
    buf[w] = '\0';
    assert_int_equal(parse_err(buf, "nested deeper", &err), 5 * 32 + 1);
  }
  /* List: 1024 items parse (test_in_list), the 1025th is refused. */
  {
    size_t w = (size_t)sprintf(buf, "age IN ("), at = 0;
    for (unsigned i = 0; i <= CR_FILTER_MAX_LIST; i++) {
      if (i == CR_FILTER_MAX_LIST)
        at = w;
      w += (size_t)sprintf(buf + w, "%s1", i ? "," : "");
    }
    sprintf(buf + w, ")");
    assert_int_equal(parse_err(buf, "list longer than 1024 items", &err), (int)at + 2);
  }
  free(buf);
}

static void test_bind_errors(void **state) {
  (void)state;
  cr_error err;
  cr_filter *f = NULL;
  cr_params p = {NULL, 0};
  assert_int_equal(
      cr_filter_parse(&f, "height > 5 OR age > :min_age", decls, NDECLS, "$.where.provider", &err),
      0);
  assert_int_equal(cr_params_from_args(&p, std_args, 5, decls, NDECLS, &err), 0);
  assert_int_equal(cr_filter_bind(f, &p, header, NCOLS, &err), CR_EDATA);
  assert_string_equal(err.msg, "$.where.provider: column \"height\" used in the filter is not "
                               "in the data's header");
  /* Unbound: every row dropped. */
  const char *row[] = {"99", "99"};
  assert_int_equal(cr_filter_eval(f, row, NULL, 2), 0);
  static const char *const dup[] = {"height", "age", "height"};
  assert_int_equal(cr_filter_bind(f, &p, dup, 3, &err), CR_EDATA);
  assert_non_null(strstr(err.msg, "column \"height\" used in the filter appears more than once"));
  static const char *const ok[] = {"height", "age"};
  assert_int_equal(cr_filter_bind(f, NULL, ok, 2, &err), CR_EINVAL);
  assert_string_equal(err.msg, "$.where.provider: parameter :min_age used in the filter has no "
                               "value");
  /* A value of another type than declared. */
  cr_param_decl other[] = {{"min_age", CR_PARAM_NUMBER}};
  const char *a[] = {"min_age=1.5"};
  cr_params q = {NULL, 0};
  assert_int_equal(cr_params_from_args(&q, a, 1, other, 1, &err), 0);
  assert_int_equal(cr_filter_bind(f, &q, ok, 2, &err), CR_EINVAL);
  assert_string_equal(err.msg, "$.where.provider: parameter :min_age is declared an integer but "
                               "its value is a number");
  cr_params_free(&q);
  assert_int_equal(cr_filter_bind(f, &p, ok, 2, &err), 0);
  assert_int_equal(cr_filter_eval(f, row, NULL, 2), 1);
  /* A short row: missing fields read as empty (not numbers). */
  assert_int_equal(cr_filter_eval(f, row, NULL, 1), 1);
  assert_int_equal(cr_filter_eval(f, row, NULL, 0), 0);
  const char *row2[] = {"1", "99"};
  size_t lens[] = {1, 1}; /* "9": lens, not NUL, decide */
  assert_int_equal(cr_filter_eval(f, row2, lens, 2), 0);
  assert_int_equal(cr_filter_eval(NULL, row2, lens, 2), 0);
  assert_int_equal(cr_filter_bind(NULL, &p, ok, 2, &err), CR_EINVAL);
  cr_params_free(&p);
  cr_filter_free(f);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_compare_numeric),
      cmocka_unit_test(test_compare_string),
      cmocka_unit_test(test_numeric_vs_string),
      cmocka_unit_test(test_unparsable_numbers),
      cmocka_unit_test(test_precedence),
      cmocka_unit_test(test_not_and_parentheses),
      cmocka_unit_test(test_between),
      cmocka_unit_test(test_in_list),
      cmocka_unit_test(test_in_param),
      cmocka_unit_test(test_design_example),
      cmocka_unit_test(test_columns),
      cmocka_unit_test(test_params_parsing),
      cmocka_unit_test(test_params_canonical),
      cmocka_unit_test(test_params_errors),
      cmocka_unit_test(test_params_names),
      cmocka_unit_test(test_parse_errors),
      cmocka_unit_test(test_parse_error_message),
      cmocka_unit_test(test_limits),
      cmocka_unit_test(test_bind_errors),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
