#!/usr/bin/env bash
# Generates the example data of the "pharma" use case, deterministically:
#
#   hospital.csv  patient_id,email,dx_code,age   (St. Elisabeth Hospital's records)
#   registry.csv  email,region                   (Novamed's trial registry opt-ins)
#
# Both are drawn from one synthetic population of 4500 people: the
# hospital's patients are people 1..3000, the registry holds people
# 2001..4500, so 1000 patients opted into the registry. A patient has one
# record per diagnosis (ICD-10 codes: E11 type 2 diabetes, E10 type 1
# diabetes, I10 hypertension, E78 lipid disorders, J45 asthma, M54 back
# pain, F32 depression, Z00 check-up only), all with the same age; the age
# of a few patients is unknown (empty), which no age range matches. A few
# records lack a usable e-mail and are rejected (about 1%). The e-mails
# carry case and space noise; no cell is quoted and none holds a comma.
#
# At the end the script prints the ground truth for two parameter sets,
# computed from the files just written: the hospital's records filtered
# (dx_code in the codes, min_age <= age <= max_age), their distinct
# normalized e-mails (trim, lowercase, exactly one @), and how many of those
# are in the registry.
#
# bash + awk only (mawk or gawk: the random numbers come from our own
# Park-Miller generator, not awk's rand(), and no expression draws more than
# one, so every awk draws them in the same order and gives the same files).
#
# Usage: examples/pharma/generate.sh [seed]     (default seed 20240901)
set -euo pipefail
export LC_ALL=C

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
seed=${1:-20240901}

awk -v seed="$seed" -v out_h="$here/hospital.csv" -v out_r="$here/registry.csv" -f "$here/../lib/people.awk" -f /dev/fd/3 3<<'AWK'
function noisy(e,    r, at) {
  r = pick(100)
  at = index(e, "@")
  if (r < 65) return e
  if (r < 80) return cap(substr(e, 1, at - 1)) "@" cap(substr(e, at + 1))
  if (r < 85) return toupper(e)
  if (r < 93) return " " e
  return e "  "
}

BEGIN {
  people_init(seed)
  nregion = split("north south east west", region, " ")

  npeople = 4500
  for (id = 1; id <= npeople; id++) email[id] = make_email(id)

  # Diagnoses besides diabetes, each with its chance in percent.
  nother = split("I10:30 E78:22 M54:18 F32:12 J45:9", other, " ")

  n = 0
  for (id = 1; id <= 3000; id++) {
    pid = sprintf("P%06d", 200000 + id * 7)
    age = pick(100) < 2 ? "" : pick(95)
    ncodes = 0
    r = pick(100)
    if (r < 18) code[++ncodes] = "E11"
    else if (r < 24) code[++ncodes] = "E10"
    for (k = 1; k <= nother; k++) {
      split(other[k], kv, ":")
      if (pick(100) < kv[2]) code[++ncodes] = kv[1]
    }
    if (ncodes == 0) code[++ncodes] = "Z00"
    # one patient in a hundred has no usable e-mail on file
    bad = pick(100) == 0
    for (k = 1; k <= ncodes; k++) {
      e = bad ? (pick(2) ? "" : "no-email") : noisy(email[id])
      row[++n] = pid "," e "," code[k] "," age
    }
  }
  shuffle(row, n)
  print "patient_id,email,dx_code,age" > out_h
  for (k = 1; k <= n; k++) print row[k] > out_h
  close(out_h)
  split("", row)

  n = 0
  for (id = 2001; id <= npeople; id++) {
    e = noisy(email[id]); row[++n] = e "," region[pick(nregion) + 1]
    if (pick(100) < 2) { e = noisy(email[id]); row[++n] = e "," region[pick(nregion) + 1] }
  }
  shuffle(row, n)
  print "email,region" > out_r
  for (k = 1; k <= n; k++) print row[k] > out_r
  close(out_r)
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
function eligible(codes, lo, hi) { return index("," codes ",", "," $3 ",") && $4 ~ /^[0-9]+$/ && $4 + 0 >= lo && $4 + 0 <= hi }
FNR == 1 { file++; next }
file == 1 {
  e = norm($2); rows[1]++
  if (e == "") { bad[1]++; next }
  if (!(e in pat)) { pat[e] = 1; n[1]++ }
  if (eligible("E11,E10", 18, 65) && !((e, 1) in f)) { f[e, 1] = 1; nf[1]++ }
  if (eligible("E10", 18, 65) && !((e, 2) in f)) { f[e, 2] = 1; nf[2]++ }
  next
}
{
  e = norm($1); rows[2]++
  if (e == "") { bad[2]++; next }
  if (e in reg) next
  reg[e] = 1; n[2]++
  if (e in pat) both++
  if ((e, 1) in f) both1++
  if ((e, 2) in f) both2++
}
END {
  printf "hospital.csv: %d records, %d without a usable e-mail, %d distinct patients (e-mails)\n", rows[1], bad[1], n[1]
  printf "registry.csv: %d rows, %d invalid, %d distinct e-mails; %d of them are patients\n", rows[2], bad[2], n[2], both
  printf "codes=E11,E10 ages 18-65: %d eligible patients, %d of them in the registry (eligible_patients)\n", nf[1], both1
  printf "codes=E10 ages 18-65:     %d eligible patients, %d of them in the registry (eligible_patients)\n", nf[2], both2
}' "$here/hospital.csv" "$here/registry.csv"
