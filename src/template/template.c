/*
 * The collaboration template (design §6): loading, validation, lookups.
 *
 * The template is the contract both partners sign up to, so validation is
 * strict: every field is checked, an unknown field is an error (a typo such
 * as "min_cout" must not silently drop a threshold), and every problem is
 * reported at once with its JSON path, the value found and what was
 * expected, so a partner can fix a contract in one pass.
 */
#include "cleanroom/template.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <jansson.h>

/* Largest integer a double holds exactly; see CR_TEMPLATE_MAX_* in the header. */
#define MAX_SAFE_INT 9007199254740991LL

/* -------------------------------------------------------------- error list */

typedef struct errlist {
  char **msg;
  size_t n, cap;
  size_t dropped; /* found past CR_TEMPLATE_MAX_ERRORS */
  int oom;
} errlist;

static void el_add(errlist *el, const char *fmt, ...) CR_PRINTF(2, 3);
static void el_add(errlist *el, const char *fmt, ...) {
  char line[768];
  va_list ap;
  if (el->n >= CR_TEMPLATE_MAX_ERRORS) {
    el->dropped++;
    return;
  }
  va_start(ap, fmt);
  vsnprintf(line, sizeof line, fmt, ap);
  va_end(ap);
  if (el->n == el->cap) {
    size_t cap = el->cap ? 2 * el->cap : 8;
    char **p = realloc(el->msg, cap * sizeof *p);
    if (p == NULL) {
      el->oom = 1;
      return;
    }
    el->msg = p;
    el->cap = cap;
  }
  if ((el->msg[el->n] = strdup(line)) == NULL) {
    el->oom = 1;
    return;
  }
  el->n++;
}

static void el_free(errlist *el) {
  for (size_t i = 0; i < el->n; i++)
    free(el->msg[i]);
  free(el->msg);
  memset(el, 0, sizeof *el);
}

/* -------------------------------------------------------- validation state */

typedef struct vctx {
  errlist *el;
  char path[256]; /* JSON path of the value being checked, "$.a.b[2]" */
  size_t len;
} vctx;

static int is_ident(const char *s) {
  if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || *s == '_'))
    return 0;
  for (s++; *s; s++)
    if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') ||
          *s == '_'))
      return 0;
  return 1;
}

/*
 * Quotes s for a message: control characters escaped, at most `max` bytes of
 * it (cut on a UTF-8 boundary), "..." when shortened. Template text is not
 * secret, but it can be long or hostile, and messages go to terminals.
 */
static void quote(char *out, size_t cap, const char *s, size_t max) {
  size_t o = 0, i = 0;
  if (cap < 12) {
    if (cap)
      out[0] = '\0';
    return;
  }
  out[o++] = '"';
  /* Room for the widest escape (6) plus `..."` and the NUL (5). */
  for (; i < max && s[i] != '\0' && o + 11 <= cap; i++) {
    unsigned char c = (unsigned char)s[i];
    if (c == '"' || c == '\\') {
      out[o++] = '\\';
      out[o++] = (char)c;
    } else if (c < 0x20 || c == 0x7f) {
      o += (size_t)snprintf(out + o, cap - o, "\\u%04x", c);
    } else if (c == 0xc2 && i + 1 < max && (unsigned char)s[i + 1] >= 0x80 &&
               (unsigned char)s[i + 1] <= 0x9f) {
      /* A C1 control (U+0080-U+009F), which some terminals obey. */
      o += (size_t)snprintf(out + o, cap - o, "\\u%04x", (unsigned char)s[++i]);
    } else {
      out[o++] = (char)c;
    }
  }
  if (s[i] != '\0') {
    /* Do not leave half a UTF-8 sequence before the ellipsis. */
    while (o > 1 && ((unsigned char)out[o - 1] & 0xC0) == 0x80)
      o--;
    if (o > 1 && ((unsigned char)out[o - 1] & 0xC0) == 0xC0)
      o--;
    memcpy(out + o, "...", 3);
    o += 3;
  }
  out[o++] = '"';
  out[o] = '\0';
}

static size_t path_key(vctx *v, const char *key) {
  size_t mark = v->len;
  size_t room = sizeof v->path - v->len;
  int w;
  if (is_ident(key) && strlen(key) <= 48) {
    w = snprintf(v->path + v->len, room, ".%s", key);
  } else {
    char q[128];
    quote(q, sizeof q, key, 48);
    w = snprintf(v->path + v->len, room, "[%s]", q);
  }
  v->len = (w < 0 || (size_t)w >= room) ? sizeof v->path - 1 : v->len + (size_t)w;
  return mark;
}

static size_t path_index(vctx *v, size_t i) {
  size_t mark = v->len;
  size_t room = sizeof v->path - v->len;
  int w = snprintf(v->path + v->len, room, "[%zu]", i);
  v->len = (w < 0 || (size_t)w >= room) ? sizeof v->path - 1 : v->len + (size_t)w;
  return mark;
}

static void path_pop(vctx *v, size_t mark) {
  v->len = mark;
  v->path[mark] = '\0';
}

/* Short description of a JSON value for "found ..." */
static void describe(const json_t *j, char *out, size_t cap) {
  switch (json_typeof(j)) {
  case JSON_OBJECT:
    snprintf(out, cap, "an object");
    break;
  case JSON_ARRAY:
    snprintf(out, cap, "an array");
    break;
  case JSON_STRING:
    quote(out, cap, json_string_value(j), 40);
    break;
  case JSON_INTEGER:
    snprintf(out, cap, "%lld", (long long)json_integer_value(j));
    break;
  case JSON_REAL: {
    /* "%g" alone would print 100.0 as "100" next to "expected an integer". */
    int w = snprintf(out, cap, "%g", json_real_value(j));
    if (w > 0 && (size_t)w + 2 < cap && strpbrk(out, ".en") == NULL)
      strcat(out, ".0");
    break;
  }
  case JSON_TRUE:
    snprintf(out, cap, "true");
    break;
  case JSON_FALSE:
    snprintf(out, cap, "false");
    break;
  default:
    snprintf(out, cap, "null");
    break;
  }
}

/* "<path>: found <j>, expected <...>", or "missing" when j is NULL. */
static void verr(vctx *v, const json_t *j, const char *fmt, ...) CR_PRINTF(3, 4);
static void verr(vctx *v, const json_t *j, const char *fmt, ...) {
  char expected[512], found[128];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(expected, sizeof expected, fmt, ap);
  va_end(ap);
  if (j == NULL) {
    el_add(v->el, "%s: missing, expected %s", v->path, expected);
    return;
  }
  describe(j, found, sizeof found);
  el_add(v->el, "%s: found %s, expected %s", v->path, found, expected);
}

/* ---------------------------------------------------------- shape checkers */

/* Reports members of obj not named in allowed[]. */
static void check_fields(vctx *v, json_t *obj, const char *const *allowed, size_t n) {
  const char *key;
  json_t *val;
  json_object_foreach(obj, key, val) {
    size_t i = 0;
    while (i < n && strcmp(key, allowed[i]) != 0)
      i++;
    if (i < n)
      continue;
    char list[384];
    size_t o = 0;
    list[0] = '\0';
    for (i = 0; i < n && o < sizeof list; i++) {
      int w = snprintf(list + o, sizeof list - o, "%s%s", i ? ", " : "", allowed[i]);
      if (w < 0)
        break;
      o += (size_t)w;
    }
    size_t mark = path_key(v, key);
    el_add(v->el, "%s: unknown field, expected one of: %s", v->path, list);
    path_pop(v, mark);
  }
}

static int want_object(vctx *v, json_t *j, const char *what) {
  if (json_is_object(j))
    return 1;
  verr(v, j, "%s", what);
  return 0;
}

/*
 * Whether s holds a control character: C0 (but tab, LF, VT, FF and CR when
 * `allow_ws`), DEL, or C1 (U+0080-U+009F). Names, organisations and column
 * names are printed to terminals and logs, where an escape sequence from
 * the partner's draft would rewrite what the operator sees.
 */
static int has_control(const char *s, int allow_ws) {
  for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
    if (allow_ws && (*p == '\t' || *p == '\n' || *p == '\v' || *p == '\f' || *p == '\r'))
      continue;
    if (*p < 0x20 || *p == 0x7f || (*p == 0xc2 && p[1] >= 0x80 && p[1] <= 0x9f))
      return 1;
  }
  return 0;
}

/* A copy of a non-empty string without control characters (whitespace ones
 * allowed with `allow_ws`), or NULL (reported, or el->oom). */
static char *want_string(vctx *v, json_t *j, int allow_ws, const char *what) {
  char *s;
  if (!json_is_string(j) || json_string_length(j) == 0) {
    verr(v, j, "%s", what);
    return NULL;
  }
  if (has_control(json_string_value(j), allow_ws)) {
    verr(v, j, "%s without control characters", what);
    return NULL;
  }
  if ((s = strdup(json_string_value(j))) == NULL)
    v->el->oom = 1;
  return s;
}

static int want_int(vctx *v, json_t *j, long long min, uint64_t *out) {
  if (!json_is_integer(j) || json_integer_value(j) < min || json_integer_value(j) > MAX_SAFE_INT) {
    if (json_is_integer(j) && json_integer_value(j) > MAX_SAFE_INT)
      verr(v, j, "an integer <= %lld", MAX_SAFE_INT);
    else
      verr(v, j, "an integer >= %lld", min);
    return 0;
  }
  *out = (uint64_t)json_integer_value(j);
  return 1;
}

/*
 * An array of distinct non-empty strings, copied into *out (a NULL-terminated
 * allocation even when empty). Returns 1 if valid.
 */
