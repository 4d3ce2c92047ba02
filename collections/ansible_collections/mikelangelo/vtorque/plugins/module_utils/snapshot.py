# Copyright: vTorque contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""A job's VM started from a saved, pre-booted template of its image (catalog ``start: snapshot``)
instead of a fresh boot, with everything that identifies it made new before the job can reach it.

The template, one per node, image and VM shape, is the job VM's own definition with its identity
taken out (no name, UUID or job tag, no NIC, no seed disk, disks and shares on template-owned
files), booted with ``vtorque.template=1`` on the kernel command line: the guest then starts its
agent and nothing that identifies a VM, and waits. It is saved (virDomainSave) into a root-only
directory keyed by the image's files, the shape and the libvirt and QEMU versions, so a changed
image or upgrade gets a new template and the superseded one is removed.

A VM then starts from it in five steps, all before any NIC carries a frame:

1. restore: libvirt refuses a restore whose definition has another UUID than the saved one
   (its ABI check, seen on libvirt 9.0), so the saved file is fed to virDomainRestoreFlags
   through a FIFO with libvirt's save header rewritten to the job VM's definition (its name,
   UUID, job tag, disks, shares, serial log, CPU pins, and a new VM generation ID, which makes
   the guest kernel mix the new ID into its RNG and reseed it). No copy of the state is
   written; the FIFO is removed.
2. the VM's seed disk hot-plugged, and its NICs, with the job's MACs and their links down.
3. fresh host entropy written into the guest's /dev/urandom, and its clock set (qemu-ga).
4. the guest's ``/sbin/vtorque-reidentify`` run through qemu-ga (no network): new host keys,
   machine-id, hostname, user and key, addresses from the seed, then its SSH server.
5. only then the links up.

