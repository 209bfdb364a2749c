/*
 * cleanroom — the matching engine of one session (design §4–5).
 *
 * Owns: the session scalar; the own set's send order and its blinding
 * (hash-to-group, then k *, batched on the cr_pool, or on the party's
 * other processes through the offload below); re-blinding of the
 * peer's points into digests; the tables of fingerprints and digests
 * (sorted for the checks, for matching and for return); matching and the
 * result (count, group_by cells, the members bitmap), every released
 * number thresholded here. With one match key the tables are cr_sorters on
 * cfg.spill, bounded by the node's memory budget (docs/memory.md "The
 * engine's tables"), and the checks and matching are merges of sorted
 * streams; with several keys (records) they stay in memory.
 * Never: logs anything or puts a key, point, scalar or digest in a message
 * (errors are codes; the session words them); keeps a buffer that held a
 * match key or a digest without wiping it; touches frames, sockets or the
 * clock, or a file but through its sorters (encrypted runs in the node's
 * work directory). All randomness comes from the rand callback it is given.
 *
 * The session drives it: cr_engine_new (draws the scalar), cr_engine_set_own,
 * cr_engine_prepare once both Hellos are known, then blind /
 * reblind / peer_done / own_add and finally cr_engine_match.
 *
 * Elements and points. With one match key every element of a set is one
 * key value, one point. With several (docs/template.md "Several match
 * keys") the counted side's elements are RECORDS of `width` points, one per
 * match key in key order (a key the record lacks is a pad point), and the
 * other side's elements are single values of any key. The element counts
 * (own_n, peer_n, label sizes) are elements; points, digests and their
 * positions are points (element i's are [i * width, (i + 1) * width)).
 * A record counts once when any of its points matches.
 */
#ifndef CLEANROOM_ENGINE_H
#define CLEANROOM_ENGINE_H

#include <stddef.h>
#include <stdint.h>

#include "cleanroom/common.h"
#include "cleanroom/crypto.h"
#include "cleanroom/dataset.h"
#include "cleanroom/template.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Fills buf with len uniform random bytes; 0 or a negative CR_E* code. */
typedef int (*cr_rand_fn)(void *ctx, uint8_t *buf, size_t len);

/* The default randomness: libsodium's randombytes_buf (ctx unused). */
int cr_engine_rand_default(void *ctx, uint8_t *buf, size_t len);

#define CR_ENGINE_DIGEST_SLOT 32 /* digests are kept in 32-byte slots, zero padded */

/* A digest with the label of the element it came from. */
typedef struct cr_engine_digest {
  uint8_t d[CR_ENGINE_DIGEST_SLOT];
  uint32_t label;
  uint32_t index; /* arrival (peer's points) or send (own points) order */
} cr_engine_digest;

/* One cell of a grouped count. */
typedef struct cr_engine_cell {
  uint32_t label[CR_ROLE_COUNT];
  uint64_t count; /* 0 when suppressed */
  int suppressed;
} cr_engine_cell;

typedef struct cr_engine_config {
  const cr_template *tmpl; /* suite, template hash and match key names */
  cr_pool *pool;           /* NULL: this thread only */
  cr_rand_fn rand;         /* NULL: cr_engine_rand_default */
  void *rand_ctx;
  cr_spill *spill; /* tables beyond the memory budget spill here; NULL: memory only */
  /* 1: the data set serves this engine alone; once its elements are sent
   * (and our matched rows will not be written from them) they are freed
   * with cr_dataset_iter_release, so their spill leaves the disk early. */
  int release_data;
} cr_engine_config;

/* What both Hellos decided. */
typedef struct cr_engine_plan {
  uint8_t session_id[CR_SESSION_ID_BYTES];
  size_t digest_bytes;
  uint64_t peer_n;   /* the peer's elements */
  int peer_grouped;  /* the peer's elements carry labels */
  int members;       /* kind members: digests go back in arrival order */
  int self_receives; /* match: keep the peer's digests, take ours back */
  int peer_receives; /* return the peer's digests */
  size_t peer_width; /* points per peer element: 0 or 1, or its records' width */
} cr_engine_plan;

/* The outcome of cr_engine_match. Heap outputs belong to the caller. */
typedef struct cr_engine_result {
  uint64_t count; /* 0 when suppressed; several keys: records with any match */
  int suppressed;
  cr_engine_cell *cells; /* grouped: row-major by provider label */
  size_t ncells;
  uint8_t *matched; /* members, not suppressed: bit per own element (dataset order, no pads) */
  /* Several keys, not grouped: per match key, the records with a match on
   * that key (a record matched on two keys is in both). Released only when
   * every combination they and the count let one derive (the records
   * matched on exactly a given set of keys) is 0 or at least min_count;
   * otherwise, or below min_count, key_suppressed[k] = 1 and the count 0. */
  size_t nkeys; /* 0: no breakdown */
  uint64_t key_count[CR_TEMPLATE_MAX_KEYS];
  uint8_t key_suppressed[CR_TEMPLATE_MAX_KEYS];
  /* Members with several keys: per own record (like matched), a bit per
   * match key it matched on; NULL otherwise. */
  uint8_t *matched_on;
} cr_engine_result;

