#!/usr/bin/env python3
"""Scale-out model (issue 21): the time of one session of N elements per side
when each party runs `mpirun -np H*C cleanroom-mpi` on H hosts of C cores,
from what `bench/run.sh --mpi LIST` measured on this machine.

  bench/scale_model.py [RESULTS.jsonl] [--n N] [--hosts H] [--cores C]
                       [--net-gbps G] [--wan-gbps W] [--disk-mbps D]
                       [--spill-bytes B] [--crypto-us U] [--serial-us U]
                       [--overhead W] [--json]

RESULTS.jsonl defaults to bench/results/latest-mpi.jsonl. Standard library
only. The derivation is in docs/benchmarks.md, "Scale-out (issue 21)"; in
short, for the slower of the two parties (both run the same model, each on
its own cluster, at the same time):

  points     = N (1 + pad): the set padded to its size bucket (the default
               ladder: floor 1000, ratio 2^(1/4), as src/template computes it)
  crypto     = points (hash_blind + reblind + digest) w / (H C)
               every core computes its share of every batch; w = the
               workers' CPU over their crypto at the largest K measured (the
               cost of spreading: receiving, copying, answering, polling)
  serial     = N s0 + F: rank 0's non-crypto CPU per element s0 (and fixed
               cost F when several sizes were measured) at the smallest K
               measured (K = 1: no MPI message): loading, TLS, framing,
               sorting and matching run on rank 0 whatever H is; the same
               figure at the largest K (with building the shares and polling
               while the workers compute) gives the "as at K" line
  mpi        = points b (H - 1) / H / net: rank 0 sends every share and
               receives every answer; b = bytes per point of all shares, the
               larger direction (a full-duplex link); (H - 1) / H of the shares
               leave rank 0's host
  spill      = N spill_bytes 2 / disk: rank 0 writes its runs and reads them
               back once (issue 17: 53-99 B per element written)
  partner    = points wire / wan: the TLS link to the partner (bytes per
               element measured, the larger direction)

  estimate   = max(serial + crypto + mpi + spill, partner)
               rank 0 hands out each batch and waits for all its shares
               (src/cluster/cluster.c), so its own work and the cluster's add
               up; the partner link streams meanwhile
  lower      = max of all terms (everything overlapped)
  speed-up   = estimate on 1 host of C cores / estimate on H hosts; with any
               number of hosts at most estimate on 1 host / max(serial + spill
               + all of the MPI traffic, partner) (Amdahl)
"""
import argparse
import json
import math
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
# include/cleanroom/template.h
BUCKET_FLOOR, BUCKET_RATIO = 1000, 1.189207115002721


def die(msg):
    sys.stderr.write("scale_model.py: %s\n" % msg)
    sys.exit(1)


def bucket(n):
    """cr_template_bucket under the default ladder (src/template/template.c)."""
    x = BUCKET_FLOOR
    while x < n:
        p = x * BUCKET_RATIO
        u = int(p)
        if u < p:
            u += 1
        x = u if u > x else x + 1
    return x


def fit_line(xs, ys):
    """Least squares y = a + b x; (a, b)."""
    m = len(xs)
    mx, my = sum(xs) / m, sum(ys) / m
    sxx = sum((x - mx) ** 2 for x in xs)
    if sxx == 0:
        return None
    b = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sxx
    return my - b * mx, b


def load(path):
    rows = []
    try:
        with open(path) as f:
            for line in f:
                line = line.strip()
                if line.startswith("{"):
                    rows.append(json.loads(line))
    except OSError as e:
        die("%s: %s (run bench/run.sh --mpi 1,2,3 first)" % (path, e.strerror))
    rows = [r for r in rows if r.get("mpi") and r.get("n_consumer", r["n"]) == r["n"]]
    if not rows:
        die("%s: no --mpi rows with both sides equal" % path)
    return rows


