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
 * The separator is ',' unless set (cr_csv_set_delimiter) or detected from
 * the first lines (cr_csv_detect_delimiter: ';', tab and '|' too, as
 * spreadsheets export them in many locales).
 *
 * In recovery mode (cr_csv_set_recover) a refused record is not the end of
 * the file: it is handed out as malformed (its line and why, never its
 * bytes) and reading goes on from the line after the one it started on. A
 * quoted field that swallowed line ends (a stray opening quote) is thus
 * re-read from the next line, so one bad quote costs one line, not the rest
 * of the file. For that the reader seeks back, which a memory block or a
 * regular file allows; a pipe that cannot seek keeps the strict behaviour.
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
#include <sys/types.h>

#include <sodium.h>

#include "dataset/dataset_internal.h"

#define CSV_CHUNK 65536
/* Lines looked at to detect the separator. */
#define CSV_DETECT_LINES 20

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
  off_t f_start; /* the stream's offset when it was handed to us */
  int seekable;
  uint8_t *chunk;
  const uint8_t *in;
  size_t in_len, in_pos;
  uint64_t chunk_base;          /* input offset of in[0] */
  uint64_t hashed;              /* stream bytes hashed so far (a re-read is not hashed twice) */
  int eof;                      /* no more input after in[in_pos..in_len) */
  int bom_done;                 /* the optional BOM has been looked for */
  int cr_pending;               /* last byte was CR: a following LF belongs to it */
  crypto_hash_sha256_state sha; /* of the stream bytes read so far */
  const char *mem;
  size_t mem_len;
  uint8_t delim;
  int recover;
  cr_reject_reason last_reject;

  uint64_t line; /* 1-based line of the next byte */
  int sticky;    /* an earlier error: every later call returns it again */
  cr_error sticky_err;

  /* The record being read: where its first line ends (0: not yet). */
  uint64_t rec_eol;
  int rec_eol_cr;

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
  r->delim = ',';
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
  r->f_start = ftello(r->f);
  r->seekable = r->f_start >= 0 && fseeko(r->f, r->f_start, SEEK_SET) == 0;
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
  r->seekable = 1;
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

static int valid_delimiter(int c) { return c == ',' || c == ';' || c == '\t' || c == '|'; }

int cr_csv_set_delimiter(cr_csv *r, char delim) {
  if (r == NULL || !valid_delimiter((unsigned char)delim))
    return CR_EINVAL;
  r->delim = (uint8_t)delim;
  return 0;
}

char cr_csv_delimiter(const cr_csv *r) { return r ? (char)r->delim : ','; }

void cr_csv_set_recover(cr_csv *r, int on) {
  if (r != NULL)
    r->recover = on != 0;
}

