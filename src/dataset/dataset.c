/*
 * Loading a party's data: column checks against the template, one pass over
 * the rows of its source (streamed, never the whole file or result in
 * memory), per-reason rejection counts; each accepted row goes into the
 * elements' sorter (elements.c: in memory below the budget, spilled above)
 * and one merge pass counts the distinct keys, the duplicates and the
 * labels' sizes. The source (CSV, SQLite, PostgreSQL) is only ever
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

/* A label as met in the source (raw: its index there), for sorting. */
struct named {
  char *name;
  uint32_t raw;
};

static int cmp_named(const void *a, const void *b) {
  return strcmp(((const struct named *)a)->name, ((const struct named *)b)->name);
}

/*
 * The labels of d's elements, from sizes[k] (elements whose label is lt's
 * k-th, as met in the source): names sorted, so both nodes and every run
 * number them alike, and labels that hold no element dropped (a label seen
 * only on duplicate rows: the peer would learn of a group that is not in
 * the set). *map gets, for each label as met, the data set's label
 * (malloc'ed, lt->n entries; UINT32_MAX for a dropped one).
 */
static int finish_labels(cr_dataset *d, struct label_table *lt, const uint64_t *sizes,
                         uint32_t **map) {
  size_t nl = lt->n;
  char **sorted = malloc((nl ? nl : 1) * sizeof *sorted);
  uint32_t *remap = calloc(nl ? nl : 1, sizeof *remap);
  struct named *byname = malloc((nl ? nl : 1) * sizeof *byname);
  d->label_sizes = calloc(nl ? nl : 1, sizeof *d->label_sizes);
  *map = NULL;
  if (sorted == NULL || remap == NULL || byname == NULL || d->label_sizes == NULL) {
    free(sorted);
    free(remap);
    free(byname);
    return CR_ENOMEM;
  }
  for (size_t k = 0; k < nl; k++) {
    byname[k].name = lt->names[k];
    byname[k].raw = (uint32_t)k;
  }
  qsort(byname, nl, sizeof *byname, cmp_named);
  /* remap: label as met -> its place among the sorted names. */
  uint64_t *by_sorted = d->label_sizes;
  for (size_t j = 0; j < nl; j++) {
    sorted[j] = byname[j].name;
    remap[byname[j].raw] = (uint32_t)j;
    by_sorted[j] = sizes[byname[j].raw];
  }
  free(byname);
  d->label_names = sorted;
  free(lt->names); /* the strings now belong to d->label_names */
  lt->names = NULL;
  lt->n = lt->cap = 0;
  /* Keep the labels that hold an element; kept[j]: sorted j's new index. */
  uint32_t *kept_at = malloc((nl ? nl : 1) * sizeof *kept_at);
  if (kept_at == NULL) {
    d->nlabels = nl;
    free(remap);
    return CR_ENOMEM;
  }
  size_t kept = 0;
  for (size_t j = 0; j < nl; j++) {
    if (by_sorted[j] == 0) {
      free(d->label_names[j]);
      kept_at[j] = UINT32_MAX;
      continue;
    }
    kept_at[j] = (uint32_t)kept;
    d->label_names[kept] = d->label_names[j];
    d->label_sizes[kept] = by_sorted[j];
    kept++;
  }
  d->nlabels = kept;
  for (size_t k = 0; k < nl; k++)
    remap[k] = kept_at[remap[k]];
  free(kept_at);
  *map = remap;
  return 0;
}

/*
 * The single-key set once every row is in: one merge pass over the sorted
 * rows counts the distinct keys (n), the duplicates, the keys whose rows
 * disagree on the label, and each label's elements; then the labels.
 */
