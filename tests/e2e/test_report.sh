#!/usr/bin/env bash
# `cleanroom report` on the insurance example, end to end: HomeSure (consumer)
# runs "overlap" and "overlap_by_segment" (two segments below min_count)
# against BrightGuard under a template whose run limit is 2, then a run over
# the limit and a run of an unknown query (named with markup) are refused.
# The report is built from each side's audit log and checked: every released
# number is in it, no suppressed value is (computed here with awk, as
# test_insurance does), no script, no external URL, every log string escaped;
# a log edited in the middle gives a page of the lines before the break and
# exit 3. Then headless Chromium renders it (DOM, 1280x900 PNG, PDF) with
# name resolution off and a net log that must show no request.
source "$CR_E2E_LIB"

IX="$CR_SOURCE_DIR/examples/insurance"
INS="$IX/insurer.csv"
BG="$IX/brightguard.csv"
MIN=100
RENDER="$CR_SOURCE_DIR/tests/report/render.py"

# Chromium is required: a report test that cannot render must not pass.
if [ ! -x "${CR_CHROMIUM:-/usr/bin/chromium}" ]; then
  fail "chromium is not installed: run scripts/install-deps.sh (it installs chromium for the tests)"
  finish
  exit 1
fi

# ---- the plain join, independent of the engine ---------------------------
normalized_emails "$INS" >ins.keys
normalized_emails "$BG" >bg.keys
N_INS=$(wc -l <ins.keys)
N_BG=$(wc -l <bg.keys)
EXP_BG=$(comm -12 ins.keys bg.keys | wc -l)
seg_map "$BG" >bg.segs
awk 'NR == FNR { ins[$1] = 1; next } { size[$2]++; if ($1 in ins) both[$2]++ }
     END { for (s in size) print s, size[s], both[s] + 0 }' ins.keys bg.segs | sort >bg.expected
SUPPRESSED=$(awk -v m=$MIN '$3 < m { print $3 }' bg.expected)
expect_eq "the example has two segments below min_count" 2 "$(echo "$SUPPRESSED" | grep -c .)"

# ---- nodes: the BrightGuard template with a run limit of 2 ---------------
make_identities
python3 - "$IX/template-brightguard.json" template-src.json <<'EOF'
import json, sys
t = json.load(open(sys.argv[1]))
t["limits"]["max_runs_per_query"] = 2
json.dump(t, open(sys.argv[2], "w"), indent=2)
EOF
pin_template template-src.json template.json
start_server template.json "$BG"
run_client template.json "$INS" overlap
expect_eq "overlap: run exits 0" 0 "$RUN_RC"
expect_eq "overlap equals the plain join" "$EXP_BG" "$(json_field run.out count)"
for i in 1 2; do
  run_client template.json "$INS" overlap_by_segment
  expect_eq "overlap_by_segment run $i exits 0" 0 "$RUN_RC"
done
cp run.out seg-run.out
run_client template.json "$INS" overlap_by_segment
expect_eq "the third overlap_by_segment is refused (run limit)" 4 "$RUN_RC"
HOSTILE='<img src=x onerror=alert(1)>&"q"'
run_client template.json "$INS" "$HOSTILE"
if [ "$RUN_RC" -ne 0 ]; then ok "an unknown query is refused"; else fail "an unknown query ran"; fi
kill -TERM "$SERVER_PID"
wait_server

# ---- reports -------------------------------------------------------------
set +e
"$CR" report --identity consumer-id --template template.json --out consumer.html 2>report-c.err
RC_C=$?
"$CR" report --audit provider-id/audit.jsonl --out provider.html 2>report-p.err
RC_P=$?
"$CR" report --identity consumer-id --out consumer-notmpl.html 2>report-n.err
RC_N=$?
set -e
expect_eq "report (consumer, with template) exits 0" 0 "$RC_C"
expect_eq "report (provider, log only) exits 0" 0 "$RC_P"
expect_eq "report (consumer, log only) exits 0" 0 "$RC_N"
expect_eq "the report is private to its owner (0600)" 600 "$(stat -c %a consumer.html)"

# text FILE: the page's text content (no CSS, no tags, times and hex ids
# removed), one number a line: what a reader sees.
numbers() {
  sed -e '/<style>/,/<\/style>/d' "$1" | sed -E -e 's/<[^>]*>/ /g' \
    -e 's/[0-9]{4}-[0-9]{2}-[0-9]{2}[ T][0-9:.]+Z?//g' -e 's/[0-9a-f]{8,}//g' |
    grep -oE '[0-9]+(\.[0-9]+)?' || true
}
has_number() { numbers "$1" | grep -qx "$2"; }

