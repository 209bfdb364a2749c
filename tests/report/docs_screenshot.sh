#!/usr/bin/env bash
# Remakes docs/report.png: the insurance example's consumer report (overlap,
# then overlap_by_segment with two suppressed segments), in headless
# Chromium, offline.
#   CLEANROOM=build/cleanroom tests/report/docs_screenshot.sh [OUT.png]
set -euo pipefail
SRC=$(cd "$(dirname "$0")/../.." && pwd)
OUT=$(realpath -m "${1:-$SRC/docs/report.png}")
export CLEANROOM=$(realpath "${CLEANROOM:-$SRC/build/cleanroom}") CR_SOURCE_DIR=$SRC
source "$SRC/tests/e2e/lib.sh"
IX="$SRC/examples/insurance"
make_identities
pin_template "$IX/template-brightguard.json" template.json
start_server template.json "$IX/brightguard.csv"
run_client template.json "$IX/insurer.csv" overlap
run_client template.json "$IX/insurer.csv" overlap_by_segment
kill -TERM "$SERVER_PID"
wait_server
"$CR" report --identity consumer-id --template template.json --out report.html
profile=$(mktemp -d)
/usr/bin/chromium --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
  --disable-background-networking --disable-component-update --disable-sync \
  --host-resolver-rules="MAP * ~NOTFOUND" --user-data-dir="$profile" --hide-scrollbars \
  --screenshot="$OUT" --window-size=1280,1380 "file://$PWD/report.html" 2>/dev/null
rm -rf "$profile"
echo "wrote $OUT"
