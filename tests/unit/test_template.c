/*
 * Template loading and validation: every field broken in turn must be
 * refused with its JSON path; every error is reported; the hash ignores
 * formatting and follows every value.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <jansson.h>

#include "cleanroom/template.h"

/*
 * Design §6's example with every feature in use. Written with ' for " so it
 * stays readable; dq() swaps them back (the text has no apostrophes).
 */
static const char BASE[] =
    "{'format': 'cleanroom-template/1',"
    " 'name': 'HomeSure x Acme Security: audience overlap',"
    " 'parties': {"
    "  'provider': {'org': 'Acme Security', 'cert_sha256': "
    "'1111111111111111111111111111111111111111111111111111111111111111',"
    " 'address': 'acme.example:7443'},"
    "  'consumer': {'org': 'HomeSure Insurance', 'cert_sha256': "
    "'ABABABABABABABABABABABABABABABABABABABABABABABABABABABABABABABAB'}},"
    " 'suite': 'ristretto255',"
    " 'match_key': {'name': 'email', 'columns': ['email'], 'normalize': ['email']},"
    " 'data': {"
    "  'provider': {'required_columns': ['email', 'segment', 'dx_code', 'age']},"
    "  'consumer': {'required_columns': ['policy_id']}},"
    " 'queries': {"
    "  'overlap': {'kind': 'count', 'run_by': ['consumer'],"
    "   'results_to': ['provider', 'consumer'], 'min_count': 100},"
    "  'overlap_by_segment': {'kind': 'count', 'group_by': {'provider': 'segment'},"
    "   'run_by': ['consumer'], 'results_to': ['consumer'], 'min_count': 100},"
    "  'my_matched_users': {'kind': 'members', 'run_by': ['consumer'],"
    "   'results_to': ['consumer'], 'min_count': 100, 'columns': ['policy_id']},"
    "  'eligible_patients': {'kind': 'count', 'run_by': ['consumer'], 'results_to': ['consumer'],"
    "   'where': {'provider': 'dx_code IN :codes AND age BETWEEN :min_age AND :max_age'},"
    "   'params': {'codes': 'string_list', 'min_age': 'integer', 'max_age': 'integer'},"
    "   'min_count': 50}},"
    " 'limits': {'max_runs_per_query': 20, 'min_set_size': 1000,"
    "  'max_set_size': 100000000, 'not_after': '2027-06-30T00:00:00Z'},"
    " 'require_signatures': true}";

/* SHA-256 of BASE's RFC 8785 form, computed independently (Python json,
 * sort_keys, compact separators: identical to JCS for this ASCII text). */
static const char BASE_SHA256[] =
    "881ea670e493223e19b05d128de7f2138a528a12729a39cf52dbe4d1ac17c231";

static char *dq(const char *s) {
  char *d = strdup(s);
  assert_non_null(d);
  for (char *p = d; *p; p++)
    if (*p == '\'')
      *p = '"';
  return d;
}

static json_t *base_json(void) {
  char *s = dq(BASE);
  json_error_t jerr;
  json_t *j = json_loads(s, 0, &jerr);
  free(s);
  assert_non_null(j);
  return j;
}

/*
 * Sets (or with value NULL deletes) the member at a '/'-separated path of
 * object keys; value is JSON text written with '.
 */
static void set_at(json_t *root, const char *ptr, const char *value) {
  char path[256];
  json_t *parent = root;
  char *key, *slash;
  snprintf(path, sizeof path, "%s", ptr);
  key = path;
  while ((slash = strchr(key, '/')) != NULL) {
    *slash = '\0';
    parent = json_object_get(parent, key);
    assert_non_null(parent);
    key = slash + 1;
  }
  if (value == NULL) {
    assert_int_equal(json_object_del(parent, key), 0);
    return;
  }
  char *v = dq(value);
  json_error_t jerr;
  json_t *j = json_loads(v, JSON_DECODE_ANY, &jerr);
  free(v);
  assert_non_null(j);
  assert_int_equal(json_object_set_new(parent, key, j), 0);
}

static char *dump(const json_t *j, size_t flags) {
  char *s = json_dumps(j, flags);
  assert_non_null(s);
  return s;
}

/* BASE with one change, as text. */
static char *mutated(const char *ptr, const char *value) {
  json_t *j = base_json();
  set_at(j, ptr, value);
  char *s = dump(j, JSON_INDENT(2));
  json_decref(j);
  return s;
}

static void hexof(char out[65], const uint8_t h[32]) {
  static const char x[] = "0123456789abcdef";
  for (int i = 0; i < 32; i++) {
    out[2 * i] = x[h[i] >> 4];
    out[2 * i + 1] = x[h[i] & 15];
  }
  out[64] = '\0';
}

/* ------------------------------------------------------------ valid input */

static void test_base_parses(void **state) {
  (void)state;
  char *s = dq(BASE);
  cr_template *t = NULL;
  cr_error err;
  cr_error_clear(&err);
  int rc = cr_template_parse(&t, s, strlen(s), "base.json", &err);
  if (rc != 0)
    print_error("%s\n", err.msg);
  assert_int_equal(rc, 0);
  assert_non_null(t);

  assert_string_equal(t->name, "HomeSure x Acme Security: audience overlap");
  assert_string_equal(t->path, "base.json");
  assert_string_equal(t->suite, "ristretto255");
  assert_string_equal(t->parties[CR_ROLE_PROVIDER].org, "Acme Security");
  assert_string_equal(t->parties[CR_ROLE_PROVIDER].address, "acme.example:7443");
  assert_null(t->parties[CR_ROLE_CONSUMER].address);
  for (int i = 0; i < 32; i++) {
    assert_int_equal(t->parties[CR_ROLE_PROVIDER].cert_sha256[i], 0x11);
    assert_int_equal(t->parties[CR_ROLE_CONSUMER].cert_sha256[i], 0xab); /* upper case ok */
  }
  assert_string_equal(t->match_key.name, "email");
  assert_int_equal(t->match_key.ncolumns, 1);
  assert_string_equal(t->match_key.columns[0], "email");
  assert_int_equal(t->match_key.nnormalize, 1);
  assert_int_equal(t->match_key.normalize[0], CR_NORM_EMAIL);
  assert_null(t->match_key.default_country_code);

  /* Declared columns first, then match key columns not listed. */
  assert_int_equal(t->nrequired_columns[CR_ROLE_PROVIDER], 4);
  assert_string_equal(t->required_columns[CR_ROLE_PROVIDER][1], "segment");
  assert_int_equal(t->nrequired_columns[CR_ROLE_CONSUMER], 2);
  assert_string_equal(t->required_columns[CR_ROLE_CONSUMER][0], "policy_id");
  assert_string_equal(t->required_columns[CR_ROLE_CONSUMER][1], "email");

  assert_int_equal(t->nqueries, 4);
  assert_string_equal(t->queries[0].name, "overlap"); /* template order */
  const cr_query *q = cr_template_query(t, "overlap");
  assert_non_null(q);
  assert_int_equal(q->kind, CR_QUERY_COUNT);
  assert_int_equal(q->run_by, CR_ROLE_BIT(CR_ROLE_CONSUMER));
  assert_int_equal(q->results_to, CR_ROLE_BIT(CR_ROLE_PROVIDER) | CR_ROLE_BIT(CR_ROLE_CONSUMER));
  assert_int_equal(q->min_count, 100);
  assert_null(q->group_by[0]);
  assert_null(q->columns);

  q = cr_template_query(t, "overlap_by_segment");
  assert_non_null(q);
  assert_string_equal(q->group_by[CR_ROLE_PROVIDER], "segment");
  assert_null(q->group_by[CR_ROLE_CONSUMER]);

  q = cr_template_query(t, "my_matched_users");
  assert_non_null(q);
  assert_int_equal(q->kind, CR_QUERY_MEMBERS);
  assert_int_equal(q->ncolumns, 1);
  assert_string_equal(q->columns[0], "policy_id");

  q = cr_template_query(t, "eligible_patients");
  assert_non_null(q);
  assert_int_equal(q->min_count, 50);
  assert_string_equal(q->where[CR_ROLE_PROVIDER],
                      "dx_code IN :codes AND age BETWEEN :min_age AND :max_age");
  assert_null(q->where[CR_ROLE_CONSUMER]);
  assert_int_equal(q->nparams, 3);
  assert_string_equal(q->params[0].name, "codes");
  assert_int_equal(q->params[0].type, CR_PARAM_STRING_LIST);
  assert_string_equal(q->params[2].name, "max_age");
  assert_int_equal(q->params[2].type, CR_PARAM_INTEGER);

  assert_null(cr_template_query(t, "nope"));
  assert_null(cr_template_query(t, NULL));

  assert_int_equal(t->limits.max_runs_per_query, 20);
  assert_int_equal(t->limits.min_set_size, 1000);
  assert_int_equal(t->limits.max_set_size, 100000000);
  assert_int_equal(t->limits.not_after, 1814313600); /* 2027-06-30T00:00:00Z */
  assert_true(t->require_signatures);

  char hex[65];
  hexof(hex, t->sha256);
  assert_string_equal(hex, BASE_SHA256);
  cr_template_free(t);

  /* A UTF-8 byte order mark in front (Notepad writes one) is not part of
   * the JSON text: the same template, the same hash. */
  size_t n = strlen(s);
  char *bom = malloc(n + 4);
  assert_non_null(bom);
  memcpy(bom, "\xef\xbb\xbf", 3);
  memcpy(bom + 3, s, n + 1);
  t = NULL;
  assert_int_equal(cr_template_parse(&t, bom, n + 3, "bom.json", &err), 0);
  hexof(hex, t->sha256);
  assert_string_equal(hex, BASE_SHA256);
  cr_template_free(t);
  free(bom);
  free(s);
}

/* s parsed as a template that must be valid (its path for messages:
 * name, or NULL); the parser's error is printed when it is not. */
static cr_template *parse_ok(const char *s, const char *name) {
  cr_template *t = NULL;
  cr_error err;
  cr_error_clear(&err);
  int rc = cr_template_parse(&t, s, strlen(s), name, &err);
  if (rc != 0)
    print_error("%s\n", err.msg);
  assert_int_equal(rc, 0);
  return t;
}

static void test_optional_sections(void **state) {
  (void)state;
  json_t *j = base_json();
  /* No data, limits or require_signatures; no query naming extra columns. */
  set_at(j, "data", NULL);
  set_at(j, "limits", NULL);
  set_at(j, "require_signatures", NULL);
  set_at(j, "queries",
         "{'q': {'kind': 'count', 'run_by': ['provider', 'consumer'],"
         " 'results_to': ['provider'], 'min_count': 1}}");
  set_at(j, "match_key",
         "{'name': 'phone', 'columns': ['phone', 'cc'],"
         " 'normalize': ['phone', 'sha256'], 'default_country_code': '44'}");
  char *s = dump(j, 0);
  cr_template *t = parse_ok(s, NULL);
  assert_null(t->path);
  assert_int_equal(t->limits.max_runs_per_query, 0);
  assert_int_equal(t->limits.not_after, 0);
  assert_false(t->require_signatures);
  assert_string_equal(t->match_key.default_country_code, "44");
  assert_int_equal(t->match_key.nnormalize, 2);
  assert_int_equal(t->match_key.normalize[0], CR_NORM_PHONE);
  assert_int_equal(t->match_key.normalize[1], CR_NORM_SHA256);
  for (int r = 0; r < CR_ROLE_COUNT; r++) {
    assert_int_equal(t->nrequired_columns[r], 2);
    assert_string_equal(t->required_columns[r][0], "phone");
    assert_string_equal(t->required_columns[r][1], "cc");
  }
  assert_int_equal(t->queries[0].run_by, 3u);
  cr_template_free(t);
  free(s);
  json_decref(j);
}

