#!/usr/bin/env bash
# Two partners onboard with scripts/onboard.sh, non-interactively, each in
# its own directory: identities, the provider drafts and signs the template
# (overlap preset, both signatures required), the consumer joins and signs,
# the signatures go back; then the commands the script printed are run as
# printed: serve (through the serve.conf it wrote), ping, run. The count
# equals a plain join. Also: every preset drafts a valid template, the
# script's refusals, --config errors and overrides, and cmake --install.
source "$CR_E2E_LIB"

ONBOARD="$CR_SOURCE_DIR/scripts/onboard.sh"
export CLEANROOM="$CR"
mkdir -p acme homesure mail-to-homesure mail-to-acme

# A free TCP port for the provider (its address goes into the template).
free_port() {
  if command -v python3 >/dev/null 2>&1; then
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
  else
    echo $((20000 + RANDOM % 20000))
  fi
}
PORT=$(free_port)

# onboard NAME ARGS...: runs the script with stdin not a terminal; output in
# NAME.out (stdout + stderr), exit code in OB_RC.
onboard() {
  local name=$1
  shift
  set +e
  bash "$ONBOARD" "$@" </dev/null >"$name.out" 2>&1
  OB_RC=$?
  set -e
}
# fingerprint_in FILE: the 64-hex line the script printed.
fingerprint_in() { grep -oE '^ +[0-9a-f]{64}$' "$1" | head -1 | tr -d ' '; }
# command_in FILE WORD: the printed command line for `cleanroom WORD`.
command_in() { grep -E "^ +[^ ]*cleanroom $2 " "$1" | head -1 | sed 's/^ *//'; }

# ---- 1. each partner: identity and fingerprint ------------------------------
onboard p1 --role provider --name "Acme Security" --dir acme
expect_eq "provider: identity step exits 0" 0 "$OB_RC"
onboard c1 --role consumer --name "HomeSure Insurance" --dir homesure
expect_eq "consumer: identity step exits 0" 0 "$OB_RC"
P_FP=$(fingerprint_in p1.out)
C_FP=$(fingerprint_in c1.out)
expect_eq "provider's printed fingerprint is its certificate's" "$("$CR" fingerprint acme/identity/identity.crt)" "$P_FP"
expect_eq "consumer's printed fingerprint is its certificate's" "$("$CR" fingerprint homesure/identity/identity.crt)" "$C_FP"
expect_grep "without the partner's fingerprint it says what to do next" "send this fingerprint to your partner" p1.out

# Running it again keeps the identity.
onboard p1b --role provider --dir acme
expect_eq "a second run keeps the identity" "$P_FP" "$(fingerprint_in p1b.out)"
expect_grep "a second run says it kept it" "keeping the existing identity" p1b.out

# ---- 2. the provider drafts, checks and signs ----------------------------------
onboard p2 --role provider --dir acme --preset overlap --partner-fingerprint "$C_FP" \
  --partner-name "HomeSure Insurance" --address "127.0.0.1:$PORT" --listen "127.0.0.1:$PORT" \
  --data "$EX/provider.csv" --require-signatures
expect_eq "provider: draft exits 0" 0 "$OB_RC"
[ "$OB_RC" = 0 ] || sed 's/^/    /' p2.out >&2
expect_grep "the draft was checked" "template OK" p2.out
expect_grep "the draft was signed by the provider" "signed as the provider" p2.out
expect_grep "the draft names the consumer" "consumer   HomeSure Insurance" p2.out
expect_grep "the draft pins the consumer" "cert $C_FP" p2.out
expect_grep "the draft has the provider's address" "address 127.0.0.1:$PORT" p2.out
expect_grep "the draft requires both signatures" '"require_signatures": true' acme/template.json
expect_grep "serve.conf names the data" "^data = $EX/provider.csv" acme/serve.conf
HASH=$("$CR" template hash acme/template.json)
expect_grep "the provider is told the hash to compare" "$HASH" p2.out

# A second draft does not overwrite the first without --force.
onboard p2b --role provider --dir acme --preset overlap --partner-fingerprint "$C_FP" \
  --address "127.0.0.1:$PORT"
