/*
 * bench_exec: runs a command and, when it exits, writes what it cost.
 *
 *   bench_exec [--stamp-stderr FILE] STATS.json CMD [ARGS...]
 *
 * STATS.json gets one JSON object: wall_s (monotonic, from just before the
 * fork to just after the child was reaped), user_s, sys_s and maxrss_kb (the
 * child's peak resident set, from wait4's rusage), exit (its exit code, or
 * 128 + signal), pid (the child's process id, to find it in a profile). The command's stdin, stdout
 * and stderr are its own, except with --stamp-stderr: its stderr then goes to FILE, each line
 * prefixed with the seconds since the start ("0.012345 cleanroom run: ..."), written as it arrives,
 * so the harness can tell when a node had loaded its data. SIGINT and SIGTERM are passed on to the
 * child. Exits with the child's code.
 *
 * Under mpirun (bench/run.sh --mpi), "%r" in STATS.json is replaced by the
 * process's rank in the job (OMPI_COMM_WORLD_RANK, else PMIX_RANK or
 * PMI_RANK from the environment), so `mpirun -np K bench_exec rank%r.json
 * cleanroom-mpi ...` writes what each process of the job cost.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/time.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static volatile sig_atomic_t child_pid = 0;

static void forward(int sig) {
  if (child_pid > 0)
    kill((pid_t)child_pid, sig);
}

static double mono(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* STATS.json with "%r" replaced by the MPI rank (into buf); NULL if the
 * path has "%r" and no rank is in the environment, or it is too long. */
static const char *stats_file(const char *path, char *buf, size_t cap) {
  const char *at = strstr(path, "%r");
  if (at == NULL)
    return path;
  const char *rank = getenv("OMPI_COMM_WORLD_RANK");
  if (rank == NULL)
    rank = getenv("PMIX_RANK");
  if (rank == NULL)
    rank = getenv("PMI_RANK");
  if (rank == NULL)
    return NULL;
  int len = snprintf(buf, cap, "%.*s%s%s", (int)(at - path), path, rank, at + 2);
  return len > 0 && (size_t)len < cap ? buf : NULL;
}

static double tv(struct timeval t) { return (double)t.tv_sec + (double)t.tv_usec * 1e-6; }

/* Copies the child's stderr to f, each line prefixed with its arrival time
 * (seconds since t0), until the child closes it. */
static void stamp_lines(int fd, FILE *f, double t0) {
  char buf[4096];
  int at_line_start = 1;
  for (;;) {
    ssize_t got = read(fd, buf, sizeof buf);
    if (got < 0 && errno == EINTR)
      continue;
    if (got <= 0)
      break;
    double t = mono() - t0;
    for (ssize_t i = 0; i < got; i++) {
      if (at_line_start)
        fprintf(f, "%.6f ", t);
      fputc(buf[i], f);
      at_line_start = buf[i] == '\n';
    }
    fflush(f);
  }
  if (!at_line_start)
    fputc('\n', f);
  fflush(f);
}

int main(int argc, char **argv) {
  const char *stamp_path = NULL;
  int a = 1;
  if (argc > 1 && strcmp(argv[1], "--help") == 0) {
    printf("Usage: bench_exec [--stamp-stderr FILE] STATS.json CMD [ARGS...]\n"
           "Runs CMD; writes {wall_s,user_s,sys_s,maxrss_kb,exit,pid} of it to STATS.json.\n"
           "--stamp-stderr: CMD's stderr to FILE, each line prefixed with seconds since start.\n"
           "\"%%r\" in STATS.json: the MPI rank (OMPI_COMM_WORLD_RANK, PMIX_RANK or PMI_RANK).\n");
    return 0;
  }
  if (argc > 2 && strcmp(argv[1], "--stamp-stderr") == 0) {
    stamp_path = argv[2];
    a = 3;
  }
  if (argc - a < 2) {
    fprintf(stderr, "Usage: bench_exec [--stamp-stderr FILE] STATS.json CMD [ARGS...]\n");
    return 2;
  }
  char stats_buf[4096];
  const char *stats_path = stats_file(argv[a], stats_buf, sizeof stats_buf);
  if (stats_path == NULL) {
    fprintf(stderr,
            "bench_exec: %s: \"%%r\" needs the MPI rank in the environment "
            "(OMPI_COMM_WORLD_RANK, PMIX_RANK or PMI_RANK: run it under mpirun)\n",
            argv[a]);
    return 2;
  }
  char **cmd = argv + a + 1;
  FILE *stamp = NULL;
  int pfd[2] = {-1, -1};
  if (stamp_path != NULL) {
    if ((stamp = fopen(stamp_path, "w")) == NULL) {
      fprintf(stderr, "bench_exec: %s: %s\n", stamp_path, strerror(errno));
      return 1;
    }
    if (pipe(pfd) != 0) {
      perror("bench_exec: pipe");
      return 1;
    }
  }
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = forward;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGINT, &sa, NULL);
  sigaction(SIGTERM, &sa, NULL);

  double t0 = mono();
  pid_t pid = fork();
  if (pid < 0) {
    perror("bench_exec: fork");
    return 1;
  }
  if (pid == 0) {
    signal(SIGINT, SIG_DFL);
    signal(SIGTERM, SIG_DFL);
    if (stamp != NULL) {
      dup2(pfd[1], STDERR_FILENO);
      close(pfd[0]);
      close(pfd[1]);
    }
    execvp(cmd[0], cmd);
    fprintf(stderr, "bench_exec: %s: %s\n", cmd[0], strerror(errno));
    _exit(127);
  }
  child_pid = pid;
  if (stamp != NULL) {
    close(pfd[1]);
    stamp_lines(pfd[0], stamp, t0);
    close(pfd[0]);
    fclose(stamp);
  }

  int status = 0;
  struct rusage ru;
  memset(&ru, 0, sizeof ru);
  for (;;) {
    pid_t w = wait4(pid, &status, 0, &ru);
    if (w == pid)
      break;
    if (w < 0 && errno != EINTR) {
      perror("bench_exec: wait4");
      return 1;
    }
  }
  double t1 = mono();
  int code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);

  FILE *f = fopen(stats_path, "w");
  if (f == NULL) {
    fprintf(stderr, "bench_exec: %s: %s\n", stats_path, strerror(errno));
    return code ? code : 1;
  }
  fprintf(f,
          "{\"wall_s\":%.6f,\"user_s\":%.6f,\"sys_s\":%.6f,\"maxrss_kb\":%ld,\"exit\":%d,"
          "\"pid\":%ld}\n",
          t1 - t0, tv(ru.ru_utime), tv(ru.ru_stime), ru.ru_maxrss, code, (long)pid);
  if (fclose(f) != 0) {
    fprintf(stderr, "bench_exec: %s: write failed\n", stats_path);
    return code ? code : 1;
  }
  return code;
}
