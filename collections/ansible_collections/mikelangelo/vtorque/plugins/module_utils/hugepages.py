# Copyright: vTorque contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""Whether this node can back a guest's memory with huge pages (read from sysfs)."""

from __future__ import annotations

import os
import re

from ansible_collections.mikelangelo.vtorque.plugins.module_utils.errors import Unavailable

SYSFS = "/sys/kernel/mm/hugepages"
_POOL = re.compile(r"hugepages-(\d+)kB")


def free_kib(root: str = SYSFS) -> dict[int, int]:
    """{page size in KiB: KiB free in that pool} for every pool the kernel has configured."""
    pools = {}
    try:
        names = os.listdir(root)
    except FileNotFoundError:
        return pools
    for name in names:
        match = _POOL.fullmatch(name)
        if not match:
            continue
        size = int(match.group(1))
        try:
            with open(os.path.join(root, name, "free_hugepages"), encoding="ascii") as handle:
                pools[size] = int(handle.read().strip() or 0) * size
        except (OSError, ValueError):
            continue
    return pools


def check(memory_kib: int, target: str, root: str = SYSFS) -> None:
    """Unavailable unless one pool has enough free huge pages for the whole guest memory
    (libvirt backs a guest from one pool, the default page size unless the XML names one)."""
    pools = free_kib(root)
    if any(free >= memory_kib for free in pools.values()):
        return
    if not any(pools.values()):
        have = "none configured" if pools else "no huge page support"
        raise Unavailable(
            f"{target} asks for huge pages but this node has {have} ({root}: no free_hugepages;"
            " an admin sets vm.nr_hugepages or hugepagesz=/hugepages= on the kernel command line)",
            target=target,
        )
    largest = max(pools.values()) // 1024
    raise Unavailable(
        f"{target} needs {memory_kib // 1024} MiB of huge pages but this node has at most {largest} MiB"
        f" free in one pool ({root})",
        target=target,
    )
