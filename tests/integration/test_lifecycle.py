"""A VM job's whole life on one node with the tiny guest: vsub → prologue → the job in the VM
→ epilogue, with pbs_mom played to the letter (vtorque.scheduler.torque.emulator's PbsMom),
and the faults."""

import json
import os
import subprocess
import threading
import time
from pathlib import Path

import hostnet
import pytest
from ansible_collections.mikelangelo.vtorque.plugins.module_utils import naming
from lifecycle_site import USER, Site
from vtorque.scheduler.torque.emulator.pbs_mom import PbsMom

JOB = """#!/bin/sh
echo "host=$(hostname) kernel=$(uname -r) user=$(id -un) uid=$(id -u) cwd=$(pwd)"
echo "nodefile=$(cat "$PBS_NODEFILE" | tr '\\n' ' ') jobid=$PBS_JOBID"
echo "start=$VTORQUE_START_SECONDS"
echo kept-apart >&2
echo result > result.txt
exit 3
"""


def test_a_job_runs_in_the_vm_and_its_exit_code_and_streams_come_back(site, mom, libvirt_conn, tiny_image):
    site.write_job("job.sh", JOB)
    job = mom.submit(USER, ["-vm", "img=tiny,vcpus=1,ram=256M", "job.sh"], str(site.workdir))
    assert mom.prologue(job) == 0, json.dumps(site.record(job.job_id), indent=1)
    child = mom.run_job(job, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = child.communicate(timeout=120)
    assert child.returncode == 3, (out, err)
    assert mom.epilogue(job, child.returncode) == 0

    kernel = next(p for p in tiny_image.info["packages"] if p.startswith("linux-image-"))[
        len("linux-image-") :
    ]
    lines = out.decode().splitlines()
    node = naming.sanitise_node(os.uname().nodename).split(".")[0]
    assert lines[0] == f"host={node}-vm0 kernel={kernel} user={USER} uid=4500 cwd={site.workdir}"
    assert lines[1] == f"nodefile={node}-vm0  jobid={job.job_id}"
    assert err.decode() == "kept-apart\n"
    assert (site.workdir / "result.txt").read_text() == "result\n"
    assert (site.workdir / "result.txt").stat().st_uid == 4500

    record = site.record(job.job_id)
    assert record["state"] == "ended" and record["exit_status"] == 3
    assert lines[2] == f"start={record['phases']['prologue']}", "the job knows how long its start took"
    assert set(record["phases"]) >= {"prologue", "guests_ssh_ready", "epilogue"}
    print(f"prologue {record['phases']['prologue']}s, epilogue {record['phases']['epilogue']}s")
    assert site.leftovers(libvirt_conn, job.job_id) == []
    assert not (site.spool / job.job_id).exists()


def test_a_bare_metal_job_goes_through_the_same_hooks_untouched(site, mom, libvirt_conn):
    site.write_job("bare.sh", "#!/bin/sh\necho on-host=$(hostname)\nexit 4\n")
    job = mom.submit(USER, ["bare.sh"], str(site.workdir))
    assert mom.prologue(job) == 0
    child = mom.run_job(job, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = child.communicate(timeout=60)
    assert (child.returncode, out.decode(), err) == (4, f"on-host={os.uname().nodename}\n", b"")
    assert mom.epilogue(job, 4) == 0
    assert not (site.state / "records").exists() and not (site.spool / job.job_id).exists()


def test_a_request_changed_after_submission_aborts_with_the_reason_for_the_user(site, mom, libvirt_conn):
    site.write_job("job.sh", JOB)
    job = mom.submit(USER, ["-vm", "vcpus=1", "job.sh"], str(site.workdir))
    request = site.spool / job.job_id / "request.json"
    document = json.loads(request.read_text())
    for vcpus, reason in (("65", "limits.max_vcpus"), ("8", "job was allocated 2")):
        document["options"]["vcpus"] = vcpus
        request.write_text(json.dumps(document))  # as the owner could: the file stays theirs
        assert mom.prologue(job) == 1  # abort: Torque discards the .o/.e files
        user_log = (site.spool / job.job_id / "vtorque.log").read_text()
        assert reason in user_log.splitlines()[-1], user_log
        assert reason in site.record(job.job_id)["events"][-1]["text"]
    assert (site.spool / job.job_id / "vtorque.log").stat().st_uid == 4500
    assert mom.epilogue(job, -2) == 0
    record = site.record(job.job_id)
    assert (record["state"], record["exit_status"]) == ("aborted", -2)  # the epilogue keeps the story
    assert site.leftovers(libvirt_conn, job.job_id) == []
    assert not (site.spool / job.job_id).exists()  # -2 is final: nothing of the job stays


def test_qdel_ends_the_job_promptly_and_the_epilogue_leaves_nothing(site, mom, libvirt_conn):
    site.write_job("long.sh", "#!/bin/sh\necho started\nsleep 600\necho never\n")
    job = mom.submit(USER, ["-vm", "vcpus=1", "long.sh"], str(site.workdir))
    assert mom.prologue(job) == 0
    child = mom.run_job(job, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert child.stdout.readline() == b"started\n"
    began = time.monotonic()
    mom.qdel(job, child)
    child.wait(timeout=30)
    ended = time.monotonic() - began
    assert ended < 15, f"the job took {ended:.1f}s to end after qdel"
    assert mom.epilogue(job, 271) == 0
    assert b"never" not in child.stdout.read()
    assert site.record(job.job_id)["exit_status"] == 271
    assert site.leftovers(libvirt_conn, job.job_id) == []
    assert mom.epilogue(job, 271) == 0  # Torque may run it again (a retried epilogue): still nothing
    assert site.leftovers(libvirt_conn, job.job_id) == []


def test_a_vm_that_never_boots_is_torn_down_the_node_offlined_and_the_job_requeued(tiny_image, libvirt_conn):
    site = Site(
        tiny_image,
        cmdline="console=ttyS0 panic=-1 rdinit=/nonexistent",
        timeouts={"prologue": 60, "shutdown": 5},
    )
    mom = PbsMom(str(site.config))
    try:
        site.write_job("job.sh", JOB)
        job = mom.submit(USER, ["-vm", "vcpus=1", "job.sh"], str(site.workdir))
        assert mom.prologue(job) == 2  # requeue: an infrastructure failure, not the user's
        record = site.record(job.job_id)
        assert record["state"] == "requeued" and "did not accept SSH" in record["reason"]
        assert any("Kernel panic" in event["text"] for event in record["events"]), record["events"]
        calls = [json.loads(line) for line in (Path(mom.queue) / "calls.log").read_text().splitlines()]
        offline = [call for call in calls if call[0] == "pbsnodes"]
        assert len(offline) == 1 and offline[0][1:3] == ["-o", "-N"], calls
        assert offline[0][3].startswith("vtorque: ") and "did not accept SSH" in offline[0][3]
        assert site.leftovers(libvirt_conn, job.job_id) == []
        assert mom.epilogue(job, -14) == 0
        assert site.leftovers(libvirt_conn, job.job_id) == []
        assert site.record(job.job_id)["state"] == "requeued"  # the epilogue keeps the story
        assert (site.spool / job.job_id).is_dir()  # -14: the job comes back, and needs its request

        # An admin cleared the node, Torque starts the job here again, and it fails again: no
        # loop (pbs_sched would requeue it forever), the job is aborted with the reason.
        assert mom.prologue(job) == 1
        record = site.record(job.job_id)
        assert record["state"] == "aborted" and "failed to start on" in record["reason"], record
        assert "did not accept SSH" in (site.spool / job.job_id / "vtorque.log").read_text()
        assert mom.epilogue(job, -2) == 0
        assert site.leftovers(libvirt_conn, job.job_id) == [] and not (site.spool / job.job_id).exists()
    finally:
        site.sweep(mom)
        mom.close()
        site.close()


def test_walltime_exceeded_ends_the_job_and_leaves_no_spool_or_state(site, mom, libvirt_conn):
    site.write_job("long.sh", "#!/bin/sh\necho started\nsleep 600\n")
    job = mom.submit(USER, ["-vm", "vcpus=1", "long.sh"], str(site.workdir))
    assert mom.prologue(job) == 0
    child = mom.run_job(job, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert child.stdout.readline() == b"started\n"
    assert mom.walltime_exceeded(job, child) == 0
    record = site.record(job.job_id)
    assert (record["state"], record["exit_status"]) == ("ended", -11)
    assert site.leftovers(libvirt_conn, job.job_id) == []
    assert not (site.spool / job.job_id).exists()  # before: kept for every negative status


def test_a_job_deleted_while_held_runs_no_hook_and_the_sweep_removes_its_spool(tiny_image):
    site = Site(tiny_image, spool_grace_minutes=0)
    mom = PbsMom(str(site.config))
    try:
        site.write_job("job.sh", JOB)
        job = mom.submit(USER, ["-vm", "vcpus=1", "-h", "job.sh"], str(site.workdir))
        mom.delete_queued(job)
        spool = site.spool / job.job_id
        assert (spool / "request.json").exists()  # Torque ran nothing that could remove it
        swept = site.vtorque_sweep(mom)
        assert swept.returncode == 0, swept.stderr
        assert f"removed {spool} (the server will not run its job)" in swept.stdout
        assert not spool.exists()
    finally:
        mom.close()
        site.close()


@pytest.fixture
def playbook_site(tiny_image):
    """A site whose start hook runs job_start.yml for this machine too (runner.start_in_process
    false), and its pbs_mom."""
    site = Site(tiny_image, runner={"start_in_process": False})
    mom = PbsMom(str(site.config))
    yield site, mom
    site.sweep(mom)
    mom.close()
    site.close()


def test_the_runner_killed_mid_start_is_an_infrastructure_failure_with_nothing_left(
    playbook_site, libvirt_conn
):
    site, mom = playbook_site
    site.write_job("job.sh", JOB)
    job = mom.submit(USER, ["-vm", "vcpus=1", "job.sh"], str(site.workdir))
    result = {}
    prologue = threading.Thread(target=lambda: result.setdefault("code", mom.prologue(job)))
    prologue.start()
    killed = None
    deadline = time.monotonic() + 60
    while killed is None and time.monotonic() < deadline:
        found = subprocess.run(
            ["pgrep", "-f", "ansible-playbook.*runner-start"], capture_output=True, text=True
        )
        if found.stdout.split():
            time.sleep(1.0)  # let it get some way into the play
            subprocess.run(["pkill", "-KILL", "-f", "ansible-playbook.*runner-start"], check=False)
            killed = found.stdout.split()
        time.sleep(0.1)
    prologue.join(timeout=180)
    assert killed, "the job_start playbook never ran"
    assert result["code"] == 2, site.record(job.job_id)
    record = site.record(job.job_id)
    assert record["state"] == "requeued" and "starting the VMs failed" in record["reason"]
    assert site.leftovers(libvirt_conn, job.job_id) == []
    assert mom.epilogue(job, -14) == 0
    # Torque runs the requeued job again: its earlier attempt's epilogue must not cancel it.
    assert mom.prologue(job) == 0, site.record(job.job_id)
    child = mom.run_job(job, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    child.communicate(timeout=120)
    assert child.returncode == 3 and site.record(job.job_id)["state"] == "running"
    assert mom.epilogue(job, child.returncode) == 0
    assert site.record(job.job_id)["state"] == "ended" and site.leftovers(libvirt_conn, job.job_id) == []


def test_libvirtd_stopped_mid_prologue_requeues_and_a_sweep_after_its_restart_leaves_nothing(
    site, mom, libvirt_conn
):
    site.write_job("job.sh", JOB)
    job = mom.submit(USER, ["-vm", "vcpus=1", "job.sh"], str(site.workdir))
    prefix = naming.domain_prefix(job.job_id)
    result = {}
    prologue = threading.Thread(target=lambda: result.setdefault("code", mom.prologue(job)))
    try:
        prologue.start()
        deadline = time.monotonic() + 90
        while not any(d.name().startswith(prefix) and d.isActive() for d in libvirt_conn.listAllDomains()):
            assert time.monotonic() < deadline, "the job's VM never started"
            time.sleep(0.2)
        hostnet.stop_libvirtd()  # the guest's QEMU keeps running, as it does when libvirtd dies
        prologue.join(timeout=180)
        assert result["code"] == 2, site.record(job.job_id)  # requeue: not the user's fault
        record = site.record(job.job_id)
        assert record["state"] == "requeued" and "libvirt" in record["reason"], record
        print(f"prologue with libvirtd gone: {record['reason']}")
        calls = [json.loads(line) for line in (Path(mom.queue) / "calls.log").read_text().splitlines()]
        assert [call[:3] for call in calls if call[0] == "pbsnodes"] == [["pbsnodes", "-o", "-N"]]
        assert mom.epilogue(job, -14) == 0  # Torque's epilogue after the failed prologue: never fails
        record = site.record(job.job_id)
        assert record["state"] == "teardown failed" and "libvirt" in record["reason"], record
    finally:
        prologue.join(timeout=180)
        if hostnet.libvirtd_pid() is None:
            hostnet.start_libvirtd()  # the admin brings libvirtd back (systemd would restart it)
    old_record = site.state / "records" / "9.old.json"  # a job that ended long ago
    old_record.write_text("{}")
    os.utime(old_record, (time.time() - 40 * 86400,) * 2)
    swept = site.vtorque_sweep(mom)
    assert swept.returncode == 0, swept.stderr
    assert f"removed domain {prefix}" in swept.stdout, swept.stdout
    assert "removed the record of job 9.old (older than 30 days)" in swept.stdout
    assert not old_record.exists() and site.record(job.job_id)["state"] == "teardown failed"
    assert site.leftovers(libvirt_conn, job.job_id) == []


def test_pinned_vcpus_and_a_data_disk_on_a_ramdisk_the_owner_writes_at_slash_data(site, mom, libvirt_conn):
    site.write_job(
        "data.sh",
        "#!/bin/sh\ntouch /data/mine && ls -ln /data/mine | awk '{print $3}'\n"
        "awk '$2 == \"/data\" {print $3}' /proc/mounts\ndf -m /data | awk 'NR == 2 {print $2}'\n",
    )
    vm = "vcpus=1,disk=64M,vcpu_pinning=true,fs_type=ramdisk"
    job = mom.submit(USER, ["-vm", vm, "data.sh"], str(site.workdir))
    assert mom.prologue(job) == 0, json.dumps(site.record(job.job_id), indent=1)
    (domain,) = [
        d for d in libvirt_conn.listAllDomains() if d.name().startswith(naming.domain_prefix(job.job_id))
    ]
    xml, pinned = domain.XMLDesc(), domain.vcpuPinInfo(0)[0]
    ram = Path(naming.job_dir(job.job_id, str(site.state))) / "ram"
    mounts = Path("/proc/mounts").read_text().splitlines()
    child = mom.run_job(job, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = child.communicate(timeout=120)
    assert mom.epilogue(job, child.returncode) == 0

    assert "<vcpupin vcpu='0' cpuset='1'/>" in xml  # host_reserve.cores 1 keeps core 0 for the host
    assert pinned == tuple(core == 1 for core in range(os.cpu_count()))
    assert xml.count("<disk type='file' device='disk'>") == 3  # overlay, data disk, seed
    assert f"vtorque-ramdisk {ram} tmpfs rw" in "\n".join(mounts)  # fs_type=ramdisk: the disks live in RAM
    assert f"<source file='{ram}/{domain.name()}.qcow2'" in xml and f"{ram}/{domain.name()}-data.qcow2" in xml
    assert str(ram) not in Path("/proc/mounts").read_text()  # unmounted with the job
    owner, fstype, size = out.decode().split()
    assert (child.returncode, owner, fstype) == (0, "4500", "ext4"), (out, err)
    assert 50 <= int(size) <= 64
    assert site.leftovers(libvirt_conn, job.job_id) == []