static void test_accepted_variants(void **state) {
  (void)state;
  static const struct {
    const char *ptr, *value;
  } ok[] = {
      {"parties/provider/address", "'[::1]:7443'"},
      {"parties/provider/address", "'10.0.0.1:1'"},
      {"parties/provider/address", "'h:65535'"},
      {"suite", "'p256'"},
      {"match_key/normalize", "['text', 'sha256', 'hashed_sha256']"},
      /* Per party: raw e-mails on one side, their hashes on the other. */
      {"match_key/normalize", "{'provider': ['email', 'sha256'], 'consumer': ['hashed_sha256']}"},
      {"limits/min_set_size", "0"},
      {"limits/max_set_size", "1000"}, /* == min_set_size */
      {"limits/not_after", "'2028-02-29T12:34:56Z'"},
      {"limits", "{}"},
      {"queries/overlap/params", "{}"},
      {"queries/overlap/where", "{'provider': 'a = 1', 'consumer': 'b = 2'}"},
      /* Whitespace in a filter may be any of the filter grammar's. */
      {"queries/overlap/where", "{'provider': 'a = 1\\n\\tAND b = 2\\r\\n'}"},
      {"name", "'Acme \\u00e9 \\u00a0x'"}, /* non-ASCII text that is not a control */
      {"queries/overlap/group_by", "{'provider': 'segment', 'consumer': 'email'}"},
      {"queries/my_matched_users/columns", "[]"},
      {"queries/a-b.c_9", "{'kind': 'count', 'run_by': ['provider'], 'results_to': "
                          "['consumer'], 'min_count': 9007199254740991}"},
      {"require_signatures", "false"},
      {"data/provider/required_columns", "['segment', 'dx_code', 'age']"}, /* email implied */
      {"data/consumer", "{'required_columns': ['policy_id', 'email', 'x']}"},
  };
  for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
    char *s = mutated(ok[i].ptr, ok[i].value);
    cr_template *t = NULL;
    cr_error err;
    int rc = cr_template_parse(&t, s, strlen(s), "t", &err);
    if (rc != 0)
      print_error("%s = %s: %s\n", ok[i].ptr, ok[i].value, err.msg);
    assert_int_equal(rc, 0);
    cr_template_free(t);
    free(s);
  }
}

/* limits.size_buckets: the default ladder, a geometric one, explicit edges. */
/* match_key.columns per party: each role gets its own names (and they are
 * required of it), the template hash is that of the file as ever. */
/* match_key.normalize per party: each role gets its own chain; the shared
 * one is then absent (and cr_normalize_key, which has no role, refuses). */
static void test_party_normalizers(void **state) {
  (void)state;
  char *s = mutated("match_key/normalize",
                    "{'provider': ['email', 'sha256'], 'consumer': ['hashed_sha256']}");
  cr_template *t = parse_ok(s, "t");
  assert_null(t->match_key.normalize);
  size_t n = 0;
  const cr_normalizer *p = cr_match_key_normalizers(&t->match_key, CR_ROLE_PROVIDER, &n);
  assert_int_equal(n, 2);
  assert_int_equal(p[0], CR_NORM_EMAIL);
  assert_int_equal(p[1], CR_NORM_SHA256);
  const cr_normalizer *c = cr_match_key_normalizers(&t->match_key, CR_ROLE_CONSUMER, &n);
  assert_int_equal(n, 1);
  assert_int_equal(c[0], CR_NORM_HASHED_SHA256);
  cr_template_free(t);
  free(s);
  /* Shared: both roles get the one chain. */
  s = dq(BASE);
  t = parse_ok(s, "t");
  p = cr_match_key_normalizers(&t->match_key, CR_ROLE_CONSUMER, &n);
  assert_int_equal(n, 1);
  assert_ptr_equal(p, t->match_key.normalize);
  cr_template_free(t);
  free(s);
}

static void test_party_columns(void **state) {
  (void)state;
  char *s = mutated("match_key/columns", "{'provider': ['email_address'], 'consumer': ['Mail']}");
  cr_template *t = parse_ok(s, "t");
  assert_null(t->match_key.columns);
  assert_int_equal(t->match_key.ncolumns, 1);
  assert_string_equal(cr_match_key_columns(&t->match_key, CR_ROLE_PROVIDER)[0], "email_address");
  assert_string_equal(cr_match_key_columns(&t->match_key, CR_ROLE_CONSUMER)[0], "Mail");
  /* Required of each role under its own name, not the other's. */
  int found = 0;
  for (size_t i = 0; i < t->nrequired_columns[CR_ROLE_CONSUMER]; i++) {
    found += strcmp(t->required_columns[CR_ROLE_CONSUMER][i], "Mail") == 0;
    assert_string_not_equal(t->required_columns[CR_ROLE_CONSUMER][i], "email_address");
  }
  assert_int_equal(found, 1);
  found = 0;
  for (size_t i = 0; i < t->nrequired_columns[CR_ROLE_PROVIDER]; i++)
    found += strcmp(t->required_columns[CR_ROLE_PROVIDER][i], "email_address") == 0;
  assert_int_equal(found, 1);
  /* The hash is the RFC 8785 hash of the file, per-party lists and all. */
  char *canon = NULL;
  size_t clen = 0;
  cr_error err;
  cr_error_clear(&err);
  assert_int_equal(cr_json_canonicalize(s, strlen(s), &canon, &clen, &err), 0);
  uint8_t h[CR_SHA256_BYTES];
  cr_sha256(h, canon, clen);
  assert_memory_equal(h, t->sha256, sizeof h);
  free(canon);
  cr_template_free(t);
  free(s);
  /* Shared lists: both roles see the same names. */
  s = mutated("match_key/columns", "['email']");
  t = parse_ok(s, "t");
  assert_string_equal(cr_match_key_columns(&t->match_key, CR_ROLE_CONSUMER)[0], "email");
  assert_ptr_equal(cr_match_key_columns(&t->match_key, CR_ROLE_PROVIDER),
                   cr_match_key_columns(&t->match_key, CR_ROLE_CONSUMER));
  cr_template_free(t);
  free(s);
}

/* Times in messages: the form not_after is written in. */
static void test_time_iso(void **state) {
  (void)state;
  char b[CR_TEMPLATE_TIME_BYTES];
  cr_template_time_iso(0, b);
  assert_string_equal(b, "1970-01-01T00:00:00Z");
  cr_template_time_iso(1577836800, b);
  assert_string_equal(b, "2020-01-01T00:00:00Z");
  cr_template_time_iso(1835395200, b); /* 2028-02-29 */
  assert_string_equal(b, "2028-02-29T00:00:00Z");
  cr_template_time_iso(1924991999, b);
  assert_string_equal(b, "2030-12-31T23:59:59Z");
  cr_template_time_iso(951782400 + 86399, b); /* 2000-02-29, a leap year by the 400 rule */
  assert_string_equal(b, "2000-02-29T23:59:59Z");
}

static void test_size_buckets(void **state) {
  (void)state;
  cr_template *t = NULL;
  cr_error err;
  char *j = mutated("limits/max_runs_per_query", "20"); /* the base: no size_buckets */
  assert_int_equal(cr_template_parse(&t, j, strlen(j), "t", &err), 0);
  /* Default: floor 1000, ratio 2^(1/4). */
  assert_int_equal(cr_template_bucket(t, 1), 1000);
  assert_int_equal(cr_template_bucket(t, 1000), 1000);
  assert_int_equal(cr_template_bucket(t, 1001), 1190);
  assert_int_equal(cr_template_bucket(t, 2880), 3370);
  assert_true(cr_template_is_bucket(t, 1190));
  assert_false(cr_template_is_bucket(t, 1189));
  for (uint64_t n = 1000; n < 200000; n += 997) {
    uint64_t b = cr_template_bucket(t, n);
    assert_true(b >= n && (double)b <= (double)n * 1.19 + 1); /* at most 19% padding */
  }
  cr_template_free(t);
  free(j);
  j = mutated("limits/size_buckets", "{'floor': 10, 'ratio': 2}");
  assert_int_equal(cr_template_parse(&t, j, strlen(j), "t", &err), 0);
  assert_int_equal(cr_template_bucket(t, 3), 10);
  assert_int_equal(cr_template_bucket(t, 11), 20);
  assert_int_equal(cr_template_bucket(t, 41), 80);
  cr_template_free(t);
  free(j);
  j = mutated("limits/size_buckets", "{'edges': [100, 500, 2000], 'ratio': 2}");
  assert_int_equal(cr_template_parse(&t, j, strlen(j), "t", &err), 0);
  assert_int_equal(cr_template_bucket(t, 7), 100);
  assert_int_equal(cr_template_bucket(t, 101), 500);
  assert_int_equal(cr_template_bucket(t, 2000), 2000);
  assert_int_equal(cr_template_bucket(t, 2001), 4000);
  cr_template_free(t);
  free(j);
}

/* ---------------------------------------------------------- several keys */

/* BASE with match_key replaced by two keys and optional count_of. */
static json_t *multi_json(void) {
  json_t *j = base_json();
  set_at(j, "match_key", NULL);
  set_at(j, "match_keys",
         "[{'name': 'email', 'columns': ['email'], 'normalize': ['email']},"
         " {'name': 'phone', 'columns': ['phone'], 'normalize': ['phone'],"
         "  'default_country_code': '1'}]");
  set_at(j, "match", "'any'");
  return j;
}

static char *multi_mutated(const char *ptr, const char *value) {
  json_t *j = multi_json();
  if (ptr != NULL)
    set_at(j, ptr, value);
  char *s = dump(j, JSON_INDENT(2));
  json_decref(j);
  return s;
}

