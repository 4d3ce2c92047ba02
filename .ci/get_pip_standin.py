"""Offline stand-in for ansible-test's get-pip.py (see reference/collection-checks.md §1.1).

ansible-test creates each sanity venv without pip and runs the cached get-pip script to install
the pinned pip from PyPI. This runs the pip wheel that comes with the interpreter's ensurepip
straight from the wheel (as the real get-pip.py does) to install that pip; everything else then
comes from PyPI. CPython keeps that wheel in ensurepip/_bundled; Debian (and Fedora) keep it in
WHEEL_PKG_DIR (/usr/share/python-wheels, package python3-pip-whl) instead.
"""

import ensurepip
import glob
import os
import sys
import sysconfig

_PLACES = [
    os.path.join(os.path.dirname(ensurepip.__file__), "_bundled"),
    sysconfig.get_config_var("WHEEL_PKG_DIR"),
]
_WHEELS = sorted(w for place in _PLACES if place for w in glob.glob(os.path.join(place, "pip-*.whl")))
if not _WHEELS:
    sys.exit(f"get_pip stand-in: no pip wheel in {' or '.join(p for p in _PLACES if p)}")
sys.path.insert(0, _WHEELS[-1])

from pip._internal.cli.main import main  # noqa: E402

_ARGS = [a for a in sys.argv[1:] if a not in ("--no-setuptools", "--no-wheel")]
sys.exit(main(["install", "--upgrade", "--force-reinstall"] + _ARGS))
