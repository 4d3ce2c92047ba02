"""What the primary node spends per extra node of a multi-node job, over real SSH.

Simulated nodes n1..n32 (benchmarks/netns_nodes.py: a network namespace and an OpenSSH sshd
each, on this machine's filesystem, libvirt's test:///default driver, so nothing boots). For
1, 2, 4, 8, 16 and 32 nodes, `--repeat` times, three designs, each phase in a process of its
own as the hook would run it (Python start-up, config, plan and keys, then the playbook):

fan-out, every node over SSH
             the primary (outside the namespaces) runs `job_start` over SSH to every node (the
             product's runner: forks min(20, N), strategy free, pipelining, host key
             checking), and at the end `teardown()`, i.e. `job_stop` over SSH to every node.
fan-out, own node local (Torque)
             as the product runs a Torque job: the primary is n1 (runner.local_nodes), so
             `job_start` takes n1 over the local connection and the others over SSH, and
             `teardown()` sweeps n1 in-process and runs `job_stop` over SSH on n2..nN only.
             Both fan-outs make fresh keys (one ssh-keygen per VM of the job).
each node its own (Slurm)
             Slurm today (and what a Torque sister's prologue.parallel would do): the primary
             expands the node list once (`scontrol show hostnames`, as the Slurm adapter does),
             derives the job's keys from the site secret, and starts only its own node's VMs
             (`job_start` over the local connection, one host; the variables still hold the
             whole plan, as every node computes it), and at the end sweeps its own node
             in-process (`teardown(..., here=n1)`).

Per phase and run: the primary's CPU seconds (user+sys of its whole process tree: wait4 of
the hook process, plus the SSH control masters that ControlPersist detaches, which come back
to this process as a child subreaper and are ended and reaped after the phase, since the next
phase of a real job comes long after their 60 s), its peak memory (the tree's summed PSS and
RSS, sampled every 0.1 s, and the largest process's ru_maxrss), the SSH logins and sessions
the nodes' sshds accepted (their logs, LogLevel VERBOSE), the ssh client processes seen, the
wall time, and, to judge the rest: the 1-minute load when the phase began and the CPU seconds
the whole machine was busy meanwhile (the primary, the nodes' sshds and modules, and whatever
else runs here). The nodes share this machine's cores with the primary, so the wall time is
not a cluster's; the CPU seconds are the primary's own.

    python benchmarks/run.py --only nodes --repeat 3
"""

import contextlib
import ctypes
import dataclasses
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from netns_nodes import SshNodes
from timing import summary

NODE_COUNTS = (1, 2, 4, 8, 16, 32)
DESIGNS = {
    "ssh": "fan-out, every node over SSH",
    "torque": "fan-out, own node local (Torque primary)",
    "own": "each node its own (Slurm; Torque each_node)",
}
PHASES = {"start": "job_start", "stop": "job_stop"}
METRICS = (
    "cpu_s",
    "wall_s",
    "pss_mib",
    "rss_sum_mib",
    "max_rss_mib",
    "ssh_connections",
    "ssh_sessions",
    "ssh_processes",
    "load1",
    "machine_cpu_s",
)
SAMPLE_SECONDS = 0.1
PR_SET_CHILD_SUBREAPER = 36
KEY_SECRET = b"vtorque-bench-site-secret-32-bytes!"  # the site's key secret where each node derives the keys
PAGE = os.sysconf("SC_PAGE_SIZE")
# The runner's defaults (forks 20, free, pipelining); local_nodes: the primary is n1 ("torque").
CONFIG = """
defaults: {{img: bench}}
state_dir: {state}
libvirt: {{uri: "test:///default", virt_type: qemu}}
network:
  mode: bridge
  cidr: 10.0.0.0/8
  gateway: 10.0.0.1
  derive: {{pattern: 'n(\\d+)', first: 10.1.0.0, per_node: 4}}
runner: {{local_nodes: [{local}]}}
"""
SLURM_CONF = """ClusterName=vtbench
SlurmctldHost=localhost
NodeName=n[1-{count}] CPUs=2 State=UNKNOWN
PartitionName=all Nodes=ALL Default=YES
"""


