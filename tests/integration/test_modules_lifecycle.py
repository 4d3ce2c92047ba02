"""The modules against real libvirtd + QEMU (TCG), run as Ansible runs them (ansible-runner).

A guest without an OS (SeaBIOS, no boot device) never answers ACPI, which makes the timeout
and sweep cases cheap; the tiny test guest proves running/shutdown/absent with a real OS.
"""

import os
import subprocess
import sys
import time
import uuid

import ansible_runner
import libvirt
import pytest
import yaml
from ansible_collections.mikelangelo.vtorque.plugins.module_utils import naming
from vtguest import free_port

URI = "qemu:///system"


@pytest.fixture
def job(tmp_path, cleanup):
    """A unique job id (domains named vt-vtmod<n>...) and its own state dir, removed afterwards."""
    job_id = f"vtmod{uuid.uuid4().int % 10**8}"
    state_dir = tmp_path / "state"
    (state_dir / "jobs" / naming.sanitise_job_id(job_id)).mkdir(parents=True)
    for index in range(2):
        cleanup.domain(naming.domain_name(job_id, "node1", index))
    cleanup.path(str(state_dir))
    return dict(
        id=job_id,
        node="node1",
        state_dir=str(state_dir),
        dir=naming.job_dir(job_id, str(state_dir)),
    )


def playbook(tmp_path, tasks, name="play"):
    """Run tasks on localhost with ansible-runner; returns (status, {task name: event_data})."""
    project = tmp_path / ("runner-" + name)
    (project / "project").mkdir(parents=True)
    (project / "project" / "play.yml").write_text(
        yaml.safe_dump([{"hosts": "localhost", "gather_facts": False, "tasks": tasks}])
    )
    run = ansible_runner.run(
        private_data_dir=str(project),
        playbook="play.yml",
        quiet=True,
        inventory=f"localhost ansible_connection=local ansible_python_interpreter={sys.executable}",
    )
    events = {
        e["event_data"]["task"]: e["event_data"]
        for e in run.events
        if e["event"] in ("runner_on_ok", "runner_on_failed")
    }
    return run.status, events


def domain_task(job, index, state, **options):
    args = dict(
        uri=URI,
        name=naming.domain_name(job["id"], job["node"], index),
        state=state,
        **options,
    )
    if state in ("present", "running"):
        args.update(
            job=dict(id=job["id"], node=job["node"], index=index),
            virt_type="qemu",
            memory_mib=128,
            guest_agent=False,
            serial_log=os.path.join(job["dir"], f"serial-{index}.log"),
        )
    return {"name": f"{state} {index}", "mikelangelo.vtorque.vm_domain": args}


def state_of(conn, name):
    try:
        return conn.lookupByName(name).state()[0]
    except libvirt.libvirtError:
        return None


def test_present_trio_on_real_libvirt_with_every_typed_option(tmp_path, libvirt_conn, job):
    shmem = "<shmem name='vtmod-ivshmem'><model type='ivshmem-plain'/><size unit='M'>4</size></shmem>"
    options = dict(
        vcpus=2,
        cpu_pinning=[{"vcpu": 0, "cpuset": "0"}, {"vcpu": 1, "cpuset": "1"}],
        disks=[{"path": os.path.join(job["dir"], "vm.qcow2"), "cache": "unsafe"}],
        seed=os.path.join(job["dir"], "seed.iso"),
        nics=[{"mode": "user", "host_port": free_port(), "guest_address": "10.0.2.41"}],
        boot={
            "kernel": "/nonexistent/vmlinux",
            "initrd": "/nonexistent/initrd.img",
            "cmdline": "console=ttyS0",
        },
        extra_devices=[shmem],
        addresses=["10.0.2.41"],
    )
    task = domain_task(job, 0, "present", **options)
    tasks = [
        dict(task, name="check", check_mode=True),
        dict(task, name="define"),
        dict(task, name="again"),
    ]
    status, events = playbook(tmp_path, tasks, "present")
    assert status == "successful"
    assert [events[t]["res"]["changed"] for t in ("check", "define", "again")] == [
        True,
        True,
        False,
    ]
    xml = libvirt_conn.lookupByName(task["mikelangelo.vtorque.vm_domain"]["name"]).XMLDesc(0)
    assert "hostfwd=tcp:127.0.0.1:" in xml and "<shmem name='vtmod-ivshmem'>" in xml
    assert events["again"]["res"]["macs"] == [naming.domain_mac(job["id"], job["node"], 0)]
    status, events = playbook(tmp_path, [domain_task(job, 0, "absent")], "absent")
    assert status == "successful" and events["absent 0"]["res"]["changed"]


