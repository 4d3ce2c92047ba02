"""`vsbatch [sbatch options] [--vm key=value[,key=value...]]... [script [args]]`: sbatch with VM requests.

Without any `--vm` (before the script on the command line, or in the script's `#SBATCH`
lines) vsbatch execs the real sbatch with the argv unchanged, also when the script comes on
stdin. Otherwise: validate everything, then `sbatch -H --parsable` the generated wrapper,
write `<spool_dir>/<jobid>/request.json`, and `scontrol release` (unless the user asked for a
hold), exactly as vsub does (vtorque.job.submission). The user sees what sbatch would have
printed: `Submitted batch job N`, with their --parsable `N` or `N;cluster`, with -Q nothing
(vsbatch itself submits without -Q, which would hide the job id from it too).

Resources are fitted the Slurm way, per node, each change noted on stderr:
- CPUs. Each node needs host_reserve.cores + vcpus x vms_per_node (+ iocm_max_cores). With
  no task geometry of the user's, vsbatch asks for `--ntasks-per-node=1 --cpus-per-task=N`:
  one task holding N CPUs, which Slurm allocates on every node whatever -N is (--mincpus is
  only a filter on nodes, not an allocation). With the user's --ntasks-per-node T and/or
  --cpus-per-task C, theirs is kept when T x C (C with --overcommit, which allocates one task
  per node) reaches N; otherwise --cpus-per-task is raised to ceil(N / T), keeping their
  tasks. -n/--ntasks is refused: it does not say how many tasks, so CPUs, land on each node;
  so are --ntasks-per-gpu, --ntasks-per-tres and --cpus-per-gpu (CPUs per GPU, not per node).
- Memory. Slurm's --mem is per node: it is raised to host_reserve.ram_mib + ram x
  vms_per_node, or added when no memory is asked for; --mem=0 (all of each node's memory) is
  kept. --mem-per-cpu is raised so that it times the CPUs fitted above covers the node;
  --mem-per-gpu is refused (GPUs say nothing about the VMs' memory).
- Nodes. -N N or a range MIN-MAX passes through unchanged: every fitted value is per node,
  so a range is fine; the network check counts the most nodes Slurm may give (MAX). Hosts
  named by -w/-F are not counted here: the Prolog checks the real allocation again.
- Whole nodes: `--exclusive` is added when policy.exclusive_node_alloc is true (Slurm itself
  enforces it), unless the user's own plain --exclusive is in force.
An array (--array) is one job per element, each in VMs of its own; its comment starts with
vTorque's mark (ARRAY_MARK), the user's own comment after it.
Refused for VM jobs, nothing submitted: heterogeneous jobs, --wait (the job is
released only after sbatch returns), --test-only (use --dry-run), --uid/--gid, #PBS/#BSUB
lines sbatch would translate, and a script sbatch itself would refuse (no #! line, DOS line
breaks: the wrapper sbatch sees instead would pass). `--wrap=COMMAND` works: the script
sbatch would make of it is the script the VM runs.

Heavy modules are imported only on the VM path, so a bare-metal submission stays fast.
"""

import os
import sys

from vtorque.job.submission import VM_KEYS_HELP
from vtorque.scheduler.slurm.adapter import ARRAY_MARK

HELP = f"""\
usage: vsbatch [sbatch options] [--vm key=value[,key=value...]]... [script [args...]]
       vsbatch --dry-run ...   (print the sbatch call and the resolved request as JSON; submit nothing)

Every sbatch option passes through unchanged. Without --vm (on the command line before the
script, or as '#SBATCH --vm' lines in the script) the job is an ordinary bare-metal job.

--vm keys (case-insensitive; --vm may be repeated; the command line wins over the script):
{VM_KEYS_HELP}CPUs and memory per node are raised to what the VMs need (a note on stderr says so).
Details: docs/user-guide.md; site defaults and limits: `vtorque config show`.
"""

