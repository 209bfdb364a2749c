#!/usr/bin/env bash
# Basketball team x ride-share app, on one machine over loopback TLS:
#
#   1. The Harbor City Hawks (provider) and RideNow (consumer) each create an
#      identity and pin both fingerprints in the shared template.
#   2. The team serves its season-ticket holders; RideNow runs
#      "season_ticket_riders" and gets the rows of its own users who hold a
#      season ticket (user_id and email only) in riders.csv, to offer them
#      a "Safe Ride Home" discount. The team learns nothing from that query.
#   3. RideNow runs "riders_count": both sides learn how many of the team's
#      holders use the app.
#
# Each side works in its own directory (work/team, work/app), so you can see
# which files each one ends up with. Uses $CLEANROOM if set, otherwise builds
# build/release if needed.
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
echo "   Harbor City Hawks (provider): $T_FP"
echo "   RideNow (consumer):           $A_FP"
"$CR" template pin "$EX/template.json" --provider "$T_FP" --consumer "$A_FP" \
  --out "$WORK/template.json" >/dev/null 2>&1
cp "$WORK/template.json" "$WORK/team/template.json"
cp "$WORK/template.json" "$WORK/app/template.json"
echo "   template sha256: $("$CR" template hash "$WORK/template.json")"

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

echo "== 3. RideNow runs \"season_ticket_riders\" (its own matched users, to riders.csv)"
app season_ticket_riders --out riders.csv
if [ -f "$WORK/app/riders.csv" ]; then
  echo "   first rows of work/app/riders.csv ($(($(wc -l <"$WORK/app/riders.csv") - 1)) rows):"
  head -6 "$WORK/app/riders.csv" | tr -d '\r' | sed 's/^/     /'
fi

echo "== 4. RideNow runs \"riders_count\" (the count, to both)"
app riders_count

sleep 0.5
cleanup
SERVER=""
wait 2>/dev/null || true

echo
echo "-- what the team's node printed:"
grep -v "listening on" "$WORK/team/team.err" | sed 's/^/   /' || true
sed 's/^/   /' "$WORK/team/team.out"
echo
echo "-- files on each side:"
(cd "$WORK" && find team app -type f | sort | sed 's/^/   /')
echo
echo "RideNow knows which of its users hold a season ticket; the team knows only"
echo "how many of its holders use the app. Work files are in $WORK"
exit $FAILED
