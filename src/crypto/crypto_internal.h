/*
 * Inside the crypto layer, and for its tests: hooks that are not part of
 * the public API.
 */
#ifndef CR_CRYPTO_INTERNAL_H
#define CR_CRYPTO_INTERNAL_H

#include "cleanroom/crypto.h"

/* Test hook, not for production use: the same computation, also returning
 * RFC 9380's intermediates (u[0], u[1] as 32-byte big-endian field elements;
 * Q0 = map_to_curve(u[0]), Q1 = map_to_curve(u[1]) uncompressed). Any output
 * may be NULL. */
CR_NODISCARD int cr__p256_hash_to_curve_trace(uint8_t p[CR_P256_UNCOMPRESSED_BYTES],
                                              uint8_t u0[CR_P256_FIELD_BYTES],
                                              uint8_t u1[CR_P256_FIELD_BYTES],
                                              uint8_t q0[CR_P256_UNCOMPRESSED_BYTES],
                                              uint8_t q1[CR_P256_UNCOMPRESSED_BYTES],
                                              const uint8_t *msg, size_t msg_len,
                                              const uint8_t *dst, size_t dst_len);

/* Test hook: re-choose the ristretto255 backend as if CLEANROOM_CRYPTO were
 * name ("portable", "emulated", "ifma", "auto"). Only while no other thread
 * uses the crypto layer. */
void cr__crypto_backend_force(const char *name);

#endif
