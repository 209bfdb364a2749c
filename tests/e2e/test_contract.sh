#!/usr/bin/env bash
# End to end: the template as a contract. check lists every error; sign and
# verify; a template that requires signatures is refused until both are
# there; an expired template and out-of-limit set sizes are refused by the
# node before anything is sent.
source "$CR_E2E_LIB"

make_identities
pin_template "$EX/template.json" template.json

# --- check: a readable summary, and every error listed ---------------------
"$CR" template check template.json >check.out 2>check.err
expect_grep "check summarises the parties" "Acme Security" check.out
expect_grep "check shows who sees each query's result" "result to consumer" check.out
expect_grep "check shows the expiry" "not_after 2030-12-31T00:00:00Z" check.out
sed -e 's/"min_count": 100/"min_count": -3/' -e 's/"suite": "ristretto255"/"suite": "rot13"/' \
  -e 's/"kind": "count"/"kind": "cuont"/' template.json >broken.json
set +e
"$CR" template check broken.json >broken.out 2>broken.err
BROKEN_RC=$?
set -e
expect_eq "a broken template exits 2" 2 "$BROKEN_RC"
expect_grep "the min_count error names its path" '\$.queries.overlap.min_count' broken.err
expect_grep "the suite error names its path" '\$.suite' broken.err
expect_grep "the kind error names its path" '\$.queries.overlap.kind' broken.err
expect_grep "the kind error names the value found" 'cuont' broken.err
sed 's/"suite"/"sweet"/' template.json >typo.json
set +e
"$CR" template check typo.json >/dev/null 2>typo.err
TYPO_RC=$?
set -e
expect_eq "an unknown field is an error" 2 "$TYPO_RC"
expect_grep "the unknown field is named" 'sweet' typo.err

# --json: one object on stdout, valid or not.
"$CR" template check template.json --json >check.json
expect_eq "check --json: valid" True "$(python3 -c 'import json, sys; print(json.load(sys.stdin)["valid"])' <check.json)"
expect_eq "check --json: the hash is template hash's" "$("$CR" template hash template.json)" \
  "$(python3 -c 'import json, sys; print(json.load(sys.stdin)["sha256"])' <check.json)"
expect_eq "check --json: the queries" "overlap overlap_to_consumer" \
  "$(python3 -c 'import json, sys; print(" ".join(q["name"] for q in json.load(sys.stdin)["queries"]))' <check.json)"
expect_eq "check --json: signatures missing" missing \
  "$(python3 -c 'import json, sys; print(json.load(sys.stdin)["signatures"]["provider"]["status"])' <check.json)"
set +e
"$CR" template check --json broken.json >broken.json.out 2>/dev/null
BJ=$?
set -e
expect_eq "check --json on a broken template: exit 2" 2 "$BJ"
expect_eq "check --json on a broken template: every error the text lists" "False $(grep -c '^  \$' broken.err)" \
  "$(python3 -c 'import json, sys; d = json.load(sys.stdin); print(d["valid"], len(d["errors"]))' <broken.json.out)"

# Every query's filter is parsed, both parties': each node parses only its
# own, so the partner's broken filter would otherwise show only on its node.
python3 - template.json >filters.json <<'PY'
import json, sys
t = json.load(open(sys.argv[1]))
q = t["queries"]["overlap"]
q["where"] = {"provider": "segment IN :segs AND signup_year >= :since", "consumer": "policy_type = "}
q["params"] = {"segs": "string_list", "since": "integer"}
t["queries"]["overlap_to_consumer"]["where"] = {"provider": "segment = :since"}
json.dump(t, sys.stdout, indent=2)
PY
set +e
"$CR" template check filters.json >filters.out 2>filters.err
FR=$?
set -e
expect_eq "a filter that does not parse fails template check (exit 2)" 2 "$FR"
expect_grep "the consumer's filter error names its template location and position" \
  '\$.queries.overlap.where.consumer: position 15: expected a string, a number or a :parameter' filters.err
expect_grep "the provider's filter error too (a parameter of the wrong type)" \
  '\$.queries.overlap_to_consumer.where.provider: position 11: parameter :since is not declared' filters.err
expect_grep "both are counted" "filters.json: 2 errors" filters.err
sed -i 's/"policy_type = "/"policy_type = '"'"'home'"'"'"/; s/"segment = :since"/"segment = '"'"'video'"'"'"/' filters.json
"$CR" template check filters.json >filters.out 2>filters.err || { cat filters.err >&2; fail "the fixed filters check"; }
expect_grep "check shows the provider's filter, for the partner to review" \
  "where provider: segment IN :segs AND signup_year >= :since" filters.out
