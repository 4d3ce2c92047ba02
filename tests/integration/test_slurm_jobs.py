"""VM jobs on a real Slurm: one cluster (slurmctld + slurmd n1 and n2, tests/slurm) for the
module, with libvirtd, the daemons and every client in a network namespace the fixture made
(its bridge carries the two-node test's guests; user-mode guests' forwards are on its
loopback). Jobs are submitted with vsbatch as a normal user; the hooks run as slurmd runs them."""

import json
import os
import shutil
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import hostnet
import pytest
from lifecycle_site import USER, reach_every_vm
from slurm_cluster import SlurmCluster
from slurm_site import NODES, VENV_BIN, SlurmSite
from terminals import read_pty, spawn_on_pty

BRIDGE, GATEWAY = "vtbr1", "10.78.0.1"


class VMCluster:
    """The cluster and the site, with the calls the tests make."""

    def __init__(self, cluster, site, netns):
        self.cluster, self.site, self.netns, self.jobs = cluster, site, netns, []

    def vsbatch(self, args, node="n1", check=True, env=None):
        """vsbatch as the job owner from the work dir; (job id or None, CompletedProcess)."""
        done = self.cluster.run(
            [VENV_BIN / "vsbatch", *args],
            user=USER,
            cwd=str(self.site.workdir),
            env={"VTORQUE_CONFIG": str(self.site.config(node)), **(env or {})},
            check=check,
        )
        words = done.stdout.split()
        job_id = words[-1].split(";")[0] if done.returncode == 0 and words else None
        if job_id:
            self.jobs.append(job_id)
        return job_id, done

    def hook(self, event, environ):
        """vtorque-hook as slurmd runs it (no PATH), for a repeated Epilog."""
        return subprocess.run(
            ["nsenter", f"--net=/run/netns/{self.netns}", str(self.site.hooks[event])],
            env=environ,
            capture_output=True,
            text=True,
            check=False,
        )


@pytest.fixture(scope="module")
def vm_cluster(tiny_image):
    site = SlurmSite(tiny_image)
    netns = f"vtt-{uuid.uuid4().hex[:6]}"
    root = Path(tempfile.mkdtemp(prefix="vtslurm-", dir="/var/tmp"))  # slurmctld (user slurm) reads it
    root.chmod(0o755)
    timeout = 200  # above the site's timeouts.prologue (150): Slurm kills a Prolog only then
    with hostnet.namespace_with_bridge(netns, BRIDGE, f"{GATEWAY}/24"), hostnet.libvirtd_in(netns):
        cluster = SlurmCluster(
            root,
            nodes=NODES,
            cpus_per_node=2,
            prolog=site.hooks["slurm-prolog"],
            epilog=site.hooks["slurm-epilog"],
            netns=netns,
            prolog_epilog_timeout=timeout,
            ctld_port=6827,  # beside a Slurm on the packaged ports (the deployment scenario's)
        )
        cluster.start()
        vm = VMCluster(cluster, site, netns)
        try:
            yield vm
        finally:
            for job_id in vm.jobs:
                cluster.run(["scancel", job_id], check=False)
            cluster.stop()
            site.sweep(vm.jobs)
            site.close()
            shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def slurm(vm_cluster, libvirt_conn):
    """The module's cluster, every node idle and the site back at its base config afterwards."""
    yield vm_cluster
    vm_cluster.site.configure()
    for node in NODES:
        if vm_cluster.cluster.drained_reason(node) is not None:
            vm_cluster.cluster.resume(node)


def wait_record(site, node, job_id, states, timeout=120):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        record = site.record(node, job_id) or {}
        if record.get("state") in states:
            return record
        time.sleep(0.2)
    raise TimeoutError(f"job {job_id} on {node} never reached {states}: {json.dumps(record, indent=1)}")


def assert_nothing_left(vm, conn, job_id):
    deadline = time.monotonic() + 30  # the Epilog may still be finishing when the job shows ended
    while vm.site.leftovers(conn, job_id) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert vm.site.leftovers(conn, job_id) == []


ONE_VM = """#!/bin/sh
#SBATCH --vm vcpus=1,ram=192M
#SBATCH -o out-%j.txt -e err-%j.txt
echo "in=$(hostname) user=$(id -un) cwd=$(pwd) job=$SLURM_JOB_ID nodes=$SLURM_JOB_NODELIST"
echo "hostfile=$(sort -u "$VTORQUE_HOSTFILE" | tr '\\n' ' ')"
echo to-stderr >&2
exit 3
"""


