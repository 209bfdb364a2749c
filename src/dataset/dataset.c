/*
 * Loading a party's data: column checks against the template, one pass over
 * the rows of its source (streamed, never the whole file or result in
 * memory), per-reason rejection counts, then sort + unique of the accepted
 * keys into one arena. The source (CSV, SQLite, PostgreSQL) is only ever
 * seen through cr_source, so every kind is treated the same, and so with
 * several match keys, where each accepted row goes to records.c instead.
 *
 * Messages name the file, line numbers, column names and counts. They never
 * quote a cell: the only cells ever shown are header names, and only those
 * that look like column names (a file without a header row would otherwise
 * put its first record into the "columns found" list).
 */
#include "cleanroom/dataset.h"

#include "dataset/dataset_internal.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

struct key_ref {
  const uint8_t *p;
  size_t len;
  size_t row;     /* order of acceptance: the first row of a key wins */
  uint32_t label; /* index into the unsorted label table */
};

/* Labels as met in the file; sorted into the dataset at the end. */
struct label_table {
  char **names;
  size_t n, cap;
};

static void labels_free(struct label_table *lt) {
  for (size_t i = 0; i < lt->n; i++)
    free(lt->names[i]);
  free(lt->names);
  lt->names = NULL;
  lt->n = lt->cap = 0;
}

/* Index of a label, adding it if new; -1 with no memory or too many. */
static long label_id(struct label_table *lt, const char *v, size_t len) {
  while (len > 0 && (*v == ' ' || *v == '\t')) {
    v++;
    len--;
  }
  while (len > 0 && (v[len - 1] == ' ' || v[len - 1] == '\t'))
    len--;
  if (len > CR_DATASET_MAX_LABEL_BYTES)
    len = CR_DATASET_MAX_LABEL_BYTES;
  for (size_t i = 0; i < lt->n; i++)
    if (strncmp(lt->names[i], v, len) == 0 && lt->names[i][len] == '\0')
      return (long)i;
  if (lt->n >= CR_DATASET_MAX_LABELS)
    return -2;
  if (lt->n == lt->cap) {
    size_t cap = lt->cap ? lt->cap * 2 : 16;
    char **p = realloc(lt->names, cap * sizeof *p);
    if (p == NULL)
      return -1;
    lt->names = p;
    lt->cap = cap;
  }
  char *name = malloc(len + 1);
  if (name == NULL)
    return -1;
  memcpy(name, v, len);
  name[len] = '\0';
  lt->names[lt->n] = name;
  return (long)lt->n++;
}

void cr_dataset_options_init(cr_dataset_options *opt) {
  if (opt == NULL)
    return;
  memset(opt, 0, sizeof *opt);
  opt->max_reject_ratio = CR_DATASET_DEFAULT_MAX_REJECT_RATIO;
}

/* A header name that may appear in a message: short, identifier-like, with a
 * letter. E-mail addresses, phone numbers and free text do not qualify. */
static int showable(const char *s) {
  size_t n = strlen(s);
  int letter = 0;
  if (n == 0 || n > 64)
    return 0;
  for (size_t i = 0; i < n; i++) {
    char c = s[i];
    int alpha = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
    letter |= alpha;
    if (!alpha && !(c >= '0' && c <= '9') && c != '_' && c != '-' && c != '.')
      return 0;
  }
  return letter;
}

/* Appends to a message buffer, truncating quietly at its end. */
static void msg_add(char *buf, size_t cap, size_t *len, const char *fmt, ...) CR_PRINTF(4, 5);
static void msg_add(char *buf, size_t cap, size_t *len, const char *fmt, ...) {
  if (*len >= cap - 1)
    return;
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(buf + *len, cap - *len, fmt, ap);
  va_end(ap);
  if (n < 0)
    return;
  *len = (size_t)n >= cap - *len ? cap - 1 : *len + (size_t)n;
}

/* "email, segment, signup_year". If any field of the header row does not look
 * like a column name, the row is probably data (no header row): then none of
 * it is shown, since identifier-like cells ("smart_home") are data too. */
