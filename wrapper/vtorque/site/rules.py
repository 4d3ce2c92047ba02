"""The site config's rules that involve more than one key (each problem names its keys)."""

import ipaddress
import re

PCI_ADDRESS = re.compile(r"[0-9a-fA-F]{4}:[0-9a-fA-F]{2}:[0-9a-fA-F]{2}\.[0-7]")
FRAGMENT_NAME = re.compile(r"[a-z][a-z0-9_]{0,39}")


def check_rules(config, problems):
    """Rules that involve more than one key."""
    defaults, limits = config.defaults, config.limits
    for key, value, limit_key in (
        ("vcpus", defaults.vcpus, "max_vcpus"),
        ("ram", defaults.ram, "max_ram_mib"),
        ("vms_per_node", defaults.vms_per_node, "max_vms_per_node"),
        ("iocm_max_cores", defaults.iocm_max_cores, "max_iocm_cores"),
        ("unclot_shmem", defaults.unclot_shmem, "max_unclot_shmem_mib"),
        ("disk", defaults.disk or 0, "max_disk_mib"),
    ):
        if value > getattr(limits, limit_key):
            problems.append(
                f"defaults.{key}: {value} exceeds limits.{limit_key} ({getattr(limits, limit_key)})"
            )
    if defaults.iocm_min_cores > defaults.iocm_max_cores:
        problems.append(
            f"defaults.iocm_min_cores: {defaults.iocm_min_cores} is above"
            f" defaults.iocm_max_cores ({defaults.iocm_max_cores})"
        )
    for switch in ("iocm", "vrdma", "unclot", "hugepages"):
        if getattr(defaults, switch) and not getattr(config.policy, switch):
            problems.append(
                f"defaults.{switch}: true, but policy.{switch} is false (switched off on this site)"
            )
    _check_network(config.network, problems)
    _check_devices(config, problems)
    for name, fragment in config.fragments.items():
        if not FRAGMENT_NAME.fullmatch(name):
            problems.append(
                f"fragments.{name}: a fragment name is lower-case letters, digits and _ (a letter first)"
            )
        if fragment.template is None:
            problems.append(f"fragments.{name}: template is required (the fragment's Jinja2 file)")
    for name in ("home", "workdir"):
        mount = getattr(config.guest.mounts, name)
        if mount.type == "nfs" and not (mount.nfs_server and mount.nfs_export):
            problems.append(f"guest.mounts.{name}: type nfs needs nfs_server and nfs_export")
        if mount.type == "virtiofs":  # it needs virtiofsd and shared memory backing, not yet there
            problems.append(
                f"guest.mounts.{name}: type virtiofs is not supported yet (it would be rendered as"
                " a 9p share); use 9p or nfs"
            )


def _check_devices(config, problems):
    seen = {}
    for node, addresses in config.vrdma.devices.items():
        for index, address in enumerate(addresses):
            key = f"vrdma.devices.{node}[{index}]"
            if not PCI_ADDRESS.fullmatch(address):
                problems.append(
                    f"{key}: expected a PCI address DDDD:BB:SS.F (e.g. 0000:3b:00.1), got {address!r}"
                )
            elif (node, address.lower()) in seen:
                problems.append(f"{key}: {address} is listed twice (also {seen[node, address.lower()]})")
            seen.setdefault((node, address.lower()), key)
    if config.policy.vrdma and not any(config.vrdma.devices.values()):
        problems.append("policy.vrdma: true, but vrdma.devices lists no PCI device on any node")


def _check_network(network, problems):
    for index, server in enumerate(network.dns):
        _address(server, f"network.dns[{index}]", problems)
    if network.mode == "user":
        return
    if not network.cidr or not network.gateway:
        problems.append(f"network: mode {network.mode} needs cidr and gateway (the guest address pool)")
        return
    try:
        pool = ipaddress.ip_network(network.cidr)
    except ValueError as err:
        problems.append(f"network.cidr: {err}, got {network.cidr!r}")
        return
    gateway = _address(network.gateway, "network.gateway", problems)
    if gateway is not None and gateway not in pool:
        problems.append(f"network.gateway: {gateway} is outside network.cidr {pool}")
    for node, span in network.ranges.items():
        parts = span.split("-")
        ends = [_address(part.strip(), f"network.ranges.{node}", problems) for part in parts]
        if len(parts) != 2 or None in ends:
            if len(parts) != 2:
                problems.append(f"network.ranges.{node}: expected FIRST-LAST addresses, got {span!r}")
            continue
        if ends[0] > ends[1] or ends[0] not in pool or ends[1] not in pool:
            problems.append(f"network.ranges.{node}: {span!r} is not an ascending range inside {pool}")
    if network.derive is not None:
        first = _address(network.derive.first, "network.derive.first", problems)
        if first is not None and first not in pool:
            problems.append(f"network.derive.first: {first} is outside network.cidr {pool}")
    if not network.ranges and network.derive is None:
        problems.append(f"network: mode {network.mode} needs ranges (per node) or derive (a rule)")


def _address(text, key, problems):
    try:
        return ipaddress.ip_address(str(text))
    except ValueError:
        problems.append(f"{key}: expected an IP address, got {text!r}")
        return None
