/*
 * cleanroom — a small fixed pool of worker threads for data-parallel loops.
 *
 * The blinding work of a session is a loop over independent elements; the
 * pool splits it across the machine's cores. Several sessions may run
 * loops at once: each call is its own job, and the calling thread works on
 * its own job too, so a loop always makes progress even when every pool
 * thread is busy elsewhere.
 */
#ifndef CLEANROOM_POOL_H
#define CLEANROOM_POOL_H

#include <stddef.h>

#include "cleanroom/error.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct cr_pool cr_pool;

/* threads: worker threads besides the callers (0: the loops run on the
 * calling thread only). */
CR_NODISCARD int cr_pool_new(cr_pool **out, unsigned threads);
/* Waits for the workers to finish and frees them. No job may be running. */
void cr_pool_free(cr_pool *p);
unsigned cr_pool_threads(const cr_pool *p);

/*
 * Calls fn(ctx, begin, end) over [0, n) in ranges of at most `chunk`, on
 * the pool's threads and the calling thread, and returns when all ranges
 * are done: 0, or the first non-zero value fn returned (the other ranges
 * still run). p may be NULL: then it is a plain loop on this thread.
 */
int cr_pool_for(cr_pool *p, size_t n, size_t chunk, int (*fn)(void *ctx, size_t begin, size_t end),
                void *ctx);

/* The number of cores this process may use (at least 1). */
unsigned cr_cpu_count(void);

#ifdef __cplusplus
}
#endif
#endif
