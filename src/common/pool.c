/* Worker pool for data-parallel loops (include/cleanroom/pool.h). */
// NOLINTNEXTLINE(bugprone-reserved-identifier): a feature-test macro is the program's to define
#define _GNU_SOURCE /* sched_getaffinity, CPU_COUNT */
#include "cleanroom/common.h"

#include <pthread.h>
#include <sched.h>
#include <stdlib.h>
#include <unistd.h>

typedef struct job {
  int (*fn)(void *ctx, size_t begin, size_t end);
  void *ctx;
  size_t n, chunk;
  size_t next;    /* next unclaimed index */
  size_t pending; /* ranges claimed and not yet finished */
  int rc;
  struct job *prev, *nextjob;
} job;

struct cr_pool {
  pthread_mutex_t mu;
  pthread_cond_t work; /* a job was added, or the pool stops */
  pthread_cond_t done; /* a range finished */
  job *jobs;           /* jobs with unclaimed ranges */
  int stopping;
  unsigned nthreads;
  pthread_t *threads;
};

unsigned cr_cpu_count(void) {
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof set, &set) == 0) {
    int c = CPU_COUNT(&set);
    if (c > 0)
      return (unsigned)c;
  }
  long n = sysconf(_SC_NPROCESSORS_ONLN);
  return n > 0 ? (unsigned)n : 1;
}

static void unlink_job(cr_pool *p, job *j) {
  if (j->prev)
    j->prev->nextjob = j->nextjob;
  else if (p->jobs == j)
    p->jobs = j->nextjob;
  if (j->nextjob)
    j->nextjob->prev = j->prev;
  j->prev = j->nextjob = NULL;
}

/* Claims a range of j under the lock; 0 when none is left. */
static int claim(cr_pool *p, job *j, size_t *b, size_t *e) {
  if (j->next >= j->n)
    return 0;
  *b = j->next;
  *e = j->n - j->next > j->chunk ? j->next + j->chunk : j->n;
  j->next = *e;
  j->pending++;
  if (j->next >= j->n)
    unlink_job(p, j); /* nothing left to hand out */
  return 1;
}

static void finish(cr_pool *p, job *j, int rc) {
  if (rc != 0 && j->rc == 0)
    j->rc = rc;
  j->pending--;
  if (j->pending == 0 && j->next >= j->n)
    pthread_cond_broadcast(&p->done);
}

static void *worker(void *arg) {
  cr_pool *p = arg;
  pthread_mutex_lock(&p->mu);
  for (;;) {
    while (!p->stopping && p->jobs == NULL)
      pthread_cond_wait(&p->work, &p->mu);
    if (p->stopping)
      break;
    job *j = p->jobs;
    size_t b, e;
    if (!claim(p, j, &b, &e))
      continue;
    pthread_mutex_unlock(&p->mu);
    int rc = j->fn(j->ctx, b, e);
    pthread_mutex_lock(&p->mu);
    finish(p, j, rc);
  }
  pthread_mutex_unlock(&p->mu);
  return NULL;
}

int cr_pool_new(cr_pool **out, unsigned threads) {
  cr_pool *p = calloc(1, sizeof *p);
  *out = NULL;
  if (p == NULL)
    return CR_ENOMEM;
  pthread_mutex_init(&p->mu, NULL);
  pthread_cond_init(&p->work, NULL);
  pthread_cond_init(&p->done, NULL);
  if (threads > 0) {
    p->threads = calloc(threads, sizeof *p->threads);
    if (p->threads == NULL) {
      cr_pool_free(p);
      return CR_ENOMEM;
    }
  }
  for (unsigned i = 0; i < threads; i++) {
    if (pthread_create(&p->threads[i], NULL, worker, p) != 0) {
      cr_pool_free(p);
      return CR_EINTERNAL;
    }
    p->nthreads++;
  }
  *out = p;
  return 0;
}

void cr_pool_free(cr_pool *p) {
  if (p == NULL)
    return;
  pthread_mutex_lock(&p->mu);
  p->stopping = 1;
  pthread_cond_broadcast(&p->work);
  pthread_mutex_unlock(&p->mu);
  for (unsigned i = 0; i < p->nthreads; i++)
    pthread_join(p->threads[i], NULL);
  free(p->threads);
  pthread_cond_destroy(&p->work);
  pthread_cond_destroy(&p->done);
  pthread_mutex_destroy(&p->mu);
  free(p);
}

int cr_pool_for(cr_pool *p, size_t n, size_t chunk, int (*fn)(void *ctx, size_t begin, size_t end),
                void *ctx) {
  if (n == 0)
    return 0;
  if (chunk == 0)
    chunk = 1;
  if (p == NULL || p->nthreads == 0 || n <= chunk)
    return fn(ctx, 0, n);
  job j = {fn, ctx, n, chunk, 0, 0, 0, NULL, NULL};
  pthread_mutex_lock(&p->mu);
  j.nextjob = p->jobs;
  if (p->jobs)
    p->jobs->prev = &j;
  /* j lives on this stack while published: it is unlinked once its last range
   * is claimed, and this returns only after pending reaches 0 under mu, so no
   * worker holds it then. */
  // cppcheck-suppress autoVariables ; unpublished before return (see above)
  p->jobs = &j;
  pthread_cond_broadcast(&p->work);
  /* The caller works on its own job until nothing is left to claim. */
  size_t b, e;
  while (claim(p, &j, &b, &e)) {
    pthread_mutex_unlock(&p->mu);
    int rc = fn(ctx, b, e);
    pthread_mutex_lock(&p->mu);
    finish(p, &j, rc);
  }
  while (j.pending > 0)
    pthread_cond_wait(&p->done, &p->mu);
  pthread_mutex_unlock(&p->mu);
  return j.rc;
}
