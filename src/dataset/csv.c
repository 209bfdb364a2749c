/*
 * RFC 4180 CSV reader, incremental: a file of any size is read through a
 * fixed-size chunk buffer and only the current record is held in memory,
 * under hard limits per field, per record and on the number of fields.
 *
 * Accepted beyond the RFC, because real exports do it: LF or lone CR line
 * ends as well as CRLF, a UTF-8 byte order mark at the very start, a last
 * record without a line end, and blank lines (no byte at all between two
 * line ends), which are skipped rather than read as one-empty-field records.
 * Refused: a quote inside an unquoted field, anything but a separator or a
 * line end after a closing quote, an unterminated quoted field, bytes that
 * are not UTF-8, and NUL bytes (fields are also handed out as C strings).
 *
 * Error messages name the input, the line and the field number; they never
 * quote the data. The bytes read are hashed as they go past, so the SHA-256
 * the dataset records is that of exactly the bytes that were parsed.
 */
#include "cleanroom/dataset.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#define CSV_CHUNK 65536

enum csv_state {
  ST_FIELD_START, /* at the first byte of a field */
  ST_UNQUOTED,    /* inside an unquoted field */
  ST_QUOTED,      /* inside a quoted field */
  ST_QUOTE,       /* just saw a quote inside a quoted field */
};

struct cr_csv {
  char *name;
  /* Input: either a stream read in chunks, or one memory block. */
  FILE *f;
  uint8_t *chunk;
  const uint8_t *in;
  size_t in_len, in_pos;
  int eof;                      /* no more input after in[in_pos..in_len) */
  int bom_done;                 /* the optional BOM has been looked for */
  int cr_pending;               /* last byte was CR: a following LF belongs to it */
  crypto_hash_sha256_state sha; /* of the stream bytes read so far */
  const char *mem;
  size_t mem_len;

  uint64_t line; /* 1-based line of the next byte */
  int sticky;    /* an earlier error: every later call returns it again */
  cr_error sticky_err;

  /* Optional column names for messages (NULL entries: none). */
  char **names;
  size_t nnames;

  /* Current record: field bytes, each NUL-terminated, in rec. */
  cr_buf rec;
  size_t *starts; /* offset of each field in rec */
  size_t *lens;
  const char **ptrs;
  size_t nfields, fields_cap;
};

static int csv_alloc(cr_csv **out, const char *name) {
  cr_csv *r = calloc(1, sizeof *r);
  if (r == NULL)
    return CR_ENOMEM;
  r->name = strdup(name ? name : "(input)");
  if (r->name == NULL) {
    free(r);
    return CR_ENOMEM;
  }
  cr_buf_init(&r->rec);
  r->line = 1;
  *out = r;
  return 0;
}

int cr_csv_open_stream(cr_csv **out, void *FILE_stream, const char *name) {
  int rc = 0;
  cr_csv *r = NULL;
  if (out == NULL || FILE_stream == NULL)
    return CR_EINVAL;
  *out = NULL;
  if ((rc = csv_alloc(&r, name)) != 0)
    goto out;
  r->chunk = malloc(CSV_CHUNK);
  if (r->chunk == NULL) {
    rc = CR_ENOMEM;
    goto out;
  }
  r->f = FILE_stream;
  r->in = r->chunk;
  crypto_hash_sha256_init(&r->sha);
  *out = r;
  r = NULL;
out:
  cr_csv_free(r);
  return rc;
}

int cr_csv_open_mem(cr_csv **out, const char *data, size_t len, const char *name) {
  int rc = 0;
  cr_csv *r = NULL;
  if (out == NULL || (data == NULL && len > 0))
    return CR_EINVAL;
  *out = NULL;
  if ((rc = csv_alloc(&r, name)) != 0)
    return rc;
  r->in = (const uint8_t *)data;
  r->in_len = len;
  r->eof = 1;
  r->mem = data;
  r->mem_len = len;
  *out = r;
  return 0;
}

void cr_csv_free(cr_csv *r) {
  if (r == NULL)
    return;
  if (r->chunk) {
    sodium_memzero(r->chunk, CSV_CHUNK);
    free(r->chunk);
  }
  cr_buf_free(&r->rec);
  free(r->starts);
  free(r->lens);
  free(r->ptrs);
  for (size_t i = 0; i < r->nnames; i++)
    free(r->names[i]);
  free(r->names);
  free(r->name);
  free(r);
}

