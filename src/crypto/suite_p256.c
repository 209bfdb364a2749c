/*
 * Suite "p256" (design §4): NIST P-256 through OpenSSL 3's EC and BN APIs,
 * for partners that need FIPS-approved curves.
 *
 * HashToGroup is RFC 9380 §3 hash_to_curve for P256_XMD:SHA-256_SSWU_RO_
 * with the suite's own DST (CR_P256_DST): hash_to_field with
 * expand_message_xmd(SHA-256), L = 48, two field elements; each mapped by
 * the simplified SWU map (Z = -10) in the straight-line form of Appendix F.2
 * with the q = 3 mod 4 sqrt_ratio (F.2.1.2); the two points added. P-256 has
 * cofactor 1, so clear_cofactor is the identity.
 *
 * Group operations (point addition, scalar multiplication, point decoding)
 * are OpenSSL's: EC_POINT_mul on an arbitrary point runs a constant-time
 * multiplication on prime curves in OpenSSL 3. The only arithmetic written
 * here is the field arithmetic the SWU map needs, on BN with a Montgomery
 * constant-time exponentiation for the square root and the inversion, and
 * conditional moves done on fixed-width bytes rather than by branching
 * ("constant-time-ish": BN itself trims leading zero words).
 *
 * Thread safety: the curve, its constants and the Montgomery context are
 * built once (pthread_once) and only read afterwards; each call has its own
 * BN_CTX and points. Every entry point restores OpenSSL's per-thread error
 * queue to what it was on entry, so a refused peer point leaves nothing
 * behind for the TLS code sharing the thread to misread.
 *
 * Never logs; wipes every BIGNUM that held a scalar or a value derived from
 * a match key (BN_clear_free, and BN_CTX_free clears its pool).
 */
#include "cleanroom/crypto.h"
#include "crypto/crypto_internal.h"

#include <pthread.h>
#include <string.h>

#include <openssl/bn.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/obj_mac.h>
#include <sodium.h>

#define P256_FE_BYTES CR_P256_FIELD_BYTES
#define P256_L 48 /* RFC 9380 §8.2: L = ceil((ceil(log2(p)) + k) / 8), k = 128 */
#define P256_SCALAR_TRIES 64

_Static_assert(CR_P256_POINT_BYTES <= CR_MAX_POINT_BYTES &&
                   CR_P256_SCALAR_BYTES <= CR_MAX_SCALAR_BYTES,
               "suite sizes must fit the generic buffers");

/* The curve and the SWU constants: written once under pthread_once. */
static struct {
  int ok;
  EC_GROUP *group;
  BN_MONT_CTX *mont; /* Montgomery context of p for the exponentiations */
  BIGNUM *p, *n, *a, *b, *z;
  BIGNUM *zero, *one;
  BIGNUM *sqrt_c1; /* (p - 3) / 4 */
  BIGNUM *sqrt_c2; /* sqrt(-Z) */
  BIGNUM *inv_e;   /* p - 2: x^(p-2) = 1/x */
  uint8_t p_be[P256_FE_BYTES];
  uint8_t n_be[CR_P256_SCALAR_BYTES];
} g;
static pthread_once_t g_once = PTHREAD_ONCE_INIT;

static void consts_free(void) {
  EC_GROUP_free(g.group);
  BN_MONT_CTX_free(g.mont);
  BN_free(g.p);
  BN_free(g.n);
  BN_free(g.a);
  BN_free(g.b);
  BN_free(g.z);
  BN_free(g.zero);
  BN_free(g.one);
  BN_free(g.sqrt_c1);
  BN_free(g.sqrt_c2);
  BN_free(g.inv_e);
  memset(&g, 0, sizeof g);
}

