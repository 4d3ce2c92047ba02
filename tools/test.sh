#!/bin/bash
# Set up this machine and run every test tier (unit, collection, integration, deploy) plus the
# static checks. Run as root on Debian 12. Extra arguments go to pytest, e.g. `tools/test.sh -m unit`.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

step() { printf '\n== %s (%s)\n' "$1" "$(date +%T)"; }
timed() { local t0=$SECONDS; "$@"; printf '   took %ss\n' $((SECONDS - t0)); }

step "host packages and libvirt"
timed tools/setup-host.sh

step "Python venv (.venv)"
timed tools/venv.sh test
export PATH=$ROOT/.venv/bin:$PATH

step "test guest images (cached by package versions)"
for kind in tiny debian; do timed tools/build-test-images.sh "$kind"; done

step "static checks"
PY_DIRS="wrapper tests benchmarks molecule collections/ansible_collections/mikelangelo/vtorque/plugins"
timed ruff check $PY_DIRS
timed ruff format --check $PY_DIRS
[ ! -x .ci/sanity.sh ] || timed .ci/sanity.sh

step "pytest: all tiers"
timed pytest "$@"
