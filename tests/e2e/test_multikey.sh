#!/usr/bin/env bash
# End to end with two match keys (examples/multikey, the template's
# match_keys e-mail and phone, count_of consumer): real nodes over loopback
# TLS on data generated here (another seed than the example's, half its
# size), where riders match the team by e-mail only, by phone only, by
# both, with their two keys on two different team rows, and not at all.
# Every released number (the count, its per-key breakdown, each cell under
# group_by, the count under a filter, the members rows and the key each
# matched on) must equal examples/multikey/truth.py, computed from the
# files independently of cleanroom. Then count_of provider (the team's holders counted) on the
# same files. And what the team does not learn: no per-record or per-key
# information where the query releases it nothing, no rider's key in any
# file or output of its node.
source "$CR_E2E_LIB"

MX="$CR_SOURCE_DIR/examples/multikey"
TRUTH="$MX/truth.py"
MIN=25

# ---- data, and the ground truth ---------------------------------------------

# The checked-in example is what its generator writes.
mkdir gen-default
"$MX/generate.sh" 20250301 gen-default >/dev/null
if cmp -s gen-default/team.csv "$MX/team.csv" && cmp -s gen-default/app.csv "$MX/app.csv"; then
  ok "examples/multikey's files are generate.sh's output"
else
  fail "examples/multikey's files differ from generate.sh's output (run it again)"
fi

"$MX/generate.sh" 7 . 50 >truth.txt
TEAM=$PWD/team.csv
APP=$PWD/app.csv
truth() { python3 "$TRUTH" --json --template "$MX/template.json" "$@" "$TEAM" "$APP"; }
# jget FILE PATH...: a value from a JSON file (python, not our crude json_field).
jget() {
  python3 -c 'import json, sys
v = json.load(open(sys.argv[1]))
for k in sys.argv[2:]:
    v = v[int(k)] if isinstance(v, list) else v.get(k) if isinstance(v, dict) else None
print("" if v is None else v)' "$@"
}
truth >t.json
truth --min-rides 20 >t-filter.json
truth --rows t.rows >/dev/null
sed 's/^/  /' truth.txt

# The generated data has every case the count must get right.
for combo in email phone email+phone; do
  n=$(jget t.json exactly "$combo")
  if [ "${n:-0}" -ge "$MIN" ]; then ok "data: $n riders match on exactly $combo"; else fail "data: too few match on exactly $combo ($n)"; fi
done
n=$(jget t.json split)
if [ "${n:-0}" -gt 0 ]; then ok "data: $n riders' e-mail and phone match two different team rows"; else fail "data: no rider matches two team rows"; fi
n=$(jget t.json unmatched_records)
if [ "${n:-0}" -gt 0 ]; then ok "data: $n riders match nothing"; else fail "data: every rider matches"; fi
if [ "$(jget t.json rows)" -gt "$(jget t.json count)" ]; then
  ok "data: matched riders with several app rows (merged accounts)"
else
  fail "data: no matched rider has several rows"
fi

# ---- nodes -------------------------------------------------------------------

make_identities
pin_template "$MX/template.json" template.json
mkdir team
mv provider-id team/
serve_team() {
  cd team || return 1
  rm -f server.out server.err
  start_server "../$1" "$TEAM" --once
  cd ..
}
team_files() {
  (cd team && find . -type f | grep -v -e '^\./provider-id/identity\.\(crt\|key\)$' \
    -e '^\./server\.\(out\|err\)$' -e 'audit[^/]*$' | sort | tr '\n' ' ')
}

# by_key_of FILE KEY: the released per-key count (or "suppressed").
by_key_of() {
  python3 -c 'import json, sys
r = json.load(open(sys.argv[1]))["released"]
for e in r.get("by_key", []):
    if e["key"] == sys.argv[2]:
        print("suppressed" if e.get("suppressed") else e["count"])' "$1" "$2"
}

# ---- 1. holders_riding: the count and its breakdown, to both -------------

