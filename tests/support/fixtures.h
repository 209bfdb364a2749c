/*
 * Shared test fixtures: a temporary directory (and its recursive removal),
 * a provider and a consumer identity, a copy of an example template with
 * both fingerprints pinned (and optional edits), reading a whole file, and
 * looking up events in a JSONL audit log.
 *
 * Header-only, every function static. Nothing here asserts: each function
 * returns 0 / a value on success and -1 / NULL on failure, so a test says
 * what it expects (assert_int_equal(fx_tmpdir(...), 0)) and the helpers work
 * with or without cmocka. Needs the cleanroom net layer (identities) and
 * jansson, both of which every test linking cr_net or above has.
 */
#ifndef CR_TESTS_SUPPORT_FIXTURES_H
#define CR_TESTS_SUPPORT_FIXTURES_H

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>

#include "cleanroom/common.h"
#include "cleanroom/net.h"

#define FX_PATH_MAX 512

/* ---- directories ---------------------------------------------------------- */

/* A new directory $TMPDIR/cr_<tag>XXXXXX (or /tmp/...) in out. */
static inline int fx_tmpdir(char *out, size_t cap, const char *tag) {
  const char *base = getenv("TMPDIR");
  if (base == NULL || *base == '\0')
    base = "/tmp";
  int n = snprintf(out, cap, "%s/cr_%sXXXXXX", base, tag);
  if (n < 0 || (size_t)n >= cap)
    return -1;
  return mkdtemp(out) != NULL ? 0 : -1;
}

/* out = dir/name; NULL (and out "") if it does not fit in cap. */
static inline const char *fx_join(char *out, size_t cap, const char *dir, const char *name) {
  int n = snprintf(out, cap, "%s/%s", dir, name);
  if (n < 0 || (size_t)n >= cap) {
    if (cap > 0)
      out[0] = '\0';
    return NULL;
  }
  return out;
}

/* Removes path and, if it is a directory, everything under it (symbolic
 * links are removed, never followed). A missing path is not an error. */
static inline int fx_rmtree(const char *path) {
  struct stat st;
  if (lstat(path, &st) != 0)
    return 0;
  if (!S_ISDIR(st.st_mode))
    return unlink(path) == 0 ? 0 : -1;
  DIR *d = opendir(path);
  if (d == NULL)
    return -1;
  int rc = 0;
  struct dirent *e;
  while ((e = readdir(d)) != NULL) {
    if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
      continue;
    char sub[FX_PATH_MAX];
    int n = snprintf(sub, sizeof sub, "%s/%s", path, e->d_name);
    if (n < 0 || (size_t)n >= sizeof sub || fx_rmtree(sub) != 0)
      rc = -1;
  }
  closedir(d);
  if (rmdir(path) != 0)
    rc = -1;
  return rc;
}

/* ---- identities ------------------------------------------------------------- */

enum { FX_PROVIDER = 0, FX_CONSUMER = 1 };

typedef struct fx_parties {
  char dir[2][FX_PATH_MAX]; /* ROOT/provider-id, ROOT/consumer-id */
  uint8_t fp[2][CR_SHA256_BYTES];
  char hex[2][CR_SHA256_HEX_BYTES]; /* the fingerprints in hex, as templates pin them */
} fx_parties;

/* Generates a provider and a consumer identity under root (see fx_parties). */
static inline int fx_parties_generate(fx_parties *f, const char *root) {
  static const char *const names[2] = {"provider", "consumer"};
  memset(f, 0, sizeof *f);
  for (int i = 0; i < 2; i++) {
    cr_error err;
    cr_error_clear(&err);
    int n = snprintf(f->dir[i], sizeof f->dir[i], "%s/%s-id", root, names[i]);
    if (n < 0 || (size_t)n >= sizeof f->dir[i])
      return -1;
    if (cr_identity_generate(f->dir[i], names[i], f->fp[i], &err) != 0) {
      fprintf(stderr, "fx_parties_generate: %s\n", err.msg);
      return -1;
    }
    cr_hex_encode(f->hex[i], f->fp[i], CR_SHA256_BYTES);
  }
  return 0;
}

/* ---- templates ------------------------------------------------------------ */

/* CR_SOURCE_DIR/examples/<rel>, e.g. fx_example(buf, sizeof buf,
 * "overlap/template.json"). CR_SOURCE_DIR is defined by tests/CMakeLists.txt. */
static inline const char *fx_example(char *out, size_t cap, const char *rel) {
#ifdef CR_SOURCE_DIR
  int n = snprintf(out, cap, "%s/examples/%s", CR_SOURCE_DIR, rel);
#else
  int n = snprintf(out, cap, "examples/%s", rel);
#endif
  return n >= 0 && (size_t)n < cap ? out : NULL;
}

