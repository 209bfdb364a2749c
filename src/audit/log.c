/*
 * Writing the audit log. The guarantees the rest of the node relies on:
 *   - an append that returned 0 is on disk (write then fsync), so a result
 *     is shown only after its record survives a crash;
 *   - a crash leaves at most one incomplete last line (one write(2) per
 *     line, O_APPEND, so without its newline), which the next open cuts off
 *     and records; a complete line that does not verify, even the last,
 *     was not left by a crash and is never cut off;
 *   - many writers (the sessions of one node, several `run` processes of
 *     one identity), one append at a time: each append takes an exclusive
 *     flock(2), reads and verifies whatever other writers appended since
 *     this handle last looked, chains onto the true last line, writes,
 *     fsyncs and lets go. A caller that must decide from the log and
 *     append atomically (the run limit) holds the lock across both with
 *     cr_audit_lock / cr_audit_unlock;
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
  /* Size of the file up to the last line we know is complete (verified,
   * ours or another writer's): where the next catch-up starts and where a
   * failed append is cut back to. Valid while we hold the file lock. */
  uint64_t size;
  uint64_t lines; /* lines up to size */
  uint64_t repaired_bytes;
  /* A write or fsync failed: what is on disk is unknown, so the chain head
   * in memory may be wrong. Only a fresh open (which rescans) is safe. */
  int broken;
  unsigned locked; /* depth of cr_audit_lock */
  cr_audit_watch_fn watch;
  void *watch_ctx;
};

static unsigned g_lock_wait_ms = CR_AUDIT_LOCK_WAIT_MS;
void cr__audit_set_lock_wait_ms(unsigned ms) { g_lock_wait_ms = ms; }

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
    int saved = errno;
    if (w > 0 && ftruncate(a->fd, (off_t)a->size) != 0)
      a->broken = 1;
    /* A short write does not say why: the disk or a quota is full, or the
     * file reached a size limit (RLIMIT_FSIZE, EFBIG on the next write). */
    if (w < 0)
      rc = cr_error_set(err, CR_EIO, "%s: cannot append event %s: %s", a->path, event,
                        strerror(saved));
    else
      rc = cr_error_set(err, CR_EIO,
                        "%s: cannot append event %s: only %zd of its %zu bytes were written "
                        "(the disk or a quota is full, or the file reached a size limit)",
                        a->path, event, w, len);
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
  a->lines++;
  if (a->watch != NULL)
    (void)a->watch(a->watch_ctx, line, len - 1); /* the line, without its newline */
out:
  free(line);
  json_decref(e);
  return rc;
}

/* ---- the file lock and catching up with other writers ------------------- */

/*
 * Takes the exclusive lock, waiting for the writer that holds it (an append
 * takes milliseconds). Polled rather than blocking so that a process that
 * holds the lock and never lets go (a cleanroom from before per-append
 * locking held it for its whole life) gives an error, not a hang.
 */
static int lock_file(cr_audit *a, cr_error *err) {
  uint64_t waited_us = 0, step_us = 200;
  for (;;) {
    if (flock(a->fd, LOCK_EX | LOCK_NB) == 0)
      return 0;
    if (errno == EINTR)
      continue;
    if (errno != EWOULDBLOCK)
      return cr_error_set(err, CR_EIO, "%s: cannot lock the audit log: %s", a->path,
                          strerror(errno));
    if (waited_us >= (uint64_t)g_lock_wait_ms * 1000u)
      return cr_error_set(err, CR_ETIMEDOUT,
                          "%s: in use: another process has held the audit log's lock for %u ms "
                          "(a cleanroom node older than this one holds it for its whole life; "
                          "stop it, or give this one another log with --audit)",
                          a->path, g_lock_wait_ms);
    struct timespec ts = {0, (long)step_us * 1000L};
    (void)nanosleep(&ts, NULL);
    waited_us += step_us;
    if (step_us < 20000)
      step_us *= 2;
  }
}

static void unlock_file(cr_audit *a) { (void)flock(a->fd, LOCK_UN); }

static int repair(cr_audit *a, const cr__audit_scan *s, cr_error *err);

static int scan_entry(void *ctx, json_t *entry, const char *line, size_t len) {
  cr_audit *a = ctx;
  (void)entry;
  if (a->watch != NULL)
    return a->watch(a->watch_ctx, line, len);
  return 0;
}

/*
 * Reads and verifies what was appended after a->size (everything, from
 * 0), chaining on from a->head; the watch sees each line. A torn last line
 * is cut off and recorded (we hold the lock, so its writer is gone: it
 * died in the middle of its write). Caller holds the lock.
 */