static void test_match_keys(void **state) {
  (void)state;
  char *s = multi_mutated(NULL, NULL);
  cr_template *t = NULL;
  cr_error err;
  int rc = cr_template_parse(&t, s, strlen(s), "m.json", &err);
  if (rc != 0)
    print_error("%s\n", err.msg);
  assert_int_equal(rc, 0);
  assert_int_equal(t->nmatch_keys, 2);
  assert_int_equal(cr_template_nkeys(t), 2);
  assert_string_equal(t->match_keys[0].name, "email");
  assert_string_equal(t->match_key.name, "email"); /* match_key is match_keys[0] */
  assert_string_equal(t->match_keys[1].name, "phone");
  assert_string_equal(t->match_keys[1].default_country_code, "1");
  assert_int_equal(t->match_keys[1].normalize[0], CR_NORM_PHONE);
  assert_int_equal(t->count_of, CR_ROLE_CONSUMER); /* the default */
  assert_int_equal(cr_template_record_width(t, CR_ROLE_CONSUMER), 2);
  assert_int_equal(cr_template_record_width(t, CR_ROLE_PROVIDER), 1);
  /* Every key's columns are required from both sides, in key order. */
  assert_int_equal(t->nrequired_columns[CR_ROLE_CONSUMER], 3);
  assert_string_equal(t->required_columns[CR_ROLE_CONSUMER][1], "email");
  assert_string_equal(t->required_columns[CR_ROLE_CONSUMER][2], "phone");
  assert_int_equal(t->nrequired_columns[CR_ROLE_PROVIDER], 5);
  assert_string_equal(t->required_columns[CR_ROLE_PROVIDER][4], "phone");
  uint8_t h2[32];
  memcpy(h2, t->sha256, 32);
  cr_template_free(t);
  free(s);

  /* count_of provider: the provider's records; members returns them. */
  json_t *j = multi_json();
  set_at(j, "count_of", "'provider'");
  set_at(j, "queries/my_matched_users/results_to", "['provider']");
  set_at(j, "queries/my_matched_users/columns", "['segment']");
  s = dump(j, 0);
  json_decref(j);
  rc = cr_template_parse(&t, s, strlen(s), "m.json", &err);
  if (rc != 0)
    print_error("%s\n", err.msg);
  assert_int_equal(rc, 0);
  assert_int_equal(t->count_of, CR_ROLE_PROVIDER);
  assert_int_equal(cr_template_record_width(t, CR_ROLE_PROVIDER), 2);
  assert_int_equal(cr_template_record_width(t, CR_ROLE_CONSUMER), 1);
  assert_memory_not_equal(t->sha256, h2, 32); /* count_of is part of the contract */
  cr_template_free(t);
  free(s);

  /* One entry in match_keys is one key; "match" may be left out. */
  j = multi_json();
  set_at(j, "match_keys", "[{'name': 'email', 'columns': ['email'], 'normalize': ['email']}]");
  set_at(j, "match", NULL);
  s = dump(j, 0);
  json_decref(j);
  assert_int_equal(cr_template_parse(&t, s, strlen(s), "m.json", &err), 0);
  assert_int_equal(cr_template_nkeys(t), 1);
  assert_int_equal(cr_template_record_width(t, CR_ROLE_CONSUMER), 1);
  cr_template_free(t);
  free(s);

  /* A single match_key: one key, widths 1, hand-built zero means 1 too. */
  s = dq(BASE);
  assert_int_equal(cr_template_parse(&t, s, strlen(s), "b.json", &err), 0);
  assert_int_equal(t->nmatch_keys, 1);
  assert_int_equal(cr_template_record_width(t, CR_ROLE_CONSUMER), 1);
  cr_template_free(t);
  free(s);
  cr_template hand;
  memset(&hand, 0, sizeof hand);
  assert_int_equal(cr_template_nkeys(&hand), 1);
  assert_int_equal(cr_template_record_width(&hand, CR_ROLE_PROVIDER), 1);
}

static int in_required(const cr_template *t, cr_role r, const char *name) {
  for (size_t i = 0; i < t->nrequired_columns[r]; i++)
    if (strcmp(t->required_columns[r][i], name) == 0)
      return 1;
  return 0;
}

/* Several match keys, each free to name its columns per party: every key's
 * per-party names are required of that party only, and a per-party list is
 * checked the same way in every key (errors name the key's index). */
static void test_match_keys_party_columns(void **state) {
  (void)state;
  json_t *j = multi_json();
  set_at(j, "match_keys",
         "[{'name': 'email', 'columns': {'provider': ['email'], 'consumer': ['Mail']},"
         "  'normalize': ['email']},"
         " {'name': 'phone', 'columns': {'provider': ['mobile'], 'consumer': ['tel']},"
         "  'normalize': ['phone'], 'default_country_code': '1'},"
         " {'name': 'name_zip', 'columns': ['last_name', 'zip'], 'normalize': ['text']}]");
  char *s = dump(j, 0);
  json_decref(j);
  cr_template *t = NULL;
  cr_error err;
  cr_error_clear(&err);
  int rc = cr_template_parse(&t, s, strlen(s), "m.json", &err);
  if (rc != 0)
    print_error("%s\n", err.msg);
  assert_int_equal(rc, 0);
  assert_int_equal(cr_template_nkeys(t), 3);
  assert_string_equal(cr_match_key_columns(&t->match_keys[0], CR_ROLE_CONSUMER)[0], "Mail");
  assert_string_equal(cr_match_key_columns(&t->match_keys[0], CR_ROLE_PROVIDER)[0], "email");
  assert_string_equal(cr_match_key_columns(&t->match_keys[1], CR_ROLE_PROVIDER)[0], "mobile");
  assert_string_equal(cr_match_key_columns(&t->match_keys[1], CR_ROLE_CONSUMER)[0], "tel");
  assert_int_equal(t->match_keys[1].ncolumns, 1);
  assert_null(t->match_keys[1].columns);
  assert_string_equal(cr_match_key_columns(&t->match_keys[2], CR_ROLE_CONSUMER)[1], "zip");
  /* Each party is required to have its own names, never the other's. */
  assert_true(in_required(t, CR_ROLE_CONSUMER, "Mail"));
  assert_true(in_required(t, CR_ROLE_CONSUMER, "tel"));
  assert_true(in_required(t, CR_ROLE_CONSUMER, "last_name"));
  assert_false(in_required(t, CR_ROLE_CONSUMER, "mobile"));
  assert_false(in_required(t, CR_ROLE_CONSUMER, "email"));
  assert_true(in_required(t, CR_ROLE_PROVIDER, "mobile"));
  assert_true(in_required(t, CR_ROLE_PROVIDER, "zip"));
  assert_false(in_required(t, CR_ROLE_PROVIDER, "tel"));
  assert_false(in_required(t, CR_ROLE_PROVIDER, "Mail"));
  cr_template_free(t);
  free(s);

  /* A bad per-party list in the second key: named by its index. */
  static const struct {
    const char *columns, *want;
  } bad[] = {
      {"{'provider': ['mobile'], 'consumer': ['tel', 'ext']}",
       "$.match_keys[1].columns.consumer: found an array, expected 1 column name, as many as the "
       "provider's"},
      {"{'provider': ['mobile']}", "$.match_keys[1].columns.consumer: missing"},
      {"{'provider': ['mobile'], 'consumer': ['tel'], 'auditor': ['x']}",
       "$.match_keys[1].columns.auditor: unknown field, expected one of: provider, consumer"},
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    char arr[512];
    snprintf(arr, sizeof arr,
             "[{'name': 'email', 'columns': ['email'], 'normalize': ['email']},"
             " {'name': 'phone', 'columns': %s, 'normalize': ['phone']}]",
             bad[i].columns);
    j = multi_json();
    set_at(j, "match_keys", arr);
    s = dump(j, 0);
    json_decref(j);
    char **list = NULL;
    size_t n = 0;
    t = NULL;
    rc = cr_template_check_mem(s, strlen(s), "m.json", &t, &list, &n);
    if (rc != CR_ETEMPLATE || n < 1 || strstr(list[0], bad[i].want) == NULL)
      print_error("case %zu: rc %d, %zu errors, first: %s\n", i, rc, n, n ? list[0] : "(none)");
    assert_int_equal(rc, CR_ETEMPLATE);
    assert_true(n >= 1);
    assert_non_null(strstr(list[0], bad[i].want));
    assert_null(t);
    cr_template_errors_free(list, n);
    free(s);
  }
}

static void test_match_keys_rejected(void **state) {
  (void)state;
  static const struct {
    const char *key1; /* the second key, as JSON with ' */
    const char *want;
  } second[] = {
      {"{'name': 'email', 'columns': ['phone'], 'normalize': ['phone']}",
       "$.match_keys[1].name: found \"email\", expected a name not already used by "
       "$.match_keys[0]"},
      {"{'name': 'tel no', 'columns': ['phone'], 'normalize': ['phone']}",
       "$.match_keys[1].name: found \"tel no\", expected 1 to 64 letters"},
      {"{'name': 'phone', 'columns': [], 'normalize': ['phone']}",
       "$.match_keys[1].columns: found an array, expected a non-empty array"},
      {"{'name': 'phone', 'columns': ['phone'], 'normalize': ['fone']}",
       "$.match_keys[1].normalize[0]: found \"fone\""},
      {"{'name': 'phone', 'columns': ['phone'], 'normalize': ['phone'], 'salt': 1}",
       "$.match_keys[1].salt: unknown field"},
      {"{'name': 'phone', 'columns': ['phone'], 'normalize': ['email'],"
       " 'default_country_code': '1'}",
       "$.match_keys[1].default_country_code: found \"1\", expected no default_country_code"},
      {"'phone'", "$.match_keys[1]: found \"phone\", expected an object"},
  };
  static const struct {
    const char *ptr, *value, *want;
  } top[] = {
      {"match_keys", "[]",
       "$.match_keys: found an array, expected a non-empty array of match keys"},
      {"match_keys", "'email'", "$.match_keys: found \"email\", expected a non-empty array"},
      {"match_keys",
       "[{'name': 'a', 'columns': ['email'], 'normalize': ['email']},"
       " {'name': 'b', 'columns': ['email'], 'normalize': ['email']},"
       " {'name': 'c', 'columns': ['email'], 'normalize': ['email']},"
       " {'name': 'd', 'columns': ['email'], 'normalize': ['email']},"
       " {'name': 'e', 'columns': ['email'], 'normalize': ['email']},"
       " {'name': 'f', 'columns': ['email'], 'normalize': ['email']},"
       " {'name': 'g', 'columns': ['email'], 'normalize': ['email']},"
       " {'name': 'h', 'columns': ['email'], 'normalize': ['email']},"
       " {'name': 'i', 'columns': ['email'], 'normalize': ['email']}]",
       "$.match_keys: found an array, expected at most 8 match keys"},
      {"match", "'all'", "$.match: found \"all\", expected \"any\""},
      {"count_of", "'both'", "$.count_of: found \"both\", expected \"provider\" or \"consumer\""},
      {"count_of", "1", "$.count_of: found 1,"},
      {"match_key", "{'name': 'email', 'columns': ['email'], 'normalize': ['email']}",
       "$.match_keys: found an array, expected either match_key (one key) or match_keys"},
      /* members with several keys hands the count_of side its records */
      {"queries/my_matched_users/results_to", "['provider']",
       "$.queries.my_matched_users.results_to: found an array, expected [\"consumer\"] for kind "
       "\"members\" with several match keys"},
  };
  for (size_t i = 0; i < sizeof top / sizeof top[0] + sizeof second / sizeof second[0] + 3; i++) {
    json_t *j = multi_json();
    const char *want;
    if (i < sizeof top / sizeof top[0]) {
      if (strcmp(top[i].ptr, "queries/my_matched_users/results_to") == 0)
        set_at(j, "queries/my_matched_users/columns", "[]");
      set_at(j, top[i].ptr, top[i].value);
      want = top[i].want;
    } else if (i < sizeof top / sizeof top[0] + sizeof second / sizeof second[0]) {
      size_t k = i - sizeof top / sizeof top[0];
      char arr[512];
      snprintf(arr, sizeof arr,
               "[{'name': 'email', 'columns': ['email'], 'normalize': ['email']}, %s]",
               second[k].key1);
      set_at(j, "match_keys", arr);
      want = second[k].want;
    } else {
      /* match / count_of without match_keys, and no key at all. */
      size_t k = i - sizeof top / sizeof top[0] - sizeof second / sizeof second[0];
      set_at(j, "match_keys", NULL);
      set_at(j, "match", NULL);
      if (k == 0) {
        set_at(j, "match_key", "{'name': 'email', 'columns': ['email'], 'normalize': ['email']}");
        set_at(j, "count_of", "'consumer'");
        want = "$.count_of: found \"consumer\", expected no count_of unless match_keys is given";
      } else if (k == 1) {
        set_at(j, "match_key", "{'name': 'email', 'columns': ['email'], 'normalize': ['email']}");
        set_at(j, "match", "'any'");
        want = "$.match: found \"any\", expected no match unless match_keys is given";
      } else {
        want = "$.match_key: missing, expected an object with name, columns and normalize (or "
               "match_keys";
      }
    }
    char *s = dump(j, 0);
    json_decref(j);
    char **list = NULL;
    size_t n = 0;
    cr_template *t = NULL;
    int rc = cr_template_check_mem(s, strlen(s), "m.json", &t, &list, &n);
    if (rc != CR_ETEMPLATE || n != 1 || strstr(list[0], want) == NULL) {
      print_error("case %zu: rc %d, %zu errors:\n", i, rc, n);
      for (size_t k = 0; k < n; k++)
        print_error("  %s\n", list[k]);
      print_error("wanted: %s\n", want);
    }
    assert_int_equal(rc, CR_ETEMPLATE);
    assert_null(t);
    assert_int_equal(n, 1);
    assert_non_null(strstr(list[0], want));
    cr_template_errors_free(list, n);
    free(s);
  }
}

