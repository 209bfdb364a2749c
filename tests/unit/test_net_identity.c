/*
 * Node identity: generation, loading, fingerprints, refusals, signatures.
 * Fingerprints are recomputed here with OpenSSL alone (PEM -> DER -> SHA-256,
 * as `openssl x509 -outform DER | sha256sum` does) so the module is checked
 * against an independent computation, and signatures are verified with
 * libsodium against the key taken from the certificate.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <sodium.h>

#include "cleanroom/net.h"

typedef struct fixture {
  char root[64];
  char dir[128];
  uint8_t fp[CR_SHA256_BYTES];
} fixture;

static void path_in(char *out, size_t cap, const char *dir, const char *name) {
  int n = snprintf(out, cap, "%s/%s", dir, name);
  assert_true(n > 0 && (size_t)n < cap);
}

static void rm_identity(const char *dir) {
  char p[256];
  path_in(p, sizeof p, dir, CR_IDENTITY_KEY_FILE);
  unlink(p);
  path_in(p, sizeof p, dir, CR_IDENTITY_CRT_FILE);
  unlink(p);
  rmdir(dir);
}

static int setup(void **state) {
  fixture *f = calloc(1, sizeof *f);
  cr_error err;
  assert_non_null(f);
  snprintf(f->root, sizeof f->root, "/tmp/cr_test_net_idXXXXXX");
  assert_non_null(mkdtemp(f->root));
  snprintf(f->dir, sizeof f->dir, "%s/node", f->root);
  cr_error_clear(&err);
  assert_int_equal(cr_identity_generate(f->dir, "Acme Security", f->fp, &err), 0);
  *state = f;
  return 0;
}

static int teardown(void **state) {
  fixture *f = *state;
  rm_identity(f->dir);
  rmdir(f->root);
  free(f);
  return 0;
}

/* SHA-256 of the certificate's DER, with OpenSSL only. */
static void openssl_fingerprint(const char *crt, uint8_t out[32]) {
  FILE *fp = fopen(crt, "r");
  assert_non_null(fp);
  X509 *x = PEM_read_X509(fp, NULL, NULL, NULL);
  fclose(fp);
  assert_non_null(x);
  unsigned char *der = NULL;
  int len = i2d_X509(x, &der);
  assert_true(len > 0);
  unsigned int mdlen = 0;
  assert_int_equal(EVP_Digest(der, (size_t)len, out, &mdlen, EVP_sha256(), NULL), 1);
  assert_int_equal(mdlen, 32);
  OPENSSL_free(der);
  X509_free(x);
}

static void test_generate_files_and_modes(void **state) {
  fixture *f = *state;
  char key[256], crt[256];
  struct stat st;
  path_in(key, sizeof key, f->dir, CR_IDENTITY_KEY_FILE);
  path_in(crt, sizeof crt, f->dir, CR_IDENTITY_CRT_FILE);
  assert_int_equal(stat(f->dir, &st), 0);
  assert_int_equal(st.st_mode & 0777, 0700);
  assert_int_equal(stat(key, &st), 0);
  assert_int_equal(st.st_mode & 0777, 0600);
  assert_int_equal(stat(crt, &st), 0);

  /* PKCS#8 PEM ("BEGIN PRIVATE KEY"), not a legacy format. */
  char *text = NULL;
  size_t len = 0;
  cr_error err;
  assert_int_equal(cr_read_file(key, 1 << 16, &text, &len, &err), 0);
  assert_non_null(strstr(text, "-----BEGIN PRIVATE KEY-----"));
  sodium_memzero(text, len);
  free(text);
}

static void test_certificate_fields(void **state) {
  fixture *f = *state;
  char crt[256];
  path_in(crt, sizeof crt, f->dir, CR_IDENTITY_CRT_FILE);
  FILE *fp = fopen(crt, "r");
  assert_non_null(fp);
  X509 *x = PEM_read_X509(fp, NULL, NULL, NULL);
  fclose(fp);
  assert_non_null(x);

  assert_int_equal(X509_get_version(x), X509_VERSION_3);
  char cn[128];
  assert_true(X509_NAME_get_text_by_NID(X509_get_subject_name(x), NID_commonName, cn, sizeof cn) >
              0);
  assert_string_equal(cn, "Acme Security");
  assert_int_equal(X509_NAME_cmp(X509_get_subject_name(x), X509_get_issuer_name(x)), 0);
  assert_int_equal(EVP_PKEY_get_base_id(X509_get0_pubkey(x)), EVP_PKEY_ED25519);
  /* Self-signed with its own key; not a CA. */
  assert_int_equal(X509_verify(x, X509_get0_pubkey(x)), 1);
  assert_int_equal(X509_check_ca(x), 0);
  int crit = -1;
  BASIC_CONSTRAINTS *bc = X509_get_ext_d2i(x, NID_basic_constraints, &crit, NULL);
  assert_non_null(bc);
  assert_int_equal(bc->ca, 0);
  BASIC_CONSTRAINTS_free(bc);
  /* Valid from about an hour ago for about ten years. */
  time_t now = time(NULL);
  time_t soon = now + 60, later = now + (time_t)9 * 365 * 86400;
  assert_true(X509_cmp_time(X509_get0_notBefore(x), &soon) < 0);
  assert_true(X509_cmp_time(X509_get0_notAfter(x), &later) > 0);
  /* A positive, non-trivial serial. */
  const ASN1_INTEGER *serial = X509_get0_serialNumber(x);
  assert_true(ASN1_STRING_length(serial) >= 8);
  X509_free(x);
}

