#!/usr/bin/env bash
# Partner onboarding: from nothing to the command that gets the first result.
#
# A thin script over `cleanroom` subcommands. Each partner runs it in its own
# directory; it is safe to run again (an existing identity is kept).
#
#   1. both partners:  onboard.sh --role provider|consumer --name ORG --dir DIR
#        creates DIR/identity and prints the fingerprint to send to the partner.
#   2. one partner (either) drafts the template:
#        onboard.sh --role ... --dir DIR --preset overlap \
#            --partner-fingerprint HEX --address PROVIDER_HOST:PORT [--data CSV]
#        writes DIR/template.json from the preset with both fingerprints and the
#        provider's address, checks it, signs it (DIR/template.json.sig) and
#        prints the serve or run command to use next.
#   3. the other partner, given template.json and template.json.sig:
#        onboard.sh --join template.json --dir DIR [--data CSV]
#        checks the template, shows its summary and hash, signs it and prints
#        its command.
#
# Non-interactive with flags; when stdin is a terminal, it asks for whatever
# is missing. Run with --help for every option.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
PROG=$(basename "$0")

usage() {
  # A quoted here-document: nothing in the text is expanded or run (a
  # `command` in backquotes used to be executed by --help).
  sed "s|@PROG@|$PROG|g" <<'EOF'
Usage: @PROG@ [--role provider|consumer] [--name ORG] [--dir DIR]
                 [--preset overlap|segments|members|filtered-count]
                 [--partner-fingerprint HEX|CERT] [--partner-name ORG]
                 [--address HOST:PORT] [--listen HOST:PORT] [--data CSV]
                 [--require-signatures] [--force]
       @PROG@ --join TEMPLATE [--dir DIR] [--role ROLE] [--data CSV]
                 [--listen HOST:PORT] [--force]

Creates this node's identity, drafts and signs the collaboration template
with the partner, and prints the exact command to run next.

  --role        this node's role: provider (holds the data, serves) or
                consumer (runs the queries)
  --name        this organisation's name (identity and template)
  --dir         working directory for this node (default ./cleanroom-ROLE);
                holds identity/, template.json(.sig), serve.conf
  --preset      the kind of collaboration, from the bundled examples:
                  overlap         the size of the overlap (examples/overlap)
                  segments        the overlap per provider segment
                                  (examples/insurance)
                  members         the consumer gets its own matched rows
                                  (examples/rideshare)
                  filtered-count  a count over provider rows the consumer's
                                  parameters select (examples/pharma)
  --partner-fingerprint  the partner's certificate fingerprint (64 hex, as
                its `cleanroom keygen` or this script printed) or its .crt
  --partner-name the partner organisation's name (in the template)
  --address     where the provider's node is reachable, HOST:PORT (written in
                the template; the consumer connects there)
  --listen      where the provider's node listens (default 0.0.0.0:PORT of
                --address; --address itself when it is a loopback address)
  --data        this node's CSV file (for the printed command / serve.conf)
  --require-signatures  the template requires both parties' signatures
                before serve or run start (then the partner's
                template.json.sig must come back to the drafter)
  --force       overwrite an existing DIR/template.json with a new draft; with
                --join, accept a partner's template that differs from the
                one in DIR (without it, such a join shows what differs,
                signs nothing and exits 4)
  --join TEMPLATE  the partner's draft: check, summarise, sign, print command

Without --partner-fingerprint (and not interactive) it stops after the
identity: send the fingerprint, then run it again with the partner's.

Environment: CLEANROOM (the cleanroom binary; default: the `cleanroom`
installed next to this script, else `cleanroom` on PATH, else a build in
this source tree), CR_EXAMPLES (the examples dir).

Example (two partners, two machines):
  provider$ @PROG@ --role provider --name "Acme Security" --dir acme
  consumer$ @PROG@ --role consumer --name "HomeSure Insurance" --dir homesure
  (they exchange the fingerprints printed)
  provider$ @PROG@ --role provider --dir acme --preset overlap \
               --partner-fingerprint <consumer's> --partner-name "HomeSure Insurance" \
               --address acme.example:7443 --data customers.csv
  (the provider sends acme/template.json and acme/template.json.sig)
  consumer$ @PROG@ --join template.json --dir homesure --data policyholders.csv
