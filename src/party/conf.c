/*
 * collaboration.conf: one collaboration's own settings, next to its
 * template in a `serve --collaborations DIR` sub-directory.
 *
 *   # DIR/brightguard/collaboration.conf
 *   data  = /srv/exports/customers.csv
 *   # or a database: data = sqlite:exports.db (or a postgresql:// URI,
 *   # never with a password) with data_query = SELECT email, region FROM t
 *   # delimiter = ;   (a CSV's separator: , ; tab |; detected when absent)
 *   audit = /var/lib/cleanroom/brightguard.audit.jsonl
 *   max_sessions = 4
 *   # memory = 64        (MiB: this collaboration's sessions get a budget of
 *   #                     their own, at most the node's --memory)
 *   # work_dir = /scratch/brightguard   (where they spill; default the node's)
 *
 * One `key = value` per line, as the node's --config file: blank lines and
 * lines starting with # are ignored, a value may be wrapped in double
 * quotes, relative paths are relative to the collaboration's directory, and
 * an unknown key, a key given twice, a bad value or a line without `=` is
 * an error naming the file, the line and the key. Keys may be written with
 * `_` or `-` (max_sessions, max-sessions).
 *
 * The keys are the table KEYS below: adding one is a line there and a
 * field in cr_collab_conf (party_internal.h), then using it.
 */
#include <errno.h>
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "party/party_internal.h"

typedef enum key_kind {
  K_PATH,    /* a file name, relative to the collaboration's directory */
  K_RATIO,   /* a number from 0 to 1 */
  K_COUNT,   /* a whole number within [min, max] */
  K_SECONDS, /* a whole number of seconds within [min, max], kept in ms */
  K_BOOL,    /* true/false, yes/no, on/off, 1/0 */
  K_SOURCE,  /* a data source: a CSV path or sqlite:PATH (relative to the
              * directory), or a postgresql:// URI (as is) */
  K_TEXT,    /* text kept as written (a data query) */
  K_DELIM    /* a CSV's separator: , ; tab | (or comma, semicolon, pipe) */
} key_kind;

typedef struct conf_key {
  const char *name;
  key_kind kind;
  size_t offset; /* of the field in cr_collab_conf */
  unsigned long min, max;
  int required;
} conf_key;

#define F(field) offsetof(cr_collab_conf, field)
static const conf_key KEYS[] = {
    {"data", K_SOURCE, F(data), 0, 0, 1},
    {"data_query", K_TEXT, F(data_query), 0, 0, 0},
    {"delimiter", K_DELIM, F(delimiter), 0, 0, 0},
    {"audit", K_PATH, F(audit), 0, 0, 0},
    {"max_sessions", K_COUNT, F(max_sessions), 1, 100000, 0},
    {"timeout", K_SECONDS, F(timeout_ms), 1, 86400, 0},
    {"max_reject_ratio", K_RATIO, F(max_reject_ratio), 0, 0, 0},
    {"enabled", K_BOOL, F(enabled), 0, 0, 0},
    /* Issue 17 (docs/memory.md): MiB, and where its sessions spill. */
    {"memory", K_COUNT, F(memory_mib), 1, 16u << 20, 0},
    {"work_dir", K_PATH, F(work_dir), 0, 0, 0},
};
#undef F
#define NKEYS (sizeof KEYS / sizeof *KEYS)

const char *cr__collab_conf_keys(void) {
  static char buf[256];
  if (buf[0] == '\0') {
    size_t len = 0;
    for (size_t i = 0; i < NKEYS; i++)
      len += (size_t)snprintf(buf + len, sizeof buf - len, "%s%s", i ? ", " : "", KEYS[i].name);
  }
  return buf;
}

void cr__collab_conf_free(cr_collab_conf *c) {
  free(c->data);
  free(c->data_query);
  free(c->audit);
  free(c->work_dir);
  memset(c, 0, sizeof *c);
}

static char *trim(char *s) {
  while (*s == ' ' || *s == '\t')
    s++;
  size_t n = strlen(s);
  while (n > 0 && (s[n - 1] == ' ' || s[n - 1] == '\t' || s[n - 1] == '\r'))
    s[--n] = '\0';
  return s;
}

static int bool_value(const char *v, int *out) {
  static const char *yes[] = {"true", "yes", "on", "1"}, *no[] = {"false", "no", "off", "0"};
  for (size_t i = 0; i < 4; i++) {
    if (strcasecmp(v, yes[i]) == 0) {
      *out = 1;
      return 0;
    }
    if (strcasecmp(v, no[i]) == 0) {
      *out = 0;
      return 0;
    }
  }
  return -1;
}

