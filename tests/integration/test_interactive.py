"""`vsub -I -vm ...` on Torque: a login shell in the rank-0 VM through a terminal, with
pbs_mom's side of `qsub -I` played as a real Torque 6.1 plays it (PbsMom.run_interactive,
docs/torque.md "Interactive jobs"): the waiting line, hold, release, the ready line, the
prologue's output on the terminal, the wrapper run with a tty, the completed line."""

import json
import os
import pwd
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from ansible_collections.mikelangelo.vtorque.plugins.module_utils import naming
from lifecycle_site import USER
from terminals import read_pty, spawn_on_pty

VSUB = Path(sys.executable).parent / "vsub"
REQUEST = "img=tiny,vcpus=1,ram=256M"


def spawn_vsub(site, mom, *argv):
    """vsub -I as the job owner on a terminal of its own: (pid, the terminal's master fd)."""
    user = pwd.getpwnam(USER)
    command = ["setpriv", f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}", "--init-groups"]
    command += [str(VSUB), "-I", *argv, "-vm", REQUEST]
    env = {
        "HOME": user.pw_dir,
        "USER": USER,
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "TERM": "xterm",
        "VTORQUE_CONFIG": mom.config,
    }
    return spawn_on_pty(command, env, str(site.workdir))


def wait_state(site, job_id, states, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if site.record(job_id).get("state") in states:
                return
        except (OSError, ValueError):
            pass
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} never reached {states}")


def assert_nothing_left(site, libvirt_conn, job):
    assert site.leftovers(libvirt_conn, job.job_id) == []
    assert not (site.spool / job.job_id).exists()


def test_vsub_dash_i_gives_a_login_shell_in_the_vm_and_passes_its_exit_status_on(site, mom, libvirt_conn):
    pid, fd = spawn_vsub(site, mom)
    with ThreadPoolExecutor(1) as pool:
        job = mom.await_interactive(USER, str(site.workdir))
        played = pool.submit(mom.run_interactive, job)
        try:
            seen = read_pty(fd, rb"logging in to", 240)
            os.write(fd, b"echo in=$(hostname) job=$PBS_JOBID cwd=$(pwd) tty=$(tty | cut -c1-8); exit 7\n")
            seen = read_pty(fd, None, 120, seen)
        finally:
            _, status = os.waitpid(pid, 0)
            os.close(fd)
        prologue, job_status = played.result(timeout=120)
    text = seen.decode(errors="replace")
    node = naming.sanitise_node(os.uname().nodename).split(".")[0]
    lines = [line for line in text.replace("\r", "").splitlines() if line]
    qsub_lines = [line for line in lines if line.startswith("qsub:")]
    assert qsub_lines[0] == f"qsub: waiting for job {job.job_id} to start", text
    assert f"qsub: job {job.job_id} ready" in text
    assert f"in={node}-vm0 job={job.job_id} cwd={site.workdir} tty=/dev/pts" in text, text
    assert f"the shell in {node}-vm0 exited with status 7" in text
    assert lines[-1] == f"qsub: job {job.job_id} completed", text
    assert (prologue, job_status, os.waitstatus_to_exitcode(status)) == (0, 7, 7), text
    record = site.record(job.job_id)
    assert (record["state"], record["exit_status"]) == ("ended", 0), json.dumps(record, indent=1)
    assert_nothing_left(site, libvirt_conn, job)


def test_ctrl_c_while_the_vms_start_cancels_the_job_and_leaves_nothing(site, mom, libvirt_conn):
    pid, fd = spawn_vsub(site, mom)
    with ThreadPoolExecutor(1) as pool:
        job = mom.await_interactive(USER, str(site.workdir))
        played = pool.submit(mom.run_interactive, job)
        try:
            wait_state(site, job.job_id, ("starting",), 60)
            os.write(fd, b"\x03")
            seen = read_pty(fd, None, 120)
        finally:
            _, status = os.waitpid(pid, 0)
            os.close(fd)
        played.result(timeout=180)
    text = seen.decode(errors="replace")
    assert f"vsub: cancelling job {job.job_id} (Ctrl-C before the VMs were ready): qdel" in text, text
    assert os.waitstatus_to_exitcode(status) == 130, text
    assert site.record(job.job_id)["state"] in ("cancelled", "ended"), site.record(job.job_id)
    assert_nothing_left(site, libvirt_conn, job)


def test_a_hang_up_while_the_vms_start_cancels_the_job_and_leaves_nothing(site, mom, libvirt_conn):
    pid, fd = spawn_vsub(site, mom)
    with ThreadPoolExecutor(1) as pool:
        job = mom.await_interactive(USER, str(site.workdir))
        played = pool.submit(mom.run_interactive, job)
        try:
            wait_state(site, job.job_id, ("starting",), 60)
        finally:
            os.close(fd)  # the terminal goes away: vsub gets SIGHUP
            os.waitpid(pid, 0)
        played.result(timeout=180)
    assert site.record(job.job_id)["state"] in ("cancelled", "ended"), site.record(job.job_id)
    assert_nothing_left(site, libvirt_conn, job)


def test_a_failed_start_prints_its_reason_on_the_terminal_and_vsub_exits_1(site, mom, libvirt_conn):
    pid, fd = spawn_vsub(site, mom)
    with ThreadPoolExecutor(1) as pool:
        job = mom.await_interactive(USER, str(site.workdir))
        request = site.spool / job.job_id / "request.json"
        document = json.loads(request.read_text())
        document["options"]["vcpus"] = "8"  # as the owner could: more than the job was allocated
        request.write_text(json.dumps(document))
        played = pool.submit(mom.run_interactive, job)
        try:
            seen = read_pty(fd, None, 240)
        finally:
            _, status = os.waitpid(pid, 0)
            os.close(fd)
        prologue, job_status = played.result(timeout=60)
    text = seen.decode(errors="replace")
    assert (prologue, job_status) == (1, None), text
    assert "job was allocated 2" in text, text  # the prologue's reason, on the user's terminal
    assert f"vsub: job {job.job_id} ended before its VMs were ready" in text, text
    assert os.waitstatus_to_exitcode(status) == 1, text
    assert_nothing_left(site, libvirt_conn, job)
