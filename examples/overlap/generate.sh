#!/usr/bin/env bash
# Generates the example data of the "overlap" use case, deterministically:
#
#   provider.csv  email,segment,signup_year   (a security company's customers)
#   consumer.csv  email,policy_type           (an insurer's policy holders)
#
# Both are drawn from one synthetic population, so a known set of people is
# in both files. The e-mails carry the noise real exports have (mixed case,
# spaces around the value, quoted cells, duplicate rows) plus a few invalid
# rows (no @, two @, empty), under 2% of each file, so the default
# --max-reject-ratio of 5% lets them load. At the end the script prints the
# true overlap of the normalized e-mails (trim, lowercase, exactly one @),
# computed from the files just written, for checking a run's result.
#
# bash + awk only, with examples/lib/people.awk (mawk or gawk: the random numbers come from our own
# Park-Miller generator, not awk's rand(), so every awk gives the same files).
#
# Usage: examples/overlap/generate.sh [seed]     (default seed 20240611)
set -euo pipefail
export LC_ALL=C

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
seed=${1:-20240611}

awk -v seed="$seed" -v out_p="$here/provider.csv" -v out_c="$here/consumer.csv" -f "$here/../lib/people.awk" -f /dev/fd/3 3<<'AWK'
# The same address as a person might have typed it, as a CSV cell.
function noisy(e,    r, at) {
  r = pick(100)
  at = index(e, "@")
  if (r < 55) return e
  if (r < 70) return cap(substr(e, 1, at - 1)) "@" cap(substr(e, at + 1))
  if (r < 75) return toupper(e)
  if (r < 82) return " " e
  if (r < 88) return e "  "
  if (r < 94) return "\"" e "\""
  return "\" " cap(e) " \""
}

# An address that must be rejected.
function invalid(id,    r, e) {
  e = first[pick(nfirst)] "." last[pick(nlast)] id
  r = pick(3)
  if (r == 0) return e ".example.com"               # no @
  if (r == 1) return e "@home@" domain[pick(ndomain)] # two @
  return ""                                          # empty
}

BEGIN {
  people_init(seed)

  npeople = 4640
  for (id = 1; id <= npeople; id++) email[id] = make_email(id)

  # Provider: people 1..2880; consumer: people 2241..4640 (640 in both).
  split("smart_home smart_home smart_home smart_home alarm_only alarm_only alarm_only video video video", segs, " ")
  n = 0
  for (id = 1; id <= 2880; id++) {
    seg = segs[pick(10) + 1]; year = 2015 + pick(10)
    row[++n] = noisy(email[id]) "," seg "," year
    if (pick(100) < 3) row[++n] = noisy(email[id]) "," seg "," year   # duplicate
  }
  for (k = 1; k <= 40; k++) row[++n] = invalid(10000 + k) "," segs[pick(10) + 1] "," (2015 + pick(10))
  shuffle(row, n)
  print "email,segment,signup_year" > out_p
  for (i = 1; i <= n; i++) print row[i] > out_p
  close(out_p)

  split("homeowners homeowners homeowners renters renters condo landlord", pols, " ")
  n = 0
  for (id = 2241; id <= npeople; id++) {
    pol = pols[pick(7) + 1]
    row[++n] = noisy(email[id]) "," pol
    if (pick(100) < 3) row[++n] = noisy(email[id]) "," pol
  }
  for (k = 1; k <= 30; k++) row[++n] = invalid(20000 + k) "," pols[pick(7) + 1]
  shuffle(row, n)
  print "email,policy_type" > out_c
  for (i = 1; i <= n; i++) print row[i] > out_c
  close(out_c)
}
AWK

# Check from the files themselves: normalize as the template's "email"
# normalizer does and intersect. (The e-mail is always the first field and
# never contains a comma; a quoted cell is just unquoted.)
awk -F, '
function norm(s) {
  if (s ~ /^".*"$/) s = substr(s, 2, length(s) - 2)
  sub(/^[ \t\r\n\v\f]+/, "", s); sub(/[ \t\r\n\v\f]+$/, "", s)
  s = tolower(s)
  if (s ~ /[ \t\r\n\v\f]/ || gsub(/@/, "@", s) != 1 || s ~ /^@/ || s ~ /@$/) return ""
  return s
}
FNR == 1 { file++; next }
{
  e = norm($1); rows[file]++
  if (e == "") { bad[file]++; next }
  if (file == 1) { if (!(e in p)) { p[e] = $2; np++ } else dupl[1]++ }
  else if (!(e in c)) { c[e] = 1; nc++; if (e in p) { both++; by[p[e]]++ } } else dupl[2]++
}
END {
  printf "provider.csv: %d rows, %d invalid, %d duplicates, %d distinct e-mails\n", rows[1], bad[1], dupl[1], np
  printf "consumer.csv: %d rows, %d invalid, %d duplicates, %d distinct e-mails\n", rows[2], bad[2], dupl[2], nc
  printf "by provider segment: alarm_only %d, smart_home %d, video %d\n", by["alarm_only"], by["smart_home"], by["video"]
  printf "true overlap (normalized e-mails in both files): %d\n", both
}' "$here/provider.csv" "$here/consumer.csv"