static int want_strv(vctx *v, json_t *j, int nonempty, size_t max, const char *what, char ***out,
                     size_t *nout) {
  int ok = 1;
  size_t n;
  char **s = NULL;
  *out = NULL;
  *nout = 0;
  if (!json_is_array(j) || (nonempty && json_array_size(j) == 0)) {
    verr(v, j, "%s %s", nonempty ? "a non-empty array of" : "an array of", what);
    return 0;
  }
  n = json_array_size(j);
  if (n > max) {
    verr(v, j, "at most %zu entries", max);
    return 0;
  }
  for (size_t i = 0; i < n; i++) {
    json_t *e = json_array_get(j, i);
    size_t mark = path_index(v, i);
    if (!json_is_string(e) || json_string_length(e) == 0) {
      verr(v, e, "a non-empty string");
      ok = 0;
    } else if (has_control(json_string_value(e), 0)) {
      verr(v, e, "a column name without control characters");
      ok = 0;
    } else {
      /* Column names match a header without regard to case: two that
       * differ only in case name one column. */
      for (size_t k = 0; k < i; k++) {
        json_t *p = json_array_get(j, k);
        if (json_is_string(p) && strcasecmp(json_string_value(p), json_string_value(e)) == 0) {
          verr(v, e,
               "a value not already listed at [%zu] (column names are compared without "
               "regard to case)",
               k);
          ok = 0;
          break;
        }
      }
    }
    path_pop(v, mark);
  }
  if (!ok)
    return 0;
  if ((s = calloc(n + 1, sizeof *s)) == NULL)
    goto oom;
  for (size_t i = 0; i < n; i++)
    if ((s[i] = strdup(json_string_value(json_array_get(j, i)))) == NULL)
      goto oom;
  *out = s;
  *nout = n;
  return 1;
oom:
  cr_strv_free(s, n);
  v->el->oom = 1;
  return 0;
}

/* A non-empty array of distinct role names, as a CR_ROLE_BIT mask. */
static int want_roles(vctx *v, json_t *j, unsigned *mask) {
  int ok = 1;
  *mask = 0;
  if (!json_is_array(j) || json_array_size(j) == 0) {
    verr(v, j, "a non-empty array of \"provider\", \"consumer\"");
    return 0;
  }
  for (size_t i = 0; i < json_array_size(j); i++) {
    json_t *e = json_array_get(j, i);
    size_t mark = path_index(v, i);
    cr_role r;
    if (!json_is_string(e) || cr_role_parse(json_string_value(e), &r) != 0) {
      verr(v, e, "\"provider\" or \"consumer\"");
      ok = 0;
    } else if (*mask & CR_ROLE_BIT(r)) {
      verr(v, e, "each role at most once");
      ok = 0;
    } else {
      *mask |= CR_ROLE_BIT(r);
    }
    path_pop(v, mark);
  }
  return ok;
}

/* {"provider": "...", "consumer": "..."}, at least one role, non-empty text. */
static int want_role_map(vctx *v, json_t *j, int allow_ws, const char *what,
                         char *out[CR_ROLE_COUNT]) {
  static const char *const roles[] = {"provider", "consumer"};
  int ok = 1;
  if (!json_is_object(j) || json_object_size(j) == 0) {
    verr(v, j, "an object mapping \"provider\" and/or \"consumer\" to %s", what);
    return 0;
  }
  check_fields(v, j, roles, 2);
  for (int r = 0; r < CR_ROLE_COUNT; r++) {
    json_t *e = json_object_get(j, roles[r]);
    if (e == NULL)
      continue;
    size_t mark = path_key(v, roles[r]);
    if ((out[r] = want_string(v, e, allow_ws, what)) == NULL)
      ok = 0;
    path_pop(v, mark);
  }
  return ok && json_object_size(j) <= 2;
}

static int in_strv(char *const *s, size_t n, const char *x) {
  for (size_t i = 0; i < n; i++)
    if (strcmp(s[i], x) == 0)
      return 1;
  return 0;
}

/* ------------------------------------------------------------- sections */

/* "host:port" with a port 1..65535; an IPv6 host is written "[::1]:7443". */
static int valid_address(const char *a) {
  const char *colon = strrchr(a, ':');
  size_t hostlen;
  unsigned long port = 0;
  if (colon == NULL || colon == a)
    return 0;
  hostlen = (size_t)(colon - a);
  if (a[0] == '[') {
    if (hostlen < 3 || a[hostlen - 1] != ']' || memchr(a + 1, ']', hostlen - 2) != NULL)
      return 0;
  } else if (strpbrk(a, "[]") != NULL || memchr(a, ':', hostlen) != NULL) {
    return 0; /* a bare IPv6 address is ambiguous */
  }
  for (const char *h = a; h < colon; h++)
    if ((unsigned char)*h <= ' ' || *h == '/' || *h == '@')
      return 0;
  const char *p = colon + 1;
  if (*p < '1' || *p > '9' || strlen(p) > 5) /* no sign, no leading zero */
    return 0;
  for (; *p; p++) {
    if (*p < '0' || *p > '9')
      return 0;
    port = port * 10 + (unsigned long)(*p - '0');
  }
  return port >= 1 && port <= 65535;
}

static void check_party(vctx *v, json_t *j, cr_template_party *p) {
  static const char *const fields[] = {"org", "cert_sha256", "address"};
  json_t *e;
  size_t mark;
  if (!want_object(v, j, "an object with org, cert_sha256 and optional address"))
    return;
  check_fields(v, j, fields, 3);

  mark = path_key(v, "org");
  p->org = want_string(v, json_object_get(j, "org"), 0, "a non-empty string");
  path_pop(v, mark);

  mark = path_key(v, "cert_sha256");
  e = json_object_get(j, "cert_sha256");
  if (!json_is_string(e) ||
      cr_hex_decode(p->cert_sha256, sizeof p->cert_sha256, json_string_value(e)) != 0)
    verr(v, e, "the certificate's SHA-256 as 64 hex digits");
  path_pop(v, mark);

  if ((e = json_object_get(j, "address")) != NULL) {
    mark = path_key(v, "address");
    if (!json_is_string(e) || !valid_address(json_string_value(e)))
      verr(v, e, "\"host:port\" with a port from 1 to 65535");
    else if ((p->address = strdup(json_string_value(e))) == NULL)
      v->el->oom = 1;
    path_pop(v, mark);
  }
}

static int parse_normalizer(const char *s, cr_normalizer *out) {
  for (int n = CR_NORM_EMAIL; n <= CR_NORM_HASHED_SHA256; n++)
    if (strcmp(s, cr_normalizer_name((cr_normalizer)n)) == 0) {
      *out = (cr_normalizer)n;
      return 0;
    }
  return CR_EINVAL;
}

/* match_key.columns given per party: {"provider": [...], "consumer": [...]},
 * both present, the same number of names. */
static int check_party_columns(vctx *v, json_t *j, cr_match_key *mk) {
  static const char *const roles[] = {"provider", "consumer"};
  int ok = 1;
  size_t n[CR_ROLE_COUNT] = {0, 0};
  check_fields(v, j, roles, 2);
  if (json_object_size(j) > 2)
    ok = 0;
  for (int r = 0; r < CR_ROLE_COUNT; r++) {
    size_t mark = path_key(v, roles[r]);
    json_t *e = json_object_get(j, roles[r]);
    if (e == NULL) {
      verr(v, NULL, "the %s's key columns (a non-empty array of column names)", roles[r]);
      ok = 0;
    } else if (!want_strv(v, e, 1, CR_TEMPLATE_MAX_COLUMNS, "distinct column names",
                          &mk->party_columns[r], &n[r])) {
      ok = 0;
    }
    path_pop(v, mark);
  }
  if (ok && n[CR_ROLE_PROVIDER] != n[CR_ROLE_CONSUMER]) {
    size_t mark = path_key(v, "consumer");
    verr(v, json_object_get(j, "consumer"),
         "%zu column name%s, as many as the provider's (the i-th column of each party holds "
         "the same part of the key)",
         n[CR_ROLE_PROVIDER], n[CR_ROLE_PROVIDER] == 1 ? "" : "s");
    path_pop(v, mark);
    ok = 0;
  }
  mk->ncolumns = ok ? n[CR_ROLE_PROVIDER] : 0;
  return ok;
}

const char *const *cr_match_key_columns(const cr_match_key *mk, cr_role r) {
  if (mk == NULL || (r != CR_ROLE_PROVIDER && r != CR_ROLE_CONSUMER))
    return NULL;
  if (mk->party_columns[r] != NULL)
    return (const char *const *)mk->party_columns[r];
  return (const char *const *)mk->columns;
}

const cr_normalizer *cr_match_key_normalizers(const cr_match_key *mk, cr_role r, size_t *n) {
  if (mk == NULL || (r != CR_ROLE_PROVIDER && r != CR_ROLE_CONSUMER)) {
    if (n != NULL)
      *n = 0;
    return NULL;
  }
  if (mk->party_normalize[r] != NULL) {
    if (n != NULL)
      *n = mk->nparty_normalize[r];
    return mk->party_normalize[r];
  }
  if (n != NULL)
    *n = mk->nnormalize;
  return mk->normalize;
}

/* One normalizer chain (a non-empty array of names) into *out; 1 if valid,
 * *phone set when it lists "phone". */
static int want_normalizers(vctx *v, json_t *e, cr_normalizer **out, size_t *nout, int *phone) {
  int ok = 1;
  if (!json_is_array(e) || json_array_size(e) == 0) {
    verr(v, e,
         "a non-empty array of \"email\", \"phone\", \"text\", \"sha256\", "
         "\"hashed_sha256\" (or an object with a list for \"provider\" and one for "
         "\"consumer\")");
    return 0;
  }
  if (json_array_size(e) > CR_TEMPLATE_MAX_NORMALIZE) {
    verr(v, e, "at most %d normalizers", CR_TEMPLATE_MAX_NORMALIZE);
    return 0;
  }
  if ((*out = calloc(json_array_size(e), sizeof **out)) == NULL) {
    v->el->oom = 1;
    return 0;
  }
  for (size_t i = 0; i < json_array_size(e); i++) {
    json_t *x = json_array_get(e, i);
    size_t m2 = path_index(v, i);
    if (!json_is_string(x) || parse_normalizer(json_string_value(x), &(*out)[i]) != 0) {
      verr(v, x, "one of \"email\", \"phone\", \"text\", \"sha256\", \"hashed_sha256\"");
      ok = 0;
    } else if ((*out)[i] == CR_NORM_PHONE) {
      *phone = 1;
    }
    path_pop(v, m2);
  }
  *nout = json_array_size(e);
  return ok;
}