int cr_csv_set_field_names(cr_csv *r, const char *const *names, size_t n) {
  if (r == NULL || (names == NULL && n > 0))
    return CR_EINVAL;
  char **copy = calloc(n ? n : 1, sizeof *copy);
  if (copy == NULL)
    return CR_ENOMEM;
  for (size_t i = 0; i < n; i++) {
    if (names[i] != NULL && (copy[i] = strdup(names[i])) == NULL) {
      for (size_t j = 0; j < i; j++)
        free(copy[j]);
      free(copy);
      return CR_ENOMEM;
    }
  }
  for (size_t i = 0; i < r->nnames; i++)
    free(r->names[i]);
  free(r->names);
  r->names = copy;
  r->nnames = n;
  return 0;
}

/* "field 2" or, when the column has a name, "field 2 (column \"segment\")". */
static const char *field_desc(const cr_csv *r, size_t idx, char *buf, size_t cap) {
  if (idx < r->nnames && r->names[idx] != NULL)
    snprintf(buf, cap, "field %zu (column \"%s\")", idx + 1, r->names[idx]);
  else
    snprintf(buf, cap, "field %zu", idx + 1);
  return buf;
}

int cr_csv_sha256(cr_csv *r, uint8_t out[CR_SHA256_BYTES]) {
  if (r == NULL || out == NULL)
    return CR_EINVAL;
  if (r->f == NULL) {
    cr_sha256(out, r->mem, r->mem_len);
    return 0;
  }
  if (!r->eof || r->in_pos < r->in_len)
    return CR_EINVAL; /* not all of the stream has been read yet */
  crypto_hash_sha256_state copy = r->sha;
  crypto_hash_sha256_final(&copy, out);
  return 0;
}

/* Refills the chunk from the stream: 1 when bytes are available, 0 at end,
 * CR_EIO on a read error. */
static int csv_fill(cr_csv *r) {
  if (r->in_pos < r->in_len)
    return 1;
  if (r->eof)
    return 0;
  size_t n = fread(r->chunk, 1, CSV_CHUNK, r->f);
  if (n < CSV_CHUNK) {
    if (ferror(r->f))
      return CR_EIO;
    r->eof = 1;
  }
  crypto_hash_sha256_update(&r->sha, r->chunk, n);
  r->in_len = n;
  r->in_pos = 0;
  return n > 0;
}

/* Strict UTF-8 (RFC 3629): no overlong forms, no surrogates, <= U+10FFFF. */
static int utf8_valid(const uint8_t *s, size_t n) {
  size_t i = 0;
  while (i < n) {
    uint8_t c = s[i];
    if (c < 0x80) {
      i++;
      continue;
    }
    size_t k;
    uint8_t lo = 0x80, hi = 0xbf;
    if (c >= 0xc2 && c <= 0xdf) {
      k = 1;
    } else if (c >= 0xe0 && c <= 0xef) {
      k = 2;
      if (c == 0xe0)
        lo = 0xa0;
      else if (c == 0xed)
        hi = 0x9f;
    } else if (c >= 0xf0 && c <= 0xf4) {
      k = 3;
      if (c == 0xf0)
        lo = 0x90;
      else if (c == 0xf4)
        hi = 0x8f;
    } else {
      return 0;
    }
    if (n - i - 1 < k)
      return 0;
    if (s[i + 1] < lo || s[i + 1] > hi)
      return 0;
    for (size_t j = 2; j <= k; j++)
      if ((s[i + j] & 0xc0) != 0x80)
        return 0;
    i += k + 1;
  }
  return 1;
}

/* Sets the reader's sticky error and returns it. */
static int csv_fail(cr_csv *r, cr_error *err, int code, const char *fmt, ...) CR_PRINTF(4, 5);

static int csv_fail(cr_csv *r, cr_error *err, int code, const char *fmt, ...) {
  va_list ap;
  char tail[CR_ERROR_MSG_MAX];
  va_start(ap, fmt);
  vsnprintf(tail, sizeof tail, fmt, ap);
  va_end(ap);
  cr_error_set(&r->sticky_err, code, "%s: %s", r->name, tail);
  r->sticky = code;
  if (err != NULL)
    *err = r->sticky_err;
  return code;
}

