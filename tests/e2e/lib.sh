# Shared helpers for end-to-end tests: real `cleanroom serve` and `run`
# processes over loopback TLS. Sourced by tests/e2e/test_*.sh, which ctest
# runs with CLEANROOM (the binary) and CR_SOURCE_DIR set.
set -euo pipefail

: "${CLEANROOM:?CLEANROOM must point at the cleanroom binary}"
: "${CR_SOURCE_DIR:?CR_SOURCE_DIR must point at the source tree}"
CR="$CLEANROOM"
EX="$CR_SOURCE_DIR/examples/overlap"

WORK=$(mktemp -d "${TMPDIR:-/tmp}/cr-e2e.XXXXXX")
SERVER_PID=""
cleanup() {
  if [ -n "$SERVER_PID" ]; then kill "$SERVER_PID" 2>/dev/null || true; fi
  for p in ${BG_PIDS[@]+"${BG_PIDS[@]}"}; do kill "$p" 2>/dev/null || true; done
  if [ "${KEEP_WORK:-0}" = 1 ]; then echo "work dir kept: $WORK" >&2; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
cd "$WORK"

PASSED=0
FAILED=0
fail() {
  echo "FAIL: $*" >&2
  FAILED=$((FAILED + 1))
}
ok() {
  echo "ok: $*"
  PASSED=$((PASSED + 1))
}
finish() {
  echo "$PASSED passed, $FAILED failed"
  [ "$FAILED" -eq 0 ]
}

# in_background NAME FUNCTION [args...]: runs FUNCTION in a subshell in the
# background (same work dir), everything it prints to bg_NAME.log. For
# independent cases that would otherwise wait on one another; they must
# not share output files or a server. collect_background waits for each,
# prints its log in the order started and counts its ok and FAIL lines; a
# subshell that stopped early (exit not 0) is a failure too.
BG_NAMES=()
BG_PIDS=()
in_background() {
  local name=$1
  shift
  ("$@") >"bg_$name.log" 2>&1 &
  BG_NAMES+=("$name")
  BG_PIDS+=($!)
}
collect_background() {
  local i rc log
  for i in "${!BG_PIDS[@]}"; do
    set +e
    wait "${BG_PIDS[i]}"
    rc=$?
    set -e
    log="bg_${BG_NAMES[i]}.log"
    cat "$log"
    PASSED=$((PASSED + $(grep -c '^ok: ' "$log" || true)))
    FAILED=$((FAILED + $(grep -c '^FAIL: ' "$log" || true)))
    if [ "$rc" -ne 0 ]; then fail "${BG_NAMES[i]}: stopped early (exit $rc)"; fi
  done
  BG_NAMES=()
  BG_PIDS=()
}

# expect_eq WHAT EXPECTED ACTUAL
expect_eq() {
  if [ "$2" = "$3" ]; then ok "$1"; else fail "$1: expected '$2', got '$3'"; fi
}
# expect_grep WHAT PATTERN FILE
expect_grep() {
  if grep -q -- "$2" "$3"; then ok "$1"; else
    fail "$1: '$2' not in $3:"
    sed 's/^/    /' "$3" >&2
  fi
}

# make_identities: provider-id/ and consumer-id/ with fingerprints in P_FP, C_FP.
make_identities() {
  P_FP=$("$CR" keygen --out provider-id --name provider 2>/dev/null)
  C_FP=$("$CR" keygen --out consumer-id --name consumer 2>/dev/null)
}

# pin_template SRC OUT: SRC with both fingerprints pinned.
pin_template() {
  "$CR" template pin "$1" --provider "$P_FP" --consumer "$C_FP" --out "$2" >/dev/null 2>&1
}

# start_server TEMPLATE DATA [extra flags...]: provider serves in the
# background, --json, port chosen by the kernel; sets SERVER_PID and PORT.
start_server() {
  local tmpl=$1 data=$2
  shift 2
  : >server.out
  : >server.err
  "$CR" serve --template "$tmpl" --identity provider-id --data "$data" \
    --listen 127.0.0.1:0 --json "$@" >server.out 2>server.err &
  SERVER_PID=$!
  wait_listening "$SERVER_PID" server.err
}

# wait_server: waits for the background server; its exit code in SERVER_RC.
wait_server() {
  set +e
  wait "$SERVER_PID"
  SERVER_RC=$?
  set -e
  SERVER_PID=""
}

# run_client TEMPLATE DATA QUERY [extra flags...]: consumer runs; exit code in RUN_RC.
run_client() {
  local tmpl=$1 data=$2 query=$3
  shift 3
  set +e
  "$CR" run --template "$tmpl" --identity consumer-id --data "$data" \
    --peer "127.0.0.1:$PORT" --query "$query" --json "$@" >run.out 2>run.err
  RUN_RC=$?
  set -e
}

# bucket N: the size a node announces for a set of N keys under the default
# size ladder (include/cleanroom/template.h, protocol v3): floor 1000, then
# x -> max(x + 1, ceil(x * 2^(1/4))). The peer's set size in every output
# is this bucket, never the exact size.
bucket() {
  awk -v n="$1" 'BEGIN { x = 1000; r = 1.189207115002721
    while (x < n) { p = x * r; u = int(p); if (u < p) u++; if (u <= x) u = x + 1; x = u }
    printf "%d\n", x }'
}

