/* Fuzz target: the Golomb-Rice decoder on arbitrary bytes and parameters;
 * whatever decodes must re-encode to the same values. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "protocol/gcs.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 3)
    return 0;
  size_t len = 1 + data[0] % 16;
  uint64_t n = 1 + data[1] % 64;
  unsigned k = data[2] % (8 * len + 1);
  uint8_t out[64 * 16];
  const char *why;
  if (cr__gcs_decode(data + 3, size - 3, len, n, k, NULL, out, &why) != 0)
    return 0;
  for (uint64_t i = 1; i < n; i++)
    if (memcmp(out + (i - 1) * len, out + i * len, len) > 0)
      abort(); /* decoded values must never decrease */
  cr_buf b;
  cr_buf_init(&b);
  uint8_t again[64 * 16];
  if (cr__gcs_encode(&b, out, len, len, n, k, NULL) != 0 ||
      cr__gcs_decode(b.data, b.len, len, n, k, NULL, again, &why) != 0 ||
      memcmp(out, again, n * len) != 0)
    abort();
  cr_buf_free(&b);
  return 0;
}
