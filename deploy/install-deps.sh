#!/bin/sh
# Installs the Debian packages gptline needs to build, test and run.
#
# Idempotent: asks dpkg which packages are already installed, runs
# `apt-get update` only when something is missing, and prints what it
# installs. Works as root or through sudo. `--check` only reports (exit 1
# when something is missing); `--list` prints the package list.
set -eu

# Build and runtime libraries.
PKGS="build-essential pkg-config make perl
liblmdb-dev lmdb-utils
libzmq3-dev
libarchive-dev
libopenblas-dev
libprotobuf-c-dev protobuf-c-compiler
libxxhash-dev
libjansson-dev
libpcre2-dev
libxml2-dev
libopenmpi-dev openmpi-bin
libcairo2-dev fonts-dejavu-core
libuchardet-dev
libcld2-dev
libinih-dev"

# Test tools: prove (TAP runner) comes with perl; PyTorch and NumPy for the
# trainer's reference implementation (tests/ref, bench).
PKGS="$PKGS xxd bc python3-torch python3-numpy"

# Deployment tests: a single-node Slurm cluster (tests/slurm.sh), the
# systemd units (systemd-analyze), network namespaces (ip), the Prometheus
# text format's reference parser.
PKGS="$PKGS munge slurmctld slurmd slurm-client systemd iproute2 python3-prometheus-client"

# The demo crawls local HTML documentation over loopback into a WARC.
PKGS="$PKGS wget"

case "${1:-}" in
  --list) echo $PKGS; exit 0 ;;
  -h|--help)
    echo "usage: deploy/install-deps.sh [--check|--list]"
    echo "Installs missing Debian packages for gptline (apt-get, as root or via sudo)."
    exit 0 ;;
esac

missing=""
for p in $PKGS; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing="$missing $p"
  fi
done

if [ -z "$missing" ]; then
  [ "${1:-}" = "--check" ] || echo "install-deps: all packages present"
  exit 0
fi
if [ "${1:-}" = "--check" ]; then
  echo "install-deps: missing:$missing"
  exit 1
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then
    SUDO="sudo"
  else
    echo "install-deps: need root or sudo to install:$missing" >&2
    exit 1
  fi
fi

echo "install-deps: installing:$missing"
$SUDO apt-get update -qq
# shellcheck disable=SC2086
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $missing
echo "install-deps: done"
