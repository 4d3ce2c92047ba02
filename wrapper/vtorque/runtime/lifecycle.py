"""What the root hooks do for a VM job: start its VMs, tear them down, record why.

Exit codes follow Torque (docs/torque.md, "Exit codes"): a request that is invalid at start aborts
the job (prologue exit 1, reason to the user's spool log and syslog); an infrastructure
failure tears down what was started, takes the node offline with the reason, and exits 2 so
Torque requeues the job elsewhere. Every phase ends before Torque's `$prologalarm` kill.
"""

import grp
import json
import os
import pwd
import socket
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from xml.sax.saxutils import quoteattr

from ansible_collections.mikelangelo.vtorque.plugins.module_utils import naming
from ansible_collections.mikelangelo.vtorque.plugins.module_utils.files import write_atomic

from vtorque.errors import RequestError, UntrustedFileError, VTorqueError
from vtorque.guest.readiness import until_ok
from vtorque.guest.seeds import JobKeys, merge_metadata, seed_for
from vtorque.job import statedir
from vtorque.job.plan import Owner, make_plan
from vtorque.job.ports import claim_ports, release_ports
from vtorque.job.records import load_record, report, update_record
from vtorque.owner_side import owner_side
from vtorque.request.model import load_request
from vtorque.runtime.runner import run_playbook
from vtorque.site.catalog import verify_image_files

ABORT, REQUEUE = 1, 2
# A start cut short by qdel exits 0: pbs_mom's job starter child waits for an answer that a
# deleted job never gets, and only gives up (after 120 s) when the prologue said 0; after any
# other exit it waits forever, one hung pbs_mom per such job (docs/torque.md, qdel).
CANCELLED = 0
TEARDOWN_RESERVE = 20  # seconds kept for destroying the VMs after a failed start
STOPPED = ("stopping", "ended", "teardown failed")  # record states an epilogue leaves
FLAG_POLL_SECONDS = 1.0  # how often a starting prologue looks for the owner's precancel flag


class InfrastructureError(VTorqueError):
    """libvirt, a node or a guest failed: not the user's fault, the job should run elsewhere."""


class JobCancelled(VTorqueError):
    """qdel (epilogue.precancel) or the job's epilogue came while its VMs were starting."""


def owner_of(user):
    entry = pwd.getpwnam(user)
    return Owner(entry.pw_name, entry.pw_uid, entry.pw_gid, grp.getgrgid(entry.pw_gid).gr_name, entry.pw_dir)


def spool_job_dir(config, job_id):
    return os.path.join(config.spool_dir, job_id)


