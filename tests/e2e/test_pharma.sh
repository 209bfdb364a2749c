#!/usr/bin/env bash
# End to end on examples/pharma: the pharma company (consumer) runs
# "eligible_patients" with trial parameters; the hospital's node (provider)
# filters its own records with the template's `where` and the run's
# parameters before matching. The released count (or its suppression) and
# both set sizes are compared with a plain filter-then-join computed here
# with awk, for two parameter sets: one above min_count, one below. A
# parameter of the wrong type is refused (exit 4) naming the parameter.
# The differencing pair (ages 18-65, then 18-64) gives away the matched
# 65-year-olds under the exact template, not under template-dp.json, whose
# releases are noisy and spend a budget (docs/privacy.md).
source "$CR_E2E_LIB"

PX="$CR_SOURCE_DIR/examples/pharma"
HOSP="$PX/hospital.csv"
REG="$PX/registry.csv"
MIN=50

# ---- the plain filter and join, independent of the engine --------------------

normalized_emails "$REG" >reg.keys
normalized_emails "$HOSP" >hosp.keys
N_REG=$(wc -l <reg.keys)
N_HOSP=$(wc -l <hosp.keys)
UNFILTERED=$(comm -12 reg.keys hosp.keys | wc -l)
pharma_eligible_keys "$HOSP" E11,E10 18 65 >a.keys
pharma_eligible_keys "$HOSP" E10 18 65 >b.keys
N_A=$(wc -l <a.keys)
N_B=$(wc -l <b.keys)
EXP_A=$(comm -12 reg.keys a.keys | wc -l)
EXP_B=$(comm -12 reg.keys b.keys | wc -l)
echo "plain join: registry $N_REG keys, hospital $N_HOSP keys ($UNFILTERED in both, unfiltered)"
echo "  codes=E11,E10 ages 18-65: $N_A eligible patients, $EXP_A in the registry"
echo "  codes=E10     ages 18-65: $N_B eligible patients, $EXP_B in the registry"

# The example must exercise what it claims.
if [ "$EXP_A" -ge $MIN ] && [ "$EXP_B" -lt $MIN ] && [ "$EXP_A" -ne "$UNFILTERED" ]; then
  ok "the data has one parameter set above min_count, one below, and the filter matters"
else
  fail "the example data does not straddle min_count ($EXP_A, $EXP_B, unfiltered $UNFILTERED)"
fi
if awk -F, '($3 == "E11" || $3 == "E10") && $4 == 18 { a = 1 } ($3 == "E11" || $3 == "E10") && $4 == 65 { b = 1 }
            ($3 == "E11" || $3 == "E10") && $4 == "" { c = 1 } END { exit !(a && b && c) }' "$HOSP"; then
  ok "the data has diabetes records at both age bounds and without an age"
else
  fail "the data lacks records at the age bounds or without an age"
fi

make_identities
pin_template "$PX/template.json" template.json

numbers() { # the numbers a file shows, outside strings, 64-hex ids and the data summary
  grep -v ' rows, .* accepted, ' "$1" | sed -E -e 's/"[^"]*"//g' -e 's/[0-9a-f]{64}//g' |
    grep -oE '[0-9]+(\.[0-9]+)?' || true
}
no_keys() { # FILE...: no e-mail of either side in them
  local f
  for f in "$@"; do
    if head -300 hosp.keys | cat - <(head -300 reg.keys) | grep -qF -f - "$f"; then
      fail "$f holds an e-mail"
    else
      ok "$f holds no e-mail"
    fi
  done
}

# ---- 1. E11,E10, ages 18-65: released --------------------------------------

