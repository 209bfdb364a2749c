/*
 * RFC 8785 JSON Canonicalization Scheme (JCS).
 *
 * The template's identity is the SHA-256 of these bytes, so two partners who
 * formatted the same contract differently still agree on it. Every choice
 * below follows the RFC, because a single byte of difference between two
 * implementations splits the hash:
 *   - numbers are IEEE doubles printed as ECMAScript Number.prototype.toString
 *     does (shortest digits that read back to the same double);
 *   - object members are sorted by their names as UTF-16 code units;
 *   - strings escape only what JSON requires, in the RFC's fixed spelling.
 */
#include "cleanroom/template.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

/* ------------------------------------------------------------------ numbers */

/*
 * Shortest decimal digits for a finite v > 0: v == 0.d1..dk × 10^n, k minimal.
 * printf/strtod in glibc are exact, so "%.*e" gives the correctly rounded
 * p-digit decimal; the first p whose text reads back as v is the shortest.
 * Near a power of two the doubles above and below are not equally far
 * apart, and the nearest p-digit decimal can fall just outside the rounding
 * interval while its neighbour falls inside: the neighbours are tried too,
 * so the result is never longer than ECMAScript's.
 */
static void shortest_digits(double v, char digits[24], int *k, int *n) {
  char buf[40];
  for (int p = 1; p <= 17; p++) {
    snprintf(buf, sizeof buf, "%.*e", p - 1, v);
    /* buf is d[.ddd]e±XX: collect the mantissa digits and the exponent.
     * Digits only: the decimal point is whatever LC_NUMERIC says. The
     * candidates below are integers, so strtod reads them in any locale. */
    unsigned long long m = 0;
    const char *s = buf;
    for (; *s != 'e'; s++)
      if (*s >= '0' && *s <= '9')
        m = m * 10 + (unsigned long long)(*s - '0');
    int e10 = (int)strtol(s + 1, NULL, 10) - (p - 1); /* v ≈ m × 10^e10 */
    unsigned long long cand[3] = {m, m - 1, m + 1};
    for (int c = 0; c < 3; c++) {
      if (cand[c] == 0)
        continue;
      snprintf(buf, sizeof buf, "%llue%d", cand[c], e10);
      if (strtod(buf, NULL) != v)
        continue;
      int len = snprintf(digits, 24, "%llu", cand[c]);
      int exp10 = e10;
      /* A neighbour may end in zeros; they are not significant digits. */
      while (len > 1 && digits[len - 1] == '0') {
        digits[--len] = '\0';
        exp10++;
      }
      *k = len;
      *n = exp10 + len;
      return;
    }
  }
  /* Unreachable for finite doubles: 17 significant digits always round-trip. */
  snprintf(buf, sizeof buf, "%.16e", v);
  int len = 0;
  const char *s = buf;
  for (; *s != 'e'; s++)
    if (*s >= '0' && *s <= '9')
      digits[len++] = *s;
  digits[len] = '\0';
  *k = len;
  *n = (int)strtol(s + 1, NULL, 10) + 1;
}

/* ECMAScript Number::toString(x) for finite x (ECMA-262, 7.1.12.1). */
static int jcs_number(cr_buf *b, double x) {
  char out[40];
  char d[24];
  int k = 0, n = 0, len = 0;
  if (!isfinite(x))
    return CR_EINVAL; /* I-JSON has no NaN or Infinity */
  if (x == 0)         /* both +0 and -0 */
    return cr_buf_append(b, "0", 1);
  if (x < 0) {
    out[len++] = '-';
    x = -x;
  }
  shortest_digits(x, d, &k, &n);
  if (k <= n && n <= 21) {
    /* Integer: the digits, then n-k zeros. */
    memcpy(out + len, d, (size_t)k);
    len += k;
    for (int i = 0; i < n - k; i++)
      out[len++] = '0';
  } else if (0 < n && n <= 21) {
    memcpy(out + len, d, (size_t)n);
    len += n;
    out[len++] = '.';
    memcpy(out + len, d + n, (size_t)(k - n));
    len += k - n;
  } else if (-6 < n && n <= 0) {
    out[len++] = '0';
    out[len++] = '.';
    for (int i = 0; i < -n; i++)
      out[len++] = '0';
    memcpy(out + len, d, (size_t)k);
    len += k;
  } else {
    out[len++] = d[0];
    if (k > 1) {
      out[len++] = '.';
      memcpy(out + len, d + 1, (size_t)(k - 1));
      len += k - 1;
    }
    len +=
        snprintf(out + len, sizeof out - (size_t)len, "e%c%d", n - 1 >= 0 ? '+' : '-', abs(n - 1));
  }
  return cr_buf_append(b, out, (size_t)len);
}

