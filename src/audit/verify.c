/*
 * Reading the audit log back: verification, crash-tail detection, and the
 * walks used by reporting tools. The file may have been damaged or edited by
 * anyone, so every line is treated as hostile: bounded length, strict JSON,
 * every field checked before it is used.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <sodium.h>

#include "audit/audit_internal.h"
#include "cleanroom/common.h"

/* ------------------------------------------------------------ line reader */

/*
 * Our own reader rather than getline: a damaged file may hold one huge line
 * or NUL bytes (a power cut can leave zeros where the last write went), and
 * we want a hard bound on memory and the exact byte count of every line.
 */
typedef struct line_reader {
  FILE *f;
  unsigned char chunk[16384];
  size_t clen, cpos;
  int eof;
  cr_buf line; /* the current line, without its newline */
} line_reader;

enum { RD_EOF = 0, RD_LINE = 1, RD_TOO_LONG = 2 };

/* Refills the chunk when it is used up; 0 or CR_EIO. */
static int rd_fill(line_reader *r) {
  if (r->cpos < r->clen || r->eof)
    return 0;
  r->clen = fread(r->chunk, 1, sizeof r->chunk, r->f);
  r->cpos = 0;
  if (r->clen == 0) {
    if (ferror(r->f))
      return CR_EIO;
    r->eof = 1;
  }
  return 0;
}

/* RD_LINE (*nl tells whether it ended in a newline), RD_EOF, RD_TOO_LONG,
 * CR_EIO or CR_ENOMEM. */
static int rd_next(line_reader *r, int *nl) {
  int rc;
  cr_buf_reset(&r->line);
  *nl = 0;
  for (;;) {
    if ((rc = rd_fill(r)) != 0)
      return rc;
    if (r->cpos == r->clen)
      return r->line.len > 0 ? RD_LINE : RD_EOF;
    const unsigned char *p = r->chunk + r->cpos;
    size_t avail = r->clen - r->cpos;
    const unsigned char *e = memchr(p, '\n', avail);
    size_t take = e ? (size_t)(e - p) : avail;
    /* The limit counts the newline, as the writer does. */
    if (r->line.len + take + 1 > CR_AUDIT_LINE_MAX)
      return RD_TOO_LONG;
    if ((rc = cr_buf_append(&r->line, p, take)) != 0)
      return rc;
    r->cpos += take;
    if (e != NULL) {
      r->cpos++;
      *nl = 1;
      return RD_LINE;
    }
  }
}

/* 1 if nothing follows the current line; <0 on a read error. */
static int rd_at_eof(line_reader *r) {
  int rc = rd_fill(r);
  if (rc != 0)
    return rc;
  return r->cpos == r->clen;
}

/* ------------------------------------------------------------ verification */

/* Records the first bad line; always returns CR_EDATA. */
static int bad(cr__audit_scan *s, uint64_t line, const char *fmt, ...) CR_PRINTF(3, 4);
static int bad(cr__audit_scan *s, uint64_t line, const char *fmt, ...) {
  char what[sizeof s->rep.reason - 32]; /* room for "line N: " */
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(what, sizeof what, fmt, ap);
  va_end(ap);
  s->rep.bad_line = line;
  snprintf(s->rep.reason, sizeof s->rep.reason, "line %" PRIu64 ": %s", line, what);
  return CR_EDATA;
}

/* A string member, or NULL if it is missing or not a string. */
static const char *get_str(json_t *o, const char *key) {
  json_t *v = json_object_get(o, key);
  return json_is_string(v) ? json_string_value(v) : NULL;
}

