"""`vtorque sweep [--dry-run]` (root): remove VMs and files of jobs no longer running here.

A job runs on this node while pbs_mom holds its files in $PBS_HOME/mom_priv/jobs; every other
job's domains (named vt-<job>-..., tagged with the job) and state directories are removed, and
its record once it is older than `records_keep_days`.
"""

import argparse
import os

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

    from vtorque.config import load_config
    from vtorque.jobrecord import prune_records
    from vtorque.ports import release_ports

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
    if not (result["changed"] or records):
        print(f"nothing to sweep ({len(live)} running job(s) kept)")
    return 0
