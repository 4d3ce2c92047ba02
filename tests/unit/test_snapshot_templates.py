"""Snapshot starts without libvirt: what a template keeps of a VM's definition and what it drops,
when a template is stale, the definition a restore gets, libvirt's save header rewritten, and the
catalog's `start` key (module_utils/snapshot.py; the real restores are in
tests/integration/test_snapshot_start.py)."""

import os
import struct
import threading

import pytest
import yaml
from ansible_collections.mikelangelo.vtorque.plugins.module_utils import domain_xml, naming, snapshot
from ansible_collections.mikelangelo.vtorque.plugins.plugin_utils.domain_render import (
    domain_params,
    render_domain_xml,
)
from vtorque.errors import CatalogError
from vtorque.site.catalog import load_catalog

QEMU = "{http://libvirt.org/schemas/domain/qemu/1.0}"


def job_xml(tmp_path, index=0, nic="user", **extra):
    for name in ("vmlinux", "initrd.img"):
        (tmp_path / name).touch()
    identity = naming.vm_identity("42.head", "node1", index, str(tmp_path / "state"))
    nics = {
        "user": [dict(mode="user", host_port=22200 + index, guest_address="10.0.2.15")],
        "bridge": [dict(mode="bridge", source="br0")],
    }[nic]
    domain = dict(
        job=dict(id="42.head", node="node1", index=index),
        virt_type="qemu",
        memory_mib=256,
        disks=[dict(path=identity.overlay_path), dict(path=identity.data_disk_path)],
        seed=identity.seed_path,
        nics=nics,
        serial_log=identity.serial_log_path,
        boot=dict(
            kernel=str(tmp_path / "vmlinux"), initrd=str(tmp_path / "initrd.img"), cmdline="console=ttyS0"
        ),
        extra_devices=[
            f"<filesystem type='mount'><source dir='/home/u{index}/work'/>"
            "<target dir='workdir'/></filesystem>"
        ],
        cpu_pinning=[dict(vcpu=0, cpuset=str(index))],
    )
    domain.update(extra)
    vm = dict(name=identity.name, domain=domain)
    return render_domain_xml(domain_params("qemu:///system", {}, vm)), identity


def shape_of(xml, identity):
    return snapshot.template_shape(xml, identity.overlay_path, identity.data_disk_path, identity.seed_path)


@pytest.mark.parametrize("nic", ["user", "bridge"])
def test_the_template_keeps_the_shape_and_nothing_that_identifies_the_vm(tmp_path, nic):
    xml, identity = job_xml(tmp_path, nic=nic)
    shape = shape_of(xml, identity)
    root = domain_xml.parse(shape)
    for tag in ("name", "uuid", "genid", "metadata", "cputune"):
        assert root.find(tag) is None, tag
    assert root.findall("devices/interface") == [] and root.find(f"{QEMU}commandline") is None, (
        "NICs: hot-plugged"
    )
    assert [d.find("source").get("file") for d in root.findall("devices/disk")] == ["@overlay", "@data"]
    assert root.find("devices/filesystem/source").get("dir") == "@share"
    assert root.find("devices/serial/log").get("file") == "@log"
    assert root.findtext("os/cmdline") == "console=ttyS0 vtorque.template=1"
    assert root.find("devices/rng/backend").text == "/dev/urandom"
    for secret in (identity.name, identity.uuid, identity.mac, "42.head", "/home/u0"):
        assert secret not in shape, secret
    other_xml, other = job_xml(tmp_path, index=1, nic=nic)
    assert shape_of(other_xml, other) == shape, "every VM of the same shape shares one template"


@pytest.mark.parametrize(
    ("extra", "why"),
    [
        (dict(hugepages=True), "huge pages"),
        (dict(shmem=[dict(name="r", size_mib=1)]), "<shmem>"),
        (dict(hostdevs=[dict(address="0000:01:00.1")]), "<hostdev>"),
        (dict(boot=None), "kernel and initrd"),
        (dict(disks=[dict(path="/srv/other.qcow2")]), "neither the VM's overlay"),
    ],
)
def test_a_vm_the_template_cannot_serve_says_why(tmp_path, extra, why):
    xml, identity = job_xml(tmp_path, **extra)
    with pytest.raises(snapshot.SnapshotUnavailable, match=why):
        shape_of(xml, identity)


