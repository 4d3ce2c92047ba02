"""The deploy tier: the molecule scenario (site.yml, idempotence, testinfra, uninstall,
testinfra again) must pass on this machine. molecule's own exit code decides."""

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_molecule_default_scenario_deploys_is_idempotent_and_uninstalls_cleanly():
    env = dict(
        os.environ,
        PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}",
        ANSIBLE_NOCOLOR="1",
        PY_COLORS="0",
    )
    etc_existed = os.path.lexists("/etc/vtorque")
    began = time.monotonic()
    try:
        done = subprocess.run(
            ["molecule", "test", "--scenario-name", "default"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=1800,
            check=False,
        )
    finally:
        shutil.rmtree("/var/tmp/vtorque-molecule", ignore_errors=True)  # also after a failure
        if not etc_existed:
            shutil.rmtree("/etc/vtorque", ignore_errors=True)
    print(f"molecule test: {time.monotonic() - began:.0f}s")
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-6000:]
    assert "idempotence" in done.stdout + done.stderr
