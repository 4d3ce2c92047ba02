"""Figures with real guests (tiny test guest, TCG): provisioning and teardown through the
hooks against starting the same guests directly with libvirt-python, and a job's run time
inside the VM against the same commands on the host."""

import contextlib
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import libvirt
from timing import comparison, summary

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "integration"))
from lifecycle_site import USER, Site  # noqa: E402
from vtguest import Guest, GuestImage, domain_xml, free_port, ssh_keypair, wait_ssh  # noqa: E402
from vtorque.scheduler.torque.emulator.pbs_mom import PbsMom  # noqa: E402

VM_COUNTS = (1, 2, 4)
LIBVIRT_NETWORK = "default"
LIBVIRT_SITE_NETWORK = {
    "libvirt_network": LIBVIRT_NETWORK,
    "cidr": "192.168.122.0/24",
    "gateway": "192.168.122.1",
    "ranges": {socket.gethostname(): "192.168.122.200-192.168.122.219"},
}
WORK = """#!/bin/sh
cd "$PBS_O_WORKDIR"
time busybox sh -c 'i=0; while [ $i -lt 300000 ]; do i=$((i+1)); done'
time sh -c 'dd if=/dev/zero of=io.bin bs=1M count=64 conv=fsync 2>/dev/null; rm -f io.bin'
"""


def tiny_image():
    done = subprocess.run(
        [str(ROOT / "tools" / "build-test-images.sh"), "tiny"], capture_output=True, text=True, check=True
    )
    return GuestImage(Path(done.stdout.strip().splitlines()[-1]))


def provisioning(workdir, repeat):
    """Prologue start → every guest SSH-ready, and epilogue start → nothing left, for 1, 2, 4
    VMs on this node; floor: the same guests created with libvirt-python and waited for the
    same way (SSH with the pinned host key)."""
    image = tiny_image()
    results = []
    with _libvirt_network_up(any(count > 1 for count in VM_COUNTS)):
        for count in VM_COUNTS:
            results += _provisioning(image, count, workdir, repeat)
    return results


def _provisioning(image, count, workdir, repeat):
    """Both figures for `count` VMs; each prologue run is followed by its floor (side by side)."""
    prologue, epilogue, playbook, ssh_ready, boot_floor, teardown_floor = [], [], [], [], [], []
    # One pair first, not counted: the first prologue after a while reads the hook's Python
    # modules and the image from disk, while the floor runs in this process, long warm.
    warm_up = (_one_job(image, count)["phases"]["prologue"], _direct_boot(image, count, workdir)[0])
    for _ in range(repeat):
        record = _one_job(image, count)
        prologue.append(record["phases"]["prologue"])
        epilogue.append(record["phases"]["epilogue"])
        playbook.append(record["phases"]["job_start_playbook"])
        ssh_ready.append(record["phases"]["guests_ssh_ready"])
        boot, teardown = _direct_boot(image, count, workdir)
        boot_floor.append(boot)
        teardown_floor.append(teardown)
    result = comparison(f"provisioning: {count} VM(s), prologue vs direct libvirt", prologue, boot_floor)
    result["split"] = {
        "job_start_playbook": summary(playbook),
        "ssh_ready_after_playbook": summary(ssh_ready),
    }
    teardown = comparison(f"teardown: {count} VM(s), epilogue vs direct destroy", epilogue, teardown_floor)
    for figure, mine, floor in ((result, prologue, boot_floor), (teardown, epilogue, teardown_floor)):
        # each run is followed by its floor: the pairs show what the machine's load did to both
        figure["per_pair_overhead_s"] = [round(m - f, 3) for m, f in zip(mine, floor, strict=True)]
    result["warm_up_not_counted"] = {"prologue": round(warm_up[0], 2), "floor": round(warm_up[1], 2)}
    return [result, teardown]


@contextlib.contextmanager
def _libvirt_network_up(wanted):
    """libvirt's `default` NAT network active for the block (started and stopped here if it was
    not): several VMs of a job need a network they share (user mode gives a job one VM)."""
    conn = libvirt.open("qemu:///system")
    network = conn.networkLookupByName(LIBVIRT_NETWORK) if wanted else None
    started = network is not None and not network.isActive()
    try:
        if started:
            network.create()
        yield
    finally:
        if started:
            network.destroy()
        conn.close()


def _one_job(image, count):
    # One VM: QEMU's user-mode network, as the floor; several: libvirt's NAT network, which user
    # mode refuses (every guest is 10.0.2.15 behind its own NAT).
    network = {} if count == 1 else {"network": {"mode": "libvirt", **LIBVIRT_SITE_NETWORK}}
    site = Site(image, limits={"max_vms_per_node": 8}, **network)
    mom = PbsMom(str(site.config))
    try:
        site.write_job("job.sh", "#!/bin/sh\ntrue\n")
        job = mom.submit(USER, ["-vm", f"vcpus=1,ram=256M,vms_per_node={count}", "job.sh"], str(site.workdir))
        if mom.prologue(job) != 0:
            raise RuntimeError(f"prologue failed: {site.record(job.job_id)}")
        mom.epilogue(job, 0)
        return site.record(job.job_id)
    finally:
        site.sweep(mom)
        mom.close()
        site.close()


