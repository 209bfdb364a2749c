# shellcheck shell=bash
# Shared by the examples' run.sh scripts (sourced, after they set EX to
# their own directory): the cleanroom binary, a node serving in the
# background on a port the kernel picks, and a run against it shown as it
# printed. Nodes still running when the script exits are stopped.

ROOT=$(cd "$EX/../.." && pwd)

# The binary: $CLEANROOM if set, otherwise build/release (built if needed).
if [ -n "${CLEANROOM:-}" ]; then
  CR=$CLEANROOM
else
  BUILD="$ROOT/${BUILD_DIR:-build/release}"
  if [ ! -x "$BUILD/cleanroom" ]; then
    "$ROOT/scripts/install-deps.sh"
    cmake -S "$ROOT" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DCR_BUILD_TESTS=OFF >/dev/null
  fi
  cmake --build "$BUILD" -j "$(nproc 2>/dev/null || echo 2)" --target cleanroom_cli >/dev/null
  CR="$BUILD/cleanroom"
fi

# The example's work files, afresh each time.
WORK="$EX/work"
rm -rf "$WORK"
mkdir -p "$WORK"

FAILED=0
NODES=()
kill_nodes() { for p in "${NODES[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap kill_nodes EXIT

# start_node WHO OUT ERR [serve flags...]: `cleanroom serve` in the
# background on 127.0.0.1, stdout to OUT and stderr to ERR; sets PORT. WHO
# names the node if it does not start (then the script exits 1).
start_node() {
  local who=$1 out=$2 err=$3
  shift 3
  "$CR" serve "$@" --listen 127.0.0.1:0 >"$out" 2>"$err" &
  local pid=$!
  NODES+=("$pid")
  PORT=""
  for _ in $(seq 1 100); do
    PORT=$(sed -n 's/.*listening on [^ ]*:\([0-9][0-9]*\).*/\1/p' "$err" | head -1)
    [ -n "$PORT" ] && return 0
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  echo "$who did not start:" >&2
  cat "$err" >&2
  exit 1
}

# two_dirs TEMPLATE PROVIDER_DIR PROVIDER_NAME CONSUMER_DIR CONSUMER_NAME:
# each party works in its own directory under WORK, with its identity in
# DIR/identity (fingerprints in P_FP and C_FP); TEMPLATE pinned with both
# goes to WORK/template.json and a copy to each directory.
two_dirs() {
  mkdir -p "$WORK/$2" "$WORK/$4"
  P_FP=$(cd "$WORK/$2" && "$CR" keygen --out identity --name "$3" 2>/dev/null)
  C_FP=$(cd "$WORK/$4" && "$CR" keygen --out identity --name "$5" 2>/dev/null)
  "$CR" template pin "$1" --provider "$P_FP" --consumer "$C_FP" \
    --out "$WORK/template.json" >/dev/null 2>&1
  cp "$WORK/template.json" "$WORK/$2/template.json"
  cp "$WORK/template.json" "$WORK/$4/template.json"
}

# stop_nodes: lets the nodes print their last session, then stops them.
stop_nodes() {
  sleep 0.5
  kill_nodes
  NODES=()
  wait 2>/dev/null || true
}

# show_run DIR TAG [run flags...]: `cleanroom run` in DIR against the node
# at PORT, output in DIR/TAG.out and DIR/TAG.err, both shown indented; its
# exit code in RC.
show_run() {
  local dir=$1 tag=$2
  shift 2
  RC=0
  (cd "$dir" && "$CR" run "$@" --peer "127.0.0.1:$PORT" >"$tag.out" 2>"$tag.err") || RC=$?
  sed 's/^/   /' "$dir/$tag.err" "$dir/$tag.out"
}

# run_shown WHO DIR TAG [run flags...]: show_run, then on failure says so
# and sets FAILED=1.
run_shown() {
  local who=$1
  shift
  show_run "$@"
  if [ "$RC" -ne 0 ]; then
    echo "   ($who's run of $2 failed, exit $RC)"
    FAILED=1
  fi
}

# show_rows FILE: the first rows of a CSV under WORK, and how many there are.
show_rows() {
  if [ -f "$WORK/$1" ]; then
    echo "   first rows of work/$1 ($(($(wc -l <"$WORK/$1") - 1)) rows):"
    head -6 "$WORK/$1" | tr -d '\r' | sed 's/^/     /'
  fi
}

# show_node WHO ERR OUT: what a node printed (its stderr but the listening
# line, then its stdout), indented.
show_node() {
  echo "-- what $1 printed:"
  grep -v "listening on" "$2" | sed 's/^/   /' || true
  sed 's/^/   /' "$3"
}