def test_a_vm_job_runs_in_its_guest_and_returns_output_and_exit_code_through_slurm(slurm, libvirt_conn):
    slurm.site.write_job("one.sh", ONE_VM)
    job_id, done = slurm.vsbatch(["-w", "n1", "one.sh"])
    assert done.stdout.strip() == f"Submitted batch job {job_id}", done
    job = slurm.cluster.wait_job(job_id, timeout=240)
    site = slurm.site
    out, err = site.read_output(f"out-{job_id}.txt"), site.read_output(f"err-{job_id}.txt")
    assert (job["JobState"], job["ExitCode"]) == ("FAILED", "3:0"), (job, out, err, site.record("n1", job_id))
    assert out.splitlines() == [
        f"in=n1-vm0 user=vtuser cwd={site.workdir} job={job_id} nodes=n1-vm0",
        "hostfile=n1-vm0 ",
    ], (out, err)
    assert err == "to-stderr\n"
    record = site.record("n1", job_id)
    assert (record["state"], record["exit_status"], record["started_here"]) == (
        "ended",
        3,
        [f"vt-{job_id}-n1-0"],
    )
    assert site.record("n2", job_id) is None  # the job's one node was n1
    assert slurm.cluster.drained_reason("n1") is None
    assert_nothing_left(slurm, libvirt_conn, job_id)


def test_without_vm_vsbatch_is_sbatch(slurm):
    job_id, done = slurm.vsbatch(
        ["--parsable", "-w", "n2", "-o", "bare-%j.txt", "--wrap", "echo bare $SLURM_JOB_ID"]
    )
    assert done.stdout.strip() == job_id and done.stderr == ""
    job = slurm.cluster.wait_job(job_id)
    assert (job["JobState"], job["ExitCode"]) == ("COMPLETED", "0:0")
    assert slurm.site.read_output(f"bare-{job_id}.txt") == f"bare {job_id}\n"
    assert not (slurm.site.spool / job_id).exists()
    assert slurm.site.record("n2", job_id) is None


def test_a_request_that_became_invalid_runs_the_job_to_say_why_and_drains_nothing(slurm, libvirt_conn):
    slurm.site.write_job("bad.sh", "#!/bin/sh\necho should-not-run\n")
    job_id, _ = slurm.vsbatch(["-H", "-w", "n1", "-o", "bad-%j.txt", "--vm", "vcpus=1,ram=192M", "bad.sh"])
    slurm.site.edit_request(job_id, vcpus="8")  # more than the 2 CPUs Slurm allocates
    slurm.cluster.run(["scontrol", "release", job_id], user="vtuser")
    job = slurm.cluster.wait_job(job_id, timeout=120)
    out = slurm.site.read_output(f"bad-{job_id}.txt")
    assert (job["JobState"], job["ExitCode"]) == ("FAILED", "1:0"), (job, out)
    assert "should-not-run" not in out
    assert f"job {job_id} cannot run in VMs:" in out and "allocated 2 on n1" in out, out
    assert slurm.cluster.drained_reason("n1") is None
    assert slurm.site.record("n1", job_id)["state"] == "aborted"
    assert_nothing_left(slurm, libvirt_conn, job_id)


def test_a_guest_that_never_boots_drains_its_node_with_the_reason_and_slurm_requeues_held(
    slurm, libvirt_conn
):
    slurm.site.write_job("panic.sh", "#!/bin/sh\necho should-not-run\n")
    job_id, _ = slurm.vsbatch(
        ["-w", "n1", "-o", "panic-%j.txt", "--vm", "img=panics,vcpus=1,ram=192M", "panic.sh"]
    )
    job = slurm.cluster.wait_job(
        job_id, states=("PENDING",), reason="launch_failed_requeued_held", timeout=240
    )
    reason = slurm.cluster.drained_reason("n1")
    assert reason is not None and reason.startswith("vtorque: vt-"), (
        reason,
        slurm.cluster.log_tail("slurmd-n1"),
    )
    assert "vtorque: start failed on n1" in job.get("AdminComment", ""), job
    record = wait_record(slurm.site, "n1", job_id, ("requeued",))
    assert record["reason"] in reason or reason[len("vtorque: ") :] in record["reason"]
    assert (slurm.site.spool / job_id).is_dir()  # kept for the requeued job's next start
    assert not slurm.site.read_output(f"panic-{job_id}.txt")
    assert slurm.site.leftovers(libvirt_conn, job_id) == [str(slurm.site.spool / job_id)]
    slurm.cluster.run(["scancel", job_id])


