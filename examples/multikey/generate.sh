#!/usr/bin/env bash
# Generates the example data of the "multikey" use case, deterministically:
#
#   team.csv  holder_id,email,phone,section      (the Harbor City Hawks' season-ticket holders)
#   app.csv   rider_id,email,phone,city,rides    (the RideNow app's riders)
#
# One synthetic population of 4200 people, each with an e-mail and a phone
# number. The team's holders are people 1..1500: every holder row has an
# e-mail, most a phone. The app's riders are people 1001..4000 (so 500
# people are in both): nearly every rider gave a phone, only some an
# e-mail. So people in both files match on e-mail only, on phone only, on
# both, or (when the keys they gave do not overlap) not at all:
#
#   - riders without an e-mail match only by phone, when the team has it;
#   - a rider who changed numbers since buying the ticket matches only by
#     e-mail, if the app has one;
#   - families: holders 1451..1500 bought their tickets with the phone of
#     a relative who is also a holder (people 1001..1050, whose own rows
#     carry no phone); those relatives ride, so their e-mail matches their
#     own holder row and their phone another holder's row: one rider, two
#     team records, counted once;
#   - 4% of riders opened a second account with the same phone (and
#     another or no e-mail): the app's rows sharing a key are one person;
#   - 3% of holders have a second seat (a second row, same e-mail).
#
# Phones come in the formats people type ("(206) 200-1234", "206.200.1234",
# "+1 206 200 1234", "12062001234" without the +); the template's phone
# normalizer with default_country_code "1" reads them all as E.164. A few
# rows carry an invalid phone or e-mail (that key is skipped), a few
# neither key (the row is rejected). No cell is quoted and none holds a
# comma.
#
# The ground truth is computed from the written files, independently of
# cleanroom, by truth.py (it prints it at the end).
#
# bash + awk only (mawk or gawk: the random numbers come from our own
# Park-Miller generator, examples/lib/people.awk).
#
# Usage: examples/multikey/generate.sh [seed [outdir [scale]]]
#   (default seed 20250301, outdir this directory, scale 100: the
#   population and every range above in percent; tests use 50)
set -euo pipefail
export LC_ALL=C

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
seed=${1:-20250301}
out=${2:-$here}
scale=${3:-100}

awk -v seed="$seed" -v scale="$scale" -v out_t="$out/team.csv" -v out_a="$out/app.csv" -f "$here/../lib/people.awk" -f /dev/fd/3 3<<'AWK'
function recased(e,    r, at) {
  r = pick(100)
  at = index(e, "@")
  if (r < 70) return e
  if (r < 90) return cap(substr(e, 1, at - 1)) "@" cap(substr(e, at + 1))
  return toupper(e)
}

function noisy(e,    r) {
  r = pick(100)
  if (r < 85) return recased(e)
  if (r < 93) return " " e
  return e " "
}

# A person's phone: area code and 7 digits, unique per id.
function phone_digits(id) { return area[id % narea + 1] sprintf("%07d", 2000000 + id) }

# The same number as people type it.
function typed(d,    r, a, x, y) {
  a = substr(d, 1, 3); x = substr(d, 4, 3); y = substr(d, 7, 4)
  r = pick(100)
  if (r < 30) return "+1" d
  if (r < 50) return "(" a ") " x "-" y
  if (r < 65) return a "." x "." y
  if (r < 80) return "+1 " a " " x " " y
  if (r < 90) return a "-" x "-" y
  return "1" d
}

function section(   r) {
  r = pick(100)
  if (r < 10) return "COURT"
  if (r < 55) return "LOWER"
  return "UPPER"
}

function city(   r) {
  r = pick(100)
  if (r < 60) return "Harbor City"
  if (r < 80) return "Bayview"
  if (r < 95) return "Northgate"
  return "Eastport"
}

function bad_email(k) { return "rider" k "-at-mail.example" }
function bad_phone(k) { return "555-RIDE-" k }

BEGIN {
  people_init(seed)
  narea = split("206 253 425 360", area, " ")
  # At scale 100: people 1..4200, holders 1..1500 (H), riders 1001 (R0)
  # ..4000, families of 50 (F).
  npeople = int(4200 * scale / 100); H = int(1500 * scale / 100)
  R0 = int(1000 * scale / 100) + 1; F = int(50 * scale / 100)
  for (id = 1; id <= npeople; id++) email[id] = make_email(id)

  # ---- the team: holders 1..H ----
  n = 0
  for (id = 1; id <= H; id++) {
    if (id >= R0 && id < R0 + F) p = ""                             # the family's phone is on a relative's row
    else if (id > H - F) p = typed(phone_digits(R0 + id - (H - F + 1)))  # a relative's phone (people R0..R0+F-1)
    else if (pick(100) < 85) p = typed(phone_digits(id))
    else p = ""
    row[++n] = noisy(email[id]) "," p "," section()
    if (pick(100) < 3) row[++n] = noisy(email[id]) ",," section()   # a second seat
  }
  for (k = 1; k <= 6; k++) row[++n] = bad_email(k) "," bad_phone(k) "," section()  # rejected
  shuffle(row, n)
  print "holder_id,email,phone,section" > out_t
  for (k = 1; k <= n; k++) printf "h%05d,%s\n", k, row[k] > out_t
  close(out_t)
  split("", row)

  # ---- the app: riders R0..npeople-200 ----
  n = 0
  for (id = R0; id <= npeople - 200; id++) {
    r = pick(100)
    if (id < R0 + F) { e = recased(email[id]); p = typed(phone_digits(id)) }   # the family riders
    else {
      e = pick(100) < 40 ? recased(email[id]) : ""
      if (r < 93) p = typed(phone_digits(id < H && pick(100) < 5 ? id + 100000 : id))  # 5% of holders changed numbers
      else p = ""
      if (e == "" && p == "") e = recased(email[id])                 # every rider gave one of the two
    }
    row[++n] = e "," p "," city() "," pick(61)
    if (pick(100) < 4) {                                            # a second account, same phone
      if (p == "") p = typed(phone_digits(id))
      e2 = pick(2) ? "" : recased(make_email(id + 50000))
      row[++n] = e2 "," p "," city() "," pick(61)
    }
  }
  for (k = 1; k <= 15; k++) row[++n] = recased(email[int(3000 * scale / 100) + k]) "," bad_phone(100 + k) "," city() "," pick(61)  # phone skipped
  for (k = 1; k <= 10; k++) row[++n] = bad_email(100 + k) ",," city() "," pick(61)                      # rejected
  for (k = 1; k <= 10; k++) row[++n] = ",," city() "," pick(61)                                          # rejected
  shuffle(row, n)
  print "rider_id,email,phone,city,rides" > out_a
  for (k = 1; k <= n; k++) printf "r%06d,%s\n", 100000 + k, row[k] > out_a
  close(out_a)
}
AWK

python3 "$here/truth.py" "$out/team.csv" "$out/app.csv"
