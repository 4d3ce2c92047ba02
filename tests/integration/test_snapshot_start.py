"""Snapshot starts (catalog `start: snapshot`) on real libvirtd + QEMU (TCG) with the tiny guest:
VMs restored from one saved template each get their own identity, are unreachable until it is
new, a changed image gets a new template, a failed restore boots afresh, and a teardown leaves
nothing behind (module_utils/snapshot.py)."""

import json
import os
import shutil
import socket
import subprocess
import time

import pytest
import yaml
from ansible_collections.mikelangelo.vtorque.plugins.module_utils import naming, snapshot
from ansible_collections.mikelangelo.vtorque.plugins.module_utils.seed import ensure_seed
from ansible_collections.mikelangelo.vtorque.plugins.plugin_utils.domain_render import (
    domain_params,
    render_domain_xml,
)
from lifecycle_site import USER as SITE_USER
from snapshot_job import NODE, UID, URI, SnapshotJob, run_qemu_img
from vtguest import Guest


@pytest.fixture
def catalog_disk(tmp_path, tiny_image):
    """The tiny guest's disk as a catalog image of this test's own (so a test may change it)."""
    disk = tmp_path / "catalog" / "tiny.qcow2"
    disk.parent.mkdir()
    shutil.copy(tiny_image.disk, disk)
    return disk


@pytest.fixture
def snapshot_dir(tmp_path, libvirt_conn):
    directory = tmp_path / "snapshots"
    yield directory
    left = [d.name() for d in libvirt_conn.listAllDomains() if d.name().startswith(snapshot.TEMPLATE_PREFIX)]
    for name in left:
        libvirt_conn.lookupByName(name).destroy()
    assert not left, f"template domains left running: {left}"


def domains_of(conn, job):
    return [d.name() for d in conn.listAllDomains() if d.name().startswith(naming.domain_prefix(job.id))]


def nothing_left(conn, job):
    assert domains_of(conn, job) == []
    assert not os.path.exists(job.dir), os.listdir(job.dir)
    assert not [p for p in os.listdir(os.path.dirname(job.dir)) if job.id in p]


def test_two_vms_from_one_snapshot_each_get_their_own_identity(
    tmp_path, libvirt_conn, tiny_image, catalog_disk, snapshot_dir
):
    job = SnapshotJob(tmp_path, tiny_image, catalog_disk, snapshot_dir, vms=2)
    try:
        result = job.start()
        assert [vm["start"] for vm in result["vms"]] == ["snapshot", "snapshot"], result
        (template,) = result["templates"]
        assert template["built"] and template["seconds"] > 0
        state = os.path.join(template["dir"], "state")
        assert os.stat(state).st_mode & 0o777 == 0o600
        assert os.stat(snapshot_dir).st_mode & 0o777 == 0o700
        seen = {}
        for vm in job.vms:
            name = vm["name"]
            job.wait_ssh(tmp_path, name)  # strict host key checking against the key vTorque pinned
            seen[name] = dict(
                hostname=job.ssh(tmp_path, name, "hostname"),
                machine_id=job.ssh(tmp_path, name, "cat /etc/machine-id"),
                mac=job.ssh(tmp_path, name, "cat /sys/class/net/eth0/address"),
                address=job.ssh(tmp_path, name, "ip -4 -o addr show eth0 | awk '{print $4}'"),
                user=job.ssh(tmp_path, name, "id -u"),
                random=job.ssh(tmp_path, name, "head -c 16 /dev/urandom | od -An -tx1"),
            )
            assert seen[name]["mac"] == naming.domain_mac(job.id, NODE, int(name[-1]))
            assert seen[name]["user"] == str(UID)
            assert seen[name]["address"] == "10.0.2.15/24"
            dom = libvirt_conn.lookupByName(name)
            assert dom.isPersistent() and dom.UUIDString() == naming.domain_uuid(job.id, NODE, int(name[-1]))
        first, second = seen.values()
        for key in ("hostname", "machine_id", "mac", "random"):
            assert first[key] != second[key], (key, seen)
        assert {v["hostname"] for v in seen.values()} == {"snap-vm0", "snap-vm1"}
        # Each answered SSH with the host key pinned for it (strict checking), and those differ:
        # no two VMs of the template present the same host key.
        assert len({tuple(job.host_keys[vm["name"]]) for vm in job.vms}) == 2
        # A second run changes nothing and starts nothing again.
        again = job.start()
        assert not again["changed"] and [vm["state"] for vm in again["vms"]] == ["running", "running"]
    finally:
        removed = job.teardown()
    assert sorted(removed["domains"]) == sorted(vm["name"] for vm in job.vms)
    nothing_left(libvirt_conn, job)
    assert sorted(os.listdir(template["dir"])) == ["console.log", "state", "template.json"]


