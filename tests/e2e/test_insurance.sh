#!/usr/bin/env bash
# End to end on examples/insurance: HomeSure Insurance (consumer) runs
# "overlap" against two security firms, each its own node with its own
# identity and template, then "overlap_by_segment" with the one with the
# higher overlap. Every released number (each overlap, each segment cell,
# each group size) is compared with a plain join of the normalized e-mails
# computed here with awk/sort/comm; cells below min_count must show as
# suppressed, and their true value must appear in no output.
source "$CR_E2E_LIB"

IX="$CR_SOURCE_DIR/examples/insurance"
INS="$IX/insurer.csv"
MIN=100

# ---- the plain join, independent of the engine ---------------------------

normalized_emails "$INS" >ins.keys
normalized_emails "$IX/acme.csv" >acme.keys
normalized_emails "$IX/brightguard.csv" >bg.keys
N_INS=$(wc -l <ins.keys)
N_ACME=$(wc -l <acme.keys)
N_BG=$(wc -l <bg.keys)
EXP_ACME=$(comm -12 ins.keys acme.keys | wc -l)
EXP_BG=$(comm -12 ins.keys bg.keys | wc -l)
seg_map "$IX/brightguard.csv" >bg.segs
# per segment: "segment distinct-keys overlap"
awk 'NR == FNR { ins[$1] = 1; next } { size[$2]++; if ($1 in ins) both[$2]++ }
     END { for (s in size) print s, size[s], both[s] + 0 }' ins.keys bg.segs | sort >bg.expected
echo "plain join: insurer $N_INS keys; acme $N_ACME keys, overlap $EXP_ACME; brightguard $N_BG keys, overlap $EXP_BG"
echo "brightguard per segment (segment, keys, overlap):"
sed 's/^/  /' bg.expected

# The example must show what it claims: a clear winner, and segments on both
# sides of min_count.
if [ "$EXP_BG" -gt "$EXP_ACME" ]; then ok "the data has a winner (brightguard)"; else fail "brightguard's overlap is not the larger"; fi
if awk -v m=$MIN '$3 < m { s++ } $3 >= m { r++ } END { exit !(s >= 1 && r >= 1) }' bg.expected; then
  ok "some segments above and some below min_count"
else
  fail "the segments do not straddle min_count"
fi

# ---- nodes -----------------------------------------------------------------

make_identities
P2_FP=$("$CR" keygen --out provider2-id --name brightguard 2>/dev/null)
pin_template "$IX/template.json" template-acme.json
"$CR" template pin "$IX/template-brightguard.json" --provider "$P2_FP" --consumer "$C_FP" \
  --out template-bg.json >/dev/null 2>&1

# BrightGuard's node: like start_server, with its own identity and files.
BG_PID=""
bg_cleanup() {
  if [ -n "$BG_PID" ]; then kill "$BG_PID" 2>/dev/null || true; fi
  cleanup
}
trap bg_cleanup EXIT
start_bg() {
  : >bg.out
  : >bg.err
  "$CR" serve --template template-bg.json --identity provider2-id --data "$IX/brightguard.csv" \
    --listen 127.0.0.1:0 --json --once >bg.out 2>bg.err &
  BG_PID=$!
  BG_PORT=""
  for _ in $(seq 1 200); do
    BG_PORT=$(sed -n 's/.*listening on [^ ]*:\([0-9][0-9]*\).*/\1/p' bg.err | head -1)
    [ -n "$BG_PORT" ] && return 0
    kill -0 "$BG_PID" 2>/dev/null || break
    sleep 0.05
  done
  echo "brightguard's node did not start:" >&2
  cat bg.err >&2
  return 1
}
wait_bg() {
  set +e
  wait "$BG_PID"
  BG_RC=$?
  set -e
  BG_PID=""
}
run_bg() { # QUERY OUT [flags]: the insurer runs QUERY against BrightGuard
  local q=$1 out=$2
  shift 2
  set +e
  "$CR" run --template template-bg.json --identity consumer-id --data "$INS" \
    --peer "127.0.0.1:$BG_PORT" --query "$q" "$@" >"$out" 2>"${out%.out}.err"
  RUN_RC=$?
  set -e
}

# ---- 1. "overlap" against both firms, both nodes up at once ----------------

start_server template-acme.json "$IX/acme.csv" --once
start_bg
run_client template-acme.json "$INS" overlap
cp run.out acme-run.out
cp run.err acme-run.err
run_bg overlap bg-run.out --json
wait_server
wait_bg
cp server.out acme-server.out
cp bg.out bg-overlap-server.out

expect_eq "acme: run exits 0" 0 "$RUN_RC"
expect_eq "acme: serve exits 0" 0 "$SERVER_RC"
expect_eq "brightguard: serve exits 0" 0 "$BG_RC"
expect_eq "acme: insurer's overlap equals the plain join" "$EXP_ACME" "$(json_field acme-run.out count)"
expect_eq "brightguard: insurer's overlap equals the plain join" "$EXP_BG" "$(json_field bg-run.out count)"
expect_eq "acme: insurer's own set size" "$N_INS" "$(json_field acme-run.out own_set_size)"
expect_eq "acme: insurer sees acme's set size (a bucket)" "$(bucket "$N_ACME")" "$(json_field acme-run.out peer_set_size)"
expect_eq "brightguard: insurer sees brightguard's set size (a bucket)" "$(bucket "$N_BG")" "$(json_field bg-run.out peer_set_size)"
expect_eq "acme sees the insurer's set size (a bucket)" "$(bucket "$N_INS")" "$(json_field acme-server.out peer_set_size)"
expect_eq "brightguard sees the insurer's set size (a bucket)" "$(bucket "$N_INS")" "$(json_field bg-overlap-server.out peer_set_size)"
expect_grep "acme is released nothing" '"released":null' acme-server.out
expect_grep "brightguard is released nothing for overlap" '"released":null' bg-overlap-server.out
for f in acme-server.out bg-overlap-server.out; do
  if grep -q '"count":' "$f"; then fail "$f holds a count"; else ok "$f holds no count"; fi
