/*
 * `where` filters (docs/filters.md): a recursive-descent parser into a flat
 * node array, typed run parameters, binding to a header, row evaluation.
 *
 * Everything that can fail happens at parse or bind time: literals are
 * decoded once, lists sorted once, columns resolved to field indexes once.
 * Evaluation then only walks the nodes (AND/OR are n-ary, so a long chain
 * does not make the tree deep; depth is bounded by CR_FILTER_MAX_DEPTH) and
 * compares bytes or numbers, without allocating.
 *
 * Messages may quote the filter text (it is the template's, which both
 * partners signed off) but never a cell of the data or a parameter value;
 * control characters are shown as '?' so a hostile template cannot drive a
 * terminal.
 *
 * Numbers go through strtod and %g, which follow LC_NUMERIC: the program
 * must keep the "C" locale (it never calls setlocale), or both partners
 * could read "2.5" differently.
 */
#include "cleanroom/dataset.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define NONE UINT32_MAX
/* A field longer than this (trimmed) is not read as a number. */
#define NUM_FIELD_MAX 127

/* ---- Values ------------------------------------------------------------- */

typedef struct fstr {
  const char *p;
  size_t n;
} fstr;

/* Integers compare exactly with integers (beyond 2^53 too); any other pair
 * compares as doubles. Never NaN. */
typedef struct fnum {
  double d;
  int64_t i;
  int is_int;
} fnum;

enum { K_STR = 1, K_NUM };

typedef struct operand {
  int kind;
  int32_t param; /* index in cr_filter.params, or -1 for a literal */
  size_t pos;    /* in the text, for messages */
  fstr s;
  fnum x;
} operand;

typedef struct flist {
  int kind;
  size_t n;
  fstr *s; /* sorted (str_cmp) */
  fnum *x; /* sorted by d */
} flist;

enum node_kind { N_OR = 1, N_AND, N_NOT, N_CMP, N_IN, N_BETWEEN };
enum cmp_op { OP_EQ = 1, OP_NE, OP_LT, OP_LE, OP_GT, OP_GE };

typedef struct node {
  int kind;
  int op;             /* N_CMP */
  int neg;            /* NOT IN, NOT BETWEEN */
  uint32_t first;     /* N_OR, N_AND, N_NOT: first child */
  uint32_t next;      /* next sibling */
  uint32_t col;       /* predicates: index in cr_filter.cols */
  operand a, b;       /* N_CMP: a; N_BETWEEN: a..b */
  int32_t list_param; /* N_IN: string_list parameter, or -1 for `list` */
  flist list;
} node;

typedef struct fparam {
  char *name;
  cr_param_type type;
  /* Bound value: val for scalars, list for string_list; `store` owns the
   * bytes they point to. */
  operand val;
  flist list;
  char *store;
} fparam;

struct cr_filter {
  char *origin;
  node *nodes;
  uint32_t nnodes, capnodes;
  uint32_t root;
  char *strbuf; /* decoded string literals */
  size_t strused;
  char **cols;
  size_t ncols, capcols;
  size_t *colidx; /* bound: header index of each column */
  fparam *params;
  size_t nparams, capparams;
  int bound;
};

/* ---- Small helpers ------------------------------------------------------ */

static int is_ws(unsigned char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f';
}
static int is_digit(unsigned char c) { return c >= '0' && c <= '9'; }
static int is_alpha(unsigned char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }
static int is_ident_start(unsigned char c) { return is_alpha(c) || c == '_'; }
static int is_ident_char(unsigned char c) {
  return is_alpha(c) || is_digit(c) || c == '_' || c == '.' || c == '-';
}
static int is_pname_char(unsigned char c) { return is_alpha(c) || is_digit(c) || c == '_'; }

static void trim(const char **p, size_t *n) {
  const char *s = *p;
  size_t len = *n;
  while (len > 0 && is_ws((unsigned char)s[0])) {
    s++;
    len--;
  }
  while (len > 0 && is_ws((unsigned char)s[len - 1]))
    len--;
  *p = s;
  *n = len;
}

static int str_cmp(const char *a, size_t an, const char *b, size_t bn) {
  size_t m = an < bn ? an : bn;
  int c = m > 0 ? memcmp(a, b, m) : 0;
  if (c != 0)
    return c < 0 ? -1 : 1;
  return (an > bn) - (an < bn);
}

static int num_cmp(const fnum *a, const fnum *b) {
  if (a->is_int && b->is_int)
    return (a->i > b->i) - (a->i < b->i);
  return (a->d > b->d) - (a->d < b->d);
}

static int fstr_qcmp(const void *a, const void *b) {
  const fstr *x = a, *y = b;
  return str_cmp(x->p, x->n, y->p, y->n);
}

static int fnum_qcmp(const void *a, const void *b) {
  const fnum *x = a, *y = b;
  return (x->d > y->d) - (x->d < y->d);
}

/*
 * [+-]? digits ( '.' digits )? ( [eE] [+-]? digits )? over exactly s[0..n),
 * or with `lenient` (data fields) also "5." and ".5". Sets *integral when
 * there is neither a fraction nor an exponent.
 */
static int num_syntax(const char *s, size_t n, int allow_plus, int lenient, int *integral) {
  size_t i = 0, d1 = 0, d2 = 0;
  *integral = 1;
  if (i < n && (s[i] == '-' || (allow_plus && s[i] == '+')))
    i++;
  while (i < n && is_digit((unsigned char)s[i])) {
    i++;
    d1++;
  }
  if (i < n && s[i] == '.') {
    i++;
    *integral = 0;
    while (i < n && is_digit((unsigned char)s[i])) {
      i++;
      d2++;
    }
    if (lenient ? d1 + d2 == 0 : (d1 == 0 || d2 == 0))
      return 0;
  } else if (d1 == 0) {
    return 0;
  }
  if (i < n && (s[i] == 'e' || s[i] == 'E')) {
    size_t d3 = 0;
    i++;
    *integral = 0;
    if (i < n && (s[i] == '+' || s[i] == '-'))
      i++;
    while (i < n && is_digit((unsigned char)s[i])) {
      i++;
      d3++;
    }
    if (d3 == 0)
      return 0;
  }
  return i == n;
}

/* Converts a span already checked by num_syntax: 0, -1 if not finite, or
 * CR_ENOMEM (only for spans longer than NUM_FIELD_MAX: never for a field). */
static int num_value(const char *s, size_t n, int integral, fnum *out) {
  char stackbuf[NUM_FIELD_MAX + 1];
  char *buf = stackbuf, *end;
  int rc = -1;
  if (n > NUM_FIELD_MAX && (buf = malloc(n + 1)) == NULL)
    return CR_ENOMEM;
  memcpy(buf, s, n);
  buf[n] = '\0';
  out->d = strtod(buf, &end);
  out->is_int = 0;
  out->i = 0;
  if (end != buf + n || !isfinite(out->d))
    goto cleanup;
  if (integral) {
    errno = 0;
    long long v = strtoll(buf, &end, 10);
    if (errno == 0 && end == buf + n) {
      out->i = (int64_t)v;
      out->is_int = 1;
    }
  }
  rc = 0;
cleanup:
  if (buf != stackbuf)
    free(buf);
  return rc;
}

