#!/usr/bin/env bash
# End to end across ristretto255 backends (issue 20, docs/crypto-backends.md):
# a node on the batched eight-lane algorithm (CLEANROOM_CRYPTO=emulated, the
# code the AVX-512 IFMA backend runs, on portable lanes; these machines have
# no IFMA) against a node on libsodium (CLEANROOM_CRYPTO=portable) gives the
# same count, both ways round, as two libsodium nodes and as a plain join.
# The points on the wire and the digests are bit-identical, so a mixed pair
# cannot even tell; the version command names the backend each one used.
source "$CR_E2E_LIB"

# --- the backend each setting selects ------------------------------------------
expect_grep_out() { # WHAT PATTERN COMMAND...
  local what=$1 pat=$2
  shift 2
  if "$@" 2>&1 | grep -q -- "$pat"; then ok "$what"; else fail "$what: '$pat' not in: $("$@" 2>&1)"; fi
}
expect_grep_out "CLEANROOM_CRYPTO=emulated selects the emulated lanes" "crypto backend: emulated" \
  env CLEANROOM_CRYPTO=emulated "$CR" version
expect_grep_out "CLEANROOM_CRYPTO=portable selects libsodium" "crypto backend: libsodium" \
  env CLEANROOM_CRYPTO=portable "$CR" version
if grep -qw avx512ifma /proc/cpuinfo; then
  DEFAULT=avx512ifma
else
  DEFAULT=libsodium
fi
expect_grep_out "the default follows the CPU ($DEFAULT)" "crypto backend: $DEFAULT" \
  env -u CLEANROOM_CRYPTO "$CR" version
expect_grep_out "an unknown setting falls back to the default" "crypto backend: $DEFAULT" \
  env CLEANROOM_CRYPTO=bogus "$CR" version

# --- sessions ------------------------------------------------------------------
make_identities
pin_template "$EX/template.json" t.json
EXPECTED=$(comm -12 <(normalized_emails "$EX/provider.csv") <(normalized_emails "$EX/consumer.csv") | wc -l)

# session NAME PROVIDER_BACKEND CONSUMER_BACKEND: counts in <NAME>_RUN, <NAME>_SERVE.
session() {
  local name=$1 pb=$2 cb=$3 t0 t1
  t0=$(date +%s%N)
  CLEANROOM_CRYPTO=$pb start_server t.json "$EX/provider.csv" --once
  CLEANROOM_CRYPTO=$cb run_client t.json "$EX/consumer.csv" overlap
  wait_server
  t1=$(date +%s%N)
  echo "$name (provider $pb, consumer $cb): $(((t1 - t0) / 1000000)) ms"
  expect_eq "$name: run exits 0" 0 "$RUN_RC"
  expect_eq "$name: serve --once exits 0" 0 "$SERVER_RC"
  if [ "$RUN_RC" != 0 ] || [ "$SERVER_RC" != 0 ]; then
    sed 's/^/    run.err: /' run.err >&2
    sed 's/^/    server.err: /' server.err >&2
  fi
  printf -v "${name}_RUN" '%s' "$(json_field run.out count)"
  printf -v "${name}_SERVE" '%s' "$(json_field server.out count)"
  # Nothing either node printed holds a match key.
  local f
  for f in run.out run.err server.out server.err; do
    if normalized_emails "$EX/consumer.csv" | head -200 | grep -qF -f - "$f"; then
      fail "$name: $f contains a match key"
    fi
  done
}

session ref portable portable
session mixed1 emulated portable
session mixed2 portable emulated

expect_eq "libsodium pair: the count is the plain join" "$EXPECTED" "$ref_RUN"
expect_eq "libsodium pair: both sides agree" "$ref_RUN" "$ref_SERVE"
expect_eq "emulated provider, libsodium consumer: consumer's count" "$ref_RUN" "$mixed1_RUN"
expect_eq "emulated provider, libsodium consumer: provider's count" "$ref_SERVE" "$mixed1_SERVE"
expect_eq "libsodium provider, emulated consumer: consumer's count" "$ref_RUN" "$mixed2_RUN"
expect_eq "libsodium provider, emulated consumer: provider's count" "$ref_SERVE" "$mixed2_SERVE"
echo "counts: plain join $EXPECTED; libsodium pair $ref_RUN; mixed $mixed1_RUN and $mixed2_RUN"

finish