/* A value a note was written after ("30  # seconds", "4   (its cap)"):
 * comments are whole lines, so the note is part of the value. */
#define COMMENT_HINT "; a comment goes on a line of its own, starting with #"
static int trailing_comment(const char *val) {
  for (const char *p = val; *p; p++)
    if ((*p == ' ' || *p == '\t') && (p[1] == '#' || p[1] == '(' || p[1] == ' ' || p[1] == '\t'))
      return 1;
  return 0;
}

/* Sets one key from its text. 0, or a message in why. */
static int set_value(const conf_key *k, const char *val, const char *basedir, cr_collab_conf *c,
                     char *why, size_t cap) {
  char *field = (char *)c + k->offset;
  char *end = NULL;
  switch (k->kind) {
  case K_SOURCE:
  case K_PATH: {
    char *p;
    /* sqlite:PATH keeps its prefix, its PATH taken from basedir as a file's */
    const char *prefix = "", *path = val;
    if (k->kind == K_SOURCE && cr_source_kind_of(val) == CR_SOURCE_POSTGRESQL) {
      path = NULL;
    } else if (k->kind == K_SOURCE && strncmp(val, "sqlite:", 7) == 0) {
      prefix = "sqlite:";
      path = val + 7;
    }
    if (path == NULL || path[0] == '/' || path[0] == '\0' || basedir == NULL ||
        basedir[0] == '\0') {
      p = strdup(val);
    } else {
      size_t n = strlen(prefix) + strlen(basedir) + 1 + strlen(path) + 1;
      p = malloc(n);
      if (p != NULL)
        snprintf(p, n, "%s%s/%s", prefix, basedir, path);
    }
    if (p == NULL)
      return CR_ENOMEM;
    *(char **)(void *)field = p;
    return 0;
  }
  case K_RATIO: {
    errno = 0;
    double v = strtod(val, &end);
    if (errno || end == val || *end || !isfinite(v) || v < 0 || v > 1) {
      snprintf(why, cap, "takes a number from 0 to 1, got \"%.64s\"", val);
      return CR_ECONFIG;
    }
    /* 0 from a person means no rejected row at all; the party's 0 is its
     * default. */
    *(double *)(void *)field = v > 0 ? v : -1.0;
    return 0;
  }
  case K_COUNT:
  case K_SECONDS: {
    unsigned long v = 0;
    int bad = val[0] == '-' || val[0] == '+' || val[0] == ' ';
    if (!bad) {
      errno = 0;
      v = strtoul(val, &end, 10);
      bad = errno != 0 || end == val || *end != '\0';
    }
    if (bad || v < k->min || v > k->max) {
      snprintf(why, cap, "takes %s from %lu to %lu, got \"%.64s\"",
               k->kind == K_SECONDS ? "seconds" : "a whole number", k->min, k->max, val);
      return CR_ECONFIG;
    }
    *(unsigned *)(void *)field = (unsigned)(k->kind == K_SECONDS ? v * 1000u : v);
    return 0;
  }
  case K_TEXT: {
    char *p = strdup(val);
    if (p == NULL)
      return CR_ENOMEM;
    *(char **)(void *)field = p;
    return 0;
  }
  case K_DELIM: {
    char d = 0;
    if (strcmp(val, ",") == 0 || strcasecmp(val, "comma") == 0)
      d = ',';
    else if (strcmp(val, ";") == 0 || strcasecmp(val, "semicolon") == 0)
      d = ';';
    else if (strcmp(val, "\\t") == 0 || strcasecmp(val, "tab") == 0)
      d = '\t';
    else if (strcmp(val, "|") == 0 || strcasecmp(val, "pipe") == 0)
      d = '|';
    if (d == 0) {
      snprintf(why, cap, "takes \",\", \";\", \"tab\" or \"|\", got \"%.64s\"", val);
      return CR_ECONFIG;
    }
    *field = d;
    return 0;
  }
  case K_BOOL: {
    int on;
    if (bool_value(val, &on) != 0) {
      snprintf(why, cap, "takes true or false, got \"%.64s\"", val);
      return CR_ECONFIG;
    }
    *(int *)(void *)field = on;
    return 0;
  }
  }
  return CR_EINTERNAL;
}

