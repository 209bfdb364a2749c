/*
 * cleanroom — common: error codes, buffers, hex, hashing, the worker pool.
 * Used by every layer; knows none of them.
 */
#ifndef CLEANROOM_COMMON_H
#define CLEANROOM_COMMON_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/*
 * cleanroom — error codes and error detail.
 *
 * Every public function returns int: 0 on success, a negative CR_E* code on
 * failure. The list below is the single source of both the codes and
 * cr_strerror(). A cr_error carries a human message naming what was wrong
 * (file, line, field, JSON path) and what to do; it must never carry a match
 * key, a point or a secret.
 */

#if defined(__GNUC__)
#define CR_NODISCARD __attribute__((warn_unused_result))
#define CR_PRINTF(a, b) __attribute__((format(printf, a, b)))
#else
#define CR_NODISCARD
#define CR_PRINTF(a, b)
#endif

/* XX(name, message). New codes go at the end, so that the values of the
 * others never change. EDNS, ECONNREFUSED and ECONNRESET refine ENET, which
 * remains for the other network errors (unreachable host or network). */
#define CR_ERRNO_MAP(XX)                                                                           \
  XX(EINVAL, "invalid argument")                                                                   \
  XX(ENOMEM, "out of memory")                                                                      \
  XX(EIO, "input/output error")                                                                    \
  XX(EUSAGE, "usage error")                                                                        \
  XX(ECONFIG, "configuration error")                                                               \
  XX(ETEMPLATE, "template error")                                                                  \
  XX(EDATA, "data error")                                                                          \
  XX(ECRYPTO, "cryptographic failure")                                                             \
  XX(EPROTO, "protocol error")                                                                     \
  XX(EREFUSED, "refused")                                                                          \
  XX(EPEER, "refused by the partner")                                                              \
  XX(ENET, "network error")                                                                        \
  XX(ETIMEDOUT, "timed out")                                                                       \
  XX(ETLS, "TLS error")                                                                            \
  XX(EAUTH, "peer authentication failed")                                                          \
  XX(EINTERNAL, "internal error")                                                                  \
  XX(EDNS, "host name not found")                                                                  \
  XX(ECONNREFUSED, "connection refused")                                                           \
  XX(ECONNRESET, "connection reset by the peer")                                                   \
  XX(ECLUSTER, "a process of this node's cluster failed")

enum {
  CR_OK = 0,
#define CR__ERR_ENUM(name, msg) CR_##name,
  CR__ERR_FIRST = -1000,
  CR_ERRNO_MAP(CR__ERR_ENUM)
#undef CR__ERR_ENUM
      CR__ERR_LAST
};

const char *cr_strerror(int code);
/* The symbolic name ("EPROTO") of a code, for logs and JSON. */
const char *cr_err_name(int code);

#define CR_ERROR_MSG_MAX 1024

typedef struct cr_error {
  int code;
  char msg[CR_ERROR_MSG_MAX];
} cr_error;

/* Sets err (if not NULL) and returns code, so callers can `return cr_error_set(...)`. */
int cr_error_set(cr_error *err, int code, const char *fmt, ...) CR_PRINTF(3, 4);
#ifdef __clang_analyzer__
/* The static analyzer does not follow variadic calls, so it would assume an
 * error path may return 0 without its out-parameters set. Analysis only:
 * this tells it what cr_error_set returns. */
static inline int cr__error_code(int set, int code) {
  (void)set;
  return code;
}
#define cr_error_set(err, code, ...)                                                               \
  cr__error_code(cr_error_set((err), (code), __VA_ARGS__), (code))
#endif
void cr_error_clear(cr_error *err);
/* Message of err, or cr_strerror(code) when err holds none. */
const char *cr_error_message(const cr_error *err, int code);

/*
 * cleanroom — small shared helpers: growable buffers, hex, SHA-256, time.
 * Hex encoding and decoding are constant time (libsodium), so they are safe
 * for keys and fingerprints.
 */

#define CR_SHA256_BYTES 32
#define CR_SHA256_HEX_BYTES 65 /* 64 hex digits and NUL */

typedef struct cr_buf {
  uint8_t *data;
  size_t len;
  size_t cap;
} cr_buf;

void cr_buf_init(cr_buf *b);
CR_NODISCARD int cr_buf_reserve(cr_buf *b, size_t extra);
CR_NODISCARD int cr_buf_append(cr_buf *b, const void *data, size_t len);
/* Drops the first n bytes. */
void cr_buf_consume(cr_buf *b, size_t n);
void cr_buf_reset(cr_buf *b);
/* Wipes the contents before releasing them. */
void cr_buf_free(cr_buf *b);

/* out must hold 2*len+1 bytes. Lowercase, constant time. */
void cr_hex_encode(char *out, const uint8_t *in, size_t len);
/* Exactly 2*out_len hex digits (either case) or CR_EINVAL. Constant time. */
CR_NODISCARD int cr_hex_decode(uint8_t *out, size_t out_len, const char *hex);

