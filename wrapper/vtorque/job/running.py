"""A running job's VMs, as its owner (or root) sees them on the job's first node: the commands
that reach into a job's VMs (`vtorque ssh`, `vtorque console`) start here."""

import json
import os
import pwd

from ansible_collections.mikelangelo.vtorque.plugins.module_utils.naming import job_dir

from vtorque.errors import VTorqueError
from vtorque.job.records import load_record
from vtorque.trust import read_trusted

MAX_VMS_BYTES = 1024 * 1024


def job_record(config, job_id, action):
    """The job's record (root's as root, the owner's copy otherwise); refused for another user's
    job, naming what only its owner and root may do (`action`), and for a job unknown here."""
    try:
        record = load_record(config.state_dir, job_id, owner_copy=os.geteuid() != 0)
    except PermissionError:
        raise VTorqueError(
            f"job {job_id} is another user's: only its owner (and root) may {action}"
        ) from None
    if record is None:
        raise VTorqueError(f"no vTorque job {job_id} on this node (run this on the job's first node)")
    return record


def running_vms(config, job_id, action):
    """The job's vms.json, once its record says it runs; refused for another user's job (its
    files are its owner's alone) and for a job not running on this node."""
    record = job_record(config, job_id, action)
    if record.get("state") != "running":
        raise VTorqueError(f"job {job_id} is not running (its state is {record.get('state', 'unknown')})")
    path = os.path.join(job_dir(job_id, config.state_dir), "vms.json")
    try:
        owner_uid = pwd.getpwnam(record.get("owner", "")).pw_uid
        return json.loads(
            read_trusted(path, owner_uid=owner_uid, max_bytes=MAX_VMS_BYTES, what="job's VM list")
        )
    except (KeyError, OSError, ValueError) as err:
        raise VTorqueError(f"job {job_id}'s VMs cannot be read: {err}") from None


def pick(vms, wanted, job_id):
    """The VM named by rank (`2`, `vm2`), guest host name or domain name."""
    rank = wanted[2:] if wanted.startswith("vm") and wanted[2:].isdigit() else wanted
    for vm in vms:
        if wanted in (vm["name"], vm["hostname"]) or rank == str(vm["rank"]):
            return vm
    names = ", ".join(f"{vm['rank']} ({vm['hostname']})" for vm in vms)
    raise VTorqueError(f"job {job_id} has no VM {wanted!r}; its VMs: {names}")