SLOW = """#!/bin/sh
echo started
sleep 300
echo never
"""


def test_scancel_of_a_running_vm_job_ends_it_and_leaves_nothing(slurm, libvirt_conn):
    slurm.site.write_job("slow.sh", SLOW)
    job_id, _ = slurm.vsbatch(["-w", "n1", "-o", "slow-%j.txt", "--vm", "vcpus=1,ram=192M", "slow.sh"])
    wait_record(slurm.site, "n1", job_id, ("running",), timeout=240)
    deadline = time.monotonic() + 60
    while (
        "started" not in (slurm.site.read_output(f"slow-{job_id}.txt") or "") and time.monotonic() < deadline
    ):
        time.sleep(0.2)
    slurm.cluster.run(["scancel", job_id], user="vtuser")
    job = slurm.cluster.wait_job(job_id, timeout=60)
    assert job["JobState"] == "CANCELLED"
    assert "never" not in slurm.site.read_output(f"slow-{job_id}.txt")
    assert slurm.cluster.drained_reason("n1") is None
    assert_nothing_left(slurm, libvirt_conn, job_id)


def test_scancel_during_the_prolog_stops_the_start_itself_and_leaves_nothing(slurm, libvirt_conn):
    slurm.site.write_job("never.sh", "#!/bin/sh\necho should-not-run\n")
    job_id, _ = slurm.vsbatch(["-w", "n1", "-o", "never-%j.txt", "--vm", "vcpus=1,ram=192M", "never.sh"])
    wait_record(slurm.site, "n1", job_id, ("starting",), timeout=60)
    slurm.cluster.run(["scancel", job_id], user="vtuser")
    cancelled_at = time.monotonic()
    job = slurm.cluster.wait_job(job_id, states=("CANCELLED",), timeout=120)
    took = time.monotonic() - cancelled_at
    record = slurm.site.record("n1", job_id)
    # Slurm would wait for the Prolog up to its boot and SSH timeouts (120 s here) if the start
    # did not notice the cancel itself.
    assert took < 60, (took, record)
    assert record["state"] == "cancelled", json.dumps(record, indent=1)
    assert job["ExitCode"] in ("0:0", "0:15")
    assert slurm.cluster.drained_reason("n1") is None
    assert slurm.site.read_output(f"never-{job_id}.txt") is None
    assert_nothing_left(slurm, libvirt_conn, job_id)


def test_walltime_ends_the_vm_job_and_leaves_nothing(slurm, libvirt_conn):
    slurm.site.write_job("long.sh", SLOW)
    job_id, _ = slurm.vsbatch(
        ["-w", "n2", "-t", "1", "-o", "long-%j.txt", "--vm", "vcpus=1,ram=192M", "long.sh"], node="n2"
    )
    job = slurm.cluster.wait_job(job_id, timeout=200)
    assert job["JobState"] == "TIMEOUT"
    assert "DUE TO TIME LIMIT" in slurm.site.read_output(f"long-{job_id}.txt")
    assert slurm.site.record("n2", job_id)["state"] == "ended"
    assert_nothing_left(slurm, libvirt_conn, job_id)


def test_an_epilog_run_again_finds_nothing_to_do_and_succeeds(slurm, libvirt_conn):
    slurm.site.write_job("quick.sh", "#!/bin/sh\necho quick\n")
    job_id, _ = slurm.vsbatch(["-w", "n1", "-o", "quick-%j.txt", "--vm", "vcpus=1,ram=192M", "quick.sh"])
    assert slurm.cluster.wait_job(job_id, timeout=240)["JobState"] == "COMPLETED"
    before = slurm.site.record("n1", job_id)
    environ = {
        "SLURM_JOB_ID": job_id,
        "SLURMD_NODENAME": "n1",
        "SLURM_NODELIST": "n1",
        "SLURM_JOB_USER": "vtuser",
        "SLURM_JOB_CPUS_PER_NODE": "2",
        "SLURM_JOB_EXIT_CODE2": "0:0",
        "SLURM_CONF": str(slurm.cluster.conf),
    }
    again = slurm.hook("slurm-epilog", environ)
    assert again.returncode == 0, again
    after = slurm.site.record("n1", job_id)
    assert (after["state"], after["exit_status"]) == (before["state"], before["exit_status"]) == ("ended", 0)
    assert_nothing_left(slurm, libvirt_conn, job_id)


