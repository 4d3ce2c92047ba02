"""Orchestration cost against the node count: job_start and job_stop over 1..256 simulated
nodes (inventory hosts on this machine, local connection, libvirt's test:///default driver, so
nothing boots), for the runner settings worth comparing."""

import dataclasses
import functools
import tempfile

from timing import measure, summary
from vtorque.job import statedir
from vtorque.job.keys import make_job_keys
from vtorque.job.plan import Owner, make_plan
from vtorque.request.grammar import parse_vm_values
from vtorque.request.resolve import resolve_request
from vtorque.runtime.playbook_vars import start_variables, stop_variables
from vtorque.runtime.runner import run_playbook
from vtorque.scheduler.base import AllocatedJob, Event
from vtorque.site.catalog import ImageEntry
from vtorque.site.config import parse_config

NODE_COUNTS = (1, 8, 32, 128, 256)
# (strategy, pipelining, largest node count): the alternatives stop early to bound the run time.
SETTINGS = {
    "free, pipelining": ("free", True, 256),
    "linear, pipelining": ("linear", True, 32),
    "free, no pipelining": ("free", False, 32),
}
MAX_FORKS = 50  # one ansible worker process per fork: bounded by this machine's memory
CONFIG = """
defaults: {{img: bench}}
state_dir: {state}
libvirt: {{uri: "test:///default", virt_type: qemu}}
network:
  mode: bridge
  cidr: 10.0.0.0/8
  gateway: 10.0.0.1
  derive: {{pattern: 'n(\\d+)', first: 10.1.0.0, per_node: 4}}
runner: {{forks: {forks}, strategy: {strategy}, pipelining: {pipelining}}}
"""


def fanout(workdir, repeat, image_path="/var/cache/vtorque-test/fanout-base.qcow2"):
    import subprocess

    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", image_path, "16M"], check=True)
    catalog = {"bench": ImageEntry("bench", image_path, "qcow2", "debian")}
    results = []
    for label, (strategy, pipelining, largest) in SETTINGS.items():
        counts = [count for count in NODE_COUNTS if count <= largest]
        series = []
        for count in counts:
            runs = 1 if count >= 128 else repeat
            run = functools.partial(_start_stop, workdir, catalog, count, strategy, pipelining)
            series.append(summary(measure(run, runs)))
        results.append(
            {
                "name": f"fan-out: job_start+job_stop over {counts[-1]} vs 1 node(s), {label}",
                "nodes": counts,
                "series": series,
                "measured": series[-1],
                "floor": series[0],
                "overhead_s": series[-1]["median"] - series[0]["median"],
                "ratio": series[-1]["median"] / series[0]["median"],
                "note": "simulated nodes: local connection, test:///default, nothing boots",
            }
        )
    return results


def _start_stop(workdir, catalog, count, strategy, pipelining):
    with tempfile.TemporaryDirectory(dir=workdir) as state:
        text = CONFIG.format(
            state=state, forks=min(MAX_FORKS, count), strategy=strategy, pipelining=str(pipelining).lower()
        )
        config = parse_config(text, "bench")
        request = resolve_request(
            parse_vm_values([("vcpus=1,ram=64M", "bench")]), config, owner_uid=0, cwd="/", catalog=catalog
        )
        nodes = tuple((f"n{index:03d}", 2) for index in range(1, count + 1))
        job = AllocatedJob(Event.START, f"{count}.bench", "root", "root", "bench", "/x", nodes, "/tmp")
        plan = make_plan(job, request, config, Owner("root", 0, 0, "root", "/root"))
        plan = dataclasses.replace(plan, mounts=())
        statedir.job_dir(plan.state_dir, plan.job_id)
        variables = start_variables(plan, config, make_job_keys(plan))
        names = [host for host, _ in nodes]
        started = run_playbook(
            "start",
            names,
            variables,
            work_dir=plan.job_dir,
            runner_config=config.runner,
            timeout=1800,
            local_nodes=names,
        )
        stop_vars = stop_variables(job.job_id, config, 0)
        stopped = run_playbook(
            "stop",
            names,
            stop_vars,
            work_dir=state,
            runner_config=config.runner,
            timeout=1800,
            local_nodes=names,
        )
        if not (started.ok and stopped.ok):
            raise RuntimeError(
                f"fan-out to {count} nodes failed: {started.failures[:3]} {stopped.failures[:3]}"
            )
