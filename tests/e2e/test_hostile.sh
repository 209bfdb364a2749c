#!/usr/bin/env bash
# End to end: hostile peers. tests/hostile/hostile_peer completes TLS with a
# pinned certificate (or does not) and then misbehaves in one scripted way.
#
# Part 1: ONE long-running `cleanroom serve` (no --once) faces every case as
# a hostile runner. After each: the node logged a clear error for that
# connection, released nothing for it (no "count" in its JSON line), is still
# alive; after each category a normal `cleanroom run` completes against it
# with the right count.
# Part 2: the busy refusal (--max-sessions) of a second server.
# Part 3: a hostile responder (hostile_peer listens) faces `cleanroom run`:
# the documented exit code (4 refusals, 5 network/protocol/timeout), a
# message, and no result printed.
# Parts 2 and 3 run in the background while part 1 runs: they share no
# server and no output file with it.
# Both parts include forged results (issue 14): the node's own points sent
# back as the peer's set (reflect), its digests echoed (echo_digests), the
# true matches repeated (repeat_digests); the node refuses with PROTOCOL
# naming the rule, releases nothing, and its audit log records the abort.
# Finally the server stops on SIGTERM with exit 0 and no sanitizer report.
source "$CR_E2E_LIB"

HP=${HOSTILE_PEER:-$(dirname "$CLEANROOM")/tests/hostile/hostile_peer}
if [ ! -x "$HP" ]; then
  echo "FAIL: hostile_peer not found at $HP (build target hostile_peer, or set HOSTILE_PEER)" >&2
  exit 1
fi
T_START=$(date +%s)

# Room for many runs of the query, and small sets (lib.sh
# hostile_sets_fixture): 60 provider keys, 40 consumer keys, 24 in both,
# min_count 10, both announce 64 under a small size ladder.
hostile_sets_fixture
# The forged-result cases' own sets (issue 14): disjoint from the node's
# (true overlap 0) for reflect and echo_digests, 5 in common (below
# min_count 10) for repeat_digests, so any release would be visibly wrong.
# reflect sends the node's points under its own Hello, so the disjoint sets
# have the node's size (60 against serve, 40 against run: the same bucket
# in v3, the same exact size before it).
{ echo "email"; for i in $(seq 1000 1059); do echo "user$i@example.com"; done; } >cons_disjoint.csv
{ echo "email"; for i in $(seq 55 59) $(seq 1000 1034); do echo "user$i@example.com"; done; } >cons_5.csv
{ echo "email,segment"; for i in $(seq 2000 2039); do echo "user$i@example.com,s$((i % 3))"; done; } >prov_disjoint.csv
{ echo "email,segment"; for i in $(seq 36 40) $(seq 2000 2054); do echo "user$i@example.com,s$((i % 3))"; done; } >prov_5.csv

# --- part 2: busy, a second server (in busy/, beside the others) ----------------------
busy_part() {
  SERVER_PID=""
  trap 'if [ -n "$SERVER_PID" ]; then kill "$SERVER_PID" 2>/dev/null || true; fi' EXIT
  trap 'exit 143' TERM
  mkdir busy
  cd busy
  ln -s ../provider-id ../consumer-id ../template.json ../prov.csv ../cons.csv .
  echo "--- busy"
  start_server template.json prov.csv --max-sessions 1 --timeout 20 --audit busy-audit.jsonl
  BUSY_PID=$SERVER_PID
  "$HP" --case silent --hold-ms 8000 --template template.json --identity consumer-id \
    --data cons.csv --peer "127.0.0.1:$PORT" >hold.out 2>hold.err &
  HOLD_PID=$!
  for _ in $(seq 1 200); do
    grep -q '^ready:' hold.out && break
    sleep 0.05
  done
  expect_grep "busy: a session holds the only slot" '^ready:' hold.out
  run_client template.json cons.csv overlap
  expect_eq "busy: run exits 6 (busy, retry later; not a refusal)" 6 "$RUN_RC"
  expect_grep "busy: run says busy, retry later" "busy, retry later" run.err
  # The partner learns the node is at its cap, not how many sessions run (on
  # a node of several partners, the others' activity) nor the cap.
  expect_grep "busy: run is told the node is at its cap" "serving as many sessions as it takes" run.err
  if grep -q 'in progress\|max_sessions' run.err; then
    fail "busy: run learns the node's session count or cap: $(cat run.err)"
  else
    ok "busy: run learns no session count or cap"
  fi
  if grep -q '"count":' run.out; then fail "busy: run printed a count"; else ok "busy: no result"; fi
  expect_grep "busy: the server logged the refusal" "failed: busy, retry later: 1 session(s) in progress" server.err
  kill "$HOLD_PID" 2>/dev/null || true
  wait "$HOLD_PID" 2>/dev/null || true
  for _ in $(seq 1 100); do
    [ "$(grep -c '"peer"' server.out)" -ge 2 ] && break
    sleep 0.05
  done
  run_client template.json cons.csv overlap
  expect_eq "busy: once the slot is free a run completes" 0 "$RUN_RC"
  expect_eq "busy: its count" "$EXPECTED" "$(json_field run.out count)"
  kill -TERM "$BUSY_PID"
  wait_server
  expect_eq "busy server exits 0 on SIGTERM" 0 "$SERVER_RC"
}