MPI = reach_every_vm(
    "VTORQUE_HOSTFILE", """hostfile: $(uniq "$VTORQUE_HOSTFILE" | tr '\\n' ' ')nodes=$SLURM_JOB_NODELIST"""
)


def test_two_nodes_each_prolog_starts_its_own_vm_and_the_rank0_vm_reaches_the_other(slurm, libvirt_conn):
    slurm.site.configure(
        network={
            "mode": "bridge",
            "bridge": BRIDGE,
            "cidr": "10.78.0.0/24",
            "gateway": GATEWAY,
            "ranges": {"n1": "10.78.0.10-10.78.0.19", "n2": "10.78.0.20-10.78.0.29"},
        }
    )
    slurm.site.write_job("mpi.sh", MPI)
    job_id, _ = slurm.vsbatch(["-N", "2", "-o", "mpi-%j.txt", "--vm", "vcpus=1,ram=192M", "mpi.sh"])
    job = slurm.cluster.wait_job(job_id, timeout=300)
    out = slurm.site.read_output(f"mpi-{job_id}.txt")
    assert job["JobState"] == "COMPLETED", (
        job,
        out,
        slurm.site.record("n1", job_id),
        slurm.site.record("n2", job_id),
    )
    assert out.splitlines() == [
        "hostfile: n1-vm0 n2-vm0 nodes=n1-vm0,n2-vm0",
        "reached n1-vm0 as vtuser",
        "reached n2-vm0 as vtuser",
    ], out
    for node in ("n1", "n2"):
        record = slurm.site.record(node, job_id)
        assert record["started_here"] == [f"vt-{job_id}-{node}-0"], (node, json.dumps(record, indent=1))
        assert record["state"] == "ended"
    assert_nothing_left(slurm, libvirt_conn, job_id)


def test_ten_vm_jobs_at_once_with_cancels_leave_nothing(slurm, libvirt_conn):
    slurm.site.write_job("load.sh", "#!/bin/sh\nsleep 2\necho done-$SLURM_JOB_ID\n")
    jobs = []
    for number in range(10):
        node = ("n1", "n2")[number % 2]
        job_id, _ = slurm.vsbatch(
            ["-w", node, "-o", "load-%j.txt", "--vm", "vcpus=1,ram=192M", "load.sh"], node=node
        )
        jobs.append(job_id)
    cancels = {jobs[1]: 0.0, jobs[4]: 3.0, jobs[9]: 0.0}  # queued, starting or running, queued
    began = time.monotonic()
    for job_id, delay in sorted(cancels.items(), key=lambda item: item[1]):
        time.sleep(max(0, began + delay - time.monotonic()))
        slurm.cluster.run(["scancel", job_id], user="vtuser")
    finals = {job_id: slurm.cluster.wait_job(job_id, timeout=600)["JobState"] for job_id in jobs}
    for job_id, state in finals.items():
        if job_id in cancels:
            assert state == "CANCELLED", (job_id, finals)
        else:
            assert state == "COMPLETED", (
                job_id,
                finals,
                slurm.site.record("n1", job_id),
                slurm.site.record("n2", job_id),
            )
            assert slurm.site.read_output(f"load-{job_id}.txt") == f"done-{job_id}\n"
    for node in ("n1", "n2"):
        assert slurm.cluster.drained_reason(node) is None
    # Cancelled while queued, a job runs no hook: its spool dir is `vtorque sweep`'s, which asks
    # slurmctld which jobs may still run.
    slurm.site.configure(spool_grace_minutes=0)
    swept = slurm.cluster.run(
        [VENV_BIN / "vtorque", "sweep"], env={"VTORQUE_CONFIG": str(slurm.site.config("n1"))}
    )
    assert swept.returncode == 0, swept
    for job_id in jobs:
        assert slurm.site.leftovers(libvirt_conn, job_id) == [], (job_id, swept.stdout)


