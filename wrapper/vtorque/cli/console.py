"""`vtorque console JOBID [VM] [--follow | --attach]`: the serial console of a VM of your running job.

Run by the job's owner (or root) on the node the VM runs on (the job's first node on Torque,
any node of the job on Slurm). It prints what the guest has written to its serial console so
far; `--follow` keeps printing what it writes next until the job stops running (Ctrl-C ends it
sooner). `--attach` (root only) connects to the console read-write with `virsh console`
(Ctrl-] detaches). VM is a rank (`0`, `vm1`), a guest host name (`n1-vm0`) or a domain name;
the rank-0 VM by default. Another user's job and a job that is not running are refused.
"""

import argparse
import os
import sys

from vtorque.errors import VTorqueError

ACTION = "read its VMs' consoles"


def main(argv, prog="vtorque console"):
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.split(": ", 1)[1].split("\n\n")[0])
    parser.add_argument("job_id")
    parser.add_argument("vm", nargs="?", default="0", help="rank, guest host name or domain name (default 0)")
    how = parser.add_mutually_exclusive_group()
    how.add_argument("-f", "--follow", action="store_true", help="keep printing until the job stops running")
    how.add_argument("--attach", action="store_true", help="read-write, with virsh console (root only)")
    args = parser.parse_args(list(argv))
    as_root = os.geteuid() == 0
    if args.attach and not as_root:
        raise VTorqueError(
            "--attach is root's only (it types into the guest); "
            f"read the console with `vtorque console {args.job_id} {args.vm}` (--follow to keep reading)"
        )
    from ansible_collections.mikelangelo.vtorque.plugins.module_utils.naming import job_dir, serial_log_path

    from vtorque.job.running import pick, running_vms
    from vtorque.site.config import load_config

    config = load_config()
    vm = pick(running_vms(config, args.job_id, ACTION)["vms"], args.vm, args.job_id)
    if args.attach:
        sys.stdout.flush()
        virsh = ["virsh", "-c", config.libvirt.uri, "console", vm["name"]]
        os.execvp(virsh[0], virsh)  # noqa: S606 - argv list, no shell
    path = serial_log_path(job_dir(args.job_id, config.state_dir), vm["name"])
    alive = _still_running(config, args.job_id, vm["name"] if as_root else None)
    try:
        _print_log(path, vm, follow=args.follow, alive=alive)
        if args.follow:
            print(f"{prog}: job {args.job_id} is no longer running, or its VM is gone", file=sys.stderr)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `| head`: the reader has what it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0


def _print_log(path, vm, *, follow, alive):
    from vtorque.guest.console import TerminalSafe, copy_log

    out = sys.stdout.buffer
    safe = TerminalSafe() if out.isatty() else None

    def write(data):
        out.write(safe(data) if safe else data)
        out.flush()

    try:
        copy_log(path, write, follow=follow, alive=alive)
    except FileNotFoundError:
        raise VTorqueError(
            f"VM {vm['hostname']} runs on {vm['node']}: its console log is there, not on this node"
        ) from None
    except PermissionError:
        rotated = os.path.exists(path + ".0")
        why = (
            "virtlogd rotated it (past its max_size) and the part written since is root's only"
            if rotated
            else "it has no read entry for you (`vtorque jobs show` says why)"
        )
        raise VTorqueError(f"the console log of VM {vm['hostname']} cannot be read: {why}") from None
    except OSError as err:
        raise VTorqueError(f"the console log of VM {vm['hostname']} cannot be read: {err}") from None
    if safe:
        out.write(safe(b"", final=True))
        out.flush()


def _still_running(config, job_id, domain):
    """`alive()` for --follow: the job's record says running and (as root, who may ask libvirt)
    its domain still runs."""
    from vtorque.job.records import load_record

    connection = []

    def alive():
        record = load_record(config.state_dir, job_id, owner_copy=domain is None)
        if not record or record.get("state") != "running":
            return False
        return domain is None or _domain_active(config.libvirt.uri, domain, connection)

    return alive


def _domain_active(uri, name, connection):
    import libvirt

    try:
        if not connection:
            connection.append(libvirt.openReadOnly(uri))
        return bool(connection[0].lookupByName(name).isActive())
    except libvirt.libvirtError as err:
        return err.get_error_code() != libvirt.VIR_ERR_NO_DOMAIN
