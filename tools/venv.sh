#!/bin/bash
# Create or update the project venv (.venv) with the given extras, e.g. `tools/venv.sh test,bench`.
# Debian's Python: job owners run vsub and `vtorque job-run` from this venv, so its interpreter
# must be readable by every user (a pyenv Python under /root is not).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ] || [ "$(readlink -f .venv/bin/python)" != /usr/bin/python3.11 ]; then
  rm -rf .venv
  /usr/bin/python3 -m venv .venv
fi
.venv/bin/pip install -q --disable-pip-version-check -e ".[${1:-test}]"