static void consts_init(void) {
  BN_CTX *ctx = BN_CTX_new();
  BIGNUM *ten = BN_new(), *chk = BN_new();
  int ok = ctx != NULL && ten != NULL && chk != NULL;

  if (ok) {
    g.group = EC_GROUP_new_by_curve_name(NID_X9_62_prime256v1);
    g.mont = BN_MONT_CTX_new();
    g.p = BN_new();
    g.a = BN_new();
    g.b = BN_new();
    g.z = BN_new();
    g.zero = BN_new();
    g.one = BN_new();
    g.sqrt_c1 = BN_new();
    g.sqrt_c2 = BN_new();
    g.inv_e = BN_new();
    ok = g.group != NULL && g.mont != NULL && g.p != NULL && g.a != NULL && g.b != NULL &&
         g.z != NULL && g.zero != NULL && g.one != NULL && g.sqrt_c1 != NULL && g.sqrt_c2 != NULL &&
         g.inv_e != NULL;
  }
  ok = ok && EC_GROUP_get_curve(g.group, g.p, g.a, g.b, ctx) == 1;
  ok = ok && (g.n = BN_dup(EC_GROUP_get0_order(g.group))) != NULL;
  ok = ok && BN_MONT_CTX_set(g.mont, g.p, ctx) == 1;
  /* RFC 9380 §8.2: Z = -10 for P256_XMD:SHA-256_SSWU_RO_. */
  ok = ok && BN_set_word(ten, 10) == 1 && BN_sub(g.z, g.p, ten) == 1;
  ok = ok && BN_set_word(g.zero, 0) == 1 && BN_set_word(g.one, 1) == 1;
  /* F.2.1.2 constants: c1 = (q - 3) / 4, c2 = sqrt(-Z) = sqrt(10). Either
   * root of 10 serves: the sign of y is fixed from sgn0(u) afterwards. */
  ok = ok && BN_copy(g.sqrt_c1, g.p) != NULL && BN_sub_word(g.sqrt_c1, 3) == 1 &&
       BN_rshift(g.sqrt_c1, g.sqrt_c1, 2) == 1;
  ok = ok && BN_mod_sqrt(g.sqrt_c2, ten, g.p, ctx) != NULL;
  ok = ok && BN_mod_sqr(chk, g.sqrt_c2, g.p, ctx) == 1 && BN_cmp(chk, ten) == 0;
  ok = ok && BN_copy(g.inv_e, g.p) != NULL && BN_sub_word(g.inv_e, 2) == 1;
  ok = ok && BN_bn2binpad(g.p, g.p_be, sizeof g.p_be) == (int)sizeof g.p_be;
  ok = ok && BN_bn2binpad(g.n, g.n_be, sizeof g.n_be) == (int)sizeof g.n_be;
  /* The suite's wire sizes rest on a 256-bit field and order. */
  ok = ok && BN_num_bits(g.p) == 256 && BN_num_bits(g.n) == 256;

  if (!ok)
    consts_free();
  g.ok = ok;
  BN_free(ten);
  BN_free(chk);
  BN_CTX_free(ctx);
}

static int consts_ready(void) {
  if (pthread_once(&g_once, consts_init) != 0)
    return 0;
  return g.ok;
}

/* ---- field helpers: every value is kept reduced in [0, p) -------------- */

/* r = c ? b : a (RFC 9380 CMOV(a, b, c)), by masking fixed-width bytes. */
static int fe_cmov(BIGNUM *r, const BIGNUM *a, const BIGNUM *b, unsigned int c) {
  uint8_t ba[P256_FE_BYTES] = {0}, bb[P256_FE_BYTES] = {0}; /* read below even when ok is 0 */
  const uint8_t mask = (uint8_t)(0u - (c & 1u));
  int ok = BN_bn2binpad(a, ba, sizeof ba) == (int)sizeof ba &&
           BN_bn2binpad(b, bb, sizeof bb) == (int)sizeof bb;
  for (size_t i = 0; i < sizeof ba; i++)
    ba[i] ^= (uint8_t)(mask & (ba[i] ^ bb[i]));
  ok = ok && BN_bin2bn(ba, sizeof ba, r) != NULL;
  sodium_memzero(ba, sizeof ba);
  sodium_memzero(bb, sizeof bb);
  return ok;
}