/* The checkpoint-specific checks; the line's hash is checked by the caller. */
static int check_checkpoint(cr__audit_scan *s, uint64_t n, json_t *e, const char *prev_hex) {
  uint8_t pk[CR_AUDIT_PK_BYTES], sig[CR_AUDIT_SIG_BYTES];
  uint8_t msg[CR__AUDIT_CKPT_MSG_LEN];
  const char *head = get_str(e, "head");
  const char *pk_hex = get_str(e, "public_key");
  const char *sig_hex = get_str(e, "signature");
  if (head == NULL || strcmp(head, prev_hex) != 0)
    return n == 1 ? bad(s, n, "checkpoint head is not 64 zeros (lines deleted at the start?)")
                  : bad(s, n,
                        "checkpoint head does not match line %" PRIu64
                        "'s hash (lines deleted or inserted before it?)",
                        n - 1);
  if (pk_hex == NULL || cr_hex_decode(pk, sizeof pk, pk_hex) != 0)
    return bad(s, n, "checkpoint public_key is not 64 hex digits");
  if (sig_hex == NULL || cr_hex_decode(sig, sizeof sig, sig_hex) != 0)
    return bad(s, n, "checkpoint signature is not 128 hex digits");
  cr__audit_checkpoint_msg(msg, s->head);
  if (crypto_sign_verify_detached(sig, msg, sizeof msg, pk) != 0)
    return bad(s, n, "checkpoint signature does not verify");
  if (s->expected_pk != NULL && sodium_memcmp(pk, s->expected_pk, sizeof pk) != 0)
    return bad(s, n,
               "checkpoint signed by key %.16s..., not by the expected key (another "
               "node's, or a forged checkpoint)",
               pk_hex);
  return 0;
}

/* Everything one parsed line must satisfy, in the order that gives the most
 * telling message: a deleted line shows first as a gap in seq, an edited one
 * as a hash that no longer matches. */
static int check_entry(cr__audit_scan *s, uint64_t n, json_t *e, cr_error *err) {
  char prev_hex[65], hash_hex[65];
  uint8_t h[CR_AUDIT_HASH_BYTES];
  if (!json_is_object(e))
    return bad(s, n, "not a JSON object");
  if (!cr__audit_ints_safe(e))
    return bad(s, n, "an integer lies outside +-(2^53-1), which the hash cannot protect");

  json_t *seq = json_object_get(e, "seq");
  if (!json_is_integer(seq) || json_integer_value(seq) < 0)
    return bad(s, n, "seq is missing or not a non-negative integer");
  uint64_t sv = (uint64_t)json_integer_value(seq);
  if (sv != s->next_seq) {
    if (n == 1)
      return bad(s, n, "seq %" PRIu64 " where 0 was expected (lines deleted at the start?)", sv);
    return bad(s, n, "seq %" PRIu64 " follows %" PRIu64 " (lines deleted or reordered?)", sv,
               s->next_seq - 1);
  }
  const char *event = get_str(e, "event");
  if (event == NULL || event[0] == '\0')
    return bad(s, n, "event is missing or not a string");
  if (get_str(e, "time") == NULL)
    return bad(s, n, "time is missing or not a string");

  cr_hex_encode(prev_hex, s->head, sizeof s->head);
  const char *prev = get_str(e, "prev");
  if (prev == NULL)
    return bad(s, n, "prev is missing or not a string");
  if (strcmp(prev, prev_hex) != 0) {
    if (n == 1)
      return bad(s, n, "prev is not 64 zeros (lines deleted at the start?)");
    return bad(s, n,
               "prev does not match line %" PRIu64 "'s hash (inserted, deleted or reordered?)",
               n - 1);
  }
  const char *hash = get_str(e, "hash");
  if (hash == NULL || strlen(hash) != 64)
    return bad(s, n, "hash is missing or not 64 hex digits");

  int is_ckpt = strcmp(event, "checkpoint") == 0;
  if (is_ckpt) {
    int rc = check_checkpoint(s, n, e, prev_hex);
    if (rc != 0)
      return rc;
  }

  cr_error herr;
  cr_error_clear(&herr);
  int rc = cr__audit_entry_hash(e, s->head, h, &herr);
  if (rc == CR_ENOMEM)
    return cr_error_set(err, rc, "out of memory");
  if (rc != 0)
    return bad(s, n, "cannot be canonicalized: %s", herr.msg);
  cr_hex_encode(hash_hex, h, sizeof h);
  /* Exact text: a hash in upper case would be an edit the chain ignores. */
  if (strcmp(hash, hash_hex) != 0)
    return bad(s, n, "hash does not match its contents (edited?)");

  memcpy(s->head, h, sizeof h);
  s->next_seq++;
  if (is_ckpt) {
    s->rep.checkpoints++;
    s->rep.unsigned_tail = 0;
  } else {
    s->rep.events++;
    s->rep.unsigned_tail++;
    if (strcmp(event, "receipt") == 0)
      s->rep.receipts++;
  }
  return 0;
}

