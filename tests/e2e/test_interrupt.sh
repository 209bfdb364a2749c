#!/usr/bin/env bash
# End to end: a run stopped by a signal, and a members release whose write
# fails half way.
#
# 1. SIGINT and SIGTERM while `run` waits on a partner (a hostile responder
#    that says Hello and goes silent): run exits 128 + the signal, the
#    partner is sent Error ABORTED, nothing is printed as a result, and the
#    run's audit log ends with session_aborted and a signed checkpoint and
#    verifies.
# 2. A members query whose rows file cannot be written whole (the file size
#    limit, RLIMIT_FSIZE, makes write(2) fail with EFBIG mid-file): run
#    fails with the real error and exit 7 (local storage), no rows file and
#    no temporary file remain,
#    and the audit log records result_withheld and the receipt under a
#    checkpoint instead of a release.
set -euo pipefail
source "$CR_E2E_LIB"

HP=${HOSTILE_PEER:-$(dirname "$CLEANROOM")/tests/hostile/hostile_peer}
[ -x "$HP" ] || { echo "FAIL: hostile_peer not found at $HP" >&2; exit 1; }

# Small sets, and room for many runs of the query.
small_sets_fixture

interrupt_case() {
  local sig=$1 want=$2
  local audit="run-$sig.jsonl"
  # Made here: the background job opens its own redirection only once it
  # runs, and the sed below must not find the file missing (set -e).
  : >"hp_$sig.out"
  "$HP" --case silent --hold-ms 20000 --template template.json --identity provider-id \
    --role provider --data prov.csv --listen 127.0.0.1:0 --timeout-ms 20000 >"hp_$sig.out" 2>"hp_$sig.err" &
  local hpid=$! rport=""
  for _ in $(seq 1 200); do
    rport=$(sed -n 's/^listening: .*:\([0-9][0-9]*\)$/\1/p' "hp_$sig.out")
    [ -n "$rport" ] && break
    sleep 0.05
  done
  "$CR" run --template template.json --identity consumer-id --data cons.csv \
    --peer "127.0.0.1:$rport" --query overlap --json --timeout 30 --audit "$audit" \
    >"run_$sig.out" 2>"run_$sig.err" &
  local rpid=$!
  # Wait until the run is in its session (its session_started is on disk).
  for _ in $(seq 1 200); do
    grep -q '"event":"session_started"' "$audit" 2>/dev/null && break
    sleep 0.05
  done
  expect_grep "$sig: the run is in its session" '"event":"session_started"' "$audit"
  kill "-$sig" "$rpid"
  set +e
  wait "$rpid"
  local rc=$?
  set -e
  kill "$hpid" 2>/dev/null || true
  wait "$hpid" 2>/dev/null || true
  expect_eq "$sig: run exits $want" "$want" "$rc"
  expect_grep "$sig: the partner was sent ABORTED" "^error_name: ABORTED\$" "hp_$sig.out"
  if grep -q '"count":' "run_$sig.out"; then fail "$sig: a count was printed"; else ok "$sig: no result"; fi
  expect_grep "$sig: the abort is recorded" '"event":"session_aborted".*"wire_error":"ABORTED"' "$audit"
  local last
  last=$(tail -1 "$audit")
  case "$last" in
    *'"event":"checkpoint"'*) ok "$sig: the log ends with a signed checkpoint" ;;
    *) fail "$sig: the log ends with: $last" ;;
  esac
  if "$CR" audit verify "$audit" >/dev/null 2>&1; then ok "$sig: the log verifies"; else
    fail "$sig: the log does not verify"
  fi
}

echo "--- signals"
interrupt_case INT 130
interrupt_case TERM 143

echo "--- SIGHUP while serve loads its data"
# A reload (systemctl reload) that comes while the node still loads its data
# must not end it (the default action of SIGHUP would: exit 129, and systemd
# would not restart it). It is looked at once the node listens.
awk 'BEGIN { print "email,segment"; for (i = 0; i < 300000; i++) printf "big%d@example.com,s%d\n", i, i % 3 }' >big.csv
: >hup.err
"$CR" serve --template template.json --identity provider-id --data big.csv --listen 127.0.0.1:0 \
  --audit hup.jsonl >hup.out 2>hup.err &
HUP_PID=$!
for _ in $(seq 1 400); do
  grep -q "loading the data" hup.err && break
  sleep 0.01
done
kill -HUP "$HUP_PID" 2>/dev/null || true
HUP_PORT=""
if wait_listening "$HUP_PID" hup.err 2>/dev/null; then HUP_PORT=$PORT; fi
if [ -n "$HUP_PORT" ]; then ok "SIGHUP while loading: the node goes on to listen"; else
  fail "SIGHUP while loading ended the node"
  cat hup.err >&2
fi
if grep -q "listening on" hup.err && ! grep -q "SIGHUP" hup.err; then
  echo "note: the SIGHUP came only after the load (a fast machine)"
fi
set +e
"$CR" ping --template template.json --identity consumer-id --peer "127.0.0.1:$HUP_PORT" >hup-ping.out 2>&1
HUP_PING=$?
kill -TERM "$HUP_PID" 2>/dev/null
wait "$HUP_PID"
HUP_RC=$?
set -e
expect_eq "SIGHUP while loading: the node answers a ping" 0 "$HUP_PING"
expect_eq "SIGHUP while loading: SIGTERM later, exit 0" 0 "$HUP_RC"