start_server template.json "$HOSP" --once
run_client template.json "$REG" eligible_patients --param codes=E11,E10 --param min_age=18 --param max_age=65
wait_server
cp run.out a-run.out
cp server.out a-server.out
expect_eq "A: run exits 0" 0 "$RUN_RC"
expect_eq "A: serve exits 0" 0 "$SERVER_RC"
expect_eq "A: the released count equals the plain filter and join" "$EXP_A" "$(json_field run.out count)"
expect_eq "A: the pharma company sees the hospital's filtered set size (a bucket)" "$(bucket "$N_A")" "$(json_field run.out peer_set_size)"
expect_eq "A: the pharma company's own set size" "$N_REG" "$(json_field run.out own_set_size)"
expect_eq "A: the hospital's own (filtered) set size" "$N_A" "$(json_field server.out own_set_size)"
expect_eq "A: the hospital sees the registry's size (a bucket)" "$(bucket "$N_REG")" "$(json_field server.out peer_set_size)"
expect_grep "A: parameters echoed to the pharma company" '"params":{"codes":"E11,E10","min_age":"18","max_age":"65"}' run.out
expect_grep "A: parameters shown to the hospital" '"params":{"codes":"E11,E10","min_age":"18","max_age":"65"}' server.out
expect_grep "A: the hospital is released nothing" '"released":null' server.out
if grep -q '"count":' server.out; then fail "A: the hospital's output holds a count"; else ok "A: the hospital's output holds no count"; fi
no_keys run.out run.err server.out server.err

# ---- 2. E10, ages 18-65: suppressed -----------------------------------------

start_server template.json "$HOSP" --once
run_client template.json "$REG" eligible_patients --param codes=E10 --param min_age=18 --param max_age=65
wait_server
expect_eq "B: run exits 0 (a suppressed result is a success)" 0 "$RUN_RC"
expect_eq "B: serve exits 0" 0 "$SERVER_RC"
expect_grep "B: released as suppressed" '"released":{"suppressed":true' run.out
expect_eq "B: min_count shown" "$MIN" "$(json_field run.out min_count)"
if grep -q '"count":' run.out; then fail "B: a count is shown"; else ok "B: no count shown"; fi
expect_eq "B: the pharma company sees the hospital's filtered set size (a bucket)" "$(bucket "$N_B")" "$(json_field run.out peer_set_size)"
expect_eq "B: the hospital's own (filtered) set size" "$N_B" "$(json_field server.out own_set_size)"
expect_grep "B: the hospital is released nothing" '"released":null' server.out
leaked=""
for f in run.out run.err server.out server.err; do
  if numbers "$f" | grep -qx "$EXP_B"; then leaked="$leaked $f"; fi
done
if [ -z "$leaked" ]; then ok "B: the true count $EXP_B appears in no output"; else fail "B: the true count $EXP_B appears in:$leaked"; fi
no_keys run.out run.err server.out server.err

# ---- 3. a filtered set below limits.min_set_size --------------------------------
# E10 at ages 18-20: a handful of patients. The hospital's node must refuse
# (SIZE) without telling the partner how many there are.

MIN_SET=$(sed -n 's/.*"min_set_size": *\([0-9]*\).*/\1/p' "$PX/template.json")
pharma_eligible_keys "$HOSP" E10 18 20 >c.keys
N_C=$(wc -l <c.keys)
if [ "$N_C" -lt "$MIN_SET" ] && [ "$N_C" -gt 0 ]; then ok "C: $N_C eligible patients, below min_set_size $MIN_SET"; else fail "C: data does not give a small set ($N_C)"; fi
start_server template.json "$HOSP" --once
run_client template.json "$REG" eligible_patients --param codes=E10 --param min_age=18 --param max_age=20
wait_server
expect_eq "C: run exits 4 (refused by the partner)" 4 "$RUN_RC"
expect_grep "C: refused for the set size" '"wire":"SIZE"' run.out
if grep -q '"count":' run.out; then fail "C: a count is shown"; else ok "C: no count shown"; fi
# Every number the pharma company was shown, strings included (minus hex
# ids, addresses and the data summary line).
shown_numbers() {
  grep -v ' rows, .* accepted, ' "$1" | sed -E -e 's/[0-9a-f]{64}//g' -e 's/[0-9]+(\.[0-9]+){3}(:[0-9]+)?//g' |
    grep -oE '[0-9]+' || true
}
leaked=""
for f in run.out run.err; do
  if shown_numbers "$f" | grep -qx "$N_C"; then leaked="$leaked $f"; fi