/* *eq = (a == b), compared as fixed-width bytes in constant time. */
static int fe_eq(unsigned int *eq, const BIGNUM *a, const BIGNUM *b) {
  uint8_t ba[P256_FE_BYTES] = {0}, bb[P256_FE_BYTES] = {0}; /* read below even when ok is 0 */
  int ok = BN_bn2binpad(a, ba, sizeof ba) == (int)sizeof ba &&
           BN_bn2binpad(b, bb, sizeof bb) == (int)sizeof bb;
  *eq = (unsigned int)(sodium_memcmp(ba, bb, sizeof ba) == 0);
  sodium_memzero(ba, sizeof ba);
  sodium_memzero(bb, sizeof bb);
  return ok;
}

/* sgn0 for m = 1 (RFC 9380 §4.1): the parity of the reduced value. */
static unsigned int fe_sgn0(const BIGNUM *a) { return (unsigned int)BN_is_odd(a); }

static int fe_mul(BIGNUM *r, const BIGNUM *a, const BIGNUM *b, BN_CTX *ctx) {
  return BN_mod_mul(r, a, b, g.p, ctx);
}
static int fe_sqr(BIGNUM *r, const BIGNUM *a, BN_CTX *ctx) { return BN_mod_sqr(r, a, g.p, ctx); }
static int fe_add(BIGNUM *r, const BIGNUM *a, const BIGNUM *b) {
  return BN_mod_add_quick(r, a, b, g.p);
}
static int fe_neg(BIGNUM *r, const BIGNUM *a) { return BN_mod_sub_quick(r, g.zero, a, g.p); }
static int fe_pow(BIGNUM *r, const BIGNUM *a, const BIGNUM *e, BN_CTX *ctx) {
  return BN_mod_exp_mont_consttime(r, a, e, g.p, ctx, g.mont);
}

/* RFC 9380 F.2.1.2 sqrt_ratio_3mod4(u, v), v != 0:
 * (1, sqrt(u / v)) if u / v is square, else (0, sqrt(Z * u / v)). */
static int sqrt_ratio_3mod4(unsigned int *is_qr, BIGNUM *y, const BIGNUM *u, const BIGNUM *v,
                            BN_CTX *ctx) {
  int ok;
  BN_CTX_start(ctx);
  BIGNUM *tv1 = BN_CTX_get(ctx), *tv2 = BN_CTX_get(ctx), *tv3 = BN_CTX_get(ctx);
  BIGNUM *y1 = BN_CTX_get(ctx), *y2 = BN_CTX_get(ctx);
  ok = y2 != NULL;
  if (ok) {
    BN_set_flags(tv1, BN_FLG_CONSTTIME);
    ok &= fe_sqr(tv1, v, ctx);             /* 1. tv1 = v^2 */
    ok &= fe_mul(tv2, u, v, ctx);          /* 2. tv2 = u * v */
    ok &= fe_mul(tv1, tv1, tv2, ctx);      /* 3. tv1 = tv1 * tv2 */
    ok &= fe_pow(y1, tv1, g.sqrt_c1, ctx); /* 4. y1 = tv1^c1 */
    ok &= fe_mul(y1, y1, tv2, ctx);        /* 5. y1 = y1 * tv2 */
    ok &= fe_mul(y2, y1, g.sqrt_c2, ctx);  /* 6. y2 = y1 * c2 */
    ok &= fe_sqr(tv3, y1, ctx);            /* 7. tv3 = y1^2 */
    ok &= fe_mul(tv3, tv3, v, ctx);        /* 8. tv3 = tv3 * v */
    ok &= fe_eq(is_qr, tv3, u);            /* 9. isQR = tv3 == u */
    ok &= fe_cmov(y, y2, y1, *is_qr);      /* 10. y = CMOV(y2, y1, isQR) */
  }
  BN_CTX_end(ctx);
  return ok;
}

