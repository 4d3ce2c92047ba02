"""Figures that need no VM: vsub against qsub, and the hooks on a bare-metal job."""

import os
import subprocess
import sys
from pathlib import Path

from timing import comparison, measure

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "fakes"))
from fakesite import make_site  # noqa: E402

BIN = Path(sys.executable).parent
TRUE_HOOK = "#!/bin/sh\nexit 0\n"
# Torque's minimal hook environment (docs/torque.md, "Environment"): the hooks see little else.
HOOK_ENV = {"PATH": "/bin:/usr/bin", "LANG": "C"}


def _run(argv, env, cwd):
    subprocess.run(argv, env=env, cwd=cwd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def submission(workdir, repeat):
    """vsub for a VM job and for a bare-metal job, against the (stand-in) qsub alone."""
    site = make_site(workdir)
    (site.root / "job.sh").write_text("#!/bin/sh\necho hello\n")
    env = site.env()
    qsub = [str(site.root / "bin" / "qsub"), "job.sh"]
    floor = measure(lambda: _run(qsub, env, site.root), repeat)
    vm = measure(lambda: _run([str(BIN / "vsub"), "-vm", "vcpus=2,ram=1G", "job.sh"], env, site.root), repeat)
    bare = measure(lambda: _run([str(BIN / "vsub"), "job.sh"], env, site.root), repeat)
    return [
        comparison("submission: vsub VM job vs qsub", vm, floor, "qsub is a Python stand-in that records"),
        comparison("submission: vsub bare-metal job vs qsub", bare, floor),
    ]


def bare_metal_hooks(workdir, repeat):
    """`vtorque-hook prologue` + `epilogue` for a job without a VM request, against a do-nothing script."""
    site = make_site(workdir)
    true_hook = site.root / "true-hook"
    true_hook.write_text(TRUE_HOOK)
    true_hook.chmod(0o755)
    env = dict(HOOK_ENV, VTORQUE_CONFIG=str(site.config))
    job = "7.bench"
    script = str(site.root / f"{job}.SC")
    user = os.environ.get("USER", "root")
    prologue_args = [job, user, user, "bench", "nodes=1", "batch", "", script]
    epilogue_args = [
        job,
        user,
        user,
        "bench",
        "0",
        "nodes=1",
        "walltime=00:00:01",
        "batch",
        "",
        "0",
        script,
    ]

    def hooks(program):
        _run([*program, "prologue", *prologue_args], env, site.root)
        _run([*program, "epilogue", *epilogue_args], env, site.root)

    floor = measure(lambda: hooks([str(true_hook)]), repeat)
    measured = measure(lambda: hooks([str(BIN / "vtorque-hook")]), repeat)
    result = comparison("hooks: prologue+epilogue, bare-metal job", measured, floor)
    result["per_hook_overhead_s"] = result["overhead_s"] / 2
    return [result]
