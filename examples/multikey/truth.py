#!/usr/bin/env python3
"""Ground truth for examples/multikey, computed from the CSV files alone,
independently of cleanroom (no code shared with it): what a run of each of
the template's queries must release.

What a count means (docs/queries.md "Several match keys"): the records of
the count_of side (the app in template.json) with at least one key
matching a key value of at least one row of the other side, each record
once. A record is a set of that side's rows
joined through a shared normalized value (same e-mail, or same phone),
transitively; it sends, per key, the value of its first row (file order)
that has one, and a value matches when the team has it under the same key.

Usage:
  truth.py TEAM APP                      a summary for people
  truth.py TEAM APP --json [options]     one JSON object:
      {"count_of", "records", "values" (the other side's distinct key
       values), "count", "unmatched_records", "split" (records whose keys
       matched only different rows of the other side), "by_key": {key: n},
       "exactly": {"email+phone": n, ...}, "cells": {"SECTION|CITY": n},
       "rows": n}
    --min-rides N     the app's filter rides >= N (query frequent_riders)
    --min-count N     labels with fewer elements merge into "(other)"
                      (default: the grouped query's min_count)
    --template FILE   default: template.json next to this script
    --rows FILE       writes the matched app rows: rider_id,matched_on (sorted)
"""
import csv
import json
import os
import sys

WS = " \t\n\r\v\f"


def norm_email(v):
    v = v.strip(WS)
    if v == "" or any(c in WS or ord(c) < 0x20 or ord(c) == 0x7F for c in v):
        return None
    v = "".join(chr(ord(c) + 32) if "A" <= c <= "Z" else c for c in v)
    at = v.count("@")
    if at != 1 or v.startswith("@") or v.endswith("@"):
        return None
    return v


def norm_phone(v, cc):
    digits, plus, seen = [], False, False
    for c in v:
        if c in WS or c in "-.()":
            continue
        if c == "+" and not seen:
            plus = True
        elif "0" <= c <= "9":
            digits.append(c)
        else:
            return None
        seen = True
    d = "".join(digits)
    if not plus and d.startswith("00"):
        plus, d = True, d[2:]
    if not plus:
        if cc is None:
            return None
        if d.startswith("0"):
            d = d[1:]
        elif cc == "1" and len(d) == 11 and d[0] == "1" and d[1] >= "2":
            d = d[1:]  # North America's trunk prefix 1 before 10 digits
        d = cc + d
    if not (8 <= len(d) <= 15) or d.startswith("0"):
        return None
    return "+" + d


def load_template(path):
    with open(path) as f:
        t = json.load(f)
    keys = []
    for k in t["match_keys"]:
        assert len(k["columns"]) == 1 and len(k["normalize"]) == 1, "one column, one normalizer"
        keys.append((k["name"], k["columns"][0], k["normalize"][0], k.get("default_country_code")))
    return t, keys


def key_values(row, keys):
    out = []
    for name, col, norm, cc in keys:
        v = row.get(col, "")
        if v == "":
            out.append(None)
        elif norm == "email":
            out.append(norm_email(v))
        else:
            out.append(norm_phone(v, cc))
    return out


def read_rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


# Per side: its label column (group_by) and its row id column.
SIDES = {"provider": ("section", "holder_id"), "consumer": ("city", "rider_id")}


