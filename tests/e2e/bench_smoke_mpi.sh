#!/usr/bin/env bash
# Smoke test of the scale-out benchmark (bench/run.sh --mpi, issue 21), so
# its MPI path cannot rot: both parties as `mpirun -np 2 cleanroom-mpi` on
# a tiny size (256 per side, one run, no plot) with the binaries under test;
# checks the JSON line's per-process figures, the table, the result files,
# and that bench/scale_model.py reads them and prints a prediction.
# Registered by tests/CMakeLists.txt only when cleanroom-mpi is built (it
# is not a test_*.sh, which every build runs).
source "$CR_E2E_LIB"

BENCH="$CR_SOURCE_DIR/bench/run.sh"
MODEL="$CR_SOURCE_DIR/bench/scale_model.py"
# Open MPI's own allocations would fail LeakSanitizer in a sanitized build.
export ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=0"

set +e
bash "$BENCH" --cleanroom "$CR" --sizes 256 --mpi 0 >bad.out 2>&1
BAD_RC=$?
bash "$BENCH" --cleanroom "$CR" --sizes 256 --overlap 0.5 --reps 1 --no-plot --mpi 2 \
  --crypto-n 64 --crypto-reps 1 --out results --work bench-work >bench.out 2>bench.err
RC=$?
set -e
expect_eq "--mpi 0 is refused (exit 2)" 2 "$BAD_RC"
expect_eq "bench/run.sh --mpi 2 exits 0" 0 "$RC"
if [ "$RC" -ne 0 ]; then sed 's/^/    /' bench.err >&2; fi
expect_eq "one JSON line on stdout" 1 "$(grep -c '^{' bench.out || true)"
expect_grep "the scale-out table on stdout" '^| n per side | K per party |' bench.out
expect_grep "the table says wall time cannot fall with K on this machine" 'cannot fall with K' bench.out
expect_grep "progress names K" 'cleanroom-mpi with K=2 run 1/1' bench.err

grep '^{' bench.out >row.json || true
# With perf working, the harness profiles each party's job.
PERF_OK=0
if command -v perf >/dev/null && perf record -q -o perf.check -- true >/dev/null 2>&1; then PERF_OK=1; fi
CHECK=$(python3 - row.json "$PERF_OK" <<'PY' 2>&1 || true
import json, sys
row = json.loads(open(sys.argv[1]).readline())
bad = []
def need(cond, what):
    if not cond:
        bad.append(what)
m = row.get("mpi") or {}
need(row["tool"] == "cleanroom-mpi" and m.get("processes") == 2, "tool/processes")
need(row["n"] == 256 and row["intersection"] == 128, "n/intersection (the released count)")
need(row["wall_s"] > 0 and row["us_per_elem"] > 0, "wall")
for side in ("provider", "consumer"):
    p = m["parties"][side]
    need(len(p["cpu_ranks_s"]) == 2 and all(v > 0 for v in p["cpu_ranks_s"]), side + ".cpu_ranks_s")
    # The job's CPU is its ranks' and mpirun's.
    total = (p["rank0_cpu_us_per_elem"] + p["workers_cpu_us_per_elem"] + p["mpirun_cpu_us_per_elem"])
    need(abs(total - p["cpu_us_per_elem"]) < 1.0, side + ": rank 0 + workers + mpirun = CPU")
    need(p["crypto_us_per_elem"] > 0 and p["cpu_over_crypto"] > 0, side + ".crypto")
    need(p["workers_cpu_over_crypto"] is not None and p["workers_cpu_over_crypto"] > 0,
         side + ".workers_cpu_over_crypto")
    need(p["rank0_noncrypto_us_per_elem"] is not None, side + ".rank0_noncrypto_us_per_elem")
    # Half of each batch crosses MPI: at least a 32-byte point and a
    # 38-byte message per own element out, a point back.
    need(p["mpi_bytes_per_elem"]["to_workers"] > 0.5 * (32 + 38), side + ".mpi_bytes to_workers")
    need(p["mpi_bytes_per_elem"]["from_workers"] > 0.5 * 32, side + ".mpi_bytes from_workers")
    need(len(p["rss_ranks_kb"]) == 2 and p["rank0_peak_rss_bytes"] > 0, side + ".rss")
    need(p["hosts"] and p["threads"] >= 1, side + ".hosts/threads (audit log, stderr)")
    pf = p.get("perf")
    if sys.argv[2] == "1":
        need(pf and pf["rank0_samples"]["crypto"] > 0 and pf["workers_samples"]["crypto"] > 0,
             side + ".perf samples")
        need(pf and 0 < pf["rank0_crypto_share"] < 1 and pf["rank0_serial_ref_us_per_elem"] > 0,
             side + ".perf rank 0 split")
    else:
        need(pf is None, side + ".perf (none without perf)")
need(m.get("note") and "cannot fall with K" in m["note"], "note (2 cores)")
print("ok" if not bad else "missing or wrong: " + ", ".join(bad))
PY
)
expect_eq "the JSON line has the per-process figures, with sane values" ok "$CHECK"
expect_grep "results/latest-mpi.jsonl written" '"processes":2' results/latest-mpi.jsonl
expect_grep "results/latest-mpi.md has the table" '^| 256 | 2 |' results/latest-mpi.md
if [ -e results/latest.jsonl ]; then
  fail "--mpi wrote results/latest.jsonl (the plain benchmark's file)"
else
  ok "--mpi leaves the plain benchmark's results alone"
fi

# The model reads those results.
set +e
python3 "$MODEL" results/latest-mpi.jsonl >model.out 2>model.err
MRC=$?
python3 "$MODEL" results/latest-mpi.jsonl --json --hosts 4 --cores 16 >model.json 2>>model.err
MJRC=$?
python3 "$MODEL" nothing-here.jsonl >model-bad.out 2>&1
MBAD=$?
set -e
expect_eq "scale_model.py exits 0" 0 "$MRC"
if [ "$MRC" -ne 0 ]; then sed 's/^/    /' model.err >&2; fi
expect_grep "the model names the dominant term" '^Dominant term on 8 hosts' model.out
expect_grep "the model prints its measured inputs" 'rank 0 serial per element' model.out
expect_eq "scale_model.py --json exits 0" 0 "$MJRC"
expect_eq "scale_model.py without results fails" 1 "$MBAD"
MCHECK=$(python3 - model.json <<'PY' 2>&1 || true
import json, sys
o = json.load(open(sys.argv[1]))
c, one = o["cluster"], o["one_host"]
bad = []
if c["hosts"] != 4 or c["cores_per_host"] != 16: bad.append("parameters")
if not (c["estimate_s"] > 0 and one["estimate_s"] >= c["estimate_s"]): bad.append("estimates")
if abs(c["terms_s"]["crypto"] * 4 - one["terms_s"]["crypto"]) > 1e-6 * one["terms_s"]["crypto"]: bad.append("crypto spreads over hosts")
if c["terms_s"]["serial"] != one["terms_s"]["serial"]: bad.append("serial does not spread")
if one["terms_s"]["mpi"] != 0: bad.append("no MPI traffic off one host")
print("ok" if not bad else "wrong: " + ", ".join(bad))
PY
)
expect_eq "the model: crypto spreads over the hosts, rank 0's serial part does not" ok "$MCHECK"

finish