static void describe_header(char *buf, size_t cap, char **hdr, size_t nhdr) {
  size_t len = 0;
  buf[0] = '\0';
  for (size_t i = 0; i < nhdr; i++) {
    if (hdr[i][0] != '\0' && !showable(hdr[i])) {
      msg_add(buf, cap, &len,
              "%zu field%s, not listed because field %zu does not look like a "
              "column name: is the header row missing?",
              nhdr, nhdr == 1 ? "" : "s", i + 1);
      return;
    }
  }
  for (size_t i = 0; i < nhdr; i++)
    msg_add(buf, cap, &len, "%s%s", i ? ", " : "", hdr[i][0] ? hdr[i] : "(unnamed)");
}

/* "invalid_email 300, missing_value 12; first rejected lines: 4, 17, 23" */
static void describe_rejects(char *buf, size_t cap, const cr_dataset *d) {
  size_t len = 0, k = 0;
  buf[0] = '\0';
  for (int r = 0; r < CR_REJECT_COUNT; r++) {
    if (d->rejected[r] == 0)
      continue;
    msg_add(buf, cap, &len, "%s%s %llu", k++ ? ", " : "", cr_reject_key((cr_reject_reason)r),
            (unsigned long long)d->rejected[r]);
  }
  for (size_t i = 0; i < d->nreject_lines; i++) {
    if (i == 0)
      msg_add(buf, cap, &len, "; first rejected %ss: ", d->pos_unit ? d->pos_unit : "line");
    msg_add(buf, cap, &len, "%s%llu", i ? ", " : "", (unsigned long long)d->reject_lines[i]);
  }
}

/* Column names compare as people read them: case-insensitive, trimmed (the
 * source trims them). */
static int find_col(char **hdr, size_t nhdr, const char *name, size_t *idx) {
  for (size_t i = 0; i < nhdr; i++) {
    if (cr__colname_eq(hdr[i], name)) {
      *idx = i;
      return 1;
    }
  }
  return 0;
}

static void free_header(char **hdr, size_t nhdr) {
  if (hdr == NULL)
    return;
  for (size_t i = 0; i < nhdr; i++)
    free(hdr[i]);
  free(hdr);
}

/* A copy of the source's columns; refuses two of the same (non-empty) name,
 * in any case. */
static int read_header(cr_source *src, const char *path, char ***out, size_t *out_n,
                       cr_error *err) {
  const char *const *names = NULL;
  size_t n = cr_source_columns(src, &names);
  int db = cr_source_kind_get(src) != CR_SOURCE_CSV;
  char **hdr = calloc(n ? n : 1, sizeof *hdr);
  if (hdr == NULL)
    return cr_error_set(err, CR_ENOMEM, "%s: out of memory", path);
  for (size_t i = 0; i < n; i++) {
    if ((hdr[i] = strdup(names[i])) == NULL) {
      free_header(hdr, i);
      return cr_error_set(err, CR_ENOMEM, "%s: out of memory", path);
    }
  }
  for (size_t i = 0; i < n; i++) {
    for (size_t j = i + 1; j < n; j++) {
      if (hdr[i][0] == '\0' || !cr__colname_eq(hdr[i], hdr[j]))
        continue;
      int rc;
      if (showable(hdr[i]))
        rc = cr_error_set(err, CR_EDATA,
                          "%s: the %s names column \"%s\" twice (columns %zu and %zu; names "
                          "are compared without regard to case); column names must be unique%s",
                          path, db ? "data query" : "header", hdr[i], i + 1, j + 1,
                          db ? " (give one an alias: AS name)" : "");
      else
        rc = cr_error_set(err, CR_EDATA,
                          "%s: %s columns %zu and %zu have the same name; column names must "
                          "be unique",
                          path, db ? "the data query's" : "header", i + 1, j + 1);
      free_header(hdr, n);
      return rc;
    }
  }
  *out = hdr;
  *out_n = n;
  return 0;
}

static int missing_column(cr_error *err, const char *path, const char *col, const char *why,
                          char **hdr, size_t nhdr, cr_source_kind kind) {
  char found[600];
  describe_header(found, sizeof found, hdr, nhdr);
  return cr_error_set(err, CR_EDATA, "%s: missing column \"%s\" (%s); the %s has: %s", path, col,
                      why, kind == CR_SOURCE_CSV ? "header" : "data query's result", found);
}

