"""`vsub [qsub options] [-vm key=value[,key=value...]]... [script]`: qsub with VM requests.

Without any `-vm` (command line or script directives) vsub execs the real qsub with the
argv unchanged. Otherwise: validate everything, then `qsub -h` the generated wrapper, write
`<spool_dir>/<jobid>/request.json`, and `qrls` (unless the user asked for a hold). Heavy
modules are imported only on the VM path, so a bare-metal submission stays fast.
"""

import os
import sys

from vtorque.job.submission import VM_KEYS_HELP

HELP = f"""\
usage: vsub [qsub options] [-vm key=value[,key=value...]]... [script]
       vsub --dry-run ...   (print the qsub call and the resolved request as JSON; submit nothing)

Every qsub option passes through unchanged. Without -vm (on the command line or as
'#PBS -vm' lines in the script) the job is an ordinary bare-metal job.

-vm keys (case-insensitive; -vm may be repeated; the command line wins over the script):
{VM_KEYS_HELP}ppn and mem are raised to what the VMs need (a note on stderr says so).
Details: docs/user-guide.md; site defaults and limits: `vtorque config show`.
"""


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv in (["--help"], ["--usage"]):
        sys.stdout.write(HELP)
        return 0
    dry_run = "--dry-run" in argv
    argv = [token for token in argv if token != "--dry-run"]  # noqa: S105 - an option, not a secret
    from vtorque.errors import VTorqueError

    try:
        return _submit(argv, dry_run)
    except VTorqueError as err:
        print(f"vsub: {err}", file=sys.stderr)
        print("vsub: nothing was submitted", file=sys.stderr)
        return err.exit_code


def _submit(argv, dry_run):
    from vtorque.errors import QsubArgsError
    from vtorque.scheduler.torque.config import command as torque_command
    from vtorque.scheduler.torque.pbs_script import directive_prefix, read_script
    from vtorque.scheduler.torque.qsub_args import parse_qsub_argv
    from vtorque.site.config_file import config_path, read_config_data

    path = config_path()
    data = read_config_data(path)

    def bare_metal(stdin_data=None):
        qsub = _command_path(torque_command(data, "qsub", path), "qsub", path)
        return _exec_qsub(qsub, argv, stdin_data, dry_run)

    try:
        args = parse_qsub_argv(argv)
    except QsubArgsError:
        if "-vm" in argv:
            raise
        return bare_metal()  # let qsub itself report what it does not understand
    if args.has("I") and not args.vm:
        return bare_metal()
    try:
        content = _read_script(args)
    except QsubArgsError:
        if args.vm:
            raise
        return bare_metal()  # qsub reports the missing script in its own words
    name = os.path.basename(args.script) if args.script else "STDIN"
    script = read_script(content, name, directive_prefix(args, os.environ))
    if not args.vm and not script.vm:
        return bare_metal(None if args.script else content)
    from vtorque.site.config import from_data

    return _submit_vm_job(from_data(data, path), args, script, dry_run)


def _read_script(args):
    if args.has("I"):
        return b""
    if args.script is None:
        return sys.stdin.buffer.read()
    from vtorque.errors import QsubArgsError

    try:
        with open(args.script, "rb") as handle:
            return handle.read()
    except OSError as err:
        raise QsubArgsError(f"cannot read job script {args.script}: {err.strerror}") from None


def _command_path(command, name, source):
    """torque.<name> (an absolute path, as the config requires), checked to be runnable."""
    from vtorque.job.submission import command_path

    return command_path(command, name, "torque", source)


def _qsub_command(config, name):
    return _command_path(getattr(config.torque, name), name, config.source)


def _exec_qsub(qsub, argv, stdin_data, dry_run):
    """Replace vsub by the real qsub; a script already read from stdin is handed over on a memfd."""
    from vtorque.job.submission import exec_bare_metal

    return exec_bare_metal(qsub, argv, stdin_data, dry_run=dry_run, key="qsub", tool="vsub")


def _submit_vm_job(config, args, script, dry_run):
    import json

    from vtorque.errors import QsubArgsError
    from vtorque.job.submission import resolve_vm_request

    options, request = resolve_vm_request(
        config, [*script.vm, *((value, "command line") for value in args.vm)]
    )
    args, notes = _fit_resources(args, script, request, config)
    from vtorque.job.plan import check_network_fits
    from vtorque.scheduler.torque.qsub_args import QsubArgs, nodes_count, resource

    merged = QsubArgs(script.args.options + args.options)
    check_network_fits(
        config.network.mode, nodes_count(resource(merged, "nodes") or "1"), request.vms_per_node
    )
    for note in notes:
        print(f"vsub: note: {note}", file=sys.stderr)
    user_hold = args.has("h") or script.args.has("h")
    qsub = _qsub_command(config, "qsub")
    options_argv = args.argv() if args.has("h") else ["-h", *args.argv()]
    interactive = args.has("I")
    if interactive and merged.has("t"):
        raise QsubArgsError("-t with -I: an interactive job is one session, not an array; drop -t")
    if interactive:
        options_argv.append("-x")  # qsub -I runs the wrapper as the session's command
    if dry_run:
        wrapper = os.path.join(config.spool_dir, ".staging-XXXXXX", "wrapper", script.name)
        print(
            json.dumps({"qsub": [qsub, *options_argv, wrapper], "request": request.to_dict()}, sort_keys=True)
        )
        return 0
    qrls, qdel = _qsub_command(config, "qrls"), _qsub_command(config, "qdel")
    return (_interactive if interactive else _queue)(
        config,
        script,
        request=request,
        asked=options,
        qsub_argv=[qsub, *options_argv],
        release=not user_hold,
        qrls=qrls,
        qdel=qdel,
    )


