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
    from vtorque.torque import HookUsageError, parse_event

    try:
        event, args = parse_event(argv)
    except HookUsageError as err:
        print(f"vtorque-hook: {err}", file=sys.stderr)
        return 2
    if not _is_vm_job(args[0]):
        return 0
    try:
        return _handle(event, args)
    except Exception as err:  # noqa: BLE001 - the last line of defence: say why, requeue
        print(f"vtorque-hook {event}: internal error: {type(err).__name__}: {err}", file=sys.stderr)
        return 2 if event.startswith("prologue") else 0


def _is_vm_job(job_id):
    """The fast path: the spool dir vsub made, or state vTorque keeps on this node."""
    from ansible_collections.mikelangelo.vtorque.plugins.module_utils.naming import job_dir

    from vtorque.config_file import config_path, read_config_data

    try:
        data = read_config_data(config_path())
    except Exception:  # noqa: BLE001 - an unreadable config is reported on the full path below
        return True
    spool = data.get("spool_dir", "/var/spool/vtorque") if isinstance(data, dict) else "/var/spool/vtorque"
    state = data.get("state_dir", "/var/lib/vtorque") if isinstance(data, dict) else "/var/lib/vtorque"
    try:
        return os.path.lexists(os.path.join(str(spool), job_id)) or os.path.lexists(
            job_dir(job_id, str(state))
        )
    except ValueError:
        return False  # not a job id vTorque could have used


def _handle(event, args):
    from vtorque.config import load_config
    from vtorque.errors import VTorqueError
    from vtorque.torque import job_from_hook

    try:
        config = load_config()
    except VTorqueError as err:
        print(f"vtorque-hook {event}: {err}", file=sys.stderr)
        return 2 if event.startswith("prologue") else 0
    job = job_from_hook(event, args, os.environ, config.torque.pbs_home)
    if event == "epilogue.precancel":
        from vtorque.jobrun import cancel

        cancel(job, config)
        return 0
    if event == "prologue.parallel":
        return 0  # the mother superior's prologue starts the VMs of every node
    from vtorque import lifecycle

    if event == "prologue":
        return lifecycle.start(job, config)
    if event == "epilogue":
        return lifecycle.stop(job, config)
    return lifecycle.stop_on_sister(job, config)


if __name__ == "__main__":
    sys.exit(main())