/* RFC 9380 F.2 map_to_curve_simple_swu(u) for P-256 (A = -3, Z = -10):
 * the affine (x, y) on the curve. u must be reduced. */
static int map_to_curve_sswu(BIGNUM *x, BIGNUM *y, const BIGNUM *u, BN_CTX *ctx) {
  unsigned int is_gx1_square = 0, tv2_zero = 0, e1;
  int ok;
  BN_CTX_start(ctx);
  BIGNUM *tv1 = BN_CTX_get(ctx), *tv2 = BN_CTX_get(ctx), *tv3 = BN_CTX_get(ctx);
  BIGNUM *tv4 = BN_CTX_get(ctx), *tv5 = BN_CTX_get(ctx), *tv6 = BN_CTX_get(ctx);
  BIGNUM *y1 = BN_CTX_get(ctx), *ny = BN_CTX_get(ctx);
  ok = ny != NULL;
  if (ok) {
    ok &= fe_sqr(tv1, u, ctx);        /* 1.  tv1 = u^2 */
    ok &= fe_mul(tv1, g.z, tv1, ctx); /* 2.  tv1 = Z * tv1 */
    ok &= fe_sqr(tv2, tv1, ctx);      /* 3.  tv2 = tv1^2 */
    ok &= fe_add(tv2, tv2, tv1);      /* 4.  tv2 = tv2 + tv1 */
    ok &= fe_add(tv3, tv2, g.one);    /* 5.  tv3 = tv2 + 1 */
    ok &= fe_mul(tv3, g.b, tv3, ctx); /* 6.  tv3 = B * tv3 */
    ok &= fe_eq(&tv2_zero, tv2, g.zero);
    ok &= fe_neg(tv5, tv2);
    ok &= fe_cmov(tv4, g.z, tv5, tv2_zero ^ 1u); /* 7.  tv4 = CMOV(Z, -tv2, tv2 != 0) */
    ok &= fe_mul(tv4, g.a, tv4, ctx);            /* 8.  tv4 = A * tv4 */
    ok &= fe_sqr(tv2, tv3, ctx);                 /* 9.  tv2 = tv3^2 */
    ok &= fe_sqr(tv6, tv4, ctx);                 /* 10. tv6 = tv4^2 */
    ok &= fe_mul(tv5, g.a, tv6, ctx);            /* 11. tv5 = A * tv6 */
    ok &= fe_add(tv2, tv2, tv5);                 /* 12. tv2 = tv2 + tv5 */
    ok &= fe_mul(tv2, tv2, tv3, ctx);            /* 13. tv2 = tv2 * tv3 */
    ok &= fe_mul(tv6, tv6, tv4, ctx);            /* 14. tv6 = tv6 * tv4 */
    ok &= fe_mul(tv5, g.b, tv6, ctx);            /* 15. tv5 = B * tv6 */
    ok &= fe_add(tv2, tv2, tv5);                 /* 16. tv2 = tv2 + tv5 */
    ok &= fe_mul(x, tv1, tv3, ctx);              /* 17. x = tv1 * tv3 */
    ok &= sqrt_ratio_3mod4(&is_gx1_square, y1, tv2, tv6, ctx); /* 18. */
    ok &= fe_mul(y, tv1, u, ctx);                              /* 19. y = tv1 * u */
    ok &= fe_mul(y, y, y1, ctx);                               /* 20. y = y * y1 */
    ok &= fe_cmov(x, x, tv3, is_gx1_square); /* 21. x = CMOV(x, tv3, is_gx1_square) */
    ok &= fe_cmov(y, y, y1, is_gx1_square);  /* 22. y = CMOV(y, y1, is_gx1_square) */
    e1 = (fe_sgn0(u) ^ fe_sgn0(y)) ^ 1u;     /* 23. e1 = sgn0(u) == sgn0(y) */
    ok &= fe_neg(ny, y);
    ok &= fe_cmov(y, ny, y, e1); /* 24. y = CMOV(-y, y, e1) */
    BN_set_flags(tv4, BN_FLG_CONSTTIME);
    ok &= fe_pow(tv5, tv4, g.inv_e, ctx); /* tv4 != 0: A != 0 and Z != 0 */
    ok &= fe_mul(x, x, tv5, ctx);         /* 25. x = x / tv4 */
  }
  BN_CTX_end(ctx);
  return ok;
}

