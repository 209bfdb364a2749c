#!/usr/bin/env bash
# End to end: both nodes' audit logs record every data access, connection,
# session, release and receipt of a real run; they verify; any edit,
# deletion or reordering is caught and named by line; a crash's torn tail
# is repaired on the next start; no match key is ever written.
source "$CR_E2E_LIB"

make_identities
pin_template "$EX/template.json" template.json
PLOG=provider-id/audit.jsonl
CLOG=consumer-id/audit.jsonl

# A completed session, a refused one (template mismatch) and a refused
# connection (unpinned certificate), all against one long-running server.
start_server template.json "$EX/provider.csv"
run_client template.json "$EX/consumer.csv" overlap
expect_eq "the run completes" 0 "$RUN_RC"
sed 's/"min_count": 100/"min_count": 101/' template.json >other.json
run_client other.json "$EX/consumer.csv" overlap
expect_eq "the mismatched run is refused" 4 "$RUN_RC"
"$CR" keygen --out stranger-id >/dev/null 2>&1
"$CR" template pin template.json --consumer stranger-id/identity.crt --out stranger.json >/dev/null 2>&1
set +e
"$CR" run --template stranger.json --identity stranger-id --data "$EX/consumer.csv" \
  --peer "127.0.0.1:$PORT" --query overlap >/dev/null 2>&1
set -e
kill -TERM "$SERVER_PID"
wait_server

for ev in node_started data_loaded connection_accepted session_started result_released receipt checkpoint; do
  expect_grep "provider log has $ev" "\"event\":\"$ev\"" "$PLOG"
  expect_grep "consumer log has $ev" "\"event\":\"$ev\"" "$CLOG"
done
expect_grep "provider log has the refused connection" '"event":"connection_refused"' "$PLOG"
expect_grep "the refused connection names the stranger's certificate" \
  "$("$CR" fingerprint stranger-id/identity.crt)" "$PLOG"
expect_grep "provider log has the aborted session" '"event":"session_aborted"' "$PLOG"
expect_grep "the aborted session says why" 'TEMPLATE_MISMATCH' "$PLOG"
expect_grep "the data access names the file's hash" "$(sha256sum "$EX/provider.csv" | cut -c1-64)" "$PLOG"
COUNT=$(json_field run.out count)
expect_grep "the release records the count shown" "\"released\":{\"count\":$COUNT" "$CLOG"

"$CR" audit verify "$PLOG" --cert provider-id/identity.crt >pv.out
expect_grep "provider log verifies" "OK" pv.out
"$CR" audit verify "$CLOG" --cert consumer-id/identity.crt >cv.out
expect_grep "consumer log verifies" "1 partner receipts verified" cv.out
"$CR" audit verify "$CLOG" --template template.json >cvt.out
expect_grep "the receipt carries the certificates the template pins" \
  "1 receipt(s) under template .* carry the certificates it pins" cvt.out
set +e
"$CR" audit verify "$CLOG" --cert provider-id/identity.crt >/dev/null 2>wrongkey.err
WK=$?
set -e
expect_eq "checkpoints by another key fail verify" 3 "$WK"
"$CR" audit show "$PLOG" >show.out
expect_grep "show lists the completed session" "completed  overlap" show.out
expect_grep "show lists the aborted session" "aborted" show.out
"$CR" audit show --json "$CLOG" >showj.out
expect_grep "show --json gives the release" "\"count\":$COUNT" showj.out

# No match key, raw or hashed, in either log.
normalized_emails "$EX/provider.csv" >keys.txt
normalized_emails "$EX/consumer.csv" >>keys.txt
head -300 keys.txt | while read -r k; do printf '%s' "$k" | sha256sum | cut -c1-64; done >hashed.txt
if grep -qF -f keys.txt "$PLOG" "$CLOG"; then fail "a log holds a match key"; else ok "no raw match key in the logs"; fi
if grep -qF -f hashed.txt "$PLOG" "$CLOG"; then fail "a log holds a hashed match key"; else ok "no hashed match key in the logs"; fi

