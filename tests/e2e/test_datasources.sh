#!/usr/bin/env bash
# Data as partners have it (issue 16): a REAL throwaway PostgreSQL server
# (initdb + pg_ctl into a temporary directory, Unix socket only, stopped on
# exit) holds the provider's customers; the consumer has them once in an
# SQLite file and once in a semicolon CSV (BOM, CRLF, other header names and
# case, a few malformed rows). The template names the key column per party.
# Each count must equal an independent join (python over psql's and
# sqlite's own output), members comes back from SQLite, the group_by cells
# from PostgreSQL, and a PostgreSQL source streams in bounded memory.
# Also: no password in a URI (refused, never logged), a data query that
# would write is refused and the table untouched, `data check` on each
# source, --out refused when it exists unless --force.
# Skips (exit 77) only when no PostgreSQL server binaries can be found;
# scripts/install-deps.sh installs them.
source "$CR_E2E_LIB"

# ---- a throwaway PostgreSQL cluster ---------------------------------------------------
find_pg_bin() {
  local d
  if command -v initdb >/dev/null 2>&1 && command -v pg_ctl >/dev/null 2>&1; then
    dirname "$(readlink -f "$(command -v initdb)")"
    return 0
  fi
  for d in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r) /usr/pgsql-*/bin; do
    if [ -x "$d/initdb" ] && [ -x "$d/pg_ctl" ]; then
      echo "$d"
      return 0
    fi
  done
  return 1
}
if ! PGBIN=$(find_pg_bin); then
  echo "SKIP: no PostgreSQL server binaries (initdb, pg_ctl); scripts/install-deps.sh installs them"
  exit 77
fi
PSQL_BIN="$PGBIN/psql"
[ -x "$PSQL_BIN" ] || PSQL_BIN=$(command -v psql)

# PostgreSQL refuses to run as root: as root, the cluster belongs to the
# postgres user (created if missing).
PGDIR=$(mktemp -d /tmp/cr-pg.XXXXXX)
chmod 755 "$PGDIR"
if [ "$(id -u)" = 0 ]; then
  id postgres >/dev/null 2>&1 || useradd --system --no-create-home --shell /usr/sbin/nologin postgres
  chown postgres "$PGDIR"
  as_pg() { runuser -u postgres -- "$@"; }
else
  as_pg() { "$@"; }
fi
pg_stop() {
  as_pg "$PGBIN/pg_ctl" -D "$PGDIR/data" -m immediate -w stop >/dev/null 2>&1 || true
  rm -rf "$PGDIR"
}
trap 'pg_stop; cleanup' EXIT

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
PGPORT=$(free_port)
as_pg "$PGBIN/initdb" -D "$PGDIR/data" -A trust -U cleanroom -E UTF8 --locale=C --no-sync \
  >initdb.log 2>&1 || { cat initdb.log >&2; fail "initdb"; finish; }
as_pg "$PGBIN/pg_ctl" -D "$PGDIR/data" -l "$PGDIR/server.log" -w -t 60 \
  -o "-c listen_addresses='' -k $PGDIR -p $PGPORT -c fsync=off -c full_page_writes=off" \
  start >pg_ctl.log 2>&1 || { cat pg_ctl.log "$PGDIR/server.log" >&2; fail "pg_ctl start"; finish; }
ok "a throwaway PostgreSQL server on $PGDIR/.s.PGSQL.$PGPORT"
psql_() { "$PSQL_BIN" -X -q -v ON_ERROR_STOP=1 -h "$PGDIR" -p "$PGPORT" -U cleanroom "$@"; }
psql_ -d postgres -c "CREATE DATABASE crm"
PGURI="postgresql://cleanroom@/crm?host=$PGDIR&port=$PGPORT"

# The provider: 3000 customers, some inactive, some without an e-mail or
# with a broken one, some in mixed case with spaces around.
psql_ -d crm <<'SQL'
CREATE TABLE customers (id serial PRIMARY KEY, email_address text, segment text, active boolean,
                        phone text);