def compute(team_path, app_path, tmpl_path, min_rides=None, min_count=1):
    t, keys = load_template(tmpl_path)
    names = [k[0] for k in keys]
    counted = t.get("count_of", "consumer")
    other = "provider" if counted == "consumer" else "consumer"
    paths = {"provider": team_path, "consumer": app_path}

    def side_rows(role):
        out = []
        for row in read_rows(paths[role]):
            # The app's filter (frequent_riders) applies to the consumer's rows.
            if role == "consumer" and min_rides is not None and int(row["rides"]) < min_rides:
                continue
            vals = key_values(row, keys)
            if any(v is not None for v in vals):
                out.append((row, vals))
        return out

    # The side that is not counted: every distinct (key, value), with its
    # first row's label, and the rows that hold it.
    values, holders = {}, {}
    olab = SIDES[other][0]
    for i, (row, vals) in enumerate(side_rows(other)):
        for k, v in enumerate(vals):
            if v is None:
                continue
            if (k, v) not in values:
                values[(k, v)] = row[olab].strip(" \t")
            holders.setdefault((k, v), set()).add(i)

    # The counted side: rows joined through a shared value are one record.
    rows = side_rows(counted)
    parent = list(range(len(rows)))

    def find(x):
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    owner = {}
    for i, (_, vals) in enumerate(rows):
        for k, v in enumerate(vals):
            if v is None:
                continue
            if (k, v) in owner:
                a, b = find(owner[(k, v)]), find(i)
                if a != b:
                    parent[max(a, b)] = min(a, b)
            else:
                owner[(k, v)] = i
    clab, cid = SIDES[counted]
    records = {}  # root -> label, the value sent per key, rows
    for i, (row, vals) in enumerate(rows):
        r = records.setdefault(find(i), {"label": row[clab].strip(" \t"),
                                         "sent": [None] * len(keys), "rows": []})
        r["rows"].append(row)
        for k, v in enumerate(vals):
            if v is not None and r["sent"][k] is None:
                r["sent"][k] = v

    # Labels with fewer elements than min_count travel as "(other)".
    def merged(labels):
        sizes = {}
        for lab in labels:
            sizes[lab] = sizes.get(lab, 0) + 1
        return {l: (l if n >= min_count else "(other)") for l, n in sizes.items()}

    omap = merged(values.values())
    cmap = merged(r["label"] for r in records.values())

    count, split = 0, 0
    by_key, exactly, cells, matched_rows = {n: 0 for n in names}, {}, {}, []
    for r in records.values():
        hit = [k for k, v in enumerate(r["sent"]) if v is not None and (k, v) in values]
        if not hit:
            continue
        count += 1
        for k in hit:
            by_key[names[k]] += 1
        combo = "+".join(names[k] for k in hit)
        exactly[combo] = exactly.get(combo, 0) + 1
        # Its keys point at rows of the other side no one of which holds both.
        if len(hit) > 1 and not set.intersection(*(holders[(k, r["sent"][k])] for k in hit)):
            split += 1
        for ol in {omap[values[(k, r["sent"][k])]] for k in hit}:
            pl, cl = (ol, cmap[r["label"]]) if counted == "consumer" else (cmap[r["label"]], ol)
            cells[pl + "|" + cl] = cells.get(pl + "|" + cl, 0) + 1
        for row in r["rows"]:
            matched_rows.append(row[cid] + "," + combo)
    return {
        "count_of": counted,
        "records": len(records),
        "values": len(values),
        "count": count,
        "unmatched_records": len(records) - count,
        "split": split,
        "by_key": by_key,
        "exactly": exactly,
        "cells": cells,
        "rows": len(matched_rows),
        "_rows": sorted(matched_rows),
    }


def main(argv):
    args = [a for a in argv[1:]]
    want_json = "--json" in args
    min_rides, rows_out, tmpl, min_count = None, None, None, None
    rest = []
    i = 0
    while i < len(args):
        a = args[i]
        if a == "--json":
            pass
        elif a == "--min-rides":
            min_rides = int(args[i + 1])
            i += 1
        elif a == "--rows":
            rows_out = args[i + 1]
            i += 1
        elif a == "--template":
            tmpl = args[i + 1]
            i += 1
        elif a == "--min-count":
            min_count = int(args[i + 1])
            i += 1
        else:
            rest.append(a)
        i += 1
    team_path, app_path = rest
    if tmpl is None:
        tmpl = os.path.join(os.path.dirname(os.path.abspath(__file__)), "template.json")
    if min_count is None:
        # Labels merge into "(other)" below the grouped query's min_count.
        t, _ = load_template(tmpl)
        min_count = max(q["min_count"] for q in t["queries"].values() if "group_by" in q)
    res = compute(team_path, app_path, tmpl, min_rides, min_count)
    if rows_out:
        with open(rows_out, "w") as f:
            for line in res["_rows"]:
                f.write(line + "\n")
    del res["_rows"]
    if want_json:
        print(json.dumps(res, sort_keys=True))
        return
    side = {"consumer": "app.csv", "provider": "team.csv"}
    other = "team.csv" if res["count_of"] == "consumer" else "app.csv"
    print("%s: %d distinct key values (e-mails and phones)" % (other, res["values"]))
    print("%s: %d records (rows sharing an e-mail or a phone are one)"
          % (side[res["count_of"]], res["records"]))
    print("records with a match on any key (holders_riding): %d" % res["count"])
    print("  matched on e-mail: %d, on phone: %d" % (res["by_key"]["email"], res["by_key"]["phone"]))
    for combo in sorted(res["exactly"]):
        print("  on exactly %s: %d" % (combo, res["exactly"][combo]))
    print("  whose two keys matched two different rows of the other side: %d" % res["split"])
    print("rows of those records (safe_ride_offers rows): %d" % res["rows"])
    print("per section and city (holders_riding_by_city):")
    for cell in sorted(res["cells"]):
        sec, city = cell.split("|")
        print("  %-6s %-12s %d" % (sec, city, res["cells"][cell]))


if __name__ == "__main__":
    main(sys.argv)
