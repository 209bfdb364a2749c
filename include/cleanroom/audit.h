/*
 * cleanroom — the audit log (design §7): append-only JSON Lines, one event a
 * line, hash-chained and signed at checkpoints, so that an operator (or a
 * partner's auditor) can show afterwards what the node did and that nobody
 * edited the record.
 *
 * Owns: the file format, appending with fsync, the chain, checkpoints,
 * verification, crash repair of a torn last line, reading back (show, count).
 * Never: knows about sessions, sockets or templates; logs a match key, a
 * point, a scalar or any other secret. Callers pass only safe fields (names,
 * hashes, counts, fingerprints); this module cannot tell, so it is the
 * caller's duty.
 *
 * Line format (docs/audit.md): a JSON object with "seq" (0, 1, 2, ...),
 * "time" (RFC 3339 UTC, milliseconds), "event", the event's own fields,
 * "prev" (hex hash of the previous line, 64 zeros for the first) and
 * "hash" = hex SHA-256(prev hash bytes || RFC 8785 canonical form of the
 * entry without "hash").
 */
#ifndef CLEANROOM_AUDIT_H
#define CLEANROOM_AUDIT_H

#include <stddef.h>
#include <stdint.h>

#include "cleanroom/common.h"

#ifdef __cplusplus
extern "C" {
#endif

/* A line (newline included) may not be longer: appends refuse bigger entries
 * and readers refuse bigger lines, so a damaged file cannot make a reader
 * allocate without bound. */
#define CR_AUDIT_LINE_MAX (64u * 1024u)
#define CR_AUDIT_HASH_BYTES 32
#define CR_AUDIT_PK_BYTES 32  /* Ed25519 public key */
#define CR_AUDIT_SIG_BYTES 64 /* Ed25519 signature */
/* A checkpoint signs this context string followed by the 32 head bytes. */
#define CR_AUDIT_CHECKPOINT_CONTEXT "cleanroom/v1/audit-checkpoint"
/* Event names are 1..CR_AUDIT_EVENT_MAX characters of [a-z0-9_]. */
#define CR_AUDIT_EVENT_MAX 64

/* A handle is used by one thread at a time. Appends block for an fsync
 * (milliseconds on most disks), and for the file lock while another writer
 * appends. */
typedef struct cr_audit cr_audit;

/* How long a writer waits for the file lock (another writer's append takes
 * milliseconds) before giving up with CR_ETIMEDOUT "in use". */
#define CR_AUDIT_LOCK_WAIT_MS 30000

/*
 * Called with each verified entry a handle learns of, in log order: every
 * line of the log when it is opened, the lines other writers appended
 * (read before each append, under the lock) and the handle's own appends.
 * entry is the line's JSON text (len bytes, no newline, not NUL-terminated),
 * borrowed for the call. A caller keeps what it needs from the log (run
 * counts, say) exact this way without reading the file again. Non-zero
 * from the watch stops the open (returned); elsewhere it is ignored.
 */
typedef int (*cr_audit_watch_fn)(void *ctx, const char *entry, size_t len);

/*
 * Opens the log for appending, creating it with mode 0600 (the directory must
 * exist; an existing file keeps its mode). Reads and verifies the whole
 * existing log (chain and checkpoint signatures) to find the head and the
 * next seq.
 *
 * Many writers: any number of handles, in this process or others (the
 * sessions of one node, several `run`s of one identity), may append to one
 * log. Each append takes an exclusive flock(2) on the file, first reads and
 * verifies the lines other writers appended since this handle last looked
 * (so the new line chains onto the true last line), then writes, fsyncs and
 * releases the lock. No lock is held between calls.
 *
 * A torn last line (one without its trailing newline: the only thing a
 * crash in the middle of a write can leave, since every entry is one write
 * ending in its newline, made under the lock) is cut off with ftruncate(2)
 * and an "audit_repaired" event records how many bytes were dropped and
 * their SHA-256; at open, or when an append finds one another writer left.
 * Any other damage, including a complete last line that is not JSON or
 * does not verify (an edit, not a crash): CR_EDATA naming the line and
 * asking the operator to run `cleanroom audit verify` and keep the file as
 * evidence; nothing is written or cut.
 * CR_EIO: cannot open, create, lock or read it; CR_ETIMEDOUT: another
 * process has held its lock for CR_AUDIT_LOCK_WAIT_MS ("in use").
 */
CR_NODISCARD int cr_audit_open(cr_audit **out, const char *path, cr_error *err);
/* The same with a watch (NULL: none), which sees every line of the log
 * during the open, and every line the handle learns of afterwards. */
CR_NODISCARD int cr_audit_open_watch(cr_audit **out, const char *path, cr_audit_watch_fn watch,
                                     void *ctx, cr_error *err);

/*
 * Holds the file lock across several calls: takes it and catches up with
 * the other writers' lines (the watch sees them), so that what the caller
 * decides from them (a run limit) and what it appends next (session_started)
 * are one atomic step for every writer of the log. Appends and checkpoints
 * made meanwhile use the held lock. Nests; every successful cr_audit_lock
 * needs its cr_audit_unlock, and the lock should be held for milliseconds
 * only (other writers wait). CR_EIO (lock), CR_ETIMEDOUT (in use),
 * CR_EDATA (another writer's lines do not verify).
 */
CR_NODISCARD int cr_audit_lock(cr_audit *a, cr_error *err);
void cr_audit_unlock(cr_audit *a);
/* Catches up with the other writers' lines (lock, read, unlock). */
CR_NODISCARD int cr_audit_sync(cr_audit *a, cr_error *err);

/*
 * Appends one event and returns once it is on disk: the whole line goes out
 * in one write(2) (O_APPEND), then fsync(2). A caller shows or sends the
 * outcome an event records only after this returned 0.
 * `fields_json` (may be NULL) is the JSON text of an object of the event's
 * own fields;
 * the names seq, time, event, prev, hash and signature are reserved
 * (CR_EINVAL), and so are the events "checkpoint" and "audit_repaired",
 * written only by this module. Integers must lie within ±(2^53-1): the hash
 * reads numbers as doubles (RFC 8785), so bigger ones would not be protected.
 * CR_EINVAL: bad name or fields, or the line would exceed CR_AUDIT_LINE_MAX.
 * CR_EIO: the lock could not be taken, or the write or the fsync failed;
 * CR_ETIMEDOUT: another process held the lock too long ("in use").
 * After a failed write or fsync the file is cut back where possible, but
 * the event may or may not be in the log, and the handle refuses further
 * appends: close it and open again (which repairs). CR_EDATA: lines another
 * writer appended do not verify (nothing is written).
 */
CR_NODISCARD int cr_audit_append(cr_audit *a, const char *event, const char *fields_json,
                                 cr_error *err);

/*
 * Appends a signed checkpoint:
 *   {"event":"checkpoint","head":<hash of the previous line>,
 *    "public_key":<hex pk>,"signature":<hex Ed25519 over
 *    CR_AUDIT_CHECKPOINT_CONTEXT || head bytes>}
 * The head commits to every line before it, so the signature covers them all.
 * The signature is checked against pk before anything is written (a key that
 * does not match the signer is CR_ECRYPTO, so is a failing sign callback).
 */
CR_NODISCARD int cr_audit_checkpoint(cr_audit *a, cr_sign_fn sign, void *ctx,
                                     const uint8_t pk[CR_AUDIT_PK_BYTES], cr_error *err);

/* Releases the handle (and the lock, if held). NULL is accepted. */
void cr_audit_close(cr_audit *a);
const char *cr_audit_path(const cr_audit *a);
/* Hash of the last line (64 zeros for an empty log) and the seq the next
 * line gets, as of the handle's last look at the file (open, append,
 * lock or sync). Either pointer may be NULL. */
void cr_audit_head(const cr_audit *a, uint8_t head[CR_AUDIT_HASH_BYTES], uint64_t *next_seq);
/* Bytes of a torn last line cut off by cr_audit_open, 0 if none, so the
 * node can tell the operator. */
uint64_t cr_audit_repaired_bytes(const cr_audit *a);

typedef struct cr_audit_report {
  uint64_t lines;         /* lines read, including a bad or torn one */
  uint64_t events;        /* verified entries other than checkpoints */
  uint64_t checkpoints;   /* verified checkpoints */
  uint64_t receipts;      /* verified "receipt" events */
  uint64_t unsigned_tail; /* verified entries after the last checkpoint:
                             chained, but no signature covers them yet */
  int torn_tail;          /* the last line is incomplete (see cr_audit_verify) */
  uint64_t bad_line;      /* 1-based first bad (or torn) line, 0 if none */
  char head[65];          /* hex hash of the last verified line */
  char reason[512];       /* "line 7: hash does not match its contents (edited?)" */
} cr_audit_report;

/*
 * Verifies the whole log: every line parses, seq counts from 0, prev equals
 * the previous line's hash, hash recomputes, every checkpoint's head is the
 * previous hash and its signature verifies with its public_key, and, if
 * expected_pk is not NULL, that public_key is expected_pk.
 * 0: all good (a log without checkpoints is good too: look at
 * report->checkpoints and unsigned_tail). CR_EIO: unreadable.
 * CR_EDATA: report->bad_line and reason say where and what; a torn last line
 * (no trailing newline) also sets torn_tail (a crash while writing; the node
 * cuts it off on its next start). A complete last line that does not verify
 * is a bad line, not torn. report may be NULL; err gets "<path>: <reason>".
 */
CR_NODISCARD int cr_audit_verify(const char *path, const uint8_t *expected_pk,
                                 cr_audit_report *report, cr_error *err);

/*
 * Calls fn for each entry in order, each verified (chain and signatures)
 * before fn sees it, as the JSON text of its line (len bytes, not
 * NUL-terminated), borrowed for the call. A non-zero return
 * from fn stops the walk and is returned. The first bad line stops it with
 * CR_EDATA (fn has seen the lines before it). A torn last line is skipped
 * without error: its append never returned, so it records nothing.
 */
CR_NODISCARD int cr_audit_foreach(const char *path,
                                  int (*fn)(void *ctx, const char *entry, size_t len), void *ctx,
                                  cr_error *err);

/*
 * Counts verified entries whose "event" is `event` and whose string fields
 * equal every pair of kv_pairs: {"key1", "value1", "key2", "value2", NULL}
 * (NULL for no condition). Used to enforce max_runs_per_query across
 * restarts. Any bad line is CR_EDATA, so deleting lines cannot lower a count;
 * a torn last line is ignored, as in cr_audit_foreach.
 */
CR_NODISCARD int cr_audit_count(const char *path, const char *event, const char *const *kv_pairs,
                                uint64_t *out, cr_error *err);

#ifdef __cplusplus
}
#endif
#endif
