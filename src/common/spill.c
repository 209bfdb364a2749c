/*
 * cleanroom — common: the spill (a memory budget shared by every sorter of a
 * node, a private work directory) and the sorter (a stable external sort
 * whose runs are encrypted). docs/memory.md describes the run format, the
 * directory layout and its lock, recovery and the budget.
 *
 * Never: writes a record in the clear (every run is a libsodium
 * secretstream under the sorter's own key), keeps a buffer that held
 * records without wiping it, names a file that outlives the process (run
 * files are O_TMPFILE), puts a record's content in a message, or prints.
 */
// NOLINTNEXTLINE(bugprone-reserved-identifier): a feature-test macro is the program's to define
#define _GNU_SOURCE /* O_TMPFILE, mkostemp */
#include "cleanroom/common.h"
#include "common/spill_internal.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sodium.h>

#define CHUNK ((size_t)CR__SPILL_CHUNK)
#define ABYTES ((size_t)crypto_secretstream_xchacha20poly1305_ABYTES)
#define HBYTES ((size_t)crypto_secretstream_xchacha20poly1305_HEADERBYTES)
#define MIN_BYTES ((uint64_t)CR__SPILL_MIN_BYTES)
#define BLOCK_FIRST ((size_t)16384)
#define BLOCK_MAX ((size_t)1 << 20)
#define IDX_FIRST ((size_t)256)
#define VARINT_MAX 3 /* CR_SORTER_MAX_PAYLOAD < 2^21 */
#define MIB (1024.0 * 1024.0)
/* Buffers from this size up are mapped, not malloc'ed: unmapping gives
 * them back to the system at once, where the allocator would keep freed
 * blocks (and the node's resident size would be the most it ever held,
 * not what it holds). */
#define MAP_FROM ((size_t)65536)

typedef crypto_secretstream_xchacha20poly1305_state stream_state;

/* ------------------------------------------------------------------ spill */

struct cr_spill {
  char *work_dir; /* as configured */
  char *dir;      /* work_dir/cleanroom-<pid>-<hex> */
  int lock_fd;    /* dir/lock, flock(LOCK_EX) for the process's life */
  pthread_mutex_t mu;
  uint64_t memory_bytes, disk_max;
  uint64_t mem_used, mem_peak;
  uint64_t disk_now, disk_peak, disk_written, runs_written;
};

/* Takes n bytes of the budget: always when forced (a sorter's minimum, a
 * reader that a merge cannot do without), otherwise only if they fit. */
static int mem_take(cr_spill *sp, uint64_t n, int force) {
  if (sp == NULL || n == 0)
    return 1;
  pthread_mutex_lock(&sp->mu);
  int ok = force || (sp->mem_used <= sp->memory_bytes && n <= sp->memory_bytes - sp->mem_used);
  if (ok) {
    sp->mem_used += n;
    if (sp->mem_used > sp->mem_peak)
      sp->mem_peak = sp->mem_used;
  }
  pthread_mutex_unlock(&sp->mu);
  return ok;
}

static void mem_give(cr_spill *sp, uint64_t n) {
  if (sp == NULL || n == 0)
    return;
  pthread_mutex_lock(&sp->mu);
  sp->mem_used = n <= sp->mem_used ? sp->mem_used - n : 0;
  pthread_mutex_unlock(&sp->mu);
}

static uint64_t mem_available(cr_spill *sp) {
  if (sp == NULL)
    return UINT64_MAX;
  pthread_mutex_lock(&sp->mu);
  uint64_t a = sp->mem_used < sp->memory_bytes ? sp->memory_bytes - sp->mem_used : 0;
  pthread_mutex_unlock(&sp->mu);
  return a;
}

static void disk_give(cr_spill *sp, uint64_t n) {
  if (sp == NULL || n == 0)
    return;
  pthread_mutex_lock(&sp->mu);
  sp->disk_now = n <= sp->disk_now ? sp->disk_now - n : 0;
  pthread_mutex_unlock(&sp->mu);
}

void cr_spill_stats_get(const cr_spill *csp, cr_spill_stats *st) {
  memset(st, 0, sizeof *st);
  if (csp == NULL)
    return;
  cr_spill *sp = (cr_spill *)csp; /* the mutex; the counters stay as they are */
  pthread_mutex_lock(&sp->mu);
  st->memory_bytes = sp->memory_bytes;
  st->memory_used = sp->mem_used;
  st->memory_peak = sp->mem_peak;
  st->disk_now = sp->disk_now;
  st->disk_peak = sp->disk_peak;
  st->disk_written = sp->disk_written;
  st->runs_written = sp->runs_written;
  pthread_mutex_unlock(&sp->mu);
}

const char *cr_spill_dir(const cr_spill *sp) { return sp ? sp->dir : NULL; }

/* mkdir -p, each missing component 0700. */
static int make_dirs(const char *path, cr_error *err) {
  size_t len = strlen(path);
  char *p = malloc(len + 1);
  if (p == NULL)
    return cr_error_set(err, CR_ENOMEM, "out of memory");
  memcpy(p, path, len + 1);
  int rc = 0;
  for (size_t i = 1; i <= len; i++) {
    if (p[i] != '/' && p[i] != '\0')
      continue;
    char c = p[i];
    p[i] = '\0';
    if (mkdir(p, 0700) != 0 && errno != EEXIST) {
      int e = errno;
      rc = cr_error_set(err, CR_ECONFIG, "work directory %s cannot be created: %s: %s", path, p,
                        strerror(e));
      break;
    }
    p[i] = c;
  }
  free(p);
  if (rc)
    return rc;
  struct stat st;
  if (stat(path, &st) != 0)
    return cr_error_set(err, CR_ECONFIG, "work directory %s cannot be created: %s", path,
                        strerror(errno));
  if (!S_ISDIR(st.st_mode))
    return cr_error_set(err, CR_ECONFIG, "work directory %s is not a directory", path);
  return 0;
}

/* Removes everything under the directory fd (files counted into *bytes);
 * depth-limited, never follows a symbolic link. */
