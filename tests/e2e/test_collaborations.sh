#!/usr/bin/env bash
# End to end: one node serves all of a provider's partners, with data that
# changes (issue 15). One `serve --collaborations DIR` with three
# collaborations (three consumer identities, three templates, three data
# files): all three consumers run concurrently, twice each (two runs of one
# identity at once, sharing its audit log), every count checked against an
# independent join. Then, with the node running: a fourth collaboration
# directory is added and one data file changed (the fourth partner is
# served, the changed data gives the new count), a broken template is
# dropped in (reported; the others keep serving), a collaboration's
# template is broken in place (its previous version keeps serving), one is
# removed, SIGHUP reloads at once; a partner pinned in two collaborations
# picks by template hash; a run limit of 2 holds with 4 runs at once; what
# one partner may not learn of another; audit logs verify after it all.
# No restart: the serving process is the same throughout.
source "$CR_E2E_LIB"

T_START=$(date +%s)
make_identities
for i in 1 2 3 4; do
  FP[$i]=$("$CR" keygen --out "c$i-id" --name "consumer$i" 2>/dev/null)
done
"$CR" keygen --out stranger-id --name stranger >/dev/null 2>&1
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')

# mk_template NAME CONSUMER_FP OUT [extra sed expression]: the overlap example
# for partner NAME, pinned to the provider and that consumer, small sets,
# the provider's address the node's (run and ping default --peer to it).
mk_template() {
  local name=$1 fp=$2 out=$3 extra=${4:-}
  "$CR" template pin "$EX/template.json" --provider "$P_FP" --consumer "$fp" --out base.tmp.json \
    >/dev/null 2>&1
  sed -e "s/\"name\": \"[^\"]*\"/\"name\": \"Acme x $name\"/" \
    -e "s/\"org\": \"HomeSure Insurance\"/\"org\": \"$name Ltd\"/" \
    -e "s/\"address\": \"127.0.0.1:7443\"/\"address\": \"127.0.0.1:$PORT\"/" \
    -e 's/"min_set_size": [0-9]*/"min_set_size": 10/' -e 's/"min_count": [0-9]*/"min_count": 10/' \
    -e 's/"max_runs_per_query": [0-9]*/"max_runs_per_query": 1000000/' \
    -e 's/"limits": {/"limits": {"size_buckets": {"floor": 16, "ratio": 2},/' \
    ${extra:+-e "$extra"} base.tmp.json >"$out"
  rm -f base.tmp.json
}
# users FROM TO DOMAIN [segment]: a CSV of e-mails
users() {
  echo "email,segment"
  for i in $(seq "$1" "$2"); do echo "user$i@$3,s$((i % 3))"; done
}
# join PROV CONS: the overlap, computed without the engine
join_count() { comm -12 <(normalized_emails "$1") <(normalized_emails "$2") | wc -l | tr -d ' '; }
# add_collab NAME TEMPLATE DATA [conf lines]: a collaboration directory,
# prepared hidden and renamed into place (as the docs advise)
add_collab() {
  local name=$1 tmpl=$2 data=$3
  shift 3
  mkdir -p "collabs/.$name"
  cp "$tmpl" "collabs/.$name/template.json"
  { echo "# $name"; echo "data = $data"; for l in "$@"; do echo "$l"; done; } >"collabs/.$name/collaboration.conf"
  mv "collabs/.$name" "collabs/$name"
}
# run_as N TEMPLATE DATA OUT [flags]: consumer N runs "overlap", no --peer
run_as() {
  local n=$1 tmpl=$2 data=$3 out=$4
  shift 4
  set +e
  "$CR" run --template "$tmpl" --identity "c$n-id" --data "$data" --query overlap --json "$@" \
    >"$out.out" 2>"$out.err"
  echo $? >"$out.rc"
  set -e
}
# wait_file PATTERN FILE [SECONDS]: until FILE has it (a node records a
# session once its partner has the result, so a moment after the run ends)
wait_file() {
  for _ in $(seq 1 $((${3:-10} * 10))); do
    grep -q -- "$1" "$2" 2>/dev/null && return 0
    sleep 0.1
  done
  return 1
}
# wait_log PATTERN [SECONDS]: until the server's stderr has it
wait_log() {
  for _ in $(seq 1 $((${2:-15} * 10))); do
    grep -qF -- "$1" server.err && return 0
    sleep 0.1
  done
  return 1
}

