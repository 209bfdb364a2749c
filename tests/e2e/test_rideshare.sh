#!/usr/bin/env bash
# End to end on examples/rideshare: the ride-share app (consumer) runs the
# members query "season_ticket_riders" and gets the rows of its own users
# whose e-mail is a season-ticket holder's (every row sharing a matched key,
# only the template's columns); the team (provider) learns nothing from it
# and writes no file. Then "riders_count", released to both. The rows file
# and every count are compared with a plain join computed here with awk.
source "$CR_E2E_LIB"

RX="$CR_SOURCE_DIR/examples/rideshare"
TEAM="$RX/team.csv"
APP="$RX/app.csv"
MIN=50

# ---- the plain join, independent of the engine ---------------------------

normalized_emails "$TEAM" >team.keys
normalized_emails "$APP" >app.keys
N_TEAM=$(wc -l <team.keys)
N_APP=$(wc -l <app.keys)
EXP_COUNT=$(comm -12 team.keys app.keys | wc -l)
# The app's rows whose normalized e-mail is a holder's: user_id,email as in the file.
awk -F, 'NR == FNR { team[$1] = 1; next }
  FNR == 1 { for (i = 1; i <= NF; i++) { if ($i == "email") c = i; if ($i == "user_id") u = i } next }
  { v = $c; sub(/\r$/, "", v); gsub(/^[ \t]+|[ \t]+$/, "", v); v = tolower(v)
    n = split(v, parts, "@")
    if (n == 2 && parts[1] != "" && parts[2] != "" && v !~ /[ \t]/ && (v in team)) print $u "," $c }' \
  team.keys "$APP" | sort >expected.rows
EXP_ROWS=$(wc -l <expected.rows)
# keys met on several matched rows (people with several app accounts)
MULTI=$(awk -F, '{ print tolower($2) }' expected.rows | sort | uniq -d | wc -l)
echo "plain join: team $N_TEAM keys, app $N_APP keys, $EXP_COUNT in both; $EXP_ROWS matching app rows ($MULTI keys on several rows)"
if [ "$EXP_COUNT" -ge "$MIN" ]; then ok "the overlap reaches min_count ($MIN)"; else fail "the overlap is below min_count"; fi
if [ "$MULTI" -gt 0 ] && [ "$EXP_ROWS" -gt "$EXP_COUNT" ]; then
  ok "the data has matched keys on several app rows"
else
  fail "the data has no matched key on several app rows"
fi

# ---- nodes: the team's node runs in its own directory ---------------------

make_identities
pin_template "$RX/template.json" template.json
mkdir team
mv provider-id team/
# Files the team's node left besides its identity, its audit log and its
# output (all of which are searched for member information below).
team_files() {
  (cd team && find . -type f | grep -v -e '^\./provider-id/identity\.\(crt\|key\)$' \
    -e '^\./server\.\(out\|err\)$' -e 'audit[^/]*$' | sort | tr '\n' ' ')
}

# serve_team TEMPLATE: the team serves one session from inside team/.
serve_team() {
  cd team || return 1
  start_server "../$1" "$TEAM" --once
  cd ..
}

# ---- 1. season_ticket_riders ----------------------------------------------

serve_team template.json
run_client template.json "$APP" season_ticket_riders --out riders.csv
wait_server

expect_eq "members: run exits 0" 0 "$RUN_RC"
expect_eq "members: serve exits 0" 0 "$SERVER_RC"
expect_eq "members: the app's released count equals the plain join" "$EXP_COUNT" "$(json_field run.out count)"
expect_eq "members: rows written" "$EXP_ROWS" "$(json_field run.out rows)"
expect_eq "members: rows_file" riders.csv "$(json_field run.out rows_file)"
expect_eq "members: the app sees the team's set size (a bucket)" "$(bucket "$N_TEAM")" "$(json_field run.out peer_set_size)"
expect_eq "members: the app's own set size" "$N_APP" "$(json_field run.out own_set_size)"
if [ -f riders.csv ]; then
  ok "members: riders.csv written"
  expect_eq "members: rows_file_sha256 is the file's" "$(sha256sum riders.csv | cut -d' ' -f1)" \
    "$(json_field run.out rows_file_sha256)"
  expect_eq "members: header is the query's columns" "user_id,email" "$(head -1 riders.csv | tr -d '\r')"
  tail -n +2 riders.csv | tr -d '\r' | sort >got.rows
  if diff expected.rows got.rows >rows.diff; then
    ok "members: the rows equal the plain join ($EXP_ROWS rows, duplicate keys included)"
  else
    fail "members: rows differ from the plain join (< expected, > got):"
    head -20 rows.diff >&2
  fi
  expect_eq "members: every line has exactly the two columns" 0 \
    "$(tr -d '\r' <riders.csv | awk -F, 'NF != 2' | wc -l)"
  if grep -q '+49' riders.csv; then fail "members: riders.csv holds phone numbers"; else ok "members: no phone column"; fi
