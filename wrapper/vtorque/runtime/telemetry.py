"""Per-job VM statistics: a small root process per node samples the job's domains (libvirt's
bulk domain stats: CPU time, memory, block and network bytes) every `telemetry.interval_seconds`
while the job runs, and appends one JSON line per sample beside the job's record
(`records/<job>.stats`, root's) and to the owner's copy (`records/owner/<job>.stats`, theirs),
which `vtorque jobs stats` reads as the record is read. Both files stay as long as the record
and are bounded (`telemetry.max_kib`): at the bound every other sample goes and the interval
doubles, so a long job keeps its whole span at a coarser grain.

The prologue starts the sampler when the VMs it started are up; it is no child of the hook
(new session, no inherited descriptors: pbs_mom and slurmd wait for the hook's output to
close). Its pid and start time are kept in the job dir, so the epilogue (every end: normal,
failed, cancelled, requeued) and `vtorque sweep` stop exactly that process, never a recycled
pid. It also ends by itself once the job dir is gone or the job's domains have all gone.
With `telemetry.prometheus_textfile_dir` it keeps `vtorque_job_<job>.prom` there for
node_exporter's textfile collector (replaced atomically, removed when it ends).

    python -m vtorque.runtime.telemetry CONFIG JOB_ID [NODE]
"""

import json
import os
import pwd
import signal
import socket
import stat
import subprocess
import sys
import time

from ansible_collections.mikelangelo.vtorque.plugins.module_utils import naming
from ansible_collections.mikelangelo.vtorque.plugins.module_utils.files import remove_file, write_atomic

from vtorque.job import statedir
from vtorque.job.records import load_record, stats_path, update_record

PID_FILE = "telemetry.pid"
MODULE = "vtorque.runtime.telemetry"
IDLE_TICKS = 3  # samples without any domain of the job before the sampler ends by itself
STOP_WAIT = 3.0  # seconds a sampler has to end after SIGTERM before SIGKILL


def start_sampler(job_id, config, node=None):
    """Start this node's sampler of the job (all its domains here, or `node`'s); a failure is an
    event in the record, never the job's failure."""
    if not config.telemetry.interval_seconds:
        return None
    try:
        for path in (
            stats_path(config.state_dir, job_id),
            stats_path(config.state_dir, job_id, owner_copy=True),
        ):
            remove_file(path)  # an earlier, requeued attempt's
        process = subprocess.Popen(  # noqa: S603 - our own interpreter and module, argument list
            [sys.executable, "-m", MODULE, config.source, job_id, *([node] if node else [])],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            close_fds=True,
            start_new_session=True,
            cwd="/",
            env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"},
        )
        process.returncode = 0  # not ours to wait for: it outlives the hook, and init reaps it
        marker = {"pid": process.pid, "start": _start_time(process.pid)}
        write_atomic(_pid_file(config, job_id), json.dumps(marker), 0o600)
        return process.pid
    except OSError as err:
        update_record(config.state_dir, job_id, event=f"telemetry not started: {err}")
        return None


def stop_sampler(job_id, config):
    """End the job's sampler on this node (if any: only the process the pid file names, with
    the same start time) and remove its textfile; True when one was running."""
    path = _pid_file(config, job_id)
    try:
        with open(path, encoding="utf-8") as handle:
            marker = json.load(handle)
        pid, start = int(marker["pid"]), marker["start"]
    except (OSError, ValueError, KeyError, TypeError):
        pid = start = None
    running = pid is not None and _is_sampler(pid, start)
    if running:
        _end(pid, start)
    remove_file(path)
    if config.telemetry.prometheus_textfile_dir:
        remove_file(textfile_path(config.telemetry.prometheus_textfile_dir, job_id))
    return running


def stop_stale_samplers(config, live_jobs):
    """`vtorque sweep`: samplers and textfiles of jobs no longer running on this node."""
    live = {naming.sanitise_job_id(job) for job in live_jobs}
    stopped = []
    try:
        names = sorted(os.listdir(os.path.join(config.state_dir, "jobs")))
    except FileNotFoundError:
        names = []
    for name in names:
        if name not in live and stop_sampler(name, config):
            stopped.append(name)
    directory = config.telemetry.prometheus_textfile_dir
    for name in sorted(os.listdir(directory)) if directory and os.path.isdir(directory) else ():
        job = name.removeprefix("vtorque_job_").removesuffix(".prom")
        if name == f"vtorque_job_{job}.prom" and job not in live:
            remove_file(os.path.join(directory, name))
    return stopped


