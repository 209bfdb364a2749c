#!/usr/bin/env bash
# End to end: hostile runners against a cleanroom-mpi node (3 processes)
# serving for a while. A hostile peer's frames reach rank 0 only, but its
# points are re-blinded in shares on all three processes: an invalid point,
# a frame too long, a truncated one, a batch with a point too many or
# digests out of order must each fail that session alone, with the reason,
# nothing released, the node still serving; an honest plain `cleanroom run`
# then gets the right count. The hostile_peer cases are those of
# test_hostile.sh (which runs them all against plain cleanroom).
source "$CR_E2E_LIB"
mpi_init

HP=${HOSTILE_PEER:-$(dirname "$CLEANROOM")/tests/hostile/hostile_peer}
if [ ! -x "$HP" ]; then
  echo "FAIL: hostile_peer not found at $HP (build target hostile_peer, or set HOSTILE_PEER)" >&2
  exit 1
fi

# test_hostile.sh's small sets: 60 provider keys, 40 consumer keys, 24 in
# both, both announce 64 (lib.sh hostile_sets_fixture).
hostile_sets_fixture

MPI_TIMEOUT=300 start_mpi_server 3 template.json prov.csv server --timeout 2
echo "cleanroom-mpi server (mpirun pid $SERVER_PID) on port $PORT"
expect_grep "the node runs on 3 processes" "3 processes on 1 host" server.err

normal_run() {
  run_client template.json cons.csv overlap
  expect_eq "an honest run after $1: exit 0" 0 "$RUN_RC"
  expect_eq "an honest run after $1: the count" "$EXPECTED" "$(json_field run.out count)"
  if [ "$RUN_RC" -ne 0 ]; then sed 's/^/    /' run.err >&2; fi
}

normal_run "start"
runner_case plain_tcp "does not speak TLS 1.3" -
runner_case truncated "closed the connection in the middle of a frame" -
runner_case over_max "announced a frame of 16777217 bytes" PROTOCOL
runner_case not_a_frame "not a valid frame" PROTOCOL
normal_run framing
runner_case more_points "more points than the 64 it announced" PROTOCOL
runner_case noncanonical_point "point 0 of the partner's Batch 0 is not a valid" PROTOCOL
runner_case identity_point "point 0 of the partner's Batch 0 is not a valid" PROTOCOL
runner_case digests_unsorted "returned digests out of order" PROTOCOL
runner_case no_finish "closed the connection before the session completed" -
normal_run content

# Nothing the node printed or logged holds a key (keys.txt: both sets').
cut -d, -f1 prov.csv cons.csv | grep @ | sort -u >keys.txt
expect_eq "the key list holds both sets (the check can fail)" 76 "$(wc -l <keys.txt)"
no_key_in "the node's output and audit log" server.out server.err provider-id/audit.jsonl

# Stopped by hand (SIGTERM to mpirun, which passes it on): the node ends,
# no sanitizer report, the log verifies and records every session.
kill -TERM "$SERVER_PID"
for _ in $(seq 1 300); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.1; done
if kill -0 "$SERVER_PID" 2>/dev/null; then fail "the node did not stop on SIGTERM within 30 s"; else
  ok "the node stopped on SIGTERM"
fi
SERVER_PID=""
if grep -q "ERROR: AddressSanitizer\|runtime error:" server.err; then
  fail "a sanitizer report in the node's stderr"
  grep -A5 "ERROR: AddressSanitizer\|runtime error:" server.err | sed 's/^/    /' >&2
else
  ok "no sanitizer report"
fi
set +e
"$CR" audit verify provider-id/audit.jsonl --cert provider-id/identity.crt >verify.out 2>&1
VRC=$?
set -e
expect_eq "the node's audit log verifies" 0 "$VRC"
expect_eq "the audit log records all 12 sessions" 12 \
  "$(grep -c '"event":"session_aborted"\|"event":"result_released"\|"event":"connection_refused"' provider-id/audit.jsonl || true)"
finish