/* Hands the reader the showable header names for its messages. */
static int name_fields(cr_source *src, char **hdr, size_t nhdr) {
  const char **names = calloc(nhdr ? nhdr : 1, sizeof *names);
  if (names == NULL)
    return CR_ENOMEM;
  for (size_t i = 0; i < nhdr; i++)
    names[i] = showable(hdr[i]) ? hdr[i] : NULL;
  int rc = cr_source_set_field_names(src, names, nhdr);
  free(names);
  return rc;
}

/* Length of the UTF-8 character starting at s[0] (1 for a stray byte). */
static size_t utf8_char_len(const uint8_t *s, size_t n) {
  size_t k = s[0] < 0x80 ? 1 : s[0] >= 0xf0 ? 4 : s[0] >= 0xe0 ? 3 : s[0] >= 0xc0 ? 2 : 1;
  return k > n ? n : k;
}

/* Start of the last UTF-8 character of s[0..n). */
static size_t utf8_last_start(const uint8_t *s, size_t n) {
  size_t i = n - 1;
  while (i > 0 && (s[i] & 0xc0) == 0x80 && n - i < 4)
    i--;
  return i;
}

void cr_dataset_mask_key(const uint8_t *key, size_t len, char *out, size_t cap) {
  static const char ell[] = "\xe2\x80\xa6"; /* … */
  size_t o = 0;
  if (cap == 0)
    return;
  out[0] = '\0';
  size_t start = 0;
  for (size_t i = 0; i <= len; i++) {
    if (i < len && key[i] != 0x1f)
      continue;
    const uint8_t *part = key + start;
    size_t plen = i - start, chars = 0;
    for (size_t k = 0; k < plen; k += utf8_char_len(part + k, plen - k))
      chars++;
    /* The part's shown characters (bytes of UTF-8, never a NUL). */
    uint8_t piece[32];
    size_t pl = 0;
    size_t first = plen ? utf8_char_len(part, plen) : 0;
    size_t last = plen ? utf8_last_start(part, plen) : 0;
    if (chars >= 3)
      for (size_t k = 0; k < first; k++)
        piece[pl++] = part[k];
    for (size_t k = 0; k < 3; k++)
      piece[pl++] = (uint8_t)ell[k];
    if (chars >= 5)
      for (size_t k = last; k < plen; k++)
        piece[pl++] = part[k];
    const char *sep = start > 0 ? " | " : "";
    size_t sl = strlen(sep);
    if (o + sl + pl + 1 > cap)
      break;
    for (size_t k = 0; k < sl; k++)
      out[o++] = sep[k];
    for (size_t k = 0; k < pl; k++)
      out[o++] = (char)piece[k];
    out[o] = '\0';
    sodium_memzero(piece, sizeof piece);
    start = i + 1;
  }
}

static int cmp_key(const void *a, const void *b) {
  const struct key_ref *x = a, *y = b;
  size_t n = x->len < y->len ? x->len : y->len;
  int c = n ? memcmp(x->p, y->p, n) : 0;
  if (c != 0)
    return c;
  return (x->len > y->len) - (x->len < y->len);
}

/* Key order, then file order, so the first row of a key comes first. */
static int cmp_key_row(const void *a, const void *b) {
  int c = cmp_key(a, b);
  if (c != 0)
    return c;
  const struct key_ref *x = a, *y = b;
  return (x->row > y->row) - (x->row < y->row);
}

static int cmp_name(const void *a, const void *b) {
  return strcmp(*(char *const *)a, *(char *const *)b);
}

/* The labels of d's n elements (raw[i]: an index into lt, as met in the
 * file): names sorted, so both nodes and every run number them alike, and
 * labels that hold no element dropped. */
