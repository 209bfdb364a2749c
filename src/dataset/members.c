/*
 * Writing a members result: the owner's own rows whose key matched. The
 * source (a CSV file, or a database query run again) is read again,
 * streamed, rather than kept in memory. With one key, the rows of the
 * matched elements are known by position: the elements' rows are read in
 * their order (elements.c), the matched ones' positions sorted (a sorter
 * on the load's spill), and the source read once more, writing the rows
 * at those positions; no table of keys is ever built. With several keys
 * each row's keys are normalized exactly as when the set was loaded and
 * looked up among the values. The hash of what is read must equal the
 * load's: a file edited or a table changed in between withholds the rows.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <sodium.h>

#include "cleanroom/dataset.h"
#include "dataset/dataset_internal.h"

long cr_dataset_find_value(const cr_dataset *d, size_t key, const uint8_t *v, size_t len) {
  if (d->nkeys <= 1 || d->value_key == NULL || d->bytes == NULL)
    return -1; /* one key: the elements are read in order, never looked up */
  /* Values sorted by key, then bytewise. */
  size_t lo = 0, hi = d->nvalues;
  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;
    int c = (d->value_key[mid] > key) - (d->value_key[mid] < key);
    if (c == 0) {
      size_t mlen = d->off[mid + 1] - d->off[mid];
      size_t n = mlen < len ? mlen : len;
      c = n ? memcmp(d->bytes + d->off[mid], v, n) : 0;
      if (c == 0)
        c = (mlen > len) - (mlen < len);
    }
    if (c == 0)
      return (long)mid;
    if (c < 0)
      lo = mid + 1;
    else
      hi = mid;
  }
  return -1;
}

/* RFC 4180: quote a field holding a comma, a quote or a line break. */
static int put_field(cr_buf *b, const char *v, size_t len) {
  int quote = 0;
  for (size_t i = 0; i < len; i++)
    if (v[i] == ',' || v[i] == '"' || v[i] == '\n' || v[i] == '\r')
      quote = 1;
  if (!quote)
    return cr_buf_append(b, v, len);
  int rc = cr_buf_append(b, "\"", 1);
  for (size_t i = 0; i < len && rc == 0; i++)
    rc = v[i] == '"' ? cr_buf_append(b, "\"\"", 2) : cr_buf_append(b, v + i, 1);
  return rc ? rc : cr_buf_append(b, "\"", 1);
}

/* Column names as the loader compares them: case-insensitive. */
static int find_name(const char *const *hdr, size_t n, const char *name, size_t *idx) {
  for (size_t i = 0; i < n; i++) {
    if (cr__colname_eq(hdr[i], name)) {
      *idx = i;
      return 1;
    }
  }
  return 0;
}

/* Appends key names of mask, joined with '+', to b. */
static int put_keys(cr_buf *b, const cr_template *t, unsigned mask) {
  int rc = 0, first = 1;
  for (size_t k = 0; k < cr_template_nkeys(t) && rc == 0; k++) {
    if (!(mask & (1u << k)))
      continue;
    rc = first ? 0 : cr_buf_append(b, "+", 1);
    rc = rc ? rc : cr_buf_append(b, t->match_keys[k].name, strlen(t->match_keys[k].name));
    first = 0;
  }
  return rc;
}

/*
 * The element a row stands for, and whether it matched: with one key the
 * row's key value; with several, the record (or, on a flat side, any value)
 * one of its keys belongs to. *on gets the keys it matched on.
 */
static int row_matched(const cr_dataset *d, const cr_template *t, const uint8_t *matched,
                       const uint8_t *matched_on, size_t *const *keycol, const char *const *f,
                       const size_t *fl, const char **vals, size_t *vlens, cr_buf *key,
                       unsigned *on) {
  int hit = 0;
  *on = 0;
  for (size_t k = 0; k < cr_template_nkeys(t); k++) {
    const cr_match_key *mk = &t->match_keys[k];
    cr_reject_reason why;
    if (keycol[k] == NULL)
      continue;
    for (size_t i = 0; i < mk->ncolumns; i++) {
      vals[i] = f[keycol[k][i]];
      vlens[i] = fl[keycol[k][i]];
    }
    if (cr_normalize_key_as(mk, d->role, vals, vlens, key, &why) != 0)
      continue;
    long v = cr_dataset_find_value(d, k, key->data, key->len);
    if (v < 0)
      continue;
    size_t el = d->value_record != NULL ? d->value_record[v] : (size_t)v;
    if (el >= d->n || !((matched[el / 8] >> (el % 8)) & 1))
      continue;
    hit = 1;
    *on |= matched_on != NULL ? matched_on[el] : (1u << k);
    if (d->value_record != NULL)
      break; /* every value of a row is in the same record */
  }
  return hit;
}