serve_team template.json
run_client template.json "$APP" holders_riding
wait_server
expect_eq "count: run exits 0" 0 "$RUN_RC"
expect_eq "count: serve exits 0" 0 "$SERVER_RC"
expect_eq "count: the app's count equals the ground truth" "$(jget t.json count)" "$(jget run.out released count)"
expect_eq "count: the team's count equals the ground truth" "$(jget t.json count)" "$(jget team/server.out released count)"
for k in email phone; do
  expect_eq "count: app, records matched on $k" "$(jget t.json by_key $k)" "$(by_key_of run.out $k)"
  expect_eq "count: team, records matched on $k" "$(jget t.json by_key $k)" "$(by_key_of team/server.out $k)"
done
expect_eq "count: the count is of the consumer's records" consumer "$(jget run.out released count_of)"
expect_eq "count: the app's own set is its records" "$(jget t.json records)" "$(jget run.out own_set_size)"
expect_eq "count: the team sees the app's records as a bucket" "$(bucket "$(jget t.json records)")" \
  "$(jget team/server.out peer_set_size)"
expect_eq "count: the app sees the team's values as a bucket" "$(bucket "$(jget t.json values)")" \
  "$(jget run.out peer_set_size)"
expect_grep "count: the app's load line counts records" "records (" run.err

# ---- 2. by section and city (group_by both sides), to the app only ---------

serve_team template.json
run_client template.json "$APP" holders_riding_by_city
wait_server
expect_eq "group_by: run exits 0" 0 "$RUN_RC"
python3 - run.out t.json "$MIN" >cells.check <<'PY'
import json, sys
got = json.load(open(sys.argv[1]))["released"]
want = json.load(open(sys.argv[2]))["cells"]
mc = int(sys.argv[3])
bad, seen = 0, set()
for c in got["cells"]:
    k = c["provider"] + "|" + c["consumer"]
    seen.add(k)
    w = want.get(k, 0)
    if w >= mc and c.get("count") != w:
        print("cell %s: released %s, truth %d" % (k, c.get("count", "suppressed"), w)); bad += 1
    if w < mc and not c.get("suppressed"):
        print("cell %s: released %s, truth %d below min_count" % (k, c.get("count"), w)); bad += 1
for k, w in want.items():
    if k not in seen:
        print("cell %s (truth %d) missing" % (k, w)); bad += 1
released = sum(1 for c in got["cells"] if not c.get("suppressed"))
print("OK %d cells, %d released" % (len(got["cells"]), released) if bad == 0 else "BAD")
PY
if grep -q '^OK' cells.check; then ok "group_by: every cell equals the ground truth ($(grep '^OK' cells.check))"; else
  fail "group_by: cells differ:"; cat cells.check >&2
fi
if grep -q '"by_key"' run.out; then fail "group_by: a per-key breakdown beside cells"; else ok "group_by: cells only, no per-key breakdown"; fi
expect_grep "group_by: the team is released nothing" '"released":null' team/server.out

# ---- 3. a filter on the app's side --------------------------------------------

serve_team template.json
run_client template.json "$APP" frequent_riders --param min_rides=20
wait_server
expect_eq "filter: run exits 0" 0 "$RUN_RC"
expect_eq "filter: the count equals the ground truth over rides >= 20" "$(jget t-filter.json count)" \
  "$(jget run.out released count)"
# The breakdown is released only when every combination of keys it lets one
# derive (matched on e-mail only, phone only, both) is 0 or >= min_count.
by_key_want() {
  python3 -c 'import json, sys
t = json.load(open(sys.argv[1]))
mc = int(sys.argv[3])
small = any(0 < n < mc for n in t["exactly"].values())
print("suppressed" if small else t["by_key"][sys.argv[2]])' "$1" "$2" "$MIN"
}
for k in email phone; do
  expect_eq "filter: records matched on $k" "$(by_key_want t-filter.json $k)" "$(by_key_of run.out $k)"
done
if [ "$(jget t-filter.json count)" != "$(jget t.json count)" ]; then ok "filter: it changes the count"; else fail "filter: same count as without it"; fi

# ---- 4. members: the app's own rows and the key each matched on -------------