expect_eq "a second draft without --force: exit 2" 2 "$OB_RC"
expect_grep "a second draft: says --force" "use --force" p2b.out

# ---- 3. the consumer joins: check, sign, command --------------------------------
cp acme/template.json acme/template.json.sig mail-to-homesure/
onboard c2 --join mail-to-homesure/template.json --dir homesure --data "$EX/consumer.csv"
expect_eq "consumer: join exits 0" 0 "$OB_RC"
[ "$OB_RC" = 0 ] || sed 's/^/    /' c2.out >&2
expect_grep "the consumer sees the same hash" "$HASH" c2.out
expect_grep "the consumer is told its role" "this node is the consumer" c2.out
expect_grep "the consumer signed" "signed as the consumer" c2.out
if "$CR" template verify homesure/template.json >/dev/null 2>&1; then ok "consumer's copy holds both signatures"; else
  fail "consumer's copy does not hold both signatures"
fi

# The consumer's signatures go back; the provider joins its own template.
cp homesure/template.json homesure/template.json.sig mail-to-acme/
onboard p3 --join mail-to-acme/template.json --dir acme
expect_eq "provider: join of the signed template exits 0" 0 "$OB_RC"
if "$CR" template verify acme/template.json >/dev/null 2>&1; then ok "provider's copy holds both signatures"; else
  fail "provider's copy does not hold both signatures"
fi
expect_grep "rejoining keeps serve.conf's data" "^data = $EX/provider.csv" acme/serve.conf
expect_grep "rejoining keeps serve.conf's listen" "^listen = 127.0.0.1:$PORT" acme/serve.conf

# ---- 4. the printed commands, as printed ---------------------------------------------
SERVE_CMD=$(command_in p3.out serve)
PING_CMD=$(command_in c2.out ping)
RUN_CMD=$(command_in c2.out run)
expect_grep "the provider's command uses serve.conf" "serve --config" p3.out
[ -n "$PING_CMD" ] && ok "a ping command was printed" || fail "no ping command in c2.out"
[ -n "$RUN_CMD" ] && ok "a run command was printed" || fail "no run command in c2.out"
echo "serve: $SERVE_CMD"
echo "ping:  $PING_CMD"
echo "run:   $RUN_CMD"

(cd acme && eval "exec $SERVE_CMD --json" >../server.out 2>../server.err) &
SERVER_PID=$!
for _ in $(seq 1 200); do
  grep -q "listening on" server.err 2>/dev/null && break
  kill -0 "$SERVER_PID" 2>/dev/null || break
  sleep 0.05
done
expect_grep "the provider's node listens where the template says" "listening on 127.0.0.1:$PORT" server.err

set +e
(cd homesure && eval "$PING_CMD") >ping.out 2>ping.err
PING_RC=$?
(cd homesure && eval "$RUN_CMD --json") >run.out 2>run.err
RUN_RC=$?
set -e
expect_eq "the printed ping exits 0" 0 "$PING_RC"
expect_grep "the printed ping: OK" "ping OK" ping.out
expect_eq "the printed run exits 0" 0 "$RUN_RC"
[ "$RUN_RC" = 0 ] || sed 's/^/    /' run.err >&2
EXPECTED=$(comm -12 <(normalized_emails "$EX/provider.csv") <(normalized_emails "$EX/consumer.csv") | wc -l)
expect_eq "the consumer's count equals the plain join" "$EXPECTED" "$(json_field run.out count)"
kill "$SERVER_PID" 2>/dev/null || true
wait_server
expect_grep "the provider's node printed the count too" "\"count\":$EXPECTED" server.out

# Each audit log shows the session; the audit show command printed works.
SHOW_CMD=$(grep -oE "[^ ]*cleanroom audit show [^ ]+" c2.out | head -1)
set +e
eval "$SHOW_CMD" >show.out 2>&1
SHOW_RC=$?
set -e
expect_eq "the printed audit show exits 0" 0 "$SHOW_RC"
expect_grep "the consumer's audit log shows the released count" "count $EXPECTED" show.out