# --- part 3: hostile responders against run (each its own listener) ----------------------
# responder_case CASE EXIT_CODE RUN_MESSAGE [hostile_peer args...]
# run waits 2 s where waiting is the case (the message names 2000 ms), 10 s
# for the others, so that a busy machine cannot turn them into timeouts.
# hostile_peer is stopped after 60 s: one whose run never connected would
# wait for it forever.
responder_case() {
  local name=$1 want_rc=$2 want=$3 id=provider-id wait_s=10
  shift 3
  if [ "$name" = unpinned_cert ]; then id=stranger-id; fi
  case "$name" in tcp_silent | slow_handshake | silent | slow) wait_s=2 ;; esac
  : >"hr_$name.out"
  timeout 60 "$HP" --case "$name" --template template.json --identity "$id" --role provider \
    --data prov.csv --listen 127.0.0.1:0 --timeout-ms 10000 "$@" >"hr_$name.out" 2>"hr_$name.err" &
  local hpid=$! rport=""
  for _ in $(seq 1 200); do
    rport=$(sed -n 's/^listening: .*:\([0-9][0-9]*\)$/\1/p' "hr_$name.out")
    [ -n "$rport" ] && break
    sleep 0.05
  done
  set +e
  "$CR" run --template template.json --identity consumer-id --data cons.csv \
    --peer "127.0.0.1:$rport" --query overlap --json --timeout "$wait_s" >"run_$name.out" 2>"run_$name.err"
  local rc=$?
  wait "$hpid"
  set -e
  expect_eq "responder $name: run exits $want_rc" "$want_rc" "$rc"
  expect_grep "responder $name: run says why" "$want" "run_$name.err"
  if grep -q '"count":' "run_$name.out"; then
    fail "responder $name: run printed a count"
  else
    ok "responder $name: no result printed"
  fi
}

# Forged results against run: exit 5, the rule named, nothing released, the
# abort and the rule in run's audit log.
RUN_AUDIT=consumer-id/audit.jsonl
forged_responder_case() {
  local name=$1 data=$2 rule=$3 want=$4
  responder_case "$name" 5 "$want" --data "$data"
  local addr
  addr=$(sed -n 's/^listening: //p' "hr_$name.out")
  expect_grep "responder $name: released null" '"released":null' "run_$name.out"
  expect_grep "responder $name: the hostile responder was told the rule" \
    "protocol violation: $rule\$" "hr_$name.out"
  grep -F "\"address\":\"$addr\"" "$RUN_AUDIT" | grep -F '"event":"session_aborted"' >"raudit_$name.txt" || true
  expect_grep "responder $name: run's audit log records the abort and the rule" \
    "\"error\":\"EPROTO\",\"wire_error\":\"PROTOCOL\",\"from_peer\":false,\"reason\":\"[^\"]*$rule" "raudit_$name.txt"
}
responders() {
  echo "--- hostile responders"
  responder_case plain_tcp 5 "does not speak TLS 1.3"
  responder_case tcp_silent 5 "did not complete within 2000 ms"
  responder_case slow_handshake 5 "did not complete within 2000 ms" --delay-ms 50
  responder_case unpinned_cert 4 "not the one the template pins for the provider"
  responder_case truncated 5 "closed the connection in the middle of a frame"
  responder_case zero_length 5 "announced a frame of 0 bytes"
  responder_case over_max 5 "announced a frame of 16777217 bytes"
  responder_case not_a_frame 5 "not a valid frame"
  responder_case frame_before_hello 5 "sent EndOfSet before Hello"
  responder_case second_hello 5 "sent a second Hello"
  responder_case digests_before_eos 5 "sent Digests before its EndOfSet"
  responder_case wrong_seq 5 "sequence number 7, expected 0"
  responder_case repeated_seq 5 "sequence number 0, expected 1"
  responder_case more_points 5 "more points than the 64 it announced" # 60 keys, bucket 64 (v3)
  responder_case fewer_points 5 "announced 64 points, sent 63 and counted 64"
  responder_case noncanonical_point 5 "is not a valid ristretto255 element"
  responder_case identity_point 5 "is not a valid ristretto255 element"
  responder_case huge_set_size 4 "more than this engine supports"
  responder_case digests_wrong_length 5 "not a positive multiple of the"
  responder_case digests_unsorted 5 "returned digests out of order"
  responder_case bad_finish 5 "receipt signature does not verify"
  responder_case no_finish 5 "closed the connection before the session completed"
  responder_case error_frame 5 "aborted the session (PROTOCOL)"
  responder_case busy_error 6 "busy, retry later"
  responder_case silent 5 "sent nothing for 2000 ms"
  responder_case slow 5 "sent no complete frame for 2000 ms" --delay-ms 50
  responder_case close_mid_stream 5 "closed the connection\|was lost"
  responder_case reset_mid_stream 5 "closed the connection\|was lost"
  forged_responder_case reflect prov_disjoint.csv "a point equals one of ours (reflection)" \
    "the partner broke a rule: a point equals one of ours (reflection); nothing is released"
  forged_responder_case echo_digests prov_disjoint.csv "the returned digests are the ones we sent (echo)" \
    "the partner broke a rule: the returned digests are the ones we sent (echo); nothing is released"
  forged_responder_case repeat_digests prov_5.csv "returned digests are not strictly increasing" \
    "returned digests out of order: returned digests are not strictly increasing (Digests 0)"
  expect_grep "responder repeat_digests: the peer repeated the 5 true matches" "5 true match(es) repeated" hr_repeat_digests.out
}