/* Valid UTF-8 (no overlongs, surrogates or > U+10FFFF), no control chars. */
static int text_ok(const char *str, size_t n) {
  const unsigned char *s = (const unsigned char *)str;
  size_t i = 0;
  while (i < n) {
    unsigned c = s[i], cp, min;
    size_t k;
    if (c < 0x80) {
      if (c < 0x20 || c == 0x7f)
        return 0;
      i++;
      continue;
    }
    if (c >= 0xc2 && c <= 0xdf) {
      k = 1, cp = c & 0x1f, min = 0x80;
    } else if (c >= 0xe0 && c <= 0xef) {
      k = 2, cp = c & 0x0f, min = 0x800;
    } else if (c >= 0xf0 && c <= 0xf4) {
      k = 3, cp = c & 0x07, min = 0x10000;
    } else {
      return 0;
    }
    if (n - i <= k)
      return 0;
    for (size_t j = 1; j <= k; j++) {
      if ((s[i + j] & 0xc0) != 0x80)
        return 0;
      cp = (cp << 6) | (s[i + j] & 0x3f);
    }
    if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
      return 0;
    i += k + 1;
  }
  return 1;
}

/* Copies s[0..n) for a message: control characters as '?', at most max
 * bytes (cut before a UTF-8 continuation), "..." when shortened. */
static void show(char *out, size_t cap, const char *s, size_t n, size_t max) {
  size_t w = 0, i;
  int cut = n > max;
  if (cut) {
    n = max;
    while (n > 0 && ((unsigned char)s[n] & 0xc0) == 0x80)
      n--;
  }
  for (i = 0; i < n && w + 1 + (cut ? 3 : 0) < cap; i++) {
    unsigned char c = (unsigned char)s[i];
    out[w++] = (c < 0x20 || c == 0x7f) ? '?' : (char)c;
  }
  if (cut && w + 4 < cap) {
    memcpy(out + w, "...", 3);
    w += 3;
  }
  out[w] = '\0';
}

/* A parameter or column name from input that may not be one: shown only
 * when it looks like a name, so a hostile peer cannot write into our logs. */
static const char *name_or(const char *s, size_t n, char *buf, size_t cap, const char *other) {
  if (n == 0 || n > CR_TEMPLATE_MAX_NAME || !is_ident_start((unsigned char)s[0]))
    return other;
  for (size_t i = 1; i < n; i++)
    if (!is_pname_char((unsigned char)s[i]))
      return other;
  show(buf, cap, s, n, n);
  return buf;
}

const char *cr_param_type_name(cr_param_type t) {
  switch (t) {
  case CR_PARAM_STRING:
    return "string";
  case CR_PARAM_STRING_LIST:
    return "string_list";
  case CR_PARAM_INTEGER:
    return "integer";
  case CR_PARAM_NUMBER:
    return "number";
  default:
    return "unknown";
  }
}

static const char *type_article(cr_param_type t) { return t == CR_PARAM_INTEGER ? "an" : "a"; }

/* ---- Parameter values --------------------------------------------------- */

static void value_free(cr_param_value *v) {
  free(v->name);
  free(v->text);
  for (size_t i = 0; i < v->nitems; i++)
    free(v->items[i]);
  free(v->items);
  memset(v, 0, sizeof *v);
}

void cr_params_free(cr_params *p) {
  if (p == NULL)
    return;
  for (size_t i = 0; i < p->n; i++)
    value_free(&p->v[i]);
  free(p->v);
  p->v = NULL;
  p->n = 0;
}

const cr_param_value *cr_params_get(const cr_params *p, const char *name) {
  if (p == NULL || name == NULL)
    return NULL;
  for (size_t i = 0; i < p->n; i++)
    if (p->v[i].name != NULL && strcmp(p->v[i].name, name) == 0)
      return &p->v[i];
  return NULL;
}

static const char *type_expect(cr_param_type t) {
  switch (t) {
  case CR_PARAM_STRING:
    return "a string (UTF-8 text without control characters)";
  case CR_PARAM_STRING_LIST:
    return "a string_list (comma-separated non-empty items; \\, for a comma inside one)";
  case CR_PARAM_INTEGER:
    return "an integer (decimal, within -2^63..2^63-1)";
  default:
    return "a number (like 18, -2.5 or 1e6; finite)";
  }
}

/* Appends an escaped list item to the canonical text. */
static size_t escape_item(char *out, const char *s, size_t n) {
  size_t w = 0;
  for (size_t i = 0; i < n; i++) {
    if (s[i] == ',' || s[i] == '\\')
      out[w++] = '\\';
    out[w++] = s[i];
  }
  return w;
}

/*
 * The shortest %g form that reads back as the same double, written without
 * an exponent when the exponent is 0..16 (1000, not 1e+03).
 */
static void format_number(char *out, size_t cap, double d) {
  int prec = 1;
  for (; prec < 17; prec++) {
    snprintf(out, cap, "%.*g", prec, d);
    if (strtod(out, NULL) == d)
      break;
  }
  snprintf(out, cap, "%.*g", prec, d);
  const char *e = strchr(out, 'e');
  if (e != NULL) {
    long x = strtol(e + 1, NULL, 10);
    if (x >= 0 && x < 17 && x + 1 > prec)
      snprintf(out, cap, "%.*g", (int)x + 1, d);
  }
}

/* Splits a string_list text (already checked by text_ok) into v->items. */
static int parse_list(cr_param_value *v, const char *s, size_t n, char *why, size_t whycap) {
  char *item = NULL;
  size_t nitems = 0, cap = 0, i = 0;
  int rc = CR_EINVAL;
  if ((item = malloc(n + 1)) == NULL) {
    rc = CR_ENOMEM;
    goto cleanup;
  }
  for (;;) {
    size_t w = 0;
    while (i < n && s[i] != ',') {
      if (s[i] == '\\' && i + 1 < n && (s[i + 1] == ',' || s[i + 1] == '\\'))
        i++;
      item[w++] = s[i++];
    }
    const char *ip = item;
    size_t il = w;
    trim(&ip, &il);
    if (il == 0) {
      snprintf(why, whycap, "item %zu is empty", nitems + 1);
      goto cleanup;
    }
    if (nitems == CR_FILTER_MAX_LIST) {
      snprintf(why, whycap, "more than %u items", CR_FILTER_MAX_LIST);
      goto cleanup;
    }
    if (nitems == cap) {
      size_t nc = cap ? cap * 2 : 8;
      char **ni = realloc(v->items, nc * sizeof *ni);
      if (ni == NULL) {
        rc = CR_ENOMEM;
        goto cleanup;
      }
      v->items = ni;
      cap = nc;
    }
    if ((v->items[nitems] = malloc(il + 1)) == NULL) {
      rc = CR_ENOMEM;
      goto cleanup;
    }
    memcpy(v->items[nitems], ip, il);
    v->items[nitems][il] = '\0';
    v->nitems = ++nitems;
    if (i == n)
      break;
    i++; /* the comma */
  }
  rc = 0;
cleanup:
  free(item);
  return rc;
}

/*
 * Parses one value's text into v (name already set) and its canonical text.
 * CR_EINVAL with `why` (never quoting the value), or CR_ENOMEM.
 */
