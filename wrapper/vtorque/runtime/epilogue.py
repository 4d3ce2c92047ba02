"""After the job, as root: every VM and file of it goes, on every node (the primary node's
`stop`: in-process here, through the job_stop playbook on the others) or on this node
(`leave`, in-process); and the quick teardown of a start that the job's deletion cut short.

The spool dir goes at every final end and stays only when the batch system requeues the job
(its next attempt needs the request). The record keeps what a failed start said (`requeued`,
`cancelled`, `aborted`) and gets the exit status and the epilogue's time.
"""

import os
import socket
import time

from ansible_collections.mikelangelo.vtorque.plugins.module_utils import naming
from ansible_collections.mikelangelo.vtorque.plugins.module_utils.sweep import sweep_jobs

from vtorque import scheduler
from vtorque.errors import VTorqueError
from vtorque.job import statedir
from vtorque.job.devices import release_devices
from vtorque.job.plan import owner_of
from vtorque.job.ports import release_ports
from vtorque.job.records import load_record, message, report, update_record
from vtorque.job.spool import remove_as_owner
from vtorque.runtime.cancel import epilogue_began
from vtorque.runtime.playbook_vars import stop_variables
from vtorque.runtime.runner import RunResult, is_local, run_playbook
from vtorque.runtime.telemetry import stop_sampler

START_ENDED = ("requeued", "cancelled", "aborted")  # what a prologue that did not start says


def stop(job, config):
    """The job's end on the primary node (Torque: for every node), or on this node (`job.here`,
    Slurm: every node's Epilog, which always runs, even after a failed or missing Prolog)."""
    began = time.monotonic()
    nodes = tuple(host for host, _ in job.nodes) or (socket.gethostname(),)
    before = (load_record(config.state_dir, job.job_id) or {}).get("state")
    # Said first: a prologue still starting this job's VMs then stops instead of taking the
    # teardown under it (a vanished guest) for an infrastructure failure.
    update_record(config.state_dir, job.job_id, state="stopping", stopped_at=time.time())
    stop_sampler(job.job_id, config)  # before its domains go; the samples stay with the record
    # Only guests that ran the job are asked to shut down; a start cut short is destroyed at
    # once (a booting guest ignores ACPI, and a deleted job must end promptly).
    result = teardown(job.job_id, nodes, config, graceful=before == "running", here=job.here)
    changes = {"exit_status": job.exit_status, "phases": {"epilogue": round(time.monotonic() - began, 2)}}
    if not result.ok:
        changes["reason"] = "; ".join(result.failures) or result.status
        report(f"teardown failed: {changes['reason']}", state_dir=config.state_dir, job_id=job.job_id)
    update_record(config.state_dir, job.job_id, **changes)
    # The state a failed start left (or a cancelled prologue writes meanwhile) is the story.
    keep = before if before in START_ENDED and result.ok else None
    update_record(
        config.state_dir,
        job.job_id,
        state=keep or ("ended" if result.ok else "teardown failed"),
        unless=lambda record: result.ok and record.get("state") == "cancelled",
    )
    if job.primary and not job.requeued:
        _remove_spool_dir(config, job)


def leave(job, config):
    """Another node's end of the job: anything of it left here goes, without Ansible."""
    stop_sampler(job.job_id, config)
    sweep_here(job.job_id, config, config.timeouts.shutdown)


def cut_short(job_id, nodes, config, here=None):
    """A start the job's deletion cut short: this node's VMs are destroyed in-process, at once,
    since the batch system may stop waiting for the prologue of a deleted job within seconds
    (Torque: kill_delay after the SIGTERM, docs/torque.md). Other nodes are the epilogue's,
    which comes after; only when it has begun already (it may have swept before this
    prologue's VMs existed) does the playbook tear them down too. A start of this node's own
    VMs (`here`, Slurm) has no others."""
    sweep_here(job_id, config, 0, node=here)
    if here:
        return
    remote = tuple(node for node in nodes if not is_local(node, config.runner.local_nodes))
    if remote and epilogue_began(config.state_dir, job_id):
        teardown(job_id, remote, config, graceful=False)


def sweep_here(job_id, config, shutdown_timeout, node=None):
    """Every domain and file of the job on this node, in-process (no Ansible start-up);
    `node`: only the domains planned for that node (several nodes may share one libvirtd where
    a test plays them on one machine)."""
    sweep_jobs(
        uri=config.libvirt.uri,
        state_dir=config.state_dir,
        job_id=job_id,
        shutdown_timeout=shutdown_timeout,
        node=node,
    )
    release_ports(config.state_dir, naming.job_dir(job_id, config.state_dir))
    release_devices(config.state_dir, naming.job_dir(job_id, config.state_dir))


def teardown(job_id, nodes, config, graceful=True, here=None):
    """This machine's VMs in-process, without Ansible's start-up, and the job_stop playbook on
    the other nodes; `graceful` asks the guests to shut down first (timeouts.shutdown). With
    `here` (Slurm) only this node's own VMs."""
    shutdown_timeout = config.timeouts.shutdown if graceful else 0
    if here:
        return _sweep_result(job_id, config, shutdown_timeout, here)
    remote = tuple(node for node in nodes if not is_local(node, config.runner.local_nodes))
    local = _sweep_result(job_id, config, shutdown_timeout, None) if len(remote) < len(nodes) else None
    if not remote:
        return local
    variables = stop_variables(job_id, config, shutdown_timeout)
    result = run_playbook(
        "stop",
        remote,
        variables,
        work_dir=statedir.subdir(config.state_dir, "runner"),
        runner_config=config.runner,
        timeout=config.timeouts.epilogue,
        local_nodes=config.runner.local_nodes,
    )
    if result.ok:  # the job dir is gone, and with it what its port and device claims point at
        release_ports(config.state_dir, naming.job_dir(job_id, config.state_dir))
        release_devices(config.state_dir, naming.job_dir(job_id, config.state_dir))
    return result if local is None else local.joined(result, local.seconds + result.seconds)


def _sweep_result(job_id, config, shutdown_timeout, node):
    """sweep_here as the playbook's RunResult (`node` None: every domain of the job here)."""
    began = time.monotonic()
    try:
        sweep_here(job_id, config, shutdown_timeout, node=node)
    except Exception as err:  # noqa: BLE001 - a module_utils Refused or libvirt error: reported, not raised
        where = node or socket.gethostname()
        return RunResult(False, "failed", 1, time.monotonic() - began, (f"{where}: sweep: {err}",))
    return RunResult(True, "successful", 0, time.monotonic() - began, ())


def _remove_spool_dir(config, job):
    """The job's spool dir goes with it; an array's with its last element (when two end at
    once, or the batch system cannot tell, the sweep removes it after spool_grace_minutes)."""
    if job.array_id and scheduler.for_config(config).array_may_run(job.array_id, job.job_id) is not False:
        return
    try:
        remove_as_owner(os.path.join(config.spool_dir, job.spool_key), owner_uid=owner_of(job.user).uid)
    except (KeyError, VTorqueError) as err:
        report(f"the spool dir stays: {message(err)}", state_dir=config.state_dir, job_id=job.job_id)