def spawn_vsalloc(slurm):
    """vsalloc as vtuser on a terminal of its own, once salloc named the job: (pid, the
    terminal's master fd, what it printed, the job id)."""
    import pwd
    import re

    user = pwd.getpwnam("vtuser")
    argv = ["nsenter", f"--net=/run/netns/{slurm.netns}", "setpriv", f"--reuid={user.pw_uid}"]
    argv += [f"--regid={user.pw_gid}", "--init-groups", str(VENV_BIN / "vsalloc"), "-w", "n1"]
    argv += ["--vm", "vcpus=1,ram=192M"]
    env = {
        "HOME": user.pw_dir,
        "USER": "vtuser",
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "TERM": "xterm",
        "SLURM_CONF": str(slurm.cluster.conf),
        "VTORQUE_CONFIG": str(slurm.site.config("n1")),
    }
    pid, fd = spawn_on_pty(argv, env, slurm.site.workdir)
    seen = read_pty(fd, rb"Pending job allocation (\d+)", 30)
    job_id = re.search(rb"Pending job allocation (\d+)", seen).group(1).decode()
    slurm.jobs.append(job_id)
    return pid, fd, seen, job_id


def test_vsalloc_gives_a_login_shell_in_the_vm_and_its_exit_ends_the_job(slurm, libvirt_conn):
    pid, fd, seen, job_id = spawn_vsalloc(slurm)
    try:
        seen = read_pty(fd, rb"ready for job", 240, seen)
        os.write(fd, b"echo in=$(hostname) job=$SLURM_JOB_ID cwd=$(pwd) tty=$(tty | cut -c1-8); exit 7\n")
        seen = read_pty(fd, None, 120, seen)
    finally:
        _, status = os.waitpid(pid, 0)
        os.close(fd)
    text = seen.decode(errors="replace")
    assert f"in=n1-vm0 job={job_id} cwd={slurm.site.workdir} tty=/dev/pts" in text, text
    assert os.waitstatus_to_exitcode(status) == 7, text
    slurm.cluster.wait_job(job_id, timeout=60)
    assert slurm.site.record("n1", job_id)["state"] == "ended"
    assert_nothing_left(slurm, libvirt_conn, job_id)


def test_a_hang_up_while_vsalloc_s_vms_start_leaves_nothing(slurm, libvirt_conn):
    pid, fd, seen, job_id = spawn_vsalloc(slurm)
    try:
        wait_record(slurm.site, "n1", job_id, ("starting",), timeout=60)
    finally:
        os.close(fd)  # the terminal goes away: salloc gets SIGHUP and gives the allocation up
        os.waitpid(pid, 0)
    job = slurm.cluster.wait_job(job_id, timeout=120)
    assert job["JobState"] in ("CANCELLED", "COMPLETED", "FAILED"), job
    assert slurm.cluster.drained_reason("n1") is None
    assert_nothing_left(slurm, libvirt_conn, job_id)


ARRAY = """#!/bin/sh
#SBATCH --vm vcpus=1,ram=192M
#SBATCH -o arr-%A_%a.txt
boot=$(cat /proc/sys/kernel/random/boot_id)
echo "index=$SLURM_ARRAY_TASK_ID array=$SLURM_ARRAY_JOB_ID in=$(hostname) boot=$boot"
exit "$SLURM_ARRAY_TASK_ID"
"""


def test_each_element_of_an_array_vm_job_runs_in_vms_of_its_own_and_nothing_is_left(slurm, libvirt_conn):
    slurm.site.write_job("array.sh", ARRAY)
    # -w n1: a job's wrapper reads the config of the node it was submitted for (state-n1 here;
    # one path on every node of a real site), so every element runs on n1, one after the other
    array_id, done = slurm.vsbatch(["--array", "1-3", "-w", "n1", "array.sh"])
    assert "vtorque-array" in done.stderr, done  # the note: the comment carries vTorque's mark
    boots = set()
    for index in (1, 2, 3):
        element = f"{array_id}_{index}"
        job = slurm.cluster.wait_job(element, timeout=300)
        out = slurm.site.read_output(f"arr-{array_id}_{index}.txt")
        assert (job["JobState"], job["ExitCode"]) == ("FAILED", f"{index}:0"), (job, out)
        node = job["NodeList"]
        fields = dict(item.split("=", 1) for item in out.split())
        assert (fields["index"], fields["array"], fields["in"]) == (str(index), array_id, f"{node}-vm0"), out
        boots.add(fields["boot"])
        record = wait_record(slurm.site, node, element, ("ended",))
        assert (record["exit_status"], record["started_here"]) == (index, [f"vt-{element}-{node}-0"]), record
        assert_nothing_left(slurm, libvirt_conn, element)
    assert len(boots) == 3, "each element booted a VM of its own"
    spool = slurm.site.spool / array_id  # the last element's Epilog removes it; two at once: the sweep
    if spool.exists():
        print("the last two elements ended together: the sweep removes the array's spool dir")
        slurm.site.sweep([array_id])
    assert not spool.exists()
