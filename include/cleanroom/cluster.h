/*
 * cleanroom — one party's node spread over the processes of an MPI job
 * (cleanroom-mpi, docs/scale-out.md).
 *
 * Rank 0 is the node: it holds the TLS connection, the session, the
 * contract (admission, audit log, release) and the data; every number it
 * releases is computed there, from all of the set. The heavy steps of the
 * engine (hash-to-group and blind our elements; re-blind the partner's
 * points and digest them: ~98% of a node's CPU) go out in batches: each
 * batch is cut into K shares, one per process (rank 0 computes its own),
 * and the results come back in order, bit-identical to one process's. The
 * other ranks keep nothing between batches: no set, no count, no state.
 *
 * What crosses the party's MPI network: the session scalar and the messages
 * hashed (normalized match keys) to the workers, points and digests back.
 * It must stay inside the party (docs/security.md "A node on a cluster").
 *
 * Never: logs or prints a key, a point, a digest or the scalar; keeps a
 * buffer that held one without wiping it.
 */
#ifndef CLEANROOM_CLUSTER_H
#define CLEANROOM_CLUSTER_H

#include "cleanroom/common.h"
#include "cleanroom/engine.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct cr_cluster cr_cluster;

/* Joins the MPI job (MPI_Init_thread): every process calls it first, with
 * main's argc/argv. CR_ECLUSTER with a message when MPI cannot start. */
CR_NODISCARD int cr_cluster_init(cr_cluster **out, int *argc, char ***argv, cr_error *err);

int cr_cluster_rank(const cr_cluster *c);
/* K: the party's processes. */
int cr_cluster_size(const cr_cluster *c);
/* The job's hosts, distinct, in rank order ("a,b"), and how many. */
const char *cr_cluster_hosts(const cr_cluster *c);
int cr_cluster_nhosts(const cr_cluster *c);
/* Processes of this job on this host (for a default thread count). */
int cr_cluster_local_size(const cr_cluster *c);

/* Ranks above 0: computes rank 0's batches with `threads` threads until
 * rank 0 stops the job. 0 then; CR_ECLUSTER when rank 0 is gone. */
int cr_cluster_work(cr_cluster *c, unsigned threads, cr_error *err);

/* Rank 0: the offload to pass to cr_engine_set_offload (NULL when K is 1:
 * nothing to spread). Valid until cr_cluster_finish. */
const cr_engine_offload *cr_cluster_offload(cr_cluster *c);

/* Rank 0, from any thread: a batch being waited for fails now
 * (CR_ECLUSTER), and so does every later one; for a node that is stopping
 * (SIGTERM: mpirun ends the job this way when a process of it died). */
void cr_cluster_interrupt(cr_cluster *c);

/* Rank 0: fn(ctx) is called (from the thread that found it) when a process
 * of the job fails or does not answer: the node cannot go on, and should
 * stop (cleanroom-mpi raises SIGTERM, so the session is recorded and the
 * partner told, and the job ends). */
void cr_cluster_set_on_failure(cr_cluster *c, void (*fn)(void *ctx), void *ctx);

/* Rank 0 stops the workers; every rank leaves the job and frees c. When a
 * process failed, or answers were left unread, rank 0 ends the job with
 * MPI_Abort(code) instead: the others must not wait for a stop that cannot
 * reach them all. */
void cr_cluster_finish(cr_cluster *c, int code);

#ifdef __cplusplus
}
#endif

#endif