The NICs are not in the template because a restored virtio-net device keeps the MAC of its
saved state whatever the definition says: hot-plugged, the guest only ever sees the job's MAC.
The domain is the job's ordinary domain (its persistent definition is the rendered one), so the
teardown and the sweep need nothing new. Any failure raises SnapshotUnavailable; vm_start then
boots the VM afresh and says why in its result."""

from __future__ import annotations

import base64
import copy
import errno
import fcntl
import hashlib
import json
import os
import shutil
import struct
import threading
import time
import uuid
import xml.etree.ElementTree as ET

from ansible_collections.mikelangelo.vtorque.plugins.module_utils import domain_xml, naming
from ansible_collections.mikelangelo.vtorque.plugins.module_utils.connection import libvirt
from ansible_collections.mikelangelo.vtorque.plugins.module_utils.errors import VTorqueModuleError
from ansible_collections.mikelangelo.vtorque.plugins.module_utils.files import ensure_dir, write_atomic

try:
    import libvirt_qemu
except ImportError:  # the libvirt check of run_module reports the missing package
    libvirt_qemu = None

FORMAT = 1  # of the template and its key: a change here makes every node build new templates
SUBDIR = "snapshots"  # of the state dir
DEFAULT_DIR = os.path.join(naming.DEFAULT_STATE_DIR, SUBDIR)
DIR_MODE = 0o700
TEMPLATE_FLAG = "vtorque.template=1"
TEMPLATE_PREFIX = "vtorque-template-"  # not vt-: never taken for a job's domain by a sweep
WAITING_MARK = "/run/vtorque-template"  # the guest waits to be re-identified
REIDENTIFY = "/sbin/vtorque-reidentify"
ENTROPY_BYTES = 64
QEMU_NS = "http://libvirt.org/schemas/domain/qemu/1.0"
_TEMPLATE_UUIDS = uuid.uuid5(naming.UUID_NAMESPACE, "snapshot-template")
# libvirt's QEMU save header (qemu_saveimage.h, version 2): magic, version, length of the XML
# and cookie that follow, was_running, compressed, cookie offset, 14 unused words.
_SAVE_MAGIC = b"LibvirtQemudSave"
_SAVE_VERSION = 2
_HEADER = struct.Struct("<16s5I56x")
_AFFECT_LIVE = 1  # VIR_DOMAIN_AFFECT_LIVE
_HMP = 1  # VIR_DOMAIN_QEMU_MONITOR_COMMAND_HMP
POLL = 0.05


class SnapshotUnavailable(VTorqueModuleError):
    """This VM cannot start from a snapshot now; vm_start boots it afresh."""

    reason = "snapshot"


def _unavailable(msg: str, target: str | None = None):
    raise SnapshotUnavailable(msg, target=target)


# -- the template's shape and key --------------------------------------------------------------


def _user_nics(root: ET.Element) -> list[tuple[str, str]]:
    """(netdev options, device options) of each user-mode NIC passed through qemu:commandline;
    SnapshotUnavailable for any other QEMU argument (it could not be given back after a restore)."""
    nics = []
    for commandline in root.findall(f"{{{QEMU_NS}}}commandline"):
        values = [arg.get("value") or "" for arg in commandline.findall(f"{{{QEMU_NS}}}arg")]
        for at in range(0, len(values), 4):
            flags, options = values[at : at + 4 : 2], values[at + 1 : at + 4 : 2]
            if flags != ["-netdev", "-device"] or not options[0].startswith("user,"):
                _unavailable(f"the domain passes QEMU arguments other than user-mode NICs: {values[at:]}")
            nics.append(tuple(options))
    return nics


def _netdev_id(netdev: str) -> str:
    return dict(part.split("=", 1) for part in netdev.split(",")[1:] if "=" in part)["id"]


def template_shape(job_xml: str, overlay: str, data_disk: str | None, seed: str | None) -> str:
    """The VM's definition with everything that identifies it taken out: what its template boots
    (with the placeholders @overlay, @data, @share and @log for the template's own files).
    SnapshotUnavailable says why a VM cannot start from a snapshot."""
    root = domain_xml.parse(job_xml)
    for tag in ("name", "uuid", "genid", "metadata", "cputune", "title", "description"):
        for elem in root.findall(tag):
            root.remove(elem)
    if root.find("memoryBacking/hugepages") is not None:
        _unavailable("huge pages: a restore would need the template's pages")
    boot = root.find("os")
    if boot is None or boot.find("kernel") is None:
        _unavailable(
            "the image boots without kernel and initrd: the template flag goes on the kernel command line"
        )
    cmdline = boot.find("cmdline")
    if cmdline is None:
        cmdline = ET.SubElement(boot, "cmdline")
    cmdline.text = f"{(cmdline.text or '').strip()} {TEMPLATE_FLAG}".strip()
    devices = root.find("devices")
    for elem in list(devices if devices is not None else []):
        if elem.tag == "interface":
            devices.remove(elem)  # hot-plugged with the job's MAC after the restore
        elif elem.tag in ("hostdev", "shmem"):
            _unavailable(f"a <{elem.tag}> device cannot be saved and restored")
        elif elem.tag == "disk":
            source = elem.find("source")
            path = source.get("file") if source is not None else None
            if path is not None and path == seed:
                devices.remove(elem)  # hot-plugged: its size differs from VM to VM
            elif path == overlay:
                source.set("file", "@overlay")
            elif data_disk and path == data_disk:
                source.set("file", "@data")
            else:
                _unavailable(f"disk {path} is neither the VM's overlay, data disk nor seed")
        elif elem.tag == "filesystem":
            elem.find("source").set("dir", "@share")
        elif elem.tag in ("serial", "console") and elem.find("log") is not None:
            elem.find("log").set("file", "@log")
    if devices is not None and devices.find("rng") is None:
        # Host entropy for the template guest, which must have its RNG initialised before it is
        # saved (else every VM from it waits for jitter entropy), and for every VM restored from it.
        rng = ET.SubElement(devices, "rng", model="virtio")
        ET.SubElement(rng, "backend", model="random").text = "/dev/urandom"
    _user_nics(root)
    for commandline in root.findall(f"{{{QEMU_NS}}}commandline"):
        root.remove(commandline)  # user-mode NICs: hot-plugged too
    return ET.tostring(root, encoding="unicode")


def _file_identity(path: str) -> list:
    try:
        info = os.stat(path)
    except OSError as exc:
        _unavailable(f"cannot read {path}: {exc}", target=path)
    return [path, info.st_size, info.st_mtime_ns, info.st_ino]


def template_key(shape: str, image: dict, data_size: str | None, versions: tuple) -> str:
    """Hash of what a template depends on: the shape, the image's files (path, size, mtime,
    inode: a replaced or rewritten image gets a new key), the data disk's size, libvirt's and
    QEMU's versions."""
    root = domain_xml.parse(shape)
    files = [image["path"]] + [
        root.findtext(f"os/{tag}").strip()
        for tag in ("kernel", "initrd")
        if root.find(f"os/{tag}") is not None
    ]
    doc = dict(
        format=FORMAT,
        shape=shape,
        image_format=image.get("format"),
        files=[_file_identity(path) for path in files],
        data_size=data_size,
        versions=list(versions),
    )
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:32]


