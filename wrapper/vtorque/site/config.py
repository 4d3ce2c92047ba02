"""Site configuration: `/etc/vtorque/vtorque.yml` (or `$VTORQUE_CONFIG`) as a frozen `SiteConfig`.

The dataclasses below ARE the schema: one generic walker converts the YAML mapping into them
using each field's type (bool, int, str, Literal choices, lists, nested sections) or an
explicit parser in the field's metadata, and collects every problem with its dotted key so
`vtorque config check` reports them all at once. Cross-field rules live in site/rules.py.
Every key and its default is documented in docs/site-config.md.
"""

import dataclasses
import ipaddress
import re
from dataclasses import dataclass, field
from typing import Literal

from ansible_collections.mikelangelo.vtorque.plugins.module_utils import naming

from vtorque.errors import ConfigError, VTorqueError
from vtorque.scheduler.slurm.config import SlurmConfig
from vtorque.scheduler.torque.config import TorqueConfig
from vtorque.site.config_file import DEFAULT_SPOOL_DIR, config_path, parse_yaml, read_config_data
from vtorque.site.fields import abs_path, opt
from vtorque.site.rules import check_rules
from vtorque.site.schema import build
from vtorque.values import parse_choice, parse_size_mib

DISTROS = ("debian", "ubuntu", "redhat", "centos", "osv")
FS_TYPES = ("sharedfs", "ramdisk")
MOUNT_TYPES = ("none", "9p", "virtiofs", "nfs")


def _regex(value):
    if not isinstance(value, str):
        raise ValueError("expected a regular expression string")
    try:
        re.compile(value)
    except re.error as err:
        raise ValueError(f"not a valid regular expression ({err})") from None
    return value


@dataclass(frozen=True)
class VMDefaults:
    """Values used for every `-vm` key the user does not give (sizes in MiB)."""

    img: str | None = None
    distro: str | None = opt(None, parse_choice(DISTROS))
    ram: int = opt(2048, parse_size_mib)
    vcpus: int = 1
    vms_per_node: int = 1
    arch: Literal["x86_64"] = "x86_64"
    vcpu_pinning: bool = False
    disk: int | None = opt(None, parse_size_mib)
    fs_type: str = opt("sharedfs", parse_choice(FS_TYPES))
    vrdma: bool = False
    unclot: bool = False
    unclot_shmem: int = opt(1024, parse_size_mib)
    iocm: bool = False
    iocm_min_cores: int = 1
    iocm_max_cores: int = 4
    hugepages: bool = False


@dataclass(frozen=True)
class Limits:
    """Upper bounds a request must stay within (per VM unless the name says otherwise)."""

    max_vcpus: int = 64
    max_ram_mib: int = opt(256 * 1024, parse_size_mib)
    max_vms_per_node: int = 8
    max_disk_mib: int = opt(1024 * 1024, parse_size_mib)
    max_iocm_cores: int = 12
    max_unclot_shmem_mib: int = opt(16 * 1024, parse_size_mib)
    # Failed starts (infrastructure failures) before the job is aborted instead of requeued;
    # a second failure on one node aborts at once. Torque's pbs_sched would requeue forever.
    start_attempts: int = opt(2, min=1)


@dataclass(frozen=True)
class HostReserve:
    """Kept for the host OS on every node; added to the job's ppn and mem."""

    cores: int = opt(1, min=0)
    ram_mib: int = opt(2048, parse_size_mib)


@dataclass(frozen=True)
class Policy:
    exclusive_node_alloc: bool = True
    allow_user_images: bool = False
    disabled_hosts: str = opt("", _regex)
    iocm: bool = False
    vrdma: bool = False
    unclot: bool = False
    hugepages: bool = False


@dataclass(frozen=True)
class VrdmaConfig:
    """-vm vrdma: the PCI devices (RDMA NICs, their virtual functions, accelerators) each node
    hands to its VMs with VFIO, one per VM, never to two jobs at once (job/devices.py)."""

    devices: dict[str, list[str]] = opt({})


@dataclass(frozen=True)
class SiteFragment:
    """A site's own piece of domain XML: a Jinja2 template rendered into <devices> of every VM
    of a job that asks for it (-vm fragments=NAME[+NAME...]), or of every VM job (`always`)."""

    template: str | None = opt(None, abs_path)
    always: bool = False


@dataclass(frozen=True)
class LibvirtConfig:
    uri: str = naming.DEFAULT_URI
    virt_type: Literal["kvm", "qemu"] = "kvm"


@dataclass(frozen=True)
class DerivedRanges:
    """Rule for nodes without an explicit range: the first number captured by `pattern` from
    the node name picks block number N, whose addresses start at `first` + N * `per_node`."""

    pattern: str = opt(r"(\d+)", _regex)
    first: str | None = None
    per_node: int = 8


@dataclass(frozen=True)
class NetworkConfig:
    mode: Literal["bridge", "libvirt", "user"] = "user"
    bridge: str = "br0"
    libvirt_network: str = "default"
    cidr: str | None = None
    gateway: str | None = None
    dns: list[str] = opt([])
    search: list[str] = opt([])
    ranges: dict[str, str] = opt({})
    derive: DerivedRanges | None = None
    ssh_port_base: int = opt(22200, min=1024)

    def addresses_for(self, node):
        """Guest addresses reserved for `node`, in order; [] in user mode.

        The one place that turns the admin's pool into per-node addresses."""
        if self.mode == "user":
            return []
        network = ipaddress.ip_network(self.cidr)
        if node in self.ranges:
            first, last = (ipaddress.ip_address(part) for part in self.ranges[node].split("-"))
        elif self.derive is not None:
            match = re.search(self.derive.pattern, node)
            if not match:
                raise VTorqueError(
                    f"network.derive.pattern {self.derive.pattern!r} does not match node name {node!r}"
                    " and network.ranges has no entry for it"
                )
            number = int(next(group for group in (match.groups() or (match.group(0),)) if group))
            first = ipaddress.ip_address(self.derive.first) + number * self.derive.per_node
            last = first + self.derive.per_node - 1
        else:
            raise VTorqueError(f"network.ranges has no entry for node {node!r} and network.derive is not set")
        if first not in network or last not in network:
            raise VTorqueError(
                f"addresses {first}-{last} for node {node!r} fall outside network.cidr {network}"
            )
        return [first + offset for offset in range(int(last) - int(first) + 1)]


