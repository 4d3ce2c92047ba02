"""The job plan: everything vTorque will create for a job, computed once, in Python.

Pure and deterministic: the same job, request and site config give the same plan, so a
re-run (requeue, a second epilogue) finds the same names. Names, UUIDs and MACs come from
the collection's naming module (the one place for them); the playbooks only apply the plan.
"""

import ipaddress
import os
import uuid
from dataclasses import asdict, dataclass

from ansible_collections.mikelangelo.vtorque.plugins.module_utils import naming

from vtorque import scheduler
from vtorque.errors import VTorqueError

_QEMU = naming.QEMU_USER_NET
USER_NET = {
    "address": f"{_QEMU['address']}/{_QEMU['prefix']}",
    "gateway": _QEMU["gateway"],
    "dns": [_QEMU["dns"]],
}
SSH_PORT_SPAN = 10000  # user mode: host ports ssh_port_base .. +SPAN-1, one per VM
DATA_MOUNT = "/data"


class PlanError(VTorqueError):
    """The request cannot be placed with this site's configuration."""


@dataclass(frozen=True)
class Owner:
    name: str
    uid: int
    gid: int
    group: str
    home: str


@dataclass(frozen=True)
class VMPlan:
    node: str
    index: int
    rank: int
    name: str
    uuid: str
    mac: str
    hostname: str
    vcpus: int
    memory_mib: int
    address: str  # CIDR
    gateway: str | None
    dns: tuple
    ssh_host: str
    ssh_port: int
    overlay: str
    seed: str
    serial_log: str
    data_disk: str | None  # an empty disk of the request's `disk` size, mounted at DATA_MOUNT
    data_disk_mib: int | None
    cpu_pinning: tuple  # ((vcpu, host core or cpuset), ...) with vcpu_pinning or iocm, else ()
    iothreads: int = 0  # iocm: the VM's I/O threads (iocm_min_cores)
    io_cpuset: str | None = None  # iocm: the node's I/O cores, for I/O and emulator threads
    hostdevs: tuple = ()  # vrdma: PCI addresses claimed for this VM on its node (job/devices.py)


@dataclass(frozen=True)
class JobPlan:
    job_id: str
    owner: Owner
    workdir: str
    image: dict
    network_mode: str
    network_source: str | None
    nodes: tuple
    vms: tuple
    state_dir: str
    job_dir: str
    uri: str
    virt_type: str
    mounts: tuple  # (tag, path on host = path in guest, mount source, type)
    ramdisk: str | None  # fs_type=ramdisk: the tmpfs in the job dir that holds the VMs' disks
    guest_nodefile: str  # where the job's node file (the VMs) is inside the guests
    hugepages: bool = False
    shmem: tuple = ()  # unclot: ((region name, MiB),), one region per node shared by its VMs
    fragments: tuple = ()  # ((name, template path), ...): the site fragments every VM gets
    vrdma: bool = False  # every VM gets one device of its node's vrdma.devices (claimed at start)

    @property
    def rank0(self):
        return self.vms[0]

    def to_dict(self):
        return asdict(self)


def check_network_fits(mode, node_count, vms_per_node):
    """vsub refuses, and the prologue again, a job whose VMs could not reach each other: in user
    mode every guest is 10.0.2.15 behind its own NAT, reached only from the mother superior."""
    if mode != "user":
        return
    if node_count > 1:
        raise PlanError(
            f"nodes={node_count}: network.mode is user on this site, where guests are reached only"
            " through port forwards of the mother superior, so a VM job runs on one node"
            " (an admin can set network.mode bridge or network)"
        )
    if vms_per_node > 1:
        raise PlanError(
            f"vms_per_node={vms_per_node}: network.mode is user on this site, where each VM sits behind"
            " its own NAT and VMs cannot reach each other, so a job gets one VM (vms_per_node=1)"
        )


