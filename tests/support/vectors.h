/*
 * Known-answer vector files for the unit tests: "key = value" records
 * separated by blank lines, '#' comments (see the header of each file in
 * tests/vectors/). Any other line fails the test, so a damaged file cannot
 * be skipped. Header-only; include after <cmocka.h>.
 */
#ifndef CR_TESTS_SUPPORT_VECTORS_H
#define CR_TESTS_SUPPORT_VECTORS_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define VEC_MAX_FIELDS 12
#define VEC_MAX_RECORDS 64

typedef struct vec_record {
  size_t n;
  char *key[VEC_MAX_FIELDS];
  char *val[VEC_MAX_FIELDS];
} vec_record;

typedef struct vec_file {
  size_t n;
  vec_record rec[VEC_MAX_RECORDS];
} vec_file;

static inline void vec_free(vec_file *vf) {
  for (size_t i = 0; i < vf->n; i++)
    for (size_t j = 0; j < vf->rec[i].n; j++) {
      free(vf->rec[i].key[j]);
      free(vf->rec[i].val[j]);
    }
  free(vf);
}

static inline void rstrip(char *s) {
  size_t n = strlen(s);
  while (n > 0 && (s[n - 1] == '\n' || s[n - 1] == '\r' || s[n - 1] == ' ' || s[n - 1] == '\t'))
    s[--n] = '\0';
}

/* Parses "key = value" records separated by blank lines; fails the test on
 * any line it does not understand, so a damaged file cannot be skipped. */
static inline vec_file *vec_load(const char *name) {
  char path[1024];
  snprintf(path, sizeof path, "%s/%s", CR_VECTORS_DIR, name);
  FILE *f = fopen(path, "r");
  if (f == NULL)
    fail_msg("cannot open vector file %s", path);
  vec_file *vf = calloc(1, sizeof *vf);
  assert_non_null(vf);

  char *line = NULL;
  size_t cap = 0;
  int in_record = 0;
  unsigned lineno = 0;
  while (getline(&line, &cap, f) != -1) {
    lineno++;
    rstrip(line);
    if (line[0] == '#')
      continue;
    if (line[0] == '\0') {
      if (in_record)
        vf->n++;
      in_record = 0;
      continue;
    }
    char *eq = strstr(line, " =");
    if (eq == NULL || (eq[2] != '\0' && eq[2] != ' '))
      fail_msg("%s:%u: not a \"key = value\" line", name, lineno);
    if (vf->n >= VEC_MAX_RECORDS)
      fail_msg("%s: too many records", name);
    vec_record *r = &vf->rec[vf->n];
    if (r->n >= VEC_MAX_FIELDS)
      fail_msg("%s:%u: too many fields in one record", name, lineno);
    *eq = '\0';
    const char *val = eq[2] == ' ' ? eq + 3 : eq + 2;
    r->key[r->n] = strdup(line);
    r->val[r->n] = strdup(val);
    assert_non_null(r->key[r->n]);
    assert_non_null(r->val[r->n]);
    r->n++;
    in_record = 1;
  }
  if (in_record)
    vf->n++;
  free(line);
  fclose(f);
  return vf;
}

/* NULL when the record has no such key. */
static inline const char *vec_get(const vec_record *r, const char *key) {
  for (size_t i = 0; i < r->n; i++)
    if (strcmp(r->key[i], key) == 0)
      return r->val[i];
  return NULL;
}

static inline const char *vec_need(const vec_record *r, const char *key) {
  const char *v = vec_get(r, key);
  if (v == NULL)
    fail_msg("record lacks key \"%s\"", key);
  return v;
}

/* Exactly 2*len lowercase-or-uppercase hex digits, nothing else. */
static inline void hex_exact(uint8_t *out, size_t len, const char *hex) {
  size_t got = 0;
  const char *end = NULL;
  if (strlen(hex) != 2 * len)
    fail_msg("hex value has %zu digits, expected %zu", strlen(hex), 2 * len);
  if (sodium_hex2bin(out, len, hex, strlen(hex), NULL, &got, &end) != 0 || got != len ||
      *end != '\0')
    fail_msg("malformed hex value");
}

static inline const uint8_t *hex_alloc(const char *hex, size_t *len) {
  size_t n = strlen(hex);
  if (n % 2 != 0)
    fail_msg("odd-length hex value");
  uint8_t *b = malloc(n / 2 + 1);
  assert_non_null(b);
  hex_exact(b, n / 2, hex);
  *len = n / 2;
  return b;
}

#endif