EOF
}

die() {
  echo "$PROG: error: $*" >&2
  exit 2
}
say() { echo "$*"; }
step() { echo; echo "== $*"; }

ROLE="" NAME="" DIR="" PRESET="" PARTNER_FP="" PARTNER_NAME="" ADDRESS="" LISTEN="" DATA=""
JOIN="" REQUIRE_SIGS=0 FORCE=0
while [ $# -gt 0 ]; do
  case "$1" in
  --role | --name | --dir | --preset | --partner-fingerprint | --partner-name | --address | \
    --listen | --data | --join)
    [ $# -ge 2 ] || die "$1 needs a value"
    v=$2
    case "$1" in
    --role) ROLE=$v ;;
    --name) NAME=$v ;;
    --dir) DIR=$v ;;
    --preset) PRESET=$v ;;
    --partner-fingerprint) PARTNER_FP=$v ;;
    --partner-name) PARTNER_NAME=$v ;;
    --address) ADDRESS=$v ;;
    --listen) LISTEN=$v ;;
    --data) DATA=$v ;;
    --join) JOIN=$v ;;
    esac
    shift 2
    ;;
  --*=*)
    set -- "${1%%=*}" "${1#*=}" "${@:2}"
    ;;
  --require-signatures) REQUIRE_SIGS=1; shift ;;
  --force) FORCE=1; shift ;;
  -h | --help) usage; exit 0 ;;
  *) die "unknown option \"$1\"; see $PROG --help" ;;
  esac
done

INTERACTIVE=0
[ -t 0 ] && INTERACTIVE=1

# ask VAR "question" [default]: prompts when interactive, else fails naming
# the flag (FLAG_FOR_<VAR>).
ask() {
  local var=$1 q=$2 def=${3:-} flag=$4 ans
  if [ "$INTERACTIVE" != 1 ]; then
    if [ -n "$def" ]; then
      printf -v "$var" '%s' "$def"
      return 0
    fi
    die "$flag is required (stdin is not a terminal, so nothing is asked); see $PROG --help"
  fi
  while :; do
    if [ -n "$def" ]; then read -r -p "$q [$def]: " ans; else read -r -p "$q: " ans; fi
    ans=${ans:-$def}
    [ -n "$ans" ] && break
  done
  printf -v "$var" '%s' "$ans"
}

# ---- the cleanroom binary and the examples ------------------------------
# Installed (cmake --install), this script is PREFIX/bin/cleanroom-onboard
# and its binary PREFIX/bin/cleanroom, next to it; that one wins over another
# cleanroom on PATH. From the source tree (scripts/onboard.sh) there is none.
if [ -n "${CLEANROOM:-}" ]; then
  CR=$CLEANROOM
elif [ -f "$HERE/cleanroom" ] && [ -x "$HERE/cleanroom" ]; then
  CR=$HERE/cleanroom
elif command -v cleanroom >/dev/null 2>&1; then
  CR=$(command -v cleanroom)
else
  CR=""
  for b in build/release build build/debug; do
    if [ -x "$HERE/../$b/cleanroom" ]; then
      CR=$(cd "$HERE/../$b" && pwd)/cleanroom
      break
    fi
  done
  [ -n "$CR" ] || die "no cleanroom binary found (not next to this script, not on PATH, no build in this source tree). Build it: cmake -S . -B build && cmake --build build (in the source tree; then run this script from there or set CLEANROOM=build/cleanroom); or install it: cmake --install build (puts cleanroom on PATH); or set CLEANROOM=/path/to/cleanroom"
fi
[ -x "$CR" ] || die "$CR is not an executable cleanroom binary"
"$CR" template sign --help >/dev/null 2>&1 && "$CR" ping --help >/dev/null 2>&1 ||
  die "$CR is older than this script (no \`template sign\` or \`ping\`): rebuild it, or set CLEANROOM=/path/to/a newer cleanroom"
