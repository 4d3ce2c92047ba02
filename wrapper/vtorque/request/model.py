"""The VM request: the `-vm key=value,...` grammar, resolution against site config and catalog,
and the request file root reads back (`load_request`).

Every value goes through `resolve_request`, at submission (vsub, as the user) and again in the
hook (as root, from request.json), so both sides apply exactly the same rules.
"""

import json
import os
import re
from dataclasses import asdict, dataclass

from vtorque.errors import CatalogError, RequestError, VTorqueError
from vtorque.owner_side import owner_side
from vtorque.site.catalog import (
    QCOW2_HEADER_BYTES,
    QCOW2_MAGIC,
    ImageEntry,
    check_name,
    load_catalog,
    qcow2_external_references,
)
from vtorque.site.config import DISTROS, FS_TYPES
from vtorque.values import BOOL_ACCEPTED, SIZE_ACCEPTED, parse_bool, parse_count, parse_size_mib

REQUEST_VERSION = 1
MAX_REQUEST_BYTES = 256 * 1024
MAX_METADATA_BYTES = 64 * 1024
MAX_METADATA_DEPTH = 32  # cloud-config nests a few levels; PyYAML's composer recurses per level
USER_IMAGE_SUFFIXES = (".qcow2", ".img", ".raw")

KEYS = (
    "img",
    "distro",
    "ram",
    "vcpus",
    "vms_per_node",
    "arch",
    "vcpu_pinning",
    "disk",
    "fs_type",
    "vm_prologue",
    "vm_epilogue",
    "metadata",
    "vrdma",
    "unclot",
    "unclot_shmem",
    "iocm",
    "iocm_min_cores",
    "iocm_max_cores",
)


@dataclass(frozen=True)
class VMRequest:
    """A resolved, validated request (sizes in MiB; paths absolute)."""

    image: ImageEntry
    distro: str
    ram_mib: int
    vcpus: int
    vms_per_node: int
    arch: str
    vcpu_pinning: bool
    disk_mib: int | None
    fs_type: str
    vm_prologue: str | None
    vm_epilogue: str | None
    metadata: str | None
    vrdma: bool
    unclot: bool
    unclot_shmem_mib: int
    iocm: bool
    iocm_min_cores: int
    iocm_max_cores: int
    user_image: bool = False

    def cores_per_node(self, config):
        """Cores the job needs on each node: host reserve + all VMs' vCPUs (+ IOcm cores)."""
        iocm = self.iocm_max_cores if self.iocm else 0
        return config.host_reserve.cores + self.vcpus * self.vms_per_node + iocm

    def ram_mib_per_node(self, config):
        return config.host_reserve.ram_mib + self.ram_mib * self.vms_per_node

    def to_dict(self):
        return asdict(self)

    def as_options(self):
        """The request in `-vm` spelling, which `resolve_request` turns back into this request."""
        options = {
            "img": self.image.path if self.user_image else self.image.name,
            "distro": self.distro,
            "ram": f"{self.ram_mib}M",
            "vcpus": str(self.vcpus),
            "vms_per_node": str(self.vms_per_node),
            "arch": self.arch,
            "fs_type": self.fs_type,
            "unclot_shmem": f"{self.unclot_shmem_mib}M",
            "iocm_min_cores": str(self.iocm_min_cores),
            "iocm_max_cores": str(self.iocm_max_cores),
        }
        for key in ("vcpu_pinning", "vrdma", "unclot", "iocm"):
            options[key] = "true" if getattr(self, key) else "false"
        for key in ("vm_prologue", "vm_epilogue", "metadata"):
            if getattr(self, key):
                options[key] = getattr(self, key)
        if self.disk_mib:
            options["disk"] = f"{self.disk_mib}M"
        return options


def parse_vm_values(values):
    """[(text, source)] of `-vm` values -> {key: (value, source)}; keys case-insensitive, a
    later value for the same key wins (callers put the command line last so it wins)."""
    options = {}
    for text, source in values:
        if not text.strip():
            raise RequestError("empty value; expected key=value[,key=value...]", source=source)
        for item in text.split(","):
            key, sep, value = item.partition("=")
            key = key.strip().lower()
            if not sep or not key or not value.strip():
                raise RequestError(f"{item!r} is not key=value (values cannot contain commas)", source=source)
            if key not in KEYS:
                raise RequestError(
                    "unknown key", key=key, value=value, accepted=f"keys {', '.join(KEYS)}", source=source
                )
            options[key] = (value.strip(), source)
    return options


