/*
 * One party's node over the processes of an MPI job: rank 0 hands each
 * batch of the engine's heavy steps out in K shares and gathers the results
 * in order (include/cleanroom/cluster.h, docs/scale-out.md).
 *
 * A request is one MPI message from rank 0 to a worker (tag REQ): a fixed
 * header (the operation, the suite, the count, the scalar, the session id
 * and digest length), then the operation's input. The answer is one message
 * back (tag REP): the result code, the lowest invalid index, the output.
 * Every process runs the same binary, so the header is sent as it lies in
 * memory. Waiting polls with short sleeps rather than MPI's busy wait, so
 * idle processes leave the cores to the ones computing.
 */
#include "cleanroom/cluster.h"

#include <mpi.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <sodium.h>

#define TAG_REQ 1
#define TAG_REP 2
#define OP_STOP 0
#define OP_HASH_BLIND 1
#define OP_REBLIND_DIGEST 2
#define MAX_SCALAR 64
/* Fewer elements than this per process: not worth a message. */
#define MIN_SHARE 16
/* Sleep between polls while waiting (ns): well below a share's compute. */
#define POLL_NS 100000L
/* A worker waiting for its next request polls less and less often, down
 * to this (ns). */
#define IDLE_POLL_MAX_NS 2000000L
/* A share takes well under a second; a process silent this long is lost. */
#define ANSWER_TIMEOUT_S 120
/* Stopping: a worker that has not taken its stop by then is gone. */
#define STOP_TIMEOUT_S 5

typedef struct req_hdr {
  uint32_t op;
  uint32_t n;
  uint32_t digest_bytes;
  uint32_t reserved;
  char suite[16];
  uint8_t k[MAX_SCALAR];
  uint8_t session_id[CR_SESSION_ID_BYTES];
} req_hdr;

typedef struct rep_hdr {
  int32_t rc;
  uint32_t reserved;
  uint64_t bad;
} rep_hdr;

struct cr_cluster {
  MPI_Comm comm;
  int rank, size, local_size;
  int nhosts;
  char *hosts;                              /* distinct, in rank order, comma-separated */
  char (*host)[MPI_MAX_PROCESSOR_NAME + 1]; /* per rank */
  pthread_mutex_t mu;                       /* one batch out at a time (MPI_THREAD_SERIALIZED) */
  int failed;                               /* a process did not answer: the job must end */
  void (*on_failure)(void *ctx);
  void *failure_ctx;
  _Atomic int stop; /* cr_cluster_interrupt: stop waiting */
  int abandoned;    /* requests left unanswered: the job cannot end cleanly */
  cr_engine_offload offload;
};

static void sleep_ns(long ns) {
  struct timespec ts = {0, ns};
  nanosleep(&ts, NULL);
}

static void sleep_poll(void) { sleep_ns(POLL_NS); }

void cr_cluster_set_on_failure(cr_cluster *c, void (*fn)(void *ctx), void *ctx) {
  c->on_failure = fn;
  c->failure_ctx = ctx;
}

void cr_cluster_interrupt(cr_cluster *c) {
  if (c != NULL)
    c->stop = 1;
}

/* Waits for requests [from, to) of rq, polling: 0; or which one failed
 * (*failed_at, MPI's code in *mrc), took too long, or was interrupted. */
enum { WAIT_OK, WAIT_MPI, WAIT_TIMEOUT, WAIT_STOPPED };
static int wait_all(cr_cluster *c, MPI_Request *rq, size_t from, size_t to, int *failed_at,
                    int *mrc, long timeout_s) {
  struct timespec t0, now;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  for (size_t r = from; r < to; r++) {
    int flag = 0;
    while (rq[r] != MPI_REQUEST_NULL &&
           (*mrc = MPI_Test(&rq[r], &flag, MPI_STATUS_IGNORE)) == MPI_SUCCESS && !flag) {
      *failed_at = (int)r;
      if (c->stop)
        return WAIT_STOPPED;
      clock_gettime(CLOCK_MONOTONIC, &now);
      if (now.tv_sec - t0.tv_sec > timeout_s)
        return WAIT_TIMEOUT;
      sleep_poll();
    }
    if (*mrc != MPI_SUCCESS) {
      *failed_at = (int)r;
      return WAIT_MPI;
    }
  }
  return WAIT_OK;
}