# json_field FILE KEY: crude extraction of a scalar from our compact JSON.
json_field() {
  sed -n "s/.*\"$2\":\([^,}]*\).*/\1/p" "$1" | head -1 | tr -d '"'
}

# normalized_emails CSV: the e-mail column normalized as design §6 says
# (trim, lowercase, exactly one @ with non-empty sides), distinct, sorted.
# Independent of the engine: a plain awk pipeline (enough for the example
# files, whose quoted fields hold no comma).
normalized_emails() {
  awk -F, 'NR == 1 { for (i = 1; i <= NF; i++) if ($i == "email") c = i; next }
    { v = $c; sub(/\r$/, "", v); if (v ~ /^".*"$/) v = substr(v, 2, length(v) - 2)
      gsub(/^[ \t]+|[ \t]+$/, "", v); v = tolower(v)
      n = split(v, parts, "@")
      if (n == 2 && parts[1] != "" && parts[2] != "" && v !~ /[ \t]/) print v }' "$1" | sort -u
}

# seg_map CSV: "normalized-email segment" per distinct key, the first row's
# segment when a key appears on several rows; sorted.
seg_map() {
  awk -F, 'NR == 1 { for (i = 1; i <= NF; i++) { if ($i == "email") c = i; if ($i == "segment") s = i } next }
    { v = $c; sub(/\r$/, "", v); gsub(/^[ \t]+|[ \t]+$/, "", v); v = tolower(v)
      n = split(v, parts, "@")
      if (n != 2 || parts[1] == "" || parts[2] == "" || v ~ /[ \t]/) next
      if (!(v in seen)) { seen[v] = 1; print v, $s } }' "$1" | sort
}

# pharma_eligible_keys CSV CODES MIN_AGE MAX_AGE: the distinct normalized e-mails of the
# hospital's records whose dx_code is one of CODES (comma-separated, exact
# match) and whose age is an integer within [MIN_AGE, MAX_AGE]; sorted.
pharma_eligible_keys() {
  awk -F, -v codes="$2" -v lo="$3" -v hi="$4" '
    NR == 1 { for (i = 1; i <= NF; i++) { if ($i == "email") c = i; if ($i == "dx_code") d = i; if ($i == "age") a = i }
              n = split(codes, cl, ","); for (i = 1; i <= n; i++) want[cl[i]] = 1; next }
    { v = $c; gsub(/^[ \t]+|[ \t]+$/, "", v); v = tolower(v)
      k = split(v, parts, "@")
      if (k != 2 || parts[1] == "" || parts[2] == "" || v ~ /[ \t]/) next
      dx = $d; gsub(/^[ \t]+|[ \t]+$/, "", dx)
      age = $a; sub(/\r$/, "", age); gsub(/^[ \t]+|[ \t]+$/, "", age)
      if ((dx in want) && age ~ /^[0-9]+$/ && age + 0 >= lo && age + 0 <= hi) print v }' "$1" | sort -u
}

# small_sets_fixture: the provider's and consumer's identities (and a
# stranger's), template.json from the overlap example with room for small
# sets and many runs, prov.csv (300 keys in 3 segments) and cons.csv (200
# keys), 120 of them in both (EXPECTED).
small_sets_fixture() {
  make_identities
  "$CR" keygen --out stranger-id --name stranger >/dev/null 2>&1
  pin_template "$EX/template.json" base.json
  sed -e 's/"min_set_size": [0-9]*/"min_set_size": 10/' \
    -e 's/"max_runs_per_query": [0-9]*/"max_runs_per_query": 1000000/' base.json >template.json
  { echo "email,segment"; for i in $(seq 0 299); do echo "user$i@example.com,s$((i % 3))"; done; } >prov.csv
  { echo "email"; for i in $(seq 180 379); do echo "user$i@example.com"; done; } >cons.csv
  EXPECTED=120
}


