"""Device features of vm_domain on real libvirtd + QEMU (TCG): dedicated I/O cores (I/O threads and
the emulator pinned apart from the vCPUs), huge pages refused where the node has none, and an
ivshmem region that a job's VMs on one node share and another job's VM does not."""

import json
import os
import re
import subprocess
import uuid

import libvirt
import libvirt_qemu
import pytest
from ansible_collections.mikelangelo.vtorque.plugins.module_utils import hugepages, naming
from ansible_collections.mikelangelo.vtorque.plugins.module_utils.sweep import sweep_jobs
from test_modules_lifecycle import URI, domain_task, host_key, job, kernel_cmdline, playbook  # noqa: F401
from vtguest import Guest, free_port

IVSHMEM = ("0x1af4", "0x1110")  # vendor, device of QEMU's ivshmem


def affinity(tid):
    with open(f"/proc/{tid}/status") as handle:
        return re.search(r"Cpus_allowed_list:\s*(\S+)", handle.read()).group(1)


def qmp(dom, command):
    return json.loads(libvirt_qemu.qemuMonitorCommand(dom, json.dumps({"execute": command}), 0))["return"]


@pytest.mark.skipif(os.cpu_count() < 2, reason="needs two host cores: one for the vCPU, one for I/O")
def test_io_threads_and_the_emulator_run_on_the_io_core_and_the_vcpu_apart(tmp_path, libvirt_conn, job):  # noqa: F811
    disk = os.path.join(job["dir"], "data.qcow2")
    start = domain_task(
        job,
        0,
        "running",
        disks=[{"path": disk}],
        cpu_pinning=[{"vcpu": 0, "cpuset": "0"}],
        iothreads={"count": 1, "cpuset": "1"},
        emulator_cpuset="1",
    )
    tasks = [{"name": "disk", "mikelangelo.vtorque.vm_disk": {"path": disk, "size": "8M"}}, start]
    status, events = playbook(tmp_path, tasks, "iocm")
    assert status == "successful", {k: v["res"].get("msg") for k, v in events.items()}
    dom = libvirt_conn.lookupByName(start["mikelangelo.vtorque.vm_domain"]["name"])
    info = subprocess.run(
        ["virsh", "-c", URI, "iothreadinfo", dom.name()], capture_output=True, text=True, check=True
    ).stdout
    assert re.search(r"^\s*1\s+1\s*$", info, re.M), info  # IOThread 1, CPU affinity 1
    assert "iothread='1'" in dom.XMLDesc(0)
    (iothread,) = qmp(dom, "query-iothreads")
    vcpu = qmp(dom, "query-cpus-fast")[0]
    pid = int(open(f"/run/libvirt/qemu/{dom.name()}.pid").read())
    assert affinity(iothread["thread-id"]) == "1", "the I/O thread runs on the I/O core"
    assert affinity(pid) == "1", "QEMU's emulator (main) thread runs on the I/O core"
    assert affinity(vcpu["thread-id"]) == "0", "the vCPU keeps its own core"
    status, _ = playbook(tmp_path, [domain_task(job, 0, "absent", wait_timeout=0)], "absent")
    assert status == "successful"


@pytest.mark.skipif(
    any(free >= 128 * 1024 for free in hugepages.free_kib().values()), reason="this host has huge pages free"
)
def test_a_start_with_hugepages_is_refused_where_the_node_has_none(tmp_path, libvirt_conn, job):  # noqa: F811
    start = domain_task(job, 0, "running", hugepages=True)
    status, events = playbook(tmp_path, [start], "hugepages")
    res = events["running 0"]["res"]
    assert status == "failed" and res["reason"] == "unavailable", res
    assert "asks for huge pages but this node has none configured (/sys/kernel/mm/hugepages" in res["msg"]
    with pytest.raises(libvirt.libvirtError):
        libvirt_conn.lookupByName(start["mikelangelo.vtorque.vm_domain"]["name"])  # nothing was defined


def tiny_vm(tmp_path, job, index, tiny_image, region):  # noqa: F811
    """Tasks booting tiny guest `index` of `job` with the shared memory region `region`."""
    identity = naming.vm_identity(job["id"], job["node"], index, job["state_dir"])
    (tmp_path / str(index)).mkdir()
    seed = {
        "name": f"seed {index}",
        "mikelangelo.vtorque.vm_seed": {
            "path": identity.seed_path,
            "meta_data": {"instance-id": identity.uuid, "local-hostname": f"vm{index}"},
            "user_data": {"ssh_deletekeys": True, "ssh_keys": host_key(tmp_path / str(index))},
        },
    }
    disk = {
        "name": f"disk {index}",
        "mikelangelo.vtorque.vm_disk": {"path": identity.overlay_path, "backing_file": str(tiny_image.disk)},
    }
    start = domain_task(
        job,
        index,
        "running",
        wait_timeout=60,
        disks=[{"path": identity.overlay_path}],
        seed=identity.seed_path,
        nics=[{"mode": "user", "host_port": free_port(), "guest_address": "10.0.2.15"}],
        boot={
            "kernel": str(tiny_image.kernel),
            "initrd": str(tiny_image.initrd),
            "cmdline": kernel_cmdline(tiny_image),
        },
        shmem=[{"name": region, "size_mib": 1}],
    )
    start["mikelangelo.vtorque.vm_domain"].update(guest_agent=True, serial_log=identity.serial_log_path)
    return [disk, seed, start], identity