/* Returns 1 if the match key is valid (its columns then feed later checks). */
static int check_match_key(vctx *v, json_t *j, cr_match_key *mk) {
  static const char *const fields[] = {"name", "columns", "normalize", "default_country_code"};
  int ok = 1, phone = 0, norm_ok = 0;
  json_t *e;
  size_t mark;
  if (!want_object(v, j, "an object with name, columns and normalize"))
    return 0;
  check_fields(v, j, fields, 4);

  mark = path_key(v, "name");
  if ((mk->name = want_string(v, json_object_get(j, "name"), 0, "a non-empty string")) == NULL)
    ok = 0;
  path_pop(v, mark);

  mark = path_key(v, "columns");
  e = json_object_get(j, "columns");
  if (json_is_object(e)) {
    if (!check_party_columns(v, e, mk))
      ok = 0;
  } else if (!want_strv(v, e, 1, CR_TEMPLATE_MAX_COLUMNS,
                        "distinct column names (or an object with a list for \"provider\" "
                        "and one for \"consumer\")",
                        &mk->columns, &mk->ncolumns)) {
    ok = 0;
  }
  path_pop(v, mark);

  mark = path_key(v, "normalize");
  e = json_object_get(j, "normalize");
  if (json_is_object(e)) {
    /* Per party: each side's chain to the same value. */
    static const char *const roles[] = {"provider", "consumer"};
    check_fields(v, e, roles, 2);
    norm_ok = json_object_size(e) <= 2;
    for (int r = 0; r < CR_ROLE_COUNT; r++) {
      size_t m2 = path_key(v, roles[r]);
      json_t *x = json_object_get(e, roles[r]);
      if (x == NULL) {
        verr(v, NULL, "the %s's normalizers (a non-empty array)", roles[r]);
        norm_ok = 0;
      } else if (!want_normalizers(v, x, &mk->party_normalize[r], &mk->nparty_normalize[r],
                                   &phone)) {
        norm_ok = 0;
      }
      path_pop(v, m2);
    }
    if (!norm_ok)
      ok = 0;
  } else if (!want_normalizers(v, e, &mk->normalize, &mk->nnormalize, &phone)) {
    ok = 0;
  } else {
    norm_ok = 1;
  }
  path_pop(v, mark);

  if ((e = json_object_get(j, "default_country_code")) != NULL) {
    mark = path_key(v, "default_country_code");
    const char *s = json_is_string(e) ? json_string_value(e) : "";
    size_t n = strlen(s);
    int digits = n >= 1 && n <= 3 && s[0] >= '1' && s[0] <= '9' && strspn(s, "0123456789") == n;
    if (!digits) {
      verr(v, e, "a country calling code of 1 to 3 digits, such as \"44\"");
      ok = 0;
    } else if (!phone && norm_ok) {
      verr(v, e, "no default_country_code unless normalize lists \"phone\"");
      ok = 0;
    } else if ((mk->default_country_code = strdup(s)) == NULL) {
      v->el->oom = 1;
    }
    path_pop(v, mark);
  }
  return ok;
}

static int valid_name(const char *s, size_t len);

static int valid_key_name(const char *s) { return valid_name(s, strlen(s)); }

/* "match_keys": a non-empty array of match keys (check_match_key each) with
 * distinct names; returns 1 if valid. The names enter the hash of each key
 * value (an e-mail never matches a phone) and the results (per-key counts,
 * members' matched_on), so they are short names, not free text. */
static int check_match_keys(vctx *v, json_t *j, cr_template *t) {
  int ok = 1;
  if (!json_is_array(j) || json_array_size(j) == 0) {
    verr(v, j, "a non-empty array of match keys, each an object with name, columns and normalize");
    return 0;
  }
  if (json_array_size(j) > CR_TEMPLATE_MAX_KEYS) {
    verr(v, j, "at most %d match keys", CR_TEMPLATE_MAX_KEYS);
    return 0;
  }
  for (size_t i = 0; i < json_array_size(j); i++) {
    json_t *e = json_array_get(j, i);
    size_t mark = path_index(v, i);
    t->nmatch_keys = i + 1; /* freed up to here whatever happens */
    if (!check_match_key(v, e, &t->match_keys[i]))
      ok = 0;
    const char *name = t->match_keys[i].name;
    if (name != NULL) {
      size_t m2 = path_key(v, "name");
      json_t *n = json_object_get(e, "name");
      if (!valid_key_name(name)) {
        verr(v, n, "1 to %d letters, digits, '_', '-' or '.'", CR_TEMPLATE_MAX_NAME);
        ok = 0;
      } else {
        for (size_t k = 0; k < i; k++)
          if (t->match_keys[k].name != NULL && strcmp(t->match_keys[k].name, name) == 0) {
            verr(v, n, "a name not already used by $.match_keys[%zu]", k);
            ok = 0;
            break;
          }
      }
      path_pop(v, m2);
    }
    path_pop(v, mark);
  }
  return ok;
}

/* data.<role>: returns 1 if valid (absent is valid: no extra columns). */
static int check_data(vctx *v, json_t *data, cr_template *t) {
  static const char *const roles[] = {"provider", "consumer"};
  static const char *const fields[] = {"required_columns"};
  int ok = 1;
  if (data == NULL)
    return 1;
  if (!want_object(v, data, "an object with provider and/or consumer"))
    return 0;
  check_fields(v, data, roles, 2);
  for (int r = 0; r < CR_ROLE_COUNT; r++) {
    json_t *d = json_object_get(data, roles[r]);
    if (d == NULL)
      continue;
    size_t mark = path_key(v, roles[r]);
    if (!want_object(v, d, "an object with required_columns")) {
      ok = 0;
    } else {
      check_fields(v, d, fields, 1);
      size_t m2 = path_key(v, "required_columns");
      if (!want_strv(v, json_object_get(d, "required_columns"), 0, CR_TEMPLATE_MAX_COLUMNS,
                     "distinct column names", &t->required_columns[r], &t->nrequired_columns[r]))
        ok = 0;
      path_pop(v, m2);
    }
    path_pop(v, mark);
  }
  return ok && json_object_size(data) <= 2;
}

/* Appends the match key columns a role did not list: they are always
 * required (every key's, in key order). */
static int add_key_columns(cr_template *t) {
  size_t all = 0;
  for (size_t k = 0; k < cr_template_nkeys(t); k++)
    all += t->match_keys[k].ncolumns;
  for (int r = 0; r < CR_ROLE_COUNT; r++) {
    size_t n = t->nrequired_columns[r];
    char **s = realloc(t->required_columns[r], (n + all + 1) * sizeof *s);
    if (s == NULL)
      return CR_ENOMEM;
    t->required_columns[r] = s;
    for (size_t k = 0; k < cr_template_nkeys(t); k++) {
      const cr_match_key *mk = &t->match_keys[k];
      const char *const *key = cr_match_key_columns(mk, (cr_role)r);
      for (size_t i = 0; i < mk->ncolumns; i++) {
        if (in_strv(s, n, key[i]))
          continue;
        if ((s[n] = strdup(key[i])) == NULL)
          return CR_ENOMEM;
        t->nrequired_columns[r] = ++n;
      }
    }
    s[n] = NULL;
  }
  return 0;
}

static int valid_name(const char *s, size_t len) {
  if (len == 0 || len > CR_TEMPLATE_MAX_NAME)
    return 0;
  for (size_t i = 0; i < len; i++) {
    char c = s[i];
    if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
          c == '-' || c == '.'))
      return 0;
  }
  return 1;
}

static int parse_param_type(const char *s, cr_param_type *out) {
  static const char *const names[] = {"string", "string_list", "integer", "number"};
  for (int i = 0; i < 4; i++)
    if (strcmp(s, names[i]) == 0) {
      *out = (cr_param_type)(CR_PARAM_STRING + i);
      return 0;
    }
  return CR_EINVAL;
}

static void check_params(vctx *v, json_t *j, cr_query *q) {
  const char *key;
  json_t *val;
  size_t i = 0;
  if (!json_is_object(j)) {
    verr(v, j,
         "an object mapping parameter names to \"string\", \"string_list\", "
         "\"integer\" or \"number\"");
    return;
  }
  if (json_object_size(j) > CR_TEMPLATE_MAX_PARAMS) {
    verr(v, j, "at most %d parameters", CR_TEMPLATE_MAX_PARAMS);
    return;
  }
  if (json_object_size(j) > 0 &&
      (q->params = calloc(json_object_size(j), sizeof *q->params)) == NULL) {
    v->el->oom = 1;
    return;
  }
  json_object_foreach(j, key, val) {
    size_t mark = path_key(v, key);
    cr_param_type type;
    if (!is_ident(key) || strlen(key) > CR_TEMPLATE_MAX_NAME) {
      el_add(v->el,
             "%s: found a parameter name that is not an identifier, expected letters, "
             "digits and _ (not starting with a digit), at most %d",
             v->path, CR_TEMPLATE_MAX_NAME);
    } else if (!json_is_string(val) || parse_param_type(json_string_value(val), &type) != 0) {
      verr(v, val, "\"string\", \"string_list\", \"integer\" or \"number\"");
    } else if ((q->params[i].name = strdup(key)) == NULL) {
      v->el->oom = 1;
    } else {
      q->params[i++].type = type;
    }
    path_pop(v, mark);
  }
  q->nparams = i;
}

/* ---------------------------------------------------- differential privacy */

enum { DEC_OK = 0, DEC_NOT_NUMBER, DEC_DECIMALS, DEC_RANGE };

/*
 * A decimal text ("0.5", "1e-06", "12") as fixed point with `digits`
 * decimal places: DEC_DECIMALS when it has more (non-zero) places,
 * DEC_RANGE above max, DEC_NOT_NUMBER for a sign or anything else.
 */
