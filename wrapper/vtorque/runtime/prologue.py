"""The start of a VM job, as root, in named phases: on the primary node for every node
(Torque), or on each node for its own VMs (`job.here`, Slurm: every node's Prolog computes
the same plan and derives the same keys):

admit      the owner, their spool dir, the request (validated again), the allocation, the image
register   the record says `starting`, unless this attempt's epilogue came first
provision  port and device claims, job dir, keys; this machine's VMs in-process (vm_start's code,
           runtime.local_start) and the job_start playbook on every other node (ansible-runner)
await      every guest started here answers SSH with its pinned host key
publish    vms.json and read access to the consoles for the owner; the record says `running`

`start` returns an Outcome (the scheduler adapter turns it into its exit code). The one place
that maps failures to outcomes is `start` itself: admit's errors are the user's (ABORT); a
cancellation at any later phase is CANCELLED; anything else is the infrastructure's, which
offlines the node and REQUEUEs, unless that would loop (`_after_failed_start`: ABORT).
"""

import dataclasses
import json
import os
import socket
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from ansible_collections.mikelangelo.vtorque.plugins.module_utils.files import write_atomic

from vtorque import scheduler
from vtorque.errors import InfrastructureError, JobCancelled, VTorqueError
from vtorque.guest.console import console_tail, let_owner_read
from vtorque.guest.seeds import merge_metadata
from vtorque.guest.ssh import OWNER_KNOWN_HOSTS, ROOT_KNOWN_HOSTS, known_host_line, wait_for_ssh
from vtorque.job import statedir
from vtorque.job.devices import claim_devices
from vtorque.job.keys import make_job_keys
from vtorque.job.plan import check_allocation, make_plan, owner_of
from vtorque.job.ports import claim_ports
from vtorque.job.records import Reporter, message, update_record
from vtorque.job.spool import check_job_dir
from vtorque.request.document import load_request
from vtorque.request.userfiles import read_user_metadata
from vtorque.runtime.cancel import STOPPED, Cancellation
from vtorque.runtime.epilogue import cut_short, teardown
from vtorque.runtime.playbook_vars import start_variables
from vtorque.runtime.runner import here, is_local, run_playbook
from vtorque.runtime.telemetry import start_sampler
from vtorque.scheduler.base import Outcome
from vtorque.site.catalog import verify_image_files

TEARDOWN_RESERVE = 20  # seconds kept for destroying the VMs after a failed start


@dataclass
class Admitted:
    owner: object
    request: object
    plan: object
    extra: dict | None  # the user's extra cloud-config


def start(job, config):
    """The job's VMs: every node's from the primary (Torque), or this node's own (`job.here`,
    Slurm: every node runs this in its own hook and computes the same plan)."""
    began, began_wall = time.monotonic(), time.time()
    deadline = began + config.timeouts.prologue - TEARDOWN_RESERVE  # a failed start destroys: no ACPI wait
    spool = os.path.join(config.spool_dir, job.spool_key)
    tell = Reporter(config.state_dir, job.job_id, spool)
    adapter = scheduler.for_config(config)
    try:
        admitted = _admit(job, config, spool, tell)
    except (VTorqueError, KeyError) as err:
        tell(f"the job cannot start: {message(err)}")
        update_record(config.state_dir, job.job_id, state="aborted", owner=job.user, reason=message(err))
        return Outcome.ABORT
    plan = admitted.plan
    if not _register(job, config, plan, began_wall):
        tell("the job was deleted (or ended) before its VMs started; not starting them")
        return Outcome.CANCELLED
    cancelled = Cancellation(config, job.job_id, spool, admitted.owner.uid, adapter)
    try:
        plan, playbook_seconds = _provision(job, plan, config, admitted, deadline, cancelled, adapter)
        ready_from = time.monotonic()
        wait_for_ssh(_own_part(plan, job.here), deadline, _here(job, config), cancelled)
        _publish(job, config, plan, began, playbook_seconds, ready_from)
    except (VTorqueError, OSError, subprocess.SubprocessError) as err:
        if isinstance(err, JobCancelled) or cancelled(fresh=True):  # e.g. its epilogue removed the runner dir
            reason = "the job was deleted (or ended) while its VMs were starting"
            if not isinstance(err, JobCancelled):  # what the start saw of it, for the admin
                update_record(config.state_dir, job.job_id, event=f"start cut short: {message(err)}")
            tell(f"{reason}: tearing down, not requeueing")
            cut_short(job.job_id, plan.nodes, config, here=job.here)
            update_record(config.state_dir, job.job_id, state="cancelled", reason=reason)
            return Outcome.CANCELLED  # a deleted job: nothing to requeue, and the node is fine
        reason, node = message(err), job.here or socket.gethostname()
        tell(f"VM start failed on {node}; tearing down: {reason}")
        for vm in _own_part(plan, job.here).vms:
            console = console_tail(vm.serial_log)
            if console:
                update_record(config.state_dir, job.job_id, event=f"console of {vm.name}:\n{console}")
        teardown(job.job_id, plan.nodes, config, graceful=False, here=job.here)
        return _after_failed_start(job, config, node, reason, tell, adapter)
    start_sampler(job.job_id, config, node=job.here)  # this node's VMs are up; the epilogue stops it
    return Outcome.OK


