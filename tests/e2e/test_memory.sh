#!/usr/bin/env bash
# End to end, issue 17 (docs/memory.md): a node's memory budget and its
# work directory.
#
# 1. Flags and files: --memory takes whole MiB from 1, in the node's config
#    file too (errors name the file, the line and the key), and a
#    collaboration.conf `memory` above the node's budget is refused naming
#    its file, line and key.
# 2. The same results with and without spilling: a count, a group_by count
#    and a members query, each run with the default budget and with
#    `--memory 1` on both nodes, give the same count, the same cells and a
#    byte-identical rows file, equal to a plain join computed here; with
#    `--memory 1` both nodes report spilled bytes (--json "spill"), with
#    the default budget none; --json has the phases and the peak RSS; the
#    work directories are empty afterwards.
# 3. Spill files are secrets: while a node runs with --memory 1 its open
#    spill files (unlinked O_TMPFILE files, seen through /proc/PID/fd) are
#    0600 in a 0700 directory, and no key of the data appears in them.
# 4. SIGKILL: a node killed mid-session leaves its `cleanroom-*` directory;
#    the next start removes it, says so on stderr and in the audit log
#    (spill_recovered), and after a normal exit nothing remains.
# 5. A full work directory (a 400 KiB tmpfs when this test may mount one;
#    the --spill-max 400K cap in any case: room for the provider's data
#    load, not for an overlap session's tables with a partner four times
#    its size): a clear error
#    naming the directory, exit 7 (local storage) on the node whose disk
#    filled, the failure in the audit log, nothing released, and the
#    partner reports the failure too (exit 5: the partner aborted the
#    session). A cap the data load itself exceeds: data check and serve
#    exit 7 naming the directory (not 3: the data is fine), recorded.
#
# Parts 2 (spilled bytes), 3 and 5 need the sorters to spill, i.e. the
# out-of-core dataset and engine.
source "$CR_E2E_LIB"

three_queries_template "memory budget test"

# gen NP NC OVERLAP PREFIX: prov.csv (NP keys, 6 segments) and cons.csv (NC
# keys, every 7th on two rows, 4 regions), OVERLAP keys in both. The keys
# are distinctive strings, searched for in the spill files below.
gen() {
  awk -v np="$1" -v nc="$2" -v k="$3" -v pfx="$4" -v op="$4prov.csv" -v oc="$4cons.csv" 'BEGIN {
    print "email,segment" > op
    for (i = 1; i <= np; i++) printf "zq%sk%07dx@memtest.example,s%d\n", pfx, i, i % 6 > op
    print "user_id,email,region" > oc
    for (j = 1; j <= nc; j++) {
      id = np - k + j
      printf "u%d,ZQ%sK%07dX@memtest.example,r%d\n", j, pfx, id, j % 4 > oc
      if (j % 7 == 0) printf "v%d,zq%sk%07dx@memtest.example,r%d\n", j, pfx, id, (j + 1) % 4 > oc
    }
  }'
}
gen 2400 2000 960 a
# The keys as they are normalized (what a node blinds): never on disk.
awk -F, 'NR > 1 { print tolower($1) }' aprov.csv >keys.txt
awk -F, 'NR > 1 { print tolower($2) }' acons.csv >>keys.txt
sort -u keys.txt -o keys.txt
EXP_COUNT=960
# members: every consumer row whose key matched (user_id,email as in the file)
awk -F, 'NR > 1 { id = substr($2, 5, 7) + 0; if (id <= 2400) print $1 "," $2 }' acons.csv | sort >expected.rows
EXP_ROWS=$(wc -l <expected.rows)

count_left() { find "$1" -mindepth 1 2>/dev/null | wc -l; }

# ---- 1. flags and files ----------------------------------------------------

set +e
"$CR" run --help >help.out 2>&1
"$CR" run --template template.json --identity consumer-id --data acons.csv --query overlap \
  --memory 0 >/dev/null 2>mem0.err
MEM0_RC=$?
printf 'template = template.json\nidentity = consumer-id\n# the budget\nmemory = lots\n' >bad.conf
"$CR" run --config bad.conf --data acons.csv --query overlap >/dev/null 2>badconf.err
BADCONF_RC=$?
"$CR" data check --template template.json --identity consumer-id --data acons.csv \
  --memory 1 --work-dir dc-work --json --audit dc.jsonl >dc.out 2>dc.err
