/*
 * cleanroom report: a self-contained HTML page of a node's collaborations,
 * built only from its audit log (and, for names and limits, the template).
 * The log is verified as `audit verify` does it; a broken log still gives a
 * page, of the lines before the break, marked as such, and exit code 3.
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "cli/cli.h"
#include "cli/report.h"

static void report_help(void) {
  printf("Usage: cleanroom report (--audit FILE | --identity DIR) --out FILE.html\n"
         "                        [--template FILE] [--collaboration HASH]\n\n"
         "Writes one self-contained HTML page (inline CSS and SVG, no script, no external\n"
         "URL; readable offline and printable) from this node's audit log only, never\n"
         "from a data file: the audit log's integrity, and per collaboration (template)\n"
         "and query the runs with their parameters and outcome, the latest overlap drawn\n"
         "to scale, group_by cells as bars (suppressed cells without any value) and the\n"
         "run limit.\n\n"
         "  --audit FILE          the audit log (JSON Lines)\n"
         "  --identity DIR        the node's identity directory: the log is DIR/audit.jsonl\n"
         "                        and checkpoints must be signed by DIR/identity.crt\n"
         "  --template FILE       the collaboration's template: organisation names, query\n"
         "                        definitions and limits (only that collaboration is shown)\n"
         "  --collaboration HASH  show only the template whose SHA-256 starts with HASH\n"
         "                        (by default every template in the log, one section each)\n"
         "  --out FILE            where to write the page (mode 0600, written atomically)\n\n"
         "A log that does not verify still gives a page of the lines before the first\n"
         "broken one, marked in red, and exit code 3.\n\n"
         "Example:\n"
         "  cleanroom report --identity ./identity --template ./template.json --out report.html\n\n"
         "%s",
         CR_CLI_EXIT_CODES_HELP);
}

static int is_hex_prefix(const char *s) {
  if (s[0] == 0 || strlen(s) > 64)
    return 0;
  for (const char *p = s; *p; p++)
    if (!((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'f')))
      return 0;
  return 1;
}

/* The collaborations whose template hash starts with prefix. */
static size_t count_matches(const cr_report_model *m, const char *prefix, const char **which) {
  size_t i, n = 0;
  json_t *c;
  json_array_foreach(m->collabs, i, c) {
    const char *h = json_string_value(json_object_get(c, "template_sha256"));
    if (h && strncmp(h, prefix, strlen(prefix)) == 0) {
      n++;
      *which = h;
    }
  }
  return n;
}

static void list_hashes(const cr_report_model *m, char *buf, size_t cap) {
  size_t i, len = 0;
  json_t *c;
  buf[0] = 0;
  json_array_foreach(m->collabs, i, c) {
    const char *h = json_string_value(json_object_get(c, "template_sha256"));
    if (h && h[0] && len < cap)
      len += (size_t)snprintf(buf + len, cap - len, "%s%.16s", len ? ", " : "", h);
  }
  if (buf[0] == 0)
    snprintf(buf, cap, "none");
}

/* 1 (with the error printed) when --out names a file that is not an
 * earlier report: the audit log itself (arguments swapped), the identity,
 * a template or a data file would be replaced by the page. */
static int out_refused(const char *out, const char *audit, const char *identity) {
  struct stat so, sa;
  if (stat(out, &so) != 0)
    return 0; /* a new file */
  if (S_ISDIR(so.st_mode)) {
    cr_cli_errorf("report",
                  "--out %s is a directory; give the page's file name, e.g. %s/report.html",
                  cr_cli_safe(out), cr_cli_safe(out));
    return 1;
  }
  char log[4096] = "";
  if (audit != NULL)
    snprintf(log, sizeof log, "%s", audit);
  else if (identity != NULL)
    snprintf(log, sizeof log, "%s/audit.jsonl", identity);
  if (log[0] && stat(log, &sa) == 0 && sa.st_dev == so.st_dev && sa.st_ino == so.st_ino) {
    cr_cli_errorf("report",
                  "--out %s is the audit log itself; the page would replace it. Give "
                  "another file, e.g. --out report.html",
                  cr_cli_safe(out));
    return 1;
  }
  static const char doctype[] = "<!DOCTYPE html";
  char head[sizeof doctype - 1];
  FILE *f = fopen(out, "rb");
  size_t n = f ? fread(head, 1, sizeof head, f) : 0;
  if (f)
    fclose(f);
  if (so.st_size > 0 && (n != sizeof head || memcmp(head, doctype, sizeof head) != 0)) {
    cr_cli_errorf("report",
                  "--out %s exists and is not a report (an HTML page); refusing to "
                  "replace it: give another file, or remove it first",
                  cr_cli_safe(out));
    return 1;
  }
  return 0;
}