TOOL = "vsbatch"
# The user's options vsbatch does not pass on: it submits the wrapper (not --wrap), always
# with its own --parsable, and needs the job id that -Q would hide.
NOT_PASSED_ON = ("wrap", "parsable", "quiet")
INFORMATION = ("help", "usage", "version")  # sbatch answers these and submits nothing
MEMORY = ("mem", "mem-per-cpu", "mem-per-gpu")
UNSUPPORTED = {
    "wait": "vsbatch releases the held job only after sbatch returns, so sbatch cannot wait for it",
    "test-only": "see what would be submitted with vsbatch --dry-run instead",
    "uid": "a VM job runs as the user who submits it",
    "gid": "a VM job runs as the user who submits it",
    "ntasks": "it does not say how many CPUs each node gets; give --ntasks-per-node (and -N),"
    " or no task options and vsbatch fits them",
    "ntasks-per-gpu": "vsbatch fits the CPUs of each node to the VMs (--ntasks-per-node, --cpus-per-task)",
    "ntasks-per-tres": "vsbatch fits the CPUs of each node to the VMs (--ntasks-per-node, --cpus-per-task)",
    "cpus-per-gpu": "vsbatch fits the CPUs of each node to the VMs (--ntasks-per-node, --cpus-per-task)",
    "mem-per-gpu": "the VMs' memory is per node; give --mem",
}


def main(argv=None):
    return command_line(argv, TOOL, HELP, _submit, "nothing was submitted")


