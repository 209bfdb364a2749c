/*
 * cleanroom-mpi: one party's node as the processes of an MPI job
 * (docs/scale-out.md).
 *
 *   mpirun -np K cleanroom-mpi serve|run [the options of cleanroom serve|run]
 *
 * Rank 0 is the node (the command line, TLS, the session, the contract, the
 * audit log, the release); the other ranks compute its batches
 * (include/cleanroom/cluster.h). Other commands belong to `cleanroom`.
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <mpi.h>

#include "cleanroom/cluster.h"
#include "cleanroom/crypto.h"
#include "cleanroom/engine.h"
#include "cleanroom/net.h"
#include "cli/cli.h"

#define PROG "cleanroom-mpi"

static void usage(FILE *f) {
  fprintf(f, "Usage: mpirun -np K " PROG " serve|run [OPTIONS]\n"
             "\n"
             "A cleanroom node spread over the K processes of an MPI job, on one host or\n"
             "several: rank 0 holds the connection to the partner, the template's rules,\n"
             "the audit log and the data; every process (rank 0 too) blinds and re-blinds\n"
             "its share of each batch. The options are those of `cleanroom serve` and\n"
             "`cleanroom run` (`" PROG " serve --help`); results, exit codes and the\n"
             "audit log are the same, and the log records K and the hosts.\n"
             "\n"
             "--threads N sets each process's threads (default: the host's cores shared\n"
             "among the job's processes on that host).\n"
             "\n"
             "Example (two hosts, 32 processes each):\n"
             "  mpirun -np 64 --host a:32,b:32 " PROG " serve --template t.json \\\n"
             "         --identity id/ --data users.csv --listen 0.0.0.0:7400\n"
             "\n"
             "`" PROG " version` prints the version and the MPI library.\n"
             "See docs/scale-out.md for Slurm and Kubernetes (MPI Operator), and which\n"
             "network the job's processes must keep private.\n");
}

/* --threads N or --threads=N, as the command will read it (0: not given). */
static unsigned threads_arg(int argc, char **argv) {
  for (int i = 2; i < argc; i++) {
    const char *v = NULL;
    if (strcmp(argv[i], "--threads") == 0 && i + 1 < argc)
      v = argv[i + 1];
    else if (strncmp(argv[i], "--threads=", 10) == 0)
      v = argv[i] + 10;
    if (v != NULL) {
      char *end = NULL;
      unsigned long n = strtoul(v, &end, 10);
      return end != v && *end == '\0' && n >= 1 && n <= 256 ? (unsigned)n : 0;
    }
  }
  return 0;
}

static void on_stop(void *ctx) { cr_cluster_interrupt(ctx); }

/* A process of the job failed: the node stops as on SIGTERM (the session
 * recorded, the partner told), and cr_cluster_finish ends the job. */
static void on_failure(void *ctx) {
  (void)ctx;
  (void)raise(SIGTERM);
}

int main(int argc, char **argv) {
  cr_cli_set_prog(PROG);
  if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0 ||
      strcmp(argv[1], "help") == 0) {
    usage(argc < 2 ? stderr : stdout);
    return argc < 2 ? EXIT_USAGE : EXIT_OK;
  }
  if (strcmp(argv[1], "version") == 0 || strcmp(argv[1], "--version") == 0) {
    /* MPI_Get_library_version may be called before MPI_Init. */
    char lib[MPI_MAX_LIBRARY_VERSION_STRING];
    int len = 0;
    if (MPI_Get_library_version(lib, &len) != MPI_SUCCESS)
      len = 0;
    lib[len > 0 ? strcspn(lib, ",\n") : 0] = '\0';
    printf("%s\ncrypto backend: %s\n", CR_SOFTWARE, cr_crypto_backend_name());
    if (cr_crypto_backend_note() != NULL)
      printf("crypto backend note: %s\n", cr_crypto_backend_note());
    printf("MPI: %s\n", len > 0 ? lib : "unknown");
    return EXIT_OK;
  }
  if (strcmp(argv[1], "serve") != 0 && strcmp(argv[1], "run") != 0) {
    fprintf(stderr,
            PROG ": \"%s\" is not a command of " PROG ", which runs serve and run; use "
                 "`cleanroom %s` (no MPI needed)\n",
            cr_cli_safe(argv[1]), cr_cli_safe(argv[1]));
    return EXIT_USAGE;
  }
  cr_cluster *c = NULL;
  cr_error err;
  cr_error_clear(&err);
  int rc = cr_cluster_init(&c, &argc, &argv, &err);
  if (rc != 0) {
    fprintf(stderr, PROG ": %s\n", cr_error_message(&err, rc));
    return EXIT_INTERNAL;
  }
  unsigned threads = threads_arg(argc, argv);
  if (threads == 0) {
    unsigned per = cr_cpu_count() / (unsigned)cr_cluster_local_size(c);
    threads = per ? per : 1;
  }
  if (cr_cluster_rank(c) != 0) {
    /* A stop is rank 0's to handle (it records the session and tells the
     * partner); mpirun ends a job by SIGTERM to every process, then SIGKILL
     * a second later unless they have all exited, so a worker that died at
     * once would cut rank 0's second short. Rank 0 ends the workers itself
     * (a stop message, or MPI_Abort). */
    signal(SIGTERM, SIG_IGN);
    signal(SIGINT, SIG_IGN);
    rc = cr_cluster_work(c, threads, &err);
    if (rc != 0)
      fprintf(stderr, PROG ": process %d of %d: %s\n", cr_cluster_rank(c), cr_cluster_size(c),
              cr_error_message(&err, rc));
    cr_cluster_finish(c, rc != 0 ? EXIT_INTERNAL : 0);
    return rc != 0 ? EXIT_INTERNAL : EXIT_OK;
  }
  cr_cli_cluster cc = {(unsigned)cr_cluster_size(c),
                       cr_cluster_hosts(c),
                       (unsigned)cr_cluster_nhosts(c),
                       threads,
                       on_stop,
                       c};
  cr_cli_set_cluster(&cc);
  cr_cluster_set_on_failure(c, on_failure, NULL);
  /* mpirun follows its SIGTERM with SIGKILL a second later: the session
   * must reach the audit log before, so a stopping node does not wait the
   * usual 5 s for the partner's close (docs/scale-out.md). */
  cr_node_set_stop_linger(300);
  cr_engine_set_offload(cr_cluster_offload(c));
  int code = cr_cli_main(argc, argv);
  cr_engine_set_offload(NULL);
  cr_cli_set_cluster(NULL);
  cr_cluster_finish(c, code);
  return code;
}