# -- building the template --------------------------------------------------------------------


class _Lock:
    """One template build at a time on the node (flock on <dir>/.lock). `wait=False`: taken
    only when no build holds it (BlockingIOError otherwise)."""

    def __init__(self, directory: str, wait: bool = True):
        self.path = os.path.join(directory, ".lock")
        self.how = fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB

    def __enter__(self):
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(self.fd, self.how)
        except BaseException:
            os.close(self.fd)
            raise
        return self

    def __exit__(self, *exc):
        os.close(self.fd)


def template_dir(snapshot_dir: str, key: str) -> str:
    return os.path.join(snapshot_dir, key)


def _complete(directory: str) -> bool:
    return os.path.isfile(os.path.join(directory, "state")) and os.path.isfile(
        os.path.join(directory, "template.json")
    )


def _fill(shape: str, name: str, files: dict, genid: str) -> str:
    root = domain_xml.parse(shape)
    for tag, text in (("genid", genid), ("uuid", str(uuid.uuid5(_TEMPLATE_UUIDS, name))), ("name", name)):
        elem = ET.Element(tag)
        elem.text = text
        root.insert(0, elem)
    for elem in root.iter():
        for key, value in elem.attrib.items():
            if value in files:
                elem.set(key, files[value])
    return ET.tostring(root, encoding="unicode")


def ensure_template(
    conn, snapshot_dir: str, key: str, shape: str, image: dict, data_size, timeout: int, run_qemu_img
) -> dict:
    """The template for ``key``, built now when missing: (dir, built, seconds)."""
    ensure_dir(snapshot_dir, DIR_MODE)  # its parent, the state dir, exists
    final = template_dir(snapshot_dir, key)
    if _complete(final):
        return dict(dir=final, key=key, built=False, seconds=0.0)
    with _Lock(snapshot_dir):
        if _complete(final):
            return dict(dir=final, key=key, built=False, seconds=0.0)
        began = time.monotonic()
        name = TEMPLATE_PREFIX + key[:16]
        work = final + ".build"
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(final, ignore_errors=True)
        os.mkdir(work, DIR_MODE)
        try:
            _build(conn, work, name, shape, image, data_size, timeout, run_qemu_img)
            meta = dict(
                key=key,
                format=FORMAT,
                image=image["path"],
                built=time.time(),
                seconds=round(time.monotonic() - began, 2),
            )
            write_atomic(os.path.join(work, "template.json"), json.dumps(meta, indent=2) + "\n", 0o600)
            os.rename(work, final)
        except BaseException:
            _destroy_by_name(conn, name)
            shutil.rmtree(work, ignore_errors=True)
            raise
        _remove_superseded(snapshot_dir, key, image["path"])
        return dict(dir=final, key=key, built=True, seconds=round(time.monotonic() - began, 2))


def _build(
    conn, work: str, name: str, shape: str, image: dict, data_size, timeout: int, run_qemu_img
) -> None:
    files = {
        "@overlay": os.path.join(work, "overlay.qcow2"),
        "@data": os.path.join(work, "data.qcow2"),
        "@share": os.path.join(work, "share"),
        "@log": os.path.join(work, "console.log"),
    }
    run_qemu_img(
        [
            "create",
            "-q",
            "-f",
            "qcow2",
            "-b",
            image["path"],
            "-F",
            image.get("format") or "qcow2",
            files["@overlay"],
        ]
    )
    if data_size:
        run_qemu_img(["create", "-q", "-f", "qcow2", files["@data"], data_size])
    os.mkdir(files["@share"], DIR_MODE)
    _destroy_by_name(conn, name)  # a build killed before it could clean up
    try:
        dom = conn.createXML(_fill(shape, name, files, str(uuid.uuid4())), 0)
    except libvirt.libvirtError as exc:
        _unavailable(f"the template did not start: {exc}", target=name)
    deadline = time.monotonic() + timeout
    while not _waiting(dom):
        if time.monotonic() > deadline or not dom.isActive():
            _unavailable(
                f"the template guest did not wait to be re-identified within {timeout} s (does its guest"
                f" support vtorque.template? console: {files['@log']})",
                target=name,
            )
        time.sleep(0.2)
    partial = os.path.join(work, "state.partial")
    try:
        dom.save(partial)  # stops the (transient) domain
    except libvirt.libvirtError as exc:
        _unavailable(f"saving the template failed: {exc}", target=name)
    os.chmod(partial, 0o600)
    os.rename(partial, os.path.join(work, "state"))
    for key in ("@overlay", "@data"):
        if os.path.exists(files[key]):
            os.unlink(files[key])
    os.rmdir(files["@share"])