/*
 * Writes to out a copy of the template src with parties.provider.cert_sha256
 * and parties.consumer.cert_sha256 set to the given hex fingerprints, then
 * edits (a JSON object text, or NULL) merged in recursively, e.g.
 * "{\"limits\": {\"max_runs_per_query\": 2}}" or
 * "{\"require_signatures\": true}". A JSON null in edits deletes that key.
 */
static inline int fx_merge(json_t *dst, json_t *edits) {
  const char *k;
  json_t *v;
  json_object_foreach(edits, k, v) {
    json_t *cur = json_object_get(dst, k);
    int rc;
    if (json_is_null(v))
      rc = json_object_del(dst, k) == 0 ? 0 : -1;
    else if (json_is_object(v) && json_is_object(cur))
      rc = fx_merge(cur, v);
    else
      rc = json_object_set(dst, k, v);
    if (rc != 0)
      return -1;
  }
  return 0;
}

static inline int fx_pin_template(const char *src, const char *out, const char *provider_hex,
                                  const char *consumer_hex, const char *edits) {
  json_error_t je;
  json_t *t = json_load_file(src, 0, &je);
  if (t == NULL) {
    fprintf(stderr, "fx_pin_template: %s: %s\n", src, je.text);
    return -1;
  }
  int rc = -1;
  json_t *parties = json_object_get(t, "parties");
  json_t *p = json_object_get(parties, "provider"), *c = json_object_get(parties, "consumer");
  if (!json_is_object(p) || !json_is_object(c) ||
      json_object_set_new(p, "cert_sha256", json_string(provider_hex)) != 0 ||
      json_object_set_new(c, "cert_sha256", json_string(consumer_hex)) != 0)
    goto out;
  if (edits != NULL) {
    json_t *e = json_loads(edits, 0, &je);
    int mrc = json_is_object(e) ? fx_merge(t, e) : -1;
    json_decref(e);
    if (mrc != 0) {
      fprintf(stderr, "fx_pin_template: bad edits %s\n", edits);
      goto out;
    }
  }
  rc = json_dump_file(t, out, JSON_INDENT(2)) == 0 ? 0 : -1;
out:
  json_decref(t);
  return rc;
}

/* ---- files ---------------------------------------------------------------- */

/* The whole file, NUL-terminated (malloc'ed; *len without the NUL if len is
 * not NULL), or NULL if it cannot be read. */
static inline char *fx_read_file(const char *path, size_t *len) {
  FILE *f = fopen(path, "rb");
  if (f == NULL)
    return NULL;
  size_t cap = 4096, n = 0;
  char *b = malloc(cap);
  while (b != NULL) {
    size_t got = fread(b + n, 1, cap - n - 1, f);
    n += got;
    if (got == 0)
      break;
    if (cap - n - 1 == 0) {
      char *nb = realloc(b, cap * 2);
      if (nb == NULL) {
        free(b);
        b = NULL;
        break;
      }
      b = nb;
      cap *= 2;
    }
  }
  int bad = ferror(f);
  fclose(f);
  if (b == NULL || bad) {
    free(b);
    return NULL;
  }
  b[n] = '\0';
  if (len != NULL)
    *len = n;
  return b;
}

static inline int fx_exists(const char *path) {
  struct stat st;
  return lstat(path, &st) == 0;
}

/* ---- audit logs (JSON Lines) ------------------------------------------------ */

/* Walks the log: the index-th (0-based) entry named event goes to *found
 * (if found is not NULL), and their number to *count. Lines that do not
 * parse are skipped here: cr_audit_verify is what checks the log itself. */
static inline int fx__audit_scan(const char *path, const char *event, int index, json_t **found,
                                 int *count) {
  char *text = fx_read_file(path, NULL);
  *count = 0;
  if (text == NULL)
    return -1;
  for (char *line = text, *next; line != NULL && *line != '\0'; line = next) {
    next = strchr(line, '\n');
    if (next != NULL)
      *next++ = '\0';
    json_t *j = json_loads(line, 0, NULL);
    const char *ev = json_string_value(json_object_get(j, "event"));
    if (ev != NULL && strcmp(ev, event) == 0) {
      if (found != NULL && *count == index)
        *found = json_incref(j);
      (*count)++;
    }
    json_decref(j);
  }
  free(text);
  return 0;
}

/* The index-th (0-based) entry of the log named event, parsed (json_decref
 * it), or NULL if there is none. */
static inline json_t *fx_audit_event(const char *path, const char *event, int index) {
  json_t *found = NULL;
  int n;
  (void)fx__audit_scan(path, event, index, &found, &n);
  return found;
}

/* How many entries of the log are named event (0 when the file is missing). */
static inline int fx_audit_count(const char *path, const char *event) {
  int n;
  (void)fx__audit_scan(path, event, 0, NULL, &n);
  return n;
}

#endif
