#!/usr/bin/env bash
# The two-partner demo on one machine: installs what is missing, builds,
# creates fresh identities for a provider (Acme Security) and a consumer
# (HomeSure Insurance), pins them in a working copy of the example template,
# then runs both nodes on the bundled example data over loopback TLS and
# prints what each side learns.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

./scripts/install-deps.sh

BUILD=${BUILD_DIR:-build/release}
cmake -S . -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DCR_BUILD_TESTS=OFF >/dev/null
cmake --build "$BUILD" -j "$(nproc 2>/dev/null || echo 2)" >/dev/null
CR="$ROOT/$BUILD/cleanroom"

EX="$ROOT/examples/overlap"
WORK="$ROOT/demo-work"
rm -rf "$WORK"
mkdir -p "$WORK"
cd "$WORK"

echo "== 1. each partner creates its identity"
P_FP=$("$CR" keygen --out provider-id --name "Acme Security" 2>/dev/null)
C_FP=$("$CR" keygen --out consumer-id --name "HomeSure Insurance" 2>/dev/null)
echo "   provider (Acme Security) certificate:     $P_FP"
echo "   consumer (HomeSure Insurance) certificate: $C_FP"

echo "== 2. both pin those fingerprints in the shared template"
"$CR" template pin "$EX/template.json" --provider "$P_FP" --consumer "$C_FP" \
  --address 127.0.0.1:7443 --out template.json >/dev/null 2>&1
echo "   template sha256: $("$CR" template hash template.json)"

echo "== 3. the provider serves its customer list; the consumer runs \"overlap\""
"$CR" serve --template template.json --identity provider-id --data "$EX/provider.csv" \
  --listen 127.0.0.1:0 --once >provider.out 2>provider.err &
SERVER=$!
trap 'kill $SERVER 2>/dev/null || true' EXIT
PORT=""
for _ in $(seq 1 100); do
  PORT=$(sed -n 's/.*listening on [^ ]*:\([0-9][0-9]*\).*/\1/p' provider.err | head -1)
  [ -n "$PORT" ] && break
  if ! kill -0 $SERVER 2>/dev/null; then break; fi
  sleep 0.1
done
if [ -z "$PORT" ]; then
  echo "the provider's node did not start:" >&2
  cat provider.err >&2
  exit 1
fi

set +e
"$CR" run --template template.json --identity consumer-id --data "$EX/consumer.csv" \
  --peer "127.0.0.1:$PORT" --query overlap >consumer.out 2>consumer.err
RUN_RC=$?
wait $SERVER
SERVE_RC=$?
set -e
trap - EXIT

echo
echo "-- consumer (HomeSure Insurance), exit $RUN_RC:"
sed 's/^/   /' consumer.err
sed 's/^/   /' consumer.out
echo "-- provider (Acme Security), exit $SERVE_RC:"
grep -v "listening on" provider.err | sed 's/^/   /'
sed 's/^/   /' provider.out
echo
echo "Work files (identities, pinned template, outputs) are in $WORK"
[ $RUN_RC -eq 0 ] && [ $SERVE_RC -eq 0 ]