static const char *mpi_text(int mrc, char *buf) {
  int len = 0;
  if (MPI_Error_string(mrc, buf, &len) != MPI_SUCCESS || len <= 0)
    snprintf(buf, MPI_MAX_ERROR_STRING, "MPI error %d", mrc);
  return buf;
}

int cr_cluster_init(cr_cluster **out, int *argc, char ***argv, cr_error *err) {
  *out = NULL;
  int provided = 0;
  if (MPI_Init_thread(argc, argv, MPI_THREAD_SERIALIZED, &provided) != MPI_SUCCESS)
    return cr_error_set(err, CR_ECLUSTER,
                        "MPI could not start (was this process launched by mpirun?)");
  if (provided < MPI_THREAD_SERIALIZED) {
    MPI_Finalize();
    return cr_error_set(err, CR_ECLUSTER,
                        "this MPI library does not allow calls from several threads "
                        "(MPI_THREAD_SERIALIZED); cleanroom-mpi needs it");
  }
  cr_cluster *c = calloc(1, sizeof *c);
  if (c == NULL) {
    MPI_Finalize();
    return cr_error_set(err, CR_ENOMEM, "out of memory");
  }
  pthread_mutex_init(&c->mu, NULL);
  MPI_Comm_dup(MPI_COMM_WORLD, &c->comm);
  /* Errors come back as codes: a failed process is reported, not a crash. */
  MPI_Comm_set_errhandler(c->comm, MPI_ERRORS_RETURN);
  MPI_Comm_rank(c->comm, &c->rank);
  MPI_Comm_size(c->comm, &c->size);
  MPI_Comm local;
  if (MPI_Comm_split_type(c->comm, MPI_COMM_TYPE_SHARED, c->rank, MPI_INFO_NULL, &local) ==
      MPI_SUCCESS) {
    MPI_Comm_size(local, &c->local_size);
    MPI_Comm_free(&local);
  }
  if (c->local_size < 1)
    c->local_size = 1;
  /* Every rank's host name, for messages and the audit log. */
  char me[MPI_MAX_PROCESSOR_NAME + 1];
  int len = 0;
  memset(me, 0, sizeof me);
  MPI_Get_processor_name(me, &len);
  c->host = calloc((size_t)c->size, sizeof *c->host);
  c->hosts = calloc((size_t)c->size, MPI_MAX_PROCESSOR_NAME + 2);
  if (c->host == NULL || c->hosts == NULL) {
    cr_cluster_finish(c, 1);
    return cr_error_set(err, CR_ENOMEM, "out of memory");
  }
  MPI_Allgather(me, (int)sizeof me, MPI_CHAR, c->host, (int)sizeof me, MPI_CHAR, c->comm);
  size_t at = 0;
  for (int r = 0; r < c->size; r++) {
    c->host[r][MPI_MAX_PROCESSOR_NAME] = '\0';
    int seen = 0;
    for (int q = 0; q < r && !seen; q++)
      seen = strcmp(c->host[q], c->host[r]) == 0;
    if (seen)
      continue;
    at += (size_t)sprintf(c->hosts + at, "%s%s", at ? "," : "", c->host[r]);
    c->nhosts++;
  }
  *out = c;
  return 0;
}

int cr_cluster_rank(const cr_cluster *c) { return c->rank; }
int cr_cluster_size(const cr_cluster *c) { return c->size; }
const char *cr_cluster_hosts(const cr_cluster *c) { return c->hosts; }
int cr_cluster_nhosts(const cr_cluster *c) { return c->nhosts; }
int cr_cluster_local_size(const cr_cluster *c) { return c->local_size; }

/* ---- a worker ----------------------------------------------------------- */

