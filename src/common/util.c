/* Shared helpers. Never logs anything: callers decide what is safe to show. */
#include "cleanroom/common.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <sodium.h>

void cr_buf_init(cr_buf *b) {
  b->data = NULL;
  b->len = 0;
  b->cap = 0;
}

int cr_buf_reserve(cr_buf *b, size_t extra) {
  if (extra > SIZE_MAX - b->len)
    return CR_ENOMEM;
  size_t need = b->len + extra;
  if (need <= b->cap)
    return 0;
  size_t cap = b->cap ? b->cap : 256;
  while (cap < need) {
    if (cap > SIZE_MAX / 2)
      return CR_ENOMEM;
    cap *= 2;
  }
  /* Not realloc: the old block is wiped before it is released. */
  uint8_t *p = malloc(cap);
  if (p == NULL)
    return CR_ENOMEM;
  if (b->len)
    memcpy(p, b->data, b->len);
  if (b->data) {
    sodium_memzero(b->data, b->cap);
    free(b->data);
  }
  b->data = p;
  b->cap = cap;
  return 0;
}

int cr_buf_append(cr_buf *b, const void *data, size_t len) {
  if (len == 0)
    return 0;
  int rc = cr_buf_reserve(b, len);
  if (rc)
    return rc;
  memcpy(b->data + b->len, data, len);
  b->len += len;
  return 0;
}

void cr_buf_consume(cr_buf *b, size_t n) {
  if (n >= b->len) {
    b->len = 0;
    return;
  }
  memmove(b->data, b->data + n, b->len - n);
  b->len -= n;
}

void cr_buf_reset(cr_buf *b) { b->len = 0; }

void cr_buf_free(cr_buf *b) {
  if (b->data) {
    sodium_memzero(b->data, b->cap);
    free(b->data);
  }
  cr_buf_init(b);
}

void cr_hex_encode(char *out, const uint8_t *in, size_t len) {
  sodium_bin2hex(out, 2 * len + 1, in, len);
}

int cr_hex_decode(uint8_t *out, size_t out_len, const char *hex) {
  size_t bin_len = 0;
  const char *end = NULL;
  if (hex == NULL || strlen(hex) != 2 * out_len)
    return CR_EINVAL;
  if (sodium_hex2bin(out, out_len, hex, 2 * out_len, NULL, &bin_len, &end) != 0 ||
      bin_len != out_len || end != hex + 2 * out_len)
    return CR_EINVAL;
  return 0;
}

void cr_sha256(uint8_t out[CR_SHA256_BYTES], const void *data, size_t len) {
  crypto_hash_sha256(out, data, len);
}

int cr_sha256_file(uint8_t out[CR_SHA256_BYTES], const char *path, cr_error *err) {
  FILE *f = fopen(path, "rb");
  if (f == NULL)
    return cr_error_set(err, CR_EIO, "%s: cannot open: %s", path, strerror(errno));
  crypto_hash_sha256_state st;
  crypto_hash_sha256_init(&st);
  unsigned char buf[65536];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, f)) > 0)
    crypto_hash_sha256_update(&st, buf, n);
  int bad = ferror(f);
  fclose(f);
  if (bad)
    return cr_error_set(err, CR_EIO, "%s: read error", path);
  crypto_hash_sha256_final(&st, out);
  return 0;
}

uint64_t cr_now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

int cr_read_file(const char *path, size_t max, char **out, size_t *out_len, cr_error *err) {
  int rc = 0;
  cr_buf b;
  cr_buf_init(&b);
  FILE *f = fopen(path, "rb");
  if (f == NULL)
    return cr_error_set(err, CR_EIO, "%s: cannot open: %s", path, strerror(errno));
  unsigned char chunk[16384];
  size_t n;
  while ((n = fread(chunk, 1, sizeof chunk, f)) > 0) {
    if (b.len + n > max) {
      rc = cr_error_set(err, CR_EIO, "%s: larger than %zu bytes", path, max);
      goto out;
    }
    if ((rc = cr_buf_append(&b, chunk, n)) != 0) {
      cr_error_set(err, rc, "%s: out of memory", path);
      goto out;
    }
  }
  if (ferror(f)) {
    rc = cr_error_set(err, CR_EIO, "%s: read error", path);
    goto out;
  }
  if ((rc = cr_buf_append(&b, "", 1)) != 0) {
    cr_error_set(err, rc, "%s: out of memory", path);
    goto out;
  }
  *out = (char *)b.data;
  if (out_len)
    *out_len = b.len - 1;
  b.data = NULL;
out:
  fclose(f);
  cr_buf_free(&b);
  return rc;
}

void cr_strv_free(char **v, size_t n) {
  if (v == NULL)
    return;
  for (size_t i = 0; i < n; i++)
    free(v[i]);
  free(v);
}

int cr_atomic_open(cr_atomic_file *f, const char *path, int mode, cr_error *err) {
  memset(f, 0, sizeof *f);
  f->fd = -1;
  size_t n = strlen(path) + 32;
  f->tmp = malloc(n);
  f->path = strdup(path);
  if (f->tmp == NULL || f->path == NULL) {
    cr_atomic_abort(f);
    return cr_error_set(err, CR_ENOMEM, "out of memory");
  }
  snprintf(f->tmp, n, "%s.tmp.%ld", path, (long)getpid());
  f->fd = open(f->tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, mode);
  if (f->fd < 0) {
    int rc = cr_error_set(err, CR_EIO, "cannot create %s: %s", f->tmp, strerror(errno));
    free(f->tmp);
    f->tmp = NULL; /* nothing to remove */
    cr_atomic_abort(f);
    return rc;
  }
  return 0;
}