def start(job, config):
    """The mother superior's prologue for a VM job; returns Torque's exit code."""
    began, began_wall = time.monotonic(), time.time()
    deadline = began + config.timeouts.prologue - TEARDOWN_RESERVE  # a failed start destroys: no ACPI wait
    spool = spool_job_dir(config, job.job_id)
    tell = _reporter(config, job.job_id, spool)
    try:
        owner = owner_of(job.user)
        tell.owner_uid = owner.uid
        _check_spool_dir(spool, owner.uid)
        request = load_request(os.path.join(spool, "request.json"), owner.uid, config)
        _check_allocation(job, request, config)
        if not request.user_image:
            verify_image_files(request.image)
        plan = make_plan(job, request, config, owner)
        extra = _user_metadata(request, owner)
        if extra:
            merge_metadata({}, extra, request.metadata)  # refuse bad keys now: abort
    except (VTorqueError, KeyError) as err:
        tell(f"the job cannot start: {_message(err)}")
        update_record(config.state_dir, job.job_id, state="aborted", owner=job.user, reason=_message(err))
        return ABORT
    if not update_record(
        config.state_dir,
        job.job_id,
        state="starting",
        owner=owner.name,
        nodes=list(plan.nodes),
        unless=lambda record: record.get("state") in STOPPED and record.get("stopped_at", 0) >= began_wall,
    ):  # this attempt's epilogue got here first (an earlier attempt's stopped before we began)
        tell("the job was deleted (or ended) before its VMs started; not starting them")
        return CANCELLED
    cancelled = _cancellation(config, job.job_id, spool, owner.uid)
    try:
        plan = claim_ports(plan, config.network.ssh_port_base)
        variables = _prepare(plan, config, extra, request.metadata)
        result = run_playbook(
            "start",
            plan.nodes,
            variables,
            work_dir=plan.job_dir,
            runner_config=config.runner,
            timeout=max(1, int(deadline - time.monotonic())),
            local_nodes=config.runner.local_nodes,
            cancelled=cancelled,
        )
        if cancelled(fresh=True):
            raise JobCancelled()
        if not result.ok:
            raise InfrastructureError(
                f"starting the VMs failed ({result.status}): " + "; ".join(result.failures)
            )
        started = time.monotonic()
        _wait_for_ssh(plan, deadline, config.runner.local_nodes, cancelled)
        vms = _publish(plan)
        now = time.monotonic()
        if not update_record(
            config.state_dir,
            job.job_id,
            state="running",
            vms=vms,
            phases={
                "prologue": round(now - began, 2),
                "job_start_playbook": round(result.seconds, 2),
                "guests_ssh_ready": round(now - started, 2),
            },
            unless=lambda record: record.get("state") != "starting",  # the epilogue began meanwhile
        ):
            raise JobCancelled()
    except (VTorqueError, OSError, subprocess.SubprocessError) as err:
        if isinstance(err, JobCancelled) or cancelled(fresh=True):  # e.g. its epilogue removed the runner dir
            reason = "the job was deleted (or ended) while its VMs were starting"
            if not isinstance(err, JobCancelled):  # what the start saw of it, for the admin
                update_record(config.state_dir, job.job_id, event=f"start cut short: {_message(err)}")
            tell(f"{reason}: tearing down, not requeueing")
            _cut_short(job.job_id, plan.nodes, config)
            update_record(config.state_dir, job.job_id, state="cancelled", reason=reason)
            return CANCELLED  # a deleted job: nothing to requeue, and the node is fine
        reason = _message(err)
        node = socket.gethostname()
        tell(f"VM start failed on {node}; tearing down: {reason}")
        for vm in plan.vms:
            console = _console_tail(vm.serial_log)
            if console:
                update_record(config.state_dir, job.job_id, event=f"console of {vm.name}:\n{console}")
        _teardown(job.job_id, plan.nodes, config, graceful=False)
        return _after_failed_start(job, config, node, reason, tell)
    return 0


def _after_failed_start(job, config, node, reason, tell):
    """An infrastructure failure: offline the node and requeue, unless that would start the job
    here again or once too often (pbs_sched requeues a failing job forever): then abort."""
    record = update_record(config.state_dir, job.job_id, event=f"start failed on {node}: {reason}")
    failures = [*record.get("start_failures", []), node]
    update_record(config.state_dir, job.job_id, start_failures=failures)
    offline_problem = _offline(config, job.job_id, reason)
    if failures.count(node) > 1:
        verdict = f"its VMs failed to start on {node} before"
    elif len(failures) >= config.limits.start_attempts:
        verdict = f"its VMs failed to start {len(failures)} times (limits.start_attempts)"
    elif offline_problem:
        verdict = f"{node} could not be taken offline ({offline_problem}), so a requeue could land here again"
    else:
        tell(f"{node} is offline with the reason; the job is requeued")
        update_record(config.state_dir, job.job_id, state="requeued", reason=reason)
        return REQUEUE
    tell(f"the job is aborted, not requeued: {verdict}; last failure: {reason}")
    update_record(config.state_dir, job.job_id, state="aborted", reason=f"{verdict}: {reason}")
    return ABORT


START_ENDED = ("requeued", "cancelled", "aborted")  # what a prologue that did not start says
REQUEUE_STATUSES = (-14, -3)  # Torque's epilogue $10 when the job goes back to the queue


def stop(job, config):
    """The mother superior's epilogue: every VM and file of the job goes, on every node; its
    spool dir too, unless Torque requeues the job (docs/torque.md)."""
    began = time.monotonic()
    nodes = tuple(host for host, _ in job.nodes) or (socket.gethostname(),)
    before = (load_record(config.state_dir, job.job_id) or {}).get("state")
    # Said first: a prologue still starting this job's VMs then stops instead of taking the
    # teardown under it (a vanished guest) for an infrastructure failure.
    update_record(config.state_dir, job.job_id, state="stopping", stopped_at=time.time())
    # Only guests that ran the job are asked to shut down; a start cut short is destroyed at
    # once (a booting guest ignores ACPI, and qdel must end the job promptly).
    result = _teardown(job.job_id, nodes, config, graceful=before == "running")
    changes = {"exit_status": job.exit_status, "phases": {"epilogue": round(time.monotonic() - began, 2)}}
    if not result.ok:
        changes["reason"] = "; ".join(result.failures) or result.status
        report(f"teardown failed: {changes['reason']}", state_dir=config.state_dir, job_id=job.job_id)
    update_record(config.state_dir, job.job_id, **changes)
    # The state a failed start left (or a cancelled prologue writes meanwhile) is the story.
    final = "ended" if result.ok else "teardown failed"
    keep = before if before in START_ENDED and result.ok else None
    update_record(
        config.state_dir,
        job.job_id,
        state=keep or final,
        unless=lambda record: result.ok and record.get("state") == "cancelled",
    )
    if job.exit_status not in REQUEUE_STATUSES:
        _remove_spool_dir(config, job)
    return 0