expect_grep "check shows the consumer's filter" "where consumer: policy_type = 'home'" filters.out
expect_grep "check shows the parameters and their types" "params: segs (string_list), since (integer)" filters.out

# A name with an escape sequence (from the partner's draft) is refused, not
# printed to the operator's terminal; so are two parties with one
# certificate (neither node could tell its role).
python3 - template.json >escape.json <<'PY'
import json, sys
t = json.load(open(sys.argv[1]))
t["name"] = "Acme\u001b]0;owned\u0007\u001b[2J"
t["parties"]["consumer"]["cert_sha256"] = t["parties"]["provider"]["cert_sha256"]
json.dump(t, sys.stdout, indent=2)
PY
set +e
"$CR" template check escape.json >escape.out 2>escape.err
ER=$?
set -e
expect_eq "a name with control characters fails template check (exit 2)" 2 "$ER"
expect_grep "the name error says why" '\$.name: found "Acme\\u001b\]0;owned' escape.err
expect_grep "the same certificate for both parties is an error" \
  '\$.parties.consumer.cert_sha256: found .*expected a certificate other than the provider' escape.err
if LC_ALL=C grep -q "$(printf '\033')" escape.out escape.err; then
  fail "template check printed an escape character"
else
  ok "template check printed no escape character"
fi

# A pin that would make the template invalid (the provider's fingerprint
# for both parties) writes nothing: an existing template stays as it was.
cp template.json repin.json
set +e
"$CR" template pin "$EX/template.json" --provider provider-id/identity.crt \
  --consumer provider-id/identity.crt --out repin.json >/dev/null 2>repin.err
RP=$?
set -e
expect_eq "a pin that would not validate exits 2" 2 "$RP"
expect_grep "it says it wrote nothing" "would not validate, so it was not written" repin.err
if cmp -s template.json repin.json; then ok "the existing --out is untouched"; else fail "a failed pin overwrote --out"; fi

# --- signatures ----------------------------------------------------------------
sed 's/"format": "cleanroom-template\/1",/"format": "cleanroom-template\/1", "require_signatures": true,/' \
  template.json >signed.json
"$CR" template check signed.json >/dev/null
set +e
"$CR" serve --template signed.json --identity provider-id --data "$EX/provider.csv" \
  --listen 127.0.0.1:0 --once >/dev/null 2>unsigned.err
US=$?
set -e
expect_eq "serve refuses an unsigned template that requires signatures" 4 "$US"
expect_grep "the refusal says how to sign" "template sign" unsigned.err

set +e
"$CR" template verify signed.json >verify0.out 2>verify0.err
V0=$?
set -e
expect_eq "verify without signatures exits 4" 4 "$V0"

"$CR" template sign signed.json --identity provider-id >/dev/null 2>sign.err
expect_grep "signing says which role signed" "provider" sign.err
set +e
"$CR" template verify signed.json >verify1.out 2>&1
V1=$?
set -e
expect_eq "verify with one signature exits 4" 4 "$V1"
expect_grep "the consumer's signature is reported missing" "consumer  missing" verify1.out
"$CR" template sign signed.json --identity consumer-id >/dev/null 2>&1
"$CR" template verify signed.json >verify2.out 2>&1
expect_grep "both signatures valid" "consumer  valid" verify2.out

"$CR" keygen --out stranger-id >/dev/null 2>&1
set +e
"$CR" template sign signed.json --identity stranger-id >/dev/null 2>stranger.err
SR=$?
set -e
expect_eq "a stranger cannot sign" 2 "$SR"

start_server signed.json "$EX/provider.csv" --once
run_client signed.json "$EX/consumer.csv" overlap
wait_server
expect_eq "a signed template runs" 0 "$RUN_RC"

# A tampered signature file is caught.
cp signed.json.sig good.sig
sed -i 's/"signature": "\(.\)/"signature": "0\1/; s/"signature": "0\(.\)\(.\)/"signature": "0\2/' signed.json.sig
sed -i '0,/"signature": "[0-9a-f]/s//"signature": "f/' signed.json.sig
if cmp -s good.sig signed.json.sig; then fail "tampering changed nothing"; fi
set +e
"$CR" template verify signed.json >verify3.out 2>&1
V3=$?
set -e
expect_eq "a tampered signature fails verify" 4 "$V3"
expect_grep "the bad signature is reported" "INVALID" verify3.out
cp good.sig signed.json.sig