/* (x, y) -> point, checked on the curve. */
static int point_from_affine(EC_POINT *pt, const BIGNUM *x, const BIGNUM *y, BN_CTX *ctx) {
  return EC_POINT_set_affine_coordinates(g.group, pt, x, y, ctx) == 1 &&
         EC_POINT_is_on_curve(g.group, pt, ctx) == 1;
}

static int point_encode(uint8_t *out, size_t len, const EC_POINT *pt, point_conversion_form_t form,
                        BN_CTX *ctx) {
  return EC_POINT_point2oct(g.group, pt, form, out, len, ctx) == len;
}

/*
 * RFC 9380 §3 hash_to_curve into r. Optional intermediates for the
 * known-answer tests. Returns 0, CR_EINVAL (bad DST or message), CR_ENOMEM
 * or CR_ECRYPTO.
 */
static int hash_to_curve(EC_POINT *r, uint8_t *u0_out, uint8_t *u1_out, uint8_t *q0_out,
                         uint8_t *q1_out, const uint8_t *msg, size_t msg_len, const uint8_t *dst,
                         size_t dst_len, BN_CTX *ctx) {
  uint8_t uniform[2 * P256_L];
  EC_POINT *q0 = NULL, *q1 = NULL;
  BIGNUM *u[2] = {NULL, NULL}, *t, *x, *y;
  int rc, ok;

  BN_CTX_start(ctx);
  t = BN_CTX_get(ctx);
  x = BN_CTX_get(ctx);
  y = BN_CTX_get(ctx);
  u[0] = BN_CTX_get(ctx);
  u[1] = BN_CTX_get(ctx);

  /* hash_to_field(msg, 2): 2 * L bytes, each L-byte chunk reduced mod p. */
  rc = cr_expand_message_xmd_sha256(uniform, sizeof uniform, msg, msg_len, dst, dst_len);
  if (rc != 0)
    goto cleanup;
  q0 = EC_POINT_new(g.group);
  q1 = EC_POINT_new(g.group);
  if (u[1] == NULL || q0 == NULL || q1 == NULL) {
    rc = CR_ENOMEM;
    goto cleanup;
  }
  ok = 1;
  for (int i = 0; i < 2; i++) {
    ok &= BN_bin2bn(uniform + (size_t)i * P256_L, P256_L, t) != NULL;
    ok &= BN_nnmod(u[i], t, g.p, ctx);
  }
  ok &= map_to_curve_sswu(x, y, u[0], ctx) && point_from_affine(q0, x, y, ctx);
  ok &= map_to_curve_sswu(x, y, u[1], ctx) && point_from_affine(q1, x, y, ctx);
  /* R = Q0 + Q1; clear_cofactor(R) = R for h = 1. */
  ok &= EC_POINT_add(g.group, r, q0, q1, ctx);
  ok = ok && !EC_POINT_is_at_infinity(g.group, r);
  if (ok && u0_out != NULL)
    ok = BN_bn2binpad(u[0], u0_out, P256_FE_BYTES) == P256_FE_BYTES;
  if (ok && u1_out != NULL)
    ok = BN_bn2binpad(u[1], u1_out, P256_FE_BYTES) == P256_FE_BYTES;
  if (ok && q0_out != NULL)
    ok = point_encode(q0_out, CR_P256_UNCOMPRESSED_BYTES, q0, POINT_CONVERSION_UNCOMPRESSED, ctx);
  if (ok && q1_out != NULL)
    ok = point_encode(q1_out, CR_P256_UNCOMPRESSED_BYTES, q1, POINT_CONVERSION_UNCOMPRESSED, ctx);
  rc = ok ? 0 : CR_ECRYPTO;

cleanup:
  BN_CTX_end(ctx);
  EC_POINT_clear_free(q0);
  EC_POINT_clear_free(q1);
  sodium_memzero(uniform, sizeof uniform);
  return rc;
}