static void test_not_after_values(void **state) {
  (void)state;
  static const struct {
    const char *ts;
    int64_t want;
  } v[] = {
      {"'1970-01-01T00:00:01Z'", 1},
      {"'2000-03-01T00:00:00Z'", 951868800},
      {"'2028-02-29T12:34:56Z'", 1835440496},
      {"'9999-12-31T23:59:59Z'", 253402300799LL},
  };
  for (size_t i = 0; i < sizeof v / sizeof v[0]; i++) {
    char *s = mutated("limits/not_after", v[i].ts);
    cr_template *t = NULL;
    cr_error err;
    assert_int_equal(cr_template_parse(&t, s, strlen(s), "t", &err), 0);
    assert_int_equal(t->limits.not_after, v[i].want);
    cr_template_free(t);
    free(s);
  }
}

/* ---------------------------------------------------------- invalid input */

typedef struct bad_case {
  const char *ptr;   /* member to change */
  const char *value; /* new JSON value (with '), NULL to delete */
  const char *want;  /* text the message must contain */
  size_t nerrors;    /* how many errors the change must cause */
} bad_case;

static const bad_case BAD[] = {
    {"format", "'cleanroom-template/2'",
     "$.format: found \"cleanroom-template/2\", expected \"cleanroom-template/1\"", 1},
    {"format", NULL, "$.format: missing, expected \"cleanroom-template/1\"", 1},
    {"format", "1", "$.format: found 1,", 1},
    {"name", "''", "$.name: found \"\", expected a non-empty string", 1},
    {"name", "5", "$.name: found 5, expected a non-empty string", 1},
    {"name", NULL, "$.name: missing", 1},
    /* Control characters: printed to terminals, an escape sequence from a
     * partner's draft would rewrite what the operator reads. */
    {"name", "'Acme\\u001b[2J'",
     "$.name: found \"Acme\\u001b[2J\", expected a non-empty string without control characters", 1},
    {"name", "'two\\nlines'",
     "$.name: found \"two\\u000alines\", expected a non-empty string "
     "without control characters",
     1},
    {"parties/provider/org", "'Acme\\u009b31m'",
     "$.parties.provider.org: found \"Acme\\u009b31m\", expected a non-empty string without "
     "control characters",
     1},
    {"data/provider/required_columns", "['email', 'seg\\u0007']",
     "$.data.provider.required_columns[1]: found \"seg\\u0007\", expected a column name without "
     "control characters",
     1},
    {"queries/eligible_patients/where/provider", "'age = 1 AND dx_code = \\u001b'",
     "$.queries.eligible_patients.where.provider: found \"age = 1 AND dx_code = \\u001b\", "
     "expected a filter expression without control characters",
     1},
    /* Normalizers per party: both lists, each a valid chain. */
    {"match_key/normalize", "{'provider': ['email']}",
     "$.match_key.normalize.consumer: missing, expected the consumer's normalizers", 1},
    {"match_key/normalize", "{'provider': ['email'], 'consumer': []}",
     "$.match_key.normalize.consumer: found an array, expected a non-empty array of", 1},
    {"match_key/normalize", "{'provider': ['email'], 'consumer': ['fone']}",
     "$.match_key.normalize.consumer[0]: found \"fone\"", 1},
    {"match_key/normalize", "{'provider': ['email'], 'consumer': ['email'], 'auditor': ['email']}",
     "$.match_key.normalize.auditor: unknown field", 1},
    /* Column names match a header without regard to case. */
    {"match_key/columns", "['email', 'EMAIL']",
     "$.match_key.columns[1]: found \"EMAIL\", expected a value not already listed at [0] (column "
     "names are compared without regard to case)",
     1},
    {"parties", "[]", "$.parties: found an array, expected an object", 1},
    {"parties", NULL, "$.parties: missing", 1},
    {"parties/provider", NULL, "$.parties.provider: missing", 1},
    {"parties/consumer", "'x'", "$.parties.consumer: found \"x\"", 1},
    {"parties/provider/org", "''", "$.parties.provider.org: found \"\"", 1},
    {"parties/consumer/org", NULL, "$.parties.consumer.org: missing", 1},
    {"parties/provider/cert_sha256", "'abc'",
     "$.parties.provider.cert_sha256: found \"abc\", "
     "expected the certificate's SHA-256 as 64 hex",
     1},
    {"parties/provider/cert_sha256",
     "'111111111111111111111111111111111111111111111111111111111111111'",
     "$.parties.provider.cert_sha256", 1},
    {"parties/provider/cert_sha256",
     "'11111111111111111111111111111111111111111111111111111111111111g1'",
     "$.parties.provider.cert_sha256", 1},
    {"parties/consumer/cert_sha256", "null", "$.parties.consumer.cert_sha256: found null", 1},
    {"parties/consumer/cert_sha256", NULL, "$.parties.consumer.cert_sha256: missing", 1},
    {"parties/provider/address", "'acme.example'",
     "$.parties.provider.address: found "
     "\"acme.example\", expected \"host:port\"",
     1},
    {"parties/provider/address", "'h:0'", "$.parties.provider.address: found \"h:0\"", 1},
    {"parties/provider/address", "'h:65536'", "$.parties.provider.address", 1},
    {"parties/provider/address", "'h:7x'", "$.parties.provider.address", 1},
    {"parties/provider/address", "':7443'", "$.parties.provider.address", 1},
    {"parties/provider/address", "'::1:7443'", "$.parties.provider.address", 1},
    {"parties/provider/address", "'h: 7443'", "$.parties.provider.address", 1},
    {"parties/provider/address", "7443", "$.parties.provider.address: found 7443", 1},
    {"parties/provider/addr", "'h:1'", "$.parties.provider.addr: unknown field", 1},
    {"parties/third", "{}", "$.parties.third: unknown field, expected one of: provider, consumer",
     1},
    {"suite", "'x25519'", "$.suite: found \"x25519\", expected \"ristretto255\" or \"p256\"", 1},
    {"suite", NULL, "$.suite: missing", 1},
    {"match_key", "'email'", "$.match_key: found \"email\", expected an object", 1},
    /* Without a valid match key the column cross-checks are skipped. */
    {"match_key", NULL, "$.match_key: missing", 1},
    {"match_key/name", "''", "$.match_key.name: found \"\"", 1},
    {"match_key/columns", "[]", "$.match_key.columns: found an array, expected a non-empty array",
     1},
    {"match_key/columns", "['email', 'email']",
     "$.match_key.columns[1]: found \"email\", expected a value not already listed at [0]", 1},
    {"match_key/columns", "['']", "$.match_key.columns[0]: found \"\"", 1},
    {"match_key/columns", "[7]", "$.match_key.columns[0]: found 7", 1},
    {"match_key/columns", "'email'", "$.match_key.columns: found \"email\"", 1},
    /* Per party (issue 16): both lists, the same length, known roles. */
    {"match_key/columns", "{'provider': ['mobil']}",
     "$.match_key.columns.consumer: missing, expected the consumer's key columns", 1},
    {"match_key/columns", "{'provider': ['a', 'b'], 'consumer': ['c']}",
     "$.match_key.columns.consumer: found an array, expected 2 column names, as many as the "
     "provider's",
     1},
    {"match_key/columns", "{'provider': ['a'], 'consumer': ['c'], 'auditor': ['x']}",
     "$.match_key.columns.auditor: unknown field, expected one of: provider, consumer", 1},
    {"match_key/columns", "{'provider': [], 'consumer': ['c']}",
     "$.match_key.columns.provider: found an array, expected a non-empty array", 1},
    {"match_key/columns", "{'provider': ['a', 'a'], 'consumer': ['c', 'd']}",
     "$.match_key.columns.provider[1]: found \"a\", expected a value not already listed", 1},
    {"match_key/columns", "{'provider': 'mobil', 'consumer': ['c']}",
     "$.match_key.columns.provider: found \"mobil\"", 1},
    {"match_key/normalize", "[]", "$.match_key.normalize: found an array, expected a non-empty", 1},
    {"match_key/normalize", "['email', 'emale']",
     "$.match_key.normalize[1]: found \"emale\", expected one of \"email\"", 1},
    {"match_key/normalize", NULL, "$.match_key.normalize: missing", 1},
    {"match_key/default_country_code", "'44'",
     "$.match_key.default_country_code: found \"44\", expected no default_country_code unless", 1},
    {"match_key/default_country_code", "'0044'",
     "$.match_key.default_country_code: found "
     "\"0044\", expected a country calling code",
     1},
    {"match_key/default_country_code", "44", "$.match_key.default_country_code: found 44", 1},
    {"match_key/salt", "'x'", "$.match_key.salt: unknown field", 1},
    {"data", "[]", "$.data: found an array, expected an object", 1},
    {"data/provider", "'x'", "$.data.provider: found \"x\"", 1},
    {"data/provider/required_columns", "'email'",
     "$.data.provider.required_columns: found \"email\", expected an array", 1},
    {"data/consumer/required_columns", "[1]", "$.data.consumer.required_columns[0]: found 1", 1},
    {"data/consumer/required_columns", NULL, "$.data.consumer.required_columns: missing", 1},
    {"data/consumer/optional_columns", "[]", "$.data.consumer.optional_columns: unknown field", 1},
    {"data/auditor", "{}", "$.data.auditor: unknown field", 1},
    {"queries", "{}", "$.queries: found an object, expected a non-empty object", 1},
    {"queries", "[]", "$.queries: found an array", 1},
    {"queries", NULL, "$.queries: missing", 1},
    {"queries/overlap", "'x'", "$.queries.overlap: found \"x\", expected an object", 1},
    {"queries/bad name",
     "{'kind': 'count', 'run_by': ['provider'], 'results_to': "
     "['provider'], 'min_count': 1}",
     "$.queries[\"bad name\"]: found a query name that is not allowed", 1},
    {"queries/overlap/kind", "'sum'",
     "$.queries.overlap.kind: found \"sum\", expected \"count\" or \"members\"", 1},
    {"queries/overlap/kind", NULL, "$.queries.overlap.kind: missing", 1},
    {"queries/overlap/run_by", "[]", "$.queries.overlap.run_by: found an array", 1},
    {"queries/overlap/run_by", "['consumer', 'consumer']",
     "$.queries.overlap.run_by[1]: found \"consumer\", expected each role at most once", 1},
    {"queries/overlap/run_by", "['both']",
     "$.queries.overlap.run_by[0]: found \"both\", expected \"provider\" or \"consumer\"", 1},
    {"queries/overlap/run_by", "'consumer'", "$.queries.overlap.run_by: found \"consumer\"", 1},
    {"queries/overlap/results_to", "[]", "$.queries.overlap.results_to: found an array", 1},
    {"queries/overlap/results_to", NULL, "$.queries.overlap.results_to: missing", 1},
    {"queries/overlap/min_count", "-3",
     "$.queries.overlap.min_count: found -3, expected an integer >= 1", 1},
    {"queries/overlap/min_count", "0", "$.queries.overlap.min_count: found 0,", 1},
    {"queries/overlap/min_count", "1.5", "$.queries.overlap.min_count: found 1.5,", 1},
    {"queries/overlap/min_count", "100.0", "$.queries.overlap.min_count: found 100.0,", 1},
    {"queries/overlap/min_count", "'100'", "$.queries.overlap.min_count: found \"100\",", 1},
    {"queries/overlap/min_count", "9007199254740992",
     "$.queries.overlap.min_count: found 9007199254740992, expected an integer <= "
     "9007199254740991",
     1},
    {"queries/overlap/min_count", NULL, "$.queries.overlap.min_count: missing", 1},
    {"queries/overlap/min_cout", "100",
     "$.queries.overlap.min_cout: unknown field, expected "
     "one of: kind, run_by, results_to, min_count",
     1},
    {"queries/overlap/group_by", "{}", "$.queries.overlap.group_by: found an object", 1},
    {"queries/overlap/group_by", "'segment'", "$.queries.overlap.group_by: found \"segment\"", 1},
    {"queries/overlap/group_by", "{'provider': ''}",
     "$.queries.overlap.group_by.provider: found \"\"", 1},
    {"queries/overlap/group_by", "{'provider': 'region'}",
     "$.queries.overlap.group_by.provider: found \"region\", expected a column listed in "
     "$.data.provider.required_columns",
     1},
    {"queries/overlap/group_by", "{'consumer': 'segment'}",
     "$.queries.overlap.group_by.consumer: found \"segment\"", 1},
    {"queries/overlap/group_by", "{'alien': 'x'}", "$.queries.overlap.group_by.alien: unknown", 1},
    {"queries/my_matched_users/group_by", "{'consumer': 'email'}",
     "$.queries.my_matched_users.group_by: found an object, expected no group_by for kind", 1},
    {"queries/overlap/where", "{'provider': 5}", "$.queries.overlap.where.provider: found 5", 1},
    {"queries/overlap/where", "{}", "$.queries.overlap.where: found an object", 1},
    {"queries/overlap/params", "{'codes': 'list'}",
     "$.queries.overlap.params.codes: found \"list\", expected \"string\"", 1},
    {"queries/overlap/params", "{'1x': 'string'}",
     "$.queries.overlap.params[\"1x\"]: found a parameter name", 1},
    {"queries/overlap/params", "[]", "$.queries.overlap.params: found an array", 1},
    {"queries/overlap/columns", "['email']",
     "$.queries.overlap.columns: found an array, expected no columns unless kind is", 1},
    {"queries/my_matched_users/results_to", "['provider', 'consumer']",
     "$.queries.my_matched_users.results_to: found an array, expected exactly one role", 1},
    {"queries/my_matched_users/columns", "['segment']",
     "$.queries.my_matched_users.columns[0]: found \"segment\", expected a column listed in "
     "$.data.consumer.required_columns",
     1},
    {"queries/my_matched_users/columns", "'policy_id'",
     "$.queries.my_matched_users.columns: found \"policy_id\"", 1},
    {"limits", "[]", "$.limits: found an array, expected an object", 1},
    {"limits/max_runs_per_query", "0",
     "$.limits.max_runs_per_query: found 0, expected an "
     "integer >= 1",
     1},
    {"limits/min_set_size", "-1", "$.limits.min_set_size: found -1, expected an integer >= 0", 1},
    {"limits/max_set_size", "0", "$.limits.max_set_size: found 0", 1},
    {"limits/max_set_size", "999",
     "$.limits.max_set_size: found 999, expected an integer >= "
     "min_set_size (1000)",
     1},
    {"limits/not_after", "'2027-06-31T00:00:00Z'",
     "$.limits.not_after: found \"2027-06-31T00:00:00Z\", expected a UTC time", 1},
    {"limits/not_after", "'2027-02-29T00:00:00Z'", "$.limits.not_after", 1},
    {"limits/not_after", "'2027-06-30 00:00:00Z'", "$.limits.not_after", 1},
    {"limits/not_after", "'2027-06-30T00:00:00+01:00'", "$.limits.not_after", 1},
    {"limits/not_after", "'2027-06-30T24:00:00Z'", "$.limits.not_after", 1},
    {"limits/not_after", "'2027-06-30T00:00:00.5Z'", "$.limits.not_after", 1},
    {"limits/not_after", "'1969-12-31T23:59:59Z'", "$.limits.not_after", 1},
    {"limits/not_after", "'1970-01-01T00:00:00Z'", "$.limits.not_after", 1},
    {"limits/not_after", "1814313600", "$.limits.not_after: found 1814313600", 1},
    {"limits/max_runs", "5", "$.limits.max_runs: unknown field", 1},
    {"limits/size_buckets", "[]", "$.limits.size_buckets: found an array, expected an object", 1},
    {"limits/size_buckets", "{'ratio': 1}",
     "$.limits.size_buckets.ratio: found 1, expected a number > 1", 1},
    {"limits/size_buckets", "{'ratio': 17}", "$.limits.size_buckets.ratio", 1},
    {"limits/size_buckets", "{'floor': 0}",
     "$.limits.size_buckets.floor: found 0, expected an integer >= 1", 1},
    {"limits/size_buckets", "{'floor': 10, 'edges': [20]}",
     "$.limits.size_buckets.floor: found 10, expected no floor when edges are given", 1},
    {"limits/size_buckets", "{'edges': [800, 1000, 500]}",
     "$.limits.size_buckets.edges[2]: found 500, expected an integer > the edge before it (1000)",
     1},
    {"limits/size_buckets", "{'edges': []}",
     "$.limits.size_buckets.edges: found an array, expected an array of 1 to 64", 1},
    {"limits/size_buckets", "{'step': 2}", "$.limits.size_buckets.step: unknown field", 1},
    {"require_signatures", "'yes'", "$.require_signatures: found \"yes\", expected true or false",
     1},
    {"require_signatures", "1", "$.require_signatures: found 1", 1},
    {"min_count", "100", "$.min_count: unknown field, expected one of: format, name, parties", 1},
    {"Name", "'x'", "$.Name: unknown field", 1},
    {"we\"ird\nkey", "1", "$[\"we\\\"ird\\u000akey\"]: unknown field", 1},
    /* Long names and values are quoted, escaped and shortened (fuzzer find). */
    {"\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01"
     "\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01",
     "1", "$[\"\\u0001\\u0001", 1},
    {"suite",
     "'\\u0001\\u0001\\u0001\\u0001\\u0001\\u0001\\u0001\\u0001\\u0001\\u0001\\u0001\\u0001"
     "\\u0001\\u0001\\u0001\\u0001\\u0001\\u0001\\u0001\\u0001\\u0001\\u0001\\u0001\\u0001"
     "\\u0001\\u0001\\u0001\\u0001\\u0001\\u0001\\u0001\\u0001\\u0001\\u0001\\u0001\\u0001"
     "\\u0001\\u0001\\u0001\\u0001\\u0001\\u0001'",
     "$.suite: found \"\\u0001\\u0001", 1},
    {"queries/overlap/kind",
     "'a\\u00e9\\u00e9\\u00e9\\u00e9\\u00e9\\u00e9\\u00e9\\u00e9\\u00e9\\u00e9\\u00e9\\u00e9"
     "\\u00e9\\u00e9\\u00e9\\u00e9\\u00e9\\u00e9\\u00e9\\u00e9\\u00e9\\u00e9\\u00e9\\u00e9'",
     "\xc3\xa9\xc3\xa9...\", expected \"count\"", 1},
};

