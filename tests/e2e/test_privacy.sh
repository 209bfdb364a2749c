#!/usr/bin/env bash
# Differential privacy end to end (issue 18, docs/privacy.md): real serve and
# run processes over loopback TLS.
#
#   - `template check` shows each noisy query's expected error; a members
#     query in a budgeted template is refused unless the template allows it;
#   - 40 runs of one noisy query (discrete Laplace, epsilon 0.5) on fixed
#     data: both sides release the same noisy value in every run, the values
#     vary, their mean is within 4 standard errors of the exact overlap and
#     their variance matches the mechanism's; each run spends 0.5 of the
#     budget of 20, recorded by both nodes before anything is released;
#   - run 41 would exceed the budget: refused (exit 4, spent and left) by
#     the consumer's own node, by the provider's node when the consumer's
#     log is fresh, and by both again after both restart.
source "$CR_E2E_LIB"

small_sets_fixture # prov.csv, cons.csv: 120 keys in both (EXPECTED)

# The overlap template with noise on both queries and a budget for 40 runs.
python3 - "$PWD/template.json" <<'EOF'
import json, sys
p = sys.argv[1]
t = json.load(open(p))
for name, q in t["queries"].items():
    q["min_count"] = 10
    q["noise"] = {"mechanism": "discrete_laplace", "epsilon": 0.5}
t["limits"]["privacy_budget"] = {"epsilon": 20}
# Buckets at the sets' own sizes: no padding, so 40 runs stay quick.
t["limits"]["size_buckets"] = {"edges": [100, 200, 300], "ratio": 2}
json.dump(t, open("dp.json", "w"), indent=2)
# A members query in the budgeted template, without and with allow_members.
t["data"]["consumer"] = {"required_columns": ["email"]}
t["queries"]["my_matches"] = {"kind": "members", "run_by": ["consumer"],
                              "results_to": ["consumer"], "min_count": 10}
json.dump(t, open("dp-members.json", "w"), indent=2)
t["limits"]["privacy_budget"]["allow_members"] = True
json.dump(t, open("dp-members-allowed.json", "w"), indent=2)
EOF

# ---- the template ----------------------------------------------------------
set +e
"$CR" template check dp.json >check.out 2>check.err
CHECK_RC=$?
set -e
expect_eq "the noisy template checks" 0 "$CHECK_RC"
expect_grep "check shows the mechanism" "noise: discrete Laplace, epsilon 0.5 (scale 2)" check.out
expect_grep "check shows the expected error" "+-6 at 95%" check.out
expect_grep "check shows the budget" "privacy budget: epsilon 20 for all runs together" check.out

set +e
"$CR" template check dp-members.json >members.out 2>members.err
MEMBERS_RC=$?
"$CR" serve --template dp-members.json --identity provider-id --data prov.csv \
  --listen 127.0.0.1:0 >members-serve.out 2>members-serve.err
MEMBERS_SERVE_RC=$?
"$CR" template check dp-members-allowed.json >allowed.out 2>allowed.err
ALLOWED_RC=$?
set -e
expect_eq "a members query in a budgeted template is refused (exit 2)" 2 "$MEMBERS_RC"
expect_grep "the refusal names the field and the way out" \
  'queries.my_matches.kind: found "members", expected "count": a template with $.limits.privacy_budget releases no records unless $.limits.privacy_budget.allow_members is true' \
  members.err
expect_eq "serve refuses that template too (exit 2)" 2 "$MEMBERS_SERVE_RC"
expect_eq "allow_members: true lets it through" 0 "$ALLOWED_RC"
expect_grep "the summary says members are allowed" "members queries allowed" allowed.out

# ---- 40 runs ------------------------------------------------------------------
start_server dp.json prov.csv
RUNS=40
for i in $(seq 1 $RUNS); do
  run_client dp.json cons.csv overlap
  if [ "$RUN_RC" -ne 0 ]; then
    fail "run $i exited $RUN_RC: $(cat run.err)"
    break
  fi
  cp run.out "run-$i.out"
