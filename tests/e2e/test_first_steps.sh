#!/usr/bin/env bash
# The rough edges two new partners hit on their first day (issue 16), one
# check each: --help where it was read as a file name, exit codes of
# template commands, `cleanroom help CMD`, fingerprints pasted from openssl
# or one digit short, expiry shown as a date, a port in use or a malformed
# --listen found before any data is read, --out never overwritten silently,
# progress while nothing arrives, and a CSV with another dialect loading
# without edits. (Phone formats: unit tests; onboard.sh: test_onboarding.sh.)
source "$CR_E2E_LIB"

make_identities
pin_template "$EX/template.json" template.json

# rc CMD...: runs CMD with stdout in cmd.out and stderr in cmd.err; exit code in RC.
rc() {
  set +e
  "$@" >cmd.out 2>cmd.err
  RC=$?
  set -e
}

# ---- template --help, exit codes, help CMD -------------------------------------------
for sub in hash check; do
  rc "$CR" template "$sub" --help
  expect_eq "template $sub --help: exit 0" 0 "$RC"
  expect_grep "template $sub --help: prints the usage" "Usage: cleanroom template hash FILE" cmd.out
  rc "$CR" template "$sub" no-such-template.json
  expect_eq "template $sub on a missing file: exit 2 (usage/config), not 5" 2 "$RC"
  expect_grep "template $sub on a missing file: names it" "no-such-template.json" cmd.err
done
rc "$CR" template verify no-such-template.json
expect_eq "template verify on a missing file: exit 2" 2 "$RC"
rc "$CR" template sign no-such-template.json --identity provider-id
expect_eq "template sign on a missing file: exit 2" 2 "$RC"

"$CR" run --help >run_help.txt
rc "$CR" help run
expect_eq "help run: exit 0" 0 "$RC"
if cmp -s cmd.out run_help.txt; then ok "help run prints run --help"; else fail "help run differs from run --help"; fi
rc "$CR" help data
expect_grep "help data prints data check's usage" "Usage: cleanroom data check" cmd.out
rc "$CR" --help
expect_grep "top-level help: every template verb" "hash, check, pin, sign or verify" cmd.out
expect_grep "top-level help: data check" "  data " cmd.out

# ---- fingerprints as people paste them --------------------------------------------------
COLON=$(printf '%s' "$C_FP" | tr 'a-f' 'A-F' | sed 's/../&:/g; s/:$//')
rc "$CR" template pin "$EX/template.json" --provider "$P_FP" --consumer "$COLON" --out colon.json
expect_eq "template pin takes openssl's A3:09:... form" 0 "$RC"
expect_eq "the colon form pins the same fingerprint" "$("$CR" template hash template.json)" \
  "$("$CR" template hash colon.json)"
rc "$CR" template pin "$EX/template.json" --provider "$P_FP" \
  --consumer "SHA256 Fingerprint=$COLON" --out colon2.json
expect_eq "template pin takes openssl's output line as is" 0 "$RC"
SHORT=${C_FP:0:63}
rc "$CR" template pin "$EX/template.json" --provider "$P_FP" --consumer "$SHORT" --out short.json
expect_eq "63 hex digits: exit 2" 2 "$RC"
expect_grep "63 hex digits: says what was expected and got" "expected 64 hex digits (a SHA-256 fingerprint), got 63" cmd.err
if grep -q "cannot open the certificate" cmd.err; then fail "a short fingerprint was read as a file name"; else ok "a short fingerprint is not read as a file name"; fi
rc "$CR" template pin "$EX/template.json" --provider "$P_FP" --consumer "${COLON:0:59}" --out short.json
expect_grep "a short colon form: got 40 (SHA-1 hint)" "got 40 (that is a SHA-1 fingerprint" cmd.err
rc "$CR" template pin "$EX/template.json" --provider "$P_FP" --consumer consumer-id/identity.crt --out crt.json
expect_eq "a certificate file still works" 0 "$RC"

# ---- expiry: a date, in every message ----------------------------------------------------
sed 's/"not_after": "[^"]*"/"not_after": "2020-01-01T00:00:00Z"/' template.json >expired.json
rc "$CR" template check expired.json
expect_eq "template check on an expired template: valid (exit 0)" 0 "$RC"
expect_grep "template check says EXPIRED, with the date" "EXPIRED on 2020-01-01T00:00:00Z" cmd.out
expect_grep "template check warns on stderr" "warning: the template expired on 2020-01-01T00:00:00Z" cmd.err
if grep -q "^template OK$" cmd.out; then fail "an expired template is plainly OK"; else ok "an expired template is not plainly OK"; fi
rc "$CR" run --template expired.json --identity consumer-id --data "$EX/consumer.csv" \
  --peer 127.0.0.1:9 --query overlap
