#!/usr/bin/env bash
# The installed tree works: `cmake --install` of this build into a temporary
# prefix puts the library, headers, pkg-config file, man page, binary and
# onboarding script in place; libcleanroom.a holds every layer; programs
# built against the install with only
#   cc PROGRAM.c $(pkg-config --cflags --libs cleanroom)
# compile, link and run.
#
# Run by ctest (install.test_install), which sets:
#   CR_CMAKE, CR_BUILD_DIR, CR_SOURCE_DIR   cmake, the (built) build dir, the sources
#   CC, CR_NM, CR_PKG_CONFIG                the build's C compiler, nm, pkg-config
#   CR_SANITIZE_FLAGS   -fsanitize=... the build's objects need at link time
#                       (empty when not sanitized)
#   CR_INSTALL_{BIN,LIB,INCLUDE,MAN}DIR     the GNUInstallDirs dirs (relative)
#   CR_LAYER_ARCHIVES   layer=path/to/libcr_<layer>.a, ':'-separated
# Exit 77 (skipped) if an install dir is absolute (--prefix cannot move it).
set -euo pipefail

for v in CR_CMAKE CR_BUILD_DIR CR_SOURCE_DIR CC CR_NM CR_PKG_CONFIG CR_INSTALL_BINDIR \
  CR_INSTALL_LIBDIR CR_INSTALL_INCLUDEDIR CR_INSTALL_MANDIR CR_LAYER_ARCHIVES; do
  [ -n "${!v:-}" ] || { echo "test_install: $v is not set (run it through ctest)" >&2; exit 2; }
