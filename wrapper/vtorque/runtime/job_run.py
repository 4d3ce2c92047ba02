"""`vtorque job-run SPOOL_JOB_DIR [ARGS...]`: the batch job, handed to its VMs (as the owner).

The job wrapper vsub wrote execs this as the job owner. It runs the user's script in the
rank-0 VM over SSH with the per-job key and the pinned host keys, in the job's work dir and
with the job's environment as the scheduler adapter gives it to guests (its node file names
the VMs), streams stdout and stderr to the batch system's files and exits with the script's
exit code. vm_prologue/vm_epilogue run around it.
"""

import json
import os
import shlex
import signal
import subprocess
import sys

from vtorque.errors import VTorqueError
from vtorque.runtime.cancel import PID_FILE

SSH_FAILED = 255


def main(argv, prog="vtorque job-run"):
    if not argv or argv[0] in ("-h", "--help"):
        print(f"usage: {prog} [--interactive] SPOOL_JOB_DIR [ARGS...]  (run by the job wrapper vsub writes)")
        return 0 if argv else 2
    interactive = argv[0] == "--interactive"  # vsub -I, vsalloc: a login shell on the user's terminal
    argv = argv[1:] if interactive else argv
    from ansible_collections.mikelangelo.vtorque.plugins.module_utils.naming import job_dir

    from vtorque import scheduler
    from vtorque.guest.ssh import OWNER_KNOWN_HOSTS, ssh_command
    from vtorque.site.config import load_config

    spool, args = os.path.normpath(argv[0]), argv[1:]
    config = load_config()
    batch = scheduler.for_config(config)
    # The wrapper names the spool dir by the batch system's job id variable; an array element
    # (42[3].head, 42_3) runs in the dir of its array, in VMs of its own.
    job_id = batch.running_job_id(os.environ) or os.path.basename(spool)
    spool = os.path.join(os.path.dirname(spool), batch.spool_key(job_id))
    state = job_dir(job_id, config.state_dir)
    try:
        with open(os.path.join(state, "vms.json"), encoding="utf-8") as handle:
            vms = json.load(handle)
        with open(os.path.join(spool, "request.json"), encoding="utf-8") as handle:
            options = json.load(handle).get("options", {})
    except (OSError, ValueError) as err:
        raise VTorqueError(_why_no_vms(config, job_id, err)) from None
    rank0 = vms["vms"][0]
    workdir = batch.workdir(os.environ) or vms["workdir"]
    env = batch.guest_environment(os.environ, job_id, vms["vms"], vms.get("start_seconds"))
    ssh = ssh_command(state, vms["owner"], rank0["ssh_host"], rank0["ssh_port"], OWNER_KNOWN_HOSTS)
    if interactive:
        # vsub -I reads these two lines on the terminal it relays (scheduler.torque.interactive)
        print(f"vtorque: job {job_id}: logging in to {rank0['hostname']} (exit the shell to end the job)")
        sys.stdout.flush()
        x11 = ["-X"] if os.environ.get("DISPLAY") else []  # qsub -I -X gave the job a display
        child = subprocess.Popen([ssh[0], "-t", *x11, *ssh[1:], login_command(workdir, env)])  # noqa: S603
    else:
        remote = remote_command(workdir, env, args, options.get("vm_prologue"), options.get("vm_epilogue"))
        with open(os.path.join(spool, "job.sh"), "rb") as script:
            child = subprocess.Popen([*ssh, remote], stdin=script)  # noqa: S603 - argv list
    _write_pid(spool)
    killed = []

    def end_session(*_):  # the batch system kills the job (qdel, walltime): end the session
        killed.append(True)
        child.terminate()

    signal.signal(signal.SIGTERM, end_session)
    code = child.wait()
    if killed:
        print(f"vtorque: the job was killed; its session in VM {rank0['name']} ended", file=sys.stderr)
        return 128 + signal.SIGTERM
    if code == SSH_FAILED:
        print(f"vtorque: lost the connection to VM {rank0['name']} (ssh exit 255)", file=sys.stderr)
    elif interactive:
        print(f"vtorque: job {job_id}: the shell in {rank0['hostname']} exited with status {code}")
    return code


def _why_no_vms(config, job_id, err):
    """What the user reads in the job's stderr when the start did not leave VMs to run in:
    the reason the start recorded (Slurm lets a job with an invalid request run, to say so)."""
    from vtorque.job.records import load_record

    try:
        record = load_record(config.state_dir, job_id, owner_copy=True) or {}
    except (OSError, ValueError, VTorqueError):
        record = {}
    if record.get("reason"):
        return f"job {job_id} cannot run in VMs: {record['reason']}"
    return f"job {job_id} has no running VMs to run in ({err})"


def login_command(workdir, env):
    """Shell text for an interactive job: the user's login shell in the work dir, with the job's
    environment."""
    q = shlex.quote
    assignments = " ".join(f"{key}={q(value)}" for key, value in sorted(env.items()))
    return f'cd {q(workdir)} || exit 255\nexec env {assignments} "${{SHELL:-/bin/sh}}" -l'


def remote_command(workdir, env, args, vm_prologue=None, vm_epilogue=None):
    """Shell text run by the guest's login shell: store the script (read from stdin), then
    prologue, script, epilogue in the work dir; the script's exit code is the result."""
    q = shlex.quote
    assignments = " ".join(f"{key}={q(value)}" for key, value in sorted(env.items()))
    steps = [
        'f=$(mktemp) && cat > "$f" && chmod 700 "$f" || exit 255',
        f"cd {q(workdir)} || exit 255",
    ]
    if vm_prologue:
        steps.append(f"env {assignments} {q(vm_prologue)} < /dev/null")
    steps.append(f'env {assignments} "$f" {" ".join(q(a) for a in args)} < /dev/null; rc=$?')
    if vm_epilogue:
        steps.append(f"env {assignments} {q(vm_epilogue)} < /dev/null")
    steps.append('rm -f "$f"; exit $rc')
    return "\n".join(steps)


def _write_pid(spool):
    path = os.path.join(spool, PID_FILE)
    try:
        if os.path.lexists(path):
            os.unlink(path)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
        with os.fdopen(fd, "w") as handle:
            handle.write(f"{os.getpid()}\n")
    except OSError:
        pass  # a cancel then ends the job by the batch system's own SIGTERM
