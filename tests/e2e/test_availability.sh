#!/usr/bin/env bash
# End to end: strangers cannot keep the pinned partner out (issue 14,
# finding 3). While an attacker holds 300 idle TCP connections and 300 TLS
# connections that completed the handshake (from the client's side) with an
# unpinned certificate (from 127.0.0.2 and 127.0.0.3; the partner runs from
# 127.0.0.1), and reopens
# each one the node closes so that 600 stay open on its side, the partner's
# `cleanroom run` completes with the right count at its first attempt.
# Measured and printed ("figure:" lines): the time of the partner's run,
# and the serve process's open fds and RSS before, while held and after
# release. The fds must stay within the documented cap (max_pending +
# 2 * max_sessions, plus the node's own handful).
source "$CR_E2E_LIB"

IDLE=${CR_AVAIL_IDLE:-300}
HELD_TLS=${CR_AVAIL_TLS:-300}
# The attacker's own descriptors: 600 sockets and a few more.
if [ "$(ulimit -n)" -lt $((IDLE + HELD_TLS + 64)) ]; then
  ulimit -n $((IDLE + HELD_TLS + 64)) 2>/dev/null || true
fi

# Small sets, and room for many runs of the query.
small_sets_fixture

fds() { ls "/proc/$1/fd" 2>/dev/null | wc -l; }
rss_kb() { sed -n 's/^VmRSS:[[:space:]]*\([0-9]*\).*/\1/p' "/proc/$1/status"; }

start_server template.json prov.csv
echo "server pid $SERVER_PID on port $PORT"
FD0=$(fds "$SERVER_PID")
RSS0=$(rss_kb "$SERVER_PID")
echo "figure: serve before the attack: $FD0 fds, RSS $RSS0 kB"

cat >attacker.py <<'EOF'
import os, selectors, socket, ssl, sys, time
port, n_idle, n_tls, ready, release = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5]
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
ctx.minimum_version = ssl.TLSVersion.TLSv1_3
ctx.load_cert_chain("stranger-id/identity.crt", "stranger-id/identity.key")
sel = selectors.DefaultSelector()
stats = {"opened": 0, "reopened": 0, "tls_done": 0, "tls_failed": 0}

# Idle connections from 127.0.0.2, TLS ones from 127.0.0.3: a flood from
# one address churns only that address's own slots (max_pending_per_ip).
SRC = {"idle": "127.0.0.2", "tls": "127.0.0.3"}

def open_one(kind):
    s = socket.create_connection(("127.0.0.1", port), source_address=(SRC[kind], 0))
    if kind == "tls":
        s.settimeout(5)
        s = ctx.wrap_socket(s)  # completes from our side: the node refuses us after
        stats["tls_done"] += 1
        s.setblocking(False)
        sel.register(s, selectors.EVENT_READ, [kind, "held"])
    else:
        s.setblocking(False)
        sel.register(s, selectors.EVENT_READ, [kind, "idle"])
    stats["opened"] += 1

def step_handshake(s, data):
    try:
        s.do_handshake()
        stats["tls_done"] += 1  # completed from the client's side: hold it
        data[1] = "held"
        sel.modify(s, selectors.EVENT_READ, data)
    except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
        pass
    except (ssl.SSLError, OSError) as e:
        stats["tls_failed"] += 1
        stats["last_error"] = str(e)
        reopen(s, data)

def reopen(s, data):
    sel.unregister(s)
    s.close()
    stats["reopened"] += 1
    open_retry(data[0])

def open_retry(kind):
    while True:
        try:
            return open_one(kind)
        except (ssl.SSLError, OSError) as e:
            stats["tls_failed"] += 1
            stats["last_error"] = str(e)

for i in range(max(n_idle, n_tls)):
    if i < n_idle:
        open_retry("idle")
    if i < n_tls:
        open_retry("tls")