def resolve_request(options, config, *, owner_uid, cwd, catalog=None):
    """VMRequest from {key: (value, source)} plus site defaults, checked against limits and
    policy. `catalog` ({name: ImageEntry}) is loaded from config.images when not given."""
    defaults, limits, policy = config.defaults, config.limits, config.policy
    config_source = f"site config {config.source}"

    def get(key, parse, default, accepted):
        if key not in options:
            return default, f"{config_source} (defaults.{key})"
        value, source = options[key]
        try:
            return parse(value), source
        except ValueError as err:
            message = str(err)
            accepted = None if accepted in message else accepted
            raise RequestError(message, key=key, value=value, accepted=accepted, source=source) from None

    def at_most(key, value, source, limit_key):
        limit = getattr(limits, limit_key)
        if value is not None and value > limit:
            raise RequestError(
                f"{value} is above the site limit limits.{limit_key} = {limit}",
                key=key,
                value=options.get(key, (value,))[0],
                source=source,
            )

    def switch(key, default):
        value, source = get(key, parse_bool, default, BOOL_ACCEPTED)
        if value and not getattr(policy, key):
            raise RequestError(
                f"{key} is disabled on this site (policy.{key}: false)",
                key=key,
                value=options[key][0] if key in options else "true",
                source=source,
            )
        return value, source

    ram, ram_src = get("ram", parse_size_mib, defaults.ram, SIZE_ACCEPTED)
    vcpus, vcpus_src = get("vcpus", parse_count, defaults.vcpus, "a whole number >= 1")
    vms, vms_src = get("vms_per_node", parse_count, defaults.vms_per_node, "a whole number >= 1")
    disk, disk_src = get("disk", parse_size_mib, defaults.disk, SIZE_ACCEPTED)
    shmem, shmem_src = get("unclot_shmem", parse_size_mib, defaults.unclot_shmem, SIZE_ACCEPTED)
    iocm_min, _ = get("iocm_min_cores", parse_count, defaults.iocm_min_cores, "a whole number >= 1")
    iocm_max, iocm_max_src = get(
        "iocm_max_cores", parse_count, defaults.iocm_max_cores, "a whole number >= 1"
    )
    at_most("ram", ram, ram_src, "max_ram_mib")
    at_most("vcpus", vcpus, vcpus_src, "max_vcpus")
    at_most("vms_per_node", vms, vms_src, "max_vms_per_node")
    at_most("disk", disk, disk_src, "max_disk_mib")
    at_most("unclot_shmem", shmem, shmem_src, "max_unclot_shmem_mib")
    at_most("iocm_max_cores", iocm_max, iocm_max_src, "max_iocm_cores")
    if iocm_min > iocm_max:
        raise RequestError(
            f"iocm_min_cores {iocm_min} is above iocm_max_cores {iocm_max}",
            key="iocm_min_cores",
            value=str(iocm_min),
            source=iocm_max_src,
        )

    arch, _ = get("arch", _choice(("x86_64",)), defaults.arch, "x86_64")
    fs_type, _ = get("fs_type", _choice(FS_TYPES), defaults.fs_type, ", ".join(FS_TYPES))
    pinning, _ = get("vcpu_pinning", parse_bool, defaults.vcpu_pinning, BOOL_ACCEPTED)
    distro, distro_src = get("distro", _choice(DISTROS), defaults.distro, ", ".join(DISTROS))
    image, user_image = _resolve_image(
        options,
        config,
        distro if "distro" in options else None,
        owner_uid=owner_uid,
        cwd=cwd,
        catalog=catalog,
    )
    if "distro" in options and not user_image and distro != image.distro:
        raise RequestError(
            f"image {image.name!r} is a {image.distro} image",
            key="distro",
            value=options["distro"][0],
            source=distro_src,
        )
    distro = distro if user_image else image.distro
    if distro is None:
        raise RequestError(
            "a user image needs distro=",
            key="img",
            value=image.path,
            accepted=", ".join(DISTROS),
            source=options["img"][1],
        )

    vrdma, _ = switch("vrdma", defaults.vrdma)
    unclot, unclot_src = switch("unclot", defaults.unclot)
    if unclot and distro != "osv":
        raise RequestError(
            f"UNCLOT works only for OSv guests, this request's distro is {distro}",
            key="unclot",
            value=options.get("unclot", ("true",))[0],
            source=unclot_src,
        )
    iocm, _ = switch("iocm", defaults.iocm)

    return VMRequest(
        image=image,
        distro=distro,
        ram_mib=ram,
        vcpus=vcpus,
        vms_per_node=vms,
        arch=arch,
        vcpu_pinning=pinning,
        disk_mib=disk,
        fs_type=fs_type,
        vm_prologue=_user_file(options, "vm_prologue", cwd, owner_uid, executable=True),
        vm_epilogue=_user_file(options, "vm_epilogue", cwd, owner_uid, executable=True),
        metadata=_metadata_file(options, cwd, owner_uid),
        vrdma=vrdma,
        unclot=unclot,
        unclot_shmem_mib=shmem,
        iocm=iocm,
        iocm_min_cores=iocm_min,
        iocm_max_cores=iocm_max,
        user_image=user_image,
    )


