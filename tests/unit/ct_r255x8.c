/*
 * Constant-time check of the batched ristretto255 algorithm, run under
 * valgrind memcheck by ct_r255x8.sh (ctest ct.r255x8_valgrind).
 *
 * The secrets are marked undefined (VALGRIND_MAKE_MEM_UNDEFINED): the scalar
 * k, the match-key bytes a hash_blind starts from, and the 64 uniform bytes
 * expand_message_xmd makes of them. Memcheck then reports every conditional
 * branch and every memory address computed from them, anywhere in the
 * computation: expand_message_xmd (libsodium's SHA-512), the element
 * derivation, the table selection and the scalar multiplication, and the
 * encoding. The outputs are public (they go on the wire), so they are
 * marked defined afterwards and compared with libsodium's, which shows the
 * checked run computed the right thing.
 *
 * This is the emulated lanes build of r255x8_impl.h, the same source the
 * AVX-512 IFMA lanes are built from (valgrind cannot run AVX-512, and these
 * machines have no IFMA); the lanes header itself is branch-free.
 *
 *   ct_r255x8            the check; exit 0 when the results are right
 *   ct_r255x8 --control  a deliberate secret-dependent branch and table
 *                        index, which memcheck must report (so a silent run
 *                        means something)
 *
 * Built from the sources directly, without sanitizers (memcheck and ASan do
 * not mix), so it also runs in the sanitized CI build.
 */
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <sodium.h>
#include <valgrind/memcheck.h>

#include "cleanroom/crypto.h"
#include "crypto/r255x8.h"

static void secret(const void *p, size_t n) { (void)VALGRIND_MAKE_MEM_UNDEFINED(p, n); }

/* Public from here on: the bytes are sent to the peer. Under valgrind, first
 * check the secret really reached them (else the run tracked nothing). */
static int declassify(const char *what, const void *p, size_t n) {
  if (RUNNING_ON_VALGRIND) {
    /* The validity bits, read without a report (1 bits: undefined). */
    uint8_t vbits[256];
    int undefined = 0;
    if (n > sizeof vbits || VALGRIND_GET_VBITS(p, vbits, n) != 1)
      return -1;
    for (size_t i = 0; i < n; i++)
      undefined |= vbits[i] != 0;
    if (!undefined) {
      fprintf(stderr, "ct_r255x8: %s does not depend on the secret: the check is void\n", what);
      return -1;
    }
  }
  (void)VALGRIND_MAKE_MEM_DEFINED(p, n);
  return 0;
}

static int control(void) {
  /* What the real check must never contain. */
  uint8_t k[32], table[16];
  crypto_generichash(k, sizeof k, (const uint8_t *)"control", 7, NULL, 0);
  memset(table, 7, sizeof table);
  secret(k, sizeof k);
  volatile uint8_t sink = table[k[0] & 15]; /* secret index */
  if (k[1] & 1)                             /* secret branch */
    sink = (uint8_t)(sink + 1);
  (void)sink;
  return 0;
}

int main(int argc, char **argv) {
  if (sodium_init() < 0)
    return 2;
  if (argc > 1 && strcmp(argv[1], "--control") == 0)
    return control();
  const cr_r255x8_backend *be = &cr__r255x8_emulated;
  int bad = 0;

  /* A scalar, eight peer points and eight messages; the expected answers
   * from libsodium, computed while everything is still defined. */
  uint8_t k[32], wide[64];
  crypto_generichash(wide, sizeof wide, (const uint8_t *)"ct scalar", 9, NULL, 0);
  crypto_core_ristretto255_scalar_reduce(k, wide);
  uint8_t pts[8][32], msgs[8][40], uniform[8][64];
  uint8_t want_rb[8][32], want_hb[8][32], want_fu[8][32], out[8][32];
  memset(msgs, 0, sizeof msgs);
  for (int l = 0; l < 8; l++) {
    uint8_t seed[64];
    crypto_generichash(seed, sizeof seed, (const uint8_t *)&l, sizeof l, NULL, 0);
    if (crypto_core_ristretto255_from_hash(pts[l], seed) != 0)
      return 2;
    if (crypto_scalarmult_ristretto255(want_rb[l], k, pts[l]) != 0)
      return 2;
    snprintf((char *)msgs[l], sizeof msgs[l], "person%d@example.com", l);
    if (cr_expand_message_xmd_sha512(seed, 64, msgs[l], sizeof msgs[l],
                                     (const uint8_t *)CR_R255_DST, sizeof CR_R255_DST - 1) != 0 ||
        crypto_core_ristretto255_from_hash(want_fu[l], seed) != 0 ||
        crypto_scalarmult_ristretto255(want_hb[l], k, want_fu[l]) != 0)
      return 2;
  }

  /* Reblind: k * P for public P. The decode verdict depends only on P. */
  secret(k, sizeof k);
  unsigned ok = be->scalarmult(out, k, (const uint8_t(*)[32])pts);
  bad |= ok != 0xff;
  if (declassify("k * P", out, sizeof out) != 0)
    return 1;
  bad |= memcmp(out, want_rb, sizeof out) != 0;

  /* hash_blind: the message bytes and k are secret, through SHA-512
   * expand_message_xmd, the map, the multiplication and the encoding. */
  secret(msgs, sizeof msgs);
  for (int l = 0; l < 8; l++)
    if (cr_expand_message_xmd_sha512(uniform[l], 64, msgs[l], sizeof msgs[l],
                                     (const uint8_t *)CR_R255_DST, sizeof CR_R255_DST - 1) != 0)
      return 2;
  be->from_uniform(out, (const uint8_t(*)[64])uniform);
  if (declassify("HashToGroup(m)", out, sizeof out) != 0)
    return 1;
  bad |= memcmp(out, want_fu, sizeof out) != 0;
  be->hash_blind(out, k, (const uint8_t(*)[64])uniform);
  if (declassify("k * HashToGroup(m)", out, sizeof out) != 0)
    return 1;
  bad |= memcmp(out, want_hb, sizeof out) != 0;

  if (bad) {
    fprintf(stderr, "ct_r255x8: results differ from libsodium\n");
    return 1;
  }
  printf("ct_r255x8: scalarmult, from_uniform, hash_blind and expand_message_xmd with secret "
         "inputs: results right%s\n",
         RUNNING_ON_VALGRIND ? "" : " (not under valgrind: nothing was checked for constant time)");
  return 0;
}