/* ----------------------------------------------------- differential privacy */

/* BASE with noise on every count query and a privacy budget (members
 * allowed explicitly): docs/privacy.md. */
static json_t *dp_json(void) {
  json_t *j = base_json();
  set_at(j, "queries/overlap/noise", "{'mechanism': 'discrete_laplace', 'epsilon': 0.5}");
  set_at(j, "queries/overlap_by_segment/noise",
         "{'mechanism': 'discrete_gaussian', 'sigma': 3.5, 'delta': 1e-9}");
  set_at(j, "queries/eligible_patients/noise",
         "{'mechanism': 'discrete_gaussian', 'epsilon': 1, 'delta': 0.000001}");
  set_at(j, "limits/privacy_budget", "{'epsilon': 10, 'delta': 1e-5, 'allow_members': true}");
  return j;
}

static cr_template *parse_json(const json_t *j, int want_rc, char ***list, size_t *n) {
  char *s = dump(j, JSON_INDENT(2));
  cr_template *t = NULL;
  *list = NULL;
  *n = 0;
  int rc = cr_template_check_mem(s, strlen(s), "t.json", &t, list, n);
  if (rc != want_rc)
    for (size_t k = 0; k < *n; k++)
      print_error("  %s\n", (*list)[k]);
  assert_int_equal(rc, want_rc);
  free(s);
  return t;
}