/* A torn last line: what a crash in the middle of an append leaves, an
 * incomplete line (no newline). */
static int torn(cr__audit_scan *s, uint64_t n, const cr_buf *line, int nl, const char *why) {
  s->rep.torn_tail = 1;
  s->torn_bytes = line->len + (nl ? 1u : 0u);
  crypto_hash_sha256_state st;
  crypto_hash_sha256_init(&st);
  crypto_hash_sha256_update(&st, line->data ? line->data : (const uint8_t *)"", line->len);
  if (nl)
    crypto_hash_sha256_update(&st, (const unsigned char *)"\n", 1);
  crypto_hash_sha256_final(&st, s->torn_sha256);
  return bad(s, n,
             "incomplete last line (%" PRIu64
             " byte%s, %s), left by a crash while it was written; the node cuts it off "
             "and records an audit_repaired event on its next start",
             s->torn_bytes, s->torn_bytes == 1 ? "" : "s", why);
}

int cr__audit_scan_stream(FILE *f, const char *origin, cr__audit_scan *s, cr_error *err) {
  int rc = 0;
  uint64_t n = 0;
  json_t *e = NULL;
  line_reader *r = calloc(1, sizeof *r);
  memset(&s->rep, 0, sizeof s->rep);
  memset(s->head, 0, sizeof s->head);
  memset(s->torn_sha256, 0, sizeof s->torn_sha256);
  s->next_seq = 0;
  s->good_end = 0;
  s->torn_bytes = 0;
  if (s->resume) {
    /* Lines appended after a point already verified: the chain goes on
     * from there (line numbers, seq and hash). */
    memcpy(s->head, s->start_head, sizeof s->head);
    s->next_seq = s->start_seq;
    s->good_end = s->start_offset;
    n = s->start_line;
    s->rep.lines = n;
  }
  if (r == NULL) {
    rc = cr_error_set(err, CR_ENOMEM, "%s: out of memory", origin);
    goto out;
  }
  r->f = f;
  cr_buf_init(&r->line);
  for (;;) {
    int nl = 0;
    int got = rd_next(r, &nl);
    if (got == RD_EOF)
      break;
    if (got < 0) {
      rc = cr_error_set(err, got, "%s: %s after line %" PRIu64, origin,
                        got == CR_EIO ? "read error" : "out of memory", n);
      goto out;
    }
    n++;
    s->rep.lines = n;
    if (got == RD_TOO_LONG) {
      /* Never written by us (appends refuse such lines): damage, not a crash. */
      rc = bad(s, n, "longer than %u bytes", CR_AUDIT_LINE_MAX);
      goto out;
    }
    if (!nl) {
      rc = torn(s, n, &r->line, 0, "no newline");
      goto out;
    }
    json_error_t jerr;
    e = json_loadb(r->line.data ? (const char *)r->line.data : "", r->line.len,
                   JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL, &jerr);
    if (e == NULL) {
      /* A complete line (it ended in its newline) is never a crash's
       * leftover, even as the last line: each entry is one write(2) ending
       * in its newline, so a torn write is exactly a line without one. A
       * complete line that is not JSON was put there: damage, never cut. */
      int last = rd_at_eof(r);
      if (last < 0) {
        rc = cr_error_set(err, last, "%s: read error after line %" PRIu64, origin, n);
        goto out;
      }
      rc = bad(s, n, "not valid JSON (column %d: %s)%s", jerr.column, jerr.text,
               last ? "; it is the last line but complete (it ends in a newline), which a "
                      "crash cannot leave: edited"
                    : "");
      goto out;
    }
    if ((rc = check_entry(s, n, e, err)) != 0)
      goto out;
    s->good_end += r->line.len + 1;
    if (s->fn != NULL &&
        (rc = s->fn(s->ctx, e, r->line.data ? (const char *)r->line.data : "", r->line.len)) != 0)
      goto out;
    json_decref(e);
    e = NULL;
  }
out:
  cr_hex_encode(s->rep.head, s->head, sizeof s->head);
  /* bad() recorded a reason: the message names the file and the line. */
  if (s->rep.bad_line != 0)
    cr_error_set(err, rc, "%s: %s", origin, s->rep.reason);
  json_decref(e);
  if (r != NULL)
    cr_buf_free(&r->line);
  free(r);
  return rc;
}