# How to write the binary in the commands we print.
if [ "$(command -v cleanroom 2>/dev/null || true)" = "$CR" ]; then CR_SHOWN=cleanroom; else CR_SHOWN=$CR; fi

find_examples() {
  local d
  for d in "${CR_EXAMPLES:-}" "$HERE/../examples" "$HERE/../share/cleanroom/examples" \
    "$(dirname "$CR")/../share/cleanroom/examples" \
    /usr/local/share/cleanroom/examples /usr/share/cleanroom/examples; do
    if [ -n "$d" ] && [ -f "$d/overlap/template.json" ]; then
      (cd "$d" && pwd)
      return 0
    fi
  done
  return 1
}

# q ARGS...: the arguments shell-quoted, for printing a command to copy.
q() {
  local out="" a
  for a in "$@"; do
    if [[ "$a" =~ ^[A-Za-z0-9_./:=@,+-]+$ ]]; then out+=" $a"; else out+=" $(printf '%q' "$a")"; fi
  done
  echo "${out# }"
}

is_loopback() {
  case "$1" in
  127.* | localhost:* | "[::1]:"*) return 0 ;;
  *) return 1 ;;
  esac
}

abspath() {
  case "$1" in
  /*) echo "$1" ;;
  *) echo "$(pwd)/${1#./}" ;;
  esac
}

json_escape() {
  local s=$1
  s=${s//\\/\\\\}
  s=${s//\"/\\\"}
  printf '%s' "$s"
}

# ---- 1. the identity --------------------------------------------------------
if [ -n "$JOIN" ]; then
  [ -f "$JOIN" ] || die "--join: $JOIN: no such file"
fi
if [ -z "$ROLE" ] && [ -z "$JOIN" ]; then
  ask ROLE "This node's role (provider holds the data and serves, consumer runs the queries)" "" --role
fi
case "$ROLE" in "" | provider | consumer) ;; *) die "--role is provider or consumer, not \"$ROLE\"" ;; esac
if [ -z "$DIR" ]; then
  ask DIR "Working directory for this node" "./cleanroom-${ROLE:-node}" --dir
fi
if [ -e "$DIR" ] && [ ! -d "$DIR" ]; then
  die "--dir $DIR is a file, not a directory: give the directory that holds (or will hold) this node's identity/ and template.json"
fi
mkdir -p "$DIR" 2>/dev/null || die "--dir: cannot create the directory $DIR (check the path and its permissions)"
DIR=$(cd "$DIR" && pwd)
ID="$DIR/identity"

if [ -n "$JOIN" ] && [ ! -f "$ID/identity.key" ]; then
  die "no identity in $ID: a template can only pin an identity that exists, so create it first ($PROG --role ROLE --name ORG --dir $DIR), send its fingerprint to the partner, and join the template drafted with it"
fi
if [ ! -f "$ID/identity.key" ] && [ -z "$NAME" ]; then
  ask NAME "Your organisation's name" "" --name
fi
step "1. this node's identity ($ID)"
if [ -f "$ID/identity.key" ]; then
  OWN_FP=$("$CR" fingerprint "$ID/identity.crt")
  say "   keeping the existing identity"
else
  if ! OWN_FP=$("$CR" keygen --out "$ID" --name "$NAME" 2>"$DIR/.keygen.err"); then
    sed 's/^/   /' "$DIR/.keygen.err" >&2
    rm -f "$DIR/.keygen.err"
    die "cannot create the identity in $ID (above; see \`$CR_SHOWN keygen --help\`)"
  fi
  rm -f "$DIR/.keygen.err"
  say "   created $ID/identity.key (keep it secret, mode 0600) and identity.crt"
fi
say "   this node's fingerprint (send it to your partner):"
say
say "       $OWN_FP"

# ---- the command to run next ---------------------------------------------
# The provider's address in a template (from `template check`).
provider_address() {
  "$CR" template check "$1" 2>/dev/null | sed -n 's/.*, address \(.*\)$/\1/p' | head -1
}

# next_steps TEMPLATE ROLE: prints (and for a provider writes serve.conf)
# what this node runs next.
next_steps() {
  local tmpl=$1 role=$2 addr check qname kind params listen data_shown conf
  addr=$(provider_address "$tmpl")
  check=$("$CR" template check "$tmpl" 2>/dev/null)
  data_shown=${DATA:+$(abspath "$DATA")}
  step "next: what to run"
  if [ "$role" = provider ]; then
    conf="$DIR/serve.conf"
    # Running this again keeps what an earlier serve.conf said.
    if [ -f "$conf" ]; then
      [ -n "$data_shown" ] || data_shown=$(sed -n 's/^data = //p' "$conf" | grep -v CHANGE-ME | head -1 || true)
    fi
    local kept_listen=""
    if [ -f "$conf" ] && [ -z "$LISTEN" ]; then
      kept_listen=$(sed -n 's/^listen = //p' "$conf" | head -1)
    fi
    listen=$LISTEN
    if [ -z "$listen" ]; then
      # one machine: stay on loopback
      if is_loopback "$addr"; then listen=$addr; else listen="0.0.0.0:${addr##*:}"; fi
    fi
    [ "$listen" = "0.0.0.0:" ] && listen="0.0.0.0:7443"
    # An earlier serve.conf's listen is kept while it still fits the
    # template's address: the same port, and not loopback when the partner
    # comes from another machine. A redraft with a new address must not
    # leave the node listening where the partner no longer connects.
    if [ -n "$kept_listen" ]; then
      if [ "${kept_listen##*:}" = "${addr##*:}" ] && { ! is_loopback "$kept_listen" || is_loopback "$addr"; }; then
        listen=$kept_listen
      elif [ "$kept_listen" != "$listen" ]; then
        say "   note: $conf listened on $kept_listen, but the template's address is now"
        say "   ${addr:-unset}: the node now listens on $listen (--listen HOST:PORT to choose)"
      fi
    fi
    if [ -z "$data_shown" ]; then
      data_shown="$DIR/CHANGE-ME.csv"
      say "   (no --data given: put your CSV's path in $DIR/serve.conf)"
    fi
    {
      echo "# cleanroom serve --config $conf  (written by onboard.sh)"
      echo "# One key = value per line; the keys are serve's long options."
      echo "# Relative paths are relative to this file's directory."
      echo "template = template.json"
      echo "identity = identity"
      echo "data = $data_shown"
      echo "listen = $listen"
      echo "# json = true     # one JSON object per session on stdout"
      echo "# quiet = true    # only errors and 'listening on' on stderr"
    } >"$conf"
    say "   wrote $conf. Serve (and keep serving) with:"
    say
    say "       $(q "$CR_SHOWN" serve --config "$conf")"
    say
    say "   which is the same as:"
    say "       $(q "$CR_SHOWN" serve --template "$tmpl" --identity "$ID" --data "$data_shown" --listen "$listen")"
    local where=${addr:-"the provider address in the template"}
    say "   The partner's node must reach this one at $where."
    say "   For a long-running node see examples/systemd/."
  else
    # The preset's query (or the first one the consumer may run), its kind
    # and parameters.
    local runnable
    runnable=$(printf '%s\n' "$check" | sed -n 's/^    \([^:]*\): \(count\|members\), run by[^,]*consumer.*/\1/p')
    qname=$(printf '%s\n' "$runnable" | head -1)
    case "$PRESET" in
    overlap) want=overlap ;;
    segments) want=overlap_by_segment ;;
    members) want=season_ticket_riders ;;
    filtered-count) want=eligible_patients ;;
    *) want="" ;;
    esac
    if [ -n "$want" ] && printf '%s\n' "$runnable" | grep -qx "$want"; then qname=$want; fi
    kind=$(printf '%s\n' "$check" | sed -n "s/^    $qname: \\(count\\|members\\),.*/\\1/p" | head -1)
    # The query's "params" object, on one line or (as template pin writes
    # it) on several.
    params=$(awk -v want="$qname" '
      /^  "queries": \{/ { inq = 1; next }
      inq && /^  \}/ { inq = 0 }
      inq && /^    "[^"]+": \{/ { cur = $0; sub(/^    "/, "", cur); sub(/".*/, "", cur) }
      inq && cur == want && /"params": \{/ { inp = 1 }
      inp {
        s = $0; sub(/.*"params": \{/, "", s)
        end = (s ~ /\}/); sub(/\}.*/, "", s)
        n = split(s, kv, ",")
        for (i = 1; i <= n; i++) {
          if (split(kv[i], p, ":") != 2) continue
          k = p[1]; t = p[2]; gsub(/[" \t]/, "", k); gsub(/[" \t]/, "", t)
          if (k != "") printf "%s=%s\n", k, t
        }
        if (end) inp = 0
      }' "$tmpl")
    if [ -z "$data_shown" ]; then data_shown="YOUR-DATA.csv"; fi
    local -a cmd=("$CR_SHOWN" run --template "$tmpl" --identity "$ID" --data "$data_shown"
      --peer "${addr:-PROVIDER_HOST:PORT}" --query "${qname:-QUERY}")
    local kv example
    while IFS= read -r kv; do
      [ -n "$kv" ] || continue
      example=""
      case "$PRESET:${kv%%=*}" in
      filtered-count:codes) example="E11,E10" ;;
      filtered-count:min_age) example=18 ;;
      filtered-count:max_age) example=65 ;;
      esac
      local ty=${kv#*=}
      cmd+=(--param "${kv%%=*}=${example:-${ty^^}}")
    done <<<"$params"
    [ "$kind" = members ] && cmd+=(--out "$DIR/matched.csv")
    say "   Once the provider's node is serving, check the way to it (no data is sent):"
    say
    say "       $(q "$CR_SHOWN" ping --template "$tmpl" --identity "$ID")"
    say
    say "   then run the query:"
    say
    say "       $(q "${cmd[@]}")"
    [ -n "$params" ] && say "   (set the --param values: the query's parameters and their types)"
    local others
    others=$(printf '%s\n' "$runnable" | { grep -vx "$qname" || true; } | paste -sd, - | sed 's/,/, /g')
    [ -n "$others" ] && say "   Other queries this node may run: $others (see the summary above)."
  fi
  say
  say "   Afterwards: $(q "$CR_SHOWN" audit show "$ID/audit.jsonl") shows what this node did."
}