static void test_privacy_parses(void **state) {
  (void)state;
  json_t *j = dp_json();
  char **list;
  size_t n;
  cr_template *t = parse_json(j, 0, &list, &n);
  const cr_query *q = cr_template_query(t, "overlap");
  assert_int_equal(q->noise.mechanism, CR_NOISE_DISCRETE_LAPLACE);
  assert_int_equal(q->noise.epsilon, 500000); /* exactly 0.5, in millionths */
  assert_int_equal(q->noise.delta, 0);
  assert_string_equal(cr_noise_mechanism_name(q->noise.mechanism), "discrete_laplace");
  /* sigma given: epsilon derived (zCDP), rounded up to the millionth. */
  q = cr_template_query(t, "overlap_by_segment");
  assert_int_equal(q->noise.mechanism, CR_NOISE_DISCRETE_GAUSSIAN);
  assert_true(q->noise.sigma_given);
  assert_int_equal(q->noise.sigma, 3500);
  assert_int_equal(q->noise.delta, 1000000); /* 1e-9 in 10^-15ths */
  assert_in_range(q->noise.epsilon, 1880215, 1880217);
  /* epsilon given: the smallest sigma on the 0.001 grid. */
  q = cr_template_query(t, "eligible_patients");
  assert_false(q->noise.sigma_given);
  assert_int_equal(q->noise.epsilon, 1000000);
  assert_int_equal(q->noise.delta, 1000000000);
  assert_int_equal(q->noise.sigma, 5350);
  assert_int_equal(cr_template_query(t, "my_matched_users")->noise.mechanism, CR_NOISE_NONE);
  assert_int_equal(t->limits.privacy_budget.epsilon, 10000000);
  assert_int_equal(t->limits.privacy_budget.delta, 10000000000ULL);
  assert_true(t->limits.privacy_budget.allow_members);
  cr_template_free(t);

  /* Decimals are read as written, not as their binary expansion; every
   * spelling of the same number gives the same fixed point. */
  set_at(j, "limits/privacy_budget/epsilon", "100");
  static const struct {
    const char *value;
    uint64_t want;
  } eps[] = {{"0.1", 100000},    {"1e-6", 1},         {"0.000001", 1},
             {"3", 3000000},     {"2.5e1", 25000000}, {"99.999999", 99999999},
             {"100", 100000000}, {"0.3", 300000}};
  for (size_t i = 0; i < sizeof eps / sizeof eps[0]; i++) {
    char v[128];
    snprintf(v, sizeof v, "{'mechanism': 'discrete_laplace', 'epsilon': %s}", eps[i].value);
    set_at(j, "queries/overlap/noise", v);
    t = parse_json(j, 0, &list, &n);
    assert_int_equal(cr_template_query(t, "overlap")->noise.epsilon, eps[i].want);
    cr_template_free(t);
  }
  json_decref(j);
}

typedef struct dp_bad {
  const char *ptr, *value, *want;
} dp_bad;

static const dp_bad DP_BAD[] = {
    {"queries/overlap/noise", "'laplace'",
     "$.queries.overlap.noise: found \"laplace\", expected an object"},
    {"queries/overlap/noise", "{'mechanism': 'laplace', 'epsilon': 1}",
     "$.queries.overlap.noise.mechanism: found \"laplace\", expected \"discrete_laplace\" or"},
    {"queries/overlap/noise", "{'epsilon': 1}", "$.queries.overlap.noise.mechanism: missing"},
    {"queries/overlap/noise", "{'mechanism': 'discrete_laplace'}",
     "$.queries.overlap.noise.epsilon: missing, expected a number > 0 and <= 100 with at most 6 "
     "decimal places"},
    {"queries/overlap/noise", "{'mechanism': 'discrete_laplace', 'epsilon': 0}",
     "$.queries.overlap.noise.epsilon: found 0, expected a number > 0"},
    {"queries/overlap/noise", "{'mechanism': 'discrete_laplace', 'epsilon': -1}",
     "$.queries.overlap.noise.epsilon: found -1,"},
    {"queries/overlap/noise", "{'mechanism': 'discrete_laplace', 'epsilon': 0.0000001}",
     "$.queries.overlap.noise.epsilon: found 1e-07, expected a number > 0 and <= 100 with at most "
     "6 decimal places"},
    {"queries/overlap/noise", "{'mechanism': 'discrete_laplace', 'epsilon': 100.5}",
     "$.queries.overlap.noise.epsilon: found 100.5,"},
    {"queries/overlap/noise", "{'mechanism': 'discrete_laplace', 'epsilon': '1'}",
     "$.queries.overlap.noise.epsilon: found \"1\","},
    {"queries/overlap/noise", "{'mechanism': 'discrete_laplace', 'epsilon': 1, 'delta': 1e-9}",
     "$.queries.overlap.noise.delta: found 1e-09, expected no delta for discrete_laplace"},
    {"queries/overlap/noise", "{'mechanism': 'discrete_laplace', 'epsilon': 1, 'sigma': 2}",
     "$.queries.overlap.noise.sigma: found 2, expected no sigma for discrete_laplace"},
    {"queries/overlap/noise", "{'mechanism': 'discrete_laplace', 'epsilon': 1, 'scale': 2}",
     "$.queries.overlap.noise.scale: unknown field, expected one of: mechanism, epsilon, sigma, "
     "delta"},
    {"queries/overlap/noise", "{'mechanism': 'discrete_gaussian', 'sigma': 2}",
     "$.queries.overlap.noise.delta: missing, expected a number > 0 and < 1 with at most 15 "
     "decimal places (discrete_gaussian spends delta"},
    {"queries/overlap/noise", "{'mechanism': 'discrete_gaussian', 'delta': 1e-9}",
     "$.queries.overlap.noise.epsilon: missing, expected epsilon or sigma for discrete_gaussian"},
    {"queries/overlap/noise",
     "{'mechanism': 'discrete_gaussian', 'delta': 1e-9, 'sigma': 2, 'epsilon': 1}",
     "$.queries.overlap.noise.sigma: found 2, expected either epsilon or sigma"},
    {"queries/overlap/noise", "{'mechanism': 'discrete_gaussian', 'delta': 1, 'sigma': 2}",
     "$.queries.overlap.noise.delta: found 1, expected a number > 0 and < 1"},
    {"queries/overlap/noise", "{'mechanism': 'discrete_gaussian', 'delta': 1e-16, 'sigma': 2}",
     "$.queries.overlap.noise.delta: found 1e-16,"},
    {"queries/overlap/noise", "{'mechanism': 'discrete_gaussian', 'delta': 1e-9, 'sigma': 2.0005}",
     "$.queries.overlap.noise.sigma: found 2.0005, expected a number > 0 and <= 100000 with at "
     "most 3 decimal places"},
    {"queries/overlap/noise", "{'mechanism': 'discrete_gaussian', 'delta': 1e-9, 'sigma': 0.01}",
     "$.queries.overlap.noise.sigma: found 0.01, expected a larger sigma"},
    {"queries/overlap/noise", "{'mechanism': 'discrete_gaussian', 'delta': 1e-9, 'sigma': 0.5}",
     "$.queries.overlap.noise.sigma: found 0.5, expected a run that costs at most the whole "
     "budget: it spends epsilon 14.875797, $.limits.privacy_budget.epsilon is 10"},
    {"queries/overlap/noise", "{'mechanism': 'discrete_laplace', 'epsilon': 11}",
     "$.queries.overlap.noise.epsilon: found 11, expected a run that costs at most the whole "
     "budget: it spends epsilon 11, $.limits.privacy_budget.epsilon is 10"},
    {"queries/overlap/noise", "{'mechanism': 'discrete_gaussian', 'delta': 1e-4, 'sigma': 20}",
     "$.queries.overlap.noise.delta: found 0.0001, expected at most $.limits.privacy_budget.delta "
     "(1e-05)"},
    {"queries/overlap/noise", NULL,
     "$.queries.overlap.noise: missing, expected a noise object: with $.limits.privacy_budget "
     "every count query is released with noise"},
    {"queries/my_matched_users/noise", "{'mechanism': 'discrete_laplace', 'epsilon': 1}",
     "$.queries.my_matched_users.noise: found an object, expected no noise for kind \"members\""},
    {"limits/privacy_budget/allow_members", NULL,
     "$.queries.my_matched_users.kind: found \"members\", expected \"count\": a template with "
     "$.limits.privacy_budget releases no records unless "
     "$.limits.privacy_budget.allow_members is true"},
    {"limits/privacy_budget/allow_members", "'yes'",
     "$.limits.privacy_budget.allow_members: found \"yes\", expected true or false"},
    {"limits/privacy_budget", "{'delta': 1e-5}",
     "$.limits.privacy_budget.epsilon: missing, expected a number > 0 and <= 1000000"},
    {"limits/privacy_budget", "{'epsilon': 10, 'delta': 1e-5, 'allow_members': true, 'x': 1}",
     "$.limits.privacy_budget.x: unknown field, expected one of: epsilon, delta, allow_members"},
    {"limits/privacy_budget", "{'epsilon': 10, 'allow_members': true}",
     "$.limits.privacy_budget.delta: missing, expected a number > 0 and < 1: a query uses "
     "discrete_gaussian"},
    {"limits/privacy_budget", "10", "$.limits.privacy_budget: found 10, expected an object"},
    {"limits/privacy_budget", NULL,
     "$.queries.overlap.noise: found an object, expected no noise unless $.limits.privacy_budget "
     "is set"},
};

static void test_privacy_rejected(void **state) {
  (void)state;
  for (size_t i = 0; i < sizeof DP_BAD / sizeof DP_BAD[0]; i++) {
    const dp_bad *c = &DP_BAD[i];
    json_t *j = dp_json();
    set_at(j, c->ptr, c->value);
    char **list;
    size_t n;
    cr_template *t = parse_json(j, CR_ETEMPLATE, &list, &n);
    assert_null(t);
    int found = 0;
    for (size_t k = 0; k < n; k++)
      found |= strstr(list[k], c->want) != NULL;
    if (!found) {
      print_error("case %zu (%s = %s): wanted %s; got:\n", i, c->ptr, c->value ? c->value : "-",
                  c->want);
      for (size_t k = 0; k < n; k++)
        print_error("  %s\n", list[k]);
    }
    assert_true(found);
    cr_template_errors_free(list, n);
    json_decref(j);
  }
}

/* Fixed point back to the decimal it came from. */
static void test_dp_decimal(void **state) {
  (void)state;
  char b[32];
  assert_string_equal(cr_dp_decimal(b, sizeof b, 500000, CR_DP_EPSILON_UNIT), "0.5");
  assert_string_equal(cr_dp_decimal(b, sizeof b, 1, CR_DP_EPSILON_UNIT), "0.000001");
  assert_string_equal(cr_dp_decimal(b, sizeof b, 10000000, CR_DP_EPSILON_UNIT), "10");
  assert_string_equal(cr_dp_decimal(b, sizeof b, 0, CR_DP_EPSILON_UNIT), "0");
  assert_string_equal(cr_dp_decimal(b, sizeof b, 123456789, CR_DP_EPSILON_UNIT), "123.456789");
  assert_string_equal(cr_dp_decimal(b, sizeof b, 3500, CR_DP_SIGMA_UNIT), "3.5");
  assert_string_equal(cr_dp_decimal(b, sizeof b, 1000000, CR_DP_DELTA_UNIT), "0.000000001");
  assert_string_equal(cr_noise_mechanism_name(CR_NOISE_DISCRETE_GAUSSIAN), "discrete_gaussian");
  assert_string_equal(cr_noise_mechanism_name(CR_NOISE_NONE), "none");
}