def test_a_changed_image_kernel_shape_or_qemu_gets_a_new_template(tmp_path):
    xml, identity = job_xml(tmp_path)
    shape = shape_of(xml, identity)
    image = dict(path=str(tmp_path / "disk.qcow2"), format="qcow2")
    (tmp_path / "disk.qcow2").write_bytes(b"QFI\xfb" + b"\0" * 508)
    key = snapshot.template_key(shape, image, "1G", (9000000, 7002000))
    assert key == snapshot.template_key(shape, image, "1G", (9000000, 7002000))
    assert key != snapshot.template_key(shape, image, "2G", (9000000, 7002000))
    assert key != snapshot.template_key(shape, image, "1G", (9000000, 8000000))
    assert key != snapshot.template_key(shape.replace("262144", "524288"), image, "1G", (9000000, 7002000))
    os.utime(tmp_path / "disk.qcow2", ns=(1, 1))
    assert key != (touched := snapshot.template_key(shape, image, "1G", (9000000, 7002000)))
    (tmp_path / "vmlinux").write_bytes(b"new kernel")
    assert touched != snapshot.template_key(shape, image, "1G", (9000000, 7002000))
    os.unlink(tmp_path / "disk.qcow2")
    with pytest.raises(snapshot.SnapshotUnavailable, match="cannot read"):
        snapshot.template_key(shape, image, "1G", (9000000, 7002000))


SAVED = """<domain type='qemu'>
  <name>vtorque-template-0123</name><uuid>11111111-2222-3333-4444-555555555555</uuid>
  <genid>66666666-7777-8888-9999-000000000000</genid>
  <memory unit='KiB'>262144</memory><vcpu placement='static'>1</vcpu>
  <os><type arch='x86_64' machine='pc-i440fx-7.2'>hvm</type><kernel>/k</kernel></os>
  <devices>
    <disk type='file' device='disk'><source file='/t/overlay.qcow2'/><target dev='vda' bus='virtio'/>
      <address type='pci' domain='0x0000' bus='0x00' slot='0x03' function='0x0'/></disk>
    <disk type='file' device='disk'><source file='/t/data.qcow2'/><target dev='vdb' bus='virtio'/></disk>
    <filesystem type='mount'><source dir='/t/share'/><target dir='workdir'/></filesystem>
    <serial type='pty'><log file='/t/console.log' append='on'/><target port='0'/></serial>
    <console type='pty'><log file='/t/console.log' append='on'/><target type='serial' port='0'/></console>
  </devices>
</domain>"""


def test_a_restore_gets_the_saved_devices_under_the_vms_identity_and_a_new_generation_id(tmp_path):
    xml, identity = job_xml(tmp_path)
    live = domain_xml.parse(snapshot.live_definition(SAVED, xml))
    assert live.findtext("name") == identity.name and live.findtext("uuid") == identity.uuid
    assert live.findtext("genid") not in ("", "66666666-7777-8888-9999-000000000000")
    assert snapshot.live_definition(SAVED, xml) != snapshot.live_definition(SAVED, xml), "a new one each time"
    assert live.find("metadata") is not None and live.find("cputune/vcpupin").get("cpuset") == "0"
    assert [d.find("source").get("file") for d in live.findall("devices/disk")] == [
        identity.overlay_path,
        identity.data_disk_path,
    ]
    assert live.find("devices/disk/address").get("slot") == "0x03", "the saved addresses stay"
    assert live.find("devices/filesystem/source").get("dir") == "/home/u0/work"
    assert {e.get("file") for e in live.iter("log")} == {identity.serial_log_path}
    assert "/t/" not in snapshot.live_definition(SAVED, xml)


def write_save_image(path, xml, cookie, stream, magic=b"LibvirtQemudSave", version=2, compressed=0):
    data = xml.encode() + b"\0" + cookie + b"\0" + b"\0" * 1000  # libvirt pads for later edits
    header = struct.pack("<16s5I56x", magic, version, len(data), 1, compressed, len(xml) + 1)
    path.write_bytes(header + data + stream)


def test_the_save_header_is_read_and_a_foreign_one_refused(tmp_path):
    state = tmp_path / "state"
    write_save_image(state, SAVED, b"<cookie/>", b"QEVM" + b"x" * 100)
    xml, cookie, offset, was_running = snapshot.read_state(str(state))
    assert xml == SAVED and cookie == b"<cookie/>" and was_running == 1
    assert state.read_bytes()[offset:] == b"QEVM" + b"x" * 100
    for bad in (dict(magic=b"LibvirtQemudPart"), dict(version=3), dict(compressed=1)):
        write_save_image(state, SAVED, b"", b"QEVM", **bad)
        with pytest.raises(snapshot.SnapshotUnavailable):
            snapshot.read_state(str(state))
    state.write_bytes(b"short")
    with pytest.raises(snapshot.SnapshotUnavailable, match="not a libvirt save image"):
        snapshot.read_state(str(state))


