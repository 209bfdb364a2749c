#!/usr/bin/env bash
# Insurance x security firms, on one machine over loopback TLS:
#
#   1. HomeSure Insurance, Acme Security and BrightGuard each create an
#      identity; HomeSure agrees one template with each firm (a template pins
#      one provider) and both sides pin their fingerprints in it.
#   2. Both firms serve their customer lists; HomeSure runs "overlap" against
#      each and picks the firm with the higher overlap.
#   3. HomeSure runs "overlap_by_segment" with the chosen firm: both see the
#      overlap per security segment, segments below min_count suppressed.
#
# Uses $CLEANROOM if set, otherwise builds build/release if needed. Work files
# (identities, pinned templates, outputs) go to examples/insurance/work/.
set -euo pipefail
EX=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=../lib/run.sh
source "$EX/../lib/run.sh"
cd "$WORK"

# serve NAME TEMPLATE DATA: NAME's node serves in the background (identity
# NAME-id, output NAME.out / NAME.err); sets PORT.
serve() {
  start_node "$1's node" "$1.out" "$1.err" --template "$2" --identity "$1-id" --data "$3"
}

# insurer TAG PORT TEMPLATE QUERY: HomeSure runs QUERY; output in insurer-TAG.out.
insurer() {
  local PORT=$2 # show_run's peer, for this call only
  show_run . "insurer-$1" --template "$3" --identity homesure-id --data "$EX/insurer.csv" --query "$4"
  if [ $RC -ne 0 ]; then
    echo "HomeSure's run of $4 failed (exit $RC)" >&2
    exit $RC
  fi
}

# overlap_of FILE: the released overlap in a human-readable result (0 if suppressed).
overlap_of() {
  local n
  n=$(sed -n 's/^ *overlap: *\([0-9][0-9]*\) .*/\1/p' "$1" | head -1)
  echo "${n:-0}"
}

echo "== 1. identities and templates"
H_FP=$("$CR" keygen --out homesure-id --name "HomeSure Insurance" 2>/dev/null)
A_FP=$("$CR" keygen --out acme-id --name "Acme Security" 2>/dev/null)
B_FP=$("$CR" keygen --out brightguard-id --name "BrightGuard" 2>/dev/null)
echo "   HomeSure Insurance: $H_FP"
echo "   Acme Security:      $A_FP"
echo "   BrightGuard:        $B_FP"
"$CR" template pin "$EX/template.json" --provider "$A_FP" --consumer "$H_FP" \
  --out template-acme.json >/dev/null 2>&1
"$CR" template pin "$EX/template-brightguard.json" --provider "$B_FP" --consumer "$H_FP" \
  --out template-brightguard.json >/dev/null 2>&1
echo "   HomeSure x Acme Security template: $("$CR" template hash template-acme.json)"
echo "   HomeSure x BrightGuard template:   $("$CR" template hash template-brightguard.json)"

echo "== 2. both firms serve; HomeSure runs \"overlap\" against each"
serve acme template-acme.json "$EX/acme.csv"
ACME_PORT=$PORT
serve brightguard template-brightguard.json "$EX/brightguard.csv"
BG_PORT=$PORT

echo "-- HomeSure x Acme Security:"
insurer acme "$ACME_PORT" template-acme.json overlap
echo "-- HomeSure x BrightGuard:"
insurer brightguard "$BG_PORT" template-brightguard.json overlap

A=$(overlap_of insurer-acme.out)
B=$(overlap_of insurer-brightguard.out)
if [ "$B" -gt "$A" ]; then
  ORG=BrightGuard CPORT=$BG_PORT CTMPL=template-brightguard.json
else
  ORG="Acme Security" CPORT=$ACME_PORT CTMPL=template-acme.json
fi
echo
echo "   overlap: Acme Security $A, BrightGuard $B -> HomeSure picks $ORG"
echo

echo "== 3. HomeSure runs \"overlap_by_segment\" with $ORG"
insurer segments "$CPORT" "$CTMPL" overlap_by_segment

stop_nodes

for n in acme brightguard; do
  [ $n = acme ] && label="Acme Security" || label="BrightGuard"
  echo
  show_node "$label's node" "$n.err" "$n.out"
done
echo
echo "Acme Security learned only the size of HomeSure's list; $ORG also the"
echo "overlap per segment it serves. Work files are in $WORK"
