/*
 * Match-key normalizers (design §6). Both partners run this same code, so
 * the only thing that matters for matching is that it is deterministic; the
 * rules lean towards rejecting (and counting) a doubtful value rather than
 * guessing, because a wrong guess is a silent false match or miss.
 *
 * Every normalizer rewrites the value in place inside the output buffer
 * (value = out->data[start .. out->len)), so normalizing a row allocates
 * nothing once the buffer has grown to the largest key. Whitespace means
 * ASCII whitespace only; non-ASCII bytes are never case-folded.
 */
#include "cleanroom/dataset.h"

#include <string.h>

#include <sodium.h>

const char *cr_reject_key(cr_reject_reason r) {
  switch (r) {
#define CR__REJ_KEY(name, key, text)                                                               \
  case CR_REJECT_##name:                                                                           \
    return key;
    CR_REJECT_MAP(CR__REJ_KEY)
#undef CR__REJ_KEY
  default:
    return "unknown";
  }
}

const char *cr_reject_text(cr_reject_reason r) {
  switch (r) {
#define CR__REJ_TEXT(name, key, text)                                                              \
  case CR_REJECT_##name:                                                                           \
    return text;
    CR_REJECT_MAP(CR__REJ_TEXT)
#undef CR__REJ_TEXT
  default:
    return "unknown reason";
  }
}

static int is_ws(uint8_t c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f';
}

static int is_ctl(uint8_t c) { return c < 0x20 || c == 0x7f; }

static uint8_t lower(uint8_t c) { return c >= 'A' && c <= 'Z' ? (uint8_t)(c + 32) : c; }

