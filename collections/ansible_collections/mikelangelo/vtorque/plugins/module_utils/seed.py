# Copyright: vTorque contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""NoCloud seed files and a deterministic ISO9660 (+ Joliet) ``cidata`` image.

genisoimage stamps the current time into every image, so identical input would not give
identical bytes (and nodes would need the tool). A flat root directory of a few small files
is all a NoCloud seed needs, which keeps a writer small enough to own: ISO9660 level 1 names
in the primary tree, the real names in a Joliet tree (what Linux, blkid and cloud-init read),
fixed timestamps, files in name order. Standard library and this collection's module_utils
only: the host-side plan imports it too.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import struct

from ansible_collections.mikelangelo.vtorque.plugins.module_utils.errors import InvalidSpec
from ansible_collections.mikelangelo.vtorque.plugins.module_utils.files import write_atomic

SEED_LABEL = "cidata"
SECTOR = 2048
_SYSTEM_AREA_SECTORS = 16
# 1980-01-01 00:00:00 UTC for every directory record; volume dates are "not specified".
_RECORD_DATE = bytes((80, 1, 1, 0, 0, 0, 0))
_UNSET_VOLUME_DATE = b"0" * 16 + b"\x00"
_JOLIET_ESCAPE = b"%/E"  # UCS-2 level 3
_ISO_UNSAFE = re.compile(r"[^A-Z0-9_]")
_SEED_NAME = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


class SeedError(InvalidSpec, ValueError):
    """A seed could not be built from the given input."""


def _dump(obj) -> bytes:
    return (json.dumps(obj, sort_keys=True, indent=2) + "\n").encode("utf-8")


def render_seed_files(meta_data: dict, user_data: dict, network_config: dict | None) -> dict[str, bytes]:
    """The NoCloud files for a seed: JSON (valid YAML), key-sorted, so output is deterministic."""
    for key, value in (("meta_data", meta_data), ("user_data", user_data)):
        if not isinstance(value, dict):
            raise SeedError(f"{key} must be a mapping, got {type(value).__name__}")
    if network_config is not None and not isinstance(network_config, dict):
        raise SeedError(f"network_config must be a mapping or None, got {type(network_config).__name__}")
    files = {
        "meta-data": _dump(meta_data),
        "user-data": b"#cloud-config\n" + _dump(user_data),
    }
    if network_config is not None:
        files["network-config"] = _dump(network_config)
    return files


def _both16(value: int) -> bytes:
    return struct.pack("<H", value) + struct.pack(">H", value)


def _both32(value: int) -> bytes:
    return struct.pack("<I", value) + struct.pack(">I", value)


def _sectors(size: int) -> int:
    return (size + SECTOR - 1) // SECTOR


def _dir_record(identifier: bytes, extent: int, size: int, is_dir: bool) -> bytes:
    length = 33 + len(identifier)
    padding = b"\x00" if length % 2 else b""
    return (
        bytes((length + len(padding), 0))
        + _both32(extent)
        + _both32(size)
        + _RECORD_DATE
        + bytes((2 if is_dir else 0, 0, 0))
        + _both16(1)
        + bytes((len(identifier),))
        + identifier
        + padding
    )


def _iso_name(name: str) -> bytes:
    """ISO9660 level 1 (8.3, d-characters) stand-in for readers without Joliet."""
    stem, dot, ext = name.upper().rpartition(".")
    if not dot:
        stem, ext = ext, ""
    return ("{}.{};1".format(_ISO_UNSAFE.sub("_", stem)[:8], _ISO_UNSAFE.sub("_", ext)[:3])).encode("ascii")


def _joliet_name(name: str) -> bytes:
    return name.encode("utf-16-be")


def _directory(entries: list[tuple[bytes, int, int]], own_extent: int, own_size: int) -> bytes:
    """Directory extent: ".", "..", then entries (sorted), no record crossing a sector."""
    records = [
        _dir_record(b"\x00", own_extent, own_size, True),
        _dir_record(b"\x01", own_extent, own_size, True),
    ]
    records += [_dir_record(ident, extent, size, False) for ident, extent, size in sorted(entries)]
    out = b""
    for record in records:
        if len(out) % SECTOR + len(record) > SECTOR:
            out += b"\x00" * (SECTOR - len(out) % SECTOR)
        out += record
    return out


def _directory_size(entry_names: list[bytes]) -> int:
    return _sectors(len(_directory([(n, 0, 0) for n in entry_names], 0, 0))) * SECTOR


def _path_table(root_extent: int, big_endian: bool) -> bytes:
    fmt = ">" if big_endian else "<"
    return bytes((1, 0)) + struct.pack(fmt + "IH", root_extent, 1) + b"\x00\x00"