static void test_fingerprint_matches_openssl(void **state) {
  fixture *f = *state;
  char crt[256];
  uint8_t want[32], got[32];
  cr_error err;
  cr_identity *id = NULL;
  path_in(crt, sizeof crt, f->dir, CR_IDENTITY_CRT_FILE);
  openssl_fingerprint(crt, want);
  assert_memory_equal(f->fp, want, 32);
  assert_int_equal(cr_cert_fingerprint_file(crt, got, &err), 0);
  assert_memory_equal(got, want, 32);
  assert_int_equal(cr_identity_load(&id, f->dir, &err), 0);
  assert_memory_equal(cr_identity_fingerprint(id), want, 32);
  size_t der_len = 0;
  const uint8_t *der = cr_identity_cert_der(id, &der_len);
  uint8_t h[32];
  crypto_hash_sha256(h, der, der_len);
  assert_memory_equal(h, want, 32);
  cr_identity_free(id);
}

static void test_refuses_to_overwrite(void **state) {
  fixture *f = *state;
  char key[256];
  uint8_t before[32], after[32], fp[32];
  cr_error err;
  path_in(key, sizeof key, f->dir, CR_IDENTITY_KEY_FILE);
  assert_int_equal(cr_sha256_file(before, key, &err), 0);
  cr_error_clear(&err);
  assert_int_equal(cr_identity_generate(f->dir, "Someone else", fp, &err), CR_ECONFIG);
  assert_non_null(strstr(err.msg, "refusing to overwrite"));
  assert_non_null(strstr(err.msg, key));
  assert_int_equal(cr_sha256_file(after, key, &err), 0);
  assert_memory_equal(before, after, 32);
}

static void test_refuses_stray_certificate(void **state) {
  fixture *f = *state;
  char dir[160], crt[256], key[256];
  uint8_t fp[32];
  cr_error err;
  struct stat st;
  snprintf(dir, sizeof dir, "%s/stray", f->root);
  assert_int_equal(mkdir(dir, 0700), 0);
  path_in(crt, sizeof crt, dir, CR_IDENTITY_CRT_FILE);
  path_in(key, sizeof key, dir, CR_IDENTITY_KEY_FILE);
  FILE *fp_ = fopen(crt, "w");
  assert_non_null(fp_);
  fputs("old certificate\n", fp_);
  fclose(fp_);
  assert_int_equal(cr_identity_generate(dir, "x", fp, &err), CR_ECONFIG);
  assert_non_null(strstr(err.msg, "refusing to overwrite"));
  assert_int_not_equal(stat(key, &st), 0); /* nothing half-written */
  rm_identity(dir);
}

static void test_sign_verifies_with_libsodium(void **state) {
  fixture *f = *state;
  cr_identity *id = NULL;
  cr_error err;
  uint8_t pk[32], pk2[32], sig[64];
  static const uint8_t msg[] = "cleanroom/v1/receipt test message";
  assert_int_equal(cr_identity_load(&id, f->dir, &err), 0);
  assert_int_equal(cr_identity_sign(id, msg, sizeof msg, sig), 0);

  size_t der_len = 0;
  const uint8_t *der = cr_identity_cert_der(id, &der_len);
  assert_int_equal(cr_cert_ed25519_public_key(der, der_len, pk), 0);
  cr_identity_public_key(id, pk2);
  assert_memory_equal(pk, pk2, 32);
  assert_int_equal(crypto_sign_verify_detached(sig, msg, sizeof msg, pk), 0);
  assert_int_equal(cr_sign_verify(pk, msg, sizeof msg, sig), 0);

  /* Ed25519 is deterministic: same message, same signature. */
  uint8_t sig2[64];
  assert_int_equal(cr_identity_sign(id, msg, sizeof msg, sig2), 0);
  assert_memory_equal(sig, sig2, 64);

  uint8_t bad[sizeof msg];
  memcpy(bad, msg, sizeof msg);
  bad[0] ^= 1;
  assert_int_not_equal(crypto_sign_verify_detached(sig, bad, sizeof bad, pk), 0);
  assert_int_equal(cr_sign_verify(pk, bad, sizeof bad, sig), CR_EAUTH);
  sig[5] ^= 0x40;
  assert_int_equal(cr_sign_verify(pk, msg, sizeof msg, sig), CR_EAUTH);

  /* Empty messages are signable too. */
  assert_int_equal(cr_identity_sign(id, NULL, 0, sig), 0);
  assert_int_equal(cr_sign_verify(pk, NULL, 0, sig), 0);
  cr_identity_free(id);
}

