"""`vtorque ssh JOBID [VM] [-- COMMAND...]`: a shell, or a command, in a VM of your running job.

Run by the job's owner (or root) on the node where the job's record is: the primary node
(Torque's mother superior, Slurm's batch host). It logs in as the owner with the job's own key
and trusts only the job's pinned host keys, as the job itself does. VM is a rank (`0`, `vm1`),
a guest host name (`n1-vm0`) or a domain name; the rank-0 VM by default.
"""

import argparse
import os
import sys


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
    from vtorque.job.running import pick, running_vms
    from vtorque.site.config import load_config

    config = load_config()
    vms = running_vms(config, args.job_id, "log in to its VMs")
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
