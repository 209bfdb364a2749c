/*
 * Node identity (design §2): an Ed25519 key and a self-signed certificate.
 *
 * The partner pins the SHA-256 of the certificate's DER in the template, so
 * the certificate carries no trust of its own: it only binds the key. The
 * private key lives in two places once loaded: the EVP_PKEY that TLS signs
 * its handshakes with (OpenSSL wipes it on free), and a libsodium secret key
 * in sodium_malloc'ed, read-only memory for receipts and audit checkpoints,
 * so those signatures verify with crypto_sign_verify_detached.
 * Never: writes a key file that already exists, loads a key file that others
 * can read, logs or returns key material.
 */
#include "cleanroom/net.h"
#include "net/net_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <sodium.h>

#define CR_CN_MAX 64      /* ub-common-name (RFC 5280) */
#define CR_CERT_DAYS 3653 /* ten years, leap days included */
#define CR_KEY_FILE_MAX 16384

struct cr_identity {
  EVP_PKEY *pkey;
  X509 *cert;
  uint8_t *der;
  size_t der_len;
  uint8_t fp[CR_SHA256_BYTES];
  uint8_t pk[crypto_sign_PUBLICKEYBYTES];
  uint8_t *sk; /* sodium_malloc'ed, read-only after load */
};

/* Last OpenSSL reason on this thread, for messages; clears the queue. */
static const char *ossl_reason(void) {
  unsigned long e = ERR_peek_last_error();
  const char *r = e ? ERR_reason_error_string(e) : NULL;
  ERR_clear_error();
  return r ? r : "unknown OpenSSL error";
}

/* A PEM password callback that refuses: key files are never encrypted, and
 * OpenSSL's default would prompt on the terminal. */
// NOLINTNEXTLINE(readability-non-const-parameter): OpenSSL's pem_password_cb fixes the type
static int no_password(char *buf, int size, int rwflag, void *u) {
  (void)buf;
  (void)size;
  (void)rwflag;
  (void)u;
  return -1;
}

static int join_path(char *out, size_t cap, const char *dir, const char *name, cr_error *err) {
  int n = snprintf(out, cap, "%s/%s", dir, name);
  if (n < 0 || (size_t)n >= cap)
    return cr_error_set(err, CR_ECONFIG, "%s: path too long", dir);
  return 0;
}

static int ensure_dir(const char *dir, cr_error *err) {
  struct stat st;
  if (mkdir(dir, 0700) == 0)
    return 0;
  if (errno != EEXIST)
    return cr_error_set(err, CR_ECONFIG, "cannot create the identity directory %s: %s", dir,
                        strerror(errno));
  if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode))
    return cr_error_set(err, CR_ECONFIG, "%s exists and is not a directory", dir);
  return 0;
}

static int refuse_existing(const char *path, cr_error *err) {
  return cr_error_set(err, CR_ECONFIG,
                      "refusing to overwrite the existing identity file %s: a node "
                      "identity is generated once (partners pin its certificate); "
                      "remove it deliberately or choose another directory",
                      path);
}

static int cert_sha256(X509 *cert, uint8_t fp[CR_SHA256_BYTES], uint8_t **der_out,
                       size_t *der_len_out) {
  int rc = 0;
  unsigned char *der = NULL;
  int len = i2d_X509(cert, &der); /* OpenSSL allocates */
  if (len <= 0) {
    ERR_clear_error();
    rc = CR_ECRYPTO;
    goto out;
  }
  cr_sha256(fp, der, (size_t)len);
  if (der_out != NULL) {
    *der_out = malloc((size_t)len);
    if (*der_out == NULL) {
      rc = CR_ENOMEM;
      goto out;
    }
    memcpy(*der_out, der, (size_t)len);
    *der_len_out = (size_t)len;
  }
out:
  OPENSSL_free(der);
  return rc;
}

