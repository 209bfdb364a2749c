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
  XX(ECONNRESET, "connection reset by the peer")

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
 * sequence reaches a terminal. Always NUL-terminated (cap >= 1), cut on a
 * character boundary. Returns dst.
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

#ifdef __cplusplus
}
#endif
#endif
