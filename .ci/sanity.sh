#!/bin/bash
# ansible-test sanity for the mikelangelo.vtorque collection, offline and without Docker.
# Installs nothing globally: only the get-pip stand-in goes into ~/.ansible/test/cache
# (ansible-test keeps its per-test venvs under ~/.ansible/test/venv as usual).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
VENV=${VTORQUE_VENV:-$ROOT/.venv}
COLLECTION=$ROOT/collections/ansible_collections/mikelangelo/vtorque
export PATH=$VENV/bin:$PATH

PIPV=$(python - <<'PY'
import pathlib, re, ansible_test
src = (pathlib.Path(ansible_test.__file__).parent / "_internal" / "python_requirements.py").read_text()
print(re.search(r"pip='([0-9.]+)'", src).group(1))
PY
)
mkdir -p "$HOME/.ansible/test/cache"
cp "$ROOT/.ci/get_pip_standin.py" "$HOME/.ansible/test/cache/get_pip_${PIPV//./_}.py"

cd "$COLLECTION"
exec ansible-test sanity --python 3.11 --color no "$@"