# ---- cleanroom-mpi (issue 21): a party's node as the processes of an MPI job

# mpi_init: MPI (the cleanroom-mpi binary in CLEANROOM_MPI, mpirun on PATH)
# or exit 77 (skipped) saying what is missing. Exports what Open MPI needs
# here unless already set: running as root (a container), no CMA single
# copy (containers forbid it). MPI_ENV: the environment the MPI processes
# get on top (LeakSanitizer off for them: Open MPI's own allocations would
# fail it in the ASan build; leak checks stay on for plain cleanroom).
mpi_init() {
  if [ -z "${CLEANROOM_MPI:-}" ] || [ ! -x "$CLEANROOM_MPI" ]; then
    echo "SKIP: CLEANROOM_MPI does not name the cleanroom-mpi binary (built when CMake finds MPI)" >&2
    exit 77
  fi
  if ! command -v mpirun >/dev/null 2>&1; then
    echo "SKIP: mpirun not found (scripts/install-deps.sh installs openmpi-bin)" >&2
    exit 77
  fi
  CRM="$CLEANROOM_MPI"
  export OMPI_ALLOW_RUN_AS_ROOT=${OMPI_ALLOW_RUN_AS_ROOT:-1}
  export OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=${OMPI_ALLOW_RUN_AS_ROOT_CONFIRM:-1}
  export OMPI_MCA_btl_vader_single_copy_mechanism=${OMPI_MCA_btl_vader_single_copy_mechanism:-none}
  MPI_ENV=("ASAN_OPTIONS=${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=0")
  HOST_NAME=$(uname -n)
  trap mpi_cleanup EXIT
}

# mpi_argv K: MPI_ARGV, the command that starts K processes of
# cleanroom-mpi on this host through mpirun (oversubscribed: more processes
# than cores; not bound to a core, so a process's threads may use both).
# With MPI_TIMEOUT=S, mpirun is stopped after S seconds (exit 124): for
# tests where a hang is a failure. `"${MPI_ARGV[@]}" ARGS &` makes $! the
# process that execs mpirun (or timeout), so a signal to it reaches mpirun,
# which passes it on to the job.
mpi_argv() {
  MPI_ARGV=(env "${MPI_ENV[@]}")
  if [ -n "${MPI_TIMEOUT:-}" ]; then MPI_ARGV+=(timeout -k 5 "$MPI_TIMEOUT"); fi
  MPI_ARGV+=(mpirun --oversubscribe --bind-to none -np "$1" "$CRM")
}

# mpi_job K ARGS...: K processes of cleanroom-mpi ARGS, in the foreground,
# stdin closed.
mpi_job() {
  mpi_argv "$1"
  shift
  "${MPI_ARGV[@]}" "$@" </dev/null
}

# mpi_cleanup: the exit trap mpi_init sets: the MPI jobs still running
# (SERVER_PID, MPI_PIDS: each the process that became mpirun) are sent
# SIGTERM and given 10 s to end (mpirun ends its processes), then cleanup.
mpi_cleanup() {
  local p live
  for p in ${SERVER_PID:+"$SERVER_PID"} ${MPI_PIDS[@]+"${MPI_PIDS[@]}"}; do kill -TERM "$p" 2>/dev/null || true; done
  for _ in $(seq 1 100); do
    live=""
    for p in ${SERVER_PID:+"$SERVER_PID"} ${MPI_PIDS[@]+"${MPI_PIDS[@]}"}; do
      if kill -0 "$p" 2>/dev/null; then live=1; fi
    done
    [ -z "$live" ] && break
    sleep 0.1
  done
  cleanup
}

# wait_listening PID ERRFILE: the port the node (started as PID, stderr in
# ERRFILE) listens on, into PORT; 1 if it ended or took over 30 s.
wait_listening() {
  local pid=$1 errf=$2
  PORT=""
  for _ in $(seq 1 600); do
    PORT=$(sed -n 's/.*listening on [^ ]*:\([0-9][0-9]*\).*/\1/p' "$errf" | head -1)
    [ -n "$PORT" ] && return 0
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.05
  done
  echo "the node did not start listening:" >&2
  cat "$errf" >&2
  return 1
}

# start_mpi_server K TEMPLATE DATA OUTBASE [extra flags...]: the provider
# as K processes serving in the background on 127.0.0.1 (port chosen by the
# kernel), --json; mpirun's PID in SERVER_PID (the cleanup kills it), its
# port in PORT, stdout and stderr in OUTBASE.out and OUTBASE.err.
start_mpi_server() {
  local k=$1 tmpl=$2 data=$3 base=$4
  shift 4
  : >"$base.out"
  : >"$base.err"
  mpi_argv "$k"
  "${MPI_ARGV[@]}" serve --template "$tmpl" --identity provider-id --data "$data" \
    --listen 127.0.0.1:0 --json "$@" </dev/null >"$base.out" 2>"$base.err" &
  SERVER_PID=$!
  wait_listening "$SERVER_PID" "$base.err"
}

