"""Offline stand-in for ansible-test's get-pip.py (see reference/collection-checks.md §1.1).

ansible-test creates each sanity venv without pip and runs the cached get-pip script to install
the pinned pip from PyPI. This runs the pip wheel bundled with CPython's ensurepip straight from
the wheel (as the real get-pip.py does) to install that pip; everything else then comes from PyPI.
"""

import ensurepip
import glob
import os
import sys

_BUNDLED = os.path.join(os.path.dirname(ensurepip.__file__), "_bundled")
sys.path.insert(0, sorted(glob.glob(os.path.join(_BUNDLED, "pip-*.whl")))[-1])

from pip._internal.cli.main import main  # noqa: E402

_ARGS = [a for a in sys.argv[1:] if a not in ("--no-setuptools", "--no-wheel")]
sys.exit(main(["install", "--upgrade", "--force-reinstall"] + _ARGS))