def _choice(choices):
    def parse(value):
        word = value.strip().lower()
        if word not in choices:
            raise ValueError("not one of the accepted values")
        return word

    return parse


def _resolve_image(options, config, distro, *, owner_uid, cwd, catalog):
    """(ImageEntry, is_user_image). Names come from the catalog; a path only when
    policy.allow_user_images, then it must be the owner's own regular file (no link).
    Without img=, defaults.img is used unless distro= asks for another distro; then the one
    catalog image of that distro is."""
    if "img" in options:
        value, source = options["img"]
        if "/" in value or value.startswith("."):
            if not config.policy.allow_user_images:
                raise RequestError(
                    "image paths are not allowed on this site (policy.allow_user_images: false)",
                    key="img",
                    value=value,
                    accepted="a catalog name, see `vtorque images list`",
                    source=source,
                )
            return _user_image(value, source, distro, owner_uid, cwd), True
    catalog = load_catalog(config.images) if catalog is None else catalog
    if "img" not in options:
        value, source = config.defaults.img, f"site config {config.source} (defaults.img)"
        if distro and (value not in catalog or catalog[value].distro != distro):
            matches = sorted(name for name, entry in catalog.items() if entry.distro == distro)
            if len(matches) != 1:
                raise RequestError(
                    f"distro {distro} matches {len(matches)} catalog images; choose one with img=",
                    key="distro",
                    value=distro,
                    accepted=", ".join(sorted(catalog)) or "(catalog is empty)",
                    source=options["distro"][1],
                )
            return catalog[matches[0]], False
        if value is None:
            raise RequestError(
                "no image given and the site has no defaults.img",
                key="img",
                accepted=", ".join(sorted(catalog)) or "(catalog is empty)",
                source="command line",
            )
    try:
        check_name(value)
    except CatalogError as err:
        raise RequestError(str(err), key="img", value=value, source=source) from None
    if value not in catalog:
        raise RequestError(
            f"no image named {value!r} in the catalog {config.images}",
            key="img",
            value=value,
            accepted=", ".join(sorted(catalog)) or "(catalog is empty)",
            source=source,
        )
    return catalog[value], False


def _user_image(value, source, distro, owner_uid, cwd):
    path = os.path.normpath(os.path.join(cwd, value))
    if ".." in value.split("/"):
        raise RequestError("'..' is not allowed in an image path", key="img", value=value, source=source)
    if not path.endswith(USER_IMAGE_SUFFIXES):
        raise RequestError(
            "not an image file name",
            key="img",
            value=value,
            accepted=f"a file ending in {', '.join(USER_IMAGE_SUFFIXES)}",
            source=source,
        )
    from vtorque.trust import check_trusted_path

    try:
        check_trusted_path(path, owner_uid=owner_uid, what="user image")
    except VTorqueError as err:
        raise RequestError(str(err), key="img", value=value, source=source) from None
    image_format = _check_user_image_content(path, value, source, owner_uid)
    return ImageEntry(
        name=os.path.basename(path),
        path=path,
        format=image_format,
        distro=distro or "",
        description="user image",
    )


def _check_user_image_content(path, value, source, owner_uid):
    """The image's format; a qcow2 that would make QEMU open other host files is refused."""
    from vtorque.trust import read_head

    try:
        header = read_head(path, owner_uid=owner_uid, size=QCOW2_HEADER_BYTES, what="user image")
    except VTorqueError as err:
        raise RequestError(str(err), key="img", value=value, source=source) from None
    if not header.startswith(QCOW2_MAGIC):
        return "raw"
    references = qcow2_external_references(header)
    if references:
        raise RequestError(
            f"the qcow2 image refers to {' and '.join(references)}; user images must be self-contained",
            key="img",
            value=value,
            accepted="a standalone image (qemu-img convert -O qcow2 IMAGE NEW.qcow2 flattens it)",
            source=source,
        )
    return "qcow2"


def _user_file(options, key, cwd, owner_uid, executable=False):
    """Absolute path of a file the user names; it must be the user's own (root may act on it)."""
    if key not in options:
        return None
    value, source = options[key]
    path, problem, is_executable = _look_at_user_file(os.path.join(cwd, value), owner_uid=owner_uid, what=key)
    if problem == "missing":
        raise RequestError(
            "no such file", key=key, value=value, accepted="an existing regular file", source=source
        )
    if problem:
        raise RequestError(problem, key=key, value=value, accepted="your own file", source=source)
    if executable and not is_executable:
        raise RequestError(
            "the file is not executable",
            key=key,
            value=value,
            accepted="an executable file (chmod +x)",
            source=source,
        )
    return path