def make_plan(job, request, config, owner):
    nodes = tuple(host for host, _ in job.nodes)
    if not nodes:
        raise PlanError(f"job {job.job_id} has no nodes (empty node file)")
    network = config.network
    check_network_fits(network.mode, len(nodes), request.vms_per_node)
    for key in ("vcpu_pinning", "iocm"):
        if getattr(request, key) and not config.policy.exclusive_node_alloc:
            raise PlanError(
                f"{key} pins vCPUs to fixed host cores, which needs whole nodes"
                " (policy.exclusive_node_alloc: false here, so other jobs may use those cores)"
            )
    if request.vrdma:
        _check_devices(nodes, request, config)
    vms, rank = [], 0
    for node in nodes:
        addresses = _node_addresses(network, node, request.vms_per_node)
        for index in range(request.vms_per_node):
            vms.append(_vm(job.job_id, node, index, rank, request, config, addresses))
            rank += 1
    image = {
        "name": request.image.name,
        "path": request.image.path,
        "format": request.image.format,
        "kernel": request.image.kernel,
        "initrd": request.image.initrd,
        "cmdline": request.image.cmdline,
        "start": getattr(request.image, "start", None) or "boot",
    }
    workdir = job.workdir or owner.home
    return JobPlan(
        job_id=job.job_id,
        owner=owner,
        workdir=workdir,
        image=image,
        network_mode=network.mode,
        network_source={"bridge": network.bridge, "libvirt": network.libvirt_network}.get(network.mode),
        nodes=nodes,
        vms=tuple(vms),
        state_dir=config.state_dir,
        job_dir=naming.job_dir(job.job_id, config.state_dir),
        uri=config.libvirt.uri,
        virt_type=config.libvirt.virt_type,
        mounts=_mounts(config, owner, workdir),
        ramdisk=_ramdisk(job.job_id, request, config),
        guest_nodefile=scheduler.for_config(config).guest_nodefile(job.job_id),
        hugepages=request.hugepages,
        shmem=((naming.shmem_name(job.job_id), request.unclot_shmem_mib),) if request.unclot else (),
        fragments=tuple((name, config.fragments[name].template) for name in request.fragments),
        vrdma=request.vrdma,
    )


def _check_devices(nodes, request, config):
    """Every node lists a device for each of its VMs; claims are node-local (job/devices.py), so
    the node that claims must be the node that starts its VMs."""
    if len(nodes) > 1 and not scheduler.for_config(config).per_node:
        raise PlanError(
            f"vrdma on {len(nodes)} nodes: devices are claimed on the node that starts the VMs, and on"
            f" {config.scheduler} the first node starts every node's VMs; a vrdma job runs on one node here"
        )
    for node in nodes:
        have = len(config.vrdma.devices.get(node, ()))
        if have < request.vms_per_node:
            raise PlanError(
                f"vrdma: node {node} has {have} devices in vrdma.devices; the job needs one per VM"
                f" ({request.vms_per_node})"
            )


def _ramdisk(job_id, request, config):
    if request.fs_type != "ramdisk":
        return None
    return os.path.join(naming.job_dir(job_id, config.state_dir), naming.RAM_DIR)


def _node_addresses(network, node, count):
    if network.mode == "user":
        return []
    try:
        addresses = network.addresses_for(node)
    except VTorqueError as err:
        raise PlanError(str(err)) from None
    if len(addresses) < count:
        raise PlanError(
            f"node {node} has {len(addresses)} guest addresses in the pool; the job needs {count}"
        )
    return addresses


def _vm(job_id, node, index, rank, request, config, addresses):
    identity = naming.vm_identity(job_id, node, index, config.state_dir)
    network = config.network
    if network.mode == "user":
        address, gateway, dns = USER_NET["address"], USER_NET["gateway"], USER_NET["dns"]
        ssh_host, ssh_port = "127.0.0.1", _forward_port(network.ssh_port_base, identity.uuid)
    else:
        prefix = ipaddress.ip_network(network.cidr).prefixlen
        address, gateway, dns = f"{addresses[index]}/{prefix}", network.gateway, network.dns
        ssh_host, ssh_port = str(addresses[index]), 22
    return VMPlan(
        node=node,
        index=index,
        rank=rank,
        name=identity.name,
        uuid=identity.uuid,
        mac=identity.mac,
        hostname=f"{naming.sanitise_node(node).split('.')[0]}-vm{index}",
        vcpus=request.vcpus,
        memory_mib=request.ram_mib,
        address=address,
        gateway=gateway,
        dns=tuple(dns),
        ssh_host=ssh_host,
        ssh_port=ssh_port,
        overlay=_on_ramdisk(identity.overlay_path, request),
        seed=identity.seed_path,
        serial_log=identity.serial_log_path,
        data_disk=_on_ramdisk(identity.data_disk_path, request) if request.disk_mib else None,
        data_disk_mib=request.disk_mib,
        **_cores(index, request, config),
    )