expect_eq "run with an expired template: exit 4" 4 "$RC"
expect_grep "run says when it expired" "expired on 2020-01-01T00:00:00Z" cmd.err
if grep -q "1577836800\|Unix seconds" cmd.err; then fail "expiry shown in Unix seconds"; else ok "expiry never in Unix seconds"; fi

# ---- serve: flags and the port before the data --------------------------------------------
python3 - >busy.port <<'PY' &
import socket, sys, time
s = socket.socket()
s.bind(("127.0.0.1", 0))
s.listen(1)
print(s.getsockname()[1], flush=True)
time.sleep(60)
PY
BUSY_PID=$!
for _ in $(seq 1 100); do [ -s busy.port ] && break; sleep 0.05; done
BUSY=$(cat busy.port)
T0=$(date +%s%N)
rc "$CR" serve --template template.json --identity provider-id --data /nonexistent/huge.csv \
  --listen "127.0.0.1:$BUSY"
T1=$(date +%s%N)
expect_eq "serve on a port in use: exit 5 (network)" 5 "$RC"
expect_grep "serve on a port in use: says so" "cannot listen on 127.0.0.1:$BUSY" cmd.err
if grep -q "huge.csv" cmd.err; then fail "serve read the data before binding"; else ok "the port is checked before the data is opened"; fi
echo "port-in-use refusal after $(((T1 - T0) / 1000000)) ms"
rc "$CR" serve --template template.json --identity provider-id --data /nonexistent/huge.csv \
  --listen 7443
expect_eq "serve --listen 7443: exit 2" 2 "$RC"
expect_grep "serve --listen 7443: says HOST:PORT" "expected HOST:PORT" cmd.err
if grep -q "huge.csv" cmd.err; then fail "a malformed --listen found after the data"; else ok "a malformed --listen is found before the data"; fi
rc "$CR" run --template template.json --identity consumer-id --data /nonexistent/huge.csv \
  --peer nohostport --query overlap
expect_eq "run --peer without a port: exit 2" 2 "$RC"
if grep -q "huge.csv" cmd.err; then fail "a malformed --peer found after the data"; else ok "a malformed --peer is found before the data"; fi

# ---- progress while the partner says nothing ------------------------------------------------
# A run to a listener that accepts and never answers: at least one progress
# line in a log (stderr not a terminal) within the 10 s interval.
rc "$CR" run --template template.json --identity consumer-id --data "$EX/consumer.csv" \
  --peer "127.0.0.1:$BUSY" --query overlap --timeout 12
kill "$BUSY_PID" 2>/dev/null || true
wait "$BUSY_PID" 2>/dev/null || true
expect_eq "a partner that never answers: the run times out (exit 5)" 5 "$RC"
expect_grep "progress is shown while nothing arrives" "run: 1[0-2]s: connecting to 127.0.0.1:$BUSY" cmd.err
expect_grep "the data load is announced" "run: loading" cmd.err

# ---- a CSV in another dialect, as exported, and --out ---------------------------------------
# The consumer's file saved by a German Excel: BOM, ';', CRLF, header in
# another case with spaces; one malformed row among them.
{
  printf '\xef\xbb\xbf Email ;Policy_Type\r\n'
  tail -n +2 "$EX/consumer.csv" | tr -d '\r' | awk -F, '{ printf "%s;%s\r\n", $1, $2 }'
  printf 'bro"ken@x.org;home\r\n'
} >consumer_de.csv
start_server template.json "$EX/provider.csv"
run_client template.json "$EX/consumer.csv" overlap
WANT=$(json_field run.out count)
run_client template.json consumer_de.csv overlap
expect_eq "the ';' CSV with BOM and CRLF: run exits 0" 0 "$RUN_RC"
expect_eq "the ';' CSV gives the same count as the original" "$WANT" "$(json_field run.out count)"
expect_grep "the malformed row is counted, with its line" "malformed_row 1" run.err
kill "$SERVER_PID" 2>/dev/null || true
wait_server

