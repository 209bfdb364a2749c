/*
 * Golomb-Rice coding of sorted digests (design issue "fewer bytes").
 *
 * Sorted, uniformly distributed values of L bytes (L <= 16): each is sent
 * as the difference from the previous one (the first from `base`: the last
 * value of the previous frame of the same run, or NULL for 0), split into a
 * quotient in unary (q ones, then a zero) and a remainder of k bits, with
 * k = 8L - ceil(log2 count). A value then costs about 8L - log2(count) + 2
 * bits instead of 8L. Bits are written most significant first; the last
 * byte is zero-padded.
 *
 * The decoder treats its input as hostile: every read is bounds-checked,
 * quotients are capped, values must stay below 2^(8L) and never decrease,
 * and the padding must be zero.
 */
#ifndef CR_PROTOCOL_GCS_H
#define CR_PROTOCOL_GCS_H

#include <stddef.h>
#include <stdint.h>

#include "cleanroom/common.h"

#define CR_GCS_MAX_BYTES 16

/* The Rice parameter for count values of len bytes. */
unsigned cr__gcs_k(size_t len, uint64_t count);

/* Encodes count values (each len bytes, big-endian, stride `stride` bytes
 * apart in `values`, non-decreasing) into out. 0 or CR_EINVAL/CR_ENOMEM. */
int cr__gcs_encode(cr_buf *out, const uint8_t *values, size_t stride, size_t len, uint64_t count,
                   unsigned k, const uint8_t *base);

/* Decodes exactly count values of len bytes into out (count * len bytes,
 * packed). 0, or CR_EPROTO with a reason in why. */
int cr__gcs_decode(const uint8_t *in, size_t in_len, size_t len, uint64_t count, unsigned k,
                   const uint8_t *base, uint8_t *out, const char **why);

#endif
