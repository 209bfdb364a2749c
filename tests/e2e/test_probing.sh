#!/usr/bin/env bash
# End to end: the probing consumer (issue 13). The pharma company runs the
# filtered count with parameters that change only the hospital's filtered
# set, before and after the run limit (also with its own audit log deleted,
# as a modified node would), and once with a filter that keeps nothing.
# What it may see of the hospital's records: released (thresholded) counts
# and size buckets. Never the exact filtered sizes, row counts, line
# numbers or paths, and once the limit is spent, the same refusal whatever
# the parameters.
source "$CR_E2E_LIB"

PX="$CR_SOURCE_DIR/examples/pharma"
HOSP="$PX/hospital.csv"
REG="$PX/registry.csv"

HOSP_ROWS=$(($(wc -l <"$HOSP") - 1))
declare -A EXACT
for age in 18 19 20 21 22; do EXACT[$age]=$(pharma_eligible_keys "$HOSP" E11 "$age" 65 | wc -l); done
echo "hospital: $HOSP_ROWS rows; E11 patients aged AGE-65: 18:${EXACT[18]} 19:${EXACT[19]} 20:${EXACT[20]} 21:${EXACT[21]} 22:${EXACT[22]}"

make_identities
pin_template "$PX/template.json" base.json
sed -e 's/"max_runs_per_query": [0-9]*/"max_runs_per_query": 4/' base.json >template.json

start_server template.json "$HOSP"
echo "server pid $SERVER_PID on port $PORT"

probe() { # NAME PARAM...: one run; outputs in NAME.out / NAME.err, exit code in NAME.rc
  local name=$1
  shift
  run_client template.json "$REG" eligible_patients "$@"
  cp run.out "$name.out"
  cp run.err "$name.err"
  echo "$RUN_RC" >"$name.rc"
}

# What the pharma company must never be shown about the hospital's records.
no_leak() { # NAME
  local f bad=""
  for f in "$1.out" "$1.err"; do
    # Our own data summary (registry.csv) is ours to see; nothing else may
    # name a file, a line or a row count.
    grep -v ' rows, .* accepted, ' "$f" | grep -q "hospital\|\.csv" && bad="$bad path($f)"
    grep -qi "line [0-9]" "$f" && bad="$bad line-number($f)"
    # Every number shown, minus hex ids, addresses, our own data summary
    # and this process's own measurements (phase times, peak RSS, spill),
    # whose digits can equal a count by chance.
    local nums
    nums=$(grep -v ' rows, .* accepted, ' "$f" | sed -E -e 's/[0-9a-f]{64}//g' \
      -e 's/[0-9]+(\.[0-9]+){3}(:[0-9]+)?//g' \
      -e 's/"(phases|spill)":\{[^}]*\}|"peak_rss_bytes":[0-9]*//g' | grep -oE '[0-9]+' |
      sort -u || true)
    for n in "$HOSP_ROWS" "${EXACT[@]}"; do
      if printf '%s\n' "$nums" | grep -qx "$n"; then bad="$bad number-$n($f)"; fi
    done
  done
  if [ -z "$bad" ]; then ok "$1: nothing of the hospital's records but buckets and released numbers"; else
    fail "$1: the pharma company was shown:$bad"
  fi
}

echo "--- within the limit: sizes as buckets"
for age in 18 19 20; do
  probe "age$age" --param codes=E11 --param min_age=$age --param max_age=65
  expect_eq "age $age: run exits 0" 0 "$(cat age$age.rc)"
  expect_grep "age $age: the partner's size is marked as a bucket" '"peer_set_size_bucket":true' "age$age.out"
  peer=$(json_field "age$age.out" peer_set_size)
  if [ -n "$peer" ] && [ "$peer" -ge "${EXACT[$age]}" ] && [ "$peer" != "${EXACT[$age]}" ]; then
    ok "age $age: the partner's size $peer is a bucket above the exact ${EXACT[$age]}"
  else
    fail "age $age: the partner's size '$peer' (exact ${EXACT[$age]})"
  fi
  no_leak "age$age"