# ---- 2b. the partner's draft: --join ---------------------------------------
if [ -n "$JOIN" ]; then
  TMPL="$DIR/template.json"
  SRC=$(abspath "$JOIN")
  step "2. the partner's template ($JOIN)"
  if [ "$SRC" != "$TMPL" ]; then
    # Checked where it is, before it replaces anything: a broken or foreign
    # file must not overwrite the template this node already has.
    if ! "$CR" template check "$SRC" >/dev/null 2>"$DIR/.check.err"; then
      cat "$DIR/.check.err" >&2
      rm -f "$DIR/.check.err"
      die "the partner's template does not validate (above); nothing in $DIR was changed; ask the partner for a corrected draft"
    fi
    rm -f "$DIR/.check.err"
    NEW_HASH=$("$CR" template hash "$SRC")
    OLD_HASH=""
    [ -f "$TMPL" ] && OLD_HASH=$("$CR" template hash "$TMPL" 2>/dev/null || true)
    if [ -n "$OLD_HASH" ] && [ "$OLD_HASH" != "$NEW_HASH" ]; then
      # Another contract than the one this node drafted or joined: the
      # partner changed it (or sent another one). Never signed silently.
      summary() { "$CR" template check "$1" 2>/dev/null | sed -e '/^  signatures/,$d' -e '/sha256:/d'; }
      say "   The partner's template is not the one in $TMPL:"
      say "       yours      $OLD_HASH"
      say "       partner's  $NEW_HASH"
      say "   What differs (- yours, + the partner's):"
      diff <(summary "$TMPL") <(summary "$SRC") | sed -n -e 's/^< /     - /p' -e 's/^> /     + /p' || true
      if [ "$FORCE" != 1 ]; then
        echo "$PROG: error: not signed: the partner's template $JOIN is a different contract from the one in $TMPL (above); nothing was changed. Read the differences and ask the partner; to accept the new one, run this again with --force" >&2
        exit 4
      fi
      say "   --force: replacing it with the partner's"
      rm -f "$TMPL.sig"
    fi
    cp "$SRC" "$TMPL"
    if [ -f "$SRC.sig" ]; then cp "$SRC.sig" "$TMPL.sig"; fi
  fi
  if ! "$CR" template check "$TMPL" >"$DIR/.check.out" 2>"$DIR/.check.err"; then
    cat "$DIR/.check.err" >&2
    die "the partner's template does not validate (above); ask the partner for a corrected draft"
  fi
  sed 's/^/   /' "$DIR/.check.out"
  rm -f "$DIR/.check.out" "$DIR/.check.err"
  PINNED=$("$CR" template check "$TMPL" | awk -v fp="$OWN_FP" '
    /^  provider / { r = "provider" } /^  consumer / { r = "consumer" }
    /^ +cert / && index($0, fp) { print r; exit }')
  if [ -z "$PINNED" ]; then
    die "the template does not pin this node's fingerprint $OWN_FP for either role; send it to the partner and ask for a new draft"
  fi
  if [ -n "$ROLE" ] && [ "$ROLE" != "$PINNED" ]; then
    die "the template pins this node as the $PINNED, not the $ROLE (--role); check with the partner"
  fi
  ROLE=$PINNED
  HASH=$("$CR" template hash "$TMPL")
  say
  say "   this node is the $ROLE. Compare this hash with the partner's (by phone, say):"
  say "       $HASH"
  step "3. signing"
  "$CR" template sign "$TMPL" --identity "$ID" >"$DIR/.sign.out" 2>&1 ||
    { cat "$DIR/.sign.out" >&2; rm -f "$DIR/.sign.out"; die "cannot sign $TMPL"; }
  sed 's/^/   /' "$DIR/.sign.out"
  rm -f "$DIR/.sign.out"
  REQUIRED=0
  grep -q '"require_signatures": *true' "$TMPL" && REQUIRED=1
  if "$CR" template verify "$TMPL" >/dev/null 2>&1; then
    say "   both partners' signatures are in $TMPL.sig."
    say "   If the partner's copy lacks yours, send it this file; the partner runs this"
    say "   script with --join on it$([ "$REQUIRED" = 1 ] && echo " (its node refuses to start until then, as the template requires both)")."
  else
    say "   The partner's signature is missing from $TMPL.sig: ask for the"
    say "   template.json.sig that came with the draft and run this again."
    if [ "$REQUIRED" = 1 ]; then
      say "   The template requires both signatures: serve and run refuse until"
      say "   $TMPL.sig holds both."
    fi
  fi
  if [ "$ROLE" = provider ] && [ -z "$DATA" ] && [ "$INTERACTIVE" = 1 ]; then
    ask DATA "Your CSV file (for serve.conf)" "" --data
  fi
  next_steps "$TMPL" "$ROLE"
  exit 0
fi

# ---- 2a. drafting the template ----------------------------------------------
if [ -z "$PARTNER_FP" ]; then
  if [ "$INTERACTIVE" = 1 ]; then
    say
    say "   Send the fingerprint above to your partner and get theirs. Either one of"
    say "   you drafts the template; the other runs this script with --join on it."
    read -r -p "Partner's fingerprint (empty: stop here; run me again when you have it): " PARTNER_FP
  fi
  if [ -z "$PARTNER_FP" ]; then
    say
    say "Next: send this fingerprint to your partner. When you have theirs, draft"
    say "the template:"
    say "    $(q "$HERE/$PROG" --role "$ROLE" --dir "$DIR") --preset overlap \\"
    say "        --partner-fingerprint <theirs> --address <provider host:port>"
    say "or, if the partner drafts it, receive template.json and template.json.sig and run:"
    say "    $(q "$HERE/$PROG" --dir "$DIR") --join template.json"
    exit 0
  fi
fi
# A fingerprint is 64 hex digits or a certificate file.
if [ -f "$PARTNER_FP" ]; then
  PARTNER_FP=$("$CR" fingerprint "$PARTNER_FP") || die "--partner-fingerprint: cannot read $PARTNER_FP"
fi
# As pasted: openssl's "SHA256 Fingerprint=A3:09:...", colons, spaces, any case.
PARTNER_FP=$(printf '%s' "$PARTNER_FP" | sed 's/^[[:space:]]*[Ss][Hh][Aa]256 [Ff]ingerprint=//' | tr -d ' :' | tr 'A-F' 'a-f')
if ! [[ "$PARTNER_FP" =~ ^[0-9a-f]{64}$ ]]; then
  if [[ "$PARTNER_FP" =~ ^[0-9a-f]+$ ]]; then
    die "--partner-fingerprint: expected 64 hex digits (a SHA-256 fingerprint), got ${#PARTNER_FP}"
  fi
  die "--partner-fingerprint takes the 64 hex digits the partner's keygen printed (or its .crt file)"
fi
[ "$PARTNER_FP" != "$OWN_FP" ] || die "--partner-fingerprint is this node's own fingerprint; use the partner's"

if [ -z "$PRESET" ]; then
  ask PRESET "Preset (overlap, segments, members, filtered-count)" overlap --preset
fi
case "$PRESET" in
overlap) EXDIR=overlap ;;
segments) EXDIR=insurance ;;
members) EXDIR=rideshare ;;
filtered-count) EXDIR=pharma ;;
*) die "--preset is overlap, segments, members or filtered-count, not \"$PRESET\"" ;;
esac
EXAMPLES=$(find_examples) || die "cannot find the examples (examples/*/template.json); set CR_EXAMPLES=DIR"
SRC_T="$EXAMPLES/$EXDIR/template.json"