def _own_part(plan, here):
    """The plan limited to the VMs this hook starts: all of them, or this node's (Slurm)."""
    if here is None:
        return plan
    return dataclasses.replace(plan, vms=tuple(vm for vm in plan.vms if vm.node == here))


def _here(job, config):
    """Node names that are this machine, for the runner's local connection and SSH liveness."""
    names = here(config.runner.local_nodes)
    return names | {job.here} if job.here else names


def _admit(job, config, spool, tell):
    """Everything the user gave, checked again as root (it may have changed since submission)."""
    owner = owner_of(job.user)
    tell.owner_uid = owner.uid
    check_job_dir(spool, owner.uid)
    request_file = os.path.join(spool, "request.json")
    request = load_request(request_file, owner.uid, config)
    check_allocation(job.nodes, request, config, source=f"request file {request_file}")
    if not request.user_image:
        verify_image_files(request.image)
    plan = make_plan(job, request, config, owner)
    extra = read_user_metadata(request, owner.uid)
    if extra:
        merge_metadata({}, extra, request.metadata)  # refuse bad keys now: abort
    return Admitted(owner, request, plan, extra)


def _register(job, config, plan, began_wall):
    """`starting`, unless this attempt's epilogue got here first (an earlier, requeued
    attempt's epilogue stopped before this prologue began, so it does not count)."""
    return update_record(
        config.state_dir,
        job.job_id,
        state="starting",
        owner=plan.owner.name,
        nodes=list(plan.nodes),
        unless=lambda record: record.get("state") in STOPPED and record.get("stopped_at", 0) >= began_wall,
    )


def _provision(job, plan, config, admitted, deadline, cancelled, adapter):
    """(the plan with its claimed ports, the playbook's seconds); the playbook runs on every
    node, or (Slurm) on this one with the local connection."""
    plan = claim_ports(plan, config.network.ssh_port_base)
    plan = claim_devices(plan, config.vrdma.devices, job.here or plan.nodes[0])
    statedir.job_dir(plan.state_dir, plan.job_id)
    secret = adapter.key_secret() if adapter.per_node else None  # every node: the same keys
    keys = make_job_keys(plan, secret, adapter.key_scope())
    known_hosts = "".join(known_host_line(vm, keys.hosts[vm.name][1]) for vm in plan.vms)
    for name, owner in ((ROOT_KNOWN_HOSTS, None), (OWNER_KNOWN_HOSTS, plan.owner)):
        _write(os.path.join(plan.job_dir, name), known_hosts, owner)
    variables = start_variables(
        plan, config, keys, admitted.extra, admitted.request.metadata, nodes=(job.here,) if job.here else None
    )
    result = _start_vms(job, plan, config, variables, deadline, cancelled)
    if cancelled(fresh=True):
        raise JobCancelled()
    if not result.ok:
        raise InfrastructureError(f"starting the VMs failed ({result.status}): " + "; ".join(result.failures))
    return plan, result.seconds