done
# The provider prints one JSON line per session, once it is recorded.
for _ in $(seq 1 100); do
  [ "$(wc -l <server.out)" -ge "$RUNS" ] && break
  sleep 0.05
done
# Per run: the consumer's and the provider's release of the same session,
# their noise objects and the budget each side reports.
python3 - "$RUNS" >values.txt 2>values.err <<'EOF2'
import json, sys
runs = int(sys.argv[1])
served = {}
for line in open("server.out"):
    p = json.loads(line)
    served[p["session_id"]] = p
for i in range(1, runs + 1):
    c = json.load(open("run-%d.out" % i))
    p = served[c["session_id"]]
    rc, rp = c["released"], p["released"]
    n = rc["noise"]
    assert n["mechanism"] == "discrete_laplace" and n["epsilon"] == 0.5 and n["scale"] == 2.0, n
    assert n["error_95"] == 6, n
    assert rp["noise"] == n, (rp, n)
    assert "count" in rc and "count" in rp, (rc, rp)
    b = c["privacy_budget"]
    assert b["epsilon"] == 20 and b["spent"] == 0.5 * i and b["left"] == 20 - 0.5 * i, b
    assert p["privacy_budget"]["spent"] == 0.5 * i, p["privacy_budget"]
    print(rc["count"], rp["count"])
EOF2
N=$(wc -l <values.txt)
expect_eq "$RUNS runs released a noisy count to both sides, with its noise and budget" "$RUNS" "$N"
if [ -s values.err ]; then fail "the releases: $(cat values.err)"; fi
SAME=$(awk '$1 == $2' values.txt | wc -l)
expect_eq "both sides released the same noisy value in every run" "$RUNS" "$SAME"
STATS=$(python3 - values.txt "$EXPECTED" <<'EOF'
import math, sys
v = [int(l.split()[0]) for l in open(sys.argv[1])]
exact = int(sys.argv[2])
p = math.exp(-0.5)
var = 2 * p / (1 - p) ** 2          # the discrete Laplace's variance, epsilon 0.5
n = len(v)
mean = sum(v) / n
svar = sum((x - mean) ** 2 for x in v) / (n - 1)
se = math.sqrt(var / n)
print(len(set(v)), "%.3f" % mean, "%.3f" % abs(mean - exact), "%.3f" % (4 * se),
      "%.3f" % svar, "%.3f" % var,
      "ok" if abs(mean - exact) <= 4 * se else "mean-off",
      "ok" if 0.3 * var <= svar <= 3.0 * var else "var-off")
EOF
)
read -r DISTINCT MEAN DIFF FOURSE SVAR VAR MEAN_OK VAR_OK <<<"$STATS"
echo "   $RUNS noisy values: $DISTINCT distinct, mean $MEAN (exact $EXPECTED, |diff| $DIFF, 4 se $FOURSE), variance $SVAR (mechanism $VAR)"
if [ "$DISTINCT" -ge 5 ]; then ok "the noisy values vary ($DISTINCT distinct)"; else fail "only $DISTINCT distinct values"; fi
expect_eq "the mean is within 4 standard errors of the exact overlap" ok "$MEAN_OK"
expect_eq "the variance matches the mechanism's (0.3x to 3x)" ok "$VAR_OK"

# Both logs recorded every spend in session_started, before each release.
for who in provider consumer; do
  SPENDS=$(grep '"event":"session_started"' "$who-id/audit.jsonl" | grep -c '"epsilon_micro":500000' || true)
  expect_eq "the $who's log holds $RUNS spends" "$RUNS" "$SPENDS"
  ORDER=$(python3 - "$who-id/audit.jsonl" <<'EOF'
import json, sys
started = {}
bad = 0
for line in open(sys.argv[1]):
    e = json.loads(line)
    if e["event"] == "session_started" and "privacy_spend" in e:
        started[e["run_id"]] = e["seq"]
    if e["event"] == "result_released":
        s = started.get(e.get("run_id"))
        if s is None or s >= e["seq"] or "noise" not in e["released"]:
            bad += 1
print("ok" if bad == 0 else "bad %d" % bad)
EOF
)
  expect_eq "the $who recorded each spend before its noisy release" ok "$ORDER"
