#!/usr/bin/env bash
# cleanroom benchmark: real `cleanroom serve` and `cleanroom run` processes
# over loopback TLS, as users run them, on generated e-mail lists of n
# addresses per side; with OpenMined psi.js on the same data for comparison.
#
# Usage: bench/run.sh [options]
#   --sizes LIST      n per side, comma-separated (default 4096,16384,65536;
#                     1048576 = 2^20 only when asked)
#   --unbalanced S,L  a small consumer of S against a large provider of L
#                     (e.g. 10000,4000000), instead of the --sizes (both when
#                     --sizes is given too); psi.js is skipped for it
#   --memory MiB      pass --memory MiB to both nodes (default: their own, 256)
#   --overlap F       fraction of each side's set in both (default 0.5; of the
#                     smaller set when unbalanced)
#   --keys K          match keys per record: 1 (e-mail, default) or 2 (e-mail
#                     and phone, "match": "any", the consumer's records counted;
#                     no psi.js comparison)
#   --suite NAME      ristretto255 (default) or p256
#   --reps R          serve + run pairs per size; the median wall counts (default 3)
#   --threads N       pass --threads N to both nodes (default: their own
#                     default, one blinding thread per core)
#   --no-peer         skip the psi.js comparison (needs no node/npm)
#   --peer-max N      run psi.js only for n <= N (default 65536)
#   --no-plot         no SVG (needs no gnuplot)
#   --out DIR         where latest.jsonl, latest.md, latest.svg go (default bench/results)
#   --cleanroom BIN   use this cleanroom binary instead of building build/bench
#                     (also taken from $CLEANROOM)
#   --work DIR        keep the data, identities and every process's output here
#                     (default: a temporary directory, removed at the end)
#   --label TEXT      what the results are of, e.g. a commit (default: the
#                     source tree's git commit, "+local-changes" when src/ or
#                     include/ differ from it)
#   --crypto-n N      elements per repetition of bench_crypto (default 2048)
#   --crypto-reps R   repetitions of bench_crypto (default 5)
#   --mpi LIST        scale-out (issue 21): for each K in LIST (e.g. 1,2,3) both
#                     parties run as `mpirun --oversubscribe -np K cleanroom-mpi`
#                     (cleanroom-mpi next to the cleanroom binary, mpirun on the
#                     PATH), the K values interleaved within each repetition;
#                     one JSON object per size and K with each party's CPU split
#                     into rank 0, the other ranks and mpirun, the crypto
#                     reference and the MPI bytes; no psi.js; the results go to
#                     latest-mpi.* in --out (bench/scale_model.py reads them).
#                     Where `perf record` works, each party's job is sampled
#                     too, so each process's CPU splits into the crypto, MPI
#                     and the rest by where it ran
#   --no-perf         with --mpi: no profile
#   -h, --help        this text
#
# Without --cleanroom it installs what is missing (scripts/install-deps.sh,
# gnuplot-nox, the pinned psi.js from npm) and builds a Release tree in
# build/bench. Progress goes to stderr; stdout gets one JSON object per size,
# then the Markdown table. The table, the JSON lines and the plot are also
# written to --out. Each node spills to a work directory of its own in the
# run's directory; the row reports its peak RSS, spilled bytes per element
# and the files left there afterwards (must be 0). Method and formulas:
# docs/benchmarks.md ("Scale-out (issue 21)" for --mpi).
set -euo pipefail
export LC_ALL=C