def banner(port, timeout=2.0):
    """What a TCP connection to the VM's forwarded SSH port reads within `timeout` (b"" if nothing)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.settimeout(timeout)
        try:
            return sock.recv(64)
        except (TimeoutError, ConnectionError):
            return b""


def test_a_restored_vm_is_unreachable_until_it_is_reidentified(
    tmp_path, libvirt_conn, tiny_image, catalog_disk, snapshot_dir
):
    job = SnapshotJob(tmp_path, tiny_image, catalog_disk, snapshot_dir)
    (vm,), (seed,) = job.vms, job.seeds
    name = vm["name"]
    try:
        os.makedirs(job.dir)
        run_qemu_img(["create", "-q", "-f", "qcow2", "-b", str(catalog_disk), "-F", "qcow2", vm["overlay"]])
        ensure_seed(dict(seed, state="present"), False)
        libvirt_conn.defineXML(vm["xml"])
        versions = (libvirt_conn.getLibVersion(), libvirt_conn.getVersion())
        shape = snapshot.template_shape(vm["xml"], vm["overlay"], None, seed["path"])
        key = snapshot.template_key(shape, job.image, None, versions)
        template = snapshot.ensure_template(
            libvirt_conn, str(snapshot_dir), key, shape, job.image, None, 120, run_qemu_img
        )
        dom = snapshot.restore(libvirt_conn, template, vm["xml"], os.path.join(job.dir, ".restore"), 60)
        guest = Guest(dom, vm["domain"]["serial_log"])
        snapshot.fresh_entropy_and_clock(dom, 30)
        assert abs(int(guest.agent_exec("/bin/date", "+%s")[1]) - time.time()) < 5, (
            "the guest's clock is the host's"
        )
        devices = snapshot.Devices(vm["xml"], seed["path"])
        devices.attach(dom)
        time.sleep(1)  # the hot-plugged NIC is there, link down
        assert guest.agent_exec("/bin/hostname")[1].strip() == "guest", "still the template's identity"
        assert guest.agent_exec("/bin/sh", "-c", "pidof dropbear")[0] != 0, (
            "no SSH server before its identity is new"
        )
        assert banner(job.ports[name]) == b"", "the job's port reaches nothing"
        snapshot.reidentify(dom, 60)
        code, carrier, _ = guest.agent_exec("/bin/sh", "-c", "cat /sys/class/net/eth0/carrier")
        assert carrier.strip() == "0", "re-identified, link still down"
        assert banner(job.ports[name]) == b""
        devices.links_up(dom)
        job.wait_ssh(tmp_path, name)
        assert job.ssh(tmp_path, name, "hostname") == "snap-vm0"
        assert not os.path.exists(os.path.join(job.dir, ".restore"))
    finally:
        job.teardown()
    nothing_left(libvirt_conn, job)


def test_a_stale_template_is_rebuilt_and_a_failed_restore_boots_afresh(
    tmp_path, libvirt_conn, tiny_image, catalog_disk, snapshot_dir
):
    first = SnapshotJob(tmp_path, tiny_image, catalog_disk, snapshot_dir)
    try:
        (old,) = first.start()["templates"]
        assert old["built"]
    finally:
        first.teardown()
    with open(catalog_disk, "r+b") as handle:  # the admin replaces the image (same path)
        handle.seek(0, os.SEEK_END)
        handle.write(b"\0" * 512)
    second = SnapshotJob(tmp_path, tiny_image, catalog_disk, snapshot_dir)
    try:
        result = second.start()
        (new,) = result["templates"]
        assert new["built"] and new["key"] != old["key"], "the changed image got a template of its own"
        assert not os.path.exists(old["dir"]), "the superseded template is gone"
        assert result["vms"][0]["start"] == "snapshot"
        second.wait_ssh(tmp_path, second.vms[0]["name"])
    finally:
        second.teardown()
    state = os.path.join(new["dir"], "state")
    with open(state, "r+b") as handle:  # a template that no longer restores
        handle.seek(os.path.getsize(state) // 2)
        handle.write(os.urandom(1 << 20))
    third = SnapshotJob(tmp_path, tiny_image, catalog_disk, snapshot_dir)
    try:
        (vm,) = third.start()["vms"]
        assert vm["start"] == "boot" and "snapshot start failed, booted afresh" in vm["note"], vm
        third.wait_ssh(tmp_path, third.vms[0]["name"], timeout=90)
        assert third.ssh(tmp_path, third.vms[0]["name"], "hostname") == "snap-vm0"
    finally:
        third.teardown()
    for job in (first, second, third):
        nothing_left(libvirt_conn, job)


def test_a_vm_the_snapshot_cannot_serve_boots_afresh_and_says_why(
    tmp_path, libvirt_conn, tiny_image, catalog_disk, snapshot_dir
):
    job = SnapshotJob(tmp_path, tiny_image, catalog_disk, snapshot_dir)
    job.seeds = []  # nothing to re-identify it with
    vm = job.vms[0]
    del vm["domain"]["seed"]
    vm["xml"] = render_domain_xml(domain_params(URI, {}, vm))
    try:
        (vm,) = job.start()["vms"]
        assert (
            vm["start"] == "boot"
            and vm["note"] == "no snapshot start: the VM has no seed to re-identify it with"
        )
        assert libvirt_conn.lookupByName(vm["name"]).isActive()
        assert not os.path.exists(snapshot_dir) or os.listdir(snapshot_dir) == []
    finally:
        job.teardown()
    nothing_left(libvirt_conn, job)


JOB = """#!/bin/sh
echo "host=$(hostname) user=$(id -un) cwd=$(pwd) id=$(cat /etc/machine-id)"
echo result > result.txt
exit 5
"""


def test_a_job_of_a_snapshot_image_runs_through_the_hooks_and_leaves_only_the_template(
    site, mom, libvirt_conn
):
    catalog = yaml.safe_load(site.catalog.read_text())
    catalog["images"]["tiny"]["start"] = "snapshot"
    site.catalog.write_text(yaml.safe_dump(catalog))
    site.write_job("job.sh", JOB)
    job = mom.submit(SITE_USER, ["-vm", "img=tiny,vcpus=1,ram=256M", "job.sh"], str(site.workdir))
    assert mom.prologue(job) == 0, json.dumps(site.record(job.job_id), indent=1)
    console = "\n".join(p.read_text() for p in (site.state / "jobs").glob("*/*-serial.log"))
    assert "vtorque-guest: reidentify: " in console and "VTORQUE-GUEST-READY" in console, console
    child = mom.run_job(job, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = child.communicate(timeout=120)
    assert child.returncode == 5, (out, err)
    assert mom.epilogue(job, child.returncode) == 0
    node = naming.sanitise_node(os.uname().nodename).split(".")[0]
    assert out.decode().startswith(f"host={node}-vm0 user={SITE_USER} cwd={site.workdir} id="), out
    assert (site.workdir / "result.txt").read_text() == "result\n", (
        "the work dir (9p) was mounted after the restore"
    )
    assert site.leftovers(libvirt_conn, job.job_id) == []
    (template,) = (p for p in (site.state / "snapshots").iterdir() if not p.name.startswith("."))
    assert sorted(p.name for p in template.iterdir()) == ["console.log", "state", "template.json"]
    print(f"prologue {site.record(job.job_id)['phases']}")