# descendants PID: every process under PID (children first), one a line.
descendants() {
  local c
  for c in $(pgrep -P "$1" 2>/dev/null || true); do
    echo "$c"
    descendants "$c"
  done
}

# mpi_rank_pid PID RANK: the PID of that rank among the processes under PID
# (mpirun, or the shell that started it) on this host, by
# OMPI_COMM_WORLD_RANK in their environment; empty if none (yet).
mpi_rank_pid() {
  local p
  for p in $(descendants "$1"); do
    if tr '\0' '\n' <"/proc/$p/environ" 2>/dev/null | grep -qx "OMPI_COMM_WORLD_RANK=$2"; then
      echo "$p"
      return 0
    fi
  done
}

# released FILE: the "released" member of a node's --json output, as
# printed (compared byte for byte between runs).
released() {
  sed -n 's/.*\("released":.*\),"phases":.*/\1/p' "$1"
}

# cluster_json K HOST...: what a session line of the audit log records of a
# cluster of K processes on those hosts.
cluster_json() {
  local k=$1 h hosts=""
  shift
  for h in "$@"; do hosts="$hosts${hosts:+,}\"$h\""; done
  printf '"resources":{"cluster":{"processes":%s,"hosts":[%s]}' "$k" "$hosts"
}

# three_queries_template NAME: provider-id/ and consumer-id/ (make_identities)
# and template.json: the overlap example pinned to them, named NAME, with
# three queries run by the consumer, min_count 10: overlap (count, to both),
# by_segment (provider segment x consumer region, to both) and members
# (user_id, email, to the consumer); the provider's data needs email and
# segment, the consumer's user_id, email and region.
three_queries_template() {
  make_identities
  pin_template "$EX/template.json" base.json
  python3 - base.json template.json "$1" <<'PY'
import json, sys
t = json.load(open(sys.argv[1]))
t["name"] = sys.argv[3]
t["data"] = {"provider": {"required_columns": ["email", "segment"]},
             "consumer": {"required_columns": ["user_id", "email", "region"]}}
t["queries"] = {
    "overlap": {"kind": "count", "run_by": ["consumer"], "results_to": ["provider", "consumer"],
                "min_count": 10},
    "by_segment": {"kind": "count", "group_by": {"provider": "segment", "consumer": "region"},
                   "run_by": ["consumer"], "results_to": ["provider", "consumer"], "min_count": 10},
    "members": {"kind": "members", "run_by": ["consumer"], "results_to": ["consumer"],
                "columns": ["user_id", "email"], "min_count": 10},
}
t["limits"]["min_set_size"] = 10
t["limits"]["max_runs_per_query"] = 1000000
json.dump(t, open(sys.argv[2], "w"), indent=2)
PY
}

# hostile_sets_fixture: test_hostile.sh's small sets for hostile runners
# (what a hostile peer does wrong does not depend on how many points it
# sends): small_sets_fixture's template with min_count 10 and a small size
# ladder (16, 32, 64...); prov.csv 60 keys (3 segments), cons.csv 40, 24 in
# both (EXPECTED); both announce 64.
hostile_sets_fixture() {
  small_sets_fixture
  sed -i -e 's/"min_count": [0-9]*/"min_count": 10/' \
    -e 's/"limits": {/"limits": {"size_buckets": {"floor": 16, "ratio": 2},/' template.json
  { echo "email,segment"; for i in $(seq 0 59); do echo "user$i@example.com,s$((i % 3))"; done; } >prov.csv
  { echo "email"; for i in $(seq 36 75); do echo "user$i@example.com"; done; } >cons.csv
  EXPECTED=24
}