/* Computes one request into a new answer (*rep, *rep_len). */
static int compute(cr_pool *pool, const uint8_t *buf, size_t len, uint8_t **rep, size_t *rep_len) {
  req_hdr h;
  rep_hdr a = {0, 0, UINT64_MAX};
  size_t out_len = 0;
  const cr_suite *suite = NULL;
  uint8_t *out = NULL;
  *rep = NULL;
  if (len < sizeof h) { /* not from our rank 0: answered as invalid */
    if ((out = malloc(sizeof a)) == NULL)
      return CR_ENOMEM;
    a.rc = CR_EINVAL;
    memcpy(out, &a, sizeof a);
    *rep = out;
    *rep_len = sizeof a;
    return 0;
  }
  memcpy(&h, buf, sizeof h);
  h.suite[sizeof h.suite - 1] = '\0';
  suite = cr_suite_find(h.suite);
  const uint8_t *in = buf + sizeof h;
  size_t in_len = len - sizeof h, n = h.n;
  if (suite == NULL || suite->scalar_bytes > MAX_SCALAR ||
      (h.op != OP_HASH_BLIND && h.op != OP_REBLIND_DIGEST))
    a.rc = CR_EINVAL;
  else if (h.op == OP_HASH_BLIND) {
    out_len = n * suite->point_bytes;
    size_t *lens = malloc((n ? n : 1) * sizeof *lens);
    size_t total = 0;
    if (lens == NULL || in_len < n * 4) {
      a.rc = lens == NULL ? CR_ENOMEM : CR_EINVAL;
    } else {
      for (size_t i = 0; i < n; i++) {
        uint32_t l;
        memcpy(&l, in + 4 * i, 4);
        lens[i] = l;
        total += l;
      }
      if (total != in_len - n * 4)
        a.rc = CR_EINVAL;
      else if ((out = malloc(sizeof a + (out_len ? out_len : 1))) == NULL)
        a.rc = CR_ENOMEM;
      else
        a.rc = cr_engine_hash_blind_batch(pool, suite, h.k, in + n * 4, lens, n, out + sizeof a);
    }
    free(lens);
  } else {
    out_len = n * h.digest_bytes;
    if (in_len != n * suite->point_bytes || h.digest_bytes == 0 ||
        h.digest_bytes > CR_MAX_DIGEST_BYTES)
      a.rc = CR_EINVAL;
    else if ((out = malloc(sizeof a + (out_len ? out_len : 1))) == NULL)
      a.rc = CR_ENOMEM;
    else
      a.rc = cr_engine_reblind_digest_batch(pool, suite, h.k, h.session_id, h.digest_bytes, in, n,
                                            out + sizeof a, &a.bad);
  }
  sodium_memzero(&h, sizeof h);
  if (a.rc != 0 || out == NULL) {
    if (out != NULL) {
      sodium_memzero(out, sizeof a + out_len);
      free(out);
    }
    out_len = 0;
    if ((out = malloc(sizeof a)) == NULL)
      return CR_ENOMEM;
  }
  memcpy(out, &a, sizeof a);
  *rep = out;
  *rep_len = sizeof a + out_len;
  return 0;
}

int cr_cluster_work(cr_cluster *c, unsigned threads, cr_error *err) {
  cr_pool *pool = NULL;
  char text[MPI_MAX_ERROR_STRING];
  int rc = 0;
  if (threads > 1 && (rc = cr_pool_new(&pool, threads - 1)) != 0)
    return cr_error_set(err, rc, "cannot start %u worker threads", threads - 1);
  for (;;) {
    int flag = 0, mrc, count = 0;
    MPI_Status st;
    /* Idle, the polls space out (up to IDLE_POLL_MAX_NS): a waiting worker
     * costs next to nothing, and a batch at most that much delay. */
    long ns = POLL_NS;
    while ((mrc = MPI_Iprobe(0, TAG_REQ, c->comm, &flag, &st)) == MPI_SUCCESS && !flag) {
      sleep_ns(ns);
      ns = ns * 2 > IDLE_POLL_MAX_NS ? IDLE_POLL_MAX_NS : ns * 2;
    }
    if (mrc != MPI_SUCCESS) {
      rc = cr_error_set(err, CR_ECLUSTER, "rank 0 (%s) is gone: %s", c->host[0],
                        mpi_text(mrc, text));
      break;
    }
    MPI_Get_count(&st, MPI_BYTE, &count);
    uint8_t *buf = malloc(count > 0 ? (size_t)count : 1);
    if (buf == NULL) {
      rc = cr_error_set(err, CR_ENOMEM, "out of memory");
      break;
    }
    mrc = MPI_Recv(buf, count, MPI_BYTE, 0, TAG_REQ, c->comm, MPI_STATUS_IGNORE);
    uint32_t op = UINT32_MAX; /* a message too short for a header: invalid */
    if (mrc == MPI_SUCCESS && (size_t)count >= sizeof(req_hdr))
      memcpy(&op, buf, sizeof op);
    uint8_t *rep = NULL;
    size_t rep_len = 0;
    if (mrc == MPI_SUCCESS && op != OP_STOP)
      rc = compute(pool, buf, (size_t)count, &rep, &rep_len);
    /* The request held the scalar and match keys. */
    sodium_memzero(buf, count > 0 ? (size_t)count : 1);
    free(buf);
    if (mrc != MPI_SUCCESS) {
      rc = cr_error_set(err, CR_ECLUSTER, "receiving from rank 0 (%s): %s", c->host[0],
                        mpi_text(mrc, text));
      break;
    }
    if (op == OP_STOP)
      break;
    if (rc != 0) {
      rc = cr_error_set(err, rc, "out of memory");
      break;
    }
    mrc = MPI_Send(rep, (int)rep_len, MPI_BYTE, 0, TAG_REP, c->comm);
    sodium_memzero(rep, rep_len);
    free(rep);
    if (mrc != MPI_SUCCESS) {
      rc = cr_error_set(err, CR_ECLUSTER, "answering rank 0 (%s): %s", c->host[0],
                        mpi_text(mrc, text));
      break;
    }
  }
  cr_pool_free(pool);
  return rc;
}