def forward_ports_from(base, port):
    """User mode: every forward port in `base`..+SSH_PORT_SPAN-1, from `port` upwards and round:
    the order in which a VM whose own port is taken tries the others."""
    return (base + (port - base + step) % SSH_PORT_SPAN for step in range(SSH_PORT_SPAN))


def _forward_port(base, vm_uuid):
    """User mode: the VM's own host port, from its UUID (a job has one VM there); the prologue
    claims it on the node, or the next free one up (ports.py)."""
    return base + uuid.UUID(vm_uuid).int % SSH_PORT_SPAN


def _on_ramdisk(path, request):
    """fs_type=ramdisk: the VM's disks (what the guest writes) live in the job's tmpfs."""
    if request.fs_type != "ramdisk":
        return path
    return os.path.join(os.path.dirname(path), naming.RAM_DIR, os.path.basename(path))


def _pinning(index, vcpus, reserved):
    """Whole node (exclusive allocation): the first `reserved` cores stay the host's, then each
    VM's vCPUs take the next cores in order, one core per vCPU."""
    first = reserved + index * vcpus
    return tuple((vcpu, first + vcpu) for vcpu in range(vcpus))


def _span(first, count):
    return str(first) if count == 1 else f"{first}-{first + count - 1}"


def _cores(index, request, config):
    """Host cores of one VM on a whole node: `host_reserve.cores` stay the host's, then come the
    node's VMs' vCPUs, then (iocm) the `iocm_max_cores` I/O cores. With iocm the VM's
    `iocm_min_cores` I/O threads and QEMU's emulator threads run on the I/O cores only, and its
    vCPUs on the vCPU cores only (each on its own with vcpu_pinning)."""
    reserved, vcpus = config.host_reserve.cores, request.vcpus
    pinning = _pinning(index, vcpus, reserved) if request.vcpu_pinning else ()
    if not request.iocm:
        return {"cpu_pinning": pinning}
    vcpu_cores = _span(reserved, vcpus * request.vms_per_node)
    io_first = reserved + vcpus * request.vms_per_node
    return {
        "cpu_pinning": pinning or tuple((vcpu, vcpu_cores) for vcpu in range(vcpus)),
        "iothreads": request.iocm_min_cores,
        "io_cpuset": _span(io_first, request.iocm_max_cores),
    }


def _mounts(config, owner, workdir):
    """The owner's home and the job's work dir, at the same paths in the guest (9p/virtiofs
    tags `home`/`workdir`, or NFS); a work dir inside a mounted home needs no mount of its own."""
    home, mounts = owner.home, []
    for tag, path, mount in (
        ("home", home, config.guest.mounts.home),
        ("workdir", workdir, config.guest.mounts.workdir),
    ):
        if mount.type == "none":
            continue
        inside_home = workdir == home or workdir.startswith(home.rstrip("/") + "/")
        if tag == "workdir" and inside_home and config.guest.mounts.home.type == mount.type:
            continue
        if mount.type == "nfs":
            source = f"{mount.nfs_server}:{mount.nfs_export}" + (f"/{owner.name}" if tag == "home" else "")
        else:
            source = tag
        mounts.append((tag, os.path.normpath(path), source, mount.type))
    return tuple(mounts)


def owner_of(user):
    """The job owner's passwd identity; KeyError for an unknown user."""
    import grp
    import pwd

    entry = pwd.getpwnam(user)
    return Owner(entry.pw_name, entry.pw_uid, entry.pw_gid, grp.getgrgid(entry.pw_gid).gr_name, entry.pw_dir)


def check_allocation(nodes, request, config, source):
    """The VMs must fit in the cores the batch system gave the job: a request edited after
    submission must not take cores that belong to other jobs."""
    from vtorque.errors import RequestError

    need = request.cores_per_node(config)
    for host, slots in nodes:
        if slots < need:
            raise RequestError(
                f"the VMs need {need} cores per node (host_reserve.cores {config.host_reserve.cores}"
                f" + vcpus {request.vcpus} x vms_per_node {request.vms_per_node}) but the job was"
                f" allocated {slots} on {host}",
                source=source,
            )