# Tampering, each named by its line.
tamper() { # NAME EXPECTED_LINE SED_OR_AWK...
  local name=$1 line=$2
  shift 2
  cp "$CLOG" t.jsonl
  "$@" t.jsonl
  set +e
  "$CR" audit verify t.jsonl >/dev/null 2>t.err
  local rc=$?
  set -e
  expect_eq "$name: verify fails" 3 "$rc"
  expect_grep "$name: the line is named" "line $line" t.err
}
edit_count() { sed -i "5s/\"count\":$COUNT/\"count\":$((COUNT + 1))/" "$1"; }
delete_line() { sed -i '3d' "$1"; }
swap_lines() { awk 'NR==3{x=$0; next} NR==4{print; print x; next} {print}' "$1" >"$1.x" && mv "$1.x" "$1"; }
insert_line() { sed -i '2{p}' "$1"; }
sig_byte() { sed -i '$s/"signature":"0/"signature":"1/; t; $s/"signature":"./"signature":"0/' "$1"; }
tamper "editing a released count" 5 edit_count
tamper "deleting a line" 3 delete_line
tamper "swapping two lines" 3 swap_lines
tamper "inserting a copied line" 3 insert_line
expect_grep "the consumer log ends with a checkpoint" '"event":"checkpoint"' <(tail -1 "$CLOG")
tamper "changing a checkpoint signature" "$(wc -l <"$CLOG")" sig_byte

