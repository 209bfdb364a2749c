/*
 * Fuzz target: the frame reader and decoder on arbitrary bytes. Every
 * announced length is checked against the maximum before decoding.
 */
#include <stdint.h>
#include <stdlib.h>

#include "protocol/frame.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  size_t off = 0;
  while (off < size) {
    const uint8_t *payload;
    size_t plen, total;
    uint32_t announced;
    int r = cr__frame_peek(data + off, size - off, 1 << 20, &payload, &plen, &total, &announced);
    if (r <= 0)
      break;
    if (plen == 0 || plen > (1 << 20) || total != plen + 4)
      abort();
    Cleanroom__V1__Frame *f = cr__frame_decode(payload, plen);
    if (f) {
      (void)cr__frame_name(f->msg_case);
      cr__frame_free(f);
    }
    off += total;
  }
  return 0;
}