# The consumer's copy differs by one byte from the one the provider signed:
# check says the provider's signature is for another template, and signing
# that copy (which drops it) warns that the copies differ.
sed 's/"min_count": 100/"min_count": 101/' signed.json >changed.json
"$CR" template sign signed.json --identity provider-id >/dev/null 2>&1
rm -f signed.json.sig
"$CR" template sign signed.json --identity provider-id >/dev/null 2>&1
cp signed.json.sig changed.json.sig
"$CR" template check changed.json >changed.out 2>&1 || true
expect_grep "check: the provider's signature is for another template" \
  "provider  INVALID: the signature is for template $("$CR" template hash signed.json), not this one" changed.out
"$CR" template sign changed.json --identity consumer-id >changed-sign.out 2>changed-sign.err
expect_grep "signing a copy the partner's signature is not for warns that the copies differ" \
  "held the provider's signature for another version of the template .*your copies differ" changed-sign.err
cp good.sig signed.json.sig

# --- normalizers per party: raw e-mails against a partner's hashed ones ------
# The provider holds e-mails, the consumer only their SHA-256 (hex, upper
# or lower case): "email", "sha256" on one side and "hashed_sha256" on the
# other give the same value, so the overlap is counted as on raw e-mails.
python3 - template.json "$EX/provider.csv" "$EX/consumer.csv" >hashed.truth <<'PY'
import csv, hashlib, json, sys
t = json.load(open(sys.argv[1]))
t["match_key"]["normalize"] = {"provider": ["email", "sha256"], "consumer": ["hashed_sha256"]}
json.dump(t, open("hashed.json", "w"), indent=2)
def norm(v):
    v = v.strip().lower()
    p = v.split("@")
    return v if len(p) == 2 and p[0] and p[1] and not any(c.isspace() for c in v) else None
prov = {norm(r["email"]) for r in csv.DictReader(open(sys.argv[2]))} - {None}
cons = {norm(r["email"]) for r in csv.DictReader(open(sys.argv[3]))} - {None}
with open("consumer_hashed.csv", "w") as f:
    f.write("email,policy_type\n")
    for i, e in enumerate(sorted(cons)):
        h = hashlib.sha256(e.encode()).hexdigest()
        f.write("%s,x\n" % (h.upper() if i % 2 else h))
print(len(prov & cons))
PY
"$CR" template check hashed.json >hashed.check 2>&1 || { cat hashed.check >&2; fail "a template with normalizers per party"; }
expect_grep "check shows each party's normalizers" \
  "normalize: provider email, sha256; consumer hashed_sha256" hashed.check
start_server hashed.json "$EX/provider.csv" --once
run_client hashed.json consumer_hashed.csv overlap
wait_server
expect_eq "raw against hashed e-mails: run exits 0" 0 "$RUN_RC"
expect_eq "raw against hashed e-mails: the overlap of the raw e-mails" "$(cat hashed.truth)" \
  "$(json_field run.out count)"
sed 's/"hashed_sha256"/"hashed_sha256", "fone"/' hashed.json >hashed-bad.json
set +e
"$CR" template check hashed-bad.json >/dev/null 2>hashed-bad.err
HB=$?
set -e
expect_eq "a bad normalizer of one party: exit 2" 2 "$HB"
expect_grep "the error names the party's list" '\$.match_key.normalize.consumer\[1\]: found "fone"' hashed-bad.err

# --- expiry and set-size limits, refused before connecting -------------------
sed 's/"not_after": "2030-12-31T00:00:00Z"/"not_after": "2020-01-01T00:00:00Z"/' template.json >expired.json
run_client expired.json "$EX/consumer.csv" overlap
expect_eq "an expired template is refused by run" 4 "$RUN_RC"
expect_grep "the refusal says expired" "expired" run.err
set +e
"$CR" serve --template expired.json --identity provider-id --data "$EX/provider.csv" \
  --listen 127.0.0.1:0 --once >/dev/null 2>expired_serve.err
ES=$?
set -e
expect_eq "an expired template is refused by serve" 4 "$ES"

sed 's/"min_set_size": 100,/"min_set_size": 100000,/' template.json >big.json
run_client big.json "$EX/consumer.csv" overlap
expect_eq "a set below min_set_size is refused by run" 4 "$RUN_RC"
expect_grep "the refusal names min_set_size" "min_set_size" run.err

finish