serve_team template.json
run_client template.json "$APP" safe_ride_offers --out offers.csv
wait_server
expect_eq "members: run exits 0" 0 "$RUN_RC"
expect_eq "members: the count equals the ground truth" "$(jget t.json count)" "$(jget run.out released count)"
expect_eq "members: rows written" "$(jget t.json rows)" "$(jget run.out released rows)"
if [ -f offers.csv ]; then
  expect_eq "members: header: the query's columns, then matched_on" "rider_id,matched_on" "$(head -1 offers.csv | tr -d '\r')"
  tail -n +2 offers.csv | tr -d '\r' | sort >got.rows
  if diff t.rows got.rows >rows.diff; then
    ok "members: every row and the key it matched on equal the ground truth ($(wc -l <got.rows) rows)"
  else
    fail "members: rows differ (< truth, > got):"
    head -20 rows.diff >&2
  fi
else
  fail "members: offers.csv was not written"
fi
# The team: nothing released, no file, no count, no record, no key.
expect_grep "members: the team is released nothing" '"released":null' team/server.out
for k in count rows by_key matched_on; do
  if grep -q "\"$k\"" team/server.out; then fail "members: the team's output holds $k"; else ok "members: the team's output holds no $k"; fi
done
expect_eq "members: the team's node wrote no file but its audit log and output" "" "$(team_files)"

# No rider's e-mail or phone (as the app wrote it, or normalized) in any
# file of the team's node.
python3 - "$APP" "$TEAM" >probe.keys <<'PY'
import csv, sys
team = set()
for r in csv.DictReader(open(sys.argv[2])):
    team.add(r["email"].strip().lower()); team.add("".join(c for c in r["phone"] if c.isdigit())[-10:])
for r in csv.DictReader(open(sys.argv[1])):
    e = r["email"].strip().lower()
    p = "".join(c for c in r["phone"] if c.isdigit())[-10:]
    # riders only: the team's own keys may of course be in its own log
    if e and "@" in e and e not in team:
        print(e)
    if len(p) == 10 and p not in team:
        print(p)
PY
for f in $(find team -type f ! -name 'identity.*'); do
  if tr 'A-Z' 'a-z' <"$f" | tr -d ' ().+-' | grep -qF -f probe.keys; then fail "$f holds a rider's key"; else ok "$f holds no rider's key"; fi
done

# ---- 5. count_of provider: the team's holders counted ------------------------

python3 - "$MX/template.json" >template-holders.json <<'PY'
import json, sys
t = json.load(open(sys.argv[1]))
t["count_of"] = "provider"
t["name"] += " (holders counted)"
# members return the counted side's records: the team's, to the team
t["queries"]["safe_ride_offers"]["results_to"] = ["provider"]
t["queries"]["safe_ride_offers"]["run_by"] = ["provider", "consumer"]
t["queries"]["safe_ride_offers"]["columns"] = ["holder_id"]
print(json.dumps(t, indent=2))
PY
pin_template template-holders.json holders.json
python3 "$TRUTH" --json --template template-holders.json "$TEAM" "$APP" >th.json
serve_team holders.json
run_client holders.json "$APP" holders_riding
wait_server
expect_eq "count_of provider: run exits 0" 0 "$RUN_RC"
expect_eq "count_of provider: the app's count equals the ground truth" "$(jget th.json count)" "$(jget run.out released count)"
expect_eq "count_of provider: the team's count equals the ground truth" "$(jget th.json count)" "$(jget team/server.out released count)"
for k in email phone; do
  expect_eq "count_of provider: records matched on $k" "$(jget th.json by_key $k)" "$(by_key_of run.out $k)"
done
expect_eq "count_of provider: released as the provider's records" provider "$(jget run.out released count_of)"
if [ "$(jget th.json count)" != "$(jget t.json count)" ]; then
  ok "count_of provider: another count than the riders' ($(jget th.json count) holders, $(jget t.json count) riders)"
else
  fail "count_of provider: the same count as count_of consumer"
fi

# The template check summary names both keys and the counted side.
"$CR" template check template.json >check.out 2>&1 || true
expect_grep "template check: the e-mail key" "match key: email" check.out
expect_grep "template check: the phone key" "match key: phone (columns: phone; normalize: phone; default country code 1)" check.out
expect_grep "template check: the counted side" "counts the consumer's records" check.out

finish
