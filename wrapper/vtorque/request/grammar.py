"""The `-vm key=value,...` grammar: the keys a VM request has and how values are split."""

from vtorque.errors import RequestError

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
    "hugepages",
    "fragments",
)


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
