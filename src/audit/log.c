/*
 * Writing the audit log. The guarantees the rest of the node relies on:
 *   - an append that returned 0 is on disk (write then fsync), so a result
 *     is shown only after its record survives a crash;
 *   - a crash leaves at most one incomplete last line (one write(2) per
 *     line, O_APPEND, so without its newline), which the next open cuts off
 *     and records; a complete line that does not verify, even the last,
 *     was not left by a crash and is never cut off;
 *   - one writer at a time (flock), since two would fork the chain;
 *   - a log damaged in any other way is never appended to: the node stops
 *     and the operator investigates.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <sodium.h>

#include "audit/audit_internal.h"
#include "cleanroom/common.h"

struct cr_audit {
  int fd;
  char *path;
  uint8_t head[CR_AUDIT_HASH_BYTES];
  uint64_t next_seq;
  /* Size of the file up to the last line we know is complete: where a failed
   * append is cut back to. Valid because we are the only writer (flock). */
  uint64_t size;
  uint64_t repaired_bytes;
  /* A write or fsync failed: what is on disk is unknown, so the chain head
   * in memory may be wrong. Only a fresh open (which rescans) is safe. */
  int broken;
};

static const char *const reserved_fields[] = {"seq", "time", "event", "prev", "hash", "signature"};

static int is_reserved_field(const char *k) {
  for (size_t i = 0; i < sizeof reserved_fields / sizeof reserved_fields[0]; i++)
    if (strcmp(k, reserved_fields[i]) == 0)
      return 1;
  return 0;
}

static int valid_event_name(const char *ev) {
  size_t n = 0;
  if (ev == NULL)
    return 0;
  for (; ev[n] != '\0'; n++)
    if (!((ev[n] >= 'a' && ev[n] <= 'z') || (ev[n] >= '0' && ev[n] <= '9') || ev[n] == '_'))
      return 0;
  return n >= 1 && n <= CR_AUDIT_EVENT_MAX;
}

/* RFC 3339, UTC, milliseconds: "2025-03-01T12:34:56.789Z". */
static int now_rfc3339(char *out, size_t cap) {
  struct timespec ts;
  struct tm tm;
  if (clock_gettime(CLOCK_REALTIME, &ts) != 0 || gmtime_r(&ts.tv_sec, &tm) == NULL)
    return CR_EINTERNAL;
  size_t n = strftime(out, cap, "%Y-%m-%dT%H:%M:%S", &tm);
  if (n == 0)
    return CR_EINTERNAL;
  snprintf(out + n, cap - n, ".%03dZ", (int)(ts.tv_nsec / 1000000));
  return 0;
}

/* Makes a newly created file's directory entry durable: without it a crash
 * could lose the whole log even though every append was fsync'ed. */
static int fsync_parent(const char *path, cr_error *err) {
  int rc = 0, dfd = -1;
  char *dir = strdup(path);
  if (dir == NULL) {
    rc = cr_error_set(err, CR_ENOMEM, "%s: out of memory", path);
    goto out;
  }
  char *slash = strrchr(dir, '/');
  if (slash == NULL)
    strcpy(dir, ".");
  else if (slash == dir)
    slash[1] = '\0';
  else
    *slash = '\0';
  dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  /* Some file systems cannot fsync a directory (EINVAL): nothing to do there. */
  if (dfd < 0 || (fsync(dfd) != 0 && errno != EINVAL))
    rc = cr_error_set(err, CR_EIO, "%s: cannot sync its directory %s: %s", path, dir,
                      strerror(errno));
out:
  if (dfd >= 0)
    close(dfd);
  free(dir);
  return rc;
}

static int oom(const cr_audit *a, cr_error *err) {
  return cr_error_set(err, CR_ENOMEM, "%s: out of memory", a->path);
}

/*
 * seq, time, event first so a person reading the file sees them first; prev
 * and hash last. The hash is over the canonical form, so the order on disk
 * does not matter to it. `internal`: written by this module, which alone may
 * use the field name "signature" (a checkpoint's).
 */