# ---- the node's own config file, reused by data check ----------------------------------------
cat >node.conf <<EOF
template = template.json
identity = consumer-id
data = consumer_de.csv
delimiter = ;
peer = 127.0.0.1:9
query = overlap
json = true
EOF
rc "$CR" data check --config node.conf --audit check-audit.jsonl
expect_eq "data check --config a run config: exit 0" 0 "$RC"
expect_eq "data check --config: the delimiter key is read" ";" "$(json_field cmd.out delimiter)"
expect_grep "data check --config: the run's query is applied" '"query":"overlap"' cmd.out
# data = sqlite:PATH in a config file: PATH relative to the file, like any path.
mkdir -p conf
python3 -c "
import csv, sqlite3
db = sqlite3.connect('conf/crm.db')
db.execute('CREATE TABLE c (email TEXT)')
rows = [(r['email'],) for r in csv.DictReader(open('$EX/consumer.csv'))]
db.executemany('INSERT INTO c VALUES (?)', rows)
db.commit()"
printf 'template = ../template.json\nidentity = ../consumer-id\ndata = sqlite:crm.db\ndata_query = SELECT email FROM c\njson = true\n' >conf/db.conf
rc "$CR" data check --config conf/db.conf --audit check-audit.jsonl
expect_eq "data = sqlite:crm.db in conf/db.conf: read from conf/crm.db" 0 "$RC"
expect_grep "data = sqlite:PATH: relative to the config file" '"data":"sqlite:conf/crm.db"' cmd.out
printf 'data_query = SELECT 1\n' >>node.conf
rc "$CR" data check --config node.conf --audit check-audit.jsonl
expect_eq "data_query for a CSV: exit 2" 2 "$RC"
expect_grep "data_query for a CSV: says it is for a database" "a data query is for a database source" cmd.err
expect_eq "data_query for a CSV, --json: the reason on stdout too" "a data query is for a database source" \
  "$(python3 -c 'import json, sys; print(json.load(sys.stdin)["message"].split(": ", 1)[1][:37])' <cmd.out)"

# group_by: the check lists the groups as a session sends them; a label with
# fewer keys than min_count is merged into (other) and not printed (here
# every label is an e-mail, a match key: none may show).
python3 - template.json >grouped.json <<'PY'
import json, sys
t = json.load(open(sys.argv[1]))
t["queries"]["by_mail"] = {"kind": "count", "run_by": ["consumer"], "results_to": ["consumer"],
                           "min_count": 2, "group_by": {"provider": "email"}}
t["queries"]["by_segment"] = {"kind": "count", "run_by": ["consumer"], "results_to": ["consumer"],
                              "min_count": 1000, "group_by": {"provider": "segment"}}
json.dump(t, sys.stdout)
PY
head -400 "$EX/provider.csv" >p400.csv
rc "$CR" data check --template grouped.json --identity provider-id --data p400.csv --query by_mail \
  --audit check-audit.jsonl
expect_eq "data check, group_by a key column: exit 0" 0 "$RC"
expect_grep "data check, group_by a key column: every label merged into (other)" \
  "(other) .*labels with fewer keys each than min_count 2, merged" cmd.out
if grep -qiE "[a-z0-9]@[a-z0-9]" cmd.out; then fail "data check printed a key as a group label: $(grep -iE '[a-z0-9]@[a-z0-9]' cmd.out | head -1)"; else
  ok "data check printed no key as a group label"
fi
rc "$CR" data check --template grouped.json --identity provider-id --data "$EX/provider.csv" \
  --query by_segment --json --audit check-audit.jsonl
expect_grep "data check --json: a label above min_count is listed" '{"label":"smart_home","size":' cmd.out
expect_grep "data check --json: the smaller ones are (other), with how many were merged" \
  '{"label":"(other)","size":[0-9]*,"labels_merged":2}' cmd.out

# A template that requires signatures nobody made: the data is fine (exit 0)
# but serve and run would refuse the template; --json says so too.
sed 's/"format": "cleanroom-template\/1",/"format": "cleanroom-template\/1", "require_signatures": true,/' \
  template.json >needs-sigs.json
rc "$CR" data check --template needs-sigs.json --identity consumer-id --data "$EX/consumer.csv" --json \
  --audit check-audit.jsonl
expect_eq "data check, signatures missing: the data is fine (exit 0)" 0 "$RC"
expect_grep "data check --json: the missing signatures are noted" '"signatures_note":"the template requires both' cmd.out
expect_grep "data check --json: and on stderr too" "serve and run would refuse the template" cmd.err

