#!/usr/bin/env bash
# Smoke test of the benchmark harness, so it cannot rot: bench/run.sh on a
# tiny size (256 per side, one serve + run pair, no psi.js, no plot) with the
# binary under test, then checks the JSON line it printed has every field
# docs/benchmarks.md describes, with sane values, and that the table and the
# result files were written; then --keys 2, and --unbalanced with --memory 1
# (the spill and work-directory figures). Needs neither npm nor gnuplot.
source "$CR_E2E_LIB"

BENCH="$CR_SOURCE_DIR/bench/run.sh"

set +e
bash "$BENCH" --help >help.out 2>&1
HELP_RC=$?
bash "$BENCH" --sizes 0 --cleanroom "$CR" >bad.out 2>&1
BAD_RC=$?
bash "$BENCH" --cleanroom "$CR" --sizes 256 --overlap 0.5 --reps 1 --no-peer --no-plot \
  --crypto-n 64 --crypto-reps 1 --out results --work bench-work >bench.out 2>bench.err
RC=$?
set -e

expect_eq "--help exits 0" 0 "$HELP_RC"
expect_grep "--help names --sizes" "--sizes" help.out
expect_eq "a bad size is refused (exit 2)" 2 "$BAD_RC"
expect_eq "bench/run.sh exits 0" 0 "$RC"
if [ "$RC" -ne 0 ]; then sed 's/^/    /' bench.err >&2; fi
expect_eq "one JSON line on stdout" 1 "$(grep -c '^{' bench.out || true)"
expect_grep "a Markdown table on stdout" '^| n per side |' bench.out
expect_grep "progress on stderr" 'bench: n=256 per side' bench.err

grep '^{' bench.out >row.json || true
CHECK=$(python3 - row.json <<'PY' 2>&1 || true
import json, sys
row = json.loads(open(sys.argv[1]).readline())
bad = []
def need(cond, what):
    if not cond:
        bad.append(what)
need(row["tool"] == "cleanroom" and row["suite"] == "ristretto255", "tool/suite")
need(row["n"] == 256 and row["intersection"] == 128, "n/intersection")
need(row["wall_s"] > 0 and row["us_per_elem"] > 0 and row["elems_per_s"] > 0, "speed")
need(abs(row["cpu_us_per_elem"] - (row["cpu_s"]["provider"] + row["cpu_s"]["consumer"]) / 256 * 1e6) < 50, "cpu_us_per_elem")
need(row["bound_s"] > 0 and 0 < row["efficiency"] < 2, "efficiency")
need(0 < row["cpu_util"] <= 1.05, "cpu_util")
need(row["crypto_share_of_cpu"] is not None and row["crypto_share_of_cpu"] > 0, "crypto_share_of_cpu")
need(row["other_cpu_util"] is not None and 0 <= row["other_cpu_util"] <= 1, "other_cpu_util")
need(len(row["wall_s_runs"]) == 1 and row["bytes_sent"]["provider"] > 0, "runs/bytes_sent")
for side in ("provider", "consumer"):
    need(row["bytes_per_elem"][side] >= 32, "bytes_per_elem." + side)
    need(row["rss_kb"][side] > 0, "rss_kb." + side)
    need(row["load_s"][side] is not None and row["load_s"][side] >= 0, "load_s." + side)
for k in ("hash_blind_us", "reblind_us", "digest_us"):
    need(row["crypto"][k] > 0, "crypto." + k)
need(row["peer"] is None, "peer")
# Memory (issue 17): peak RSS per node from --json too, spill per element,
# nothing left in the work directories, the phases.
need(row["n_consumer"] == 256, "n_consumer")
for side in ("provider", "consumer"):
    need(row["peak_rss_bytes"][side] > 0, "peak_rss_bytes." + side)
    need(row["spill_bytes_per_elem"][side] is not None and row["spill_bytes_per_elem"][side] >= 0,
         "spill_bytes_per_elem." + side)
    need(row["spill_runs"][side] is not None, "spill_runs." + side)
    need(row["leftover_files"][side] == 0, "leftover_files." + side)
    need(isinstance(row["phases"][side], dict) and row["phases"][side], "phases." + side)
need("loading" in row["phases"]["consumer"], "phases.consumer.loading")
# Size buckets: 256 keys per side are padded to the ladder's floor (1000).
for side in ("provider", "consumer"):
    need(row["padded_size"][side] >= 256, "padded_size." + side)
    need(abs(row["padding_share"][side] - (row["padded_size"][side] - 256) / 256) < 1e-3,
         "padding_share." + side)
print("ok" if not bad else "missing or wrong: " + ", ".join(bad))
PY
)
expect_eq "the JSON line has every field, with sane values" ok "$CHECK"
expect_grep "results/latest.jsonl written" '"n":256' results/latest.jsonl
expect_grep "results/latest.md has the table" '^| 256 | 1 |' results/latest.md