echo "--- members write fails half way"
RS="$CR_SOURCE_DIR/examples/rideshare"
"$CR" keygen --out rs-prov --name "RS provider" >/dev/null 2>&1
"$CR" keygen --out rs-cons --name "RS consumer" >/dev/null 2>&1
"$CR" template pin "$RS/template.json" --provider rs-prov/identity.crt \
  --consumer rs-cons/identity.crt --out rs.json >/dev/null 2>&1
RS_QUERY=$(sed -n 's/.*"\([a-z_]*\)": *{"kind": *"members".*/\1/p' "$RS/template.json" | head -1)
[ -n "$RS_QUERY" ] || RS_QUERY=season_ticket_riders
"$CR" serve --template rs.json --identity rs-prov --data "$RS/team.csv" --listen 127.0.0.1:0 \
  --once --quiet >rs-serve.out 2>rs-serve.err &
RS_PID=$!
wait_listening "$RS_PID" rs-serve.err
RS_PORT=$PORT
# The audit log lives elsewhere and is written before the limit applies to
# it only if it stays under it: give the run a fresh log and a limit of
# 10 KiB, well under the rows file (about 20 KiB) and over the log (about 5 KiB).
set +e
(
  trap '' XFSZ
  ulimit -f 10
  exec "$CR" run --template rs.json --identity rs-cons --data "$RS/app.csv" \
    --peer "127.0.0.1:$RS_PORT" --query "$RS_QUERY" --out riders.csv --json --quiet \
    --audit rs-run.jsonl >rs-run.out 2>rs-run.err
)
RS_RC=$?
set -e
wait "$RS_PID" || true
expect_eq "members: run fails with a local storage error (7)" 7 "$RS_RC"
expect_grep "members: the real error is named" "File too large" rs-run.err
if grep -q "Success" rs-run.err; then fail "members: the error says Success"; else ok "members: no \"Success\" in the error"; fi
[ ! -e riders.csv ] && ok "members: no rows file" || fail "members: a rows file was left"
if ls riders.csv.* >/dev/null 2>&1; then fail "members: a temporary file was left"; else ok "members: no temporary file"; fi
expect_grep "members: the withheld result is recorded" '"event":"result_withheld"' rs-run.jsonl
if grep -q '"event":"result_released"' rs-run.jsonl; then fail "members: a release was recorded"; else ok "members: no release recorded"; fi
expect_grep "members: the receipt is kept" '"event":"receipt"' rs-run.jsonl
case "$(tail -1 rs-run.jsonl)" in
  *'"event":"checkpoint"'*) ok "members: the log ends with a signed checkpoint" ;;
  *) fail "members: the log does not end with a checkpoint" ;;
esac
if "$CR" audit verify rs-run.jsonl >/dev/null 2>&1; then ok "members: the log verifies"; else fail "members: the log does not verify"; fi

echo "--- a serving node whose audit log cannot take the session"
# serve under a file size limit (exact bytes: RLIMIT_FSIZE, SIGXFSZ
# ignored) that its start fits and a session's first line does not. Its own
# storage failure is not the contract's refusal: the partner is told
# INTERNAL (run exits 5, "retry later" may help; not 4, "retrying will not
# help"), serve --once exits 7 (storage), the node says why, and nothing is
# released.
fsize_exec() { # LIMIT CMD...
  python3 -c 'import os, resource, signal, sys
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
n = int(sys.argv[1])
resource.setrlimit(resource.RLIMIT_FSIZE, (n, n))
os.execvp(sys.argv[2], sys.argv[2:])' "$@"
}
# The size of a start, measured on a node of its own.
start_server template.json prov.csv --once --audit measure.jsonl
kill "$SERVER_PID"
wait_server
START_BYTES=$(wc -c <measure.jsonl)
: >server.out
: >server.err
fsize_exec $((START_BYTES + 200)) "$CR" serve --template template.json --identity provider-id \
  --data prov.csv --listen 127.0.0.1:0 --json --once --audit full.jsonl >server.out 2>server.err &
SERVER_PID=$!
wait_listening "$SERVER_PID" server.err
run_client template.json cons.csv overlap
wait_server
expect_eq "log full: run exits 5 (the partner failed), not 4 (refused)" 5 "$RUN_RC"
expect_grep "log full: run is told INTERNAL" "(INTERNAL)" run.err
if grep -q '"count":' run.out; then fail "log full: run printed a count"; else ok "log full: no result"; fi
expect_eq "log full: serve --once exits 7 (storage)" 7 "$SERVER_RC"
expect_grep "log full: serve says it cannot record the session" "cannot record the session in the audit log" server.err
if grep -q '"event":"session_started"\|"event":"result_released"' full.jsonl; then
  fail "log full: a session line got in"
else
  ok "log full: no session or release recorded"
fi
if "$CR" audit verify full.jsonl >/dev/null 2>&1; then ok "log full: what it holds verifies"; else fail "log full: the log does not verify"; fi
# A start on that full log: exit 7, the write error said once, whole.
set +e
fsize_exec "$(wc -c <full.jsonl)" "$CR" serve --template template.json --identity provider-id \
  --data prov.csv --listen 127.0.0.1:0 --audit full.jsonl >restart.out 2>restart.err
RESTART_RC=$?
set -e
expect_eq "log full: a start that cannot record itself exits 7" 7 "$RESTART_RC"
expect_grep "log full: the start's error names the event and the cause" \
  'cannot write the audit log: full.jsonl: cannot append event node_started: ' restart.err
# The cause is the file size limit, not the disk: no message may claim the disk is full.
if grep -q 'No space left' server.err restart.err; then
  fail "log full: an error blames the disk for a file size limit"
else
  ok "log full: no error blames the disk"
fi

finish
