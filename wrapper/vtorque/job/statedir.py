"""The state directory tree on a node, with every mode set explicitly.

Hooks may run with umask 0077 (Torque's do, docs/torque.md), so a directory made with the umask
would shut the job owner out of what it must reach: its `jobs/<id>/vms.json` and key, and its
copy of the record under `records/owner/`. Every part of the tree is made here, with its mode.
"""

import os

from ansible_collections.mikelangelo.vtorque.plugins.module_utils.files import ensure_dir

STATE_DIR_MODE = 0o755
LAYOUT = {
    "jobs": 0o711,  # owners open their own job dir by name, never list it
    "records": 0o711,
    "records/owner": 0o711,  # the owners' copies of their records
    "ports": 0o700,  # user-mode port claims
    "devices": 0o700,  # -vm vrdma device claims
    "runner": 0o700,  # ansible-runner's scratch for teardowns
}
JOB_DIR_MODE = 0o711  # the owner opens its key and vms.json by name


def subdir(state_dir, name):
    """`<state_dir>/<name>` made (with the state dir and every level between) to LAYOUT's modes."""
    ensure_dir(state_dir, STATE_DIR_MODE)
    path = state_dir
    for part in name.split("/"):
        path = os.path.join(path, part)
        ensure_dir(path, LAYOUT[os.path.relpath(path, state_dir)])
    return path


def job_dir(state_dir, job_id):
    """The job's own directory `<state_dir>/jobs/<job>` (root's, 0711)."""
    from ansible_collections.mikelangelo.vtorque.plugins.module_utils import naming

    subdir(state_dir, "jobs")
    return ensure_dir(naming.job_dir(job_id, state_dir), JOB_DIR_MODE)