def textfile_path(directory, job_id):
    return os.path.join(directory, f"vtorque_job_{naming.sanitise_job_id(job_id)}.prom")


def _pid_file(config, job_id):
    return os.path.join(naming.job_dir(job_id, config.state_dir), PID_FILE)


def _start_time(pid):
    """The process's start time in clock ticks since boot (/proc/<pid>/stat field 22)."""
    with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as handle:
        return int(handle.read().rsplit(")", 1)[1].split()[19])


def _state(pid):
    with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as handle:
        return handle.read().rsplit(")", 1)[1].split()[0]


def _is_sampler(pid, start):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            argv = handle.read().split(b"\0")
        return _start_time(pid) == start and MODULE.encode() in argv and _state(pid) != "Z"
    except (OSError, IndexError, ValueError):
        return False


def _end(pid, start):
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_WAIT
    while time.monotonic() < deadline:
        if not _is_sampler(pid, start):
            return
        time.sleep(0.05)
    if _is_sampler(pid, start):
        os.kill(pid, signal.SIGKILL)


class Sampler:
    """One node's sampling of one job; `tick` takes one sample (the benchmark times it)."""

    def __init__(self, config, job_id, node=None):
        self.job_id, self.node = job_id, node
        self.prefix = naming.domain_prefix(job_id)
        self.job_dir = naming.job_dir(job_id, config.state_dir)
        self.interval = config.telemetry.interval_seconds
        self.limit = config.telemetry.max_kib * 1024
        statedir.subdir(config.state_dir, "records/owner")
        self.path = stats_path(config.state_dir, job_id)
        self.copy = stats_path(config.state_dir, job_id, owner_copy=True)
        self.owner = _owner((load_record(config.state_dir, job_id) or {}).get("owner"))
        directory = config.telemetry.prometheus_textfile_dir
        self.textfile = textfile_path(directory, job_id) if directory else None
        self.host = socket.gethostname()

    def mine(self, name):
        if self.node is not None:
            return naming.is_domain_of_node(name, self.job_id, self.node)
        return name.startswith(self.prefix) and name[len(self.prefix) :].rsplit("-", 1)[-1].isdigit()

    def tick(self, conn):
        """Sample the job's running domains; the number sampled."""
        import libvirt

        domains = [
            d for d in conn.listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_ACTIVE) if self.mine(d.name())
        ]
        if not domains:
            return 0
        kinds = (
            libvirt.VIR_DOMAIN_STATS_CPU_TOTAL
            | libvirt.VIR_DOMAIN_STATS_BALLOON
            | libvirt.VIR_DOMAIN_STATS_INTERFACE
            | libvirt.VIR_DOMAIN_STATS_BLOCK
        )
        sample = {
            "t": round(time.time(), 3),
            "vms": {
                domain.name(): compact(stats) for domain, stats in conn.domainListGetStats(domains, kinds)
            },
        }
        self.record(sample)
        return len(domains)

    def record(self, sample):
        line = (json.dumps(sample, separators=(",", ":"), sort_keys=True) + "\n").encode()
        size = _append(self.path, line, None)
        if self.owner:
            _append(self.copy, line, self.owner)
        if size > self.limit:
            self.thin()
        if self.textfile:
            write_atomic(self.textfile, prometheus_text(self.job_id, self.host, sample), 0o644)

    def thin(self):
        """Every other sample goes (the first and the last stay); the interval doubles."""
        with open(self.path, "rb") as handle:
            lines = handle.read().splitlines(keepends=True)
        kept = b"".join(lines[:-1:2] + lines[-1:])
        write_atomic(self.path, kept, 0o600)
        if self.owner:
            write_atomic(self.copy, kept, 0o600, self.owner)
        self.interval *= 2

    def run(self, connect):
        """Sample until stopped (SIGTERM), until the job dir is gone, or until the job's domains
        are gone for IDLE_TICKS samples; the textfile goes with it."""
        signal.signal(signal.SIGTERM, _stop)
        idle, conn = 0, None
        try:
            while os.path.isdir(self.job_dir) and idle < IDLE_TICKS:
                began = time.monotonic()
                try:
                    conn = conn or connect()
                    idle = 0 if self.tick(conn) else idle + 1
                except Exception:  # noqa: BLE001 - libvirtd restarted, a domain went meanwhile: next tick
                    conn, idle = None, idle + 1
                time.sleep(max(0.0, self.interval - (time.monotonic() - began)))
        except _Stopped:
            pass
        finally:
            if self.textfile:
                remove_file(self.textfile)