INSERT INTO customers (email_address, segment, active, phone)
SELECT CASE WHEN i % 97 = 0 THEN NULL
            WHEN i % 89 = 0 THEN 'broken-' || i
            WHEN i % 3 = 0 THEN ' User' || i || '@Example.COM '
            ELSE 'user' || i || '@example.com' END,
       (ARRAY['video', 'alarm_only', 'smart_home'])[1 + i % 3],
       i % 10 <> 0,
       CASE WHEN i % 4 = 0 THEN '+1555' || lpad(i::text, 7, '0') END
FROM generate_series(1, 3000) AS i;
SQL
PQUERY="SELECT email_address, segment FROM customers WHERE active ORDER BY id"

# The consumer's two exports of the same kind of list.
python3 - <<'PY'
import sqlite3
db = sqlite3.connect("consumer.db")
db.execute("CREATE TABLE clients (mail TEXT, policy_id TEXT, region TEXT, tel TEXT)")
rows = []
for i in range(1500, 4500):
    mail = f"USER{i}@example.com" if i % 7 else f" user{i}@EXAMPLE.com"
    if i % 101 == 0:
        mail = None
    tel = f"+1 555 {i:07d}" if i % 4 == 0 else None
    rows.append((mail, f"P{i}", "north" if i % 2 else "south", tel))
# A second policy for a few customers: members returns every row of a key.
rows += [(f"user{i}@example.com", f"Q{i}", "west", None) for i in range(2000, 2010)]
db.executemany("INSERT INTO clients VALUES (?, ?, ?, ?)", rows)
db.commit()

with open("consumer.csv", "w", newline="", encoding="utf-8") as f:
    f.write("\ufeff MAIL ;Policy_ID;note\r\n")
    for i in range(2000, 3500):
        if i % 250 == 0:
            f.write(f'zz{i}@nowhere.org;"P{i};"unterminated\r\n')  # text after a closing quote
        elif i % 333 == 0:
            f.write(f"zz{i}@nowhere.org;P{i}\r\n")  # a field short
        else:
            f.write(f'User{i}@Example.com;P{i};"note, with a comma"\r\n')
    f.write('"zz9999@nowhere.org;P9999;never closed\r\n')  # the reader resumes after it
    f.write("user3499@example.com;P3499b;last\r\n")
PY
ok "consumer.db (SQLite) and consumer.csv (';', BOM, CRLF) written"

# ---- the independent join -------------------------------------------------------------
psql_ -d crm -At -c "SELECT coalesce(email_address, ''), segment FROM customers WHERE active" >provider.rows
python3 - <<'PY'
import csv, sqlite3
def norm(v):
    if v is None:
        return None
    v = v.strip().lower()
    parts = v.split("@")
    if len(parts) != 2 or not parts[0] or not parts[1] or any(c.isspace() for c in v):
        return None
    return v
prov, seg = set(), {}
for line in open("provider.rows", encoding="utf-8"):
    email, s = line.rstrip("\n").rsplit("|", 1)
    k = norm(email)
    if k:
        prov.add(k)
        seg.setdefault(k, s)
db = sqlite3.connect("consumer.db")
sq = {norm(m) for (m,) in db.execute("SELECT mail FROM clients")} - {None}
csvk = set()
# The CSV as generated (not as any CSV reader parses it): the well-formed rows.
for i in range(2000, 3500):
    if i % 250 and i % 333:
        csvk.add(f"user{i}@example.com")
csvk.add("user3499@example.com")
matched = sq & prov
policies = sorted(p for (m, p) in db.execute("SELECT mail, policy_id FROM clients") if norm(m) in matched)
with open("expected", "w") as f:
    f.write(f"PROV={len(prov)}\nSQLITE={len(sq & prov)}\nCSV={len(csvk & prov)}\n")
    f.write(f"SQLITE_SIZE={len(sq)}\nCSV_SIZE={len(csvk)}\nMEMBER_ROWS={len(policies)}\n")
    for s in ("video", "alarm_only", "smart_home"):
        f.write(f"SEG_{s}={sum(1 for k in csvk & prov if seg[k] == s)}\n")
