#!/usr/bin/env bash
# cleanroom ping: the diagnosis for a partner that answers, nothing
# listening, a wrong certificate (either side's), a different template, a
# name that does not resolve and a port that never speaks TLS; the serving
# node answers without loading anything and records the ping; the pinging
# node records it too. Also serve/run --quiet.
source "$CR_E2E_LIB"

# The serving node's record of a ping (src/cli/node_audit.c, cmd_node.c
# on_session) is checked too; until that is fixed these checks report
# KNOWN ISSUE instead of failing. Set PING_AUDIT_STRICT=1 to make them count.
PING_AUDIT_STRICT=${PING_AUDIT_STRICT:-1}
known() {
  if [ "$PING_AUDIT_STRICT" = 1 ]; then fail "$*"; else echo "KNOWN ISSUE: $*"; fi
}

make_identities
O_FP=$("$CR" keygen --out other-id --name other 2>/dev/null)
pin_template "$EX/template.json" template.json
T_HASH=$("$CR" template hash template.json)

# ping [flags...]: the consumer pings 127.0.0.1:$PORT --json; exit code in
# PING_RC, stdout in ping.out, stderr in ping.err.
ping_peer() {
  set +e
  "$CR" ping --template template.json --identity consumer-id --peer "127.0.0.1:$PORT" --json \
    "$@" >ping.out 2>ping.err
  PING_RC=$?
  set -e
}
# jget KEY: a scalar from ping.out (crude; keys are unique enough here).
jget() { json_field ping.out "$1"; }

# ---- the partner answers ---------------------------------------------------
start_server template.json "$EX/provider.csv"
ping_peer
expect_eq "ping exits 0 when all agrees" 0 "$PING_RC"
expect_grep "reachable" '"reachable":true' ping.out
expect_grep "TLS ok" '"ok":true' ping.out
expect_grep "expected certificate is the provider's" "\"expected_cert_sha256\":\"$P_FP\"" ping.out
expect_grep "seen certificate is the provider's" "\"seen_cert_sha256\":\"$P_FP\"" ping.out
expect_grep "templates agree" '"agree":true' ping.out
expect_grep "our template hash" "\"ours\":\"$T_HASH\"" ping.out
expect_grep "their template hash" "\"theirs\":\"$T_HASH\"" ping.out
expect_grep "protocol versions" '"protocol_version":{"ours":5,"theirs":5}' ping.out
expect_grep "peer software" '"peer_software":"cleanroom/' ping.out
RTT=$(jget rtt_ms)
if [[ "$RTT" =~ ^[0-9.]+$ ]]; then ok "rtt_ms is a number ($RTT)"; else fail "rtt_ms: '$RTT'"; fi
if grep -q '"problem"\|"error"' ping.out; then fail "a good ping reports a problem"; else ok "no problem reported"; fi
if [ -s ping.err ]; then fail "--json ping wrote to stderr: $(cat ping.err)"; else ok "--json ping keeps stderr quiet"; fi

# Human output: one line per check, and OK.
set +e
"$CR" ping --template template.json --identity consumer-id --peer "127.0.0.1:$PORT" >human.out 2>human.err
HUMAN_RC=$?
set -e
expect_eq "human ping exits 0" 0 "$HUMAN_RC"
expect_grep "human: reachable" "^ok *reachable" human.out
expect_grep "human: certificate" "^ok *certificate.*$P_FP" human.out
expect_grep "human: template" "^ok *template.*$T_HASH" human.out
expect_grep "human: round trip" "^ok *round trip" human.out
expect_grep "human: verdict" "ping OK" human.out

# The serving node: no data loaded for a ping, the pings in its log.
sleep 0.2
kill "$SERVER_PID" 2>/dev/null || true
wait_server
LOADS=$(grep -c '"event":"data_loaded"' provider-id/audit.jsonl || true)
expect_eq "the serving node loaded its data once (at start), not per ping" 1 "$LOADS"
ACCEPTED=$(grep -c '"event":"connection_accepted"' provider-id/audit.jsonl || true)
expect_eq "the serving node recorded each ping's connection" 2 "$ACCEPTED"
if grep '"event":"result_released"' provider-id/audit.jsonl | grep -q '"query":"[^"]'; then
  fail "a ping released a query's result"
else
  ok "no query result released for a ping"
fi
if "$CR" audit verify provider-id/audit.jsonl >verify.out 2>&1; then
  ok "the serving node's audit log verifies after pings"
else
  known "the serving node's audit log does not verify after pings: $(cat verify.out)"
fi
if grep -q '"event":"receipt".*"peer_signature":"0000000000' provider-id/audit.jsonl; then
  known "the serving node records a ping as a completed session with an all-zero receipt"