def abandoned_builds(conn, snapshot_dir: str, check_mode: bool) -> list:
    """What builds killed half-way left (their template guest, their .build dir), removed; none
    while a build runs (it holds the lock for as long as it has either)."""
    if not os.path.isdir(snapshot_dir):
        return []
    try:
        with _Lock(snapshot_dir, wait=False):
            domains = [
                d.name()
                for d in conn.listAllDomains()
                if d.name().startswith(TEMPLATE_PREFIX) and _builds_in(d, snapshot_dir)
            ]
            builds = [os.path.join(snapshot_dir, e) for e in os.listdir(snapshot_dir) if e.endswith(".build")]
            if not check_mode:
                for name in domains:
                    _destroy_by_name(conn, name)
                for path in builds:
                    shutil.rmtree(path, ignore_errors=True)
            return domains + builds
    except BlockingIOError:
        return []


def _builds_in(dom, snapshot_dir: str) -> bool:
    """Whether the template guest's files are in `snapshot_dir` (another state dir's are not ours)."""
    try:
        return os.path.join(snapshot_dir, "") in dom.XMLDesc(0)
    except libvirt.libvirtError:
        return False


def _waiting(dom) -> bool:
    """The template guest's agent answers and it waits to be re-identified."""
    try:
        handle = _agent(dom, "guest-file-open", timeout=2, path=WAITING_MARK, mode="r")
    except libvirt.libvirtError:
        return False
    _agent(dom, "guest-file-close", handle=handle)
    return True


def _destroy_by_name(conn, name: str) -> None:
    try:
        conn.lookupByName(name).destroy()
    except libvirt.libvirtError:
        pass


def _remove_superseded(snapshot_dir: str, key: str, image_path: str) -> None:
    """Other templates of the same image: built from an older image file or shape version."""
    for entry in os.listdir(snapshot_dir):
        directory = os.path.join(snapshot_dir, entry)
        if entry == key or entry.startswith(".") or not os.path.isdir(directory) or os.path.islink(directory):
            continue
        try:
            with open(os.path.join(directory, "template.json"), encoding="utf-8") as handle:
                meta = json.load(handle)
        except (OSError, ValueError):
            meta = {"image": image_path} if entry.endswith(".build") else {}
        if meta.get("image") == image_path:
            shutil.rmtree(directory, ignore_errors=True)


# -- starting a VM from it --------------------------------------------------------------------


def _agent(dom, command: str, timeout: int = 10, **arguments):
    request = {"execute": command, **({"arguments": arguments} if arguments else {})}
    return json.loads(libvirt_qemu.qemuAgentCommand(dom, json.dumps(request), timeout, 0)).get("return")


def _hmp(dom, command: str) -> None:
    out = libvirt_qemu.qemuMonitorCommand(dom, command, _HMP).strip()
    if out:
        _unavailable(f"QEMU refused '{command.split(' ', 1)[0]}': {out}", target=dom.name())


def read_state(path: str) -> tuple[str, bytes, int, int]:
    """(saved definition, save cookie, offset of QEMU's stream, was_running) of a saved template."""
    with open(path, "rb") as handle:
        head = handle.read(_HEADER.size)
        if len(head) != _HEADER.size:
            _unavailable(f"{path} is not a libvirt save image", target=path)
        magic, version, length, was_running, compressed, cookie_offset = _HEADER.unpack(head)
        if magic != _SAVE_MAGIC or version != _SAVE_VERSION or compressed != 0:
            _unavailable(
                f"{path} is a save image vTorque cannot rewrite (version {version}, compressed {compressed})",
                target=path,
            )
        data = handle.read(length)
    if len(data) != length or b"\0" not in data:
        _unavailable(f"{path}: truncated save header", target=path)
    cookie = b""
    if cookie_offset:
        cookie = data[cookie_offset : data.index(b"\0", cookie_offset)]
    return data[: data.index(b"\0")].decode("utf-8"), cookie, _HEADER.size + length, was_running