int cr_cli_report(int argc, char **argv) {
  static const struct option opts[] = {{"audit", required_argument, NULL, 'a'},
                                       {"identity", required_argument, NULL, 'i'},
                                       {"template", required_argument, NULL, 't'},
                                       {"collaboration", required_argument, NULL, 'c'},
                                       {"out", required_argument, NULL, 'o'},
                                       {"help", no_argument, NULL, 'h'},
                                       {NULL, 0, NULL, 0}};
  const char *audit = NULL, *identity = NULL, *tpath = NULL, *collab = NULL, *out = NULL;
  int c;
  optind = 1;
  while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
    switch (c) {
    case 'a':
      audit = optarg;
      break;
    case 'i':
      identity = optarg;
      break;
    case 't':
      tpath = optarg;
      break;
    case 'c':
      collab = optarg;
      break;
    case 'o':
      out = optarg;
      break;
    case 'h':
      report_help();
      return EXIT_OK;
    default:
      return EXIT_USAGE;
    }
  }
  if (optind < argc) {
    cr_cli_errorf("report", "unexpected argument \"%s\"; see `cleanroom report --help`",
                  cr_cli_safe(argv[optind]));
    return EXIT_USAGE;
  }
  if ((audit == NULL) == (identity == NULL) || out == NULL) {
    cr_cli_errorf("report", "needs --out and one of --audit FILE or --identity DIR; see "
                            "`cleanroom report --help`");
    return EXIT_USAGE;
  }
  if (collab != NULL && !is_hex_prefix(collab)) {
    cr_cli_errorf("report",
                  "--collaboration takes a template hash or its start (lowercase hex), "
                  "got \"%s\"",
                  cr_cli_safe(collab));
    return EXIT_USAGE;
  }

  int ret = EXIT_USAGE, rc;
  if (out_refused(out, audit, identity))
    return EXIT_USAGE;
  cr_error err;
  cr_error_clear(&err);
  char *path = NULL, *page = NULL;
  size_t page_len = 0;
  cr_template *t = NULL;
  char th[CR_SHA256_HEX_BYTES] = "";
  uint8_t pk[CR_SIGN_PK_BYTES], *expect = NULL;
  cr_report_model m;
  cr_report_model_init(&m);
  cr_report_integrity in;
  memset(&in, 0, sizeof in);

  if (identity != NULL) {
    size_t n = strlen(identity) + sizeof "/identity.crt";
    path = malloc(n);
    if (path == NULL)
      goto out;
    snprintf(path, n, "%s/identity.crt", identity);
    /* --identity promises checkpoints signed by this certificate: without
     * it the page could not tell this node's log from another's. */
    if ((rc = cr_cert_file_public_key(path, pk, &err)) != 0) {
      cr_cli_errorf("report",
                    "%s: %s (--identity DIR needs the node's identity.crt; for a log alone use "
                    "--audit FILE)",
                    path, cr_error_message(&err, rc));
      goto out;
    }
    expect = pk;
    snprintf(path, n, "%s/audit.jsonl", identity);
    audit = path;
  }
  if (tpath != NULL) {
    if ((rc = cr_template_load(&t, tpath, &err)) != 0) {
      cr_cli_errorf("report", "%s", cr_error_message(&err, rc));
      goto out;
    }
    cr_hex_encode(th, t->sha256, CR_SHA256_BYTES);
    if (collab != NULL && strncmp(th, collab, strlen(collab)) != 0) {
      cr_cli_errorf("report", "--collaboration %s is not the template %s (hash %.16s...)", collab,
                    cr_cli_safe(tpath), th);
      goto out;
    }
    if (collab == NULL)
      collab = th;
  }

  /* Verification first, exactly as `audit verify` does it. */
  rc = cr_audit_verify(audit, expect, &in.report, &err);
  if (rc != 0 && rc != CR_EDATA) {
    cr_cli_errorf("report", "%s", cr_error_message(&err, rc));
    goto out;
  }
  if (rc == CR_EDATA && in.report.torn_tail) {
    in.warn = 1; /* the torn line records nothing; every line before it verified */
    snprintf(in.reason, sizeof in.reason, "%s", in.report.reason);
  } else if (rc == CR_EDATA) {
    in.bad_line = in.report.bad_line ? in.report.bad_line : 1;
    snprintf(in.reason, sizeof in.reason, "%s",
             in.report.reason[0] ? in.report.reason : cr_error_message(&err, rc));
    m.stop_line = in.bad_line;
  }
  if (in.bad_line == 0) {
    /* The receipts as audit verify checks them: a release edited after the
     * partner signed for it breaks the log there. */
    uint64_t bad = 0;
    char why[sizeof in.reason];
    cr_error_clear(&err);
    rc = cr_cli_audit_receipts(audit, &bad, why, sizeof why, &err);
    if (rc == CR_EDATA && bad != 0) {
      in.bad_line = bad;
      in.warn = 0;
      snprintf(in.reason, sizeof in.reason, "%s", why);
      m.stop_line = bad;
    }
  }
  cr_error_clear(&err);
  rc = cr_audit_foreach(audit, cr_report_model_entry, &m, &err);
  if (rc != 0 && rc != 1 && rc != CR_EDATA) {
    cr_cli_errorf("report", "%s", cr_error_message(&err, rc));
    goto out;
  }
  if (m.bad_line != 0 && (in.bad_line == 0 || m.bad_line < in.bad_line)) {
    in.bad_line = m.bad_line;
    in.warn = 0;
    snprintf(in.reason, sizeof in.reason, "%s", m.bad_reason);
  }
  if (in.bad_line == 0 && m.checkpoints == 0) {
    in.warn = 1;
    snprintf(in.reason, sizeof in.reason,
             "no signed checkpoint: nothing in the log is signed by this node%s",
             expect ? " (audit verify --cert fails on this)" : "");
  }
  in.ok = in.bad_line == 0 && !in.warn;
  if (json_object_size(m.ckpt_keys) == 1) {
    const char *k = json_object_iter_key(json_object_iter(m.ckpt_keys));
    const char *cert = json_string_value(json_object_get(m.node_keys, k));
    if (cert != NULL)
      snprintf(in.signer, sizeof in.signer, "%s", cert);
    in.signer_expected = expect != NULL && in.bad_line == 0;
  }

  if (collab != NULL) {
    const char *which = NULL;
    size_t n = count_matches(&m, collab, &which);
    if (n != 1) {
      char list[400];
      list_hashes(&m, list, sizeof list);
      cr_cli_errorf("report", "%s: %s template hash starting with %s (the log holds: %s)", audit,
                    n == 0 ? "no collaboration has a" : "more than one collaboration has a", collab,
                    list);
      goto out;
    }
  }

  char now[40];
  time_t tnow = time(NULL);
  struct tm tmv;
  gmtime_r(&tnow, &tmv);
  strftime(now, sizeof now, "%Y-%m-%d %H:%M UTC", &tmv);
  cr_report_input inp = {audit, t, t ? th : NULL, collab, now};
  FILE *f = open_memstream(&page, &page_len);
  if (f == NULL || cr_report_html(f, &m, &in, &inp) != 0) {
    if (f)
      fclose(f);
    cr_cli_errorf("report", "out of memory");
    ret = EXIT_INTERNAL;
    goto out;
  }
  fclose(f);
  /* 0600 like the log itself: it names partners, files and counts. */
  if ((rc = cr_file_write_atomic(out, page, page_len, 0600, &err)) != 0) {
    cr_cli_errorf("report", "%s: %s", out, cr_error_message(&err, rc));
    ret = cr_cli_exit_code(rc, 0);
    goto out;
  }
  if (in.bad_line) {
    cr_cli_errorf("report", "%s: %s; %s shows only the lines before it", audit, in.reason, out);
    ret = EXIT_DATA;
  } else {
    fprintf(stderr, "report: %s written from %s (%llu entries%s)\n", out, audit,
            (unsigned long long)m.entries, in.warn ? "; see the warning at the top" : ", verified");
    ret = EXIT_OK;
  }
out:
  free(page);
  free(path);
  cr_template_free(t);
  cr_report_model_free(&m);
  return ret;
}
