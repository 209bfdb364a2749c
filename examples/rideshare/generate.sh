#!/usr/bin/env bash
# Generates the example data of the "rideshare" use case, deterministically:
#
#   team.csv  email,seat_section           (the Harbor City Hawks' season-ticket holders)
#   app.csv   user_id,email,phone,city     (the RideNow app's users)
#
# Both are drawn from one synthetic population of 3800 people: the team's
# holders are people 1..1200, the app's users people 801..3800, so 400
# people are in both. Some people have several app accounts (the same
# e-mail, often typed differently, under another user_id): every one of
# those rows matches when the e-mail does. A few app users signed up with a
# phone number only (empty e-mail) and a few rows of each file are invalid;
# they are rejected, about 2% of each file. The team's export has spaces
# around some addresses; the app's only differs in case. No cell is quoted
# and none holds a comma.
#
# At the end the script prints the ground truth, computed from the files
# just written with the template's "email" normalizer (trim, lowercase,
# exactly one @ with text on both sides).
#
# bash + awk only (mawk or gawk: the random numbers come from our own
# Park-Miller generator, not awk's rand(), and no expression draws more than
# one, so every awk draws them in the same order and gives the same files).
#
# Usage: examples/rideshare/generate.sh [seed]     (default seed 20240815)
set -euo pipefail
export LC_ALL=C

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
seed=${1:-20240815}

awk -v seed="$seed" -v out_t="$here/team.csv" -v out_a="$here/app.csv" -f "$here/../lib/people.awk" -f /dev/fd/3 3<<'AWK'
# Case only (the app): the rows are written back as they are.
function recased(e,    r, at) {
  r = pick(100)
  at = index(e, "@")
  if (r < 70) return e
  if (r < 90) return cap(substr(e, 1, at - 1)) "@" cap(substr(e, at + 1))
  return toupper(e)
}

# Case and surrounding spaces (the team).
function noisy(e,    r) {
  r = pick(100)
  if (r < 80) return recased(e)
  if (r < 90) return " " e
  return e "  "
}

function invalid(id,    r, e, l) {
  e = first[pick(nfirst)]; l = last[pick(nlast)]
  e = e "." l id
  r = pick(2)
  if (r == 0) return e ".example.com"
  return e "@home@" domain[pick(ndomain)]
}

function phone(   p) { p = pick(3) == 0 ? "160" : "151"; return "+49" p sprintf("%08d", pick(100000000)) }

function section(   r) {
  r = pick(10)
  if (r == 0) return "COURT"
  if (r < 6) return "L1" sprintf("%02d", pick(24) + 1)
  return "U3" sprintf("%02d", pick(30) + 1)
}

function app_row(id, email_cell,    p) {
  uid++
  p = phone()
  return sprintf("u%06d", uid) "," email_cell "," p "," city[pick(ncity) + 1]
}

BEGIN {
  people_init(seed)
  ncity = split("Hamburg Hamburg Hamburg Hamburg Lueneburg Norderstedt Pinneberg Stade", city, " ")

  npeople = 3800
  for (id = 1; id <= npeople; id++) email[id] = make_email(id)

  # The team: holders 1..1200; 4% hold a second seat (a second row).
  n = 0
  for (id = 1; id <= 1200; id++) {
    e = noisy(email[id]); row[++n] = e "," section()
    if (pick(100) < 4) { e = noisy(email[id]); row[++n] = e "," section() }
  }
  for (k = 1; k <= 12; k++) { e = invalid(10000 + k); row[++n] = e "," section() }
  shuffle(row, n)
  print "email,seat_section" > out_t
  for (k = 1; k <= n; k++) print row[k] > out_t
  close(out_t)
  split("", row)

  # The app: users 801..3800; 6% have a second account, 1% also a third.
  n = 0; uid = 100000
  for (id = 801; id <= npeople; id++) {
    row[++n] = recased(email[id])
    r = pick(100)
    if (r < 6) row[++n] = recased(email[id])
    if (r < 1) row[++n] = recased(email[id])
  }
  for (k = 1; k <= 45; k++) row[++n] = ""                       # phone-only sign-ups
  for (k = 1; k <= 12; k++) row[++n] = invalid(20000 + k)
  shuffle(row, n)
  print "user_id,email,phone,city" > out_a
  # user_ids are handed out in file order, so they say nothing about a person
  for (k = 1; k <= n; k++) print app_row(k, row[k]) > out_a
  close(out_a)
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
FNR == 1 { file++; next }
file == 1 {
  e = norm($1); rows[1]++
  if (e == "") { bad[1]++; next }
  if (!(e in team)) { team[e] = 1; n[1]++ }
  next
}
{
  e = norm($2); rows[2]++
  if (e == "") { bad[2]++; next }
  if (!(e in app)) { app[e] = 0; n[2]++ }
  app[e]++
  if (e in team) { matched_rows++; if (app[e] == 1) both++ }
}
END {
  for (e in app) if (app[e] > 1) { multi++; if (e in team) multi_both++ }
  printf "team.csv: %d rows, %d invalid, %d distinct e-mails\n", rows[1], bad[1], n[1]
  printf "app.csv: %d rows, %d invalid or empty, %d distinct e-mails (%d on several accounts)\n", rows[2], bad[2], n[2], multi
  printf "season-ticket holders among the app users (riders_count): %d\n", both
  printf "app rows that match (season_ticket_riders rows): %d (%d e-mails on several accounts)\n", matched_rows, multi_both
}' "$here/team.csv" "$here/app.csv"