static int build_cert(X509 **out, EVP_PKEY *pkey, const char *cn, cr_error *err) {
  int rc = CR_ECRYPTO; /* until the certificate is complete */
  X509 *x = X509_new();
  BIGNUM *serial = BN_new();
  X509_EXTENSION *ext = NULL;
  X509_NAME *name = NULL;
  X509V3_CTX v3;
  unsigned char sbytes[16];
  static const struct {
    int nid;
    const char *value;
  } exts[] = {
      {NID_basic_constraints, "critical,CA:FALSE"},
      {NID_key_usage, "critical,digitalSignature"},
      {NID_ext_key_usage, "serverAuth,clientAuth"},
  };

  if (x == NULL || serial == NULL || !X509_set_version(x, X509_VERSION_3))
    goto out;
  /* Random positive serial (RFC 5280: positive, at most 20 octets). */
  if (RAND_bytes(sbytes, sizeof sbytes) != 1)
    goto out;
  sbytes[0] &= 0x7f;
  sbytes[0] |= 0x01; /* never zero, never a shorter encoding */
  if (BN_bin2bn(sbytes, sizeof sbytes, serial) == NULL ||
      BN_to_ASN1_INTEGER(serial, X509_get_serialNumber(x)) == NULL)
    goto out;
  if (X509_gmtime_adj(X509_getm_notBefore(x), -3600) == NULL ||
      X509_time_adj_ex(X509_getm_notAfter(x), CR_CERT_DAYS, 0, NULL) == NULL)
    goto out;
  name = X509_get_subject_name(x);
  if (!X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8, (const unsigned char *)cn, -1, -1,
                                  0) ||
      !X509_set_issuer_name(x, name) || !X509_set_pubkey(x, pkey))
    goto out;
  X509V3_set_ctx(&v3, x, x, NULL, NULL, 0);
  for (size_t i = 0; i < sizeof exts / sizeof exts[0]; i++) {
    ext = X509V3_EXT_conf_nid(NULL, &v3, exts[i].nid, exts[i].value);
    if (ext == NULL || !X509_add_ext(x, ext, -1))
      goto out;
    X509_EXTENSION_free(ext);
    ext = NULL;
  }
  /* Ed25519 signs the message itself: no separate digest. */
  if (X509_sign(x, pkey, NULL) <= 0)
    goto out;
  *out = x;
  x = NULL;
  rc = 0;
out:
  if (rc != 0)
    cr_error_set(err, rc, "cannot build the identity certificate: %s", ossl_reason());
  X509_EXTENSION_free(ext);
  BN_free(serial);
  X509_free(x);
  OPENSSL_cleanse(sbytes, sizeof sbytes);
  return rc;
}

/* Writes a PEM object to a new file (O_EXCL) with the given mode. */
static int write_new_pem(const char *path, mode_t mode, EVP_PKEY *pkey, X509 *cert, cr_error *err) {
  int rc = 0;
  BIO *bio = NULL;
  int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, mode);
  if (fd < 0) {
    if (errno == EEXIST)
      return refuse_existing(path, err);
    return cr_error_set(err, CR_EIO, "cannot create %s: %s", path, strerror(errno));
  }
  bio = BIO_new_fd(fd, BIO_NOCLOSE);
  if (bio == NULL) {
    rc = cr_error_set(err, CR_ENOMEM, "cannot write %s: out of memory", path);
    goto out;
  }
  int ok = pkey != NULL ? PEM_write_bio_PrivateKey(bio, pkey, NULL, NULL, 0, NULL, NULL)
                        : PEM_write_bio_X509(bio, cert);
  if (!ok || BIO_flush(bio) != 1) {
    rc = cr_error_set(err, CR_EIO, "cannot write %s: %s", path, ossl_reason());
    goto out;
  }
  if (fsync(fd) != 0) {
    rc = cr_error_set(err, CR_EIO, "cannot write %s: %s", path, strerror(errno));
    goto out;
  }
out:
  BIO_free(bio);
  if (close(fd) != 0 && rc == 0)
    rc = cr_error_set(err, CR_EIO, "cannot write %s: %s", path, strerror(errno));
  if (rc != 0)
    unlink(path);
  return rc;
}

int cr_identity_generate(const char *dir, const char *common_name, uint8_t fp[CR_SHA256_BYTES],
                         cr_error *err) {
  int rc = 0;
  EVP_PKEY *pkey = NULL;
  X509 *cert = NULL;
  char keypath[PATH_MAX], crtpath[PATH_MAX];
  struct stat st;
  int key_written = 0;

  if (dir == NULL || dir[0] == '\0' || common_name == NULL || common_name[0] == '\0')
    return cr_error_set(err, CR_EINVAL, "identity: a directory and a name are required");
  if (strlen(common_name) > CR_CN_MAX)
    return cr_error_set(err, CR_EINVAL, "identity name is longer than %d bytes", CR_CN_MAX);
  if ((rc = join_path(keypath, sizeof keypath, dir, CR_IDENTITY_KEY_FILE, err)) != 0 ||
      (rc = join_path(crtpath, sizeof crtpath, dir, CR_IDENTITY_CRT_FILE, err)) != 0)
    return rc;
  if ((rc = ensure_dir(dir, err)) != 0)
    return rc;
  /* Checked up front so that nothing is written when either exists; O_EXCL
   * below closes the race. */
  if (lstat(keypath, &st) == 0)
    return refuse_existing(keypath, err);
  if (lstat(crtpath, &st) == 0)
    return refuse_existing(crtpath, err);

  pkey = EVP_PKEY_Q_keygen(NULL, NULL, "ED25519");
  if (pkey == NULL) {
    rc = cr_error_set(err, CR_ECRYPTO, "cannot generate an Ed25519 key: %s", ossl_reason());
    goto out;
  }
  if ((rc = build_cert(&cert, pkey, common_name, err)) != 0)
    goto out;
  if ((rc = write_new_pem(keypath, 0600, pkey, NULL, err)) != 0)
    goto out;
  key_written = 1;
  if ((rc = write_new_pem(crtpath, 0644, NULL, cert, err)) != 0)
    goto out;
  if (fp != NULL && (rc = cert_sha256(cert, fp, NULL, NULL)) != 0) {
    cr_error_set(err, rc, "cannot encode the identity certificate");
    goto out;
  }
out:
  if (rc != 0 && key_written)
    unlink(keypath);
  X509_free(cert);
  EVP_PKEY_free(pkey);
  return rc;
}

