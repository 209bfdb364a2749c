#!/usr/bin/env bash
# Reading data: `cleanroom data check` on the same N rows from a CSV file, an
# SQLite file and a PostgreSQL table (a throwaway cluster made here with
# initdb/pg_ctl, Unix socket only, removed at the end); peak RSS and wall
# time of each. Shows that the PostgreSQL source streams (a cursor, one
# FETCH batch in memory): its peak RSS stays with the CSV's, which holds
# the same normalized keys.
#
# Usage: bench/data_sources.sh [--rows N] [--cleanroom BIN]
#   --rows N         rows per source (default 1000000)
#   --cleanroom BIN  the binary to measure (default: builds build/bench,
#                    Release; also taken from $CLEANROOM)
# Output: a Markdown table on stdout; progress on stderr.
set -euo pipefail
export LC_ALL=C

ROWS=1000000
CR=${CLEANROOM:-}
while [ $# -gt 0 ]; do
  case "$1" in
  --rows) ROWS=$2; shift 2 ;;
  --cleanroom) CR=$2; shift 2 ;;
  -h | --help) sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
  *) echo "data_sources.sh: unknown option $1" >&2; exit 2 ;;
  esac
done
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$HERE")
if [ -z "$CR" ]; then
  cmake -S "$ROOT" -B "$ROOT/build/bench" -DCMAKE_BUILD_TYPE=Release -DCR_BUILD_TESTS=OFF >/dev/null
  cmake --build "$ROOT/build/bench" -j "$(nproc)" --target cleanroom_cli >/dev/null
  CR=$ROOT/build/bench/cleanroom
fi

PGBIN=""
for d in "$(dirname "$(readlink -f "$(command -v initdb 2>/dev/null || echo /x)")")" \
  $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
  if [ -x "$d/initdb" ] && [ -x "$d/pg_ctl" ]; then PGBIN=$d; break; fi
done
[ -n "$PGBIN" ] || { echo "data_sources.sh: no PostgreSQL server binaries (scripts/install-deps.sh)" >&2; exit 2; }
PSQL="$PGBIN/psql"
[ -x "$PSQL" ] || PSQL=$(command -v psql)

WORK=$(mktemp -d /tmp/cr-bench-data.XXXXXX)
chmod 755 "$WORK"
if [ "$(id -u)" = 0 ]; then
  id postgres >/dev/null 2>&1 || useradd --system --no-create-home --shell /usr/sbin/nologin postgres
  chown postgres "$WORK"
  as_pg() { runuser -u postgres -- "$@"; }
else
  as_pg() { "$@"; }
fi
cleanup() {
  as_pg "$PGBIN/pg_ctl" -D "$WORK/pg" -m immediate -w stop >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT
PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
as_pg "$PGBIN/initdb" -D "$WORK/pg" -A trust -U cleanroom -E UTF8 --locale=C --no-sync >/dev/null
as_pg "$PGBIN/pg_ctl" -D "$WORK/pg" -l "$WORK/pg.log" -w -t 60 \
  -o "-c listen_addresses='' -k $WORK -p $PORT -c fsync=off" start >/dev/null
psql_() { "$PSQL" -X -q -v ON_ERROR_STOP=1 -h "$WORK" -p "$PORT" -U cleanroom "$@"; }
psql_ -d postgres -c "CREATE DATABASE bench"
echo "data_sources.sh: $ROWS rows into PostgreSQL, SQLite and CSV" >&2
psql_ -d bench -c "CREATE TABLE big AS SELECT 'User' || i || '@Example.com' AS email,
  (ARRAY['video','alarm_only','smart_home'])[1 + i % 3] AS segment FROM generate_series(1, $ROWS) AS i"
OUT=$(mktemp -d /tmp/cr-bench-out.XXXXXX)
trap 'cleanup; rm -rf "$OUT"' EXIT
psql_ -d bench -c "\\copy big TO '$OUT/big.csv' WITH (FORMAT csv, HEADER)"
python3 - "$OUT/big.csv" "$OUT/big.db" <<'PY'
import csv, sqlite3, sys
db = sqlite3.connect(sys.argv[2])
db.execute("CREATE TABLE big (email TEXT, segment TEXT)")
with open(sys.argv[1], newline="") as f:
    r = csv.reader(f)
    next(r)
    db.executemany("INSERT INTO big VALUES (?, ?)", r)
db.commit()
PY

cd "$OUT"
P_FP=$("$CR" keygen --out p --name p 2>/dev/null)
C_FP=$("$CR" keygen --out c --name c 2>/dev/null)
"$CR" template pin "$ROOT/examples/overlap/template.json" --provider "$P_FP" --consumer "$C_FP" \
  --out t.json >/dev/null 2>&1

measure() { # LABEL ARGS...: peak RSS (MiB) and wall time (s) of a data check
  local label=$1
  shift
  python3 - "$label" "$CR" data check --template t.json --identity p --audit audit.jsonl "$@" <<'PY'
import resource, subprocess, sys, time
t0 = time.monotonic()
r = subprocess.run(sys.argv[2:], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
wall = time.monotonic() - t0
if r.returncode != 0:
    sys.exit(f"{sys.argv[1]}: exit {r.returncode}: {r.stderr.decode()[-300:]}")
rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
print(f"| {sys.argv[1]} | {rss:.1f} MiB | {wall:.2f} s |")
PY
}
echo "| source ($ROWS rows, \`data check\`) | peak RSS | wall |"
echo "|---|---|---|"
measure "CSV file" --data big.csv
measure "SQLite (sqlite:PATH)" --data sqlite:big.db --data-query "SELECT email, segment FROM big"
measure "PostgreSQL (cursor, 2000 rows a FETCH)" \
  --data "postgresql://cleanroom@/bench?host=$WORK&port=$PORT" \
  --data-query "SELECT email, segment FROM big"