static void test_refuses_readable_key(void **state) {
  fixture *f = *state;
  char key[256];
  cr_identity *id = NULL;
  cr_error err;
  path_in(key, sizeof key, f->dir, CR_IDENTITY_KEY_FILE);
  assert_int_equal(chmod(key, 0640), 0);
  cr_error_clear(&err);
  assert_int_equal(cr_identity_load(&id, f->dir, &err), CR_ECONFIG);
  assert_null(id);
  assert_non_null(strstr(err.msg, "chmod 600"));
  assert_non_null(strstr(err.msg, "0640"));
  assert_int_equal(chmod(key, 0600), 0);
  assert_int_equal(cr_identity_load(&id, f->dir, &err), 0);
  cr_identity_free(id);
}

static void copy_file(const char *from, const char *to, mode_t mode) {
  char *text = NULL;
  size_t len = 0;
  cr_error err;
  assert_int_equal(cr_read_file(from, 1 << 16, &text, &len, &err), 0);
  unlink(to);
  FILE *fp = fopen(to, "w");
  assert_non_null(fp);
  assert_int_equal(fwrite(text, 1, len, fp), len);
  fclose(fp);
  assert_int_equal(chmod(to, mode), 0);
  sodium_memzero(text, len);
  free(text);
}

static void test_refuses_mismatched_key(void **state) {
  fixture *f = *state;
  char dir[160], key_src[256], key_dst[256];
  uint8_t fp[32];
  cr_identity *id = NULL;
  cr_error err;
  snprintf(dir, sizeof dir, "%s/other", f->root);
  assert_int_equal(cr_identity_generate(dir, "Other", fp, &err), 0);
  assert_memory_not_equal(fp, f->fp, 32);
  /* Put the first identity's key next to the second one's certificate. */
  path_in(key_src, sizeof key_src, f->dir, CR_IDENTITY_KEY_FILE);
  path_in(key_dst, sizeof key_dst, dir, CR_IDENTITY_KEY_FILE);
  copy_file(key_src, key_dst, 0600);
  cr_error_clear(&err);
  assert_int_equal(cr_identity_load(&id, dir, &err), CR_ECONFIG);
  assert_null(id);
  assert_non_null(strstr(err.msg, "does not belong"));
  rm_identity(dir);
}

static void test_load_errors(void **state) {
  fixture *f = *state;
  char dir[160], path[256];
  cr_identity *id = NULL;
  cr_error err;
  uint8_t fp[32];

  cr_error_clear(&err);
  snprintf(dir, sizeof dir, "%s/missing", f->root);
  assert_int_equal(cr_identity_load(&id, dir, &err), CR_ECONFIG);
  assert_non_null(strstr(err.msg, CR_IDENTITY_KEY_FILE));

  /* A key that is not PEM. */
  assert_int_equal(mkdir(dir, 0700), 0);
  path_in(path, sizeof path, dir, CR_IDENTITY_KEY_FILE);
  FILE *fp_ = fopen(path, "w");
  assert_non_null(fp_);
  fputs("not a key\n", fp_);
  fclose(fp_);
  assert_int_equal(chmod(path, 0600), 0);
  assert_int_equal(cr_identity_load(&id, dir, &err), CR_ECONFIG);
  assert_null(id);
  rm_identity(dir);

  /* A certificate file that is not a certificate. */
  assert_int_equal(cr_cert_fingerprint_file(path, fp, &err), CR_ECONFIG);
  assert_int_equal(cr_cert_ed25519_public_key((const uint8_t *)"junk", 4, fp), CR_EINVAL);

  /* Bad arguments. */
  assert_int_equal(cr_identity_generate(dir, "", fp, &err), CR_EINVAL);
  char longname[100];
  memset(longname, 'a', sizeof longname - 1);
  longname[sizeof longname - 1] = '\0';
  assert_int_equal(cr_identity_generate(dir, longname, fp, &err), CR_EINVAL);
}