void cr_identity_free(cr_identity *id) {
  if (id == NULL)
    return;
  if (id->sk != NULL)
    sodium_free(id->sk); /* wipes, even when read-only */
  EVP_PKEY_free(id->pkey);
  X509_free(id->cert);
  free(id->der);
  sodium_memzero(id, sizeof *id);
  free(id);
}

static int is_ed25519(const EVP_PKEY *k) {
  return k != NULL && EVP_PKEY_get_base_id(k) == EVP_PKEY_ED25519;
}

/* Reads the key file into wiped memory (not through stdio, whose buffer
 * would keep a copy of the PEM after fclose). */
static int load_key(EVP_PKEY **out, const char *path, cr_error *err) {
  int rc = 0;
  struct stat st;
  BIO *bio = NULL;
  char *pem = NULL;
  size_t len = 0;
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    return cr_error_set(err, CR_ECONFIG,
                        "cannot open the identity key %s: %s (create one with "
                        "`cleanroom init`)",
                        path, strerror(errno));
  if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    rc = cr_error_set(err, CR_ECONFIG, "%s is not a regular file", path);
    goto out;
  }
  if ((st.st_mode & (S_IRWXG | S_IRWXO)) != 0) {
    rc = cr_error_set(err, CR_ECONFIG,
                      "the identity key %s is accessible to other users (mode %04o); "
                      "restrict it with: chmod 600 %s",
                      path, (unsigned)(st.st_mode & 07777), path);
    goto out;
  }
  pem = sodium_malloc(CR_KEY_FILE_MAX);
  if (pem == NULL) {
    rc = cr_error_set(err, CR_ENOMEM, "out of secure memory");
    goto out;
  }
  for (;;) {
    ssize_t n = read(fd, pem + len, CR_KEY_FILE_MAX - len);
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0) {
      rc = cr_error_set(err, CR_EIO, "cannot read %s: %s", path, strerror(errno));
      goto out;
    }
    if (n == 0)
      break;
    len += (size_t)n;
    if (len == CR_KEY_FILE_MAX) {
      rc = cr_error_set(err, CR_ECONFIG, "%s is too large to be a key file", path);
      goto out;
    }
  }
  bio = BIO_new_mem_buf(pem, (int)len);
  if (bio == NULL) {
    rc = cr_error_set(err, CR_ENOMEM, "out of memory");
    goto out;
  }
  *out = PEM_read_bio_PrivateKey(bio, NULL, no_password, NULL);
  if (*out == NULL) {
    rc = cr_error_set(err, CR_ECONFIG, "%s is not an unencrypted PEM private key (%s)", path,
                      ossl_reason());
    goto out;
  }
  if (!is_ed25519(*out)) {
    EVP_PKEY_free(*out);
    *out = NULL;
    rc = cr_error_set(err, CR_ECONFIG, "%s is not an Ed25519 key", path);
    goto out;
  }
out:
  BIO_free(bio);
  if (pem != NULL)
    sodium_free(pem); /* wipes */
  close(fd);
  return rc;
}

static int load_cert(X509 **out, const char *path, cr_error *err) {
  FILE *f = fopen(path, "re");
  if (f == NULL)
    return cr_error_set(err, CR_ECONFIG, "cannot open the certificate %s: %s", path,
                        strerror(errno));
  *out = PEM_read_X509(f, NULL, no_password, NULL);
  fclose(f);
  if (*out == NULL)
    return cr_error_set(err, CR_ECONFIG, "%s is not a PEM certificate (%s)", path, ossl_reason());
  return 0;
}

