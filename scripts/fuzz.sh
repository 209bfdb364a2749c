#!/usr/bin/env bash
# Runs one fuzz target for real with libFuzzer (clang, ASan, UBSan).
#   ./scripts/fuzz.sh TARGET SECONDS      e.g. ./scripts/fuzz.sh fuzz_protocol_session 300
# New interesting inputs go to a scratch corpus; crashes are written as
# crash-* files in the current directory: add each to
# tests/fuzz/corpus/TARGET/ with the fix, so ctest replays it forever.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ $# -lt 2 ] || [ "$1" = "--help" ]; then
  echo "usage: $0 TARGET SECONDS   (targets: $(ls tests/fuzz/fuzz_*.c | xargs -n1 basename | sed 's/\.c$//' | tr '\n' ' '))" >&2
  exit 2
fi
TARGET=$1
SECONDS_=$2
./scripts/install-deps.sh
BUILD=build/fuzz
CC=clang cmake -S . -B "$BUILD" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCR_FUZZ=ON >/dev/null
cmake --build "$BUILD" --target "$TARGET" -j "$(nproc)" >/dev/null
SCRATCH="$BUILD/corpus-$TARGET"
mkdir -p "$SCRATCH"
cp -n tests/fuzz/corpus/"$TARGET"/* "$SCRATCH"/ 2>/dev/null || true
"$BUILD/tests/$TARGET" -max_total_time="$SECONDS_" -print_final_stats=1 "$SCRATCH"
