/* keygen and fingerprint: the node's identity. */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>

#include "cli/cli.h"

/* ---- keygen, fingerprint ------------------------------------------------ */

/* Why name cannot be a certificate's common name, or NULL. The name is the
 * organisation partners see in the certificate, and it is shown in
 * terminals and reports: printable UTF-8 only. */
static const char *name_problem(const char *name) {
  if (name[0] == '\0')
    return "the name is empty; give the organisation's name, e.g. --name \"Acme Security\"";
  if (strlen(name) > 64)
    return "the name is longer than 64 bytes (the limit of a certificate's common name)";
  for (const unsigned char *p = (const unsigned char *)name; *p;) {
    size_t n = *p < 0x80             ? 1
               : (*p & 0xe0) == 0xc0 ? 2
               : (*p & 0xf0) == 0xe0 ? 3
               : (*p & 0xf8) == 0xf0 ? 4
                                     : 0;
    if (n == 0)
      return "the name is not valid UTF-8";
    for (size_t i = 1; i < n; i++)
      if ((p[i] & 0xc0) != 0x80)
        return "the name is not valid UTF-8";
    if ((n == 1 && (*p < 0x20 || *p == 0x7f)) || (n == 2 && p[0] == 0xc2 && p[1] < 0xa0))
      return "the name holds a control character (a newline, a tab, an escape); use printable "
             "text only";
    p += n;
  }
  return NULL;
}

int cr_cli_keygen(int argc, char **argv) {
  static const struct option opts[] = {{"out", required_argument, NULL, 'o'},
                                       {"name", required_argument, NULL, 'n'},
                                       {"json", no_argument, NULL, 'j'},
                                       {"help", no_argument, NULL, 'h'},
                                       {NULL, 0, NULL, 0}};
  const char *out = NULL, *name = "cleanroom-node";
  int json = 0, c;
  optind = 1;
  while ((c = getopt_long(argc, argv, "o:n:jh", opts, NULL)) != -1) {
    switch (c) {
    case 'o':
      out = optarg;
      break;
    case 'n':
      name = optarg;
      break;
    case 'j':
      json = 1;
      break;
    case 'h':
      printf("Usage: cleanroom keygen --out DIR [--name CN] [--json]\n\n"
             "Creates DIR/identity.key (mode 0600) and DIR/identity.crt (Ed25519,\n"
             "self-signed) and prints the certificate's SHA-256 fingerprint: send it to\n"
             "your partner, who pins it in the template (parties.<role>.cert_sha256).\n"
             "Refuses to overwrite an existing key.\n\n"
             "Example:\n  cleanroom keygen --out ./identity --name \"Acme Security\"\n\n%s",
             CR_CLI_EXIT_CODES_HELP);
      return EXIT_OK;
    default:
      return EXIT_USAGE;
    }
  }
  if (optind < argc) {
    cr_cli_errorf("keygen",
                  "unexpected argument \"%s\" (the directory is --out DIR); see "
                  "`cleanroom keygen --help`",
                  cr_cli_safe(argv[optind]));
    return EXIT_USAGE;
  }
  if (out == NULL || out[0] == '\0') {
    cr_cli_errorf("keygen", "--out DIR is required (where to write identity.key and identity.crt)");
    return EXIT_USAGE;
  }
  if (name_problem(name) != NULL) {
    cr_cli_errorf("keygen", "--name \"%s\": %s", cr_cli_safe(name), name_problem(name));
    return EXIT_USAGE;
  }
  uint8_t fp[CR_SHA256_BYTES];
  char hex[CR_SHA256_HEX_BYTES];
  cr_error err;
  cr_error_clear(&err);
  int rc = cr_identity_generate(out, name, fp, &err);
  if (rc) {
    cr_cli_errorf("keygen", "%s", cr_error_message(&err, rc));
    return cr_cli_exit_code(rc, 0);
  }
  cr_hex_encode(hex, fp, sizeof fp);
  if (json) {
    json_t *o = json_object();
    json_object_set_new(o, "identity", cr_cli_jtext(out));
    json_object_set_new(o, "cert_sha256", json_string(hex));
    cr_cli_json_print(o);
  } else
    printf("%s\n", hex);
  fprintf(stderr, "wrote %s/%s and %s/%s; send the fingerprint above to your partner\n", out,
          CR_IDENTITY_KEY_FILE, out, CR_IDENTITY_CRT_FILE);
  return EXIT_OK;
}

int cr_cli_fingerprint(int argc, char **argv) {
  if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
    FILE *f = argc < 2 ? stderr : stdout;
    fprintf(f, "Usage: cleanroom fingerprint CERT\n\n"
               "Prints the SHA-256 fingerprint of a PEM certificate (of its DER form), as\n"
               "pinned in a template's parties.<role>.cert_sha256.\n\n"
               "Example:\n  cleanroom fingerprint ./identity/identity.crt\n");
    return argc < 2 ? EXIT_USAGE : EXIT_OK;
  }
  if (argc > 2) {
    cr_cli_errorf("fingerprint",
                  "takes one CERT, got also \"%s\"; see `cleanroom fingerprint "
                  "--help`",
                  cr_cli_safe(argv[2]));
    return EXIT_USAGE;
  }
  uint8_t fp[CR_SHA256_BYTES];
  char hex[CR_SHA256_HEX_BYTES];
  cr_error err;
  cr_error_clear(&err);
  int rc = cr_cert_fingerprint_file(argv[1], fp, &err);
  if (rc) {
    cr_cli_errorf("fingerprint", "%s", cr_error_message(&err, rc));
    return cr_cli_exit_code(rc, 0);
  }
  cr_hex_encode(hex, fp, sizeof fp);
  printf("%s\n", hex);
  return EXIT_OK;
}