def test_shutdown_fails_at_timeout_with_a_clear_message_then_force_destroys(tmp_path, libvirt_conn, job):
    name = naming.domain_name(job["id"], job["node"], 0)
    status, events = playbook(tmp_path, [domain_task(job, 0, "running")], "start")
    assert status == "successful" and events["running 0"]["res"]["state"] == "running"
    status, events = playbook(tmp_path, [domain_task(job, 0, "shutdown", wait_timeout=3)], "soft")
    res = events["shutdown 0"]["res"]
    assert status == "failed" and res["reason"] == "timeout" and res["target"] == name
    assert "still runs 3 s after the acpi shutdown request; set force: true" in res["msg"]
    assert state_of(libvirt_conn, name) == libvirt.VIR_DOMAIN_RUNNING
    status, events = playbook(
        tmp_path, [domain_task(job, 0, "shutdown", wait_timeout=2, force=True)], "force"
    )
    assert status == "successful" and events["shutdown 0"]["res"]["forced"] is True
    assert state_of(libvirt_conn, name) == libvirt.VIR_DOMAIN_SHUTOFF
    playbook(tmp_path, [domain_task(job, 0, "absent", wait_timeout=0)], "absent")
    assert state_of(libvirt_conn, name) is None


def test_sweep_removes_a_crashed_jobs_domains_and_files(tmp_path, libvirt_conn, job):
    disk = os.path.join(job["dir"], "data.qcow2")
    seed = os.path.join(job["dir"], "seed.iso")
    tasks = [
        {"name": "disk", "mikelangelo.vtorque.vm_disk": {"path": disk, "size": "8M"}},
        {
            "name": "seed",
            "mikelangelo.vtorque.vm_seed": {
                "path": seed,
                "meta_data": {"instance-id": "i"},
            },
        },
        domain_task(job, 0, "running", disks=[{"path": disk}], seed=seed),
        domain_task(job, 1, "present"),
    ]
    status, _ = playbook(tmp_path, tasks, "crash")
    assert status == "successful"
    names = sorted(naming.domain_name(job["id"], job["node"], i) for i in range(2))
    sweep = {
        "name": "sweep",
        "mikelangelo.vtorque.vm_sweep": {
            "uri": URI,
            "job_id": job["id"],
            "state_dir": job["state_dir"],
        },
    }
    status, events = playbook(tmp_path, [sweep, dict(sweep, name="again")], "sweep")
    assert status == "successful"
    assert events["sweep"]["res"]["domains"] == names and events["sweep"]["res"]["changed"]
    assert events["again"]["res"]["changed"] is False
    assert all(state_of(libvirt_conn, n) is None for n in names)
    assert not os.path.exists(job["dir"])


def serial_size(path):
    return os.path.getsize(path) if os.path.exists(path) else 0


