# Copyright: vTorque contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""Finding vTorque domains (by name and the job metadata tag) and describing them; read-only."""

from __future__ import annotations

from ansible_collections.mikelangelo.vtorque.plugins.module_utils import domain_xml, naming
from ansible_collections.mikelangelo.vtorque.plugins.module_utils.connection import (
    Hypervisor,
    is_no_domain,
    libvirt,
    state_name,
)


def _each_domain(conn, read, prefix: str = naming.DOMAIN_PREFIX) -> list:
    """``read(dom)`` for every domain named with ``prefix``, skipping those removed meanwhile
    (other jobs' teardowns run at the same time) and those ``read`` answers None for."""
    found = []
    for dom in conn.listAllDomains(0):
        if not dom.name().startswith(prefix):
            continue
        try:
            result = read(dom)
        except libvirt.libvirtError as exc:
            if not is_no_domain(exc):
                raise
            continue
        if result is not None:
            found.append(result)
    return found


def _definition(dom) -> str:
    return dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE if dom.isPersistent() else 0)


def _tagged_domains(conn) -> list[tuple[object, dict | None]]:
    """(domain, job tag or None) for every domain whose name has the vTorque prefix."""
    return _each_domain(conn, lambda dom: (dom, domain_xml.job_tag(_definition(dom))))


def job_domain_names(hv: Hypervisor, job_id: str) -> list[str]:
    """Domains of ``job_id``: the job's name prefix AND a metadata tag naming exactly that job."""
    prefix = naming.domain_prefix(job_id)
    return hv.run(
        "list domains",
        None,
        lambda conn: sorted(
            dom.name()
            for dom, tag in _tagged_domains(conn)
            if dom.name().startswith(prefix) and tag is not None and tag.get("id") == job_id.strip()
        ),
    )


def orphan_domain_names(hv: Hypervisor, live_jobs: list[str]) -> list[str]:
    """Tagged vTorque domains whose job is not in ``live_jobs``."""
    live = {job.strip() for job in live_jobs}
    return hv.run(
        "list domains",
        None,
        lambda conn: sorted(
            dom.name()
            for dom, tag in _tagged_domains(conn)
            if tag is not None
            and tag.get("id") not in live
            and dom.name().startswith(naming.domain_prefix(tag.get("id") or "-"))
        ),
    )


def _addresses(dom, tag: dict | None) -> list[dict]:
    found = [dict(source="plan", address=a) for a in ((tag or {}).get("addresses") or "").split()]
    if not dom.isActive():
        return found
    for source, flag in (
        ("lease", "VIR_DOMAIN_INTERFACE_ADDRESSES_SRC_LEASE"),
        ("agent", "VIR_DOMAIN_INTERFACE_ADDRESSES_SRC_AGENT"),
    ):
        try:
            interfaces = dom.interfaceAddresses(getattr(libvirt, flag))
        except libvirt.libvirtError:
            continue  # no lease database, no agent, or a driver without this source
        for iface in interfaces.values():
            for addr in iface.get("addrs") or []:
                if addr.get("addr") and not addr["addr"].startswith("127."):
                    found.append(
                        dict(source=source, address=addr["addr"], mac=(iface.get("hwaddr") or "").lower())
                    )
    return found


def describe(hv: Hypervisor, names: list[str] | None, job_id: str | None) -> list[dict]:
    """Descriptions of the domains named in ``names`` and/or belonging to ``job_id``."""
    wanted = set(names or [])
    if job_id:
        wanted.update(job_domain_names(hv, job_id))

    def describe_one(dom):
        if dom.name() not in wanted:
            return None
        xml = _definition(dom)
        tag = domain_xml.job_tag(xml)
        return dict(
            name=dom.name(),
            uuid=dom.UUIDString(),
            state=state_name(dom.state()[0]),
            persistent=bool(dom.isPersistent()),
            job=tag,
            macs=domain_xml.interface_macs(xml),
            disks=domain_xml.disk_sources(xml),
            addresses=_addresses(dom, tag),
        )

    def collect(conn):
        return sorted(_each_domain(conn, describe_one, prefix=""), key=lambda d: d["name"])

    return hv.run("describe domains", None, collect)