announced = False
while not os.path.exists(release):
    for key, _ in sel.select(timeout=0.05):
        s, data = key.fileobj, key.data
        if data[1] == "hs":
            step_handshake(s, data)
            continue
        # The node wrote (an alert) or closed: read; reopen on the end.
        try:
            b = s.recv(4096)
        except (ssl.SSLWantReadError, ssl.SSLWantWriteError, BlockingIOError):
            continue
        except (ssl.SSLError, OSError):
            b = b""
        if not b:
            reopen(s, data)
    if not announced:
        open(ready, "w").write("%d\n" % len(sel.get_map()))
        announced = True
sys.stderr.write("attacker: last handshake error: %s\n" % stats.get("last_error"))
print("attacker: open %d, opened %d, reopened %d, tls handshakes completed %d, failed %d"
      % (len(sel.get_map()), stats["opened"], stats["reopened"], stats["tls_done"], stats["tls_failed"]))
EOF

python3 attacker.py "$PORT" "$IDLE" "$HELD_TLS" attacker.ready attacker.release >attacker.out 2>attacker.err &
APID=$!
for _ in $(seq 1 400); do
  [ -s attacker.ready ] && break
  kill -0 "$APID" 2>/dev/null || break
  sleep 0.05
done
if [ ! -s attacker.ready ]; then
  fail "the attacker did not get its connections open"
  sed 's/^/    /' attacker.err >&2
  kill "$APID" 2>/dev/null || true
  finish
  exit 1
fi
expect_eq "the attacker holds all of its connections" "$((IDLE + HELD_TLS))" "$(cat attacker.ready)"
sleep 1 # let the churn settle into its steady state
FD1=$(fds "$SERVER_PID")
RSS1=$(rss_kb "$SERVER_PID")
echo "figure: serve while $IDLE idle + $HELD_TLS unpinned-TLS connections are held: $FD1 fds, RSS $RSS1 kB"

T0=$(date +%s%N)
run_client template.json cons.csv overlap
T1=$(date +%s%N)
RUN_MS=$(((T1 - T0) / 1000000))
echo "figure: the partner's run took $RUN_MS ms"
expect_eq "the partner's run completes while the attack holds" 0 "$RUN_RC"
expect_eq "the partner's run gets the right count" "$EXPECTED" "$(json_field run.out count)"
if [ "$RUN_RC" -ne 0 ]; then sed 's/^/    /' run.err >&2; fi
FD2=$(fds "$SERVER_PID")
RSS2=$(rss_kb "$SERVER_PID")
echo "figure: serve after the run, attack still held: $FD2 fds, RSS $RSS2 kB"

# The documented bound: max_pending (64) + 2 * max_sessions (16) connections,
# plus the node's own descriptors (those open before the attack).
CAP=$((64 + 2 * 16))
for f in "$FD1" "$FD2"; do
  if [ "$f" -le $((FD0 + CAP)) ]; then ok "serve's fds ($f) stay within $FD0 + $CAP"; else
    fail "serve holds $f fds, more than $FD0 + $CAP"
  fi
done
expect_grep "the server says why it closed strangers' connections" \
  "closed to make room for a newer connection\|not the one the template pins" server.err

touch attacker.release
wait "$APID" || true
cat attacker.out
for _ in $(seq 1 60); do # the last lingering connections close (1 s at most)
  [ "$(fds "$SERVER_PID")" -le "$FD0" ] && break
  sleep 0.1
done
FD3=$(fds "$SERVER_PID")
RSS3=$(rss_kb "$SERVER_PID")
echo "figure: serve after the attacker let go: $FD3 fds, RSS $RSS3 kB"
ls -l "/proc/$SERVER_PID/fd" >fds-after.txt
expect_eq "serve's fds are back to where they were" "$FD0" "$FD3"

run_client template.json cons.csv overlap
expect_eq "a run after the attack completes" 0 "$RUN_RC"
kill -TERM "$SERVER_PID"
wait_server
expect_eq "the server stops cleanly" 0 "$SERVER_RC"
if grep -q "Sanitizer" server.err; then fail "sanitizer report from serve"; else ok "no sanitizer report"; fi
finish