DC_RC=$?
set -e
expect_grep "--help documents --memory" "--memory MiB" help.out
expect_grep "--help documents --work-dir" "--work-dir DIR" help.out
expect_eq "--memory 0 is refused (exit 2)" 2 "$MEM0_RC"
expect_grep "--memory 0: the error names the flag" "--memory takes MiB from 1" mem0.err
expect_eq "a bad memory in a config file is refused (exit 2)" 2 "$BADCONF_RC"
expect_grep "the error names the file, line and key" 'bad.conf:4: "memory" takes MiB' badconf.err
expect_eq "data check --memory 1 --work-dir: exit 0" 0 "$DC_RC"
expect_eq "data check: its work directory is empty afterwards" 0 "$(count_left dc-work)"

mkdir -p collabs/acme
cp template.json collabs/acme/template.json
printf 'data = %s/aprov.csv\n\nmemory = 512\n' "$PWD" >collabs/acme/collaboration.conf
set +e
"$CR" serve --check --collaborations collabs --identity provider-id --memory 256 >check.out 2>check.err
CHECK_RC=$?
set -e
expect_eq "a collaboration's memory above the node's is refused" 2 "$CHECK_RC"
expect_grep "...naming its file, line and key" 'collaboration.conf:3: "memory" is 512 MiB' check.out
printf 'data = %s/aprov.csv\nmemory = 8\nwork_dir = acme-work\n' "$PWD" >collabs/acme/collaboration.conf
set +e
"$CR" serve --check --collaborations collabs --identity provider-id >check2.out 2>check2.err
CHECK2_RC=$?
set -e
expect_eq "a collaboration with memory = 8 and its own work_dir can serve" 0 "$CHECK2_RC"
expect_eq "its work directory is empty afterwards" 0 "$(count_left collabs/acme/acme-work)"

# ---- 2. the same results with and without spilling -------------------------

# pair TAG QUERY MEM [run flags...]: serve --once + run, both with --memory
# MEM ("" for the default), each in a work directory of its own.
pair() {
  local tag=$1 q=$2 mem=$3
  shift 3
  local m=()
  [ -z "$mem" ] || m=(--memory "$mem")
  mkdir -p "w-$tag-p" "w-$tag-c"
  start_server template.json aprov.csv --once --timeout 60 --work-dir "w-$tag-p" "${m[@]}" \
    --audit "p-$tag.jsonl"
  run_client template.json acons.csv "$q" --timeout 60 --work-dir "w-$tag-c" "${m[@]}" \
    --audit "c-$tag.jsonl" "$@"
  wait_server
  cp run.out "run-$tag.out"
  cp run.err "run-$tag.err"
  cp server.out "serve-$tag.out"
  cp server.err "serve-$tag.err"
  expect_eq "$tag: run exits 0" 0 "$RUN_RC"
  expect_eq "$tag: serve exits 0" 0 "$SERVER_RC"
  expect_eq "$tag: nothing left in the work directories" 0 \
    "$(($(count_left "w-$tag-p") + $(count_left "w-$tag-c")))"
}

# released_of FILE: the "released" object, canonical.
released_of() {
  python3 -c '
import json, sys
r = json.loads(open(sys.argv[1]).readline())["released"]
if isinstance(r, dict):
    r.pop("rows_file", None)  # the --out names differ
print(json.dumps(r, sort_keys=True))' "$1"
}
# spilled FILE: the spill's bytes_written in a --json line ("none" if absent).
spilled() {
  python3 -c 'import json,sys; print(json.loads(open(sys.argv[1]).readline()).get("spill", {}).get("bytes_written", "none"))' "$1"
}

for q in overlap by_segment members; do
  extra=()
  [ "$q" != members ] || extra=(--out "rows-$q-big.csv")
  pair "$q-big" "$q" "" "${extra[@]}"
  [ "$q" != members ] || extra=(--out "rows-$q-tiny.csv")
  pair "$q-tiny" "$q" 1 "${extra[@]}"
  expect_eq "$q: the same release with --memory 1 as with the default budget" \
    "$(released_of "run-$q-big.out")" "$(released_of "run-$q-tiny.out")"
  expect_eq "$q: the same release on the provider's side too" \
    "$(released_of "serve-$q-big.out")" "$(released_of "serve-$q-tiny.out")"
  expect_eq "$q: the default budget spills nothing (consumer)" 0 "$(spilled "run-$q-big.out")"
  expect_eq "$q: the default budget spills nothing (provider)" 0 "$(spilled "serve-$q-big.out")"
  c_tiny=$(spilled "run-$q-tiny.out")
  p_tiny=$(spilled "serve-$q-tiny.out")
  if [ "$c_tiny" != none ] && [ "$c_tiny" -gt 0 ] && [ "$p_tiny" != none ] && [ "$p_tiny" -gt 0 ]; then
    ok "$q: --memory 1 spilled on both nodes ($c_tiny and $p_tiny bytes)"
  else
    fail "$q: --memory 1 did not spill (consumer $c_tiny, provider $p_tiny bytes)"
  fi