def live_definition(saved_xml: str, job_xml: str) -> str:
    """The saved template definition (its devices and addresses: what QEMU's stream holds) with
    the job VM's identity and files: name, UUID, job tag, CPU pins, disks, shares, serial log,
    and a new VM generation ID (the guest reseeds its RNG when it sees it change)."""
    saved, job = domain_xml.parse(saved_xml), domain_xml.parse(job_xml)
    for tag in ("name", "uuid"):
        saved.find(tag).text = job.findtext(tag)
    for tag in ("genid", "metadata", "cputune"):
        for elem in saved.findall(tag):
            saved.remove(elem)
    position = list(saved).index(saved.find("uuid")) + 1
    genid = ET.Element("genid")
    genid.text = str(uuid.uuid4())
    extra = [genid] + [
        copy.deepcopy(job.find(tag)) for tag in ("metadata", "cputune") if job.find(tag) is not None
    ]
    for offset, elem in enumerate(extra):
        saved.insert(position + offset, elem)
    job_disks = {d.find("target").get("dev"): d for d in job.findall("devices/disk")}
    for disk in saved.findall("devices/disk"):
        mine = job_disks.get(disk.find("target").get("dev"))
        if mine is None or mine.find("source") is None:
            _unavailable(f"the template's disk {disk.find('target').get('dev')} has no counterpart in the VM")
        disk.find("source").set("file", mine.find("source").get("file"))
    job_shares = {f.find("target").get("dir"): f for f in job.findall("devices/filesystem")}
    for share in saved.findall("devices/filesystem"):
        share.find("source").set("dir", job_shares[share.find("target").get("dir")].find("source").get("dir"))
    log = job.find("devices/serial/log")
    for elem in saved.findall("devices/serial") + saved.findall("devices/console"):
        if elem.find("log") is not None and log is not None:
            elem.find("log").set("file", log.get("file"))
    return ET.tostring(saved, encoding="unicode")


def _feed(
    fifo: str, head: bytes, state: str, offset: int, deadline: float, stop: threading.Event, errors: list
) -> None:
    """Write the rewritten header, then the template's QEMU stream, into the FIFO libvirt reads."""
    while True:
        try:
            out = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
            break
        except OSError as exc:
            if exc.errno != errno.ENXIO or stop.is_set() or time.monotonic() > deadline:
                errors.append(f"libvirt never read the state ({exc})")
                return
            time.sleep(0.005)
    try:
        os.set_blocking(out, True)
        os.write(out, head)
        with open(state, "rb") as source:
            size = os.fstat(source.fileno()).st_size
            while offset < size:
                sent = os.sendfile(out, source.fileno(), offset, size - offset)
                if not sent:
                    break
                offset += sent
    except OSError as exc:
        errors.append(f"feeding the state failed: {exc}")
    finally:
        os.close(out)


def restore(conn, template: dict, job_xml: str, fifo: str, timeout: int):
    """The job VM running from the template under its own identity (step 1): its domain."""
    state = os.path.join(template["dir"], "state")
    saved_xml, cookie, offset, was_running = read_state(state)
    xml = live_definition(saved_xml, job_xml).encode("utf-8") + b"\0"
    data = xml + cookie + b"\0"
    head = _HEADER.pack(_SAVE_MAGIC, _SAVE_VERSION, len(data), was_running, 0, len(xml)) + data
    if os.path.lexists(fifo):
        os.unlink(fifo)
    os.mkfifo(fifo, 0o600)
    stop, errors = threading.Event(), []
    feeder = threading.Thread(
        target=_feed, args=(fifo, head, state, offset, time.monotonic() + timeout, stop, errors), daemon=True
    )
    feeder.start()
    try:
        conn.restoreFlags(fifo, None, 0)
    except (libvirt.libvirtError, SystemError) as exc:
        # SystemError: libvirt-python could not decode libvirt's error text as UTF-8 (QEMU's
        # complaint may quote bytes of a corrupt state), so the reason itself is unreadable
        why = exc if isinstance(exc, libvirt.libvirtError) else "libvirt's error text was not UTF-8"
        _unavailable(
            f"the restore failed: {why}{'; ' + errors[0] if errors else ''}",
            target=domain_xml.domain_name(job_xml),
        )
    finally:
        stop.set()
        feeder.join(timeout)
        os.unlink(fifo)
    return conn.lookupByName(domain_xml.domain_name(job_xml))