/*
 * One key: the positions (data row ordinals) of every row of each matched
 * element (bit j: the j-th in the elements' order), sorted, in a sorter on
 * the load's spill.
 */
static int matched_positions(const cr_dataset *d, const uint8_t *matched, cr_sorter **out,
                             cr_error *err) {
  cr_sorter *s = NULL;
  cr__cursor c;
  int rc =
      cr_sorter_new(&s, cr__elements_spill(d->elements), 8, "the matched rows' positions", err);
  if (rc != 0)
    return rc;
  if ((rc = cr__cursor_open(&c, d->elements, err)) == 0) {
    cr__record r;
    while ((rc = cr__cursor_next(&c, &r, err)) == 1) {
      if (r.elem >= d->n) {
        rc = cr_error_set(err, CR_EINTERNAL, "the data set's elements changed since loading");
        break;
      }
      if (!((matched[r.elem / 8] >> (r.elem % 8)) & 1))
        continue;
      uint8_t k[8];
      for (int i = 0; i < 8; i++)
        k[i] = (uint8_t)(r.row >> (56 - 8 * i)); /* big endian: memcmp orders them */
      if ((rc = cr_sorter_add(s, k, k, 0, err)) != 0)
        break;
    }
  }
  cr__cursor_close(&c);
  rc = rc ? rc : cr_sorter_finish(s, err);
  if (rc != 0) {
    cr_sorter_free(s);
    return rc;
  }
  *out = s;
  return 0;
}

/* The next matched position, UINT64_MAX after the last. */
static int next_position(cr_sorter_iter *it, uint64_t *pos, cr_error *err) {
  const uint8_t *k, *p;
  size_t plen;
  int rc = cr_sorter_iter_next(it, &k, &p, &plen, err);
  if (rc < 0)
    return rc;
  *pos = UINT64_MAX;
  if (rc == 1) {
    *pos = 0;
    for (int i = 0; i < 8; i++)
      *pos = (*pos << 8) | k[i];
  }
  return 0;
}

