#!/usr/bin/env python3
"""bench/run.sh's bookkeeping: the benchmark template, one JSON result per
size from the measurement files, the Markdown table and the plot.

  report.py template SRC.json SUITE OUT.json [KEYS]
  report.py row SIZE_DIR --n N --overlap F --expect K --suite S --cores C --crypto CRYPTO.json...
                [--mpi K --data DATA_DIR]
  report.py table RESULTS.jsonl
  report.py plot RESULTS.jsonl OUT.svg

Standard library only. Every figure is derived here, so docs/benchmarks.md
describes one place:

  bound_s     = (n + n_c) k (hash_blind + reblind + digest) / cores
                (2 n k ... when both sides hold n; core-seconds
                of the suite's crypto for both nodes, spread over the cores
                the two nodes share; k match keys per record: each side
                blinds and re-blinds k points per record)
  efficiency  = bound_s / wall_s
  cpu_util    = (user + sys of serve + user + sys of run) / (wall_s * cores)
  crypto_share_of_cpu = 2 n k (hash_blind + reblind + digest) / (user + sys of
                both nodes): how much of the CPU the nodes used is the
                unavoidable crypto; unlike efficiency it hardly depends on
                other load on the machine (efficiency ~= crypto_share_of_cpu
                * cpu_util)

hash_blind and reblind are libsodium's one-element costs. When bench_crypto
ran on another ristretto255 backend (its "backend", docs/crypto-backends.md),
the row also has batch_bound_s and batch_efficiency, the same formulas with
that backend's batch_hash_blind and batch_reblind: the bound of the nodes'
own backend, next to libsodium's.

Memory (issue 17): rss_kb is each node's peak resident set (bench_exec's
wait4), peak_rss_bytes the same from the node's --json; spill_bytes_per_elem
= the node's spill.bytes_written / its own n (what it wrote);
spill_peak_bytes_per_elem = its spill.peak_bytes (the most on disk at once)
/ the larger of the two sets (a small side's spill holds the large side's
tables); leftover_files = entries left in the node's work directory after
it exited (must be 0).

Scale-out (issue 21, bench/run.sh --mpi; row --mpi K): each party is
`mpirun -np K cleanroom-mpi`, the whole job under bench_exec (its CPU: mpirun
and every rank it reaped) and each rank under bench_exec too, so for each
party (per element of its own set, n):

  crypto_s        = own_points (hash_blind) + peer_points (reblind + digest),
                    the padded sizes (pads are blinded like real elements),
                    times the match keys; one core's cost from bench_crypto
                    (the batch figures when the nodes' backend is not
                    libsodium's)
  cpu_over_crypto = (mpirun + all ranks' CPU) / crypto_s: 1 would be nothing
                    but the crypto; its growth with K is the cost of spreading
  rank0_noncrypto_us_per_elem
                  = (rank 0's CPU - crypto_s / K) / n: rank 0 computes share 0
                    (1/K) of every batch; the rest of its CPU is the node's
                    serial part (loading, TLS, framing, sorting, matching, the
                    MPI messages), which does not spread
  workers_cpu_over_crypto
                  = ranks 1..K-1's CPU / (crypto_s (K-1) / K)
  mpi_bytes       = what crosses the party's MPI network, estimated from the
                    protocol of src/cluster/cluster.c: (K-1)/K of each batch
                    goes out as 4 + len(message) bytes per own point
                    (message = template_sha256 || u8 len || key name ||
                    value, from the CSV; a pad's is 56 bytes) and P bytes per
                    peer point, and comes back as P bytes per own point and
                    digest_bytes per peer point; plus a 128-byte request and a
                    16-byte answer header per batch (<= 4096 points) and worker
  perf            where `perf record` works, each party's job is sampled
                  (999 Hz of CPU time, every process of it) and each sample
                  classed by where it ran: crypto (libsodium, or the
                  backends' and OpenSSL's EC symbols), mpi (Open MPI's
                  libraries), kernel, other. rank0_serial_ref_us_per_elem
                  = (other + kernel samples) / crypto samples * crypto_s / K
                  / n: rank 0's serial part in units of the crypto it did,
                  at the reference's cost (load slows both alike, so the
                  ratio holds where the seconds do not);
                  workers_cpu_over_own_crypto = workers' samples / their
                  crypto samples (the cost of spreading against the crypto
                  they really did)
"""
import json
import os
import re
import subprocess
import sys


def die(msg):
    sys.stderr.write("report.py: %s\n" % msg)
    sys.exit(1)


def load_json(path):
    try:
        with open(path) as f:
            text = f.read().strip()
    except OSError as e:
        die("%s: %s" % (path, e.strerror))
    lines = [l for l in text.splitlines() if l.startswith("{")]
    if not lines:
        die("%s: no JSON object" % path)
    try:
        return json.loads(lines[-1])
    except ValueError as e:
        die("%s: %s" % (path, e))


# ---------------------------------------------------------------- template

def cmd_template(src, suite, out, keys="1"):
    with open(src) as f:
        t = json.load(f)
    t["name"] = "cleanroom benchmark (%s)" % suite
    t["suite"] = suite
    # Both sides hold one column of already-normalized e-mails (and with two
    # keys one of phones: the consumer's records counted on either).
    t["data"] = {"provider": {"required_columns": ["email"]},
                 "consumer": {"required_columns": ["email"]}}
    email = {"name": "email", "columns": ["email"], "normalize": ["email"]}
    if keys == "2":
        t.pop("match_key", None)
        t["match_keys"] = [email, {"name": "phone", "columns": ["phone"], "normalize": ["phone"]}]
        t["match"] = "any"
        t["count_of"] = "consumer"
    else:
        t["match_key"] = email
    # The plain overlap count. The harness runs "overlap_to_consumer": the
    # consumer alone learns the count, the same output as psi.js's
    # cardinality protocol, so time and bytes compare like for like.
    # "overlap" (both sides learn it) stays for --query runs by hand.
    q = t["queries"]["overlap"]
    q["min_count"] = 1
    q2 = dict(q)
    q2["results_to"] = ["consumer"]
    t["queries"] = {"overlap": q, "overlap_to_consumer": q2}
    t["limits"]["min_set_size"] = 1
    t["limits"]["max_set_size"] = max(int(t["limits"].get("max_set_size", 0)), 100000000)
    t["limits"]["max_runs_per_query"] = 1000000
    with open(out, "w") as f:
        json.dump(t, f, indent=2)
        f.write("\n")


