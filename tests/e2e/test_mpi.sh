#!/usr/bin/env bash
# End to end, issue 21: a party's node as K processes of an MPI job
# (`mpirun -np K cleanroom-mpi serve|run`), K = 1, 2, 3 on each side in
# every combination (3 x 3, 2 against 3 included), on this host with
# mpirun --oversubscribe. Every combination releases exactly what plain
# `cleanroom` releases on the same data, run here first: the count, every
# group_by cell (suppressed ones too) and group size, and the members rows
# file byte for byte; the plain run itself agrees with a plain join
# computed with awk. Each side's audit log records the session with
# resources.cluster = {processes: K, hosts: [this host]} (plain cleanroom:
# no cluster), and verifies. No output of any process and no audit log holds
# a match key. cleanroom-mpi --help and its refusal of other commands.
source "$CR_E2E_LIB"
mpi_init

# 1500 provider keys, 1200 consumer keys (1333 rows), 700 in both: a batch
# is far more than 16 elements per process, so every process computes.
NP=1500
NC=1200
OV=700
MIN=10
mpi_fixture $NP $NC $OV
# A hang is a failure: each mpirun is stopped after this long (exit 124).
export MPI_TIMEOUT=240
QUERIES="overlap by_segment members"

# ---- the plain join, independent of the engine ------------------------------

# provider: "key segment"; consumer: "key region" of the key's first row.
awk -F, 'NR > 1 { print tolower($1), $2 }' prov.csv | sort >prov.map
awk -F, 'NR > 1 { e = $2; gsub(/ /, "", e); e = tolower(e); if (!(e in s)) { s[e] = 1; print e, $3 } }' cons.csv |
  sort >cons.map
join prov.map cons.map >both.map
EXP_COUNT=$(wc -l <both.map)
EXP_ROWS=$(awk 'NR == FNR { m[$1] = 1; next } FNR > 1 { split($0, f, ","); e = f[2]; gsub(/ /, "", e)
  if (tolower(e) in m) n++ } END { print n + 0 }' both.map cons.csv)
# per cell "segment region overlap": every pair of labels, empty cells too
awk 'FILENAME == ARGV[1] { seg[$2] = 1; next } FILENAME == ARGV[2] { reg[$2] = 1; next }
  { c[$2 " " $3]++ } END { for (s in seg) for (r in reg) print s, r, c[s " " r] + 0 }' \
  prov.map cons.map both.map | sort >cells.expected
echo "plain join: $NP and $NC keys, $EXP_COUNT in both, $EXP_ROWS consumer rows; cells:"
tr '\n' ';' <cells.expected
echo
expect_eq "the fixture's overlap" $OV "$EXP_COUNT"
if awk -v m=$MIN '$3 < m { s++ } $3 >= m { r++ } END { exit !(s >= 1 && r >= 1) }' cells.expected; then
  ok "the fixture has cells above and below min_count"
else
  fail "the fixture's cells do not straddle min_count"
fi

# cells_of FILE: "segment region count|suppressed" per released cell, sorted.
cells_of() {
  grep -o '{"provider":"[^"]*","consumer":"[^"]*",[^}]*}' "$1" |
    sed -e 's/{"provider":"\([^"]*\)","consumer":"\([^"]*\)","count":\([0-9]*\).*/\1 \2 \3/' \
      -e 's/{"provider":"\([^"]*\)","consumer":"\([^"]*\)","suppressed":true.*/\1 \2 suppressed/' | sort
}

# ---- the baseline: plain cleanroom ------------------------------------------

start_server template.json prov.csv --audit plain-p.jsonl
for q in $QUERIES; do
  out=()
  [ "$q" = members ] && out=(--out plain-members.csv)
  run_client template.json cons.csv "$q" --audit plain-c.jsonl ${out[@]+"${out[@]}"}
  expect_eq "plain $q: run exits 0" 0 "$RUN_RC"
  cp run.out "plain-$q.out"
  cp run.err "plain-$q.err"
done
kill -TERM "$SERVER_PID"
wait_server
expect_eq "plain serve stops on SIGTERM" 0 "$SERVER_RC"
cp server.out plain-serve.out
cp server.err plain-serve.err
# The provider's outputs, one line per session in query order.
for q in $QUERIES; do grep "\"query\":\"$q\"" plain-serve.out >"plain-$q.srv" || true; done

