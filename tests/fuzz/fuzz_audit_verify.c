/*
 * Fuzz target: an audit log is read back by `cleanroom audit verify` and by
 * the node on every start, after anyone may have edited, truncated or
 * corrupted it. The reader must survive any bytes without crashing or
 * leaking, and keep the promises the node's repair relies on:
 *   - 0 exactly when no line is bad and the tail is not torn;
 *   - a torn tail spans from the end of the verified prefix to the end of
 *     the input, and that prefix alone verifies with the same head and seq
 *     (so cutting it off, as cr_audit_open does, leaves a good log);
 *   - requiring a checkpoint key can only turn success into failure.
 * Reads from memory (fmemopen) so that no file is written per input.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "audit/audit_internal.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int count_entry(void *ctx, json_t *entry, const char *line, size_t len) {
  uint64_t *n = ctx;
  if (!json_is_object(entry) || json_object_get(entry, "hash") == NULL || line == NULL || len == 0)
    abort(); /* only whole, verified entries are handed out */
  (*n)++;
  return 0;
}

static int scan(const uint8_t *data, size_t size, cr__audit_scan *s, cr_error *err) {
  static char empty[1];
  /* fmemopen wants a non-const buffer; mode "r" never writes to it. glibc
   * accepts size 0 (an empty log). */
  FILE *f = fmemopen(size ? (void *)data : empty, size, "r");
  if (f == NULL)
    abort();
  cr_error_clear(err);
  int rc = cr__audit_scan_stream(f, "fuzz", s, err);
  fclose(f);
  if (memchr(s->rep.reason, '\0', sizeof s->rep.reason) == NULL ||
      memchr(err->msg, '\0', sizeof err->msg) == NULL)
    abort();
  return rc;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  /* A key nobody can sign with: with it expected, every checkpoint whose
   * signature verifies must still be refused by the key comparison. */
  static const uint8_t other_pk[32] = {1, 2, 3};
  cr__audit_scan s, s2, s3;
  cr_error err;
  uint64_t seen = 0;

  memset(&s, 0, sizeof s);
  s.fn = count_entry;
  s.ctx = &seen;
  int rc = scan(data, size, &s, &err);
  if (rc != 0 && rc != CR_EDATA && rc != CR_ENOMEM)
    abort();
  if ((rc == 0) != (s.rep.bad_line == 0 && !s.rep.torn_tail) && rc != CR_ENOMEM)
    abort();
  if (seen != s.rep.events + s.rep.checkpoints || s.next_seq != seen)
    abort();
  if (s.good_end > size || s.rep.receipts > s.rep.events)
    abort();
  if (rc == 0 && (s.good_end != size || s.rep.lines != seen))
    abort();

  if (rc == CR_EDATA && s.rep.torn_tail) {
    if (s.good_end + s.torn_bytes != size || s.rep.bad_line != s.rep.lines)
      abort();
    memset(&s2, 0, sizeof s2);
    if (scan(data, (size_t)s.good_end, &s2, &err) != 0 || s2.next_seq != s.next_seq ||
        memcmp(s2.head, s.head, sizeof s.head) != 0)
      abort();
  }

  memset(&s3, 0, sizeof s3);
  s3.expected_pk = other_pk;
  int rc3 = scan(data, size, &s3, &err);
  if (rc3 == 0 && rc != 0)
    abort();
  if (rc3 == 0 && s3.rep.checkpoints != 0)
    abort();
  return 0;
}