done
if [ -z "$leaked" ]; then
  ok "C: the hospital's filtered set size ($N_C) is not shown to the pharma company"
else
  fail "C: the hospital's filtered set size ($N_C, below min_set_size) is shown to the pharma company in:$leaked"
  grep -hw "$N_C" run.err | sed 's/^/    /' >&2
fi

# ---- 4. a parameter of the wrong type -----------------------------------------

start_server template.json "$HOSP" --once
run_client template.json "$REG" eligible_patients --param codes=E11,E10 --param min_age=eighteen --param max_age=65
expect_eq "wrong type: run exits 4 (refused by the template)" 4 "$RUN_RC"
expect_grep "wrong type: the message names the parameter" 'min_age' run.err
if grep -q 'eighteen' run.err run.out; then fail "wrong type: the message quotes the value"; else ok "wrong type: the value is not quoted"; fi
if grep -q '"count":' run.out; then fail "wrong type: a count is shown"; else ok "wrong type: no count"; fi
# Refused before any point was sent: the hospital's node saw no completed session.
sleep 0.3
if grep -q '"status":"ok"' server.out; then fail "wrong type: the hospital completed a session"; else ok "wrong type: no session completed"; fi
kill "$SERVER_PID" 2>/dev/null || true
wait_server

# ---- 5. the differencing pair: exact, then with noise -----------------------------
# Ages 18-65 (run A above) and 18-64: with exact counts, the difference is the
# number of matched patients aged 65.

pharma_eligible_keys "$HOSP" E11,E10 18 64 >d.keys
EXP_D=$(comm -12 reg.keys d.keys | wc -l)
start_server template.json "$HOSP" --once
run_client template.json "$REG" eligible_patients --param codes=E11,E10 --param min_age=18 --param max_age=64
wait_server
expect_eq "D: exact, ages 18-64: the plain join's count" "$EXP_D" "$(json_field run.out count)"
DIFF=$(($(json_field a-run.out count) - $(json_field run.out count)))
if [ "$DIFF" -gt 0 ]; then
  ok "D: the exact pair reveals $DIFF matched patients aged 65 ($EXP_A - $EXP_D)"
else
  fail "D: the example data has no matched patient aged 65"
fi

pin_template "$PX/template-dp.json" template-dp.json
start_server template-dp.json "$HOSP"
run_client template-dp.json "$REG" eligible_patients --param codes=E11,E10 --param min_age=18 --param max_age=65
cp run.out e1.out
RC1=$RUN_RC
run_client template-dp.json "$REG" eligible_patients --param codes=E11,E10 --param min_age=18 --param max_age=64
cp run.out e2.out
RC2=$RUN_RC
kill "$SERVER_PID" 2>/dev/null || true
wait_server
expect_eq "E: noisy runs exit 0" "0 0" "$RC1 $RC2"
for f in e1.out e2.out; do
  expect_grep "E: $f is noisy (discrete Laplace, epsilon 0.5, +-6 at 95%)" \
    '"noise":{"mechanism":"discrete_laplace","epsilon":0.5,"scale":2.0,"stddev":[0-9.]*,"error_95":6}' "$f"
done
expect_grep "E: the pair spent 1 of the budget of 5" '"privacy_budget":{"epsilon":5.0,"spent":1.0,"left":4.0}' e2.out
N1=$(json_field e1.out count)
N2=$(json_field e2.out count)
echo "   noisy pair: 18-65 released $N1, 18-64 released $N2 (exact $EXP_A and $EXP_D)"
for n in "$N1" "$N2"; do
  # Within 8 scales (P(|noise| > 16) < 0.0003 for epsilon 0.5) of the exact counts.
  if [ "$n" -ge $((EXP_D - 16)) ] && [ "$n" -le $((EXP_A + 16)) ]; then
    ok "E: noisy count $n is near the exact ones"
  else
    fail "E: noisy count $n is far from $EXP_D..$EXP_A"
  fi
done

finish
