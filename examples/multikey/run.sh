#!/usr/bin/env bash
# Basketball team x ride-share app, matched on e-mail OR phone, on one
# machine over loopback TLS:
#
#   1. The Harbor City Hawks (provider) and RideNow (consumer) each create an
#      identity and pin both fingerprints in the shared template.
#   2. The team serves its season-ticket holders (e-mails, most with a
#      phone); RideNow runs, against its riders (phones, some e-mails):
#        holders_riding          how many riders hold a season ticket (to both)
#        holders_riding_by_city  per team section and rider city (to RideNow)
#        frequent_riders         the same, riders with >= 20 rides only
#        safe_ride_offers        which of RideNow's own riders (rider_id and
#                                the key they matched on) to offers.csv
#   3. Each count is compared with truth.py, computed from the files alone.
#
# Each side works in its own directory (work/team, work/app). Uses
# $CLEANROOM if set, otherwise builds build/release if needed.
set -euo pipefail
EX=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$EX/../.." && pwd)

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

WORK="$EX/work"
rm -rf "$WORK"
mkdir -p "$WORK/team" "$WORK/app"

SERVER=""
cleanup() { if [ -n "$SERVER" ]; then kill "$SERVER" 2>/dev/null || true; fi; }
trap cleanup EXIT

echo "== 1. identities and the template"
T_FP=$(cd "$WORK/team" && "$CR" keygen --out identity --name "Harbor City Hawks" 2>/dev/null)
A_FP=$(cd "$WORK/app" && "$CR" keygen --out identity --name "RideNow" 2>/dev/null)
"$CR" template pin "$EX/template.json" --provider "$T_FP" --consumer "$A_FP" \
  --out "$WORK/template.json" >/dev/null 2>&1
cp "$WORK/template.json" "$WORK/team/template.json"
cp "$WORK/template.json" "$WORK/app/template.json"
"$CR" template check "$WORK/template.json" | sed 's/^/   /'

echo "== 2. the team serves its season-ticket holders"
cd "$WORK/team"
"$CR" serve --template template.json --identity identity --data "$EX/team.csv" \
  --listen 127.0.0.1:0 >team.out 2>team.err &
SERVER=$!
PORT=""
for _ in $(seq 1 100); do
  PORT=$(sed -n 's/.*listening on [^ ]*:\([0-9][0-9]*\).*/\1/p' team.err | head -1)
  [ -n "$PORT" ] && break
  kill -0 $SERVER 2>/dev/null || break
  sleep 0.1
done
if [ -z "$PORT" ]; then
  echo "the team's node did not start:" >&2
  cat team.err >&2
  exit 1
fi

FAILED=0
# app QUERY [flags]: RideNow runs QUERY from work/app and shows what it got.
app() {
  local q=$1 rc=0
  shift
  (cd "$WORK/app" && "$CR" run --template template.json --identity identity --data "$EX/app.csv" \
    --peer "127.0.0.1:$PORT" --query "$q" "$@" >"$q.out" 2>"$q.err") || rc=$?
  sed 's/^/   /' "$WORK/app/$q.err" "$WORK/app/$q.out"
  if [ $rc -ne 0 ]; then
    echo "   (RideNow's run of $q failed, exit $rc)"
    FAILED=1
  fi
}

echo "== 3. RideNow runs the queries"
app holders_riding
app holders_riding_by_city
app frequent_riders --param min_rides=20
app safe_ride_offers --out offers.csv
if [ -f "$WORK/app/offers.csv" ]; then
  echo "   first rows of work/app/offers.csv ($(($(wc -l <"$WORK/app/offers.csv") - 1)) rows):"
  head -6 "$WORK/app/offers.csv" | tr -d '\r' | sed 's/^/     /'
fi

sleep 0.5
cleanup
SERVER=""
wait 2>/dev/null || true

echo
echo "-- the ground truth (truth.py, from the files alone):"
python3 "$EX/truth.py" "$EX/team.csv" "$EX/app.csv" | sed 's/^/   /'
echo "   with rides >= 20: $(python3 "$EX/truth.py" --json --min-rides 20 "$EX/team.csv" "$EX/app.csv" |
  sed -n 's/.*"count": \([0-9]*\).*/\1/p')"
echo
echo "-- what the team's node printed:"
grep -v "listening on" "$WORK/team/team.err" | sed 's/^/   /' || true
sed 's/^/   /' "$WORK/team/team.out"
echo
echo "RideNow knows which of its riders hold a season ticket and on which key they"
echo "matched; the team knows only how many. Work files are in $WORK"
exit $FAILED