@dataclass(frozen=True)
class Mount:
    """How a host directory reaches the guest; `nfs` mounts `nfs_server:nfs_export` instead."""

    type: str = opt("9p", parse_choice(MOUNT_TYPES))
    nfs_server: str | None = None
    nfs_export: str | None = None


@dataclass(frozen=True)
class GuestMounts:
    # The home is not mounted by default: a mounted home hides the guest's ~/.ssh, which
    # guests whose SSH server reads only ~/.ssh/authorized_keys (dropbear) need for the job key.
    home: Mount = opt(Mount(type="none"))
    workdir: Mount = opt(Mount())


@dataclass(frozen=True)
class GuestConfig:
    mounts: GuestMounts = opt(GuestMounts())
    ntp_servers: list[str] = opt([])


@dataclass(frozen=True)
class Timeouts:
    """Seconds each phase may take. prologue must stay below Torque's $prologalarm."""

    prologue: int = 280
    boot: int = 180
    ssh: int = 120
    shutdown: int = 60
    epilogue: int = 280


@dataclass(frozen=True)
class RunnerConfig:
    forks: int = 20
    strategy: Literal["linear", "free"] = "free"
    pipelining: bool = True
    # Node names that are this machine (local connection): a one-machine site that plays
    # several nodes, as the tests and `vtorque run` do. Real nodes are reached over SSH.
    local_nodes: list[str] = opt([])
    # This machine's VMs started in the hook's process with vm_start's own code; false: through
    # job_start.yml like every other node (a site that added tasks to the playbook).
    start_in_process: bool = True


@dataclass(frozen=True)
class LoggingConfig:
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    file: str | None = opt(None, abs_path)


@dataclass(frozen=True)
class TelemetryConfig:
    """Per-job VM statistics (`vtorque jobs stats`), sampled by root on each node."""

    interval_seconds: int = opt(10, min=0)  # 0: no sampling
    max_kib: int = opt(1024, min=16)  # per job and node; beyond it every other sample goes
    prometheus_textfile_dir: str | None = opt(None, abs_path)  # node_exporter's textfile collector


@dataclass(frozen=True)
class SiteConfig:
    scheduler: Literal["torque", "slurm"] = "torque"  # the batch system (vtorque.scheduler)
    spool_dir: str = opt(DEFAULT_SPOOL_DIR, abs_path)
    state_dir: str = opt(naming.DEFAULT_STATE_DIR, abs_path)
    records_keep_days: int = opt(30, min=0)
    # `vtorque sweep` removes spool dirs of jobs the server no longer knows (deleted while queued
    # or held: Torque runs no hook for them) once they are this old.
    spool_grace_minutes: int = opt(60, min=0)
    images: str = opt("/etc/vtorque/images.yml", abs_path)
    domain_template: str | None = opt(None, abs_path)
    fragments: dict[str, SiteFragment] = opt({})
    vrdma: VrdmaConfig = opt(VrdmaConfig())
    torque: TorqueConfig = opt(TorqueConfig())
    slurm: SlurmConfig = opt(SlurmConfig())
    defaults: VMDefaults = opt(VMDefaults())
    limits: Limits = opt(Limits())
    host_reserve: HostReserve = opt(HostReserve())
    policy: Policy = opt(Policy())
    libvirt: LibvirtConfig = opt(LibvirtConfig())
    network: NetworkConfig = opt(NetworkConfig())
    guest: GuestConfig = opt(GuestConfig())
    timeouts: Timeouts = opt(Timeouts())
    runner: RunnerConfig = opt(RunnerConfig())
    logging: LoggingConfig = opt(LoggingConfig())
    telemetry: TelemetryConfig = opt(TelemetryConfig())
    source: str = field(default="(built-in defaults)", compare=False, metadata={"internal": True})


USER_VISIBLE = (
    "spool_dir",
    "images",
    "defaults",
    "limits",
    "host_reserve",
    "policy",
    "timeouts",
    "fragments",
)


def load_config(path=None):
    """Load and validate the site config (`$VTORQUE_CONFIG` or /etc/vtorque/vtorque.yml);
    ConfigError lists every bad key with the file name. Root only trusts a root-owned file."""
    path = config_path(path)
    return from_data(read_config_data(path), path)


def parse_config(text, path="(string)"):
    return from_data(parse_yaml(text, path), path)


def from_data(data, path):
    """SiteConfig from an already parsed document (see config_file.read_config_data)."""
    problems = []
    config = build(SiteConfig, data, "", problems)
    if not problems:
        check_rules(config, problems)
    if problems:
        raise ConfigError(path, problems)
    return dataclasses.replace(config, source=path)


def as_dict(config, user_view=False):
    """Plain data for display (`vtorque config show`); the user view hides admin internals."""
    data = dataclasses.asdict(config)
    data.pop("source")
    if user_view:
        data = {key: data[key] for key in USER_VISIBLE}
        data["network"] = {"mode": config.network.mode}
    return data