def _remove_spool_dir(config, job):
    from vtorque.job.spool import remove_as_owner

    try:
        remove_as_owner(spool_job_dir(config, job.job_id), owner_uid=owner_of(job.user).uid)
    except (KeyError, VTorqueError) as err:
        report(f"the spool dir stays: {_message(err)}", state_dir=config.state_dir, job_id=job.job_id)


def stop_on_sister(job, config):
    """epilogue.parallel: remove anything of the job left on this node, without Ansible."""
    _sweep_here(job.job_id, config, config.timeouts.shutdown)
    return 0


def _sweep_here(job_id, config, shutdown_timeout):
    """Every domain and file of the job on this node, in-process (no Ansible start-up)."""
    from ansible_collections.mikelangelo.vtorque.plugins.module_utils.sweep import sweep

    params = {
        "uri": config.libvirt.uri,
        "job_id": job_id,
        "state_dir": config.state_dir,
        "live_jobs": None,
        "shutdown_timeout": shutdown_timeout,
    }
    sweep(params, check_mode=False)
    release_ports(config.state_dir, naming.job_dir(job_id, config.state_dir))


def _cut_short(job_id, nodes, config):
    """A start the job's deletion cut short: this node's VMs are destroyed in-process, at once,
    since pbs_mom stops waiting for the prologue of a deleted job kill_delay seconds after the
    SIGTERM, and its starter child then lingers (docs/torque.md, qdel). Other nodes are the
    epilogue's, which comes after; only when it has begun already (it may have swept before
    this prologue's VMs existed) does the playbook tear them down too."""
    from vtorque.runtime.runner import local_names

    _sweep_here(job_id, config, 0)
    here = local_names() | set(config.runner.local_nodes)
    remote = tuple(node for node in nodes if node not in here and node.split(".")[0] not in here)
    if remote and (load_record(config.state_dir, job_id) or {}).get("state") in STOPPED:
        _teardown(job_id, remote, config, graceful=False)


def _teardown(job_id, nodes, config, graceful=True):
    """The job_stop playbook; `graceful` asks the guests to shut down first (timeouts.shutdown)."""
    variables = {
        "vtorque": {
            "uri": config.libvirt.uri,
            "job_id": job_id,
            "state_dir": config.state_dir,
            "shutdown_timeout": config.timeouts.shutdown if graceful else 0,
        }
    }
    work_dir = statedir.subdir(config.state_dir, "runner")
    result = run_playbook(
        "stop",
        nodes,
        variables,
        work_dir=work_dir,
        runner_config=config.runner,
        timeout=config.timeouts.epilogue,
        local_nodes=config.runner.local_nodes,
    )
    if result.ok:  # the job dir is gone, and with it what its port claims point at
        release_ports(config.state_dir, naming.job_dir(job_id, config.state_dir))
    return result