done
expect_eq "overlap: the count is the plain join's" "$EXP_COUNT" "$(json_field run-overlap-tiny.out count)"
CELLS=$(python3 -c 'import json,sys; r=json.loads(open(sys.argv[1]).readline())["released"]; print(sum(c.get("count",0) for c in r["cells"]), len(r["cells"]))' run-by_segment-tiny.out)
expect_eq "by_segment: 24 cells summing to the plain join's count" "$EXP_COUNT 24" "$CELLS"
if cmp -s rows-members-big.csv rows-members-tiny.csv; then
  ok "members: the rows file is byte-identical with --memory 1"
else
  fail "members: the rows files differ"
fi
tail -n +2 rows-members-tiny.csv | tr -d '\r' | sort >got.rows
if diff -q expected.rows got.rows >/dev/null; then ok "members: the rows are the plain join's ($EXP_ROWS)"; else
  fail "members: the rows differ from the plain join"
fi
python3 - run-overlap-tiny.out serve-overlap-tiny.out >json.check <<'PY' || true
import json, sys
bad = []
for path in sys.argv[1:]:
    o = json.loads(open(path).readline())
    ph = o.get("phases") or {}
    if not ph or any(not isinstance(v, (int, float)) or v < 0 for v in ph.values()):
        bad.append(path + ": phases")
    if path.startswith("run") and "loading" not in ph:
        bad.append(path + ": phases.loading")
    if not o.get("peak_rss_bytes", 0) > 0:
        bad.append(path + ": peak_rss_bytes")
    s = o.get("spill") or {}
    if not all(k in s for k in ("bytes_written", "peak_bytes", "runs")):
        bad.append(path + ": spill")
print("ok" if not bad else " ".join(bad))
PY
expect_eq "--json has phases, peak_rss_bytes and spill on both nodes" ok "$(cat json.check)"
expect_grep "the session's audit line records its peak RSS and spill" \
  '"event":"result_released".*"resources":{"peak_rss_bytes":[1-9][0-9]*,"spill":{"bytes_written"' \
  c-overlap-tiny.jsonl

# ---- 3. spill files are secrets ---------------------------------------------

gen 5000 5000 2500 b
mkdir -p w-sec-p w-sec-c copies
start_server template.json bprov.csv --once --timeout 60 --memory 1 --work-dir w-sec-p \
  --audit p-sec.jsonl
"$CR" run --template template.json --identity consumer-id --data bcons.csv \
  --peer "127.0.0.1:$PORT" --query overlap --json --timeout 60 --memory 1 --work-dir w-sec-c \
  --audit c-sec.jsonl >run-sec.out 2>run-sec.err &
RUN_PID=$!
# Poll both nodes' open files; when spill files are open, stop both nodes
# (SIGSTOP), copy the files through /proc/PID/fd, note their modes, go on.
SEEN=0
for _ in $(seq 1 3000); do
  for pid in "$SERVER_PID" "$RUN_PID"; do
    for fd in /proc/"$pid"/fd/*; do
      tgt=$(readlink "$fd" 2>/dev/null || true)
      case $tgt in
        */w-sec-?/cleanroom-*/*) ;;
        *) continue ;;
      esac
      case $tgt in */lock) continue ;; esac
      kill -STOP "$SERVER_PID" "$RUN_PID" 2>/dev/null || true
      SEEN=$((SEEN + 1))
      cat "$fd" >"copies/$pid-${fd##*/}-$SEEN" 2>/dev/null || true
      # The file may be closed between the listing and stat: note it only
      # when both modes were read.
      fmode=$(stat -L -c %a "$fd" 2>/dev/null || true)
      dmode=$(stat -c %a "$(dirname "$tgt")" 2>/dev/null || true)
      [ -n "$fmode" ] && [ -n "$dmode" ] && echo "$fmode $dmode $tgt" >>modes.txt
      kill -CONT "$SERVER_PID" "$RUN_PID" 2>/dev/null || true
    done
  done
  [ "$SEEN" -lt 6 ] || break
  kill -0 "$RUN_PID" 2>/dev/null || break
  sleep 0.01