static void test_two_identities_differ(void **state) {
  fixture *f = *state;
  char dir[160];
  uint8_t fp[32];
  cr_identity *a = NULL, *b = NULL;
  cr_error err;
  uint8_t pa[32], pb[32];
  snprintf(dir, sizeof dir, "%s/second", f->root);
  assert_int_equal(cr_identity_generate(dir, "Acme Security", fp, &err), 0);
  assert_int_equal(cr_identity_load(&a, f->dir, &err), 0);
  assert_int_equal(cr_identity_load(&b, dir, &err), 0);
  assert_memory_not_equal(cr_identity_fingerprint(a), cr_identity_fingerprint(b), 32);
  cr_identity_public_key(a, pa);
  cr_identity_public_key(b, pb);
  assert_memory_not_equal(pa, pb, 32);
  /* A signature by one does not verify under the other's key. */
  uint8_t sig[64];
  assert_int_equal(cr_identity_sign(a, (const uint8_t *)"m", 1, sig), 0);
  assert_int_equal(cr_sign_verify(pb, (const uint8_t *)"m", 1, sig), CR_EAUTH);
  cr_identity_free(a);
  cr_identity_free(b);
  rm_identity(dir);
}

/* Fingerprints as people paste them (issue 16). */
static void test_fingerprint_parse(void **state) {
  (void)state;
  static const char hex[] = "a309bc0123456789abcdef0123456789abcdef0123456789abcdef0123456789";
  uint8_t want[CR_SHA256_BYTES], fp[CR_SHA256_BYTES];
  cr_error err;
  assert_int_equal(cr_hex_decode(want, sizeof want, hex), 0);
  char colon[3 * CR_SHA256_BYTES];
  for (size_t i = 0; i < CR_SHA256_BYTES; i++)
    snprintf(colon + 3 * i, 4, "%02X%s", want[i], i + 1 < CR_SHA256_BYTES ? ":" : "");
  assert_int_equal(cr_fingerprint_parse(hex, fp, &err), 0);
  assert_memory_equal(fp, want, sizeof fp);
  assert_int_equal(cr_fingerprint_parse(colon, fp, &err), 0);
  assert_memory_equal(fp, want, sizeof fp);
  char line[200];
  snprintf(line, sizeof line, "sha256 Fingerprint=%s\n", colon);
  assert_int_equal(cr_fingerprint_parse(line, fp, &err), 0);
  assert_memory_equal(fp, want, sizeof fp);
  /* One digit short: says so, by count. */
  char short63[64];
  memcpy(short63, hex, 63);
  short63[63] = '\0';
  cr_error_clear(&err);
  assert_int_equal(cr_fingerprint_parse(short63, fp, &err), CR_EINVAL);
  assert_non_null(strstr(err.msg, "expected 64 hex digits (a SHA-256 fingerprint), got 63"));
  assert_int_equal(cr_fingerprint_parse("AB:CD", fp, &err), CR_EINVAL);
  assert_non_null(strstr(err.msg, "got 4"));
  /* Not a fingerprint at all: 1, for the caller to try it as a file. */
  assert_int_equal(cr_fingerprint_parse("acme.crt", fp, &err), 1);
  assert_int_equal(cr_fingerprint_parse("./id/identity.crt", fp, &err), 1);
  assert_int_equal(cr_fingerprint_parse("", fp, &err), 1);
  /* cr_fingerprint_arg: a short one that is not a file is not opened. */
  assert_int_equal(cr_fingerprint_arg(short63, fp, &err), CR_EINVAL);
  assert_null(strstr(err.msg, "cannot open"));
  assert_int_equal(cr_fingerprint_arg("/nonexistent/x.crt", fp, &err), CR_ECONFIG);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_fingerprint_parse),
      cmocka_unit_test(test_generate_files_and_modes),
      cmocka_unit_test(test_certificate_fields),
      cmocka_unit_test(test_fingerprint_matches_openssl),
      cmocka_unit_test(test_refuses_to_overwrite),
      cmocka_unit_test(test_refuses_stray_certificate),
      cmocka_unit_test(test_sign_verifies_with_libsodium),
      cmocka_unit_test(test_refuses_readable_key),
      cmocka_unit_test(test_refuses_mismatched_key),
      cmocka_unit_test(test_load_errors),
      cmocka_unit_test(test_two_identities_differ),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}
