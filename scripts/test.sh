#!/usr/bin/env bash
# Installs what is missing, runs the static checks (scripts/lint.sh:
# clang-format, scan-build, clang-tidy, cppcheck; any finding fails), builds
# cleanroom with AddressSanitizer and UndefinedBehaviorSanitizer (warnings as
# errors), and runs the whole test suite through ctest: unit, known-answer
# vectors, protocol, fuzz corpus replay and end-to-end tests over loopback TLS.
set -euo pipefail
cd "$(dirname "$0")/.."

./scripts/install-deps.sh
./scripts/lint.sh

BUILD=${BUILD_DIR:-build/asan}
JOBS=$(nproc 2>/dev/null || echo 2)
cmake -S . -B "$BUILD" -DCMAKE_BUILD_TYPE=Debug -DCR_SANITIZE=ON -DCR_WERROR=ON >/dev/null
cmake --build "$BUILD" -j "$JOBS"

# Leak checking is on; no suppressions.
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1:strict_string_checks=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
cd "$BUILD"
ctest --output-on-failure -j "$JOBS" "$@"
