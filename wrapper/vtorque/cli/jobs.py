"""`vtorque jobs show JOBID [--json]`: state, nodes, VMs, phase timings and failure reason;
`vtorque jobs stats JOBID [--plot FILE.png] [--json]`: CPU, memory, disk and network per VM."""

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
    stats = commands.add_parser("stats", help="CPU, memory, disk and network of one job's VMs")
    stats.add_argument("job_id")
    stats.add_argument("--plot", metavar="FILE.png", help="also draw CPU and I/O over time into this PNG")
    stats.add_argument("--json", action="store_true", help="the raw samples, one JSON line each")
    args = parser.parse_args(argv)
    from vtorque.site.config import load_config

    config = load_config()
    as_root = os.geteuid() == 0  # root reads its record, a user the copy kept for the job's owner
    record = _record(config, args.job_id, as_root)
    if args.command == "stats":
        return _stats(config, args, as_root)
    print(json.dumps(record, indent=2, sort_keys=True) if args.json else render(record))
    return 0


def _record(config, job_id, as_root):
    from vtorque.job.records import load_record, record_path

    try:
        record = load_record(config.state_dir, job_id, owner_copy=not as_root)
    except PermissionError:
        raise VTorqueError(
            f"job {job_id} is another user's: only its owner and root see its record"
        ) from None
    if record is None:
        where = record_path(config.state_dir, job_id, owner_copy=not as_root)
        raise VTorqueError(f"no vTorque record of job {job_id}: no {where} (bare metal?)")
    return record


def _stats(config, args, as_root):
    """The samples root keeps (root), or the owner's copy of them, which must be the caller's."""
    from vtorque.job.records import stats_path
    from vtorque.job.stats import load_samples, plot, render_table, summarise

    path = stats_path(config.state_dir, args.job_id, owner_copy=not as_root)
    try:
        samples = load_samples(path, owner_uid=None if as_root else os.geteuid())
    except PermissionError:
        raise VTorqueError(
            f"job {args.job_id} is another user's: only its owner and root see its statistics"
        ) from None
    if samples is None:
        off = (
            "" if config.telemetry.interval_seconds else " (telemetry.interval_seconds is 0: sampling is off)"
        )
        raise VTorqueError(f"no statistics of job {args.job_id}: no {path}{off}")
    if args.json:
        print("\n".join(json.dumps(sample, sort_keys=True) for sample in samples))
    else:
        print(render_table(args.job_id, summarise(samples)))
    if args.plot:
        if len(samples) < 2:
            raise VTorqueError(f"job {args.job_id} has {len(samples)} sample(s): a plot needs two")
        try:
            plot(args.plot, args.job_id, samples)
        except OSError as err:
            raise VTorqueError(f"cannot write the plot {args.plot}: {err.strerror}") from None
        print(f"plot: {args.plot}")
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