int cr_atomic_write(cr_atomic_file *f, const void *data, size_t len, cr_error *err) {
  const uint8_t *p = data;
  while (len > 0) {
    ssize_t w = write(f->fd, p, len);
    if (w < 0 && errno == EINTR)
      continue;
    if (w <= 0)
      return cr_error_set(err, CR_EIO, "cannot write %s: %s", f->tmp,
                          w < 0 ? strerror(errno) : "no space written");
    p += w;
    len -= (size_t)w;
  }
  return 0;
}

int cr_atomic_commit(cr_atomic_file *f, cr_error *err) {
  int rc = 0;
  if (f->fd < 0 || f->tmp == NULL)
    return cr_error_set(err, CR_EINVAL, "no file open to commit");
  if (fsync(f->fd) != 0)
    rc = cr_error_set(err, CR_EIO, "cannot write %s: %s", f->tmp, strerror(errno));
  if (close(f->fd) != 0 && rc == 0)
    rc = cr_error_set(err, CR_EIO, "cannot write %s: %s", f->tmp, strerror(errno));
  f->fd = -1;
  if (rc == 0 && rename(f->tmp, f->path) != 0)
    rc = cr_error_set(err, CR_EIO, "cannot rename %s to %s: %s", f->tmp, f->path, strerror(errno));
  if (rc == 0) {
    free(f->tmp);
    f->tmp = NULL;
  }
  cr_atomic_abort(f);
  return rc;
}

void cr_atomic_abort(cr_atomic_file *f) {
  if (f->fd >= 0)
    close(f->fd);
  f->fd = -1;
  if (f->tmp != NULL)
    unlink(f->tmp);
  free(f->tmp);
  free(f->path);
  f->tmp = f->path = NULL;
}

int cr_file_write_atomic(const char *path, const void *data, size_t len, int mode, cr_error *err) {
  cr_atomic_file f;
  int rc = cr_atomic_open(&f, path, mode, err);
  if (rc)
    return rc;
  if ((rc = cr_atomic_write(&f, data, len, err)) != 0) {
    cr_atomic_abort(&f);
    return rc;
  }
  return cr_atomic_commit(&f, err);
}

/* Length of the valid UTF-8 sequence at p (1..4), or 0 (RFC 3629: no
 * overlongs, no surrogates, nothing above U+10FFFF). */
static size_t utf8_len(const unsigned char *p) {
  unsigned char c = p[0];
  if (c < 0x80)
    return 1;
  if (c >= 0xc2 && c <= 0xdf)
    return (p[1] & 0xc0) == 0x80 ? 2 : 0;
  if (c >= 0xe0 && c <= 0xef) {
    if ((p[1] & 0xc0) != 0x80 || (p[2] & 0xc0) != 0x80)
      return 0;
    if ((c == 0xe0 && p[1] < 0xa0) || (c == 0xed && p[1] > 0x9f))
      return 0;
    return 3;
  }
  if (c >= 0xf0 && c <= 0xf4) {
    if ((p[1] & 0xc0) != 0x80 || (p[2] & 0xc0) != 0x80 || (p[3] & 0xc0) != 0x80)
      return 0;
    if ((c == 0xf0 && p[1] < 0x90) || (c == 0xf4 && p[1] > 0x8f))
      return 0;
    return 4;
  }
  return 0;
}

/* The invisible characters that reorder the text around them (Unicode
 * bidirectional controls: U+061C, U+200E, U+200F, U+202A..U+202E,
 * U+2066..U+2069): printed, a name holding one can show another name
 * ("Trojan Source"), so they are written as \uXXXX. */
static int is_bidi_control(const unsigned char *p, size_t n) {
  if (n == 2)
    return p[0] == 0xd8 && p[1] == 0x9c;
  if (n != 3 || p[0] != 0xe2)
    return 0;
  if (p[1] == 0x80)
    return p[2] == 0x8e || p[2] == 0x8f || (p[2] >= 0xaa && p[2] <= 0xae);
  return p[1] == 0x81 && p[2] >= 0xa6 && p[2] <= 0xa9;
}

char *cr_text_clean(char *dst, size_t cap, const char *src) {
  size_t o = 0;
  const unsigned char *p = (const unsigned char *)(src ? src : "");
  if (cap == 0)
    return dst;
  while (*p) {
    char tmp[8];
    size_t n = utf8_len(p), tl;
    if (n == 0) {
      // NOLINTNEXTLINE(bugprone-not-null-terminated-result): tmp is counted by tl, not NUL-ended
      memcpy(tmp, "\xef\xbf\xbd", 3); /* U+FFFD */
      tl = 3;
      n = 1;
    } else if (n == 1 && ((*p < 0x20 && *p != '\t') || *p == 0x7f)) {
      tl = (size_t)snprintf(tmp, sizeof tmp, "\\x%02x", *p);
    } else if (n == 2 && p[0] == 0xc2 && p[1] < 0xa0) { /* C1 controls */
      tl = (size_t)snprintf(tmp, sizeof tmp, "\\x%02x", p[1]);
    } else if (is_bidi_control(p, n)) {
      unsigned cp = n == 2 ? ((p[0] & 0x1fu) << 6 | (p[1] & 0x3fu))
                           : ((p[0] & 0x0fu) << 12 | (p[1] & 0x3fu) << 6 | (p[2] & 0x3fu));
      tl = (size_t)snprintf(tmp, sizeof tmp, "\\u%04x", cp);
    } else {
      memcpy(tmp, p, n);
      tl = n;
    }
    if (o + tl + 1 > cap)
      break;
    memcpy(dst + o, tmp, tl);
    o += tl;
    p += n;
  }
  dst[o] = '\0';
  return dst;
}