def _text(value: str, length: int, joliet: bool) -> bytes:
    if joliet:
        raw = value.encode("utf-16-be")
        return raw[:length] + b"\x00 " * ((length - len(raw[:length])) // 2)
    return value.encode("ascii")[:length].ljust(length, b" ")


def _volume_descriptor(
    joliet: bool,
    volume_sectors: int,
    path_table_size: int,
    l_table: int,
    m_table: int,
    root_extent: int,
    root_size: int,
) -> bytes:
    def text(value, length):
        return _text(value, length, joliet)

    vd = (
        bytes((2 if joliet else 1,))
        + b"CD001"
        + b"\x01\x00"
        + text("LINUX", 32)
        + text(SEED_LABEL, 32)
        + b"\x00" * 8
        + _both32(volume_sectors)
        + (_JOLIET_ESCAPE.ljust(32, b"\x00") if joliet else b"\x00" * 32)
        + _both16(1)
        + _both16(1)
        + _both16(SECTOR)
        + _both32(path_table_size)
        + struct.pack("<I", l_table)
        + b"\x00" * 4
        + struct.pack(">I", m_table)
        + b"\x00" * 4
        + _dir_record(b"\x00", root_extent, root_size, True)
        + text("", 128)
        + text("", 128)
        + text("", 128)
        + text("VTORQUE", 128)
        + text("", 37)
        + text("", 37)
        + text("", 37)
        + _UNSET_VOLUME_DATE * 4
        + b"\x01\x00"
    )
    return vd.ljust(SECTOR, b"\x00")


def build_seed_image(files: dict[str, bytes]) -> bytes:
    """The ISO9660 image holding ``files`` in its root, volume id ``cidata``; pure function."""
    if not files:
        raise SeedError("a seed image needs at least one file")
    for name, data in files.items():
        if not isinstance(name, str) or not _SEED_NAME.match(name):
            raise SeedError(f"seed file name {name!r} is not a plain file name ([A-Za-z0-9._-], 1-64 chars)")
        if not isinstance(data, bytes):
            raise SeedError(f"seed file {name!r} must be bytes, got {type(data).__name__}")
    names = sorted(files)
    iso_names = {name: _iso_name(name) for name in names}
    if len(set(iso_names.values())) != len(names):
        raise SeedError("seed file names {} clash in ISO9660 8.3 form".format(", ".join(names)))

    path_table_size = 10
    primary_dir_size = _directory_size(list(iso_names.values()))
    joliet_dir_size = _directory_size([_joliet_name(n) for n in names])
    # Sectors: 16 system, PVD, SVD, terminator, 4 path tables, two root directories, file data.
    primary_dir = _SYSTEM_AREA_SECTORS + 7
    joliet_dir = primary_dir + primary_dir_size // SECTOR
    extent = joliet_dir + joliet_dir_size // SECTOR
    extents = {}
    for name in names:
        extents[name] = extent
        extent += _sectors(len(files[name]))
    volume_sectors = extent

    primary_entries = [(iso_names[n], extents[n], len(files[n])) for n in names]
    joliet_entries = [(_joliet_name(n), extents[n], len(files[n])) for n in names]
    out = bytearray(b"\x00" * SECTOR * _SYSTEM_AREA_SECTORS)
    out += _volume_descriptor(False, volume_sectors, path_table_size, 19, 20, primary_dir, primary_dir_size)
    out += _volume_descriptor(True, volume_sectors, path_table_size, 21, 22, joliet_dir, joliet_dir_size)
    out += (b"\xff" + b"CD001" + b"\x01").ljust(SECTOR, b"\x00")
    for root, big_endian in (
        (primary_dir, False),
        (primary_dir, True),
        (joliet_dir, False),
        (joliet_dir, True),
    ):
        out += _path_table(root, big_endian).ljust(SECTOR, b"\x00")
    out += _directory(primary_entries, primary_dir, primary_dir_size).ljust(primary_dir_size, b"\x00")
    out += _directory(joliet_entries, joliet_dir, joliet_dir_size).ljust(joliet_dir_size, b"\x00")
    for name in names:
        out += files[name].ljust(_sectors(len(files[name])) * SECTOR, b"\x00")
    return bytes(out)


def write_seed_image(files: dict[str, bytes], path: str) -> None:
    """Write the seed image atomically, 0600: it holds the VM's private host key (libvirt hands
    it to QEMU)."""
    write_atomic(path, build_seed_image(files), 0o600, sync=True)


def _describe(files: dict[str, bytes]) -> str:
    return "".join("--- {}\n{}".format(name, files[name].decode("utf-8")) for name in sorted(files))


def ensure_seed(params: dict, check_mode: bool, want_diff: bool = False) -> dict:
    """vm_seed: write the image when its bytes differ; remove it for state absent."""
    path = params["path"]
    if not path or not os.path.isabs(path):
        raise SeedError(f"path must be an absolute path, got {path!r}")
    exists = os.path.lexists(path)
    if exists and (os.path.islink(path) or not os.path.isfile(path)):
        raise SeedError(f"{path} exists and is not a regular file; refusing to replace it")
    current = None
    if exists:
        with open(path, "rb") as handle:
            current = handle.read()
    result = dict(changed=False, path=path)
    if params["state"] == "absent":
        if exists:
            result["changed"] = True
            if want_diff:
                result["diff"] = dict(before=f"seed image {path}\n", after="")
            if not check_mode:
                os.unlink(path)
        return result
    if params.get("meta_data") is None:
        raise SeedError("meta_data is required for state present (at least instance-id)")
    files = render_seed_files(
        params["meta_data"], params.get("user_data") or {}, params.get("network_config")
    )
    image = build_seed_image(files)
    result["files"] = sorted(files)
    result["sha256"] = hashlib.sha256(image).hexdigest()
    if current == image:
        return result
    before = "" if current is None else f"seed image sha256 {hashlib.sha256(current).hexdigest()}\n"
    result["changed"] = True
    if want_diff:
        result["diff"] = dict(before=before, after=_describe(files))
    if not check_mode:
        if not os.path.isdir(os.path.dirname(path)):
            raise SeedError(f"directory {os.path.dirname(path)} does not exist")
        write_seed_image(files, path)
    return result
