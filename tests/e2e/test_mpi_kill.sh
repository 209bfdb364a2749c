#!/usr/bin/env bash
# End to end, issue 21: a process of a cleanroom-mpi node killed (SIGKILL)
# in the middle of a session. Four cases, each with both parties as MPI jobs
# on this host:
#   1. a worker (rank 1) of the consumer (3 processes) during a members run;
#   2. a worker (rank 2) of the provider (3 processes) during a count;
#   3. rank 0 of the provider (the node itself);
#   4. rank 0 of the consumer.
# Always: both parties exit non-zero and say why on stderr, nothing is
# released (no count in either --json output, no members file or temporary
# file), and the surviving rank 0s' audit logs verify and end the session
# with session_aborted under a signed checkpoint. A worker's death leaves
# rank 0 alive to record it, so in cases 1 and 2 both logs must; when rank 0
# itself is killed (3, 4), the partner's log must.
source "$CR_E2E_LIB"
mpi_init

# 20000 keys a side: the session lasts several seconds (longer in the ASan
# build), the kill lands in its middle.
mpi_fixture 20000 20000 8000
# Nothing here may hang: mpirun is stopped after this many seconds (exit 124).
export MPI_TIMEOUT=120

# wait_event LOG EVENT: until LOG has EVENT (at most 60 s); 1 if not.
wait_event() {
  for _ in $(seq 1 1200); do
    grep -q "\"event\":\"$2\"" "$1" 2>/dev/null && return 0
    sleep 0.05
  done
  return 1
}

# last_session_outcome LOG: the event of the last session line (the one
# with "resources").
last_session_outcome() {
  grep '"resources":' "$1" 2>/dev/null | tail -1 | sed -n 's/.*"event":"\([a-z_]*\)".*/\1/p'
}

# ends_with_checkpoint LOG
ends_with_checkpoint() {
  case "$(tail -1 "$1" 2>/dev/null)" in *'"event":"checkpoint"'*) return 0 ;; *) return 1 ;; esac
}

# log_records_abort WHAT LOG CERT: LOG verifies, holds the session's
# session_aborted (as its session line) and ends with a checkpoint.
log_records_abort() {
  local what=$1 log=$2 cert=$3
  if "$CR" audit verify "$log" --cert "$cert" >"$log.verify" 2>&1; then ok "$what: the log verifies"; else
    fail "$what: the log does not verify: $(cat "$log.verify")"
  fi
  expect_eq "$what: the log records the session as aborted" session_aborted "$(last_session_outcome "$log")"
  if ends_with_checkpoint "$log"; then ok "$what: the log ends with a signed checkpoint"; else
    fail "$what: the log ends with: $(tail -1 "$log" | cut -c1-160)"
  fi
}

# kill_case NAME VICTIM_SIDE VICTIM_RANK KP KC QUERY
kill_case() {
  local name=$1 side=$2 rank=$3 kp=$4 kc=$5 q=$6
  local plog="$name-p.jsonl" clog="$name-c.jsonl" out=()
  echo "--- $name: kill -9 rank $rank of the $side ($kp provider, $kc consumer processes, query $q)"
  [ "$q" = members ] && out=(--out "$name-rows.csv")
  start_mpi_server "$kp" template.json prov.csv "$name-serve" --once --audit "$plog"
  local spid=$SERVER_PID
  mpi_argv "$kc"
  "${MPI_ARGV[@]}" run --template template.json --identity consumer-id --data cons.csv \
    --peer "127.0.0.1:$PORT" --query "$q" --json --audit "$clog" ${out[@]+"${out[@]}"} \
    </dev/null >"$name-run.out" 2>"$name-run.err" &
  local rpid=$!
  MPI_PIDS=("$rpid")
  local vlog=$clog vpid=$rpid
  if [ "$side" = provider ]; then vlog=$plog vpid=$spid; fi
  # In the session: its start is on disk and the sets are being exchanged.
  if wait_event "$vlog" session_started; then ok "$name: the session started"; else fail "$name: no session started"; fi
  sleep 0.5
  local victim
  victim=$(mpi_rank_pid "$vpid" "$rank")
  if [ -n "$victim" ]; then
    kill -KILL "$victim"
    ok "$name: killed rank $rank of the $side (pid $victim)"
  else
    fail "$name: rank $rank of the $side not found"
  fi
  set +e
  wait "$rpid"
  local rrc=$?
  wait "$spid"
  local src=$?
  set -e
  SERVER_PID=""
  MPI_PIDS=()
  echo "$name: exit codes: provider (mpirun) $src, consumer (mpirun) $rrc"
  for who in provider consumer; do
    local rc=$src f="$name-serve"
    [ $who = consumer ] && rc=$rrc f="$name-run"
    if [ "$rc" -ne 0 ] && [ "$rc" -ne 124 ]; then ok "$name: the $who exits non-zero ($rc)"; else
      fail "$name: the $who exits $rc$([ "$rc" -eq 124 ] && echo ' (hung: stopped by the test)')"
      sed 's/^/    /' "$f.err" >&2
    fi
    if grep -q '"count":\|"rows"' "$f.out"; then fail "$name: the $who's output holds a result"; else
      ok "$name: the $who's output holds no count, no rows"
    fi
  done
  if ls "$name-rows.csv"* >/dev/null 2>&1; then fail "$name: a members file was left"; else
    ok "$name: no members file"
  fi
  local vf="$name-run" pf="$name-serve" vcert=consumer-id/identity.crt pcert=provider-id/identity.crt
  local partner=provider partner_log=$plog
  if [ "$side" = provider ]; then
    vf="$name-serve" pf="$name-run" vcert=provider-id/identity.crt pcert=consumer-id/identity.crt
    partner=consumer partner_log=$clog
  fi
  # The victim's party: mpirun names the process that died; rank 0 (when it
  # survived) the session that failed.
  expect_grep "$name: mpirun names the killed process" "process rank $rank .*exited on signal 9" "$vf.err"
  # The partner: the session failed, said on stderr.
  expect_grep "$name: the $partner says the session failed" "session.*failed\|failed:" "$pf.err"
  log_records_abort "$name: the $partner" "$partner_log" "$pcert"
  if [ "$rank" -ne 0 ]; then
    # run says "session failed:", serve "session with ADDR failed:".
    expect_grep "$name: the $side's rank 0 says the session failed, naming the process" \
      "session\( with [^ ]*\)\? failed: .*process [0-9]* of [0-9]*" "$vf.err"
    log_records_abort "$name: the $side" "$vlog" "$vcert"
  fi
  # Neither log records a release.
  for f in "$plog" "$clog"; do
    if grep -q '"event":"result_released"' "$f"; then fail "$name: $f records a release"; else
      ok "$name: $f records no release"
    fi
  done
}

T0=$(date +%s)
kill_case consumer-worker consumer 1 2 3 members
kill_case provider-worker provider 2 3 2 overlap
kill_case provider-rank0 provider 0 2 2 overlap
kill_case consumer-rank0 consumer 0 2 2 by_segment
echo "4 cases: $(($(date +%s) - T0)) s"

no_key_in "outputs and logs" ./*-run.out ./*-run.err ./*-serve.out ./*-serve.err ./*.jsonl

finish