cr_reject_reason cr_csv_last_reject(const cr_csv *r) {
  return r ? r->last_reject : CR_REJECT_MALFORMED;
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

/* Input offset of the next byte. */
static uint64_t csv_pos(const cr_csv *r) { return r->chunk_base + r->in_pos; }

/* Refills the chunk from the stream: 1 when bytes are available, 0 at end,
 * CR_EIO on a read error. */
static int csv_fill(cr_csv *r) {
  if (r->in_pos < r->in_len)
    return 1;
  if (r->eof)
    return 0;
  r->chunk_base += r->in_len;
  r->in_len = r->in_pos = 0;
  size_t n = fread(r->chunk, 1, CSV_CHUNK, r->f);
  if (n < CSV_CHUNK) {
    if (ferror(r->f))
      return CR_EIO;
    r->eof = 1;
  }
  /* Bytes read again after a seek back were hashed the first time. */
  if (r->chunk_base + n > r->hashed) {
    size_t skip = (size_t)(r->hashed - r->chunk_base);
    crypto_hash_sha256_update(&r->sha, r->chunk + skip, n - skip);
    r->hashed = r->chunk_base + n;
  }
  r->in_len = n;
  return n > 0;
}

/* Moves to input offset off (at or before the current one); 0 or -1 when
 * the input cannot go back there. */
static int csv_seek(cr_csv *r, uint64_t off) {
  if (off >= r->chunk_base && off <= r->chunk_base + r->in_len) {
    r->in_pos = (size_t)(off - r->chunk_base);
    return 0;
  }
  if (r->f == NULL || !r->seekable)
    return -1;
  if (fseeko(r->f, r->f_start + (off_t)off, SEEK_SET) != 0)
    return -1;
  r->chunk_base = off;
  r->in_len = r->in_pos = 0;
  r->eof = 0;
  return 0;
}

/* Strict UTF-8 (RFC 3629): no overlong forms, no surrogates, <= U+10FFFF. */
int cr__utf8_valid(const uint8_t *s, size_t n) {
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

/*
 * A record the data is wrong in (not the reader): in recovery mode,
 * CR_CSV_MALFORMED with the message in err and reading resumed at the line
 * after the record's first; otherwise the sticky CR_EDATA. `limit` marks a
 * size limit, which only a record that swallowed line ends survives (a
 * single line that large is a file this reader does not take).
 */
static int csv_bad(cr_csv *r, cr_error *err, cr_reject_reason why, int limit, const char *fmt, ...)
    CR_PRINTF(5, 6);
static int csv_bad(cr_csv *r, cr_error *err, cr_reject_reason why, int limit, const char *fmt,
                   ...) {
  va_list ap;
  char tail[CR_ERROR_MSG_MAX];
  va_start(ap, fmt);
  vsnprintf(tail, sizeof tail, fmt, ap);
  va_end(ap);
  int multiline = r->rec_eol != 0 && r->rec_eol < csv_pos(r);
  if (!r->recover || (limit && !multiline))
    return csv_fail(r, err, CR_EDATA, "%s", tail);
  if (r->rec_eol != 0) {
    /* Back to the line after the record's first. */
    if (csv_seek(r, r->rec_eol) != 0)
      return csv_fail(r, err, CR_EDATA, "%s", tail);
    r->cr_pending = r->rec_eol_cr;
  } else {
    /* Still on the record's first line: skip the rest of it. */
    for (;;) {
      int rc = csv_fill(r);
      if (rc < 0)
        return csv_fail(r, err, rc, "read error near line %llu", (unsigned long long)r->line);
      if (rc == 0)
        break;
      uint8_t c = r->in[r->in_pos++];
      if (c == '\n' || c == '\r') {
        r->cr_pending = c == '\r';
        break;
      }
    }
  }
  r->last_reject = why;
  cr_error_set(err, CR_EDATA, "%s: %s", r->name, tail);
  return CR_CSV_MALFORMED;
}

static int csv_add_byte(cr_csv *r, uint8_t c, uint64_t rec_line, cr_error *err) {
  char fd[96];
  size_t field_len = r->rec.len - r->starts[r->nfields];
  if (field_len >= CR_CSV_MAX_FIELD_BYTES)
    return csv_bad(r, err, CR_REJECT_MALFORMED, 1,
                   "line %llu: %s is larger than %u bytes (the limit per field); no key or "
                   "label is that long: is this the export you meant, cut or with a line end "
                   "missing?",
                   (unsigned long long)rec_line, field_desc(r, r->nfields, fd, sizeof fd),
                   (unsigned)CR_CSV_MAX_FIELD_BYTES);
  if (r->rec.len >= CR_CSV_MAX_RECORD_BYTES)
    return csv_bad(r, err, CR_REJECT_MALFORMED, 1,
                   "line %llu: record is larger than %u bytes (the limit per record); is "
                   "this the export you meant, cut or with line ends missing?",
                   (unsigned long long)rec_line, (unsigned)CR_CSV_MAX_RECORD_BYTES);
  if (c == 0)
    return csv_bad(r, err, CR_REJECT_ENCODING, 0, "line %llu: %s contains a NUL byte",
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
    return csv_bad(r, err, CR_REJECT_MALFORMED, 1,
                   "line %llu: record has more than %u fields (the limit per record); is "
                   "the delimiter right (--delimiter D)?",
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
  if (!cr__utf8_valid(r->rec.data ? r->rec.data + start : (const uint8_t *)"", len))
    return csv_bad(r, err, CR_REJECT_ENCODING, 0,
                   "line %llu: %s is not valid UTF-8 (save the file as UTF-8)",
                   (unsigned long long)field_line, field_desc(r, r->nfields, fd, sizeof fd));
  int rc = cr_buf_reserve(&r->rec, 1);
  if (rc)
    return csv_fail(r, err, rc, "line %llu: out of memory", (unsigned long long)field_line);
  r->rec.data[r->rec.len++] = '\0';
  r->lens[r->nfields] = len;
  r->nfields++;
  return 0;
}

/* The optional UTF-8 byte order mark, once, before anything else. */
static int csv_start(cr_csv *r, cr_error *err) {
  int rc;
  if (r->bom_done)
    return 0;
  r->bom_done = 1;
  if ((rc = csv_fill(r)) < 0)
    return csv_fail(r, err, rc, "read error");
  if (r->in_len - r->in_pos >= 3 && memcmp(r->in + r->in_pos, "\xef\xbb\xbf", 3) == 0)
    r->in_pos += 3;
  return 0;
}

int cr_csv_detect_delimiter(cr_csv *r, char *out, cr_error *err) {
  static const uint8_t cand[4] = {',', ';', '\t', '|'};
  unsigned long counts[CSV_DETECT_LINES][4];
  size_t nlines = 0;
  int rc;
  if (r == NULL || out == NULL)
    return cr_error_set(err, CR_EINVAL, "cr_csv_detect_delimiter: invalid argument");
  if (r->sticky) {
    if (err != NULL)
      *err = r->sticky_err;
    return r->sticky;
  }
  if ((rc = csv_start(r, err)) != 0)
    return rc;
  /* The separators outside quotes on each of the first lines the buffer
   * holds (a line cut by the buffer's end is not counted). */
  memset(counts, 0, sizeof counts);
  int quoted = 0, blank = 1;
  for (size_t i = r->in_pos; i < r->in_len && nlines < CSV_DETECT_LINES; i++) {
    uint8_t c = r->in[i];
    if (c == '"') {
      quoted = !quoted;
      blank = 0;
    } else if (!quoted && (c == '\n' || c == '\r')) {
      if (!blank)
        nlines++;
      blank = 1;
      if (nlines < CSV_DETECT_LINES)
        memset(counts[nlines], 0, sizeof counts[nlines]);
    } else {
      blank = 0;
      for (int k = 0; k < 4; k++)
        if (!quoted && c == cand[k])
          counts[nlines][k]++;
    }
  }
  if (nlines == 0 && r->eof && r->in_len > r->in_pos && !blank)
    nlines = 1; /* one line, no line end */
  /* The separator the header has most of, preferring one that every line
   * read has as often as the header (a comma inside a ;-separated field is
   * not a separator); ties go to the order above. */
  int best = -1, best_consistent = 0;
  unsigned long best_count = 0;
  for (int k = 0; k < 4 && nlines > 0; k++) {
    unsigned long n = counts[0][k];
    if (n == 0)
      continue;
    int consistent = 1;
    for (size_t l = 1; l < nlines; l++)
      if (counts[l][k] != n)
        consistent = 0;
    if (best < 0 || (consistent && !best_consistent) ||
        (consistent == best_consistent && n > best_count)) {
      best = k;
      best_count = n;
      best_consistent = consistent;
    }
  }
  r->delim = best < 0 ? ',' : cand[best];
  *out = (char)r->delim;
  return 0;
}

/* Notes the record's first line end, the place a malformed record resumes
 * from. */
static void csv_mark_eol(cr_csv *r, uint8_t c) {
  if (r->rec_eol == 0) {
    r->rec_eol = csv_pos(r);
    r->rec_eol_cr = c == '\r';
  }
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
  if ((rc = csv_start(r, err)) != 0)
    return rc;

  enum csv_state st = ST_FIELD_START;
  uint64_t rec_line = r->line;   /* where the record starts */
  uint64_t field_line = r->line; /* where the current field starts */
  int in_record = 0;             /* a byte of this record has been seen */
  uint8_t delim = r->delim;
  r->rec.len = 0;
  r->nfields = 0;
  r->rec_eol = 0;
  *nfields = 0;

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
        if (r->rec_eol == csv_pos(r) - 1) {
          r->rec_eol++;
          r->rec_eol_cr = 0;
        }
        if (st == ST_QUOTED && (rc = csv_add_byte(r, c, rec_line, err)) != 0)
          goto bad;
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
        goto bad;
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
      if (c == delim) {
        if ((rc = csv_end_field(r, field_line, err)) != 0 ||
            (rc = csv_begin_field(r, rec_line, err)) != 0)
          goto bad;
        st = ST_FIELD_START;
      } else if (c == '\n' || c == '\r') {
        r->line++;
        r->cr_pending = c == '\r';
        csv_mark_eol(r, c);
        goto record_done;
      } else if (c == '"') {
        rc = csv_bad(r, err, CR_REJECT_MALFORMED, 0,
                     "line %llu: %s has a quote inside an unquoted field "
                     "(quote the whole field and double the inner quotes)",
                     (unsigned long long)r->line, field_desc(r, r->nfields, fd, sizeof fd));
        goto bad;
      } else if ((rc = csv_add_byte(r, c, rec_line, err)) != 0) {
        goto bad;
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
        csv_mark_eol(r, c);
      }
      if ((rc = csv_add_byte(r, c, rec_line, err)) != 0)
        goto bad;
      break;
    case ST_QUOTE:
      if (c == '"') {
        if ((rc = csv_add_byte(r, c, rec_line, err)) != 0)
          goto bad;
        st = ST_QUOTED;
      } else if (c == delim) {
        if ((rc = csv_end_field(r, field_line, err)) != 0 ||
            (rc = csv_begin_field(r, rec_line, err)) != 0)
          goto bad;
        st = ST_FIELD_START;
      } else if (c == '\n' || c == '\r') {
        r->line++;
        r->cr_pending = c == '\r';
        csv_mark_eol(r, c);
        goto record_done;
      } else {
        /* The position of the offending byte, before any resync. */
        uint64_t at = r->line;
        rc = csv_bad(r, err, CR_REJECT_MALFORMED, 0,
                     "line %llu: %s has text after its closing quote "
                     "(double a quote inside a quoted field)",
                     (unsigned long long)at, field_desc(r, r->nfields, fd, sizeof fd));
        goto bad;
      }
      break;
    }
  }

  /* End of input. */
  if (!in_record)
    return 0;
  if (st == ST_QUOTED) {
    rc = csv_bad(r, err, CR_REJECT_MALFORMED, 0,
                 "line %llu: %s: quoted field is not terminated "
                 "(a closing quote is missing)",
                 (unsigned long long)field_line, field_desc(r, r->nfields, fd, sizeof fd));
    goto bad;
  }

record_done:
  if ((rc = csv_end_field(r, field_line, err)) != 0)
    goto bad;
  for (size_t i = 0; i < r->nfields; i++)
    r->ptrs[i] = (const char *)r->rec.data + r->starts[i];
  *fields = r->ptrs;
  *lens = r->lens;
  *nfields = r->nfields;
  if (line != NULL)
    *line = rec_line;
  return 1;

bad:
  if (rc == CR_CSV_MALFORMED) {
    /* Reading resumes on the line after the record's first. */
    r->line = rec_line + 1;
    r->nfields = 0;
    if (line != NULL)
      *line = rec_line;
  }
  return rc;
}