with open("expected_policies", "w") as f:
    f.write("\n".join(policies) + "\n")
PY
source ./expected
ok "independent join: provider $PROV keys; SQLite overlap $SQLITE, CSV overlap $CSV"

# ---- identities and the template (key columns named per party) -----------------------
make_identities
cat >draft.json <<'JSON'
{
  "format": "cleanroom-template/1",
  "name": "Acme (PostgreSQL) x HomeSure (SQLite, CSV)",
  "parties": {
    "provider": {"org": "Acme", "cert_sha256": "0000000000000000000000000000000000000000000000000000000000000000"},
    "consumer": {"org": "HomeSure", "cert_sha256": "0000000000000000000000000000000000000000000000000000000000000000"}
  },
  "suite": "ristretto255",
  "match_key": {"name": "email", "columns": {"provider": ["email_address"], "consumer": ["Mail"]},
                "normalize": ["email"]},
  "data": {"provider": {"required_columns": ["segment"]}, "consumer": {"required_columns": ["policy_id"]}},
  "queries": {
    "overlap": {"kind": "count", "run_by": ["consumer"], "results_to": ["provider", "consumer"], "min_count": 10},
    "by_segment": {"kind": "count", "group_by": {"provider": "segment"}, "run_by": ["consumer"],
                   "results_to": ["consumer"], "min_count": 10},
    "my_matches": {"kind": "members", "run_by": ["consumer"], "results_to": ["consumer"],
                   "min_count": 10, "columns": ["policy_id"]}
  },
  "limits": {"max_runs_per_query": 50, "min_set_size": 100, "not_after": "2030-12-31T00:00:00Z"}
}
JSON
pin_template draft.json t.json
"$CR" template check t.json >check.out 2>&1 || { cat check.out >&2; fail "template check"; }
expect_grep "template check shows each party's key column" "provider email_address; consumer Mail" check.out

# ---- data check on each source ------------------------------------------------------------
set +e
"$CR" data check --template t.json --identity provider-id --data "$PGURI" --data-query "$PQUERY" \
  --query by_segment --json >dc_pg.out 2>dc_pg.err
DC_RC=$?
set -e
expect_eq "data check on PostgreSQL: exit 0" 0 "$DC_RC"
expect_eq "data check on PostgreSQL: distinct keys = the join's" "$PROV" "$(json_field dc_pg.out distinct_keys)"
expect_eq "data check on PostgreSQL: rows are counted in rows" "row" "$(json_field dc_pg.out unit)"
expect_grep "data check on PostgreSQL: the source kind" '"kind":"PostgreSQL"' dc_pg.out
expect_grep "data check on PostgreSQL: missing values counted" '"missing_value":{"count":' dc_pg.out
expect_grep "data check on PostgreSQL: per-label sizes" '"groups":\[{"label":"alarm_only"' dc_pg.out
if grep -q "example.com" dc_pg.out dc_pg.err; then fail "data check printed a key"; else ok "data check prints no key, only masked ones"; fi
expect_grep "data check: masked samples" '"masked_key":"u…m"' dc_pg.out
expect_grep "data check is in the audit log as a data access" '"event":"data_checked"' provider-id/audit.jsonl
if grep -q '"event":"session_started"\|"event":"node_started"' provider-id/audit.jsonl; then
  fail "a data check wrote a session or node line"
else
  ok "a data check writes no session or node line"
fi

set +e
"$CR" data check --template t.json --identity consumer-id --data "sqlite:$WORK/consumer.db" \
  --data-query "SELECT mail, policy_id FROM clients" >dc_sq.out 2>dc_sq.err
DC_RC=$?
"$CR" data check --template t.json --identity consumer-id --data consumer.csv \
  --max-reject-ratio 0.1 --json >dc_csv.out 2>dc_csv.err
