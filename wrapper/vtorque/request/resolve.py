"""A VM request resolved against the site: defaults, limits, policy and the image catalog.

Every value goes through `resolve_request`, at submission (as the user) and again in the
start hook (as root, from request.json), so both sides apply exactly the same rules.
"""

from dataclasses import asdict, dataclass

from vtorque.errors import CatalogError, RequestError
from vtorque.request.userfiles import metadata_file, user_file, user_image
from vtorque.site.catalog import ImageEntry, check_name, load_catalog
from vtorque.site.config import DISTROS, FS_TYPES
from vtorque.values import BOOL_ACCEPTED, SIZE_ACCEPTED, parse_bool, parse_choice, parse_count, parse_size_mib

COUNT_ACCEPTED = "a whole number >= 1"
FRAGMENT_SEPARATOR = "+"  # -vm values cannot hold commas
# Numeric keys: (parser, what is accepted, the limits.* key that bounds the value, if any).
NUMBERS = {
    "ram": (parse_size_mib, SIZE_ACCEPTED, "max_ram_mib"),
    "vcpus": (parse_count, COUNT_ACCEPTED, "max_vcpus"),
    "vms_per_node": (parse_count, COUNT_ACCEPTED, "max_vms_per_node"),
    "disk": (parse_size_mib, SIZE_ACCEPTED, "max_disk_mib"),
    "unclot_shmem": (parse_size_mib, SIZE_ACCEPTED, "max_unclot_shmem_mib"),
    "iocm_min_cores": (parse_count, COUNT_ACCEPTED, None),
    "iocm_max_cores": (parse_count, COUNT_ACCEPTED, "max_iocm_cores"),
}


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
    hugepages: bool = False
    fragments: tuple = ()  # the site's fragments (config.fragments) the VMs get, in order

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
        for key in ("vcpu_pinning", "vrdma", "unclot", "iocm", "hugepages"):
            options[key] = "true" if getattr(self, key) else "false"
        if self.fragments:
            options["fragments"] = FRAGMENT_SEPARATOR.join(self.fragments)
        for key in ("vm_prologue", "vm_epilogue", "metadata"):
            if getattr(self, key):
                options[key] = getattr(self, key)
        if self.disk_mib:
            options["disk"] = f"{self.disk_mib}M"
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

    numbers = {}
    for key, (parse, accepted, limit_key) in NUMBERS.items():
        value, source = get(key, parse, getattr(defaults, key), accepted)
        if limit_key:
            at_most(key, value, source, limit_key)
        numbers[key] = value, source
    (iocm_min, _), (iocm_max, iocm_max_src) = numbers["iocm_min_cores"], numbers["iocm_max_cores"]
    if iocm_min > iocm_max:
        raise RequestError(
            f"iocm_min_cores {iocm_min} is above iocm_max_cores {iocm_max}",
            key="iocm_min_cores",
            value=str(iocm_min),
            source=iocm_max_src,
        )

    arch, _ = get("arch", parse_choice(("x86_64",)), defaults.arch, "x86_64")
    fs_type, _ = get("fs_type", parse_choice(FS_TYPES), defaults.fs_type, ", ".join(FS_TYPES))
    pinning, _ = get("vcpu_pinning", parse_bool, defaults.vcpu_pinning, BOOL_ACCEPTED)
    distro, distro_src = get("distro", parse_choice(DISTROS), defaults.distro, ", ".join(DISTROS))
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
    unclot, _ = switch("unclot", defaults.unclot)
    shmem, shmem_src = numbers["unclot_shmem"]
    if unclot and shmem & (shmem - 1):
        raise RequestError(
            f"{shmem} MiB is not a power of two (the region is a PCI BAR)",
            key="unclot_shmem",
            value=options.get("unclot_shmem", (f"{shmem}M",))[0],
            accepted="a power of two: 1M, 2M, 4M, ... 1G, 2G, ...",
            source=shmem_src,
        )
    iocm, _ = switch("iocm", defaults.iocm)
    hugepages, _ = switch("hugepages", defaults.hugepages)

    return VMRequest(
        image=image,
        distro=distro,
        ram_mib=numbers["ram"][0],
        vcpus=numbers["vcpus"][0],
        vms_per_node=numbers["vms_per_node"][0],
        arch=arch,
        vcpu_pinning=pinning,
        disk_mib=numbers["disk"][0],
        fs_type=fs_type,
        vm_prologue=user_file(options, "vm_prologue", cwd, owner_uid, executable=True),
        vm_epilogue=user_file(options, "vm_epilogue", cwd, owner_uid, executable=True),
        metadata=metadata_file(options, cwd, owner_uid),
        vrdma=vrdma,
        unclot=unclot,
        unclot_shmem_mib=numbers["unclot_shmem"][0],
        iocm=iocm,
        iocm_min_cores=iocm_min,
        iocm_max_cores=iocm_max,
        user_image=user_image,
        hugepages=hugepages,
        fragments=_fragments(options, config),
    )


def _fragments(options, config):
    """The site fragments the VMs get: every `always` one, then those the job names
    (fragments=NAME[+NAME...]), each once, in that order."""
    names = [name for name, fragment in config.fragments.items() if fragment.always]
    if "fragments" in options:
        value, source = options["fragments"]
        for name in value.split(FRAGMENT_SEPARATOR):
            if name not in config.fragments:
                raise RequestError(
                    f"no site fragment named {name!r}",
                    key="fragments",
                    value=value,
                    accepted=(
                        f"names of the site's fragments joined by {FRAGMENT_SEPARATOR}: "
                        + ", ".join(config.fragments)
                        if config.fragments
                        else "none (this site defines no fragments)"
                    ),
                    source=source,
                )
            if name not in names:
                names.append(name)
    return tuple(names)


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
            return user_image(value, source, distro, owner_uid, cwd), True
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
