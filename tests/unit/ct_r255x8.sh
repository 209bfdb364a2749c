#!/usr/bin/env bash
# Constant-time check of the batched ristretto255 algorithm under valgrind
# memcheck (ctest ct.r255x8_valgrind; see ct_r255x8.c):
#   1. ct_r255x8 with the scalar and the match-key bytes marked undefined:
#      memcheck must report nothing and the results must be libsodium's;
#   2. ct_r255x8 --control, a deliberate secret-dependent branch and index:
#      memcheck must report it, or step 1 proves nothing.
# Exit 77 (ctest SKIP) when valgrind is not installed.
#   ct_r255x8.sh PATH/TO/ct_r255x8
set -u
bin=${1:?usage: ct_r255x8.sh PATH/TO/ct_r255x8}
if ! command -v valgrind >/dev/null 2>&1; then
  echo "SKIP: valgrind is not installed (scripts/install-deps.sh installs it);" \
       "the constant-time check did not run"
  exit 77
fi
vg=(valgrind -q --error-exitcode=99 --track-origins=yes --leak-check=no)

"${vg[@]}" "$bin"
rc=$?
if [ $rc -ne 0 ]; then
  echo "FAIL: ct_r255x8 exited $rc under valgrind (99: memcheck found a branch or an" \
       "address that depends on a secret, reported above)"
  exit 1
fi

"${vg[@]}" "$bin" --control >/dev/null 2>&1
rc=$?
if [ $rc -ne 99 ]; then
  echo "FAIL: memcheck did not report the control's secret branch and index (exit $rc):" \
       "the check above proves nothing on this machine"
  exit 1
fi
echo "ct_r255x8: no secret-dependent branch or memory index (and the control was caught)"
