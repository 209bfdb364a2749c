#!/usr/bin/env bash
# Static checks, run by scripts/test.sh (so by .ci/run) before the build:
#   1. clang-format --dry-run --Werror on every C file the project wrote
#   2. the clang static analyzer (scan-build --status-bugs) over src/
#   3. clang-tidy with the checked-in .clang-tidy over src/ (and its headers)
#   4. cppcheck (warning, performance, portability) over src/
# Each step prints its time; the script exits 1 naming every tool that found
# something. Generated protobuf-c code (in the build dir) and bench/peers/ are
# not the project's and are not checked. Suppressions are at the line, with
# the reason: `// NOLINT(check): why`, `// cppcheck-suppress id` + why.
#
# LINT_BUILD_DIR (default build/lint) holds the analyzer and tidy builds.
set -uo pipefail
cd "$(dirname "$0")/.."

OUT=${LINT_BUILD_DIR:-build/lint}
JOBS=$(nproc 2>/dev/null || echo 2)
failed=()

step() { printf '\n== lint: %s\n' "$1"; STEP_T0=$(date +%s.%N); }
done_step() { # name status
  local t
  t=$(awk -v a="$STEP_T0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
  if [ "$2" -eq 0 ]; then
    printf '== lint: %s: clean (%ss)\n' "$1" "$t"
  else
    printf '== lint: %s: FINDINGS (%ss)\n' "$1" "$t"
    failed+=("$1")
  fi
}
T0=$(date +%s)
mkdir -p "$OUT"

# 1. Formatting.
step clang-format
mapfile -t files < <(git ls-files '*.c' '*.h' | grep -v '^bench/peers/')
clang-format --dry-run --Werror "${files[@]}"
done_step clang-format $?

# 2. The clang static analyzer over a normal (non-sanitized) build of what
# ships: the libraries and the cleanroom binary. Not the tests
# (CR_BUILD_TESTS=OFF: analyzing them more than doubled the step's time) and
# not bench/ (benchmark mains; their only findings were exits without free).
step scan-build
rc=0
rm -rf "$OUT/scan" "$OUT/scan-reports"
if scan-build -o "$OUT/scan-reports" cmake -S . -B "$OUT/scan" -DCMAKE_BUILD_TYPE=Debug \
     -DCR_BUILD_TESTS=OFF >"$OUT/scan-configure.log" 2>&1; then
  scan-build -o "$OUT/scan-reports" --status-bugs --exclude "$PWD/$OUT/scan/proto" \
    cmake --build "$OUT/scan" -j "$JOBS" --target cleanroom cleanroom_cli 2>&1 |
    grep -E 'warning:|error:|scan-build:'
  rc=${PIPESTATUS[0]}
else
  cat "$OUT/scan-configure.log"; rc=1
fi
done_step scan-build $rc

# 3. clang-tidy over src/ with compile_commands.json from a configure-only
# tree (just the generated protobuf header is built).
step clang-tidy
rc=0
if cmake -S . -B "$OUT/tidy" -DCMAKE_BUILD_TYPE=Debug -DCMAKE_C_COMPILER=clang \
     -DCMAKE_EXPORT_COMPILE_COMMANDS=ON >"$OUT/tidy-configure.log" 2>&1 &&
   cmake --build "$OUT/tidy" --target cr_proto >>"$OUT/tidy-configure.log" 2>&1; then
  # run-clang-tidy exits 0 on findings in some versions: look at the output too.
  run-clang-tidy -p "$OUT/tidy" -j "$JOBS" -quiet "$PWD/src/" 2>&1 |
    sed 's/\x1b\[[0-9;]*m//g' >"$OUT/tidy.log"
  [ "${PIPESTATUS[0]}" -eq 0 ] || rc=1
  if grep -qE '(warning|error): ' "$OUT/tidy.log"; then
    grep -E '(warning|error): ' "$OUT/tidy.log" | sort -u
    rc=1
  elif [ $rc -ne 0 ]; then
    tail -20 "$OUT/tidy.log"
  fi
else
  cat "$OUT/tidy-configure.log"; rc=1
fi
done_step clang-tidy $rc

# 4. cppcheck. Only the project's include paths: system and generated headers
# are left out (cppcheck would otherwise trip over protobuf-c's version check).
step cppcheck
cppcheck --enable=warning,performance,portability --error-exitcode=1 --inline-suppr -q \
  -j "$JOBS" --std=c11 -D_POSIX_C_SOURCE=200809L -D_DEFAULT_SOURCE -Iinclude -Isrc src/
done_step cppcheck $?

printf '\n== lint: %ss in all\n' "$(($(date +%s) - T0))"
if [ ${#failed[@]} -gt 0 ]; then
  echo "lint: FAILED: findings from ${failed[*]}" >&2
  exit 1
fi
echo "lint: all four tools clean"
