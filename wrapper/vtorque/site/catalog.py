"""The image catalog (`images.yml`): admin-approved base images users pick by name.

File format::

    images:
      debian12:
        path: /srv/vtorque/images/debian12.qcow2   # absolute, root-owned, not group/other-writable
        format: qcow2                               # qcow2 | raw
        distro: debian
        checksum: sha256:<hex>                      # recorded by `vtorque images add`
        description: Debian 12 with OpenMPI
        kernel: /srv/.../vmlinuz                    # optional: direct kernel boot
        initrd: /srv/.../initrd.img
        cmdline: console=ttyS0 root=/dev/vda
        start: snapshot                             # optional: VMs from a saved template (default: boot)

The catalog file and every file it names must be root-owned and not writable by group or
others; `load_catalog` checks the catalog file, `verify_image_files` the image files (root
code calls it again right before using them).
"""

import hashlib
import json
import os
import re
import subprocess
from dataclasses import asdict, dataclass

from ansible_collections.mikelangelo.vtorque.plugins.module_utils.files import write_atomic

from vtorque.errors import CatalogError, VTorqueError
from vtorque.site.config import DISTROS
from vtorque.trust import check_trusted_path, read_trusted

MAX_BYTES = 1024 * 1024
FORMATS = ("qcow2", "raw")
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,62}")
QCOW2_MAGIC = b"QFI\xfb"
QCOW2_EXTERNAL_DATA_FILE = 1 << 2  # incompatible feature bit: data lives in another (host) file
QCOW2_HEADER_BYTES = 64 * 1024  # header, extensions and backing file name all fit in the first cluster
SECTOR_BYTES = 512
QEMU_IMG_TIMEOUT = 60  # seconds; `info` reads a few header clusters, not the image
_FIELDS = ("path", "format", "distro", "checksum", "description", "kernel", "initrd", "cmdline", "start")
STARTS = ("boot", "snapshot")  # how a job's VMs start: a fresh boot, or from a saved template
_PATH_FIELDS = ("path", "kernel", "initrd")


@dataclass(frozen=True)
class ImageEntry:
    name: str
    path: str
    format: str
    distro: str
    checksum: str | None = None
    description: str = ""
    kernel: str | None = None
    initrd: str | None = None
    cmdline: str | None = None
    start: str | None = None  # None: boot

    def to_yaml_dict(self):
        return {key: value for key, value in asdict(self).items() if key != "name" and value is not None}


def check_name(name):
    """Catalog names are plain words: no slash, no `..`, nothing a path could be built from."""
    if not isinstance(name, str) or not NAME_RE.fullmatch(name) or ".." in name:
        raise CatalogError(
            f"image name {name!r} is not valid: use letters, digits and . _ + - (no '..', no '/',"
            " at most 63 characters)"
        )
    return name


def load_catalog(path):
    """{name: ImageEntry} from the catalog file; CatalogError naming the file and key."""
    import yaml

    try:
        raw = read_trusted(path, owner_uid=0, max_bytes=MAX_BYTES, what="image catalog")
    except VTorqueError as err:
        raise CatalogError(str(err)) from None
    try:
        data = yaml.load(raw, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))  # noqa: S506
    except yaml.YAMLError as err:
        raise CatalogError(f"image catalog {path}: not valid YAML: {err}") from None
    data = {"images": {}} if data is None else data
    if not isinstance(data, dict) or set(data) != {"images"} or not isinstance(data["images"], dict | None):
        raise CatalogError(f"image catalog {path}: expected one top-level key 'images' holding a mapping")
    return {name: _entry(path, name, fields) for name, fields in (data["images"] or {}).items()}


def _entry(path, name, fields):
    where = f"image catalog {path}: images.{name}"
    try:
        check_name(name)
    except CatalogError as err:
        raise CatalogError(f"{where}: {err}") from None
    if not isinstance(fields, dict):
        raise CatalogError(f"{where}: expected a mapping of {', '.join(_FIELDS)}")
    unknown = set(fields) - set(_FIELDS)
    if unknown:
        raise CatalogError(
            f"{where}: unknown key(s) {', '.join(sorted(unknown))} (known: {', '.join(_FIELDS)})"
        )
    for key, value in fields.items():
        if value is not None and not isinstance(value, str):
            raise CatalogError(f"{where}.{key}: expected a string, got {value!r}")
        if (
            key in _PATH_FIELDS
            and value is not None
            and (not value.startswith("/") or ".." in value.split("/"))
        ):
            raise CatalogError(f"{where}.{key}: expected an absolute path without '..', got {value!r}")
    if "path" not in fields:
        raise CatalogError(f"{where}: 'path' is required")
    if fields.get("format", "qcow2") not in FORMATS:
        raise CatalogError(f"{where}.format: expected one of {', '.join(FORMATS)}, got {fields['format']!r}")
    if fields.get("distro") not in DISTROS:
        raise CatalogError(
            f"{where}.distro: expected one of {', '.join(DISTROS)}, got {fields.get('distro')!r}"
        )
    if bool(fields.get("kernel")) != bool(fields.get("initrd")) or (
        fields.get("cmdline") and not fields.get("kernel")
    ):
        raise CatalogError(f"{where}: direct kernel boot needs both kernel and initrd (cmdline is optional)")
    if fields.get("start", "boot") not in STARTS:
        raise CatalogError(f"{where}.start: expected one of {', '.join(STARTS)}, got {fields['start']!r}")
    if fields.get("start") == "snapshot" and not fields.get("kernel"):
        raise CatalogError(
            f"{where}.start: snapshot needs direct kernel boot (kernel and initrd): the template's guest"
            " is told to wait on its kernel command line"
        )
    checksum = fields.get("checksum")
    if checksum is not None and not re.fullmatch(r"sha256:[0-9a-f]{64}", checksum):
        raise CatalogError(f"{where}.checksum: expected sha256:<64 hex digits>, got {checksum!r}")
    return ImageEntry(name=name, **{"format": "qcow2", "description": "", **fields})