def nodes(workdir, repeat):
    workdir = Path(workdir)
    image = workdir / "base.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(image), "16M"], check=True)
    slurm_conf = workdir / "slurm.conf"
    slurm_conf.write_text(SLURM_CONF.format(count=max(NODE_COUNTS)))
    samples = {
        (design, phase): {count: [] for count in NODE_COUNTS} for design in DESIGNS for phase in PHASES
    }
    with SshNodes(max(NODE_COUNTS)) as ssh_nodes, _subreaper():
        host_vars = ssh_nodes.all_host_vars()
        for count in NODE_COUNTS:
            for attempt in range(repeat):
                for design in DESIGNS:
                    state = Path(tempfile.mkdtemp(dir=workdir, prefix="state-"))
                    job_id = f"{count}{attempt}.bench"
                    for phase in PHASES:
                        spec = {
                            "phase": phase,
                            "design": design,
                            "count": count,
                            "state": str(state),
                            "image": str(image),
                            "job_id": job_id,
                            "slurm_conf": str(slurm_conf),
                            "host_vars": host_vars,
                        }
                        sample = _measure_phase(spec, ssh_nodes, workdir)
                        samples[design, phase][count].append(sample)
                        print(
                            f"    {DESIGNS[design]}, {PHASES[phase]}, {count} node(s): "
                            + ", ".join(f"{key} {value:g}" for key, value in sample.items()),
                            flush=True,
                        )
                    shutil.rmtree(state, ignore_errors=True)
    return _results(samples)


# --- the figures ---------------------------------------------------------------------------


def _results(samples):
    counts = list(NODE_COUNTS)
    results = []
    for design, label in DESIGNS.items():
        for phase, playbook in PHASES.items():
            per_count = samples[design, phase]
            metrics = {key: [summary([s[key] for s in per_count[c]]) for c in counts] for key in METRICS}
            results.append(_figure(f"nodes: primary CPU s, {playbook}, {label}", counts, metrics, label))
        both = {
            key: [
                summary(
                    [
                        a[key] + b[key]
                        for a, b in zip(samples[design, "start"][c], samples[design, "stop"][c], strict=True)
                    ]
                )
                for c in counts
            ]
            for key in ("cpu_s", "wall_s", "ssh_connections", "ssh_sessions")
        }
        results.append(_figure(f"nodes: primary CPU s, job_start+job_stop, {label}", counts, both, label))
    return results


def _figure(name, counts, metrics, design):
    cpu = metrics["cpu_s"]
    return {
        "name": f"{name}, {counts[-1]} vs 1 node(s)",
        "design": design,
        "nodes": counts,
        "series": cpu,
        "measured": cpu[-1],
        "floor": cpu[0],
        "overhead_s": cpu[-1]["median"] - cpu[0]["median"],
        "ratio": cpu[-1]["median"] / cpu[0]["median"] if cpu[0]["median"] else None,
        "slope_per_node": {
            key: _slope(counts, [s["median"] for s in series]) for key, series in metrics.items()
        },
        "metrics": metrics,
        "note": "primary's CPU (user+sys of its process tree) against the node count; simulated "
        "nodes: netns + sshd each, test:///default, nothing boots",
    }


def _slope(xs, ys):
    """Least-squares slope of ys over xs (per extra node)."""
    mean_x, mean_y = statistics.fmean(xs), statistics.fmean(ys)
    den = sum((x - mean_x) ** 2 for x in xs)
    return sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys, strict=True)) / den if den else 0.0


def plot(results, out):
    """One line per design: the primary's median CPU seconds for job_start + job_stop over the
    node count (the per-phase figures are in the JSON)."""
    from plots import plot_series

    mine = [r for r in results if r["name"].startswith("nodes: primary CPU s, job_start+job_stop, ")]
    if not mine:
        return
    series = {r["design"]: r["series"] for r in mine}
    plot_series(
        "nodes: the primary's CPU seconds, job_start + job_stop", mine[0]["nodes"], series, out, "nodes"
    )


# --- one phase, measured -------------------------------------------------------------------


