/*
 * What a line's hash covers, shared by the writer and the verifier so that
 * the two can never disagree on it.
 */
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "audit/audit_internal.h"
#include "cleanroom/template.h"

int cr__audit_entry_hash(json_t *entry, const uint8_t prev[CR_AUDIT_HASH_BYTES],
                         uint8_t out[CR_AUDIT_HASH_BYTES], cr_error *err) {
  int rc = 0;
  char *dump = NULL, *canon = NULL;
  size_t canon_len = 0;
  /* A shallow copy: dropping "hash" from it leaves the caller's entry whole
   * (reporting tools show the line as it is). */
  json_t *copy = json_copy(entry);
  if (copy == NULL) {
    rc = cr_error_set(err, CR_ENOMEM, "out of memory");
    goto out;
  }
  (void)json_object_del(copy, "hash");
  /* The canonicalizer reads JSON text; jansson's own output is the way to
   * get there (reals are printed with 17 digits, so they read back exactly). */
  dump = json_dumps(copy, JSON_COMPACT);
  if (dump == NULL) {
    rc = cr_error_set(err, CR_EINVAL, "entry cannot be serialized (a cycle or invalid UTF-8?)");
    goto out;
  }
  if ((rc = cr_json_canonicalize(dump, strlen(dump), &canon, &canon_len, err)) != 0)
    goto out;
  crypto_hash_sha256_state st;
  crypto_hash_sha256_init(&st);
  crypto_hash_sha256_update(&st, prev, CR_AUDIT_HASH_BYTES);
  crypto_hash_sha256_update(&st, (const unsigned char *)canon, canon_len);
  crypto_hash_sha256_final(&st, out);
out:
  free(canon);
  free(dump);
  json_decref(copy);
  return rc;
}

int cr__audit_ints_safe(const json_t *v) {
  switch (json_typeof(v)) {
  case JSON_INTEGER: {
    json_int_t i = json_integer_value(v);
    return i >= -CR__AUDIT_MAX_SAFE_INT && i <= CR__AUDIT_MAX_SAFE_INT;
  }
  case JSON_ARRAY:
    for (size_t i = 0; i < json_array_size(v); i++)
      if (!cr__audit_ints_safe(json_array_get(v, i)))
        return 0;
    return 1;
  case JSON_OBJECT: {
    const char *k;
    json_t *m;
    /* json_object_foreach takes a non-const object; it does not modify it. */
    json_t *o = (json_t *)v;
    json_object_foreach(o, k, m) {
      if (!cr__audit_ints_safe(m))
        return 0;
    }
    return 1;
  }
  default:
    return 1;
  }
}

void cr__audit_checkpoint_msg(uint8_t msg[CR__AUDIT_CKPT_MSG_LEN],
                              const uint8_t head[CR_AUDIT_HASH_BYTES]) {
  memcpy(msg, CR_AUDIT_CHECKPOINT_CONTEXT, CR__AUDIT_CKPT_CTX_LEN);
  memcpy(msg + CR__AUDIT_CKPT_CTX_LEN, head, CR_AUDIT_HASH_BYTES);
}