else
  ok "no empty receipt for a ping"
fi
if grep -q '"query":""' server.out; then
  known "serve prints a session result (query \"\") for each ping on stdout"
else
  ok "serve prints no session result for a ping"
fi

# The pinging node's log: one ping event per ping, and it verifies.
PINGS=$(grep -c '"event":"ping"' consumer-id/audit.jsonl || true)
expect_eq "the pinging node recorded its pings" 2 "$PINGS"
if "$CR" audit verify consumer-id/audit.jsonl >cverify.out 2>&1; then ok "the pinging node's log verifies"; else
  fail "the pinging node's log: $(cat cverify.out)"
fi

# ---- a partner pinging in a loop ---------------------------------------------
# 25 pings within a minute: the serving node answers every one, but writes
# only the first 20 (connection_accepted, ping_answered, checkpoint); the
# rest are counted in one pings_answered_summary line when it stops, so a
# ping loop cannot grow the log at its own rate.
start_server template.json "$EX/provider.csv" --audit ploop.jsonl
LOOP_OK=0
for _ in $(seq 25); do
  if "$CR" ping --template template.json --identity consumer-id --peer "127.0.0.1:$PORT" \
    --json >loop.out 2>loop.err; then LOOP_OK=$((LOOP_OK + 1)); fi
done
kill "$SERVER_PID" 2>/dev/null || true
wait_server
expect_eq "ping loop: every ping is answered" 25 "$LOOP_OK"
expect_eq "ping loop: 20 pings written" 20 "$(grep -c '"event":"ping_answered"' ploop.jsonl || true)"
expect_eq "ping loop: 20 connections written" 20 \
  "$(grep -c '"event":"connection_accepted"' ploop.jsonl || true)"
expect_grep "ping loop: the other 5 are summed up" \
  '"event":"pings_answered_summary".*"pings":5\|"pings":5.*"event":"pings_answered_summary"' ploop.jsonl
if "$CR" audit verify ploop.jsonl >ploop.verify 2>&1; then ok "ping loop: the log verifies"; else
  fail "ping loop: the log does not verify: $(cat ploop.verify)"
fi

# ---- nothing listening -------------------------------------------------------
# $PORT was the server's, which has exited.
ping_peer
expect_eq "nothing listening: exit 5" 5 "$PING_RC"
expect_grep "nothing listening: not reachable" '"reachable":false' ping.out
expect_grep "nothing listening: connection refused" '"problem":"refused"' ping.out
expect_grep "nothing listening: the reason" 'connection refused' ping.out
set +e
"$CR" ping --template template.json --identity consumer-id --peer "127.0.0.1:$PORT" >human.out 2>&1
set -e
expect_grep "nothing listening, human: says so" "FAIL *reachable.*refused" human.out
expect_grep "nothing listening, human: what to do" "is the partner's .cleanroom serve. running" human.out
# Without --peer, ping goes to the template's provider address.
"$CR" template pin template.json --address "127.0.0.1:$PORT" --out template-addr.json >/dev/null 2>&1
set +e
"$CR" ping --template template-addr.json --identity consumer-id --json >addr.out 2>addr.err
ADDR_RC=$?
set -e
expect_grep "no --peer: the template's provider address" "\"peer\":\"127.0.0.1:$PORT\"" addr.out
expect_eq "no --peer, nothing listening: exit 5" 5 "$ADDR_RC"

# ---- a name that does not resolve --------------------------------------------
set +e
"$CR" ping --template template.json --identity consumer-id --peer nosuch.invalid:7443 --json \
  >ping.out 2>ping.err
PING_RC=$?
set -e
expect_eq "DNS failure: exit 5" 5 "$PING_RC"
expect_grep "DNS failure: diagnosed" '"problem":"dns"' ping.out

# ---- the wrong certificate answers -------------------------------------------
# Another node (other-id) serves at the address, with a template pinning it
# as the provider; ours pins provider-id.
"$CR" template pin "$EX/template.json" --provider "$O_FP" --consumer "$C_FP" \
  --out template-other.json >/dev/null 2>&1
