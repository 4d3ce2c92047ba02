# Copyright: vTorque contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""Typed options of vm_domain: the argument spec (shared by the module and its action plugin)
and ``template_vars``, which completes them (stable UUID and MACs, disk targets) for the
domain template."""

from __future__ import annotations

import ipaddress
import os.path
import xml.etree.ElementTree as ET

from ansible_collections.mikelangelo.vtorque.plugins.module_utils import naming
from ansible_collections.mikelangelo.vtorque.plugins.module_utils.common import URI_ARGSPEC
from ansible_collections.mikelangelo.vtorque.plugins.module_utils.errors import InvalidSpec

STATES = ("present", "running", "shutdown", "absent")
DEFINING_STATES = ("present", "running")
USER_NET = "10.0.2.0/24"
# User-mode NICs are passed through qemu:commandline; they take PCI slots from the top down so
# libvirt's own automatic slot assignment (from slot 2 up) never collides with them.
USER_NIC_FIRST_SLOT = 0x1F

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


def _disks(params: dict, name: str) -> list[dict]:
    disks = [dict(d, seed=False) for d in params.get("disks") or []]
    if params.get("seed"):
        disks.append(
            dict(path=params["seed"], format="raw", target=None, readonly=True, cache=None, seed=True)
        )
    used = {d["target"] for d in disks if d.get("target")}
    free = (t for t in ("vd" + chr(c) for c in range(ord("a"), ord("z") + 1)) if t not in used)
    for number, disk in enumerate(disks):
        _absolute(disk["path"], f"disks[{number}].path", name)
        if not disk.get("target"):
            disk["target"] = next(free)
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
        metadata=dict(
            namespace=naming.METADATA_NS,
            prefix=naming.METADATA_PREFIX,
            element=naming.METADATA_ELEMENT,
            job=job,
            addresses=" ".join(params.get("addresses") or []),
        ),
    )
    return values