users 0 299 a.example >prov_a.csv
users 0 399 b.example >prov_b.csv
users 0 199 c.example >prov_c.csv
users 180 379 a.example >cons_1.csv
users 150 449 b.example >cons_2.csv
users 100 199 c.example >cons_3.csv
users 0 99 d.example >prov_d.csv
users 50 249 d.example >cons_4.csv
mk_template "Partner1" "${FP[1]}" t1.json
mk_template "Partner2" "${FP[2]}" t2.json
mk_template "Partner3" "${FP[3]}" t3.json
mk_template "Partner4" "${FP[4]}" t4.json
mkdir collabs
add_collab a "$WORK/t1.json" "$WORK/prov_a.csv"
add_collab b "$WORK/t2.json" ../../prov_b.csv "audit = ../../b.audit.jsonl" "max_sessions = 8"
add_collab c "$WORK/t3.json" "$WORK/prov_c.csv" "timeout = 20"
EXP_A=$(join_count prov_a.csv cons_1.csv)
EXP_B=$(join_count prov_b.csv cons_2.csv)
EXP_C=$(join_count prov_c.csv cons_3.csv)
echo "expected counts: a $EXP_A, b $EXP_B, c $EXP_C"

# --- serve --check -----------------------------------------------------------------
set +e
"$CR" serve --check --collaborations collabs --identity provider-id >check.out 2>check.err
CHECK_RC=$?
set -e
expect_eq "serve --check: all three can serve, exit 0" 0 "$CHECK_RC"
expect_eq "serve --check lists each collaboration" 3 "$(grep -c '^ok ' check.out)"
if [ -e provider-id/audit.jsonl ]; then fail "serve --check wrote an audit log"; else ok "serve --check leaves the audit log alone"; fi

# --- one node, three collaborations ----------------------------------------------------
: >server.out
: >server.err
"$CR" serve --collaborations collabs --identity provider-id --listen "127.0.0.1:$PORT" --json \
  >server.out 2>server.err &
SERVER_PID=$!
if wait_log "listening on" 10; then ok "serve --collaborations listens"; else
  fail "serve did not start"
  cat server.err >&2
  exit 1
fi
PID0=$SERVER_PID
for n in a b c; do expect_grep "collaboration $n loaded" "collaboration loaded \"$n\"" server.err; done

# ping per collaboration (routed by the template hash the ping carries)
for i in 1 2 3; do
  set +e
  "$CR" ping --template "t$i.json" --identity "c$i-id" >"ping$i.out" 2>"ping$i.err"
  rc=$?
  set -e
  expect_eq "ping from partner $i (default --peer): exit 0" 0 "$rc"
  expect_grep "ping $i: both nodes loaded the template" "both nodes loaded" "ping$i.out"
done
wait_file 'answered a ping .*collaboration "c"' server.err || true
expect_grep "serve logs the pings with their collaboration" 'collaboration "a"' server.err

# all three consumers, twice each, at once (two runs of one identity share its log)
pids=()
for k in 1 2; do
  run_as 1 t1.json cons_1.csv "r1_$k" &
  pids+=($!)
  run_as 2 t2.json cons_2.csv "r2_$k" &
  pids+=($!)
  run_as 3 t3.json cons_3.csv "r3_$k" &
  pids+=($!)
done
for p in "${pids[@]}"; do wait "$p"; done
for k in 1 2; do
  expect_eq "partner 1 run $k exits 0" 0 "$(cat "r1_$k.rc")"
  expect_eq "partner 1 run $k: count = the join ($EXP_A)" "$EXP_A" "$(json_field "r1_$k.out" count)"
  expect_eq "partner 2 run $k exits 0" 0 "$(cat "r2_$k.rc")"
  expect_eq "partner 2 run $k: count = the join ($EXP_B)" "$EXP_B" "$(json_field "r2_$k.out" count)"
  expect_eq "partner 3 run $k exits 0" 0 "$(cat "r3_$k.rc")"
  expect_eq "partner 3 run $k: count = the join ($EXP_C)" "$EXP_C" "$(json_field "r3_$k.out" count)"
done
for i in 1 2 3; do
  if grep -q "in use" r${i}_1.err r${i}_2.err; then fail "partner $i: a run found the audit log in use"; else ok "partner $i: two runs at once share the audit log"; fi
done
# The node records and prints a session after its partner has its result.
for _ in $(seq 1 100); do
  [ "$(grep -c '"status":"ok"' server.out)" -ge 6 ] && break
  sleep 0.1
