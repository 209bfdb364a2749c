/*
 * ristretto255 on eight independent lanes: the one place where cleanroom
 * writes field and group arithmetic itself (issue 20). Design and proofs:
 * docs/crypto-backends.md.
 *
 * This file is the algorithm only. It is compiled twice, each time after a
 * lanes header that provides the type v8 (eight 64-bit lanes) and a handful
 * of operations on it:
 *   r255x8_ifma.c  r255x8_lanes_ifma.h  AVX-512 F + IFMA intrinsics
 *   r255x8_emul.c  r255x8_lanes_emul.h  the same semantics in portable C
 * so the tests that run the emulated lanes prove the source the IFMA lanes
 * run. The includer defines R255X8_FN(name) (a backend-specific prefix for
 * the exported functions) and R255X8_BACKEND (the cr_r255x8_backend table).
 *
 * Field: GF(2^255 - 19) in radix 2^52, five limbs per lane. A reduced
 * element ("weak" form, what every operation returns) has limbs 0..3 below
 * 2^52 and limb 4 below 2^48, so every limb is a valid 52-bit multiplier
 * operand of madd52lo/hi (which read only the low 52 bits). Values are
 * canonical only after fe_freeze.
 *
 * Constant time: no branch and no memory index depends on a lane's value or
 * on the scalar; the scalar's digits select table entries through masks;
 * inversion-free (ristretto's encode and decode need only inverse square
 * roots), and those are one fixed exponentiation chain. Validity is a lane
 * mask, turned into bits only at the very end for the caller (it is public:
 * whether the peer's point decoded).
 *
 * Never: logs, prints, or keeps anything after returning (every buffer that
 * held a scalar digit, a point or a field element is wiped).
 */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <sodium.h>

#include "crypto/r255x8.h"

#if !defined(R255X8_FN) || !defined(R255X8_BACKEND) || !defined(R255X8_LANES_NAME)
#error "include a lanes header and define R255X8_FN and R255X8_BACKEND first"
#endif

/* ---- field elements ----------------------------------------------------- */

typedef struct fe8 {
  v8 v[5];
} fe8;

#define R255X8_M52 ((UINT64_C(1) << 52) - 1)
#define R255X8_M47 ((UINT64_C(1) << 47) - 1)

/* RFC 9496 §4.1 constants, canonical, radix 2^52 (checked against their
 * defining equations by tests/unit/test_crypto_r255x8.c through the KATs,
 * and by hand: d = -121665/121666, SQRT_M1^2 = -1, ...). */
static const uint64_t R255X8_D[5] = {0xb4dca135978a3ULL, 0x4d4141d8ab75eULL, 0x779e89800700aULL,
                                     0xfe738cc740797ULL, 0x052036cee2b6fULL};
static const uint64_t R255X8_D2[5] = {0x69b9426b2f159ULL, 0x9a8283b156ebdULL, 0xef3d13000e014ULL,
                                      0xfce7198e80f2eULL, 0x02406d9dc56dfULL};
static const uint64_t R255X8_SQRT_M1[5] = {0xe1b274a0ea0b0ULL, 0x06ad2fe478c4eULL,
                                           0xdfbd7a72f4318ULL, 0xdf0b2b4d00993ULL,
                                           0x02b8324804fc1ULL};
static const uint64_t R255X8_SQRT_AD_MINUS_ONE[5] = {0x7f6a0497b2e1bULL, 0x0c1b7854bd7e9ULL,
                                                     0x1f5d1fdaf9d8eULL, 0x48ac0f3cfcc93ULL,
                                                     0x0376931bf2b83ULL};
static const uint64_t R255X8_INVSQRT_A_MINUS_D[5] = {0x8fdaa805d40eaULL, 0x175a4172be99cULL,
                                                     0xe01d8409d2f16ULL, 0xfca216c27b91fULL,
                                                     0x0786c8905cfafULL};
static const uint64_t R255X8_ONE_MINUS_D_SQ[5] = {0xc09c1945fc176ULL, 0x38cd5e350fe27ULL,
                                                  0xe70dfe42c81a1ULL, 0xe0d79994abddbULL,
                                                  0x0029072a8b2b3ULL};
static const uint64_t R255X8_D_MINUS_ONE_SQ[5] = {0xd5aaa44ed4d20ULL, 0x2cb01e199931aULL,
                                                  0x29b4eebd29e4aULL, 0x22414cdcd32f5ULL,
                                                  0x05968b37af66cULL};
