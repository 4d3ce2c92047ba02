"""`vtorque sweep`'s work (root): what of jobs no longer running on this node is left.

A job runs on this node while the batch system says so (its adapter's `live_jobs`); every
other job's domains (named vt-<job>-..., tagged with the job) and state directories go, and its
record once it is older than `records_keep_days`. Spool dirs of jobs the server will not run
(Torque: deleted while queued or held, when no hook runs) go once they are older than
`spool_grace_minutes`, removed as their owner; so do staging dirs a killed vsub left.
"""

import os
import stat
import sys
import time
from dataclasses import dataclass

from ansible_collections.mikelangelo.vtorque.plugins.module_utils.sweep import sweep_jobs

from vtorque import scheduler
from vtorque.errors import SubmitError, VTorqueError
from vtorque.job.devices import release_devices
from vtorque.job.ports import release_ports
from vtorque.job.records import prune_records
from vtorque.job.spool import STAGING_PREFIX, check_job_id, remove_as_owner
from vtorque.runtime.telemetry import stop_stale_samplers


@dataclass(frozen=True)
class Swept:
    live: list
    domains: list
    directories: list
    template_builds: list
    records: list
    spool_dirs: list


def sweep_node(config, *, dry_run=False):
    adapter = scheduler.for_config(config)
    live = adapter.live_jobs()
    if not dry_run:
        stop_stale_samplers(config, live)  # before their job dirs (and pid files) go
    result = sweep_jobs(
        uri=config.libvirt.uri,
        state_dir=config.state_dir,
        live_jobs=live,
        shutdown_timeout=config.timeouts.shutdown,
        check_mode=dry_run,
    )
    if not dry_run:
        release_ports(config.state_dir)  # claims of the job dirs just removed
        release_devices(config.state_dir)
    records = prune_records(
        config.state_dir, keep_days=config.records_keep_days, live_jobs=live, dry_run=dry_run
    )
    spools = sweep_spool(config, adapter, dry_run=dry_run)
    return Swept(live, result["domains"], result["directories"], result["template_builds"], records, spools)


def sweep_spool(config, adapter, *, dry_run=False):
    """Spool dirs removed: those older than spool_grace_minutes whose job the server will not
    run (completed or forgotten), and staging dirs. Links, root's entries and other files are
    never touched."""
    try:
        names = sorted(os.listdir(config.spool_dir))
    except FileNotFoundError:
        return []
    cutoff = time.time() - config.spool_grace_minutes * 60
    removed = []
    for name in names:
        path = os.path.join(config.spool_dir, name)
        info = os.lstat(path)
        if not stat.S_ISDIR(info.st_mode) or info.st_mtime >= cutoff or info.st_uid == 0:
            continue
        if not name.startswith(STAGING_PREFIX):
            try:
                check_job_id(name)
            except SubmitError:
                continue  # not vsub's
            if adapter.may_run(name) is not False:
                continue
        if not dry_run:
            try:
                remove_as_owner(path, owner_uid=info.st_uid)
            except VTorqueError as err:  # e.g. the owner's account is gone
                print(f"vtorque sweep: {path} stays: {err}", file=sys.stderr)
                continue
            if os.path.lexists(path):  # what its owner could not remove
                print(f"vtorque sweep: {path} stays: its owner could not remove all of it", file=sys.stderr)
                continue
        removed.append(path)
    return removed
