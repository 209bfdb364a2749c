#!/usr/bin/env bash
# End to end: what each side does when something is wrong. Each case: a
# message that says which thing and what to do, a distinct exit code, no
# result released; a serving node keeps serving after a failed session.
source "$CR_E2E_LIB"

make_identities
pin_template "$EX/template.json" template.json
TH=$("$CR" template hash template.json)

# --- below min_count: suppressed on both sides, and a success -------------
sed 's/"min_count": 100/"min_count": 1000000/' template.json >high.json
start_server high.json "$EX/provider.csv" --once
run_client high.json "$EX/consumer.csv" overlap
wait_server
expect_eq "suppressed run exits 0" 0 "$RUN_RC"
expect_eq "suppressed serve exits 0" 0 "$SERVER_RC"
expect_grep "consumer is told it was suppressed" '"suppressed":true' run.out
expect_grep "provider is told it was suppressed" '"suppressed":true' server.out
if grep -q '"count":' run.out server.out; then fail "a suppressed result leaked a count"; else ok "no count when suppressed"; fi

# --- the partners' templates differ ---------------------------------------
sed 's/"min_count": 100/"min_count": 101/' template.json >other.json
TH2=$("$CR" template hash other.json)
start_server template.json "$EX/provider.csv" --once
run_client other.json "$EX/consumer.csv" overlap
wait_server
expect_eq "template mismatch: run exits 4" 4 "$RUN_RC"
expect_eq "template mismatch: serve exits 4" 4 "$SERVER_RC"
expect_grep "run names the provider's hash" "$TH" run.err
expect_grep "run names its own hash" "$TH2" run.err
expect_grep "serve says the templates differ" "templates differ" server.err
# Each hash under the right name, on both sides (issue 16).
expect_grep "run calls the provider's hash the partner's" "the partner loaded $TH" run.err
expect_grep "run calls its own hash its own" "this node (the consumer) loaded $TH2" run.err
expect_grep "serve labels the hashes by role" "the provider loaded $TH, the consumer loaded $TH2" server.err
if grep -q "the partner loaded $TH2" run.err; then fail "run shows its own hash as the partner's"; else ok "run never shows its own hash as the partner's"; fi
expect_grep "nothing released to the consumer" '"released":null' run.out

# --- a query the template does not have: refused before connecting --------
start_server template.json "$EX/provider.csv" --once
run_client template.json "$EX/consumer.csv" no_such_query
expect_eq "unknown query: run exits 4" 4 "$RUN_RC"
expect_grep "unknown query is named, with the template's queries" "overlap_to_consumer" run.err
# The server saw nothing yet; end it with a real session.
run_client template.json "$EX/consumer.csv" overlap
wait_server
expect_eq "server still completes a session after that" 0 "$SERVER_RC"

# --- a role the template does not let run the query -----------------------
set +e
"$CR" run --template template.json --identity provider-id --data "$EX/provider.csv" \
  --peer 127.0.0.1:9 --query overlap --json >role.out 2>role.err
ROLE_RC=$?
set -e
expect_eq "provider running a consumer-only query exits 4" 4 "$ROLE_RC"
expect_grep "the refusal names run_by" "run_by" role.err

# --- a certificate the template does not pin -------------------------------
"$CR" keygen --out stranger-id --name stranger >/dev/null 2>&1
S_FP=$("$CR" fingerprint stranger-id/identity.crt)
"$CR" template pin template.json --consumer "$S_FP" --out stranger.json >/dev/null 2>&1
start_server template.json "$EX/provider.csv" --once
set +e
"$CR" run --template stranger.json --identity stranger-id --data "$EX/consumer.csv" \
  --peer "127.0.0.1:$PORT" --query overlap --json >stranger.out 2>stranger.err
STRANGER_RC=$?
set -e
wait_server
expect_eq "unpinned client certificate: run exits 4" 4 "$STRANGER_RC"
expect_eq "unpinned client certificate: serve exits 4" 4 "$SERVER_RC"
expect_grep "serve names the certificate it saw" "$S_FP" server.err
expect_grep "serve names the certificate it expected" "$C_FP" server.err

# The provider is not who the consumer's template pins.
"$CR" template pin template.json --provider "$S_FP" --out wrongprov.json >/dev/null 2>&1
start_server template.json "$EX/provider.csv" --once
run_client wrongprov.json "$EX/consumer.csv" overlap
wait_server
expect_eq "unpinned server certificate: run exits 4" 4 "$RUN_RC"
expect_grep "run names the certificate it saw" "$P_FP" run.err
expect_grep "run names the certificate it expected" "$S_FP" run.err

# --- an identity that is no party of the template ---------------------------
set +e
"$CR" run --template template.json --identity stranger-id --data "$EX/consumer.csv" \
  --peer 127.0.0.1:9 --query overlap >np.out 2>np.err
NP_RC=$?
set -e
expect_eq "identity not in the template exits 2" 2 "$NP_RC"
expect_grep "says the identity is not a party" "not a party" np.err

# --- bad data ----------------------------------------------------------------
printf 'mail,policy_type\na@b.example,home\n' >nocol.csv
set +e
"$CR" run --template template.json --identity consumer-id --data nocol.csv \
  --peer 127.0.0.1:9 --query overlap >bad.out 2>bad.err
BAD_RC=$?
set -e
expect_eq "missing column exits 3" 3 "$BAD_RC"
expect_grep "the missing column is named" "email" bad.err
expect_grep "the file is named" "nocol.csv" bad.err

# --- nobody listening ----------------------------------------------------------
set +e
"$CR" run --template template.json --identity consumer-id --data "$EX/consumer.csv" \
  --peer 127.0.0.1:1 --query overlap >nl.out 2>nl.err
NL_RC=$?
set -e
expect_eq "nothing listening exits 5" 5 "$NL_RC"

# --- a long-running server survives a failed session --------------------------
start_server template.json "$EX/provider.csv"
run_client other.json "$EX/consumer.csv" overlap
expect_eq "mismatched run against a long-running server exits 4" 4 "$RUN_RC"
run_client template.json "$EX/consumer.csv" overlap
expect_eq "the next run against the same server succeeds" 0 "$RUN_RC"
if kill -0 "$SERVER_PID" 2>/dev/null; then ok "server still running"; else fail "server died"; fi
kill -TERM "$SERVER_PID"
wait_server
expect_eq "server exits 0 on SIGTERM" 0 "$SERVER_RC"

finish