expect_eq "plain overlap: the count is the plain join" "$EXP_COUNT" "$(json_field plain-overlap.out count)"
expect_eq "plain overlap: the provider's count" "$EXP_COUNT" "$(json_field plain-overlap.srv count)"
awk -v m=$MIN '{ print $1, $2, ($3 >= m ? $3 : "suppressed") }' cells.expected >cells.want
cells_of plain-by_segment.out >cells.got
if diff cells.want cells.got >cells.diff; then ok "plain by_segment: the cells are the plain join's"; else
  fail "plain by_segment: cells differ from the plain join (< expected, > got):"
  cat cells.diff >&2
fi
expect_eq "plain members: the count" "$EXP_COUNT" "$(json_field plain-members.out count)"
expect_eq "plain members: the rows" "$EXP_ROWS" "$(json_field plain-members.out rows)"
expect_eq "plain members: the file's rows" "$EXP_ROWS" "$(($(wc -l <plain-members.csv) - 1))"
for q in $QUERIES; do
  if [ -n "$(released "plain-$q.out")" ]; then ok "plain $q: a release to compare"; else fail "plain $q: no release found"; fi
done
if grep -q '"cluster"' plain-p.jsonl plain-c.jsonl; then fail "plain cleanroom's logs record a cluster"; else
  ok "plain cleanroom's logs record no cluster"
fi

# ---- every K_p x K_c ----------------------------------------------------------

# check_combo KP KC: the outputs of one combination against the baseline.
check_combo() {
  local kp=$1 kc=$2 q tag
  for q in $QUERIES; do
    tag="$kp x $kc $q"
    expect_eq "$tag: run exits 0" 0 "$(cat "m$kp-$kc-$q.rc")"
    if [ "$kc" -gt 1 ]; then
      expect_grep "$tag: rank 0 names the processes" "$kc processes on 1 host(s) ($HOST_NAME)" "m$kp-$kc-$q.err"
      expect_grep "$tag: rank 0 speaks as cleanroom-mpi" "^cleanroom-mpi run: " "m$kp-$kc-$q.err"
    fi
    local got want
    # (the members file's name is the run's own: compared below)
    got=$(released "m$kp-$kc-$q.out" | sed 's/"rows_file":"[^"]*"//')
    want=$(released "plain-$q.out" | sed 's/"rows_file":"[^"]*"//')
    if [ -n "$got" ] && [ "$got" = "$want" ]; then ok "$tag: the consumer's release is plain cleanroom's"; else
      fail "$tag: the consumer's release differs: got [$got] want [$want]"
    fi
    for f in own_set_size peer_set_size; do
      expect_eq "$tag: consumer's $f" "$(json_field "plain-$q.out" $f)" "$(json_field "m$kp-$kc-$q.out" $f)"
    done
    got=$(grep "\"session_id\":\"$(json_field "m$kp-$kc-$q.out" session_id)\"" "mserve-$kp.out" || true)
    if [ -n "$got" ]; then
      echo "$got" >"m$kp-$kc-$q.srv"
      got=$(released "m$kp-$kc-$q.srv")
      want=$(released "plain-$q.srv")
      if [ -n "$want" ] && [ "$got" = "$want" ]; then ok "$tag: the provider's release is plain cleanroom's"; else
        fail "$tag: the provider's release differs: got [$got] want [$want]"
      fi
    else
      fail "$tag: the provider printed no result for the session"
    fi
  done
  if cmp -s plain-members.csv "m$kp-$kc-members.csv"; then ok "$kp x $kc: the members file is plain cleanroom's, byte for byte"; else
    fail "$kp x $kc: the members file differs from plain cleanroom's"
  fi
}

