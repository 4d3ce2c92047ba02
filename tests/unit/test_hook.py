"""vtorque-hook as pbs_mom calls it: bare-metal jobs pass at once, without heavy imports."""

import json
import os
import subprocess
import sys

PROLOGUE = ["prologue", "7.head", "alice", "alice", "job", "nodes=1", "batch", "", "/spool/7.head.SC"]
PROBE = """
import json, sys
from vtorque.cli.hook import main
code = main(sys.argv[1:])
watched = ("ansible_runner", "libvirt", "vtorque.site.config", "vtorque.runtime.prologue")
heavy = sorted(m for m in watched if m in sys.modules)
print(json.dumps({"code": code, "heavy": heavy}))
"""


def hook(tmp_path, *argv, config_text=None, **env_extra):
    config = tmp_path / "vtorque.yml"
    if config_text is None:
        config_text = f"spool_dir: {tmp_path / 'spool'}\nstate_dir: {tmp_path / 'state'}\n"
    if config_text is not False:
        config.write_text(config_text)
    env = {"PATH": "/bin:/usr/bin", "LANG": "C", "VTORQUE_CONFIG": str(config), **env_extra}
    done = subprocess.run(
        [sys.executable, "-c", PROBE, *argv], env=env, capture_output=True, text=True, check=False
    )
    return done


def test_a_bare_metal_job_passes_every_hook_without_loading_the_vm_machinery(tmp_path):
    for argv in (
        PROLOGUE,
        ["epilogue", *PROLOGUE[1:5], "0", "nodes=1", "walltime=1", "batch", "", "0", "/x"],
    ):
        done = hook(tmp_path, *argv)
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout) == {"code": 0, "heavy": []}


def test_a_job_with_a_spool_dir_takes_the_vm_path(tmp_path):
    (tmp_path / "spool" / "7.head").mkdir(parents=True)
    (tmp_path / "nodefile").write_text("n1\n")
    done = hook(tmp_path, *PROLOGUE, PBS_NODEFILE=str(tmp_path / "nodefile"))
    result = json.loads(done.stdout.splitlines()[-1])
    assert result == {
        "code": 1,
        "heavy": ["libvirt", "vtorque.runtime.prologue", "vtorque.site.config"],
    }  # alice is unknown: abort


def test_a_bare_metal_job_passes_even_when_the_site_config_is_missing(tmp_path):
    """Before, a missing or broken vtorque.yml made every job's prologue exit 2: requeued forever."""
    for config_text in (False, "{not: yaml"):
        done = hook(tmp_path, *PROLOGUE, config_text=config_text)
        assert json.loads(done.stdout) == {"code": 0, "heavy": []}, done.stderr


def test_wrong_argument_counts_are_refused_with_torques_numbers(tmp_path):
    done = subprocess.run(
        [os.path.join(os.path.dirname(sys.executable), "vtorque-hook"), *PROLOGUE[:-1]],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 2 and "prologue takes 8 arguments from pbs_mom, got 7" in done.stderr


def test_slurm_hooks_pass_a_bare_metal_job_fast_and_fail_a_vm_job_the_slurm_way(tmp_path):
    slurmd = {"SLURM_JOB_ID": "41", "SLURMD_NODENAME": "n1", "SLURM_NODELIST": "n1"}
    text = f"scheduler: slurm\nspool_dir: {tmp_path / 'spool'}\nstate_dir: {tmp_path / 'state'}\n"
    for event in ("slurm-prolog", "slurm-epilog"):
        done = hook(tmp_path, event, config_text=text, **slurmd)
        assert json.loads(done.stdout) == {"code": 0, "heavy": []}, done.stderr
    (tmp_path / "spool" / "41").mkdir(parents=True)
    # A VM job and a config that does not validate: Slurm's failure code (drain, requeue held),
    # not Torque's.
    done = hook(tmp_path, "slurm-prolog", config_text=text + "limits: {max_vcpus: -1}\n", **slurmd)
    assert json.loads(done.stdout.splitlines()[-1])["code"] == 1, done.stderr
    assert "limits.max_vcpus" in done.stderr
    done = hook(tmp_path, "slurm-prolog", config_text=text.replace("slurm", "torque", 1), **slurmd)
    assert json.loads(done.stdout.splitlines()[-1])["code"] == 1
    assert "says scheduler: torque, but slurm called this hook" in done.stderr