def command_line(argv, tool, help_text, action, nothing_done):
    """A Slurm submit command (vsbatch, vsalloc): --help, or `action(argv)`; an error is
    printed in Slurm's spelling with what did not happen, and is the exit code."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv in (["--help"], ["--usage"]):
        sys.stdout.write(help_text)
        return 0
    from vtorque.errors import VTorqueError

    try:
        return action(argv)
    except VTorqueError as err:
        print(f"{tool}: {in_slurm_words(err)}", file=sys.stderr)
        print(f"{tool}: {nothing_done}", file=sys.stderr)
        return err.exit_code


def in_slurm_words(err):
    """The message of `err`; a request error names its key as `-vm key` (vsub's option), which
    vsbatch spells `--vm`."""
    from vtorque.errors import RequestError

    text = str(err)
    if isinstance(err, RequestError) and err.key is not None:
        head = f"{err.source}: " if err.source else ""
        text = text.replace(f"{head}-vm ", f"{head}--vm ", 1)
    return text


def _submit(argv):
    from vtorque.scheduler.slurm.batch_script import mentions_vm, read_batch_script
    from vtorque.scheduler.slurm.sbatch_args import SbatchArgsError, parse_sbatch_argv
    from vtorque.site.config_file import config_path, read_config_data

    path = config_path()
    data = read_config_data(path)

    def bare_metal(dry_run, stdin_data=None):
        shown = [token for token in argv if token != "--dry-run"] if dry_run else argv  # noqa: S105
        return _exec_sbatch(data, path, shown, stdin_data, dry_run)

    try:
        args = parse_sbatch_argv(argv)
    except SbatchArgsError:
        if any(token == "--vm" or token.startswith("--vm=") for token in argv):  # noqa: S105
            raise
        return bare_metal("--dry-run" in argv)  # sbatch reports what it does not understand
    if not args.vm and any(args.has(name) for name in INFORMATION):
        return bare_metal(args.dry_run)  # before reading a script from stdin, as sbatch
    try:
        name, content = _job_script(args)
    except SbatchArgsError:
        if args.vm:
            raise
        return bare_metal(args.dry_run)  # sbatch reports the missing script in its own words
    stdin_data = content if args.script is None and not args.has("wrap") else None
    try:
        script = read_batch_script(content, name)
    except SbatchArgsError:
        if args.vm or mentions_vm(content):
            raise
        return bare_metal(args.dry_run, stdin_data)
    if not args.vm and not script.vm:
        return bare_metal(args.dry_run, stdin_data)
    from vtorque.site.config import from_data

    return _submit_vm_job(from_data(data, path), args, script)


def _exec_sbatch(data, path, argv, stdin_data, dry_run):
    """Replace vsbatch by the configured sbatch (slurm.sbatch, read without the rest of the config)."""
    from vtorque.job.submission import command_path, exec_bare_metal
    from vtorque.scheduler.slurm.config import command

    sbatch = command_path(command(data, "sbatch", path), "sbatch", "slurm", path)
    return exec_bare_metal(sbatch, argv, stdin_data, dry_run=dry_run, key="sbatch", tool=TOOL)


def _job_script(args):
    """(name for messages, bytes) of the job script: the --wrap command made a script as sbatch
    makes it, stdin without a script operand, else the file sbatch would find for it."""
    from vtorque.scheduler.slurm.batch_script import find_script, wrapped_script
    from vtorque.scheduler.slurm.sbatch_args import SbatchArgsError

    if args.has("wrap"):
        if args.script is not None:
            raise SbatchArgsError("script arguments not permitted with --wrap option", "command line")
        return "wrap", wrapped_script(args.last("wrap").value)
    if args.script is None:
        return "stdin", sys.stdin.buffer.read()
    found = find_script(args.script, os.getcwd(), os.environ.get("PATH"))
    try:
        with open(found, "rb") as handle:
            return os.path.basename(args.script), handle.read()
    except OSError as err:
        raise SbatchArgsError(f"cannot read job script {args.script}: {err.strerror}") from None


def _wrapper_name(args):
    """The wrapper's file name: Slurm names a job without -J after its script's file (sbatch
    names a script from stdin `sbatch`, a --wrap one `wrap`), so the name is the user's."""
    if args.has("wrap"):
        return "wrap"
    return os.path.basename(args.script) if args.script else "sbatch"


def _submit_vm_job(config, args, script):
    import json

    from vtorque.job.plan import check_network_fits
    from vtorque.job.submission import resolve_vm_request
    from vtorque.scheduler.slurm.sbatch_args import environment_options

    environment = environment_options(os.environ)
    merged = _in_sbatch_order(script.args.options, environment, args.options)
    _refuse_unsupported(args, script, merged)
    asked, request = resolve_vm_request(config, [*script.vm, *((value, "command line") for value in args.vm)])
    fitted, notes = fit_resources(script.args.options, environment, args.options, request, config)
    check_network_fits(config.network.mode, most_nodes(merged), request.vms_per_node)
    if merged.has("array"):
        user_comment = merged.last("comment")
        fitted.append(_array_comment(user_comment.value if user_comment else None))
        notes.append(f"an array VM job's comment starts with {ARRAY_MARK!r} (each element's Prolog reads it)")
    for note in notes:
        print(f"{TOOL}: note: {note}", file=sys.stderr)
    sbatch = slurm_command(config, "sbatch")
    hold = [] if args.has("hold") else ["-H"]
    submit_argv = [sbatch, *hold, "--parsable", *args.argv(drop=NOT_PASSED_ON), *fitted]
    name = _wrapper_name(args)
    if args.dry_run:
        wrapper = os.path.join(config.spool_dir, ".staging-XXXXXX", "wrapper", name)
        plan = {"sbatch": [*submit_argv, wrapper, *args.script_args], "request": request.to_dict()}
        print(json.dumps(plan, sort_keys=True))
        return 0
    return _queue(
        config,
        script,
        wrapper_name=name,
        request=request,
        asked=asked,
        submit_argv=submit_argv,
        script_args=args.script_args,
        release=not merged.has("hold"),  # the user's own hold (command line or #SBATCH) stays
        show=_shown_output(parsable=merged.has("parsable"), quiet=args.has("quiet")),
    )


def _array_comment(comment):
    """--comment for an array VM job: vTorque's mark, then the user's own comment."""
    return f"--comment={ARRAY_MARK} {comment or ''}".rstrip()


def slurm_command(config, name):
    from vtorque.job.submission import command_path

    return command_path(getattr(config.slurm, name), name, "slurm", config.source)


def _refuse_unsupported(args, script, merged):
    """What a VM job cannot be (see the module docstring), and scripts sbatch would refuse;
    nothing is submitted."""
    from vtorque.scheduler.slurm.batch_script import script_problem
    from vtorque.scheduler.slurm.sbatch_args import SbatchArgsError

    hint = "submit without --vm"
    for name, why in UNSUPPORTED.items():
        if merged.has(name):
            raise SbatchArgsError(f"--{name}: {why}; {hint}")
    for name in INFORMATION:
        if args.has(name):
            raise SbatchArgsError(f"--{name}: sbatch only answers it and submits nothing; {hint}")
    if args.het_job or script.het_job:
        raise SbatchArgsError(f"heterogeneous jobs (':' or '#SBATCH hetjob') are not supported; {hint}")
    problem = script_problem(script.content)
    if problem:
        raise SbatchArgsError(f"{script.name}: {problem}")
    if script.foreign_line and not merged.has("ignore-pbs"):
        number, text = script.foreign_line
        raise SbatchArgsError(
            f"{script.name} line {number} ({text.strip()!r}): sbatch translates #PBS and #BSUB lines,"
            " which the VM job's wrapper does not carry; write them as #SBATCH lines, or give --ignore-pbs"
        )


def most_nodes(merged):
    """The most nodes Slurm may give the job: -N N, or MAX of -N MIN-MAX (default 1)."""
    from vtorque.scheduler.slurm.sbatch_args import SbatchArgsError, node_range

    nodes = merged.last("nodes")
    if nodes is None:
        return 1
    counts = node_range(nodes.value)
    if counts is None:
        raise SbatchArgsError(f"-N {nodes.value}: not a node count vsbatch can read (N or MIN-MAX)")
    return counts[1]


# --- resources ---------------------------------------------------------------------------


def _in_sbatch_order(script_options, environment, command_line):
    """All options as sbatch applies them: #SBATCH lines, then SBATCH_* variables, then the
    command line; an option's last value is the one sbatch keeps."""
    from vtorque.scheduler.slurm.sbatch_args import SbatchArgs

    return SbatchArgs((*script_options, *environment, *command_line))


def fit_resources(script_options, environment, command_line, request, config):
    """(sbatch options to append after the user's, notes): CPUs, memory and whole nodes as
    the VMs need them on each node. Appended options win: sbatch keeps an option's last value."""
    from vtorque.scheduler.slurm.sbatch_args import SbatchArgs

    merged = _in_sbatch_order(script_options, environment, command_line)
    cpu_options, cpu_note, cpus = _fit_cpus(merged, request, config)
    kind = _memory_kind(SbatchArgs(script_options + command_line), SbatchArgs(environment))
    memory_options, memory_note = _fit_memory(merged, kind, cpus, request, config)
    exclusive_options, exclusive_note = _fit_exclusive(merged, config)
    notes = [note for note in (cpu_note, memory_note, exclusive_note) if note]
    return [*cpu_options, *memory_options, *exclusive_options], notes


def _cores_reason(request, config):
    iocm = f" + iocm_max_cores {request.iocm_max_cores}" if request.iocm else ""
    return (
        f"host_reserve.cores {config.host_reserve.cores} + vcpus {request.vcpus}"
        f" x vms_per_node {request.vms_per_node}{iocm}"
    )


def _fit_cpus(merged, request, config):
    """(options, note, CPUs each node gets): see the module docstring."""
    need = request.cores_per_node(config)
    tasks, per_task = merged.last("ntasks-per-node"), merged.last("cpus-per-task")
    if tasks is None and per_task is None:
        note = (
            f"--ntasks-per-node=1 --cpus-per-task={need} added (one task of {need} CPUs on each node):"
            f" {_cores_reason(request, config)}"
        )
        return ["--ntasks-per-node=1", f"--cpus-per-task={need}"], note, need
    counted = 1 if merged.has("overcommit") else _count(tasks, "--ntasks-per-node")
    cpus_per_task = _count(per_task, "--cpus-per-task")
    if counted * cpus_per_task >= need:
        return [], None, counted * cpus_per_task
    raised = -(-need // counted)
    note = (
        f"cpus-per-task raised from {cpus_per_task} to {raised} ({counted} task(s) x {raised}"
        f" = {counted * raised} CPUs on each node): {_cores_reason(request, config)}"
    )
    return [f"--cpus-per-task={raised}"], note, counted * raised


def _count(option, spelled):
    """A task or CPU count the user gave (1 when not given)."""
    from vtorque.scheduler.slurm.sbatch_args import SbatchArgsError

    if option is None:
        return 1
    if not option.value.strip().isdigit() or int(option.value) < 1:
        raise SbatchArgsError(f"{spelled}={option.value}: expected a whole number >= 1")
    return int(option.value)


def _memory_kind(given, environment):
    """Which of --mem, --mem-per-cpu, --mem-per-gpu sbatch uses (None: none): one given in the
    script or on the command line wins over the SBATCH_MEM_* variables; two are refused,
    as sbatch refuses them."""
    from vtorque.scheduler.slurm.sbatch_args import SbatchArgsError

    for options, what in ((given, "--mem, --mem-per-cpu and --mem-per-gpu"), (environment, "SBATCH_MEM_*")):
        kinds = {option.name for option in options.options if option.name in MEMORY}
        if len(kinds) > 1:
            raise SbatchArgsError(f"{what} are mutually exclusive (sbatch refuses them together)")
        if kinds:
            return kinds.pop()
    return None


def _ram_reason(request, config):
    return (
        f"host_reserve.ram_mib {config.host_reserve.ram_mib} + ram {request.ram_mib} MiB"
        f" x vms_per_node {request.vms_per_node}, per node"
    )


def _fit_memory(merged, kind, cpus, request, config):
    """(options, note): the memory each node needs, in the user's own kind of request."""
    need = request.ram_mib_per_node(config)
    if kind is None:
        return [f"--mem={need}M"], f"--mem={need}M added: {_ram_reason(request, config)}"
    given = merged.last(kind).value
    have = _size(given, kind)
    if kind == "mem":
        if have == 0 or have >= need:  # 0: all of each node's memory
            return [], None
        return [f"--mem={need}M"], f"mem raised from {given} to {need}M: {_ram_reason(request, config)}"
    per_cpu = -(-need // cpus)
    if have >= per_cpu:
        return [], None
    note = (
        f"mem-per-cpu raised from {given} to {per_cpu}M ({cpus} CPUs on each node x {per_cpu}M"
        f" >= {need}M): {_ram_reason(request, config)}"
    )
    return [f"--mem-per-cpu={per_cpu}M"], note


def _size(text, kind):
    from vtorque.scheduler.slurm.sbatch_args import SbatchArgsError, size_mib

    mib = size_mib(text)
    if mib is None:
        raise SbatchArgsError(f"--{kind}={text}: expected a size (a number of MiB, or with K, M, G or T)")
    return mib


def _fit_exclusive(merged, config):
    """(options, note): `--exclusive` unless the site lets VM jobs share nodes, or the user's
    own plain --exclusive is in force (not followed by --oversubscribe, not --exclusive=user)."""
    if not config.policy.exclusive_node_alloc:
        return [], None
    why = "policy.exclusive_node_alloc gives VM jobs whole nodes"
    last = next((o for o in reversed(merged.options) if o.name in ("exclusive", "oversubscribe")), None)
    if last is None:
        return ["--exclusive"], f"--exclusive added: {why}"
    if last.name == "exclusive" and (last.value or "exclusive").lower() == "exclusive":
        return [], None
    given = f"--{last.name}" if last.value is None else f"--{last.name}={last.value}"
    return ["--exclusive"], f"--exclusive added after {given}: {why}"


# --- queueing ----------------------------------------------------------------------------


def _shown_output(*, parsable, quiet):
    """What the user sees once the job is queued, from the job id and cluster sbatch printed
    (vsbatch always submits with --parsable)."""

    def show(stdout, job_id, cluster):
        if quiet:
            return b""
        if parsable:
            return stdout
        on_cluster = f" on cluster {cluster}" if cluster else ""
        return f"Submitted batch job {job_id}{on_cluster}\n".encode()

    return show


def _parsable_job(stdout):
    """(job id, cluster or '') of `sbatch --parsable` output: `N` or `N;cluster` (last line)."""
    lines = stdout.decode(errors="replace").strip().splitlines()
    job_id, _, cluster = (lines[-1].strip() if lines else "").partition(";")
    return job_id, cluster


def _queue(config, script, *, wrapper_name, request, asked, submit_argv, script_args, release, show):
    """sbatch -H, then request.json, then scontrol release (when `release`); on any failure
    after sbatch the job is cancelled again (vtorque.job.submission.queue_job)."""
    from vtorque.job.submission import BatchSystem, Submitted, queue_job
    from vtorque.job.wrapper_script import installed_vtorque, render_job_wrapper
    from vtorque.scheduler.slurm.adapter import Adapter

    scontrol, scancel = slurm_command(config, "scontrol"), slurm_command(config, "scancel")

    def submitted(stdout):
        job_id, cluster = _parsable_job(stdout)
        where = ["-M", cluster] if cluster else []
        release_argv = [scontrol, *where, "release", job_id] if release else None
        return Submitted(job_id, release_argv, [scancel, *where, job_id], show(stdout, job_id, cluster))

    body = render_job_wrapper(
        script.directives,
        config.spool_dir,
        installed_vtorque(),
        job_id_variable="SLURM_JOB_ID",
        generator=TOOL,
        config_path=os.environ.get("VTORQUE_CONFIG"),
    )
    batch = BatchSystem(
        TOOL,
        "sbatch",
        "scontrol release",
        "scancel",
        submit_argv,
        script_args,
        submitted,
        Adapter.check_job_id,
    )
    return queue_job(
        config,
        content=script.content,
        wrapper_name=wrapper_name,
        wrapper_body=body,
        request=request,
        asked=asked,
        batch=batch,
    )


if __name__ == "__main__":
    sys.exit(main())