def inputs(rows):
    """The measured inputs of the model, from the rows at the largest K (and
    for the serial part every size at that K)."""
    kmax = max(r["mpi"]["processes"] for r in rows)
    nmax = max(r["n"] for r in rows if r["mpi"]["processes"] == kmax)
    ref = [r for r in rows if r["mpi"]["processes"] == kmax and r["n"] == nmax][0]
    sides = ("provider", "consumer")
    c = ref["crypto"]
    # The crypto's cost: the lowest reference of the run (bench_crypto
    # before and after each size; other load only ever adds time), every
    # row's figures in crypto units rescaled to it.
    def ref_of(r):
        c_ = r["crypto"]
        return (c_.get("batch_hash_blind_us", c_["hash_blind_us"]) +
                c_.get("batch_reblind_us", c_["reblind_us"]) + c_["digest_us"])
    best = min(rows, key=ref_of)
    c = best["crypto"]
    hb = c.get("batch_hash_blind_us", c["hash_blind_us"])
    rb = c.get("batch_reblind_us", c["reblind_us"])
    dg = c["digest_us"]
    unit = {id(r): ref_of(best) / ref_of(r) for r in rows}
    pr = ref["mpi"]["parties"]
    n = ref["n"]
    # The cost of spreading: the workers' CPU over their crypto, from the
    # profile (against the crypto they really did) when there is one, else
    # against the reference's cost.
    w, w_how = None, None
    if kmax > 1:
        if all((pr[s].get("perf") or {}).get("workers_cpu_over_own_crypto") for s in sides):
            w = max(pr[s]["perf"]["workers_cpu_over_own_crypto"] for s in sides)
            w_how = "profile: workers' samples / their crypto samples, K=%d, n=%d" % (kmax, n)
        else:
            w = max(pr[s]["workers_cpu_over_crypto"] for s in sides)
            w_how = "CPU seconds / the crypto at the reference's cost, K=%d, n=%d" % (kmax, n)
    # Rank 0's serial part: its CPU less its share of the crypto (1/K at
    # the reference's cost). Its own work (loading, TLS, framing, sorting,
    # matching) is measured cleanly at K = 1, where no MPI message is sent:
    # that is the model's serial term. At K > 1 the same figure also holds
    # building and sending the shares and polling while the workers compute
    # (MPI_Test every 100 us: CPU in proportion to the time rank 0 waits,
    # not to the elements, and much of it on an oversubscribed machine): the
    # model's "as at K" line. With several sizes a line
    # through seconds against n separates the per-element cost (its slope)
    # from a session's fixed cost (process start, MPI_Init, TLS).
    def per_elem_and_fixed(points):
        """points: [(n, seconds)] -> (us per element, fixed s, how)."""
        ns = sorted(set(x for x, _ in points))
        if len(ns) >= 2:
            f = fit_line([x for x, _ in points], [y for _, y in points])
            if f is not None and f[1] > 0:
                return f[1] * 1e6, max(0.0, f[0]), "slope over n = %s" % ", ".join(map(str, ns))
        x, y = max(points)
        return y / x * 1e6, 0.0, "at n=%d" % x

    def profiled(r, s, with_mpi):
        """Rank 0's non-crypto CPU per element from the profile, in units
        of its crypto at the reference's cost; None without a profile."""
        pf = r["mpi"]["parties"][s].get("perf") or {}
        sm = pf.get("rank0_samples")
        if not sm or not sm.get("crypto"):
            return None
        rest = sm["other"] + sm["kernel"] + (sm["mpi"] if with_mpi else 0)
        return (rest / float(sm["crypto"]) * r["mpi"]["parties"][s]["crypto_us_per_elem"] * unit[id(r)]
                / r["mpi"]["processes"])

    def serial_at(k, with_mpi):
        at = [r for r in rows if r["mpi"]["processes"] == k]
        if not at:
            return None
        use_prof = all(profiled(r, s, with_mpi) is not None for r in at for s in sides)
        by = {}
        for s in sides:
            if use_prof:
                pts = [(r["n"], profiled(r, s, with_mpi) * r["n"] * 1e-6) for r in at]
            else:
                pts = [(r["n"], r["mpi"]["parties"][s]["rank0_noncrypto_us_per_elem"] * r["n"] * 1e-6)
                       for r in at]
            by[s] = per_elem_and_fixed(pts)
        side = max(by, key=lambda s: by[s][0])
        return {"us_per_elem": round(by[side][0], 3), "fixed_s": round(by[side][1], 4),
                "how": "%s, K=%d, %s, %s" % ("profile" if use_prof else "CPU less the crypto share",
                                             k, side, by[side][2]),
                "by_side": {s: round(v[0], 3) for s, v in by.items()}}
    kmin = min(r["mpi"]["processes"] for r in rows)
    serial = serial_at(kmin, False)
    upper = serial_at(kmax, True) if kmax > kmin else None
    # Cross-check: at each size rank 0's CPU per element against 1/K,
    # a + b/K: b the crypto it really spent per element, a what stays
    # however many processes share the crypto.
    kfit = {}
    for n_ in sorted(set(r["n"] for r in rows)):
        at_n = [r for r in rows if r["n"] == n_]
        if len(set(r["mpi"]["processes"] for r in at_n)) < 2:
            continue
        for s in sides:
            f = fit_line([1.0 / r["mpi"]["processes"] for r in at_n],
                         [r["mpi"]["parties"][s]["rank0_cpu_us_per_elem"] for r in at_n])
            if f is not None:
                kfit.setdefault(s, {})[str(n_)] = {"a_us": round(f[0], 2), "b_us": round(f[1], 2)}
    # Bytes per point over MPI, all K shares (the row's are (K-1)/K of them).
    mpi_b = None
    if kmax > 1:
        full = kmax / (kmax - 1.0)
        mpi_b = max(max(pr[s]["mpi_bytes_per_elem"]["to_workers"],
                        pr[s]["mpi_bytes_per_elem"]["from_workers"]) * full for s in sides)
    wire_b = max(ref["bytes_per_elem"].values())
    return {
        "source_row": {"n": n, "K": kmax, "commit": ref.get("commit"),
                       "other_cpu_util": ref.get("other_cpu_util"), "cores": ref["cores"],
                       "keys": ref.get("keys", 1)},
        "measured_padding": bucket(n) / float(n) - 1.0,
        "crypto_us_per_point": hb + rb + dg,
        "crypto_us_per_elem": max(pr[s]["crypto_us_per_elem"] for s in sides) * unit[id(ref)],
        "crypto": {"hash_blind_us": hb, "reblind_us": rb, "digest_us": dg},
        "workers_cpu_over_crypto": w,
        "workers_cpu_over_crypto_how": w_how,
        "cpu_over_crypto": {s: pr[s]["cpu_over_crypto"] for s in sides},
        "rank0_serial_us_per_elem": serial["us_per_elem"],
        "rank0_fixed_s": serial["fixed_s"],
        "rank0_serial_how": serial["how"],
        "rank0_serial_at_largest_k": upper,
        "rank0_fit_over_1_over_k": kfit,
        "mpi_bytes_per_elem": mpi_b,
        "wire_bytes_per_elem": wire_b,
    }


