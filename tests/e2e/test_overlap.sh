#!/usr/bin/env bash
# End to end on the bundled example data: the overlap count both nodes print
# equals a plain join of the normalized e-mails, computed here with awk.
source "$CR_E2E_LIB"

make_identities
pin_template "$EX/template.json" template.json

EXPECTED=$(comm -12 <(normalized_emails "$EX/provider.csv") <(normalized_emails "$EX/consumer.csv") | wc -l)
N_P=$(normalized_emails "$EX/provider.csv" | wc -l)
N_C=$(normalized_emails "$EX/consumer.csv" | wc -l)
echo "plain join: $EXPECTED of $N_P provider and $N_C consumer keys"

start_server template.json "$EX/provider.csv" --once
run_client template.json "$EX/consumer.csv" overlap
wait_server

expect_eq "run exits 0" 0 "$RUN_RC"
expect_eq "serve --once exits 0" 0 "$SERVER_RC"
expect_eq "consumer's count equals the plain join" "$EXPECTED" "$(json_field run.out count)"
expect_eq "provider's count equals the plain join" "$EXPECTED" "$(json_field server.out count)"
expect_eq "consumer's own set size" "$N_C" "$(json_field run.out own_set_size)"
expect_eq "consumer sees the provider's set size (a bucket)" "$(bucket "$N_P")" "$(json_field run.out peer_set_size)"
expect_eq "provider's own set size" "$N_P" "$(json_field server.out own_set_size)"
expect_eq "both report the same session id" "$(json_field run.out session_id)" "$(json_field server.out session_id)"
expect_eq "role reported by run" consumer "$(json_field run.out role)"
expect_eq "role reported by serve" provider "$(json_field server.out role)"

# Nothing either node printed holds a match key.
for f in run.out run.err server.out server.err; do
  if normalized_emails "$EX/consumer.csv" | head -200 | grep -qF -f - "$f"; then
    fail "$f contains a match key"
  else
    ok "$f holds no match key"
  fi
done

# The provider-only-to-consumer query: the provider is told nothing.
start_server template.json "$EX/provider.csv" --once
run_client template.json "$EX/consumer.csv" overlap_to_consumer
wait_server
expect_eq "run exits 0 (overlap_to_consumer)" 0 "$RUN_RC"
expect_eq "consumer's count (overlap_to_consumer)" "$EXPECTED" "$(json_field run.out count)"
expect_grep "provider is released nothing" '"released":null' server.out
if grep -q '"count":' server.out; then fail "provider output holds a count"; else ok "provider output holds no count"; fi

# Human output names the overlap.
start_server template.json "$EX/provider.csv" --once
set +e
"$CR" run --template template.json --identity consumer-id --data "$EX/consumer.csv" \
  --peer "127.0.0.1:$PORT" --query overlap >human.out 2>human.err
set -e
wait_server
expect_grep "human output shows the overlap" "overlap: *$EXPECTED" human.out

# Progress: a line per phase on stderr (not a terminal), never on stdout,
# nothing with --quiet.
expect_grep "progress names the set exchange" "exchanging sets [0-9.]*[kMG]*/[0-9.]*[kMG]* elements, [0-9.]*[kMG]*/s.* (our points" human.err
# (run.out's --json names the phases, "phases": {"exchanging sets": 1.2, ...}:
# a progress line is the phase and its counts.)
if grep -q "exchanging sets [0-9]" human.out run.out; then fail "progress leaked into stdout"; else ok "no progress on stdout"; fi
start_server template.json "$EX/provider.csv" --once
run_client template.json "$EX/consumer.csv" overlap --quiet
wait_server
if grep -q "exchanging sets" run.err; then fail "--quiet still shows progress"; else ok "--quiet shows no progress"; fi
expect_eq "--quiet run still answers" "$EXPECTED" "$(json_field run.out count)"

finish