static int parse_value_text(cr_param_value *v, const char *s, size_t n, char *why, size_t whycap) {
  int rc = CR_EINVAL, integral;
  char num[64];
  snprintf(why, whycap, "expected %s", type_expect(v->type));
  if (n > CR_PARAM_MAX_TEXT) {
    snprintf(why, whycap, "the value is longer than %u bytes", CR_PARAM_MAX_TEXT);
    goto cleanup;
  }
  if (!text_ok(s, n)) {
    snprintf(why, whycap, "expected %s, found invalid UTF-8 or a control character",
             type_expect(v->type));
    goto cleanup;
  }
  switch (v->type) {
  case CR_PARAM_STRING:
    trim(&s, &n);
    if ((v->text = malloc(n + 1)) == NULL) {
      rc = CR_ENOMEM;
      goto cleanup;
    }
    memcpy(v->text, s, n);
    v->text[n] = '\0';
    break;
  case CR_PARAM_STRING_LIST: {
    const char *ts = s;
    size_t tn = n;
    trim(&ts, &tn);
    if (tn == 0) {
      snprintf(why, whycap, "expected %s, found an empty value", type_expect(v->type));
      goto cleanup;
    }
    if ((rc = parse_list(v, s, n, why, whycap)) != 0)
      goto cleanup;
    size_t len = 0, w = 0;
    for (size_t i = 0; i < v->nitems; i++)
      len += 2 * strlen(v->items[i]) + 1;
    if ((v->text = malloc(len + 1)) == NULL) {
      rc = CR_ENOMEM;
      goto cleanup;
    }
    for (size_t i = 0; i < v->nitems; i++) {
      if (i > 0)
        v->text[w++] = ',';
      w += escape_item(v->text + w, v->items[i], strlen(v->items[i]));
    }
    v->text[w] = '\0';
    break;
  }
  case CR_PARAM_INTEGER:
  case CR_PARAM_NUMBER: {
    fnum x;
    trim(&s, &n);
    if (!num_syntax(s, n, 1, 0, &integral) || (v->type == CR_PARAM_INTEGER && !integral))
      goto cleanup;
    if ((rc = num_value(s, n, integral, &x)) != 0) {
      if (rc == CR_ENOMEM)
        goto cleanup;
      rc = CR_EINVAL;
      snprintf(why, whycap, "expected %s, found one out of range", type_expect(v->type));
      goto cleanup;
    }
    rc = CR_EINVAL;
    if (v->type == CR_PARAM_INTEGER) {
      if (!x.is_int) {
        snprintf(why, whycap, "expected %s, found one out of range", type_expect(v->type));
        goto cleanup;
      }
      v->integer = x.i;
      v->number = (double)x.i;
      snprintf(num, sizeof num, "%" PRId64, x.i);
    } else {
      v->number = x.d;
      format_number(num, sizeof num, x.d);
    }
    if ((v->text = strdup(num)) == NULL) {
      rc = CR_ENOMEM;
      goto cleanup;
    }
    break;
  }
  default:
    goto cleanup;
  }
  rc = 0;
cleanup:
  return rc;
}

static int decls_ok(const cr_param_decl *decls, size_t ndecls) {
  if (ndecls > 0 && decls == NULL)
    return 0;
  for (size_t i = 0; i < ndecls; i++)
    if (decls[i].name == NULL || decls[i].type < CR_PARAM_STRING || decls[i].type > CR_PARAM_NUMBER)
      return 0;
  return 1;
}

/*
 * The common core of cr_params_from_args/_pairs: names[i] is namelens[i]
 * bytes (not necessarily NUL-terminated). `peer` selects the wording and
 * the error code.
 */
static int params_build(cr_params *out, const char *const *names, const size_t *namelens,
                        const char *const *texts, size_t n, const cr_param_decl *decls,
                        size_t ndecls, int peer, cr_error *err) {
  const int code = peer ? CR_EPROTO : CR_EUSAGE;
  const char *pre = peer ? "parameter " : "--param ";
  const char *post = peer ? " from the partner" : "";
  char why[256], nb[CR_TEMPLATE_MAX_NAME + 1];
  cr_params p = {NULL, 0};
  int rc;
  if (ndecls > 0 && (p.v = calloc(ndecls, sizeof *p.v)) == NULL) {
    rc = cr_error_set(err, CR_ENOMEM, "out of memory");
    goto cleanup;
  }
  p.n = ndecls;
  for (size_t i = 0; i < n; i++) {
    size_t k;
    for (k = 0; k < ndecls; k++)
      if (strlen(decls[k].name) == namelens[i] && memcmp(decls[k].name, names[i], namelens[i]) == 0)
        break;
    if (k == ndecls) {
      const char *shown = name_or(names[i], namelens[i], nb, sizeof nb, NULL);
      if (shown != NULL)
        rc = cr_error_set(err, code, "%s%s%s: the query declares no such parameter", pre, shown,
                          post);
      else
        rc = cr_error_set(err, code, "%s%u%s: not the name of a declared parameter",
                          peer ? "parameter #" : "--param #", (unsigned)(i + 1), post);
      goto cleanup;
    }
    if (p.v[k].name != NULL) {
      rc = cr_error_set(err, code, "%s%s%s: given twice", pre, decls[k].name, post);
      goto cleanup;
    }
    if ((p.v[k].name = strdup(decls[k].name)) == NULL) {
      rc = cr_error_set(err, CR_ENOMEM, "out of memory");
      goto cleanup;
    }
    p.v[k].type = decls[k].type;
    rc = parse_value_text(&p.v[k], texts[i], strlen(texts[i]), why, sizeof why);
    if (rc == CR_ENOMEM) {
      rc = cr_error_set(err, CR_ENOMEM, "out of memory");
      goto cleanup;
    }
    if (rc != 0) {
      rc = cr_error_set(err, code, "%s%s%s: %s", pre, decls[k].name, post, why);
      goto cleanup;
    }
  }
  for (size_t k = 0; k < ndecls; k++)
    if (p.v[k].name == NULL) {
      rc = cr_error_set(err, code,
                        peer ? "parameter %s (%s) is missing from the partner's Hello"
                             : "--param %s=<%s> is missing",
                        decls[k].name, cr_param_type_name(decls[k].type));
      goto cleanup;
    }
  *out = p;
  p.v = NULL;
  p.n = 0;
  rc = 0;
cleanup:
  cr_params_free(&p);
  return rc;
}

int cr_params_from_args(cr_params *out, const char *const *args, size_t nargs,
                        const cr_param_decl *decls, size_t ndecls, cr_error *err) {
  const char **names = NULL, **texts = NULL;
  size_t *lens = NULL;
  int rc;
  if (out == NULL || (nargs > 0 && args == NULL) || !decls_ok(decls, ndecls))
    return cr_error_set(err, CR_EINVAL, "cr_params_from_args: invalid argument");
  out->v = NULL;
  out->n = 0;
  if (nargs > 0 && ((names = calloc(nargs, sizeof *names)) == NULL ||
                    (texts = calloc(nargs, sizeof *texts)) == NULL ||
                    (lens = calloc(nargs, sizeof *lens)) == NULL)) {
    rc = cr_error_set(err, CR_ENOMEM, "out of memory");
    goto cleanup;
  }
  for (size_t i = 0; i < nargs; i++) {
    const char *eq = args[i] != NULL ? strchr(args[i], '=') : NULL;
    if (eq == NULL || eq == args[i]) {
      rc = cr_error_set(err, CR_EUSAGE, "--param #%zu: expected name=value", i + 1);
      goto cleanup;
    }
    names[i] = args[i];
    lens[i] = (size_t)(eq - args[i]);
    texts[i] = eq + 1;
  }
  rc = params_build(out, names, lens, texts, nargs, decls, ndecls, 0, err);
cleanup:
  free(names);
  free(texts);
  free(lens);
  return rc;
}

