/*
 * cleanroom report (src/cli/cmd_report.c): one self-contained HTML page
 * built from a node's audit log, and nothing else (never a data file).
 *
 * report_model.c walks the log with cr_audit_foreach (each entry verified
 * before it is seen) and gathers, per collaboration (template hash), the
 * queries and their runs as plain JSON objects. report_html.c draws them:
 * inline CSS and SVG, no script, no external URL, every string from the log
 * HTML-escaped. A suppressed cell never has a value in the log, so none can
 * reach the page; the renderer still never prints a cell's count unless the
 * cell was released.
 */
#ifndef CR_CLI_REPORT_H
#define CR_CLI_REPORT_H

#include <stdint.h>
#include <stdio.h>

#include <jansson.h>

#include "cleanroom/audit.h"
#include "cleanroom/template.h"

/* What the walk of the log collected. Every json_t is owned by the model. */
typedef struct cr_report_model {
  json_t *collabs;      /* array of collaboration objects, in order of first sight */
  json_t *by_hash;      /* template_sha256 -> collaboration (borrowed refs) */
  json_t *sessions;     /* session_id -> run object (borrowed refs) */
  json_t *node_keys;    /* node_started public_key -> cert_sha256 */
  json_t *ckpt_keys;    /* checkpoint public_key -> count */
  json_t *current;      /* the collaboration of the last node_started (borrowed) */
  uint64_t entries;     /* entries seen (checkpoints included) */
  uint64_t checkpoints; /* checkpoints seen */
  uint64_t receipts;    /* receipts whose partner signature verified */
  uint64_t stop_line;   /* the walk stops before this line (the first broken one), 0: none */
  uint64_t bad_line;    /* first receipt that does not verify (1-based), 0 if none */
  char bad_reason[300];
} cr_report_model;

void cr_report_model_init(cr_report_model *m);
void cr_report_model_free(cr_report_model *m);
/* The cr_audit_foreach callback: reads one entry into the model. Stops the
 * walk (returns 1) at a receipt whose signature does not verify. */
int cr_report_model_entry(void *ctx, const char *text, size_t len);

/* The integrity verdict shown at the top of the page. */
typedef struct cr_report_integrity {
  int ok;                 /* chain, checkpoints and receipts all verify */
  int warn;               /* verified, but see reason: a torn last line (a crash),
                             or no checkpoint at all */
  uint64_t bad_line;      /* first broken line, 0 if none */
  char reason[600];       /* why, as audit verify words it */
  cr_audit_report report; /* counts from cr_audit_verify */
  char signer[65];        /* cert fingerprint of the checkpoints' key, "" if unknown */
  int signer_expected;    /* the key is the one of --identity's certificate */
} cr_report_integrity;

typedef struct cr_report_input {
  const char *audit_path;
  const cr_template *tmpl;    /* --template, or NULL */
  const char *tmpl_hash;      /* its hash in hex, or NULL */
  const char *collaboration;  /* --collaboration prefix, or NULL */
  const char *generated_time; /* "2025-01-01 12:00 UTC" */
} cr_report_input;

/* Writes the page to f. 0, or -1 when f fails. */
int cr_report_html(FILE *f, const cr_report_model *m, const cr_report_integrity *in,
                   const cr_report_input *inp);

#endif
