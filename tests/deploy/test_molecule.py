"""The deploy tier: each molecule scenario (site.yml, idempotence, testinfra, uninstall,
testinfra again) must pass on this machine. molecule's own exit code decides.

default: a Torque site (stand-in mom_priv). slurm: a Slurm site, against a real slurmctld and
slurmd the scenario starts on ports of its own and stops again.
"""

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# Each scenario's directory, and the paths outside it that it creates and must not leave behind.
SCENARIOS = {
    "default": ("/var/tmp/vtorque-molecule", ("/etc/vtorque",)),
    "slurm": (
        "/var/tmp/vtorque-molecule-slurm",
        ("/etc/vtorque", "/etc/slurm/slurm.conf", "/usr/local/libexec/vtorque"),
    ),
}


def _remove(path):
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path, ignore_errors=True)
    elif os.path.lexists(path):
        os.unlink(path)


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_molecule_scenario_deploys_is_idempotent_and_uninstalls_cleanly(scenario):
    env = dict(
        os.environ,
        PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}",
        ANSIBLE_NOCOLOR="1",
        PY_COLORS="0",
    )
    scenario_dir, outside = SCENARIOS[scenario]
    absent_before = [path for path in outside if not os.path.lexists(path)]
    began = time.monotonic()
    try:
        done = subprocess.run(
            ["molecule", "test", "--scenario-name", scenario],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=1800,
            check=False,
        )
    finally:  # also after a failure (molecule's destroy step restores the rest)
        shutil.rmtree(scenario_dir, ignore_errors=True)
        for path in absent_before:
            _remove(path)
    print(f"molecule test --scenario-name {scenario}: {time.monotonic() - began:.0f}s")
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-6000:]
    assert "idempotence" in done.stdout + done.stderr