static int append_entry(cr_audit *a, const char *event, json_t *fields, int internal,
                        cr_error *err) {
  int rc = 0;
  char tbuf[40], prev_hex[65], hash_hex[65];
  uint8_t h[CR_AUDIT_HASH_BYTES];
  char *line = NULL;
  size_t len = 0;
  json_t *e = NULL;
  cr_error herr;
  if (a->broken) {
    rc = cr_error_set(err, CR_EIO,
                      "%s: an earlier append failed; close and reopen the audit log "
                      "(reopening repairs it)",
                      a->path);
    goto out;
  }
  if (fields != NULL && !json_is_object(fields)) {
    rc = cr_error_set(err, CR_EINVAL, "%s: event %s: fields must be a JSON object", a->path, event);
    goto out;
  }
  if ((rc = now_rfc3339(tbuf, sizeof tbuf)) != 0) {
    cr_error_set(err, rc, "%s: cannot read the clock", a->path);
    goto out;
  }
  cr_hex_encode(prev_hex, a->head, sizeof a->head);
  if ((e = json_object()) == NULL ||
      json_object_set_new(e, "seq", json_integer((json_int_t)a->next_seq)) != 0 ||
      json_object_set_new(e, "time", json_string(tbuf)) != 0 ||
      json_object_set_new(e, "event", json_string(event)) != 0) {
    rc = oom(a, err);
    goto out;
  }
  if (fields != NULL) {
    const char *k;
    json_t *v;
    json_object_foreach(fields, k, v) {
      if (is_reserved_field(k) && !(internal && strcmp(k, "signature") == 0)) {
        rc = cr_error_set(err, CR_EINVAL, "%s: event %s: field name \"%s\" is reserved", a->path,
                          event, k);
        goto out;
      }
      if (json_object_set(e, k, v) != 0) {
        rc = oom(a, err);
        goto out;
      }
    }
  }
  if (json_object_set_new(e, "prev", json_string(prev_hex)) != 0) {
    rc = oom(a, err);
    goto out;
  }
  /* Hashing serializes the entry first, which catches cycles, before the
   * integer walk below recurses into it. */
  cr_error_clear(&herr);
  if ((rc = cr__audit_entry_hash(e, a->head, h, &herr)) != 0) {
    cr_error_set(err, rc, "%s: event %s: fields cannot be written: %s", a->path, event, herr.msg);
    goto out;
  }
  if (!cr__audit_ints_safe(e)) {
    rc = cr_error_set(err, CR_EINVAL,
                      "%s: event %s: an integer lies outside +-(2^53-1); the hash reads "
                      "numbers as doubles, so pass it as a string",
                      a->path, event);
    goto out;
  }
  cr_hex_encode(hash_hex, h, sizeof h);
  if (json_object_set_new(e, "hash", json_string(hash_hex)) != 0 ||
      (line = json_dumps(e, JSON_COMPACT)) == NULL) {
    rc = oom(a, err);
    goto out;
  }
  len = strlen(line) + 1;
  if (len > CR_AUDIT_LINE_MAX) {
    rc = cr_error_set(err, CR_EINVAL, "%s: event %s: %zu bytes, more than a line may hold (%u)",
                      a->path, event, len, CR_AUDIT_LINE_MAX);
    goto out;
  }
  line[len - 1] = '\n'; /* over json_dumps' NUL: the buffer is exactly the line now */

  /*
   * One write(2): a crash leaves either nothing or a prefix of this line,
   * never a mix with another. A short write (disk full) is cut back rather
   * than completed by a second write.
   */
  ssize_t w;
  do
    w = write(a->fd, line, len);
  while (w < 0 && errno == EINTR);
  if (w != (ssize_t)len) {
    int saved = w < 0 ? errno : ENOSPC;
    if (w > 0 && ftruncate(a->fd, (off_t)a->size) != 0)
      a->broken = 1;
    rc = cr_error_set(err, CR_EIO, "%s: cannot append event %s: %s", a->path, event,
                      strerror(saved));
    goto out;
  }
  if (fsync(a->fd) != 0) {
    /* After a failed fsync the kernel may have dropped the dirty pages, and a
     * retry could report success: never trust this handle again. The line is
     * cut back if possible; the reopen decides what is on disk. */
    int saved = errno;
    a->broken = 1;
    if (ftruncate(a->fd, (off_t)a->size) != 0) {
      /* Already failing; the fsync error is the one to report. */
    }
    rc = cr_error_set(err, CR_EIO, "%s: cannot sync event %s to disk: %s", a->path, event,
                      strerror(saved));
    goto out;
  }
  memcpy(a->head, h, sizeof h);
  a->next_seq++;
  a->size += len;
out:
  free(line);
  json_decref(e);
  return rc;
}