int cr__p256_hash_to_curve_trace(uint8_t p[CR_P256_UNCOMPRESSED_BYTES],
                                 uint8_t u0[CR_P256_FIELD_BYTES], uint8_t u1[CR_P256_FIELD_BYTES],
                                 uint8_t q0[CR_P256_UNCOMPRESSED_BYTES],
                                 uint8_t q1[CR_P256_UNCOMPRESSED_BYTES], const uint8_t *msg,
                                 size_t msg_len, const uint8_t *dst, size_t dst_len) {
  BN_CTX *ctx = NULL;
  EC_POINT *r = NULL;
  int rc = CR_EINVAL;

  ERR_set_mark();
  if (p == NULL)
    goto cleanup;
  if (!consts_ready()) {
    rc = CR_ECRYPTO;
    goto cleanup;
  }
  ctx = BN_CTX_new();
  r = EC_POINT_new(g.group);
  if (ctx == NULL || r == NULL) {
    rc = CR_ENOMEM;
    goto cleanup;
  }
  rc = hash_to_curve(r, u0, u1, q0, q1, msg, msg_len, dst, dst_len, ctx);
  if (rc == 0 &&
      !point_encode(p, CR_P256_UNCOMPRESSED_BYTES, r, POINT_CONVERSION_UNCOMPRESSED, ctx))
    rc = CR_ECRYPTO;

cleanup:
  if (rc != 0) {
    if (p != NULL)
      sodium_memzero(p, CR_P256_UNCOMPRESSED_BYTES);
    if (u0 != NULL)
      sodium_memzero(u0, CR_P256_FIELD_BYTES);
    if (u1 != NULL)
      sodium_memzero(u1, CR_P256_FIELD_BYTES);
    if (q0 != NULL)
      sodium_memzero(q0, CR_P256_UNCOMPRESSED_BYTES);
    if (q1 != NULL)
      sodium_memzero(q1, CR_P256_UNCOMPRESSED_BYTES);
  }
  EC_POINT_clear_free(r);
  BN_CTX_free(ctx);
  ERR_pop_to_mark();
  return rc;
}

int cr_p256_hash_to_curve(uint8_t out[CR_P256_UNCOMPRESSED_BYTES], const uint8_t *msg,
                          size_t msg_len, const uint8_t *dst, size_t dst_len) {
  return cr__p256_hash_to_curve_trace(out, NULL, NULL, NULL, NULL, msg, msg_len, dst, dst_len);
}

/* ---- scalars ------------------------------------------------------------ */

/* 1 when the big-endian a < b, in constant time. */
static unsigned int be_lt(const uint8_t *a, const uint8_t *b, size_t len) {
  unsigned int lt = 0, decided = 0;
  for (size_t i = 0; i < len; i++) {
    unsigned int x = a[i], y = b[i];
    unsigned int is_lt = (x - y) >> 31 & 1u; /* x < y: the subtraction wraps */
    unsigned int is_ne = ((x ^ y) + 0xffu) >> 8 & 1u;
    lt |= is_lt & ~decided;
    decided |= is_ne;
  }
  return lt & 1u;
}

/* k as a BIGNUM, refused unless 1 <= k < n (a scalar_random output). */
static int scalar_load(BIGNUM **out, const uint8_t *k) {
  BIGNUM *kb = NULL;
  if (sodium_is_zero(k, CR_P256_SCALAR_BYTES) || !be_lt(k, g.n_be, CR_P256_SCALAR_BYTES))
    return CR_EINVAL;
  kb = BN_secure_new();
  if (kb == NULL)
    return CR_ENOMEM;
  BN_set_flags(kb, BN_FLG_CONSTTIME);
  if (BN_bin2bn(k, CR_P256_SCALAR_BYTES, kb) == NULL) {
    BN_clear_free(kb);
    return CR_ENOMEM;
  }
  *out = kb;
  return 0;
}