def test_the_fifo_gets_the_new_header_then_the_saved_stream_and_nothing_is_written_to_disk(tmp_path):
    state, fifo = tmp_path / "state", tmp_path / "fifo"
    stream = os.urandom(300_000)
    write_save_image(state, SAVED, b"", stream)
    offset = snapshot.read_state(str(state))[2]
    os.mkfifo(fifo, 0o600)
    errors, stop = [], threading.Event()
    feeder = threading.Thread(
        target=snapshot._feed, args=(str(fifo), b"HEAD", str(state), offset, 1e12, stop, errors)
    )
    feeder.start()
    with open(fifo, "rb") as reader:
        got = reader.read()
    feeder.join()
    assert got == b"HEAD" + stream and errors == []
    stop.set()  # nobody reads: the feeder gives up instead of hanging
    feeder = threading.Thread(
        target=snapshot._feed, args=(str(fifo), b"HEAD", str(state), offset, 1e12, stop, errors)
    )
    feeder.start()
    feeder.join(5)
    assert not feeder.is_alive() and "never read" in errors[0]


def write_catalog(path, **fields):
    entry = {"path": "/srv/tiny.qcow2", "distro": "debian", **fields}
    path.write_text(yaml.safe_dump({"images": {"tiny": entry}}))
    path.chmod(0o644)
    return str(path)


def test_the_catalog_switches_snapshot_starts_on_per_image(tmp_path):
    boot = dict(kernel="/srv/vmlinux", initrd="/srv/initrd.img")
    assert load_catalog(write_catalog(tmp_path / "c.yml", **boot))["tiny"].start is None  # a fresh boot
    entry = load_catalog(write_catalog(tmp_path / "c.yml", start="snapshot", **boot))["tiny"]
    assert entry.start == "snapshot" and entry.to_yaml_dict()["start"] == "snapshot"
    with pytest.raises(CatalogError, match="start: expected one of boot, snapshot"):
        load_catalog(write_catalog(tmp_path / "c.yml", start="restore", **boot))
    with pytest.raises(CatalogError, match="snapshot needs direct kernel boot"):
        load_catalog(write_catalog(tmp_path / "c.yml", start="snapshot"))


@pytest.mark.parametrize(("start", "expected"), [(None, "boot"), ("snapshot", "snapshot")])
def test_the_catalogs_start_reaches_vm_start_with_the_nodes_template_dir(start, expected):
    import dataclasses

    from test_plan_and_seeds import CATALOG, keys_for, plan_for
    from vtorque.runtime.playbook_vars import start_variables

    catalog = {"tiny": dataclasses.replace(CATALOG["tiny"], start=start)}
    original = dict(CATALOG)
    CATALOG.update(catalog)
    try:
        plan, config = plan_for()
    finally:
        CATALOG.update(original)
    image = start_variables(plan, config, keys_for(plan))["vtorque"]["image"]
    assert image["start"] == expected
    assert image["snapshot_dir"] == f"{config.state_dir}/snapshots"


def test_a_restore_whose_error_text_is_not_utf8_is_a_refused_snapshot_not_a_crash(tmp_path, monkeypatch):
    """libvirt-python raises SystemError when libvirt's error text (QEMU quoting a corrupt state)
    is not UTF-8: the start must still fall back to a fresh boot, with a reason."""
    monkeypatch.setattr(snapshot, "read_state", lambda path: ("<domain/>", b"", 0, 1))
    monkeypatch.setattr(snapshot, "live_definition", lambda saved, job: job)
    monkeypatch.setattr(snapshot, "_feed", lambda *args: None)

    class Conn:
        def restoreFlags(self, *args):  # noqa: N802 - libvirt's name
            raise SystemError(
                "<built-in function virDomainRestoreFlags> returned a result with an exception set"
            )

    fifo = str(tmp_path / "restore.fifo")
    with pytest.raises(
        snapshot.SnapshotUnavailable, match="the restore failed: libvirt's error text was not UTF-8"
    ):
        snapshot.restore(Conn(), {"dir": str(tmp_path)}, "<domain><name>vt-1-n-0</name></domain>", fifo, 5)
    assert not os.path.exists(fifo)
