/*
 * Crypto module plumbing: library start-up, the suite registry, the digests
 * that are compared, and scalar storage. Never logs: nothing here is safe to
 * show.
 */
#include "cleanroom/crypto.h"

#include <stdint.h>
#include <string.h>

#include <sodium.h>

/* Design §4: domain separation of the compared digests. */
static const char digest_tag[] = "cleanroom/v1/digest";

int cr_crypto_init(void) {
  /* sodium_init() is itself thread-safe; 1 means "already done". */
  return sodium_init() < 0 ? CR_ECRYPTO : 0;
}

const cr_suite *cr_suite_find(const char *name) {
  if (name == NULL)
    return NULL;
  if (strcmp(name, cr_suite_ristretto255.name) == 0)
    return &cr_suite_ristretto255;
  if (strcmp(name, cr_suite_p256.name) == 0)
    return &cr_suite_p256;
  return NULL;
}

void cr_digest(uint8_t *out, size_t len, const uint8_t session_id[CR_SESSION_ID_BYTES],
               const uint8_t *point, size_t point_bytes) {
  crypto_hash_sha512_state st;
  uint8_t full[crypto_hash_sha512_BYTES];
  size_t take = len < CR_MAX_DIGEST_BYTES ? len : CR_MAX_DIGEST_BYTES;

  if (out == NULL || len == 0)
    goto cleanup;
  if (session_id == NULL || (point == NULL && point_bytes != 0)) {
    memset(out, 0, len);
    goto cleanup;
  }
  /* The function cannot report misuse, so a too-long request still gets a
   * deterministic answer: the 32 digest bytes, then zeros. */
  if (take < len)
    memset(out + take, 0, len - take);

  crypto_hash_sha512_init(&st);
  crypto_hash_sha512_update(&st, (const uint8_t *)digest_tag, sizeof digest_tag - 1);
  crypto_hash_sha512_update(&st, session_id, CR_SESSION_ID_BYTES);
  if (point_bytes != 0)
    crypto_hash_sha512_update(&st, point, (unsigned long long)point_bytes);
  crypto_hash_sha512_final(&st, full);
  memcpy(out, full, take);

cleanup:
  /* The unused tail of the hash is a function of the shared secret k*P. */
  sodium_memzero(&st, sizeof st);
  sodium_memzero(full, sizeof full);
}

int cr_suite_hash_blind_batch(const cr_suite *suite, uint8_t *out, const uint8_t *k,
                              const uint8_t *const *msgs, const size_t *lens, size_t n) {
  int rc = 0;
  if (suite == NULL || out == NULL || k == NULL || (n != 0 && (msgs == NULL || lens == NULL)))
    return CR_EINVAL;
  if (suite->hash_blind_batch != NULL)
    return suite->hash_blind_batch(out, k, msgs, lens, n);
  for (size_t i = 0; i < n && rc == 0; i++)
    rc = suite->hash_blind(out + i * suite->point_bytes, k, msgs[i], lens[i]);
  if (rc != 0)
    sodium_memzero(out, n * suite->point_bytes);
  return rc;
}

int cr_suite_reblind_batch(const cr_suite *suite, uint8_t *out, const uint8_t *k,
                           const uint8_t *points, size_t n, size_t *bad) {
  int rc = 0;
  if (bad != NULL)
    *bad = SIZE_MAX;
  if (suite == NULL || out == NULL || k == NULL || (n != 0 && points == NULL))
    return CR_EINVAL;
  if (suite->reblind_batch != NULL)
    return suite->reblind_batch(out, k, points, n, bad);
  for (size_t i = 0; i < n && rc == 0; i++) {
    rc = suite->reblind(out + i * suite->point_bytes, k, points + i * suite->point_bytes);
    if (rc != 0 && bad != NULL)
      *bad = i;
  }
  if (rc != 0)
    sodium_memzero(out, n * suite->point_bytes);
  return rc;
}

uint8_t *cr_scalar_alloc(const cr_suite *suite) {
  if (suite == NULL || suite->scalar_bytes == 0 || suite->scalar_bytes > CR_MAX_SCALAR_BYTES)
    return NULL;
  /* Sized by the suite (32 bytes for ristretto255 and for p256's
   * big-endian scalar). Guard pages, mlock'ed, and wiped by sodium_free. */
  return sodium_malloc(suite->scalar_bytes);
}

void cr_scalar_free(const cr_suite *suite, uint8_t *k) {
  (void)suite;
  sodium_free(k);
}