# ---- every preset drafts a valid template ----------------------------------------------
for preset in overlap segments members filtered-count; do
  mkdir -p "preset-$preset"
  onboard "preset-$preset" --role consumer --name "Buyer & Co \"B\"" --dir "preset-$preset" \
    --preset "$preset" --partner-fingerprint "$P_FP" --partner-name "Seller" \
    --address seller.example:7443 --data data.csv
  expect_eq "preset $preset: exit 0" 0 "$OB_RC"
  if "$CR" template check "preset-$preset/template.json" >"preset-$preset.check" 2>&1; then
    ok "preset $preset: the template checks"
  else
    fail "preset $preset: $(cat "preset-$preset.check")"
  fi
  expect_grep "preset $preset: the consumer's name, quotes and all" 'consumer   Buyer & Co "B"' "preset-$preset.check"
  expect_grep "preset $preset: the partner's name" "provider   Seller" "preset-$preset.check"
  expect_grep "preset $preset: a run command" "cleanroom run --template" "preset-$preset.out"
done
expect_grep "members preset: the run writes the matched rows" "\-\-out .*matched.csv" preset-members.out
expect_grep "filtered-count preset: the run gives the parameters" "\-\-param codes=" preset-filtered-count.out
expect_grep "segments preset: the run's query" "\-\-query overlap_by_segment" preset-segments.out

# ---- refusals ------------------------------------------------------------------------------
mkdir -p stranger
onboard s0 --dir stranger --join acme/template.json
expect_eq "join without an identity: exit 2" 2 "$OB_RC"
expect_grep "join without an identity: says to create it first" "create it first" s0.out
onboard s1a --dir stranger --role consumer --name Stranger
onboard s1 --dir stranger --join acme/template.json --role consumer
expect_eq "join of a template that does not pin us: exit 2" 2 "$OB_RC"
expect_grep "join of a template that does not pin us: says so" "does not pin this node's fingerprint" s1.out
onboard s2 --dir stranger2
expect_eq "missing --role without a terminal: exit 2" 2 "$OB_RC"
expect_grep "missing --role: names the flag" "\-\-role is required" s2.out
onboard s3 --role consumer --dir homesure --preset nosuch --partner-fingerprint "$P_FP" --address a:1
expect_eq "unknown preset: exit 2" 2 "$OB_RC"
onboard s4 --role consumer --dir homesure --preset overlap --partner-fingerprint abc --address a:1
expect_eq "bad fingerprint: exit 2" 2 "$OB_RC"
# Issue 16: what a new partner ran into.
onboard s5 --role consumer --dir homesure --preset overlap --partner-fingerprint "${P_FP:0:63}" --address a:1
expect_eq "63 hex digits: exit 2" 2 "$OB_RC"
expect_grep "63 hex digits: says expected 64, got 63" "expected 64 hex digits (a SHA-256 fingerprint), got 63" s5.out
mkdir -p colon-fp
onboard s6a --role consumer --name Colon --dir colon-fp
P_COLON="SHA256 Fingerprint=$(printf '%s' "$P_FP" | tr 'a-f' 'A-F' | sed 's/../&:/g; s/:$//')"
onboard s6 --role consumer --dir colon-fp --preset overlap --partner-fingerprint "$P_COLON" \
  --partner-name Seller --address seller.example:7443
expect_eq "openssl's fingerprint line (colons, prefix): accepted" 0 "$OB_RC"
expect_grep "openssl's fingerprint line: pinned as hex" "$P_FP" colon-fp/template.json
mkdir -p noaddr
onboard s7a --role provider --name NoAddr --dir noaddr
onboard s7 --role provider --dir noaddr --preset overlap --partner-fingerprint "$C_FP" --partner-name B
expect_eq "a provider drafting without --address: exit 2, not a guessed hostname" 2 "$OB_RC"
expect_grep "without --address: says it is required and why" "\-\-address HOST:PORT is required" s7.out
if [ -f noaddr/template.json ]; then fail "a template was drafted with a guessed address"; else ok "no template drafted with a guessed address"; fi
# A draft that fails (a port out of range) leaves no template behind, so the
# corrected run needs no --force.
onboard s8 --role provider --dir noaddr --preset overlap --partner-fingerprint "$C_FP" --address a.example:99999
expect_eq "a draft with a bad address: exit 2" 2 "$OB_RC"
if [ -e noaddr/template.json ] || [ -e noaddr/draft.json ]; then fail "a failed draft left a file: $(ls noaddr)"; else
  ok "a failed draft leaves no template"; fi