int cr_audit_append(cr_audit *a, const char *event, const char *fields_json, cr_error *err) {
  json_t *fields = NULL;
  if (a == NULL)
    return cr_error_set(err, CR_EINVAL, "cr_audit_append: no audit log");
  if (!valid_event_name(event))
    return cr_error_set(err, CR_EINVAL,
                        "%s: event name \"%s\" must be 1 to %d characters of a-z, 0-9 and _",
                        a->path, event ? event : "(null)", CR_AUDIT_EVENT_MAX);
  /* Readers trust these two to mean what this module wrote. */
  if (strcmp(event, "checkpoint") == 0 || strcmp(event, "audit_repaired") == 0)
    return cr_error_set(err, CR_EINVAL, "%s: event \"%s\" is written only by the audit module",
                        a->path, event);
  if (fields_json != NULL) {
    json_error_t jerr;
    fields = json_loads(fields_json, JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL, &jerr);
    if (fields == NULL)
      return cr_error_set(err, CR_EINVAL, "%s: the fields of event \"%s\" are not JSON: %s",
                          a->path, event, jerr.text);
  }
  int rc = append_entry(a, event, fields, 0, err);
  json_decref(fields);
  return rc;
}

int cr_audit_checkpoint(cr_audit *a, cr_sign_fn sign, void *ctx,
                        const uint8_t pk[CR_AUDIT_PK_BYTES], cr_error *err) {
  int rc = 0;
  uint8_t msg[CR__AUDIT_CKPT_MSG_LEN], sig[CR_AUDIT_SIG_BYTES];
  char head_hex[65], pk_hex[65], sig_hex[129];
  json_t *f = NULL;
  if (a == NULL || sign == NULL || pk == NULL) {
    rc = cr_error_set(err, CR_EINVAL, "cr_audit_checkpoint: missing argument");
    goto out;
  }
  cr__audit_checkpoint_msg(msg, a->head);
  if (sign(ctx, msg, sizeof msg, sig) != 0) {
    rc = cr_error_set(err, CR_ECRYPTO, "%s: checkpoint: signing failed", a->path);
    goto out;
  }
  /* A checkpoint that does not verify would make the whole log fail
   * verification later; refuse it now, while the cause is obvious. */
  if (crypto_sign_verify_detached(sig, msg, sizeof msg, pk) != 0) {
    rc = cr_error_set(err, CR_ECRYPTO,
                      "%s: checkpoint: the signature does not verify with the given public "
                      "key (key and signer differ?)",
                      a->path);
    goto out;
  }
  cr_hex_encode(head_hex, a->head, sizeof a->head);
  cr_hex_encode(pk_hex, pk, CR_AUDIT_PK_BYTES);
  cr_hex_encode(sig_hex, sig, sizeof sig);
  if ((f = json_pack("{s:s, s:s, s:s}", "head", head_hex, "public_key", pk_hex, "signature",
                     sig_hex)) == NULL) {
    rc = oom(a, err);
    goto out;
  }
  rc = append_entry(a, "checkpoint", f, 1, err);
out:
  json_decref(f);
  return rc;
}

/*
 * Cuts a torn last line off and records it. Its bytes are not copied into
 * the log (they were never acknowledged, and could be anything); their
 * length and SHA-256 let an investigator match a copy of the damaged file.
 */
static int repair(cr_audit *a, const cr__audit_scan *s, cr_error *err) {
  int rc = 0;
  char sha_hex[65];
  json_t *f = NULL;
  if (ftruncate(a->fd, (off_t)s->good_end) != 0) {
    rc = cr_error_set(err, CR_EIO, "%s: cannot cut off the incomplete last line: %s", a->path,
                      strerror(errno));
    goto out;
  }
  a->repaired_bytes = s->torn_bytes;
  cr_hex_encode(sha_hex, s->torn_sha256, sizeof s->torn_sha256);
  if ((f = json_pack("{s:I, s:s, s:I, s:s}", "line", (json_int_t)s->rep.bad_line, "dropped_sha256",
                     sha_hex, "dropped_bytes", (json_int_t)s->torn_bytes, "reason",
                     "incomplete last line (crash while writing)")) == NULL) {
    rc = cr_error_set(err, CR_ENOMEM, "%s: out of memory", a->path);
    goto out;
  }
  /* The append's fsync also makes the truncation durable. */
  rc = append_entry(a, "audit_repaired", f, 1, err);
out:
  json_decref(f);
  return rc;
}