/* 4p, limb by limb, each limb above the largest a weak element can hold, so
 * a + 4p - b never goes negative in a limb. */
static const uint64_t R255X8_P4[5] = {(UINT64_C(1) << 54) - 76, (UINT64_C(1) << 54) - 4,
                                      (UINT64_C(1) << 54) - 4, (UINT64_C(1) << 54) - 4,
                                      (UINT64_C(1) << 49) - 4};

static void fe_const(fe8 *r, const uint64_t c[5]) {
  for (int i = 0; i < 5; i++)
    r->v[i] = v8_set1(c[i]);
}

static void fe_small(fe8 *r, uint64_t c) {
  r->v[0] = v8_set1(c);
  for (int i = 1; i < 5; i++)
    r->v[i] = v8_zero();
}

/* Limbs below 2^63 each -> weak form. The carry out of bit 255 comes back as
 * 19 (2^255 = 19 mod p) before the chain, so limb 4 ends below 2^47 + 2^12. */
static void fe_carry(fe8 *r, v8 z0, v8 z1, v8 z2, v8 z3, v8 z4) {
  const v8 m52 = v8_set1(R255X8_M52);
  v8 c = V8_SRLI(z4, 47);
  z4 = v8_and(z4, v8_set1(R255X8_M47));
  z0 = v8_madd52lo(z0, c, v8_set1(19));
  z1 = v8_add(z1, V8_SRLI(z0, 52));
  z0 = v8_and(z0, m52);
  z2 = v8_add(z2, V8_SRLI(z1, 52));
  z1 = v8_and(z1, m52);
  z3 = v8_add(z3, V8_SRLI(z2, 52));
  z2 = v8_and(z2, m52);
  z4 = v8_add(z4, V8_SRLI(z3, 52));
  z3 = v8_and(z3, m52);
  r->v[0] = z0;
  r->v[1] = z1;
  r->v[2] = z2;
  r->v[3] = z3;
  r->v[4] = z4;
}

static void fe_add(fe8 *r, const fe8 *a, const fe8 *b) {
  fe_carry(r, v8_add(a->v[0], b->v[0]), v8_add(a->v[1], b->v[1]), v8_add(a->v[2], b->v[2]),
           v8_add(a->v[3], b->v[3]), v8_add(a->v[4], b->v[4]));
}

static void fe_sub(fe8 *r, const fe8 *a, const fe8 *b) {
  v8 z[5];
  for (int i = 0; i < 5; i++)
    z[i] = v8_sub(v8_add(a->v[i], v8_set1(R255X8_P4[i])), b->v[i]);
  fe_carry(r, z[0], z[1], z[2], z[3], z[4]);
}

static void fe_neg(fe8 *r, const fe8 *a) {
  v8 z[5];
  for (int i = 0; i < 5; i++)
    z[i] = v8_sub(v8_set1(R255X8_P4[i]), a->v[i]);
  fe_carry(r, z[0], z[1], z[2], z[3], z[4]);
}

/* z[0..9]: a product in radix 2^52 (each column below 2^58) -> weak form.
 * 2^260 = 2^5 * 2^255 = 32 * 19 = 608 (mod p): column k >= 5 folds into
 * column k - 5 times 608. A column can exceed 52 bits, and madd52 reads only
 * 52, so its top bits (>> 52) fold separately one column up. Column 9 is a
 * single high half (below 2^52); its fold's own high half lands in column 5
 * again and folds a second time. (That high half is zero unless limb 4 of
 * both factors reaches 2^47, which fe_carry's outputs never do; it is kept
 * so that every input in the weak form, limb 4 below 2^48, is right.) */
static void fe_reduce(fe8 *r, v8 z[10]) {
  const v8 c608 = v8_set1(608);
  for (int k = 5; k < 9; k++) {
    v8_madd52(&z[k - 5], &z[k - 4], z[k], c608);
    z[k - 4] = v8_madd52lo(z[k - 4], V8_SRLI(z[k], 52), c608);
  }
  z[4] = v8_madd52lo(z[4], z[9], c608);
  z[0] = v8_madd52lo(z[0], v8_madd52hi(v8_zero(), z[9], c608), c608);
  fe_carry(r, z[0], z[1], z[2], z[3], z[4]);
}