T0=$(date +%s)
MPI_PIDS=()
for kp in 1 2 3; do
  start_mpi_server "$kp" template.json prov.csv "mserve-$kp" --audit "p$kp.jsonl"
  if [ "$kp" -gt 1 ]; then
    expect_grep "K_p=$kp: rank 0 names the processes" "$kp processes on 1 host(s) ($HOST_NAME)" "mserve-$kp.err"
  fi
  for kc in 1 2 3; do
    t=$(date +%s)
    # The three queries at once: sessions of one serving cluster in
    # parallel, the runs sharing their identity's audit log.
    mpi_argv "$kc"
    for q in $QUERIES; do
      out=()
      [ "$q" = members ] && out=(--out "m$kp-$kc-members.csv")
      "${MPI_ARGV[@]}" run --template template.json --identity consumer-id --data cons.csv \
        --peer "127.0.0.1:$PORT" --query "$q" --json --audit "c$kc.jsonl" ${out[@]+"${out[@]}"} \
        </dev/null >"m$kp-$kc-$q.out" 2>"m$kp-$kc-$q.err" &
      MPI_PIDS+=($!)
    done
    set -- $QUERIES
    for p in "${MPI_PIDS[@]}"; do
      set +e
      wait "$p"
      echo $? >"m$kp-$kc-$1.rc"
      set -e
      shift
    done
    MPI_PIDS=()
    echo "K_p=$kp K_c=$kc: $(($(date +%s) - t)) s"
    check_combo "$kp" "$kc"
  done
  kill -TERM "$SERVER_PID"
  wait_server
  # mpirun ends its job on SIGTERM: rank 0 stops the node (its log closed
  # with a checkpoint), the others end.
  case "$(tail -1 "p$kp.jsonl")" in
    *'"event":"checkpoint"'*) ok "K_p=$kp: the serving node's log ends with a checkpoint" ;;
    *) fail "K_p=$kp: the log ends with: $(tail -1 "p$kp.jsonl" | cut -c1-200)" ;;
  esac
done
echo "9 combinations: $(($(date +%s) - T0)) s"

# ---- audit logs -----------------------------------------------------------------

# Every session line (the one with "resources") records the cluster: 9
# sessions per provider K_p, 9 per consumer K_c.
for k in 1 2 3; do
  want=$(cluster_json "$k" "$HOST_NAME")
  expect_eq "K_p=$k: every session line records $want" "9 9" \
    "$(grep -c '"resources":' "p$k.jsonl") $(grep -cF "$want" "p$k.jsonl")"
  expect_eq "K_c=$k: every session line records $want" "9 9" \
    "$(grep -c '"resources":' "c$k.jsonl") $(grep -cF "$want" "c$k.jsonl")"
  cl="\"cluster\":{\"processes\":$k,\"hosts\":[\"$HOST_NAME\"]}"
  expect_eq "K_p=$k: the node's start records $cl" 1 \
    "$(grep '"event":"node_started"' "p$k.jsonl" | grep -cF "$cl")"
  expect_eq "K_c=$k: each run's start records $cl" 9 \
    "$(grep '"event":"node_started"' "c$k.jsonl" | grep -cF "$cl")"
  expect_eq "K_p=$k: 9 releases" 9 "$(grep -c '"event":"result_released"' "p$k.jsonl")"
  expect_eq "K_c=$k: 9 releases" 9 "$(grep -c '"event":"result_released"' "c$k.jsonl")"
  if "$CR" audit verify "p$k.jsonl" --cert provider-id/identity.crt >"pv$k.out" 2>&1; then
    ok "K_p=$k: the provider's log verifies"
  else
    fail "K_p=$k: the provider's log does not verify: $(cat "pv$k.out")"
  fi
  if "$CR" audit verify "c$k.jsonl" --cert consumer-id/identity.crt >"cv$k.out" 2>&1; then
    ok "K_c=$k: the consumer's log verifies"
    expect_grep "K_c=$k: the partner's 9 receipts verify" "9 partner receipts verified" "cv$k.out"
  else
    fail "K_c=$k: the consumer's log does not verify: $(cat "cv$k.out")"
  fi
done

# ---- nothing printed or logged holds a match key -------------------------------

no_key_in "outputs and logs" plain-*.out plain-*.err plain-serve.* m[0-9]-*.out m[0-9]-*.err \
  mserve-*.out mserve-*.err ./*.jsonl
# (the members files hold the consumer's own matched rows, as they should)
expect_grep "the key list is not empty (the check can fail)" "@mpi-e2e.example" keys.txt

# ---- the command line ------------------------------------------------------------

set +e
"$CRM" --help >help.out 2>help.err
HRC=$?
"$CRM" keygen --out x-id >keygen.out 2>keygen.err
KRC=$?
set -e
expect_eq "cleanroom-mpi --help exits 0" 0 "$HRC"
expect_grep "--help says to launch it with mpirun" "mpirun -np K" help.out
expect_eq "cleanroom-mpi keygen exits 2 (usage)" 2 "$KRC"
expect_grep "keygen is refused, naming cleanroom" '`cleanroom keygen`' keygen.err
if [ -e x-id ]; then fail "cleanroom-mpi keygen made an identity"; else ok "cleanroom-mpi keygen made nothing"; fi

finish
