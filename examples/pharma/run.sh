#!/usr/bin/env bash
# Pharma x hospital, on one machine over loopback TLS:
#
#   1. St. Elisabeth Hospital (provider) and Novamed Pharma (consumer) each
#      create an identity and pin both fingerprints in the shared template.
#   2. The hospital serves its patient records. Novamed runs
#      "eligible_patients" with its trial parameters (diagnosis codes, age
#      range); the hospital's node keeps only its records that pass the
#      template's filter with those parameters, then matches them with
#      Novamed's trial registry. Novamed learns the count of eligible
#      patients in its registry, if it reaches the minimum.
#   3. The same for type 1 diabetes only: too few, so suppressed.
#   4. A parameter of the wrong type is refused before anything is sent.
#   5. The differencing pair: ages 18 to 65, then 18 to 64. With exact
#      counts the difference is the number of matched 65-year-olds.
#   6. The same pair under template-dp.json: every release is noisy
#      (discrete Laplace, epsilon 0.5) and spends from a privacy budget of
#      5, so the difference no longer tells, and averaging is bounded.
#
# Uses $CLEANROOM if set, otherwise builds build/release if needed. Work files
# go to examples/pharma/work/.
set -euo pipefail
EX=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=../lib/run.sh
source "$EX/../lib/run.sh"
cd "$WORK"

echo "== 1. identities and the template"
H_FP=$("$CR" keygen --out hospital-id --name "St. Elisabeth Hospital" 2>/dev/null)
P_FP=$("$CR" keygen --out pharma-id --name "Novamed Pharma" 2>/dev/null)
echo "   St. Elisabeth Hospital (provider): $H_FP"
echo "   Novamed Pharma (consumer):         $P_FP"
"$CR" template pin "$EX/template.json" --provider "$H_FP" --consumer "$P_FP" \
  --out template.json >/dev/null 2>&1
echo "   template sha256: $("$CR" template hash template.json)"
echo "   the hospital's filter: $(sed -n 's/.*"provider": *"\(.*IN.*\)".*/\1/p' template.json)"

start_node "the hospital's node" hospital.out hospital.err \
  --template template.json --identity hospital-id --data "$EX/hospital.csv"

# pharma TAG PARAMS...: Novamed runs eligible_patients; sets RC.
pharma() {
  local tag=$1
  shift
  show_run . "pharma-$tag" --template template.json --identity pharma-id --data "$EX/registry.csv" \
    --query eligible_patients "$@"
  echo "   (exit $RC)"
}

echo "== 2. Novamed: type 1 or 2 diabetes (E10, E11), ages 18 to 65"
pharma diabetes --param codes=E11,E10 --param min_age=18 --param max_age=65
[ $RC -eq 0 ] || FAILED=1
echo "== 3. Novamed: type 1 diabetes only (E10), ages 18 to 65"
pharma type1 --param codes=E10 --param min_age=18 --param max_age=65
[ $RC -eq 0 ] || FAILED=1
echo "== 4. Novamed: an age that is not an integer"
pharma typo --param codes=E11,E10 --param min_age=eighteen --param max_age=65
[ $RC -ne 0 ] || FAILED=1
echo "== 5. Novamed: the same as 2, ages 18 to 64 (the difference with 2 is the"
echo "      number of matched patients aged 65)"
pharma diabetes64 --param codes=E11,E10 --param min_age=18 --param max_age=64
[ $RC -eq 0 ] || FAILED=1

stop_nodes

echo
show_node "the hospital's node" hospital.err hospital.out

echo
echo "== 6. The pair of 2 and 5 again, under template-dp.json (noise and a budget)"
"$CR" template pin "$EX/template-dp.json" --provider "$H_FP" --consumer "$P_FP" \
  --out template-dp.json >/dev/null 2>&1
"$CR" template check template-dp.json | grep -E "noise:|privacy budget:" | sed 's/^/   /'
start_node "the hospital's node" hospital-dp.out hospital-dp.err \
  --template template-dp.json --identity hospital-id --data "$EX/hospital.csv"
for hi in 65 64; do
  RC=0
  "$CR" run --template template-dp.json --identity pharma-id --data "$EX/registry.csv" \
    --peer "127.0.0.1:$PORT" --query eligible_patients --param codes=E11,E10 \
    --param min_age=18 --param "max_age=$hi" >"pharma-dp-$hi.out" 2>"pharma-dp-$hi.err" || RC=$?
  echo "   ages 18 to $hi:"
  grep -E "overlap:|noise:|privacy budget:" "pharma-dp-$hi.out" | sed 's/^/   /'
  [ $RC -eq 0 ] || FAILED=1
done
stop_nodes
echo
echo "Novamed learned how many eligible patients are in its registry (when at least"
echo "the template's min_count) and how many of the hospital's patients pass the"
echo "filter; the hospital learned the registry's size and the parameters, nothing"
echo "about who is in it. Under template-dp.json each count is noisy and each run"
echo "spends epsilon 0.5 of 5: the difference of two runs no longer gives away a"
echo "patient, and no more than 10 runs can be averaged. Work files are in $WORK"
exit $FAILED