done
GOT_A=$(json_field acme-run.out count)
GOT_B=$(json_field bg-run.out count)
if [ "${GOT_B:-0}" -gt "${GOT_A:-0}" ]; then PICK=brightguard; else PICK=acme; fi
expect_eq "the released overlaps pick the partner the plain join picks" brightguard "$PICK"

# ---- 2. "overlap_by_segment" with BrightGuard --------------------------------

start_bg
run_bg overlap_by_segment seg-run.out --json
wait_bg
cp bg.out seg-server.out
expect_eq "segments: run exits 0" 0 "$RUN_RC"
expect_eq "segments: serve exits 0" 0 "$BG_RC"

# cell FILE SEGMENT: that segment's cell object.
cell() { grep -o "{\"provider\":\"$2\",\"consumer\":\"[^\"]*\"[^}]*}" "$1" || true; }
# group_size FILE ROLE LABEL
group_size() {
  sed -n "s/.*\"$2_groups\":\[\([^]]*\)\].*/\1/p" "$1" | grep -o "{\"label\":\"$3\",\"size\":[0-9]*}" |
    sed 's/.*"size":\([0-9]*\)}/\1/'
}

NSEG=$(wc -l <bg.expected)
SUPPRESSED_VALUES=()
for side in seg-run.out seg-server.out; do
  who=$([ $side = seg-run.out ] && echo insurer || echo brightguard)
  expect_eq "$who: one cell per segment" "$NSEG" "$(grep -o '{"provider":' "$side" | wc -l)"
  expect_eq "$who: min_count" "$MIN" "$(sed -n 's/.*"min_count":\([0-9]*\).*/\1/p' "$side")"
  # Own groups are exact; the partner's are buckets (protocol v3).
  own_ins=$([ $side = seg-run.out ] && echo "$N_INS" || bucket "$N_INS")
  expect_eq "$who: the insurer's one group holds its whole set" "$own_ins" "$(group_size "$side" consumer "")"
  if grep -q '"released":{"cells":' "$side" && ! sed 's/"cells":\[[^]]*\]//' "$side" | grep -q '"count":'; then
    ok "$who: no total next to the cells"
  else
    fail "$who: released is not cells only"
  fi
  while read -r seg size both; do
    c=$(cell "$side" "$seg")
    want_size=$([ $side = seg-run.out ] && bucket "$size" || echo "$size")
    expect_eq "$who: $seg group size" "$want_size" "$(group_size "$side" provider "$seg")"
    expect_eq "$who: $seg cell's insurer label is empty (insurer not grouped)" '"consumer":""' \
      "$(echo "$c" | grep -o '"consumer":"[^"]*"')"
    if [ "$both" -ge "$MIN" ]; then
      expect_eq "$who: $seg overlap equals the plain join" "$both" \
        "$(echo "$c" | sed -n 's/.*"count":\([0-9]*\).*/\1/p')"
    else
      [ $side = seg-run.out ] && SUPPRESSED_VALUES+=("$both")
      if echo "$c" | grep -q '"suppressed":true' && ! echo "$c" | grep -q '"count"'; then
        ok "$who: $seg ($both < $MIN) is suppressed"
      else
        fail "$who: $seg ($both < $MIN) not suppressed: $c"
      fi
    fi
  done <bg.expected
done

# The same in human form, from the insurer's side.
start_bg
run_bg overlap_by_segment seg-human.out
wait_bg
cp bg.err seg-human-server.err
expect_eq "segments (human): run exits 0" 0 "$RUN_RC"
while read -r seg size both; do
  if [ "$both" -ge "$MIN" ]; then
    expect_grep "human: $seg shows $both" "^ *$seg  *(all)  *$both " seg-human.out
  else
    expect_grep "human: $seg shows suppressed" "^ *$seg  *(all)  *suppressed *$" seg-human.out
  fi
done <bg.expected

# A suppressed cell's true value is printed nowhere: not as a number in any
# output (strings and 64-hex ids removed), nor in stderr beyond the data
# summary line (whose rejected line numbers are not results).
numbers() {
  grep -v ' rows, .* accepted, ' "$1" | sed -E -e 's/"[^"]*"//g' -e 's/[0-9a-f]{64}//g' |
    grep -oE '[0-9]+(\.[0-9]+)?' || true
}
for v in "${SUPPRESSED_VALUES[@]}"; do
  leaked=""
  for f in seg-run.out seg-run.err seg-server.out bg.err seg-human.out seg-human.err; do
    if numbers "$f" | grep -qx "$v"; then leaked="$leaked $f"; fi
  done
  if [ -z "$leaked" ]; then ok "suppressed value $v appears in no output"; else fail "suppressed value $v appears in:$leaked"; fi
done

# No e-mail of either side in anything a node printed.
head -300 ins.keys >probe.keys
head -300 bg.keys >>probe.keys
head -300 acme.keys >>probe.keys
for f in acme-run.out acme-run.err bg-run.out bg-run.err acme-server.out server.err \
  bg-overlap-server.out seg-run.out seg-run.err seg-server.out seg-human.out seg-human.err seg-human-server.err; do
  if grep -qF -f probe.keys "$f"; then fail "$f contains a match key"; else ok "$f holds no match key"; fi
done

finish