int cr_params_from_pairs(cr_params *out, const char *const *names, const char *const *texts,
                         size_t n, const cr_param_decl *decls, size_t ndecls, cr_error *err) {
  size_t *lens = NULL;
  int rc;
  if (out == NULL || (n > 0 && (names == NULL || texts == NULL)) || !decls_ok(decls, ndecls))
    return cr_error_set(err, CR_EINVAL, "cr_params_from_pairs: invalid argument");
  out->v = NULL;
  out->n = 0;
  for (size_t i = 0; i < n; i++)
    if (names[i] == NULL || texts[i] == NULL)
      return cr_error_set(err, CR_EINVAL, "cr_params_from_pairs: invalid argument");
  if (n > 0 && (lens = calloc(n, sizeof *lens)) == NULL) {
    rc = cr_error_set(err, CR_ENOMEM, "out of memory");
    goto cleanup;
  }
  for (size_t i = 0; i < n; i++)
    lens[i] = strlen(names[i]);
  rc = params_build(out, names, lens, texts, n, decls, ndecls, 1, err);
cleanup:
  free(lens);
  return rc;
}

/* ---- Lexer -------------------------------------------------------------- */

typedef enum tok_type {
  T_END = 1,
  T_IDENT,
  T_QIDENT,
  T_STRING,
  T_NUMBER,
  T_PARAM,
  T_LPAREN,
  T_RPAREN,
  T_COMMA,
  T_EQ,
  T_NE,
  T_LT,
  T_LE,
  T_GT,
  T_GE,
  T_AND,
  T_OR,
  T_NOT,
  T_IN,
  T_BETWEEN
} tok_type;

typedef struct tok {
  tok_type type;
  size_t pos; /* byte offset of its first byte */
  size_t len;
  int integral; /* T_NUMBER */
} tok;

typedef struct parser {
  const char *text;
  size_t len;
  size_t at; /* where the next token starts */
  const char *origin;
  const cr_param_decl *decls;
  size_t ndecls;
  cr_filter *f;
  tok cur;
  unsigned depth;
  cr_error *err;
} parser;

static int perr(parser *ps, size_t pos, const char *fmt, ...) CR_PRINTF(3, 4);

/* "<origin>: position N: <msg>\n<excerpt>\n<caret>", the excerpt a window
 * of at most ~100 bytes around pos with control characters as spaces. */
static int perr(parser *ps, size_t pos, const char *fmt, ...) {
  enum { WIN = 100, BEFORE = 50 };
  char msg[512], line[WIN * 4 + 16], caret[WIN + 16];
  size_t start = 0, end = ps->len, w = 0, cw = 0;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  if (pos > ps->len)
    pos = ps->len;
  if (pos > BEFORE)
    start = pos - BEFORE;
  while (start > 0 && ((unsigned char)ps->text[start] & 0xc0) == 0x80)
    start--;
  if (end - start > WIN) {
    end = start + WIN;
    while (end > pos && end < ps->len && ((unsigned char)ps->text[end] & 0xc0) == 0x80)
      end--;
  }
  if (start > 0) {
    memcpy(line, "...", 3);
    memcpy(caret, "   ", 3);
    w = cw = 3;
  }
  for (size_t i = start; i < end; i++) {
    unsigned char c = (unsigned char)ps->text[i];
    line[w++] = (c < 0x20 || c == 0x7f) ? ' ' : (char)c;
    /* One column per character: UTF-8 continuation bytes take none. */
    if (i < pos && (c & 0xc0) != 0x80)
      caret[cw++] = ' ';
  }
  if (end < ps->len) {
    memcpy(line + w, "...", 3);
    w += 3;
  }
  line[w] = '\0';
  caret[cw++] = '^';
  caret[cw] = '\0';
  return cr_error_set(ps->err, CR_ETEMPLATE, "%s: position %zu: %s\n%s\n%s", ps->origin, pos + 1,
                      msg, line, caret);
}

/* How a token is named in "but found ...". */
static const char *describe(const parser *ps, const tok *t, char *buf, size_t cap) {
  char shown[64];
  static const char *const fixed[] = {
      [T_END] = "end of input", [T_LPAREN] = "'('", [T_RPAREN] = "')'",     [T_COMMA] = "','",
      [T_EQ] = "'='",           [T_NE] = "'!='",    [T_LT] = "'<'",         [T_LE] = "'<='",
      [T_GT] = "'>'",           [T_GE] = "'>='",    [T_AND] = "AND",        [T_OR] = "OR",
      [T_NOT] = "NOT",          [T_IN] = "IN",      [T_BETWEEN] = "BETWEEN"};
  show(shown, sizeof shown, ps->text + t->pos, t->len, 40);
  switch (t->type) {
  case T_IDENT:
  case T_QIDENT:
    snprintf(buf, cap, "name %s", shown);
    return buf;
  case T_STRING:
    snprintf(buf, cap, "string %s", shown);
    return buf;
  case T_NUMBER:
    snprintf(buf, cap, "number %s", shown);
    return buf;
  case T_PARAM:
    snprintf(buf, cap, "parameter %s", shown);
    return buf;
  default:
    return fixed[t->type];
  }
}

static int kw(const char *s, size_t n, const char *k) {
  if (strlen(k) != n)
    return 0;
  for (size_t i = 0; i < n; i++) {
    char c = s[i];
    if (c >= 'a' && c <= 'z')
      c = (char)(c - 32);
    if (c != k[i])
      return 0;
  }
  return 1;
}