# Protocol v3: each side sees the partner's sizes as buckets (the ladder's
# value at or above the true size); its own are exact.
for page in consumer.html provider.html consumer-notmpl.html; do
  numbers "$page" >"$page.numbers"
  if [ "$page" = provider.html ]; then
    ins=$(bucket "$N_INS") bg=$N_BG
  else
    ins=$N_INS bg=$(bucket "$N_BG")
  fi
  if has_number "$page" "$ins"; then ok "$page: the insurer's set size $ins"; else fail "$page: no $ins"; fi
  if has_number "$page" "$bg"; then ok "$page: BrightGuard's set size $bg"; else fail "$page: no $bg"; fi
  if [ "$page" != provider.html ]; then
    expect_grep "$page: the partner's size is called a bucket" "bucket" "$page"
  fi
  while read -r seg true_size both; do
    size=$true_size
    [ "$page" = provider.html ] || size=$(bucket "$true_size")
    if grep -q "<tr class=\"cell released\"><td>$seg</td><td class=\"n\">$size</td>" "$page" ||
      grep -q "<tr class=\"cell suppressed\"><td>$seg</td><td class=\"n\">$size</td>" "$page"; then
      ok "$page: $seg group size $size"
    else fail "$page: $seg group size $size missing"; fi
    if [ "$both" -ge "$MIN" ]; then
      if grep -q "<tr class=\"cell released\"><td>$seg</td>.*<strong>$both</strong>" "$page" &&
        grep -q "<g class=\"cell released\">.*>$both</text></g>" "$page"; then
        ok "$page: $seg overlap $both in the table and the chart"
      else fail "$page: $seg overlap $both missing"; fi
    else
      if grep -q "<tr class=\"cell suppressed\"><td>$seg</td>" "$page"; then
        ok "$page: $seg is shown as suppressed"
      else fail "$page: $seg not shown as suppressed"; fi
    fi
  done <bg.expected
  expect_eq "$page: two hatched cells in the chart" 2 "$(grep -o '<g class="cell suppressed">' "$page" | wc -l)"
  # No suppressed value: not in the text a reader sees, not in any cell's
  # markup (attributes included), not as a quoted or tagged number anywhere.
  for v in $SUPPRESSED; do
    if has_number "$page" "$v"; then fail "$page: suppressed value $v is in the page's text"; else
      ok "$page: suppressed value $v is not in the page's text"; fi
    if grep -E 'class="cell suppressed">' "$page" | grep -qE "(^|[^0-9.])$v([^0-9.]|$)"; then
      fail "$page: suppressed value $v in a suppressed cell's markup"
    else ok "$page: suppressed value $v in no suppressed cell's markup"; fi
    if grep -qE "[\">( ]$v[\"<) ]" "$page"; then fail "$page: $v appears as a value in the markup"; else
      ok "$page: $v appears nowhere as a value"; fi
  done
  # Self-contained: no script, no external reference of any kind.
  for bad in '<script' 'http://' 'https://' '<link' '@import' '<iframe' '<object' '<embed' 'javascript:'; do
    if grep -qiF -- "$bad" "$page"; then fail "$page contains $bad"; else ok "$page: no $bad"; fi
  done
  if grep -oE '<[a-zA-Z][^>]*>' "$page" | grep -qiE '[[:space:]](src|href|xlink:href|srcset|action|data|poster|on[a-z]+)='; then
    fail "$page: a tag with a reference or an event handler:"
    grep -oE '<[a-zA-Z][^>]*>' "$page" | grep -iE '[[:space:]](src|href|xlink:href|srcset|action|data|poster|on[a-z]+)=' | head -3 >&2
  else ok "$page: no tag refers to anything or handles an event"; fi
  if grep -o 'url([^)]*)' "$page" | grep -qv '^url(#'; then fail "$page: a url() that is not a fragment"; else
    ok "$page: url() only to fragments"; fi
  # The refused runs are in the history, the run limit is shown.
  if [ "$page" = provider.html ]; then continue; fi
  expect_grep "$page: the run over the limit is refused" 'max_runs_per_query' "$page"
  if grep -qF '&lt;img src=x onerror=alert(1)&gt;&amp;&quot;q&quot;' "$page" && ! grep -q '<img' "$page"; then
    ok "$page: the hostile query name is escaped"
  else fail "$page: the hostile query name is not escaped"; fi
