"""`vtorque ssh JOBID [VM] [-- COMMAND...]`: a shell, or a command, in a VM of your running job.

Run by the job's owner (or root) on the node where the job's record is: the primary node
(Torque's mother superior, Slurm's batch host). It logs in as the owner with the job's own key
and trusts only the job's pinned host keys, as the job itself does. VM is a rank (`0`, `vm1`),
a guest host name (`n1-vm0`) or a domain name; the rank-0 VM by default.
"""

import argparse
import json
import os
import sys

from vtorque.errors import VTorqueError

MAX_VMS_BYTES = 1024 * 1024


def main(argv, prog="vtorque ssh"):
    argv = list(argv)
    command = argv[argv.index("--") + 1 :] if "--" in argv else []
    own = argv[: argv.index("--")] if "--" in argv else argv
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.split(": ", 1)[1].split("\n\n")[0])
    parser.add_argument("job_id")
    parser.add_argument("vm", nargs="?", default="0", help="rank, guest host name or domain name (default 0)")
    args = parser.parse_args(own)
    from ansible_collections.mikelangelo.vtorque.plugins.module_utils.naming import job_dir

    from vtorque.guest.ssh import OWNER_KNOWN_HOSTS, ssh_command
    from vtorque.site.config import load_config

    config = load_config()
    vms = running_vms(config, args.job_id)
    vm = pick(vms["vms"], args.vm, args.job_id)
    ssh = ssh_command(
        job_dir(args.job_id, config.state_dir),
        vms["owner"],
        vm["ssh_host"],
        vm["ssh_port"],
        OWNER_KNOWN_HOSTS,
    )
    if not command and sys.stdin.isatty():
        ssh.insert(1, "-t")  # a login shell wants a terminal
    sys.stdout.flush()
    os.execvp(ssh[0], [*ssh, *command])  # noqa: S606 - argv list, no shell


def running_vms(config, job_id):
    """The job's vms.json, once its record says it runs; refused for another user's job (its
    files are its owner's alone) and for a job not running on this node."""
    from ansible_collections.mikelangelo.vtorque.plugins.module_utils.naming import job_dir

    from vtorque.job.records import load_record
    from vtorque.trust import read_trusted

    as_root = os.geteuid() == 0
    try:
        record = load_record(config.state_dir, job_id, owner_copy=not as_root)
    except PermissionError:
        raise VTorqueError(
            f"job {job_id} is another user's: only its owner (and root) may log in to its VMs"
        ) from None
    if record is None:
        raise VTorqueError(f"no vTorque job {job_id} on this node (log in from the job's first node)")
    if record.get("state") != "running":
        raise VTorqueError(f"job {job_id} is not running (its state is {record.get('state', 'unknown')})")
    path = os.path.join(job_dir(job_id, config.state_dir), "vms.json")
    owner = record.get("owner", "")
    import pwd

    try:
        owner_uid = pwd.getpwnam(owner).pw_uid
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