mv provider-id provider-id.real
cp -r other-id provider-id
start_server template-other.json "$EX/provider.csv"
ping_peer
expect_eq "wrong certificate: exit 4" 4 "$PING_RC"
expect_grep "wrong certificate: diagnosed" '"problem":"wrong_certificate"' ping.out
expect_grep "wrong certificate: reachable" '"reachable":true' ping.out
expect_grep "wrong certificate: expected fingerprint" "\"expected_cert_sha256\":\"$P_FP\"" ping.out
expect_grep "wrong certificate: seen fingerprint" "\"seen_cert_sha256\":\"$O_FP\"" ping.out
expect_grep "wrong certificate: TLS not ok" '"tls":{[^}]*"ok":false' ping.out
set +e
"$CR" ping --template template.json --identity consumer-id --peer "127.0.0.1:$PORT" >human.out 2>&1
set -e
expect_grep "wrong certificate, human: expected" "expected $P_FP" human.out
expect_grep "wrong certificate, human: seen" "seen *$O_FP" human.out
kill "$SERVER_PID" 2>/dev/null || true
wait_server
rm -rf provider-id
mv provider-id.real provider-id

# ---- the partner does not pin our certificate --------------------------------
"$CR" template pin "$EX/template.json" --provider "$P_FP" --consumer "$O_FP" \
  --out template-notus.json >/dev/null 2>&1
start_server template-notus.json "$EX/provider.csv"
ping_peer
expect_eq "our certificate refused: exit 4" 4 "$PING_RC"
expect_grep "our certificate refused: diagnosed" '"problem":"our_certificate_rejected"' ping.out
expect_grep "our certificate refused: names ours" "\"own_cert_sha256\":\"$C_FP\"" ping.out
kill "$SERVER_PID" 2>/dev/null || true
wait_server

# ---- a different template -----------------------------------------------------
sed 's/"min_count": 100/"min_count": 101/' "$EX/template.json" >other-draft.json
pin_template other-draft.json template-diff.json
D_HASH=$("$CR" template hash template-diff.json)
start_server template-diff.json "$EX/provider.csv"
ping_peer
expect_eq "different template: exit 4" 4 "$PING_RC"
expect_grep "different template: diagnosed" '"problem":"template_mismatch"' ping.out
expect_grep "different template: agree false" '"agree":false' ping.out
expect_grep "different template: our hash" "\"ours\":\"$T_HASH\"" ping.out
expect_grep "different template: their hash" "\"theirs\":\"$D_HASH\"" ping.out
expect_grep "different template: the certificate was right" "\"seen_cert_sha256\":\"$P_FP\"" ping.out
set +e
"$CR" ping --template template.json --identity consumer-id --peer "127.0.0.1:$PORT" >human.out 2>&1
set -e
expect_grep "different template, human: ours" "ours *$T_HASH" human.out
expect_grep "different template, human: theirs" "theirs *$D_HASH" human.out
kill "$SERVER_PID" 2>/dev/null || true
wait_server

# ---- a port that accepts but never speaks TLS -----------------------------------
if command -v python3 >/dev/null 2>&1; then
  rm -f silent.port
  python3 -c '
import socket, sys, time
s = socket.socket(); s.bind(("127.0.0.1", 0)); s.listen(4)
open("silent.port.tmp", "w").write(str(s.getsockname()[1]))
import os; os.rename("silent.port.tmp", "silent.port")
c, _ = s.accept(); time.sleep(2)
' &
  SILENT=$!
  for _ in $(seq 1 100); do [ -s silent.port ] && break; sleep 0.05; done
  PORT=$(cat silent.port)
  ping_peer --timeout 1
  expect_eq "silent port: exit 5" 5 "$PING_RC"
  expect_grep "silent port: a timeout" '"problem":"timeout"' ping.out
  expect_grep "silent port: TCP was reachable" '"reachable":true' ping.out
  kill "$SILENT" 2>/dev/null || true
  wait "$SILENT" 2>/dev/null || true
else
  echo "skip: no python3 for the silent-port check"
fi

# ---- local problems: exit 2 ------------------------------------------------------
set +e
"$CR" ping --template template.json --identity other-id --peer 127.0.0.1:1 >np.out 2>np.err
NP_RC=$?
"$CR" ping --identity consumer-id >nt.out 2>nt.err
NT_RC=$?
set -e
expect_eq "identity not in the template: exit 2" 2 "$NP_RC"
expect_grep "identity not in the template: says which pins" "not a party of template" np.err
expect_eq "no --template: exit 2" 2 "$NT_RC"

# ---- --quiet on serve and run -------------------------------------------------------
start_server template.json "$EX/provider.csv" --once --quiet
run_client template.json "$EX/consumer.csv" overlap --quiet
wait_server
expect_eq "quiet run exits 0" 0 "$RUN_RC"
if [ -s run.err ]; then fail "run --quiet wrote to stderr: $(cat run.err)"; else ok "run --quiet: nothing on stderr"; fi
expect_eq "serve --quiet: only the listening line on stderr" 1 "$(wc -l <server.err)"
expect_grep "serve --quiet keeps 'listening on'" "listening on" server.err
expect_grep "quiet run still prints its result" '"count":' run.out

finish