# Two match keys (e-mail and phone): the same people, so the same count,
# and twice the points per record in the bound.
set +e
bash "$BENCH" --cleanroom "$CR" --sizes 256 --overlap 0.5 --reps 1 --no-plot --keys 2 \
  --crypto-n 64 --crypto-reps 1 --out results2 --work bench-work2 >bench2.out 2>bench2.err
RC2=$?
bash "$BENCH" --cleanroom "$CR" --sizes 256 --keys 3 >bad2.out 2>&1
BAD2_RC=$?
set -e
expect_eq "--keys 2: bench/run.sh exits 0" 0 "$RC2"
if [ "$RC2" -ne 0 ]; then sed 's/^/    /' bench2.err >&2; fi
expect_eq "--keys 3 is refused (exit 2)" 2 "$BAD2_RC"
grep '^{' bench2.out >row2.json || true
CHECK2=$(python3 - row2.json <<'PY' 2>&1 || true
import json, sys
row = json.loads(open(sys.argv[1]).readline())
bad = []
if row.get("keys") != 2: bad.append("keys")
if row["n"] != 256 or row["intersection"] != 128: bad.append("n/intersection")
c = row["crypto"]
want = 2 * 256 * 2 * (c["hash_blind_us"] + c["reblind_us"] + c["digest_us"]) * 1e-6 / row["cores"]
if abs(row["bound_s"] - want) > 1e-3: bad.append("bound_s (2 n keys)")
if row["peer"] is not None: bad.append("peer (no psi.js with two keys)")
# The consumer sends two points per record: about twice one key's bytes.
if row["bytes_per_elem"]["consumer"] < 64: bad.append("bytes_per_elem.consumer")
print("ok" if not bad else "missing or wrong: " + ", ".join(bad))
PY
)
expect_eq "--keys 2: the JSON line says keys 2, the same count, a bound of 2 n k" ok "$CHECK2"
expect_grep "--keys 2: the table's keys column" '^| 256 | 2 |' results2/latest.md

# The unbalanced case (a small consumer against a large provider) with a
# tiny budget: the count, the sizes, and nothing left in the work dirs.
set +e
bash "$BENCH" --cleanroom "$CR" --unbalanced 64,512 --memory 1 --overlap 0.5 --reps 1 --no-plot \
  --crypto-n 64 --crypto-reps 1 --out results3 --work bench-work3 >bench3.out 2>bench3.err
RC3=$?
bash "$BENCH" --cleanroom "$CR" --unbalanced 64 >bad3.out 2>&1
BAD3_RC=$?
set -e
expect_eq "--unbalanced: bench/run.sh exits 0" 0 "$RC3"
if [ "$RC3" -ne 0 ]; then sed 's/^/    /' bench3.err >&2; fi
expect_eq "--unbalanced 64 (one size) is refused (exit 2)" 2 "$BAD3_RC"
expect_eq "--unbalanced alone: one JSON line" 1 "$(grep -c '^{' bench3.out || true)"
grep '^{' bench3.out >row3.json || true
CHECK3=$(python3 - row3.json <<'PY' 2>&1 || true
import json, sys
row = json.loads(open(sys.argv[1]).readline())
bad = []
if row["n"] != 512 or row["n_consumer"] != 64 or row["intersection"] != 32: bad.append("n/n_consumer/intersection")
if row["memory_mib"] != 1: bad.append("memory_mib")
c = row["crypto"]
want = (512 + 64) * (c["hash_blind_us"] + c["reblind_us"] + c["digest_us"]) * 1e-6 / row["cores"]
if abs(row["bound_s"] - want) > 1e-3: bad.append("bound_s (n + n_c)")
if row["leftover_files"] != {"provider": 0, "consumer": 0}: bad.append("leftover_files")
if row["peer"] is not None: bad.append("peer")
print("ok" if not bad else "missing or wrong: " + ", ".join(bad))
PY
)
expect_eq "--unbalanced: the sizes, the count, the bound, no files left" ok "$CHECK3"
expect_grep "--unbalanced: the table shows provider / consumer" '^| 512 / 64 | 1 |' results3/latest.md

finish
