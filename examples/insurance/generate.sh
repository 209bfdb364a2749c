#!/usr/bin/env bash
# Generates the example data of the "insurance" use case, deterministically:
#
#   insurer.csv      email,policy_type               (HomeSure's policy holders)
#   acme.csv         email,segment,customer_since    (Acme Security's customers)
#   brightguard.csv  email,segment,customer_since    (BrightGuard's customers)
#
# All three are drawn from one synthetic population of 5300 people:
#
#   insurer      people    1..2400
#   acme         people    1..420   and 3701..5300   (420 shared with the insurer)
#   brightguard  people 1701..3700                    (700 shared with the insurer)
#
# Security segments (smart_home, alarm_only, video, patrol) are drawn with
# different weights for BrightGuard's customers who are also insured at
# HomeSure than for the others, so that per segment the overlap is large for
# smart_home and alarm_only and small (below the template's min_count of 100)
# for video and patrol, while video + patrol together stay above 100.
#
# The e-mails carry the noise real exports have (mixed case, spaces around
# the value, duplicate rows) plus a few invalid rows (no @, two @, empty),
# about 1% of each file. No cell is quoted and none holds a comma. A few of
# BrightGuard's duplicate rows carry another segment than the first row of
# the same person (the engine keeps the first row's label).
#
# At the end the script prints the ground truth, computed from the files
# just written with the template's "email" normalizer (trim, lowercase,
# exactly one @ with text on both sides).
#
# bash + awk only (mawk or gawk: the random numbers come from our own
# Park-Miller generator, not awk's rand(), and no expression draws more than
# one, so every awk draws them in the same order and gives the same files).
#
# Usage: examples/insurance/generate.sh [seed]     (default seed 20240702)
set -euo pipefail
export LC_ALL=C

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
seed=${1:-20240702}

awk -v seed="$seed" -v out_i="$here/insurer.csv" -v out_a="$here/acme.csv" \
    -v out_b="$here/brightguard.csv" -f "$here/../lib/people.awk" -f /dev/fd/3 3<<'AWK'
# The address as someone typed it; never quoted, never with a comma.
function noisy(e,    r, at) {
  r = pick(100)
  at = index(e, "@")
  if (r < 60) return e
  if (r < 75) return cap(substr(e, 1, at - 1)) "@" cap(substr(e, at + 1))
  if (r < 80) return toupper(e)
  if (r < 90) return " " e
  return e "  "
}

function invalid(id,    r, e, l) {
  e = first[pick(nfirst)]; l = last[pick(nlast)]
  e = e "." l id
  r = pick(3)
  if (r == 0) return e ".example.com"
  if (r == 1) return e "@home@" domain[pick(ndomain)]
  return ""
}

# One segment from a weight string "smart_home:50 alarm_only:33 ..." (sum 100).
function segment(weights,    n, parts, i, kv, r, acc) {
  n = split(weights, parts, " ")
  r = pick(100); acc = 0
  for (i = 1; i <= n; i++) {
    split(parts[i], kv, ":"); acc += kv[2]
    if (r < acc) return kv[1]
  }
  return kv[1]
}

# Writes one security firm: people lo1..hi1 with weights w1, lo2..hi2 with w2.
function firm(out, lo1, hi1, w1, lo2, hi2, w2, invalid_base, conflicts,    n, id, seg, yr, k, e) {
  n = 0
  for (id = lo1; id <= hi2; id++) {
    if (id > hi1 && id < lo2) continue
    seg = segment(id <= hi1 ? w1 : w2); yr = 2012 + pick(13)
    row[++n] = noisy(email[id]) "," seg "," yr
    if (pick(100) < 3) {
      # a duplicate row; now and then with another segment
      if (conflicts && pick(4) == 0) seg = segment(w2)
      row[++n] = noisy(email[id]) "," seg "," yr
    }
  }
  for (k = 1; k <= 20; k++) {
    e = invalid(invalid_base + k); seg = segment(w2); yr = 2012 + pick(13)
    row[++n] = e "," seg "," yr
  }
  shuffle(row, n)
  print "email,segment,customer_since" > out
  for (k = 1; k <= n; k++) print row[k] > out
  close(out)
  split("", row)
}

BEGIN {
  people_init(seed)

  npeople = 5300
  for (id = 1; id <= npeople; id++) email[id] = make_email(id)

  # The insurer: people 1..2400.
  split("homeowners homeowners homeowners contents contents landlord", pols, " ")
  n = 0
  for (id = 1; id <= 2400; id++) {
    pol = pols[pick(6) + 1]
    row[++n] = noisy(email[id]) "," pol
    if (pick(100) < 3) row[++n] = noisy(email[id]) "," pol
  }
  for (k = 1; k <= 24; k++) { e = invalid(30000 + k); row[++n] = e "," pols[pick(6) + 1] }
  shuffle(row, n)
  print "email,policy_type" > out_i
  for (k = 1; k <= n; k++) print row[k] > out_i
  close(out_i)
  split("", row)

  # Acme: 420 of the insurer s people, then 1600 others.
  firm(out_a, 1, 420, "smart_home:40 alarm_only:35 video:15 patrol:10",
       3701, 5300, "smart_home:40 alarm_only:35 video:15 patrol:10", 10000, 0)
  # BrightGuard: 700 of the insurer s people (1701..2400), then 1300 others.
  firm(out_b, 1701, 2400, "smart_home:50 alarm_only:33 video:10 patrol:7",
       2401, 3700, "smart_home:30 alarm_only:25 video:20 patrol:25", 20000, 1)
}
AWK

# The ground truth, from the files themselves.
awk -F, '
function norm(s) {
  sub(/^[ \t\r\n\v\f]+/, "", s); sub(/[ \t\r\n\v\f]+$/, "", s)
  s = tolower(s)
  if (s ~ /[ \t\r\n\v\f]/ || gsub(/@/, "@", s) != 1 || s ~ /^@/ || s ~ /@$/) return ""
  return s
}
FNR == 1 { file++; name[file] = FILENAME; sub(/.*\//, "", name[file]); next }
{
  e = norm($1); rows[file]++
  if (e == "") { bad[file]++; next }
  if (seen[file, e]++) { dupl[file]++; next }
  n[file]++
  if (file == 1) ins[e] = 1
  else {
    if (file == 3) seg[e] = $2             # first row wins
    if (e in ins) { both[file]++; if (file == 3) by[$2]++ }
    if (file == 3) size[$2]++
  }
}
END {
  for (f = 1; f <= 3; f++)
    printf "%s: %d rows, %d invalid, %d duplicate keys, %d distinct e-mails\n", name[f], rows[f], bad[f], dupl[f], n[f]
  printf "overlap with the insurer: acme %d, brightguard %d\n", both[2], both[3]
  printf "brightguard segments (distinct e-mails): alarm_only %d, patrol %d, smart_home %d, video %d\n", size["alarm_only"], size["patrol"], size["smart_home"], size["video"]
  printf "brightguard overlap by segment: alarm_only %d, patrol %d, smart_home %d, video %d\n", by["alarm_only"], by["patrol"], by["smart_home"], by["video"]
}' "$here/insurer.csv" "$here/acme.csv" "$here/brightguard.csv"