static void fe_mul(fe8 *r, const fe8 *a, const fe8 *b) {
  v8 z[10];
  for (int i = 0; i < 10; i++)
    z[i] = v8_zero();
  for (int i = 0; i < 5; i++) {
    for (int j = 0; j < 5; j++) {
      v8_madd52(&z[i + j], &z[i + j + 1], a->v[i], b->v[j]);
    }
  }
  fe_reduce(r, z);
}

/* The cross products once, doubled in the accumulators (doubling an operand
 * would push it past 52 bits), then the squares. */
static void fe_sq(fe8 *r, const fe8 *a) {
  v8 z[10];
  for (int i = 0; i < 10; i++)
    z[i] = v8_zero();
  for (int i = 0; i < 5; i++) {
    for (int j = i + 1; j < 5; j++) {
      v8_madd52(&z[i + j], &z[i + j + 1], a->v[i], a->v[j]);
    }
  }
  for (int i = 0; i < 10; i++)
    z[i] = v8_add(z[i], z[i]);
  for (int i = 0; i < 5; i++) {
    v8_madd52(&z[2 * i], &z[2 * i + 1], a->v[i], a->v[i]);
  }
  fe_reduce(r, z);
}

static void fe_sqn(fe8 *r, const fe8 *a, int n) {
  fe_sq(r, a);
  for (int i = 1; i < n; i++)
    fe_sq(r, r);
}

/* Weak -> canonical (limbs 0..3 below 2^52, limb 4 below 2^47, value < p).
 * First bring the value below 2^255 + 2^208 < 2p, then subtract p once
 * exactly when value + 19 carries out of bit 255. */
static void fe_freeze(fe8 *r, const fe8 *a) {
  const v8 m52 = v8_set1(R255X8_M52), m47 = v8_set1(R255X8_M47), c19 = v8_set1(19);
  v8 z0 = a->v[0], z1 = a->v[1], z2 = a->v[2], z3 = a->v[3], z4 = a->v[4];
  v8 c = V8_SRLI(z4, 47);
  z4 = v8_and(z4, m47);
  z0 = v8_madd52lo(z0, c, c19);
  z1 = v8_add(z1, V8_SRLI(z0, 52));
  z0 = v8_and(z0, m52);
  z2 = v8_add(z2, V8_SRLI(z1, 52));
  z1 = v8_and(z1, m52);
  z3 = v8_add(z3, V8_SRLI(z2, 52));
  z2 = v8_and(z2, m52);
  z4 = v8_add(z4, V8_SRLI(z3, 52));
  z3 = v8_and(z3, m52);

  v8 t = V8_SRLI(v8_add(z0, c19), 52);
  t = V8_SRLI(v8_add(z1, t), 52);
  t = V8_SRLI(v8_add(z2, t), 52);
  t = V8_SRLI(v8_add(z3, t), 52);
  v8 q = V8_SRLI(v8_add(z4, t), 47);

  z0 = v8_madd52lo(z0, q, c19);
  z1 = v8_add(z1, V8_SRLI(z0, 52));
  z0 = v8_and(z0, m52);
  z2 = v8_add(z2, V8_SRLI(z1, 52));
  z1 = v8_and(z1, m52);
  z3 = v8_add(z3, V8_SRLI(z2, 52));
  z2 = v8_and(z2, m52);
  z4 = v8_add(z4, V8_SRLI(z3, 52));
  z3 = v8_and(z3, m52);
  z4 = v8_and(z4, m47);
  r->v[0] = z0;
  r->v[1] = z1;
  r->v[2] = z2;
  r->v[3] = z3;
  r->v[4] = z4;
}

/* Lane masks: all ones where the condition holds. */
static v8 fe_is_zero(const fe8 *a) {
  fe8 f;
  fe_freeze(&f, a);
  v8 o = v8_or(v8_or(v8_or(f.v[0], f.v[1]), v8_or(f.v[2], f.v[3])), f.v[4]);
  return v8_eq(o, v8_zero());
}

static v8 fe_eq(const fe8 *a, const fe8 *b) {
  fe8 d;
  fe_sub(&d, a, b);
  return fe_is_zero(&d);
}

/* RFC 9496 §4.1 IS_NEGATIVE: the canonical value is odd. */
static v8 fe_is_negative(const fe8 *a) {
  fe8 f;
  fe_freeze(&f, a);
  return v8_sub(v8_zero(), v8_and(f.v[0], v8_set1(1)));
}

static v8 v8_not(v8 m) { return v8_xor(m, v8_set1(~UINT64_C(0))); }