# ---------------------------------------------------------------- one size

def stamp_of(path, pattern):
    """Seconds since the process started at which its stderr printed a line
    matching pattern (bench_exec --stamp-stderr), or None."""
    try:
        with open(path) as f:
            for line in f:
                ts, _, rest = line.partition(" ")
                if re.search(pattern, rest):
                    return float(ts)
    except (OSError, ValueError):
        pass
    return None


def busy_seconds(path, clk_tck):
    """Busy CPU time of the whole machine from a copy of /proc/stat's first
    line (user nice system idle iowait irq softirq steal ...)."""
    try:
        with open(path) as f:
            v = [int(x) for x in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    if len(v) < 8:
        return None
    return (v[0] + v[1] + v[2] + v[5] + v[6] + v[7]) / float(clk_tck)


def leftover(d, side):
    try:
        with open(os.path.join(d, side + "-work.left")) as f:
            return int(f.read().strip() or "0")
    except (OSError, ValueError):
        return None


def cluster_line(path):
    """(processes, hosts, threads) from rank 0's "K processes on H host(s)
    (names), T threads each" line on stderr, or None."""
    try:
        with open(path) as f:
            for line in f:
                m = re.search(r"(\d+) processes on (\d+) host\(s\) \(([^)]*)\), (\d+) threads each", line)
                if m:
                    ts = line.partition(" ")[0]
                    try:
                        at = float(ts)
                    except ValueError:
                        at = None
                    return {"processes": int(m.group(1)), "hosts": int(m.group(2)),
                            "host_names": m.group(3), "threads": int(m.group(4)), "started_s": at}
    except OSError:
        pass
    return None


def rank_stats(d, who, k):
    """Each rank's bench_exec figures (DIR/who.rank<r>.json), rank order."""
    out = []
    for rank in range(k):
        st = load_json(os.path.join(d, "%s.rank%d.json" % (who, rank)))
        if st["exit"] != 0:
            die("%s: %s rank %d exited %s" % (d, who, rank, st["exit"]))
        out.append(st)
    extra = [e for e in os.listdir(d) if re.fullmatch(r"%s\.rank(\d+)\.json" % who, e)
             and int(re.findall(r"\d+", e)[0]) >= k]
    if extra:
        die("%s: %s has more ranks than K=%d: %s" % (d, who, k, ", ".join(sorted(extra))))
    return out


# Where a profile's sample ran: the suite's crypto (libsodium; the batched
# ristretto255 backends and OpenSSL's P-256 arithmetic by symbol), Open MPI
# (its libraries and components), or the rest (the node's own work, libc,
# TLS, the kernel).
CRYPTO_SYM = re.compile(r"r255|ristretto|fe25519|fe51|ge25519|ge_|sc25519|sc_reduce|sc_mul|"
                        r"crypto_core|crypto_scalarmult|crypto_hash|sha512|hash_to|"
                        r"ecp_nistz256|ec_GFp|EC_POINT|ec_point|BN_|bn_mul|bn_sqr|p256", re.I)
MPI_DSO = re.compile(r"(^|/)(libmpi|libopen-pal|libopen-rte|libpmix|mca_|libevent|libhwloc|libucp|"
                     r"libucs|libfabric|libpsm)")


def perf_class(sym, dso):
    base = os.path.basename(dso)
    if base.startswith("libsodium"):
        return "crypto"
    if MPI_DSO.search(dso):
        return "mpi"
    if CRYPTO_SYM.search(sym) and not base.startswith("[kernel"):
        return "crypto"
    if base.startswith("[kernel"):
        return "kernel"
    return "other"


def perf_profile(path):
    """{pid: {"crypto": n, "mpi": n, "kernel": n, "other": n}} from the
    harness's "COUNT PID SYMBOL (DSO)" lines, or None without a profile."""
    if not os.path.exists(path):
        return None
    out = {}
    with open(path, errors="replace") as f:
        for line in f:
            m = re.match(r"^\s*(\d+)\s+(\d+)\s+(.*?)\s*\((.*)\)\s*$", line)
            if not m:
                continue
            c = out.setdefault(int(m.group(2)), {"crypto": 0, "mpi": 0, "kernel": 0, "other": 0})
            c[perf_class(m.group(3), m.group(4))] += int(m.group(1))
    return out


def mpi_of_run(d, k, s_stats, c_stats, threads):
    """The per-process figures of one --mpi run (threads: what a process of
    one runs when K = 1, where rank 0 prints no cluster line)."""
    res = {}
    for side, who, outer in (("provider", "serve", s_stats), ("consumer", "run", c_stats)):
        ranks = rank_stats(d, who, k)
        cpu_ranks = [x["user_s"] + x["sys_s"] for x in ranks]
        total = outer["user_s"] + outer["sys_s"]
        cl = cluster_line(os.path.join(d, who + ".err"))
        if cl is None and k == 1:
            cl = {"processes": 1, "threads": threads, "started_s": None}
        if cl is None or cl["processes"] != k:
            die("%s: %s's rank 0 did not report %d processes on stderr" % (d, who, k))
        audit = load_json(os.path.join(d, side + ".audit.json"))
        ares = audit.get("resources") or (audit.get("details") or {}).get("resources") or {}
        acl = ares.get("cluster") or {}
        if acl.get("processes") != k:
            die("%s: the %s's audit log records %r processes, expected %d"
                % (d, side, acl.get("processes"), k))
        prof = perf_profile(os.path.join(d, who + ".perf.txt"))
        samples = None
        if prof is not None:
            # Each rank's samples by where they ran; the pids are bench_exec's children.
            samples = [prof.get(x.get("pid"), {"crypto": 0, "mpi": 0, "kernel": 0, "other": 0})
                       for x in ranks]
            if sum(samples[0].values()) == 0:
                samples = None
        res[side] = {
            "perf_samples": samples,
            "cpu_ranks_s": cpu_ranks,
            "rank0_cpu_s": cpu_ranks[0],
            "workers_cpu_s": sum(cpu_ranks[1:]),
            # What mpirun itself used: the job's CPU less its processes'.
            "mpirun_cpu_s": max(0.0, total - sum(cpu_ranks)),
            "rss_ranks_kb": [x["maxrss_kb"] for x in ranks],
            "audit_peak_rss_bytes": ares.get("peak_rss_bytes"),
            "audit_hosts": acl.get("hosts"),
            "threads": cl["threads"],
            "launch_s": cl["started_s"],
        }
    return res


def one_run(d, expect, cores, clk_tck, k=None, threads=None):
    """The figures of one serve + run pair in directory d (k: --mpi K)."""
    s_stats = load_json(os.path.join(d, "serve.stats"))
    c_stats = load_json(os.path.join(d, "run.stats"))
    s_out = load_json(os.path.join(d, "serve.out"))
    c_out = load_json(os.path.join(d, "run.out"))
    for who, stats, out in (("serve", s_stats, s_out), ("run", c_stats, c_out)):
        if stats["exit"] != 0 or out.get("status") != "ok":
            die("%s: %s exited %s, status %s" % (d, who, stats["exit"], out.get("status")))
        rel = out.get("released")
        if who == "serve":
            # overlap_to_consumer: the provider is released nothing.
            if rel is not None:
                die("%s: serve was released %r, expected nothing" % (d, rel))
            continue
        rel = rel or {}
        if rel.get("count") != expect and not (expect == 0 and rel.get("suppressed")):
            die("%s: %s released %r, expected count %d" % (d, who, rel, expect))
    load_pat = r"rows, .* distinct keys"
    # The CPU that other processes used while `run` ran: how noisy the
    # measurement was (0 on a quiet machine).
    b0 = busy_seconds(os.path.join(d, "procstat.before"), clk_tck)
    b1 = busy_seconds(os.path.join(d, "procstat.after"), clk_tck)
    ours = (s_stats["user_s"] + s_stats["sys_s"] + c_stats["user_s"] + c_stats["sys_s"])
    other = None
    if b0 is not None and b1 is not None and c_stats["wall_s"] > 0:
        other = min(1.0, max(0.0, (b1 - b0 - ours) / (c_stats["wall_s"] * cores)))
    spill = {"provider": s_out.get("spill"), "consumer": c_out.get("spill")}
    return {
        "spill": spill,
        "peak_rss_bytes": {"provider": s_out.get("peak_rss_bytes"),
                           "consumer": c_out.get("peak_rss_bytes")},
        "phases": {"provider": s_out.get("phases"), "consumer": c_out.get("phases")},
        "leftover_files": {"provider": leftover(d, "provider"), "consumer": leftover(d, "consumer")},
        "other_cpu_util": other,
        "wall_s": c_stats["wall_s"],
        "cpu_s": {"provider": s_stats["user_s"] + s_stats["sys_s"],
                  "consumer": c_stats["user_s"] + c_stats["sys_s"]},
        "rss_kb": {"provider": s_stats["maxrss_kb"], "consumer": c_stats["maxrss_kb"]},
        "bytes_sent": {"provider": s_out["wire"]["bytes_sent"],
                       "consumer": c_out["wire"]["bytes_sent"]},
        "digest_bytes": c_out["wire"]["digest_bytes"],
        "set_size": {"provider": s_out["own_set_size"], "consumer": c_out["own_set_size"]},
        # Protocol v3: each side pads its set up to a size bucket; what the
        # partner was told is that side's padded size.
        "padded_size": {"provider": c_out.get("peer_set_size", s_out["own_set_size"]),
                        "consumer": s_out.get("peer_set_size", c_out["own_set_size"])},
        "load_s": {"provider": stamp_of(os.path.join(d, "serve.err"), load_pat),
                   "consumer": stamp_of(os.path.join(d, "run.err"), load_pat)},
        "mpi": mpi_of_run(d, k, s_stats, c_stats, threads or cores) if k else None,
    }


def r(x, nd=4):
    return None if x is None else round(x, nd)


# src/cluster/cluster.c: a request's header (op, n, digest length, reserved,
# suite[16], scalar[64], session id[32]) and an answer's (rc, reserved, bad);
# a batch is at most 4096 points; a pad's message is "cleanroom/v1/pad" ||
# seed[32] || u64 (src/engine/engine.c).
MPI_REQ_HDR, MPI_REP_HDR, MPI_BATCH, PAD_MSG = 128, 16, 4096, 16 + 32 + 8
POINT_BYTES = {"ristretto255": 32, "p256": 33}


def message_bytes(csv_path):
    """(values, bytes of their hash-to-group messages) of a benchmark CSV:
    each non-empty cell is a value of the match key named like its column
    (the benchmark template), hashed as template_sha256 || u8 len(name) ||
    name || value (src/engine/engine.c own_message)."""
    values = total = 0
    try:
        with open(csv_path, "rb") as f:
            names = f.readline().rstrip(b"\r\n").split(b",")
            for line in f:
                for name, v in zip(names, line.rstrip(b"\r\n").split(b",")):
                    if v:
                        values += 1
                        total += 32 + 1 + len(name) + len(v)
    except OSError as e:
        die("%s: %s" % (csv_path, e.strerror))
    return values, total


def mpi_figures(a, m, crypto, data_dir):
    """The scale-out figures of the median run m (see the module's doc)."""
    k = a.mpi
    hb = crypto.get("batch_hash_blind_us", crypto["hash_blind_us"])
    rb = crypto.get("batch_reblind_us", crypto["reblind_us"])
    dg = crypto["digest_us"]
    pb = POINT_BYTES.get(a.suite, 32)
    dl = m["digest_bytes"] or 0
    f = (k - 1) / float(k)
    n_of = {"provider": a.n, "consumer": a.n_consumer or a.n}
    other = {"provider": "consumer", "consumer": "provider"}
    parties = {}
    # Points each side blinds: its padded set, times the match keys when its
    # set counts records (with several keys the consumer's does: it blinds
    # each record's values; the provider's set is of distinct values).
    msgs, points = {}, {}
    for side in ("provider", "consumer"):
        msgs[side] = message_bytes(os.path.join(data_dir, side + ".csv"))
        per = max(1, int(round(msgs[side][0] / float(m["set_size"][side])))) if m["set_size"][side] else 1
        points[side] = m["padded_size"][side] * per
    for side in ("provider", "consumer"):
        x = m["mpi"][side]
        n = n_of[side]
        own_pts = points[side]
        peer_pts = points[other[side]]
        values, msg = msgs[side]
        pads = max(0, own_pts - values)
        msg_total = msg + pads * PAD_MSG
        crypto_s = (own_pts * hb + peer_pts * (rb + dg)) * 1e-6
        batches = -(-own_pts // MPI_BATCH) + -(-peer_pts // MPI_BATCH)
        hdr_out = batches * (k - 1) * MPI_REQ_HDR
        hdr_back = batches * (k - 1) * MPI_REP_HDR
        out_b = f * (4 * own_pts + msg_total + pb * peer_pts) + hdr_out
        back_b = f * (pb * own_pts + dl * peer_pts) + hdr_back
        cpu = m["cpu_s"][side]
        r0 = x["rank0_cpu_s"]
        prof = None
        if x.get("perf_samples"):
            # Rank 0's CPU split by its profile; its serial part (everything
            # but the crypto and Open MPI) also scaled to the crypto it did
            # at the reference's cost, which other load on the machine
            # moves far less than the CPU seconds themselves.
            s0 = x["perf_samples"][0]
            t0 = float(sum(s0.values()))
            ser = s0["other"] + s0["kernel"]
            wk = {c_: sum(v[c_] for v in x["perf_samples"][1:]) for c_ in s0}
            tw = float(sum(wk.values()))
            prof = {
                "rank0_samples": s0,
                "rank0_crypto_share": r(s0["crypto"] / t0, 4),
                "rank0_mpi_share": r(s0["mpi"] / t0, 4),
                "rank0_serial_share": r(ser / t0, 4),
                "rank0_serial_us_per_elem": r(r0 * ser / t0 / n * 1e6, 3),
                "rank0_mpi_us_per_elem": r(r0 * s0["mpi"] / t0 / n * 1e6, 3),
                "rank0_serial_ref_us_per_elem": (r(ser / float(s0["crypto"]) * crypto_s / k / n * 1e6, 3)
                                                 if s0["crypto"] else None),
                "workers_samples": wk if k > 1 else None,
                "workers_crypto_share": r(wk["crypto"] / tw, 4) if k > 1 and tw else None,
                "workers_mpi_share": r(wk["mpi"] / tw, 4) if k > 1 and tw else None,
                # The workers' CPU over the crypto they really did.
                "workers_cpu_over_own_crypto": r(tw / wk["crypto"], 3) if k > 1 and wk["crypto"] else None,
            }
        parties[side] = {
            "perf": prof,
            "cpu_s": r(cpu),
            "cpu_us_per_elem": r(cpu / n * 1e6, 2),
            "rank0_cpu_us_per_elem": r(r0 / n * 1e6, 2),
            "workers_cpu_us_per_elem": r(x["workers_cpu_s"] / n * 1e6, 2),
            "mpirun_cpu_us_per_elem": r(x["mpirun_cpu_s"] / n * 1e6, 2),
            "cpu_ranks_s": [r(v) for v in x["cpu_ranks_s"]],
            "crypto_s": r(crypto_s),
            "crypto_us_per_elem": r(crypto_s / n * 1e6, 2),
            "cpu_over_crypto": r(cpu / crypto_s, 3) if crypto_s > 0 else None,
            "rank0_noncrypto_us_per_elem": r((r0 - crypto_s / k) / n * 1e6, 2),
            "workers_cpu_over_crypto": r(x["workers_cpu_s"] / (crypto_s * f), 3) if k > 1 else None,
            "own_points": own_pts,
            "peer_points": peer_pts,
            "message_bytes_mean": r(msg_total / own_pts, 2) if own_pts else None,
            "mpi_bytes": {"to_workers": round(out_b), "from_workers": round(back_b)},
            "mpi_bytes_per_elem": {"to_workers": r(out_b / n, 2), "from_workers": r(back_b / n, 2)},
            "rss_ranks_kb": x["rss_ranks_kb"],
            "rank0_peak_rss_bytes": x["audit_peak_rss_bytes"],
            "hosts": x["audit_hosts"],
            "threads": x["threads"],
            "launch_s": r(x["launch_s"]),
        }
    return {
        "processes": k,
        "cores": a.cores,
        "processes_on_machine": 2 * k,
        "share0": r(1.0 / k, 4),
        "note": ("%d cores shared by both parties' %d processes (and their two mpirun): "
                 "wall time cannot fall with K on this machine; the figures that carry to a "
                 "cluster are CPU per element, cpu_over_crypto (the cost of spreading) and "
                 "rank 0's non-crypto CPU per element (the serial part)" % (a.cores, 2 * k))
        if 2 * k > a.cores or a.cores < 4 else None,
        "parties": parties,
    }


def cmd_row(argv):
    import argparse
    ap = argparse.ArgumentParser(prog="report.py row")
    ap.add_argument("dir")
    ap.add_argument("--n", type=int, required=True)
    ap.add_argument("--n-consumer", type=int, help="the consumer's n when unbalanced (default --n)")
    ap.add_argument("--memory", type=int, help="--memory MiB given to both nodes")
    ap.add_argument("--overlap", type=float, required=True)
    ap.add_argument("--expect", type=int, required=True)
    ap.add_argument("--suite", required=True)
    ap.add_argument("--cores", type=int, required=True)
    ap.add_argument("--crypto", required=True, nargs="+",
                    help="bench_crypto outputs; the lowest figure of each operation counts")
    ap.add_argument("--clk-tck", type=int, default=100)
    ap.add_argument("--loadavg", type=float)
    ap.add_argument("--commit")
    ap.add_argument("--threads", type=int)
    ap.add_argument("--keys", type=int, default=1,
                    help="match keys per record (points each side blinds per element)")
    ap.add_argument("--mpi", type=int, help="K processes per party (bench/run.sh --mpi)")
    ap.add_argument("--data", help="with --mpi: the directory of provider.csv and consumer.csv")
    a = ap.parse_args(argv)
    if a.mpi is not None and (a.mpi < 1 or not a.data):
        die("--mpi takes K >= 1 and needs --data")

    measured = [load_json(p_) for p_ in a.crypto]
    ops = ("hash_blind_us", "reblind_us", "digest_us")
    crypto = {k: min(m_[k] for m_ in measured) for k in ops}
    backend = measured[0].get("backend", "libsodium")
    batch_ops = ("batch_hash_blind_us", "batch_reblind_us")
    if backend not in ("libsodium", "openssl") and all(k in m_ for m_ in measured for k in batch_ops):
        crypto.update({k: min(m_[k] for m_ in measured) for k in batch_ops})
    reps = sorted(e for e in os.listdir(a.dir) if re.fullmatch(r"rep\d+", e))
    if not reps:
        die("%s: no runs" % a.dir)
    runs = [one_run(os.path.join(a.dir, e), a.expect, a.cores, a.clk_tck, a.mpi, a.threads) for e in reps]
    # The run with the median wall time speaks for the size (lower median
    # for an even count), with every run's wall time listed.
    order = sorted(range(len(runs)), key=lambda i: runs[i]["wall_s"])
    m = runs[order[(len(runs) - 1) // 2]]
    n, wall, cores = a.n, m["wall_s"], a.cores
    nc = a.n_consumer or n
    per_elem_us = crypto["hash_blind_us"] + crypto["reblind_us"] + crypto["digest_us"]
    bound = (n + nc) * a.keys * per_elem_us * 1e-6 / cores
    cpu = m["cpu_s"]["provider"] + m["cpu_s"]["consumer"]
    batch_bound = None
    if "batch_hash_blind_us" in crypto:
        batch_bound = (n + nc) * a.keys * (crypto["batch_hash_blind_us"] +
                                          crypto["batch_reblind_us"] + crypto["digest_us"]) * 1e-6 / cores
    row = {
        "tool": "cleanroom",
        "crypto_backend": backend,
        "suite": a.suite,
        "n": n,
        "n_consumer": nc,
        "memory_mib": a.memory,
        "keys": a.keys,
        "overlap": a.overlap,
        "intersection": a.expect,
        "cores": cores,
        "reps": len(runs),
        "wall_s": r(wall),
        "wall_s_runs": [r(x["wall_s"]) for x in runs],
        "us_per_elem": r(wall / n * 1e6, 2),
        # CPU of both nodes per element (per record with several keys): the
        # cost that other load on the machine hardly moves.
        "cpu_us_per_elem": r(cpu / n * 1e6, 2),
        "elems_per_s": round(n / wall),
        "bound_s": r(bound),
        "efficiency": r(bound / wall, 3),
        "batch_bound_s": r(batch_bound) if batch_bound else None,
        "batch_efficiency": r(batch_bound / wall, 3) if batch_bound else None,
        "cpu_util": r(cpu / (wall * cores), 3),
        "crypto_share_of_cpu": r(bound * cores / cpu, 3) if cpu > 0 else None,
        "other_cpu_util": r(m["other_cpu_util"], 3),
        "cpu_s": {k: r(v) for k, v in m["cpu_s"].items()},
        "bytes_sent": m["bytes_sent"],
        "bytes_per_elem": {k: r(v / n, 2) for k, v in m["bytes_sent"].items()},
        "digest_bytes": m["digest_bytes"],
        "rss_kb": m["rss_kb"],
        "load_s": {k: r(v) for k, v in m["load_s"].items()},
        "crypto": crypto,
        # The cost of size buckets: the extra (random, never matching)
        # elements each side blinds and sends, as a share of its true set.
        "padded_size": m["padded_size"],
        "padding_share": {k: r((m["padded_size"][k] - m["set_size"][k]) / m["set_size"][k], 4)
                          for k in ("provider", "consumer") if m["set_size"][k]},
        # Memory and spilling: each node's peak RSS (also from its --json),
        # what it spilled per element of its own set, the spill's largest
        # size on disk, the files left in its work directory (must be 0),
        # and its seconds per phase.
        "peak_rss_bytes": m["peak_rss_bytes"],
        "spill_bytes": {k: (v or {}).get("bytes_written") for k, v in m["spill"].items()},
        "spill_peak_bytes": {k: (v or {}).get("peak_bytes") for k, v in m["spill"].items()},
        "spill_runs": {k: (v or {}).get("runs") for k, v in m["spill"].items()},
        "spill_bytes_per_elem": {
            k: (r(v["bytes_written"] / own, 2) if v and v.get("bytes_written") is not None else None)
            for k, v, own in (("provider", m["spill"]["provider"], n),
                              ("consumer", m["spill"]["consumer"], nc))},
        "spill_peak_bytes_per_elem": {
            k: (r(v["peak_bytes"] / max(n, nc), 2) if v and v.get("peak_bytes") is not None else None)
            for k, v in m["spill"].items()},
        "leftover_files": m["leftover_files"],
        "phases": m["phases"],
        "loadavg": a.loadavg,
        "commit": a.commit,
        "threads": a.threads,
        "peer": None,
    }
    if a.mpi:
        row["tool"] = "cleanroom-mpi"
        row["mpi"] = mpi_figures(a, m, crypto, a.data)
    peer_json = os.path.join(a.dir, "psijs.out")
    if os.path.exists(peer_json):
        p = load_json(peer_json)
        ps = load_json(os.path.join(a.dir, "psijs.stats"))
        pw = p["wall_s"]
        row["peer"] = {
            "name": "openmined-psijs",
            "version": p.get("version"),
            "protocol": "cardinality, %s, fpr %g" % (p.get("data_structure"), p.get("fpr")),
            "intersection": p.get("intersection_size"),
            "wall_s": r(pw),
            "process_wall_s": r(ps["wall_s"]),
            "us_per_elem": r(pw / n * 1e6, 2),
            "elems_per_s": round(n / pw),
            "phases_s": {k: r(p[k + "_s"]) for k in ("setup", "request", "process", "intersect")},
            "bytes_sent": {"server": p["bytes_sent_server"], "client": p["bytes_sent_client"]},
            "bytes_per_elem": {"server": r(p["bytes_sent_server"] / n, 2),
                               "client": r(p["bytes_sent_client"] / n, 2)},
            "rss_kb": ps["maxrss_kb"],
            "cpu_s": r(ps["user_s"] + ps["sys_s"]),
        }
        cr_bytes = sum(m["bytes_sent"].values())
        ps_bytes = p["bytes_sent_server"] + p["bytes_sent_client"]
        row["ratio"] = {"time_psijs_over_cleanroom": r(pw / wall, 2),
                        "bytes_psijs_over_cleanroom": r(ps_bytes / cr_bytes, 3)}
    elif os.path.exists(os.path.join(a.dir, "psijs.skipped")):
        with open(os.path.join(a.dir, "psijs.skipped")) as f:
            row["peer_skipped"] = f.read().strip()
    print(json.dumps(row, separators=(",", ":")))


# ---------------------------------------------------------------- table

def rows_of(path):
    rows = []
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line.startswith("{"):
                rows.append(json.loads(line))
    return rows


def fmt(x, spec):
    return "–" if x is None else format(x, spec)


def pair(x, key, spec, scale=1.0):
    """ "provider / consumer" of parties[*][key]."""
    p = x["mpi"]["parties"]
    v = [p[s_].get(key) for s_ in ("provider", "consumer")]
    return " / ".join(fmt(y if y is None or scale == 1.0 else y * scale, spec) for y in v)


def pair_perf(x, key, spec):
    """ "provider / consumer" of parties[*]["perf"][key] ("–" without a profile)."""
    p = x["mpi"]["parties"]
    return " / ".join(fmt((p[s_].get("perf") or {}).get(key), spec) for s_ in ("provider", "consumer"))


def mpi_table(rows):
    out = []
    out.append("| n per side | K per party | threads per process | wall s | µs/elem | others' CPU % "
               "| CPU µs/elem provider / consumer | rank 0 | workers | mpirun "
               "| crypto µs/elem | CPU ÷ crypto | workers' CPU ÷ their crypto "
               "| rank 0 non-crypto µs/elem | rank 0 serial µs/elem (profile) | rank 0 MPI µs/elem (profile) "
               "| MPI B/elem to workers | MPI B/elem back | RSS rank 0 MiB |")
    out.append("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for x in sorted(rows, key=lambda r_: (r_["n"], r_["mpi"]["processes"])):
        mp = x["mpi"]
        oc = x.get("other_cpu_util")
        nc = x.get("n_consumer", x["n"])
        mb = {k: {s_: mp["parties"][s_]["mpi_bytes_per_elem"][k] for s_ in ("provider", "consumer")}
              for k in ("to_workers", "from_workers")}
        rss = [mp["parties"][s_]["rss_ranks_kb"][0] / 1024.0 for s_ in ("provider", "consumer")]
        out.append("| %s | %d | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |" % (
            ("%d" % x["n"]) if nc == x["n"] else ("%d / %d" % (x["n"], nc)), mp["processes"],
            pair(x, "threads", "d"), fmt(x["wall_s"], ".3f"), fmt(x["us_per_elem"], ".1f"),
            fmt(None if oc is None else 100 * oc, ".0f"),
            pair(x, "cpu_us_per_elem", ".1f"), pair(x, "rank0_cpu_us_per_elem", ".1f"),
            pair(x, "workers_cpu_us_per_elem", ".1f"), pair(x, "mpirun_cpu_us_per_elem", ".1f"),
            pair(x, "crypto_us_per_elem", ".1f"), pair(x, "cpu_over_crypto", ".2f"),
            pair(x, "workers_cpu_over_crypto", ".2f"), pair(x, "rank0_noncrypto_us_per_elem", ".1f"),
            pair_perf(x, "rank0_serial_ref_us_per_elem", ".1f"), pair_perf(x, "rank0_mpi_us_per_elem", ".1f"),
            "%s / %s" % (fmt(mb["to_workers"]["provider"], ".1f"), fmt(mb["to_workers"]["consumer"], ".1f")),
            "%s / %s" % (fmt(mb["from_workers"]["provider"], ".1f"), fmt(mb["from_workers"]["consumer"], ".1f")),
            "%s / %s" % (fmt(rss[0], ".1f"), fmt(rss[1], ".1f"))))
    x = rows[0]
    c = x["crypto"]
    notes = [
        "",
        "Each party is `mpirun --oversubscribe -np K cleanroom-mpi` (provider / consumer in each "
        "cell); suite %s, overlap %g, %d run(s) per K (the median run shown, the K interleaved); "
        "crypto on one core: hash_blind %.1f µs, reblind %.1f µs, digest %.2f µs%s. "
        "*crypto µs/elem* is the party's own points' hash_blind and the partner's points' "
        "reblind + digest, padded sizes, per element of its own set; *CPU ÷ crypto* is the "
        "party's whole CPU (all ranks and mpirun) over it; *rank 0 non-crypto* is rank 0's CPU "
        "less its share (1/K) of the crypto at the reference's cost; *rank 0 serial (profile)* is "
        "its samples outside the crypto and Open MPI over its crypto samples, times its crypto "
        "at the reference's cost: the serial part, measured in a way other load hardly moves; "
        "*rank 0 MPI (profile)* its CPU in Open MPI (building, sending and polling). MPI bytes "
        "are estimated from the protocol (docs/benchmarks.md, Scale-out)."
        % (x["suite"], x["overlap"], x["reps"], c.get("batch_hash_blind_us", c["hash_blind_us"]),
           c.get("batch_reblind_us", c["reblind_us"]), c["digest_us"],
           (", engine %s" % x["commit"]) if x.get("commit") else ""),
    ]
    if any(r_["mpi"].get("note") for r_ in rows):
        notes.append("**This machine has %d cores, shared by both parties: with K processes per "
                     "party 2K processes (and two mpirun) share them, so wall time cannot fall "
                     "with K here.** What K shows here is the cost of spreading (CPU ÷ crypto) and "
                     "rank 0's serial part; `bench/scale_model.py` turns them into a prediction "
                     "for a cluster." % x["cores"])
    print("\n".join(out + notes))


def cmd_table(path):
    rows = rows_of(path)
    if not rows:
        die("%s: no results" % path)
    if all(r_.get("mpi") for r_ in rows):
        mpi_table(rows)
        return
    mib = 1.0 / 1024
    out = []
    out.append("| n per side | keys | wall s | µs/elem | elem/s | bound s | efficiency | CPU % | crypto ÷ CPU | others' CPU % "
               "| B/elem provider→ | B/elem consumer→ | RSS provider MiB | RSS consumer MiB "
               "| psi.js wall s | psi.js µs/elem | psi.js B/elem server→ / client→ "
               "| time psi.js ÷ cleanroom | bytes psi.js ÷ cleanroom | padding provider / consumer "
               "| spill peak B/elem provider / consumer | files left in work dirs |")
    out.append("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for x in rows:
        p = x.get("peer")
        ratio = x.get("ratio") or {}
        oc = x.get("other_cpu_util")
        pad = x.get("padding_share") or {}
        sp = x.get("spill_peak_bytes_per_elem") or {}
        left = x.get("leftover_files") or {}
        nc = x.get("n_consumer", x["n"])
        out.append("| %s | %d | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |" % (
            ("%d" % x["n"]) if nc == x["n"] else ("%d / %d" % (x["n"], nc)), x.get("keys", 1), fmt(x["wall_s"], ".3f"), fmt(x["us_per_elem"], ".1f"),
            fmt(x["elems_per_s"], ",d"), fmt(x["bound_s"], ".3f"), fmt(x["efficiency"], ".2f"),
            fmt(100 * x["cpu_util"], ".0f"), fmt(x.get("crypto_share_of_cpu"), ".2f"),
            fmt(None if oc is None else 100 * oc, ".0f"),
            fmt(x["bytes_per_elem"]["provider"], ".1f"), fmt(x["bytes_per_elem"]["consumer"], ".1f"),
            fmt(x["rss_kb"]["provider"] * mib, ".1f"), fmt(x["rss_kb"]["consumer"] * mib, ".1f"),
            fmt(p and p["wall_s"], ".3f"), fmt(p and p["us_per_elem"], ".1f"),
            ("%.1f / %.1f" % (p["bytes_per_elem"]["server"], p["bytes_per_elem"]["client"])) if p else "–",
            ("%.1f×" % ratio["time_psijs_over_cleanroom"]) if p else "–",
            ("%.2f×" % ratio["bytes_psijs_over_cleanroom"]) if p else "–",
            ("%s%% / %s%%" % (fmt(100 * pad["provider"], ".1f"), fmt(100 * pad["consumer"], ".1f")))
            if "provider" in pad and "consumer" in pad else "–",
            "%s / %s" % (fmt(sp.get("provider"), ".1f"), fmt(sp.get("consumer"), ".1f")),
            "–" if left.get("provider") is None or left.get("consumer") is None
            else "%d" % (left["provider"] + left["consumer"])))
    x = rows[0]

    def span(k, spec):
        v = [r_["crypto"][k] for r_ in rows]
        lo, hi = format(min(v), spec), format(max(v), spec)
        return lo if lo == hi else "%s–%s" % (lo, hi)
    notes = [
        "",
        "suite %s, overlap %g, %d cores shared by both nodes, %d run(s) per size (the median "
        "run shown); crypto per element on one core (best of the measurements before and "
        "after each size): hash_blind "
        "%s µs, reblind %s µs, digest %s µs%s."
        % (x["suite"], x["overlap"], x["cores"], x["reps"], span("hash_blind_us", ".1f"),
           span("reblind_us", ".1f"), span("digest_us", ".2f"),
           (", engine %s" % x["commit"]) if x.get("commit") else ""),
    ]
    if x.get("batch_bound_s") is not None:
        notes.append(
            "The nodes ran the %s ristretto255 backend: batch hash_blind %s µs, reblind %s µs "
            "per element; against that bound the efficiency is %s (the table's bound and "
            "efficiency are libsodium's)."
            % (x["crypto_backend"], span("batch_hash_blind_us", ".1f"),
               span("batch_reblind_us", ".1f"),
               ", ".join("%s at n=%d" % (fmt(r_["batch_efficiency"], ".2f"), r_["n"]) for r_ in rows)))
    if any(r_.get("n_consumer", r_["n"]) != r_["n"] for r_ in rows):
        notes.append("An unbalanced row's n is the provider's / the consumer's; its µs/elem and "
                     "elem/s are per provider element, its bound (n + n_c)(hash_blind + reblind "
                     "+ digest) / cores.")
    if any(r_.get("memory_mib") for r_ in rows):
        notes.append("Both nodes ran with --memory %s MiB." % rows[0].get("memory_mib"))
    skipped = [r_.get("peer_skipped") for r_ in rows if r_.get("peer_skipped")
               and r_.get("n_consumer", r_["n"]) == r_["n"]]
    if skipped:
        notes.append("psi.js: " + skipped[0])
    print("\n".join(out + notes))


# ---------------------------------------------------------------- plot

def plot_mpi(rows, svg):
    """Per size: wall µs per element, and CPU µs per element of rank 0, the
    workers and in all (both parties), against K."""
    import tempfile
    tmp = tempfile.mkdtemp(prefix="cr-bench-plot.")
    sizes = sorted(set(r_["n"] for r_ in rows))
    dats, plots = [], []
    for i, n in enumerate(sizes):
        dat = os.path.join(tmp, "n%d.dat" % n)
        dats.append(dat)
        with open(dat, "w") as f:
            f.write("# K wall_us cpu_us rank0_us workers_us crypto_us rank0_noncrypto_us\n")
            for x in sorted((r_ for r_ in rows if r_["n"] == n), key=lambda r_: r_["mpi"]["processes"]):
                p = x["mpi"]["parties"]

                def both(k):
                    return sum(p[s_][k] or 0 for s_ in ("provider", "consumer"))

                def serial():
                    # The profile's figure where there is one.
                    v = [(p[s_].get("perf") or {}).get("rank0_serial_ref_us_per_elem")
                         for s_ in ("provider", "consumer")]
                    return sum(v) if None not in v else both("rank0_noncrypto_us_per_elem")
                f.write("%d %.3f %.3f %.3f %.3f %.3f %.3f\n" % (
                    x["mpi"]["processes"], x["us_per_elem"], both("cpu_us_per_elem"),
                    both("rank0_cpu_us_per_elem"), both("workers_cpu_us_per_elem"),
                    both("crypto_us_per_elem"), serial()))
        plots.append("'%s' using 1:2 with linespoints lw 2 pt 7 dt %d lc 1 title 'wall, n=%d'" % (dat, 1 + i, n))
        plots.append("'%s' using 1:3 with linespoints lw 2 pt 5 dt %d lc 2 title 'CPU of both parties, n=%d'" % (dat, 1 + i, n))
        plots.append("'%s' using 1:4 with linespoints lw 1 pt 9 dt %d lc 3 title 'CPU of both rank 0s, n=%d'" % (dat, 1 + i, n))
        plots.append("'%s' using 1:7 with linespoints lw 1 pt 13 dt %d lc 4 title 'both rank 0s serial part, n=%d'" % (dat, 1 + i, n))
        plots.append("'%s' using 1:6 with lines lw 1 dt %d lc rgb '#888888' title 'crypto of both parties (one core), n=%d'" % (dat, 1 + i, n))
    ks = sorted(set(r_["mpi"]["processes"] for r_ in rows))
    x = rows[0]
    gp = """
set terminal svg size 900,520 dynamic font 'sans,12' background '#ffffff'
set output '{svg}'
set title 'cleanroom-mpi on {cores} cores shared by both parties: µs per element against K'
set xrange [{x0}:{x1}]
set xtics 1
set grid
set key below
set xlabel 'K processes per party (mpirun --oversubscribe)'
set ylabel 'µs per element'
set yrange [0:*]
plot {plots}
""".format(svg=svg, cores=x["cores"], x0=min(ks) - 0.5, x1=max(ks) + 0.5, plots=", \\\n     ".join(plots))
    gpf = os.path.join(tmp, "plot.gp")
    with open(gpf, "w") as f:
        f.write(gp)
    rc = subprocess.call(["gnuplot", gpf])
    for p_ in dats + [gpf]:
        os.unlink(p_)
    os.rmdir(tmp)
    if rc != 0:
        die("gnuplot failed (%d)" % rc)


def cmd_plot(path, svg):
    every = rows_of(path)
    if every and all(r_.get("mpi") for r_ in every):
        plot_mpi(every, svg)
        return
    # The curves are per size with both sides equal: unbalanced rows stay in the table.
    rows = [r_ for r_ in rows_of(path) if r_.get("n_consumer", r_["n"]) == r_["n"]]
    if not rows:
        die("%s: no results with both sides equal" % path)
    import tempfile
    tmp = tempfile.mkdtemp(prefix="cr-bench-plot.")
    dat = os.path.join(tmp, "plot.dat")
    with open(dat, "w") as f:
        f.write("# n cleanroom_wall_s bound_s psijs_wall_s efficiency cpu_util other_cpu crypto_share\n")
        for x in sorted(rows, key=lambda x: x["n"]):
            p = x.get("peer")
            oc = x.get("other_cpu_util")
            cs = x.get("crypto_share_of_cpu")
            f.write("%d %.6f %.6f %s %.4f %.4f %s %s\n" % (
                x["n"], x["wall_s"], x["bound_s"], ("%.6f" % p["wall_s"]) if p else "?",
                x["efficiency"], x["cpu_util"], "?" if oc is None else "%.4f" % oc,
                "?" if cs is None else "%.4f" % cs))
    x = rows[0]
    title = "cleanroom %s, overlap %g, %d cores" % (x["suite"], x["overlap"], x["cores"])
    ns = [r_["n"] for r_ in rows]
    xrange = "set xrange [%g:%g]" % (min(ns) / 1.5, max(ns) * 1.5)
    has_peer = any(r_.get("peer") for r_ in rows)
    gp = """
set terminal svg size 900,820 dynamic font 'sans,12' background '#ffffff'
set output '{svg}'
set datafile missing '?'
set multiplot layout 2,1 title '{title}'
set logscale x 2
{xrange}
set format x '2^{{%L}}'
set grid
set key below
set logscale y 10
set ylabel 'wall time (s)'
plot '{dat}' using 1:2 with linespoints lw 2 pt 7 title 'cleanroom (serve + run, loopback TLS)', \\
     '{dat}' using 1:3 with lines dt 2 lw 2 title 'crypto bound 2n(hash+mult+digest)/cores'{peer}
unset logscale y
set yrange [0:1.05]
set ylabel 'fraction'
set xlabel 'n per side'
plot '{dat}' using 1:5 with linespoints lw 2 pt 7 title 'efficiency = bound / wall', \\
     '{dat}' using 1:6 with linespoints lw 2 pt 5 title 'CPU utilisation of both nodes', \\
     '{dat}' using 1:8 with linespoints lw 2 pt 13 title 'crypto share of the nodes CPU time', \\
     '{dat}' using 1:7 with linespoints dt 3 lw 1 pt 1 lc rgb '#888888' title 'CPU used by other processes (noise)'
unset multiplot
""".format(svg=svg, dat=dat, title=title.replace("'", ""), xrange=xrange,
           peer=(", \\\n     '%s' using 1:4 with linespoints lw 2 pt 9 title 'OpenMined psi.js 2.0.6 (cardinality, one process)'" % dat) if has_peer else "")
    gpf = os.path.join(tmp, "plot.gp")
    with open(gpf, "w") as f:
        f.write(gp)
    rc = subprocess.call(["gnuplot", gpf])
    for p_ in (dat, gpf):
        os.unlink(p_)
    os.rmdir(tmp)
    if rc != 0:
        die("gnuplot failed (%d)" % rc)


def main():
    if len(sys.argv) < 2 or sys.argv[1] in ("-h", "--help"):
        sys.stdout.write(__doc__)
        return
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "template" and len(args) in (3, 4):
        cmd_template(*args)
    elif cmd == "row":
        cmd_row(args)
    elif cmd == "table" and len(args) == 1:
        cmd_table(*args)
    elif cmd == "plot" and len(args) == 2:
        cmd_plot(*args)
    else:
        die("bad arguments; see report.py --help")


if __name__ == "__main__":
    main()