static int catch_up(cr_audit *a, cr_error *err) {
  struct stat st;
  int rc = 0, dfd = -1;
  FILE *f = NULL;
  cr__audit_scan s;
  if (fstat(a->fd, &st) != 0)
    return cr_error_set(err, CR_EIO, "%s: cannot read the audit log: %s", a->path, strerror(errno));
  if ((uint64_t)st.st_size == a->size)
    return 0;
  if ((uint64_t)st.st_size < a->size) {
    a->broken = 1;
    return cr_error_set(err, CR_EDATA,
                        "%s: the audit log shrank from %llu to %llu bytes while this node had "
                        "it open (cut or replaced by someone): nothing was appended; run "
                        "`cleanroom audit verify %s` and keep the file as evidence",
                        a->path, (unsigned long long)a->size, (unsigned long long)st.st_size,
                        a->path);
  }
  memset(&s, 0, sizeof s);
  s.fn = scan_entry;
  s.ctx = a;
  s.resume = 1;
  memcpy(s.start_head, a->head, sizeof a->head);
  s.start_seq = a->next_seq;
  s.start_offset = a->size;
  s.start_line = a->lines;
  /* Our own descriptor: the file we lock, whatever happens to the path. */
  if ((dfd = dup(a->fd)) < 0 || lseek(dfd, (off_t)a->size, SEEK_SET) < 0 ||
      (f = fdopen(dfd, "rb")) == NULL) {
    rc = cr_error_set(err, CR_EIO, "%s: cannot read the audit log: %s", a->path, strerror(errno));
    goto out;
  }
  dfd = -1; /* owned by f now */
  rc = cr__audit_scan_stream(f, a->path, &s, err);
  if (rc == CR_EDATA && !s.rep.torn_tail) {
    cr_error_set(err, rc,
                 "%s: the audit log is damaged or was edited: %s. Nothing was appended or "
                 "cut; run `cleanroom audit verify %s`, keep the file unchanged as evidence, "
                 "and start a new log only once you know what happened",
                 a->path, s.rep.reason, a->path);
    goto out;
  }
  if (rc != 0 && rc != CR_EDATA)
    goto out;
  memcpy(a->head, s.head, sizeof a->head);
  a->next_seq = s.next_seq;
  a->size = s.good_end;
  a->lines = s.rep.torn_tail ? s.rep.lines - 1 : s.rep.lines;
  if (rc == CR_EDATA && (rc = repair(a, &s, err)) != 0)
    goto out;
  rc = 0;
  cr_error_clear(err); /* the torn-tail message is no longer true */
out:
  if (f != NULL)
    fclose(f);
  if (dfd >= 0)
    close(dfd);
  return rc;
}

/* Before an append: the lock, and the log as it is now (unless the caller
 * already holds both through cr_audit_lock). */
static int append_begin(cr_audit *a, cr_error *err) {
  if (a->locked)
    return 0;
  int rc = lock_file(a, err);
  if (rc == 0 && (rc = catch_up(a, err)) != 0)
    unlock_file(a);
  return rc;
}

static void append_end(cr_audit *a) {
  if (!a->locked)
    unlock_file(a);
}

int cr_audit_lock(cr_audit *a, cr_error *err) {
  if (a == NULL)
    return cr_error_set(err, CR_EINVAL, "cr_audit_lock: no audit log");
  if (a->locked) {
    a->locked++;
    return 0;
  }
  int rc = lock_file(a, err);
  if (rc == 0 && (rc = catch_up(a, err)) != 0)
    unlock_file(a);
  if (rc == 0)
    a->locked = 1;
  return rc;
}

void cr_audit_unlock(cr_audit *a) {
  if (a == NULL || a->locked == 0)
    return;
  if (--a->locked == 0)
    unlock_file(a);
}

int cr_audit_sync(cr_audit *a, cr_error *err) {
  int rc = cr_audit_lock(a, err);
  if (rc == 0)
    cr_audit_unlock(a);
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
  int rc = append_begin(a, err);
  if (rc == 0) {
    rc = append_entry(a, event, fields, 0, err);
    append_end(a);
  }
  json_decref(fields);
  return rc;
}

int cr_audit_checkpoint(cr_audit *a, cr_sign_fn sign, void *ctx,
                        const uint8_t pk[CR_AUDIT_PK_BYTES], cr_error *err) {
  int rc = 0;
  uint8_t msg[CR__AUDIT_CKPT_MSG_LEN], sig[CR_AUDIT_SIG_BYTES];
  char head_hex[65], pk_hex[65], sig_hex[129];
  json_t *f = NULL;
  int began = 0;
  if (a == NULL || sign == NULL || pk == NULL) {
    rc = cr_error_set(err, CR_EINVAL, "cr_audit_checkpoint: missing argument");
    goto out;
  }
  /* The head to sign is the log's true last line, whoever wrote it. */
  if ((rc = append_begin(a, err)) != 0)
    goto out;
  began = 1;
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
  if (began)
    append_end(a);
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
  return cr_audit_open_watch(out, path, NULL, NULL, err);
}

int cr_audit_open_watch(cr_audit **out, const char *path, cr_audit_watch_fn watch, void *ctx,
                        cr_error *err) {
  int rc = 0, created = 0, locked = 0;
  cr_audit *a = NULL;
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
  a->watch = watch;
  a->watch_ctx = ctx;
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
  if ((rc = lock_file(a, err)) != 0)
    goto out;
  locked = 1;
  if (created && (rc = fsync_parent(path, err)) != 0)
    goto out;
  /* The whole log, verified (chain and checkpoints), to find its head; a
   * torn last line is cut off and recorded. */
  if ((rc = catch_up(a, err)) != 0)
    goto out;
  *out = a;
  a = NULL;
out:
  if (locked && a == NULL)
    unlock_file(*out);
  cr_audit_close(a); /* a failed open: closing releases the lock too */
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