done
if [ "$(json_field age18.out peer_set_size)" = "$(json_field age20.out peer_set_size)" ]; then
  ok "ages 18 and 20 show the same bucket (${EXACT[18]} and ${EXACT[20]} patients)"
else
  fail "ages 18 and 20 show different buckets: the difference leaks"
fi

echo "--- a filter that keeps nothing"
probe nothing --param codes=ZZZ --param min_age=18 --param max_age=65
expect_eq "nothing: run exits 4 (refused by the partner)" 4 "$(cat nothing.rc)"
if grep -q '"count":' nothing.out; then fail "nothing: a count is shown"; else ok "nothing: no count"; fi
grep -v ' rows, .* accepted, ' nothing.err nothing.out | grep -q "filter keeps none\|data rows\|rejected" &&
  fail "nothing: the hospital's load error reached the pharma company" || ok "nothing: no load error text from the hospital"
no_leak nothing

echo "--- the limit is spent (4 runs, counted by both nodes)"
# Three runs released and one refused on size count on the hospital's side;
# the pharma company's node counted the three it admitted, so it still
# tries, and the hospital refuses in fixed words.
probe spent --param codes=E11 --param min_age=21 --param max_age=65
expect_eq "spent: refused (exit 4)" 4 "$(cat spent.rc)"
expect_grep "spent: the hospital says only that the template does not allow it" "NOT_ALLOWED" spent.err
no_leak spent

# A modified node forgets its runs: the hospital still refuses, and says the
# same thing whatever the parameters.
for p in "E11 21" "E11 22" "ZZZ 18" "E10 30"; do
  set -- $p
  rm -f consumer-id/audit.jsonl
  probe "fresh_$1_$2" --param codes=$1 --param min_age=$2 --param max_age=65
  expect_eq "fresh log, $1 $2: refused (exit 4)" 4 "$(cat fresh_$1_$2.rc)"
  if grep -q '"count":' "fresh_$1_$2.out"; then fail "fresh log, $1 $2: a count is shown"; else ok "fresh log, $1 $2: no count"; fi
  no_leak "fresh_$1_$2"
done
# Identical refusals: the same text once session ids, addresses and the
# measurements (times, this process's peak RSS and spill) are masked.
mask() { sed -E -e 's/[0-9a-f]{64}//g' -e 's/[0-9]+(\.[0-9]+){3}(:[0-9]+)?/ADDR/g' \
  -e 's/"params":\{[^}]*\}//g' -e 's/codes=[A-Z0-9,]*|min_age=[0-9]*//g' -e 's/"(total|rtt|connect)_ms":[0-9.]*//g' \
  -e 's/"(phases|spill)":\{[^}]*\}|"peak_rss_bytes":[0-9]*//g' "$@"; }
ref=$(mask fresh_E11_21.err fresh_E11_21.out)
same=1
for p in fresh_E11_22 fresh_ZZZ_18 fresh_E10_30; do
  if [ "$(mask $p.err $p.out)" != "$ref" ]; then
    same=0
    diff <(printf '%s\n' "$ref") <(mask $p.err $p.out) | sed 's/^/    /' >&2 || true
  fi
done
if [ "$same" = 1 ]; then ok "once the limit is spent, every parameter value gets the same refusal"; else
  fail "refusals differ with the parameters"
fi

echo "--- the hospital's own log"
kill "$SERVER_PID" 2>/dev/null || true
wait_server
RUNS=$(grep -c '"event":"session_started"' provider-id/audit.jsonl || true)
expect_eq "the hospital recorded the 4 admitted runs (and only those)" 4 "$RUNS"
if "$CR" audit verify provider-id/audit.jsonl >/dev/null 2>&1; then ok "the hospital's log verifies"; else fail "the hospital's log does not verify"; fi

finish
