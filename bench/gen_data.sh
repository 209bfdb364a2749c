#!/usr/bin/env bash
# Generates the benchmark's two data sets, deterministically:
#
#   OUTDIR/provider.csv   email        n distinct e-mail addresses
#   OUTDIR/consumer.csv   email        n distinct e-mail addresses
#
# round(n * overlap) addresses are in both files. Addresses are already
# normalized (lowercase, no spaces), so cleanroom and the peer libraries
# intersect exactly the same strings. Prints the true overlap on stdout.
# With KEYS 2 each row also has a phone column (E.164, one per person):
# the same people, two match keys each (bench/run.sh --keys 2).
#
# bash + awk only; the randomness is a Park-Miller generator, so every awk
# (mawk, gawk) writes the same bytes for the same arguments.
#
# With NC (bench/run.sh --unbalanced) the consumer has NC addresses instead
# of N, and round(min(N, NC) * OVERLAP) are in both.
#
# Usage: bench/gen_data.sh N OVERLAP OUTDIR [SEED [KEYS [NC]]]  (SEED default 20240611, KEYS 1, NC N)
set -euo pipefail
export LC_ALL=C

if [ $# -lt 3 ] || [ "${1:-}" = "--help" ]; then
  sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'
  [ "${1:-}" = "--help" ] && exit 0 || exit 2
fi
n=$1 overlap=$2 out=$3 seed=${4:-20240611} keys=${5:-1} nc=${6:-$1}
case $n in '' | *[!0-9]*) echo "gen_data: N must be a positive integer" >&2; exit 2 ;; esac
case $nc in '' | *[!0-9]*) echo "gen_data: NC must be a positive integer" >&2; exit 2 ;; esac
case $keys in 1 | 2) ;; *) echo "gen_data: KEYS must be 1 or 2" >&2; exit 2 ;; esac
mkdir -p "$out"

awk -v n="$n" -v nc="$nc" -v overlap="$overlap" -v seed="$seed" -v keys="$keys" \
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

  small = nc < n ? nc : n
  k = int(small * overlap + 0.5)
  if (k > small) k = small
  # Provider: people 1..n; consumer: people n-k+1 .. n-k+nc (k in both).
  # Each person gets one address, generated in id order.
  hdr = keys == 2 ? "email,phone" : "email"
  print hdr > out_p
  print hdr > out_c
  for (id = 1; id <= n - k + nc; id++) {
    e = email(id)
    # The phone draws no random number, so the e-mails stay the same.
    if (keys == 2) e = e sprintf(",+1%03d%07d", 200 + id % 700, id % 10000000)
    if (id <= n) print e > out_p
    if (id > n - k) print e > out_c
  }
  close(out_p); close(out_c)
  print k
}'
