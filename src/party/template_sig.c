/*
 * Detached template signatures (include/cleanroom/party.h). Lives in
 * the net layer because it needs the identity and certificate parsing; the
 * template module stays free of them.
 */
#include "cleanroom/party.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>
#include <sodium.h>

#define SIG_LABEL "cleanroom/v1/template-signature"
#define MAX_CERT_DER 8192

char *cr_template_sig_path(const cr_template *t) {
  const char *base = t->path ? t->path : "template.json";
  size_t n = strlen(base) + sizeof CR_TEMPLATE_SIG_SUFFIX;
  char *p = malloc(n);
  if (p)
    snprintf(p, n, "%s%s", base, CR_TEMPLATE_SIG_SUFFIX);
  return p;
}

static void sig_message(const cr_template *t, uint8_t *msg, size_t *len) {
  memcpy(msg, SIG_LABEL, sizeof SIG_LABEL - 1);
  memcpy(msg + sizeof SIG_LABEL - 1, t->sha256, CR_SHA256_BYTES);
  *len = sizeof SIG_LABEL - 1 + CR_SHA256_BYTES;
}

/* Loads sig_path; a missing file gives a fresh, empty document. */
static int load_doc(const char *sig_path, json_t **out, int *missing, cr_error *err) {
  json_error_t jerr;
  *missing = 0;
  if (access(sig_path, F_OK) != 0 && errno == ENOENT) {
    *missing = 1;
    *out = json_pack("{s:s, s:{}}", "format", CR_TEMPLATE_SIG_FORMAT, "signatures");
    return *out ? 0 : cr_error_set(err, CR_ENOMEM, "out of memory");
  }
  json_t *doc = json_load_file(sig_path, JSON_REJECT_DUPLICATES, &jerr);
  if (doc == NULL)
    return cr_error_set(err, CR_ETEMPLATE, "%s:%d:%d: %s", sig_path, jerr.line, jerr.column,
                        jerr.text);
  const char *fmt = json_string_value(json_object_get(doc, "format"));
  if (!json_is_object(doc) || fmt == NULL || strcmp(fmt, CR_TEMPLATE_SIG_FORMAT) != 0 ||
      !json_is_object(json_object_get(doc, "signatures"))) {
    json_decref(doc);
    return cr_error_set(err, CR_ETEMPLATE,
                        "%s: not a template signature file (expected \"format\": \"%s\" and "
                        "a \"signatures\" object)",
                        sig_path, CR_TEMPLATE_SIG_FORMAT);
  }
  *out = doc;
  return 0;
}

/* Written whole under a temporary name and renamed, so a crash leaves the
 * old file. */
static int write_atomic(json_t *doc, const char *path, cr_error *err) {
  char *text = json_dumps(doc, JSON_INDENT(2) | JSON_SORT_KEYS);
  if (text == NULL)
    return cr_error_set(err, CR_ENOMEM, "out of memory");
  size_t len = strlen(text);
  char *line = realloc(text, len + 2);
  if (line == NULL) {
    free(text);
    return cr_error_set(err, CR_ENOMEM, "out of memory");
  }
  line[len] = '\n';
  line[len + 1] = '\0';
  int rc = cr_file_write_atomic(path, line, len + 1, 0644, err);
  free(line);
  return rc;
}

int cr_template_sign(const cr_template *t, const char *sig_path, const cr_identity *id,
                     cr_role *role_out, cr_error *err) {
  int rc, missing;
  cr_role role;
  json_t *doc = NULL;
  uint8_t msg[64], sig[CR_SIGNATURE_BYTES];
  size_t mlen, der_len = 0;
  char hex[CR_SHA256_HEX_BYTES], sighex[2 * CR_SIGNATURE_BYTES + 1];
  char *b64 = NULL;

  if (cr_template_role_of(t, cr_identity_fingerprint(id), &role) != 0) {
    cr_hex_encode(hex, cr_identity_fingerprint(id), CR_SHA256_BYTES);
    return cr_error_set(err, CR_ECONFIG,
                        "this identity (certificate %s) is not a party of the template; "
                        "only the provider and the consumer it pins can sign it",
                        hex);
  }
  const uint8_t *der = cr_identity_cert_der(id, &der_len);
  if ((rc = load_doc(sig_path, &doc, &missing, err)) != 0)
    return rc;
  sig_message(t, msg, &mlen);
  if (cr_identity_sign((void *)id, msg, mlen, sig) != 0) {
    rc = cr_error_set(err, CR_ECRYPTO, "cannot sign with this identity");
    goto out;
  }
  size_t b64len = sodium_base64_encoded_len(der_len, sodium_base64_VARIANT_ORIGINAL);
  b64 = malloc(b64len);
  if (b64 == NULL) {
    rc = cr_error_set(err, CR_ENOMEM, "out of memory");
    goto out;
  }
  sodium_bin2base64(b64, b64len, der, der_len, sodium_base64_VARIANT_ORIGINAL);
  cr_hex_encode(hex, t->sha256, CR_SHA256_BYTES);
  cr_hex_encode(sighex, sig, sizeof sig);
  /* A file for another template version keeps nothing of it. */
  const char *old = json_string_value(json_object_get(doc, "template_sha256"));
  if (old != NULL && strcmp(old, hex) != 0)
    json_object_set_new(doc, "signatures", json_object());
  json_object_set_new(doc, "template_sha256", json_string(hex));
  json_object_set_new(json_object_get(doc, "signatures"), cr_role_name(role),
                      json_pack("{s:s, s:s}", "cert_der_base64", b64, "signature", sighex));
  rc = write_atomic(doc, sig_path, err);
  if (rc == 0 && role_out)
    *role_out = role;
out:
  free(b64);
  json_decref(doc);
  return rc;
}