done
expect_eq "the node reported six sessions, all ok" 6 "$(grep -c '"status":"ok"' server.out)"
expect_grep "a session line names collaboration, partner, query, outcome, duration" \
  'session: collaboration="b" partner="Partner2 Ltd" peer=127.0.0.1:[0-9]* query="overlap" outcome="released" duration_ms=' server.err

# audit: one log for a and c (the identity's), b's own; every line names its collaboration
PLOG=provider-id/audit.jsonl
"$CR" audit verify "$PLOG" --cert provider-id/identity.crt >pv.out 2>&1 || { fail "provider log verifies"; cat pv.out >&2; }
"$CR" audit verify b.audit.jsonl --cert provider-id/identity.crt >bv.out 2>&1 || { fail "b's log verifies"; cat bv.out >&2; }
for i in 1 2 3; do
  if "$CR" audit verify "c$i-id/audit.jsonl" --cert "c$i-id/identity.crt" >/dev/null 2>&1; then
    ok "partner $i's log (two concurrent runs) verifies"
  else fail "partner $i's log does not verify"; fi
  expect_eq "partner $i's log: 2 sessions" 2 "$(grep -c '"event":"session_started"' "c$i-id/audit.jsonl")"
done
expect_eq "provider log: a's 2 sessions" 2 "$(grep '"event":"session_started"' "$PLOG" | grep -c '"collaboration":"a"')"
expect_eq "provider log: c's 2 sessions" 2 "$(grep '"event":"session_started"' "$PLOG" | grep -c '"collaboration":"c"')"
expect_eq "provider log: none of b's sessions" 0 "$(grep '"event":"session_started"' "$PLOG" | grep -c '"collaboration":"b"' || true)"
expect_eq "b's own log: b's 2 sessions" 2 "$(grep '"event":"session_started"' b.audit.jsonl | grep -c '"collaboration":"b"')"
expect_grep "session lines name the partner" '"partner":"Partner1 Ltd"' "$PLOG"
expect_grep "each release records the data it used" '"data":{"file":"[^"]*prov_a.csv","size":' "$PLOG"
SHA_A=$(sha256sum prov_a.csv | cut -c1-64)
expect_grep "the data's content hash is the file's SHA-256" "\"sha256\":\"$SHA_A\"" "$PLOG"
"$CR" audit show "$PLOG" --collaboration a >show_a.out
expect_eq "audit show --collaboration a: a's two sessions" 2 "$(grep -c 'completed' show_a.out)"
if grep -q "Partner3" show_a.out; then fail "audit show --collaboration a shows c's sessions"; else ok "the filter keeps a's only"; fi
TH_C=$("$CR" template hash t3.json | grep -oE '[0-9a-f]{64}' | head -1)
"$CR" audit show "$PLOG" --collaboration "${TH_C:0:12}" --json >show_c.out
expect_eq "audit show --collaboration HASH: c's two sessions" 2 "$(grep -c '"partner":"Partner3 Ltd"' show_c.out)"

# --- what one partner does not learn of another ------------------------------------------
# Partner 2 with a template it made up (pinning itself, named like a's): the
# node answers from b (its only collaboration); it learns b's hash, which it
# has, and nothing of a's.
sed 's/"name": "Acme x Partner2"/"name": "Acme x Partner1"/' t2.json >fake2.json
run_as 2 fake2.json cons_2.csv fake2
expect_eq "a template the node does not have: exit 4" 4 "$(cat fake2.rc)"
expect_grep "the refusal says the templates differ" "templates differ" fake2.err
TH_A=$("$CR" template hash t1.json | grep -oE '[0-9a-f]{64}' | head -1)
if grep -q "$TH_A\|Partner1 Ltd\|prov_a" fake2.err fake2.out; then fail "partner 2 learned something of a's"; else ok "partner 2 learns nothing of collaboration a"; fi
# A stranger (a template of its own, pinning itself) is refused at TLS.
mk_template "Stranger" "$("$CR" fingerprint stranger-id/identity.crt)" tstr.json
set +e
"$CR" run --template tstr.json --identity stranger-id --data cons_1.csv --query overlap >str.out 2>str.err
STR_RC=$?
set -e
expect_eq "a stranger's certificate is refused: exit 4" 4 "$STR_RC"