static int p256_scalar_random(uint8_t *k) {
  BIGNUM *r = NULL;
  int rc = CR_EINVAL;

  ERR_set_mark();
  if (k == NULL)
    goto cleanup;
  rc = CR_ECRYPTO;
  if (!consts_ready())
    goto cleanup;
  if ((r = BN_secure_new()) == NULL) {
    rc = CR_ENOMEM;
    goto cleanup;
  }
  /* Uniform in [0, n); zero is redrawn, so uniform in [1, n - 1]. Reaching
   * the bound means the RNG is broken. */
  for (int i = 0; i < P256_SCALAR_TRIES; i++) {
    if (BN_priv_rand_range_ex(r, g.n, 0, NULL) != 1)
      break;
    if (!BN_is_zero(r)) {
      if (BN_bn2binpad(r, k, CR_P256_SCALAR_BYTES) == CR_P256_SCALAR_BYTES)
        rc = 0;
      break;
    }
  }

cleanup:
  if (rc != 0 && k != NULL)
    sodium_memzero(k, CR_P256_SCALAR_BYTES);
  BN_clear_free(r);
  ERR_pop_to_mark();
  return rc;
}

static int p256_scalar_from_uniform(uint8_t *k, const uint8_t uniform[CR_SCALAR_UNIFORM_BYTES]) {
  BIGNUM *w = NULL, *r = NULL;
  BN_CTX *ctx = NULL;
  int rc = CR_EINVAL;

  ERR_set_mark();
  if (k == NULL || uniform == NULL)
    goto cleanup;
  rc = CR_ECRYPTO;
  if (!consts_ready())
    goto cleanup;
  rc = CR_ENOMEM;
  if ((w = BN_secure_new()) == NULL || (r = BN_secure_new()) == NULL ||
      (ctx = BN_CTX_secure_new()) == NULL)
    goto cleanup;
  rc = CR_ECRYPTO;
  /* 512 bits mod n: the bias is below 2^-256. */
  if (BN_bin2bn(uniform, CR_SCALAR_UNIFORM_BYTES, w) == NULL || BN_nnmod(r, w, g.n, ctx) != 1)
    goto cleanup;
  if (BN_is_zero(r))
    goto cleanup;
  if (BN_bn2binpad(r, k, CR_P256_SCALAR_BYTES) == CR_P256_SCALAR_BYTES)
    rc = 0;

cleanup:
  if (rc != 0 && k != NULL)
    sodium_memzero(k, CR_P256_SCALAR_BYTES);
  BN_clear_free(w);
  BN_clear_free(r);
  BN_CTX_free(ctx);
  ERR_pop_to_mark();
  return rc;
}

/* out = k * pt, compressed; the identity is CR_ECRYPTO. */
static int mul_encode(uint8_t *out, const BIGNUM *k, const EC_POINT *pt, BN_CTX *ctx) {
  EC_POINT *r = EC_POINT_new(g.group);
  int rc = CR_ENOMEM;

  if (r == NULL)
    goto cleanup;
  rc = CR_ECRYPTO;
  /* OpenSSL 3: a single arbitrary point with a secret scalar takes the
   * constant-time path (ladder, or nistz256's windowed multiplication). */
  if (EC_POINT_mul(g.group, r, NULL, pt, k, ctx) != 1 || EC_POINT_is_at_infinity(g.group, r))
    goto cleanup;
  if (!point_encode(out, CR_P256_POINT_BYTES, r, POINT_CONVERSION_COMPRESSED, ctx))
    goto cleanup;
  rc = 0;

cleanup:
  EC_POINT_clear_free(r);
  return rc;
}

