#!/usr/bin/env bash
# Installs the Debian packages cleanroom needs to build and test, skipping
# those already present. Run as root (or with sudo available) on Debian 12.
set -euo pipefail

PKGS=(build-essential cmake pkg-config clang libclang-rt-14-dev
      libssl-dev libsodium-dev libuv1-dev libprotobuf-c-dev protobuf-c-compiler
      libjansson-dev libcmocka-dev openssl ca-certificates procps
      libpq-dev libsqlite3-dev  # data sources: PostgreSQL (libpq) and SQLite
      postgresql sqlite3  # tests only: a throwaway PostgreSQL server, fixtures for SQLite
      python3 python3-jsonschema
      clang-format clang-tidy clang-tools cppcheck  # scripts/lint.sh (clang-tools: scan-build)
      valgrind  # tests only: the constant-time check (tests/unit/ct_r255x8.sh)
      openmpi-bin libopenmpi-dev  # cleanroom-mpi (docs/scale-out.md)
      iproute2  # tests only: network namespaces as the hosts of an MPI job
      chromium)  # tests only: renders `cleanroom report` pages (tests/report/render.py)

missing=()
for p in "${PKGS[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all ${#PKGS[@]} packages present" >&2
  exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null; then SUDO=sudo; else
    echo "install-deps: missing packages (${missing[*]}) and not root; run as root or install them" >&2
    exit 2
  fi
fi
echo "install-deps: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
