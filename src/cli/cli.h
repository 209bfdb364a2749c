/*
 * The cleanroom command's shared pieces: exit codes, error printing, and
 * one entry point per command (each in its own file under src/cli/).
 * Results go to stdout; progress, warnings and errors to stderr.
 */
#ifndef CR_CLI_H
#define CR_CLI_H

#include <jansson.h>

#include "cleanroom/audit.h"
#include "cleanroom/crypto.h"
#include "cleanroom/dataset.h"
#include "cleanroom/common.h"
#include "cleanroom/net.h"
#include "cleanroom/party.h"
#include "cleanroom/protocol.h"
#include "cleanroom/template.h"

#define CR_SOFTWARE CR_PARTY_SOFTWARE
/* The command's name in messages: "cleanroom", or "cleanroom-mpi" when that
 * command runs the node (cr_cli_set_prog). */
extern const char *cr_cli_prog;
#define CR_CLI_PROG cr_cli_prog
void cr_cli_set_prog(const char *name);

enum {
  EXIT_OK = 0,
  EXIT_INTERNAL = 1,
  EXIT_USAGE = 2,   /* usage or configuration: flags, template, identity */
  EXIT_DATA = 3,    /* the data file: unreadable, missing columns, too many rejects */
  EXIT_REFUSED = 4, /* refused by the template or by the partner */
  EXIT_NETWORK = 5, /* network, TLS or protocol failure, timeout */
  EXIT_BUSY = 6,    /* the partner's node is busy: try again later */
  EXIT_STORAGE = 7  /* local storage: work directory full or capped, a file cannot be written */
};

extern const char CR_CLI_EXIT_CODES_HELP[];
/* The --data forms, for every command that takes --data. */
extern const char CR_CLI_DATA_SOURCES_HELP[];

/* Text from outside (the partner, a file) made safe to print: control
 * characters escaped, invalid UTF-8 replaced (cr_text_clean). Rotating
 * buffers: valid for the next 7 calls. */
const char *cr_cli_safe(const char *s);
/* json_string of the same, never NULL. */
json_t *cr_cli_jtext(const char *s);
/* --json: o as one compact line on stdout ("{}" if it cannot be encoded);
 * takes o. */
void cr_cli_json_print(json_t *o);

/* A receipt entry of an audit log checked again: its message rebuilt
 * (v3, or v2 for older logs) and the partner's signature verified. 0, or
 * -1 with why set. Used by `audit verify` and `report`. */
int cr_cli_receipt_check(json_t *e, char *why, size_t cap);
/* The receipt checks of `audit verify` over a whole log (each partner
 * signature, the certificates, and each release against the receipt that
 * signs it): 0, or CR_EDATA with *bad_line and why ("line N: ..."); another
 * CR_E* when the log cannot be read. */
int cr_cli_audit_receipts(const char *path, uint64_t *bad_line, char *why, size_t cap,
                          cr_error *err);

/* "cleanroom CMD: error: ..." on stderr. */
void cr_cli_errorf(const char *cmd, const char *fmt, ...) CR_PRINTF(2, 3);
/* An option's unsigned value within [min, max]; -1 with the error printed
 * ("--timeout takes seconds from 1 to 86400, got \"x\""). */
int cr_cli_parse_uint(const char *cmd, const char *opt, const char *what, const char *arg,
                      unsigned long min, unsigned long max, unsigned long *out);
/* --delimiter's value: "," ";" "|" "tab" (or a tab, or "\t", or the
 * names comma, semicolon, pipe). 0, or -1 with the error printed. */
int cr_cli_parse_delimiter(const char *cmd, const char *arg, char *out);
/* --memory MiB, --work-dir DIR, --spill-max MiB: the same on serve, run
 * and data check (and their config files). */
extern const char CR_CLI_MEMORY_HELP[];
enum { CR_CLI_OPT_MEMORY = 0x1001, CR_CLI_OPT_WORK_DIR, CR_CLI_OPT_SPILL_MAX };
#define CR_CLI_MEMORY_MAX_MIB (16ul << 20) /* 16 TiB */
typedef struct cr_cli_memory_opts {
  uint64_t memory_bytes; /* 0: the default */
  const char *work_dir;  /* NULL: IDENTITY_DIR/work */
  uint64_t spill_max_bytes;
} cr_cli_memory_opts;
/* "64K", "512M", "2G" or a number of MiB, into bytes. 0, or -1. */
int cr_cli_parse_size(const char *arg, uint64_t *out);
/* One of the options above (c: its getopt value). 0, or -1 (error printed). */
int cr_cli_parse_memory_opt(const char *cmd, int c, const char *arg, cr_cli_memory_opts *m);

/* The documented exit code for a CR_E* code (and the wire error, if any). */
int cr_cli_exit_code(int rc, int wire);

/* One JSON object on stdout / a few human lines; only released numbers.
 * extra (taken, may be NULL): more members (what the session cost). */
void cr_cli_print_result_json(const cr_party_session *s, const cr_template *t,
                              const char *peer_addr, json_t *extra);
void cr_cli_print_result_human(const cr_party_session *s, const char *peer_addr);
/* Several match keys: the records (or values) a data file gave and each
 * key's skipped cells, on stderr after the load line. */
void cr_cli_print_data_keys(const cr_dataset *d, const cr_template *t);

int cr_cli_audit_cmd(int argc, char **argv);
int cr_cli_keygen(int argc, char **argv);
int cr_cli_fingerprint(int argc, char **argv);
int cr_cli_template(int argc, char **argv);
int cr_cli_node(const char *cmd, int argc, char **argv);

/* The whole command line (`cleanroom COMMAND ...`): main() of cleanroom,
 * and of rank 0 of cleanroom-mpi. */
int cr_cli_main(int argc, char **argv);

/* cleanroom-mpi (src/mpi, docs/scale-out.md): serve and run are one of K
 * processes on these hosts (recorded with each session in the audit log),
 * and --threads defaults to `threads` (the host's cores shared among its
 * processes). Set before cr_cli_main; NULL: one process. */
typedef struct cr_cli_cluster {
  unsigned processes;
  const char *hosts; /* "a,b" */
  unsigned nhosts;
  unsigned threads;
  /* Called on SIGINT / SIGTERM, before the node stops: a batch the other
   * processes are computing must not hold the session up. */
  void (*on_stop)(void *ctx);
  void *ctx;
} cr_cli_cluster;
void cr_cli_set_cluster(const cr_cli_cluster *c);
int cr_cli_ping(int argc, char **argv);
/* data check: a dry run of the data against the template (src/cli/cmd_data.c). */
int cr_cli_data(int argc, char **argv);
/* report: an HTML page from the audit log (src/cli/cmd_report.c). */
int cr_cli_report(int argc, char **argv);
/* serve/run --config FILE (src/cli/config.c): the file's options are put
 * before the command line's, which override them. 0, or -1 (error printed). */
int cr_cli_config_apply(const char *cmd, int *argc, char ***argv);

#endif