static int is_hex(uint8_t c) {
  return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

/* Replaces the value by the given bytes (never longer than the buffer holds). */
static void set_value(cr_buf *b, size_t start, const uint8_t *v, size_t n) {
  memmove(b->data + start, v, n);
  b->len = start + n;
}

static void trim(cr_buf *b, size_t start) {
  size_t s = start, e = b->len;
  while (s < e && is_ws(b->data[s]))
    s++;
  while (e > s && is_ws(b->data[e - 1]))
    e--;
  set_value(b, start, b->data + s, e - s);
}

/* Trim, lowercase; exactly one '@', non-empty local part and domain; no
 * whitespace or control character left inside. */
static int norm_email(cr_buf *b, size_t start) {
  trim(b, start);
  size_t n = b->len - start, at = 0, nat = 0;
  uint8_t *v = b->data + start;
  for (size_t i = 0; i < n; i++) {
    if (is_ws(v[i]) || is_ctl(v[i]))
      return 1;
    if (v[i] == '@') {
      nat++;
      at = i;
    }
    v[i] = lower(v[i]);
  }
  if (nat != 1 || at == 0 || at == n - 1)
    return 1;
  return 0;
}

/* Bytes of a Unicode space or dash that people (and spreadsheets) put in
 * phone numbers at s[0..n): no-break, figure, thin and narrow no-break
 * spaces, the hyphens and dashes U+2010-U+2015, the minus sign; else 0. */
static size_t phone_unicode_sep(const uint8_t *s, size_t n) {
  if (n >= 2 && s[0] == 0xc2 && s[1] == 0xa0)
    return 2;
  if (n >= 3 && s[0] == 0xe2 && s[1] == 0x80 &&
      (s[2] == 0x87 || s[2] == 0x89 || s[2] == 0xaf || (s[2] >= 0x90 && s[2] <= 0x95)))
    return 3;
  if (n >= 3 && s[0] == 0xe2 && s[1] == 0x88 && s[2] == 0x92)
    return 3;
  return 0;
}

/* At s[0] == '(': the length of a "(0)" group (spaces allowed inside), or
 * 0 if it is not one. */
static size_t trunk_group(const uint8_t *s, size_t n) {
  size_t i = 1;
  while (i < n && s[i] == ' ')
    i++;
  if (i >= n || s[i] != '0')
    return 0;
  i++;
  while (i < n && s[i] == ' ')
    i++;
  return i < n && s[i] == ')' ? i + 1 : 0;
}

/*
 * E.164: '+' then 8-15 digits, the first not 0. Spaces (Unicode ones too),
 * dashes, dots, slashes and parentheses are dropped, and a "tel:" prefix
 * (RFC 3966); "00" means '+'; without either, the default country code (if
 * any) is put in front after dropping one trunk '0' (with country code 1,
 * North America's trunk '1' in front of 10 digits). In an international
 * number, a "(0)" after the country code is the national trunk prefix
 * written for callers at home ("+49 (0)151 ...", "+44 (0)20 ..."): it is
 * dropped, as a caller from abroad would. Letters (an extension "x12",
 * "ext. 5") reject the value rather than guess.
 */
static int norm_phone(cr_buf *b, size_t start, const char *cc, size_t cclen) {
  uint8_t d[24] = {0};
  size_t nd = 0;
  int plus = 0, seen = 0;
  size_t i = start;
  while (i < b->len && is_ws(b->data[i]))
    i++;
  if (b->len - i >= 4 && lower(b->data[i]) == 't' && lower(b->data[i + 1]) == 'e' &&
      lower(b->data[i + 2]) == 'l' && b->data[i + 3] == ':')
    i += 4;
  for (; i < b->len; i++) {
    uint8_t c = b->data[i];
    size_t u = phone_unicode_sep(b->data + i, b->len - i);
    if (u > 0) {
      i += u - 1;
      continue;
    }
    if (c == '(') {
      /* "(0)" once the country code is written: the trunk prefix. */
      int intl = plus || (nd >= 2 && d[0] == '0' && d[1] == '0');
      size_t cc_digits = plus ? nd : nd - 2;
      size_t g = intl && nd >= 1 && cc_digits >= 1 ? trunk_group(b->data + i, b->len - i) : 0;
      if (g > 0)
        i += g - 1;
      continue;
    }
    if (is_ws(c) || c == '-' || c == '.' || c == ')' || c == '/')
      continue;
    if (c == '+' && !seen) {
      plus = 1;
    } else if (c >= '0' && c <= '9') {
      if (nd == sizeof d)
        goto reject; /* far too long for E.164 */
      d[nd++] = c;
    } else {
      goto reject;
    }
    seen = 1;
  }
  size_t off = 0;
  if (!plus && nd >= 2 && d[0] == '0' && d[1] == '0') {
    plus = 1;
    off = 2;
  }
  uint8_t e[1 + 3 + sizeof d];
  size_t ne = 0;
  e[ne++] = '+';
  if (!plus) {
    if (cc == NULL)
      goto reject;
    memcpy(e + ne, cc, cclen);
    ne += cclen;
    /* One trunk prefix goes: '0', or in North America (+1, whose national
     * numbers are 10 digits with an area code starting 2-9) '1', so
     * "1 206 555 0100" (or "12065550100", +1 without the plus) is
     * +12065550100, not +112065550100. */
    int nanp_trunk = cclen == 1 && cc[0] == '1' && nd == 11 && d[0] == '1' && d[1] >= '2';
    if ((nd > 0 && d[0] == '0') || nanp_trunk)
      off = 1;
  }
  memcpy(e + ne, d + off, nd - off);
  ne += nd - off;
  if (ne - 1 < 8 || ne - 1 > 15 || e[1] == '0')
    goto reject;
  /* The country code can make the result longer than the input. */
  if (ne > b->len - start && cr_buf_reserve(b, ne - (b->len - start)) != 0) {
    sodium_memzero(d, sizeof d);
    sodium_memzero(e, sizeof e);
    return CR_ENOMEM;
  }
  set_value(b, start, e, ne);
  sodium_memzero(d, sizeof d);
  sodium_memzero(e, sizeof e);
  return 0;
reject:
  sodium_memzero(d, sizeof d);
  return 1;
}

/* Trim, lowercase, every run of whitespace or control characters becomes one
 * space (so the composite-key separator 0x1f can never survive it). */
static int norm_text(cr_buf *b, size_t start) {
  size_t w = start;
  int gap = 0;
  for (size_t i = start; i < b->len; i++) {
    uint8_t c = b->data[i];
    if (is_ws(c) || is_ctl(c)) {
      gap = 1;
      continue;
    }
    if (gap && w > start)
      b->data[w++] = ' ';
    gap = 0;
    b->data[w++] = lower(c);
  }
  b->len = w;
  return w == start;
}

static int norm_sha256(cr_buf *b, size_t start) {
  uint8_t h[CR_SHA256_BYTES];
  char hex[2 * CR_SHA256_BYTES + 1];
  cr_sha256(h, b->data + start, b->len - start);
  cr_hex_encode(hex, h, sizeof h);
  b->len = start;
  int rc = cr_buf_append(b, hex, 2 * CR_SHA256_BYTES);
  sodium_memzero(h, sizeof h);
  sodium_memzero(hex, sizeof hex);
  return rc;
}

static int norm_hashed(cr_buf *b, size_t start) {
  trim(b, start);
  if (b->len - start != 2 * CR_SHA256_BYTES)
    return 1;
  for (size_t i = start; i < b->len; i++) {
    if (!is_hex(b->data[i]))
      return 1;
    b->data[i] = lower(b->data[i]);
  }
  return 0;
}

/* The country code must be 1-3 digits, as E.164 allows. */
static int cc_valid(const char *cc, size_t *len) {
  size_t n = strlen(cc);
  if (n < 1 || n > 3)
    return 0;
  for (size_t i = 0; i < n; i++)
    if (cc[i] < '0' || cc[i] > '9')
      return 0;
  *len = n;
  return 1;
}

static int normalize_chain(const cr_match_key *mk, const cr_normalizer *chain, size_t nchain,
                           const char *const *values, const size_t *lens, cr_buf *out,
                           cr_reject_reason *reason);

int cr_normalize_key(const cr_match_key *mk, const char *const *values, const size_t *lens,
                     cr_buf *out, cr_reject_reason *reason) {
  /* A key whose chains are per party needs the role (cr_normalize_key_as):
   * never the raw value. */
  if (mk == NULL || mk->party_normalize[CR_ROLE_PROVIDER] != NULL ||
      mk->party_normalize[CR_ROLE_CONSUMER] != NULL ||
      (mk->nnormalize > 0 && mk->normalize == NULL))
    return CR_EINVAL;
  return normalize_chain(mk, mk->normalize, mk->nnormalize, values, lens, out, reason);
}

int cr_normalize_key_as(const cr_match_key *mk, cr_role role, const char *const *values,
                        const size_t *lens, cr_buf *out, cr_reject_reason *reason) {
  if (mk == NULL || (role != CR_ROLE_PROVIDER && role != CR_ROLE_CONSUMER))
    return CR_EINVAL;
  if (mk->party_normalize[CR_ROLE_PROVIDER] == NULL &&
      mk->party_normalize[CR_ROLE_CONSUMER] == NULL)
    return cr_normalize_key(mk, values, lens, out, reason);
  size_t n = 0;
  const cr_normalizer *chain = cr_match_key_normalizers(mk, role, &n);
  if (chain == NULL || n == 0)
    return CR_EINVAL;
  return normalize_chain(mk, chain, n, values, lens, out, reason);
}

static int normalize_chain(const cr_match_key *mk, const cr_normalizer *chain, size_t nchain,
                           const char *const *values, const size_t *lens, cr_buf *out,
                           cr_reject_reason *reason) {
  int rc = 0;
  size_t cclen = 0;
  const char *cc = NULL;
  if (mk == NULL || values == NULL || out == NULL || reason == NULL || mk->ncolumns == 0)
    return CR_EINVAL;
  if (mk->default_country_code != NULL) {
    if (!cc_valid(mk->default_country_code, &cclen))
      return CR_EINVAL;
    cc = mk->default_country_code;
  }
  out->len = 0;
  for (size_t c = 0; c < mk->ncolumns; c++) {
    const char *v = values[c];
    size_t n = lens ? lens[c] : (v ? strlen(v) : 0);
    if (c > 0 && (rc = cr_buf_append(out, "\x1f", 1)) != 0)
      goto out;
    size_t start = out->len;
    if (v == NULL || n == 0) {
      *reason = CR_REJECT_MISSING;
      rc = 1;
      goto out;
    }
    if ((rc = cr_buf_append(out, v, n)) != 0)
      goto out;
    for (size_t k = 0; k < nchain; k++) {
      switch (chain[k]) {
      case CR_NORM_EMAIL:
        rc = norm_email(out, start);
        *reason = CR_REJECT_EMAIL;
        break;
      case CR_NORM_PHONE:
        rc = norm_phone(out, start, cc, cclen);
        *reason = CR_REJECT_PHONE;
        break;
      case CR_NORM_TEXT:
        rc = norm_text(out, start);
        *reason = CR_REJECT_TEXT;
        break;
      case CR_NORM_SHA256:
        rc = norm_sha256(out, start);
        break;
      case CR_NORM_HASHED_SHA256:
        rc = norm_hashed(out, start);
        *reason = CR_REJECT_HEX;
        break;
      default:
        rc = CR_EINVAL;
        break;
      }
      if (rc != 0)
        goto out;
    }
    /* A raw value (no normalizer that removes control characters) holding
     * the separator would make two different tuples one key. */
    if (mk->ncolumns > 1 && memchr(out->data + start, 0x1f, out->len - start) != NULL) {
      *reason = CR_REJECT_TEXT;
      rc = 1;
      goto out;
    }
  }
out:
  if (rc != 0 && out->data != NULL) {
    sodium_memzero(out->data, out->cap);
    out->len = 0;
  }
  return rc;
}
