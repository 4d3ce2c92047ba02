"""`vtorque sweep [--dry-run]` (root): remove VMs and files of jobs no longer running here
(runtime/sweep.py says what goes)."""

import argparse
import os

from vtorque.errors import VTorqueError


def main(argv, prog="vtorque sweep"):
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.splitlines()[0].split(": ", 1)[1])
    parser.add_argument("--dry-run", action="store_true", help="say what would be removed; remove nothing")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        raise VTorqueError("vtorque sweep removes VMs and root-owned files: run it as root")
    from vtorque.runtime.sweep import sweep_node
    from vtorque.site.config import load_config

    config = load_config()
    swept = sweep_node(config, dry_run=args.dry_run)
    verb = "would remove" if args.dry_run else "removed"
    for name in swept.domains:
        print(f"{verb} domain {name}")
    for path in swept.directories:
        print(f"{verb} {path}")
    for leftover in swept.template_builds:
        print(f"{verb} {leftover} (a snapshot template's build killed half-way)")
    for job_id in swept.records:
        print(f"{verb} the record of job {job_id} (older than {config.records_keep_days} days)")
    for path in swept.spool_dirs:
        print(f"{verb} {path} (the server will not run its job)")
    if not (swept.domains or swept.directories or swept.template_builds or swept.records or swept.spool_dirs):
        print(f"nothing to sweep ({len(swept.live)} running job(s) kept)")
    return 0