class Devices:
    """The devices a restored VM gets hot-plugged: its seed disk and its NICs, from its definition."""

    def __init__(self, job_xml: str, seed: str | None):
        root = domain_xml.parse(job_xml)
        self.seed = [
            d
            for d in root.findall("devices/disk")
            if seed and d.find("source") is not None and d.find("source").get("file") == seed
        ]
        self.interfaces = root.findall("devices/interface")
        self.user_nics = _user_nics(root)

    @staticmethod
    def _interface(elem: ET.Element, state: str) -> str:
        elem = copy.deepcopy(elem)
        for link in elem.findall("link"):
            elem.remove(link)
        ET.SubElement(elem, "link", state=state)
        return ET.tostring(elem, encoding="unicode")

    def attach(self, dom) -> None:
        """Step 2: the seed, and every NIC with its link down (the guest sees no carrier)."""
        for disk in self.seed:
            dom.attachDeviceFlags(ET.tostring(disk, encoding="unicode"), _AFFECT_LIVE)
        for elem in self.interfaces:
            dom.attachDeviceFlags(self._interface(elem, "down"), _AFFECT_LIVE)
        for netdev, device in self.user_nics:
            _hmp(dom, f"netdev_add {netdev}")
            _hmp(dom, f"device_add {device}")
            _hmp(dom, f"set_link {_netdev_id(netdev)} off")

    def links_up(self, dom) -> None:
        """Step 5."""
        for elem in self.interfaces:
            dom.updateDeviceFlags(self._interface(elem, "up"), _AFFECT_LIVE)
        for netdev, _device in self.user_nics:
            _hmp(dom, f"set_link {_netdev_id(netdev)} on")


def fresh_entropy_and_clock(dom, timeout: int) -> None:
    """Step 3: the host's random bytes into the guest's /dev/urandom, the host's time as its clock."""
    deadline = time.monotonic() + timeout
    while True:  # libvirt connects to the restored guest's agent channel anew
        try:
            _agent(dom, "guest-ping", timeout=1)
            break
        except libvirt.libvirtError:
            if time.monotonic() > deadline:
                raise
            time.sleep(POLL)
    handle = _agent(dom, "guest-file-open", path="/dev/urandom", mode="w")
    try:
        _agent(
            dom,
            "guest-file-write",
            handle=handle,
            **{"buf-b64": base64.b64encode(os.urandom(ENTROPY_BYTES)).decode()},
        )
    finally:
        _agent(dom, "guest-file-close", handle=handle)
    try:
        _agent(dom, "guest-set-time", time=time.time_ns())
    except libvirt.libvirtError:
        pass  # the system clock is set; only the guest's hwclock update failed


def reidentify(dom, timeout: int) -> None:
    """Step 4: the guest applies its seed and starts its SSH server (qemu-ga, no network)."""
    pid = _agent(dom, "guest-exec", path=REIDENTIFY)["pid"]
    deadline = time.monotonic() + timeout
    while not (status := _agent(dom, "guest-exec-status", pid=pid))["exited"]:
        if time.monotonic() > deadline:
            _unavailable(f"{REIDENTIFY} still runs after {timeout} s", target=dom.name())
        time.sleep(POLL)
    if status.get("exitcode") != 0:
        _unavailable(
            f"{REIDENTIFY} failed (exit {status.get('exitcode', status.get('signal'))}; see the console)",
            target=dom.name(),
        )


def start_from(conn, template: dict, job_xml: str, seed: str | None, fifo: str, timeout: int) -> None:
    """The five steps; SnapshotUnavailable (the domain destroyed again) when one fails."""
    dom = restore(conn, template, job_xml, fifo, timeout)
    try:
        devices = Devices(job_xml, seed)
        devices.attach(dom)  # first: the guest probes them while the agent works
        fresh_entropy_and_clock(dom, timeout)
        reidentify(dom, timeout)
        devices.links_up(dom)
    except (VTorqueModuleError, libvirt.libvirtError, KeyError, ValueError) as exc:
        try:
            dom.destroy()
        except libvirt.libvirtError:
            pass
        if isinstance(exc, SnapshotUnavailable):
            raise
        _unavailable(f"re-identifying the restored VM failed: {getattr(exc, 'msg', exc)}", target=dom.name())
