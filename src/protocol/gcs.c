/* Golomb-Rice coded sorted digests (gcs.h). */
#include "protocol/gcs.h"

#include <string.h>

typedef unsigned __int128 u128; /* values of up to 16 bytes */

static u128 load_be(const uint8_t *p, size_t len) {
  u128 v = 0;
  for (size_t i = 0; i < len; i++)
    v = (v << 8) | p[i];
  return v;
}

static void store_be(uint8_t *p, size_t len, u128 v) {
  for (size_t i = len; i > 0; i--) {
    p[i - 1] = (uint8_t)v;
    v >>= 8;
  }
}

unsigned cr__gcs_k(size_t len, uint64_t count) {
  unsigned lg = 0;
  while (lg < 64 && ((uint64_t)1 << lg) < count)
    lg++;
  unsigned bits = (unsigned)(8 * len);
  return lg >= bits ? 0 : bits - lg;
}

typedef struct bitw {
  cr_buf *b;
  uint8_t acc;
  unsigned n; /* bits in acc */
  int rc;
} bitw;

static void put_bit(bitw *w, unsigned bit) {
  w->acc = (uint8_t)((w->acc << 1) | (bit & 1));
  if (++w->n == 8) {
    if (w->rc == 0)
      w->rc = cr_buf_append(w->b, &w->acc, 1);
    w->acc = 0;
    w->n = 0;
  }
}

int cr__gcs_encode(cr_buf *out, const uint8_t *values, size_t stride, size_t len, uint64_t count,
                   unsigned k, const uint8_t *base) {
  if (len == 0 || len > CR_GCS_MAX_BYTES || k > 8 * len)
    return CR_EINVAL;
  bitw w = {out, 0, 0, 0};
  u128 prev = base ? load_be(base, len) : 0;
  for (uint64_t i = 0; i < count && w.rc == 0; i++) {
    u128 v = load_be(values + i * stride, len);
    if (v < prev)
      return CR_EINVAL;
    u128 d = v - prev;
    prev = v;
    u128 q = k >= 128 ? 0 : d >> k;
    for (u128 j = 0; j < q; j++)
      put_bit(&w, 1);
    put_bit(&w, 0);
    for (unsigned b = k; b > 0; b--)
      put_bit(&w, (unsigned)(d >> (b - 1)) & 1);
  }
  while (w.n != 0 && w.rc == 0)
    put_bit(&w, 0);
  return w.rc;
}

typedef struct bitr {
  const uint8_t *p;
  size_t len, pos; /* pos in bits */
} bitr;

static int get_bit(bitr *r, unsigned *bit) {
  if (r->pos >= 8 * r->len)
    return -1;
  *bit = (r->p[r->pos / 8] >> (7 - r->pos % 8)) & 1;
  r->pos++;
  return 0;
}

int cr__gcs_decode(const uint8_t *in, size_t in_len, size_t len, uint64_t count, unsigned k,
                   const uint8_t *base, uint8_t *out, const char **why) {
  if (len == 0 || len > CR_GCS_MAX_BYTES || k > 8 * len) {
    *why = "digest size or Rice parameter out of range";
    return CR_EPROTO;
  }
  bitr r = {in, in_len, 0};
  u128 limit = len == 16 ? ~(u128)0 : (((u128)1 << (8 * len)) - 1); /* largest value */
  u128 qmax = k >= 128 ? 0 : limit >> k;
  u128 prev = base ? load_be(base, len) : 0;
  for (uint64_t i = 0; i < count; i++) {
    u128 q = 0;
    unsigned bit;
    for (;;) {
      if (get_bit(&r, &bit) != 0) {
        *why = "the coded digests end too early";
        return CR_EPROTO;
      }
      if (bit == 0)
        break;
      if (q++ >= qmax) {
        *why = "a coded difference is larger than the digest range";
        return CR_EPROTO;
      }
    }
    u128 rem = 0;
    for (unsigned b = 0; b < k; b++) {
      if (get_bit(&r, &bit) != 0) {
        *why = "the coded digests end too early";
        return CR_EPROTO;
      }
      rem = (rem << 1) | bit;
    }
    u128 d = (k >= 128 ? 0 : q << k) | rem;
    if (d > limit - prev) {
      *why = "a coded digest is larger than the digest range";
      return CR_EPROTO;
    }
    prev += d;
    store_be(out + i * len, len, prev);
  }
  /* Only zero padding, less than a byte, may follow. */
  if (8 * in_len - r.pos >= 8) {
    *why = "bytes follow the coded digests";
    return CR_EPROTO;
  }
  unsigned bit;
  while (get_bit(&r, &bit) == 0) {
    if (bit) {
      *why = "the coded digests' padding is not zero";
      return CR_EPROTO;
    }
  }
  return 0;
}
