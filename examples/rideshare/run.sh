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
# shellcheck source=../lib/run.sh
source "$EX/../lib/run.sh"
# shellcheck source=../lib/team_app.sh
source "$EX/../lib/team_app.sh"

echo "== 1. identities and the template"
team_and_app
echo "   Harbor City Hawks (provider): $P_FP"
echo "   RideNow (consumer):           $C_FP"
echo "   template sha256: $("$CR" template hash "$WORK/template.json")"

echo "== 2. the team serves its season-ticket holders"
team_serves

echo "== 3. RideNow runs \"season_ticket_riders\" (its own matched users, to riders.csv)"
app season_ticket_riders --out riders.csv
show_rows app/riders.csv

echo "== 4. RideNow runs \"riders_count\" (the count, to both)"
app riders_count

stop_nodes

echo
show_node "the team's node" "$WORK/team/team.err" "$WORK/team/team.out"
echo
echo "-- files on each side:"
(cd "$WORK" && find team app -type f | sort | sed 's/^/   /')
echo
echo "RideNow knows which of its users hold a season ticket; the team knows only"
echo "how many of its holders use the app. Work files are in $WORK"
exit $FAILED