/* Delta only with a Gaussian query; a budget needs a noisy query. */
static void test_privacy_combinations(void **state) {
  (void)state;
  char **list;
  size_t n;
  json_t *j = base_json();
  set_at(j, "queries/overlap/noise", "{'mechanism': 'discrete_laplace', 'epsilon': 1}");
  set_at(j, "queries/overlap_by_segment/noise", "{'mechanism': 'discrete_laplace', 'epsilon': 1}");
  set_at(j, "queries/eligible_patients/noise", "{'mechanism': 'discrete_laplace', 'epsilon': 1}");
  set_at(j, "queries/my_matched_users", NULL);
  set_at(j, "limits/privacy_budget", "{'epsilon': 3}");
  cr_template *t = parse_json(j, 0, &list, &n);
  assert_int_equal(t->limits.privacy_budget.delta, 0);
  assert_false(t->limits.privacy_budget.allow_members);
  cr_template_free(t);
  set_at(j, "limits/privacy_budget", "{'epsilon': 3, 'delta': 1e-6}");
  t = parse_json(j, CR_ETEMPLATE, &list, &n);
  assert_int_equal(n, 1);
  assert_non_null(strstr(list[0], "$.limits.privacy_budget.delta: found 1e-06, expected no "
                                  "delta: no query uses discrete_gaussian"));
  cr_template_errors_free(list, n);
  json_decref(j);

  /* A budget over members queries only spends nothing. */
  j = base_json();
  set_at(j, "queries",
         "{'m': {'kind': 'members', 'run_by': ['consumer'], 'results_to': "
         "['consumer'], 'min_count': 10}}");
  set_at(j, "limits/privacy_budget", "{'epsilon': 3, 'allow_members': true}");
  t = parse_json(j, CR_ETEMPLATE, &list, &n);
  assert_int_equal(n, 1);
  assert_non_null(strstr(list[0], "$.limits.privacy_budget: found an object, expected a budget "
                                  "only in a template with a noisy query"));
  cr_template_errors_free(list, n);
  json_decref(j);

  /* Noise is part of the contract: it changes the hash. */
  json_t *a = dp_json(), *b = dp_json();
  set_at(b, "queries/overlap/noise/epsilon", "0.6");
  cr_template *ta = parse_json(a, 0, &list, &n), *tb = parse_json(b, 0, &list, &n);
  assert_memory_not_equal(ta->sha256, tb->sha256, 32);
  cr_template_free(ta);
  cr_template_free(tb);
  json_decref(a);
  json_decref(b);
}

static void test_each_field_rejected(void **state) {
  (void)state;
  for (size_t i = 0; i < sizeof BAD / sizeof BAD[0]; i++) {
    const bad_case *c = &BAD[i];
    char *s = mutated(c->ptr, c->value);
    cr_template *t = (cr_template *)1;
    cr_error err;
    cr_error_clear(&err);
    int rc = cr_template_parse(&t, s, strlen(s), "t.json", &err);
    if (rc != CR_ETEMPLATE || strstr(err.msg, c->want) == NULL)
      print_error("case %zu (%s = %s): rc %d, message:\n%s\nwanted: %s\n", i, c->ptr,
                  c->value ? c->value : "(deleted)", rc, err.msg, c->want);
    assert_int_equal(rc, CR_ETEMPLATE);
    assert_int_equal(err.code, CR_ETEMPLATE);
    assert_null(t);
    assert_non_null(strstr(err.msg, c->want));
    assert_true(strncmp(err.msg, "t.json: ", 8) == 0);

    /* The same through the list interface, which also counts them. */
    char **list = NULL;
    size_t n = 0;
    rc = cr_template_check_mem(s, strlen(s), "t.json", NULL, &list, &n);
    assert_int_equal(rc, CR_ETEMPLATE);
    if (n != c->nerrors) {
      print_error("case %zu (%s): %zu errors:\n", i, c->ptr, n);
      for (size_t k = 0; k < n; k++)
        print_error("  %s\n", list[k]);
    }
    assert_int_equal(n, c->nerrors);
    assert_non_null(strstr(list[0], c->want));
    cr_template_errors_free(list, n);
    free(s);
  }
}

static void test_all_errors_listed(void **state) {
  (void)state;
  json_t *j = base_json();
  set_at(j, "suite", "'x25519'");
  set_at(j, "queries/overlap/min_count", "-3");
  set_at(j, "limits/not_after", "'soon'");
  set_at(j, "colour", "'blue'");
  char *s = dump(j, JSON_INDENT(2));
  cr_template *t = NULL;
  cr_error err;
  assert_int_equal(cr_template_parse(&t, s, strlen(s), "t.json", &err), CR_ETEMPLATE);
  assert_null(t);
  assert_true(strncmp(err.msg, "t.json: 4 errors\n", 17) == 0);
  assert_non_null(strstr(err.msg, "\n$.suite: found \"x25519\""));
  assert_non_null(strstr(err.msg, "\n$.queries.overlap.min_count: found -3, expected an "
                                  "integer >= 1"));
  assert_non_null(strstr(err.msg, "\n$.limits.not_after: found \"soon\""));
  assert_non_null(strstr(err.msg, "\n$.colour: unknown field"));
  assert_null(strstr(err.msg, "more"));

  char **list = NULL;
  size_t n = 0;
  assert_int_equal(cr_template_check_mem(s, strlen(s), "t.json", NULL, &list, &n), CR_ETEMPLATE);
  assert_int_equal(n, 4);
  assert_null(list[n]); /* NULL-terminated too */
  cr_template_errors_free(list, n);
  free(s);
  json_decref(j);
}

/* More errors than fit in cr_error: the message says how many are missing. */
static void test_many_errors(void **state) {
  (void)state;
  json_t *j = base_json();
  char key[32];
  for (int i = 0; i < 250; i++) {
    snprintf(key, sizeof key, "unknown_%03d", i);
    json_object_set_new(j, key, json_integer(i));
  }
  char *s = dump(j, 0);
  cr_template *t = NULL;
  cr_error err;
  assert_int_equal(cr_template_parse(&t, s, strlen(s), "t.json", &err), CR_ETEMPLATE);
  assert_true(strlen(err.msg) < sizeof err.msg - 1);
  assert_true(strncmp(err.msg, "t.json: 250 errors\n$.unknown_000: unknown field", 47) == 0);
  const char *more = strstr(err.msg, "\n... and ");
  assert_non_null(more);
  assert_non_null(strstr(more, " more"));
  assert_int_equal(more[strlen(more) - 1], 'e'); /* the last line, not cut */
  /* Shown lines + "N more" add up. */
  size_t lines = 0;
  for (const char *p = err.msg; (p = strchr(p, '\n')) != NULL && p < more; p++)
    lines++;
  assert_int_equal(lines + strtoul(more + 9, NULL, 10), 250);

  char **list = NULL;
  size_t n = 0;
  assert_int_equal(cr_template_check_mem(s, strlen(s), "t.json", NULL, &list, &n), CR_ETEMPLATE);
  assert_int_equal(n, CR_TEMPLATE_MAX_ERRORS + 1);
  assert_non_null(strstr(list[0], "$.unknown_000: unknown field"));
  assert_non_null(strstr(list[CR_TEMPLATE_MAX_ERRORS - 1], "$.unknown_199"));
  assert_string_equal(list[CR_TEMPLATE_MAX_ERRORS], "... and 50 more errors");
  cr_template_errors_free(list, n);
  free(s);
  json_decref(j);
}

static void test_syntax_and_size(void **state) {
  (void)state;
  static const struct {
    const char *json, *want;
  } v[] = {
      {"{'format': 'cleanroom-template/1', 'format': 'cleanroom-template/1'}", "duplicate"},
      {"{'queries': {'a': {}, 'a': {}}}", "duplicate"},
      {"{", "$: invalid JSON at line 1"},
      {"", "$: invalid JSON"},
      {"{} {}", "$: invalid JSON"},
      {"'just a string'", "$: invalid JSON"},
      {"[]", "$: found an array, expected a template object"},
      {"{'name': 'a\\u0000b'}", "$: invalid JSON"},
  };
  for (size_t i = 0; i < sizeof v / sizeof v[0]; i++) {
    char *s = dq(v[i].json);
    cr_template *t = NULL;
    cr_error err;
    int rc = cr_template_parse(&t, s, strlen(s), "t.json", &err);
    if (rc != CR_ETEMPLATE || strstr(err.msg, v[i].want) == NULL)
      print_error("case %zu: rc %d: %s\n", i, rc, err.msg);
    assert_int_equal(rc, CR_ETEMPLATE);
    assert_null(t);
    assert_non_null(strstr(err.msg, v[i].want));
    free(s);
  }

  /* Over the size limit: refused before parsing, even if it is valid JSON. */
  size_t big = CR_TEMPLATE_MAX_BYTES + 1;
  char *s = malloc(big);
  assert_non_null(s);
  memset(s, ' ', big);
  s[0] = '{';
  s[big - 1] = '}';
  cr_template *t = NULL;
  cr_error err;
  assert_int_equal(cr_template_parse(&t, s, big, "t.json", &err), CR_ETEMPLATE);
  assert_non_null(strstr(err.msg, "expected at most 1048576 bytes"));
  free(s);
}

/* --------------------------------------------------------------- the hash */

static json_t *reversed(const json_t *j) {
  if (json_is_object(j)) {
    const char *keys[64];
    size_t n = 0;
    const char *k;
    json_t *v;
    json_object_foreach((json_t *)j, k, v) {
      assert_true(n < 64);
      keys[n++] = k;
    }
    json_t *o = json_object();
    while (n-- > 0)
      json_object_set_new(o, keys[n], reversed(json_object_get(j, keys[n])));
    return o;
  }
  if (json_is_array(j)) {
    json_t *a = json_array();
    for (size_t i = 0; i < json_array_size(j); i++)
      json_array_append_new(a, reversed(json_array_get(j, i)));
    return a;
  }
  return json_deep_copy(j);
}

static void sha_of(const char *s, uint8_t out[32]) {
  cr_template *t = parse_ok(s, "t");
  memcpy(out, t->sha256, 32);
  cr_template_free(t);
}

static void test_hash_ignores_formatting(void **state) {
  (void)state;
  uint8_t want[32], got[32];
  char *base = dq(BASE);
  sha_of(base, want);

  json_t *j = base_json();
  json_t *r = reversed(j);
  const struct {
    const json_t *j;
    size_t flags;
  } forms[] = {
      {j, JSON_COMPACT},
      {j, JSON_INDENT(8)},
      {j, JSON_SORT_KEYS | JSON_INDENT(1)},
      {r, JSON_COMPACT},
      {r, JSON_INDENT(3) | JSON_ENSURE_ASCII},
  };
  for (size_t i = 0; i < sizeof forms / sizeof forms[0]; i++) {
    char *s = dump(forms[i].j, forms[i].flags);
    sha_of(s, got);
    assert_memory_equal(got, want, 32);
    free(s);
  }

  /* Escapes spell the same string: "\u0041" is "A". */
  const char *from = "\"Acme Security\"", *to = "\"\\u0041cme Security\"";
  char *p = strstr(base, from);
  assert_non_null(p);
  size_t len = strlen(base) + strlen(to) - strlen(from) + 1;
  char *s = malloc(len);
  assert_non_null(s);
  snprintf(s, len, "%.*s%s%s", (int)(p - base), base, to, p + strlen(from));
  assert_non_null(strstr(s, "\\u0041cme"));
  sha_of(s, got);
  assert_memory_equal(got, want, 32);
  free(s);
  free(base);
  json_decref(r);
  json_decref(j);
}