/*
 * The two heavy steps, on a batch: what every engine calls, and what the
 * processes of a party spread over a cluster compute for each other
 * (cleanroom-mpi, docs/scale-out.md). Both spread the batch over the pool
 * (NULL: this thread only) and wipe what they held.
 *
 * cr_engine_hash_blind_batch: points[i] = k * HashToGroup(message i), for n
 * messages laid end to end in msgs (lens[i] bytes each).
 * cr_engine_reblind_digest_batch: digests[i] (digest_bytes each) = the
 * session's digest of k * points[i]; CR_EPROTO, *bad the lowest index of a
 * point that is not a valid encoding, when one is not.
 */
CR_NODISCARD int cr_engine_hash_blind_batch(cr_pool *pool, const cr_suite *suite, const uint8_t *k,
                                            const uint8_t *msgs, const size_t *lens, size_t n,
                                            uint8_t *points);
CR_NODISCARD int cr_engine_reblind_digest_batch(cr_pool *pool, const cr_suite *suite,
                                                const uint8_t *k, const uint8_t *session_id,
                                                size_t digest_bytes, const uint8_t *points,
                                                size_t n, uint8_t *digests, uint64_t *bad);

/*
 * Where those batches are computed. A process that is one of several of its
 * party (rank 0 of cleanroom-mpi) sets an offload once, before any session,
 * and every engine of the process then hands its batches to it; the
 * offload computes the same function (bit-identical results, the same
 * *bad) on this process's pool and the party's other processes, or fails
 * with a negative CR_E* code and a message in err (CR_ECLUSTER: a process
 * of the party failed; the message names it).
 * A property of the process, like the crypto backend, hence global. NULL:
 * the pool only (the default).
 */
typedef struct cr_engine_offload {
  void *ctx;
  int (*hash_blind)(void *ctx, cr_pool *pool, const cr_suite *suite, const uint8_t *k,
                    const uint8_t *msgs, const size_t *lens, size_t n, uint8_t *points,
                    cr_error *err);
  int (*reblind_digest)(void *ctx, cr_pool *pool, const cr_suite *suite, const uint8_t *k,
                        const uint8_t *session_id, size_t digest_bytes, const uint8_t *points,
                        size_t n, uint8_t *digests, uint64_t *bad, cr_error *err);
} cr_engine_offload;
void cr_engine_set_offload(const cr_engine_offload *o);

typedef struct cr_engine cr_engine;

/* CR_EREFUSED for an unknown suite, CR_ECRYPTO when the randomness fails. */
CR_NODISCARD int cr_engine_new(cr_engine **out, const cr_engine_config *cfg);
/* Wipes the scalar and every buffer. */
void cr_engine_free(cr_engine *e);
/* Wipes the scalar and the digest tables now (the session ended). */
void cr_engine_wipe(cr_engine *e);
/* 1 once the scalar memory has been wiped. */
int cr_engine_scalar_wiped(const cr_engine *e);

/* 1 when this build supports the suite. */
int cr_engine_suite_supported(const char *name);
size_t cr_engine_point_bytes(const cr_engine *e);
const char *cr_engine_suite_name(const cr_engine *e);

/*
 * Takes the own set (must outlive the engine) and its pads. nlabels: the
 * labels the set travels with (1 when not grouped); label_map: dataset
 * label -> wire label (NULL: not grouped); pad[l]: random elements added
 * with wire label l. A pad is k * HashToGroup("cleanroom/v1/pad" || seed ||
 * u64 index) with a fresh 32-byte seed from the rand callback: a uniform
 * group element that matches no key, indistinguishable from a real point
 * to the peer. A pad never counts and never sets a members bit.
 * CR_EREFUSED for an empty or oversized (padded) set.
 *
 * Send order. One match key: the dataset's iterator order (a keyed random
 * permutation per load, cr_dataset_iter) with the pads interleaved by
 * sequential sampling as cr_engine_blind goes (each position a pad with
 * probability pads left / positions left, its label in proportion to the
 * pads left per label, all from the rand callback); nothing per element is
 * kept but a bit per position (pad or not). The pad index is the send
 * position. Several keys (records): a Fisher-Yates shuffle of the dataset's
 * records and the pads, in memory.
 */
CR_NODISCARD int cr_engine_set_own(cr_engine *e, const cr_dataset *d, size_t nlabels,
                                   const uint32_t *label_map, const uint64_t *pad);