# An insider rewrites the release and recomputes every hash after it,
# dropping the checkpoints it cannot re-sign (or re-signing them with the
# node's own key): the chain holds, but the partner's receipt signed the
# release as it was, so verify (and the report) name the edited line.
REL=$(grep -n '"event":"result_released"' "$CLOG" | head -1 | cut -d: -f1)
RCPT=$(grep -n '"event":"receipt"' "$CLOG" | head -1 | cut -d: -f1)
python3 - "$CLOG" rewritten.jsonl "$REL" "$RCPT" <<'PY'
import hashlib, json, sys
lines = [json.loads(l) for l in open(sys.argv[1])][: int(sys.argv[4])]
lines[int(sys.argv[3]) - 1]["released"]["count"] += 1000
prev = "0" * 64
with open(sys.argv[2], "w") as f:
    for e in lines:
        e.pop("hash", None)
        e["prev"] = prev
        c = json.dumps(e, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        prev = e["hash"] = hashlib.sha256(bytes.fromhex(prev) + c.encode()).hexdigest()
        f.write(json.dumps(e, separators=(",", ":"), ensure_ascii=False) + "\n")
PY
set +e
"$CR" audit verify rewritten.jsonl >/dev/null 2>rw.err
RW=$?
"$CR" report --audit rewritten.jsonl --out rewritten.html 2>rw-report.err
RWR=$?
set -e
expect_eq "a rewritten release: verify fails" 3 "$RW"
expect_grep "a rewritten release: the line and the receipt are named" \
  "line $REL: the result released (consumer) is not the one the partner's receipt on line $RCPT signed" rw.err
expect_eq "a rewritten release: report exits 3" 3 "$RWR"
expect_grep "a rewritten release: the report marks the line" "does not verify at line $REL" rewritten.html
if grep -q "<strong>$((COUNT + 1000))</strong>" rewritten.html; then fail "the report shows the rewritten count"; else
  ok "the report does not show the rewritten count"; fi

# Another node's lines after ours: the stranger's data check appends to a
# copy of the consumer's log, with a checkpoint its own key signs. Without
# --cert, verify still sees that the log changed hands.
cp "$CLOG" foreign.jsonl
"$CR" data check --template stranger.json --identity stranger-id --data "$EX/consumer.csv" \
  --audit foreign.jsonl >/dev/null 2>&1
FOREIGN=$(grep -n '"event":"checkpoint"' foreign.jsonl | tail -1 | cut -d: -f1)
set +e
"$CR" audit verify foreign.jsonl >/dev/null 2>foreign.err
FRC=$?
set -e
expect_eq "a checkpoint by another key, without --cert: verify fails" 3 "$FRC"
expect_grep "a checkpoint by another key: the line and both keys are named" \
  "line $FOREIGN: checkpoint names key .*, but line 1 names .*: one log belongs to one node" foreign.err

# Paths that are not a log, and --identity without its certificate.
set +e
"$CR" audit verify provider-id >/dev/null 2>dir.err
DIR_RC=$?
mkdir -p no-crt && cp "$CLOG" no-crt/audit.jsonl
"$CR" report --identity no-crt --out no-crt.html 2>no-crt.err
NOCRT_RC=$?
set -e
set +e
"$CR" audit verify "$CLOG" "$PLOG" >/dev/null 2>two.err
TWO_RC=$?
set -e
expect_eq "verify of two files: exit 2, not a silent check of the first" 2 "$TWO_RC"
expect_grep "verify of two files: names the extra one" "takes one FILE" two.err
expect_eq "verify of a directory: exit 2" 2 "$DIR_RC"
expect_grep "verify of a directory: says so" "provider-id: is a directory, not an audit log" dir.err
# --out naming the log itself (arguments swapped) or another file that is
# not a report: refused, the file untouched; an earlier report is replaced.
cp "$CLOG" swapped.jsonl
cp template.json template-keep.json
set +e
"$CR" report --audit swapped.jsonl --out swapped.jsonl 2>swap.err
SWAP_RC=$?
"$CR" report --audit swapped.jsonl --out template-keep.json 2>keep.err
KEEP_RC=$?
"$CR" report --audit swapped.jsonl --out again.html 2>/dev/null &&
  "$CR" report --audit swapped.jsonl --out again.html 2>/dev/null
AGAIN_RC=$?
set -e
expect_eq "report --out the audit log: exit 2" 2 "$SWAP_RC"
expect_grep "report --out the audit log: says so" "is the audit log itself" swap.err
if cmp -s "$CLOG" swapped.jsonl; then ok "report --out the audit log: the log is untouched"; else
  fail "report --out the audit log replaced the log"; fi
expect_eq "report --out a template: exit 2" 2 "$KEEP_RC"
if cmp -s template.json template-keep.json; then ok "report --out a template: untouched"; else
  fail "report --out a template replaced it"; fi
expect_eq "report --out an earlier report: replaced, exit 0" 0 "$AGAIN_RC"
expect_eq "report --identity without identity.crt: exit 2" 2 "$NOCRT_RC"
expect_grep "report --identity without identity.crt: names it" "no-crt/identity.crt" no-crt.err

# A crash mid-append leaves a torn line: verify says so, the next start
# repairs it and records that it did.
cp "$PLOG" before.jsonl
printf '{"seq":999,"time":"2026-' >>"$PLOG"
set +e
"$CR" audit verify "$PLOG" >/dev/null 2>torn.err
TORN=$?
set -e
expect_eq "a torn tail fails verify" 3 "$TORN"
expect_grep "verify calls it torn" "torn\|incomplete" torn.err
start_server template.json "$EX/provider.csv" --once
run_client template.json "$EX/consumer.csv" overlap
wait_server
expect_eq "the node runs after a torn tail" 0 "$RUN_RC"
expect_grep "the repair is recorded" '"event":"audit_repaired"' "$PLOG"
"$CR" audit verify "$PLOG" --cert provider-id/identity.crt >repaired.out
expect_grep "the repaired log verifies" "OK" repaired.out

# A node killed with SIGKILL mid-session leaves a log that verifies after
# its restart.
"$CR" serve --template template.json --identity provider-id --data "$EX/provider.csv" \
  --listen 127.0.0.1:0 --json >kill.out 2>kill.err &
KPID=$!
for _ in $(seq 1 100); do
  KPORT=$(sed -n 's/.*listening on [^ ]*:\([0-9][0-9]*\).*/\1/p' kill.err | head -1)
  [ -n "$KPORT" ] && break
  sleep 0.05
done
"$CR" run --template template.json --identity consumer-id --data "$EX/consumer.csv" \
  --peer "127.0.0.1:$KPORT" --query overlap >/dev/null 2>&1 &
RPID=$!
sleep 0.4
kill -KILL "$KPID"
wait "$KPID" 2>/dev/null || true
wait "$RPID" 2>/dev/null || true
start_server template.json "$EX/provider.csv" --once
run_client template.json "$EX/consumer.csv" overlap
wait_server
expect_eq "the node runs after SIGKILL" 0 "$RUN_RC"
"$CR" audit verify "$PLOG" --cert provider-id/identity.crt >killed.out
expect_grep "the log verifies after SIGKILL and restart" "OK" killed.out

# A complete last line that does not verify is an edit, not a crash (issue
# 14): the last line here is a signed checkpoint, garbled so that it is no
# longer JSON but still ends in its newline. verify names it as a bad line
# (not torn), the node refuses to start, and nothing is cut or appended.
cp "$PLOG" good.jsonl
LAST=$(wc -l <"$PLOG")
expect_grep "the provider log ends with a checkpoint" '"event":"checkpoint"' <(tail -1 "$PLOG")
sed -i '$s/}$//' "$PLOG"
cp "$PLOG" garbled.jsonl
set +e
"$CR" audit verify "$PLOG" >/dev/null 2>garbled.err
GV=$?
# (timeout: a node that wrongly starts would wait for a partner forever)
timeout 20 "$CR" serve --template template.json --identity provider-id --data "$EX/provider.csv" \
  --listen 127.0.0.1:0 --once >/dev/null 2>garbled-serve.err
GS=$?
set -e
expect_eq "a garbled complete last line fails verify" 3 "$GV"
expect_grep "verify names the garbled checkpoint's line" "line $LAST" garbled.err
if grep -q "incomplete\|torn\|next start" garbled.err; then
  fail "verify calls a complete garbled line a torn tail"
else
  ok "verify does not call a complete garbled line torn"
fi
# (a log that does not verify is evidence: exit 3, the data code; one that
# cannot be written is local storage, exit 7, below; 124 would mean it
# started and waited)
expect_eq "the node refuses to start on it (exit 3, data)" 3 "$GS"
expect_grep "the refusal names the line" "line $LAST" garbled-serve.err
expect_grep "the refusal says to run audit verify" "cleanroom audit verify" garbled-serve.err
if cmp -s "$PLOG" garbled.jsonl; then ok "the edited log is left as it was"; else fail "the edited log was changed"; fi
cp good.jsonl "$PLOG"

# An audit log that cannot be written (its "directory" is a file, which
# stops root too; and, when not root, a directory without write
# permission): the node refuses to start with exit 7, local storage (not 2,
# a setting, nor 5, the network), naming the log; data check the same.
echo "not a directory" >notadir
unwritable_log() {
  local tag=$1 log=$2
  set +e
  timeout 20 "$CR" serve --template template.json --identity provider-id --data "$EX/provider.csv" \
    --listen 127.0.0.1:0 --once --audit "$log" >/dev/null 2>"uw-$tag-serve.err"
  local s=$?
  "$CR" data check --template template.json --identity provider-id --data "$EX/provider.csv" \
    --audit "$log" >/dev/null 2>"uw-$tag-check.err"
  local c=$?
  set -e
  expect_eq "$tag: serve refuses to start (exit 7, local storage)" 7 "$s"
  expect_grep "$tag: serve names the audit log" "cannot open the audit log $log" "uw-$tag-serve.err"
  expect_eq "$tag: data check fails (exit 7, local storage)" 7 "$c"
  expect_grep "$tag: data check names the audit log" "cannot open the audit log $log" "uw-$tag-check.err"
}
unwritable_log "log under a file" "$PWD/notadir/audit.jsonl"
if [ "$(id -u)" != 0 ]; then
  mkdir -p rodir
  chmod 0500 rodir
  unwritable_log "read-only directory" "$PWD/rodir/audit.jsonl"
  chmod 0700 rodir
else
  echo "note: root writes to a read-only directory; that case is tested as non-root only"
fi

# The run limit survives restarts: it is counted from the log.
sed 's/"max_runs_per_query": 20/"max_runs_per_query": 2/' template.json >limit.json
start_server limit.json "$EX/provider.csv"
run_client limit.json "$EX/consumer.csv" overlap
expect_eq "run 1 of 2" 0 "$RUN_RC"
kill -TERM "$SERVER_PID"
wait_server
start_server limit.json "$EX/provider.csv"
run_client limit.json "$EX/consumer.csv" overlap
expect_eq "run 2 of 2, after a restart" 0 "$RUN_RC"
run_client limit.json "$EX/consumer.csv" overlap
expect_eq "run 3 is refused" 4 "$RUN_RC"
# The consumer's own node counts its runs from its log and refuses before
# connecting, naming the limit.
expect_grep "the consumer's node names the limit" "max_runs_per_query = 2" run.err
# With its log gone (a modified node forgets), the provider refuses at
# admission in fixed words; the limit is named only in its own log.
run_client limit.json "$EX/consumer.csv" overlap --audit fresh-consumer-audit.jsonl
expect_eq "run 3 with a fresh consumer log is refused by the provider" 4 "$RUN_RC"
expect_grep "the refusal says NOT_ALLOWED" "NOT_ALLOWED" run.err
if grep -q "max_runs_per_query" run.err run.out; then fail "the provider's reason reached the consumer"; else ok "the provider's reason stays in its log"; fi
kill -TERM "$SERVER_PID"
wait_server

finish