/* ------------------------------------------------------------------ strings */

static int jcs_string(cr_buf *b, const char *s, size_t len) {
  static const char hex[] = "0123456789abcdef";
  int rc = cr_buf_append(b, "\"", 1);
  size_t run = 0; /* start of the bytes copied verbatim */
  for (size_t i = 0; rc == 0 && i < len; i++) {
    unsigned char c = (unsigned char)s[i];
    char esc[6];
    size_t elen = 2;
    if (c >= 0x20 && c != '"' && c != '\\')
      continue; /* everything else, non-ASCII included, is literal UTF-8 */
    esc[0] = '\\';
    switch (c) {
    case '"':
      esc[1] = '"';
      break;
    case '\\':
      esc[1] = '\\';
      break;
    case '\b':
      esc[1] = 'b';
      break;
    case '\f':
      esc[1] = 'f';
      break;
    case '\n':
      esc[1] = 'n';
      break;
    case '\r':
      esc[1] = 'r';
      break;
    case '\t':
      esc[1] = 't';
      break;
    default:
      esc[1] = 'u';
      esc[2] = '0';
      esc[3] = '0';
      esc[4] = hex[c >> 4];
      esc[5] = hex[c & 15];
      elen = 6;
      break;
    }
    if ((rc = cr_buf_append(b, s + run, i - run)) == 0)
      rc = cr_buf_append(b, esc, elen);
    run = i + 1;
  }
  if (rc == 0)
    rc = cr_buf_append(b, s + run, len - run);
  if (rc == 0)
    rc = cr_buf_append(b, "\"", 1);
  return rc;
}

/* -------------------------------------------------------------- key order */

typedef struct jcs_member {
  const char *key;
  size_t len;
  json_t *value;
} jcs_member;

/* Next code point of valid UTF-8 (jansson validated it); advances *i. */
static unsigned long utf8_next(const char *s, size_t len, size_t *i) {
  const unsigned char *u = (const unsigned char *)s;
  unsigned long c = u[*i];
  int extra = c >= 0xF0 ? 3 : c >= 0xE0 ? 2 : c >= 0xC0 ? 1 : 0;
  (*i)++;
  if (extra)
    c &= 0x3Fu >> extra;
  for (; extra > 0 && *i < len; extra--, (*i)++)
    c = (c << 6) | (u[*i] & 0x3Fu);
  return c;
}

/*
 * UTF-16 order differs from code point order in one place: a character
 * above U+FFFF is a surrogate pair starting at 0xD800..0xDBFF, so it sorts
 * *before* U+E000..U+FFFF. Lifting that block above every plane keeps the
 * rest of the order (surrogates themselves never occur in valid UTF-8).
 */
static unsigned long utf16_weight(unsigned long cp) {
  return cp >= 0xE000 && cp <= 0xFFFF ? cp + 0x200000 : cp;
}

static int member_cmp(const void *pa, const void *pb) {
  const jcs_member *a = pa, *b = pb;
  size_t i = 0, j = 0;
  while (i < a->len && j < b->len) {
    unsigned long wa = utf16_weight(utf8_next(a->key, a->len, &i));
    unsigned long wb = utf16_weight(utf8_next(b->key, b->len, &j));
    if (wa != wb)
      return wa < wb ? -1 : 1;
  }
  if (i < a->len)
    return 1;
  return j < b->len ? -1 : 0;
}

/* ------------------------------------------------------------------ values */