int cr_identity_load(cr_identity **out, const char *dir, cr_error *err) {
  int rc = 0;
  cr_identity *id = NULL;
  uint8_t *seed = NULL;
  char keypath[PATH_MAX], crtpath[PATH_MAX];
  uint8_t cert_pk[crypto_sign_PUBLICKEYBYTES];

  if (out == NULL || dir == NULL)
    return cr_error_set(err, CR_EINVAL, "identity: no directory given");
  *out = NULL;
  if (sodium_init() < 0)
    return cr_error_set(err, CR_ECRYPTO, "libsodium failed to initialise");
  if ((rc = join_path(keypath, sizeof keypath, dir, CR_IDENTITY_KEY_FILE, err)) != 0 ||
      (rc = join_path(crtpath, sizeof crtpath, dir, CR_IDENTITY_CRT_FILE, err)) != 0)
    return rc;
  id = calloc(1, sizeof *id);
  if (id == NULL)
    return cr_error_set(err, CR_ENOMEM, "out of memory");
  if ((rc = load_key(&id->pkey, keypath, err)) != 0 ||
      (rc = load_cert(&id->cert, crtpath, err)) != 0)
    goto out;
  if (!is_ed25519(X509_get0_pubkey(id->cert))) {
    rc = cr_error_set(err, CR_ECONFIG, "%s does not hold an Ed25519 key", crtpath);
    goto out;
  }
  if (X509_check_private_key(id->cert, id->pkey) != 1) {
    ERR_clear_error();
    rc = cr_error_set(err, CR_ECONFIG, "the key %s does not belong to the certificate %s", keypath,
                      crtpath);
    goto out;
  }
  if ((rc = cert_sha256(id->cert, id->fp, &id->der, &id->der_len)) != 0) {
    cr_error_set(err, rc, "cannot encode %s", crtpath);
    goto out;
  }
  if ((rc = cr_cert_ed25519_public_key(id->der, id->der_len, cert_pk)) != 0) {
    cr_error_set(err, rc, "cannot read the public key of %s", crtpath);
    goto out;
  }

  seed = sodium_malloc(crypto_sign_SEEDBYTES);
  id->sk = sodium_malloc(crypto_sign_SECRETKEYBYTES);
  if (seed == NULL || id->sk == NULL) {
    rc = cr_error_set(err, CR_ENOMEM, "out of secure memory");
    goto out;
  }
  size_t seed_len = crypto_sign_SEEDBYTES;
  if (EVP_PKEY_get_raw_private_key(id->pkey, seed, &seed_len) != 1 ||
      seed_len != crypto_sign_SEEDBYTES) {
    rc =
        cr_error_set(err, CR_ECRYPTO, "cannot read the Ed25519 key %s: %s", keypath, ossl_reason());
    goto out;
  }
  if (crypto_sign_seed_keypair(id->pk, id->sk, seed) != 0 ||
      sodium_memcmp(id->pk, cert_pk, sizeof cert_pk) != 0) {
    rc = cr_error_set(err, CR_ECRYPTO, "the key %s does not belong to the certificate %s", keypath,
                      crtpath);
    goto out;
  }
  sodium_mprotect_readonly(id->sk);
  *out = id;
  id = NULL;
out:
  if (seed != NULL)
    sodium_free(seed);
  cr_identity_free(id);
  return rc;
}

const uint8_t *cr_identity_fingerprint(const cr_identity *id) { return id->fp; }

const uint8_t *cr_identity_cert_der(const cr_identity *id, size_t *len) {
  if (len != NULL)
    *len = id->der_len;
  return id->der;
}

void cr_identity_public_key(const cr_identity *id, uint8_t pk[CR_SIGN_PK_BYTES]) {
  memcpy(pk, id->pk, CR_SIGN_PK_BYTES);
}

struct evp_pkey_st *cr__identity_pkey(const cr_identity *id) {
  return id->pkey;
}
struct x509_st *cr__identity_x509(const cr_identity *id) {
  return id->cert;
}

int cr_identity_sign(void *ctx, const uint8_t *msg, size_t len, uint8_t sig[CR_SIGNATURE_BYTES]) {
  const cr_identity *id = ctx;
  if (id == NULL || id->sk == NULL || (msg == NULL && len != 0))
    return CR_EINVAL;
  if (crypto_sign_detached(sig, NULL, msg, len, id->sk) != 0)
    return CR_ECRYPTO;
  return 0;
}

int cr_sign_verify(const uint8_t pk[CR_SIGN_PK_BYTES], const uint8_t *msg, size_t len,
                   const uint8_t sig[CR_SIGNATURE_BYTES]) {
  if (crypto_sign_verify_detached(sig, msg, len, pk) != 0)
    return CR_EAUTH;
  return 0;
}