# mpi_fixture NP NC OVERLAP: identities, template.json with three queries
# (overlap: a count to both; by_segment: a count by provider segment and
# consumer region, to both; members: the consumer's matched rows), prov.csv
# (NP keys; segment s0..s4, and "rare" on every 50th key so that its cells
# fall below min_count) and cons.csv (NC keys, every 9th on two rows with
# another user_id and region; case and spaces varied), OVERLAP keys in
# both; keys.txt: every normalized key (for leak checks).
mpi_fixture() {
  local np=$1 nc=$2 ov=$3
  three_queries_template "cleanroom-mpi e2e"
  awk -v np="$np" -v nc="$nc" -v ov="$ov" 'BEGIN {
    print "email,segment" > "prov.csv"
    for (i = 1; i <= np; i++) {
      seg = i % 50 == 0 ? "rare" : "s" (i % 5)
      e = sprintf("mpk%07dz@mpi-e2e.example", i)
      if (i % 3 == 0) e = toupper(e)
      printf "%s,%s\n", e, seg > "prov.csv"
    }
    print "user_id,email,region" > "cons.csv"
    for (j = 1; j <= nc; j++) {
      id = np - ov + j
      e = sprintf("mpk%07dz@mpi-e2e.example", id)
      if (j % 4 == 0) e = " " toupper(e)
      printf "u%d,%s,r%d\n", j, e, j % 4 > "cons.csv"
      if (j % 9 == 0) printf "v%d,%s,r%d\n", j, e, (j + 1) % 4 > "cons.csv"
    }
  }'
  { awk -F, 'NR > 1 { print $1 }' prov.csv; awk -F, 'NR > 1 { print $2 }' cons.csv; } |
    tr -d ' ' | tr 'A-Z' 'a-z' | sort -u >keys.txt
}

# no_key_in WHAT FILE...: none of the files holds a match key (keys.txt), in
# any case.
no_key_in() {
  local what=$1 f i=0 bad
  shift
  # Lowercased copies searched in one pass (grep -i with many patterns is slow).
  rm -rf nokey.d
  mkdir nokey.d
  for f in "$@"; do
    i=$((i + 1))
    tr 'A-Z' 'a-z' <"$f" >"nokey.d/$i"
    echo "$i $f" >>nokey.d/names
  done
  bad=$(cd nokey.d && LC_ALL=C grep -lF -f ../keys.txt $(seq 1 $i) 2>/dev/null |
    while read -r n; do sed -n "s/^$n //p" names; done | tr '\n' ' ' || true)
  rm -rf nokey.d
  if [ -z "$bad" ]; then ok "$what: no match key in $# files"; else fail "$what: match keys in $bad"; fi
}

# Hostile runners (tests/hostile/hostile_peer, $HP) against a serving node
# started with start_server or start_mpi_server (SERVER_PID, PORT,
# server.out, server.err; the consumer's cons.csv).
# server_alive WHAT: the node is still running (else the test stops).
server_alive() {
  if kill -0 "$SERVER_PID" 2>/dev/null; then ok "$1: server still alive"; else
    fail "$1: server died"
    sed 's/^/    /' server.err >&2
    exit 1
  fi
}

# runner_case CASE NODE_MESSAGE ERROR_NAME|- [hostile_peer args...]
# NODE_MESSAGE: a grep pattern the server's log line for this connection
# must match; ERROR_NAME: the wire error the hostile peer must receive.
runner_case() {
  local name=$1 want=$2 wire=$3 id=consumer-id
  shift 3
  if [ "$name" = unpinned_cert ]; then id=stranger-id; fi
  set +e
  "$HP" --case "$name" --template template.json --identity "$id" --data cons.csv \
    --peer "127.0.0.1:$PORT" --timeout-ms 10000 "$@" >"hp_$name.out" 2>"hp_$name.err"
  local rc=$?
  set -e
  if [ "$rc" -ne 0 ]; then
    fail "$name: hostile_peer exited $rc"
    sed 's/^/    /' "hp_$name.out" "hp_$name.err" >&2
    return
  fi
  local addr
  addr=$(sed -n 's/^local: //p' "hp_$name.out")
  for _ in $(seq 1 200); do
    grep -qF "\"peer\":\"$addr\"" server.out && break
    sleep 0.05
  done
  local line
  line=$(grep -F "\"peer\":\"$addr\"" server.out || true)
  if [ -z "$line" ]; then
    fail "$name: the server reported nothing for $addr"
    return
  fi
  case "$line" in
    *'"status":"failed"'*) ok "$name: the session failed on the server" ;;
    *) fail "$name: server status not failed: $line" ;;
  esac
  case "$line" in
    *'"count":'*) fail "$name: the server released a count: $line" ;;
    *'"released":null'*) ok "$name: nothing released" ;;
    *) fail "$name: unexpected release: $line" ;;
  esac
  grep -F "session with $addr failed:" server.err >"srv_$name.err" || true
  expect_grep "$name: the server says why" "$want" "srv_$name.err"
  if [ "$wire" != - ]; then
    expect_grep "$name: the peer was sent Error $wire" "^error_name: $wire\$" "hp_$name.out"
  fi
  server_alive "$name"
}

