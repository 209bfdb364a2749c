/* Length-prefixed protobuf frames. Never interprets frame contents. */
#include "protocol/frame.h"

#include <stdlib.h>

#include "cleanroom/common.h"

int cr__frame_append(cr_buf *out, const Cleanroom__V1__Frame *frame) {
  size_t n = cleanroom__v1__frame__get_packed_size(frame);
  if (n == 0 || n > UINT32_MAX)
    return CR_EINVAL;
  int rc = cr_buf_reserve(out, CR_FRAME_HEADER_BYTES + n);
  if (rc)
    return rc;
  uint8_t *p = out->data + out->len;
  p[0] = (uint8_t)(n >> 24);
  p[1] = (uint8_t)(n >> 16);
  p[2] = (uint8_t)(n >> 8);
  p[3] = (uint8_t)n;
  size_t packed = cleanroom__v1__frame__pack(frame, p + CR_FRAME_HEADER_BYTES);
  if (packed != n)
    return CR_EINTERNAL;
  out->len += CR_FRAME_HEADER_BYTES + n;
  return 0;
}

int cr__frame_peek(const uint8_t *buf, size_t len, size_t max_frame, const uint8_t **payload,
                   size_t *payload_len, size_t *total, uint32_t *announced) {
  if (len < CR_FRAME_HEADER_BYTES)
    return 0;
  uint32_t n = ((uint32_t)buf[0] << 24) | ((uint32_t)buf[1] << 16) | ((uint32_t)buf[2] << 8) |
               (uint32_t)buf[3];
  if (announced)
    *announced = n;
  if (n == 0 || n > max_frame)
    return CR_EPROTO;
  if (len - CR_FRAME_HEADER_BYTES < n)
    return 0;
  *payload = buf + CR_FRAME_HEADER_BYTES;
  *payload_len = n;
  *total = CR_FRAME_HEADER_BYTES + (size_t)n;
  return 1;
}

Cleanroom__V1__Frame *cr__frame_decode(const uint8_t *payload, size_t len) {
  return cleanroom__v1__frame__unpack(NULL, len, payload);
}

void cr__frame_free(Cleanroom__V1__Frame *frame) {
  if (frame)
    cleanroom__v1__frame__free_unpacked(frame, NULL);
}

const char *cr__frame_name(int msg_case) {
  switch (msg_case) {
  case CLEANROOM__V1__FRAME__MSG_HELLO:
    return "Hello";
  case CLEANROOM__V1__FRAME__MSG_BATCH:
    return "Batch";
  case CLEANROOM__V1__FRAME__MSG_END_OF_SET:
    return "EndOfSet";
  case CLEANROOM__V1__FRAME__MSG_DIGESTS:
    return "Digests";
  case CLEANROOM__V1__FRAME__MSG_END_OF_DIGESTS:
    return "EndOfDigests";
  case CLEANROOM__V1__FRAME__MSG_FINISH:
    return "Finish";
  case CLEANROOM__V1__FRAME__MSG_RELEASED:
    return "Released";
  case CLEANROOM__V1__FRAME__MSG_NOISE_SEED:
    return "NoiseSeed";
  case CLEANROOM__V1__FRAME__MSG_ERROR:
    return "Error";
  default:
    return "empty frame";
  }
}

int cr_session_refusal_frame(cr_buf *out, int wire_code, const char *text) {
  Cleanroom__V1__Error e = CLEANROOM__V1__ERROR__INIT;
  Cleanroom__V1__Frame f = CLEANROOM__V1__FRAME__INIT;
  e.code = (uint32_t)wire_code;
  e.message = (char *)(text ? text : "");
  e.protocol_version = CR_PROTOCOL_VERSION; /* no session: no template to name */
  f.msg_case = CLEANROOM__V1__FRAME__MSG_ERROR;
  f.error = &e;
  return cr__frame_append(out, &f);
}

int cr_session_frame_length(const uint8_t hdr[CR_FRAME_HEADER_BYTES], size_t max_frame,
                            uint32_t *len) {
  uint32_t n =
      (uint32_t)hdr[0] << 24 | (uint32_t)hdr[1] << 16 | (uint32_t)hdr[2] << 8 | (uint32_t)hdr[3];
  if (max_frame == 0)
    max_frame = CR_DEFAULT_MAX_FRAME;
  *len = n;
  return n == 0 || n > max_frame ? CR_EPROTO : 0;
}