done
CR_SANITIZE_FLAGS=${CR_SANITIZE_FLAGS:-}
for d in "$CR_INSTALL_BINDIR" "$CR_INSTALL_LIBDIR" "$CR_INSTALL_INCLUDEDIR" "$CR_INSTALL_MANDIR"; do
  case "$d" in /*)
    echo "test_install: skipped: install dir $d is absolute, so an install to a temporary prefix would write there" >&2
    exit 77 ;;
  esac
done

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
WORK=$(mktemp -d "${TMPDIR:-/tmp}/cr-install.XXXXXX")
cleanup() {
  if [ "${KEEP_WORK:-0}" = 1 ]; then echo "work dir kept: $WORK" >&2; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
P=$WORK/prefix

PASSED=0 FAILED=0
ok() { echo "ok: $*"; PASSED=$((PASSED + 1)); }
fail() { echo "FAIL: $*" >&2; FAILED=$((FAILED + 1)); }

# ---- the install ----------------------------------------------------------
unset DESTDIR
"$CR_CMAKE" --install "$CR_BUILD_DIR" --prefix "$P" >"$WORK/install.log" 2>&1 ||
  { cat "$WORK/install.log" >&2; echo "FAIL: cmake --install" >&2; exit 1; }
ok "cmake --install $CR_BUILD_DIR --prefix $P"

LIB=$P/$CR_INSTALL_LIBDIR/libcleanroom.a
PC=$P/$CR_INSTALL_LIBDIR/pkgconfig/cleanroom.pc
for f in "$LIB" "$PC" "$P/$CR_INSTALL_MANDIR/man1/cleanroom.1" \
  "$P/$CR_INSTALL_INCLUDEDIR/cleanroom/common.h"; do
  if [ -f "$f" ]; then ok "installed ${f#"$P"/}"; else fail "not installed: ${f#"$P"/}"; fi
done
for h in "$CR_SOURCE_DIR"/include/cleanroom/*.h; do
  f=$P/$CR_INSTALL_INCLUDEDIR/cleanroom/$(basename "$h")
  cmp -s "$h" "$f" || fail "header not installed (or differs): ${f#"$P"/}"
done
for f in cleanroom cleanroom-onboard; do
  if [ -x "$P/$CR_INSTALL_BINDIR/$f" ]; then ok "installed ${CR_INSTALL_BINDIR}/$f"; else fail "not installed: ${CR_INSTALL_BINDIR}/$f"; fi
done
[ "$FAILED" -eq 0 ] || { echo "$PASSED passed, $FAILED failed"; exit 1; }

# ---- every layer is in the archive ----------------------------------------
# Each layer's own archive (what the tests link) against the installed one:
# every global symbol the layer defines must be defined in libcleanroom.a.
defined() { "$CR_NM" -g --defined-only "$1" 2>/dev/null | awk 'NF == 3 { print $3 }' | sort -u; }
defined "$LIB" >"$WORK/lib.syms"
IFS=: read -r -a layers <<<"$CR_LAYER_ARCHIVES"
for la in "${layers[@]}"; do
  layer=${la%%=*} archive=${la#*=}
  defined "$archive" >"$WORK/layer.syms"
  if [ ! -s "$WORK/layer.syms" ]; then fail "layer $layer: no symbols in $archive"; continue; fi
  missing=$(comm -23 "$WORK/layer.syms" "$WORK/lib.syms")
  if [ -z "$missing" ]; then
    ok "libcleanroom.a holds layer $layer ($(wc -l <"$WORK/layer.syms") symbols)"
  else
    fail "libcleanroom.a lacks layer $layer: $(printf '%s\n' "$missing" | wc -l) of its symbols, e.g. $(printf '%s\n' "$missing" | head -3 | paste -sd' ' -) (is cr_$layer in cr_add_library_archive?)"
  fi
done

# ---- pkg-config -----------------------------------------------------------
export PKG_CONFIG_PATH=$P/$CR_INSTALL_LIBDIR/pkgconfig
# A stray cleanroom.pc elsewhere must not be the one found.
unset PKG_CONFIG_LIBDIR
if [ "$("$CR_PKG_CONFIG" --variable=prefix cleanroom)" = "$P" ]; then
  ok "cleanroom.pc has prefix=$P"
else
  fail "cleanroom.pc prefix is $("$CR_PKG_CONFIG" --variable=prefix cleanroom), not $P"
fi
PC_FLAGS=$("$CR_PKG_CONFIG" --cflags --libs cleanroom) || { fail "pkg-config --cflags --libs cleanroom"; PC_FLAGS=""; }
PC_STATIC=$("$CR_PKG_CONFIG" --static --cflags --libs cleanroom) || { fail "pkg-config --static"; PC_STATIC=""; }
for want in -lcleanroom -lsodium -luv -ljansson -lprotobuf-c -lssl -lcrypto -pthread; do
  for out in "$PC_FLAGS" "$PC_STATIC"; do
    case " $out " in *" $want "*) ;; *) fail "pkg-config lacks $want: $out" ;; esac
  done
done
echo "pkg-config --cflags --libs cleanroom: $PC_FLAGS"

# ---- programs built against the install -----------------------------------
# build NAME SOURCE...: compiles and links $WORK/NAME the way an embedder
# would, with the flags pkg-config gives (plus the sanitizer runtime when
# the build was sanitized).
build() {
  local name=$1
  shift
  # shellcheck disable=SC2086 # the flags are words
  if "$CC" -std=c11 -Wall -Wextra -Werror $CR_SANITIZE_FLAGS -o "$WORK/$name" "$@" $PC_FLAGS \
    >"$WORK/$name.cc.log" 2>&1; then
    ok "built $name against the install"
  else
    cat "$WORK/$name.cc.log" >&2
    fail "cannot build $name: $CC -std=c11 $CR_SANITIZE_FLAGS -o $name $* $PC_FLAGS"
    return 1
  fi
}
# run NAME ARGS...: runs it, output in $WORK/NAME.out.
run() {
  local name=$1
  shift
  if "$WORK/$name" "$@" >"$WORK/$name.out" 2>"$WORK/$name.err"; then
    sed 's/^/    /' "$WORK/$name.out"
    ok "$name ran"
  else
    cat "$WORK/$name.out" "$WORK/$name.err" >&2
    fail "$name $* failed"
    return 1
  fi
}

# hello: a template's hash (template layer) and a new identity's
# fingerprint (net layer); both must agree with the installed CLI.
if build hello "$HERE/hello.c" && run hello "$CR_SOURCE_DIR/examples/overlap/template.json" "$WORK/hello-id"; then
  want=$("$P/$CR_INSTALL_BINDIR/cleanroom" template hash "$CR_SOURCE_DIR/examples/overlap/template.json")
  got=$(sed -n 's/^template hash //p' "$WORK/hello.out")
  if [ "$got" = "$want" ]; then ok "hello's template hash is cleanroom template hash's"; else fail "hello's template hash '$got', cleanroom's '$want'"; fi
  want=$("$P/$CR_INSTALL_BINDIR/cleanroom" fingerprint "$WORK/hello-id/identity.crt")
  got=$(sed -n 's/^identity fingerprint //p' "$WORK/hello.out")
  if [ "$got" = "$want" ]; then ok "hello's fingerprint is cleanroom fingerprint's"; else fail "hello's fingerprint '$got', cleanroom's '$want'"; fi
fi

# examples/embed: a provider and a consumer party in one program, on one
# loop, over loopback TLS; its count must be cleanroom run's on the same data.
CLI="$P/$CR_INSTALL_BINDIR/cleanroom"
EX="$CR_SOURCE_DIR/examples/overlap"
"$CLI" keygen --out "$WORK/emb-p" --name "Embed Provider" >/dev/null 2>&1
"$CLI" keygen --out "$WORK/emb-c" --name "Embed Consumer" >/dev/null 2>&1
"$CLI" template pin "$EX/template.json" --provider "$WORK/emb-p/identity.crt" \
  --consumer "$WORK/emb-c/identity.crt" --out "$WORK/emb.json" >/dev/null 2>&1 ||
  fail "cannot pin a template for embed"
if build embed "$CR_SOURCE_DIR/examples/embed/embed.c" &&
  run embed "$WORK/emb.json" "$WORK/emb-p" "$EX/provider.csv" "$WORK/emb-c" "$EX/consumer.csv" overlap; then
  got=$(sed -n 's/^count //p' "$WORK/embed.out")
  # The same query with the installed command, between two processes.
  "$CLI" serve --template "$WORK/emb.json" --identity "$WORK/emb-p" --data "$EX/provider.csv" \
    --listen 127.0.0.1:0 --once --quiet --audit "$WORK/emb-p/cli-audit.jsonl" 2>"$WORK/emb-serve.err" &
  spid=$!
  port=""
  for _ in $(seq 1 100); do
    port=$(sed -n 's/.*listening on 127.0.0.1:\([0-9]*\).*/\1/p' "$WORK/emb-serve.err")
    [ -n "$port" ] && break
    sleep 0.1
  done
  want=$("$CLI" run --template "$WORK/emb.json" --identity "$WORK/emb-c" --data "$EX/consumer.csv" \
    --peer "127.0.0.1:$port" --query overlap --json --quiet --audit "$WORK/emb-c/cli-audit.jsonl" |
    sed -n 's/.*"released":{"count":\([0-9]*\).*/\1/p')
  wait "$spid" || true
  if [ -n "$got" ] && [ "$got" = "$want" ]; then
    ok "embed's count ($got) is cleanroom run's"
  else
    fail "embed printed count '$got', cleanroom run '$want'"
  fi
  # The contract ran in the library: both parties' audit logs hold the run.
  for side in emb-p emb-c; do
    if "$CLI" audit verify "$WORK/$side/audit.jsonl" >/dev/null 2>&1 &&
      grep -q '"event":"result_released"' "$WORK/$side/audit.jsonl"; then
      ok "embed's $side audit log verifies and records the release"
    else
      fail "embed's $side audit log does not verify or lacks result_released"
    fi
  done
