"""`vtorque <command> ...`: a thin dispatcher.

Each command lives in its own module exposing `main(argv, prog) -> int`; it is imported only
when called, so one command's dependencies never slow another down. To add a command, add
one line to COMMANDS.
"""

import importlib
import sys

from vtorque.errors import VTorqueError

COMMANDS = {
    "config": ("vtorque.cli.config", "check or show the site configuration"),
    "images": ("vtorque.cli.images", "list, show, add, remove and verify catalog images"),
    "run": (
        "vtorque.scheduler.torque.emulator.run",
        "run a VM job on this machine, playing pbs_mom (root; the demo)",
    ),
    "jobs": ("vtorque.cli.jobs", "show what vTorque knows about a job"),
    "ssh": ("vtorque.cli.ssh", "a shell or a command in a VM of your running job"),
    "console": ("vtorque.cli.console", "the serial console of a VM of your running job"),
    "sweep": ("vtorque.cli.sweep", "remove VMs and files of jobs that are no longer running (root)"),
    "job-run": ("vtorque.runtime.job_run", "run the job in its VMs (called by the job wrapper)"),
}


def usage():
    lines = ["usage: vtorque COMMAND [ARGS...]", "", "commands:"]
    lines += [f"  {name:<10} {summary}" for name, (_, summary) in COMMANDS.items()]
    lines += ["", "`vtorque COMMAND --help` describes a command."]
    return "\n".join(lines)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage(), file=sys.stdout if argv else sys.stderr)
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"vtorque: unknown command {name!r}\n\n{usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[name][0])
    try:
        return module.main(rest, prog=f"vtorque {name}")
    except VTorqueError as err:
        print(f"vtorque {name}: {err}", file=sys.stderr)
        return err.exit_code


if __name__ == "__main__":
    sys.exit(main())