def _fit_resources(args, script, request, config):
    """Raise ppn (and mem, when given) to what the VMs need; ask for whole nodes (-n) if the site wants it."""
    from vtorque.scheduler.torque.qsub_args import (
        QsubArgs,
        mem_mib,
        nodes_count,
        raise_ppn,
        resource,
        set_resource,
    )

    merged = QsubArgs(script.args.options + args.options)  # command line last: it wins
    notes = []
    cores = request.cores_per_node(config)
    spec = resource(merged, "nodes") or "1"
    new_spec, old_ppn = raise_ppn(spec, cores)
    iocm = f" + iocm_max_cores {request.iocm_max_cores}" if request.iocm else ""
    if new_spec != spec:
        args = set_resource(args, "nodes", new_spec)
        notes.append(
            f"ppn raised from {old_ppn} to {cores} (nodes={new_spec}): host_reserve.cores"
            f" {config.host_reserve.cores} + vcpus {request.vcpus}"
            f" x vms_per_node {request.vms_per_node}{iocm}"
        )
    mem = resource(merged, "mem")
    if mem is not None:
        need = request.ram_mib_per_node(config) * nodes_count(new_spec)
        have = mem_mib(mem)
        if have is None or have < need:
            args = set_resource(args, "mem", f"{need}mb")
            notes.append(
                f"mem raised from {mem} to {need}mb: (host_reserve.ram_mib {config.host_reserve.ram_mib}"
                f" + ram {request.ram_mib} MiB x vms_per_node {request.vms_per_node})"
                f" x {nodes_count(new_spec)} node(s)"
            )
    if config.policy.exclusive_node_alloc and not merged.has("n"):
        # qsub -n (node_exclusive): pbs_server itself marks the nodes job-exclusive, whatever the
        # scheduler; -l naccesspolicy is only read by Moab/Maui, pbs_sched ignores it (docs/torque.md).
        args = args._replace(options=(*args.options, ("n", None)))
    return args, notes


def _interactive(config, script, *, request, asked, qsub_argv, release, qrls, qdel):
    """qsub -I -h -x WRAPPER on a pty, the spool dir and qrls once qsub names the job, then
    the user's terminal relayed (vtorque.scheduler.torque.interactive)."""
    from vtorque.job import spool
    from vtorque.job.submission import BatchSystem, Submitted, publish_and_release, stage_job
    from vtorque.job.wrapper_script import installed_vtorque
    from vtorque.scheduler.torque import interactive
    from vtorque.scheduler.torque.adapter import Adapter
    from vtorque.scheduler.torque.pbs_script import render_job_wrapper

    body = render_job_wrapper(
        (), config.spool_dir, installed_vtorque(), os.environ.get("VTORQUE_CONFIG"), interactive=True
    )
    staging, _ = stage_job(config, b"", script.name, body)
    # qsub -x hands pbs_mom the command's path, not its content (a real Torque showed it): the
    # wrapper it runs must stay where it is while the staging dir becomes the job's spool dir.
    command_dir = spool.create_staging(config.spool_dir)
    command = os.path.join(command_dir, script.name)
    argv = [*qsub_argv, command]
    batch = BatchSystem("vsub", "qsub", "qrls", "qdel", argv, (), None, Adapter.check_job_id)
    published = []

    def publish(job_id):
        published.append(job_id)
        held = Submitted(job_id, [qrls, job_id] if release else None, [qdel, job_id], b"")
        publish_and_release(config, staging, batch, held, request=request, asked=asked, argv=argv)

    try:
        spool.write_new_file(command, body, 0o755)
        return interactive.run(argv, publish, [qdel])
    finally:
        spool.remove(command_dir)  # the session is over, or was cancelled
        if not published:  # qsub refused the job: nothing was queued
            spool.remove(staging)


def _queue(config, script, *, request, asked, qsub_argv, release, qrls, qdel):
    """qsub -h, then request.json, then qrls (when `release`); on any failure after qsub the
    job is deleted again (vtorque.job.submission.queue_job)."""
    from vtorque.job.submission import BatchSystem, Submitted, queue_job
    from vtorque.job.wrapper_script import installed_vtorque
    from vtorque.scheduler.torque.adapter import Adapter
    from vtorque.scheduler.torque.pbs_script import render_job_wrapper

    def submitted(stdout):
        """qsub prints the new job's id (the last word of its output)."""
        words = stdout.decode(errors="replace").split()
        job_id = words[-1] if words else ""
        return Submitted(job_id, [qrls, job_id] if release else None, [qdel, job_id], stdout)

    body = render_job_wrapper(
        script.directives, config.spool_dir, installed_vtorque(), os.environ.get("VTORQUE_CONFIG")
    )
    batch = BatchSystem("vsub", "qsub", "qrls", "qdel", qsub_argv, (), submitted, Adapter.check_job_id)
    return queue_job(
        config,
        content=script.content,
        wrapper_name=script.name,
        wrapper_body=body,
        request=request,
        asked=asked,
        batch=batch,
    )


if __name__ == "__main__":
    sys.exit(main())