static void check_one(const cr_template *t, cr_role role, json_t *entry,
                      cr_template_sig_status *st) {
  uint8_t der[MAX_CERT_DER], fp[CR_SHA256_BYTES], pk[CR_SIGN_PK_BYTES];
  uint8_t sig[CR_SIGNATURE_BYTES], msg[64];
  size_t der_len = 0, mlen;
  char *why = st->why[role];
  const char *b64 = json_string_value(json_object_get(entry, "cert_der_base64"));
  const char *sighex = json_string_value(json_object_get(entry, "signature"));
  st->present[role] = 1;
  if (b64 == NULL || sighex == NULL) {
    snprintf(why, sizeof st->why[role], "the entry lacks cert_der_base64 or signature");
    return;
  }
  if (sodium_base642bin(der, sizeof der, b64, strlen(b64), NULL, &der_len, NULL,
                        sodium_base64_VARIANT_ORIGINAL) != 0 ||
      der_len == 0) {
    snprintf(why, sizeof st->why[role], "the certificate is not valid base64 DER");
    return;
  }
  cr_sha256(fp, der, der_len);
  if (sodium_memcmp(fp, t->parties[role].cert_sha256, CR_SHA256_BYTES) != 0) {
    char a[CR_SHA256_HEX_BYTES], b[CR_SHA256_HEX_BYTES];
    cr_hex_encode(a, fp, sizeof fp);
    cr_hex_encode(b, t->parties[role].cert_sha256, CR_SHA256_BYTES);
    snprintf(why, sizeof st->why[role],
             "signed by certificate %s, but the template pins %s for the %s", a, b,
             cr_role_name(role));
    return;
  }
  if (cr_cert_ed25519_public_key(der, der_len, pk) != 0) {
    snprintf(why, sizeof st->why[role], "the certificate holds no Ed25519 key");
    return;
  }
  if (cr_hex_decode(sig, sizeof sig, sighex) != 0) {
    snprintf(why, sizeof st->why[role], "the signature is not %d hex bytes", CR_SIGNATURE_BYTES);
    return;
  }
  sig_message(t, msg, &mlen);
  if (crypto_sign_verify_detached(sig, msg, mlen, pk) != 0) {
    snprintf(why, sizeof st->why[role], "the signature does not verify for this template");
    return;
  }
  st->valid[role] = 1;
}

int cr_template_verify_sigs(const cr_template *t, const char *sig_path, cr_template_sig_status *st,
                            cr_error *err) {
  int rc, missing;
  json_t *doc = NULL;
  memset(st, 0, sizeof *st);
  if ((rc = load_doc(sig_path, &doc, &missing, err)) != 0)
    return rc;
  if (!missing) {
    char hex[CR_SHA256_HEX_BYTES];
    cr_hex_encode(hex, t->sha256, CR_SHA256_BYTES);
    const char *th = json_string_value(json_object_get(doc, "template_sha256"));
    json_t *sigs = json_object_get(doc, "signatures");
    if (th != NULL && strcmp(th, hex) != 0) {
      st->other_template = 1;
      snprintf(st->other_sha256, sizeof st->other_sha256, "%.64s", th);
    }
    const char *key;
    json_t *entry;
    json_object_foreach(sigs, key, entry) {
      cr_role role;
      if (cr_role_parse(key, &role) != 0) {
        rc = cr_error_set(err, CR_ETEMPLATE, "%s: $.signatures.%.32s: not a role", sig_path, key);
        goto out;
      }
      check_one(t, role, entry, st);
      if (th == NULL || strcmp(th, hex) != 0) {
        st->valid[role] = 0;
        if (th == NULL)
          snprintf(st->why[role], sizeof st->why[role],
                   "the signatures file names no template (template_sha256 is missing)");
        else
          snprintf(st->why[role], sizeof st->why[role],
                   "the signature is for template %.64s, not this one (%s)", th, hex);
      }
    }
  }
out:
  json_decref(doc);
  return rc;
}

int cr_template_require_sigs(const cr_template *t, const char *sig_path, cr_error *err) {
  cr_template_sig_status st;
  if (!t->require_signatures)
    return 0;
  int rc = cr_template_verify_sigs(t, sig_path, &st, err);
  if (rc)
    return rc;
  for (int r = 0; r < CR_ROLE_COUNT; r++) {
    if (!st.present[r])
      return cr_error_set(err, CR_EREFUSED,
                          "the template requires both parties' signatures and %s has none "
                          "from the %s (%s); the %s runs `cleanroom template sign %s "
                          "--identity DIR` and sends the file back",
                          sig_path, cr_role_name((cr_role)r), t->parties[r].org,
                          cr_role_name((cr_role)r), t->path ? t->path : "TEMPLATE");
    if (!st.valid[r])
      return cr_error_set(err, CR_EREFUSED, "%s: the %s's signature is invalid: %s", sig_path,
                          cr_role_name((cr_role)r), st.why[r]);
  }
  return 0;
}