/* ---- rank 0 ------------------------------------------------------------- */

typedef struct share {
  size_t first, n; /* elements */
  uint8_t *req, *rep;
  size_t req_len, rep_len;
} share;

/* The batch in K shares: share 0 here, the others on the workers; the
 * outputs land in order in out (out_bytes per element). */
static int spread(cr_cluster *c, uint32_t op, cr_pool *pool, const cr_suite *suite,
                  const uint8_t *k, const uint8_t *session_id, size_t dl, const uint8_t *in,
                  const size_t *lens, size_t n, uint8_t *out, uint64_t *bad, cr_error *err) {
  size_t K = (size_t)c->size, ob = op == OP_HASH_BLIND ? suite->point_bytes : dl;
  size_t pb = suite->point_bytes;
  char text[MPI_MAX_ERROR_STRING];
  if (suite->scalar_bytes > MAX_SCALAR || strlen(suite->name) >= sizeof(((req_hdr *)0)->suite) ||
      n > UINT32_MAX)
    return CR_EINVAL;
  if (n < MIN_SHARE * K) /* no share smaller than MIN_SHARE: fewer processes */
    K = n / MIN_SHARE > 0 ? n / MIN_SHARE : 1;
  share *sh = calloc(K, sizeof *sh);
  /* rq[r]: worker r's answer; rq[K + r]: its request. */
  MPI_Request *rq = calloc(2 * K, sizeof(MPI_Request));
  if (sh == NULL || rq == NULL) {
    free(sh);
    free(rq);
    return CR_ENOMEM;
  }
  for (size_t r = 0; r < K; r++) {
    sh[r].first = n * r / K;
    sh[r].n = n * (r + 1) / K - sh[r].first;
    rq[r] = rq[K + r] = MPI_REQUEST_NULL;
  }
  int rc = 0, mrc = MPI_SUCCESS, at = -1, w = WAIT_OK, fire = 0;
  pthread_mutex_lock(&c->mu);
  if (c->failed || c->stop)
    rc = cr_error_set(err, CR_ECLUSTER, "%s",
                      c->failed ? "a process of this node's cluster failed earlier; restart the job"
                                : "the node is stopping");
  /* Each worker's request out and its answer's receive posted. */
  size_t in_at = 0; /* hash_blind: the messages' byte offset */
  if (op == OP_HASH_BLIND)
    for (size_t i = 0; i < sh[0].n; i++)
      in_at += lens[i];
  for (size_t r = 1; r < K && rc == 0; r++) {
    size_t m = sh[r].n, body;
    if (op == OP_HASH_BLIND) {
      size_t bytes = 0;
      for (size_t i = sh[r].first; i < sh[r].first + m; i++)
        bytes += lens[i];
      body = 4 * m + bytes;
    } else {
      body = m * pb;
    }
    sh[r].req_len = sizeof(req_hdr) + body;
    sh[r].rep_len = sizeof(rep_hdr) + m * ob;
    sh[r].req = malloc(sh[r].req_len);
    sh[r].rep = malloc(sh[r].rep_len);
    if (sh[r].req == NULL || sh[r].rep == NULL || sh[r].req_len > INT32_MAX ||
        sh[r].rep_len > INT32_MAX) {
      rc = CR_ENOMEM;
      break;
    }
    req_hdr h;
    memset(&h, 0, sizeof h);
    h.op = op;
    h.n = (uint32_t)m;
    h.digest_bytes = (uint32_t)dl;
    memcpy(h.suite, suite->name, strlen(suite->name));
    memcpy(h.k, k, suite->scalar_bytes);
    if (session_id != NULL)
      memcpy(h.session_id, session_id, CR_SESSION_ID_BYTES);
    memcpy(sh[r].req, &h, sizeof h);
    sodium_memzero(&h, sizeof h);
    uint8_t *p = sh[r].req + sizeof h;
    if (op == OP_HASH_BLIND) {
      size_t bytes = 0;
      for (size_t i = 0; i < m; i++) {
        uint32_t l = (uint32_t)lens[sh[r].first + i];
        memcpy(p + 4 * i, &l, 4);
        bytes += l;
      }
      memcpy(p + 4 * m, in + in_at, bytes);
      in_at += bytes;
    } else {
      memcpy(p, in + sh[r].first * pb, m * pb);
    }
    mrc = MPI_Irecv(sh[r].rep, (int)sh[r].rep_len, MPI_BYTE, (int)r, TAG_REP, c->comm, &rq[r]);
    if (mrc == MPI_SUCCESS)
      mrc =
          MPI_Isend(sh[r].req, (int)sh[r].req_len, MPI_BYTE, (int)r, TAG_REQ, c->comm, &rq[K + r]);
    if (mrc != MPI_SUCCESS) {
      at = (int)(K + r);
      w = WAIT_MPI;
      break;
    }
  }
  /* The requests delivered before our own share starts, so the workers
   * compute while we do; then their answers. */
  if (w == WAIT_OK && K > 1)
    w = wait_all(c, rq, K + 1, 2 * K, &at, &mrc, ANSWER_TIMEOUT_S);
  uint64_t bad0 = UINT64_MAX;
  int rc0 = 0;
  if (rc == 0 && w == WAIT_OK) {
    if (op == OP_HASH_BLIND)
      rc0 = cr_engine_hash_blind_batch(pool, suite, k, in, lens, sh[0].n, out);
    else
      rc0 = cr_engine_reblind_digest_batch(pool, suite, k, session_id, dl, in, sh[0].n, out, &bad0);
  }
  if (w == WAIT_OK && K > 1)
    w = wait_all(c, rq, 1, K, &at, &mrc, ANSWER_TIMEOUT_S);
  if (w != WAIT_OK) {
    int rank = at >= (int)K ? at - (int)K : at;
    const char *host = rank >= 0 && rank < c->size ? c->host[rank] : "?";
    for (size_t r = 0; r < 2 * K; r++)
      if (rq[r] != MPI_REQUEST_NULL)
        c->abandoned = 1;
    if (w == WAIT_STOPPED) {
      rc = cr_error_set(err, CR_ECLUSTER,
                        "the node was stopped (a signal) while process %d of %d (on %s) was "
                        "computing; unless someone stopped it, mpirun did because a process of "
                        "the job died (mpirun's message names it)",
                        rank, c->size, host);
    } else if (w == WAIT_TIMEOUT) {
      c->failed = 1;
      fire = 1;
      rc = cr_error_set(err, CR_ECLUSTER, "process %d of %d (on %s) did not answer within %d s",
                        rank, c->size, host, ANSWER_TIMEOUT_S);
    } else {
      c->failed = 1;
      fire = 1;
      rc = cr_error_set(err, CR_ECLUSTER, "process %d of %d (on %s) failed: %s", rank, c->size,
                        host, mpi_text(mrc, text));
    }
  } else if (rc == 0) {
    uint64_t low = bad0;
    rc = rc0;
    for (size_t r = 1; r < K; r++) {
      rep_hdr a;
      memcpy(&a, sh[r].rep, sizeof a);
      if (a.rc == 0) {
        memcpy(out + sh[r].first * ob, sh[r].rep + sizeof a, sh[r].n * ob);
      } else if (a.rc == CR_EPROTO && a.bad != UINT64_MAX) {
        if (sh[r].first + a.bad < low)
          low = sh[r].first + a.bad;
      } else if (rc == 0 || rc == CR_EPROTO) {
        rc = a.rc == CR_EPROTO ? CR_EINTERNAL : a.rc;
      }
    }
    if (rc == 0 && low != UINT64_MAX)
      rc = CR_EPROTO;
    if (rc == CR_EPROTO)
      *bad = low;
  } else {
    /* Built only some requests (out of memory): drain what went out. */
    if (wait_all(c, rq, 1, 2 * K, &at, &mrc, ANSWER_TIMEOUT_S) != WAIT_OK)
      c->abandoned = 1;
  }
  pthread_mutex_unlock(&c->mu);
  /* The node cannot go on without that process: it must stop (and a
   * supervisor start the job again), not serve sessions that fail. */
  if (fire && c->on_failure != NULL)
    c->on_failure(c->failure_ctx);
  for (size_t r = 0; r < K; r++) {
    if (sh[r].req != NULL)
      sodium_memzero(sh[r].req, sh[r].req_len);
    if (sh[r].rep != NULL)
      sodium_memzero(sh[r].rep, sh[r].rep_len);
    free(sh[r].req);
    free(sh[r].rep);
  }
  free(sh);
  free(rq);
  return rc;
}