static int csv_add_byte(cr_csv *r, uint8_t c, uint64_t rec_line, cr_error *err) {
  char fd[96];
  size_t field_len = r->rec.len - r->starts[r->nfields];
  if (field_len >= CR_CSV_MAX_FIELD_BYTES)
    return csv_fail(r, err, CR_EDATA, "line %llu: %s is larger than %u bytes (the limit per field)",
                    (unsigned long long)rec_line, field_desc(r, r->nfields, fd, sizeof fd),
                    (unsigned)CR_CSV_MAX_FIELD_BYTES);
  if (r->rec.len >= CR_CSV_MAX_RECORD_BYTES)
    return csv_fail(r, err, CR_EDATA,
                    "line %llu: record is larger than %u bytes (the limit per record)",
                    (unsigned long long)rec_line, (unsigned)CR_CSV_MAX_RECORD_BYTES);
  if (c == 0)
    return csv_fail(r, err, CR_EDATA, "line %llu: %s contains a NUL byte",
                    (unsigned long long)r->line, field_desc(r, r->nfields, fd, sizeof fd));
  if (r->rec.len == r->rec.cap) {
    int rc = cr_buf_reserve(&r->rec, 1);
    if (rc)
      return csv_fail(r, err, rc, "line %llu: out of memory", (unsigned long long)rec_line);
  }
  r->rec.data[r->rec.len++] = c;
  return 0;
}

/* Makes room for field number nfields (0-based) and marks its start. */
static int csv_begin_field(cr_csv *r, uint64_t rec_line, cr_error *err) {
  if (r->nfields >= CR_CSV_MAX_FIELDS)
    return csv_fail(r, err, CR_EDATA,
                    "line %llu: record has more than %u fields (the limit per record)",
                    (unsigned long long)rec_line, (unsigned)CR_CSV_MAX_FIELDS);
  if (r->nfields == r->fields_cap) {
    size_t cap = r->fields_cap ? r->fields_cap * 2 : 16;
    size_t *s = realloc(r->starts, cap * sizeof *s);
    if (s == NULL)
      goto nomem;
    r->starts = s;
    size_t *l = realloc(r->lens, cap * sizeof *l);
    if (l == NULL)
      goto nomem;
    r->lens = l;
    const char **p = realloc(r->ptrs, cap * sizeof *p);
    if (p == NULL)
      goto nomem;
    r->ptrs = p;
    r->fields_cap = cap;
  }
  r->starts[r->nfields] = r->rec.len;
  return 0;
nomem:
  return csv_fail(r, err, CR_ENOMEM, "line %llu: out of memory", (unsigned long long)rec_line);
}

/* Closes the current field: NUL-terminates it and checks its UTF-8. */
static int csv_end_field(cr_csv *r, uint64_t field_line, cr_error *err) {
  char fd[96];
  size_t start = r->starts[r->nfields];
  size_t len = r->rec.len - start;
  if (!utf8_valid(r->rec.data ? r->rec.data + start : (const uint8_t *)"", len))
    return csv_fail(r, err, CR_EDATA, "line %llu: %s is not valid UTF-8 (save the file as UTF-8)",
                    (unsigned long long)field_line, field_desc(r, r->nfields, fd, sizeof fd));
  int rc = cr_buf_reserve(&r->rec, 1);
  if (rc)
    return csv_fail(r, err, rc, "line %llu: out of memory", (unsigned long long)field_line);
  r->rec.data[r->rec.len++] = '\0';
  r->lens[r->nfields] = len;
  r->nfields++;
  return 0;
}