/* Elements sent: the dataset's plus the pads. */
uint64_t cr_engine_own_n(const cr_engine *e);
/* Points per own element (cr_dataset_width of the set). */
size_t cr_engine_own_width(const cr_engine *e);

/*
 * Which rule a peer broke when a call returned CR_EPROTO (the session words
 * it; docs/protocol.md "Checks on peer data").
 */
typedef enum cr_engine_rule {
  CR_RULE_NONE = 0,
  CR_RULE_POINT_INVALID,   /* not a canonical encoding of a non-identity element */
  CR_RULE_POINT_REFLECTED, /* equal to one of our own blinded points */
  CR_RULE_POINT_REPEATED,  /* the same point twice in the peer's set */
  CR_RULE_DIGEST_ORDER,    /* returned digests (records) not strictly increasing */
  CR_RULE_DIGEST_REPEATED, /* the same digest returned twice */
  CR_RULE_DIGEST_ECHO,     /* the returned digests are the ones we sent */
  CR_RULE_COUNT_BOUND      /* a count above a side's (padded) size */
} cr_engine_rule;
cr_engine_rule cr_engine_violation(const cr_engine *e);

/* What the last failure of a table (a sorter: CR_EIO for a full work
 * directory or the disk cap, naming the directory) or of the dataset's
 * iterator said; "" when none. Never holds a key, point or digest. */
const char *cr_engine_error_message(const cr_engine *e);

/* Allocates the digest tables for the plan. */
CR_NODISCARD int cr_engine_prepare(cr_engine *e, const cr_engine_plan *plan);

/* Blinds own elements [first, first + n) of the send order into points
 * (n * width * point_bytes) and, unless labels is NULL, their labels (one
 * u32 big-endian per element; CR_EINVAL when the dataset has none). One
 * match key: ranges must be consecutive (first = the elements blinded so
 * far), as the order is drawn while blinding; a failed call ends the set. */
CR_NODISCARD int cr_engine_blind(cr_engine *e, uint64_t first, size_t n, uint8_t *points,
                                 uint8_t *labels);

/* Re-blinds the next n peer elements (n * peer_width points) into digests
 * (labels: n u32 big-endian, one per element, when the peer is grouped,
 * else NULL). CR_EPROTO with *bad set to the lowest invalid point's index
 * in this call. */
CR_NODISCARD int cr_engine_reblind(cr_engine *e, const uint8_t *points, const uint8_t *labels,
                                   size_t n, uint64_t *bad);

/* The peer's set is complete: sorts the tables. */
CR_NODISCARD int cr_engine_peer_done(cr_engine *e);

/*
 * Reads the next of the peer's digests in the order they go back (after
 * peer_done, when the peer receives), peer_n * peer_width in all: at most
 * max of them (whole elements: a record's digests together), digest_bytes
 * each packed into out, *n of them (0 at the end), all of one label
 * (*label) for count. Order: for count, by label, then element (a record's
 * digests in key order, records ordered by their digests), which hides the
 * order they were sent in; for members, arrival order. With one match key
 * they come from a sorter (merged from spilled runs when large): CR_EIO when
 * a run cannot be read back (cr_engine_error_message).
 */
CR_NODISCARD int cr_engine_returned_next(cr_engine *e, size_t max, uint8_t *out, size_t *n,
                                         uint32_t *label);

/* Takes back n own digests (digest_bytes each, packed; n a multiple of the
 * own width) of one label. continues: the previous element is of the same
 * label run, so count order holds across the call. CR_EPROTO
 * (CR_RULE_DIGEST_ORDER) when, for count, the elements (a record's digests
 * compared in key order) are not strictly increasing: equal neighbours are
 * refused too. */
CR_NODISCARD int cr_engine_own_add(cr_engine *e, const uint8_t *plain, uint64_t n, uint32_t label,
                                   int continues);
/* The last own digest taken back (NULL before the first). */
const uint8_t *cr_engine_own_last(const cr_engine *e);

/* Matches own digests against the peer's. nlabels: per role (1 when not
 * grouped); own_role picks which side's label a digest carries; sizes:
 * per role, the (padded) size of each label, the bound of its cells.
 * Several keys: each record of the counted side (ours, or the peer's when
 * ours is the side of values) counts once, in every cell of a label of the
 * other side one of its keys matched.
 * Before counting, checks what the peer sent (CR_EPROTO, the rule in
 * cr_engine_violation): no peer point equals one of ours (reflection), no
 * point or returned digest repeats, the returned digests are not the ones
 * we sent (echo), no count exceeds either side's padded size. A suppressed
 * count or cell is 0 in the result. */
CR_NODISCARD int cr_engine_match(cr_engine *e, cr_role own_role,
                                 const size_t nlabels[CR_ROLE_COUNT],
                                 uint64_t *const sizes[CR_ROLE_COUNT], int grouped,
                                 uint64_t min_count, cr_engine_result *out);

#ifdef __cplusplus
}
#endif
#endif