/* Recursion is bounded by jansson's parser depth limit (JSON_PARSER_MAX_DEPTH). */
static int jcs_value(cr_buf *b, json_t *v) {
  int rc = 0;
  jcs_member *m = NULL;
  switch (json_typeof(v)) {
  case JSON_NULL:
    return cr_buf_append(b, "null", 4);
  case JSON_TRUE:
    return cr_buf_append(b, "true", 4);
  case JSON_FALSE:
    return cr_buf_append(b, "false", 5);
  case JSON_INTEGER:
    /* JCS knows only doubles: 2^53 + 1 must print as 9007199254740992. */
    return jcs_number(b, (double)json_integer_value(v));
  case JSON_REAL:
    return jcs_number(b, json_real_value(v));
  case JSON_STRING:
    return jcs_string(b, json_string_value(v), json_string_length(v));
  case JSON_ARRAY:
    rc = cr_buf_append(b, "[", 1);
    for (size_t i = 0; rc == 0 && i < json_array_size(v); i++) {
      if (i > 0)
        rc = cr_buf_append(b, ",", 1);
      if (rc == 0)
        rc = jcs_value(b, json_array_get(v, i));
    }
    return rc ? rc : cr_buf_append(b, "]", 1);
  case JSON_OBJECT:
    break;
  default:
    return CR_EINTERNAL;
  }

  size_t n = json_object_size(v), i = 0;
  if (n > 0 && (m = calloc(n, sizeof *m)) == NULL) {
    rc = CR_ENOMEM;
    goto out;
  }
  for (void *it = json_object_iter(v); it != NULL && i < n;
       it = json_object_iter_next(v, it), i++) {
    m[i].key = json_object_iter_key(it);
    m[i].len = json_object_iter_key_len(it);
    m[i].value = json_object_iter_value(it);
  }
  n = i; /* only the members the iterator gave (never fewer than the size says) */
  if (n > 1)
    qsort(m, n, sizeof *m, member_cmp);
  rc = cr_buf_append(b, "{", 1);
  for (i = 0; rc == 0 && i < n; i++) {
    if (i > 0 && (rc = cr_buf_append(b, ",", 1)) != 0)
      break;
    if ((rc = jcs_string(b, m[i].key, m[i].len)) != 0)
      break;
    if ((rc = cr_buf_append(b, ":", 1)) != 0)
      break;
    rc = jcs_value(b, m[i].value);
  }
  if (rc == 0)
    rc = cr_buf_append(b, "}", 1);
out:
  free(m);
  return rc;
}

int cr_json_canonicalize(const char *json, size_t len, char **out, size_t *out_len, cr_error *err) {
  int rc = 0;
  json_error_t jerr;
  json_t *root = NULL;
  cr_buf b;
  cr_buf_init(&b);
  if (out == NULL || (json == NULL && len > 0)) {
    rc = cr_error_set(err, CR_EINVAL, "cr_json_canonicalize: no input or output");
    goto out;
  }
  *out = NULL;
  /*
   * INT_AS_REAL: JCS reads every number as an IEEE double, and strtod on
   * the original text is the exact way to get it (an integer that overflows
   * 64 bits is still a valid double). Duplicate names are not I-JSON, and
   * would leave the canonical form ambiguous.
   */
  root = json_loadb(
      json ? json : "", len,
      JSON_DECODE_ANY | JSON_REJECT_DUPLICATES | JSON_DECODE_INT_AS_REAL | JSON_ALLOW_NUL, &jerr);
  if (root == NULL) {
    rc = cr_error_set(err, CR_EINVAL, "invalid JSON at line %d, column %d: %s", jerr.line,
                      jerr.column, jerr.text);
    goto out;
  }
  if ((rc = jcs_value(&b, root)) != 0) {
    cr_error_set(err, rc, "cannot canonicalize JSON: %s",
                 rc == CR_EINVAL ? "a number is not finite" : cr_strerror(rc));
    goto out;
  }
  if ((rc = cr_buf_append(&b, "", 1)) != 0) {
    cr_error_set(err, rc, "cannot canonicalize JSON: out of memory");
    goto out;
  }
  *out = (char *)b.data;
  if (out_len)
    *out_len = b.len - 1;
  cr_buf_init(&b);
out:
  json_decref(root);
  cr_buf_free(&b);
  return rc;
}
