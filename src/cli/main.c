/*
 * The cleanroom command: keygen, fingerprint, template, serve, run.
 *
 * Results go to stdout (human text, or one JSON object per session with
 * --json); everything else (progress, warnings, errors) to stderr, so
 * scripts can parse stdout. Exit codes are documented in usage() and
 * docs/cli.md. Never prints a match key, a point or a secret.
 */
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <getopt.h>

#include "cleanroom/crypto.h"
#include "cli/cli.h"

static void usage_main(FILE *f) {
  fprintf(f,
          "Usage: cleanroom COMMAND [OPTIONS]\n"
          "\n"
          "A peer-to-peer data clean room node: two partners learn the size of the\n"
          "overlap of their customer lists, as their shared template allows, without\n"
          "either seeing the other's data.\n"
          "\n"
          "Commands:\n"
          "  keygen        create this node's identity (key and certificate)\n"
          "  fingerprint   print a certificate's SHA-256 fingerprint\n"
          "  template      hash, check, pin, sign or verify a collaboration template\n"
          "  data          check this node's data against the template (a dry run: no\n"
          "                network, nothing sent)\n"
          "  serve         wait for the partner and answer its queries\n"
          "  run           connect to the partner and run a query\n"
          "  ping          check the way to the partner: TLS, certificate, template\n"
          "  audit         verify or show a node's audit log\n"
          "  report        an HTML page of the collaboration from the audit log\n"
          "  version       print the version\n"
          "\n"
          "Run `cleanroom COMMAND --help` (or `cleanroom help COMMAND`) for a command's\n"
          "options and an example.\n"
          "\n%s",
          CR_CLI_EXIT_CODES_HELP);
}

int cr_cli_main(int argc, char **argv) {
  signal(SIGPIPE, SIG_IGN);
  if (argc < 2) {
    usage_main(stderr);
    return EXIT_USAGE;
  }
  const char *cmd = argv[1];
  /* `cleanroom help run` is `cleanroom run --help`. */
  static char help_flag[] = "--help";
  char *help_argv[4];
  if (strcmp(cmd, "help") == 0 && argc >= 3 && strcmp(argv[2], "help") != 0 && argv[2][0] != '-') {
    help_argv[0] = argv[0];
    help_argv[1] = argv[2];
    help_argv[2] = help_flag;
    help_argv[3] = NULL;
    argv = help_argv;
    argc = 3;
    cmd = argv[1];
  } else if (strcmp(cmd, "--help") == 0 || strcmp(cmd, "-h") == 0 || strcmp(cmd, "help") == 0) {
    usage_main(stdout);
    return EXIT_OK;
  }
  if (strcmp(cmd, "version") == 0 || strcmp(cmd, "--version") == 0) {
    if (argc >= 3 && strcmp(argv[2], "--json") == 0) {
      printf("{\"software\":\"%s\",\"crypto_backend\":\"%s\"}\n", CR_SOFTWARE,
             cr_crypto_backend_name());
      return EXIT_OK;
    }
    if (argc >= 3 && (strcmp(argv[2], "--help") == 0 || strcmp(argv[2], "-h") == 0)) {
      printf("Usage: cleanroom version [--json]\n\nPrints the software version and the "
             "ristretto255 backend this machine uses\n(--json: one object with software and "
             "crypto_backend).\n");
      return EXIT_OK;
    }
    if (argc >= 3) {
      fprintf(stderr,
              "cleanroom version: error: unexpected argument \"%s\"; see `cleanroom "
              "version --help`\n",
              cr_cli_safe(argv[2]));
      return EXIT_USAGE;
    }
    printf("%s\n", CR_SOFTWARE);
    /* Which ristretto255 backend this machine uses (CLEANROOM_CRYPTO and
     * the CPU decide; docs/crypto-backends.md). Results never depend on it. */
    printf("crypto backend: %s\n", cr_crypto_backend_name());
    if (cr_crypto_backend_note() != NULL)
      printf("crypto backend note: %s\n", cr_crypto_backend_note());
    return EXIT_OK;
  }
  /* Each command parses its own options from argv[1..]. */
  argc--;
  argv++;
  optind = 1;
  if (strcmp(cmd, "audit") == 0)
    return cr_cli_audit_cmd(argc, argv);
  if (strcmp(cmd, "keygen") == 0)
    return cr_cli_keygen(argc, argv);
  if (strcmp(cmd, "fingerprint") == 0)
    return cr_cli_fingerprint(argc, argv);
  if (strcmp(cmd, "template") == 0)
    return cr_cli_template(argc, argv);
  if (strcmp(cmd, "report") == 0)
    return cr_cli_report(argc, argv);
  if (strcmp(cmd, "ping") == 0)
    return cr_cli_ping(argc, argv);
  if (strcmp(cmd, "serve") == 0 || strcmp(cmd, "run") == 0)
    return cr_cli_node(cmd, argc, argv);
  if (strcmp(cmd, "data") == 0)
    return cr_cli_data(argc, argv);
  fprintf(stderr, "%s: unknown command \"%s\"\n\n", CR_CLI_PROG, cmd);
  usage_main(stderr);
  return EXIT_USAGE;
}