def verify_image_files(entry, owner_uid=0):
    """Every file of the entry exists, is no link, is owned by `owner_uid` and not writable by
    group or others. Root calls this right before building a VM on the image."""
    for key in _PATH_FIELDS:
        value = getattr(entry, key)
        if value:
            try:
                check_trusted_path(value, owner_uid=owner_uid, what=f"image {entry.name!r} {key}")
            except VTorqueError as err:
                raise CatalogError(str(err)) from None


def file_checksum(path):
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return f"sha256:{digest.hexdigest()}"


def probe_format(path):
    """The format qemu-img detects for image file `path`, if vTorque can run it: a standalone
    qcow2 or a raw disk; CatalogError naming the file otherwise. QEMU opens catalog images with
    the recorded format, so a wrong one would only show when VMs fail to start."""
    detected = _qemu_img_format(path)
    if detected not in FORMATS:
        raise CatalogError(
            f"{path} is a {detected} image (qemu-img info); vTorque accepts {' or '.join(FORMATS)}"
            f" (qemu-img convert -O qcow2 {path} NEW.qcow2 converts it)"
        )
    if detected == "raw":
        _check_whole_sectors(path)
    else:
        with open(path, "rb") as handle:
            references = qcow2_external_references(handle.read(QCOW2_HEADER_BYTES))
        if references:
            raise CatalogError(
                f"{path} refers to {' and '.join(references)}; catalog images must be self-contained"
                f" (qemu-img convert -O qcow2 {path} NEW.qcow2 flattens it)"
            )
    return detected


def _qemu_img_format(path):
    # No -f, so qemu-img detects the format; -U, so an image a running VM has locked can be
    # probed. The path is absolute: qemu-img would read "json:{...}" or "nbd:..." as a protocol.
    argv = ["qemu-img", "info", "-U", "--output=json", os.path.abspath(path)]
    try:
        done = subprocess.run(
            argv,
            capture_output=True,
            text=True,
            timeout=QEMU_IMG_TIMEOUT,
            check=False,
            stdin=subprocess.DEVNULL,
        )
    except (OSError, subprocess.SubprocessError) as err:
        raise CatalogError(f"cannot probe the format of {path} with qemu-img info: {err}") from None
    if done.returncode != 0:
        problem = done.stderr.strip() or f"exit status {done.returncode}"
        raise CatalogError(f"{path} is not a disk image qemu-img can open: {problem}")
    try:
        return json.loads(done.stdout)["format"]
    except (ValueError, KeyError, TypeError):
        raise CatalogError(f"qemu-img info {path}: no format in its output {done.stdout[:200]!r}") from None


def _check_whole_sectors(path):
    # qemu-img reports "raw" for any file it does not recognise (text, random bytes), so that
    # alone proves nothing. But a disk is addressed in whole sectors, so every raw disk image
    # is a whole number of them; an empty or ragged file was never a disk.
    size = os.path.getsize(path)
    if size == 0 or size % SECTOR_BYTES:
        raise CatalogError(
            f"{path} is not a disk image: qemu-img finds no image format in it, and as a raw disk"
            f" it would have to be a non-empty multiple of {SECTOR_BYTES} bytes, not {size} bytes"
        )


def virtual_size_mib(path):
    """The guest-visible size of an image (qcow2 header, or a raw file's length), in MiB."""
    with open(path, "rb") as handle:
        header = handle.read(32)
    size = int.from_bytes(header[24:32], "big") if header[:4] == QCOW2_MAGIC else os.path.getsize(path)
    return -(-size // (1 << 20))


def qcow2_external_references(header):
    """What a qcow2 header makes QEMU open besides the image itself: a backing file and/or an
    external data file. Both are host paths chosen by whoever wrote the image, so a user image
    carrying either could read any host file into the guest."""
    found = []
    backing_offset = int.from_bytes(header[8:16], "big")
    backing_size = int.from_bytes(header[16:20], "big")
    if backing_offset:
        name = header[backing_offset : backing_offset + backing_size].decode("utf-8", "replace")
        found.append(f"backing file {name!r}")
    version = int.from_bytes(header[4:8], "big")
    incompatible_features = int.from_bytes(header[72:80], "big") if version >= 3 else 0
    if incompatible_features & QCOW2_EXTERNAL_DATA_FILE:
        found.append("an external data file")
    return found


def save_catalog(path, entries):
    """Write the catalog atomically (temp file + rename), root-owned, mode 0644."""
    import yaml

    body = {"images": {name: entries[name].to_yaml_dict() for name in sorted(entries)}}
    text = "# vTorque image catalog; edit with `vtorque images add|remove`.\n" + yaml.safe_dump(
        body, sort_keys=True, default_flow_style=False
    )
    write_atomic(os.path.abspath(path), text, 0o644, sync=True)