static int off_hash_blind(void *ctx, cr_pool *pool, const cr_suite *suite, const uint8_t *k,
                          const uint8_t *msgs, const size_t *lens, size_t n, uint8_t *points,
                          cr_error *err) {
  uint64_t bad = UINT64_MAX;
  return spread(ctx, OP_HASH_BLIND, pool, suite, k, NULL, 0, msgs, lens, n, points, &bad, err);
}

static int off_reblind_digest(void *ctx, cr_pool *pool, const cr_suite *suite, const uint8_t *k,
                              const uint8_t *session_id, size_t digest_bytes, const uint8_t *points,
                              size_t n, uint8_t *digests, uint64_t *bad, cr_error *err) {
  *bad = UINT64_MAX;
  if (digest_bytes == 0 || digest_bytes > CR_MAX_DIGEST_BYTES)
    return CR_EINVAL;
  return spread(ctx, OP_REBLIND_DIGEST, pool, suite, k, session_id, digest_bytes, points, NULL, n,
                digests, bad, err);
}

const cr_engine_offload *cr_cluster_offload(cr_cluster *c) {
  if (c->rank != 0 || c->size < 2)
    return NULL;
  c->offload.ctx = c;
  c->offload.hash_blind = off_hash_blind;
  c->offload.reblind_digest = off_reblind_digest;
  return &c->offload;
}

