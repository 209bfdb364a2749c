/*
 * A program embedding the installed libcleanroom, as a user of the library
 * builds it:
 *   cc hello.c $(pkg-config --cflags --libs cleanroom)
 * Loads a template (template layer) and prints its hash, creates a node
 * identity (net layer, which pulls in protocol, crypto, dataset, common and
 * the protobuf-c code) and prints its fingerprint, read back from disk.
 *
 *   hello TEMPLATE.json DIR     DIR must not hold an identity yet
 */
#define _POSIX_C_SOURCE 200809L

#include <stdio.h>
#include <string.h>

#include <cleanroom/net.h>
#include <cleanroom/template.h>

int main(int argc, char **argv) {
  if (argc != 3) {
    fprintf(stderr, "usage: %s TEMPLATE.json DIR\n", argv[0]);
    return 2;
  }
  cr_error err = {0};
  if (cr_crypto_init() != 0) {
    fprintf(stderr, "hello: cr_crypto_init failed\n");
    return 1;
  }

  cr_template *t = NULL;
  int rc = cr_template_load(&t, argv[1], &err);
  if (rc != 0) {
    fprintf(stderr, "hello: %s\n", cr_error_message(&err, rc));
    return 1;
  }
  char hex[CR_SHA256_HEX_BYTES];
  cr_hex_encode(hex, t->sha256, sizeof t->sha256);
  printf("template %s\n", t->name);
  printf("template hash %s\n", hex);
  cr_template_free(t);

  uint8_t fp[CR_SHA256_BYTES];
  rc = cr_identity_generate(argv[2], "hello", fp, &err);
  if (rc != 0) {
    fprintf(stderr, "hello: %s\n", cr_error_message(&err, rc));
    return 1;
  }
  cr_identity *id = NULL;
  rc = cr_identity_load(&id, argv[2], &err);
  if (rc != 0) {
    fprintf(stderr, "hello: %s\n", cr_error_message(&err, rc));
    return 1;
  }
  int same = memcmp(cr_identity_fingerprint(id), fp, sizeof fp) == 0;
  cr_identity_free(id);
  if (!same) {
    fprintf(stderr, "hello: the loaded identity's fingerprint differs from the generated one\n");
    return 1;
  }
  cr_hex_encode(hex, fp, sizeof fp);
  printf("identity fingerprint %s\n", hex);
  return 0;
}