static void fe_select(fe8 *r, v8 mask, const fe8 *a, const fe8 *b) {
  for (int i = 0; i < 5; i++)
    r->v[i] = v8_select(mask, a->v[i], b->v[i]);
}

/* CT_NEG(a, mask) */
static void fe_cneg(fe8 *r, const fe8 *a, v8 mask) {
  fe8 n;
  fe_neg(&n, a);
  fe_select(r, mask, &n, a);
}

/* CT_ABS */
static void fe_abs(fe8 *r, const fe8 *a) { fe_cneg(r, a, fe_is_negative(a)); }

/* a^((p-5)/8) = a^(2^252 - 3): 250 squarings and 11 multiplications, the same
 * chain for every input. */
static void fe_pow22523(fe8 *r, const fe8 *a) {
  fe8 t0, t1, t2;
  fe_sq(&t0, a);         /* 2 */
  fe_sqn(&t1, &t0, 2);   /* 8 */
  fe_mul(&t1, a, &t1);   /* 9 */
  fe_mul(&t0, &t0, &t1); /* 11 */
  fe_sq(&t0, &t0);       /* 22 */
  fe_mul(&t0, &t1, &t0); /* 31 = 2^5 - 1 */
  fe_sqn(&t1, &t0, 5);   /* 2^10 - 2^5 */
  fe_mul(&t0, &t1, &t0); /* 2^10 - 1 */
  fe_sqn(&t1, &t0, 10);  /* 2^20 - 2^10 */
  fe_mul(&t1, &t1, &t0); /* 2^20 - 1 */
  fe_sqn(&t2, &t1, 20);  /* 2^40 - 2^20 */
  fe_mul(&t1, &t2, &t1); /* 2^40 - 1 */
  fe_sqn(&t1, &t1, 10);  /* 2^50 - 2^10 */
  fe_mul(&t0, &t1, &t0); /* 2^50 - 1 */
  fe_sqn(&t1, &t0, 50);  /* 2^100 - 2^50 */
  fe_mul(&t1, &t1, &t0); /* 2^100 - 1 */
  fe_sqn(&t2, &t1, 100); /* 2^200 - 2^100 */
  fe_mul(&t1, &t2, &t1); /* 2^200 - 1 */
  fe_sqn(&t1, &t1, 50);  /* 2^250 - 2^50 */
  fe_mul(&t0, &t1, &t0); /* 2^250 - 1 */
  fe_sqn(&t0, &t0, 2);   /* 2^252 - 4 */
  fe_mul(r, &t0, a);     /* 2^252 - 3 */
}

/* RFC 9496 §4.2 SQRT_RATIO_M1(u, v): r and the was_square mask. */
static v8 fe_sqrt_ratio_m1(fe8 *r, const fe8 *u, const fe8 *v) {
  fe8 v3, v7, t, check, un, uni, sm1, rp;
  fe_const(&sm1, R255X8_SQRT_M1);
  fe_sq(&v3, v);
  fe_mul(&v3, &v3, v); /* v^3 */
  fe_sq(&v7, &v3);
  fe_mul(&v7, &v7, v); /* v^7 */
  fe_mul(&t, u, &v7);
  fe_pow22523(&t, &t);
  fe_mul(&rp, u, &v3);
  fe_mul(r, &rp, &t); /* (u v^3) (u v^7)^((p-5)/8) */
  fe_sq(&check, r);
  fe_mul(&check, &check, v);
  fe_neg(&un, u);
  fe_mul(&uni, &un, &sm1);
  v8 correct = fe_eq(&check, u);
  v8 flipped = fe_eq(&check, &un);
  v8 flipped_i = fe_eq(&check, &uni);
  fe_mul(&rp, r, &sm1);
  fe_select(r, v8_or(flipped, flipped_i), &rp, r);
  fe_abs(r, r);
  return v8_or(correct, flipped);
}

/* ---- bytes <-> lanes ---------------------------------------------------- */

static uint64_t load64_le(const uint8_t *p) {
  uint64_t x = 0;
  for (int i = 7; i >= 0; i--)
    x = (x << 8) | p[i];
  return x;
}

static void store64_le(uint8_t *p, uint64_t x) {
  for (int i = 0; i < 8; i++)
    p[i] = (uint8_t)(x >> (8 * i));
}

/* 32 little-endian bytes per lane (at in + lane * stride) -> limbs. All 256
 * bits are kept (limb 4 takes bits 208..255), so a caller can see bit 255
 * and a value >= p; unless top_mask clears bit 255 first. */
