"""`vtorque jobs stats`: the samples runtime/telemetry.py keeps beside the job's record, as a
table per VM and as a plot. Pure functions of the samples, but for `load_samples`.

A sample is one JSON line, `{"t": <epoch seconds>, "vms": {<domain>: {"cpu": <ns>, "rss":
<KiB>, "mem": <KiB>, "rd", "wr", "rx", "tx": <bytes>}}}`, every number a counter since the
domain started (rss and mem are levels). A counter that goes down is a new domain (a requeued
attempt): its new value counts from zero.
"""

import json
import os
import stat
from dataclasses import dataclass

from vtorque.errors import VTorqueError

MAX_READ = 64 * 1024 * 1024  # far above telemetry.max_kib's range, against a runaway file
COUNTERS = ("cpu", "rd", "wr", "rx", "tx")


@dataclass(frozen=True)
class VMStats:
    name: str
    samples: int
    span: float  # seconds from the first sample to the last
    cpu_seconds: float
    mean_cpu: float | None  # % of one host core over the span
    peak_cpu: float | None  # the busiest interval
    peak_rss_kib: int
    memory_kib: int  # the balloon's size at the last sample
    disk_read: int  # bytes
    disk_written: int
    net_rx: int | None  # None: no counters (QEMU's user-mode network)
    net_tx: int | None


def load_samples(path, *, owner_uid=None):
    """The samples of `path`, oldest first, read without following a link; `owner_uid`: the
    file must be theirs (the owner's copy). A line cut short (a sampler killed mid-write) is
    left out. None when there is no such file."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError as err:
        if isinstance(err, PermissionError):
            raise
        raise VTorqueError(f"cannot read the job's statistics {path}: {err.strerror}") from None
    with os.fdopen(fd, "rb") as handle:
        info = os.fstat(handle.fileno())
        if not stat.S_ISREG(info.st_mode) or (owner_uid is not None and info.st_uid != owner_uid):
            raise VTorqueError(f"{path} is not the job's statistics file (not a regular file of its owner)")
        data = handle.read(MAX_READ)
    samples = []
    for line in data.splitlines():
        try:
            sample = json.loads(line)
        except ValueError:
            continue
        if isinstance(sample, dict) and isinstance(sample.get("vms"), dict):
            samples.append(sample)
    return sorted(samples, key=lambda sample: sample["t"])


def per_vm(samples):
    """{domain: [(t, numbers), ...]} in time order."""
    vms = {}
    for sample in samples:
        for name, numbers in sample["vms"].items():
            vms.setdefault(name, []).append((sample["t"], numbers))
    return vms


def summarise(samples):
    """One VMStats per domain, by name."""
    result = []
    for name, points in sorted(per_vm(samples).items()):
        times = [t for t, _ in points]
        totals = {
            key: _total([numbers.get(key, 0) for _, numbers in points])
            if any(key in numbers for _, numbers in points)
            else None
            for key in COUNTERS
        }
        rates = [rate for _, rate in _rates(points, "cpu") if rate is not None]
        span = times[-1] - times[0]
        used = _total([numbers.get("cpu", 0) for _, numbers in points], from_first=True)
        result.append(
            VMStats(
                name=name,
                samples=len(points),
                span=span,
                cpu_seconds=totals["cpu"] / 1e9,
                mean_cpu=used / 1e9 / span * 100 if span > 0 else None,
                peak_cpu=max(rates) / 1e9 * 100 if rates else None,
                peak_rss_kib=max(numbers.get("rss", 0) for _, numbers in points),
                memory_kib=points[-1][1].get("mem", 0),
                disk_read=totals["rd"],
                disk_written=totals["wr"],
                net_rx=totals["rx"],
                net_tx=totals["tx"],
            )
        )
    return result


def rates(samples, key, scale=1.0):
    """{domain: ((seconds since the first sample, per-second rate × scale), ...)}: the value of
    each interval, at its end; None for an interval where the counter restarted."""
    vms = per_vm(samples)
    start = min((sample["t"] for sample in samples), default=0)
    return {
        name: tuple((t - start, None if rate is None else rate * scale) for t, rate in _rates(points, key))
        for name, points in sorted(vms.items())
        if any(key in numbers for _, numbers in points)
    }


def _rates(points, key):
    out = []
    for (t0, a), (t1, b) in zip(points, points[1:], strict=False):
        before, after = a.get(key), b.get(key)
        known = before is not None and after is not None and after >= before and t1 > t0
        out.append((t1, (after - before) / (t1 - t0) if known else None))
    return out


def _total(values, from_first=False):
    """The counter's total over the samples: from zero (the domain's start) or, `from_first`,
    from the first sample on; a restart adds its new value."""
    total = 0 if from_first or not values else values[0]
    for before, after in zip(values, values[1:], strict=False):
        total += after - before if after >= before else after
    return total


def render_table(job_id, stats):
    if not stats:
        return f"job {job_id}: no samples (yet)"
    header = (
        "vm",
        "cpu s",
        "mean %",
        "peak %",
        "peak rss",
        "memory",
        "disk read",
        "disk write",
        "net rx",
        "net tx",
        "samples",
        "span",
    )
    rows = [header]
    for vm in stats:
        rows.append(
            (
                vm.name,
                f"{vm.cpu_seconds:.1f}",
                _percent(vm.mean_cpu),
                _percent(vm.peak_cpu),
                size(vm.peak_rss_kib * 1024),
                size(vm.memory_kib * 1024),
                size(vm.disk_read),
                size(vm.disk_written),
                size(vm.net_rx),
                size(vm.net_tx),
                str(vm.samples),
                f"{vm.span:.0f}s",
            )
        )
    widths = [max(len(row[column]) for row in rows) for column in range(len(header))]
    lines = [f"job {job_id}: per VM (CPU % of one host core; disk and net since the VM started)"]
    for row in rows:
        cells = [row[0].ljust(widths[0])] + [
            cell.rjust(width) for cell, width in zip(row[1:], widths[1:], strict=True)
        ]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def _percent(value):
    return "-" if value is None else f"{value:.0f}"


def size(count):
    """Bytes for a person: 512 B, 3.2 KiB, 41 MiB, 1.5 GiB; `-` for no figure."""
    if count is None:
        return "-"
    value, unit = float(count), "B"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            break
        value /= 1024
    if unit == "B":
        return f"{int(value)} B"
    return f"{value:.1f} {unit}" if value < 10 else f"{value:.0f} {unit}"


def plot(path, job_id, samples):
    """A PNG: CPU % per VM over time, disk and network MiB/s (solid: read / received, dashed:
    written / sent)."""
    from vtorque.pngplot import PALETTE, Panel, Series, chart

    names = sorted(per_vm(samples))
    colours = {name: PALETTE[index % len(PALETTE)] for index, name in enumerate(names)}
    mib = 1 / (1024 * 1024)

    def lines(key, scale, dashed=False):
        return tuple(
            Series(name, colours[name], points, dashed) for name, points in rates(samples, key, scale).items()
        )

    network = lines("rx", mib) + lines("tx", mib, True)
    panels = (
        Panel("CPU (% of one host core)", lines("cpu", 100 / 1e9)),
        Panel("disk (MiB/s; solid: read, dashed: written)", lines("rd", mib) + lines("wr", mib, True)),
        Panel(
            "network (MiB/s; solid: received, dashed: sent)"
            if network
            else "network: no counters (QEMU's user-mode network)",
            network,
        ),
    )
    chart(path, f"job {job_id}: VM statistics", panels, "seconds since the first sample")
