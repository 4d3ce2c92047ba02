# Copyright: vTorque contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""Typed options of vm_domain: the argument spec (shared by the module and its action plugin)
and ``template_vars``, which completes them (stable UUID and MACs, disk targets) for the
domain template."""

from __future__ import annotations

import ipaddress
import os.path
import re
import xml.etree.ElementTree as ET

from ansible_collections.mikelangelo.vtorque.plugins.module_utils import domain_xml, naming
from ansible_collections.mikelangelo.vtorque.plugins.module_utils.common import URI_ARGSPEC
from ansible_collections.mikelangelo.vtorque.plugins.module_utils.errors import InvalidSpec

STATES = ("present", "running", "shutdown", "absent")
DEFINING_STATES = ("present", "running")
USER_NET = "10.0.2.0/24"
# User-mode NICs are passed through qemu:commandline; they take PCI slots from the top down so
# libvirt's own automatic slot assignment (from slot 2 up) never collides with them.
USER_NIC_FIRST_SLOT = 0x1F
MAX_IOTHREADS = 64
# libvirt's cpuset syntax: CPUs and ranges, comma-separated, each may be excluded with ^.
_CPUSET = re.compile(r"\^?\d+(-\d+)?(,\^?\d+(-\d+)?)*")
_PCI_ADDRESS = re.compile(r"([0-9a-f]{4}):([0-9a-f]{2}):([0-9a-f]{2})\.([0-7])")
_SHMEM_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,99}")
_FRAGMENT_NAME = re.compile(r"[a-z][a-z0-9_]{0,39}")

DOMAIN_ARGSPEC = dict(
    URI_ARGSPEC,
    name=dict(type="str", required=True),
    state=dict(type="str", default="present", choices=list(STATES)),
    uuid=dict(type="str"),
    job=dict(
        type="dict",
        options=dict(
            id=dict(type="str", required=True),
            node=dict(type="str", required=True),
            index=dict(type="int", required=True),
        ),
    ),
    virt_type=dict(type="str", default="kvm", choices=["kvm", "qemu"]),
    arch=dict(type="str", default="x86_64"),
    machine=dict(type="str", default="pc"),
    vcpus=dict(type="int", default=1),
    memory_mib=dict(type="int", default=1024),
    cpu_mode=dict(type="str", choices=["host-passthrough", "host-model", "custom"]),
    cpu_model=dict(type="str"),
    usb_controller=dict(type="bool", default=False),
    cpu_pinning=dict(
        type="list",
        elements="dict",
        default=[],
        options=dict(
            vcpu=dict(type="int", required=True),
            cpuset=dict(type="str", required=True),
        ),
    ),
    boot=dict(
        type="dict",
        options=dict(
            kernel=dict(type="path", required=True),
            initrd=dict(type="path"),
            cmdline=dict(type="str", default=""),
        ),
    ),
    disks=dict(
        type="list",
        elements="dict",
        default=[],
        options=dict(
            path=dict(type="path", required=True),
            format=dict(type="str", default="qcow2", choices=["qcow2", "raw"]),
            target=dict(type="str"),
            readonly=dict(type="bool", default=False),
            cache=dict(type="str", choices=["default", "none", "writeback", "writethrough", "unsafe"]),
        ),
    ),
    seed=dict(type="path"),
    nics=dict(
        type="list",
        elements="dict",
        default=[],
        options=dict(
            mode=dict(type="str", required=True, choices=["network", "bridge", "user"]),
            source=dict(type="str"),
            mac=dict(type="str"),
            model=dict(type="str", default="virtio"),
            host_port=dict(type="int"),
            guest_address=dict(type="str", default=naming.QEMU_USER_NET["address"]),
            guest_port=dict(type="int", default=22),
        ),
    ),
    serial_log=dict(type="path"),
    guest_agent=dict(type="bool", default=True),
    extra_devices=dict(type="list", elements="str", default=[]),
    iothreads=dict(
        type="dict",
        options=dict(
            count=dict(type="int", required=True),
            cpuset=dict(type="str"),
        ),
    ),
    emulator_cpuset=dict(type="str"),
    hugepages=dict(type="bool", default=False),
    shmem=dict(
        type="list",
        elements="dict",
        default=[],
        options=dict(
            name=dict(type="str", required=True),
            size_mib=dict(type="int", required=True),
        ),
    ),
    hostdevs=dict(
        type="list",
        elements="dict",
        default=[],
        options=dict(address=dict(type="str", required=True)),
    ),
    fragments=dict(
        type="list",
        elements="dict",
        default=[],
        options=dict(
            name=dict(type="str", required=True),
            template=dict(type="path", required=True),
        ),
    ),
    addresses=dict(type="list", elements="str", default=[]),
    template=dict(type="path"),
    xml=dict(type="str"),
    wait=dict(type="bool", default=True),
    wait_timeout=dict(type="int", default=120),
    force=dict(type="bool", default=False),
    shutdown_mode=dict(type="str", default="acpi", choices=["acpi", "agent"]),
)


def _fail(msg: str, name: str):
    raise InvalidSpec(msg, target=name)


def _mac(value: str, where: str, name: str) -> str:
    parts = value.lower().split(":")
    if len(parts) != 6 or not all(len(p) == 2 and all(c in "0123456789abcdef" for c in p) for p in parts):
        _fail(f"{where}: mac {value!r} is not a MAC address (xx:xx:xx:xx:xx:xx)", name)
    return value.lower()


def _absolute(path: str | None, key: str, name: str) -> None:
    if path is not None and not os.path.isabs(path):
        _fail(f"{key} {path!r} must be an absolute path (libvirt does not resolve relative paths)", name)


def _nics(params: dict, name: str) -> list[dict]:
    job = params.get("job")
    nics, user_slot = [], USER_NIC_FIRST_SLOT
    for number, nic in enumerate(params.get("nics") or []):
        where = f"nics[{number}]"
        nic = dict(nic)
        if nic.get("mac"):
            nic["mac"] = _mac(nic["mac"], where, name)
        elif job:
            nic["mac"] = naming.domain_mac(job["id"], job["node"], job["index"], number)
        else:
            _fail(
                f"{where}: mac is required when job is not given (a MAC must not change between runs)", name
            )
        if nic["mode"] in ("network", "bridge") and not nic.get("source"):
            _fail("{}: mode {} needs source (the {} name)".format(where, nic["mode"], nic["mode"]), name)
        if nic["mode"] == "user":
            if not nic.get("host_port") or not 0 < nic["host_port"] < 65536:
                _fail(
                    "{}: mode user needs host_port (1-65535), got {!r}".format(where, nic.get("host_port")),
                    name,
                )
            if ipaddress.ip_address(nic["guest_address"]) not in ipaddress.ip_network(USER_NET):
                _fail(
                    "{}: guest_address {} is not in the user-mode network {}".format(
                        where, nic["guest_address"], USER_NET
                    ),
                    name,
                )
            nic.update(netdev_id=f"vtnet{number}", pci_slot=f"0x{user_slot:02x}", user_net=USER_NET)
            user_slot -= 1
        nics.append(nic)
    return nics


def _cpuset(value: str | None, key: str, name: str) -> None:
    if value is not None and not _CPUSET.fullmatch(value):
        _fail(f"{key} {value!r} is not a libvirt cpuset (host CPUs and ranges, e.g. 2, 2-3, 0,4)", name)


def _iothreads(params: dict, name: str) -> dict:
    """I/O threads 1..count (libvirt numbers them from 1), with the host CPUs they run on."""
    iothreads = params.get("iothreads")
    if not iothreads:
        return dict(count=0, cpuset=None, ids=[])
    if not 1 <= iothreads["count"] <= MAX_IOTHREADS:
        _fail(f"iothreads.count must be 1-{MAX_IOTHREADS}, got {iothreads['count']}", name)
    _cpuset(iothreads.get("cpuset"), "iothreads.cpuset", name)
    return dict(iothreads, ids=list(range(1, iothreads["count"] + 1)))


def _shmem(params: dict, name: str) -> list[dict]:
    regions, seen = [], set()
    for number, region in enumerate(params.get("shmem") or []):
        where = f"shmem[{number}]"
        if not _SHMEM_NAME.fullmatch(region["name"]):
            _fail(
                f"{where}: name {region['name']!r} must be letters, digits and . _ - (a file in /dev/shm)",
                name,
            )
        if region["name"] in seen:
            _fail(f"{where}: name {region['name']!r} is given twice", name)
        size = region["size_mib"]
        if size < 1 or size & (size - 1):
            _fail(f"{where}: size_mib must be a power of two (a PCI BAR), got {size}", name)
        seen.add(region["name"])
        regions.append(dict(region))
    return regions


def _hostdevs(params: dict, name: str) -> list[dict]:
    devices, seen = [], set()
    for number, device in enumerate(params.get("hostdevs") or []):
        address = device["address"].lower()
        match = _PCI_ADDRESS.fullmatch(address)
        if not match:
            _fail(
                f"hostdevs[{number}]: address {device['address']!r} is not a PCI address (DDDD:BB:SS.F)", name
            )
        if address in seen:
            _fail(f"hostdevs[{number}]: address {address} is given twice", name)
        seen.add(address)
        domain, bus, slot, function = match.groups()
        devices.append(dict(address=address, domain=domain, bus=bus, slot=slot, function=function))
    return devices


def _fragments(params: dict, name: str) -> list[dict]:
    fragments, seen = [], set()
    for number, fragment in enumerate(params.get("fragments") or []):
        if not _FRAGMENT_NAME.fullmatch(fragment["name"]) or fragment["name"] in seen:
            _fail(
                f"fragments[{number}]: name {fragment['name']!r} must be unique, lower-case letters,"
                " digits and _ (starting with a letter)",
                name,
            )
        seen.add(fragment["name"])
        fragments.append(dict(fragment, xml=""))
    return fragments


def _disks(params: dict, name: str) -> list[dict]:
    disks = [dict(d, seed=False) for d in params.get("disks") or []]
    if params.get("seed"):
        disks.append(
            dict(path=params["seed"], format="raw", target=None, readonly=True, cache=None, seed=True)
        )
    used = {d["target"] for d in disks if d.get("target")}
    free = (t for t in ("vd" + chr(c) for c in range(ord("a"), ord("z") + 1)) if t not in used)
    io_ids = _iothreads(params, name)["ids"]
    writable = 0
    for number, disk in enumerate(disks):
        _absolute(disk["path"], f"disks[{number}].path", name)
        if not disk.get("target"):
            disk["target"] = next(free)
        disk["iothread"] = None
        if io_ids and not disk["readonly"]:  # the writable disks, round-robin over the I/O threads
            disk["iothread"] = io_ids[writable % len(io_ids)]
            writable += 1
    return disks


def template_vars(params: dict) -> dict:
    """Validated options completed for the template: uuid, NIC MACs, disk targets, metadata."""
    name = params["name"]
    job = params.get("job")
    uuid = (params.get("uuid") or "").lower()
    if not uuid and job:
        uuid = naming.domain_uuid(job["id"], job["node"], job["index"])
    if not uuid:
        _fail("uuid or job is required so the domain keeps its UUID between runs", name)
    if params.get("vcpus", 1) < 1 or params.get("memory_mib", 1) < 16:
        _fail(
            "vcpus must be >= 1 and memory_mib >= 16, got {} and {}".format(
                params.get("vcpus"), params.get("memory_mib")
            ),
            name,
        )
    for pin in params.get("cpu_pinning") or []:
        if not 0 <= pin["vcpu"] < params["vcpus"]:
            _fail(f"cpu_pinning: vcpu {pin['vcpu']} does not exist (vcpus: {params['vcpus']})", name)
    boot = params.get("boot")
    if boot:
        _absolute(boot["kernel"], "boot.kernel", name)
        _absolute(boot.get("initrd"), "boot.initrd", name)
    _absolute(params.get("serial_log"), "serial_log", name)
    for pin in params.get("cpu_pinning") or []:
        _cpuset(pin["cpuset"], f"cpu_pinning[vcpu {pin['vcpu']}].cpuset", name)
    _cpuset(params.get("emulator_cpuset"), "emulator_cpuset", name)
    for number, fragment in enumerate(params.get("extra_devices") or []):
        try:
            ET.fromstring(fragment)  # noqa: S314 - the task's own options, parsed only to check them
        except ET.ParseError as exc:
            _fail(f"extra_devices[{number}] is not one XML element: {exc}", name)
    values = dict(params)
    values.update(
        uuid=uuid,
        nics=_nics(params, name),
        disks=_disks(params, name),
        iothreads=_iothreads(params, name),
        shmem=_shmem(params, name),
        hostdevs=_hostdevs(params, name),
        fragments=_fragments(params, name),
        metadata=dict(
            namespace=naming.METADATA_NS,
            prefix=naming.METADATA_PREFIX,
            element=naming.METADATA_ELEMENT,
            job=job,
            addresses=" ".join(params.get("addresses") or []),
        ),
    )
    return values


def check_rendered(values: dict, xml: str) -> None:
    """The rendered definition states every device feature it was given: a site's template
    override that leaves one out fails here instead of silently dropping what the job asked."""
    root = domain_xml.parse(xml, values["name"])
    missing = []
    if values["iothreads"]["count"] and (root.findtext("iothreads") or "").strip() != str(
        values["iothreads"]["count"]
    ):
        missing.append(f"<iothreads>{values['iothreads']['count']}</iothreads> (option iothreads)")
    if values.get("emulator_cpuset") and root.find("cputune/emulatorpin") is None:
        missing.append("<cputune><emulatorpin> (option emulator_cpuset)")
    if values.get("hugepages") and root.find("memoryBacking/hugepages") is None:
        missing.append("<memoryBacking><hugepages/> (option hugepages)")
    names = {elem.get("name") for elem in root.findall("devices/shmem")}
    missing += [
        f"<shmem name='{r['name']}'> (option shmem)" for r in values["shmem"] if r["name"] not in names
    ]
    if len(root.findall("devices/hostdev")) < len(values["hostdevs"]):
        missing.append(f"{len(values['hostdevs'])} <hostdev> (option hostdevs)")
    missing += [f"fragment {f['name']}" for f in values["fragments"] if f["xml"].strip() not in xml]
    if missing:
        _fail("the domain template does not render " + ", ".join(missing), values["name"])
