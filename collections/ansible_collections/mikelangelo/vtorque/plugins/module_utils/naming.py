# Copyright: vTorque contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""The one place that derives vTorque names from (job id, node, VM index).

Everything here is a pure function of its arguments, so a re-run of a job's start or stop
(requeue, a second epilogue) finds exactly the objects the first run made. Standard library
only: the host-side plan imports this module too.
"""

from __future__ import annotations

import hashlib
import os.path
import re
import uuid
from dataclasses import dataclass

DOMAIN_PREFIX = "vt-"
DEFAULT_STATE_DIR = "/var/lib/vtorque"
DEFAULT_URI = "qemu:///system"
# QEMU's user-mode network as every guest on it sees it (each VM behind a NAT of its own).
QEMU_USER_NET = {"address": "10.0.2.15", "prefix": 24, "gateway": "10.0.2.2", "dns": "10.0.2.3"}
METADATA_NS = "https://vtorque.invalid/xmlns/job/1"
METADATA_PREFIX = "vtorque"
METADATA_ELEMENT = "job"
MAC_PREFIX = "52:54:00"

# Fixed namespace for uuid5: a VM's UUID depends only on job id, node and index.
UUID_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, METADATA_NS)

# A sanitised job id never contains "-", so "vt-<job>-" is an unambiguous name prefix
# ("vt-12-" can never match a domain of job "12-3").
_JOB_UNSAFE = re.compile(r"[^A-Za-z0-9._]")
_NODE_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


def sanitise_job_id(job_id: str) -> str:
    """Torque job id (e.g. ``123[4].head.example``) made safe for names and paths."""
    if not isinstance(job_id, str) or not job_id.strip():
        raise ValueError(f"job id must be a non-empty string, got {job_id!r}")
    safe = _JOB_UNSAFE.sub("_", job_id.strip())
    if safe in (".", ".."):
        raise ValueError(f"job id {job_id!r} cannot be used as a directory name")
    return safe


def sanitise_node(node: str) -> str:
    """Node name made safe for a libvirt domain name."""
    if not isinstance(node, str) or not node.strip():
        raise ValueError(f"node name must be a non-empty string, got {node!r}")
    return _NODE_UNSAFE.sub("_", node.strip())


def _check_index(index: int) -> int:
    if isinstance(index, bool) or not isinstance(index, int) or index < 0:
        raise ValueError(f"VM index must be an integer >= 0, got {index!r}")
    return index


def _identity_key(job_id: str, node: str, index: int) -> bytes:
    return "\0".join((job_id.strip(), node.strip(), str(_check_index(index)))).encode("utf-8")


def domain_prefix(job_id: str) -> str:
    """Name prefix shared by every domain of a job."""
    return f"{DOMAIN_PREFIX}{sanitise_job_id(job_id)}-"


def domain_name(job_id: str, node: str, index: int) -> str:
    return f"{domain_prefix(job_id)}{sanitise_node(node)}-{_check_index(index)}"


def is_domain_of_node(name: str, job_id: str, node: str) -> bool:
    """Whether domain `name` is one of the job's VMs planned for `node` (any index)."""
    stem = f"{domain_prefix(job_id)}{sanitise_node(node)}-"
    return name.startswith(stem) and name[len(stem) :].isdigit()


def domain_uuid(job_id: str, node: str, index: int) -> str:
    return str(uuid.uuid5(UUID_NAMESPACE, _identity_key(job_id, node, index).decode("utf-8")))


def domain_mac(job_id: str, node: str, index: int, nic: int = 0) -> str:
    """MAC of NIC ``nic`` of the VM; NIC 0 keeps the plain (job, node, index) key."""
    key = _identity_key(job_id, node, index)
    if _check_index(nic):
        key += b"\0nic%d" % nic
    digest = hashlib.sha256(b"vtorque-mac\0" + key).digest()
    return MAC_PREFIX + "".join(f":{b:02x}" for b in digest[:3])


def job_dir(job_id: str, state_dir: str = DEFAULT_STATE_DIR) -> str:
    """Directory that holds every file of a job on a node (overlays, seeds, serial logs)."""
    return os.path.join(state_dir, "jobs", sanitise_job_id(job_id))


def serial_log_path(directory: str, name: str) -> str:
    """The serial console log of domain `name` in its job's directory."""
    return os.path.join(directory, name + "-serial.log")


SHM_DIR = "/dev/shm"  # where QEMU backs a <shmem> region: SHM_DIR/<name>
SHMEM_SUFFIX = "-unclot"


def shmem_name(job_id: str) -> str:
    """The job's -vm unclot region, shared by its VMs on one node and by no other job's."""
    return f"{DOMAIN_PREFIX}{sanitise_job_id(job_id)}{SHMEM_SUFFIX}"


def shmem_job(name: str) -> str | None:
    """The sanitised job id of a region named by shmem_name, or None for any other name."""
    if not (name.startswith(DOMAIN_PREFIX) and name.endswith(SHMEM_SUFFIX)):
        return None
    job = name[len(DOMAIN_PREFIX) : -len(SHMEM_SUFFIX)]
    return job if job and not _JOB_UNSAFE.search(job) else None


RAM_DIR = "ram"  # inside a job dir: the tmpfs of `-vm fs_type=ramdisk` jobs, holding their disks


@dataclass(frozen=True)
class VMIdentity:
    """Names, ids and file paths of one VM of a job on a node."""

    job_id: str
    node: str
    index: int
    name: str
    uuid: str
    mac: str
    job_dir: str
    overlay_path: str
    seed_path: str
    serial_log_path: str
    data_disk_path: str


def vm_identity(job_id: str, node: str, index: int, state_dir: str = DEFAULT_STATE_DIR) -> VMIdentity:
    name = domain_name(job_id, node, index)
    directory = job_dir(job_id, state_dir)
    return VMIdentity(
        job_id=job_id.strip(),
        node=node.strip(),
        index=index,
        name=name,
        uuid=domain_uuid(job_id, node, index),
        mac=domain_mac(job_id, node, index),
        job_dir=directory,
        overlay_path=os.path.join(directory, name + ".qcow2"),
        seed_path=os.path.join(directory, name + "-seed.iso"),
        serial_log_path=serial_log_path(directory, name),
        data_disk_path=os.path.join(directory, name + "-data.qcow2"),
    )