# --json: a check that cannot run still prints one object (verdict, message,
# exit), so a script reads why from stdout as it reads a verdict.
printf 'Mail;Segment\na@b.example;x\n' >no_email.csv
rc "$CR" data check --template template.json --identity consumer-id --data no_email.csv --json \
  --audit check-audit.jsonl
expect_eq "data check --json, a missing column: exit 3" 3 "$RC"
expect_eq "data check --json, a missing column: the verdict" EDATA "$(json_field cmd.out verdict)"
expect_eq "data check --json, a missing column: the exit code" 3 "$(json_field cmd.out exit)"
expect_grep "data check --json, a missing column: the message names it" 'missing column \\"email\\"' cmd.out
rc "$CR" data check --template template.json --identity no-such-id --data no_email.csv --json
expect_eq "data check --json, no identity: exit 2" 2 "$RC"
expect_eq "data check --json, no identity: the verdict" ECONFIG "$(json_field cmd.out verdict)"

# The example serve.conf (examples/systemd): each optional line, uncommented
# (paths aside), is a valid line; a note written after a value is refused
# naming the file and line, with a hint.
{
  echo "template = template.json"
  echo "identity = provider-id"
  echo "data = $EX/provider.csv"
  echo "listen = 127.0.0.1:0"
  sed -n 's/^# \(max-sessions\|timeout\|threads\|max-reject-ratio\|memory\|spill-max\) = /\1 = /p' \
    "$CR_SOURCE_DIR/examples/systemd/serve.conf.in"
} >serve.conf
expect_eq "the example serve.conf has its six optional settings" 6 \
  "$(grep -cE '^(max-sessions|timeout|threads|max-reject-ratio|memory|spill-max) = ' serve.conf)"
rc "$CR" serve --config serve.conf --check
expect_eq "serve --check with the example's optional lines uncommented: exit 0" 0 "$RC"
{ head -4 serve.conf; printf 'timeout = 30  # seconds\n'; } >note.conf
rc "$CR" serve --config note.conf --check
expect_eq "a note after a value: exit 2" 2 "$RC"
expect_grep "a note after a value: file, line and a hint" \
  'note.conf:5: "timeout" takes seconds from 1 to 86400, got "30  # seconds"; a comment goes on a line of its own' cmd.err

# ---- keygen: names a certificate cannot carry, stray arguments, --json -------------------
for bad in "$(printf 'Acme\033[31m')" "$(printf 'Acme\nSecurity')" "" "$(printf 'Acme \xff')"; do
  rm -rf badname-id
  rc "$CR" keygen --out badname-id --name "$bad"
  expect_eq "keygen --name $(printf '%q' "$bad"): exit 2" 2 "$RC"
  expect_grep "keygen --name $(printf '%q' "$bad"): says what is wrong" "keygen: error: --name" cmd.err
  if [ -e badname-id/identity.key ]; then fail "keygen made an identity with a bad name"; else ok "no identity with a bad name"; fi
done
rc "$CR" keygen --out stray-id stray-arg
expect_eq "keygen with a stray argument: exit 2" 2 "$RC"
expect_grep "keygen with a stray argument: names it" 'unexpected argument "stray-arg"' cmd.err
rc "$CR" keygen --out 'quote"d-id' --name "Ünïcode & Co" --json
expect_eq "keygen --json: exit 0" 0 "$RC"
if python3 -c 'import json, sys; d = json.load(open("cmd.out")); sys.exit(d["identity"] != "quote\"d-id")'; then
  ok "keygen --json: valid JSON, the directory as given"
else fail "keygen --json: not valid JSON: $(cat cmd.out)"; fi
rc "$CR" keygen --out 'quote"d-id'
expect_eq "keygen over an existing identity: exit 2" 2 "$RC"
expect_grep "keygen over an existing identity: refuses" "refusing to overwrite" cmd.err

# ---- help --help, version --json ------------------------------------------------------------
rc "$CR" help --help
expect_eq "help --help: exit 0" 0 "$RC"
expect_grep "help --help: the top-level usage" "Usage: cleanroom COMMAND" cmd.out
rc "$CR" version --json
expect_eq "version --json: exit 0" 0 "$RC"
if python3 -c 'import json; d = json.load(open("cmd.out")); assert d["software"].startswith("cleanroom/")'; then
  ok "version --json: one JSON object"
else fail "version --json: $(cat cmd.out)"; fi

finish