void cr_sha256(uint8_t out[CR_SHA256_BYTES], const void *data, size_t len);
/* Hashes a whole file; CR_EIO with the path and errno text in err. */
CR_NODISCARD int cr_sha256_file(uint8_t out[CR_SHA256_BYTES], const char *path, cr_error *err);

/* Monotonic milliseconds, for timeouts and durations. */
uint64_t cr_now_ms(void);

/* The one signing callback: signs msg with the node's Ed25519 identity into
 * sig (64 bytes); 0 on success. cr_identity_sign (cleanroom/net.h) has this
 * shape, with the cr_identity as ctx. Receipts and audit checkpoints use it. */
#define CR_SIGNATURE_BYTES 64
typedef int (*cr_sign_fn)(void *ctx, const uint8_t *msg, size_t len,
                          uint8_t sig[CR_SIGNATURE_BYTES]);

/*
 * Makes text from outside (a peer's query name, parameters, software, error
 * message; anything read from a file) safe to print on a terminal and to
 * put in JSON: valid UTF-8 is kept, each invalid byte becomes U+FFFD, and
 * control characters (C0 but tab, DEL, C1) are written as \xNN, so no escape
 * sequence reaches a terminal, and the bidirectional controls (U+061C,
 * U+200E/F, U+202A..E, U+2066..9) as \uXXXX, so no name can show as
 * another. Always NUL-terminated (cap >= 1), cut on a character boundary.
 * Returns dst.
 */
char *cr_text_clean(char *dst, size_t cap, const char *src);

/* Frees v[0..n) and v (NULL is fine). */
void cr_strv_free(char **v, size_t n);

/*
 * A file written under a temporary name next to its target (PATH.tmp.PID)
 * and renamed into place only by cr_atomic_commit, after an fsync: a crash
 * or cr_atomic_abort never leaves a partial file under the target's name.
 * Used for every file the project writes whole (signatures, matched rows).
 */
typedef struct cr_atomic_file {
  int fd;
  char *tmp;
  char *path;
} cr_atomic_file;
CR_NODISCARD int cr_atomic_open(cr_atomic_file *f, const char *path, int mode, cr_error *err);
CR_NODISCARD int cr_atomic_write(cr_atomic_file *f, const void *data, size_t len, cr_error *err);
/* fsync, close, rename. On failure the temporary file is removed. */
CR_NODISCARD int cr_atomic_commit(cr_atomic_file *f, cr_error *err);
/* Closes and removes the temporary file; a no-op after a commit. */
void cr_atomic_abort(cr_atomic_file *f);
/* The whole file in one call. */
CR_NODISCARD int cr_file_write_atomic(const char *path, const void *data, size_t len, int mode,
                                      cr_error *err);

/* Reads a whole file (at most max bytes) into a NUL-terminated buffer. */
CR_NODISCARD int cr_read_file(const char *path, size_t max, char **out, size_t *out_len,
                              cr_error *err);

/*
 * cleanroom — a small fixed pool of worker threads for data-parallel loops.
 *
 * The blinding work of a session is a loop over independent elements; the
 * pool splits it across the machine's cores. Several sessions may run
 * loops at once: each call is its own job, and the calling thread works on
 * its own job too, so a loop always makes progress even when every pool
 * thread is busy elsewhere.
 */

typedef struct cr_pool cr_pool;

/* threads: worker threads besides the callers (0: the loops run on the
 * calling thread only). */
CR_NODISCARD int cr_pool_new(cr_pool **out, unsigned threads);
/* Waits for the workers to finish and frees them. No job may be running. */
void cr_pool_free(cr_pool *p);

/*
 * Calls fn(ctx, begin, end) over [0, n) in ranges of at most `chunk`, on
 * the pool's threads and the calling thread, and returns when all ranges
 * are done: 0, or the first non-zero value fn returned (the other ranges
 * still run). p may be NULL: then it is a plain loop on this thread.
 */
int cr_pool_for(cr_pool *p, size_t n, size_t chunk, int (*fn)(void *ctx, size_t begin, size_t end),
                void *ctx);

/* The number of cores this process may use (at least 1). */
unsigned cr_cpu_count(void);

/*
 * cleanroom — spilling to disk: a memory budget, a private work directory
 * and external sorting (issue 17, docs/memory.md).
 *
 * A node works on sets of any size within a memory budget. Large tables
 * (a party's elements, blinded points, digests) go into sorters: records of
 * a fixed-size key (compared with memcmp) and a payload, kept in memory
 * while the node's budget allows and otherwise written as sorted runs and
 * merged (k-way) when read. Runs are secrets: each sorter encrypts its runs
 * with its own random key (libsodium secretstream, key in sodium_malloc'ed
 * memory), files are 0600 in a 0700 directory private to the process and
 * are unlinked as soon as they are created, so nothing remains even after
 * SIGKILL; what a killed process left (its directory and lock) is removed by
 * the next cr_spill_open on the same work directory.
 *
 * Never: writes a record in the clear, keeps a buffer that held records
 * without wiping it, or prints anything.
 */