done
set +e
wait "$RUN_PID"
SEC_RC=$?
set -e
wait_server
expect_eq "secrets: run exits 0" 0 "$SEC_RC"
expect_eq "secrets: the count is the plain join's" 2500 "$(json_field run-sec.out count)"
if [ "$SEEN" -gt 0 ]; then ok "secrets: spill files were open while the nodes ran ($SEEN seen)"; else
  fail "secrets: no spill file was ever open (did --memory 1 spill?)"
fi
BYTES=$(find copies -type f -exec cat {} + | wc -c)
if [ "$BYTES" -gt 0 ]; then ok "secrets: $BYTES bytes of spill files copied"; else fail "secrets: nothing copied"; fi
if [ -s modes.txt ] && ! grep -qv '^600 700 ' modes.txt; then
  ok "secrets: spill files are 0600 in a 0700 directory"
else
  fail "secrets: modes: $(head -3 modes.txt 2>/dev/null | tr '\n' ';')"
fi
if grep -q '(deleted)' modes.txt 2>/dev/null || grep -q '/#[0-9]' modes.txt 2>/dev/null; then
  ok "secrets: the spill files have no name (unlinked)"
else
  fail "secrets: a spill file has a name: $(head -1 modes.txt 2>/dev/null)"
fi
# Every normalized key (and its raw form) of both files, searched for.
awk -F, 'NR > 1 { print tolower($1) }' bprov.csv >bkeys.txt
awk -F, 'NR > 1 { print $2 }' bcons.csv >>bkeys.txt
if [ "$BYTES" -gt 0 ] && ! find copies -type f -exec cat {} + | grep -a -q -F -f bkeys.txt; then
  ok "secrets: no key of the data appears in the spill files"
elif [ "$BYTES" -gt 0 ]; then
  fail "secrets: a key of the data appears in a spill file"
fi
if [ "$BYTES" -gt 0 ] && ! find copies -type f -exec cat {} + | grep -a -q -F 'memtest.example'; then
  ok "secrets: not even the keys' common domain appears"
fi
expect_eq "secrets: nothing left in the work directories" 0 \
  "$(($(count_left w-sec-p) + $(count_left w-sec-c)))"

# ---- 4. SIGKILL, then the next start cleans up ------------------------------

mkdir -p w-kill
start_server template.json bprov.csv --once --timeout 60 --memory 1 --work-dir w-kill \
  --audit p-kill.jsonl
KILLED=$SERVER_PID
"$CR" run --template template.json --identity consumer-id --data bcons.csv \
  --peer "127.0.0.1:$PORT" --query overlap --json --timeout 60 --memory 1 \
  --work-dir w-kill-c --audit c-kill.jsonl >run-kill.out 2>run-kill.err &
RUN_PID=$!
for _ in $(seq 1 400); do
  grep -q '"event":"session_started"' p-kill.jsonl 2>/dev/null && break
  sleep 0.02
done
sleep 0.2
kill -KILL "$KILLED"
wait_server
set +e
wait "$RUN_PID"
KILL_RUN_RC=$?
set -e
if [ "$KILL_RUN_RC" -ne 0 ]; then ok "kill: the partner's run fails ($KILL_RUN_RC)"; else fail "kill: the run succeeded"; fi
STALE=$(find w-kill -mindepth 1 -maxdepth 1 -name 'cleanroom-*' | wc -l)
expect_eq "kill: the killed node left its cleanroom-* directory" 1 "$STALE"
start_server template.json bprov.csv --once --timeout 60 --memory 1 --work-dir w-kill \
  --audit p-kill.jsonl
expect_grep "kill: the next start says it removed it" 'work directory: removed 1 work directory' server.err
expect_eq "kill: only the new node's directory is there" 1 \
  "$(find w-kill -mindepth 1 -maxdepth 1 -name 'cleanroom-*' | wc -l)"
expect_grep "kill: the audit log records spill_recovered" '"event":"spill_recovered".*"dirs":1' p-kill.jsonl
kill -TERM "$SERVER_PID"
wait_server
expect_eq "kill: after a normal exit nothing remains" 0 "$(count_left w-kill)"