def wait_for_marker(path, marker, timeout, offset=0):
    """True once ``marker`` appears in the serial log after byte ``offset`` (the log may be appended to)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if os.path.exists(path):
            with open(path, "rb") as handle:
                data = handle.read()
            if marker in data[offset:] or (len(data) < offset and marker in data):
                return True
        time.sleep(0.2)
    return False


def host_key(tmp_path):
    key = tmp_path / "host_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    return {"ed25519_private": key.read_text(), "ed25519_public": (tmp_path / "host_ed25519.pub").read_text()}


def kernel_cmdline(image):
    value = str(image.cmdline)
    if os.path.isfile(value):
        with open(value) as handle:
            return handle.read().strip()
    return value


def test_tiny_guest_running_shutdown_absent(tmp_path, libvirt_conn, tiny_image, job):
    name = naming.domain_name(job["id"], job["node"], 0)
    identity = naming.vm_identity(job["id"], job["node"], 0, job["state_dir"])
    seed_task = {
        "name": "seed",
        "mikelangelo.vtorque.vm_seed": {
            "path": identity.seed_path,
            "meta_data": {"instance-id": identity.uuid, "local-hostname": "vm0"},
            "user_data": {"ssh_deletekeys": True, "ssh_keys": host_key(tmp_path)},
            "network_config": {
                "version": 2,
                "ethernets": {
                    "eth0": {
                        "match": {"macaddress": identity.mac},
                        "addresses": ["10.0.2.41/24"],
                        "gateway4": "10.0.2.2",
                    }
                },
            },
        },
    }
    disk_task = {
        "name": "disk",
        "mikelangelo.vtorque.vm_disk": {"path": identity.overlay_path, "backing_file": str(tiny_image.disk)},
    }
    start = domain_task(
        job,
        0,
        "running",
        wait_timeout=60,
        disks=[{"path": identity.overlay_path}],
        seed=identity.seed_path,
        nics=[{"mode": "user", "host_port": free_port(), "guest_address": "10.0.2.41"}],
        boot={
            "kernel": str(tiny_image.kernel),
            "initrd": str(tiny_image.initrd),
            "cmdline": kernel_cmdline(tiny_image),
        },
    )
    start["mikelangelo.vtorque.vm_domain"].update(guest_agent=True, serial_log=identity.serial_log_path)
    status, events = playbook(tmp_path, [disk_task, seed_task, start], "start")
    assert status == "successful", {k: v["res"].get("msg") for k, v in events.items()}
    assert state_of(libvirt_conn, name) == libvirt.VIR_DOMAIN_RUNNING, (
        "running returned before the domain ran"
    )
    running_s = events["running 0"]["duration"]
    assert wait_for_marker(identity.serial_log_path, b"VTORQUE-GUEST-READY", 90)

    status, events = playbook(tmp_path, [domain_task(job, 0, "shutdown", wait_timeout=60)], "stop")
    assert status == "successful" and events["shutdown 0"]["res"]["forced"] is False
    assert state_of(libvirt_conn, name) == libvirt.VIR_DOMAIN_SHUTOFF, (
        "shutdown returned before the guest was off"
    )
    shutdown_s = events["shutdown 0"]["duration"]

    offset = serial_size(identity.serial_log_path)
    status, events = playbook(tmp_path, [start], "restart")
    assert status == "successful" and events["running 0"]["res"]["changed"] is True
    assert wait_for_marker(identity.serial_log_path, b"VTORQUE-GUEST-READY", 90, offset)
    teardown = [
        domain_task(job, 0, "absent", wait_timeout=60),
        {
            "name": "rm disk",
            "mikelangelo.vtorque.vm_disk": {"path": identity.overlay_path, "state": "absent"},
        },
        {"name": "rm seed", "mikelangelo.vtorque.vm_seed": {"path": identity.seed_path, "state": "absent"}},
    ]
    status, events = playbook(tmp_path, teardown, "absent")
    assert status == "successful" and events["absent 0"]["res"]["forced"] is False
    absent_s = events["absent 0"]["duration"]
    assert state_of(libvirt_conn, name) is None
    assert not os.path.exists(identity.overlay_path) and not os.path.exists(identity.seed_path)
    print(f"tiny guest: running {running_s:.2f} s, shutdown {shutdown_s:.2f} s, absent {absent_s:.2f} s")