/* Reads the next token into ps->cur. */
static int lex(parser *ps) {
  const char *s = ps->text;
  size_t n = ps->len, i = ps->at;
  tok *t = &ps->cur;
  while (i < n && is_ws((unsigned char)s[i]))
    i++;
  t->pos = i;
  t->integral = 0;
  if (i == n) {
    t->type = T_END;
    t->len = 0;
    ps->at = i;
    return 0;
  }
  unsigned char c = (unsigned char)s[i];
  if (is_ident_start(c)) {
    while (i < n && is_ident_char((unsigned char)s[i]))
      i++;
    t->len = i - t->pos;
    t->type = kw(s + t->pos, t->len, "AND")       ? T_AND
              : kw(s + t->pos, t->len, "OR")      ? T_OR
              : kw(s + t->pos, t->len, "NOT")     ? T_NOT
              : kw(s + t->pos, t->len, "IN")      ? T_IN
              : kw(s + t->pos, t->len, "BETWEEN") ? T_BETWEEN
                                                  : T_IDENT;
  } else if (c == '\'' || c == '"') {
    /* A doubled quote stands for one. */
    for (i++;; i++) {
      if (i == n)
        return perr(ps, t->pos,
                    c == '\'' ? "unterminated string (write '' for a quote inside one)"
                              : "unterminated quoted name (write \"\" for a quote inside one)");
      if ((unsigned char)s[i] == c) {
        if (i + 1 < n && (unsigned char)s[i + 1] == c)
          i++;
        else
          break;
      }
    }
    i++;
    t->len = i - t->pos;
    t->type = c == '\'' ? T_STRING : T_QIDENT;
    if (c == '"' && t->len == 2)
      return perr(ps, t->pos, "empty quoted name");
  } else if (is_digit(c) || (c == '-' && i + 1 < n && is_digit((unsigned char)s[i + 1]))) {
    size_t e = i + 1;
    /* The longest run that could belong to a number, then its exact syntax. */
    while (e < n && (is_ident_char((unsigned char)s[e]) ||
                     ((s[e] == '+' || s[e] == '-') && (s[e - 1] == 'e' || s[e - 1] == 'E'))))
      e++;
    t->len = e - i;
    t->type = T_NUMBER;
    if (!num_syntax(s + i, t->len, 0, 0, &t->integral))
      return perr(ps, t->pos,
                  "malformed number (expected digits, an optional .digits "
                  "fraction and an optional e[+-]digits exponent)");
    i = e;
  } else if (c == ':') {
    i++;
    if (i == n || !is_ident_start((unsigned char)s[i]))
      return perr(ps, t->pos, "expected a parameter name after ':'");
    while (i < n && is_pname_char((unsigned char)s[i]))
      i++;
    t->len = i - t->pos;
    t->type = T_PARAM;
  } else {
    int two = i + 1 < n;
    char d = two ? s[i + 1] : '\0';
    t->len = 1;
    switch (c) {
    case '(':
      t->type = T_LPAREN;
      break;
    case ')':
      t->type = T_RPAREN;
      break;
    case ',':
      t->type = T_COMMA;
      break;
    case '=':
      t->type = T_EQ;
      break;
    case '!':
      if (d != '=')
        return perr(ps, t->pos, "unexpected '!' (not equal is written !=)");
      t->type = T_NE;
      t->len = 2;
      break;
    case '<':
      t->type = d == '=' ? T_LE : d == '>' ? T_NE : T_LT;
      t->len = t->type == T_LT ? 1 : 2;
      break;
    case '>':
      t->type = d == '=' ? T_GE : T_GT;
      t->len = t->type == T_GT ? 1 : 2;
      break;
    default:
      if (c >= 0x21 && c < 0x7f)
        return perr(ps, t->pos, "unexpected character '%c'", c);
      return perr(ps, t->pos, "unexpected byte 0x%02x", c);
    }
    i += t->len;
  }
  ps->at = i;
  return 0;
}

static int expected(parser *ps, const char *what) {
  char buf[96];
  return perr(ps, ps->cur.pos, "expected %s but found %s", what,
              describe(ps, &ps->cur, buf, sizeof buf));
}

/* ---- Parser ------------------------------------------------------------- */

static int new_node(parser *ps, int kind, uint32_t *out) {
  cr_filter *f = ps->f;
  if (f->nnodes == f->capnodes) {
    uint32_t nc = f->capnodes ? f->capnodes * 2 : 16;
    node *nn = realloc(f->nodes, nc * sizeof *nn);
    if (nn == NULL)
      return cr_error_set(ps->err, CR_ENOMEM, "out of memory");
    f->nodes = nn;
    f->capnodes = nc;
  }
  node *nd = &f->nodes[f->nnodes];
  memset(nd, 0, sizeof *nd);
  nd->kind = kind;
  nd->first = nd->next = NONE;
  nd->a.param = nd->b.param = nd->list_param = -1;
  *out = f->nnodes++;
  return 0;
}

/* Decodes a quoted token ('...' or "...") into the string arena. */
static fstr unquote(parser *ps, const tok *t) {
  const char *s = ps->text + t->pos;
  char q = s[0];
  char *w = ps->f->strbuf + ps->f->strused;
  fstr r = {w, 0};
  for (size_t i = 1; i + 1 < t->len; i++) {
    w[r.n++] = s[i];
    if (s[i] == q)
      i++;
  }
  w[r.n] = '\0';
  ps->f->strused += r.n + 1;
  return r;
}

/* Registers a column name (a T_IDENT or T_QIDENT token). */
static int add_column(parser *ps, const tok *t, uint32_t *out) {
  cr_filter *f = ps->f;
  fstr name;
  if (t->type == T_QIDENT) {
    name = unquote(ps, t);
  } else {
    name.p = ps->text + t->pos;
    name.n = t->len;
  }
  for (size_t i = 0; i < f->ncols; i++)
    if (strlen(f->cols[i]) == name.n && memcmp(f->cols[i], name.p, name.n) == 0) {
      *out = (uint32_t)i;
      return 0;
    }
  if (f->ncols == f->capcols) {
    size_t nc = f->capcols ? f->capcols * 2 : 8;
    char **ncols = realloc(f->cols, nc * sizeof *ncols);
    if (ncols == NULL)
      return cr_error_set(ps->err, CR_ENOMEM, "out of memory");
    f->cols = ncols;
    f->capcols = nc;
  }
  if ((f->cols[f->ncols] = malloc(name.n + 1)) == NULL)
    return cr_error_set(ps->err, CR_ENOMEM, "out of memory");
  memcpy(f->cols[f->ncols], name.p, name.n);
  f->cols[f->ncols][name.n] = '\0';
  *out = (uint32_t)f->ncols++;
  return 0;
}

/* Resolves the T_PARAM token against the decls; *idx in f->params. */
static int use_param(parser *ps, cr_param_type *type, int32_t *idx) {
  cr_filter *f = ps->f;
  const char *name = ps->text + ps->cur.pos + 1;
  size_t n = ps->cur.len - 1, k;
  char shown[CR_TEMPLATE_MAX_NAME + 8];
  for (k = 0; k < ps->ndecls; k++)
    if (strlen(ps->decls[k].name) == n && memcmp(ps->decls[k].name, name, n) == 0)
      break;
  if (k == ps->ndecls) {
    show(shown, sizeof shown, name, n, CR_TEMPLATE_MAX_NAME);
    return perr(ps, ps->cur.pos, "parameter :%s is not declared in the query's params", shown);
  }
  *type = ps->decls[k].type;
  for (size_t i = 0; i < f->nparams; i++)
    if (strcmp(f->params[i].name, ps->decls[k].name) == 0) {
      *idx = (int32_t)i;
      return 0;
    }
  if (f->nparams == f->capparams) {
    size_t nc = f->capparams ? f->capparams * 2 : 4;
    fparam *np = realloc(f->params, nc * sizeof *np);
    if (np == NULL)
      return cr_error_set(ps->err, CR_ENOMEM, "out of memory");
    f->params = np;
    f->capparams = nc;
  }
  fparam *fp = &f->params[f->nparams];
  memset(fp, 0, sizeof *fp);
  if ((fp->name = strdup(ps->decls[k].name)) == NULL)
    return cr_error_set(ps->err, CR_ENOMEM, "out of memory");
  fp->type = *type;
  fp->val.param = -1;
  *idx = (int32_t)f->nparams++;
  return 0;
}

/* string | number | :param (not a string_list), after a comparison or in
 * BETWEEN. */
static int parse_operand(parser *ps, operand *o) {
  int rc;
  o->pos = ps->cur.pos;
  o->param = -1;
  switch (ps->cur.type) {
  case T_STRING:
    o->kind = K_STR;
    o->s = unquote(ps, &ps->cur);
    break;
  case T_NUMBER:
    o->kind = K_NUM;
    if ((rc = num_value(ps->text + ps->cur.pos, ps->cur.len, ps->cur.integral, &o->x)) != 0)
      return rc == CR_ENOMEM ? cr_error_set(ps->err, CR_ENOMEM, "out of memory")
                             : perr(ps, ps->cur.pos, "number out of range");
    break;
  case T_PARAM: {
    cr_param_type type = CR_PARAM_STRING; /* set by use_param when it returns 0 */
    if ((rc = use_param(ps, &type, &o->param)) != 0)
      return rc;
    if (type == CR_PARAM_STRING_LIST)
      return perr(ps, ps->cur.pos,
                  "parameter %.*s is a string_list, which can only be used after IN",
                  (int)ps->cur.len, ps->text + ps->cur.pos);
    o->kind = type == CR_PARAM_STRING ? K_STR : K_NUM;
    break;
  }
  default:
    return expected(ps, "a string, a number or a :parameter");
  }
  return lex(ps);
}