# Parts 2 and 3 share nothing with part 1 but the identities and files it
# only reads (and the consumer's audit log, which locks each append): they
# run in the background while part 1 goes on, their results shown after it.
parts_2_3() {
  (busy_part)
  responders
}
in_background parts_2_3 parts_2_3

# --- part 1: one long-running server, hostile runners --------------------------
start_server template.json prov.csv --timeout 2
echo "server pid $SERVER_PID on port $PORT"

NORMAL_RUNS=0
normal_run() {
  run_client template.json cons.csv overlap
  NORMAL_RUNS=$((NORMAL_RUNS + 1))
  expect_eq "normal run after $1: exit 0" 0 "$RUN_RC"
  expect_eq "normal run after $1: count" "$EXPECTED" "$(json_field run.out count)"
  if [ "$RUN_RC" -ne 0 ]; then sed 's/^/    /' run.err >&2; fi
}

echo "--- transport"
runner_case plain_tcp "does not speak TLS 1.3" -
runner_case tcp_silent "did not complete within 2000 ms" -
runner_case no_client_cert "presented no certificate" -
runner_case unpinned_cert "not the one the template pins for the consumer" -
runner_case slow_handshake "did not complete within 2000 ms" - --delay-ms 50
normal_run transport

echo "--- framing"
runner_case truncated "closed the connection in the middle of a frame" -
runner_case zero_length "announced a frame of 0 bytes" PROTOCOL
runner_case over_max "announced a frame of 16777217 bytes" PROTOCOL
runner_case not_a_frame "not a valid frame" PROTOCOL
normal_run framing

echo "--- order"
runner_case frame_before_hello "sent EndOfSet before Hello" PROTOCOL
runner_case second_hello "sent a second Hello" PROTOCOL
runner_case digests_before_eos "sent Digests before its EndOfSet" PROTOCOL
runner_case wrong_seq "sequence number 7, expected 0" PROTOCOL
runner_case repeated_seq "sequence number 0, expected 1" PROTOCOL
normal_run order

echo "--- content"
runner_case more_points "more points than the 64 it announced" PROTOCOL # 40 keys, bucket 64 (v3)
runner_case fewer_points "announced 64 points, sent 63 and counted 64" PROTOCOL
runner_case noncanonical_point "point 0 of the partner's Batch 0 is not a valid" PROTOCOL
runner_case identity_point "point 0 of the partner's Batch 0 is not a valid" PROTOCOL
runner_case huge_set_size "more than this engine supports" SIZE
runner_case digests_wrong_length "not a positive multiple of the" PROTOCOL
runner_case digests_unsorted "returned digests out of order" PROTOCOL
normal_run content

echo "--- endings"
runner_case bad_finish "receipt signature does not verify" -
runner_case no_finish "closed the connection before the session completed" -
runner_case error_frame "aborted the session (PROTOCOL): hostile peer aborts" -
if grep -q $'\x1b' server.err server.out; then
  fail "error_frame: the peer's control characters reached the log"
else
  ok "error_frame: control characters from the peer were not logged"