else
  fail "members: riders.csv was not written"
fi
expect_eq "members: no partial file left" "" "$(ls riders.csv?* 2>/dev/null || true)"

# The team: nothing released, nothing written, no member information anywhere.
expect_grep "members: the team is released nothing" '"released":null' team/server.out
expect_eq "members: the team sees the app's set size (a bucket)" "$(bucket "$N_APP")" "$(json_field team/server.out peer_set_size)"
for k in count rows rows_file; do
  if grep -q "\"$k\":" team/server.out; then fail "members: the team's output holds $k"; else ok "members: the team's output holds no $k"; fi
done
expect_eq "members: the team's node wrote no file but its audit log and output" "" "$(team_files)"
cut -d, -f1 expected.rows >probe.ids
cut -d, -f2 expected.rows | tr 'A-Z' 'a-z' >probe.emails
for f in $(find team -type f ! -name 'identity.*'); do
  if tr 'A-Z' 'a-z' <"$f" | grep -qF -f probe.emails; then fail "$f holds an e-mail"; else ok "$f holds no e-mail"; fi
  if grep -qwF -f probe.ids "$f"; then fail "$f holds a user_id"; else ok "$f holds no user_id"; fi
done
# The app printed no row either: the rows are in the file only.
for f in run.out run.err; do
  if tr 'A-Z' 'a-z' <"$f" | grep -qF -f probe.emails; then fail "$f holds an e-mail"; else ok "$f holds no e-mail"; fi
done
cp run.out members-run.out

# ---- 2. riders_count: the count, to both ------------------------------------

rm -f team/server.out team/server.err
serve_team template.json
run_client template.json "$APP" riders_count
wait_server
expect_eq "count: run exits 0" 0 "$RUN_RC"
expect_eq "count: serve exits 0" 0 "$SERVER_RC"
expect_eq "count: the app's count equals the plain join" "$EXP_COUNT" "$(json_field run.out count)"
expect_eq "count: the team's count equals the plain join" "$EXP_COUNT" "$(json_field team/server.out count)"
expect_eq "count: the team sees the app's set size (a bucket)" "$(bucket "$N_APP")" "$(json_field team/server.out peer_set_size)"
for f in run.out team/server.out; do
  if grep -q '"rows' "$f"; then fail "count: $f mentions rows"; else ok "count: $f has a count only"; fi
done
expect_eq "count: the team's node still wrote no other file" "" "$(team_files)"

# ---- 3. below min_count: nothing is written -----------------------------------
# The same contract with the members query's min_count above the overlap.

HIGH=$((EXP_COUNT + 1))
awk -v high=$HIGH '/"season_ticket_riders"/ { q = 1 } q && /"min_count"/ { sub(/"min_count": *[0-9]+/, "\"min_count\": " high); q = 0 } { print }' \
  "$RX/template.json" >high.json
pin_template high.json template-high.json
rm -f team/server.out team/server.err
serve_team template-high.json
run_client template-high.json "$APP" season_ticket_riders --out riders-high.csv
wait_server
expect_eq "suppressed members: run exits 0" 0 "$RUN_RC"
expect_eq "suppressed members: serve exits 0" 0 "$SERVER_RC"
expect_grep "suppressed members: released as suppressed" '"released":{"suppressed":true' run.out
expect_eq "suppressed members: min_count shown" "$HIGH" "$(json_field run.out min_count)"
if grep -q '"count":\|"rows' run.out; then fail "suppressed members: a count or rows are shown"; else ok "suppressed members: no count, no rows"; fi
if ls riders-high.csv* >/dev/null 2>&1; then fail "suppressed members: a rows file was written"; else ok "suppressed members: no rows file"; fi
expect_grep "suppressed members: the team is released nothing" '"released":null' team/server.out

finish