DC2_RC=$?
set -e
expect_eq "data check on SQLite: exit 0" 0 "$DC_RC"
expect_grep "data check on SQLite: distinct keys" "distinct keys:   $SQLITE_SIZE " dc_sq.out
expect_grep "data check on SQLite: the verdict" "verdict: OK" dc_sq.out
expect_eq "data check on the CSV: exit 0" 0 "$DC2_RC"
expect_eq "data check on the CSV: the ';' was detected" ";" "$(json_field dc_csv.out delimiter)"
expect_eq "data check on the CSV: distinct keys" "$CSV_SIZE" "$(json_field dc_csv.out distinct_keys)"
expect_grep "data check on the CSV: malformed rows counted with lines" '"malformed_row":{"count":7,"first":\[2,252,502\]}' dc_csv.out
expect_grep "data check on the CSV: short rows counted" '"wrong_column_count":{"count":' dc_csv.out

# ---- sessions: provider serves from PostgreSQL ------------------------------------------
start_server t.json "$PGURI" --data-query "$PQUERY"
run_client t.json "sqlite:$WORK/consumer.db" overlap --data-query "SELECT mail, policy_id FROM clients"
expect_eq "SQLite consumer x PostgreSQL provider: run exits 0" 0 "$RUN_RC"
expect_eq "SQLite consumer x PostgreSQL provider: count = the join's" "$SQLITE" "$(json_field run.out count)"

run_client t.json consumer.csv overlap --max-reject-ratio 0.1
expect_eq "CSV consumer x PostgreSQL provider: run exits 0" 0 "$RUN_RC"
expect_eq "CSV consumer x PostgreSQL provider: count = the join's" "$CSV" "$(json_field run.out count)"

run_client t.json consumer.csv by_segment --max-reject-ratio 0.1
expect_eq "group_by over PostgreSQL labels: run exits 0" 0 "$RUN_RC"
for s in video alarm_only smart_home; do
  want=$(eval echo "\$SEG_$s")
  expect_grep "group_by: cell $s = the join's" "\"provider\":\"$s\",\"consumer\":\"\",\"count\":$want[,}]" run.out
done

run_client t.json "sqlite:$WORK/consumer.db" my_matches \
  --data-query "SELECT mail, policy_id FROM clients" --out matched.csv
expect_eq "members from SQLite: run exits 0" 0 "$RUN_RC"
expect_eq "members from SQLite: rows written" "$MEMBER_ROWS" "$(json_field run.out rows)"
tail -n +2 matched.csv | tr -d '\r' | sort >got_policies
if diff -q got_policies expected_policies >/dev/null; then ok "members from SQLite: exactly the matched rows' policy_id"; else fail "members rows differ: $(diff got_policies expected_policies | head -5)"; fi
expect_eq "members from SQLite: the selected column only" "policy_id" "$(head -1 matched.csv | tr -d '\r')"

# --out that exists: refused before anything is sent, unless --force.
run_client t.json "sqlite:$WORK/consumer.db" my_matches \
  --data-query "SELECT mail, policy_id FROM clients" --out matched.csv
expect_eq "--out over an existing file: exit 2" 2 "$RUN_RC"
expect_grep "--out over an existing file: says --force" "\-\-force" run.err
run_client t.json "sqlite:$WORK/consumer.db" my_matches \
  --data-query "SELECT mail, policy_id FROM clients" --out matched.csv --force
expect_eq "--out --force replaces it" 0 "$RUN_RC"
kill "$SERVER_PID" 2>/dev/null || true
wait_server
expect_grep "serve recorded the PostgreSQL source" '"source":"PostgreSQL"' provider-id/audit.jsonl
expect_grep "serve recorded the data query" '"data_query":"SELECT email_address, segment FROM customers WHERE active ORDER BY id"' provider-id/audit.jsonl
expect_grep "serve showed per-session progress" "serve: session with 127.0.0.1:[0-9]* (query overlap)" server.err