static void fe_load(fe8 *r, const uint8_t *in, size_t stride, uint64_t top_mask) {
  uint64_t l[5][8];
  for (int k = 0; k < 8; k++) {
    const uint8_t *p = in + (size_t)k * stride;
    uint64_t w0 = load64_le(p), w1 = load64_le(p + 8), w2 = load64_le(p + 16);
    uint64_t w3 = load64_le(p + 24) & top_mask;
    l[0][k] = w0 & R255X8_M52;
    l[1][k] = ((w0 >> 52) | (w1 << 12)) & R255X8_M52;
    l[2][k] = ((w1 >> 40) | (w2 << 24)) & R255X8_M52;
    l[3][k] = ((w2 >> 28) | (w3 << 36)) & R255X8_M52;
    l[4][k] = w3 >> 16;
  }
  for (int i = 0; i < 5; i++)
    r->v[i] = v8_load(l[i]);
  sodium_memzero(l, sizeof l);
}

/* Canonical bytes of each lane to out + lane * 32. */
static void fe_store(uint8_t out[8][32], const fe8 *a) {
  fe8 f;
  uint64_t l[5][8];
  fe_freeze(&f, a);
  for (int i = 0; i < 5; i++)
    v8_store(l[i], f.v[i]);
  for (int k = 0; k < 8; k++) {
    store64_le(out[k], l[0][k] | (l[1][k] << 52));
    store64_le(out[k] + 8, (l[1][k] >> 12) | (l[2][k] << 40));
    store64_le(out[k] + 16, (l[2][k] >> 24) | (l[3][k] << 28));
    store64_le(out[k] + 24, (l[3][k] >> 36) | (l[4][k] << 16));
  }
  sodium_memzero(l, sizeof l);
  sodium_memzero(&f, sizeof f);
}

/* ---- the group: edwards25519 (a = -1) in extended coordinates ------------ */

typedef struct ge8 {
  fe8 X, Y, Z, T;
} ge8;

/* (Y - X, Y + X, 2d T, 2 Z): an addend ready for add-2008-hwcd-3. */
typedef struct gc8 {
  fe8 YmX, YpX, T2d, Z2;
} gc8;

static void ge_identity(ge8 *p) {
  fe_small(&p->X, 0);
  fe_small(&p->Y, 1);
  fe_small(&p->Z, 1);
  fe_small(&p->T, 0);
}

static void gc_identity(gc8 *c) {
  fe_small(&c->YmX, 1);
  fe_small(&c->YpX, 1);
  fe_small(&c->T2d, 0);
  fe_small(&c->Z2, 2);
}

static void ge_to_cached(gc8 *c, const ge8 *p) {
  fe8 d2;
  fe_const(&d2, R255X8_D2);
  fe_sub(&c->YmX, &p->Y, &p->X);
  fe_add(&c->YpX, &p->Y, &p->X);
  fe_mul(&c->T2d, &p->T, &d2);
  fe_add(&c->Z2, &p->Z, &p->Z);
}

static void ge_select(ge8 *r, v8 mask, const ge8 *a, const ge8 *b) {
  fe_select(&r->X, mask, &a->X, &b->X);
  fe_select(&r->Y, mask, &a->Y, &b->Y);
  fe_select(&r->Z, mask, &a->Z, &b->Z);
  fe_select(&r->T, mask, &a->T, &b->T);
}

static void gc_select(gc8 *r, v8 mask, const gc8 *a, const gc8 *b) {
  fe_select(&r->YmX, mask, &a->YmX, &b->YmX);
  fe_select(&r->YpX, mask, &a->YpX, &b->YpX);
  fe_select(&r->T2d, mask, &a->T2d, &b->T2d);
  fe_select(&r->Z2, mask, &a->Z2, &b->Z2);
}

/* r = p + q (add-2008-hwcd-3; complete for a = -1 and non-square d, so it
 * also doubles and adds the identity). r may alias p. */
static void ge_add(ge8 *r, const ge8 *p, const gc8 *q) {
  fe8 a, b, c, d, e, f, g, h;
  fe_sub(&a, &p->Y, &p->X);
  fe_mul(&a, &a, &q->YmX);
  fe_add(&b, &p->Y, &p->X);
  fe_mul(&b, &b, &q->YpX);
  fe_mul(&c, &p->T, &q->T2d);
  fe_mul(&d, &p->Z, &q->Z2);
  fe_sub(&e, &b, &a);
  fe_sub(&f, &d, &c);
  fe_add(&g, &d, &c);
  fe_add(&h, &b, &a);
  fe_mul(&r->X, &e, &f);
  fe_mul(&r->Y, &g, &h);
  fe_mul(&r->T, &e, &h);
  fe_mul(&r->Z, &f, &g);
}

