/* Exit codes and error printing shared by every command. */
#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "cli/cli.h"

const char *cr_cli_safe(const char *s) {
  static char bufs[8][2048];
  static unsigned next;
  char *b = bufs[next++ % 8];
  return cr_text_clean(b, sizeof bufs[0], s);
}

json_t *cr_cli_jtext(const char *s) {
  json_t *j = json_string(cr_cli_safe(s));
  return j ? j : json_string("");
}

const char *cr_cli_prog = "cleanroom";

void cr_cli_set_prog(const char *name) { cr_cli_prog = name; }

void cr_cli_json_print(json_t *o) {
  char *text = json_dumps(o, JSON_COMPACT);
  printf("%s\n", text != NULL ? text : "{}");
  free(text);
  json_decref(o);
}

void cr_cli_errorf(const char *cmd, const char *fmt, ...) {
  va_list ap;
  fprintf(stderr, "%s %s: error: ", CR_CLI_PROG, cmd);
  va_start(ap, fmt);
  vfprintf(stderr, fmt, ap);
  va_end(ap);
  fputc('\n', stderr);
}

int cr_cli_parse_uint(const char *cmd, const char *opt, const char *what, const char *arg,
                      unsigned long min, unsigned long max, unsigned long *out) {
  char *end = NULL;
  errno = 0;
  unsigned long v = strtoul(arg, &end, 10);
  if (errno || end == arg || *end || arg[0] == '-' || v < min || v > max) {
    cr_cli_errorf(cmd, "%s takes %s %lu to %lu, got \"%s\"", opt, what, min, max, arg);
    return -1;
  }
  *out = v;
  return 0;
}

static int is_refusal_wire(int w) {
  return (w >= CR_WIRE_VERSION && w <= CR_WIRE_SIZE) || w == CR_WIRE_PARAMS || w == CR_WIRE_BUSY;
}

int cr_cli_exit_code(int rc, int wire) {
  /* Busy is not a refusal: the same run may succeed later. */
  if (rc != 0 && wire == CR_WIRE_BUSY)
    return EXIT_BUSY;
  switch (rc) {
  case 0:
    return EXIT_OK;
  case CR_EUSAGE:
  case CR_ECONFIG:
  case CR_ETEMPLATE:
  case CR_EINVAL:
    return EXIT_USAGE;
  case CR_EDATA:
    return EXIT_DATA;
  case CR_EREFUSED:
  case CR_EAUTH:
    return EXIT_REFUSED;
  case CR_EPEER:
    return is_refusal_wire(wire) ? EXIT_REFUSED : EXIT_NETWORK;
  case CR_ENET:
  case CR_EDNS:
  case CR_ECONNREFUSED:
  case CR_ECONNRESET:
  case CR_ETLS:
  case CR_ETIMEDOUT:
  case CR_EPROTO:
    return EXIT_NETWORK;
  case CR_EIO:
    /* Only local files give CR_EIO (the work directory, the audit log,
     * identity and output files): never the network. */
    return EXIT_STORAGE;
  default:
    return EXIT_INTERNAL;
  }
}

const char CR_CLI_EXIT_CODES_HELP[] =
    "Exit codes:\n"
    "  0  success (a suppressed result is a success)\n"
    "  1  internal error\n"
    "  2  usage or configuration error (flags, template, identity)\n"
    "  3  data error (CSV unreadable, missing column, too many rejected rows, an\n"
    "     audit log that does not verify)\n"
    "  4  refused by the template or by the partner (wrong template, certificate,\n"
    "     query, role, set size, run limit, privacy budget)\n"
    "  5  network, TLS or protocol failure, or timeout\n"
    "  6  the partner's node is busy (at its session limit): try again later\n"
    "     (run --retry N does)\n"
    "  7  local storage error: the work directory is full or the --spill-max cap\n"
    "     was reached, or a file the node must write (audit log, identity, output)\n"
    "     cannot be written; free space, move --work-dir, or raise --memory\n"
    "  130, 143  run stopped by SIGINT or SIGTERM (128 + the signal): the partner\n"
    "     was told ABORTED and the abort recorded; nothing was released\n";