if [ -z "$ADDRESS" ]; then
  if [ "$ROLE" = provider ]; then def="$(hostname -f 2>/dev/null || hostname):7443"; else def=""; fi
  # The address goes into the contract and the consumer connects there: a
  # guess must be seen and confirmed, never written silently.
  if [ "$INTERACTIVE" != 1 ]; then
    die "--address HOST:PORT is required: where the consumer's node will reach the provider's (the name or IP the consumer can resolve, and the port serve listens on; this machine calls itself $def). It is written into the template"
  fi
  ask ADDRESS "The provider's address, HOST:PORT, where the consumer connects (check it: it goes into the template)" "$def" --address
fi
[[ "$ADDRESS" =~ ^.+:[0-9]+$ ]] || die "--address takes HOST:PORT, not \"$ADDRESS\""
if [ -z "$NAME" ]; then
  # The certificate's name, when the identity already existed.
  NAME=$(openssl x509 -in "$ID/identity.crt" -noout -subject -nameopt multiline 2>/dev/null |
    sed -n 's/^ *commonName *= *//p' | head -1 || true)
  [ -n "$NAME" ] || ask NAME "Your organisation's name" "" --name
fi
if [ -z "$PARTNER_NAME" ] && [ "$INTERACTIVE" = 1 ]; then
  read -r -p "Your partner's organisation name (empty: keep the preset's): " PARTNER_NAME
