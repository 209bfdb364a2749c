/*
 * Framing: u32 big-endian length, then one protobuf cleanroom.v1.Frame.
 * The length is checked before protobuf-c sees a byte, so an oversize or
 * empty frame never reaches the decoder. Internal to the protocol layer and
 * its tests (scripted peers build frames with it).
 */
#ifndef CR_PROTOCOL_FRAME_H
#define CR_PROTOCOL_FRAME_H

#include <stddef.h>
#include <stdint.h>

#include "cleanroom.pb-c.h"
#include "cleanroom/common.h"
#include "cleanroom/protocol.h"

/* Appends the length prefix and the packed frame to out. */
int cr__frame_append(cr_buf *out, const Cleanroom__V1__Frame *frame);

/*
 * Looks at the start of buf for one complete frame.
 * Returns 1 with payload, payload_len and total (header included) set,
 * 0 if more bytes are needed, CR_EPROTO if the announced length is 0 or
 * larger than max_frame (*announced set for the message).
 */
int cr__frame_peek(const uint8_t *buf, size_t len, size_t max_frame, const uint8_t **payload,
                   size_t *payload_len, size_t *total, uint32_t *announced);

/* NULL when the bytes are not a valid Frame. Free with cr__frame_free. */
Cleanroom__V1__Frame *cr__frame_decode(const uint8_t *payload, size_t len);
void cr__frame_free(Cleanroom__V1__Frame *frame);

/* Stable name of a frame type, for messages ("Batch"). */
const char *cr__frame_name(int msg_case);

#endif