/* r = 2p (dbl-2008-hwcd, a = -1). T of the input is not read; with_t = 0
 * skips computing T of the output (a doubling followed by a doubling does
 * not need it). r may alias p. */
static void ge_dbl(ge8 *r, const ge8 *p, int with_t) {
  fe8 a, b, c, e, f, g, h;
  fe_sq(&a, &p->X);
  fe_sq(&b, &p->Y);
  fe_sq(&c, &p->Z);
  fe_add(&c, &c, &c);
  fe_add(&e, &p->X, &p->Y);
  fe_sq(&e, &e);
  fe_add(&h, &a, &b); /* A + B */
  fe_sub(&e, &e, &h); /* (X+Y)^2 - A - B */
  fe_sub(&g, &b, &a); /* D + B = B - A */
  fe_neg(&h, &h);     /* D - B = -A - B */
  fe_sub(&f, &g, &c);
  fe_mul(&r->X, &e, &f);
  fe_mul(&r->Y, &g, &h);
  if (with_t)
    fe_mul(&r->T, &e, &h);
  fe_mul(&r->Z, &f, &g);
}

/* ---- ristretto255 (RFC 9496 §4.3) --------------------------------------- */

/* §4.3.1 Decode, all checks included: s canonical (< p, so bit 255 clear),
 * non-negative, was_square, t non-negative, y non-zero. Returns the mask of
 * lanes that decoded; the other lanes hold the identity. */
static v8 r255_decode(ge8 *p, const uint8_t *in, size_t stride) {
  fe8 s, sf, ss, one, u1, u2, u2sq, v, t, invsqrt, denx, deny, d;
  fe_load(&s, in, stride, ~UINT64_C(0));
  fe_freeze(&sf, &s);
  v8 canon = v8_set1(~UINT64_C(0));
  for (int i = 0; i < 5; i++)
    canon = v8_and(canon, v8_eq(s.v[i], sf.v[i]));
  v8 ok = v8_and(canon, v8_not(fe_is_negative(&sf)));

  fe_small(&one, 1);
  fe_const(&d, R255X8_D);
  fe_sq(&ss, &sf);
  fe_sub(&u1, &one, &ss);
  fe_add(&u2, &one, &ss);
  fe_sq(&u2sq, &u2);
  fe_sq(&t, &u1);
  fe_mul(&t, &t, &d);
  fe_neg(&t, &t);
  fe_sub(&v, &t, &u2sq); /* -(D u1^2) - u2^2 */
  fe_mul(&t, &v, &u2sq);
  ok = v8_and(ok, fe_sqrt_ratio_m1(&invsqrt, &one, &t));
  fe_mul(&denx, &invsqrt, &u2);
  fe_mul(&deny, &invsqrt, &denx);
  fe_mul(&deny, &deny, &v);
  fe_add(&t, &sf, &sf);
  fe_mul(&t, &t, &denx);
  fe_abs(&p->X, &t);
  fe_mul(&p->Y, &u1, &deny);
  fe_small(&p->Z, 1);
  fe_mul(&p->T, &p->X, &p->Y);
  ok = v8_and(ok, v8_not(fe_is_negative(&p->T)));
  ok = v8_and(ok, v8_not(fe_is_zero(&p->Y)));

  ge8 id;
  ge_identity(&id);
  ge_select(p, ok, p, &id);
  return ok;
}