static int finish_labels(cr_dataset *d, struct label_table *lt, const uint32_t *raw, size_t n) {
  int rc = 0;
  size_t nl = lt->n;
  char **sorted = malloc((nl ? nl : 1) * sizeof *sorted);
  uint32_t *remap = malloc((nl ? nl : 1) * sizeof *remap);
  d->label_sizes = calloc(nl ? nl : 1, sizeof *d->label_sizes);
  d->labels = malloc((n ? n : 1) * sizeof *d->labels);
  if (sorted == NULL || remap == NULL || d->label_sizes == NULL || d->labels == NULL) {
    free(sorted);
    rc = CR_ENOMEM;
    goto out;
  }
  memcpy(sorted, lt->names, nl * sizeof *sorted);
  qsort(sorted, nl, sizeof *sorted, cmp_name);
  for (size_t j = 0; j < nl; j++)
    for (size_t k = 0; k < nl; k++)
      if (lt->names[k] == sorted[j])
        remap[k] = (uint32_t)j;
  d->label_names = sorted;
  d->nlabels = nl;
  free(lt->names); /* the strings now belong to d->label_names */
  lt->names = NULL;
  lt->n = lt->cap = 0;
  for (size_t i = 0; i < n; i++) {
    d->labels[i] = remap[raw[i]];
    d->label_sizes[d->labels[i]]++;
  }
  /* A label seen only on duplicate rows holds no key: drop it, or the
   * peer would learn of a group that is not in the set. */
  size_t kept = 0;
  for (size_t j = 0; j < nl; j++) {
    if (d->label_sizes[j] == 0) {
      free(d->label_names[j]);
      continue;
    }
    remap[j] = (uint32_t)kept;
    d->label_names[kept] = d->label_names[j];
    d->label_sizes[kept] = d->label_sizes[j];
    kept++;
  }
  if (kept != nl)
    for (size_t i = 0; i < n; i++)
      d->labels[i] = remap[d->labels[i]];
  d->nlabels = kept;
out:
  free(remap);
  return rc;
}

/* Sorts and de-duplicates the accepted keys (arena[offs[i]..offs[i+1]))
 * into d->bytes / d->off. */
static int dedup(cr_dataset *d, const cr_buf *arena, const size_t *offs, size_t nkeys,
                 const uint32_t *row_labels, struct label_table *lt) {
  int rc = 0;
  uint32_t *raw = NULL;
  struct key_ref *refs = malloc((nkeys ? nkeys : 1) * sizeof *refs);
  if (refs == NULL)
    return CR_ENOMEM;
  for (size_t i = 0; i < nkeys; i++) {
    refs[i].p = arena->data + offs[i];
    refs[i].len = offs[i + 1] - offs[i];
    refs[i].row = i;
    refs[i].label = row_labels ? row_labels[i] : 0;
  }
  qsort(refs, nkeys, sizeof *refs, cmp_key_row);
  size_t n = 0, total = 0;
  int conflict_counted = 0;
  for (size_t i = 0; i < nkeys; i++) {
    if (n > 0 && cmp_key(&refs[n - 1], &refs[i]) == 0) {
      if (refs[n - 1].label != refs[i].label && !conflict_counted) {
        d->label_conflicts++;
        conflict_counted = 1;
      }
      continue;
    }
    conflict_counted = 0;
    refs[n++] = refs[i];
    total += refs[i].len;
  }
  if (row_labels != NULL) {
    raw = malloc((n ? n : 1) * sizeof *raw);
    if (raw == NULL) {
      rc = CR_ENOMEM;
      goto out;
    }
    for (size_t i = 0; i < n; i++)
      raw[i] = refs[i].label;
    if ((rc = finish_labels(d, lt, raw, n)) != 0)
      goto out;
  }
  d->off = malloc((n + 1) * sizeof *d->off);
  d->bytes = malloc(total ? total : 1);
  if (d->off == NULL || d->bytes == NULL) {
    rc = CR_ENOMEM;
    goto out;
  }
  size_t pos = 0;
  for (size_t i = 0; i < n; i++) {
    d->off[i] = pos;
    memcpy(d->bytes + pos, refs[i].p, refs[i].len);
    pos += refs[i].len;
  }
  d->off[n] = pos;
  d->n = n;
  d->duplicates = nkeys - n;
out:
  free(raw);
  free(refs);
  return rc;
}