onboard s8b --role provider --dir noaddr --preset overlap --partner-fingerprint "$C_FP" --address 127.0.0.1:7443
expect_eq "the corrected draft runs without --force" 0 "$OB_RC"
expect_grep "the corrected draft: serve.conf listens on loopback" "^listen = 127.0.0.1:7443" noaddr/serve.conf
# A redraft with another address: serve.conf follows it (the old loopback
# listen would leave the partner nowhere to connect).
onboard s8c --role provider --dir noaddr --preset overlap --partner-fingerprint "$C_FP" --address acme.example:8443 --force
expect_eq "a redraft with a new address: exit 0" 0 "$OB_RC"
expect_grep "a redraft with a new address: serve.conf listens on its port" "^listen = 0.0.0.0:8443" noaddr/serve.conf
expect_grep "a redraft with a new address: says where it listens now" "now listens on 0.0.0.0:8443" s8c.out
# A name a certificate cannot carry: keygen's reason is shown.
onboard s9a --role provider --name "$(printf 'Acme\033[2J')" --dir ctrl-name
expect_eq "a name with a control character: exit 2" 2 "$OB_RC"
expect_grep "a name with a control character: keygen's reason is shown" "holds a control character" s9a.out
# --dir naming a file.
touch not-a-dir
onboard s9 --role provider --name X --dir not-a-dir
expect_eq "--dir naming a file: exit 2" 2 "$OB_RC"
expect_grep "--dir naming a file: says so" "is a file, not a directory" s9.out
# Joining something that is not a template leaves the agreed one in place.
cp homesure/template.json homesure-agreed.json
onboard s10 --join "$EX/consumer.csv" --dir homesure
expect_eq "join of a file that is not a template: exit 2" 2 "$OB_RC"
if cmp -s homesure/template.json homesure-agreed.json; then ok "a failed join leaves the agreed template untouched"; else
  fail "a failed join replaced the agreed template"; fi
# The partner changed the contract (min_count 100 -> 10) and sent it back
# with its signature: the join shows the difference and signs nothing.
mkdir -p changed
sed 's/"min_count": 100/"min_count": 10/' homesure/template.json >changed/template.json
"$CR" template sign changed/template.json --identity homesure/identity >/dev/null 2>&1
cp -r acme acme-copy
onboard s11 --join changed/template.json --dir acme-copy
expect_eq "join of a template the partner changed: exit 4" 4 "$OB_RC"
expect_grep "a changed template: says it is a different contract" "different contract" s11.out
expect_grep "a changed template: shows the difference" "+ .*released only if >= 10$" s11.out
expect_eq "a changed template: this node's template is unchanged" "$HASH" "$("$CR" template hash acme-copy/template.json)"
onboard s11b --join changed/template.json --dir acme-copy --force
expect_eq "a changed template with --force: exit 0" 0 "$OB_RC"
expect_eq "a changed template with --force: now the partner's" "$("$CR" template hash changed/template.json)" \
  "$("$CR" template hash acme-copy/template.json)"
# --help runs nothing: a `cleanroom` on PATH that notes being run stays silent.
mkdir -p fakebin
printf '#!/bin/sh\ntouch "%s/fakebin/ran"\n' "$WORK" >fakebin/cleanroom
chmod +x fakebin/cleanroom
set +e
PATH="$WORK/fakebin:$PATH" bash "$ONBOARD" --help >help.out 2>&1
HELP_RC=$?
set -e
expect_eq "onboard.sh --help: exit 0" 0 "$HELP_RC"
if [ -e fakebin/ran ]; then fail "onboard.sh --help executed a command from its help text"; else ok "onboard.sh --help executes nothing"; fi
expect_grep "onboard.sh --help shows the command in backquotes as text" 'its `cleanroom keygen`' help.out
# No cleanroom anywhere: says how to build or install it.
mkdir -p nobin
cp "$ONBOARD" nobin/onboard.sh
if PATH=/usr/bin:/bin command -v cleanroom >/dev/null 2>&1; then
  echo "skip: a cleanroom is installed in /usr/bin"
