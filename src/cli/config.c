/*
 * --config FILE for serve, run and data check: the node's options in a
 * file, so a long-running node (a systemd unit, say) need not repeat its
 * flags, and its data can be checked with the very same file.
 *
 *   # /etc/cleanroom/serve.conf
 *   collaborations = /etc/cleanroom/collaborations
 *   identity       = /var/lib/cleanroom/identity
 *   listen         = 0.0.0.0:7443
 *   json           = true
 *
 * One `key = value` per line; the keys are the long option names without
 * the dashes (data_query is data-query). Blank lines and lines starting
 * with # are ignored; a value may be wrapped in double quotes (to keep
 * leading or trailing spaces). Flags (json, once, quiet) take true/false,
 * yes/no, on/off or 1/0. Relative paths (template, collaborations,
 * identity, data, audit, work-dir) are relative to the file's directory (for data: a
 * CSV path or the path of sqlite:PATH; a postgresql:// URI is taken as
 * is). (A collaboration's own settings are in its collaboration.conf, read
 * by the party layer: src/party/conf.c.) Options given on the command line
 * override the file's. An unknown key, a key that does not apply to the
 * command, a key given twice or a line without `=` is an error naming the
 * file and the line.
 *
 * How: the file's options are put in front of the command line's, so the
 * usual option parser reads both and the later (command-line) value wins.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "cli/cli.h"

typedef struct cfg_key {
  const char *name;
  int is_flag;    /* no value on the command line */
  int is_path;    /* relative to the config file's directory */
  int serve, run; /* applies to */
  /* `data check --config`: 1 applies; 0 skipped, so that the node's own
   * serve or run file can be checked as is (its network keys mean nothing
   * to a check). */
  int check;
} cfg_key;

static const cfg_key KEYS[] = {
    {"template", 0, 1, 1, 1, 1},
    {"collaborations", 0, 1, 1, 0, 0},
    {"identity", 0, 1, 1, 1, 1},
    {"data", 0, 1, 1, 1, 1},
    /* The data source's options (issue 16); "data_query" is the same key. */
    {"data-query", 0, 0, 1, 1, 1},
    {"delimiter", 0, 0, 1, 1, 1},
    {"listen", 0, 0, 1, 0, 0},
    {"peer", 0, 0, 0, 1, 0},
    {"query", 0, 0, 0, 1, 1},
    {"audit", 0, 1, 1, 1, 1},
    {"threads", 0, 0, 1, 1, 0},
    {"max-sessions", 0, 0, 1, 0, 0},
    {"timeout", 0, 0, 1, 1, 0},
    {"retry", 0, 0, 0, 1, 0},
    {"max-reject-ratio", 0, 0, 1, 1, 1},
    {"json", 1, 0, 1, 1, 1},
    {"once", 1, 0, 1, 0, 0},
    {"quiet", 1, 0, 1, 1, 0},
    /* Issue 17: the memory budget (MiB), the work directory, the disk cap. */
    {"memory", 0, 0, 1, 1, 1},
    {"work-dir", 0, 1, 1, 1, 1},
    {"spill-max", 0, 0, 1, 1, 1},
};
#define NKEYS (sizeof KEYS / sizeof *KEYS)

/* Whole-number keys, checked here so that a bad value names the file,
 * the line and the key (the command line would name only the flag). */
static const struct {
  const char *name, *what;
  unsigned long min, max;
} NUMBERS[] = {
    {"memory", "MiB", 1, CR_CLI_MEMORY_MAX_MIB},
    {"threads", "a number", 1, 256},
    {"max-sessions", "a number", 1, 100000},
    {"timeout", "seconds", 1, 86400},
    {"retry", "a number", 0, 100},
};

/* A value a note was written after ("30  # seconds", "16   (the node's
 * cap)"): comments are whole lines, so the note is part of the value and
 * the error says so. */