int cr_dataset_load(cr_dataset **out, const char *path, const cr_template *t, cr_role role,
                    const cr_dataset_options *opt, cr_error *err) {
  int rc = 0;
  cr_source *src = NULL;
  cr_dataset *d = NULL;
  char **hdr = NULL;
  size_t nhdr = 0;
  size_t *keycol = NULL;
  const char **vals = NULL;
  size_t *vlens = NULL;
  size_t *offs = NULL, noffs = 0, offs_cap = 0;
  size_t groupcol = 0;
  int grouped = 0;
  uint32_t *row_labels = NULL;
  struct label_table lt = {NULL, 0, 0};
  cr__records *multi = NULL; /* several match keys */
  uint32_t *elem_labels = NULL;
  cr_buf key, arena;
  cr_buf_init(&key);
  cr_buf_init(&arena);

  if (out != NULL)
    *out = NULL;
  if (out == NULL || path == NULL || t == NULL ||
      (role != CR_ROLE_PROVIDER && role != CR_ROLE_CONSUMER)) {
    rc = cr_error_set(err, CR_EINVAL, "cr_dataset_load: invalid argument");
    goto out;
  }
  const cr_match_key *mk = &t->match_key;
  const char *const *keynames = cr_match_key_columns(mk, role);
  if (mk->ncolumns == 0 || keynames == NULL) {
    rc = cr_error_set(err, CR_EINVAL, "the template's match key has no column");
    goto out;
  }
  double ratio = opt ? opt->max_reject_ratio : CR_DATASET_DEFAULT_MAX_REJECT_RATIO;
  if (!(ratio >= 0.0 && ratio <= 1.0)) {
    rc = cr_error_set(err, CR_EINVAL,
                      "the maximum rejection ratio must be between 0 and 1 "
                      "(--max-reject-ratio)");
    goto out;
  }
  size_t want_samples = opt ? opt->samples : 0;
  if (want_samples > CR_DATASET_MAX_SAMPLES)
    want_samples = CR_DATASET_MAX_SAMPLES;

  d = calloc(1, sizeof *d);
  if (d == NULL || (d->path = strdup(path)) == NULL ||
      (opt != NULL && opt->data_query != NULL &&
       (d->data_query = strdup(opt->data_query)) == NULL)) {
    rc = cr_error_set(err, CR_ENOMEM, "%s: out of memory", path);
    goto out;
  }
  cr_source_options so = {opt ? opt->data_query : NULL, opt ? opt->delimiter : 0};
  if ((rc = cr_source_open(&src, path, &so, err)) != 0)
    goto out;
  d->source_kind = cr_source_kind_get(src);
  d->role = role;
  d->delimiter = cr_source_delimiter(src);
  d->pos_unit = cr_source_unit(src);
  /* Messages name the source as it knows itself (never a password). */
  path = cr_source_name(src);
  if ((rc = read_header(src, path, &hdr, &nhdr, err)) != 0)
    goto out;

  /* Every column the template relies on must be there. */
  for (size_t i = 0; i < t->nrequired_columns[role]; i++) {
    size_t idx;
    const char *col = t->required_columns[role][i];
    if (!find_col(hdr, nhdr, col, &idx)) {
      char why[64];
      snprintf(why, sizeof why, "the template requires it for the %s", cr_role_name(role));
      rc = missing_column(err, path, col, why, hdr, nhdr, d->source_kind);
      goto out;
    }
  }
  if (cr_template_nkeys(t) > 1) {
    /* Every key column is a required column, found above. */
    if ((rc = cr__records_new(&multi, t, role, hdr, nhdr)) != 0) {
      cr_error_set(err, rc, "%s: %s", path,
                   rc == CR_ENOMEM ? "out of memory" : "a match key column is missing");
      goto out;
    }
  }
  keycol = calloc(mk->ncolumns, sizeof *keycol);
  vals = calloc(mk->ncolumns, sizeof *vals);
  vlens = calloc(mk->ncolumns, sizeof *vlens);
  if (keycol == NULL || vals == NULL || vlens == NULL) {
    rc = cr_error_set(err, CR_ENOMEM, "%s: out of memory", path);
    goto out;
  }
  for (size_t i = 0; i < mk->ncolumns; i++) {
    if (!find_col(hdr, nhdr, keynames[i], &keycol[i])) {
      rc = missing_column(err, path, keynames[i], "a column of the template's match key", hdr, nhdr,
                          d->source_kind);
      goto out;
    }
  }

  if (opt != NULL && opt->filter != NULL) {
    cr_error ferr;
    cr_error_clear(&ferr);
    rc = cr_filter_bind(opt->filter, opt->params, (const char *const *)hdr, nhdr, &ferr);
    if (rc != 0) {
      char found[400];
      describe_header(found, sizeof found, hdr, nhdr);
      rc = cr_error_set(err, rc == CR_EINVAL ? CR_EREFUSED : CR_EDATA,
                        "%s: the query's filter: %s (columns found: %s)", path, ferr.msg, found);
      goto out;
    }
  }
  if (opt != NULL && opt->group_column != NULL) {
    if (!find_col(hdr, nhdr, opt->group_column, &groupcol)) {
      rc = missing_column(err, path, opt->group_column, "the query groups by it", hdr, nhdr,
                          d->source_kind);
      goto out;
    }
    grouped = 1;
  }

  /* From here on the header is known to be one: name columns in messages. */
  if ((rc = name_fields(src, hdr, nhdr)) != 0) {
    cr_error_set(err, rc, "%s: out of memory", path);
    goto out;
  }

  /* The rows. */
  for (;;) {
    cr_source_row row;
    cr_reject_reason why = CR_REJECT_MISSING;
    cr_error rerr;
    rc = cr_source_next(src, &row, &rerr);
    if (rc < 0) {
      if (err != NULL)
        *err = rerr;
      goto out;
    }
    if (rc == 0)
      break;
    d->rows_read++;
    if (rc == CR_SOURCE_MALFORMED) {
      why = row.malformed;
      rc = 1;
    } else if (row.n != nhdr) {
      why = CR_REJECT_COLUMNS;
      rc = 1;
    } else if (opt != NULL && opt->filter != NULL &&
               !cr_filter_eval(opt->filter, row.fields, row.lens, row.n)) {
      d->rows_filtered++;
      continue;
    } else if (multi != NULL) {
      rc = cr__records_row(multi, row.fields, row.lens, &why);
      if (rc < 0) {
        if (rc == CR_EINVAL)
          cr_error_set(err, rc,
                       "the template's match keys cannot be applied (unknown "
                       "normalizer or a default_country_code that is not 1-3 digits)");
        else
          cr_error_set(err, rc, "%s: %s %llu: %s", path, d->pos_unit, (unsigned long long)row.pos,
                       cr_strerror(rc));
        goto out;
      }
    } else {
      for (size_t i = 0; i < mk->ncolumns; i++) {
        vals[i] = row.fields[keycol[i]];
        vlens[i] = row.lens[keycol[i]];
      }
      rc = cr_normalize_key(mk, vals, vlens, &key, &why);
      if (rc < 0) {
        if (rc == CR_EINVAL)
          cr_error_set(err, rc,
                       "the template's match key cannot be applied (unknown "
                       "normalizer or a default_country_code that is not 1-3 digits)");
        else
          cr_error_set(err, rc, "%s: %s %llu: %s", path, d->pos_unit, (unsigned long long)row.pos,
                       cr_strerror(rc));
        goto out;
      }
    }
    if (rc == 1) {
      d->rows_rejected++;
      if (d->rejected[why] < CR_DATASET_MAX_REASON_LINES)
        d->reason_lines[why][d->rejected[why]] = row.pos;
      d->rejected[why]++;
      if (d->nreject_lines < CR_DATASET_MAX_REJECT_LINES)
        d->reject_lines[d->nreject_lines++] = row.pos;
      continue;
    }
    d->rows_accepted++;
    if (d->nsamples < want_samples) {
      char masked[160];
      const uint8_t *sv = key.data;
      size_t slen = key.len;
      if (multi != NULL)
        cr__records_staged(multi, &sv, &slen);
      cr_dataset_mask_key(sv, slen, masked, sizeof masked);
      if ((d->samples[d->nsamples] = strdup(masked)) == NULL) {
        rc = cr_error_set(err, CR_ENOMEM, "%s: out of memory", path);
        goto out;
      }
      d->sample_pos[d->nsamples++] = row.pos;
    }
    if (multi != NULL) {
      /* Several keys: the row's values are staged in the builder. */
      long id = 0;
      if (grouped && (id = label_id(&lt, row.fields[groupcol], row.lens[groupcol])) < 0) {
        rc = id == -2 ? cr_error_set(err, CR_EDATA,
                                     "%s: %s %llu: column \"%s\" has more than %d distinct "
                                     "values; group_by needs a column with fewer groups",
                                     path, d->pos_unit, (unsigned long long)row.pos,
                                     opt->group_column, CR_DATASET_MAX_LABELS)
                      : cr_error_set(err, CR_ENOMEM, "%s: out of memory", path);
        goto out;
      }
      if ((rc = cr__records_commit(multi, (uint32_t)id)) != 0) {
        cr_error_set(err, rc, "%s: out of memory", path);
        goto out;
      }
      continue;
    }
    if (noffs + 2 > offs_cap) {
      size_t cap = offs_cap ? offs_cap * 2 : 1024;
      size_t *p = realloc(offs, cap * sizeof *p);
      if (p == NULL) {
        rc = cr_error_set(err, CR_ENOMEM, "%s: out of memory", path);
        goto out;
      }
      offs = p;
      offs_cap = cap;
      if (grouped) {
        uint32_t *q = realloc(row_labels, cap * sizeof *q);
        if (q == NULL) {
          rc = cr_error_set(err, CR_ENOMEM, "%s: out of memory", path);
          goto out;
        }
        row_labels = q;
      }
    }
    if (grouped) {
      long id = label_id(&lt, row.fields[groupcol], row.lens[groupcol]);
      if (id < 0) {
        rc = id == -2 ? cr_error_set(err, CR_EDATA,
                                     "%s: %s %llu: column \"%s\" has more than %d distinct "
                                     "values; group_by needs a column with fewer groups",
                                     path, d->pos_unit, (unsigned long long)row.pos,
                                     opt->group_column, CR_DATASET_MAX_LABELS)
                      : cr_error_set(err, CR_ENOMEM, "%s: out of memory", path);
        goto out;
      }
      row_labels[noffs ? noffs - 1 : 0] = (uint32_t)id;
    }
    if (noffs == 0)
      offs[noffs++] = 0;
    if ((rc = cr_buf_append(&arena, key.data, key.len)) != 0) {
      cr_error_set(err, rc, "%s: out of memory", path);
      goto out;
    }
    offs[noffs++] = arena.len;
  }
  if (cr_source_sha256(src, d->file_sha256) != 0) {
    cr_error_set(err, CR_EINTERNAL, "%s: hash of the data unavailable", path);
    rc = CR_EINTERNAL;
    goto out;
  }

  if (d->rows_read == 0) {
    rc = cr_error_set(err, CR_EDATA, "%s: %s but no data rows", path,
                      d->source_kind == CR_SOURCE_CSV ? "the file has a header"
                                                      : "the data query returns columns");
    goto out;
  }
  uint64_t considered = d->rows_read - d->rows_filtered;
  cr_error verdict;
  cr_error_clear(&verdict);
  if (d->rows_rejected > 0 && (double)d->rows_rejected > ratio * (double)considered) {
    char why[700];
    double actual = (double)d->rows_rejected / (double)considered;
    describe_rejects(why, sizeof why, d);
    /* Suggest the smallest two-decimal ratio that would let this source in. */
    unsigned hundredths = (unsigned)(actual * 100.0);
    if ((double)hundredths / 100.0 < actual)
      hundredths++;
    cr_error_set(&verdict, CR_EDATA,
                 "%s: %llu of %llu data rows rejected (%.2f%%), more than the "
                 "allowed %.2f%%: %s. Fix those rows, or raise the limit with "
                 "--max-reject-ratio (this %s needs at least %u.%02u)%s",
                 path, (unsigned long long)d->rows_rejected, (unsigned long long)considered,
                 100.0 * actual, 100.0 * ratio, why,
                 d->source_kind == CR_SOURCE_CSV ? "file" : "query", hundredths / 100,
                 hundredths % 100,
                 d->rejected[CR_REJECT_ENCODING] * 2 > d->rows_rejected
                     ? ". Most are not UTF-8: is the file saved in another encoding (Windows-1252, "
                       "Latin-1)? Save it as \"CSV UTF-8\" or convert it (iconv -f WINDOWS-1252 "
                       "-t UTF-8)"
                     : "");
  } else if (d->rows_accepted == 0 && d->rows_filtered > 0 && d->rows_rejected == 0) {
    cr_error_set(&verdict, CR_EREFUSED, "%s: the query's filter keeps none of the %llu data rows",
                 path, (unsigned long long)d->rows_read);
  } else if (d->rows_accepted == 0) {
    char why[700];
    describe_rejects(why, sizeof why, d);
    cr_error_set(&verdict, CR_EDATA,
                 "%s: no row has a valid match key (%llu data rows rejected: %s)", path,
                 (unsigned long long)d->rows_rejected, why);
  }
  if (verdict.code != 0) {
    if (opt == NULL || !opt->dry_run) {
      rc = verdict.code;
      if (err != NULL)
        *err = verdict;
      goto out;
    }
    d->refusal_rc = verdict.code;
    if ((d->refusal = strdup(verdict.msg)) == NULL) {
      rc = cr_error_set(err, CR_ENOMEM, "%s: out of memory", path);
      goto out;
    }
  }
  if (noffs > 0 &&
      (rc = dedup(d, &arena, offs, noffs - 1, grouped ? row_labels : NULL, &lt)) != 0) {
    cr_error_set(err, rc, "%s: out of memory", path);
    goto out;
  }
  if (multi != NULL) {
    if ((rc = cr__records_finish(multi, d, grouped, &elem_labels)) != 0 ||
        (grouped && (rc = finish_labels(d, &lt, elem_labels, d->n)) != 0)) {
      cr_error_set(err, rc, "%s: %s", path,
                   rc == CR_ENOMEM ? "out of memory" : "more distinct key values than supported");
      goto out;
    }
  } else if (noffs == 0 && (d->off = calloc(1, sizeof *d->off)) == NULL) {
    rc = cr_error_set(err, CR_ENOMEM, "%s: out of memory", path);
    goto out;
  }
  d->columns = hdr;
  d->ncolumns = nhdr;
  hdr = NULL;
  nhdr = 0;
  *out = d;
  d = NULL;
out:
  cr_dataset_free(d);
  cr_source_close(src);
  free_header(hdr, nhdr);
  free(keycol);
  free(vals);
  free(vlens);
  free(offs);
  free(row_labels);
  free(elem_labels);
  cr__records_free(multi);
  labels_free(&lt);
  cr_buf_free(&key);
  cr_buf_free(&arena);
  return rc;
}