int cr_cli_parse_delimiter(const char *cmd, const char *arg, char *out) {
  if (strcmp(arg, ",") == 0 || strcasecmp(arg, "comma") == 0)
    *out = ',';
  else if (strcmp(arg, ";") == 0 || strcasecmp(arg, "semicolon") == 0)
    *out = ';';
  else if (strcmp(arg, "\t") == 0 || strcmp(arg, "\\t") == 0 || strcasecmp(arg, "tab") == 0)
    *out = '\t';
  else if (strcmp(arg, "|") == 0 || strcasecmp(arg, "pipe") == 0)
    *out = '|';
  else {
    cr_cli_errorf(cmd, "--delimiter takes \",\", \";\", \"tab\" or \"|\", got \"%s\"",
                  cr_cli_safe(arg));
    return -1;
  }
  return 0;
}

const char CR_CLI_DATA_SOURCES_HELP[] =
    "Data sources (--data SOURCE):\n"
    "  FILE.csv             a CSV or TSV file: the delimiter (, ; tab |) is detected\n"
    "                       (--delimiter D to set it), UTF-8 with or without BOM, CRLF\n"
    "                       or LF; header names match in any case, spaces trimmed; a\n"
    "                       malformed row is rejected and counted, like a bad key\n"
    "  sqlite:PATH          an SQLite file, opened read-only, with --data-query SQL\n"
    "  postgresql://...     PostgreSQL (a libpq URI) with --data-query SQL, streamed\n"
    "                       through a cursor in a read-only transaction\n"
    "  The query's result columns serve as a CSV header would. Never put a password\n"
    "  in the URI (it is refused): use ~/.pgpass or PGPASSFILE, the PGPASSWORD\n"
    "  environment variable, or a service file (PGSERVICE=name, ~/.pg_service.conf).\n"
    "  See docs/data-sources.md.\n";

const char CR_CLI_MEMORY_HELP[] =
    "Memory (docs/memory.md):\n"
    "  --memory MiB         the node's memory budget (default 256, at least 1): a set\n"
    "                       of any size is processed within it; what does not fit\n"
    "                       spills to the work directory, encrypted, as sorted runs.\n"
    "                       24 MiB of it is kept for what is not a table (TLS, frames,\n"
    "                       threads; a quarter of it goes to tables below 32 MiB).\n"
    "  --work-dir DIR       where runs spill (default IDENTITY_DIR/work; created 0700).\n"
    "                       Nothing is left there when the node ends; what a killed\n"
    "                       node left is removed at the next start (and logged).\n"
    "  --spill-max SIZE     at most this much spilled on disk at once: MiB, or with a\n"
    "                       unit (64K, 512M, 2G); default: the file system's free\n"
    "                       space. Past it (or with the disk full) the session fails\n"
    "                       with an error naming the directory, and nothing is released.\n";

int cr_cli_parse_size(const char *arg, uint64_t *out) {
  char *end = NULL;
  if (arg[0] < '0' || arg[0] > '9')
    return -1;
  errno = 0;
  unsigned long long v = strtoull(arg, &end, 10);
  if (errno || end == arg)
    return -1;
  unsigned shift = 20;
  if (*end == 'K' || *end == 'k')
    shift = 10, end++;
  else if (*end == 'M' || *end == 'm')
    shift = 20, end++;
  else if (*end == 'G' || *end == 'g')
    shift = 30, end++;
  if ((*end == 'i' || *end == 'I') && (end[1] == 'B' || end[1] == 'b'))
    end += 2;
  else if (*end == 'B' || *end == 'b')
    end++;
  if (*end != '\0' || v > ((unsigned long long)CR_CLI_MEMORY_MAX_MIB << 20) >> shift)
    return -1;
  *out = (uint64_t)v << shift;
  return 0;
}

int cr_cli_parse_memory_opt(const char *cmd, int c, const char *arg, cr_cli_memory_opts *m) {
  unsigned long v;
  switch (c) {
  case CR_CLI_OPT_MEMORY:
    if (cr_cli_parse_uint(cmd, "--memory", "MiB from", arg, 1, CR_CLI_MEMORY_MAX_MIB, &v) != 0)
      return -1;
    m->memory_bytes = (uint64_t)v << 20;
    return 0;
  case CR_CLI_OPT_WORK_DIR:
    if (arg[0] == '\0') {
      cr_cli_errorf(cmd, "--work-dir takes a directory");
      return -1;
    }
    m->work_dir = arg;
    return 0;
  case CR_CLI_OPT_SPILL_MAX:
    if (cr_cli_parse_size(arg, &m->spill_max_bytes) != 0) {
      cr_cli_errorf(cmd, "--spill-max takes MiB or a size with a unit (64K, 512M, 2G), got \"%s\"",
                    arg);
      return -1;
    }
    return 0;
  default:
    return -1;
  }
}