/* IN ( item, ... ) with items of one kind, sorted for binary search. */
static int parse_list_literal(parser *ps, flist *l) {
  size_t cap = 0;
  int rc;
  if ((rc = lex(ps)) != 0) /* past '(' */
    return rc;
  for (;;) {
    int kind = ps->cur.type == T_STRING ? K_STR : ps->cur.type == T_NUMBER ? K_NUM : 0;
    if (kind == 0)
      return expected(ps, l->n == 0          ? "a string or a number"
                          : l->kind == K_STR ? "a string"
                                             : "a number");
    if (l->n > 0 && kind != l->kind) {
      char buf[96];
      return perr(ps, ps->cur.pos, "expected %s (a list holds one kind) but found %s",
                  l->kind == K_STR ? "a string" : "a number",
                  describe(ps, &ps->cur, buf, sizeof buf));
    }
    if (l->n == CR_FILTER_MAX_LIST)
      return perr(ps, ps->cur.pos, "list longer than %u items", CR_FILTER_MAX_LIST);
    l->kind = kind;
    if (l->n == cap) {
      size_t nc = cap ? cap * 2 : 8;
      if (kind == K_STR) {
        fstr *ns = realloc(l->s, nc * sizeof *ns);
        if (ns == NULL)
          return cr_error_set(ps->err, CR_ENOMEM, "out of memory");
        l->s = ns;
      } else {
        fnum *nx = realloc(l->x, nc * sizeof *nx);
        if (nx == NULL)
          return cr_error_set(ps->err, CR_ENOMEM, "out of memory");
        l->x = nx;
      }
      cap = nc;
    }
    if (kind == K_STR) {
      l->s[l->n] = unquote(ps, &ps->cur);
    } else if ((rc = num_value(ps->text + ps->cur.pos, ps->cur.len, ps->cur.integral,
                               &l->x[l->n])) != 0) {
      return rc == CR_ENOMEM ? cr_error_set(ps->err, CR_ENOMEM, "out of memory")
                             : perr(ps, ps->cur.pos, "number out of range");
    }
    l->n++;
    if ((rc = lex(ps)) != 0)
      return rc;
    if (ps->cur.type == T_RPAREN)
      break;
    if (ps->cur.type != T_COMMA)
      return expected(ps, "',' or ')'");
    if ((rc = lex(ps)) != 0)
      return rc;
  }
  if (l->kind == K_STR)
    qsort(l->s, l->n, sizeof *l->s, fstr_qcmp);
  else
    qsort(l->x, l->n, sizeof *l->x, fnum_qcmp);
  return lex(ps); /* past ')' */
}

static int cmp_op(tok_type t) {
  switch (t) {
  case T_EQ:
    return OP_EQ;
  case T_NE:
    return OP_NE;
  case T_LT:
    return OP_LT;
  case T_LE:
    return OP_LE;
  case T_GT:
    return OP_GT;
  case T_GE:
    return OP_GE;
  default:
    return 0;
  }
}

/* column op value | column [NOT] IN (...) | column [NOT] IN :list |
 * column [NOT] BETWEEN value AND value */
static int parse_predicate(parser *ps, uint32_t *out) {
  uint32_t col = 0, id = 0;
  int rc, neg = 0, op;
  tok coltok = ps->cur;
  if (ps->cur.type != T_IDENT && ps->cur.type != T_QIDENT)
    return expected(ps, "a column name, NOT or '('");
  if ((rc = add_column(ps, &coltok, &col)) != 0 || (rc = lex(ps)) != 0)
    return rc;
  if ((op = cmp_op(ps->cur.type)) != 0) {
    if ((rc = new_node(ps, N_CMP, &id)) != 0)
      return rc;
    ps->f->nodes[id].col = col;
    ps->f->nodes[id].op = op;
    if ((rc = lex(ps)) != 0 || (rc = parse_operand(ps, &ps->f->nodes[id].a)) != 0)
      return rc;
    *out = id;
    return 0;
  }
  if (ps->cur.type == T_NOT) {
    neg = 1;
    if ((rc = lex(ps)) != 0)
      return rc;
    if (ps->cur.type != T_IN && ps->cur.type != T_BETWEEN)
      return expected(ps, "IN or BETWEEN after NOT");
  }
  if (ps->cur.type == T_IN) {
    if ((rc = new_node(ps, N_IN, &id)) != 0)
      return rc;
    ps->f->nodes[id].col = col;
    ps->f->nodes[id].neg = neg;
    if ((rc = lex(ps)) != 0)
      return rc;
    if (ps->cur.type == T_LPAREN)
      rc = parse_list_literal(ps, &ps->f->nodes[id].list);
    else if (ps->cur.type != T_PARAM)
      rc = expected(ps, "'(' or a :parameter after IN");
    else {
      cr_param_type type = CR_PARAM_STRING; /* set by use_param on success */
      int32_t idx = -1;
      if ((rc = use_param(ps, &type, &idx)) != 0)
        return rc;
      if (type != CR_PARAM_STRING_LIST)
        return perr(ps, ps->cur.pos, "IN needs a string_list parameter, but %.*s is %s %s",
                    (int)ps->cur.len, ps->text + ps->cur.pos, type_article(type),
                    cr_param_type_name(type));
      ps->f->nodes[id].list_param = idx;
      rc = lex(ps);
    }
    if (rc != 0)
      return rc;
    *out = id;
    return 0;
  }
  if (ps->cur.type == T_BETWEEN) {
    if ((rc = new_node(ps, N_BETWEEN, &id)) != 0)
      return rc;
    ps->f->nodes[id].col = col;
    ps->f->nodes[id].neg = neg;
    if ((rc = lex(ps)) != 0 || (rc = parse_operand(ps, &ps->f->nodes[id].a)) != 0)
      return rc;
    if (ps->cur.type != T_AND)
      return expected(ps, "AND (BETWEEN low AND high)");
    if ((rc = lex(ps)) != 0 || (rc = parse_operand(ps, &ps->f->nodes[id].b)) != 0)
      return rc;
    const operand *a = &ps->f->nodes[id].a, *b = &ps->f->nodes[id].b;
    if (a->kind != b->kind)
      return perr(ps, b->pos, "BETWEEN bounds must be of one kind, found %s and %s",
                  a->kind == K_STR ? "a string" : "a number",
                  b->kind == K_STR ? "a string" : "a number");
    *out = id;
    return 0;
  }
  return expected(ps, "a comparison (=, !=, <, <=, >, >=), IN, NOT IN, BETWEEN or NOT BETWEEN");
}

static int parse_or(parser *ps, uint32_t *out);

static int enter(parser *ps) {
  if (++ps->depth > CR_FILTER_MAX_DEPTH)
    return perr(ps, ps->cur.pos, "nested deeper than %u levels of parentheses and NOT",
                CR_FILTER_MAX_DEPTH);
  return 0;
}