static void test_hash_follows_values(void **state) {
  (void)state;
  static const struct {
    const char *ptr, *value;
  } changes[] = {
      {"name", "'HomeSure x Acme Security: audience overlap 2'"},
      {"parties/provider/org", "'Acme Security Ltd'"},
      {"parties/provider/cert_sha256",
       "'1111111111111111111111111111111111111111111111111111111111111112'"},
      {"parties/consumer/cert_sha256",
       "'abababababababababababababababababababababababababababababababab'"},
      {"parties/provider/address", "'acme.example:7444'"},
      {"suite", "'p256'"},
      {"match_key/name", "'mail'"},
      {"match_key/normalize", "['text', 'email']"},
      {"data/provider/required_columns", "['email', 'dx_code', 'age', 'segment']"},
      {"queries/overlap/min_count", "101"},
      {"queries/overlap/results_to", "['consumer', 'provider']"},
      {"queries/overlap/run_by", "['provider']"},
      {"queries/overlap_by_segment/group_by", "{'provider': 'age'}"},
      {"queries/eligible_patients/where",
       "{'provider': 'dx_code IN :codes AND age BETWEEN :min_age AND :max_age '}"},
      {"queries/eligible_patients/params",
       "{'codes': 'string', 'min_age': 'integer', 'max_age': 'integer'}"},
      {"queries/my_matched_users/kind", "'count'"},
      {"limits/max_runs_per_query", "21"},
      {"limits/min_set_size", "999"},
      {"limits/max_set_size", "100000001"},
      {"limits/not_after", "'2027-06-30T00:00:01Z'"},
      {"require_signatures", "false"},
  };
  enum { N = sizeof changes / sizeof changes[0] };
  uint8_t h[N + 1][32];
  char *base = dq(BASE);
  sha_of(base, h[N]);
  free(base);
  for (size_t i = 0; i < N; i++) {
    char *s;
    if (strcmp(changes[i].value, "'count'") == 0) {
      /* A members query turned count must also lose its columns. */
      json_t *j = base_json();
      set_at(j, "queries/my_matched_users/kind", "'count'");
      set_at(j, "queries/my_matched_users/columns", NULL);
      s = dump(j, 0);
      json_decref(j);
    } else {
      s = mutated(changes[i].ptr, changes[i].value);
    }
    sha_of(s, h[i]);
    free(s);
    for (size_t k = 0; k < i; k++)
      assert_memory_not_equal(h[i], h[k], 32);
    assert_memory_not_equal(h[i], h[N], 32);
  }
}

/* ------------------------------------------------------------- files, API */

static void test_load_example(void **state) {
  (void)state;
  cr_template *t = NULL;
  cr_error err;
  const char *path = CR_SOURCE_DIR "/examples/overlap/template.json";
  int rc = cr_template_load(&t, path, &err);
  if (rc != 0)
    print_error("%s\n", err.msg);
  assert_int_equal(rc, 0);
  assert_string_equal(t->path, path);
  assert_string_equal(t->parties[CR_ROLE_PROVIDER].org, "Acme Security");
  assert_string_equal(t->parties[CR_ROLE_PROVIDER].address, "127.0.0.1:7443");
  assert_string_equal(t->parties[CR_ROLE_CONSUMER].org, "HomeSure Insurance");
  assert_string_equal(t->suite, "ristretto255");
  assert_int_equal(t->nqueries, 2);
  const cr_query *q = cr_template_query(t, "overlap_to_consumer");
  assert_non_null(q);
  assert_int_equal(q->results_to, CR_ROLE_BIT(CR_ROLE_CONSUMER));
  assert_int_equal(q->min_count, 100);
  assert_int_equal(t->limits.max_runs_per_query, 20);
  assert_int_equal(t->limits.min_set_size, 100);
  assert_int_equal(t->limits.max_set_size, 100000000);
  assert_int_equal(t->limits.not_after, 1924905600); /* 2030-12-31T00:00:00Z */
  cr_template_free(t);

  char **list = (char **)1;
  size_t n = 99;
  t = NULL;
  assert_int_equal(cr_template_check(path, &t, &list, &n), 0);
  assert_null(list);
  assert_int_equal(n, 0);
  assert_non_null(t);
  cr_template_free(t);
}

static void test_load_errors(void **state) {
  (void)state;
  cr_template *t = (cr_template *)1;
  cr_error err;
  const char *missing = CR_SOURCE_DIR "/examples/overlap/no-such-template.json";
  assert_int_equal(cr_template_load(&t, missing, &err), CR_EIO);
  assert_null(t);
  assert_non_null(strstr(err.msg, missing));
  assert_non_null(strstr(err.msg, "No such file or directory"));

  /* A directory opens but does not read. */
  assert_int_equal(cr_template_load(&t, CR_SOURCE_DIR "/examples", &err), CR_EIO);
  assert_non_null(strstr(err.msg, "examples"));

  char **list = NULL;
  size_t n = 0;
  assert_int_equal(cr_template_check(missing, NULL, &list, &n), CR_EIO);
  assert_int_equal(n, 1);
  assert_non_null(strstr(list[0], "No such file or directory"));
  cr_template_errors_free(list, n);

  /* A file just over the limit is a template error, not I/O. */
  char path[] = "/tmp/cr_test_template_XXXXXX";
  int fd = mkstemp(path);
  assert_true(fd >= 0);
  FILE *f = fdopen(fd, "wb");
  assert_non_null(f);
  for (size_t i = 0; i <= CR_TEMPLATE_MAX_BYTES; i++)
    fputc(' ', f);
  fclose(f);
  assert_int_equal(cr_template_load(&t, path, &err), CR_ETEMPLATE);
  assert_non_null(strstr(err.msg, "expected at most 1048576 bytes"));
  assert_true(strncmp(err.msg, path, strlen(path)) == 0);
  remove(path);

  /* An invalid file names its path first. */
  strcpy(path, "/tmp/cr_test_template_XXXXXX");
  fd = mkstemp(path);
  assert_true(fd >= 0);
  f = fdopen(fd, "wb");
  assert_non_null(f);
  fputs("{\"format\": 1}", f);
  fclose(f);
  assert_int_equal(cr_template_load(&t, path, &err), CR_ETEMPLATE);
  assert_true(strncmp(err.msg, path, strlen(path)) == 0);
  assert_non_null(strstr(err.msg, "$.format: found 1"));
  assert_non_null(strstr(err.msg, "$.queries: missing"));
  remove(path);

  /* Bad arguments. */
  assert_int_equal(cr_template_parse(NULL, "{}", 2, "t", &err), CR_EINVAL);
  assert_int_equal(cr_template_parse(&t, NULL, 5, "t", &err), CR_ETEMPLATE);
  assert_int_equal(cr_template_check(NULL, NULL, &list, &n), CR_EINVAL);
}

static void test_roles_and_names(void **state) {
  (void)state;
  cr_role r;
  assert_string_equal(cr_role_name(CR_ROLE_PROVIDER), "provider");
  assert_string_equal(cr_role_name(CR_ROLE_CONSUMER), "consumer");
  assert_int_equal(cr_role_parse("provider", &r), 0);
  assert_int_equal(r, CR_ROLE_PROVIDER);
  assert_int_equal(cr_role_parse("consumer", &r), 0);
  assert_int_equal(r, CR_ROLE_CONSUMER);
  assert_int_equal(cr_role_parse("Provider", &r), CR_EINVAL);
  assert_int_equal(cr_role_parse("", &r), CR_EINVAL);
  assert_int_equal(cr_role_parse(NULL, &r), CR_EINVAL);
  assert_int_equal(cr_role_other(CR_ROLE_PROVIDER), CR_ROLE_CONSUMER);

  assert_string_equal(cr_normalizer_name(CR_NORM_EMAIL), "email");
  assert_string_equal(cr_normalizer_name(CR_NORM_PHONE), "phone");
  assert_string_equal(cr_normalizer_name(CR_NORM_TEXT), "text");
  assert_string_equal(cr_normalizer_name(CR_NORM_SHA256), "sha256");
  assert_string_equal(cr_normalizer_name(CR_NORM_HASHED_SHA256), "hashed_sha256");
  assert_string_equal(cr_normalizer_name((cr_normalizer)0), "unknown");

  cr_template_free(NULL);
}

static void test_role_of(void **state) {
  (void)state;
  char *s = dq(BASE);
  cr_template *t = NULL;
  cr_error err;
  assert_int_equal(cr_template_parse(&t, s, strlen(s), "t", &err), 0);
  uint8_t fp[32];
  cr_role r = CR_ROLE_CONSUMER;
  memset(fp, 0x11, sizeof fp);
  assert_int_equal(cr_template_role_of(t, fp, &r), 0);
  assert_int_equal(r, CR_ROLE_PROVIDER);
  memset(fp, 0xab, sizeof fp);
  assert_int_equal(cr_template_role_of(t, fp, &r), 0);
  assert_int_equal(r, CR_ROLE_CONSUMER);
  fp[31] ^= 1;
  assert_int_equal(cr_template_role_of(t, fp, &r), CR_ECONFIG);
  cr_template_free(t);
  free(s);

  /* Both parties with one certificate: the loader refuses it, naming the
   * consumer's pin (a node with it could not tell its role). */
  s = mutated("parties/consumer/cert_sha256",
              "'1111111111111111111111111111111111111111111111111111111111111111'");
  assert_int_equal(cr_template_parse(&t, s, strlen(s), "t", &err), CR_ETEMPLATE);
  assert_non_null(strstr(err.msg, "$.parties.consumer.cert_sha256"));
  assert_non_null(strstr(err.msg, "other than the provider's"));
  free(s);
  /* All zeros in both is a draft not pinned yet: valid. */
  {
    json_t *j = base_json();
    set_at(j, "parties/provider/cert_sha256",
           "'0000000000000000000000000000000000000000000000000000000000000000'");
    set_at(j, "parties/consumer/cert_sha256",
           "'0000000000000000000000000000000000000000000000000000000000000000'");
    s = dump(j, 0);
    json_decref(j);
  }
  assert_int_equal(cr_template_parse(&t, s, strlen(s), "t", &err), 0);
  cr_template_free(t);
  free(s);

  /* Both parties with one certificate (a template built in memory):
   * ambiguous, so no role. */
  s = dq(BASE);
  assert_int_equal(cr_template_parse(&t, s, strlen(s), "t", &err), 0);
  memset(t->parties[CR_ROLE_CONSUMER].cert_sha256, 0x11, CR_SHA256_BYTES);
  memset(fp, 0x11, sizeof fp);
  assert_int_equal(cr_template_role_of(t, fp, &r), CR_ECONFIG);
  cr_template_free(t);
  free(s);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_base_parses),
      cmocka_unit_test(test_optional_sections),
      cmocka_unit_test(test_accepted_variants),
      cmocka_unit_test(test_not_after_values),
      cmocka_unit_test(test_size_buckets),
      cmocka_unit_test(test_party_columns),
      cmocka_unit_test(test_party_normalizers),
      cmocka_unit_test(test_time_iso),
      cmocka_unit_test(test_match_keys),
      cmocka_unit_test(test_match_keys_rejected),
      cmocka_unit_test(test_match_keys_party_columns),
      cmocka_unit_test(test_each_field_rejected),
      cmocka_unit_test(test_all_errors_listed),
      cmocka_unit_test(test_many_errors),
      cmocka_unit_test(test_syntax_and_size),
      cmocka_unit_test(test_hash_ignores_formatting),
      cmocka_unit_test(test_hash_follows_values),
      cmocka_unit_test(test_load_example),
      cmocka_unit_test(test_load_errors),
      cmocka_unit_test(test_roles_and_names),
      cmocka_unit_test(test_role_of),
      cmocka_unit_test(test_privacy_parses),
      cmocka_unit_test(test_privacy_rejected),
      cmocka_unit_test(test_privacy_combinations),
      cmocka_unit_test(test_dp_decimal),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
