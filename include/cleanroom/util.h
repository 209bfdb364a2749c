/*
 * cleanroom — small shared helpers: growable buffers, hex, SHA-256, time.
 * Hex encoding and decoding are constant time (libsodium), so they are safe
 * for keys and fingerprints.
 */
#ifndef CLEANROOM_UTIL_H
#define CLEANROOM_UTIL_H

#include <stddef.h>
#include <stdint.h>

#include "cleanroom/error.h"

#ifdef __cplusplus
extern "C" {
#endif

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

/* Reads a whole file (at most max bytes) into a NUL-terminated buffer. */
CR_NODISCARD int cr_read_file(const char *path, size_t max, char **out, size_t *out_len,
                              cr_error *err);

#ifdef __cplusplus
}
#endif
#endif