fi
if [ -z "$DATA" ] && [ "$INTERACTIVE" = 1 ]; then
  read -r -p "Your CSV file (empty: fill it in later): " DATA
fi
if [ -n "$DATA" ] && [ ! -r "$DATA" ]; then
  say "   note: $DATA is not readable from here; the printed command uses it as given"
fi

TMPL="$DIR/template.json"
if [ -f "$TMPL" ] && [ "$FORCE" != 1 ]; then
  die "$TMPL exists; use --force to replace it with a new draft (or --join $TMPL to sign it)"
fi

step "2. the template draft (preset $PRESET, from $SRC_T)"
if [ "$ROLE" = provider ]; then
  P_ORG=$NAME C_ORG=$PARTNER_NAME P_FP=$OWN_FP C_FP=$PARTNER_FP
else
  P_ORG=$PARTNER_NAME C_ORG=$NAME P_FP=$PARTNER_FP C_FP=$OWN_FP
fi
for n in "$P_ORG" "$C_ORG"; do
  [[ "$n" != *[[:cntrl:]]* ]] || die "an organisation name holds a control character"
done
# The parties' names and the title; the rest is the preset's.
DRAFT="$DIR/draft.json"
P_ORG_J=$(json_escape "$P_ORG") C_ORG_J=$(json_escape "$C_ORG") REQ=$REQUIRE_SIGS \
  awk '
  function orgline(line, v,   ind, comma) {
    ind = line; sub(/".*/, "", ind)
    comma = (line ~ /,[ \t]*$/) ? "," : ""
    return ind "\"org\": \"" v "\"" comma
  }
  /^    "provider": \{/ { blk = "p" }
  /^    "consumer": \{/ { blk = "c" }
  /^  "queries": \{/ || /^  "suite"/ { blk = "" }
  blk == "p" && /^ +"org": / && ENVIRON["P_ORG_J"] != "" { print orgline($0, ENVIRON["P_ORG_J"]); next }
  blk == "c" && /^ +"org": / && ENVIRON["C_ORG_J"] != "" { print orgline($0, ENVIRON["C_ORG_J"]); next }
  /^  "suite": / && ENVIRON["REQ"] == "1" { print; print "  \"require_signatures\": true,"; next }
  { print }' "$SRC_T" >"$DRAFT.tmp"
# The title names both parties: "CONSUMER x PROVIDER: <preset's subject>".
PO=$(sed -n '/^    "provider": {/,/}/s/^ *"org": "\(.*\)",\{0,1\}$/\1/p' "$DRAFT.tmp" | head -1)
CO=$(sed -n '/^    "consumer": {/,/}/s/^ *"org": "\(.*\)",\{0,1\}$/\1/p' "$DRAFT.tmp" | head -1)
TITLE_J="$CO x $PO" awk '
  !done && /^  "name": "/ { s = $0; sub(/^  "name": "[^:]*:/, "", s)
    print "  \"name\": \"" ENVIRON["TITLE_J"] ":" s; done = 1; next }
  { print }' "$DRAFT.tmp" >"$DRAFT"
rm -f "$DRAFT.tmp"
# Pinned into a file of its own, moved into place only once it validates: a
# failed draft (a bad address, say) leaves no template behind that would
# block the corrected run.
if ! "$CR" template pin "$DRAFT" --provider "$P_FP" --consumer "$C_FP" --address "$ADDRESS" \
  --out "$DIR/.draft-pinned.json" >/dev/null 2>"$DIR/.pin.err"; then
  sed "s|$DIR/.draft-pinned.json|the draft|g" "$DIR/.pin.err" >&2
  rm -f "$DIR/.pin.err" "$DRAFT" "$DIR/.draft-pinned.json"
  die "template pin failed (above); the draft was removed and $TMPL left as it was; correct it and run this again"
fi
mv -f "$DIR/.draft-pinned.json" "$TMPL"
rm -f "$DIR/.pin.err" "$DRAFT" "$TMPL.sig"
say "   wrote $TMPL"

step "3. checking it"
if ! "$CR" template check "$TMPL" >"$DIR/.check.out" 2>&1; then
  cat "$DIR/.check.out" >&2
  rm -f "$DIR/.check.out"
  die "the draft does not validate (above)"
fi
sed 's/^/   /' "$DIR/.check.out"
rm -f "$DIR/.check.out"

step "4. signing it"
"$CR" template sign "$TMPL" --identity "$ID" >"$DIR/.sign.out" 2>&1 ||
  { cat "$DIR/.sign.out" >&2; rm -f "$DIR/.sign.out"; die "cannot sign $TMPL"; }
sed 's/^/   /' "$DIR/.sign.out"
rm -f "$DIR/.sign.out"
say
say "   Send $TMPL and $TMPL.sig to your partner, who runs:"
say "       $PROG --join template.json --dir <their dir>"
say "   and tells you the hash it shows; it must be:"
say "       $("$CR" template hash "$TMPL")"
if [ "$REQUIRE_SIGS" = 1 ]; then
  say "   The template requires both signatures: when the partner's template.json.sig"
  say "   comes back, run: $PROG --join <that template.json> --dir $(q "$DIR")"
fi

next_steps "$TMPL" "$ROLE"