int cr__collab_conf_parse(const char *text, size_t len, const char *origin, const char *basedir,
                          cr_collab_conf *c, cr_error *err) {
  int rc = 0;
  unsigned long seen[NKEYS] = {0};
  memset(c, 0, sizeof *c);
  c->enabled = 1;
  if (memchr(text, '\0', len) != NULL)
    return cr_error_set(err, CR_ECONFIG, "%s: holds a NUL byte: not a text file", origin);
  char *copy = malloc(len + 1);
  if (copy == NULL)
    return cr_error_set(err, CR_ENOMEM, "out of memory");
  memcpy(copy, text, len);
  copy[len] = '\0';
  unsigned long lineno = 0;
  char *next = copy;
  while (rc == 0 && next != NULL && *next != '\0') {
    char *line = next;
    char *nl = strchr(line, '\n');
    next = nl ? nl + 1 : NULL;
    if (nl)
      *nl = '\0';
    lineno++;
    char *s = trim(line);
    if (*s == '\0' || *s == '#')
      continue;
    char *eq = strchr(s, '=');
    if (eq == NULL) {
      rc = cr_error_set(err, CR_ECONFIG, "%s:%lu: expected `key = value`, got \"%.80s\"", origin,
                        lineno, s);
      break;
    }
    *eq = '\0';
    char *key = trim(s), *val = trim(eq + 1);
    size_t vlen = strlen(val);
    if (vlen >= 2 && val[0] == '"' && val[vlen - 1] == '"') {
      val[vlen - 1] = '\0';
      val++;
    }
    for (char *p = key; *p; p++)
      if (*p == '-')
        *p = '_';
    size_t k = 0;
    while (k < NKEYS && strcmp(KEYS[k].name, key) != 0)
      k++;
    if (k == NKEYS) {
      rc = cr_error_set(err, CR_ECONFIG, "%s:%lu: unknown key \"%.64s\"; the keys are: %s", origin,
                        lineno, key, cr__collab_conf_keys());
      break;
    }
    if (seen[k]) {
      rc = cr_error_set(err, CR_ECONFIG, "%s:%lu: \"%s\" is given twice (first on line %lu)",
                        origin, lineno, key, seen[k]);
      break;
    }
    seen[k] = lineno;
    if (*val == '\0') {
      rc = cr_error_set(err, CR_ECONFIG, "%s:%lu: \"%s\" has no value", origin, lineno, key);
      break;
    }
    char why[200] = "";
    int src = set_value(&KEYS[k], val, basedir, c, why, sizeof why);
    if (src == CR_ENOMEM)
      rc = cr_error_set(err, CR_ENOMEM, "out of memory");
    else if (src != 0)
      rc = cr_error_set(err, CR_ECONFIG, "%s:%lu: \"%s\" %s%s", origin, lineno, key, why,
                        trailing_comment(val) ? COMMENT_HINT : "");
  }
  for (size_t k = 0; k < NKEYS; k++)
    if (strcmp(KEYS[k].name, "memory") == 0)
      c->memory_line = seen[k];
  for (size_t k = 0; rc == 0 && k < NKEYS; k++)
    if (KEYS[k].required && !seen[k])
      rc = cr_error_set(err, CR_ECONFIG,
                        "%s: no \"%s = ...\" line; it is required (the keys are: %s)", origin,
                        KEYS[k].name, cr__collab_conf_keys());
  if (rc == 0) {
    /* The source's keys together: a data_query for a database, none for a
     * CSV, a delimiter for a CSV only, no password in a URI. */
    cr_source_options so = {c->data_query, c->delimiter};
    cr_error se;
    cr_error_clear(&se);
    int src = cr_source_validate(c->data, &so, &se);
    if (src == CR_ENOMEM)
      rc = cr_error_set(err, CR_ENOMEM, "out of memory");
    else if (src != 0)
      rc = cr_error_set(err, CR_ECONFIG, "%s: data (line %lu): %s", origin, seen[0],
                        cr_error_message(&se, src));
  }
  free(copy);
  if (rc)
    cr__collab_conf_free(c);
  return rc;
}

int cr__collab_conf_load(const char *path, const char *basedir, cr_collab_conf *c, cr_error *err) {
  char *text = NULL;
  size_t len = 0;
  cr_error rerr;
  cr_error_clear(&rerr);
  memset(c, 0, sizeof *c);
  int rc = cr_read_file(path, 1u << 20, &text, &len, &rerr);
  if (rc == CR_ENOMEM)
    return cr_error_set(err, rc, "out of memory");
  if (rc != 0)
    return cr_error_set(err, CR_ECONFIG, "%s", rerr.msg);
  rc = cr__collab_conf_parse(text, len, path, basedir, c, err);
  free(text);
  return rc;
}