else
  set +e
  env -u CLEANROOM PATH=/usr/bin:/bin bash nobin/onboard.sh --role consumer --name X --dir nobin/x \
    </dev/null >nobin.out 2>&1
  NOBIN_RC=$?
  set -e
  expect_eq "no cleanroom binary: exit 2" 2 "$NOBIN_RC"
  expect_grep "no cleanroom binary: says how to build it" "cmake -S . -B build" nobin.out
  expect_grep "no cleanroom binary: says how to install it" "cmake --install build" nobin.out
  if grep -q "command not found" nobin.out; then fail "no cleanroom binary: 'command not found'"; else ok "no cleanroom binary: no 'command not found'"; fi
fi

# ---- --config: errors name the file and line; the command line wins -------------------------
printf 'template = template.json\n# a comment\nlisten = 127.0.0.1:0\nlisen = 1\n' >acme/bad.conf
set +e
"$CR" serve --config acme/bad.conf >cfg.out 2>cfg.err
CFG_RC=$?
set -e
expect_eq "unknown config key: exit 2" 2 "$CFG_RC"
expect_grep "unknown config key: file and line" 'acme/bad.conf:4: unknown key "lisen"' cfg.err
printf 'peer = x:1\n' >acme/bad2.conf
set +e
"$CR" serve --config acme/bad2.conf >cfg.out 2>cfg.err
CFG_RC=$?
set -e
expect_eq "a run key in a serve config: exit 2" 2 "$CFG_RC"
expect_grep "a run key in a serve config: says so" 'bad2.conf:1: "peer" does not apply to serve' cfg.err
(cd acme && exec "$CR" serve --config serve.conf --listen 127.0.0.1:0 --once --quiet >../ov.out 2>../ov.err) &
SERVER_PID=$!
for _ in $(seq 1 200); do
  grep -q "listening on" ov.err 2>/dev/null && break
  kill -0 "$SERVER_PID" 2>/dev/null || break
  sleep 0.05
done
if grep -q "listening on 127.0.0.1:$PORT " ov.err; then fail "--listen did not override serve.conf"; else
  expect_grep "--listen on the command line overrides serve.conf" "listening on 127.0.0.1:[0-9]" ov.err
fi
kill "$SERVER_PID" 2>/dev/null || true
wait_server

# ---- cmake --install: binary, man page, examples ----------------------------------------------
BUILD_DIR=$(dirname "$CR")
if command -v cmake >/dev/null 2>&1 && [ -f "$BUILD_DIR/cmake_install.cmake" ] &&
  grep -q "man1" "$BUILD_DIR/cmake_install.cmake"; then
  if cmake --install "$BUILD_DIR" --prefix "$WORK/prefix" >install.out 2>&1; then
    ok "cmake --install into a prefix"
    for f in bin/cleanroom share/man/man1/cleanroom.1 share/cleanroom/examples/overlap/template.json \
      share/cleanroom/examples/systemd/cleanroom-serve.service share/cleanroom/examples/systemd/serve.conf \
      share/doc/cleanroom/getting-started.md; do
      if [ -e "$WORK/prefix/$f" ]; then ok "installed $f"; else fail "not installed: $f"; fi
    done
    # A copy of the script outside the source tree finds the installed
    # examples next to the installed binary.
    mkdir -p inst elsewhere
    cp "$ONBOARD" elsewhere/onboard.sh
    set +e
    env CLEANROOM="$WORK/prefix/bin/cleanroom" bash elsewhere/onboard.sh --role consumer --name X --dir inst \
      --preset segments --partner-fingerprint "$P_FP" --address a.example:1 </dev/null >inst.out 2>&1
    INST_RC=$?
    set -e
    expect_eq "onboarding with an installed cleanroom and examples" 0 "$INST_RC"
    expect_grep "(the installed examples were used)" "prefix/share/cleanroom/examples/insurance" inst.out
  else
    fail "cmake --install: $(cat install.out)"
  fi
else
  echo "skip: no cmake or no install rules in $BUILD_DIR"
fi

finish