@owner_side
def _look_at_user_file(path, *, owner_uid, what):
    """[real path, problem or None, executable], seen as the owner sees it (root acts as them)."""
    from vtorque.trust import check_trusted_path

    path = os.path.realpath(path)
    if not os.path.isfile(path):
        return [path, "missing", False]
    try:
        check_trusted_path(path, owner_uid=owner_uid, what=f"{what} file")
    except VTorqueError as err:
        return [path, str(err), False]
    return [path, None, os.access(path, os.X_OK)]


def parse_metadata(text):
    """The user's cloud-config mapping. Checked on the parser's events (a flat loop) before
    anything recursive sees it: aliases are refused, as 64 KiB of nested aliases expand to
    gigabytes once the root prologue writes the seed (a "billion laughs"); so is nesting deeper
    than MAX_METADATA_DEPTH, which would blow the composer's (and the seed writer's) stack."""
    import yaml

    depth = 0
    for event in yaml.parse(text, Loader=yaml.SafeLoader):
        if isinstance(event, yaml.AliasEvent):
            raise ValueError("YAML aliases (*name) are not accepted; write the values out")
        if isinstance(event, yaml.CollectionStartEvent):
            depth += 1
            if depth > MAX_METADATA_DEPTH:
                raise ValueError(f"nested deeper than {MAX_METADATA_DEPTH} levels")
        elif isinstance(event, yaml.CollectionEndEvent):
            depth -= 1
    document = yaml.safe_load(text)
    if not isinstance(document, dict):
        raise ValueError("not a YAML mapping")
    return document


def _metadata_file(options, cwd, owner_uid):
    """User cloud-config for the guests: the user's own YAML mapping file, at most 64 KiB.
    Read through read_trusted, so root (re-validating) never reads a file the user does not own."""
    path = _user_file(options, "metadata", cwd, owner_uid)
    if path is None:
        return None
    value, source = options["metadata"]
    import yaml

    from vtorque.trust import read_trusted

    try:
        text = read_trusted(path, owner_uid=owner_uid, max_bytes=MAX_METADATA_BYTES, what="metadata file")
        parse_metadata(text)
    except (VTorqueError, ValueError, yaml.YAMLError) as err:
        raise RequestError(
            f"unusable cloud-config file: {err}",
            key="metadata",
            value=value,
            accepted="a cloud-config YAML mapping",
            source=source,
        ) from None
    return path


def request_document(request, asked, qsub_argv, job_id, owner_uid):
    """What `request.json` holds: the resolved request and what the user asked."""
    return {
        "version": REQUEST_VERSION,
        "job_id": job_id,
        "owner_uid": owner_uid,
        "asked": {key: value for key, (value, _) in sorted(asked.items())},
        "qsub": list(qsub_argv),
        "request": request.to_dict(),
        "options": request.as_options(),
    }


def load_request(path, owner_uid, config):
    """The request of `path` (request.json) re-validated against `config` and the catalog as
    they are NOW. Refuses links, files not owned by `owner_uid` or writable by others,
    oversized or malformed JSON; the image is looked up again, never taken from the file."""
    from vtorque.trust import read_trusted

    source = f"request file {path}"
    raw = read_trusted(path, owner_uid=owner_uid, max_bytes=MAX_REQUEST_BYTES, what="request file")
    try:
        document = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise RequestError(f"not valid JSON: {err}", source=source) from None
    except RecursionError:  # the C decoder recurses per level; a user's "[[[[..." ends here
        raise RequestError("not valid JSON: nested too deeply", source=source) from None
    if not isinstance(document, dict) or document.get("version") != REQUEST_VERSION:
        raise RequestError(f"expected a JSON object with version {REQUEST_VERSION}", source=source)
    options = document.get("options")
    if not isinstance(options, dict) or not all(
        isinstance(k, str) and isinstance(v, str) and re.fullmatch(r"[a-z_]+", k) for k, v in options.items()
    ):
        raise RequestError("'options' must map -vm keys to strings", source=source)
    unknown = set(options) - set(KEYS)
    if unknown:
        raise RequestError("unknown key", key=sorted(unknown)[0], accepted=", ".join(KEYS), source=source)
    for key, value in options.items():
        if "," in value:
            raise RequestError("commas are not allowed in values", key=key, value=value, source=source)
    parsed = {key: (value, source) for key, value in options.items()}
    return resolve_request(parsed, config, owner_uid=owner_uid, cwd="/")