def model(inp, n, hosts, cores, net_gbps, wan_gbps, disk_mbps, spill_bytes):
    pad = bucket(n) / float(n) - 1.0
    # Per element figures were measured at the measured size's padding.
    scale = (1.0 + pad) / (1.0 + inp["measured_padding"])
    w = inp["workers_cpu_over_crypto"] or 1.0
    terms = {
        "crypto": n * scale * inp["crypto_us_per_elem"] * 1e-6 * w / (hosts * cores),
        "serial": n * inp["rank0_serial_us_per_elem"] * 1e-6 + inp["rank0_fixed_s"],
        "mpi": (n * scale * (inp["mpi_bytes_per_elem"] or 0.0) * (hosts - 1) / hosts * 8 /
                (net_gbps * 1e9)),
        "spill": n * spill_bytes * 2 / (disk_mbps * 1e6),
        "partner": n * scale * inp["wire_bytes_per_elem"] * 8 / (wan_gbps * 1e9),
    }
    node = terms["serial"] + terms["crypto"] + terms["mpi"] + terms["spill"]
    est = max(node, terms["partner"])
    return {"hosts": hosts, "cores_per_host": cores, "padding": pad, "scale": scale,
            "terms_s": terms, "rank0_path_s": node, "estimate_s": est,
            "lower_s": max(terms.values()),
            "dominant": max(terms, key=lambda k: terms[k])}