static int parse_decimal(const char *s, unsigned digits, uint64_t max, uint64_t *out) {
  uint64_t mant = 0;
  long frac = 0, exp10 = 0;
  int seen_dot = 0, ndig = 0;
  for (; *s; s++) {
    if (*s >= '0' && *s <= '9') {
      if (mant > (UINT64_MAX - 9) / 10)
        return DEC_RANGE;
      mant = mant * 10 + (uint64_t)(*s - '0');
      frac += seen_dot;
      ndig++;
    } else if (*s == '.' && !seen_dot) {
      seen_dot = 1;
    } else {
      break;
    }
  }
  if (ndig == 0)
    return DEC_NOT_NUMBER;
  if (*s == 'e' || *s == 'E') {
    char *end = NULL;
    errno = 0;
    exp10 = strtol(s + 1, &end, 10);
    if (end == s + 1 || errno != 0 || exp10 > 400 || exp10 < -400)
      return DEC_NOT_NUMBER;
    s = end;
  }
  if (*s != '\0')
    return DEC_NOT_NUMBER;
  long shift = exp10 - frac + (long)digits;
  for (; shift < 0; shift++) {
    if (mant % 10 != 0)
      return DEC_DECIMALS;
    mant /= 10;
  }
  for (; shift > 0 && mant != 0; shift--) {
    if (mant > max / 10)
      return DEC_RANGE;
    mant *= 10;
  }
  if (mant > max)
    return DEC_RANGE;
  *out = mant;
  return DEC_OK;
}

/*
 * A JSON number as exact fixed point (parse_decimal). A real is read as the
 * shortest decimal that gives back the same double: what the author wrote
 * (0.1), not the binary value's expansion (0.1000000000000000055...).
 */
static int json_fixed(const json_t *j, unsigned digits, uint64_t max, uint64_t *out) {
  char text[48];
  if (json_is_integer(j)) {
    if (json_integer_value(j) < 0)
      return DEC_NOT_NUMBER;
    snprintf(text, sizeof text, "%lld", (long long)json_integer_value(j));
  } else if (json_is_real(j)) {
    double x = json_real_value(j);
    if (!(x >= 0.0) || !isfinite(x))
      return DEC_NOT_NUMBER;
    for (int prec = 1; prec <= 17; prec++) {
      snprintf(text, sizeof text, "%.*g", prec, x);
      if (strtod(text, NULL) == x)
        break;
    }
  } else {
    return DEC_NOT_NUMBER;
  }
  return parse_decimal(text, digits, max, out);
}

/* A positive fixed-point number for a privacy field, or 0 (reported). */
static uint64_t want_fixed(vctx *v, json_t *j, unsigned digits, uint64_t max, int below_max,
                           const char *unit_words) {
  uint64_t x = 0;
  int rc = json_fixed(j, digits, max, &x);
  if (rc == DEC_OK && x > 0 && (!below_max || x < max))
    return x;
  char lim[64];
  uint64_t unit = 1;
  for (unsigned i = 0; i < digits; i++)
    unit *= 10;
  if (max % unit == 0)
    snprintf(lim, sizeof lim, "%llu", (unsigned long long)(max / unit));
  else
    snprintf(lim, sizeof lim, "%.*f", (int)digits, (double)max / (double)unit);
  verr(v, j, "a number > 0 and %s %s with at most %u decimal places%s", below_max ? "<" : "<=", lim,
       digits, unit_words);
  return 0;
}

/*
 * The discrete Gaussian with sigma is (1 / (2 sigma^2))-zCDP for a count
 * (Canonne, Kamath, Steinke 2020, Theorem 4), and rho-zCDP implies
 * (rho + 2 sqrt(rho ln(1/delta)), delta)-DP (Bun, Steinke 2016, Prop. 1.3).
 * Floating point only chooses parameters, never samples; results are
 * rounded to the safe side (epsilon up, sigma up) and checked back.
 */
static double gaussian_eps(double sigma, double delta) {
  double rho = 1.0 / (2.0 * sigma * sigma);
  return rho + 2.0 * sqrt(rho * log(1.0 / delta));
}

/* Millionths, rounded up; 0 when above CR_DP_MAX_EPSILON. */
static uint64_t gaussian_epsilon_of(uint64_t sigma, uint64_t delta) {
  double e = gaussian_eps((double)sigma / (double)CR_DP_SIGMA_UNIT,
                          (double)delta / (double)CR_DP_DELTA_UNIT);
  double units = ceil(e * (double)CR_DP_EPSILON_UNIT * (1.0 + 1e-12));
  if (!(units <= (double)CR_DP_MAX_EPSILON))
    return 0;
  return units < 1.0 ? 1 : (uint64_t)units;
}

/* Thousandths: the smallest sigma on the grid whose epsilon at delta is at
 * most epsilon; 0 when above CR_DP_MAX_SIGMA. */
static uint64_t gaussian_sigma_of(uint64_t epsilon, uint64_t delta) {
  double e = (double)epsilon / (double)CR_DP_EPSILON_UNIT;
  double d = (double)delta / (double)CR_DP_DELTA_UNIT, l = log(1.0 / d);
  double root = sqrt(l + e) - sqrt(l); /* sqrt(rho) */
  if (!(root > 0.0))
    return 0;
  double units = ceil((double)CR_DP_SIGMA_UNIT / (sqrt(2.0) * root) * (1.0 + 1e-12));
  if (!(units <= (double)CR_DP_MAX_SIGMA))
    return 0;
  uint64_t s = units < 1.0 ? 1 : (uint64_t)units;
  while (s <= CR_DP_MAX_SIGMA && gaussian_eps((double)s / (double)CR_DP_SIGMA_UNIT, d) > e)
    s++;
  return s <= CR_DP_MAX_SIGMA ? s : 0;
}

const char *cr_dp_decimal(char *out, size_t cap, uint64_t value, uint64_t unit) {
  char frac[24];
  unsigned digits = 0;
  for (uint64_t u = unit; u > 1; u /= 10)
    digits++;
  uint64_t whole = unit ? value / unit : value, rest = unit ? value % unit : 0;
  if (rest == 0 || digits == 0 || digits >= sizeof frac) {
    snprintf(out, cap, "%llu", (unsigned long long)whole);
    return out;
  }
  snprintf(frac, sizeof frac, "%0*llu", (int)digits, (unsigned long long)rest);
  for (size_t n = strlen(frac); n > 1 && frac[n - 1] == '0'; n--)
    frac[n - 1] = '\0';
  snprintf(out, cap, "%llu.%s", (unsigned long long)whole, frac);
  return out;
}

const char *cr_noise_mechanism_name(cr_noise_mechanism m) {
  switch (m) {
  case CR_NOISE_DISCRETE_LAPLACE:
    return "discrete_laplace";
  case CR_NOISE_DISCRETE_GAUSSIAN:
    return "discrete_gaussian";
  case CR_NOISE_NONE:
    break;
  }
  return "none";
}

/* queries.<name>.noise */
static void check_noise(vctx *v, json_t *j, cr_query *q, int kind_ok) {
  static const char *const fields[] = {"mechanism", "epsilon", "sigma", "delta"};
  cr_noise *n = &q->noise;
  json_t *e, *eps, *sigma, *delta;
  size_t mark;
  if (kind_ok && q->kind == CR_QUERY_MEMBERS) {
    verr(v, j, "no noise for kind \"members\" (it releases records, not counts)");
    return;
  }
  if (!want_object(v, j,
                   "an object with mechanism (\"discrete_laplace\" or \"discrete_gaussian\") "
                   "and epsilon, or sigma or epsilon with delta"))
    return;
  check_fields(v, j, fields, 4);
  mark = path_key(v, "mechanism");
  e = json_object_get(j, "mechanism");
  if (json_is_string(e) && strcmp(json_string_value(e), "discrete_laplace") == 0)
    n->mechanism = CR_NOISE_DISCRETE_LAPLACE;
  else if (json_is_string(e) && strcmp(json_string_value(e), "discrete_gaussian") == 0)
    n->mechanism = CR_NOISE_DISCRETE_GAUSSIAN;
  else
    verr(v, e, "\"discrete_laplace\" or \"discrete_gaussian\"");
  path_pop(v, mark);
  eps = json_object_get(j, "epsilon");
  sigma = json_object_get(j, "sigma");
  delta = json_object_get(j, "delta");
  if (n->mechanism == CR_NOISE_NONE)
    return;
  if (n->mechanism == CR_NOISE_DISCRETE_LAPLACE) {
    mark = path_key(v, "epsilon");
    n->epsilon = want_fixed(v, eps, 6, CR_DP_MAX_EPSILON, 0, "");
    path_pop(v, mark);
    if (sigma != NULL) {
      mark = path_key(v, "sigma");
      verr(v, sigma, "no sigma for discrete_laplace (its scale is 1/epsilon)");
      path_pop(v, mark);
    }
    if (delta != NULL) {
      mark = path_key(v, "delta");
      verr(v, delta, "no delta for discrete_laplace (it is pure epsilon-DP)");
      path_pop(v, mark);
    }
    if (n->epsilon == 0)
      n->mechanism = CR_NOISE_NONE;
    return;
  }
  /* Gaussian: delta, and exactly one of epsilon and sigma. */
  mark = path_key(v, "delta");
  n->delta = want_fixed(v, delta, 15, CR_DP_DELTA_UNIT, 1,
                        " (discrete_gaussian spends delta as well as epsilon)");
  path_pop(v, mark);
  if ((eps == NULL) == (sigma == NULL)) {
    mark = path_key(v, eps != NULL ? "sigma" : "epsilon");
    if (eps != NULL)
      verr(v, sigma != NULL ? sigma : eps,
           "either epsilon or sigma for discrete_gaussian, not both");
    else
      verr(v, NULL, "epsilon or sigma for discrete_gaussian");
    path_pop(v, mark);
  } else if (sigma != NULL) {
    mark = path_key(v, "sigma");
    n->sigma = want_fixed(v, sigma, 3, CR_DP_MAX_SIGMA, 0, "");
    n->sigma_given = true;
    if (n->sigma && n->delta && (n->epsilon = gaussian_epsilon_of(n->sigma, n->delta)) == 0)
      verr(v, sigma, "a larger sigma: this one spends more than epsilon %llu per run at this delta",
           (unsigned long long)(CR_DP_MAX_EPSILON / CR_DP_EPSILON_UNIT));
    path_pop(v, mark);
  } else {
    mark = path_key(v, "epsilon");
    n->epsilon = want_fixed(v, eps, 6, CR_DP_MAX_EPSILON, 0, "");
    if (n->epsilon && n->delta && (n->sigma = gaussian_sigma_of(n->epsilon, n->delta)) == 0)
      verr(v, eps, "a larger epsilon or delta: this one needs sigma above %llu",
           (unsigned long long)(CR_DP_MAX_SIGMA / CR_DP_SIGMA_UNIT));
    path_pop(v, mark);
  }
  if (n->epsilon == 0 || n->delta == 0 || n->sigma == 0)
    memset(n, 0, sizeof *n);
}

