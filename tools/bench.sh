#!/bin/bash
# Set up this machine and run the benchmark suite (issue 7): every figure against its floor,
# min/median/max, JSON and PNG plots under benchmarks/results/. Run as root on Debian 12.
# Extra arguments go to benchmarks/run.py, e.g. `tools/bench.sh --repeat 3 --only hooks`.
set -euo pipefail
cd "$(dirname "$0")/.."

tools/setup-host.sh
tools/venv.sh test,bench
export PATH=$PWD/.venv/bin:$PATH
for kind in tiny debian; do tools/build-test-images.sh "$kind" >/dev/null; done
exec python benchmarks/run.py "$@"