ARGS=""
[ $# -eq 0 ] || ARGS=$(printf ' %q' "$@")
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$HERE")

SIZES=4096,16384,65536
SIZES_GIVEN=0
UNBALANCED=""
MEMORY=""
OVERLAP=0.5
SUITE=ristretto255
REPS=3
PEER=1
PEER_MAX=65536
PLOT=1
OUT="$HERE/results"
CR_BIN=${CLEANROOM:-}
WORK=""
KEEP_WORK=0
CRYPTO_N=2048
CRYPTO_REPS=5
LABEL=""
THREADS=""
KEYS=1
MPI_KS=""
PERF=1

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'; }
die() {
  echo "bench: $*" >&2
  exit 1
}
bad_usage() {
  echo "bench: $* (see --help)" >&2
  exit 2
}
need_arg() { if [ $# -lt 2 ] || [ -z "$2" ]; then bad_usage "$1 needs a value"; fi; }
is_uint() { case $1 in '' | *[!0-9]*) return 1 ;; *) [ "$1" -gt 0 ] ;; esac; }

while [ $# -gt 0 ]; do
  case $1 in
    -h | --help) usage; exit 0 ;;
    --sizes) need_arg "$@"; SIZES=$2; SIZES_GIVEN=1; shift ;;
    --unbalanced) need_arg "$@"; UNBALANCED=$2; shift ;;
    --memory) need_arg "$@"; MEMORY=$2; shift ;;
    --overlap) need_arg "$@"; OVERLAP=$2; shift ;;
    --keys) need_arg "$@"; KEYS=$2; shift ;;
    --suite) need_arg "$@"; SUITE=$2; shift ;;
    --reps) need_arg "$@"; REPS=$2; shift ;;
    --threads) need_arg "$@"; THREADS=$2; shift ;;
    --no-peer) PEER=0 ;;
    --peer-max) need_arg "$@"; PEER_MAX=$2; shift ;;
    --no-plot) PLOT=0 ;;
    --out) need_arg "$@"; OUT=$2; shift ;;
    --cleanroom) need_arg "$@"; CR_BIN=$2; shift ;;
    --work) need_arg "$@"; WORK=$2; KEEP_WORK=1; shift ;;
    --label) need_arg "$@"; LABEL=$2; shift ;;
    --crypto-n) need_arg "$@"; CRYPTO_N=$2; shift ;;
    --crypto-reps) need_arg "$@"; CRYPTO_REPS=$2; shift ;;
    --mpi) need_arg "$@"; MPI_KS=$2; shift ;;
    --no-perf) PERF=0 ;;
    *) bad_usage "unknown option '$1'" ;;
  esac
  shift
done