/* §4.3.2 Encode. */
static void r255_encode(uint8_t out[8][32], const ge8 *p) {
  fe8 u1, u2, t, invsqrt, den1, den2, zinv, ix, iy, ench, x, y, deninv, one, c;
  fe_add(&u1, &p->Z, &p->Y);
  fe_sub(&t, &p->Z, &p->Y);
  fe_mul(&u1, &u1, &t);
  fe_mul(&u2, &p->X, &p->Y);
  fe_sq(&t, &u2);
  fe_mul(&t, &t, &u1);
  fe_small(&one, 1);
  (void)fe_sqrt_ratio_m1(&invsqrt, &one, &t);
  fe_mul(&den1, &invsqrt, &u1);
  fe_mul(&den2, &invsqrt, &u2);
  fe_mul(&zinv, &den1, &den2);
  fe_mul(&zinv, &zinv, &p->T);
  fe_const(&c, R255X8_SQRT_M1);
  fe_mul(&ix, &p->X, &c);
  fe_mul(&iy, &p->Y, &c);
  fe_const(&c, R255X8_INVSQRT_A_MINUS_D);
  fe_mul(&ench, &den1, &c);
  fe_mul(&t, &p->T, &zinv);
  v8 rotate = fe_is_negative(&t);
  fe_select(&x, rotate, &iy, &p->X);
  fe_select(&y, rotate, &ix, &p->Y);
  fe_select(&deninv, rotate, &ench, &den2);
  fe_mul(&t, &x, &zinv);
  fe_cneg(&y, &y, fe_is_negative(&t));
  fe_sub(&t, &p->Z, &y);
  fe_mul(&t, &deninv, &t);
  fe_abs(&t, &t);
  fe_store(out, &t);
}

/* §4.3.4 MAP(t). */
static void r255_map(ge8 *p, const fe8 *t) {
  fe8 r, u, v, s, sp, c, n, w0, w1, w2, w3, k, one, tmp;
  fe_small(&one, 1);
  fe_sq(&r, t);
  fe_const(&k, R255X8_SQRT_M1);
  fe_mul(&r, &r, &k); /* SQRT_M1 t^2 */
  fe_add(&u, &r, &one);
  fe_const(&k, R255X8_ONE_MINUS_D_SQ);
  fe_mul(&u, &u, &k);
  fe_const(&k, R255X8_D);
  fe_mul(&tmp, &r, &k);
  fe_add(&tmp, &tmp, &one);
  fe_neg(&tmp, &tmp); /* -1 - r D */
  fe_add(&v, &r, &k); /* r + D */
  fe_mul(&v, &tmp, &v);
  v8 was_square = fe_sqrt_ratio_m1(&s, &u, &v);
  fe_mul(&sp, &s, t);
  fe_abs(&sp, &sp);
  fe_neg(&sp, &sp);
  fe_select(&s, was_square, &s, &sp);
  fe_neg(&tmp, &one);
  fe_select(&c, was_square, &tmp, &r);
  fe_sub(&n, &r, &one);
  fe_mul(&n, &c, &n);
  fe_const(&k, R255X8_D_MINUS_ONE_SQ);
  fe_mul(&n, &n, &k);
  fe_sub(&n, &n, &v);
  fe_add(&w0, &s, &s);
  fe_mul(&w0, &w0, &v);
  fe_const(&k, R255X8_SQRT_AD_MINUS_ONE);
  fe_mul(&w1, &n, &k);
  fe_sq(&tmp, &s);
  fe_sub(&w2, &one, &tmp);
  fe_add(&w3, &one, &tmp);
  fe_mul(&p->X, &w0, &w3);
  fe_mul(&p->Y, &w2, &w1);
  fe_mul(&p->Z, &w1, &w3);
  fe_mul(&p->T, &w0, &w2);
}

/* §4.3.4 element derivation from 64 uniform bytes per lane: MAP of each half
 * (bit 255 masked, the value reduced mod p) and their sum. */
static void r255_from_uniform(ge8 *p, const uint8_t in[8][64]) {
  fe8 t;
  ge8 q;
  gc8 qc;
  const uint64_t top = ~(UINT64_C(1) << 63);
  fe_load(&t, in[0], 64, top);
  r255_map(p, &t);
  fe_load(&t, in[0] + 32, 64, top);
  r255_map(&q, &t);
  ge_to_cached(&qc, &q);
  ge_add(p, p, &qc);
  sodium_memzero(&t, sizeof t);
  sodium_memzero(&q, sizeof q);
  sodium_memzero(&qc, sizeof qc);
}

/* ---- scalar multiplication by one scalar on every lane ------------------ */

/* Signed radix 16: k = sum e[i] 16^i with e[i] in [-8, 8). Bit 255 is
 * ignored (as libsodium's crypto_scalarmult_ristretto255 does), so e[63] is
 * at most 8. Arithmetic only. */