fi
runner_case busy_error "refused the session (BUSY)" -
normal_run endings

echo "--- peer text"
# A query name with terminal escapes, and one that is not UTF-8: the node
# refuses both and never writes the raw bytes anywhere.
SERVER_AUDIT=provider-id/audit.jsonl
ESCQ=$'\x1b]0;pwned\x07\x1b[2J'
runner_case silent "is not in the template" UNKNOWN_QUERY --wire-query "$ESCQ"
if grep -q $'\x1b\|\x07' server.err server.out "$SERVER_AUDIT"; then
  fail "peer text: the query's control characters reached the output or the audit log"
else
  ok "peer text: control characters in a query name were escaped everywhere"
fi
expect_grep "peer text: the escaped name is shown" 'query "\\x1b\]0;pwned\\x07' server.err
runner_case silent "is not in the template" UNKNOWN_QUERY --wire-query $'bad\xff\xfename'
BADLINE=$(grep -F '"peer":"'"$(sed -n 's/^local: //p' hp_silent.out)"'"' server.out || true)
case "$BADLINE" in
  *'"message":"'*bad*name*) ok "peer text: invalid UTF-8 keeps the JSON error message" ;;
  *) fail "peer text: the JSON error lost its message: $BADLINE" ;;
esac
if iconv -f UTF-8 -t UTF-8 server.out >/dev/null 2>&1 && iconv -f UTF-8 -t UTF-8 "$SERVER_AUDIT" >/dev/null 2>&1; then
  ok "peer text: output and audit log stay valid UTF-8"
else
  fail "peer text: invalid UTF-8 reached the output or the audit log"
fi
expect_grep "peer text: the audit entry keeps its reason" '"reason":"query \\"bad.*name\\" is not in the template"' "$SERVER_AUDIT"
normal_run "peer text"

echo "--- forged results"
# forged_runner_case CASE DATA RULE SERVER_MESSAGE: a hostile runner that
# sends back the node's own points or digests, or repeats its true matches.
# On top of runner_case: the rule reaches the peer in the Error frame's
# fixed words, and the node's audit log records session_aborted with it.
forged_runner_case() {
  local name=$1 data=$2 rule=$3 want=$4
  runner_case "$name" "$want" PROTOCOL --data "$data"
  local addr
  addr=$(sed -n 's/^local: //p' "hp_$name.out")
  expect_grep "$name: the peer was told the rule" "protocol violation: $rule\$" "hp_$name.out"
  grep -F "\"address\":\"$addr\"" "$SERVER_AUDIT" | grep -F '"event":"session_aborted"' >"audit_$name.txt" || true
  expect_grep "$name: the audit log records the abort and the rule" \
    "\"error\":\"EPROTO\",\"wire_error\":\"PROTOCOL\",\"from_peer\":false,\"reason\":\"[^\"]*$rule" "audit_$name.txt"
}
forged_runner_case reflect cons_disjoint.csv "a point equals one of ours (reflection)" \
  "the partner broke a rule: a point equals one of ours (reflection); nothing is released"
forged_runner_case echo_digests cons_disjoint.csv "the returned digests are the ones we sent (echo)" \
  "the partner broke a rule: the returned digests are the ones we sent (echo); nothing is released"
forged_runner_case repeat_digests cons_5.csv "returned digests are not strictly increasing" \
  "returned digests out of order: returned digests are not strictly increasing (Digests 0)"
expect_grep "repeat_digests: the peer repeated the 5 true matches" "5 true match(es) repeated" hp_repeat_digests.out
normal_run "forged results"

echo "--- liveness"
runner_case silent "sent nothing for 2000 ms" TIMEOUT
runner_case slow "sent no complete frame for 2000 ms" TIMEOUT --delay-ms 50
runner_case close_mid_stream "closed the connection\|was lost" -
runner_case reset_mid_stream "closed the connection\|was lost" -
normal_run liveness

# Every connection above got exactly one report, and only the normal runs
# released anything.
expect_eq "only the normal runs released a count" "$NORMAL_RUNS" "$(grep -c '"count":' server.out)"

collect_background

# --- the long-running server, after all that ------------------------------------------
normal_run "everything"
server_alive "the end"
kill -TERM "$SERVER_PID"
wait_server
expect_eq "server exits 0 on SIGTERM" 0 "$SERVER_RC"
if grep -q "Sanitizer" server.err; then
  fail "the server reported a sanitizer error or a leak"
  grep -A20 "Sanitizer" server.err | sed 's/^/    /' >&2
else
  ok "no sanitizer report (leaks included) from the server"
fi
echo "runtime: $(($(date +%s) - T_START)) s"

finish