# --- changes while it runs: a fourth partner, new data ------------------------------------
users 0 349 a.example >prov_a.new
mv prov_a.new prov_a.csv
EXP_A2=$(join_count prov_a.csv cons_1.csv)
add_collab d "$WORK/t4.json" "$WORK/prov_d.csv"
EXP_D=$(join_count prov_d.csv cons_4.csv)
if wait_log 'collaboration added "d"' 15; then ok "the fourth collaboration is picked up"; else
  fail "the fourth collaboration was not picked up"
  cat server.err >&2
fi
run_as 4 t4.json cons_4.csv r4
expect_eq "the fourth partner is served: exit 0" 0 "$(cat r4.rc)"
expect_eq "the fourth partner's count = the join ($EXP_D)" "$EXP_D" "$(json_field r4.out count)"
run_as 1 t1.json cons_1.csv r1_new
expect_eq "after the data change: exit 0" 0 "$(cat r1_new.rc)"
expect_eq "the changed data gives the new count ($EXP_A2, was $EXP_A)" "$EXP_A2" "$(json_field r1_new.out count)"
SHA_A2=$(sha256sum prov_a.csv | cut -c1-64)
wait_file "\"sha256\":\"$SHA_A2\"" "$PLOG" || true
expect_grep "the new data's hash is recorded" "\"sha256\":\"$SHA_A2\"" "$PLOG"

# --- broken collaborations --------------------------------------------------------------
mkdir collabs/.e
echo '{"format": "cleanroom-template/1", "name": ' >collabs/.e/template.json
echo "data = $WORK/prov_a.csv" >collabs/.e/collaboration.conf
mv collabs/.e collabs/e
if wait_log 'collaboration "e" cannot serve' 15; then ok "a broken template is reported"; else fail "a broken template was not reported"; fi
expect_grep "the report names the file" "collabs/e/template.json" server.err
expect_grep "the audit log records the refusal" '"event":"collaboration_refused"' "$PLOG"
# c's template broken in place: its previous version keeps serving
cp collabs/c/template.json c.good.json
echo '{ not json' >collabs/c/template.json
if wait_log 'collaboration "c" cannot serve' 15; then ok "a template broken in place is reported"; else fail "c's broken template was not reported"; fi
expect_grep "c's previous version keeps serving" "its previous version keeps serving" server.err
run_as 3 t3.json cons_3.csv r3_old
expect_eq "c still serves its previous version: exit 0" 0 "$(cat r3_old.rc)"
expect_eq "c's count unchanged" "$EXP_C" "$(json_field r3_old.out count)"
run_as 2 t2.json cons_2.csv r2_again
expect_eq "the others keep serving (b): exit 0" 0 "$(cat r2_again.rc)"
cp c.good.json collabs/c/template.json

# --- a partner pinned in two collaborations; a run limit under concurrency ----------------
mk_template "Partner1" "${FP[1]}" tlim.json 's/"name": "Acme x Partner1"/"name": "Acme x Partner1, limited"/; s/"max_runs_per_query": 1000000/"max_runs_per_query": 2/'
add_collab lim "$WORK/tlim.json" "$WORK/prov_a.csv"
# SIGHUP: looked at at once
kill -HUP "$SERVER_PID"
if wait_log 'collaboration added "lim"' 5; then ok "SIGHUP picks up a new collaboration at once"; else fail "SIGHUP did not pick up lim"; fi
expect_grep "SIGHUP is logged" "SIGHUP" server.err
pids=()
for k in 1 2 3 4; do
  run_as 1 tlim.json cons_1.csv "lim_$k" &
  pids+=($!)
done
for p in "${pids[@]}"; do wait "$p"; done
okc=0
refused=0
for k in 1 2 3 4; do
  rc=$(cat "lim_$k.rc")
  if [ "$rc" = 0 ] && [ "$(json_field "lim_$k.out" count)" = "$EXP_A2" ]; then okc=$((okc + 1)); fi
  if [ "$rc" = 4 ] && grep -q "max_runs_per_query = 2" "lim_$k.err"; then refused=$((refused + 1)); fi
done
expect_eq "run limit 2, four runs at once: exactly two succeed" 2 "$okc"
expect_eq "the other two are refused, naming the limit" 2 "$refused"
TH_LIM=$("$CR" template hash tlim.json | grep -oE '[0-9a-f]{64}' | head -1)
expect_eq "the provider admitted exactly two runs of the limited template" 2 \
  "$(grep '"event":"session_started"' "$PLOG" | grep -c "\"template_sha256\":\"$TH_LIM\"")"