static int p256_hash_blind(uint8_t *out, const uint8_t *k, const uint8_t *msg, size_t msg_len) {
  BN_CTX *ctx = NULL;
  EC_POINT *x = NULL;
  BIGNUM *kb = NULL;
  int rc = CR_EINVAL;

  ERR_set_mark();
  if (out == NULL || k == NULL)
    goto cleanup;
  if (!consts_ready()) {
    rc = CR_ECRYPTO;
    goto cleanup;
  }
  if ((rc = scalar_load(&kb, k)) != 0)
    goto cleanup;
  ctx = BN_CTX_secure_new();
  x = EC_POINT_new(g.group);
  if (ctx == NULL || x == NULL) {
    rc = CR_ENOMEM;
    goto cleanup;
  }
  /* H(v) alone is a dictionary-attackable image of the match key: it never
   * leaves this function unblinded. */
  rc = hash_to_curve(x, NULL, NULL, NULL, NULL, msg, msg_len, (const uint8_t *)CR_P256_DST,
                     sizeof CR_P256_DST - 1, ctx);
  if (rc != 0)
    goto cleanup;
  rc = mul_encode(out, kb, x, ctx);

cleanup:
  if (rc != 0 && out != NULL)
    sodium_memzero(out, CR_P256_POINT_BYTES);
  EC_POINT_clear_free(x);
  BN_clear_free(kb);
  BN_CTX_free(ctx);
  ERR_pop_to_mark();
  return rc;
}

/* The only encodings accepted from a peer: 0x02/0x03 || x with x < p. The
 * length is fixed by the suite (33), so neither the 1-byte infinity
 * encoding nor the 65-byte uncompressed form can be expressed. */
static int peer_prefix_ok(const uint8_t *pt) {
  return (pt[0] == 0x02 || pt[0] == 0x03) && be_lt(pt + 1, g.p_be, P256_FE_BYTES);
}

static int p256_reblind(uint8_t *out, const uint8_t *k, const uint8_t *peer_point) {
  BN_CTX *ctx = NULL;
  EC_POINT *pt = NULL;
  BIGNUM *kb = NULL;
  int rc = CR_EINVAL;

  ERR_set_mark();
  if (out == NULL || k == NULL || peer_point == NULL)
    goto cleanup;
  if (!consts_ready()) {
    rc = CR_ECRYPTO;
    goto cleanup;
  }
  if ((rc = scalar_load(&kb, k)) != 0)
    goto cleanup;
  ctx = BN_CTX_secure_new();
  pt = EC_POINT_new(g.group);
  if (ctx == NULL || pt == NULL) {
    rc = CR_ENOMEM;
    goto cleanup;
  }
  /* oct2point recovers y from x, which fails when x^3 - 3x + b has no
   * square root (x is on no point); the curve check is kept as a second,
   * independent guard. */
  if (!peer_prefix_ok(peer_point) ||
      EC_POINT_oct2point(g.group, pt, peer_point, CR_P256_POINT_BYTES, ctx) != 1 ||
      EC_POINT_is_at_infinity(g.group, pt) || EC_POINT_is_on_curve(g.group, pt, ctx) != 1) {
    rc = CR_EPROTO;
    goto cleanup;
  }
  rc = mul_encode(out, kb, pt, ctx);

cleanup:
  if (rc != 0 && out != NULL)
    sodium_memzero(out, CR_P256_POINT_BYTES);
  EC_POINT_clear_free(pt);
  BN_clear_free(kb);
  BN_CTX_free(ctx);
  ERR_pop_to_mark();
  return rc;
}

const cr_suite cr_suite_p256 = {
    .name = "p256",
    .point_bytes = CR_P256_POINT_BYTES,
    .scalar_bytes = CR_P256_SCALAR_BYTES,
    .scalar_random = p256_scalar_random,
    .scalar_from_uniform = p256_scalar_from_uniform,
    .hash_blind = p256_hash_blind,
    .reblind = p256_reblind,
};