# ---- several match keys, named per party, PostgreSQL x SQLite ------------------------------
# The consumer's rows are merged into records by a shared e-mail or phone
# (union-find, as docs/template.md says); a record matches when one of its
# values is a provider value of the same key. No record here has two
# different values of one key, so every value of it is sent.
psql_ -d crm -At -c "SELECT coalesce(email_address, ''), coalesce(phone, '') FROM customers WHERE active" >provider2.rows
python3 - <<'PY'
import sqlite3
def norm(v):
    if v is None:
        return None
    v = v.strip().lower()
    parts = v.split("@")
    if len(parts) != 2 or not parts[0] or not parts[1] or any(c.isspace() for c in v):
        return None
    return v
def phone(v):
    return "+" + "".join(c for c in v if c.isdigit()) if v else None
pe, pp = set(), set()
for line in open("provider2.rows", encoding="utf-8"):
    e, p = line.rstrip("\n").split("|")
    if norm(e): pe.add(norm(e))
    if p: pp.add(phone(p))
db = sqlite3.connect("consumer.db")
rows = [(norm(m), phone(t), pid) for (m, t, pid) in db.execute("SELECT mail, tel, policy_id FROM clients ORDER BY rowid")]
rows = [r for r in rows if r[0] or r[1]]
parent = list(range(len(rows)))
def find(x):
    while parent[x] != x:
        parent[x] = parent[parent[x]]
        x = parent[x]
    return x
first = {}
for i, (e, p, _) in enumerate(rows):
    for k in (("e", e), ("p", p)):
        if k[1] is None:
            continue
        if k in first:
            parent[find(i)] = find(first[k])
        else:
            first[k] = i
recs = {}
for i, r in enumerate(rows):
    recs.setdefault(find(i), []).append(r)
hit = [m for m in recs.values() if any(e in pe for e, _, _ in m) or any(p in pp for _, p, _ in m)]
on_phone_only = [m for m in hit if not any(e in pe for e, _, _ in m)]
with open("expected2", "w") as f:
    f.write(f"MK_RECORDS={len(recs)}\nMK_COUNT={len(hit)}\nMK_PHONE_ONLY={len(on_phone_only)}\n")
    f.write(f"MK_MEMBER_ROWS={sum(len(m) for m in hit)}\n")
    f.write(f"MK_PHONE_ONLY_ROWS={sum(len(m) for m in on_phone_only)}\n")
    f.write(f"MK_TEL_MISSING={sum(1 for r in rows if r[1] is None)}\n")
PY
source ./expected2
ok "independent join, two keys: $MK_RECORDS consumer records, $MK_COUNT matched ($MK_PHONE_ONLY on the phone only)"
[ "$MK_PHONE_ONLY" -gt 0 ] || fail "the fixture must have records that only the phone matches"

cat >draft2.json <<'JSON'
{
  "format": "cleanroom-template/1",
  "name": "Acme (PostgreSQL) x HomeSure (SQLite), e-mail or phone",
  "parties": {
    "provider": {"org": "Acme", "cert_sha256": "0000000000000000000000000000000000000000000000000000000000000000"},
    "consumer": {"org": "HomeSure", "cert_sha256": "0000000000000000000000000000000000000000000000000000000000000000"}
  },
  "suite": "ristretto255",
  "match_keys": [
    {"name": "email", "columns": {"provider": ["email_address"], "consumer": ["Mail"]}, "normalize": ["email"]},
    {"name": "phone", "columns": {"provider": ["phone"], "consumer": ["tel"]}, "normalize": ["phone"]}
  ],
  "match": "any",
  "count_of": "consumer",
  "data": {"provider": {"required_columns": ["segment"]}, "consumer": {"required_columns": ["policy_id"]}},
  "queries": {
    "overlap": {"kind": "count", "run_by": ["consumer"], "results_to": ["consumer"], "min_count": 10},
    "my_matches": {"kind": "members", "run_by": ["consumer"], "results_to": ["consumer"],
                   "min_count": 10, "columns": ["policy_id"]}
  },
  "limits": {"max_runs_per_query": 50, "min_set_size": 100, "not_after": "2030-12-31T00:00:00Z"}
}
JSON
pin_template draft2.json t2.json
"$CR" template check t2.json >check2.out 2>&1 || { cat check2.out >&2; fail "template check (two keys)"; }
expect_grep "template check: the phone key's columns per party" "match key: phone (columns: provider phone; consumer tel" check2.out
PQUERY2="SELECT email_address, phone, segment FROM customers WHERE active ORDER BY id"
SQUERY2="SELECT mail, tel, policy_id FROM clients ORDER BY rowid"
set +e
"$CR" data check --template t2.json --identity consumer-id --data "sqlite:$WORK/consumer.db" \
  --data-query "$SQUERY2" --json >dc2.out 2>dc2.err
