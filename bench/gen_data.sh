#!/usr/bin/env bash
# Generates the benchmark's two data sets, deterministically:
#
#   OUTDIR/provider.csv   email        n distinct e-mail addresses
#   OUTDIR/consumer.csv   email        n distinct e-mail addresses
#
# round(n * overlap) addresses are in both files. Addresses are already
# normalized (lowercase, no spaces), so cleanroom and the peer libraries
# intersect exactly the same strings. Prints the true overlap on stdout.
#
# bash + awk only; the randomness is a Park-Miller generator, so every awk
# (mawk, gawk) writes the same bytes for the same arguments.
#
# Usage: bench/gen_data.sh N OVERLAP OUTDIR [SEED]     (SEED default 20240611)
set -euo pipefail
export LC_ALL=C

if [ $# -lt 3 ] || [ "${1:-}" = "--help" ]; then
  sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'
  [ "${1:-}" = "--help" ] && exit 0 || exit 2
fi
n=$1 overlap=$2 out=$3 seed=${4:-20240611}
case $n in '' | *[!0-9]*) echo "gen_data: N must be a positive integer" >&2; exit 2 ;; esac
mkdir -p "$out"

awk -v n="$n" -v overlap="$overlap" -v seed="$seed" \
    -v out_p="$out/provider.csv" -v out_c="$out/consumer.csv" '
function rnd() { state = (state * 16807) % 2147483647; return state / 2147483647 }
function pick(k) { return int(rnd() * k) }
# Person id -> address; the id in the local part keeps addresses distinct.
function email(id,    f, l, d, s) {
  f = first[pick(nfirst)]; l = last[pick(nlast)]; d = domain[pick(ndomain)]
  s = pick(4)
  if (s == 0) return f "." l "." id "@" d
  if (s == 1) return f l id "@" d
  if (s == 2) return substr(f, 1, 1) "." l "." id "@" d
  return f "_" l "_" id "@" d
}
BEGIN {
  state = seed % 2147483647
  if (state <= 0) state += 2147483646
  nfirst = split("anna ben clara david emma felix greta hannah ivan julia karl lena max nina oscar paula quinn rosa sven tina uwe vera walter xenia yusuf zoe liam mia noah sofia elias lea jonas marie luca ida tom ella finn lina", first, " ")
  nlast = split("mueller schmidt schneider fischer weber meyer wagner becker schulz hoffmann koch richter klein wolf schroeder neumann schwarz braun zimmermann krueger hartmann lange werner krause lehmann koehler maier", last, " ")
  ndomain = split("gmail.com gmail.com gmail.com web.de web.de gmx.de gmx.net outlook.com yahoo.com icloud.com t-online.de posteo.de", domain, " ")
  for (i = 0; i < nfirst; i++) first[i] = first[i + 1]
  for (i = 0; i < nlast; i++) last[i] = last[i + 1]
  for (i = 0; i < ndomain; i++) domain[i] = domain[i + 1]

  k = int(n * overlap + 0.5)
  if (k > n) k = n
  # Provider: people 1..n; consumer: people n-k+1 .. 2n-k (k in both). Each
  # person gets one address, generated in id order.
  print "email" > out_p
  print "email" > out_c
  for (id = 1; id <= 2 * n - k; id++) {
    e = email(id)
    if (id <= n) print e > out_p
    if (id > n - k) print e > out_c
  }
  close(out_p); close(out_c)
  print k
}'