class _Stopped(Exception):
    pass


def _stop(signum, frame):
    raise _Stopped()


def compact(stats):
    """libvirt's domain stats as the few numbers kept: CPU ns, memory KiB, I/O bytes (summed
    over the domain's disks and interfaces)."""

    def total(kind, field):
        return sum(stats.get(f"{kind}.{index}.{field}", 0) for index in range(stats.get(f"{kind}.count", 0)))

    numbers = {
        "cpu": stats.get("cpu.time", 0),
        "rss": stats.get("balloon.rss", 0),
        "mem": stats.get("balloon.current", 0),
        "rd": total("block", "rd.bytes"),
        "wr": total("block", "wr.bytes"),
    }
    if stats.get("net.count"):  # QEMU's user-mode network (slirp) has no counters in libvirt
        numbers.update(rx=total("net", "rx.bytes"), tx=total("net", "tx.bytes"))
    return numbers


PROMETHEUS = (
    ("cpu", "vtorque_vm_cpu_seconds_total", "counter", "CPU time of the VM", 1e-9),
    ("rss", "vtorque_vm_memory_rss_bytes", "gauge", "resident memory of the VM's QEMU process", 1024),
    ("mem", "vtorque_vm_memory_current_bytes", "gauge", "memory the VM's balloon leaves the guest", 1024),
    ("rd", "vtorque_vm_disk_read_bytes_total", "counter", "bytes the VM read from its disks", 1),
    ("wr", "vtorque_vm_disk_written_bytes_total", "counter", "bytes the VM wrote to its disks", 1),
    ("rx", "vtorque_vm_network_receive_bytes_total", "counter", "bytes the VM received", 1),
    ("tx", "vtorque_vm_network_transmit_bytes_total", "counter", "bytes the VM sent", 1),
)


def prometheus_text(job_id, host, sample):
    """The node_exporter textfile of one sample (exposition format 0.0.4)."""

    def quoted(value):
        return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")

    lines = []
    for key, metric, kind, text, scale in PROMETHEUS:
        lines += [f"# HELP {metric} {text}.", f"# TYPE {metric} {kind}"]
        for name, numbers in sorted(sample["vms"].items()):
            if key not in numbers:
                continue
            labels = f'job="{quoted(job_id)}",vm="{quoted(name)}",host="{quoted(host)}"'
            value = numbers[key] * scale
            lines.append(
                f"{metric}{{{labels}}} {value:.9g}" if scale != 1 else f"{metric}{{{labels}}} {value}"
            )
    return "\n".join(lines) + "\n"


def _append(path, data, owner):
    """Append to root's file or (uid, gid) `owner`'s in root's records dir, never through a link
    or into a hard link; the size afterwards."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_nlink != 1:
            raise OSError(f"{path} is not a regular, singly linked file")
        if info.st_size == 0:
            os.fchmod(fd, 0o600)
            if owner:
                os.fchown(fd, *owner)
        os.write(fd, data)
        return info.st_size + len(data)
    finally:
        os.close(fd)


def _owner(name):
    try:
        entry = pwd.getpwnam(name) if name else None
    except KeyError:
        return None
    return (entry.pw_uid, entry.pw_gid) if entry else None


def _connect(uri):
    import libvirt

    libvirt.registerErrorHandler(lambda _ctx, _err: None, None)  # no stderr: it is /dev/null anyway
    return libvirt.openReadOnly(uri)


def main(argv=None):
    from vtorque.site.config import load_config

    argv = sys.argv[1:] if argv is None else argv
    config = load_config(argv[0])
    sampler = Sampler(config, argv[1], argv[2] if len(argv) > 2 else None)
    sampler.run(lambda: _connect(config.libvirt.uri))
    return 0


if __name__ == "__main__":
    sys.exit(main())
