/*
 * Fuzz target: a template is read from a file a partner sent, so the loader
 * and the canonicalizer must survive any bytes without crashing or leaking.
 * Also checks two invariants that a crash-only fuzzer would miss:
 * canonical output is a fixed point, and a template that loads has the hash
 * of its canonical form.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cleanroom/template.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  const char *json = (const char *)data;
  cr_template *t = NULL;
  cr_error err;
  char *canon = NULL, *again = NULL;
  size_t canon_len = 0, again_len = 0;
  char **errors = NULL;
  size_t n = 0;

  int rc_t = cr_template_parse(&t, json, size, "fuzz", &err);
  if ((rc_t == 0) != (t != NULL))
    abort();
  if (rc_t != 0 && memchr(err.msg, '\0', sizeof err.msg) == NULL)
    abort(); /* the message must always be terminated */

  int rc_c = cr_json_canonicalize(json, size, &canon, &canon_len, &err);
  if (rc_c == 0) {
    if (cr_json_canonicalize(canon, canon_len, &again, &again_len, &err) != 0 ||
        again_len != canon_len || memcmp(again, canon, canon_len) != 0)
      abort();
    if (t != NULL) {
      uint8_t h[CR_SHA256_BYTES];
      cr_sha256(h, canon, canon_len);
      if (memcmp(h, t->sha256, sizeof h) != 0)
        abort();
    }
  } else if (t != NULL) {
    abort(); /* a loaded template always canonicalizes */
  }

  /* The list interface must agree with the single-message one. */
  int rc_l = cr_template_check_mem(json, size, "fuzz", NULL, &errors, &n);
  if (rc_l != rc_t || (rc_l == 0) != (n == 0))
    abort();
  cr_template_errors_free(errors, n);

  if (t != NULL) {
    /* Lookups over whatever the template holds. */
    for (size_t i = 0; i < t->nqueries; i++)
      if (cr_template_query(t, t->queries[i].name) != &t->queries[i])
        abort();
    cr_role r;
    (void)cr_template_role_of(t, t->parties[CR_ROLE_PROVIDER].cert_sha256, &r);
  }

  free(again);
  free(canon);
  cr_template_free(t);
  return 0;
}
