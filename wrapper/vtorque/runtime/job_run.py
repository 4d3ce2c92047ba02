"""`vtorque job-run SPOOL_JOB_DIR [ARGS...]`: the job as Torque runs it, handed to the VMs.

The wrapper vsub wrote execs this as the job owner. It runs the user's script in the rank-0
VM over SSH with the per-job key and the pinned host keys, in the job's work dir and with the
job's PBS_* environment ($PBS_NODEFILE names the VMs), streams stdout and stderr to Torque's
files and exits with the script's exit code. vm_prologue/vm_epilogue run around it.
"""

import json
import os
import shlex
import signal
import subprocess
import sys

from vtorque.errors import VTorqueError

PID_FILE = "jobrun.pid"
SSH_FAILED = 255


def main(argv, prog="vtorque job-run"):
    if not argv or argv[0] in ("-h", "--help"):
        print(f"usage: {prog} SPOOL_JOB_DIR [ARGS...]  (run by the job wrapper vsub writes)")
        return 0 if argv else 2
    from ansible_collections.mikelangelo.vtorque.plugins.module_utils.naming import job_dir

    from vtorque.guest.seeds import vm_nodefile_path
    from vtorque.site.config import load_config

    spool, args = argv[0], argv[1:]
    job_id = os.path.basename(os.path.normpath(spool))
    config = load_config()
    state = job_dir(job_id, config.state_dir)
    try:
        with open(os.path.join(state, "vms.json"), encoding="utf-8") as handle:
            vms = json.load(handle)
        with open(os.path.join(spool, "request.json"), encoding="utf-8") as handle:
            options = json.load(handle).get("options", {})
    except (OSError, ValueError) as err:
        raise VTorqueError(f"job {job_id} has no running VMs to run in ({err})") from None
    rank0 = vms["vms"][0]
    workdir = os.environ.get("PBS_O_WORKDIR") or vms["workdir"]
    env = {key: value for key, value in os.environ.items() if key.startswith("PBS_")}
    env["PBS_NODEFILE"] = vm_nodefile_path(job_id)
    remote = remote_command(workdir, env, args, options.get("vm_prologue"), options.get("vm_epilogue"))
    from vtorque.runtime.lifecycle import OWNER_KNOWN_HOSTS, ssh_command

    ssh = ssh_command(state, vms["owner"], rank0["ssh_host"], rank0["ssh_port"], OWNER_KNOWN_HOSTS)
    command = [*ssh, remote]
    with open(os.path.join(spool, "job.sh"), "rb") as script:
        child = subprocess.Popen(command, stdin=script)  # noqa: S603 - argv list
    _write_pid(spool)
    signal.signal(signal.SIGTERM, lambda *_: child.terminate())
    code = child.wait()
    if code == SSH_FAILED:
        print(f"vtorque: lost the connection to VM {rank0['name']} (ssh exit 255)", file=sys.stderr)
    return code


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


CANCELLED_FLAG = "cancelled"


def cancel(job, config):
    """epilogue.precancel (as the job owner): tell a prologue still starting the VMs to stop
    (a flag in the owner's own spool dir), and end the job's SSH session now, so the job ends
    promptly; root's epilogue then tears the VMs down."""
    spool = os.path.join(config.spool_dir, job.job_id)
    try:
        flags = os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW
        os.close(os.open(os.path.join(spool, CANCELLED_FLAG), flags, 0o644))
    except OSError:
        pass  # no spool dir: nothing is starting
    try:
        with open(os.path.join(spool, PID_FILE), encoding="ascii") as handle:
            pid = int(handle.read().strip())
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            if b"job-run" not in handle.read():
                return
        os.kill(pid, signal.SIGTERM)
    except (OSError, ValueError):
        pass


def _write_pid(spool):
    path = os.path.join(spool, PID_FILE)
    try:
        if os.path.lexists(path):
            os.unlink(path)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
        with os.fdopen(fd, "w") as handle:
            handle.write(f"{os.getpid()}\n")
    except OSError:
        pass  # qdel then ends the job by Torque's own SIGTERM
