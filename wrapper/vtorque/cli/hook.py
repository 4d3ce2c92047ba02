"""`vtorque-hook EVENT ARGS...`: what the batch system's hook scripts exec (Torque: the
mom_priv shims the compute role installs, with pbs_mom's arguments; Slurm: the Prolog and
Epilog shims, with slurmd's environment).

A job without a vTorque spool directory (and no state on this node) is bare metal: the hook
exits 0 before importing anything heavy, even when the site config cannot be read. For a VM
job the scheduler adapter turns the hook into an AllocatedJob and an Event, the runtime acts,
and the adapter turns its Outcome into the exit code the batch system expects.
"""

import os
import sys

USAGE = """usage: vtorque-hook EVENT ARGS...
EVENT is the batch system's hook (Torque: prologue, prologue.parallel, epilogue,
epilogue.parallel or epilogue.precancel, with pbs_mom's 8 or 11 arguments; Slurm:
slurm-prolog or slurm-epilog, no arguments, slurmd's environment). Installed as thin shims by
the compute role; see docs/job-lifecycle.md."""


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE, file=sys.stdout if argv else sys.stderr)
        return 0 if argv else 2
    from vtorque import scheduler
    from vtorque.errors import VTorqueError
    from vtorque.site.config_file import config_path, read_config_data

    path = config_path()
    try:
        data = read_config_data(path)
    except Exception:  # noqa: BLE001 - an unreadable config is reported on the full path below
        data = None
    data_or_empty = data if isinstance(data, dict) else {}
    # The event names the batch system (their hook names differ), so an unreadable config still
    # answers in the calling batch system's exit codes.
    adapter = scheduler.for_hook(argv[0]) or scheduler.named(str(data_or_empty.get("scheduler", "torque")))
    try:
        name, args = adapter.parse_hook(argv)
    except VTorqueError as err:
        print(f"vtorque-hook: {err}", file=sys.stderr)
        return 2
    # an unreadable config: the defaults tell where the spool and state are
    spool_key = adapter.hook_spool_key(args, os.environ)
    if not _is_vm_job(adapter.hook_job_id(args, os.environ), spool_key, data_or_empty):
        return 0
    try:
        return _handle(adapter, name, args, path, data, undecided=spool_key is None)
    except Exception as err:  # noqa: BLE001 - the last line of defence: say why, as a failed start
        print(f"vtorque-hook {name}: internal error: {type(err).__name__}: {err}", file=sys.stderr)
        return adapter.failure_exit(name, data_or_empty)


def _is_vm_job(job_id, spool_key, data):
    """The fast path: the spool dir vsub made (an array element's is its array's), or state
    vTorque keeps on this node; an unknown `spool_key` (None) may be a VM job."""
    if spool_key is None:
        return True
    from ansible_collections.mikelangelo.vtorque.plugins.module_utils.naming import DEFAULT_STATE_DIR, job_dir

    from vtorque.site.config_file import DEFAULT_SPOOL_DIR

    spool, state = data.get("spool_dir", DEFAULT_SPOOL_DIR), data.get("state_dir", DEFAULT_STATE_DIR)
    try:
        state_dir = job_dir(job_id, str(state))
    except ValueError:
        return False  # not a job id vTorque could have used
    return os.path.lexists(os.path.join(str(spool), spool_key)) or os.path.lexists(state_dir)


def _handle(adapter_class, name, args, path, data, undecided=False):
    """The VM job's event; the config document already read is validated, not read again.
    `undecided`: the fast path could not tell a VM job (a marked Slurm array element): look again
    with the job the batch system names."""
    from vtorque.errors import VTorqueError
    from vtorque.scheduler.base import Event, Outcome
    from vtorque.site.config import from_data, load_config

    try:
        config = load_config(path) if data is None else from_data(data, path)
    except VTorqueError as err:
        print(f"vtorque-hook {name}: {err}", file=sys.stderr)
        return adapter_class.failure_exit(name, data)
    if config.scheduler != adapter_class.name:
        print(
            f"vtorque-hook {name}: {path} says scheduler: {config.scheduler}, but {adapter_class.name}"
            f" called this hook",
            file=sys.stderr,
        )
        return adapter_class.failure_exit(name, data)
    adapter = adapter_class(config)
    job = adapter.job_from_hook(name, args, os.environ)
    if undecided and not _is_vm_job(job.job_id, job.spool_key, data or {}):
        return 0  # what the fast path could not tell: the batch system's word, no spool dir
    outcome = Outcome.OK
    if job.event is Event.CANCEL:
        from vtorque.runtime.cancel import cancel

        cancel(job, config)
    elif job.event is Event.START:
        from vtorque.runtime.prologue import start

        outcome = start(job, config)
    elif job.event is Event.STOP:
        from vtorque.runtime.epilogue import stop

        stop(job, config)
    elif job.event is Event.LEAVE and job.here:
        from vtorque.runtime.epilogue import stop

        stop(job, config)
    elif job.event is Event.LEAVE:
        from vtorque.runtime.epilogue import leave

        leave(job, config)
    elif job.event is Event.JOIN and job.here:  # Slurm, Torque's each_node: its own VMs
        from vtorque.runtime.prologue import start

        outcome = start(job, config)
    # Torque's Event.JOIN by default: the primary node's start brings up the VMs of every node
    return adapter.hook_exit(job, outcome)


if __name__ == "__main__":
    sys.exit(main())