/* NOT not | '(' or ')' | predicate */
static int parse_not(parser *ps, uint32_t *out) {
  uint32_t id = 0, child = 0; /* set by the calls below when they return 0 */
  int rc;
  if (ps->cur.type == T_NOT) {
    if ((rc = enter(ps)) != 0 || (rc = lex(ps)) != 0 || (rc = parse_not(ps, &child)) != 0)
      return rc;
    ps->depth--;
    if ((rc = new_node(ps, N_NOT, &id)) != 0)
      return rc;
    ps->f->nodes[id].first = child;
    *out = id;
    return 0;
  }
  if (ps->cur.type == T_LPAREN) {
    if ((rc = enter(ps)) != 0 || (rc = lex(ps)) != 0 || (rc = parse_or(ps, out)) != 0)
      return rc;
    if (ps->cur.type != T_RPAREN)
      return expected(ps, "AND, OR or ')'");
    ps->depth--;
    return lex(ps);
  }
  return parse_predicate(ps, out);
}

/* One of sub (AND|OR) sub ...; a single operand is returned as is. */
static int parse_chain(parser *ps, int kind, uint32_t *out) {
  tok_type sep = kind == N_OR ? T_OR : T_AND;
  uint32_t first = 0, last, id = 0, child = 0; /* set by the calls below when they return 0 */
  int rc = kind == N_OR ? parse_chain(ps, N_AND, &first) : parse_not(ps, &first);
  if (rc != 0)
    return rc;
  if (ps->cur.type != sep) {
    *out = first;
    return 0;
  }
  if ((rc = new_node(ps, kind, &id)) != 0)
    return rc;
  ps->f->nodes[id].first = last = first;
  while (ps->cur.type == sep) {
    if ((rc = lex(ps)) != 0)
      return rc;
    rc = kind == N_OR ? parse_chain(ps, N_AND, &child) : parse_not(ps, &child);
    if (rc != 0)
      return rc;
    ps->f->nodes[last].next = child;
    last = child;
  }
  *out = id;
  return 0;
}

static int parse_or(parser *ps, uint32_t *out) { return parse_chain(ps, N_OR, out); }

static void flist_free(flist *l) {
  free(l->s);
  free(l->x);
  memset(l, 0, sizeof *l);
}

static void unbind(cr_filter *f) {
  free(f->colidx);
  f->colidx = NULL;
  for (size_t i = 0; i < f->nparams; i++) {
    flist_free(&f->params[i].list);
    free(f->params[i].store);
    f->params[i].store = NULL;
    memset(&f->params[i].val, 0, sizeof f->params[i].val);
  }
  f->bound = 0;
}

void cr_filter_free(cr_filter *f) {
  if (f == NULL)
    return;
  unbind(f);
  for (uint32_t i = 0; i < f->nnodes; i++)
    flist_free(&f->nodes[i].list);
  free(f->nodes);
  for (size_t i = 0; i < f->ncols; i++)
    free(f->cols[i]);
  free(f->cols);
  for (size_t i = 0; i < f->nparams; i++)
    free(f->params[i].name);
  free(f->params);
  free(f->strbuf);
  free(f->origin);
  free(f);
}

int cr_filter_parse_where(cr_filter **out, const cr_query *q, cr_role r, cr_error *err) {
  char origin[CR_TEMPLATE_MAX_NAME + 64];
  if (out == NULL || q == NULL || (unsigned)r >= CR_ROLE_COUNT || q->where[r] == NULL)
    return cr_error_set(err, CR_EINVAL, "cr_filter_parse_where: invalid argument");
  snprintf(origin, sizeof origin, "$.queries.%s.where.%s", q->name, cr_role_name(r));
  return cr_filter_parse(out, q->where[r], q->params, q->nparams, origin, err);
}

int cr_filter_parse(cr_filter **out, const char *text, const cr_param_decl *decls, size_t ndecls,
                    const char *origin, cr_error *err) {
  cr_filter *f = NULL;
  parser ps;
  size_t len;
  int rc;
  if (out == NULL)
    return cr_error_set(err, CR_EINVAL, "cr_filter_parse: invalid argument");
  *out = NULL;
  if (text == NULL || !decls_ok(decls, ndecls))
    return cr_error_set(err, CR_EINVAL, "cr_filter_parse: invalid argument");
  if (origin == NULL)
    origin = "filter";
  len = strlen(text);
  if (len > CR_FILTER_MAX_TEXT)
    return cr_error_set(err, CR_ETEMPLATE, "%s: the filter is %zu bytes long, at most %u", origin,
                        len, CR_FILTER_MAX_TEXT);
  if ((f = calloc(1, sizeof *f)) == NULL || (f->origin = strdup(origin)) == NULL ||
      (f->strbuf = malloc(len + 1)) == NULL) {
    rc = cr_error_set(err, CR_ENOMEM, "out of memory");
    goto cleanup;
  }
  memset(&ps, 0, sizeof ps);
  ps.text = text;
  ps.len = len;
  ps.origin = origin;
  ps.decls = decls;
  ps.ndecls = ndecls;
  ps.f = f;
  ps.err = err;
  if ((rc = lex(&ps)) != 0 || (rc = parse_or(&ps, &f->root)) != 0)
    goto cleanup;
  if (ps.cur.type != T_END) {
    rc = expected(&ps, "AND, OR or the end of the filter");
    goto cleanup;
  }
  *out = f;
  f = NULL;
  rc = 0;
cleanup:
  cr_filter_free(f);
  return rc;
}

size_t cr_filter_columns(const cr_filter *f, const char *const **names) {
  if (f == NULL) {
    if (names != NULL)
      *names = NULL;
    return 0;
  }
  if (names != NULL)
    *names = (const char *const *)f->cols;
  return f->ncols;
}

/* ---- Binding ------------------------------------------------------------ */

static int bind_param(fparam *fp, const cr_param_value *v) {
  switch (fp->type) {
  case CR_PARAM_STRING: {
    size_t n = strlen(v->text);
    if ((fp->store = malloc(n + 1)) == NULL)
      return CR_ENOMEM;
    memcpy(fp->store, v->text, n + 1);
    fp->val.kind = K_STR;
    fp->val.s.p = fp->store;
    fp->val.s.n = n;
    return 0;
  }
  case CR_PARAM_INTEGER:
    fp->val.kind = K_NUM;
    fp->val.x.d = (double)v->integer;
    fp->val.x.i = v->integer;
    fp->val.x.is_int = 1;
    return 0;
  case CR_PARAM_NUMBER:
    fp->val.kind = K_NUM;
    fp->val.x.d = v->number;
    fp->val.x.is_int = 0;
    return 0;
  case CR_PARAM_STRING_LIST: {
    size_t total = 1, w = 0;
    for (size_t i = 0; i < v->nitems; i++)
      total += strlen(v->items[i]);
    if ((fp->store = malloc(total)) == NULL ||
        (v->nitems > 0 && (fp->list.s = calloc(v->nitems, sizeof *fp->list.s)) == NULL))
      return CR_ENOMEM;
    for (size_t i = 0; i < v->nitems; i++) {
      size_t n = strlen(v->items[i]);
      memcpy(fp->store + w, v->items[i], n);
      fp->list.s[i].p = fp->store + w;
      fp->list.s[i].n = n;
      w += n;
    }
    fp->list.kind = K_STR;
    fp->list.n = v->nitems;
    if (v->nitems > 0)
      qsort(fp->list.s, fp->list.n, sizeof *fp->list.s, fstr_qcmp);
    return 0;
  }
  default:
    return CR_EINVAL;
  }
}