typedef struct cr_spill cr_spill;

typedef struct cr_spill_config {
  const char *work_dir;    /* created (0700) if missing */
  uint64_t memory_bytes;   /* budget of every sorter's buffers together */
  uint64_t disk_max_bytes; /* 0: only the file system's free space bounds the spill */
} cr_spill_config;

/* What cr_spill_open removed of earlier processes killed without cleaning up. */
typedef struct cr_spill_recovered {
  uint64_t dirs;  /* stale process directories removed */
  uint64_t bytes; /* bytes of files in them */
} cr_spill_recovered;

/*
 * Creates work_dir if missing and a private sub-directory for this process
 * holding a lock file locked for the process's life, after removing every
 * sibling sub-directory whose lock is free (left by a killed process);
 * *rec (may be NULL) says what was removed. CR_ECONFIG naming the directory
 * when it cannot be created or written; CR_EINVAL for a zero budget.
 */
CR_NODISCARD int cr_spill_open(cr_spill **out, const cr_spill_config *cfg, cr_spill_recovered *rec,
                               cr_error *err);
/* Removes this process's directory. Every sorter must be freed first. */
void cr_spill_close(cr_spill *sp);
const char *cr_spill_dir(const cr_spill *sp); /* the private sub-directory */

typedef struct cr_spill_stats {
  uint64_t memory_bytes;               /* the budget */
  uint64_t memory_used, memory_peak;   /* sorter buffers now, at most */
  uint64_t disk_now, disk_peak;        /* bytes of spill files now, at most at once */
  uint64_t disk_written, runs_written; /* ever written (encrypted bytes), runs */
} cr_spill_stats;
/* Thread-safe. */
void cr_spill_stats_get(const cr_spill *sp, cr_spill_stats *st);

#define CR_SORTER_MAX_KEY 64
#define CR_SORTER_MAX_PAYLOAD 65536

typedef struct cr_sorter cr_sorter;

/*
 * A stable external sort of records (key_bytes-byte key compared with
 * memcmp, then insertion order; key_bytes 0 keeps insertion order: a log).
 * sp NULL: memory only, never spills. `what` names the table in errors
 * ("the partner's digests"). One thread at a time per sorter.
 */
CR_NODISCARD int cr_sorter_new(cr_sorter **out, cr_spill *sp, size_t key_bytes, const char *what,
                               cr_error *err);
/* Adds a record (payload_len <= CR_SORTER_MAX_PAYLOAD). May write a run:
 * CR_EIO when the work directory is full or the disk cap is reached (the
 * message names the directory, says how much was spilled and what to do). */
CR_NODISCARD int cr_sorter_add(cr_sorter *s, const void *key, const void *payload,
                               size_t payload_len, cr_error *err);
/* No more records: sorts what is in memory. */
CR_NODISCARD int cr_sorter_finish(cr_sorter *s, cr_error *err);
/* Caps the sorter's records in memory (blocks and index) at `bytes`, as if
 * its share of the budget ended there: beyond it, it writes a run. For a
 * table its owner knows will spill anyway, holding more gains nothing but
 * fewer runs. 0 (the default) removes the cap; at least the sorter's
 * 64 KiB minimum. No effect on a sorter without a spill. */
void cr_sorter_set_limit(cr_sorter *s, uint64_t bytes);
uint64_t cr_sorter_count(const cr_sorter *s);
int cr_sorter_spilled(const cr_sorter *s); /* 1 once a run was written */

typedef struct cr_sorter_iter cr_sorter_iter;
/* After finish; any number of iterators, one after another or at once. */
CR_NODISCARD int cr_sorter_iter_new(cr_sorter *s, cr_sorter_iter **out, cr_error *err);
/* 1 with the next record (pointers valid until the next call), 0 at the
 * end, or a negative CR_E* (CR_EIO for a run that fails authentication or
 * is truncated: the spill was tampered with). */
int cr_sorter_iter_next(cr_sorter_iter *it, const uint8_t **key, const uint8_t **payload,
                        size_t *payload_len, cr_error *err);
void cr_sorter_iter_free(cr_sorter_iter *it);
/* This iterator is the sorter's last reader: from now on it gives the disk
 * of the runs back as it reads them (holes punched in the spill file; the
 * spill's disk figures fall with them), so a table read once while others
 * fill does not hold its whole size to the end. No other iterator may be
 * open on the sorter, and none may be made after. In memory: only the
 * latter. */
void cr_sorter_iter_consume(cr_sorter_iter *it);
/* Wipes the memory, closes and forgets the runs (freeing their budget). */
void cr_sorter_free(cr_sorter *s);

#ifdef __cplusplus
}
#endif
#endif