def _prepare(plan, config, extra=None, extra_source=""):
    """Job directory, per-job user key and per-VM host keys; the playbook's variables."""
    statedir.job_dir(plan.state_dir, plan.job_id)
    user_key = os.path.join(plan.job_dir, "id_ed25519")
    _keygen(user_key, f"vtorque-job-{plan.job_id}")
    os.chown(user_key, plan.owner.uid, plan.owner.gid)
    with open(user_key, encoding="utf-8") as private, open(user_key + ".pub", encoding="utf-8") as public:
        user_private, user_public = private.read(), public.read().strip()
    keys = JobKeys(user_private, user_public, {vm.name: _host_key(plan.job_dir, vm.name) for vm in plan.vms})
    known_hosts, vms, seeds = [], [], []
    for vm in plan.vms:
        known_hosts.append(_known_host_line(vm, keys.hosts[vm.name][1]))
        meta, user_data, network = seed_for(plan, vm, keys, extra, extra_source)
        # Seeds hold private keys: a list of their own, looped only by the no_log seed task,
        # so the other tasks' loop items (kept in runner events) carry no secret.
        seeds.append(
            {
                "node": vm.node,
                "name": vm.name,
                "path": vm.seed,
                "meta_data": meta,
                "user_data": user_data,
                "network_config": network,
            }
        )
        vms.append(
            {
                "node": vm.node,
                "name": vm.name,
                "overlay": vm.overlay,
                "seed": vm.seed,
                "serial_log": vm.serial_log,
                "vcpus": vm.vcpus,
                "memory_mib": vm.memory_mib,
                "address": vm.address,
                "job": {"id": plan.job_id, "node": vm.node, "index": vm.index},
                "nics": [_nic(plan, vm)],
                "data_disk": vm.data_disk,
                "data_disk_size": f"{vm.data_disk_mib}M" if vm.data_disk else None,
                "cpu_pinning": [{"vcpu": vcpu, "cpuset": str(core)} for vcpu, core in vm.cpu_pinning],
            }
        )
    for name, owner in ((ROOT_KNOWN_HOSTS, None), (OWNER_KNOWN_HOSTS, plan.owner)):
        _write(os.path.join(plan.job_dir, name), "".join(known_hosts), 0o600, owner)
    image = plan.image
    boot = {"kernel": image["kernel"], "initrd": image["initrd"], "cmdline": image["cmdline"] or ""}
    return {
        "vtorque": {
            "uri": plan.uri,
            "job_dir": plan.job_dir,
            "virt_type": plan.virt_type,
            "image": image,
            "boot": boot if image["kernel"] else None,
            "template": config.domain_template,
            "extra_devices": [
                _filesystem(tag, path)
                for tag, path, _source, kind in plan.mounts
                if kind in ("9p", "virtiofs")
            ],
            "wait_timeout": config.timeouts.boot,
            "ramdisk": _ramdisk(plan, config),
            "vms": vms,
            "seeds": seeds,
        }
    }


RAMDISK_SLACK_MIB = 64  # per VM: qcow2 metadata on top of the guest-visible sizes


def _ramdisk(plan, config):
    """fs_type=ramdisk: the job's tmpfs (per node) and its size, enough for every VM of the node
    to fill its overlay and data disk; tmpfs takes memory only for what is written."""
    if not plan.ramdisk:
        return None
    from vtorque.site.catalog import virtual_size_mib

    per_vm = virtual_size_mib(plan.image["path"]) + (plan.rank0.data_disk_mib or 0) + RAMDISK_SLACK_MIB
    vms_per_node = len(plan.vms) // len(plan.nodes)
    return {"path": plan.ramdisk, "size_mib": per_vm * vms_per_node}


def _nic(plan, vm):
    if plan.network_mode == "user":
        return {
            "mode": "user",
            "mac": vm.mac,
            "host_port": vm.ssh_port,
            "guest_address": vm.address.split("/")[0],
        }
    mode = "bridge" if plan.network_mode == "bridge" else "network"
    return {"mode": mode, "source": plan.network_source, "mac": vm.mac}


def _filesystem(tag, path):
    return (
        f"<filesystem type='mount' accessmode='passthrough'><source dir={quoteattr(path)}/>"
        f"<target dir={quoteattr(tag)}/></filesystem>"
    )


def _known_host_line(vm, public_key):
    host = vm.ssh_host if vm.ssh_port == 22 else f"[{vm.ssh_host}]:{vm.ssh_port}"
    return f"{host},{vm.hostname} {public_key}\n"


def _keygen(path, comment):
    for stale in (path, path + ".pub"):
        if os.path.lexists(stale):
            os.unlink(stale)
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", path],
        check=True,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
    )


def _host_key(job_dir, name):
    """(private, public) OpenSSH text of a fresh ed25519 host key; only the seed keeps the private part."""
    path = os.path.join(job_dir, f".{name}-hostkey")
    _keygen(path, name)
    try:
        with open(path, encoding="utf-8") as private, open(path + ".pub", encoding="utf-8") as public:
            return private.read(), public.read().strip()
    finally:
        os.unlink(path)
        os.unlink(path + ".pub")


