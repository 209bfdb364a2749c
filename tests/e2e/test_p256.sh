#!/usr/bin/env bash
# End to end with suite p256: the bundled example template switched to
# "suite": "p256" (and pinned with fresh fingerprints) gives, between two
# real node processes, the same overlap count as the ristretto255 template on
# the same data, and both equal a plain join computed here with awk. Then a
# suite mismatch: one node holds the p256 template, the other the
# ristretto255 one; the templates' hashes differ, so both refuse with
# TEMPLATE_MISMATCH (exit 4) and release nothing.
source "$CR_E2E_LIB"

make_identities
pin_template "$EX/template.json" r255.json
sed 's/"suite": *"ristretto255"/"suite": "p256"/' "$EX/template.json" >p256.src.json
pin_template p256.src.json p256.json

# The switch really happened, and only there.
expect_grep "p256 template names suite p256" '"suite": *"p256"' p256.json
expect_grep "ristretto255 template names suite ristretto255" '"suite": *"ristretto255"' r255.json
expect_eq "the templates differ only by the suite" 1 \
  "$(diff <(sed 's/ristretto255/p256/' r255.json) p256.json >/dev/null && echo 1 || echo 0)"
TH_R=$("$CR" template hash r255.json)
TH_P=$("$CR" template hash p256.json)
if [ -n "$TH_R" ] && [ -n "$TH_P" ] && [ "$TH_R" != "$TH_P" ]; then
  ok "the suite is part of the template hash"
else
  fail "template hashes: ristretto255 '$TH_R', p256 '$TH_P'"
fi

EXPECTED=$(comm -12 <(normalized_emails "$EX/provider.csv") <(normalized_emails "$EX/consumer.csv") | wc -l)
N_P=$(normalized_emails "$EX/provider.csv" | wc -l)
N_C=$(normalized_emails "$EX/consumer.csv" | wc -l)
echo "plain join: $EXPECTED of $N_P provider and $N_C consumer keys"

# run_suite NAME TEMPLATE: one overlap session; counts in <NAME>_RUN, <NAME>_SERVE.
run_suite() {
  local name=$1 tmpl=$2 t0 t1
  t0=$(date +%s%N)
  start_server "$tmpl" "$EX/provider.csv" --once
  run_client "$tmpl" "$EX/consumer.csv" overlap
  wait_server
  t1=$(date +%s%N)
  echo "$name session: $(((t1 - t0) / 1000000)) ms"
  expect_eq "$name: run exits 0" 0 "$RUN_RC"
  expect_eq "$name: serve --once exits 0" 0 "$SERVER_RC"
  if [ "$RUN_RC" != 0 ] || [ "$SERVER_RC" != 0 ]; then
    sed 's/^/    run.err: /' run.err >&2
    sed 's/^/    server.err: /' server.err >&2
  fi
  printf -v "${name}_RUN" '%s' "$(json_field run.out count)"
  printf -v "${name}_SERVE" '%s' "$(json_field server.out count)"
  expect_eq "$name: consumer's own set size" "$N_C" "$(json_field run.out own_set_size)"
  expect_eq "$name: consumer sees the provider's set size (a bucket)" "$(bucket "$N_P")" "$(json_field run.out peer_set_size)"
  expect_eq "$name: both report the same session id" \
    "$(json_field run.out session_id)" "$(json_field server.out session_id)"
  # Nothing either node printed holds a match key.
  local f
  for f in run.out run.err server.out server.err; do
    if normalized_emails "$EX/consumer.csv" | head -200 | grep -qF -f - "$f"; then
      fail "$name: $f contains a match key"
    fi
  done
  cp run.out "$name.run.out"
  cp server.out "$name.server.out"
}

run_suite r255 r255.json
run_suite p256 p256.json

expect_eq "ristretto255: consumer's count equals the plain join" "$EXPECTED" "$r255_RUN"
expect_eq "ristretto255: provider's count equals the plain join" "$EXPECTED" "$r255_SERVE"
expect_eq "p256: consumer's count equals the plain join" "$EXPECTED" "$p256_RUN"
expect_eq "p256: provider's count equals the plain join" "$EXPECTED" "$p256_SERVE"
expect_eq "p256 count equals the ristretto255 count" "$r255_RUN" "$p256_RUN"
echo "counts: plain join $EXPECTED, ristretto255 $r255_RUN, p256 $p256_RUN"

# --- suite mismatch, both ways ------------------------------------------------
# mismatch SERVER_TEMPLATE CLIENT_TEMPLATE SERVER_HASH CLIENT_HASH LABEL
mismatch() {
  local st=$1 ct=$2 sh=$3 ch=$4 label=$5
  start_server "$st" "$EX/provider.csv" --once
  run_client "$ct" "$EX/consumer.csv" overlap
  wait_server
  expect_eq "$label: run exits 4" 4 "$RUN_RC"
  expect_eq "$label: serve exits 4" 4 "$SERVER_RC"
  expect_grep "$label: serve says the templates differ" "templates differ" server.err
  expect_grep "$label: run names the provider's hash" "$sh" run.err
  expect_grep "$label: run names its own hash" "$ch" run.err
  expect_grep "$label: nothing released to the consumer" '"released":null' run.out
  if grep -q '"count":' run.out server.out; then
    fail "$label: a count was released"
  else
    ok "$label: no count released"
  fi
}
mismatch p256.json r255.json "$TH_P" "$TH_R" "provider p256, consumer ristretto255"
mismatch r255.json p256.json "$TH_R" "$TH_P" "provider ristretto255, consumer p256"

finish
