/*
 * cleanroom — detached signatures on a collaboration template.
 *
 * Each party signs the template's canonical SHA-256 with its node identity.
 * The signatures live next to the template, in FILE.sig (JSON), each with
 * the signer's certificate, so anyone holding the template can check them
 * against the fingerprints the template pins. A template with
 * "require_signatures": true is served or run only when both parties'
 * signatures are present and valid.
 *
 * Signed message: "cleanroom/v1/template-signature" || template_sha256.
 */
#ifndef CLEANROOM_TEMPLATE_SIG_H
#define CLEANROOM_TEMPLATE_SIG_H

#include "cleanroom/common.h"
#include "cleanroom/net.h"
#include "cleanroom/template.h"

#ifdef __cplusplus
extern "C" {
#endif

#define CR_TEMPLATE_SIG_FORMAT "cleanroom-template-signatures/1"
#define CR_TEMPLATE_SIG_SUFFIX ".sig"

typedef struct cr_template_sig_status {
  int present[CR_ROLE_COUNT];
  int valid[CR_ROLE_COUNT];
  char why[CR_ROLE_COUNT][256]; /* why a present signature is invalid */
} cr_template_sig_status;

/* FILE.sig for a template loaded from FILE; malloc'ed. */
char *cr_template_sig_path(const cr_template *t);

/*
 * Adds (or replaces) this identity's signature in sig_path (created if
 * missing; written atomically). The identity must be one of the template's
 * parties; *role_out tells which. CR_ECONFIG otherwise.
 */
CR_NODISCARD int cr_template_sign(const cr_template *t, const char *sig_path, const cr_identity *id,
                                  cr_role *role_out, cr_error *err);

/*
 * Reads sig_path and checks every signature in it: the certificate's
 * fingerprint equals the template's pin for that role, the signature
 * verifies, and the file is for this template's hash. A missing file is not
 * an error (nothing present). CR_ETEMPLATE for a malformed file.
 */
CR_NODISCARD int cr_template_verify_sigs(const cr_template *t, const char *sig_path,
                                         cr_template_sig_status *st, cr_error *err);

/* When t->require_signatures: 0 if both are present and valid, else
 * CR_EREFUSED with a message saying which is missing or invalid and how to
 * add it. Always 0 when the template does not require signatures. */
CR_NODISCARD int cr_template_require_sigs(const cr_template *t, const char *sig_path,
                                          cr_error *err);

#ifdef __cplusplus
}
#endif
#endif
