/*
 * Fuzz target: a responder session under a template with two match keys,
 * fed arbitrary bytes from its peer. The first input byte picks how much
 * valid protocol precedes the fuzzed bytes (byte % 3: none, a valid Hello,
 * Hello and the whole set and EndOfSet) and which side's records are
 * counted ((byte / 3) % 2: the peer's, so its Batch frames carry records
 * of two points; or ours, so the digests it returns are records). The
 * session must never crash, leak, or report a result it did not complete.
 */
#include <stdint.h>
#include <string.h>

#include "session_peer.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  int level = size > 0 ? data[0] % 3 : 0;
  int ours_counted = size > 0 ? (data[0] / 3) % 2 : 0;
  if (size > 0) {
    data++;
    size--;
  }
  cr_query q;
  cr_template t;
  fz_template(&t, &q, 0x22);
  t.match_keys[0].name = "email";
  t.match_keys[1].name = "phone";
  t.nmatch_keys = 2;
  t.count_of = ours_counted ? CR_ROLE_PROVIDER : CR_ROLE_CONSUMER;

  /* Our set: values a@x.example (e-mail), +15550000001 and +15550000002
   * (phones); as records {e-mail, first phone} and {none, second phone}
   * when ours are counted, else the three values. */
  uint8_t bytes[] = "a@x.example"
                    "+15550000001"
                    "+15550000002";
  size_t off[] = {0, 11, 23, 35};
  uint8_t value_key[] = {0, 1, 1};
  uint32_t slots[] = {0, 1, CR_DATASET_NO_VALUE, 2};
  uint32_t value_record[] = {0, 0, 1};
  cr_dataset d;
  memset(&d, 0, sizeof d);
  d.bytes = bytes;
  d.off = off;
  d.nkeys = 2;
  d.nvalues = 3;
  d.value_key = value_key;
  if (ours_counted) {
    d.n = 2;
    d.width = 2;
    d.slots = slots;
    d.value_record = value_record;
  } else {
    d.n = 3;
    d.width = 1;
  }

  cr_session *s = fz_session_new(&t, &d);

  cr_buf prefix;
  cr_buf_init(&prefix);
  size_t peer_w = ours_counted ? 1 : 2;
  if (level >= 1)
    fz_append_hello(&prefix, t.sha256, NULL, peer_w > 1 ? (uint32_t)peer_w : 0);
  if (level >= 2)
    fz_append_set(&prefix, peer_w);
  fz_feed(s, &prefix, data, size);
  return 0;
}