done
expect_grep "consumer: overlap $EXP_BG released" "overlap <strong>$EXP_BG</strong>" consumer.html
expect_grep "consumer: run-limit gauge" '2 of 2 runs used (0 left)' consumer.html
expect_grep "consumer: org names from the template" 'HomeSure Insurance' consumer.html
expect_grep "consumer: verified" 'Audit log verified:' consumer.html
expect_grep "consumer: signed by its identity" "signed by <code title=\"$C_FP\">" consumer.html
expect_grep "provider: verified" 'Audit log verified:' provider.html
expect_grep "provider: the role without a template" 'role: provider' provider.html
expect_grep "provider: the overlap query released nothing to it" 'nothing released to this side' provider.html
if grep -q 'HomeSure' provider.html; then fail "provider.html names an org without a template"; else
  ok "provider: no org names without a template"; fi

# No e-mail of either side in any page.
head -300 ins.keys >probe.keys
head -300 bg.keys >>probe.keys
for page in consumer.html provider.html; do
  if grep -qF -f probe.keys "$page"; then fail "$page contains a match key"; else ok "$page holds no match key"; fi
done

# ---- a log edited in the middle ----------------------------------------------
cp consumer-id/audit.jsonl edited.jsonl
LINE=$(grep -n '"event":"session_started"' edited.jsonl | sed -n 2p | cut -d: -f1)
sed -i "${LINE}s/\"own_set_size\":$N_INS/\"own_set_size\":$((N_INS + 1))/" edited.jsonl
set +e
"$CR" report --audit edited.jsonl --template template.json --out edited.html 2>edited.err
RC_E=$?
set -e
expect_eq "an edited log: report exits 3" 3 "$RC_E"
expect_grep "an edited log: the error names the file and line" "edited.jsonl: line $LINE:" edited.err
expect_grep "an edited log: the page says where it breaks" "does not verify at line $LINE" edited.html
expect_grep "an edited log: only the lines before the break" "Only lines 1–$((LINE - 1)) are shown" edited.html
if grep -q "$((N_INS + 1))" edited.html; then fail "the edited value is shown"; else ok "nothing from the broken line on is shown"; fi

# --collaboration: a prefix that matches nothing is an error naming the file.
set +e
"$CR" report --audit consumer-id/audit.jsonl --collaboration ffff --out x.html 2>collab.err
RC_X=$?
set -e
expect_eq "--collaboration that matches nothing: exit 2" 2 "$RC_X"
expect_grep "--collaboration: the error names the log" 'consumer-id/audit.jsonl: no collaboration' collab.err

# ---- headless Chromium -------------------------------------------------------
# The network check can fail: a page that fetches must be caught.
printf '<!DOCTYPE html><html><head><link rel="stylesheet" href="https://canary.invalid/a.css"></head><body><img src="http://canary.invalid/x.png" alt=""><p>canary</p></body></html>\n' >canary.html
if python3 "$RENDER" canary.html render-canary 2>canary.err; then
  fail "render.py does not see a page's network requests"
else
  expect_grep "render.py catches a page's request" 'network request in .*canary.invalid' canary.err
fi
for page in consumer.html provider.html; do
  out="render-${page%.html}"
  if python3 "$RENDER" "$page" "$out" 2>"$out.err"; then
    ok "$page renders in Chromium: DOM, PNG and PDF, no network request"
  else
    fail "$page: rendering failed:"
    sed 's/^/    /' "$out.err" >&2
  fi
  [ -s "$out/dom.html" ] || continue
  if [ "$page" = provider.html ]; then ins=$(bucket "$N_INS") bg=$N_BG; else ins=$N_INS bg=$(bucket "$N_BG"); fi
  if numbers "$out/dom.html" | grep -qx "$ins" && numbers "$out/dom.html" | grep -qx "$bg"; then
    ok "$page: the DOM holds the set sizes"
  else fail "$page: the DOM lacks the set sizes"; fi
  while read -r seg size both; do
    if [ "$both" -ge "$MIN" ]; then
      if numbers "$out/dom.html" | grep -qx "$both"; then ok "$page: DOM holds $seg's $both"; else
        fail "$page: DOM lacks $seg's $both"; fi
    elif numbers "$out/dom.html" | grep -qx "$both"; then
      fail "$page: DOM holds the suppressed value $both"
    else ok "$page: DOM holds no $both (suppressed)"; fi
  done <bg.expected
  if grep -qi '<script' "$out/dom.html"; then fail "$page: a script in the DOM"; else ok "$page: no script in the DOM"; fi
done
# Kept for a look (not committed): the consumer's screenshot and PDF.
if [ -n "${CR_REPORT_ARTEFACTS:-}" ]; then
  mkdir -p "$CR_REPORT_ARTEFACTS"
  cp consumer.html render-consumer/report.png render-consumer/report.pdf "$CR_REPORT_ARTEFACTS/" 2>/dev/null || true
fi

finish
