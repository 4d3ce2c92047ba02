"""What Torque tells a hook: the job from pbs_mom's argv, environment and node file.

docs/torque.md (arguments, environment): prologues get 8 arguments, epilogues 11; the job
id is $1 and the owner $2; the node file is $PBS_NODEFILE on the mother superior, rebuilt as
$PBS_HOME/aux/<jobid> when absent; sisters have none.
"""

import os
import subprocess
from dataclasses import dataclass

from vtorque.errors import VTorqueError

ARGC = {
    "prologue": 8,
    "prologue.parallel": 8,
    "epilogue": 11,
    "epilogue.parallel": 11,
    "epilogue.precancel": 11,
}
MOTHER_SUPERIOR_EVENTS = ("prologue", "epilogue", "epilogue.precancel")


class HookUsageError(VTorqueError):
    """The hook was called with an unknown event or the wrong number of arguments."""


@dataclass(frozen=True)
class TorqueJob:
    event: str
    job_id: str
    user: str
    group: str
    job_name: str
    script: str
    exit_status: int | None  # epilogues only: the job's exit status ($10)
    nodes: tuple  # (host, slots) in node-file order, mother superior first; () on sisters
    workdir: str | None

    @property
    def on_mother_superior(self):
        return self.event in MOTHER_SUPERIOR_EVENTS


def parse_event(argv):
    """(event, arguments) of `vtorque-hook EVENT ARGS...`, checked against Torque's argument count."""
    if not argv or argv[0] not in ARGC:
        raise HookUsageError(f"usage: vtorque-hook {{{','.join(ARGC)}}} ARGS... (got {argv[:1]})")
    event, args = argv[0], list(argv[1:])
    if len(args) != ARGC[event]:
        raise HookUsageError(f"{event} takes {ARGC[event]} arguments from pbs_mom, got {len(args)}")
    return event, args


def job_from_hook(event, args, environ, pbs_home):
    epilogue = event.startswith("epilogue")
    exit_status = None
    if epilogue:
        try:
            exit_status = int(args[9])
        except ValueError:
            exit_status = None
    nodes = ()
    if event in MOTHER_SUPERIOR_EVENTS:
        nodefile = environ.get("PBS_NODEFILE") or os.path.join(pbs_home, "aux", args[0])
        try:
            nodes = read_nodefile(nodefile)
        except VTorqueError:
            if not epilogue:
                raise
            nodes = ()  # the epilogue still tears down on this node
    return TorqueJob(
        event=event,
        job_id=args[0],
        user=args[1],
        group=args[2],
        job_name=args[3],
        script=args[10] if epilogue else args[7],
        exit_status=exit_status,
        nodes=nodes,
        workdir=environ.get("PBS_O_WORKDIR") or None,
    )


def read_nodefile(path):
    """((host, slots), ...) in first-appearance order; one line per slot as Torque writes it."""
    try:
        with open(path, encoding="utf-8") as handle:
            lines = [line.strip() for line in handle if line.strip()]
    except OSError as err:
        raise VTorqueError(f"cannot read the job's node file {path}: {err.strerror}") from None
    slots = {}
    for host in lines:
        slots[host] = slots.get(host, 0) + 1
    return tuple(slots.items())


UNKNOWN_JOB = "Unknown Job Id"  # what qstat says (exit 153) of a job the server has forgotten


def server_knows(qstat, job_id):
    """Whether pbs_server still knows `job_id` (queued, held, running or kept completed); None
    when qstat could not tell (server down, timeout): then nothing may be removed for it."""
    try:
        done = subprocess.run(
            [qstat, job_id], capture_output=True, text=True, timeout=30, check=False, stdin=subprocess.DEVNULL
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if done.returncode == 0:
        return True
    return False if UNKNOWN_JOB in done.stderr else None
