#!/usr/bin/python3
"""Every template under examples/ (and docs' own samples) validates against
docs/template.schema.json, and a few broken ones do not: the schema that
editors and CI tools use must agree with the loader on the examples."""
import glob
import json
import os
import sys

import jsonschema

root = sys.argv[1]
with open(os.path.join(root, "docs", "template.schema.json")) as f:
    schema = json.load(f)
jsonschema.Draft202012Validator.check_schema(schema)
validator = jsonschema.Draft202012Validator(schema)

passed = failed = 0
templates = sorted(glob.glob(os.path.join(root, "examples", "**", "template*.json"), recursive=True))
if not templates:
    print("no example templates found")
    sys.exit(1)
for path in templates:
    with open(path) as f:
        doc = json.load(f)
    errors = list(validator.iter_errors(doc))
    if errors:
        failed += 1
        print(f"FAIL {path}: " + "; ".join(e.message for e in errors[:5]))
    else:
        passed += 1
        print(f"ok: {path} validates")

# The schema must reject what the loader rejects, or it checks nothing.
with open(templates[0]) as f:
    base = json.load(f)
broken = [
    ("unknown top-level field", lambda d: d.__setitem__("sweet", 1)),
    ("min_count below 1", lambda d: next(iter(d["queries"].values())).__setitem__("min_count", 0)),
    ("bad suite", lambda d: d.__setitem__("suite", "rot13")),
    ("short fingerprint", lambda d: d["parties"]["provider"].__setitem__("cert_sha256", "abc")),
    ("per-party key columns for one party only",
     lambda d: d["match_key"].__setitem__("columns", {"provider": ["mobil"]})),
    ("per-party key columns for an unknown role",
     lambda d: d["match_key"].__setitem__(
         "columns", {"provider": ["a"], "consumer": ["b"], "auditor": ["c"]})),
    ("an empty per-party key column list",
     lambda d: d["match_key"].__setitem__("columns", {"provider": [], "consumer": ["b"]})),
    ("unknown noise mechanism", lambda d: next(iter(d["queries"].values())).__setitem__(
        "noise", {"mechanism": "laplace", "epsilon": 1})),
    ("gaussian noise without delta", lambda d: next(iter(d["queries"].values())).__setitem__(
        "noise", {"mechanism": "discrete_gaussian", "sigma": 2})),
    ("laplace noise with sigma", lambda d: next(iter(d["queries"].values())).__setitem__(
        "noise", {"mechanism": "discrete_laplace", "epsilon": 1, "sigma": 2})),
    ("negative budget", lambda d: d.setdefault("limits", {}).__setitem__(
        "privacy_budget", {"epsilon": -1})),
]
# And accepts the per-party form of match_key.columns.
doc = json.loads(json.dumps(base))
doc["match_key"]["columns"] = {"provider": ["mobil"], "consumer": ["phone_number"]}
if list(validator.iter_errors(doc)):
    failed += 1
    print("FAIL: schema rejects per-party match_key.columns")
else:
    passed += 1
    print("ok: schema accepts per-party match_key.columns")

for name, mutate in broken:
    doc = json.loads(json.dumps(base))
    mutate(doc)
    if list(validator.iter_errors(doc)):
        passed += 1
        print(f"ok: schema rejects {name}")
    else:
        failed += 1
        print(f"FAIL: schema accepts {name}")

# Several match keys (examples/multikey): the schema refuses what the loader
# refuses about them too.
with open(os.path.join(root, "examples", "multikey", "template.json")) as f:
    multi = json.load(f)
single_key = {"name": "email", "columns": ["email"], "normalize": ["email"]}
broken_multi = [
    ("match_key next to match_keys", lambda d: d.__setitem__("match_key", single_key)),
    ("no match key at all", lambda d: d.pop("match_keys")),
    ("match other than any", lambda d: d.__setitem__("match", "all")),
    ("count_of not a role", lambda d: d.__setitem__("count_of", "both")),
    ("more than 8 keys", lambda d: d.__setitem__("match_keys", [dict(single_key, name="k%d" % i) for i in range(9)])),
    ("a key name with a space", lambda d: d["match_keys"][1].__setitem__("name", "tel no")),
    ("count_of with one match_key", lambda d: (d.pop("match_keys"), d.pop("match"), d.__setitem__("match_key", single_key))),
]
for name, mutate in broken_multi:
    doc = json.loads(json.dumps(multi))
    mutate(doc)
    if list(validator.iter_errors(doc)):
        passed += 1
        print(f"ok: schema rejects {name}")
    else:
        failed += 1
        print(f"FAIL: schema accepts {name}")

print(f"{passed} passed, {failed} failed")
sys.exit(1 if failed else 0)