done

# ---- run 41: over the budget ----------------------------------------------------
run_client dp.json cons.csv overlap
expect_eq "run 41 is refused (exit 4)" 4 "$RUN_RC"
expect_grep "the refusal says what is spent and left" \
  'query "overlap" would spend epsilon 0.5 of the privacy budget, but only 0 of 20 is left (20 spent under this template' \
  run.err
# The consumer's node refused before connecting; another query shares the budget.
run_client dp.json cons.csv overlap_to_consumer
expect_eq "another query of the template is refused too: one budget" 4 "$RUN_RC"

# The provider refuses on its own: a consumer with a fresh log would run.
run_client dp.json cons.csv overlap --audit fresh.jsonl
expect_eq "with a fresh consumer log, the provider refuses (exit 4)" 4 "$RUN_RC"
expect_grep "the partner refused it" "NOT_ALLOWED" run.err
for _ in $(seq 1 100); do
  grep -q "would spend epsilon 0.5" server.err && break
  sleep 0.05
done
expect_grep "the provider says what is spent and left" \
  'would spend epsilon 0.5 of the privacy budget, but only 0 of 20 is left (20 spent' server.err

# ---- both restart ------------------------------------------------------------------
kill "$SERVER_PID"
wait_server
start_server dp.json prov.csv
run_client dp.json cons.csv overlap
expect_eq "after both restart, the run is still refused (exit 4)" 4 "$RUN_RC"
expect_grep "... with spent and left read back from the log" "but only 0 of 20 is left (20 spent" run.err
run_client dp.json cons.csv overlap --audit fresh2.jsonl
expect_eq "after the restart the provider refuses on its own too" 4 "$RUN_RC"
kill "$SERVER_PID"
wait_server
for who in provider consumer; do
  REL=$(grep -c '"event":"result_released"' "$who-id/audit.jsonl")
  expect_eq "the $who released $RUNS results, no more" "$RUNS" "$REL"
  set +e
  "$CR" audit verify "$who-id/audit.jsonl" --cert "$who-id/identity.crt" >/dev/null 2>verify.err
  VRC=$?
  set -e
  expect_eq "the $who's audit log verifies" 0 "$VRC"
done

# The report shows the noisy releases and the budget spent.
set +e
"$CR" report --identity consumer-id --template dp.json --out report.html >report.out 2>report.err
REPORT_RC=$?
set -e
expect_eq "the report is written" 0 "$REPORT_RC"
expect_grep "the report gives the budget spent and left" "&epsilon; 20 of 20 spent over the runs below, 0 left" report.html
expect_grep "the report marks each noisy release" "Noisy release.</strong> discrete_laplace, &epsilon; 0.5 spent by this run" report.html

# Human output says the number is noisy, with its interval and the budget.
cat >dp2.json <dp.json
sed -i 's/"epsilon": 20/"epsilon": 1/' dp2.json
start_server dp2.json prov.csv --once
set +e
"$CR" run --template dp2.json --identity consumer-id --data cons.csv --peer "127.0.0.1:$PORT" \
  --query overlap >human.out 2>human.err
HRC=$?
set -e
wait_server
expect_eq "a human run exits 0" 0 "$HRC"
expect_grep "human output says the overlap is noisy" "the overlap is noisy (discrete Laplace, epsilon 0.5)" human.out
expect_grep "human output gives the 95% interval" "within +-6 of [0-9]* with 95% probability" human.out
expect_grep "human output gives the budget" "privacy budget: epsilon 0.5 of 1 spent, 0.5 left" human.out

finish