static const char *comment_hint(const char *val) {
  for (const char *p = val; *p; p++)
    if ((*p == ' ' || *p == '\t') && (p[1] == '#' || p[1] == '(' || p[1] == ' ' || p[1] == '\t'))
      return "; a comment goes on a line of its own, starting with #";
  return "";
}

/* 0, or -1 with the error printed. */
static int check_number(const char *cmd, const char *path, unsigned long lineno, const char *key,
                        const char *val) {
  uint64_t size;
  /* The other keys whose value the command line would refuse naming only
   * its flag: a ratio, a delimiter, an address. */
  if (strcmp(key, "max-reject-ratio") == 0) {
    char *end = NULL;
    errno = 0;
    double r = strtod(val, &end);
    if (errno || end == val || *end || !(r >= 0 && r <= 1)) {
      cr_cli_errorf(cmd, "%s:%lu: \"%s\" takes a number from 0 to 1, got \"%.64s\"%s", path, lineno,
                    key, val, comment_hint(val));
      return -1;
    }
  }
  if (strcmp(key, "delimiter") == 0) {
    static const char *ok[] = {",", ";", "|", "\\t", "comma", "semicolon", "tab", "pipe"};
    size_t i = 0;
    while (i < sizeof ok / sizeof *ok && strcasecmp(val, ok[i]) != 0)
      i++;
    if (i == sizeof ok / sizeof *ok) {
      cr_cli_errorf(cmd,
                    "%s:%lu: \"delimiter\" takes \",\", \";\", \"tab\" or \"|\", got \"%.64s\"%s",
                    path, lineno, val, comment_hint(val));
      return -1;
    }
  }
  if (strcmp(key, "listen") == 0 || strcmp(key, "peer") == 0) {
    cr_error e;
    cr_error_clear(&e);
    int arc = cr_node_check_address(val, &e);
    if (arc != 0) {
      cr_cli_errorf(cmd, "%s:%lu: \"%s\": %s%s", path, lineno, key, cr_error_message(&e, arc),
                    comment_hint(val));
      return -1;
    }
  }
  if (strcmp(key, "spill-max") == 0 && cr_cli_parse_size(val, &size) != 0) {
    cr_cli_errorf(cmd,
                  "%s:%lu: \"spill-max\" takes MiB or a size with a unit (64K, 512M, 2G), "
                  "got \"%.64s\"%s",
                  path, lineno, val, comment_hint(val));
    return -1;
  }
  for (size_t i = 0; i < sizeof NUMBERS / sizeof *NUMBERS; i++) {
    if (strcmp(NUMBERS[i].name, key) != 0)
      continue;
    char *end = NULL;
    errno = 0;
    unsigned long v = strtoul(val, &end, 10);
    if (errno || end == val || *end || val[0] == '-' || val[0] == '+' || v < NUMBERS[i].min ||
        v > NUMBERS[i].max) {
      cr_cli_errorf(cmd, "%s:%lu: \"%s\" takes %s from %lu to %lu, got \"%.64s\"%s", path, lineno,
                    key, NUMBERS[i].what, NUMBERS[i].min, NUMBERS[i].max, val, comment_hint(val));
      return -1;
    }
  }
  return 0;
}

/* The rewritten argv and its strings live until the process exits: the
 * option parser hands out pointers into them. Kept reachable from here. */
static char **g_argv;
static char *g_strings[2 * NKEYS];
static size_t g_nstrings;

static char *keep(char *s) {
  if (s == NULL)
    return NULL;
  if (g_nstrings == sizeof g_strings / sizeof *g_strings) {
    free(s); /* not reached: a file gives at most two strings a key; fail as out of memory */
    return NULL;
  }
  g_strings[g_nstrings++] = s;
  return s;
}

static char *trim(char *s) {
  while (*s == ' ' || *s == '\t')
    s++;
  size_t n = strlen(s);
  while (n > 0 && (s[n - 1] == ' ' || s[n - 1] == '\t' || s[n - 1] == '\r' || s[n - 1] == '\n'))
    s[--n] = '\0';
  return s;
}

