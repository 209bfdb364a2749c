/*
 * Eight 64-bit lanes in portable C: the exact semantics of the AVX-512
 * operations r255x8_impl.h is written against (r255x8_lanes_ifma.h), so the
 * same algorithm source compiled on these lanes is what the tests prove on a
 * machine without AVX-512 IFMA (the CLEANROOM_CRYPTO=emulated backend).
 *
 * madd52lo/madd52hi are VPMADD52LUQ/VPMADD52HUQ: the 104-bit product of the
 * low 52 bits of each operand; its low (resp. high) 52 bits are added to the
 * 64-bit accumulator modulo 2^64. Every operation is branch-free and indexes
 * no memory by a lane's value, so secret-dependent control flow in the
 * algorithm shows up under valgrind (tests/unit/ct_r255x8.c) and none comes
 * from here.
 */
#ifndef CR_R255X8_LANES_EMUL_H
#define CR_R255X8_LANES_EMUL_H

#include <stdint.h>

#define R255X8_LANES_NAME "emulated"

typedef struct v8 {
  uint64_t l[8];
} v8;

#define V8_M52 ((UINT64_C(1) << 52) - 1)

static inline v8 v8_set1(uint64_t x) {
  v8 r;
  for (int i = 0; i < 8; i++)
    r.l[i] = x;
  return r;
}

static inline v8 v8_zero(void) { return v8_set1(0); }

static inline v8 v8_load(const uint64_t src[8]) {
  v8 r;
  for (int i = 0; i < 8; i++)
    r.l[i] = src[i];
  return r;
}

static inline void v8_store(uint64_t dst[8], v8 a) {
  for (int i = 0; i < 8; i++)
    dst[i] = a.l[i];
}

static inline v8 v8_add(v8 a, v8 b) {
  for (int i = 0; i < 8; i++)
    a.l[i] += b.l[i];
  return a;
}

static inline v8 v8_sub(v8 a, v8 b) {
  for (int i = 0; i < 8; i++)
    a.l[i] -= b.l[i];
  return a;
}

static inline v8 v8_and(v8 a, v8 b) {
  for (int i = 0; i < 8; i++)
    a.l[i] &= b.l[i];
  return a;
}

static inline v8 v8_or(v8 a, v8 b) {
  for (int i = 0; i < 8; i++)
    a.l[i] |= b.l[i];
  return a;
}

static inline v8 v8_xor(v8 a, v8 b) {
  for (int i = 0; i < 8; i++)
    a.l[i] ^= b.l[i];
  return a;
}

static inline v8 v8_srli_(v8 a, unsigned n) {
  for (int i = 0; i < 8; i++)
    a.l[i] >>= n;
  return a;
}

static inline v8 v8_slli_(v8 a, unsigned n) {
  for (int i = 0; i < 8; i++)
    a.l[i] <<= n;
  return a;
}

/* Shift counts are compile-time constants (the intrinsics need immediates). */
#define V8_SRLI(a, n) v8_srli_((a), (n))
#define V8_SLLI(a, n) v8_slli_((a), (n))

static inline v8 v8_madd52lo(v8 acc, v8 a, v8 b) {
  for (int i = 0; i < 8; i++) {
    unsigned __int128 p = (unsigned __int128)(a.l[i] & V8_M52) * (b.l[i] & V8_M52);
    acc.l[i] += (uint64_t)p & V8_M52;
  }
  return acc;
}

static inline v8 v8_madd52hi(v8 acc, v8 a, v8 b) {
  for (int i = 0; i < 8; i++) {
    unsigned __int128 p = (unsigned __int128)(a.l[i] & V8_M52) * (b.l[i] & V8_M52);
    acc.l[i] += (uint64_t)(p >> 52);
  }
  return acc;
}

/* Both at once, the product computed once: *lo = madd52lo(*lo, a, b) and
 * *hi = madd52hi(*hi, a, b). */
static inline void v8_madd52(v8 *lo, v8 *hi, v8 a, v8 b) {
  for (int i = 0; i < 8; i++) {
    unsigned __int128 p = (unsigned __int128)(a.l[i] & V8_M52) * (b.l[i] & V8_M52);
    lo->l[i] += (uint64_t)p & V8_M52;
    hi->l[i] += (uint64_t)(p >> 52);
  }
}

/* All ones in the lanes where a == b, zero elsewhere; arithmetic only (no
 * compare instruction a compiler could turn into a branch). */
static inline v8 v8_eq(v8 a, v8 b) {
  for (int i = 0; i < 8; i++) {
    uint64_t x = a.l[i] ^ b.l[i];
    a.l[i] = ((x | (0 - x)) >> 63) - 1;
  }
  return a;
}

/* mask ? a : b, lane by lane (mask lanes are all ones or all zeros). */
static inline v8 v8_select(v8 mask, v8 a, v8 b) {
  for (int i = 0; i < 8; i++)
    a.l[i] = (a.l[i] & mask.l[i]) | (b.l[i] & ~mask.l[i]);
  return a;
}

/* Bit i set when lane i of mask is non-zero. Only for public results (which
 * lanes decoded), never on secret-dependent masks. */
static inline unsigned v8_movemask(v8 mask) {
  unsigned m = 0;
  for (int i = 0; i < 8; i++)
    m |= (unsigned)((mask.l[i] | (0 - mask.l[i])) >> 63) << i;
  return m;
}

#endif