BAR2 = (
    "for d in /sys/bus/pci/devices/*; do"
    f' [ "$(cat $d/vendor)" = {IVSHMEM[0]} ] && [ "$(cat $d/device)" = {IVSHMEM[1]} ] || continue;'
    " echo 1 > $d/enable; sed -n 3p $d/resource | cut -d' ' -f1; done"
)


def in_guest(guest, script):
    code, out, err = guest.agent_exec("/bin/sh", "-c", script)
    assert code == 0, (script, out, err)
    return out.strip()


def test_a_jobs_vms_on_a_node_share_its_region_and_another_job_has_its_own(
    tmp_path,
    libvirt_conn,
    cleanup,
    tiny_image,
    job,  # noqa: F811
):
    other = dict(job, id=f"vtmod{uuid.uuid4().int % 10**8}")
    cleanup.domain(naming.domain_name(other["id"], other["node"], 0))
    os.makedirs(naming.job_dir(other["id"], job["state_dir"]))
    ours, theirs = naming.shmem_name(job["id"]), naming.shmem_name(other["id"])
    for region in (ours, theirs):
        cleanup.path(os.path.join(naming.SHM_DIR, region))
    tasks, identities = [], []
    for index in range(2):
        more, identity = tiny_vm(tmp_path, job, index, tiny_image, ours)
        tasks += more
        identities.append(identity)
    # the other job's VM needs no OS: its region is another file, which is what keeps them apart
    tasks.append(domain_task(other, 0, "running", shmem=[{"name": theirs, "size_mib": 1}]))
    status, events = playbook(tmp_path, tasks, "unclot")
    assert status == "successful", {k: v["res"].get("msg") for k, v in events.items()}
    guests = [Guest(libvirt_conn.lookupByName(i.name), i.serial_log_path) for i in identities]
    for guest in guests:
        guest.wait_for("VTORQUE-GUEST-READY", 120)
    bars = [in_guest(guest, BAR2) for guest in guests]
    assert all(re.fullmatch(r"0x[0-9a-f]+", bar) for bar in bars), bars
    in_guest(guests[0], f"devmem {bars[0]} 32 0x564d4b31")  # the first VM writes a marker ...
    assert in_guest(guests[1], f"devmem {bars[1]} 32") == "0x564D4B31"  # ... the second reads it
    with open(os.path.join(naming.SHM_DIR, ours), "rb") as handle:
        assert handle.read(4) == bytes.fromhex("314b4d56"), "the region is /dev/shm/<job's name> on the host"
    with open(os.path.join(naming.SHM_DIR, theirs), "rb") as handle:
        assert handle.read(4) == bytes(4), "another job's region never sees it"
    for owner in (job, other):
        swept = sweep_jobs(uri=URI, state_dir=job["state_dir"], job_id=owner["id"])
        assert swept["shared_memory"] == [os.path.join(naming.SHM_DIR, naming.shmem_name(owner["id"]))]
    assert not os.path.exists(os.path.join(naming.SHM_DIR, ours))
    assert not os.path.exists(os.path.join(naming.SHM_DIR, theirs))


def test_a_job_with_io_cores_and_a_shared_region_through_the_hooks(tiny_image, libvirt_conn):
    from lifecycle_site import USER, Site
    from vtorque.scheduler.torque.emulator.pbs_mom import PbsMom

    site = Site(tiny_image, policy={"iocm": True, "unclot": True}, host_reserve={"cores": 0})
    mom = PbsMom(str(site.config))
    try:
        site.write_job("dev.sh", "#!/bin/sh\ngrep -l 0x1110 /sys/bus/pci/devices/*/device | wc -l\n")
        vm = "vcpus=1,iocm=true,iocm_min_cores=1,iocm_max_cores=1,unclot=true,unclot_shmem=1M"
        job = mom.submit(USER, ["-vm", vm, "dev.sh"], str(site.workdir))
        assert mom.prologue(job) == 0, json.dumps(site.record(job.job_id), indent=1)
        (domain,) = [
            d for d in libvirt_conn.listAllDomains() if d.name().startswith(naming.domain_prefix(job.job_id))
        ]
        xml = domain.XMLDesc()
        region = os.path.join(naming.SHM_DIR, naming.shmem_name(job.job_id))
        had_region = os.path.exists(region)
        child = mom.run_job(job, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        out, err = child.communicate(timeout=120)
        assert mom.epilogue(job, child.returncode) == 0
        # host_reserve.cores 0: the vCPU on core 0, the I/O core after it is core 1
        for piece in (
            "<iothreads>1</iothreads>",
            "<vcpupin vcpu='0' cpuset='0'/>",
            "<emulatorpin cpuset='1'/>",
            "<iothreadpin iothread='1' cpuset='1'/>",
            f"<shmem name='{naming.shmem_name(job.job_id)}'>",
        ):
            assert piece in xml, piece
        assert (child.returncode, out.decode().strip()) == (0, "1"), (out, err)  # the guest sees the region
        assert had_region and not os.path.exists(region), "the epilogue removes /dev/shm/<region>"
        assert site.leftovers(libvirt_conn, job.job_id) == []
    finally:
        site.sweep(mom)
        mom.close()
        site.close()