static int flag_value(const char *v, int *out) {
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

/* 0 serve, 1 run, 2 data check. */
static int cmd_mode(const char *cmd) {
  return strcmp(cmd, "serve") == 0 ? 0 : strcmp(cmd, "run") == 0 ? 1 : 2;
}

static int applies(const cfg_key *k, int mode) {
  return mode == 0 ? k->serve : mode == 1 ? k->run : 1; /* check: known keys, some skipped */
}

static void known_keys(const char *cmd, char *buf, size_t cap) {
  int mode = cmd_mode(cmd);
  buf[0] = '\0';
  for (size_t i = 0; i < NKEYS; i++) {
    if (!applies(&KEYS[i], mode) || (mode == 2 && !KEYS[i].check))
      continue;
    size_t len = strlen(buf);
    snprintf(buf + len, cap - len, "%s%s", len ? ", " : "", KEYS[i].name);
  }
}

/* "--key" and, unless a flag, its value, appended to opts. 0 or -1 (error
 * printed). */
static int parse_file(const char *cmd, const char *path, char **opts, size_t *nopts) {
  int mode = cmd_mode(cmd);
  FILE *f = fopen(path, "r");
  if (f == NULL) {
    cr_cli_errorf(cmd, "cannot read the config file %s: %s", path, strerror(errno));
    return -1;
  }
  /* Directory of the file, for relative paths. */
  const char *slash = strrchr(path, '/');
  size_t dirlen = slash ? (size_t)(slash - path) + 1 : 0;
  int seen[NKEYS] = {0};
  char line[4096];
  unsigned long lineno = 0;
  int rc = 0;
  while (rc == 0 && fgets(line, sizeof line, f) != NULL) {
    lineno++;
    if (strchr(line, '\n') == NULL && !feof(f)) {
      cr_cli_errorf(cmd, "%s:%lu: line longer than %zu bytes", path, lineno, sizeof line - 2);
      rc = -1;
      break;
    }
    char *s = trim(line);
    if (*s == '\0' || *s == '#')
      continue;
    char *eq = strchr(s, '=');
    if (eq == NULL) {
      cr_cli_errorf(cmd, "%s:%lu: expected `key = value`, got \"%.80s\"", path, lineno, s);
      rc = -1;
      break;
    }
    *eq = '\0';
    char *key = trim(s), *val = trim(eq + 1);
    size_t vlen = strlen(val);
    if (vlen >= 2 && val[0] == '"' && val[vlen - 1] == '"') {
      val[vlen - 1] = '\0';
      val++;
    }
    if (key[0] == '-' && key[1] == '-')
      key += 2; /* "--template = x" is forgiven */
    for (char *u = key; *u; u++)
      if (*u == '_')
        *u = '-'; /* data_query = data-query */
    size_t k = 0;
    while (k < NKEYS && strcmp(KEYS[k].name, key) != 0)
      k++;
    if (k == NKEYS) {
      char known[400];
      known_keys(cmd, known, sizeof known);
      cr_cli_errorf(cmd, "%s:%lu: unknown key \"%.64s\"; %s takes: %s", path, lineno, key, cmd,
                    known);
      rc = -1;
      break;
    }
    if (!applies(&KEYS[k], mode)) {
      cr_cli_errorf(cmd, "%s:%lu: \"%s\" does not apply to %s (it is for %s)", path, lineno, key,
                    cmd, mode == 0 ? "run" : "serve");
      rc = -1;
      break;
    }
    if (seen[k]) {
      cr_cli_errorf(cmd, "%s:%lu: \"%s\" is given twice (first on line %d)", path, lineno, key,
                    seen[k]);
      rc = -1;
      break;
    }
    seen[k] = (int)lineno;
    if (*val == '\0') {
      cr_cli_errorf(cmd, "%s:%lu: \"%s\" has no value", path, lineno, key);
      rc = -1;
      break;
    }
    if (mode == 2 && !KEYS[k].check)
      continue; /* a node's key a check has no use for */
    if (check_number(cmd, path, lineno, key, val) != 0) {
      rc = -1;
      break;
    }
    if (KEYS[k].is_flag) {
      int on;
      if (flag_value(val, &on) != 0) {
        cr_cli_errorf(cmd, "%s:%lu: \"%s\" takes true or false, got \"%.64s\"%s", path, lineno, key,
                      val, comment_hint(val));
        rc = -1;
        break;
      }
      if (!on)
        continue;
    }
    size_t olen = strlen(key) + 3;
    char *opt = keep(malloc(olen));
    if (opt == NULL) {
      rc = -1;
      break;
    }
    snprintf(opt, olen, "--%s", key);
    opts[(*nopts)++] = opt;
    if (KEYS[k].is_flag)
      continue;
    char *v;
    /* data may name a database: a URI is not a path, and sqlite:PATH's
     * path is relative like any other. */
    const char *prefix = "", *rel = val;
    cr_source_kind kind =
        strcmp(KEYS[k].name, "data") == 0 ? cr_source_kind_of(val) : CR_SOURCE_CSV;
    if (kind == CR_SOURCE_SQLITE) {
      prefix = "sqlite:";
      rel = val + 7;
    }
    if (KEYS[k].is_path && kind != CR_SOURCE_POSTGRESQL && rel[0] != '/' && rel[0] != '\0' &&
        dirlen > 0) {
      size_t n = strlen(prefix) + dirlen + strlen(rel) + 1;
      v = keep(malloc(n));
      if (v)
        snprintf(v, n, "%s%.*s%s", prefix, (int)dirlen, path, rel);
    } else {
      v = keep(strdup(val));
    }
    if (v == NULL) {
      rc = -1;
      break;
    }
    opts[(*nopts)++] = v;
  }
  if (rc == 0 && ferror(f)) {
    cr_cli_errorf(cmd, "cannot read the config file %s: %s", path, strerror(errno));
    rc = -1;
  }
  fclose(f);
  return rc;
}

int cr_cli_config_apply(const char *cmd, int *argc, char ***argv) {
  const char *path = NULL;
  int at = -1, width = 0;
  for (int i = 1; i < *argc; i++) {
    const char *a = (*argv)[i];
    if (strcmp(a, "--") == 0)
      break;
    if (strcmp(a, "--config") == 0 || strncmp(a, "--config=", 9) == 0) {
      if (path != NULL) {
        cr_cli_errorf(cmd, "--config is given twice");
        return -1;
      }
      if (a[8] == '=') {
        path = a + 9;
        width = 1;
      } else if (i + 1 < *argc) {
        path = (*argv)[i + 1];
        width = 2;
      } else {
        cr_cli_errorf(cmd, "--config takes a FILE");
        return -1;
      }
      at = i;
      i += width - 1;
    }
  }
  if (path == NULL)
    return 0;
  if (*path == '\0') {
    cr_cli_errorf(cmd, "--config takes a FILE");
    return -1;
  }
  char *opts[2 * NKEYS];
  size_t nopts = 0;
  if (parse_file(cmd, path, opts, &nopts) != 0)
    return -1;
  /* argv[0], the file's options, then the command line without --config. */
  int n = *argc - width + (int)nopts;
  char **nv = calloc((size_t)n + 1, sizeof *nv);
  if (nv == NULL) {
    cr_cli_errorf(cmd, "out of memory");
    return -1;
  }
  int j = 0;
  nv[j++] = (*argv)[0];
  for (size_t i = 0; i < nopts; i++)
    nv[j++] = opts[i];
  for (int i = 1; i < *argc; i++) {
    if (i >= at && i < at + width)
      continue;
    nv[j++] = (*argv)[i];
  }
  nv[j] = NULL;
  free(g_argv);
  g_argv = nv;
  *argc = j;
  *argv = nv;
  return 0;
}
