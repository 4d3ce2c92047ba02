# Copyright: vTorque contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""Semantic comparison of a desired domain definition with libvirt's inactive XML.

libvirt fills in defaults when it stores a definition (controllers, PCI addresses, <console>
for a serial port, memory in KiB), so the stored XML never equals the rendered one. A
definition is up to date when everything the desired XML states is present in the stored
XML (attributes, text, children of each tag in order), with memory compared in KiB, and
when the lists vTorque manages (devices, direct-boot files, CPU pins) have no extra entries.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET

from ansible_collections.mikelangelo.vtorque.plugins.module_utils.errors import InvalidSpec
from ansible_collections.mikelangelo.vtorque.plugins.module_utils.naming import (
    METADATA_ELEMENT,
    METADATA_NS,
)

_MEMORY_TAGS = ("memory", "currentMemory", "maxMemory")
_KIB = {
    "b": 1.0 / 1024,
    "bytes": 1.0 / 1024,
    "k": 1,
    "kib": 1,
    "kb": 1000.0 / 1024,
    "m": 1024,
    "mib": 1024,
    "mb": 1e6 / 1024,
    "g": 1024**2,
    "gib": 1024**2,
    "gb": 1e9 / 1024,
    "t": 1024**3,
    "tib": 1024**3,
    "tb": 1e12 / 1024,
}
# Children whose count must match exactly: an entry removed from the spec must go from the domain.
_EXACT_CHILDREN = {
    "devices": ("disk", "interface", "filesystem", "hostdev", "shmem", "channel", "serial"),
    "os": ("kernel", "initrd", "cmdline"),
    "cputune": ("vcpupin", "emulatorpin", "iothreadpin"),
    "domain": ("memoryBacking", "iothreads", "cputune"),
    "memoryBacking": ("hugepages",),
}
_MACHINE_ALIASES = {"pc": "pc-i440fx-", "q35": "pc-q35-"}
_JOB_TAG = f"{{{METADATA_NS}}}{METADATA_ELEMENT}"


def parse(xml: str, target: str | None = None) -> ET.Element:
    try:
        return ET.fromstring(xml)  # noqa: S314 - libvirt's own XML or the controller's template
    except ET.ParseError as exc:
        raise InvalidSpec(f"domain XML does not parse: {exc}", target=target) from exc


def _normalise_memory(root: ET.Element) -> None:
    for tag in _MEMORY_TAGS:
        for elem in root.findall(tag):
            unit = (elem.get("unit") or "KiB").lower()
            if unit in _KIB and (elem.text or "").strip().isdigit():
                elem.text = str(int(int(elem.text.strip()) * _KIB[unit]))
                elem.set("unit", "KiB")


def _text(elem: ET.Element) -> str:
    return (elem.text or "").strip()


def _attribute_matches(tag: str, key: str, want: str, have: str | None) -> bool:
    """Equal, or a machine alias libvirt stored as the versioned type ("pc" -> "pc-i440fx-7.2")."""
    if have == want:
        return True
    if tag == "type" and key == "machine" and have:
        return have.startswith(_MACHINE_ALIASES.get(want, want + "-"))
    return False


def _describe(elem: ET.Element) -> str:
    attrs = "".join(f" {k}='{v}'" for k, v in sorted(elem.attrib.items()))
    return f"<{elem.tag}{attrs}>"


def _first_difference(want: ET.Element, have: ET.Element, path: str) -> str | None:
    """Where ``have`` fails to state what ``want`` states, or None when it covers it."""
    here = f"{path}/{want.tag}"
    if want.tag != have.tag:
        return f"{here}: element is {have.tag}"
    if _text(want) and _text(want) != _text(have):
        return f"{here}: text {_text(have)!r}, wanted {_text(want)!r}"
    for key, value in want.attrib.items():
        if not _attribute_matches(want.tag, key, value, have.get(key)):
            return f"{here}: attribute {key}={have.get(key)!r}, wanted {value!r}"
    for tag in dict.fromkeys(child.tag for child in want):
        have_children = have.findall(tag)
        position = 0
        for child in want.findall(tag):
            while position < len(have_children) and _first_difference(child, have_children[position], here):
                position += 1
            if position == len(have_children):
                closest = [_first_difference(child, h, here) for h in have_children]
                return closest[0] if len(closest) == 1 else f"{here}: no match for {_describe(child)}"
            position += 1
    for tag in _EXACT_CHILDREN.get(want.tag, ()):
        if len(want.findall(tag)) != len(have.findall(tag)):
            return f"{here}: {len(have.findall(tag))} <{tag}> entries, wanted {len(want.findall(tag))}"
    return None


def difference(desired_xml: str, stored_xml: str) -> str | None:
    """None when the stored (inactive) definition states all the desired one states, else where not."""
    desired, stored = parse(desired_xml), parse(stored_xml)
    _normalise_memory(desired)
    _normalise_memory(stored)
    return _first_difference(desired, stored, "")


def is_up_to_date(desired_xml: str, stored_xml: str) -> bool:
    return difference(desired_xml, stored_xml) is None


def _child_text(xml: str, tag: str) -> str:
    elem = parse(xml).find(tag)
    return _text(elem) if elem is not None else ""


def domain_name(xml: str) -> str:
    return _child_text(xml, "name")


def domain_uuid(xml: str) -> str:
    return _child_text(xml, "uuid").lower()


def job_tag(xml: str) -> dict | None:
    """The attributes of the vtorque job metadata element, or None for a foreign domain."""
    elem = parse(xml).find("metadata/" + _JOB_TAG)
    return dict(elem.attrib) if elem is not None else None


def interface_macs(xml: str) -> list[str]:
    """MACs of libvirt NICs and of user-mode NICs passed through qemu:commandline."""
    root = parse(xml)
    macs = [m.get("address", "").lower() for m in root.findall("devices/interface/mac")]
    for arg in root.iter("{http://libvirt.org/schemas/domain/qemu/1.0}arg"):
        for part in (arg.get("value") or "").split(","):
            if part.startswith("mac="):
                macs.append(part[4:].lower())
    return macs


def memory_kib(xml: str) -> int:
    root = parse(xml)
    _normalise_memory(root)
    return int(_child_text(ET.tostring(root, encoding="unicode"), "memory") or 0)


def uses_hugepages(xml: str) -> bool:
    return parse(xml).find("memoryBacking/hugepages") is not None


def disk_sources(xml: str) -> list[str]:
    return [s.get("file") for s in parse(xml).findall("devices/disk/source") if s.get("file")]
