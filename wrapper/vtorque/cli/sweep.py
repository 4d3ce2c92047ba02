"""`vtorque sweep [--dry-run]` (root): remove VMs and files of jobs no longer running here.

A job runs on this node while pbs_mom holds its files in $PBS_HOME/mom_priv/jobs; every other
job's domains (named vt-<job>-..., tagged with the job) and state directories are removed, and
its record once it is older than `records_keep_days`. Spool dirs of jobs the server no longer
knows (deleted while queued or held: Torque runs no hook for them) go once they are older than
`spool_grace_minutes`, removed as their owner.
"""

import argparse
import os
import stat
import sys
import time

from vtorque.errors import VTorqueError


def live_jobs(pbs_home):
    jobs_dir = os.path.join(pbs_home, "mom_priv", "jobs")
    try:
        names = os.listdir(jobs_dir)
    except OSError as err:
        raise VTorqueError(
            f"cannot list running jobs in {jobs_dir}: {err.strerror} (torque.pbs_home?)"
        ) from None
    return sorted({name.rsplit(".", 1)[0] for name in names if name.endswith((".SC", ".JB", ".TK"))})


def main(argv, prog="vtorque sweep"):
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.splitlines()[0].split(": ", 1)[1])
    parser.add_argument("--dry-run", action="store_true", help="say what would be removed; remove nothing")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        raise VTorqueError("vtorque sweep removes VMs and root-owned files: run it as root")
    from ansible_collections.mikelangelo.vtorque.plugins.module_utils.sweep import sweep

    from vtorque.job.ports import release_ports
    from vtorque.job.records import prune_records
    from vtorque.site.config import load_config

    config = load_config()
    live = live_jobs(config.torque.pbs_home)
    params = {
        "uri": config.libvirt.uri,
        "job_id": None,
        "live_jobs": live,
        "state_dir": config.state_dir,
        "shutdown_timeout": config.timeouts.shutdown,
    }
    result = sweep(params, check_mode=args.dry_run)
    if not args.dry_run:
        release_ports(config.state_dir)  # claims of the job dirs just removed
    records = prune_records(
        config.state_dir, keep_days=config.records_keep_days, live_jobs=live, dry_run=args.dry_run
    )
    verb = "would remove" if args.dry_run else "removed"
    for name in result["domains"]:
        print(f"{verb} domain {name}")
    for path in result["directories"]:
        print(f"{verb} {path}")
    for job_id in records:
        print(f"{verb} the record of job {job_id} (older than {config.records_keep_days} days)")
    spools = sweep_spool(config, dry_run=args.dry_run)
    for path in spools:
        print(f"{verb} {path} (its job is unknown to the server)")
    if not (result["changed"] or records or spools):
        print(f"nothing to sweep ({len(live)} running job(s) kept)")
    return 0


def sweep_spool(config, *, dry_run=False):
    """Spool dirs removed: those older than spool_grace_minutes whose job the server no longer
    knows, and staging dirs a killed vsub left. Links and other files are never followed."""
    from vtorque.errors import SubmitError
    from vtorque.job.spool import STAGING_PREFIX, check_job_id, remove_as_owner
    from vtorque.scheduler.torque.hook import server_knows

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
            if server_knows(config.torque.qstat, name) is not False:
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
