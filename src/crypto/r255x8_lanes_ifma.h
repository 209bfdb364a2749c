/*
 * Eight 64-bit lanes on AVX-512 (F + IFMA): one zmm register per v8. Only
 * r255x8_ifma.c includes this, and only that file is compiled with
 * -mavx512f -mavx512ifma; nothing here runs unless the dispatcher
 * (backend.c) found avx512ifma in CPUID and the ZMM state enabled by the OS.
 * r255x8_lanes_emul.h is the same interface in portable C with the same
 * semantics; keep the two in step.
 */
#ifndef CR_R255X8_LANES_IFMA_H
#define CR_R255X8_LANES_IFMA_H

#include <stdint.h>

#include <immintrin.h>

#define R255X8_LANES_NAME "avx512ifma"

typedef __m512i v8;

static inline v8 v8_set1(uint64_t x) { return _mm512_set1_epi64((long long)x); }
static inline v8 v8_zero(void) { return _mm512_setzero_si512(); }
static inline v8 v8_load(const uint64_t src[8]) { return _mm512_loadu_si512((const void *)src); }
static inline void v8_store(uint64_t dst[8], v8 a) { _mm512_storeu_si512((void *)dst, a); }
static inline v8 v8_add(v8 a, v8 b) { return _mm512_add_epi64(a, b); }
static inline v8 v8_sub(v8 a, v8 b) { return _mm512_sub_epi64(a, b); }
static inline v8 v8_and(v8 a, v8 b) { return _mm512_and_si512(a, b); }
static inline v8 v8_or(v8 a, v8 b) { return _mm512_or_si512(a, b); }
static inline v8 v8_xor(v8 a, v8 b) { return _mm512_xor_si512(a, b); }

#define V8_SRLI(a, n) _mm512_srli_epi64((a), (n))
#define V8_SLLI(a, n) _mm512_slli_epi64((a), (n))

static inline v8 v8_madd52lo(v8 acc, v8 a, v8 b) { return _mm512_madd52lo_epu64(acc, a, b); }
static inline v8 v8_madd52hi(v8 acc, v8 a, v8 b) { return _mm512_madd52hi_epu64(acc, a, b); }

static inline void v8_madd52(v8 *lo, v8 *hi, v8 a, v8 b) {
  *lo = _mm512_madd52lo_epu64(*lo, a, b);
  *hi = _mm512_madd52hi_epu64(*hi, a, b);
}

static inline v8 v8_eq(v8 a, v8 b) {
  return _mm512_maskz_mov_epi64(_mm512_cmpeq_epi64_mask(a, b), _mm512_set1_epi64(-1));
}

/* mask ? a : b: bitwise select (ternary-logic truth table 0xCA). */
static inline v8 v8_select(v8 mask, v8 a, v8 b) {
  return _mm512_ternarylogic_epi64(mask, a, b, 0xCA);
}

static inline unsigned v8_movemask(v8 mask) { return (unsigned)_mm512_test_epi64_mask(mask, mask); }

#endif
