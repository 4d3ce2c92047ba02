"""The cost of per-job telemetry: CPU seconds per sample (one `Sampler.tick`: libvirt's bulk
domain stats of the job's domains, the JSON line appended for root and the owner, the
node_exporter textfile replaced) for 1 and 4 running domains; floor: the bare
`domainListGetStats` call. libvirtd's own CPU for the same samples is reported beside it."""

import json
import os
import subprocess
import time

import libvirt
from timing import comparison
from vtorque.runtime.telemetry import Sampler
from vtorque.site.config import load_config

COUNTS = (1, 4)
TICKS = 40  # samples per measurement
JOB = "9999.telemetry"


def _domain_xml(name, disk):
    """A small domain that never boots (no boot device): it runs, has a disk and a NIC, and
    costs next to no host CPU, so the figure is the sampling's alone."""
    return f"""<domain type='qemu'><name>{name}</name><memory unit='MiB'>32</memory><vcpu>1</vcpu>
<os><type arch='x86_64' machine='pc'>hvm</type></os>
<devices><disk type='file' device='disk'><driver name='qemu' type='raw'/><source file='{disk}'/>
<target dev='vda' bus='virtio'/></disk><interface type='user'><model type='virtio'/></interface>
<memballoon model='virtio'/></devices></domain>"""


def _libvirtd_ticks():
    pid = subprocess.run(["pidof", "-s", "libvirtd"], capture_output=True, text=True).stdout.strip()
    if not pid:
        return None
    with open(f"/proc/{pid}/stat", encoding="ascii") as handle:
        fields = handle.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def telemetry(workdir, repeat):
    config_file = workdir / "vtorque.yml"
    (workdir / "textfiles").mkdir()
    config_file.write_text(
        json.dumps(
            {
                "state_dir": str(workdir / "state"),
                "spool_dir": str(workdir / "spool"),
                "telemetry": {"interval_seconds": 1, "prometheus_textfile_dir": str(workdir / "textfiles")},
            }
        )
    )
    config = load_config(str(config_file))
    conn = libvirt.open(config.libvirt.uri)
    results = []
    for count in COUNTS:
        domains = []
        try:
            for index in range(count):
                disk = workdir / f"disk{index}.raw"
                disk.write_bytes(b"\0" * (1 << 20))
                domains.append(conn.createXML(_domain_xml(f"vt-{JOB}-bench-{index}", disk), 0))
            sampler, reader = Sampler(config, JOB), libvirt.openReadOnly(config.libvirt.uri)
            kinds = (
                libvirt.VIR_DOMAIN_STATS_CPU_TOTAL
                | libvirt.VIR_DOMAIN_STATS_BALLOON
                | libvirt.VIR_DOMAIN_STATS_INTERFACE
                | libvirt.VIR_DOMAIN_STATS_BLOCK
            )
            measured, floor, daemon = [], [], []
            size_before = os.path.getsize(sampler.path) if os.path.exists(sampler.path) else 0
            for _ in range(repeat):
                ticks, began = _libvirtd_ticks(), time.process_time()
                for _ in range(TICKS):
                    assert sampler.tick(reader) == count
                measured.append((time.process_time() - began) / TICKS)
                after = _libvirtd_ticks()
                if ticks is not None:
                    daemon.append((after - ticks) / os.sysconf("SC_CLK_TCK") / TICKS)
                began = time.process_time()
                for _ in range(TICKS):
                    reader.domainListGetStats(domains, kinds)
                floor.append((time.process_time() - began) / TICKS)
            result = comparison(
                f"telemetry: CPU per sample, {count} domain(s)",
                measured,
                floor,
                "CPU seconds of the sampler per sample; floor: the bare domainListGetStats call",
            )
            result["libvirtd_cpu_s"] = sorted(daemon)[len(daemon) // 2] if daemon else None
            result["stats_bytes_per_sample"] = (os.path.getsize(sampler.path) - size_before) / (
                repeat * TICKS
            )
            reader.close()
            results.append(result)
        finally:
            for domain in domains:
                domain.destroy()
    conn.close()
    return results
