#!/usr/bin/env bash
# End to end, issue 21: each party's cleanroom-mpi node on two simulated
# hosts. Four network namespaces, each with its own host name (a UTS
# namespace): the provider's p1 and p2, the consumer's c1 and c2.
#
#        provider                                   consumer
#   p2 ---clu--- p1 ----------- wan ----------- c1 ---clu--- c2
#   10.231.1.2   10.231.1.1  10.231.0.1   10.231.0.2   10.231.2.1   10.231.2.2
#
# Each party's cluster network (clu) is its own link, out of the other's
# reach; only the two rank 0s meet, over "wan". mpirun runs on p1 (c1) and
# starts its daemon on p2 (c2) through tests/e2e/netns-agent (`ip netns
# exec` in place of ssh: MCA plm_rsh_agent); Open MPI is pinned to the
# cluster network (btl_tcp_if_include, oob_tcp_if_include). The provider's
# rank 0 listens on its wan address, the consumer's connects to it.
#
# The count and the members file equal plain cleanroom's on the same data;
# each audit log records its party's processes and both simulated hosts.
# Skipped (77) unless root and allowed to make network namespaces.
source "$CR_E2E_LIB"
mpi_init

if [ "$(id -u)" -ne 0 ]; then
  echo "SKIP: needs root to make network namespaces (ip netns add)" >&2
  exit 77
fi
for tool in ip unshare; do
  command -v $tool >/dev/null 2>&1 || {
    echo "SKIP: $tool not found (iproute2, util-linux)" >&2
    exit 77
  }
done
AGENT="$CR_SOURCE_DIR/tests/e2e/netns-agent"

# Names unique to this run: several test runs may share the machine.
export CR_NETNS_PREFIX="cr$$-"
NS_MADE=()
netns_cleanup() {
  local ns p
  for ns in ${NS_MADE[@]+"${NS_MADE[@]}"}; do
    for p in $(ip netns pids "$ns" 2>/dev/null || true); do kill -KILL "$p" 2>/dev/null || true; done
  done
  mpi_cleanup
  for ns in ${NS_MADE[@]+"${NS_MADE[@]}"}; do ip netns delete "$ns" 2>/dev/null || true; done
}
trap netns_cleanup EXIT

if ! ip netns add "${CR_NETNS_PREFIX}p1" 2>netns.err; then
  echo "SKIP: ip netns add is not permitted here: $(cat netns.err)" >&2
  exit 77
fi
NS_MADE+=("${CR_NETNS_PREFIX}p1")
if ! ip netns exec "${CR_NETNS_PREFIX}p1" unshare --uts -- true 2>netns.err; then
  echo "SKIP: unshare --uts is not permitted here: $(cat netns.err)" >&2
  exit 77
fi
for h in p2 c1 c2; do
  ip netns add "$CR_NETNS_PREFIX$h"
  NS_MADE+=("$CR_NETNS_PREFIX$h")
done
ns() { echo "$CR_NETNS_PREFIX$1"; }
# link A IFNAME B: a veth pair named IFNAME in both hosts.
link() { ip -n "$(ns "$1")" link add "$2" type veth peer name "$2" netns "$(ns "$3")"; }
link p1 clu p2
link c1 clu c2
link p1 wan c1
addr() { ip -n "$(ns "$1")" addr add "$3" dev "$2"; }
addr p1 clu 10.231.1.1/24
addr p2 clu 10.231.1.2/24
addr c1 clu 10.231.2.1/24
addr c2 clu 10.231.2.2/24
addr p1 wan 10.231.0.1/24
addr c1 wan 10.231.0.2/24
for h in p1 p2 c1 c2; do
  for i in lo clu wan; do
    ip -n "$(ns $h)" link set "$i" up 2>/dev/null || true
  done
done
ok "4 simulated hosts: $(ip netns list | grep -c "^$CR_NETNS_PREFIX") namespaces named $CR_NETNS_PREFIX*"

# ---- data, and plain cleanroom's answers (over loopback) ---------------------

mpi_fixture 1500 1200 700
start_server template.json prov.csv
run_client template.json cons.csv overlap
expect_eq "plain overlap: run exits 0" 0 "$RUN_RC"
cp run.out plain-overlap.out
run_client template.json cons.csv members --out plain-members.csv
expect_eq "plain members: run exits 0" 0 "$RUN_RC"
kill -TERM "$SERVER_PID"
wait_server
PLAIN_COUNT=$(json_field plain-overlap.out count)
expect_eq "plain overlap: the fixture's overlap" 700 "$PLAIN_COUNT"

# ---- the two clusters ---------------------------------------------------------