fi

# Another program: build NAME SOURCES... && run NAME ARGS... (and check
# its output in $WORK/NAME.out).

# ---- cleanroom-onboard uses the cleanroom installed next to it -----------
# A broken `cleanroom` first on PATH must not be the one it picks.
mkdir -p "$WORK/decoy"
printf '#!/bin/sh\necho "decoy cleanroom ran" >&2\nexit 3\n' >"$WORK/decoy/cleanroom"
chmod +x "$WORK/decoy/cleanroom"
if env -u CLEANROOM PATH="$WORK/decoy:$PATH" "$P/$CR_INSTALL_BINDIR/cleanroom-onboard" \
  --role provider --name "Install Test" --dir "$WORK/node" </dev/null >"$WORK/onboard.out" 2>&1; then
  fp=$("$P/$CR_INSTALL_BINDIR/cleanroom" fingerprint "$WORK/node/identity/identity.crt")
  if grep -q "$fp" "$WORK/onboard.out"; then
    ok "cleanroom-onboard ran the installed cleanroom"
  else
    cat "$WORK/onboard.out" >&2
    fail "cleanroom-onboard did not print the identity's fingerprint $fp"
  fi
else
  cat "$WORK/onboard.out" >&2
  fail "cleanroom-onboard --role provider failed"
fi

echo "$PASSED passed, $FAILED failed"
[ "$FAILED" -eq 0 ]