IFS=, read -r -a SIZE_LIST <<<"$SIZES"
[ ${#SIZE_LIST[@]} -gt 0 ] || bad_usage "--sizes is empty"
for n in "${SIZE_LIST[@]}"; do
  is_uint "$n" || bad_usage "--sizes: '$n' is not a positive integer"
done
# The cases: PROVIDER_N:CONSUMER_N.
CASES=()
if [ -z "$UNBALANCED" ] || [ "$SIZES_GIVEN" = 1 ]; then
  for n in "${SIZE_LIST[@]}"; do CASES+=("$n:$n"); done
fi
if [ -n "$UNBALANCED" ]; then
  IFS=, read -r u_small u_large u_more <<<"$UNBALANCED"
  { is_uint "${u_small:-}" && is_uint "${u_large:-}" && [ -z "${u_more:-}" ]; } ||
    bad_usage "--unbalanced takes SMALL,LARGE (the consumer's and the provider's n)"
  CASES+=("$u_large:$u_small")
fi
[ -z "$MEMORY" ] || is_uint "$MEMORY" || bad_usage "--memory takes MiB (a positive integer)"
[ -z "$THREADS" ] || is_uint "$THREADS" || bad_usage "--threads takes a positive integer"
for v in "$REPS" "$PEER_MAX" "$CRYPTO_N" "$CRYPTO_REPS"; do
  is_uint "$v" || bad_usage "--reps, --peer-max, --crypto-n and --crypto-reps take positive integers"
done
awk -v f="$OVERLAP" 'BEGIN { exit !(f ~ /^[0-9.]+$/ && f + 0 >= 0 && f + 0 <= 1) }' ||
  bad_usage "--overlap takes a fraction from 0 to 1"
case $SUITE in ristretto255 | p256) ;; *) bad_usage "--suite: ristretto255 or p256" ;; esac
case $KEYS in 1) ;; 2) PEER=0 ;; *) bad_usage "--keys: 1 or 2" ;; esac
# K processes per party ("" runs plain `cleanroom` once per repetition).
K_LIST=("")
if [ -n "$MPI_KS" ]; then
  IFS=, read -r -a K_LIST <<<"$MPI_KS"
  [ ${#K_LIST[@]} -gt 0 ] || bad_usage "--mpi is empty"
  for k in "${K_LIST[@]}"; do
    { is_uint "$k" && [ "$k" -le 256 ]; } || bad_usage "--mpi: '$k' is not a process count from 1 to 256"
  done
  PEER=0
fi
RESULT_BASE=latest
[ -z "$MPI_KS" ] || RESULT_BASE=latest-mpi

log() { echo "bench: $*" >&2; }

mkdir -p "$OUT" || die "cannot create --out $OUT"
OUT=$(cd "$OUT" && pwd)

# Debian packages, installed only when missing and only as root (or sudo).
apt_install() {
  local sudo=""
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null || return 1
    sudo=sudo
  fi
  log "installing $* (apt-get)"
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq >&2 && $sudo apt-get install -y -qq --no-install-recommends "$@" >&2
}

command -v python3 >/dev/null || apt_install python3 || die "python3 is needed"

# ------------------------------------------------------------ the binaries
BUILT_HERE=0
if [ -n "$CR_BIN" ]; then
  [ -x "$CR_BIN" ] || die "cleanroom binary '$CR_BIN' is not executable"
  BUILD=$(cd "$(dirname "$CR_BIN")" && pwd)
  CR_BIN="$BUILD/$(basename "$CR_BIN")"
else
  "$ROOT/scripts/install-deps.sh" >&2
  BUILD="$ROOT/build/bench"
  log "building cleanroom (Release) in $BUILD"
  cmake -S "$ROOT" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DCR_BUILD_TESTS=OFF >/dev/null
  cmake --build "$BUILD" -j "$(nproc 2>/dev/null || echo 2)" >&2
  CR_BIN="$BUILD/cleanroom"
  BUILT_HERE=1
fi
CR=$CR_BIN
CR_MPI=""
if [ -n "$MPI_KS" ]; then
  CR_MPI="$BUILD/cleanroom-mpi"
  [ -x "$CR_MPI" ] || die "--mpi: $CR_MPI is missing (CMake builds it only when it finds MPI: scripts/install-deps.sh installs Open MPI)"
  command -v mpirun >/dev/null || die "--mpi: mpirun is not on the PATH (Debian: openmpi-bin)"
  # Open MPI refuses root unless told; containers forbid its single-copy
  # (CMA) mechanism. Both can be overridden from the environment.
  if [ "$(id -u)" -eq 0 ]; then
    export OMPI_ALLOW_RUN_AS_ROOT=${OMPI_ALLOW_RUN_AS_ROOT:-1}
    export OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=${OMPI_ALLOW_RUN_AS_ROOT_CONFIRM:-1}
  fi
  export OMPI_MCA_btl_vader_single_copy_mechanism=${OMPI_MCA_btl_vader_single_copy_mechanism:-none}
  log "scale-out: K = ${MPI_KS} processes per party with $(mpirun --version 2>/dev/null | head -1)"
fi

if [ -z "$WORK" ]; then
  WORK=$(mktemp -d "${TMPDIR:-/tmp}/cr-bench.XXXXXX")
else
  mkdir -p "$WORK"
  WORK=$(cd "$WORK" && pwd)
fi
SERVER_PID=""
cleanup() {
  if [ -n "$SERVER_PID" ]; then kill "$SERVER_PID" 2>/dev/null || true; fi
  if [ "$KEEP_WORK" = 1 ]; then log "work files kept in $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# bench_crypto and bench_exec: from the build tree when it has them
# (bench/CMakeLists.txt), otherwise compiled here from their sources and the
# crypto layer's, with the Release flags.
TOOLS="$WORK/tools"
mkdir -p "$TOOLS"
CFLAGS_BENCH=(-O3 -DNDEBUG -std=c11 -D_POSIX_C_SOURCE=200809L -D_DEFAULT_SOURCE)
find_tool() {
  local name=$1
  if [ -x "$BUILD/bench/$name" ] && [ "$BUILD/bench/$name" -nt "$HERE/$name.c" ]; then
    echo "$BUILD/bench/$name"
  elif [ "$name" = bench_exec ]; then
    cc "${CFLAGS_BENCH[@]}" "$HERE/bench_exec.c" -o "$TOOLS/bench_exec" >&2 && echo "$TOOLS/bench_exec"
  else
    # shellcheck disable=SC2046
    cc "${CFLAGS_BENCH[@]}" -I"$ROOT/include" -I"$ROOT/src" "$HERE/bench_crypto.c" \
      "$ROOT"/src/crypto/*.c "$ROOT"/src/common/*.c \
      $(pkg-config --cflags --libs libsodium libcrypto) -lpthread \
      -o "$TOOLS/bench_crypto" >&2 && echo "$TOOLS/bench_crypto"
  fi
}
if [ "$BUILT_HERE" = 1 ]; then
  # Present once the top-level CMakeLists.txt has add_subdirectory(bench).
  cmake --build "$BUILD" --target bench_crypto bench_exec >/dev/null 2>&1 || true
fi
EXEC=$(find_tool bench_exec) || die "cannot build bench_exec"
CRYPTO=$(find_tool bench_crypto) || die "cannot build bench_crypto"
log "using $CR, $CRYPTO, $EXEC"
# --mpi: a CPU profile of each party's job (perf record follows mpirun's
# children), when the kernel lets us sample.
if [ -z "$MPI_KS" ]; then
  PERF=0
elif [ "$PERF" = 1 ]; then
  if ! command -v perf >/dev/null || ! perf record -q -o "$TOOLS/perf.check" -- true >/dev/null 2>&1; then
    log "perf record does not work here (not installed, or perf_event_paranoid): no profile, rank 0's serial part is estimated from CPU time alone"
    PERF=0
  fi
  rm -f "$TOOLS/perf.check"
fi

# ------------------------------------------------------------ plot and peer
if [ "$PLOT" = 1 ] && ! command -v gnuplot >/dev/null; then
  apt_install gnuplot-nox || { log "gnuplot is missing and could not be installed: no plot"; PLOT=0; }
fi

PEER_DIR="$HERE/peers/openmined-psijs"
PEER_SKIP=""
if [ "$PEER" = 1 ]; then
  if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
    apt_install nodejs npm || true
  fi
  want=$(sed -n 's/.*"@openmined\/psi.js": *"\([^"]*\)".*/\1/p' "$PEER_DIR/package.json")
  have=""
  if [ -f "$PEER_DIR/node_modules/@openmined/psi.js/package.json" ]; then
    have=$(sed -n 's/^ *"version": *"\([^"]*\)".*/\1/p' \
      "$PEER_DIR/node_modules/@openmined/psi.js/package.json" | head -1)
  fi
  if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
    PEER_SKIP="node and npm are not available"
  elif [ "$have" != "$want" ]; then
    log "installing @openmined/psi.js $want from the npm registry into $PEER_DIR"
    # --ignore-scripts: psi.js ships its WebAssembly in the package; the
    # install scripts of its build-time dependencies (protoc-gen-js) would
    # download a binary from outside the registry and are not needed.
    npm_cmd=(npm install)
    [ -f "$PEER_DIR/package-lock.json" ] && npm_cmd=(npm ci)
    if ! (cd "$PEER_DIR" && "${npm_cmd[@]}" --ignore-scripts --no-audit --no-fund \
      --omit-lockfile-registry-resolved >"$WORK/npm.log" 2>&1); then
      PEER_SKIP="npm install of @openmined/psi.js $want failed: $(tail -3 "$WORK/npm.log" | tr '\n' ' ')"
    fi
  fi
  if [ -n "$PEER_SKIP" ]; then
    log "SKIPPING the psi.js comparison: $PEER_SKIP"
  fi
fi

# ------------------------------------------------------------ identities, template
CORES=$(nproc 2>/dev/null || echo 1)
COMMIT=$LABEL
if [ -z "$COMMIT" ]; then
  COMMIT=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo "")
  if [ -n "$COMMIT" ] && [ -n "$(git -C "$ROOT" status --porcelain -- src include 2>/dev/null)" ]; then
    COMMIT="$COMMIT+local-changes"
  fi
fi

cd "$WORK"
P_FP=$("$CR" keygen --out provider-id --name "bench provider" 2>/dev/null) || die "keygen failed"
C_FP=$("$CR" keygen --out consumer-id --name "bench consumer" 2>/dev/null) || die "keygen failed"
python3 "$HERE/report.py" template "$ROOT/examples/overlap/template.json" "$SUITE" draft.json "$KEYS"
"$CR" template pin draft.json --provider "$P_FP" --consumer "$C_FP" \
  --address 127.0.0.1:7443 --out template.json >/dev/null 2>&1 || die "template pin failed"

# The suite's per-element costs, measured right before and right after each
# size so that they see the same machine as the nodes do; report.py takes
# the lower of the two.
measure_crypto() {
  "$CRYPTO" --suite "$SUITE" --n "$CRYPTO_N" --reps "$CRYPTO_REPS" >"$1" || die "bench_crypto failed"
  log "  crypto on one core: $(sed 's/,"hash_blind_median_us.*//; s/[{}"]//g' "$1")"
}

# ------------------------------------------------------------ one serve + run
# run_pair DIR N [K]: a fresh `serve --once` (data loaded, listening), then
# `run`; with K, each party is `mpirun -np K cleanroom-mpi`, every process
# of it under bench_exec too (DIR/serve.rank<r>.json, DIR/run.rank<r>.json).
run_pair() {
  local d=$1 n=$2 k=${3:-} node_to=$(($2 / 2000 + 120)) port="" rc=0
  local extra=() s_cmd=("$CR" serve) c_cmd=("$CR" run) s_prof=() c_prof=()
  [ -z "$THREADS" ] || extra=(--threads "$THREADS")
  [ -z "$MEMORY" ] || extra+=(--memory "$MEMORY")
  if [ -n "$k" ]; then
    s_cmd=(mpirun --oversubscribe -np "$k" "$EXEC" "$d/serve.rank%r.json" "$CR_MPI" serve)
    c_cmd=(mpirun --oversubscribe -np "$k" "$EXEC" "$d/run.rank%r.json" "$CR_MPI" run)
    # The slower start of K processes.
    node_to=$((node_to + 60))
    if [ "$PERF" = 1 ]; then
      # Outside bench_exec, so perf's own CPU is not the party's.
      s_prof=(perf record -q -F 999 -o "$d/serve.perf.data" --)
      c_prof=(perf record -q -F 999 -o "$d/run.perf.data" --)
    fi
  fi
  mkdir -p "$d" "$d/provider-work" "$d/consumer-work"
  "${s_prof[@]}" "$EXEC" --stamp-stderr "$d/serve.err" "$d/serve.stats" \
    "${s_cmd[@]}" --template template.json --identity provider-id --data "$DATA/provider.csv" \
    --listen 127.0.0.1:0 --once --json --timeout "$node_to" --work-dir "$d/provider-work" \
    "${extra[@]}" >"$d/serve.out" &
  SERVER_PID=$!
  for _ in $(seq 1 2400); do
    port=$(sed -n 's/.*listening on [^ ]*:\([0-9][0-9]*\).*/\1/p' "$d/serve.err" 2>/dev/null | head -1)
    [ -n "$port" ] && break
    kill -0 "$SERVER_PID" 2>/dev/null || break
    sleep 0.05
  done
  if [ -z "$port" ]; then
    log "the provider's node did not start:"
    sed 's/^/    /' "$d/serve.err" >&2
    return 1
  fi
  head -1 /proc/stat >"$d/procstat.before" 2>/dev/null || true
  timeout $((node_to * 2)) "${c_prof[@]}" "$EXEC" --stamp-stderr "$d/run.err" "$d/run.stats" \
    "${c_cmd[@]}" --template template.json --identity consumer-id --data "$DATA/consumer.csv" \
    --peer "127.0.0.1:$port" --query overlap_to_consumer --json --timeout "$node_to" \
    --work-dir "$d/consumer-work" "${extra[@]}" >"$d/run.out" || rc=$?
  head -1 /proc/stat >"$d/procstat.after" 2>/dev/null || true
  # serve --once exits right after its session.
  for _ in $(seq 1 600); do
    kill -0 "$SERVER_PID" 2>/dev/null || break
    sleep 0.1
  done
  kill "$SERVER_PID" 2>/dev/null || true
  wait "$SERVER_PID" 2>/dev/null || true
  SERVER_PID=""
  # What the nodes left in their work directories (nothing, if they clean up).
  for side in provider consumer; do
    find "$d/$side-work" -mindepth 1 2>/dev/null | wc -l >"$d/$side-work.left"
    # The session's resources as the audit log has them (with K: the
    # processes and hosts, rank 0's peak RSS).
    grep '"resources"' "$side-id/audit.jsonl" 2>/dev/null | tail -1 >"$d/$side.audit.json" || true
  done
  # The profiles as samples per process, symbol and library ("COUNT PID
  # SYMBOL (DSO)"), for report.py; the raw data is not kept.
  for who in serve run; do
    if [ -f "$d/$who.perf.data" ]; then
      perf script -i "$d/$who.perf.data" -F pid,ip,sym,dso 2>/dev/null |
        awk '{ $2 = ""; print }' | sort | uniq -c >"$d/$who.perf.txt" || true
      rm -f "$d/$who.perf.data"
    fi
  done
  if [ "$rc" -ne 0 ]; then
    log "cleanroom run exited $rc:"
    sed 's/^/    run:   /' "$d/run.err" >&2
    sed 's/^/    serve: /' "$d/serve.err" >&2
    return 1
  fi
}

RESULTS="$WORK/results.jsonl"
: >"$RESULTS"
for case_ in "${CASES[@]}"; do
  n=${case_%%:*} nc=${case_##*:}
  if [ "$n" = "$nc" ]; then DATA="$WORK/n$n"; else DATA="$WORK/n${n}x$nc"; fi
  mkdir -p "$DATA"
  expect=$("$HERE/gen_data.sh" "$n" "$OVERLAP" "$DATA" 20240611 "$KEYS" "$nc")
  loadavg=$(cut -d' ' -f1 /proc/loadavg 2>/dev/null || echo 0)
  if [ "$n" = "$nc" ]; then
    log "n=$n per side (overlap $expect), load average $loadavg"
  else
    log "unbalanced: provider n=$n, consumer n=$nc (overlap $expect), load average $loadavg"
  fi
  measure_crypto "$DATA/crypto-before.json"
  # With --mpi each repetition runs every K in turn, so that a change in
  # the machine's load falls on all K alike.
  for rep in $(seq 1 "$REPS"); do
    for k in "${K_LIST[@]}"; do
      rd="$DATA${k:+/k$k}/rep$rep"
      run_pair "$rd" "$n" "$k" || die "n=$n${k:+, K=$k}: serve + run failed (work files: $WORK)"
      log "  cleanroom${k:+-mpi with K=$k} run $rep/$REPS: $(sed -n 's/.*"wall_s":\([0-9.]*\).*/\1/p' "$rd/run.stats") s"
    done
  done
  if [ "$PEER" = 1 ]; then
    if [ "$n" != "$nc" ]; then
      echo "skipped for the unbalanced case" >"$DATA/psijs.skipped"
    elif [ -n "$PEER_SKIP" ]; then
      echo "skipped: $PEER_SKIP" >"$DATA/psijs.skipped"
    elif [ "$n" -gt "$PEER_MAX" ]; then
      echo "skipped at n=$n (> --peer-max $PEER_MAX)" >"$DATA/psijs.skipped"
      log "  psi.js: skipped (n > --peer-max $PEER_MAX)"
    else
      log "  psi.js cardinality (one process, both parties)..."
      if timeout $((n / 50 + 300)) "$EXEC" "$DATA/psijs.stats" \
        node "$PEER_DIR/psi_cardinality.js" "$DATA/provider.csv" "$DATA/consumer.csv" \
        --fpr 1e-9 --ds gcs >"$DATA/psijs.out" 2>"$DATA/psijs.err"; then
        log "  psi.js: $(sed -n 's/.*"wall_s":\([0-9.]*\).*/\1/p' "$DATA/psijs.out" | cut -c1-6) s"
      else
        log "  psi.js failed: $(tail -3 "$DATA/psijs.err" | tr '\n' ' ')"
        echo "failed at n=$n: $(tail -1 "$DATA/psijs.err")" >"$DATA/psijs.skipped"
        rm -f "$DATA/psijs.out"
      fi
    fi
  fi
  measure_crypto "$DATA/crypto-after.json"
  for k in "${K_LIST[@]}"; do
    rowdir="$DATA${k:+/k$k}"
    python3 "$HERE/report.py" row "$rowdir" --n "$n" --n-consumer "$nc" ${MEMORY:+--memory "$MEMORY"} --overlap "$OVERLAP" --expect "$expect" \
      --suite "$SUITE" --keys "$KEYS" --cores "$CORES" --clk-tck "$(getconf CLK_TCK 2>/dev/null || echo 100)" \
      --crypto "$DATA/crypto-before.json" "$DATA/crypto-after.json" --loadavg "$loadavg" \
      ${k:+--mpi "$k" --data "$DATA"} \
      ${COMMIT:+--commit "$COMMIT"} ${THREADS:+--threads "$THREADS"} >"$rowdir/row.json" ||
      die "n=$n${k:+, K=$k}: results incomplete (work files: $WORK)"
    cat "$rowdir/row.json"
    cat "$rowdir/row.json" >>"$RESULTS"
  done
  # Each size's data (up to ~60 MB at 2^20) is not needed any more.
  [ "$KEEP_WORK" = 1 ] || rm -f "$DATA/provider.csv" "$DATA/consumer.csv"
done

# ------------------------------------------------------------ table, files, plot
python3 "$HERE/report.py" table "$RESULTS" >"$WORK/table.md"
echo
cat "$WORK/table.md"
cp "$RESULTS" "$OUT/$RESULT_BASE.jsonl"
{
  echo "# cleanroom benchmark, $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo
  sizes_text="sizes $SIZES"
  [ -z "$UNBALANCED" ] || [ "$SIZES_GIVEN" = 1 ] || sizes_text=""
  echo "\`bench/run.sh${ARGS}\` (${sizes_text}${UNBALANCED:+, unbalanced consumer,provider $UNBALANCED}${MEMORY:+, --memory $MEMORY}, overlap $OVERLAP, suite $SUITE, $KEYS match key(s), $REPS run(s) per size${MPI_KS:+ and K}${THREADS:+, --threads $THREADS}${MPI_KS:+, K = $MPI_KS processes per party})"
  echo
  cat "$WORK/table.md"
} >"$OUT/$RESULT_BASE.md"
if [ "$PLOT" = 1 ]; then
  if python3 "$HERE/report.py" plot "$OUT/$RESULT_BASE.jsonl" "$OUT/$RESULT_BASE.svg"; then
    log "plot: $OUT/$RESULT_BASE.svg"
  else
    log "the plot failed; the table and the JSON lines are written"
  fi
fi
log "results: $OUT/$RESULT_BASE.md, $OUT/$RESULT_BASE.jsonl"
