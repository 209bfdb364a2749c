/*
 * Audit log internals shared by the writer (log.c), the reader (verify.c)
 * and the fuzz target. Not a stable API.
 */
#ifndef CR_AUDIT_INTERNAL_H
#define CR_AUDIT_INTERNAL_H

#include <stdint.h>
#include <stdio.h>

#include <jansson.h>

#include "cleanroom/audit.h"

/* The largest integer a double holds exactly: RFC 8785 reads numbers as
 * doubles, so two integers past it could share one canonical form. */
#define CR__AUDIT_MAX_SAFE_INT 9007199254740991LL

/* Called for each verified entry; non-zero stops the scan and is returned. */
typedef int (*cr__audit_entry_fn)(void *ctx, json_t *entry, const char *line, size_t len);

typedef struct cr__audit_scan {
  /* In. */
  const uint8_t *expected_pk; /* NULL: any checkpoint key */
  cr__audit_entry_fn fn;      /* NULL: verify only */
  void *ctx;
  /* Resume: f is positioned at start_offset, just past line start_line,
   * whose hash is start_head and after which seq start_seq comes (the
   * writer catching up with lines other writers appended). 0: from the
   * start of the file. */
  int resume;
  uint8_t start_head[CR_AUDIT_HASH_BYTES];
  uint64_t start_seq, start_offset, start_line;
  /* Out. */
  cr_audit_report rep;
  uint8_t head[CR_AUDIT_HASH_BYTES]; /* hash of the last verified line */
  uint64_t next_seq;
  uint64_t good_end;   /* offset just past the last verified line */
  uint64_t torn_bytes; /* torn tail: bytes from good_end to the end */
  uint8_t torn_sha256[CR_AUDIT_HASH_BYTES];
} cr__audit_scan;

/*
 * Reads a log from f (positioned at its start) and verifies it line by line,
 * never holding more than one line. `origin` names the source in messages.
 * 0: everything verified. CR_EDATA: s->rep says where and why (torn_tail
 * for an incomplete last line; everything before it verified and s->head,
 * next_seq, good_end describe that prefix). CR_EIO, CR_ENOMEM, or what fn
 * returned. s's "in" fields are set by the caller; the rest is reset here.
 */
int cr__audit_scan_stream(FILE *f, const char *origin, cr__audit_scan *s, cr_error *err);

/* hash = SHA-256(prev || RFC 8785 form of entry without its "hash" member).
 * CR_EINVAL (message in err, without origin) if it cannot be serialized. */
int cr__audit_entry_hash(json_t *entry, const uint8_t prev[CR_AUDIT_HASH_BYTES],
                         uint8_t out[CR_AUDIT_HASH_BYTES], cr_error *err);

/* 1 if every integer in v lies within ±CR__AUDIT_MAX_SAFE_INT. v must be
 * acyclic (a parsed value, or one json_dumps has accepted). */
int cr__audit_ints_safe(const json_t *v);

/* The message a checkpoint signs: context || head. */
#define CR__AUDIT_CKPT_CTX_LEN (sizeof CR_AUDIT_CHECKPOINT_CONTEXT - 1)
#define CR__AUDIT_CKPT_MSG_LEN (CR__AUDIT_CKPT_CTX_LEN + CR_AUDIT_HASH_BYTES)
void cr__audit_checkpoint_msg(uint8_t msg[CR__AUDIT_CKPT_MSG_LEN],
                              const uint8_t head[CR_AUDIT_HASH_BYTES]);

/* For tests: how long a writer waits for the file lock before giving up
 * (default CR_AUDIT_LOCK_WAIT_MS). */
void cr__audit_set_lock_wait_ms(unsigned ms);

#endif