void cr_cluster_finish(cr_cluster *c, int code) {
  if (c == NULL)
    return;
  if (c->rank == 0 && (c->failed || c->abandoned)) {
    /* A worker is gone, or answers were left unread: the job cannot end
     * cleanly, and the others must not wait for a stop that cannot reach
     * them all. */
    MPI_Abort(c->comm, code ? code : 1);
  } else if (c->rank == 0 && c->size > 1) {
    /* Each worker told to stop; one that cannot take it (it died while
     * the node was idle) must not hold the job: abort after a while. */
    req_hdr h;
    memset(&h, 0, sizeof h);
    h.op = OP_STOP;
    MPI_Request *rq = calloc((size_t)c->size, sizeof(MPI_Request));
    int ok = rq != NULL, at = 0, mrc = MPI_SUCCESS;
    for (int r = 0; r < c->size && ok; r++)
      rq[r] = MPI_REQUEST_NULL;
    for (int r = 1; r < c->size && ok; r++)
      ok = MPI_Isend(&h, (int)sizeof h, MPI_BYTE, r, TAG_REQ, c->comm, &rq[r]) == MPI_SUCCESS;
    if (ok) {
      c->stop = 0; /* the wait below must not stop at once */
      ok = wait_all(c, rq, 1, (size_t)c->size, &at, &mrc, STOP_TIMEOUT_S) == WAIT_OK;
    }
    free(rq);
    if (!ok)
      MPI_Abort(c->comm, code ? code : 1);
  }
  MPI_Comm_free(&c->comm);
  MPI_Finalize();
  pthread_mutex_destroy(&c->mu);
  free(c->host);
  free(c->hosts);
  free(c);
}
