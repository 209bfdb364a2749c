/*
 * cleanroom — crypto suites for ECDH blinding.
 *
 * Owns: hash-to-group, per-session scalars, blinding of own elements,
 * re-blinding of the peer's points (with canonical-encoding and identity
 * checks) and the digests that are compared.
 * Never: logs or prints a match key, a point, a scalar or a digest; keeps a
 * scalar outside sodium_malloc'ed memory (p256 lends it to OpenSSL as a
 * BIGNUM for one call, cleared before returning); writes its own curve
 * arithmetic, with one exception: the batched ristretto255 backend
 * (src/crypto/r255x8_*, AVX-512 IFMA, docs/crypto-backends.md), proved
 * bit-identical to libsodium by known answers and differential tests and
 * checked for secret-independent control flow under valgrind. Otherwise
 * libsodium and OpenSSL do all group operations (p256's simplified SWU map
 * is field arithmetic on OpenSSL's BN).
 *
 * All functions are safe to call from several threads at once on distinct
 * outputs (they share only read-only inputs).
 */
#ifndef CLEANROOM_CRYPTO_H
#define CLEANROOM_CRYPTO_H

#include <stddef.h>
#include <stdint.h>

#include "cleanroom/common.h"

#ifdef __cplusplus
extern "C" {
#endif

#define CR_MAX_POINT_BYTES 64
#define CR_MAX_SCALAR_BYTES 64
#define CR_MAX_DIGEST_BYTES 32
#define CR_SESSION_ID_BYTES 32
/* Uniform bytes a scalar is derived from (cr_suite.scalar_from_uniform):
 * 64 bytes reduced mod the group order leave a bias below 2^-250. */
#define CR_SCALAR_UNIFORM_BYTES 64

/* Design §4: the DST of the ristretto255 suite. */
#define CR_R255_DST "cleanroom-v1-ristretto255_XMD:SHA-512_R255MAP_RO_"

/* The p256 suite's own DST (RFC 9380 §3.1: the suite ID behind an
 * application tag). */
#define CR_P256_DST "cleanroom-v1-P256_XMD:SHA-256_SSWU_RO_"
/* p256 wire points are SEC1 compressed (0x02/0x03 || x); scalars are 32
 * big-endian bytes in [1, n-1]. */
#define CR_P256_POINT_BYTES 33
#define CR_P256_UNCOMPRESSED_BYTES 65
#define CR_P256_SCALAR_BYTES 32
#define CR_P256_FIELD_BYTES 32

/* Initialises libsodium; call once before anything else (idempotent). */
CR_NODISCARD int cr_crypto_init(void);

/*
 * RFC 9380 §5.3.1 expand_message_xmd with SHA-512.
 * out_len <= 255*64, dst_len <= 255. Returns 0 or CR_EINVAL.
 */
CR_NODISCARD int cr_expand_message_xmd_sha512(uint8_t *out, size_t out_len, const uint8_t *msg,
                                              size_t msg_len, const uint8_t *dst, size_t dst_len);

/*
 * RFC 9380 §5.3.1 expand_message_xmd with SHA-256 (the p256 suite).
 * out_len <= 255*32, dst_len <= 255. Returns 0 or CR_EINVAL.
 */
CR_NODISCARD int cr_expand_message_xmd_sha256(uint8_t *out, size_t out_len, const uint8_t *msg,
                                              size_t msg_len, const uint8_t *dst, size_t dst_len);

/*
 * A suite: the group, its encodings and its hash-to-group. The session and
 * node code only ever see this interface, so a second suite (p256) plugs in
 * without changing them.
 */
typedef struct cr_suite {
  const char *name;   /* "ristretto255", "p256" */
  size_t point_bytes; /* wire encoding of a point */
  size_t scalar_bytes;

  /* Fresh uniform non-zero scalar into k (caller provides sodium_malloc'ed
   * scalar_bytes). */
  int (*scalar_random)(uint8_t *k);

  /* k = uniform mod the group order, for a caller that supplies its own
   * randomness (a session's injected rand). CR_ECRYPTO when the result is
   * zero (draw again); k is then zeroed. The caller wipes uniform. */
  int (*scalar_from_uniform)(uint8_t *k, const uint8_t uniform[CR_SCALAR_UNIFORM_BYTES]);

  /* out = k * HashToGroup(msg) with the suite's DST. */
  int (*hash_blind)(uint8_t *out, const uint8_t *k, const uint8_t *msg, size_t msg_len);

  /* out = k * P for a peer's point P. Returns CR_EPROTO when P is not a
   * canonical encoding or is the identity (and leaves out zeroed), CR_ECRYPTO
   * when the product is the identity. */
  int (*reblind)(uint8_t *out, const uint8_t *k, const uint8_t *peer_point);

  /* Optional batch forms of the two above, for n elements blinded with one
   * scalar (NULL: cr_suite_hash_blind_batch and cr_suite_reblind_batch loop
   * over the one-element forms). Results are bit-identical to the
   * one-element forms; only the speed differs. */
  int (*hash_blind_batch)(uint8_t *out, const uint8_t *k, const uint8_t *const *msgs,
                          const size_t *lens, size_t n);
  int (*reblind_batch)(uint8_t *out, const uint8_t *k, const uint8_t *points, size_t n,
                       size_t *bad);
} cr_suite;

/*
 * out[i] = k * HashToGroup(msgs[i]) for i < n (out holds n * point_bytes).
 * 0, or the first failure of hash_blind; out is then wiped whole.
 */
CR_NODISCARD int cr_suite_hash_blind_batch(const cr_suite *suite, uint8_t *out, const uint8_t *k,
                                           const uint8_t *const *msgs, const size_t *lens,
                                           size_t n);

/*
 * out[i] = k * points[i] for n peer points of point_bytes each. CR_EPROTO
 * when a point is not a canonical non-identity encoding, CR_ECRYPTO when a
 * product is the identity: *bad (if not NULL) is then the index of the first
 * point that failed (SIZE_MAX on success). On any failure out is wiped whole.
 */
CR_NODISCARD int cr_suite_reblind_batch(const cr_suite *suite, uint8_t *out, const uint8_t *k,
                                        const uint8_t *points, size_t n, size_t *bad);

/*
 * The ristretto255 backend this process uses, chosen once at the first use:
 * "avx512ifma" (eight lanes per instruction, when the CPU has AVX-512 IFMA
 * and the OS saves its registers), else "libsodium". CLEANROOM_CRYPTO=portable
 * forces libsodium; CLEANROOM_CRYPTO=emulated forces the batched algorithm
 * on portable C lanes ("emulated": a test and diagnostic mode, slower than
 * libsodium). All give bit-identical results. docs/crypto-backends.md.
 * A batched backend is used only after a known-answer self-test against
 * libsodium passes on this machine.
 */
const char *cr_crypto_backend_name(void);

/* NULL, or why the backend the CPU or CLEANROOM_CRYPTO asked for is not used
 * (it failed its self-test; the process runs on libsodium). */
const char *cr_crypto_backend_note(void);

/* NULL when the name is unknown. */
const cr_suite *cr_suite_find(const char *name);
extern const cr_suite cr_suite_ristretto255;
/* NIST P-256 through OpenSSL's EC (for partners that need FIPS-approved
 * curves): HashToGroup is RFC 9380 P256_XMD:SHA-256_SSWU_RO_ with
 * CR_P256_DST; points on the wire are 33-byte compressed. */
extern const cr_suite cr_suite_p256;

/* ristretto255 HashToGroup with an explicit DST (for known-answer tests):
 * expand_message_xmd(SHA-512, 64 bytes) then crypto_core_ristretto255_from_hash. */
CR_NODISCARD int cr_r255_hash_to_group(uint8_t out[32], const uint8_t *msg, size_t msg_len,
                                       const uint8_t *dst, size_t dst_len);

/* RFC 9380 §3 hash_to_curve for P256_XMD:SHA-256_SSWU_RO_ with an explicit
 * DST (for known-answer tests): out is the SEC1 uncompressed point
 * 0x04 || x || y. Returns 0, CR_EINVAL, CR_ENOMEM or CR_ECRYPTO (out zeroed
 * on failure). */
CR_NODISCARD int cr_p256_hash_to_curve(uint8_t out[CR_P256_UNCOMPRESSED_BYTES], const uint8_t *msg,
                                       size_t msg_len, const uint8_t *dst, size_t dst_len);

/* digest(Y) = SHA-512("cleanroom/v1/digest" || session_id || enc(Y))[0..len). */
void cr_digest(uint8_t *out, size_t len, const uint8_t session_id[CR_SESSION_ID_BYTES],
               const uint8_t *point, size_t point_bytes);

/* Scalars live in guarded, locked memory and are wiped on free. */
uint8_t *cr_scalar_alloc(const cr_suite *suite);
void cr_scalar_free(const cr_suite *suite, uint8_t *k);

#ifdef __cplusplus
}
#endif
#endif