def _direct_boot(image, count, workdir):
    """(seconds from the first overlay to the last guest accepting SSH, seconds to destroy
    them and remove their files): the floor, with no hooks, plan or Ansible."""
    from ansible_collections.mikelangelo.vtorque.plugins.module_utils.seed import (
        render_seed_files,
        write_seed_image,
    )

    conn = libvirt.open("qemu:///system")
    directory = Path(workdir) / f"direct-{time.time_ns()}"
    directory.mkdir()
    key, public = ssh_keypair(directory / "client")
    guests, ports = [], []
    try:
        prepared = []
        for index in range(count):
            host_key, host_public = ssh_keypair(directory / f"host{index}")
            user_data = {
                "users": [{"name": "bench", "uid": 4600, "ssh_authorized_keys": [public]}],
                "ssh_keys": {"ed25519_private": host_key.read_text(), "ed25519_public": host_public},
            }
            network = {
                "version": 2,
                "ethernets": {
                    "eth0": {
                        "match": {"macaddress": "52:54:00:00:00:01"},
                        "addresses": ["10.0.2.15/24"],
                        "gateway4": "10.0.2.2",
                    }
                },
            }
            seed = directory / f"seed{index}.iso"
            write_seed_image(
                render_seed_files(
                    {"instance-id": f"b{index}", "local-hostname": f"b{index}"}, user_data, network
                ),
                str(seed),
            )
            overlay = directory / f"overlay{index}.qcow2"
            port = free_port()
            (directory / f"known{index}").write_text(f"[127.0.0.1]:{port} {host_public}\n")
            prepared.append((index, seed, overlay, port))
        start = time.monotonic()
        for index, seed, overlay, port in prepared:
            subprocess.run(
                [
                    "qemu-img",
                    "create",
                    "-q",
                    "-f",
                    "qcow2",
                    "-F",
                    "qcow2",
                    "-b",
                    str(image.disk),
                    str(overlay),
                ],
                check=True,
            )
            xml = domain_xml(
                f"vtt-bench-{time.time_ns()}",
                image,
                serial_log=directory / f"serial{index}.log",
                disks=[(overlay, "qcow2", False), (seed, "raw", True)],
                ssh_port=port,
            )
            guests.append(Guest(conn.createXML(xml, 0), directory / f"serial{index}.log", port))
            ports.append((port, directory / f"known{index}"))
        for port, known in ports:
            # as the prologue waits for the same job: with a look for the version line, unless
            # its VMs are behind a user-mode port forward (1 VM; several get a libvirt network)
            wait_ssh(port, "bench", key, known, timeout=180, look=count > 1)
        booted = time.monotonic() - start
        start = time.monotonic()
        _destroy(guests)
        for _, seed, overlay, _ in prepared:
            seed.unlink()
            overlay.unlink()
        return booted, time.monotonic() - start
    finally:
        _destroy(guests)
        conn.close()
        subprocess.run(["rm", "-rf", str(directory)], check=False)


def _destroy(guests):
    for guest in guests:
        try:
            guest.dom.destroy()
        except libvirt.libvirtError:
            pass  # already gone


def job_run(workdir, repeat):
    """A CPU-bound loop and a 64 MiB fsync'd write inside the VM (TCG!) against the same on the host."""
    image = tiny_image()
    inside_cpu, inside_io, host_cpu, host_io = [], [], [], []
    for _ in range(repeat):
        site = Site(image)
        mom = PbsMom(str(site.config))
        try:
            site.write_job("work.sh", WORK)
            job = mom.submit(USER, ["-vm", "vcpus=1,ram=256M", "work.sh"], str(site.workdir))
            assert mom.prologue(job) == 0
            child = mom.run_job(job, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            _, err = child.communicate(timeout=600)
            mom.epilogue(job, child.returncode)
            cpu, io = _times(err.decode())
            inside_cpu.append(cpu)
            inside_io.append(io)
            host = subprocess.run(
                ["busybox", "sh", "-c", WORK.replace('cd "$PBS_O_WORKDIR"', f"cd {workdir}")],
                capture_output=True,
                text=True,
                check=True,
            )
            cpu, io = _times(host.stderr)
            host_cpu.append(cpu)
            host_io.append(io)
        finally:
            site.sweep(mom)
            mom.close()
            site.close()
    note = "TCG emulation here: no KVM on this machine, so the CPU ratio is emulation cost, not vTorque's"
    return [
        comparison("job run: CPU-bound loop, VM vs host", inside_cpu, host_cpu, note),
        comparison(
            "job run: 64 MiB fsync'd write to the work dir (9p), VM vs host", inside_io, host_io, note
        ),
    ]


def _times(text):
    """The two `real` times busybox `time` printed ("real\\t0m 1.23s")."""
    found = [int(m) * 60 + float(s) for m, s in re.findall(r"real\s+(\d+)m\s*([\d.]+)s", text)]
    if len(found) != 2:
        raise RuntimeError(f"expected two timings, got: {text!r}")
    return found