/* limits.privacy_budget */
static void check_budget(vctx *v, json_t *j, cr_privacy_budget *b) {
  static const char *const fields[] = {"epsilon", "delta", "allow_members"};
  json_t *e;
  size_t mark;
  if (!want_object(v, j, "an object with epsilon, and optional delta and allow_members"))
    return;
  check_fields(v, j, fields, 3);
  mark = path_key(v, "epsilon");
  b->epsilon = want_fixed(v, json_object_get(j, "epsilon"), 6, CR_DP_MAX_BUDGET_EPSILON, 0, "");
  path_pop(v, mark);
  if ((e = json_object_get(j, "delta")) != NULL) {
    mark = path_key(v, "delta");
    b->delta = want_fixed(v, e, 15, CR_DP_DELTA_UNIT, 1, "");
    path_pop(v, mark);
  }
  if ((e = json_object_get(j, "allow_members")) != NULL) {
    mark = path_key(v, "allow_members");
    if (!json_is_boolean(e))
      verr(v, e, "true or false");
    else
      b->allow_members = json_is_true(e);
    path_pop(v, mark);
  }
}

/* Text of a fixed-point number for messages: "0.5", "10", "1e-09" style. */
static void fixed_text(char *out, size_t cap, uint64_t x, uint64_t unit) {
  if (unit == CR_DP_DELTA_UNIT)
    snprintf(out, cap, "%.15g", (double)x / (double)unit);
  else
    cr_dp_decimal(out, cap, x, unit);
}

/*
 * Noise and budget together (docs/privacy.md): a noisy query needs a
 * budget (without one, repeated runs average the noise away); with a
 * budget every count query adds noise (an exact count next to noisy ones
 * would undo them), members queries only when allowed, delta exactly when
 * a query uses the Gaussian, and no single run may cost more than the
 * whole budget.
 */
static void check_privacy(vctx *v, json_t *root, cr_template *t) {
  const cr_privacy_budget *b = &t->limits.privacy_budget;
  json_t *jq = json_object_get(root, "queries");
  json_t *jb = json_object_get(json_object_get(root, "limits"), "privacy_budget");
  int gaussian = 0, noisy = 0;
  char x[48], y[48];
  size_t mark, m2, m3;
  if (jb != NULL && b->epsilon == 0)
    return; /* the budget itself is invalid: reported */
  mark = path_key(v, "queries");
  for (size_t i = 0; i < t->nqueries; i++) {
    const cr_query *q = &t->queries[i];
    json_t *j = json_object_get(jq, q->name), *jn = json_object_get(j, "noise");
    if (!json_is_object(j) || q->kind == 0)
      continue;
    m2 = path_key(v, q->name);
    gaussian |= q->noise.mechanism == CR_NOISE_DISCRETE_GAUSSIAN;
    noisy |= q->noise.mechanism != CR_NOISE_NONE;
    if (jb == NULL && jn != NULL) {
      m3 = path_key(v, "noise");
      verr(v, jn,
           "no noise unless $.limits.privacy_budget is set (without a budget, repeated runs "
           "average the noise away)");
      path_pop(v, m3);
    } else if (jb != NULL && q->kind == CR_QUERY_COUNT && jn == NULL) {
      m3 = path_key(v, "noise");
      verr(v, NULL,
           "a noise object: with $.limits.privacy_budget every count query is released with "
           "noise (an exact count next to noisy ones would undo them)");
      path_pop(v, m3);
    } else if (jb != NULL && q->kind == CR_QUERY_MEMBERS && !b->allow_members) {
      m3 = path_key(v, "kind");
      verr(v, json_object_get(j, "kind"),
           "\"count\": a template with $.limits.privacy_budget releases no records unless "
           "$.limits.privacy_budget.allow_members is true");
      path_pop(v, m3);
    } else if (jb != NULL && q->noise.mechanism != CR_NOISE_NONE) {
      const char *field = q->noise.sigma_given ? "sigma" : "epsilon";
      m3 = path_key(v, "noise");
      size_t m4 = path_key(v, field);
      fixed_text(x, sizeof x, q->noise.epsilon, CR_DP_EPSILON_UNIT);
      fixed_text(y, sizeof y, b->epsilon, CR_DP_EPSILON_UNIT);
      if (q->noise.epsilon > b->epsilon)
        verr(v, json_object_get(jn, field),
             "a run that costs at most the whole budget: it spends epsilon %s, "
             "$.limits.privacy_budget.epsilon is %s",
             x, y);
      path_pop(v, m4);
      if (q->noise.delta > b->delta && b->delta > 0) {
        m4 = path_key(v, "delta");
        fixed_text(x, sizeof x, q->noise.delta, CR_DP_DELTA_UNIT);
        fixed_text(y, sizeof y, b->delta, CR_DP_DELTA_UNIT);
        verr(v, json_object_get(jn, "delta"),
             "at most $.limits.privacy_budget.delta (%s); this query spends %s per run", y, x);
        path_pop(v, m4);
      }
      path_pop(v, m3);
    }
    path_pop(v, m2);
  }
  path_pop(v, mark);
  if (jb == NULL)
    return;
  mark = path_key(v, "limits");
  m2 = path_key(v, "privacy_budget");
  if (!noisy)
    verr(v, jb, "a budget only in a template with a noisy query (queries.<name>.noise)");
  m3 = path_key(v, "delta");
  if (gaussian && b->delta == 0 && json_object_get(jb, "delta") == NULL)
    verr(v, NULL,
         "a number > 0 and < 1: a query uses discrete_gaussian, which spends delta as well");
  else if (!gaussian && b->delta > 0)
    verr(v, json_object_get(jb, "delta"),
         "no delta: no query uses discrete_gaussian (discrete_laplace spends epsilon only)");
  path_pop(v, m3);
  path_pop(v, m2);
  path_pop(v, mark);
}

/*
 * Columns a query names (group_by, members columns) must be in the data
 * contract of that role, or a run would fail after both sides had agreed.
 */
static void check_column_known(vctx *v, json_t *j, const cr_template *t, cr_role r) {
  if (in_strv(t->required_columns[r], t->nrequired_columns[r], json_string_value(j)))
    return;
  verr(v, j, "a column listed in $.data.%s.required_columns or a match key's columns",
       cr_role_name(r));
}

static void check_query(vctx *v, const char *name, json_t *j, cr_query *q, const cr_template *t,
                        int columns_known) {
  static const char *const fields[] = {"kind",  "run_by", "results_to", "min_count", "group_by",
                                       "where", "params", "columns",    "noise"};
  json_t *e;
  size_t mark;
  int kind_ok = 0, results_ok = 0;
  if ((q->name = strdup(name)) == NULL) {
    v->el->oom = 1;
    return;
  }
  if (!valid_name(name, strlen(name)))
    el_add(v->el,
           "%s: found a query name that is not allowed, expected 1 to %d letters, "
           "digits, '_', '-' or '.'",
           v->path, CR_TEMPLATE_MAX_NAME);
  if (!want_object(v, j, "an object with kind, run_by, results_to and min_count"))
    return;
  check_fields(v, j, fields, 9);

  mark = path_key(v, "kind");
  e = json_object_get(j, "kind");
  if (json_is_string(e) && strcmp(json_string_value(e), "count") == 0) {
    q->kind = CR_QUERY_COUNT;
    kind_ok = 1;
  } else if (json_is_string(e) && strcmp(json_string_value(e), "members") == 0) {
    q->kind = CR_QUERY_MEMBERS;
    kind_ok = 1;
  } else {
    verr(v, e, "\"count\" or \"members\"");
  }
  path_pop(v, mark);

  mark = path_key(v, "run_by");
  want_roles(v, json_object_get(j, "run_by"), &q->run_by);
  path_pop(v, mark);

  mark = path_key(v, "results_to");
  e = json_object_get(j, "results_to");
  results_ok = want_roles(v, e, &q->results_to);
  /* members hands one party its own matched records: there is one owner. */
  if (results_ok && q->kind == CR_QUERY_MEMBERS && json_array_size(e) != 1) {
    verr(v, e, "exactly one role for kind \"members\" (the owner of the records)");
    results_ok = 0;
  }
  /* Several keys: the records that matched are the counted side's; the
   * other side's set is only key values, which no row of it stands for. */
  if (results_ok && q->kind == CR_QUERY_MEMBERS && cr_template_nkeys(t) > 1 &&
      q->results_to != CR_ROLE_BIT(t->count_of)) {
    verr(v, e,
         "[\"%s\"] for kind \"members\" with several match keys (the count_of side: its "
         "records are the ones matched)",
         cr_role_name(t->count_of));
    results_ok = 0;
  }
  path_pop(v, mark);

  mark = path_key(v, "min_count");
  e = json_object_get(j, "min_count");
  want_int(v, e, 1, &q->min_count);
  path_pop(v, mark);

  if ((e = json_object_get(j, "group_by")) != NULL) {
    mark = path_key(v, "group_by");
    if (kind_ok && q->kind == CR_QUERY_MEMBERS) {
      verr(v, e, "no group_by for kind \"members\"");
    } else if (want_role_map(v, e, 0, "a column name", q->group_by) && columns_known) {
      for (int r = 0; r < CR_ROLE_COUNT; r++) {
        if (q->group_by[r] == NULL)
          continue;
        size_t m2 = path_key(v, cr_role_name((cr_role)r));
        check_column_known(v, json_object_get(e, cr_role_name((cr_role)r)), t, (cr_role)r);
        path_pop(v, m2);
      }
    }
    path_pop(v, mark);
  }

  if ((e = json_object_get(j, "where")) != NULL) {
    mark = path_key(v, "where");
    want_role_map(v, e, 1, "a filter expression", q->where);
    path_pop(v, mark);
  }

  if ((e = json_object_get(j, "params")) != NULL) {
    mark = path_key(v, "params");
    check_params(v, e, q);
    path_pop(v, mark);
  }

  if ((e = json_object_get(j, "columns")) != NULL) {
    mark = path_key(v, "columns");
    if (kind_ok && q->kind != CR_QUERY_MEMBERS) {
      verr(v, e, "no columns unless kind is \"members\"");
    } else if (want_strv(v, e, 0, CR_TEMPLATE_MAX_COLUMNS, "distinct column names", &q->columns,
                         &q->ncolumns) &&
               kind_ok && results_ok && columns_known) {
      cr_role owner =
          (q->results_to & CR_ROLE_BIT(CR_ROLE_PROVIDER)) ? CR_ROLE_PROVIDER : CR_ROLE_CONSUMER;
      for (size_t i = 0; i < q->ncolumns; i++) {
        size_t m2 = path_index(v, i);
        check_column_known(v, json_array_get(e, i), t, owner);
        path_pop(v, m2);
      }
    }
    path_pop(v, mark);
  }

  if ((e = json_object_get(j, "noise")) != NULL) {
    mark = path_key(v, "noise");
    check_noise(v, e, q, kind_ok);
    path_pop(v, mark);
  }
}

