#!/usr/bin/env bash
# End to end: issue 16's data sources inside issue 15's collaborations
# directory. One `serve --collaborations DIR` with two collaborations of one
# consumer: "db" reads an SQLite file named relative to its directory
# (data = sqlite:crm.db, data_query = a SELECT that renames and filters),
# "semi" a semicolon CSV with `delimiter = ;`. serve --check takes both, and
# names the file and line of a conf whose source keys do not fit; a port in
# use fails before any data is read (no data_loaded in the log); both runs
# give the independent join's count; the log records the source and query.
source "$CR_E2E_LIB"

make_identities
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')

# mk_template NAME OUT: the overlap example, small sets, named NAME
mk_template() {
  "$CR" template pin "$EX/template.json" --provider "$P_FP" --consumer "$C_FP" --out base.tmp.json \
    >/dev/null 2>&1
  sed -e "s/\"name\": \"[^\"]*\"/\"name\": \"$1\"/" \
    -e "s/\"address\": \"127.0.0.1:7443\"/\"address\": \"127.0.0.1:$PORT\"/" \
    -e 's/"min_set_size": [0-9]*/"min_set_size": 10/' -e 's/"min_count": [0-9]*/"min_count": 10/' \
    -e 's/"max_runs_per_query": [0-9]*/"max_runs_per_query": 1000000/' \
    -e 's/"limits": {/"limits": {"size_buckets": {"floor": 16, "ratio": 2},/' \
    base.tmp.json >"$2"
  rm -f base.tmp.json
}
mk_template "db source" t_db.json
mk_template "semicolon source" t_semi.json

# Provider: 300 clients in SQLite, 200 of them active (the query keeps
# those); 250 rows of a semicolon CSV. Consumer: users 100..349 of each.
mkdir -p collabs/.db collabs/.semi
{
  echo "CREATE TABLE clients (mail TEXT, seg TEXT, active INTEGER);"
  echo "BEGIN;"
  for i in $(seq 0 299); do echo "INSERT INTO clients VALUES ('user$i@db.example', 's$((i % 3))', $((i < 200 ? 1 : 0)));"; done
  echo "COMMIT;"
} | sqlite3 collabs/.db/crm.db
{
  echo "email;segment"
  for i in $(seq 0 249); do echo "user$i@semi.example;s$((i % 3))"; done
} >collabs/.semi/semi.csv
cp t_db.json collabs/.db/template.json
cp t_semi.json collabs/.semi/template.json
cat >collabs/.db/collaboration.conf <<'EOF'
data = sqlite:crm.db
data_query = SELECT mail AS email, seg AS segment FROM clients WHERE active = 1
EOF
printf 'data = semi.csv\ndelimiter = ;\n' >collabs/.semi/collaboration.conf
mv collabs/.db collabs/db
mv collabs/.semi collabs/semi
{
  echo "email,segment"
  for i in $(seq 100 349); do echo "user$i@db.example,x"; done
} >cons_db.csv
{
  echo "email,segment"
  for i in $(seq 100 349); do echo "user$i@semi.example,x"; done
} >cons_semi.csv
EXP_DB=100   # active 0..199 and consumer 100..349
EXP_SEMI=150 # 0..249 and 100..349

# --- serve --check ---------------------------------------------------------------------
set +e
"$CR" serve --check --collaborations collabs --identity provider-id >check.out 2>check.err
CHECK_RC=$?
set -e
expect_eq "serve --check: the SQLite and the semicolon collaboration can serve" 0 "$CHECK_RC"
expect_eq "serve --check lists both" 2 "$(grep -c '^ok ' check.out)"

# A data query for a CSV: the conf's file and the data line are named.
mkdir -p badcollabs/bad
cp t_semi.json badcollabs/bad/template.json
cp collabs/semi/semi.csv badcollabs/bad/
printf '# bad\ndata = semi.csv\ndata_query = SELECT 1\n' >badcollabs/bad/collaboration.conf
set +e
"$CR" serve --check --collaborations badcollabs --identity provider-id >bad.out 2>bad.err
BAD_RC=$?
set -e
if [ "$BAD_RC" -ne 0 ]; then ok "serve --check refuses a data query for a CSV (exit $BAD_RC)"; else fail "serve --check took a data query for a CSV"; fi
expect_grep "the refusal names the conf and the data line" "badcollabs/bad/collaboration.conf: data (line 2)" bad.out

# --- the port is bound before any data is read ------------------------------------------
# A listener of our own on a port the kernel picks (no race with other tests).
python3 -c 'import socket, sys, time
s = socket.socket(); s.bind(("127.0.0.1", 0)); s.listen(1)
open(sys.argv[1] + ".tmp", "w").write(str(s.getsockname()[1])); __import__("os").rename(sys.argv[1] + ".tmp", sys.argv[1])
time.sleep(60)' busy.port &
HOLDER=$!
for _ in $(seq 1 100); do
  [ -s busy.port ] && break
  sleep 0.05
done
BUSY_PORT=$(cat busy.port)
set +e
# timeout: should serve ever start on a port in use, the test fails, not hangs
timeout 20 "$CR" serve --collaborations collabs --identity provider-id --listen "127.0.0.1:$BUSY_PORT" \
  >busy.out 2>busy.err
BUSY_RC=$?
set -e
kill "$HOLDER" 2>/dev/null || true
wait "$HOLDER" 2>/dev/null || true
if [ "$BUSY_RC" -ne 0 ] && [ "$BUSY_RC" -ne 124 ]; then ok "a port in use: serve fails (exit $BUSY_RC)"; else fail "serve ran on a port in use"; fi
expect_grep "the error names the address" "127.0.0.1:$BUSY_PORT" busy.err
if grep -q '"data_loaded"' provider-id/audit.jsonl 2>/dev/null; then
  fail "data was read before the port was bound"
else
  ok "no data read while the port was in use"
fi

# --- serve both, run both ------------------------------------------------------------------
: >server.out
: >server.err
"$CR" serve --collaborations collabs --identity provider-id --listen "127.0.0.1:$PORT" --json \
  >server.out 2>server.err &
SERVER_PID=$!
for _ in $(seq 1 200); do
  grep -q "listening on" server.err && break
  sleep 0.05
done
expect_grep "the node listens" "listening on" server.err
for c in db semi; do
  set +e
  "$CR" run --template "t_$c.json" --identity consumer-id --data "cons_$c.csv" --query overlap \
    --json >"run_$c.out" 2>"run_$c.err"
  echo $? >"run_$c.rc"
  set -e
done
expect_eq "run against the SQLite collaboration: exit 0" 0 "$(cat run_db.rc)"
expect_eq "run against the semicolon collaboration: exit 0" 0 "$(cat run_semi.rc)"
expect_eq "SQLite collaboration: the join's count" "$EXP_DB" "$(json_field run_db.out count)"
expect_eq "semicolon collaboration: the join's count" "$EXP_SEMI" "$(json_field run_semi.out count)"
kill "$SERVER_PID"
wait_server
expect_grep "the log records the SQLite source" '"source":"SQLite"' provider-id/audit.jsonl
expect_grep "the log records the data query" '"data_query":"SELECT mail AS email' provider-id/audit.jsonl
expect_grep "the log records the CSV source" '"source":"CSV"' provider-id/audit.jsonl
"$CR" audit verify provider-id/audit.jsonl >/dev/null 2>&1 && ok "the audit log verifies" ||
  fail "the audit log does not verify"
finish