int cr_csv_next(cr_csv *r, const char *const **fields, const size_t **lens, size_t *nfields,
                uint64_t *line, cr_error *err) {
  char fd[96];
  if (r == NULL || fields == NULL || lens == NULL || nfields == NULL)
    return cr_error_set(err, CR_EINVAL, "cr_csv_next: invalid argument");
  if (r->sticky) {
    if (err != NULL)
      *err = r->sticky_err;
    return r->sticky;
  }
  int rc;
  if (!r->bom_done) {
    r->bom_done = 1;
    if ((rc = csv_fill(r)) < 0)
      return csv_fail(r, err, rc, "read error");
    if (r->in_len - r->in_pos >= 3 && memcmp(r->in + r->in_pos, "\xef\xbb\xbf", 3) == 0)
      r->in_pos += 3;
  }

  enum csv_state st = ST_FIELD_START;
  uint64_t rec_line = r->line;   /* where the record starts */
  uint64_t field_line = r->line; /* where the current field starts */
  int in_record = 0;             /* a byte of this record has been seen */
  r->rec.len = 0;
  r->nfields = 0;

  for (;;) {
    if ((rc = csv_fill(r)) < 0)
      return csv_fail(r, err, rc, "read error near line %llu", (unsigned long long)r->line);
    if (rc == 0)
      break;
    uint8_t c = r->in[r->in_pos++];

    if (r->cr_pending) {
      r->cr_pending = 0;
      if (c == '\n') {
        /* Second half of a CRLF: inside a quoted field it is content. */
        if (st == ST_QUOTED && (rc = csv_add_byte(r, c, rec_line, err)) != 0)
          return rc;
        continue;
      }
    }
    if (!in_record) {
      /* Blank lines between records are not records. */
      if (c == '\n' || c == '\r') {
        r->line++;
        r->cr_pending = c == '\r';
        continue;
      }
      in_record = 1;
      rec_line = field_line = r->line;
      if ((rc = csv_begin_field(r, rec_line, err)) != 0)
        return rc;
    }

    switch (st) {
    case ST_FIELD_START:
      field_line = r->line;
      if (c == '"') {
        st = ST_QUOTED;
        break;
      }
      st = ST_UNQUOTED;
      /* fall through */
    case ST_UNQUOTED:
      if (c == ',') {
        if ((rc = csv_end_field(r, field_line, err)) != 0 ||
            (rc = csv_begin_field(r, rec_line, err)) != 0)
          return rc;
        st = ST_FIELD_START;
      } else if (c == '\n' || c == '\r') {
        r->line++;
        r->cr_pending = c == '\r';
        goto record_done;
      } else if (c == '"') {
        return csv_fail(r, err, CR_EDATA,
                        "line %llu: %s has a quote inside an unquoted field "
                        "(quote the whole field and double the inner quotes)",
                        (unsigned long long)r->line, field_desc(r, r->nfields, fd, sizeof fd));
      } else if ((rc = csv_add_byte(r, c, rec_line, err)) != 0) {
        return rc;
      }
      break;
    case ST_QUOTED:
      if (c == '"') {
        st = ST_QUOTE;
        break;
      }
      if (c == '\n' || c == '\r') {
        r->line++;
        r->cr_pending = c == '\r';
      }
      if ((rc = csv_add_byte(r, c, rec_line, err)) != 0)
        return rc;
      break;
    case ST_QUOTE:
      if (c == '"') {
        if ((rc = csv_add_byte(r, c, rec_line, err)) != 0)
          return rc;
        st = ST_QUOTED;
      } else if (c == ',') {
        if ((rc = csv_end_field(r, field_line, err)) != 0 ||
            (rc = csv_begin_field(r, rec_line, err)) != 0)
          return rc;
        st = ST_FIELD_START;
      } else if (c == '\n' || c == '\r') {
        r->line++;
        r->cr_pending = c == '\r';
        goto record_done;
      } else {
        return csv_fail(r, err, CR_EDATA,
                        "line %llu: %s has text after its closing quote "
                        "(double a quote inside a quoted field)",
                        (unsigned long long)r->line, field_desc(r, r->nfields, fd, sizeof fd));
      }
      break;
    }
  }

  /* End of input. */
  if (!in_record)
    return 0;
  if (st == ST_QUOTED)
    return csv_fail(r, err, CR_EDATA,
                    "line %llu: %s: quoted field is not terminated "
                    "(a closing quote is missing)",
                    (unsigned long long)field_line, field_desc(r, r->nfields, fd, sizeof fd));

record_done:
  if ((rc = csv_end_field(r, field_line, err)) != 0)
    return rc;
  for (size_t i = 0; i < r->nfields; i++)
    r->ptrs[i] = (const char *)r->rec.data + r->starts[i];
  *fields = r->ptrs;
  *lens = r->lens;
  *nfields = r->nfields;
  if (line != NULL)
    *line = rec_line;
  return 1;
}