def _start_vms(job, plan, config, variables, deadline, cancelled):
    """This machine's VMs in-process (runtime.local_start) while job_start.yml starts the
    other nodes' (every node's with runner.start_in_process false); one RunResult."""
    nodes = (job.here,) if job.here else plan.nodes
    names = _here(job, config)
    local = [node for node in nodes if is_local(node, names)] if config.runner.start_in_process else []
    remote = [node for node in nodes if node not in local]

    def playbook():
        return run_playbook(
            "start",
            tuple(remote),
            variables,
            work_dir=plan.job_dir,
            runner_config=config.runner,
            timeout=max(1, int(deadline - time.monotonic())),
            local_nodes=tuple(names),
            cancelled=cancelled,
        )

    if not local:
        return playbook()
    from vtorque.runtime.local_start import start_here

    with ThreadPoolExecutor(1) as pool:
        others = pool.submit(playbook) if remote else None
        mine = start_here(variables, local, job.here or socket.gethostname())
        theirs = others.result() if others else None
    return mine if theirs is None else mine.joined(theirs, max(mine.seconds, theirs.seconds))


def _publish(job, config, plan, began, playbook_seconds, ready_from):
    """vms.json, the owner's alone (their job reads it; root never reads it back), then `running`
    unless the epilogue began meanwhile."""
    keys = ("name", "node", "rank", "hostname", "address", "ssh_host", "ssh_port")
    vms = [{key: getattr(vm, key) for key in keys} for vm in plan.vms]
    now = time.monotonic()  # the start's seconds: the job sees them as VTORQUE_START_SECONDS
    document = {
        "job_id": plan.job_id,
        "owner": plan.owner.name,
        "workdir": plan.workdir,
        "start_seconds": round(now - began, 2),
        "vms": vms,
    }
    _write(os.path.join(plan.job_dir, "vms.json"), json.dumps(document, indent=2) + "\n", plan.owner)
    _let_owner_read_consoles(job, config, plan)
    if not update_record(
        config.state_dir,
        job.job_id,
        state="running",
        vms=vms,
        **({"started_here": [vm.name for vm in _own_part(plan, job.here).vms]} if job.here else {}),
        phases={
            "prologue": round(now - began, 2),
            "job_start_playbook": round(playbook_seconds, 2),
            "guests_ssh_ready": round(now - ready_from, 2),
        },
        unless=lambda record: record.get("state") != "starting",
    ):
        raise JobCancelled()


def _let_owner_read_consoles(job, config, plan):
    """The owner may read the console logs of the VMs started here (`vtorque console`); the
    VMs of other nodes (Torque: the primary starts them all) have their logs there."""
    for vm in _own_part(plan, job.here).vms:
        try:
            let_owner_read(vm.serial_log, plan.owner.uid)
        except FileNotFoundError:
            continue
        except OSError as err:
            update_record(config.state_dir, job.job_id, event=f"{vm.name}'s console is root's only: {err}")


def _after_failed_start(job, config, node, reason, tell, adapter):
    """An infrastructure failure: offline (drain) the node and requeue, unless that would start
    the job here again or once too often (a scheduler may requeue a failing job forever): then
    abort."""
    record = update_record(config.state_dir, job.job_id, event=f"start failed on {node}: {reason}")
    failures = [*record.get("start_failures", []), node]
    update_record(config.state_dir, job.job_id, start_failures=failures)
    offline_problem = adapter.offline(reason)
    adapter.tell_job(job.job_id, f"start failed on {node}: {reason}")
    if offline_problem:
        tell(f"could not take {node} offline: {offline_problem}")
    if failures.count(node) > 1:
        verdict = f"its VMs failed to start on {node} before"
    elif len(failures) >= config.limits.start_attempts:
        verdict = f"its VMs failed to start {len(failures)} times (limits.start_attempts)"
    elif offline_problem:
        verdict = f"{node} could not be taken offline ({offline_problem}), so a requeue could land here again"
    else:
        tell(f"{node} is offline with the reason; the job is requeued")
        update_record(config.state_dir, job.job_id, state="requeued", reason=reason)
        return Outcome.REQUEUE
    tell(f"the job is aborted, not requeued: {verdict}; last failure: {reason}")
    update_record(config.state_dir, job.job_id, state="aborted", reason=f"{verdict}: {reason}")
    return Outcome.ABORT


def _write(path, text, owner=None):
    """Replace `path` in root's job dir (0600); given to `owner` when it is theirs to read."""
    write_atomic(path, text, 0o600, None if owner is None else (owner.uid, owner.gid))
