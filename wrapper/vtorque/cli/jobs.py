"""`vtorque jobs show JOBID [--json]`: state, nodes, VMs, phase timings and failure reason."""

import argparse
import json
import os

from vtorque.errors import VTorqueError


def main(argv, prog="vtorque jobs"):
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.split(": ", 1)[1])
    commands = parser.add_subparsers(dest="command", required=True)
    show = commands.add_parser("show", help="what vTorque knows about one job")
    show.add_argument("job_id")
    show.add_argument("--json", action="store_true", help="the raw record")
    args = parser.parse_args(argv)
    from vtorque.job.records import load_record, record_path
    from vtorque.site.config import load_config

    config = load_config()
    as_root = os.geteuid() == 0  # root reads its record, a user the copy kept for the job's owner
    try:
        record = load_record(config.state_dir, args.job_id, owner_copy=not as_root)
    except PermissionError:
        raise VTorqueError(
            f"job {args.job_id} is another user's: only its owner and root see its record"
        ) from None
    if record is None:
        where = record_path(config.state_dir, args.job_id, owner_copy=not as_root)
        raise VTorqueError(f"no vTorque record of job {args.job_id}: no {where} (bare metal?)")
    print(json.dumps(record, indent=2, sort_keys=True) if args.json else render(record))
    return 0


def render(record):
    lines = [f"job {record['job_id']}: {record.get('state', '?')}"]
    for key in ("owner", "exit_status", "reason"):
        if record.get(key) is not None:
            lines.append(f"  {key.replace('_', ' ')}: {record[key]}")
    if record.get("nodes"):
        lines.append(f"  nodes: {', '.join(record['nodes'])}")
    for vm in record.get("vms", []):
        lines.append(
            f"  vm {vm['name']} (rank {vm['rank']}, {vm['hostname']}) on {vm['node']}: {vm['address']}"
            f", ssh {vm['ssh_host']}:{vm['ssh_port']}"
        )
    for phase, seconds in sorted(record.get("phases", {}).items()):
        lines.append(f"  {phase}: {seconds:.1f}s")
    for event in record.get("events", []):
        lines.append(f"  {event['time']}  {event['text']}")
    return "\n".join(lines)