/* ------------------------------------------------------------ public walks */

static int scan_path(const char *path, cr__audit_scan *s, cr_error *err) {
  if (path == NULL)
    return cr_error_set(err, CR_EINVAL, "audit log: no path given");
  FILE *f = fopen(path, "rb");
  if (f == NULL)
    return cr_error_set(err, CR_EIO, "%s: cannot open: %s", path, strerror(errno));
  struct stat st;
  if (fstat(fileno(f), &st) == 0 && S_ISDIR(st.st_mode)) {
    fclose(f);
    return cr_error_set(err, CR_EIO,
                        "%s: is a directory, not an audit log (the log is a file, "
                        "e.g. identity/audit.jsonl)",
                        path);
  }
  int rc = cr__audit_scan_stream(f, path, s, err);
  fclose(f);
  return rc;
}

int cr_audit_verify(const char *path, const uint8_t *expected_pk, cr_audit_report *report,
                    cr_error *err) {
  cr__audit_scan s;
  memset(&s, 0, sizeof s);
  s.expected_pk = expected_pk;
  int rc = scan_path(path, &s, err);
  if (report != NULL)
    *report = s.rep;
  return rc;
}

/* foreach and count stop at bad lines but not at a torn tail. */
static int walk(const char *path, cr__audit_scan *s, cr_error *err) {
  cr_error e2;
  cr_error_clear(&e2);
  int rc = scan_path(path, s, &e2);
  if (rc == CR_EDATA && s->rep.torn_tail)
    return 0;
  if (rc != 0 && err != NULL)
    *err = e2;
  return rc;
}

typedef struct foreach_ctx {
  int (*fn)(void *ctx, const char *entry, size_t len);
  void *ctx;
} foreach_ctx;

static int foreach_one(void *ctx, json_t *entry, const char *line, size_t len) {
  foreach_ctx *f = ctx;
  (void)entry;
  return f->fn(f->ctx, line, len);
}

int cr_audit_foreach(const char *path, int (*fn)(void *ctx, const char *entry, size_t len),
                     void *ctx, cr_error *err) {
  cr__audit_scan s;
  if (fn == NULL)
    return cr_error_set(err, CR_EINVAL, "cr_audit_foreach: no callback");
  foreach_ctx f = {fn, ctx};
  memset(&s, 0, sizeof s);
  s.fn = foreach_one;
  s.ctx = &f;
  return walk(path, &s, err);
}

typedef struct count_ctx {
  const char *event;
  const char *const *kv;
  uint64_t n;
} count_ctx;

/* A string member equal to want, byte for byte (a value holding U+0000
 * must not match a shorter C string). */
static int str_equals(json_t *o, const char *key, const char *want) {
  json_t *v = json_object_get(o, key);
  size_t len = strlen(want);
  return json_is_string(v) && json_string_length(v) == len &&
         memcmp(json_string_value(v), want, len) == 0;
}

static int count_one(void *ctx, json_t *entry, const char *line, size_t len) {
  (void)line;
  (void)len;
  count_ctx *c = ctx;
  if (!str_equals(entry, "event", c->event))
    return 0;
  for (size_t i = 0; c->kv != NULL && c->kv[i] != NULL; i += 2)
    if (!str_equals(entry, c->kv[i], c->kv[i + 1]))
      return 0;
  c->n++;
  return 0;
}

int cr_audit_count(const char *path, const char *event, const char *const *kv_pairs, uint64_t *out,
                   cr_error *err) {
  cr__audit_scan s;
  count_ctx c = {event, kv_pairs, 0};
  if (out == NULL || event == NULL)
    return cr_error_set(err, CR_EINVAL, "cr_audit_count: no event or no output");
  *out = 0;
  for (size_t i = 0; kv_pairs != NULL && kv_pairs[i] != NULL; i += 2)
    if (kv_pairs[i + 1] == NULL)
      return cr_error_set(err, CR_EINVAL, "cr_audit_count: field \"%s\" has no value", kv_pairs[i]);
  memset(&s, 0, sizeof s);
  s.fn = count_one;
  s.ctx = &c;
  int rc = walk(path, &s, err);
  if (rc == 0)
    *out = c.n;
  return rc;
}
