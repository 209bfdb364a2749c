/*
 * Fuzz target: a responder session fed arbitrary bytes from its peer.
 * The first input byte picks how much valid protocol precedes the fuzzed
 * bytes (% 3 == 0: none, 1: a valid Hello, 2: Hello and the whole set and
 * EndOfSet), so the fuzzer reaches every state; values 3 to 5 (mod 6) do
 * the same for a query with noise (protocol v4: the Hello carries a noise
 * seed commitment, and NoiseSeed frames are expected after the data). The session must never
 * crash, leak, or report a result it did not complete.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "session_peer.h"

/* The fuzzing peer's (consumer's) noise seed share is 32 bytes of 3:
 * commitment SHA-256("cleanroom/v4/noise-commit" || u8 1 || share). */
static void noise_commitment(uint8_t out[32]) {
  static const char label[] = "cleanroom/v4/noise-commit";
  uint8_t msg[sizeof label - 1 + 1 + 32];
  memcpy(msg, label, sizeof label - 1);
  msg[sizeof label - 1] = 1;
  memset(msg + sizeof label, 3, 32);
  crypto_hash_sha256(out, msg, sizeof msg);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  cr_query q;
  cr_template t;
  fz_template(&t, &q, 0x11);
  t.match_key.name = "email";
  uint8_t bytes[] = "a@x.example"
                    "b@x.example";
  size_t off[] = {0, 11, 22};
  cr_dataset d = {0};
  d.n = 2;
  d.bytes = bytes;
  d.off = off;
  cr_session *s = fz_session_new(&t, &d);

  int mode = size > 0 ? data[0] % 6 : 0, noisy = mode >= 3;
  mode %= 3;
  if (noisy) {
    q.noise.mechanism = CR_NOISE_DISCRETE_LAPLACE;
    q.noise.epsilon = 500000;
  }
  cr_buf prefix;
  cr_buf_init(&prefix);
  if (size > 0) {
    data++;
    size--;
  }
  uint8_t commitment[32];
  noise_commitment(commitment);
  if (mode >= 1)
    fz_append_hello(&prefix, t.sha256, noisy ? commitment : NULL, 0);
  if (mode >= 2)
    fz_append_set(&prefix, 1);
  fz_feed(s, &prefix, data, size);
  return 0;
}
