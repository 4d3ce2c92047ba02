"""`vsalloc [salloc options] --vm key=value[,...]`: an interactive shell in the rank-0 VM of a
fresh allocation, the Slurm way (issue 16).

Without `--vm` vsalloc execs the real salloc with the argv unchanged. Otherwise the request is
checked and the resources fitted as vsbatch does (the same option table: salloc reads the
options vTorque reads as sbatch does), then `salloc -H ... srun --pty ... vtorque job-run
--interactive` runs with the user's terminal. salloc prints the job id at once ("Pending job
allocation N") and waits; vsalloc then writes `<spool_dir>/N/request.json` and releases the
job, so the allocation's Prologs (PrologFlags=Alloc) start the VMs before the shell. The shell
ends the job; the Epilogs tear down. If anything fails after salloc, the job is cancelled.
"""

import re
import signal
import subprocess
import sys

TOOL = "vsalloc"
PENDING = re.compile(rb"job allocation (\d+)")
HELP = """\
usage: vsalloc [salloc options] --vm key=value[,key=value...]...

A login shell in the rank-0 VM of the allocation, in the current directory, as you. Exit the
shell to end the job. The --vm keys are vsbatch's (`vsbatch --help`); without --vm, vsalloc is
salloc. Commands in other VMs: `vtorque ssh JOBID VM -- COMMAND`.
"""


def main(argv=None):
    from vtorque.scheduler.slurm.submit import command_line

    return command_line(argv, TOOL, HELP, _allocate, "nothing was allocated")


def _allocate(argv):
    from vtorque.job.submission import command_path, exec_bare_metal
    from vtorque.scheduler.slurm.config import command
    from vtorque.scheduler.slurm.sbatch_args import SbatchArgsError, parse_sbatch_argv
    from vtorque.site.config_file import config_path, read_config_data

    path = config_path()
    data = read_config_data(path)
    if not any(token == "--vm" or token.startswith("--vm=") for token in argv):  # noqa: S105
        salloc = command_path(command(data, "salloc", path), "salloc", "slurm", path)
        return exec_bare_metal(salloc, argv, None, dry_run=False, key="salloc", tool=TOOL)
    args = parse_sbatch_argv(argv)
    if args.script is not None:
        raise SbatchArgsError(
            f"{args.script}: vsalloc runs a login shell in the VM, not a command"
            " (for a command: vsbatch, or `vtorque ssh JOBID -- COMMAND` in a running job)"
        )
    from vtorque.site.config import from_data

    return _run_vm_allocation(from_data(data, path), args)


def _run_vm_allocation(config, args):
    from vtorque.job import spool
    from vtorque.job.plan import check_network_fits
    from vtorque.job.submission import Submitted, resolve_vm_request
    from vtorque.job.wrapper_script import installed_vtorque
    from vtorque.scheduler.slurm import submit

    asked, request = resolve_vm_request(config, [(value, "command line") for value in args.vm])
    fitted, notes = submit.fit_resources((), (), args.options, request, config)
    check_network_fits(config.network.mode, submit.most_nodes(args), request.vms_per_node)
    for note in notes:
        print(f"{TOOL}: note: {note}", file=sys.stderr)
    salloc = submit.slurm_command(config, "salloc")
    scontrol, scancel = submit.slurm_command(config, "scontrol"), submit.slurm_command(config, "scancel")
    shell = 'exec srun --pty --overlap -N1 -n1 "$0" job-run --interactive "$1/$SLURM_JOB_ID"'
    argv = [salloc, "-H", *args.argv(drop=("vm",)), *fitted, "/bin/sh", "-c", shell]
    argv += [installed_vtorque(), config.spool_dir]
    staging = spool.create_staging(config.spool_dir)
    try:
        child = subprocess.Popen(argv, stderr=subprocess.PIPE)  # noqa: S603 - argv list
    except OSError as err:
        spool.remove(staging)
        raise submit.SbatchArgsError(f"cannot run {salloc}: {err.strerror}") from None
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the terminal's Ctrl-C is salloc's and the shell's
    held = None
    for line in child.stderr:  # salloc's and srun's messages, passed on as they come
        sys.stderr.buffer.write(line)
        sys.stderr.flush()
        found = PENDING.search(line) if held is None else None
        if found:
            job_id = found.group(1).decode()
            held = Submitted(job_id, [scontrol, "release", job_id], [scancel, job_id], b"")
            _publish(config, staging, held, request, asked, argv, child)
    code = child.wait()
    if held is None:
        spool.remove(staging)
    return code


def _publish(config, staging, held, request, asked, argv, child):
    """The spool dir and release for the held allocation; on failure it is cancelled (salloc
    then ends) and the user reads why."""
    from vtorque.errors import SubmitError
    from vtorque.job.submission import BatchSystem, publish_and_release
    from vtorque.scheduler.slurm.adapter import Adapter

    batch = BatchSystem(TOOL, "salloc", "scontrol release", "scancel", argv, (), None, Adapter.check_job_id)
    try:
        publish_and_release(config, staging, batch, held, request=request, asked=asked, argv=argv)
    except SubmitError as err:
        print(f"{TOOL}: {err}", file=sys.stderr)