# ---- 5. a full work directory -------------------------------------------------

# full_case TAG DIR [FLAGS]: the provider's work directory DIR is full. Its
# data load fits; its session tables for an overlap count (both sides
# match, so it keeps the fingerprints and digests of both sets) do not:
# the partner's set (ccons.csv) is four times its own, and the provider's
# tables of the partner's points and digests grow with it. Extra serve
# flags in FLAGS.
gen 5000 20000 2500 c
full_case() {
  local tag=$1 dir=$2
  shift 2
  start_server template.json cprov.csv --once --timeout 60 --memory 1 --work-dir "$dir" \
    --audit "p-$tag.jsonl" "$@"
  run_client template.json ccons.csv overlap --timeout 60 --memory 1 --work-dir "w-$tag-c" \
    --audit "c-$tag.jsonl"
  wait_server
  expect_eq "$tag: serve exits 7 (local storage: its work directory is full)" 7 "$SERVER_RC"
  # The partner's disk is fine: it sees the session aborted (INTERNAL on
  # the wire), a protocol failure, exit 5.
  expect_eq "$tag: the partner's run fails too (exit 5)" 5 "$RUN_RC"
  expect_grep "$tag: the run says the partner aborted" "the partner aborted the session" run.err
  expect_grep "$tag: the error names the work directory" "$dir" server.err
  expect_grep "$tag: the session failed in its tables, not at start" "session with .* failed: .*work directory" server.err
  expect_grep "$tag: the provider's audit log records the failure" '"event":"session_aborted".*"error":"EIO"' "p-$tag.jsonl"
  expect_grep "$tag: the consumer's audit log records the failure" '"event":"session_aborted"' "c-$tag.jsonl"
  if grep -q '"event":"result_released"' "p-$tag.jsonl" "c-$tag.jsonl"; then
    fail "$tag: a result was released"
  else
    ok "$tag: nothing released"
  fi
  if grep -q '"released":{' run.out; then fail "$tag: the run printed a result"; else ok "$tag: the run printed no result"; fi
  cp server.err "serve-$tag.err"
  cp run.err "run-$tag.err"
}

MNT=""
mkdir -p w-tmpfs
if [ "$(id -u)" = 0 ] && mount -t tmpfs -o size=400k,mode=0700 tmpfs w-tmpfs 2>/dev/null; then
  MNT=$PWD/w-tmpfs
  trap 'umount "$MNT" 2>/dev/null || true; cleanup' EXIT
  full_case tmpfs "$MNT"
  umount "$MNT" && MNT=""
else
  echo "note: cannot mount a tmpfs here; the full work directory is tested with --spill-max only"
fi
mkdir -p w-cap
full_case cap "$PWD/w-cap" --spill-max 400K
expect_eq "cap: nothing left in the work directory" 0 "$(count_left w-cap)"

# A cap the data load itself exceeds (16K, with --memory 1): exit 7 naming
# the directory, from data check and from serve before it listens; both
# record it; the data is not blamed (exit 3 would send the operator to it).
mkdir -p w-load
set +e
"$CR" data check --template template.json --identity provider-id --data bprov.csv \
  --memory 1 --work-dir "$PWD/w-load" --spill-max 16K --audit dc-load.jsonl >dc-load.out 2>dc-load.err
DCL_RC=$?
timeout 30 "$CR" serve --template template.json --identity provider-id --data bprov.csv \
  --listen 127.0.0.1:0 --memory 1 --work-dir "$PWD/w-load" --spill-max 16K \
  --audit p-load.jsonl >serve-load.out 2>serve-load.err
SL_RC=$?
set -e
expect_eq "load cap: data check exits 7 (local storage)" 7 "$DCL_RC"
expect_grep "load cap: data check names the work directory" "work directory $PWD/w-load" dc-load.err
expect_grep "load cap: data check records it" '"event":"data_checked".*"verdict":"EIO"' dc-load.jsonl
expect_eq "load cap: serve exits 7 (local storage)" 7 "$SL_RC"
expect_grep "load cap: serve names the work directory" "work directory $PWD/w-load" serve-load.err
expect_grep "load cap: serve records the failed load" '"event":"data_load_failed"' p-load.jsonl
if grep -q "listening on" serve-load.err; then fail "load cap: serve listened"; else ok "load cap: serve did not listen"; fi
expect_eq "load cap: nothing left in the work directory" 0 "$(count_left w-load)"

finish