int cr_audit_open(cr_audit **out, const char *path, cr_error *err) {
  int rc = 0, created = 0, dfd = -1;
  FILE *f = NULL;
  cr_audit *a = NULL;
  cr__audit_scan s;
  memset(&s, 0, sizeof s);
  if (out == NULL || path == NULL) {
    rc = cr_error_set(err, CR_EINVAL, "cr_audit_open: no path or no output");
    goto out;
  }
  *out = NULL;
  if ((a = calloc(1, sizeof *a)) == NULL) {
    rc = cr_error_set(err, CR_ENOMEM, "%s: out of memory", path);
    goto out;
  }
  a->fd = -1;
  if ((a->path = strdup(path)) == NULL) {
    rc = cr_error_set(err, CR_ENOMEM, "%s: out of memory", path);
    goto out;
  }
  /* O_EXCL first, to know whether the directory entry is new and must be
   * synced; 0600 because events name partners, files and counts. */
  a->fd = open(path, O_RDWR | O_APPEND | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (a->fd >= 0)
    created = 1;
  else if (errno == EEXIST)
    a->fd = open(path, O_RDWR | O_APPEND | O_CLOEXEC);
  if (a->fd < 0) {
    rc = cr_error_set(err, CR_EIO, "%s: cannot open the audit log: %s%s", path, strerror(errno),
                      errno == ENOENT ? " (its directory must exist)" : "");
    goto out;
  }
  struct stat st;
  if (fstat(a->fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    rc = cr_error_set(err, CR_EIO, "%s: the audit log is not a regular file", path);
    goto out;
  }
  if (flock(a->fd, LOCK_EX | LOCK_NB) != 0) {
    rc = cr_error_set(err, CR_EIO, "%s: %s", path,
                      errno == EWOULDBLOCK
                          ? "in use by another process (is another node running with this "
                            "audit log?)"
                          : strerror(errno));
    goto out;
  }
  if (created && (rc = fsync_parent(path, err)) != 0)
    goto out;

  /* Read through our own descriptor: it is the file we hold the lock on,
   * whatever happens to the path meanwhile. */
  if ((dfd = dup(a->fd)) < 0 || lseek(dfd, 0, SEEK_SET) != 0 || (f = fdopen(dfd, "rb")) == NULL) {
    rc = cr_error_set(err, CR_EIO, "%s: cannot read the audit log: %s", path, strerror(errno));
    goto out;
  }
  dfd = -1; /* owned by f now */
  rc = cr__audit_scan_stream(f, path, &s, err);
  if (rc == CR_EDATA && !s.rep.torn_tail) {
    cr_error_set(err, rc,
                 "%s: the audit log is damaged or was edited: %s. Nothing was appended or "
                 "cut; run `cleanroom audit verify %s`, keep the file unchanged as evidence, "
                 "and start a new log only once you know what happened",
                 path, s.rep.reason, path);
    goto out;
  }
  if (rc != 0 && rc != CR_EDATA)
    goto out;
  memcpy(a->head, s.head, sizeof a->head);
  a->next_seq = s.next_seq;
  a->size = s.good_end;
  if (rc == CR_EDATA && (rc = repair(a, &s, err)) != 0)
    goto out;
  cr_error_clear(err); /* the torn-tail message is no longer true */
  *out = a;
  a = NULL;
out:
  if (f != NULL)
    fclose(f);
  if (dfd >= 0)
    close(dfd);
  cr_audit_close(a);
  return rc;
}

void cr_audit_close(cr_audit *a) {
  if (a == NULL)
    return;
  if (a->fd >= 0)
    close(a->fd); /* releases the flock */
  free(a->path);
  free(a);
}

const char *cr_audit_path(const cr_audit *a) { return a ? a->path : NULL; }

void cr_audit_head(const cr_audit *a, uint8_t head[CR_AUDIT_HASH_BYTES], uint64_t *next_seq) {
  if (a == NULL)
    return;
  if (head != NULL)
    memcpy(head, a->head, CR_AUDIT_HASH_BYTES);
  if (next_seq != NULL)
    *next_seq = a->next_seq;
}

uint64_t cr_audit_repaired_bytes(const cr_audit *a) { return a ? a->repaired_bytes : 0; }
