"""The real `vsalloc` console script against recording stand-ins for salloc and scontrol: without
--vm it is salloc; with --vm its request is checked like vsbatch's before anything runs (the
interactive shell itself is tested on a real Slurm, tests/integration/test_slurm_jobs.py)."""

from pathlib import Path

import pytest
from fakesite import make_site

STANDIN = Path(__file__).parents[1] / "fakes" / "slurm_standin.py"
COMMANDS = ("sbatch", "salloc", "scontrol", "scancel", "squeue")


@pytest.fixture
def site(tmp_path):
    fake = make_site(tmp_path)
    for name in COMMANDS:
        (fake.root / "bin" / name).symlink_to(STANDIN)
    fake.write_config(scheduler="slurm", slurm={name: str(fake.root / "bin" / name) for name in COMMANDS})
    return fake


def test_without_vm_vsalloc_is_salloc_with_the_argv_unchanged(site):
    argv = ["-N", "2", "-t", "10", "--exclusive", "bash", "-l"]
    done = site.run("vsalloc", *argv)
    assert (done.returncode, done.stderr) == (0, "")
    assert site.calls() == [{"prog": "salloc", "argv": argv, "script": None}]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--vm", "vcpus=2", "hostname"], "hostname: vsalloc runs a login shell in the VM, not a command"),
        (["--vm", "bogus=1"], "--vm bogus=1: unknown key"),
        (["-N", "2", "--vm", "vcpus=2"], "nodes=2: network.mode is user on this site"),
    ],
)
def test_a_vm_allocation_it_cannot_give_is_refused_and_nothing_runs(site, argv, message):
    done = site.run("vsalloc", *argv)
    assert done.returncode == 1 and message in done.stderr, done.stderr
    assert "nothing was allocated" in done.stderr
    assert site.calls() == []
    assert list(site.spool.iterdir()) == []