static void check_queries(vctx *v, json_t *j, cr_template *t, int columns_known) {
  const char *key;
  json_t *val;
  if (!json_is_object(j) || json_object_size(j) == 0) {
    verr(v, j, "a non-empty object mapping query names to queries");
    return;
  }
  if (json_object_size(j) > CR_TEMPLATE_MAX_QUERIES) {
    verr(v, j, "at most %d queries", CR_TEMPLATE_MAX_QUERIES);
    return;
  }
  if ((t->queries = calloc(json_object_size(j), sizeof *t->queries)) == NULL) {
    v->el->oom = 1;
    return;
  }
  /* Template order, so `cleanroom template show` lists them as written. */
  json_object_foreach(j, key, val) {
    size_t mark = path_key(v, key);
    check_query(v, key, val, &t->queries[t->nqueries++], t, columns_known);
    path_pop(v, mark);
  }
}

static int is_leap(long y) { return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0; }

/* Leap years in [1, y). */
static long leaps_before(long y) { return (y - 1) / 4 - (y - 1) / 100 + (y - 1) / 400; }

/*
 * "YYYY-MM-DDTHH:MM:SSZ" to Unix seconds. Computed by hand: timegm is not
 * C11/POSIX and mktime would apply the local timezone.
 */
static int parse_utc(const char *s, int64_t *out) {
  static const char pattern[] = "dddd-dd-ddTdd:dd:ddZ";
  static const int mdays[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
  long f[6] = {0};
  static const int at[6] = {0, 5, 8, 11, 14, 17}, width[6] = {4, 2, 2, 2, 2, 2};
  if (strlen(s) != sizeof pattern - 1)
    return CR_EINVAL;
  for (size_t i = 0; i < sizeof pattern - 1; i++)
    if (pattern[i] == 'd' ? (s[i] < '0' || s[i] > '9') : s[i] != pattern[i])
      return CR_EINVAL;
  for (int i = 0; i < 6; i++)
    for (int k = 0; k < width[i]; k++)
      f[i] = f[i] * 10 + (s[at[i] + k] - '0');
  long y = f[0], mo = f[1], d = f[2];
  if (y < 1970 || mo < 1 || mo > 12 || d < 1 || d > mdays[mo - 1] + (mo == 2 && is_leap(y)) ||
      f[3] > 23 || f[4] > 59 || f[5] > 59)
    return CR_EINVAL;
  int64_t days = 365 * (int64_t)(y - 1970) + (leaps_before(y) - leaps_before(1970));
  for (long m = 1; m < mo; m++)
    days += mdays[m - 1] + (m == 2 && is_leap(y));
  days += d - 1;
  *out = days * 86400 + f[3] * 3600 + f[4] * 60 + f[5];
  return 0;
}

void cr_template_time_iso(int64_t unix_seconds, char out[CR_TEMPLATE_TIME_BYTES]) {
  /* Days to a civil date (H. Hinnant's algorithm): no libc, no timezone. */
  int64_t days = unix_seconds / 86400, secs = unix_seconds % 86400;
  if (secs < 0) {
    secs += 86400;
    days--;
  }
  int64_t z = days + 719468;
  int64_t era = (z >= 0 ? z : z - 146096) / 146097;
  int64_t doe = z - era * 146097;
  int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
  int64_t y = yoe + era * 400;
  int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
  int64_t mp = (5 * doy + 2) / 153;
  int64_t d = doy - (153 * mp + 2) / 5 + 1;
  int64_t m = mp < 10 ? mp + 3 : mp - 9;
  if (m <= 2)
    y++;
  if (y < 0 || y > 9999) {
    snprintf(out, CR_TEMPLATE_TIME_BYTES, "(out of range)");
    return;
  }
  snprintf(out, CR_TEMPLATE_TIME_BYTES, "%04d-%02d-%02dT%02d:%02d:%02dZ", (int)y, (int)m, (int)d,
           (int)(secs / 3600), (int)(secs / 60 % 60), (int)(secs % 60));
}

/* limits.size_buckets (template.h): {"floor": F, "ratio": R} or
 * {"edges": [...], "ratio": R}, each member optional. */
static void check_buckets(vctx *v, json_t *j, cr_size_buckets *b) {
  static const char *const fields[] = {"floor", "ratio", "edges"};
  json_t *e;
  size_t mark;
  if (!want_object(v, j, "an object with floor and ratio, or edges and ratio (each optional)"))
    return;
  check_fields(v, j, fields, 3);
  if ((e = json_object_get(j, "ratio")) != NULL) {
    mark = path_key(v, "ratio");
    if (!json_is_number(e) || !(json_number_value(e) > 1.0) ||
        json_number_value(e) > CR_BUCKET_MAX_RATIO)
      verr(v, e, "a number > 1 and <= %g", CR_BUCKET_MAX_RATIO);
    else
      b->ratio = json_number_value(e);
    path_pop(v, mark);
  }
  if ((e = json_object_get(j, "floor")) != NULL) {
    mark = path_key(v, "floor");
    if (json_object_get(j, "edges") != NULL)
      verr(v, e, "no floor when edges are given (the first edge is the floor)");
    else
      (void)want_int(v, e, 1, &b->floor);
    path_pop(v, mark);
  }
  if ((e = json_object_get(j, "edges")) != NULL) {
    mark = path_key(v, "edges");
    if (!json_is_array(e) || json_array_size(e) == 0 || json_array_size(e) > CR_BUCKET_MAX_EDGES) {
      verr(v, e, "an array of 1 to %d strictly increasing integers >= 1", CR_BUCKET_MAX_EDGES);
    } else {
      size_t n = json_array_size(e);
      int ok = 1;
      for (size_t i = 0; i < n; i++) {
        size_t m2 = path_index(v, i);
        uint64_t x = 0;
        if (!want_int(v, json_array_get(e, i), 1, &x)) {
          ok = 0;
        } else if (i > 0 && ok && x <= b->edges[i - 1]) {
          verr(v, json_array_get(e, i), "an integer > the edge before it (%llu)",
               (unsigned long long)b->edges[i - 1]);
          ok = 0;
        }
        b->edges[i] = x;
        path_pop(v, m2);
      }
      b->nedges = ok ? n : 0;
      if (!ok)
        memset(b->edges, 0, sizeof b->edges);
    }
    path_pop(v, mark);
  }
}

/* The ladder in use: the template's, with the defaults filled in. */
static void buckets_effective(const cr_template *t, cr_size_buckets *b) {
  *b = t->limits.size_buckets;
  if (b->nedges == 0 && b->floor == 0)
    b->floor = CR_BUCKET_DEFAULT_FLOOR;
  if (!(b->ratio > 1.0))
    b->ratio = CR_BUCKET_DEFAULT_RATIO;
}

/* The ladder value after x: max(x + 1, ceil(x * ratio)); UINT64_MAX when
 * it would pass 2^53 (beyond any set this engine takes). IEEE-754
 * multiplication is correctly rounded, so both nodes compute the same. */
static uint64_t ladder_next(uint64_t x, double ratio) {
  double p = (double)x * ratio;
  if (!(p < 9007199254740992.0))
    return UINT64_MAX;
  uint64_t u = (uint64_t)p;
  if ((double)u < p)
    u++;
  return u > x ? u : x + 1;
}

uint64_t cr_template_bucket(const cr_template *t, uint64_t n) {
  cr_size_buckets b;
  buckets_effective(t, &b);
  uint64_t x;
  if (b.nedges > 0) {
    for (size_t i = 0; i < b.nedges; i++)
      if (b.edges[i] >= n)
        return b.edges[i];
    x = b.edges[b.nedges - 1];
  } else {
    x = b.floor;
  }
  while (x < n && x != UINT64_MAX)
    x = ladder_next(x, b.ratio);
  return x;
}

int cr_template_is_bucket(const cr_template *t, uint64_t n) {
  return n != UINT64_MAX && cr_template_bucket(t, n) == n;
}

static void check_limits(vctx *v, json_t *j, cr_limits *l) {
  static const char *const fields[] = {"max_runs_per_query", "min_set_size", "max_set_size",
                                       "not_after",          "size_buckets", "privacy_budget"};
  json_t *e;
  size_t mark;
  int min_ok = 1;
  if (!want_object(v, j,
                   "an object with max_runs_per_query, min_set_size, max_set_size, "
                   "not_after, size_buckets, privacy_budget (each optional)"))
    return;
  check_fields(v, j, fields, 6);
  if ((e = json_object_get(j, "privacy_budget")) != NULL) {
    mark = path_key(v, "privacy_budget");
    check_budget(v, e, &l->privacy_budget);
    path_pop(v, mark);
  }
  if ((e = json_object_get(j, "size_buckets")) != NULL) {
    mark = path_key(v, "size_buckets");
    check_buckets(v, e, &l->size_buckets);
    path_pop(v, mark);
  }
  if ((e = json_object_get(j, "max_runs_per_query")) != NULL) {
    mark = path_key(v, "max_runs_per_query");
    want_int(v, e, 1, &l->max_runs_per_query);
    path_pop(v, mark);
  }
  if ((e = json_object_get(j, "min_set_size")) != NULL) {
    mark = path_key(v, "min_set_size");
    min_ok = want_int(v, e, 0, &l->min_set_size);
    path_pop(v, mark);
  }
  if ((e = json_object_get(j, "max_set_size")) != NULL) {
    mark = path_key(v, "max_set_size");
    if (want_int(v, e, 1, &l->max_set_size) && min_ok && l->max_set_size < l->min_set_size) {
      verr(v, e, "an integer >= min_set_size (%llu)", (unsigned long long)l->min_set_size);
      l->max_set_size = 0;
    }
    path_pop(v, mark);
  }
  if ((e = json_object_get(j, "not_after")) != NULL) {
    mark = path_key(v, "not_after");
    if (!json_is_string(e) || parse_utc(json_string_value(e), &l->not_after) != 0 ||
        l->not_after <= 0)
      verr(v, e, "a UTC time \"YYYY-MM-DDTHH:MM:SSZ\" after 1970-01-01T00:00:00Z");
    path_pop(v, mark);
  }
}

/* Fills t from root; every problem goes to v->el. */
/* "match" and "count_of": only next to match_keys. */
static void check_match_mode(vctx *v, json_t *root, cr_template *t, int several) {
  json_t *e;
  size_t mark;
  t->count_of = CR_ROLE_CONSUMER;
  if ((e = json_object_get(root, "match")) != NULL) {
    mark = path_key(v, "match");
    if (!several)
      verr(v, e, "no match unless match_keys is given");
    else if (!json_is_string(e) || strcmp(json_string_value(e), "any") != 0)
      verr(v, e, "\"any\" (a record matches when any of its keys matches)");
    path_pop(v, mark);
  }
  if ((e = json_object_get(root, "count_of")) != NULL) {
    mark = path_key(v, "count_of");
    if (!several)
      verr(v, e, "no count_of unless match_keys is given");
    else if (!json_is_string(e) || cr_role_parse(json_string_value(e), &t->count_of) != 0)
      verr(v, e, "\"provider\" or \"consumer\" (the side whose records are counted)");
    path_pop(v, mark);
  }
}

/*
 * Both parties pinning one certificate: a node with it could not tell its
 * role, and the other party could never connect. All zeros is the
 * placeholder of a draft not pinned yet (the examples), left to
 * `template pin`.
 */
static void check_distinct_parties(vctx *v, json_t *parties) {
  static const uint8_t zero[CR_SHA256_BYTES];
  uint8_t fp[CR_ROLE_COUNT][CR_SHA256_BYTES];
  json_t *e[CR_ROLE_COUNT];
  for (int r = 0; r < CR_ROLE_COUNT; r++) {
    json_t *p = json_object_get(parties, cr_role_name((cr_role)r));
    e[r] = json_is_object(p) ? json_object_get(p, "cert_sha256") : NULL;
    if (!json_is_string(e[r]) || cr_hex_decode(fp[r], sizeof fp[r], json_string_value(e[r])) != 0)
      return;
  }
  if (memcmp(fp[CR_ROLE_PROVIDER], fp[CR_ROLE_CONSUMER], CR_SHA256_BYTES) != 0 ||
      memcmp(fp[CR_ROLE_PROVIDER], zero, CR_SHA256_BYTES) == 0)
    return;
  size_t m1 = path_key(v, "consumer");
  size_t m2 = path_key(v, "cert_sha256");
  verr(v, e[CR_ROLE_CONSUMER],
       "a certificate other than the provider's (each party pins its own identity's "
       "fingerprint, from `cleanroom keygen`)");
  path_pop(v, m2);
  path_pop(v, m1);
}

static void check_template(vctx *v, json_t *root, cr_template *t) {
  static const char *const fields[] = {"format",    "name",       "parties", "suite",
                                       "match_key", "match_keys", "match",   "count_of",
                                       "data",      "queries",    "limits",  "require_signatures"};
  static const char *const roles[] = {"provider", "consumer"};
  json_t *e;
  size_t mark;
  int key_ok, data_ok;
  if (!want_object(v, root, "a template object"))
    return;
  check_fields(v, root, fields, sizeof fields / sizeof fields[0]);

  mark = path_key(v, "format");
  e = json_object_get(root, "format");
  if (!json_is_string(e) || strcmp(json_string_value(e), CR_TEMPLATE_FORMAT) != 0)
    verr(v, e, "\"%s\"", CR_TEMPLATE_FORMAT);
  path_pop(v, mark);

  mark = path_key(v, "name");
  t->name = want_string(v, json_object_get(root, "name"), 0, "a non-empty string");
  path_pop(v, mark);

  mark = path_key(v, "parties");
  e = json_object_get(root, "parties");
  if (want_object(v, e, "an object with provider and consumer")) {
    check_fields(v, e, roles, 2);
    for (int r = 0; r < CR_ROLE_COUNT; r++) {
      size_t m2 = path_key(v, roles[r]);
      check_party(v, json_object_get(e, roles[r]), &t->parties[r]);
      path_pop(v, m2);
    }
    check_distinct_parties(v, e);
  }
  path_pop(v, mark);

  mark = path_key(v, "suite");
  e = json_object_get(root, "suite");
  if (!json_is_string(e) || (strcmp(json_string_value(e), "ristretto255") != 0 &&
                             strcmp(json_string_value(e), "p256") != 0))
    verr(v, e, "\"ristretto255\" or \"p256\"");
  else if ((t->suite = strdup(json_string_value(e))) == NULL)
    v->el->oom = 1;
  path_pop(v, mark);

  json_t *keys = json_object_get(root, "match_keys");
  if (keys != NULL) {
    mark = path_key(v, "match_keys");
    key_ok = check_match_keys(v, keys, t);
    if (json_object_get(root, "match_key") != NULL) {
      verr(v, keys, "either match_key (one key) or match_keys (several), not both");
      key_ok = 0;
    }
    path_pop(v, mark);
  } else {
    mark = path_key(v, "match_key");
    t->nmatch_keys = 1;
    e = json_object_get(root, "match_key");
    if (e == NULL)
      verr(v, e, "an object with name, columns and normalize (or match_keys, an array of them)");
    key_ok = e != NULL && check_match_key(v, e, &t->match_key);
    path_pop(v, mark);
  }
  check_match_mode(v, root, t, keys != NULL);

  mark = path_key(v, "data");
  data_ok = check_data(v, json_object_get(root, "data"), t);
  path_pop(v, mark);

  /* Column cross-checks only make sense once both lists are known good. */
  if (key_ok && data_ok && !v->el->oom && add_key_columns(t) != 0)
    v->el->oom = 1;

  mark = path_key(v, "queries");
  check_queries(v, json_object_get(root, "queries"), t, key_ok && data_ok && !v->el->oom);
  path_pop(v, mark);

  if ((e = json_object_get(root, "limits")) != NULL) {
    mark = path_key(v, "limits");
    check_limits(v, e, &t->limits);
    path_pop(v, mark);
  }

  check_privacy(v, root, t);

  if ((e = json_object_get(root, "require_signatures")) != NULL) {
    mark = path_key(v, "require_signatures");
    if (!json_is_boolean(e))
      verr(v, e, "true or false");
    else
      t->require_signatures = json_is_true(e);
    path_pop(v, mark);
  }
}

/* ---------------------------------------------------------------- loading */

/*
 * The one parser behind every entry point. Returns 0 with *out set, or an
 * error code with every message in el (CR_EIO/CR_ENOMEM messages too).
 */
static int parse_core(cr_template **out, const char *json, size_t len, const char *origin,
                      errlist *el) {
  int rc = 0;
  json_error_t jerr;
  json_t *root = NULL;
  cr_template *t = NULL;
  char *canon = NULL;
  size_t canon_len = 0;
  cr_error cerr;
  vctx v;
  *out = NULL;
  memset(&v, 0, sizeof v);
  v.el = el;
  strcpy(v.path, "$");
  v.len = 1;

  if (json == NULL && len > 0) {
    el_add(el, "$: no input");
    rc = CR_ETEMPLATE;
    goto out;
  }
  if (len > CR_TEMPLATE_MAX_BYTES) {
    el_add(el, "$: found %zu bytes, expected at most %u bytes", len, CR_TEMPLATE_MAX_BYTES);
    rc = CR_ETEMPLATE;
    goto out;
  }
  /* A UTF-8 byte order mark (Notepad writes one) is not part of the JSON
   * text (RFC 8259 section 8.1 lets a parser ignore it); the hash is of the
   * canonical form, so it does not change it either. */
  if (json != NULL && len >= 3 && memcmp(json, "\xef\xbb\xbf", 3) == 0) {
    json += 3;
    len -= 3;
  }
  /* Duplicate keys: two partners' parsers might keep different copies. */
  root = json_loadb(json != NULL ? json : "", len, JSON_REJECT_DUPLICATES, &jerr);
  if (root == NULL) {
    el_add(el, "$: invalid JSON at line %d, column %d: %s", jerr.line, jerr.column, jerr.text);
    rc = CR_ETEMPLATE;
    goto out;
  }
  if ((t = calloc(1, sizeof *t)) == NULL) {
    rc = CR_ENOMEM;
    goto out;
  }
  check_template(&v, root, t);
  if (el->oom) {
    rc = CR_ENOMEM;
    goto out;
  }
  if (el->n > 0 || el->dropped > 0) {
    rc = CR_ETEMPLATE;
    goto out;
  }
  if ((rc = cr_json_canonicalize(json, len, &canon, &canon_len, &cerr)) != 0) {
    /* Cannot happen for input jansson just accepted, short of memory. */
    el_add(el, "$: cannot canonicalize: %s", cerr.msg);
    goto out;
  }
  cr_sha256(t->sha256, canon, canon_len);
  if (origin != NULL && (t->path = strdup(origin)) == NULL) {
    rc = CR_ENOMEM;
    goto out;
  }
  *out = t;
  t = NULL;
out:
  if (rc == CR_ENOMEM)
    el->oom = 1;
  free(canon);
  cr_template_free(t);
  json_decref(root);
  return rc;
}

/* Reads at most CR_TEMPLATE_MAX_BYTES; larger is a template error, not I/O. */
static int read_template(const char *path, char **out, size_t *out_len, errlist *el) {
  int rc = 0;
  char *buf = NULL;
  size_t len = 0;
  FILE *f = fopen(path, "rb");
  *out = NULL;
  if (f == NULL) {
    el_add(el, "%s: cannot open: %s", path, strerror(errno));
    return CR_EIO;
  }
  /* One byte more than allowed, to tell "exactly the limit" from "too big". */
  if ((buf = malloc(CR_TEMPLATE_MAX_BYTES + 2)) == NULL) {
    rc = CR_ENOMEM;
    goto out;
  }
  len = fread(buf, 1, CR_TEMPLATE_MAX_BYTES + 1, f);
  if (ferror(f)) {
    el_add(el, "%s: cannot read: %s", path, strerror(errno));
    rc = CR_EIO;
    goto out;
  }
  if (len > CR_TEMPLATE_MAX_BYTES) {
    el_add(el, "$: found more than %u bytes, expected at most %u bytes", CR_TEMPLATE_MAX_BYTES,
           CR_TEMPLATE_MAX_BYTES);
    rc = CR_ETEMPLATE;
    goto out;
  }
  buf[len] = '\0';
  *out = buf;
  *out_len = len;
  buf = NULL;
out:
  free(buf);
  fclose(f);
  return rc;
}

/* err->msg: "<origin>: <msg>" or "<origin>: N errors\n<msg>\n..." */
static void el_to_error(const errlist *el, int rc, const char *origin, cr_error *err) {
  size_t total = el->n + el->dropped, shown = 0, o;
  if (err == NULL)
    return;
  err->code = rc;
  if (rc == CR_ENOMEM) {
    snprintf(err->msg, sizeof err->msg, "%s: out of memory", origin);
    return;
  }
  if (rc == CR_EIO || total <= 1) {
    const char *m = el->n ? el->msg[0] : cr_strerror(rc);
    /* An I/O message already starts with the path. */
    if (rc == CR_EIO && el->n)
      snprintf(err->msg, sizeof err->msg, "%s", m);
    else
      snprintf(err->msg, sizeof err->msg, "%s: %s", origin, m);
    return;
  }
  o = (size_t)snprintf(err->msg, sizeof err->msg, "%s: %zu errors", origin, total);
  if (o >= sizeof err->msg)
    o = sizeof err->msg - 1;
  for (; shown < el->n; shown++) {
    size_t need = 1 + strlen(el->msg[shown]);
    /* Keep room for the "... and N more" line unless this is the last. */
    size_t reserve = shown + 1 < total ? 32 : 0;
    if (o + need + reserve >= sizeof err->msg)
      break;
    o += (size_t)snprintf(err->msg + o, sizeof err->msg - o, "\n%s", el->msg[shown]);
  }
  if (shown < total)
    snprintf(err->msg + o, sizeof err->msg - o, "\n... and %zu more", total - shown);
}

int cr_template_parse(cr_template **out, const char *json, size_t len, const char *origin,
                      cr_error *err) {
  errlist el;
  int rc;
  memset(&el, 0, sizeof el);
  if (out == NULL)
    return cr_error_set(err, CR_EINVAL, "cr_template_parse: out is NULL");
  rc = parse_core(out, json, len, origin, &el);
  if (rc != 0)
    el_to_error(&el, rc, origin != NULL ? origin : "template", err);
  el_free(&el);
  return rc;
}

int cr_template_load(cr_template **out, const char *path, cr_error *err) {
  errlist el;
  char *buf = NULL;
  size_t len = 0;
  int rc;
  memset(&el, 0, sizeof el);
  if (out == NULL || path == NULL)
    return cr_error_set(err, CR_EINVAL, "cr_template_load: no path or out");
  *out = NULL;
  if ((rc = read_template(path, &buf, &len, &el)) == 0)
    rc = parse_core(out, buf, len, path, &el);
  if (rc != 0)
    el_to_error(&el, rc, path, err);
  free(buf);
  el_free(&el);
  return rc;
}

/* Hands el's messages to the caller (plus a count of dropped ones). */
static int el_export(errlist *el, char ***errors, size_t *n) {
  char **list;
  size_t total = el->n + (el->dropped ? 1 : 0);
  *errors = NULL;
  *n = 0;
  if (total == 0)
    return 0;
  if ((list = calloc(total + 1, sizeof *list)) == NULL)
    return CR_ENOMEM;
  memcpy(list, el->msg, el->n * sizeof *list);
  if (el->dropped) {
    char line[64];
    snprintf(line, sizeof line, "... and %zu more errors", el->dropped);
    if ((list[el->n] = strdup(line)) == NULL) {
      free(list);
      return CR_ENOMEM;
    }
  }
  free(el->msg); /* the strings now belong to list */
  memset(el, 0, sizeof *el);
  *errors = list;
  *n = total;
  return 0;
}

static int check_common(const char *path, const char *json, size_t len, const char *origin,
                        cr_template **out, char ***errors, size_t *n) {
  errlist el;
  char *buf = NULL;
  cr_template *t = NULL;
  int rc;
  memset(&el, 0, sizeof el);
  if (out != NULL)
    *out = NULL;
  if (path != NULL) {
    rc = read_template(path, &buf, &len, &el);
    json = buf;
    origin = path;
  } else {
    rc = 0;
  }
  if (rc == 0)
    rc = parse_core(&t, json, len, origin, &el);
  if (rc == CR_ENOMEM || el.oom) {
    rc = CR_ENOMEM;
    *errors = NULL;
    *n = 0;
    goto out;
  }
  if (el_export(&el, errors, n) != 0)
    rc = CR_ENOMEM;
  if (rc == 0 && out != NULL) {
    *out = t;
    t = NULL;
  }
out:
  cr_template_free(t);
  free(buf);
  el_free(&el);
  return rc;
}

int cr_template_check(const char *path, cr_template **out, char ***errors, size_t *n) {
  if (path == NULL || errors == NULL || n == NULL)
    return CR_EINVAL;
  return check_common(path, NULL, 0, path, out, errors, n);
}

int cr_template_check_mem(const char *json, size_t len, const char *origin, cr_template **out,
                          char ***errors, size_t *n) {
  if (errors == NULL || n == NULL)
    return CR_EINVAL;
  return check_common(NULL, json, len, origin, out, errors, n);
}

void cr_template_errors_free(char **errors, size_t n) { cr_strv_free(errors, n); }

void cr_template_free(cr_template *t) {
  if (t == NULL)
    return;
  free(t->name);
  for (int r = 0; r < CR_ROLE_COUNT; r++) {
    free(t->parties[r].org);
    free(t->parties[r].address);
    cr_strv_free(t->required_columns[r], t->nrequired_columns[r]);
  }
  free(t->suite);
  for (size_t k = 0; k < cr_template_nkeys(t); k++) {
    cr_match_key *mk = &t->match_keys[k];
    free(mk->name);
    cr_strv_free(mk->columns, mk->ncolumns);
    for (int r = 0; r < CR_ROLE_COUNT; r++) {
      /* NULL-terminated (want_strv), whatever ncolumns says after an error. */
      char **pc = mk->party_columns[r];
      for (size_t i = 0; pc != NULL && pc[i] != NULL; i++)
        free(pc[i]);
      free(pc);
    }
    free(mk->normalize);
    for (int r = 0; r < CR_ROLE_COUNT; r++)
      free(mk->party_normalize[r]);
    free(mk->default_country_code);
  }
  for (size_t i = 0; i < t->nqueries; i++) {
    cr_query *q = &t->queries[i];
    free(q->name);
    for (int r = 0; r < CR_ROLE_COUNT; r++) {
      free(q->group_by[r]);
      free(q->where[r]);
    }
    for (size_t k = 0; k < q->nparams; k++)
      free(q->params[k].name);
    free(q->params);
    cr_strv_free(q->columns, q->ncolumns);
  }
  free(t->queries);
  free(t->path);
  free(t);
}

/* ---------------------------------------------------------------- lookups */

const char *cr_role_name(cr_role r) {
  switch (r) {
  case CR_ROLE_PROVIDER:
    return "provider";
  case CR_ROLE_CONSUMER:
    return "consumer";
  }
  return "unknown";
}

int cr_role_parse(const char *s, cr_role *out) {
  if (s != NULL && strcmp(s, "provider") == 0)
    *out = CR_ROLE_PROVIDER;
  else if (s != NULL && strcmp(s, "consumer") == 0)
    *out = CR_ROLE_CONSUMER;
  else
    return CR_EINVAL;
  return 0;
}

const char *cr_normalizer_name(cr_normalizer n) {
  switch (n) {
  case CR_NORM_EMAIL:
    return "email";
  case CR_NORM_PHONE:
    return "phone";
  case CR_NORM_TEXT:
    return "text";
  case CR_NORM_SHA256:
    return "sha256";
  case CR_NORM_HASHED_SHA256:
    return "hashed_sha256";
  }
  return "unknown";
}

size_t cr_template_nkeys(const cr_template *t) {
  return t->nmatch_keys > 1
             ? (t->nmatch_keys <= CR_TEMPLATE_MAX_KEYS ? t->nmatch_keys : CR_TEMPLATE_MAX_KEYS)
             : 1;
}

size_t cr_template_record_width(const cr_template *t, cr_role role) {
  size_t k = cr_template_nkeys(t);
  return k > 1 && role == t->count_of ? k : 1;
}

const cr_query *cr_template_query(const cr_template *t, const char *name) {
  if (t == NULL || name == NULL)
    return NULL;
  for (size_t i = 0; i < t->nqueries; i++)
    if (strcmp(t->queries[i].name, name) == 0)
      return &t->queries[i];
  return NULL;
}

int cr_template_role_of(const cr_template *t, const uint8_t fp[CR_SHA256_BYTES], cr_role *out) {
  int found = -1;
  if (t == NULL || fp == NULL || out == NULL)
    return CR_EINVAL;
  /* Fingerprints are public; a plain comparison leaks nothing. */
  for (int r = 0; r < CR_ROLE_COUNT; r++) {
    if (memcmp(t->parties[r].cert_sha256, fp, CR_SHA256_BYTES) != 0)
      continue;
    if (found >= 0)
      return CR_ECONFIG; /* both parties carry it: no role can be trusted */
    found = r;
  }
  if (found < 0)
    return CR_ECONFIG;
  *out = (cr_role)found;
  return 0;
}