# on_host HOST CMD...: CMD on the simulated host HOST (its namespace, its
# host name), exec'd: started with &, $! is CMD's own process.
on_host() {
  local h=$1
  shift
  ip netns exec "$(ns "$h")" unshare --uts -- sh -c 'hostname "$0" && exec "$@"' "$h" "$@"
}
# cluster_argv HOSTS NET K: MPI_ARGV for K processes on HOSTS (mpirun
# --host), Open MPI pinned to NET, launched through the agent; the
# environment the processes need goes with them (-x).
cluster_argv() {
  MPI_ARGV=(env "${MPI_ENV[@]}" timeout -k 5 120 mpirun --oversubscribe --bind-to none
    --host "$1" -np "$3" --mca plm_rsh_agent "$AGENT"
    --mca btl_tcp_if_include "$2" --mca oob_tcp_if_include "$2"
    -x ASAN_OPTIONS -x UBSAN_OPTIONS -x OMPI_MCA_btl_vader_single_copy_mechanism "$CRM")
}

T0=$(date +%s)
cluster_argv p1,p2 10.231.1.0/24 2
on_host p1 "${MPI_ARGV[@]}" serve --template template.json --identity provider-id --data prov.csv \
  --listen 10.231.0.1:0 --json --audit p.jsonl </dev/null >serve.out 2>serve.err &
SERVER_PID=$!
wait_listening "$SERVER_PID" serve.err
expect_grep "the provider: 2 processes on its 2 hosts" "2 processes on 2 host(s) (p1,p2)" serve.err

# The consumer: 3 processes, two on c1 (rank 0 and 1), one on c2.
cluster_argv c1:2,c2:1 10.231.2.0/24 3
for q in overlap members; do
  out=()
  [ "$q" = members ] && out=(--out netns-members.csv)
  set +e
  on_host c1 "${MPI_ARGV[@]}" run --template template.json --identity consumer-id --data cons.csv \
    --peer "10.231.0.1:$PORT" --query "$q" --json --audit c.jsonl ${out[@]+"${out[@]}"} \
    </dev/null >"run-$q.out" 2>"run-$q.err"
  rc=$?
  set -e
  expect_eq "$q: the consumer's run exits 0" 0 "$rc"
  [ "$rc" -eq 0 ] || sed 's/^/    /' "run-$q.err" >&2
  expect_grep "$q: the consumer: 3 processes on its 2 hosts" "3 processes on 2 host(s) (c1,c2)" "run-$q.err"
done
kill -TERM "$SERVER_PID"
wait_server
echo "two clusters, two sessions: $(($(date +%s) - T0)) s"

expect_eq "overlap: the consumer's count is plain cleanroom's" "$PLAIN_COUNT" "$(json_field run-overlap.out count)"
expect_eq "overlap: the provider's count is plain cleanroom's" "$PLAIN_COUNT" \
  "$(grep '"query":"overlap"' serve.out | head -1 | sed -n 's/.*"count":\([0-9]*\).*/\1/p')"
expect_eq "members: the count is plain cleanroom's" "$PLAIN_COUNT" "$(json_field run-members.out count)"
if cmp -s plain-members.csv netns-members.csv; then ok "members: the file is plain cleanroom's, byte for byte"; else
  fail "members: the file differs from plain cleanroom's"
fi
expect_eq "the provider saw its partner at the consumer's wan address" 10.231.0.2 \
  "$(sed -n 's/.*"peer":"\([0-9.]*\):[0-9]*".*/\1/p' serve.out | sort -u)"

# ---- audit logs: K and the simulated hosts -------------------------------------

want=$(cluster_json 2 p1 p2)
expect_eq "the provider's 2 session lines record $want" "2 2" \
  "$(grep -c '"resources":' p.jsonl) $(grep -cF "$want" p.jsonl)"
want=$(cluster_json 3 c1 c2)
expect_eq "the consumer's 2 session lines record $want" "2 2" \
  "$(grep -c '"resources":' c.jsonl) $(grep -cF "$want" c.jsonl)"
if "$CR" audit verify p.jsonl --cert provider-id/identity.crt >pv.out 2>&1; then ok "the provider's log verifies"; else
  fail "the provider's log does not verify: $(cat pv.out)"
fi
if "$CR" audit verify c.jsonl --cert consumer-id/identity.crt >cv.out 2>&1; then ok "the consumer's log verifies"; else
  fail "the consumer's log does not verify: $(cat cv.out)"
fi

# ---- the networks are what the picture says -----------------------------------

# The consumer's second host has no way to the provider, and the consumer's
# rank 0 none to the provider's cluster network: only the rank 0s meet.
routes() { ip -n "$(ns "$1")" route get "$2" >/dev/null 2>&1; }
if routes c1 10.231.0.1; then ok "c1 has a route to the provider's wan address"; else fail "c1 has no route to p1"; fi
if routes c2 10.231.0.1; then fail "c2 has a route to the provider"; else ok "c2 has no route to the provider"; fi
if routes c1 10.231.1.2; then fail "c1 has a route to the provider's cluster network"; else
  ok "c1 has no route to the provider's cluster network"
fi

no_key_in "outputs and logs" serve.out serve.err run-*.out run-*.err ./*.jsonl

finish
