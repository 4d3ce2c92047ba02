"""`vtorque-hook EVENT ARGS...`: what Torque's mom_priv shims exec.

A job without a vTorque spool directory (and no state on this node) is bare metal: the hook
exits 0 before importing anything heavy. Epilogue exit codes are ignored by Torque, and a
failing epilogue.precancel would mark the node down, so those never fail.
"""

import os
import sys

USAGE = """usage: vtorque-hook EVENT ARGS...
EVENT is prologue, prologue.parallel, epilogue, epilogue.parallel or epilogue.precancel;
ARGS are pbs_mom's (8 for prologues, 11 for epilogues). Installed as thin shims in
$PBS_HOME/mom_priv by the compute role; see docs/job-lifecycle.md."""


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE, file=sys.stdout if argv else sys.stderr)
        return 0 if argv else 2
    from vtorque.scheduler.torque.hook import HookUsageError, parse_event

    try:
        event, args = parse_event(argv)
    except HookUsageError as err:
        print(f"vtorque-hook: {err}", file=sys.stderr)
        return 2
    from vtorque.site.config_file import config_path, read_config_data

    path = config_path()
    try:
        data = read_config_data(path)
    except Exception:  # noqa: BLE001 - an unreadable config is reported on the full path below
        data = None
    if not _is_vm_job(args[0], data):  # an unreadable config: judged by the default paths
        return 0
    try:
        return _handle(event, args, path, data)
    except Exception as err:  # noqa: BLE001 - the last line of defence: say why, requeue
        print(f"vtorque-hook {event}: internal error: {type(err).__name__}: {err}", file=sys.stderr)
        return 2 if event.startswith("prologue") else 0


def _is_vm_job(job_id, data):
    """The fast path: the spool dir vsub made, or state vTorque keeps on this node."""
    from ansible_collections.mikelangelo.vtorque.plugins.module_utils.naming import job_dir

    data = data if isinstance(data, dict) else {}
    spool, state = data.get("spool_dir", "/var/spool/vtorque"), data.get("state_dir", "/var/lib/vtorque")
    try:
        state_dir = job_dir(job_id, str(state))
    except ValueError:
        return False  # not a job id vTorque could have used
    return os.path.lexists(os.path.join(str(spool), job_id)) or os.path.lexists(state_dir)


def _handle(event, args, path, data):
    """The VM job's event; the config document already read is validated, not read again."""
    from vtorque.errors import VTorqueError
    from vtorque.scheduler.torque.hook import job_from_hook
    from vtorque.site.config import from_data, load_config

    try:
        config = load_config(path) if data is None else from_data(data, path)
    except VTorqueError as err:
        print(f"vtorque-hook {event}: {err}", file=sys.stderr)
        return 2 if event.startswith("prologue") else 0
    job = job_from_hook(event, args, os.environ, config.torque.pbs_home)
    if event == "epilogue.precancel":
        from vtorque.runtime.job_run import cancel

        cancel(job, config)
        return 0
    if event == "prologue.parallel":
        return 0  # the mother superior's prologue starts the VMs of every node
    from vtorque.runtime import lifecycle

    if event == "prologue":
        return lifecycle.start(job, config)
    if event == "epilogue":
        return lifecycle.stop(job, config)
    return lifecycle.stop_on_sister(job, config)


if __name__ == "__main__":
    sys.exit(main())