def _wait_for_ssh(plan, deadline, local_nodes=(), cancelled=lambda: False):
    """Every guest accepts the owner's per-job key and shows its pinned host key. A guest of
    this node that stops running (crash, a concurrent teardown) fails at once, not at the deadline."""
    from vtorque.runtime.runner import local_names

    here = local_names() | set(local_nodes)
    conn = _libvirt_connection(plan.uri) if any(vm.node in here for vm in plan.vms) else None

    def wait(vm):
        def still_worth_it():
            if cancelled():
                raise JobCancelled()
            if conn is not None and vm.node in here and not _domain_running(conn, vm.name):
                raise InfrastructureError(f"{vm.name} stopped running before it accepted SSH")

        command = [*ssh_command(plan.job_dir, plan.owner.name, vm.ssh_host, vm.ssh_port), "true"]
        ready, last = until_ok(command, deadline=deadline, check=still_worth_it)
        if not ready:
            detail = (last.splitlines() or ["no answer"])[-1]
            raise InfrastructureError(
                f"{vm.name} did not accept SSH on {vm.ssh_host}:{vm.ssh_port} in time: {detail}"
            )

    try:
        with ThreadPoolExecutor(max_workers=min(16, len(plan.vms))) as pool:
            for future in [pool.submit(wait, vm) for vm in plan.vms]:
                future.result()
    finally:
        if conn is not None:
            conn.close()


def _cancellation(config, job_id, spool, owner_uid):
    """A check for "stop starting": the owner's qdel left the precancel flag in their spool dir
    (its existence is all that is read, as the owner), or the job's epilogue has begun."""
    from vtorque.runtime.job_run import CANCELLED_FLAG

    flag = os.path.join(spool, CANCELLED_FLAG)
    _flag_raised(flag, clear=True, owner_uid=owner_uid)  # left by an earlier attempt of this job id
    seen = {"flag": False, "at": 0.0}

    def cancelled(fresh=False):
        """`fresh` before a decision; polls may see the flag up to FLAG_POLL_SECONDS late."""
        now = time.monotonic()
        if not seen["flag"] and (fresh or now - seen["at"] >= FLAG_POLL_SECONDS):  # a fork per look
            seen["at"] = now
            try:
                seen["flag"] = _flag_raised(flag, owner_uid=owner_uid)
            except VTorqueError:
                pass
        if seen["flag"]:
            return True
        record = load_record(config.state_dir, job_id) or {}
        return record.get("state") in STOPPED

    return cancelled


@owner_side
def _flag_raised(path, *, owner_uid, clear=False):
    """Whether the precancel flag is in the owner's spool dir; `clear` removes it (unlink
    follows no link)."""
    if not os.path.lexists(path):
        return False
    if clear:
        os.unlink(path)
        return False
    return True


def _libvirt_connection(uri):
    """One connection for the whole wait; None when libvirt is unreachable (the SSH deadline decides)."""
    import libvirt

    libvirt.registerErrorHandler(lambda *_: None, None)
    try:
        return libvirt.open(uri)
    except libvirt.libvirtError:
        return None


def _domain_running(conn, name):
    """Whether the domain still runs; a libvirtd that stopped answering is its own failure."""
    import libvirt

    try:
        return bool(conn.lookupByName(name).isActive())
    except libvirt.libvirtError as err:
        if err.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
            return False
        raise InfrastructureError(f"libvirtd stopped answering while {name} was starting: {err}") from None


ROOT_KNOWN_HOSTS = "known_hosts"  # root's (0600): the prologue's SSH wait
OWNER_KNOWN_HOSTS = "owner_known_hosts"  # the owner's (0600, theirs): the job wrapper


def ssh_command(job_dir, user, host, port, known_hosts=ROOT_KNOWN_HOSTS):
    """ssh as `user` with the job key, trusting only the job's pinned host keys; root and the
    owner each read their own copy of those keys, so neither trusts a file the other can write."""
    return [
        "ssh",
        "-F",
        "/dev/null",
        "-i",
        os.path.join(job_dir, "id_ed25519"),
        "-p",
        str(port),
        "-o",
        "StrictHostKeyChecking=yes",
        "-o",
        f"UserKnownHostsFile={os.path.join(job_dir, known_hosts)}",
        "-o",
        "GlobalKnownHostsFile=/dev/null",
        "-o",
        "BatchMode=yes",
        "-o",
        "IdentitiesOnly=yes",
        "-o",
        "ConnectTimeout=5",
        "-o",
        "LogLevel=ERROR",
        f"{user}@{host}",
    ]