def hms(s):
    if s >= 3600:
        return "%.2f h" % (s / 3600)
    if s >= 60:
        return "%.1f min" % (s / 60)
    return "%.1f s" % s


def main():
    ap = argparse.ArgumentParser(description=__doc__, usage=argparse.SUPPRESS,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("results", nargs="?", default=os.path.join(HERE, "results", "latest-mpi.jsonl"))
    ap.add_argument("--n", type=float, default=1e9, help="elements per side (default 1e9)")
    ap.add_argument("--hosts", type=int, default=8, help="hosts per party (default 8)")
    ap.add_argument("--cores", type=int, default=32, help="cores per host (default 32)")
    ap.add_argument("--net-gbps", type=float, default=10.0,
                    help="the party's MPI network, Gb/s at rank 0's host (default 10)")
    ap.add_argument("--wan-gbps", type=float, default=1.0,
                    help="the TLS link between the parties, Gb/s (default 1)")
    ap.add_argument("--disk-mbps", type=float, default=500.0,
                    help="rank 0's spill disk, MB/s each way (default 500)")
    ap.add_argument("--spill-bytes", type=float, default=99.0,
                    help="bytes rank 0 spills per element (default 99: issue 17's largest)")
    ap.add_argument("--crypto-us", type=float,
                    help="hash_blind + reblind + digest per point on one core instead of the measured one")
    ap.add_argument("--serial-us", type=float,
                    help="rank 0's serial µs per element instead of the measured one (no fixed cost)")
    ap.add_argument("--overhead", type=float,
                    help="workers' CPU over their crypto instead of the measured one (1: ideal)")
    ap.add_argument("--json", action="store_true", help="one JSON object instead of the text")
    a = ap.parse_args()
    if a.n < 1 or a.hosts < 1 or a.cores < 1 or min(a.net_gbps, a.wan_gbps, a.disk_mbps) <= 0 \
            or a.spill_bytes < 0:
        die("--n, --hosts, --cores and the bandwidths must be positive")
    n = int(a.n)
    inp = inputs(load(a.results))
    if a.serial_us is not None:
        if a.serial_us < 0:
            die("--serial-us must be >= 0")
        inp.update(rank0_serial_us_per_elem=a.serial_us, rank0_fixed_s=0.0,
                   rank0_serial_how="--serial-us")
    if a.crypto_us is not None:
        if a.crypto_us <= 0:
            die("--crypto-us must be > 0")
        f = a.crypto_us / inp["crypto_us_per_point"]
        inp["crypto_us_per_elem"] *= f
        inp["crypto_us_per_point"] = a.crypto_us
        # A serial part from the profile is in units of the crypto: it
        # scales with it (the same host, faster or slower).
        for key in ("rank0_serial_us_per_elem", "rank0_fixed_s"):
            if inp["rank0_serial_how"].startswith("profile"):
                inp[key] *= f
        u = inp["rank0_serial_at_largest_k"]
        if u and u["how"].startswith("profile"):
            inp["rank0_serial_at_largest_k"] = dict(u, us_per_elem=u["us_per_elem"] * f,
                                                    fixed_s=u["fixed_s"] * f)
    if a.overhead is not None:
        if a.overhead < 1:
            die("--overhead must be >= 1")
        inp["workers_cpu_over_crypto"] = a.overhead
    if inp["mpi_bytes_per_elem"] is None and a.hosts > 1:
        die("no K > 1 in the results: the MPI terms need bench/run.sh --mpi 1,2,3 (or any K > 1)")
    params = {"n": n, "hosts": a.hosts, "cores_per_host": a.cores, "net_gbps": a.net_gbps,
              "wan_gbps": a.wan_gbps, "disk_mbps": a.disk_mbps, "spill_bytes_per_elem": a.spill_bytes,
              "crypto_us": a.crypto_us, "serial_us": a.serial_us, "overhead": a.overhead}
    big = model(inp, n, a.hosts, a.cores, a.net_gbps, a.wan_gbps, a.disk_mbps, a.spill_bytes)
    one = model(inp, n, 1, a.cores, a.net_gbps, a.wan_gbps, a.disk_mbps, a.spill_bytes)
    t = big["terms_s"]
    # As hosts grow, the crypto term vanishes and the MPI term tends to all
    # of the shares over rank 0's link: what stays is the limit.
    mpi_all = n * big["scale"] * (inp["mpi_bytes_per_elem"] or 0.0) * 8 / (a.net_gbps * 1e9)
    floor_s = max(t["serial"] + t["spill"] + mpi_all, t["partner"])
    amdahl = one["estimate_s"] / floor_s
    ideal = dict(inp, workers_cpu_over_crypto=1.0)
    big1 = model(ideal, n, a.hosts, a.cores, a.net_gbps, a.wan_gbps, a.disk_mbps, a.spill_bytes)
    one1 = model(ideal, n, 1, a.cores, a.net_gbps, a.wan_gbps, a.disk_mbps, a.spill_bytes)
    up = inp["rank0_serial_at_largest_k"] if a.serial_us is None else None
    bigu = oneu = None
    if up:
        upper = dict(inp, rank0_serial_us_per_elem=up["us_per_elem"], rank0_fixed_s=up["fixed_s"])
        bigu = model(upper, n, a.hosts, a.cores, a.net_gbps, a.wan_gbps, a.disk_mbps, a.spill_bytes)
        oneu = model(upper, n, 1, a.cores, a.net_gbps, a.wan_gbps, a.disk_mbps, a.spill_bytes)
    out = {"inputs": inp, "parameters": params, "cluster": big, "one_host": one,
           "ideal_spreading": {"cluster_s": big1["estimate_s"], "one_host_s": one1["estimate_s"],
                               "speedup": one1["estimate_s"] / big1["estimate_s"]},
           "serial_at_largest_k": {"cluster_s": bigu["estimate_s"], "one_host_s": oneu["estimate_s"],
                            "speedup": oneu["estimate_s"] / bigu["estimate_s"]} if bigu else None,
           "speedup_over_one_host": one["estimate_s"] / big["estimate_s"],
           "speedup_limit_any_hosts": amdahl,
           "time_limit_any_hosts_s": floor_s,
           "core_hours_crypto_per_party": n * big["scale"] * inp["crypto_us_per_elem"] * 1e-6 / 3600}
    if a.json:
        print(json.dumps(out, indent=2, sort_keys=True))
        return
    src = inp["source_row"]
    p = print
    p("Measured inputs (bench/run.sh --mpi, n=%d, K=%d, %d cores%s%s):"
      % (src["n"], src["K"], src["cores"], ", engine %s" % src["commit"] if src["commit"] else "",
         ", others' CPU %.0f %%" % (100 * src["other_cpu_util"]) if src["other_cpu_util"] is not None else ""))
    c = inp["crypto"]
    p("  crypto per point, one core   %.1f us (%s); per element of a party, padded: %.1f us"
      % (inp["crypto_us_per_point"], "--crypto-us" if a.crypto_us is not None else
         "hash_blind %.1f + reblind %.1f + digest %.2f" % (c["hash_blind_us"], c["reblind_us"],
                                                           c["digest_us"]),
         inp["crypto_us_per_elem"]))
    if inp["workers_cpu_over_crypto"] is not None:
        p("  workers' CPU / their crypto  %.2f (the cost of spreading, applied to the crypto term; %s)"
          % (inp["workers_cpu_over_crypto"],
             "--overhead" if a.overhead is not None else inp["workers_cpu_over_crypto_how"]))
    p("  rank 0 serial per element    %.1f us + %.2f s per session (%s)"
      % (inp["rank0_serial_us_per_elem"], inp["rank0_fixed_s"], inp["rank0_serial_how"]))
    u = inp["rank0_serial_at_largest_k"]
    if u:
        p("  the same at the largest K    %.1f us + %.2f s per session (%s; with building the "
          "shares and polling while it waits)" % (u["us_per_elem"], u["fixed_s"], u["how"]))
    for s, by_n in sorted(inp["rank0_fit_over_1_over_k"].items()):
        p("    %-8s rank 0 CPU/elem = a + b/K: " % s + "; ".join(
            "n=%s a=%.1f b=%.1f us" % (n_, v["a_us"], v["b_us"])
            for n_, v in sorted(by_n.items(), key=lambda x: int(x[0]))))
    if inp["mpi_bytes_per_elem"] is not None:
        p("  MPI bytes per element        %.1f (all K shares, the larger direction)" % inp["mpi_bytes_per_elem"])
    p("  partner link bytes per elem  %.1f (the larger direction)" % inp["wire_bytes_per_elem"])
    p("Parameters: n = %g per side, %d hosts x %d cores per party, MPI network %g Gb/s, "
      "partner link %g Gb/s, spill %g B/elem on a %g MB/s disk"
      % (n, a.hosts, a.cores, a.net_gbps, a.wan_gbps, a.spill_bytes, a.disk_mbps))
    p("Padding: %.1f %% at n = %g (bucket %d), %.1f %% at the measured n (per-element figures "
      "rescaled by %.3f)" % (100 * big["padding"], n, bucket(n), 100 * inp["measured_padding"],
                             big["scale"]))
    p("")
    p("| term | %d x %d cores | 1 x %d cores |" % (a.hosts, a.cores, a.cores))
    p("|---|---:|---:|")
    names = {"crypto": "crypto / cores (x workers' overhead)", "serial": "rank 0 serial",
             "mpi": "MPI traffic at rank 0", "spill": "spill on rank 0's disk",
             "partner": "partner link"}
    for k in ("crypto", "serial", "mpi", "spill", "partner"):
        p("| %s | %s | %s |" % (names[k], hms(big["terms_s"][k]), hms(one["terms_s"][k])))
    p("| **estimate** (rank 0's path, or the partner link if longer) | **%s** | **%s** |"
      % (hms(big["estimate_s"]), hms(one["estimate_s"])))
    p("| lower bound (all overlapped) | %s | %s |" % (hms(big["lower_s"]), hms(one["lower_s"])))
    p("| estimate with ideal spreading (workers' overhead 1) | %s | %s |"
      % (hms(big1["estimate_s"]), hms(one1["estimate_s"])))
    if bigu:
        p("| rank 0's serial part as at K=%d (with its MPI work and polling) | %s | %s |"
          % (inp["source_row"]["K"], hms(bigu["estimate_s"]), hms(oneu["estimate_s"])))
    p("")
    share = t[big["dominant"]] / big["rank0_path_s"] if big["rank0_path_s"] else 0
    p("Dominant term on %d hosts: %s (%.0f %% of rank 0's path). Speed-up over one %d-core host: "
      "%.2fx; with any number of hosts at most %.2fx (%s: Amdahl, rank 0's serial part, its "
      "spill and its MPI traffic do not spread). The crypto alone is %.0f core-hours per party."
      % (a.hosts, names[big["dominant"]], 100 * share, a.cores, out["speedup_over_one_host"],
         amdahl, hms(floor_s), out["core_hours_crypto_per_party"]))
    p("With ideal spreading (workers' overhead 1) the speed-up would be %.2fx%s."
      % (out["ideal_spreading"]["speedup"],
         "; with rank 0's serial part as at K=%d %.2fx" % (inp["source_row"]["K"], out["serial_at_largest_k"]["speedup"])
         if bigu else ""))


if __name__ == "__main__":
    main()