@contextlib.contextmanager
def _subreaper():
    """This process adopts its orphaned descendants (the SSH control masters), so that their
    CPU can be reaped and counted."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER)")
    try:
        yield
    finally:
        libc.prctl(PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0)
        _reap_adopted(set(), wait_running=False)


def _measure_phase(spec, ssh_nodes, workdir):
    with tempfile.NamedTemporaryFile("w", dir=workdir, suffix=".json", delete=False) as handle:
        json.dump(spec, handle)
    env = dict(os.environ, **ssh_nodes.env())
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(Path(__file__).parent), env.get("PYTHONPATH")]))
    before = ssh_nodes.ssh_counts()
    load1 = os.getloadavg()[0]  # other work on this machine (others' tests) shows here
    busy = _machine_busy()
    exclude = ssh_nodes.sshd_pids()
    err_path = Path(handle.name).with_suffix(".err")
    with open(err_path, "wb") as err:
        began = time.perf_counter()
        proc = subprocess.Popen(
            [sys.executable, __file__, handle.name], env=env, stdout=subprocess.DEVNULL, stderr=err
        )
        sampler = _Sampler(proc.pid, exclude)
        sampler.start()
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - began
        busy = _machine_busy() - busy
        proc.returncode = os.waitstatus_to_exitcode(status)
        sampler.stop()
    os.unlink(handle.name)
    cpu = usage.ru_utime + usage.ru_stime
    max_rss = usage.ru_maxrss
    ssh_nodes.kill_masters()
    for adopted in _reap_adopted(exclude, wait_running=True):
        cpu += adopted.ru_utime + adopted.ru_stime
        max_rss = max(max_rss, adopted.ru_maxrss)
    if proc.returncode != 0:
        raise RuntimeError(
            f"{spec['design']} {spec['phase']} over {spec['count']} node(s) failed: "
            + err_path.read_text(errors="replace")[-3000:]
        )
    err_path.unlink()
    after = ssh_nodes.ssh_counts()
    return {
        "cpu_s": round(cpu, 3),
        "wall_s": round(wall, 3),
        "pss_mib": round(sampler.peak_pss / 2**20, 1),
        "rss_sum_mib": round(sampler.peak_rss / 2**20, 1),
        "max_rss_mib": round(max_rss / 1024, 1),
        "ssh_connections": after["connections"] - before["connections"],
        "ssh_sessions": after["sessions"] - before["sessions"],
        "ssh_processes": len(sampler.ssh_pids),
        "load1": round(load1, 2),
        "machine_cpu_s": round(busy, 2),
    }


def _machine_busy():
    """CPU seconds this machine spent busy so far (every process: the primary, the nodes'
    sshds and modules, and whatever else runs here)."""
    with open("/proc/stat", encoding="ascii") as handle:
        fields = [int(value) for value in handle.readline().split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq = fields[:7]
    return (user + nice + system + irq + softirq) / os.sysconf("SC_CLK_TCK")


def _reap_adopted(exclude, wait_running):
    """wait4 every child of this process not in `exclude` that is a zombie, or (when
    `wait_running`) an ssh given SIGTERM already: their rusages."""
    usages = []
    for pid, (ppid, comm, state) in _processes().items():
        if ppid != os.getpid() or pid in exclude:
            continue
        if state == "Z" or (wait_running and comm == "ssh"):
            with contextlib.suppress(ChildProcessError):
                usages.append(os.wait4(pid, 0)[2])
    return usages


def _processes():
    """{pid: (ppid, comm, state)} of every process."""
    table = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", encoding="ascii", errors="replace") as handle:
                text = handle.read()
        except OSError:
            continue
        comm = text[text.index("(") + 1 : text.rindex(")")]
        fields = text[text.rindex(")") + 2 :].split()
        table[int(entry.name)] = (int(fields[1]), comm, fields[0])
    return table


class _Sampler(threading.Thread):
    """The tree under `root` plus the processes this (subreaper) process adopted, except
    `exclude`, every SAMPLE_SECONDS: peak summed PSS and RSS, and the ssh pids seen."""

    def __init__(self, root, exclude):
        super().__init__(daemon=True)
        self.root, self.exclude = root, exclude
        self.peak_pss = self.peak_rss = 0
        self.ssh_pids = set()
        self._done = threading.Event()

    def run(self):
        while True:
            self._sample()
            if self._done.wait(SAMPLE_SECONDS):
                return

    def stop(self):
        self._done.set()
        self.join()

    def _sample(self):
        table = _processes()
        children = {}
        for pid, (ppid, _comm, _state) in table.items():
            children.setdefault(ppid, []).append(pid)
        me = os.getpid()
        todo = [self.root] + [pid for pid in children.get(me, ()) if pid not in self.exclude]
        seen, pss, rss = set(), 0, 0
        while todo:
            pid = todo.pop()
            if pid in seen:
                continue
            seen.add(pid)
            todo.extend(children.get(pid, ()))
            if table.get(pid, (0, ""))[1] == "ssh":
                self.ssh_pids.add(pid)
            one_pss, one_rss = _memory(pid)
            pss, rss = pss + one_pss, rss + one_rss
        self.peak_pss, self.peak_rss = max(self.peak_pss, pss), max(self.peak_rss, rss)


def _memory(pid):
    """(PSS, RSS) bytes of `pid` (0, 0 once it is gone)."""
    pss = rss = 0
    try:
        with open(f"/proc/{pid}/smaps_rollup", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("Pss:"):
                    pss = int(line.split()[1]) * 1024
                elif line.startswith("Rss:"):
                    rss = int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return pss, rss


# --- the hook's side of one phase (a process of its own) ----------------------------------


def make_job(state, count, image, job_id, local="", secret=None, here=None):
    """(config, plan, start variables, AllocatedJob) of a job of one 64 MiB VM on each of n1..n<count>;
    `local`: the node that is this machine (runner.local_nodes); `secret`: the keys derived
    from it, as where each node starts its own VMs (Slurm), else fresh ones (ssh-keygen per VM,
    as Torque's primary makes them); `here`: the node that starts only its own."""
    from vtorque.job import statedir
    from vtorque.job.keys import make_job_keys
    from vtorque.job.plan import Owner, make_plan
    from vtorque.request.grammar import parse_vm_values
    from vtorque.request.resolve import resolve_request
    from vtorque.runtime.playbook_vars import start_variables
    from vtorque.scheduler.base import AllocatedJob, Event
    from vtorque.site.catalog import ImageEntry
    from vtorque.site.config import parse_config

    config = parse_config(CONFIG.format(state=state, local=local), "bench")
    catalog = {"bench": ImageEntry("bench", str(image), "qcow2", "debian")}
    request = resolve_request(
        parse_vm_values([("vcpus=1,ram=64M", "bench")]), config, owner_uid=0, cwd="/", catalog=catalog
    )
    names = tuple(f"n{index}" for index in range(1, count + 1))
    job = AllocatedJob(
        Event.START, job_id, "root", "root", "bench", "/x", tuple((n, 2) for n in names), "/tmp"
    )
    plan = make_plan(job, request, config, Owner("root", 0, 0, "root", "/root"))
    plan = dataclasses.replace(plan, mounts=())
    statedir.job_dir(plan.state_dir, plan.job_id)
    keys = make_job_keys(plan, secret, "vtbench") if secret else make_job_keys(plan)
    return config, plan, start_variables(plan, config, keys, nodes=(here,) if here else None), job


def _hook_phase(spec):
    """One phase as the primary's hook does it; the SSH nodes' host vars go into the runner's
    inventory (what a site's inventory or root's ~/.ssh gives the real nodes)."""
    from netns_nodes import with_host_vars
    from vtorque.runtime import runner
    from vtorque.site.config import parse_config

    count, design, state = spec["count"], spec["design"], spec["state"]
    names = tuple(f"n{index}" for index in range(1, count + 1))
    local = "n1" if design == "torque" else ""
    config = parse_config(CONFIG.format(state=state, local=local), "bench")
    if design == "own":  # the node list, as the Slurm adapter expands it
        from vtorque.scheduler.slurm.adapter import Adapter

        os.environ["SLURM_CONF"] = spec["slurm_conf"]
        listed = Adapter(config).hostnames(f"n[1-{count}]")
        if tuple(listed) != names:
            raise RuntimeError(f"scontrol show hostnames: {listed}")
    made = runner.inventory
    runner.inventory = lambda nodes, local=None: with_host_vars(made(nodes, local), spec["host_vars"])
    here = names[0] if design == "own" else None
    if spec["phase"] == "start":
        secret = KEY_SECRET if design == "own" else None
        from vtorque.runtime.prologue import _start_vms  # the start hook's own step

        config, plan, variables, job = make_job(
            state, count, spec["image"], spec["job_id"], local, secret, here
        )
        job = dataclasses.replace(job, here=here)
        result = _start_vms(job, plan, config, variables, time.monotonic() + 900, lambda fresh=False: False)
        made_files = {Path(vm.overlay).exists() for vm in plan.vms if here is None or vm.node == here}
        if result.ok and made_files != {True}:
            raise RuntimeError("job_start succeeded but a VM's overlay is missing")
    else:
        from vtorque.runtime.epilogue import teardown

        result = teardown(spec["job_id"], names, config, graceful=False, here=here)
    if not result.ok:
        raise RuntimeError(f"{spec['phase']} failed ({result.status}): {result.failures[:3]}")


if __name__ == "__main__":
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    _hook_phase(json.loads(Path(sys.argv[1]).read_text()))