def _publish(plan):
    vms = [
        {
            "name": vm.name,
            "node": vm.node,
            "rank": vm.rank,
            "hostname": vm.hostname,
            "address": vm.address,
            "ssh_host": vm.ssh_host,
            "ssh_port": vm.ssh_port,
        }
        for vm in plan.vms
    ]
    document = {"job_id": plan.job_id, "owner": plan.owner.name, "workdir": plan.workdir, "vms": vms}
    # The owner's alone (the job wrapper reads it); root never reads it back.
    _write(os.path.join(plan.job_dir, "vms.json"), json.dumps(document, indent=2) + "\n", 0o600, plan.owner)
    return vms


def _write(path, text, mode, owner=None):
    """Replace `path` in root's job dir with `text`; given to `owner` when it is theirs to read."""
    write_atomic(path, text, mode, None if owner is None else (owner.uid, owner.gid))


def _user_metadata(request, owner):
    """The user's extra cloud-config (`-vm metadata=FILE`), read as root without trusting it."""
    if not request.metadata:
        return None
    import yaml

    from vtorque.request.model import MAX_METADATA_BYTES, parse_metadata
    from vtorque.trust import read_trusted

    text = read_trusted(
        request.metadata, owner_uid=owner.uid, max_bytes=MAX_METADATA_BYTES, what="metadata file"
    )
    try:  # checked by load_request already, but the owner may have changed the file since
        return parse_metadata(text)
    except (ValueError, yaml.YAMLError) as err:
        raise RequestError(
            f"unusable cloud-config file: {err}", key="metadata", value=request.metadata
        ) from None


def _check_allocation(job, request, config):
    """The VMs must fit in the cores Torque gave the job: a request edited after vsub raised
    ppn must not take cores that belong to other jobs."""
    need = request.cores_per_node(config)
    for host, slots in job.nodes:
        if slots < need:
            raise RequestError(
                f"the VMs need {need} cores per node (host_reserve.cores {config.host_reserve.cores}"
                f" + vcpus {request.vcpus} x vms_per_node {request.vms_per_node}) but Torque allocated"
                f" {slots} on {host}",
                source=f"request file {os.path.join(config.spool_dir, job.job_id, 'request.json')}",
            )


ALARMS = ("Kernel panic", "BUG:", "Oops", "No working init", "Failed to start", "emergency mode")


def _console_tail(path, lines=15):
    """The last lines a guest printed on its serial console (this node's VMs only), led by the
    last alarm line (a panic, a failed unit) when it scrolled out of them, e.g. in a reboot loop."""
    try:
        with open(path, "rb") as handle:
            handle.seek(max(0, os.fstat(handle.fileno()).st_size - 65536))
            text = handle.read().decode("utf-8", "replace").replace("\r", "")
    except OSError:
        return ""
    all_lines = text.splitlines()
    tail = all_lines[-lines:]
    alarms = [line for line in all_lines if any(alarm in line for alarm in ALARMS)]
    if alarms and alarms[-1] not in tail:
        tail = [alarms[-1], "[...]", *tail]
    return "\n".join(tail)


def _check_spool_dir(path, owner_uid):
    info = os.lstat(path)
    if not os.path.isdir(path) or os.path.islink(path):
        raise UntrustedFileError(f"job directory {path} is not a directory (links are refused)")
    if info.st_uid != owner_uid:
        raise UntrustedFileError(
            f"job directory {path} is owned by uid {info.st_uid}, expected uid {owner_uid}"
        )


def _offline(config, job_id, reason):
    """Take this node offline so the requeued job does not loop here (pbsnodes -o -N); None,
    or why that failed (also reported)."""
    node = socket.gethostname()
    command = [config.torque.pbsnodes, "-o", "-N", f"vtorque: {reason[:200]}", node]
    try:
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=30, check=False, stdin=subprocess.DEVNULL
        )
        problem = None if done.returncode == 0 else f"exit {done.returncode}: {done.stderr.strip()[-200:]}"
    except (OSError, subprocess.SubprocessError) as err:
        problem = str(err)
    if problem:
        report(
            f"could not take {node} offline with {config.torque.pbsnodes}: {problem}",
            state_dir=config.state_dir,
            job_id=job_id,
        )
    return problem


def _message(err):
    return str(err) if not isinstance(err, KeyError) else f"unknown user {err.args[0]!r}"


class _reporter:
    def __init__(self, config, job_id, spool):
        self.config, self.job_id, self.spool, self.owner_uid = config, job_id, spool, None

    def __call__(self, message):
        report(
            message,
            state_dir=self.config.state_dir,
            job_id=self.job_id,
            spool_job_dir=self.spool,
            owner_uid=self.owner_uid,
        )