int cr_dataset_write_matches(const cr_dataset *d, const cr_template *t, const uint8_t *matched,
                             const uint8_t *matched_on, const char *const *columns, size_t ncolumns,
                             int (*keep)(void *ctx, const char *const *fields, const size_t *lens,
                                         size_t n),
                             void *keep_ctx, cr_atomic_file *out, uint64_t *rows,
                             uint8_t file_sha256[CR_SHA256_BYTES], cr_error *err) {
  int rc = 0;
  cr_source *src = NULL;
  const char *const *hdr = NULL;
  size_t nhdr = 0, *outcol = NULL, nout = 0, maxcols = 0;
  size_t *keycol[CR_TEMPLATE_MAX_KEYS] = {NULL};
  const char **vals = NULL;
  size_t *vlens = NULL;
  uint64_t written = 0;
  cr_sorter *positions = NULL; /* one key */
  cr_sorter_iter *pit = NULL;
  uint64_t ordinal = 0, want = UINT64_MAX;
  cr_buf key, line;
  crypto_hash_sha256_state hs;
  cr_buf_init(&key);
  cr_buf_init(&line);
  crypto_hash_sha256_init(&hs);

  if (d == NULL || d->path == NULL || t == NULL || matched == NULL || out == NULL)
    return cr_error_set(err, CR_EINVAL, "write_matches: invalid argument");
  size_t nkeys = cr_template_nkeys(t);
  /* Several keys: the keys each row matched on, as a last column. */
  int with_on = nkeys > 1;
  /* One key: the matched rows by position. */
  int by_position = nkeys <= 1;
  if (by_position && d->elements == NULL)
    return cr_error_set(err, CR_EINVAL, "write_matches: the data set was not loaded");
  if (by_position && ((rc = matched_positions(d, matched, &positions, err)) != 0 ||
                      (rc = cr_sorter_iter_new(positions, &pit, err)) != 0 ||
                      (rc = next_position(pit, &want, err)) != 0))
    goto out;
  cr_source_options so = {d->data_query, d->delimiter};
  if ((rc = cr_source_open(&src, d->path, &so, err)) != 0)
    goto out;
  const char *name = cr_source_name(src);
  nhdr = cr_source_columns(src, &hdr);
  for (size_t k = 0; k < nkeys; k++)
    if (t->match_keys[k].ncolumns > maxcols)
      maxcols = t->match_keys[k].ncolumns;
  vals = calloc(maxcols ? maxcols : 1, sizeof *vals);
  vlens = calloc(maxcols ? maxcols : 1, sizeof *vlens);
  nout = ncolumns ? ncolumns : nhdr;
  outcol = calloc(nout ? nout : 1, sizeof *outcol);
  if (vals == NULL || vlens == NULL || outcol == NULL) {
    rc = cr_error_set(err, CR_ENOMEM, "out of memory");
    goto out;
  }
  for (size_t k = 0; k < nkeys; k++) {
    const cr_match_key *mk = &t->match_keys[k];
    if ((keycol[k] = calloc(mk->ncolumns ? mk->ncolumns : 1, sizeof(size_t))) == NULL) {
      rc = cr_error_set(err, CR_ENOMEM, "out of memory");
      goto out;
    }
    /* The loading party's names for the key's columns (per party or shared). */
    const char *const *keynames = cr_match_key_columns(mk, d->role);
    for (size_t i = 0; i < mk->ncolumns; i++) {
      if (keynames == NULL || !find_name(hdr, nhdr, keynames[i], &keycol[k][i])) {
        rc = cr_error_set(err, CR_EDATA, "%s: the match key's columns disappeared since loading",
                          name);
        goto out;
      }
    }
  }
  for (size_t i = 0; i < nout; i++) {
    if (ncolumns == 0)
      outcol[i] = i;
    else if (!find_name(hdr, nhdr, columns[i], &outcol[i])) {
      rc = cr_error_set(err, CR_EDATA, "%s: has no column \"%s\" (the query's columns)", name,
                        columns[i]);
      goto out;
    }
  }

  int on_taken = 0;
  for (size_t i = 0; i < nout && rc == 0; i++) {
    rc = i ? cr_buf_append(&line, ",", 1) : 0;
    rc = rc ? rc : put_field(&line, hdr[outcol[i]], strlen(hdr[outcol[i]]));
    on_taken |= cr__colname_eq(hdr[outcol[i]], "matched_on");
  }
  if (with_on && rc == 0) {
    /* Never two columns of one name: the data's own matched_on wins. */
    const char *on_col = on_taken ? ",cleanroom_matched_on" : ",matched_on";
    rc = cr_buf_append(&line, on_col, strlen(on_col));
  }
  rc = rc ? rc : cr_buf_append(&line, "\r\n", 2);
  if (rc) {
    cr_error_set(err, rc, "out of memory");
    goto out;
  }
  for (;;) {
    cr_source_row row;
    rc = cr_source_next(src, &row, err);
    if (rc < 0)
      goto out;
    if (rc == 0)
      break;
    ordinal++; /* as the load counted rows_read */
    int got = rc, hit = 0;
    while (by_position && want < ordinal)
      if ((rc = next_position(pit, &want, err)) != 0)
        goto out;
    if (by_position && want == ordinal) {
      hit = 1;
      if ((rc = next_position(pit, &want, err)) != 0)
        goto out;
    }
    if (got == CR_SOURCE_MALFORMED || row.n != nhdr)
      continue; /* rejected when loading too */
    rc = 0;
    unsigned on = 0;
    if (!by_position)
      hit = row_matched(d, t, matched, matched_on, keycol, row.fields, row.lens, vals, vlens, &key,
                        &on);
    if (!hit)
      continue;
    if (keep != NULL && !keep(keep_ctx, row.fields, row.lens, row.n))
      continue;
    for (size_t i = 0; i < nout && rc == 0; i++) {
      rc = i ? cr_buf_append(&line, ",", 1) : 0;
      rc = rc ? rc : put_field(&line, row.fields[outcol[i]], row.lens[outcol[i]]);
    }
    if (with_on && rc == 0) {
      rc = cr_buf_append(&line, ",", 1);
      rc = rc ? rc : put_keys(&line, t, on);
    }
    rc = rc ? rc : cr_buf_append(&line, "\r\n", 2);
    if (rc) {
      cr_error_set(err, rc, "out of memory");
      goto out;
    }
    written++;
    if (line.len >= 65536) {
      crypto_hash_sha256_update(&hs, line.data, line.len);
      if ((rc = cr_atomic_write(out, line.data, line.len, err)) != 0)
        goto out;
      cr_buf_reset(&line);
    }
  }
  crypto_hash_sha256_update(&hs, line.data, line.len);
  if (line.len && (rc = cr_atomic_write(out, line.data, line.len, err)) != 0)
    goto out;
  uint8_t now[CR_SHA256_BYTES];
  if (cr_source_sha256(src, now) != 0 || memcmp(now, d->file_sha256, sizeof now) != 0) {
    rc = cr_error_set(err, CR_EDATA,
                      "%s changed since it was loaded for this session; the matched rows were "
                      "not written. Run the query again",
                      name);
    goto out;
  }
  if (rows)
    *rows = written;
  if (file_sha256)
    crypto_hash_sha256_final(&hs, file_sha256);
  rc = 0;
out:
  cr_sorter_iter_free(pit);
  cr_sorter_free(positions);
  cr_source_close(src);
  for (size_t k = 0; k < CR_TEMPLATE_MAX_KEYS; k++)
    free(keycol[k]);
  free(outcol);
  free(vals);
  free(vlens);
  cr_buf_free(&key);
  cr_buf_free(&line);
  return rc;
}