static void scalar_digits(int8_t e[64], const uint8_t k[32]) {
  for (int i = 0; i < 32; i++) {
    uint8_t b = i == 31 ? (uint8_t)(k[i] & 0x7f) : k[i];
    e[2 * i] = (int8_t)(b & 15);
    e[2 * i + 1] = (int8_t)(b >> 4);
  }
  int carry = 0;
  for (int i = 0; i < 63; i++) {
    int x = e[i] + carry; /* 0 .. 16 */
    carry = (x + 8) >> 4;
    e[i] = (int8_t)(x - (carry << 4));
  }
  e[63] = (int8_t)(e[63] + carry);
}

/* r = table[|d| - 1] negated when d < 0, or the identity for d = 0: every
 * entry is read and combined through masks, whatever d is. */
static void table_select(gc8 *r, const gc8 table[8], int8_t d) {
  uint64_t dn = (uint64_t)(int64_t)d;
  uint64_t neg = dn >> 63;
  uint64_t a = (dn ^ (0 - neg)) + neg; /* |d| */
  gc_identity(r);
  for (uint64_t j = 1; j <= 8; j++) {
    uint64_t x = a ^ j;
    uint64_t eq = ((x | (0 - x)) >> 63) ^ 1;
    gc_select(r, v8_set1(0 - eq), &table[j - 1], r);
  }
  /* -P: swap Y - X and Y + X, negate 2dT. */
  v8 m = v8_set1(0 - neg);
  fe8 t;
  fe_select(&t, m, &r->YpX, &r->YmX);
  fe_select(&r->YpX, m, &r->YmX, &r->YpX);
  r->YmX = t;
  fe_cneg(&r->T2d, &r->T2d, m);
}

/* r = k * p on every lane: 64 windows of 4 bits, four doublings and one
 * table addition each, the same sequence for every k. */
static void ge_scalarmult(ge8 *r, const uint8_t k[32], const ge8 *p) {
  gc8 table[8], c;
  ge8 acc;
  int8_t e[64];

  ge_to_cached(&table[0], p);
  acc = *p;
  for (int i = 1; i < 8; i++) {
    ge_add(&acc, &acc, &table[0]);
    ge_to_cached(&table[i], &acc);
  }
  scalar_digits(e, k);
  ge_identity(r);
  for (int i = 63; i >= 0; i--) {
    if (i != 63) { /* i is public: the loop counter */
      ge_dbl(r, r, 0);
      ge_dbl(r, r, 0);
      ge_dbl(r, r, 0);
      ge_dbl(r, r, 1);
    }
    table_select(&c, table, e[i]);
    ge_add(r, r, &c);
  }
  sodium_memzero(e, sizeof e);
  sodium_memzero(table, sizeof table);
  sodium_memzero(&c, sizeof c);
  sodium_memzero(&acc, sizeof acc);
}

/* ---- exported entry points (see r255x8.h) -------------------------------- */

static unsigned R255X8_FN(roundtrip)(uint8_t out[8][32], const uint8_t in[8][32]) {
  ge8 p;
  v8 ok = r255_decode(&p, in[0], 32);
  r255_encode(out, &p);
  sodium_memzero(&p, sizeof p);
  return v8_movemask(ok);
}

static void R255X8_FN(from_uniform)(uint8_t out[8][32], const uint8_t in[8][64]) {
  ge8 p;
  r255_from_uniform(&p, in);
  r255_encode(out, &p);
  sodium_memzero(&p, sizeof p);
}

static unsigned R255X8_FN(scalarmult)(uint8_t out[8][32], const uint8_t k[32],
                                      const uint8_t in[8][32]) {
  ge8 p, q;
  v8 ok = r255_decode(&p, in[0], 32);
  ge_scalarmult(&q, k, &p);
  r255_encode(out, &q);
  sodium_memzero(&p, sizeof p);
  sodium_memzero(&q, sizeof q);
  return v8_movemask(ok);
}

static void R255X8_FN(hash_blind)(uint8_t out[8][32], const uint8_t k[32],
                                  const uint8_t uniform[8][64]) {
  ge8 p, q;
  r255_from_uniform(&p, uniform);
  ge_scalarmult(&q, k, &p);
  r255_encode(out, &q);
  sodium_memzero(&p, sizeof p);
  sodium_memzero(&q, sizeof q);
}

const cr_r255x8_backend R255X8_BACKEND = {
    .name = R255X8_LANES_NAME,
    .roundtrip = R255X8_FN(roundtrip),
    .from_uniform = R255X8_FN(from_uniform),
    .scalarmult = R255X8_FN(scalarmult),
    .hash_blind = R255X8_FN(hash_blind),
};
