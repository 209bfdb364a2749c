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
# shellcheck source=../lib/run.sh
source "$EX/../lib/run.sh"
# shellcheck source=../lib/team_app.sh
source "$EX/../lib/team_app.sh"

echo "== 1. identities and the template"
team_and_app
"$CR" template check "$WORK/template.json" | sed 's/^/   /'

echo "== 2. the team serves its season-ticket holders"
team_serves

echo "== 3. RideNow runs the queries"
app holders_riding
app holders_riding_by_city
app frequent_riders --param min_rides=20
app safe_ride_offers --out offers.csv
show_rows app/offers.csv

stop_nodes

echo
echo "-- the ground truth (truth.py, from the files alone):"
python3 "$EX/truth.py" "$EX/team.csv" "$EX/app.csv" | sed 's/^/   /'
echo "   with rides >= 20: $(python3 "$EX/truth.py" --json --min-rides 20 "$EX/team.csv" "$EX/app.csv" |
  sed -n 's/.*"count": \([0-9]*\).*/\1/p')"
echo
show_node "the team's node" "$WORK/team/team.err" "$WORK/team/team.out"
echo
echo "RideNow knows which of its riders hold a season ticket and on which key they"
echo "matched; the team knows only how many. Work files are in $WORK"
exit $FAILED