static void remove_contents(int dfd, uint64_t *bytes, int depth) {
  int fd2 = dup(dfd);
  if (fd2 < 0)
    return;
  DIR *d = fdopendir(fd2);
  if (d == NULL) {
    close(fd2);
    return;
  }
  struct dirent *e;
  while ((e = readdir(d)) != NULL) {
    if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
      continue;
    struct stat st;
    if (fstatat(dfd, e->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0)
      continue;
    if (S_ISDIR(st.st_mode)) {
      if (depth < 4) {
        int sub = openat(dfd, e->d_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (sub >= 0) {
          remove_contents(sub, bytes, depth + 1);
          close(sub);
        }
      }
      (void)unlinkat(dfd, e->d_name, AT_REMOVEDIR);
    } else if (unlinkat(dfd, e->d_name, 0) == 0 && S_ISREG(st.st_mode)) {
      *bytes += (uint64_t)st.st_size;
    }
  }
  closedir(d);
}

/* Removes the sibling directories of killed processes: a `cleanroom-*`
 * directory whose lock file is missing or can be locked. The caller holds
 * the work directory's own lock, so no process is between creating its
 * directory and locking its lock file. */
static void recover(int wfd, cr_spill_recovered *rec) {
  int fd2 = dup(wfd);
  if (fd2 < 0)
    return;
  DIR *d = fdopendir(fd2);
  if (d == NULL) {
    close(fd2);
    return;
  }
  struct dirent *e;
  while ((e = readdir(d)) != NULL) {
    if (strncmp(e->d_name, "cleanroom-", 10) != 0)
      continue;
    struct stat st;
    if (fstatat(wfd, e->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0 || !S_ISDIR(st.st_mode))
      continue;
    int sub = openat(wfd, e->d_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (sub < 0)
      continue;
    int lk = openat(sub, "lock", O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    if (lk < 0 && errno != ENOENT) {
      close(sub);
      continue;
    }
    if (lk >= 0 && flock(lk, LOCK_EX | LOCK_NB) != 0) {
      close(lk); /* a live process holds it */
      close(sub);
      continue;
    }
    uint64_t bytes = 0;
    remove_contents(sub, &bytes, 0);
    if (lk >= 0)
      close(lk);
    close(sub);
    if (unlinkat(wfd, e->d_name, AT_REMOVEDIR) == 0 && rec) {
      rec->dirs++;
      rec->bytes += bytes;
    }
  }
  closedir(d);
}

int cr_spill_open(cr_spill **out, const cr_spill_config *cfg, cr_spill_recovered *rec,
                  cr_error *err) {
  *out = NULL;
  if (rec)
    memset(rec, 0, sizeof *rec);
  if (cfg == NULL || cfg->work_dir == NULL || cfg->work_dir[0] == '\0')
    return cr_error_set(err, CR_EINVAL, "the spill needs a work directory");
  if (cfg->memory_bytes == 0)
    return cr_error_set(err, CR_EINVAL, "a memory budget of 0 bytes: give at least 1 MiB");
  if (sodium_init() < 0)
    return cr_error_set(err, CR_ECRYPTO, "libsodium failed to initialize");
  int rc = make_dirs(cfg->work_dir, err);
  if (rc)
    return rc;

  cr_spill *sp = calloc(1, sizeof *sp);
  if (sp == NULL)
    return cr_error_set(err, CR_ENOMEM, "out of memory");
  sp->lock_fd = -1;
  sp->memory_bytes = cfg->memory_bytes;
  sp->disk_max = cfg->disk_max_bytes;
  pthread_mutex_init(&sp->mu, NULL);
  int wfd = -1, pfd = -1;
  size_t wlen = strlen(cfg->work_dir);
  sp->work_dir = malloc(wlen + 1);
  sp->dir = malloc(wlen + 64);
  if (sp->work_dir == NULL || sp->dir == NULL) {
    rc = cr_error_set(err, CR_ENOMEM, "out of memory");
    goto fail;
  }
  memcpy(sp->work_dir, cfg->work_dir, wlen + 1);

  wfd = open(cfg->work_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (wfd < 0) {
    rc = cr_error_set(err, CR_ECONFIG, "work directory %s cannot be opened: %s", cfg->work_dir,
                      strerror(errno));
    goto fail;
  }
  /* Held while recovering and while creating our directory and its lock. */
  if (flock(wfd, LOCK_EX) != 0) {
    rc = cr_error_set(err, CR_ECONFIG, "work directory %s cannot be locked: %s", cfg->work_dir,
                      strerror(errno));
    goto fail;
  }
  recover(wfd, rec);

  char name[64];
  int made = 0;
  for (int attempt = 0; attempt < 16 && !made; attempt++) {
    uint8_t rnd[4];
    char hex[9];
    randombytes_buf(rnd, sizeof rnd);
    cr_hex_encode(hex, rnd, sizeof rnd);
    snprintf(name, sizeof name, "cleanroom-%ld-%s", (long)getpid(), hex);
    if (mkdirat(wfd, name, 0700) == 0)
      made = 1;
    else if (errno != EEXIST)
      break;
  }
  if (!made) {
    rc = cr_error_set(err, CR_ECONFIG, "work directory %s is not writable: %s", cfg->work_dir,
                      strerror(errno));
    goto fail;
  }
  snprintf(sp->dir, wlen + 64, "%s%s%s", cfg->work_dir, cfg->work_dir[wlen - 1] == '/' ? "" : "/",
           name);
  pfd = openat(wfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  if (pfd < 0 || fchmod(pfd, 0700) != 0) {
    rc = cr_error_set(err, CR_ECONFIG, "work directory %s: cannot open %s: %s", cfg->work_dir, name,
                      strerror(errno));
    goto fail_dir;
  }
  sp->lock_fd = openat(pfd, "lock", O_CREAT | O_EXCL | O_RDWR | O_NOFOLLOW | O_CLOEXEC, 0600);
  if (sp->lock_fd < 0 || flock(sp->lock_fd, LOCK_EX | LOCK_NB) != 0) {
    rc = cr_error_set(err, CR_ECONFIG, "work directory %s: cannot create the lock of %s: %s",
                      cfg->work_dir, name, strerror(errno));
    goto fail_dir;
  }
  /* A file the run files' way, now rather than at the first spill. */
  int probe = open(sp->dir, O_TMPFILE | O_RDWR | O_EXCL | O_CLOEXEC, 0600);
  if (probe < 0) {
    char path[4096];
    snprintf(path, sizeof path, "%s/run-XXXXXX", sp->dir);
    probe = mkostemp(path, O_CLOEXEC);
    if (probe >= 0)
      (void)unlink(path);
  }
  if (probe < 0) {
    rc = cr_error_set(err, CR_ECONFIG, "work directory %s: cannot create files in it: %s",
                      cfg->work_dir, strerror(errno));
    goto fail_dir;
  }
  close(probe);
  close(pfd);
  (void)flock(wfd, LOCK_UN);
  close(wfd);
  *out = sp;
  return 0;

fail_dir:
  if (pfd >= 0) {
    (void)unlinkat(pfd, "lock", 0);
    close(pfd);
  }
  if (wfd >= 0)
    (void)unlinkat(wfd, name, AT_REMOVEDIR);
fail:
  if (sp->lock_fd >= 0)
    close(sp->lock_fd);
  if (wfd >= 0)
    close(wfd);
  pthread_mutex_destroy(&sp->mu);
  free(sp->work_dir);
  free(sp->dir);
  free(sp);
  return rc;
}

void cr_spill_close(cr_spill *sp) {
  if (sp == NULL)
    return;
  char path[4096];
  snprintf(path, sizeof path, "%s/lock", sp->dir);
  (void)unlink(path);
  if (sp->lock_fd >= 0)
    close(sp->lock_fd);
  (void)rmdir(sp->dir);
  pthread_mutex_destroy(&sp->mu);
  free(sp->work_dir);
  free(sp->dir);
  free(sp);
}

/* ----------------------------------------------------------------- sorter */

/* A record in memory and in a run: key, payload length (LEB128, 1..3
 * bytes), payload. In memory the records sit in blocks; an index of
 * (key prefix, record) is what gets sorted. */
typedef struct block {
  size_t cap, used;
  uint8_t data[];
} block;

typedef struct entry {
  uint64_t prefix; /* the key's first 8 bytes, big-endian: most comparisons end here */
  const uint8_t *rec;
} entry;

typedef struct run {
  uint64_t off, len; /* bytes of the file: header and chunks */
  uint64_t count;    /* records */
  uint64_t id;       /* the chunks' additional data: a run cannot pass for another */
} run;

struct cr_sorter {
  cr_spill *sp;
  size_t key_bytes;
  char what[128];
  uint64_t count;
  int finished, spilled;
  uint64_t reserved; /* of the budget: blocks, index, write buffers */
  uint64_t limit;    /* most bytes of blocks and index; 0: the budget alone */
  uint64_t punched;  /* bytes of the runs a consuming iterator gave back */
  int consumed;      /* read by a consuming iterator: no other may start */

  block **blocks;
  size_t nblocks, blocks_cap, cur;
  size_t block_bytes;
  entry *idx;
  size_t n, idx_cap;

  uint8_t *key; /* sodium_malloc'ed */
  int fd;       /* the runs, one after another; -1 before the first */
  uint64_t file_end;
  run *runs;
  size_t nruns, runs_cap;
  uint64_t next_run_id;
  unsigned passes;
  uint8_t *wplain, *wcipher; /* write buffers, CHUNK and CHUNK + ABYTES */
};

static void *buf_alloc(size_t n) {
  if (n < MAP_FROM)
    return malloc(n);
  void *p = mmap(NULL, n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED)
    return NULL;
#ifdef MADV_DONTDUMP
  (void)madvise(p, n, MADV_DONTDUMP); /* records derive from match keys: no core dump */
#endif
  return p;
}

static void buf_free(void *p, size_t n) {
  if (p == NULL)
    return;
  if (n < MAP_FROM)
    free(p);
  else
    (void)munmap(p, n);
}

static size_t varint_len(size_t v) { return v < 0x80 ? 1 : v < 0x4000 ? 2 : 3; }

static size_t varint_put(uint8_t *p, size_t v) {
  size_t i = 0;
  while (v >= 0x80) {
    p[i++] = (uint8_t)(v | 0x80);
    v >>= 7;
  }
  p[i++] = (uint8_t)v;
  return i;
}

/* Decodes at most `avail` bytes: the length used, 0 when incomplete, or
 * SIZE_MAX when malformed. */
static size_t varint_get(const uint8_t *p, size_t avail, size_t *v) {
  size_t x = 0;
  for (size_t i = 0; i < VARINT_MAX; i++) {
    if (i >= avail)
      return 0;
    x |= (size_t)(p[i] & 0x7f) << (7 * i);
    if (!(p[i] & 0x80)) {
      if (x > CR_SORTER_MAX_PAYLOAD || (i > 0 && p[i] == 0))
        return SIZE_MAX;
      *v = x;
      return i + 1;
    }
  }
  return SIZE_MAX;
}

static uint64_t key_prefix(const uint8_t *k, size_t kb) {
  uint64_t p = 0;
  size_t m = kb < 8 ? kb : 8;
  for (size_t i = 0; i < 8; i++)
    p = (p << 8) | (i < m ? k[i] : 0);
  return p;
}

/* A record's parts, from its bytes in memory. */
static void rec_decode(const uint8_t *rec, size_t kb, const uint8_t **payload, size_t *plen,
                       size_t *total) {
  size_t v = 0;
  size_t vl = varint_get(rec + kb, VARINT_MAX, &v);
  *payload = rec + kb + vl;
  *plen = v;
  *total = kb + vl + v;
}

static uint64_t buffer_bytes(const cr_sorter *s);

static int sorter_take(cr_sorter *s, uint64_t n, int force) {
  if (!force && s->limit && buffer_bytes(s) + n > s->limit)
    return 0;
  if (!mem_take(s->sp, n, force))
    return 0;
  s->reserved += n;
  return 1;
}

static void sorter_give(cr_sorter *s, uint64_t n) {
  mem_give(s->sp, n);
  s->reserved = n <= s->reserved ? s->reserved - n : 0;
}

int cr_sorter_new(cr_sorter **out, cr_spill *sp, size_t key_bytes, const char *what,
                  cr_error *err) {
  *out = NULL;
  if (key_bytes > CR_SORTER_MAX_KEY)
    return cr_error_set(err, CR_EINVAL, "a sorter key of %zu bytes (at most %d)", key_bytes,
                        CR_SORTER_MAX_KEY);
  if (sodium_init() < 0)
    return cr_error_set(err, CR_ECRYPTO, "libsodium failed to initialize");
  cr_sorter *s = calloc(1, sizeof *s);
  if (s == NULL)
    return cr_error_set(err, CR_ENOMEM, "out of memory");
  s->sp = sp;
  s->key_bytes = key_bytes;
  s->fd = -1;
  snprintf(s->what, sizeof s->what, "%s", what ? what : "a table");
  s->key = sodium_malloc(crypto_secretstream_xchacha20poly1305_KEYBYTES);
  if (s->key == NULL) {
    free(s);
    return cr_error_set(err, CR_ENOMEM, "out of memory");
  }
  crypto_secretstream_xchacha20poly1305_keygen(s->key);
  *out = s;
  return 0;
}

void cr_sorter_set_limit(cr_sorter *s, uint64_t bytes) {
  if (s == NULL || s->sp == NULL)
    return;
  s->limit = bytes == 0 ? 0 : bytes < MIN_BYTES ? MIN_BYTES : bytes;
}

uint64_t cr_sorter_count(const cr_sorter *s) { return s ? s->count : 0; }
int cr_sorter_spilled(const cr_sorter *s) { return s ? s->spilled : 0; }

static void wipe_buffer(cr_sorter *s) {
  for (size_t i = 0; i < s->nblocks; i++) {
    sodium_memzero(s->blocks[i]->data, s->blocks[i]->used);
    s->blocks[i]->used = 0;
  }
  if (s->idx)
    sodium_memzero(s->idx, s->n * sizeof *s->idx);
  s->n = 0;
  s->cur = 0;
}

static void free_buffer(cr_sorter *s) {
  wipe_buffer(s);
  for (size_t i = 0; i < s->nblocks; i++)
    buf_free(s->blocks[i], sizeof *s->blocks[i] + s->blocks[i]->cap);
  free(s->blocks);
  s->blocks = NULL;
  sorter_give(s, s->block_bytes);
  s->nblocks = s->blocks_cap = s->block_bytes = 0;
  buf_free(s->idx, s->idx_cap * sizeof *s->idx);
  s->idx = NULL;
  sorter_give(s, (uint64_t)s->idx_cap * 2 * sizeof(entry));
  s->idx_cap = 0;
}

/* Stable merge sort of the index by key (insertion order breaks ties,
 * since the index is in insertion order and merging prefers the left). */
static inline int entry_less(const entry *a, const entry *b, size_t kb) {
  if (a->prefix != b->prefix)
    return a->prefix < b->prefix;
  return kb > 8 && memcmp(a->rec + 8, b->rec + 8, kb - 8) < 0;
}

static void sort_entries(entry *a, entry *tmp, size_t n, size_t kb) {
  const size_t small = 24;
  for (size_t lo = 0; lo < n; lo += small) {
    size_t hi = lo + small < n ? lo + small : n;
    for (size_t i = lo + 1; i < hi; i++) {
      entry x = a[i];
      size_t j = i;
      while (j > lo && entry_less(&x, &a[j - 1], kb)) {
        a[j] = a[j - 1];
        j--;
      }
      a[j] = x;
    }
  }
  entry *src = a, *dst = tmp;
  for (size_t w = small; w < n; w *= 2) {
    for (size_t lo = 0; lo < n; lo += 2 * w) {
      size_t mid = lo + w < n ? lo + w : n;
      size_t hi = lo + 2 * w < n ? lo + 2 * w : n;
      size_t i = lo, j = mid, k = lo;
      if (mid == hi || !entry_less(&src[mid], &src[mid - 1], kb)) {
        memcpy(dst + lo, src + lo, (hi - lo) * sizeof *src); /* already in order */
        continue;
      }
      while (i < mid && j < hi)
        dst[k++] = entry_less(&src[j], &src[i], kb) ? src[j++] : src[i++];
      while (i < mid)
        dst[k++] = src[i++];
      while (j < hi)
        dst[k++] = src[j++];
    }
    entry *t = src;
    src = dst;
    dst = t;
  }
  if (src != a)
    memcpy(a, src, n * sizeof *a);
}

/* LSD radix sort of the index by the key prefix (stable: a counting sort
 * per byte keeps the order of equal bytes), bytes that are the same in
 * every entry skipped; then a stable merge sort of each group of equal
 * prefixes by the rest of the key (keys longer than 8 bytes). */
static void sort_index(entry *a, entry *tmp, size_t n, size_t kb) {
  size_t m = kb < 8 ? kb : 8;
  size_t(*hist)[256] = calloc(8, sizeof *hist);
  if (hist == NULL) {
    sort_entries(a, tmp, n, kb); /* no memory for the counts: the slower way */
    return;
  }
  for (size_t i = 0; i < n; i++) {
    uint64_t p = a[i].prefix;
    for (size_t d = 0; d < m; d++)
      hist[d][(p >> (56 - 8 * d)) & 0xff]++;
  }
  entry *src = a, *dst = tmp;
  for (size_t d = m; d-- > 0;) {
    size_t *h = hist[d];
    unsigned shift = (unsigned)(56 - 8 * d);
    if (h[(src[0].prefix >> shift) & 0xff] == n)
      continue; /* every entry has the same byte here */
    size_t sum = 0;
    for (size_t b = 0; b < 256; b++) {
      size_t c = h[b];
      h[b] = sum;
      sum += c;
    }
    for (size_t i = 0; i < n; i++)
      dst[h[(src[i].prefix >> shift) & 0xff]++] = src[i];
    entry *t = src;
    src = dst;
    dst = t;
  }
  free(hist);
  if (src != a)
    memcpy(a, src, n * sizeof *a);
  if (kb > 8) {
    for (size_t lo = 0; lo < n;) {
      size_t hi = lo + 1;
      while (hi < n && a[hi].prefix == a[lo].prefix)
        hi++;
      if (hi - lo > 1)
        sort_entries(a + lo, tmp, hi - lo, kb);
      lo = hi;
    }
  }
  sodium_memzero(tmp, n * sizeof *tmp);
}

static int sort_buffer(cr_sorter *s, cr_error *err) {
  if (s->key_bytes == 0 || s->n < 2)
    return 0;
  /* The scratch half was reserved with the index (2 entries a record). */
  entry *tmp = buf_alloc(s->n * sizeof *tmp);
  if (tmp == NULL)
    return cr_error_set(err, CR_ENOMEM, "out of memory sorting %s", s->what);
  sort_index(s->idx, tmp, s->n, s->key_bytes);
  buf_free(tmp, s->n * sizeof *tmp);
  return 0;
}

static int write_buffer_run(cr_sorter *s, cr_error *err);

/* The records' memory: blocks and index (with the sort's scratch half). */
static uint64_t buffer_bytes(const cr_sorter *s) {
  return s->block_bytes + (uint64_t)s->idx_cap * 2 * sizeof(entry);
}

static int grow_idx(cr_sorter *s, int force) {
  size_t ncap = s->idx_cap ? s->idx_cap * 2 : IDX_FIRST;
  uint64_t extra = (uint64_t)(ncap - s->idx_cap) * 2 * sizeof(entry);
  if (!sorter_take(s, extra, force)) {
    if (s->idx_cap == 0)
      return 0;
    ncap = s->idx_cap + s->idx_cap / 4; /* a smaller step before giving up */
    extra = (uint64_t)(ncap - s->idx_cap) * 2 * sizeof(entry);
    if (!sorter_take(s, extra, force))
      return 0;
  }
  entry *p = buf_alloc(ncap * sizeof *p);
  if (p == NULL) {
    sorter_give(s, extra);
    return -1;
  }
  if (s->n)
    memcpy(p, s->idx, s->n * sizeof *p);
  if (s->idx) {
    sodium_memzero(s->idx, s->n * sizeof *s->idx);
    buf_free(s->idx, s->idx_cap * sizeof *s->idx);
  }
  s->idx = p;
  s->idx_cap = ncap;
  return 1;
}

static int add_block(cr_sorter *s, size_t need, int force) {
  size_t size = s->block_bytes < BLOCK_FIRST ? BLOCK_FIRST : s->block_bytes;
  if (size > BLOCK_MAX)
    size = BLOCK_MAX;
  if (size < need)
    size = need;
  if (!sorter_take(s, size, force))
    return 0;
  if (s->nblocks == s->blocks_cap) {
    size_t nc = s->blocks_cap ? s->blocks_cap * 2 : 16;
    block **nb = realloc(s->blocks, nc * sizeof(block *));
    if (nb == NULL) {
      sorter_give(s, size);
      return -1;
    }
    s->blocks = nb;
    s->blocks_cap = nc;
  }
  block *b = buf_alloc(sizeof *b + size);
  if (b == NULL) {
    sorter_give(s, size);
    return -1;
  }
  b->cap = size;
  b->used = 0;
  s->blocks[s->nblocks++] = b;
  s->block_bytes += size;
  return 1;
}

int cr_sorter_add(cr_sorter *s, const void *key, const void *payload, size_t payload_len,
                  cr_error *err) {
  if (s->finished)
    return cr_error_set(err, CR_EINVAL, "%s: a record added after the sort was finished", s->what);
  if (payload_len > CR_SORTER_MAX_PAYLOAD)
    return cr_error_set(err, CR_EINVAL, "%s: a record of %zu bytes (at most %d)", s->what,
                        payload_len, CR_SORTER_MAX_PAYLOAD);
  if ((key == NULL && s->key_bytes) || (payload == NULL && payload_len))
    return cr_error_set(err, CR_EINVAL, "%s: a record without its bytes", s->what);
  size_t kb = s->key_bytes;
  size_t need = kb + varint_len(payload_len) + payload_len;
  block *b = NULL;
  for (;;) {
    while (s->cur < s->nblocks && s->blocks[s->cur]->cap - s->blocks[s->cur]->used < need) {
      if (s->cur + 1 == s->nblocks)
        break;
      s->cur++;
    }
    b = s->cur < s->nblocks ? s->blocks[s->cur] : NULL;
    if (b && b->cap - b->used < need)
      b = NULL;
    int idx_room = s->n < s->idx_cap;
    if (b && idx_room)
      break;
    int r = !idx_room ? grow_idx(s, 0) : add_block(s, need, 0);
    if (r < 0)
      return cr_error_set(err, CR_ENOMEM, "out of memory for %s", s->what);
    if (r > 0) {
      if (idx_room)
        s->cur = s->nblocks - 1;
      continue;
    }
    /* The budget is spent: write a run if we hold our minimum, else take it. */
    if (s->sp && s->n > 0 && buffer_bytes(s) >= MIN_BYTES) {
      int rc = write_buffer_run(s, err);
      if (rc)
        return rc;
      continue;
    }
    r = !idx_room ? grow_idx(s, 1) : add_block(s, need, 1);
    if (r < 0)
      return cr_error_set(err, CR_ENOMEM, "out of memory for %s", s->what);
    if (idx_room)
      s->cur = s->nblocks - 1;
  }
  uint8_t *p = b->data + b->used;
  if (kb)
    memcpy(p, key, kb);
  size_t vl = varint_put(p + kb, payload_len);
  if (payload_len)
    memcpy(p + kb + vl, payload, payload_len);
  b->used += need;
  s->idx[s->n].prefix = key_prefix(p, kb);
  s->idx[s->n].rec = p;
  s->n++;
  s->count++;
  return 0;
}

/* ------------------------------------------------------------ runs: write */

/* A size as people read it: KiB below 1 MiB, then MiB. */
static void size_text(char *out, size_t cap, uint64_t n) {
  if (n < (1u << 20))
    snprintf(out, cap, "%.0f KiB", (double)n / 1024.0);
  else if (n % (1u << 20) == 0)
    snprintf(out, cap, "%llu MiB", (unsigned long long)(n >> 20));
  else
    snprintf(out, cap, "%.1f MiB", (double)n / MIB);
}

static int full_error(cr_sorter *s, cr_error *err) {
  cr_spill_stats st;
  cr_spill_stats_get(s->sp, &st);
  char got[32];
  size_text(got, sizeof got, st.disk_now);
  return cr_error_set(err, CR_EIO,
                      "work directory %s is full: %s spilled by this node; free space there, "
                      "give --work-dir a larger disk, or raise --memory",
                      s->sp->work_dir, got);
}

/* Writes n bytes at off, counting them against the disk cap first. */
static int disk_write(cr_sorter *s, int fd, const uint8_t *buf, size_t n, uint64_t off,
                      cr_error *err) {
  cr_spill *sp = s->sp;
  pthread_mutex_lock(&sp->mu);
  int over = sp->disk_max && (sp->disk_now > sp->disk_max || n > sp->disk_max - sp->disk_now);
  uint64_t now = sp->disk_now;
  pthread_mutex_unlock(&sp->mu);
  if (over) {
    char lim[32], got[32];
    size_text(lim, sizeof lim, sp->disk_max);
    size_text(got, sizeof got, now);
    return cr_error_set(err, CR_EIO,
                        "work directory %s: reached the spill limit of %s (%s spilled by this "
                        "node); raise the limit or --memory",
                        sp->work_dir, lim, got);
  }
  size_t done = 0;
  while (done < n) {
    ssize_t w = pwrite(fd, buf + done, n - done, (off_t)(off + done));
    if (w < 0 && errno == EINTR)
      continue;
    if (w < 0 && (errno == ENOSPC || errno == EDQUOT))
      return full_error(s, err);
    if (w <= 0)
      return cr_error_set(err, CR_EIO, "work directory %s: cannot write the spill of %s: %s",
                          sp->work_dir, s->what, w < 0 ? strerror(errno) : "nothing written");
    done += (size_t)w;
  }
  pthread_mutex_lock(&sp->mu);
  sp->disk_now += n;
  if (sp->disk_now > sp->disk_peak)
    sp->disk_peak = sp->disk_now;
  sp->disk_written += n;
  pthread_mutex_unlock(&sp->mu);
  return 0;
}

static int open_run_file(cr_sorter *s, int *fd, cr_error *err) {
  const char *dir = s->sp->dir;
  int f = open(dir, O_TMPFILE | O_RDWR | O_EXCL | O_CLOEXEC, 0600);
  if (f < 0 && errno != ENOSPC && errno != EDQUOT) {
    /* No O_TMPFILE on this file system: a named file, unlinked at once. */
    char path[4096];
    snprintf(path, sizeof path, "%s/run-XXXXXX", dir);
    f = mkostemp(path, O_CLOEXEC);
    if (f >= 0) {
      (void)unlink(path);
      (void)fchmod(f, 0600);
    }
  }
  if (f < 0) {
    if (errno == ENOSPC || errno == EDQUOT)
      return full_error(s, err);
    return cr_error_set(err, CR_EIO, "work directory %s: cannot create a spill file for %s: %s",
                        s->sp->work_dir, s->what, strerror(errno));
  }
  *fd = f;
  return 0;
}

typedef struct writer {
  cr_sorter *s;
  int fd;
  stream_state st;
  uint64_t start, pos; /* file offsets */
  size_t plen;
  uint64_t count, id;
  uint8_t ad[8];
} writer;

static void put_u64le(uint8_t *p, uint64_t v) {
  for (int i = 0; i < 8; i++)
    p[i] = (uint8_t)(v >> (8 * i));
}

static int write_buffers(cr_sorter *s, cr_error *err) {
  if (s->wplain)
    return 0;
  (void)sorter_take(s, 2 * CHUNK + ABYTES, 1);
  s->wplain = malloc(CHUNK);
  s->wcipher = malloc(CHUNK + ABYTES);
  if (s->wplain == NULL || s->wcipher == NULL)
    return cr_error_set(err, CR_ENOMEM, "out of memory for %s", s->what);
  return 0;
}

static void free_write_buffers(cr_sorter *s) {
  if (s->wplain) {
    sodium_memzero(s->wplain, CHUNK);
    free(s->wplain);
  }
  free(s->wcipher);
  if (s->wplain || s->wcipher)
    sorter_give(s, 2 * CHUNK + ABYTES);
  s->wplain = s->wcipher = NULL;
}

static int writer_begin(writer *w, cr_sorter *s, int fd, uint64_t off, cr_error *err) {
  int rc = write_buffers(s, err);
  if (rc)
    return rc;
  w->s = s;
  w->fd = fd;
  w->start = w->pos = off;
  w->plen = 0;
  w->count = 0;
  w->id = s->next_run_id++;
  put_u64le(w->ad, w->id);
  uint8_t header[crypto_secretstream_xchacha20poly1305_HEADERBYTES];
  crypto_secretstream_xchacha20poly1305_init_push(&w->st, header, s->key);
  rc = disk_write(s, w->fd, header, sizeof header, w->pos, err);
  if (rc)
    return rc;
  w->pos += sizeof header;
  return 0;
}

static int writer_flush(writer *w, unsigned char tag, cr_error *err) {
  cr_sorter *s = w->s;
  unsigned long long clen = 0;
  crypto_secretstream_xchacha20poly1305_push(&w->st, s->wcipher, &clen, s->wplain, w->plen, w->ad,
                                             sizeof w->ad, tag);
  sodium_memzero(s->wplain, w->plen);
  w->plen = 0;
  int rc = disk_write(s, w->fd, s->wcipher, (size_t)clen, w->pos, err);
  if (rc)
    return rc;
  w->pos += clen;
  return 0;
}

/* A chunk is written once more bytes follow it, so the last one can carry
 * the final tag. */
static int writer_put(writer *w, const uint8_t *p, size_t n, cr_error *err) {
  while (n) {
    if (w->plen == CHUNK) {
      int rc = writer_flush(w, crypto_secretstream_xchacha20poly1305_TAG_MESSAGE, err);
      if (rc)
        return rc;
    }
    size_t m = CHUNK - w->plen < n ? CHUNK - w->plen : n;
    memcpy(w->s->wplain + w->plen, p, m);
    w->plen += m;
    p += m;
    n -= m;
  }
  return 0;
}

static int writer_end(writer *w, run *out, cr_error *err) {
  int rc = writer_flush(w, crypto_secretstream_xchacha20poly1305_TAG_FINAL, err);
  sodium_memzero(&w->st, sizeof w->st);
  if (rc)
    return rc;
  out->off = w->start;
  out->len = w->pos - w->start;
  out->count = w->count;
  out->id = w->id;
  cr_spill *sp = w->s->sp;
  pthread_mutex_lock(&sp->mu);
  sp->runs_written++;
  pthread_mutex_unlock(&sp->mu);
  return 0;
}

static void writer_abort(writer *w) {
  sodium_memzero(&w->st, sizeof w->st);
  if (w->s && w->s->wplain)
    sodium_memzero(w->s->wplain, CHUNK);
  w->plen = 0;
}

static int push_run(run **runs, size_t *n, size_t *cap, const run *r) {
  if (*n == *cap) {
    size_t nc = *cap ? *cap * 2 : 16;
    run *p = realloc(*runs, nc * sizeof *p);
    if (p == NULL)
      return CR_ENOMEM;
    *runs = p;
    *cap = nc;
  }
  (*runs)[(*n)++] = *r;
  return 0;
}

/* Sorts the buffer, writes it as the next run, and empties it (wiped). */
static int write_buffer_run(cr_sorter *s, cr_error *err) {
  int rc = sort_buffer(s, err);
  if (rc)
    return rc;
  if (s->fd < 0) {
    rc = open_run_file(s, &s->fd, err);
    if (rc)
      return rc;
  }
  writer w = {0};
  rc = writer_begin(&w, s, s->fd, s->file_end, err);
  for (size_t i = 0; rc == 0 && i < s->n; i++) {
    if (i + 8 < s->n)
      __builtin_prefetch(s->idx[i + 8].rec);
    const uint8_t *pl;
    size_t plen, total;
    rec_decode(s->idx[i].rec, s->key_bytes, &pl, &plen, &total);
    rc = writer_put(&w, s->idx[i].rec, total, err);
    w.count++;
  }
  run r;
  if (rc == 0)
    rc = writer_end(&w, &r, err);
  if (rc == 0)
    s->file_end = w.pos;
  if (rc == 0 && push_run(&s->runs, &s->nruns, &s->runs_cap, &r) != 0)
    rc = cr_error_set(err, CR_ENOMEM, "out of memory for %s", s->what);
  if (rc) {
    /* What the failed run wrote is cut off (space back to a full disk). */
    writer_abort(&w);
    if (w.pos > s->file_end) {
      (void)ftruncate(s->fd, (off_t)s->file_end);
      disk_give(s->sp, w.pos - s->file_end);
    }
    return rc;
  }
  s->spilled = 1;
  wipe_buffer(s);
  return 0;
}

/* ------------------------------------------------------------- runs: read */

typedef struct reader {
  const cr_sorter *s;
  int fd;
  stream_state st;
  uint64_t off, end; /* the next chunk's offset, the run's end */
  uint64_t hole;     /* consuming: the run is given back up to here */
  int consume;       /* give back each chunk once read (cr_sorter_iter_consume) */
  uint64_t left;     /* records not yet read */
  uint8_t ad[8];
  int final;
  uint8_t *plain; /* CHUNK */
  size_t pos, len;
  uint8_t *rec; /* a record that spans chunks */
  size_t rec_cap;
  const uint8_t *key, *payload;
  size_t payload_len;
} reader;

static int damaged(const cr_sorter *s, cr_error *err) {
  return cr_error_set(err, CR_EIO, "spill run of %s is damaged or truncated", s->what);
}

static int read_exact(const cr_sorter *s, int fd, uint8_t *buf, size_t n, uint64_t off,
                      cr_error *err) {
  size_t done = 0;
  while (done < n) {
    ssize_t r = pread(fd, buf + done, n - done, (off_t)(off + done));
    if (r < 0 && errno == EINTR)
      continue;
    if (r < 0)
      return cr_error_set(err, CR_EIO, "work directory %s: cannot read the spill of %s: %s",
                          s->sp->work_dir, s->what, strerror(errno));
    if (r == 0)
      return damaged(s, err);
    done += (size_t)r;
  }
  return 0;
}

static int reader_open(reader *r, const cr_sorter *s, int fd, const run *rn, cr_error *err) {
  memset(r, 0, sizeof *r);
  r->s = s;
  r->fd = fd;
  r->plain = malloc(CHUNK);
  if (r->plain == NULL)
    return cr_error_set(err, CR_ENOMEM, "out of memory reading %s", s->what);
  r->off = rn->off;
  r->hole = rn->off;
  r->end = rn->off + rn->len;
  r->left = rn->count;
  put_u64le(r->ad, rn->id);
  uint8_t header[crypto_secretstream_xchacha20poly1305_HEADERBYTES];
  if (rn->len < HBYTES)
    return damaged(s, err);
  int rc = read_exact(s, r->fd, header, sizeof header, r->off, err);
  if (rc)
    return rc;
  r->off += sizeof header;
  if (crypto_secretstream_xchacha20poly1305_init_pull(&r->st, header, s->key) != 0)
    return damaged(s, err);
  return 0;
}

static void reader_close(reader *r) {
  sodium_memzero(&r->st, sizeof r->st);
  if (r->plain) {
    sodium_memzero(r->plain, CHUNK);
    free(r->plain);
  }
  if (r->rec) {
    sodium_memzero(r->rec, r->rec_cap);
    free(r->rec);
  }
  r->plain = r->rec = NULL;
}

/* A consuming reader gives back the file's blocks it has read: whole
 * blocks inside this run only (a hole in a shared block would zero the
 * neighbouring run's bytes). A file system without holes keeps them. */
static void reader_punch(reader *r) {
  const uint64_t blk = 4096;
  uint64_t lo = (r->hole + blk - 1) / blk * blk, hi = r->off / blk * blk;
  if (hi <= lo)
    return;
  if (fallocate(r->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)lo, (off_t)(hi - lo)) !=
      0) {
    r->consume = 0;
    return;
  }
  cr_sorter *s = (cr_sorter *)r->s; /* one thread at a time per sorter */
  s->punched += hi - lo;
  disk_give(s->sp, hi - lo);
  r->hole = hi;
}

/* Decrypts the next chunk (verified) into plain; cipher is scratch. */
static int reader_refill(reader *r, uint8_t *cipher, cr_error *err) {
  const cr_sorter *s = r->s;
  if (r->final || r->off >= r->end)
    return damaged(s, err);
  uint64_t rem = r->end - r->off;
  size_t clen = rem < CHUNK + ABYTES ? (size_t)rem : CHUNK + ABYTES;
  if (clen < ABYTES)
    return damaged(s, err);
  int rc = read_exact(s, r->fd, cipher, clen, r->off, err);
  if (rc)
    return rc;
  unsigned long long mlen = 0;
  unsigned char tag = 0;
  if (crypto_secretstream_xchacha20poly1305_pull(&r->st, r->plain, &mlen, &tag, cipher, clen, r->ad,
                                                 sizeof r->ad) != 0)
    return damaged(s, err);
  r->off += clen;
  if (tag == crypto_secretstream_xchacha20poly1305_TAG_FINAL) {
    if (r->off != r->end)
      return damaged(s, err);
    r->final = 1;
  } else if (tag != crypto_secretstream_xchacha20poly1305_TAG_MESSAGE) {
    return damaged(s, err);
  }
  r->pos = 0;
  r->len = (size_t)mlen;
  if (r->consume)
    reader_punch(r);
  return 0;
}

/* Copies n bytes of the stream, across chunks. */
static int reader_take(reader *r, uint8_t *dst, size_t n, uint8_t *cipher, cr_error *err) {
  while (n) {
    if (r->pos == r->len) {
      int rc = reader_refill(r, cipher, err);
      if (rc)
        return rc;
      continue;
    }
    size_t m = r->len - r->pos < n ? r->len - r->pos : n;
    memcpy(dst, r->plain + r->pos, m);
    r->pos += m;
    dst += m;
    n -= m;
  }
  return 0;
}

/* 1 with the next record in r->key/payload, 0 at the run's verified end. */
static int reader_next(reader *r, uint8_t *cipher, cr_error *err) {
  const cr_sorter *s = r->s;
  size_t kb = s->key_bytes;
  if (r->left == 0) {
    if (r->pos != r->len)
      return damaged(s, err);
    while (!r->final) { /* a final chunk may still be due (never empty when we write) */
      int rc = reader_refill(r, cipher, err);
      if (rc)
        return rc;
      if (r->len)
        return damaged(s, err);
    }
    if (r->consume)
      reader_punch(r); /* the last chunk, and a run of one chunk */
    return 0;
  }
  if (r->pos == r->len) {
    int rc = reader_refill(r, cipher, err);
    if (rc)
      return rc;
  }
  size_t avail = r->len - r->pos;
  const uint8_t *p = r->plain + r->pos;
  size_t v = 0, vl = 0;
  if (avail > kb) {
    vl = varint_get(p + kb, avail - kb, &v);
    if (vl == SIZE_MAX)
      return damaged(s, err);
  }
  if (vl && kb + vl + v <= avail) {
    r->key = p;
    r->payload = p + kb + vl;
    r->payload_len = v;
    r->pos += kb + vl + v;
    r->left--;
    return 1;
  }
  /* The record spans chunks: gather it. */
  if (r->rec_cap < kb + VARINT_MAX) {
    size_t cap = 256;
    uint8_t *nb = malloc(cap);
    if (nb == NULL)
      return cr_error_set(err, CR_ENOMEM, "out of memory reading %s", s->what);
    free(r->rec);
    r->rec = nb;
    r->rec_cap = cap;
  }
  int rc = reader_take(r, r->rec, kb, cipher, err);
  if (rc)
    return rc;
  uint8_t vb[VARINT_MAX];
  vl = 0;
  for (;;) {
    if (vl == VARINT_MAX)
      return damaged(s, err);
    rc = reader_take(r, vb + vl, 1, cipher, err);
    if (rc)
      return rc;
    vl++;
    size_t got = varint_get(vb, vl, &v);
    if (got == SIZE_MAX)
      return damaged(s, err);
    if (got)
      break;
  }
  if (r->rec_cap < kb + v) {
    size_t cap = kb + v;
    uint8_t *nb = malloc(cap);
    if (nb == NULL)
      return cr_error_set(err, CR_ENOMEM, "out of memory reading %s", s->what);
    memcpy(nb, r->rec, kb);
    sodium_memzero(r->rec, r->rec_cap);
    free(r->rec);
    r->rec = nb;
    r->rec_cap = cap;
  }
  rc = reader_take(r, r->rec + kb, v, cipher, err);
  if (rc)
    return rc;
  r->key = r->rec;
  r->payload = r->rec + kb;
  r->payload_len = v;
  r->left--;
  return 1;
}

/* A k-way merge of runs: a heap of readers ordered by (key, run order). */
typedef struct heap_item {
  uint64_t prefix; /* of the reader's current key */
  size_t run;      /* the reader */
} heap_item;

typedef struct merger {
  const cr_sorter *s;
  reader *r;
  size_t k;
  heap_item *heap;
  size_t hn;
  int started;
  uint8_t *cipher;   /* CHUNK + ABYTES, shared by the readers */
  uint64_t reserved; /* of the budget */
} merger;

static inline int heap_less(const merger *m, const heap_item *a, const heap_item *b) {
  if (a->prefix != b->prefix)
    return a->prefix < b->prefix;
  size_t kb = m->s->key_bytes;
  size_t ra = a->run, rb = b->run;
  int c = kb > 8 ? memcmp(m->r[ra].key + 8, m->r[rb].key + 8, kb - 8) : 0;
  return c < 0 || (c == 0 && ra < rb);
}

static inline heap_item heap_entry(const merger *m, size_t i) {
  heap_item e = {key_prefix(m->r[i].key, m->s->key_bytes), i};
  return e;
}

static void heap_down(merger *m, size_t i) {
  for (;;) {
    size_t l = 2 * i + 1, best = i;
    if (l < m->hn && heap_less(m, &m->heap[l], &m->heap[best]))
      best = l;
    if (l + 1 < m->hn && heap_less(m, &m->heap[l + 1], &m->heap[best]))
      best = l + 1;
    if (best == i)
      return;
    heap_item t = m->heap[i];
    m->heap[i] = m->heap[best];
    m->heap[best] = t;
    i = best;
  }
}

static uint64_t reader_cost(void) { return CHUNK + sizeof(reader) + 256; }

static void merger_close(merger *m) {
  for (size_t i = 0; i < m->k; i++)
    reader_close(&m->r[i]);
  free(m->r);
  if (m->heap)
    sodium_memzero(m->heap, m->k * sizeof *m->heap); /* key prefixes */
  free(m->heap);
  free(m->cipher);
  if (m->s)
    mem_give(m->s->sp, m->reserved);
  memset(m, 0, sizeof *m);
}

static int merger_open(merger *m, const cr_sorter *s, const run *runs, size_t k, cr_error *err) {
  memset(m, 0, sizeof *m);
  m->s = s;
  m->reserved = k * reader_cost() + CHUNK + ABYTES;
  (void)mem_take(s->sp, m->reserved, 1); /* a merge cannot do without its readers */
  m->r = calloc(k ? k : 1, sizeof *m->r);
  m->heap = calloc(k ? k : 1, sizeof *m->heap);
  m->cipher = malloc(CHUNK + ABYTES);
  if (m->r == NULL || m->heap == NULL || m->cipher == NULL) {
    merger_close(m);
    return cr_error_set(err, CR_ENOMEM, "out of memory reading %s", s->what);
  }
  m->k = k;
  int rc = 0;
  for (size_t i = 0; rc == 0 && i < k; i++)
    rc = reader_open(&m->r[i], s, s->fd, &runs[i], err);
  for (size_t i = 0; rc == 0 && i < k; i++) {
    int got = reader_next(&m->r[i], m->cipher, err);
    if (got < 0)
      rc = got;
    else if (got)
      m->heap[m->hn++] = heap_entry(m, i);
  }
  if (rc) {
    merger_close(m);
    return rc;
  }
  for (size_t i = m->hn / 2; i-- > 0;)
    heap_down(m, i);
  return 0;
}

static int merger_next(merger *m, const uint8_t **key, const uint8_t **payload, size_t *plen,
                       cr_error *err) {
  if (m->started && m->hn) {
    size_t top = m->heap[0].run;
    int got = reader_next(&m->r[top], m->cipher, err);
    if (got < 0)
      return got;
    if (got)
      m->heap[0] = heap_entry(m, top);
    else
      m->heap[0] = m->heap[--m->hn];
    heap_down(m, 0);
  }
  m->started = 1;
  if (m->hn == 0)
    return 0;
  const reader *r = &m->r[m->heap[0].run];
  *key = r->key;
  *payload = r->payload;
  *plen = r->payload_len;
  return 1;
}

/* How many runs one merge may read at once within what the budget has left. */
static size_t fan_in(cr_sorter *s, uint64_t extra) {
  uint64_t avail = mem_available(s->sp);
  avail = avail > UINT64_MAX - extra ? UINT64_MAX : avail + extra;
  avail = avail > CHUNK + ABYTES ? avail - (CHUNK + ABYTES) : 0;
  uint64_t f = avail / reader_cost();
  if (f < 2)
    f = 2;
  if (f > 4096)
    f = 4096;
  return (size_t)f;
}

/* One pass: groups of at most f runs merged into runs of a new file. */
static int merge_pass(cr_sorter *s, size_t f, cr_error *err) {
  size_t groups = (s->nruns + f - 1) / f;
  int nfd = -1;
  run *out = NULL;
  size_t nout = 0, cap = 0;
  uint64_t end = 0; /* of the new file */
  int rc = open_run_file(s, &nfd, err);
  if (rc)
    return rc;
  size_t at = 0;
  for (size_t g = 0; rc == 0 && g < groups; g++) {
    /* Even groups, in run order: ties still go to the earlier run. */
    size_t size = (s->nruns - at) / (groups - g);
    merger m;
    rc = merger_open(&m, s, s->runs + at, size, err);
    if (rc)
      break;
    writer w = {0};
    rc = writer_begin(&w, s, nfd, end, err);
    const uint8_t *key = NULL, *pl = NULL;
    size_t plen = 0;
    int got = 0;
    while (rc == 0 && (got = merger_next(&m, &key, &pl, &plen, err)) == 1) {
      uint8_t vb[VARINT_MAX];
      size_t vl = varint_put(vb, plen);
      rc = writer_put(&w, key, s->key_bytes, err);
      if (rc == 0)
        rc = writer_put(&w, vb, vl, err);
      if (rc == 0)
        rc = writer_put(&w, pl, plen, err);
      w.count++;
    }
    if (rc == 0 && got < 0)
      rc = got;
    run r;
    if (rc == 0)
      rc = writer_end(&w, &r, err);
    else
      writer_abort(&w);
    end = w.pos;
    merger_close(&m);
    if (rc == 0 && push_run(&out, &nout, &cap, &r) != 0)
      rc = cr_error_set(err, CR_ENOMEM, "out of memory for %s", s->what);
    at += size;
  }
  if (rc) {
    close(nfd);
    disk_give(s->sp, end);
    free(out);
    return rc;
  }
  close(s->fd);
  disk_give(s->sp, s->file_end);
  s->fd = nfd;
  s->file_end = end;
  free(s->runs);
  s->runs = out;
  s->nruns = nout;
  s->runs_cap = cap;
  s->passes++;
  return 0;
}

int cr_sorter_finish(cr_sorter *s, cr_error *err) {
  if (s->finished)
    return 0;
  int rc;
  if (!s->spilled) {
    rc = sort_buffer(s, err);
    if (rc)
      return rc;
    s->finished = 1;
    return 0;
  }
  if (s->n) {
    rc = write_buffer_run(s, err);
    if (rc)
      return rc;
  }
  free_buffer(s);
  /* Merge until the runs fit the budget's readers; the write buffers are
   * given back after, so they count as available to the iterators. */
  while (s->key_bytes && s->nruns > fan_in(s, s->wplain ? 2 * CHUNK + ABYTES : 0)) {
    rc = merge_pass(s, fan_in(s, 0), err);
    if (rc)
      return rc;
  }
  free_write_buffers(s);
  s->finished = 1;
  return 0;
}

/* -------------------------------------------------------------- iterators */

/* A log (key of 0 bytes) needs no merge: its runs are read one after
 * another, one reader at a time. */
struct cr_sorter_iter {
  cr_sorter *s;
  size_t i; /* in memory: the next index entry; a spilled log: the run being read */
  int merging;
  int failed;  /* a spilled log whose next run could not be opened */
  int consume; /* cr_sorter_iter_consume */
  merger m;
};

int cr_sorter_iter_new(cr_sorter *s, cr_sorter_iter **out, cr_error *err) {
  *out = NULL;
  if (!s->finished)
    return cr_error_set(err, CR_EINVAL, "%s: read before the sort was finished", s->what);
  if (s->consumed)
    return cr_error_set(err, CR_EINVAL, "%s: already read once and given back", s->what);
  cr_sorter_iter *it = calloc(1, sizeof *it);
  if (it == NULL)
    return cr_error_set(err, CR_ENOMEM, "out of memory reading %s", s->what);
  it->s = s;
  if (s->spilled) {
    int rc = merger_open(&it->m, s, s->runs, s->key_bytes ? s->nruns : 1, err);
    if (rc) {
      free(it);
      return rc;
    }
    it->merging = 1;
  }
  *out = it;
  return 0;
}

int cr_sorter_iter_next(cr_sorter_iter *it, const uint8_t **key, const uint8_t **payload,
                        size_t *payload_len, cr_error *err) {
  const cr_sorter *s = it->s;
  while (it->merging) {
    int r = merger_next(&it->m, key, payload, payload_len, err);
    if (r != 0 || s->key_bytes || it->i + 1 >= s->nruns)
      return r;
    merger_close(&it->m);
    it->merging = 0;
    it->i++;
    r = merger_open(&it->m, s, s->runs + it->i, 1, err);
    if (r) {
      it->failed = r; /* and stays failed */
      return r;
    }
    it->m.r[0].consume = it->consume;
    it->merging = 1;
  }
  if (it->failed)
    return cr_error_set(err, it->failed, "%s could not be read to its end", s->what);
  if (it->i >= s->n)
    return 0;
  if (it->i + 8 < s->n)
    __builtin_prefetch(s->idx[it->i + 8].rec);
  const uint8_t *rec = s->idx[it->i++].rec;
  size_t total;
  *key = rec;
  rec_decode(rec, s->key_bytes, payload, payload_len, &total);
  return 1;
}

void cr_sorter_iter_consume(cr_sorter_iter *it) {
  it->s->consumed = 1;
  it->consume = 1;
  for (size_t i = 0; it->merging && i < it->m.k; i++)
    it->m.r[i].consume = 1;
}

void cr_sorter_iter_free(cr_sorter_iter *it) {
  if (it == NULL)
    return;
  if (it->merging)
    merger_close(&it->m);
  free(it);
}

void cr_sorter_free(cr_sorter *s) {
  if (s == NULL)
    return;
  free_buffer(s);
  free_write_buffers(s);
  if (s->fd >= 0) {
    close(s->fd);
    disk_give(s->sp, s->file_end - s->punched);
  }
  free(s->runs);
  sodium_free(s->key);
  free(s);
}

/* -------------------------------------------------------------- test hooks */

int cr__sorter_run_fd(const cr_sorter *s) { return s->fd; }
size_t cr__sorter_runs(const cr_sorter *s) { return s->nruns; }
int cr__sorter_run_span(const cr_sorter *s, size_t i, uint64_t *offset, uint64_t *len) {
  if (i >= s->nruns)
    return CR_EINVAL;
  *offset = s->runs[i].off;
  *len = s->runs[i].len;
  return 0;
}
unsigned cr__sorter_merge_passes(const cr_sorter *s) { return s->passes; }