# The same partner's other collaboration: its Hello's template picks it.
run_as 1 t1.json cons_1.csv r1_pick
expect_eq "partner 1 pinned in two collaborations: a is picked by hash" "$EXP_A2" "$(json_field r1_pick.out count)"

# --- a collaboration's own session cap: busy (exit 6), and run --retry -----------------------
sed -i 's/max_sessions = 8/max_sessions = 1/' collabs/b/collaboration.conf
kill -HUP "$SERVER_PID"
if wait_log 'collaboration changed "b"' 5; then ok "b's changed conf is picked up"; else fail "b's conf change was not picked up"; fi
"$HOSTILE_PEER" --case silent --hold-ms 6000 --template t2.json --identity c2-id --data cons_2.csv \
  --peer "127.0.0.1:$PORT" --timeout-ms 10000 >hold.out 2>hold.err &
HOLD_PID=$!
for _ in $(seq 1 200); do
  grep -q '^ready:' hold.out && break
  sleep 0.05
done
expect_grep "a session holds b's only slot" '^ready:' hold.out
run_as 2 t2.json cons_2.csv busy1
expect_eq "b at its max_sessions: run exits 6 (busy)" 6 "$(cat busy1.rc)"
expect_grep "the run says busy, retry later" "busy, retry later" busy1.err
if grep -q 'collaboration\.conf\|"b"\|max_sessions' busy1.err; then fail "the busy refusal told the partner the node's settings"; else ok "the partner is told busy, nothing of the node's settings"; fi
wait_log 'collaboration b has 1 session(s) in progress' 10 || true
expect_grep "the node logs whose cap it was" 'collaboration b has 1 session(s) in progress (max_sessions = 1' server.err
run_as 2 t2.json cons_2.csv busy2 --retry 8
expect_eq "run --retry waits for the slot: exit 0" 0 "$(cat busy2.rc)"
expect_eq "run --retry: the count" "$EXP_B" "$(json_field busy2.out count)"
expect_grep "run --retry says it retries" "retrying in" busy2.err
wait "$HOLD_PID" 2>/dev/null || true

# --- a collaboration switched off: its partner is refused, the node says why ------------------
echo "enabled = false" >>collabs/d/collaboration.conf
kill -HUP "$SERVER_PID"
if wait_log 'collaboration changed "d"' 5; then ok "d's enabled = false is picked up"; else fail "d's conf change was not picked up"; fi
run_as 4 t4.json cons_4.csv r4_off
expect_eq "the partner of a disabled collaboration is refused: exit 4" 4 "$(cat r4_off.rc)"
if wait_log 'is the consumer'"'"'s of collaboration d, which is not served (enabled = false' 5; then
  ok "the node says the certificate is d's, which is not served"
else
  fail "the node's refusal does not say d is disabled"
  grep 'failed' server.err | tail -3 >&2
fi

# --- removing a collaboration ----------------------------------------------------------------
rm -rf collabs/d
if wait_log 'collaboration removed "d"' 15; then ok "a removed collaboration is reported"; else fail "d's removal was not reported"; fi
run_as 4 t4.json cons_4.csv r4_gone
expect_eq "its partner is refused now: exit 4" 4 "$(cat r4_gone.rc)"

# --- no restart; a clean stop ------------------------------------------------------------------
expect_eq "the same serving process throughout" "$PID0" "$SERVER_PID"
if kill -0 "$SERVER_PID" 2>/dev/null; then ok "server still running"; else fail "server died"; fi
kill -TERM "$SERVER_PID"
wait_server
expect_eq "server exits 0 on SIGTERM" 0 "$SERVER_RC"
if "$CR" audit verify "$PLOG" --cert provider-id/identity.crt >pv2.out 2>&1; then
  ok "the provider's log verifies after it all ($(grep -c '' "$PLOG") lines)"
else
  fail "the provider's log does not verify"
  cat pv2.out >&2
fi
if "$CR" report --identity provider-id --out report.html >report.out 2>&1; then
  ok "report reads the log of many collaborations"
else
  fail "report on the provider's log"
  cat report.out >&2
fi
if grep -q "Sanitizer" server.err; then
  fail "the server reported a sanitizer error or a leak"
  grep -A20 "Sanitizer" server.err | sed 's/^/    /' >&2
else
  ok "no sanitizer report from the server"
fi
echo "runtime: $(($(date +%s) - T_START)) s"
finish