DC_RC=$?
"$CR" data check --template t2.json --identity provider-id --data "$PGURI" \
  --data-query "$PQUERY2" >dc2_pg.out 2>dc2_pg.err
DC2_RC=$?
set -e
expect_eq "data check, two keys, SQLite: exit 0" 0 "$DC_RC"
expect_eq "data check, two keys: records = the join's" "$MK_RECORDS" "$(json_field dc2.out records)"
expect_grep "data check, two keys: the phone's empty cells per key" "\"phone\":{\"missing\":$MK_TEL_MISSING,\"invalid\":0}" dc2.out
expect_eq "data check, two keys, PostgreSQL: exit 0" 0 "$DC2_RC"
expect_grep "data check, two keys, PostgreSQL: per-key lines" "phone .* empty, 0 invalid" dc2_pg.out

start_server t2.json "$PGURI" --data-query "$PQUERY2"
run_client t2.json "sqlite:$WORK/consumer.db" overlap --data-query "$SQUERY2"
expect_eq "two keys, SQLite x PostgreSQL: run exits 0" 0 "$RUN_RC"
expect_eq "two keys, SQLite x PostgreSQL: count = the join's records" "$MK_COUNT" "$(json_field run.out count)"
run_client t2.json "sqlite:$WORK/consumer.db" my_matches --data-query "$SQUERY2" --out matched2.csv
expect_eq "two keys, members from SQLite: run exits 0" 0 "$RUN_RC"
expect_eq "two keys, members from SQLite: every row of each matched record" "$MK_MEMBER_ROWS" "$(json_field run.out rows)"
expect_eq "two keys, members from SQLite: matched_on last" "policy_id,matched_on" "$(head -1 matched2.csv | tr -d '\r')"
expect_eq "two keys, members: rows matched on the phone only" "$MK_PHONE_ONLY_ROWS" "$(tr -d '\r' <matched2.csv | grep -c ',phone$' || true)"
kill "$SERVER_PID" 2>/dev/null || true
wait_server

# ---- refusals ------------------------------------------------------------------------------
set +e
"$CR" data check --template t.json --identity provider-id \
  --data "postgresql://cleanroom:Sup3rSecret@/crm?host=$PGDIR&port=$PGPORT" \
  --data-query "$PQUERY" >pw.out 2>pw.err
PW_RC=$?
"$CR" serve --template t.json --identity provider-id --listen 127.0.0.1:0 \
  --data "postgresql://cleanroom@/crm?host=$PGDIR&port=$PGPORT&password=Sup3rSecret" \
  --data-query "$PQUERY" >pw2.out 2>pw2.err
PW2_RC=$?
set -e
expect_eq "a password in the URI: refused (exit 2)" 2 "$PW_RC"
expect_eq "a password in the URI (?password=): refused by serve (exit 2)" 2 "$PW2_RC"
expect_grep "the refusal points to PGPASSWORD and .pgpass" "PGPASSWORD" pw.err
if grep -rq "Sup3rSecret" pw.err pw2.err provider-id/audit.jsonl; then fail "the password was echoed or logged"; else ok "the password is in no message and no log"; fi
expect_grep "serve --help says where the password goes" "PGPASSFILE" <("$CR" serve --help)

