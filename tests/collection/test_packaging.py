"""`pip install .` must ship the whole collection, so Ansible resolves mikelangelo.vtorque.* from
site-packages with no ansible-galaxy step, and the three console scripts must answer --help."""

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
COLLECTION = ROOT / "collections" / "ansible_collections" / "mikelangelo" / "vtorque"
SCRIPTS = ("vsub", "vtorque", "vtorque-hook")


def shipped_collection_files():
    """Every file of the collection that belongs in a wheel (its tests and caches stay out)."""
    for path in COLLECTION.rglob("*"):
        rel = path.relative_to(COLLECTION)
        if path.is_file() and rel.parts[0] != "tests" and "__pycache__" not in rel.parts:
            yield "ansible_collections/mikelangelo/vtorque/" + rel.as_posix()


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """The project built as a wheel and installed (without deps) into a private prefix."""
    tmp = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(tmp), str(ROOT)],
        check=True,
    )
    (wheel,) = tmp.glob("vtorque-*.whl")
    target = tmp / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target), str(wheel)],
        check=True,
    )
    return wheel, target


def run_installed(target, *argv):
    # The private prefix first, and a working directory outside the source tree, so nothing is
    # found through the editable install by accident.
    env = dict(os.environ, PYTHONPATH=str(target), ANSIBLE_COLLECTIONS_PATH=str(target))
    return subprocess.run(argv, env=env, cwd=target, capture_output=True, text=True, timeout=120)


def test_wheel_ships_every_collection_file(installed):
    wheel, _ = installed
    names = set(zipfile.ZipFile(wheel).namelist())
    missing = sorted(set(shipped_collection_files()) - names)
    assert not missing, f"not in the wheel: {missing}"
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]
    assert not [n for n in names if n.startswith("ansible_collections/mikelangelo/vtorque/tests/")]


def test_ansible_lists_the_installed_modules(installed):
    _, target = installed
    module_files = (COLLECTION / "plugins" / "modules").glob("*.py")
    modules = sorted(p.stem for p in module_files if p.stem != "__init__")
    result = run_installed(
        target, str(Path(sys.executable).parent / "ansible-doc"), "-t", "module", "-l", "mikelangelo.vtorque"
    )
    assert result.returncode == 0, result.stderr
    prefix = "mikelangelo.vtorque."
    listed = sorted(
        line.split()[0].removeprefix(prefix) for line in result.stdout.splitlines() if line.startswith(prefix)
    )
    assert listed == modules
    assert (
        str(target)
        in run_installed(
            target,
            sys.executable,
            "-c",
            "import ansible_collections.mikelangelo.vtorque as c; print(c.__path__)",
        ).stdout
    )


@pytest.mark.parametrize("script", SCRIPTS)
def test_console_script_answers_help(installed, script):
    _, target = installed
    result = run_installed(target, sys.executable, str(target / "bin" / script), "--help")
    assert result.returncode == 0, result.stderr
    assert "usage" in result.stdout.lower()