int cr_cert_ed25519_public_key(const uint8_t *der, size_t der_len, uint8_t pk[CR_SIGN_PK_BYTES]) {
  int rc = 0;
  const unsigned char *p = der;
  X509 *x = NULL;
  if (der == NULL || der_len == 0 || der_len > LONG_MAX)
    return CR_EINVAL;
  x = d2i_X509(NULL, &p, (long)der_len);
  if (x == NULL || p != der + der_len) {
    rc = CR_EINVAL;
    goto out;
  }
  EVP_PKEY *k = X509_get0_pubkey(x);
  size_t len = CR_SIGN_PK_BYTES;
  if (!is_ed25519(k) || EVP_PKEY_get_raw_public_key(k, pk, &len) != 1 || len != CR_SIGN_PK_BYTES) {
    rc = CR_EAUTH;
    goto out;
  }
out:
  ERR_clear_error();
  X509_free(x);
  return rc;
}

int cr_cert_fingerprint_file(const char *path, uint8_t fp[CR_SHA256_BYTES], cr_error *err) {
  X509 *x = NULL;
  int rc = load_cert(&x, path, err);
  if (rc != 0)
    return rc;
  if ((rc = cert_sha256(x, fp, NULL, NULL)) != 0)
    cr_error_set(err, rc, "cannot encode the certificate %s", path);
  X509_free(x);
  return rc;
}

int cr_fingerprint_parse(const char *s, uint8_t fp[CR_SHA256_BYTES], cr_error *err) {
  static const char *const prefixes[] = {"sha256 fingerprint=", "sha256:", "sha256="};
  char hex[2 * CR_SHA256_BYTES + 1];
  size_t ndigits = 0;
  if (s == NULL)
    return 1;
  while (*s == ' ' || *s == '\t')
    s++;
  for (size_t i = 0; i < sizeof prefixes / sizeof prefixes[0]; i++) {
    size_t n = strlen(prefixes[i]);
    if (strncasecmp(s, prefixes[i], n) == 0) {
      s += n;
      break;
    }
  }
  if (*s == '\0')
    return 1;
  for (const char *p = s; *p; p++) {
    char c = *p;
    int hexd = (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
    if (hexd) {
      if (ndigits < 2 * CR_SHA256_BYTES)
        hex[ndigits] = c;
      ndigits++;
    } else if (c != ':' && c != ' ' && c != '\t' && c != '\n' && c != '\r') {
      return 1; /* not a fingerprint: a path, a name */
    }
  }
  if (ndigits != 2 * CR_SHA256_BYTES)
    return cr_error_set(err, CR_EINVAL,
                        "\"%.100s\" is not a certificate fingerprint: expected 64 hex digits (a "
                        "SHA-256 fingerprint), got %zu%s",
                        s, ndigits,
                        ndigits == 40 ? " (that is a SHA-1 fingerprint: use `cleanroom "
                                        "fingerprint CERT` or openssl x509 -noout -fingerprint "
                                        "-sha256)"
                                      : "");
  hex[ndigits] = '\0';
  return cr_hex_decode(fp, CR_SHA256_BYTES, hex) == 0
             ? 0
             : cr_error_set(err, CR_EINVAL, "not a certificate fingerprint");
}

int cr_fingerprint_arg(const char *arg, uint8_t fp[CR_SHA256_BYTES], cr_error *err) {
  cr_error perr;
  cr_error_clear(&perr);
  int rc = cr_fingerprint_parse(arg, fp, &perr);
  if (rc == 0)
    return 0;
  if (rc < 0 && access(arg, F_OK) != 0) {
    if (err != NULL)
      *err = perr;
    return rc;
  }
  return cr_cert_fingerprint_file(arg, fp, err);
}

int cr_cert_file_public_key(const char *path, uint8_t pk[CR_SIGN_PK_BYTES], cr_error *err) {
  X509 *x = NULL;
  int rc = load_cert(&x, path, err);
  if (rc != 0)
    return rc;
  EVP_PKEY *k = X509_get0_pubkey(x);
  size_t len = CR_SIGN_PK_BYTES;
  if (k == NULL || EVP_PKEY_id(k) != EVP_PKEY_ED25519 ||
      EVP_PKEY_get_raw_public_key(k, pk, &len) != 1 || len != CR_SIGN_PK_BYTES)
    rc = cr_error_set(err, CR_ECONFIG, "%s: not an Ed25519 certificate", path);
  X509_free(x);
  return rc;
}