set +e
"$CR" data check --template t.json --identity provider-id --data "$PGURI" \
  --data-query "DELETE FROM customers RETURNING email_address, segment" >del.out 2>del.err
DEL_RC=$?
"$CR" data check --template t.json --identity provider-id --data "$PGURI" \
  --data-query "SELECT email_address, segment FROM customers; DROP TABLE customers" >drop.out 2>drop.err
DROP_RC=$?
set -e
expect_eq "a data query that writes: refused (exit 3)" 3 "$DEL_RC"
expect_eq "two statements: refused (exit 3)" 3 "$DROP_RC"
expect_eq "the table is untouched" 3000 "$(psql_ -d crm -At -c 'SELECT count(*) FROM customers')"
# A cast that fails on a value fails in the first FETCH (DECLARE only
# plans): the server's message would quote the value, here a match key.
set +e
"$CR" data check --template t.json --identity provider-id --data "$PGURI" \
  --data-query "SELECT email_address::int AS email_address, segment FROM customers ORDER BY id" \
  >cast.out 2>cast.err
CAST_RC=$?
set -e
expect_eq "a cast that fails on the first rows: exit 3" 3 "$CAST_RC"
expect_grep "the failure is named by its SQLSTATE" "SQLSTATE 22P02" cast.err
if grep -qi "example.com" cast.out cast.err; then
  fail "the failed cast's message quoted a value of the data: $(grep -i example.com cast.err | head -1)"
else
  ok "the failed cast's message quotes no value of the data"
fi

# ---- streaming: memory does not grow with the result --------------------------------------
# 200k rows read from PostgreSQL against the same rows from a CSV: both
# keep the same keys; the PostgreSQL source holds one FETCH batch besides.
psql_ -d crm -c "CREATE TABLE big AS SELECT 'user' || i || '@example.com' AS email_address,
  (ARRAY['video','alarm_only','smart_home'])[1 + i % 3] AS segment FROM generate_series(1, 200000) AS i"
psql_ -d crm -c "\\copy big TO '$WORK/big.csv' WITH (FORMAT csv, HEADER)"
# Under AddressSanitizer, freed memory waits in a quarantine (256 MiB by
# default) instead of being reused, which would count every freed FETCH
# batch: measure with the quarantine off (ignored by a normal build).
maxrss() { # maxrss CMD...: peak RSS (KiB) of the command, which must exit 0
  ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}quarantine_size_mb=0" python3 - "$@" <<'PY'
import resource, subprocess, sys
r = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss if r.returncode == 0 else -1)
PY
}
RSS_PG=$(maxrss "$CR" data check --template t.json --identity provider-id --audit big-audit.jsonl \
  --data "$PGURI" --data-query "SELECT email_address, segment FROM big")
RSS_CSV=$(maxrss "$CR" data check --template t.json --identity provider-id --audit big-audit.jsonl \
  --data "$WORK/big.csv")
echo "peak RSS for 200k rows: PostgreSQL ${RSS_PG} KiB, the same rows as CSV ${RSS_CSV} KiB"
# Fetching the whole result at once instead costs about 9 MiB more here
# (measured with CR_SOURCE_PG_BATCH raised to 10^6); streamed, under 1 MiB
# (2 MiB under AddressSanitizer).
if [ "$RSS_PG" -gt 0 ] && [ "$RSS_CSV" -gt 0 ] && [ "$RSS_PG" -le $((RSS_CSV + 5120)) ]; then
  ok "PostgreSQL rows are streamed: peak RSS within 5 MiB of the CSV's (${RSS_PG} vs ${RSS_CSV} KiB)"
else
  fail "PostgreSQL source memory: ${RSS_PG} KiB vs CSV ${RSS_CSV} KiB"
fi

finish