static int finish_elements(cr_dataset *d, struct label_table *lt, int grouped, cr_error *err) {
  cr_dataset_elements *e = d->elements;
  uint64_t *sizes = NULL;
  cr__cursor c;
  int rc = cr__elements_finish(e, err);
  if (rc != 0)
    return rc;
  if (grouped && (sizes = calloc(lt->n ? lt->n : 1, sizeof *sizes)) == NULL)
    return cr_error_set(err, CR_ENOMEM, "out of memory");
  if ((rc = cr__cursor_open(&c, e, err)) == 0) {
    uint64_t records = 0;
    cr__record r;
    while ((rc = cr__cursor_next(&c, &r, err)) == 1) {
      records++;
      if (r.fresh) {
        d->n++;
        if (grouped && r.raw_label < lt->n)
          sizes[r.raw_label]++;
      } else if (r.new_conflict) {
        d->label_conflicts++;
      }
    }
    d->duplicates = records - d->n;
  }
  cr__cursor_close(&c);
  if (rc == 0 && grouped) {
    uint32_t *map = NULL;
    size_t nraw = lt->n;
    if ((rc = finish_labels(d, lt, sizes, &map)) != 0)
      rc = cr_error_set(err, rc, "out of memory");
    else
      cr__elements_set_labels(e, map, nraw);
  }
  free(sizes);
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
  size_t groupcol = 0;
  int grouped = 0;
  struct label_table lt = {NULL, 0, 0};
  cr__records *multi = NULL; /* several match keys */
  uint32_t *elem_labels = NULL;
  uint64_t *elem_sizes = NULL;
  uint32_t *label_map = NULL;
  cr_buf key;
  cr_buf_init(&key);

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

  if (multi == NULL && (rc = cr__elements_new(&d->elements, opt ? opt->spill : NULL,
                                              opt ? opt->order_seed : NULL, grouped, err)) != 0)
    goto out;

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
      rc = cr_normalize_key_as(mk, role, vals, vlens, &key, &why);
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
    uint32_t id = 0;
    if (grouped) {
      long lid = label_id(&lt, row.fields[groupcol], row.lens[groupcol]);
      if (lid < 0) {
        rc = lid == -2 ? cr_error_set(err, CR_EDATA,
                                      "%s: %s %llu: column \"%s\" has more than %d distinct "
                                      "values; group_by needs a column with fewer groups",
                                      path, d->pos_unit, (unsigned long long)row.pos,
                                      opt->group_column, CR_DATASET_MAX_LABELS)
                       : cr_error_set(err, CR_ENOMEM, "%s: out of memory", path);
        goto out;
      }
      id = (uint32_t)lid;
    }
    rc = cr__elements_add(d->elements, key.data, key.len, d->rows_read, id, err);
    if (rc == CR_EDATA) {
      cr_error_set(err, rc,
                   "%s: %s %llu: the match key is %zu bytes long after normalization, "
                   "more than the %u a key may have",
                   path, d->pos_unit, (unsigned long long)row.pos, key.len,
                   (unsigned)CR_ELEMENT_MAX_KEY_BYTES);
      goto out;
    }
    if (rc != 0)
      goto out; /* the sorter's message: memory, or the work directory */
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
  if (multi != NULL) {
    if ((rc = cr__records_finish(multi, d, grouped, &elem_labels)) != 0) {
      cr_error_set(err, rc, "%s: %s", path,
                   rc == CR_ENOMEM ? "out of memory" : "more distinct key values than supported");
      goto out;
    }
    if (grouped) {
      if ((elem_sizes = calloc(lt.n ? lt.n : 1, sizeof *elem_sizes)) == NULL ||
          (d->labels = malloc((d->n ? d->n : 1) * sizeof *d->labels)) == NULL) {
        rc = cr_error_set(err, CR_ENOMEM, "%s: out of memory", path);
        goto out;
      }
      for (size_t i = 0; i < d->n; i++)
        elem_sizes[elem_labels[i]]++;
      if ((rc = finish_labels(d, &lt, elem_sizes, &label_map)) != 0) {
        cr_error_set(err, rc, "%s: out of memory", path);
        goto out;
      }
      for (size_t i = 0; i < d->n; i++)
        d->labels[i] = label_map[elem_labels[i]];
    }
  } else {
    if ((rc = finish_elements(d, &lt, grouped, err)) != 0)
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
  free(elem_labels);
  free(elem_sizes);
  free(label_map);
  cr__records_free(multi);
  labels_free(&lt);
  cr_buf_free(&key);
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
  cr__elements_free(d->elements);
  free(d);
}