size_t cr_dataset_width(const cr_dataset *d) { return d->width > 1 ? d->width : 1; }

void cr_dataset_free(cr_dataset *d) {
  if (d == NULL)
    return;
  if (d->bytes != NULL) {
    if (d->off != NULL)
      sodium_memzero(d->bytes, d->off[d->nkeys > 1 ? d->nvalues : d->n]);
    free(d->bytes);
  }
  free(d->value_key);
  if (d->slots != NULL) /* links records to values */
    sodium_memzero(d->slots, d->n * d->width * sizeof *d->slots);
  free(d->slots);
  free(d->value_record);
  free(d->off);
  free(d->path);
  free(d->data_query);
  free(d->refusal);
  for (size_t i = 0; i < d->nsamples; i++)
    free(d->samples[i]);
  free_header(d->columns, d->ncolumns);
  for (size_t i = 0; i < d->nlabels; i++)
    free(d->label_names[i]);
  free(d->label_names);
  free(d->label_sizes);
  free(d->labels);
  free(d);
}

/* ---- iteration (issue 17) ---------------------------------------------------- */

/* Interim: the elements in index order. The spilled, keyed order replaces
 * this (include/cleanroom/dataset.h). */
struct cr_dataset_iter {
  const cr_dataset *d;
  size_t next;
};

int cr_dataset_iter_new(const cr_dataset *d, cr_dataset_iter **out, cr_error *err) {
  (void)err;
  *out = NULL;
  if (d == NULL || cr_dataset_width(d) > 1)
    return CR_EINVAL;
  cr_dataset_iter *it = calloc(1, sizeof *it);
  if (it == NULL)
    return CR_ENOMEM;
  it->d = d;
  *out = it;
  return 0;
}

int cr_dataset_iter_next(cr_dataset_iter *it, const uint8_t **key, size_t *len, uint32_t *label,
                         cr_error *err) {
  (void)err;
  const cr_dataset *d = it->d;
  if (it->next >= d->n)
    return 0;
  size_t i = it->next++;
  *key = d->bytes + d->off[i];
  *len = d->off[i + 1] - d->off[i];
  *label = d->labels ? d->labels[i] : 0;
  return 1;
}

void cr_dataset_iter_free(cr_dataset_iter *it) { free(it); }