int cr_filter_bind(cr_filter *f, const cr_params *p, const char *const *header, size_t ncols,
                   cr_error *err) {
  char shown[96];
  int rc;
  if (f == NULL || (ncols > 0 && header == NULL))
    return cr_error_set(err, CR_EINVAL, "cr_filter_bind: invalid argument");
  unbind(f);
  if (f->ncols > 0 && (f->colidx = calloc(f->ncols, sizeof *f->colidx)) == NULL) {
    rc = cr_error_set(err, CR_ENOMEM, "out of memory");
    goto cleanup;
  }
  for (size_t c = 0; c < f->ncols; c++) {
    size_t found = SIZE_MAX;
    for (size_t h = 0; h < ncols; h++) {
      /* As every column name: case-insensitive (header names are trimmed). */
      if (header[h] == NULL || strcasecmp(header[h], f->cols[c]) != 0)
        continue;
      if (found != SIZE_MAX) {
        show(shown, sizeof shown, f->cols[c], strlen(f->cols[c]), 64);
        rc = cr_error_set(err, CR_EDATA,
                          "%s: column \"%s\" used in the filter appears more than once "
                          "in the data's header",
                          f->origin, shown);
        goto cleanup;
      }
      found = h;
    }
    if (found == SIZE_MAX) {
      show(shown, sizeof shown, f->cols[c], strlen(f->cols[c]), 64);
      rc = cr_error_set(err, CR_EDATA,
                        "%s: column \"%s\" used in the filter is not in the data's header",
                        f->origin, shown);
      goto cleanup;
    }
    f->colidx[c] = found;
  }
  for (size_t i = 0; i < f->nparams; i++) {
    fparam *fp = &f->params[i];
    const cr_param_value *v = cr_params_get(p, fp->name);
    if (v == NULL || v->text == NULL) {
      rc = cr_error_set(err, CR_EINVAL, "%s: parameter :%s used in the filter has no value",
                        f->origin, fp->name);
      goto cleanup;
    }
    if (v->type != fp->type) {
      rc =
          cr_error_set(err, CR_EINVAL, "%s: parameter :%s is declared %s %s but its value is %s %s",
                       f->origin, fp->name, type_article(fp->type), cr_param_type_name(fp->type),
                       type_article(v->type), cr_param_type_name(v->type));
      goto cleanup;
    }
    if ((rc = bind_param(fp, v)) != 0) {
      rc = cr_error_set(err, rc, "%s", rc == CR_ENOMEM ? "out of memory" : "invalid argument");
      goto cleanup;
    }
  }
  f->bound = 1;
  rc = 0;
cleanup:
  if (rc != 0)
    unbind(f);
  return rc;
}

/* ---- Evaluation --------------------------------------------------------- */

/* The field as a number: trimmed, the literal syntax (also "+5", "5." and
 * ".5"), at most NUM_FIELD_MAX bytes, finite. */
static int field_num(const char *s, size_t n, fnum *out) {
  int integral;
  if (n == 0 || n > NUM_FIELD_MAX || !num_syntax(s, n, 1, 1, &integral))
    return 0;
  return num_value(s, n, integral, out) == 0;
}

static int op_holds(int op, int c) {
  switch (op) {
  case OP_EQ:
    return c == 0;
  case OP_NE:
    return c != 0;
  case OP_LT:
    return c < 0;
  case OP_LE:
    return c <= 0;
  case OP_GT:
    return c > 0;
  default:
    return c >= 0;
  }
}

static const operand *resolve(const cr_filter *f, const operand *o) {
  return o->param >= 0 ? &f->params[o->param].val : o;
}

/* Field `v` against operand o: *c = field <=> o; 0 if not comparable. */
static int compare(const char *p, size_t n, const operand *o, int *c) {
  if (o->kind == K_STR) {
    *c = str_cmp(p, n, o->s.p, o->s.n);
    return 1;
  }
  fnum x;
  if (!field_num(p, n, &x))
    return 0;
  *c = num_cmp(&x, &o->x);
  return 1;
}

/* 1 if the field is in l, 0 if not, -1 if l holds numbers and the field is
 * not one. */
static int in_list(const char *p, size_t n, const flist *l) {
  size_t lo = 0, hi = l->n;
  if (l->kind == K_STR) {
    while (lo < hi) {
      size_t mid = lo + (hi - lo) / 2;
      int c = str_cmp(l->s[mid].p, l->s[mid].n, p, n);
      if (c == 0)
        return 1;
      if (c < 0)
        lo = mid + 1;
      else
        hi = mid;
    }
    return 0;
  }
  fnum x;
  if (l->kind != K_NUM || !field_num(p, n, &x))
    return -1;
  while (lo < hi) { /* first item with d >= x.d */
    size_t mid = lo + (hi - lo) / 2;
    if (l->x[mid].d < x.d)
      lo = mid + 1;
    else
      hi = mid;
  }
  for (; lo < l->n && l->x[lo].d == x.d; lo++)
    if (num_cmp(&x, &l->x[lo]) == 0)
      return 1;
  return 0;
}

static int eval_node(const cr_filter *f, uint32_t id, const char *const *fields, const size_t *lens,
                     size_t nfields) {
  const node *nd = &f->nodes[id];
  const char *p = "";
  size_t n = 0;
  int c, r;
  switch (nd->kind) {
  case N_AND:
    for (uint32_t k = nd->first; k != NONE; k = f->nodes[k].next)
      if (!eval_node(f, k, fields, lens, nfields))
        return 0;
    return 1;
  case N_OR:
    for (uint32_t k = nd->first; k != NONE; k = f->nodes[k].next)
      if (eval_node(f, k, fields, lens, nfields))
        return 1;
    return 0;
  case N_NOT:
    return !eval_node(f, nd->first, fields, lens, nfields);
  default:
    break;
  }
  size_t fi = f->colidx[nd->col];
  if (fi < nfields && fields[fi] != NULL) {
    p = fields[fi];
    n = lens != NULL ? lens[fi] : strlen(p);
  }
  trim(&p, &n);
  switch (nd->kind) {
  case N_CMP:
    return compare(p, n, resolve(f, &nd->a), &c) && op_holds(nd->op, c);
  case N_IN:
    /* NOT IN on a field that is not a number stays false, like the
     * comparisons it stands for (x != a AND x != b ...). */
    r = in_list(p, n, nd->list_param >= 0 ? &f->params[nd->list_param].list : &nd->list);
    return r < 0 ? 0 : nd->neg ? !r : r;
  case N_BETWEEN: {
    int c2;
    r = compare(p, n, resolve(f, &nd->a), &c) && c >= 0 && compare(p, n, resolve(f, &nd->b), &c2) &&
        c2 <= 0;
    if (nd->neg) {
      /* NOT BETWEEN on a field that is not a number stays false, like the
       * comparisons it stands for (x < low OR x > high). */
      fnum x;
      if (resolve(f, &nd->a)->kind == K_NUM && !field_num(p, n, &x))
        return 0;
      return !r;
    }
    return r;
  }
  default:
    return 0;
  }
}

int cr_filter_eval(const cr_filter *f, const char *const *fields, const size_t *lens,
                   size_t nfields) {
  if (f == NULL || !f->bound || (nfields > 0 && fields == NULL))
    return 0;
  return eval_node(f, f->root, fields, lens, nfields);
}
