"""Torque 6.1 behind vTorque's seam: pbs_mom's hook argv and environment, its exit codes, and
the commands vTorque uses on a node (docs/torque.md is the contract).

Prologues get 8 arguments, epilogues 11; the job id is $1, the owner $2; the node file is
$PBS_NODEFILE on the mother superior (rebuilt as $PBS_HOME/aux/<jobid> when absent); sisters
get none. Hooks run with PATH=/bin:/usr/bin, so every command is the configured absolute path.
"""

import os
import re
import socket
import subprocess

from vtorque.errors import SubmitError, VTorqueError
from vtorque.scheduler import base
from vtorque.scheduler.base import AllocatedJob, Event, Outcome
from vtorque.scheduler.base import run_command as _run
from vtorque.scheduler.torque.config import COMMANDS

EVENTS = {  # mom_priv script: (vTorque's event, pbs_mom's argument count)
    "prologue": (Event.START, 8),
    "prologue.parallel": (Event.JOIN, 8),
    "epilogue": (Event.STOP, 11),
    "epilogue.parallel": (Event.LEAVE, 11),
    "epilogue.precancel": (Event.CANCEL, 11),
}
REQUEUE_STATUSES = (-14, -3)  # the epilogue's $10 when Torque puts the job back in the queue
START_EXIT = {
    Outcome.OK: 0,
    Outcome.ABORT: 1,  # the job ends (-2); its .o/.e are discarded
    Outcome.REQUEUE: 2,  # any other non-zero requeues (-14)
    # pbs_mom's job-starter child of a deleted job only gives up on its answer (after 120 s)
    # when the prologue said 0; after any other exit it waits forever.
    Outcome.CANCELLED: 0,
}
JOB_ID_RE = re.compile(r"[0-9]+(\[[0-9]*\])?(\.[A-Za-z0-9-]+)*")
ARRAY_ELEMENT_RE = re.compile(r"([0-9]+)\[([0-9]+)\]((?:\.[A-Za-z0-9-]+)*)")  # 42[3].head
# pbs_mom's file names in mom_priv/jobs spell an element 42-3.head (42[3].head elsewhere)
JOB_FILE_ELEMENT_RE = re.compile(r"([0-9]+)-([0-9]+)((?:\.[A-Za-z0-9-]+)*)")
UNKNOWN_JOB = "Unknown Job Id"  # what qstat says (exit 153) of a job the server has forgotten
GUEST_NODEFILE_DIR = "/var/spool/torque/aux"  # where $PBS_NODEFILE points inside the guests


class HookUsageError(VTorqueError):
    """The hook was called with an unknown event or the wrong number of arguments."""


class Adapter(base.Adapter):
    name = "torque"
    hook_names = tuple(EVENTS)

    def __init__(self, config):
        self.config = config
        self.torque = config.torque

    # --- hooks --------------------------------------------------------------------------
    @staticmethod
    def parse_hook(argv):
        """(mom_priv script name, its arguments), checked against pbs_mom's argument count."""
        if not argv or argv[0] not in EVENTS:
            raise HookUsageError(f"usage: vtorque-hook {{{','.join(EVENTS)}}} ARGS... (got {argv[:1]})")
        name, args = argv[0], list(argv[1:])
        count = EVENTS[name][1]
        if len(args) != count:
            raise HookUsageError(f"{name} takes {count} arguments from pbs_mom, got {len(args)}")
        return name, args

    def job_from_hook(self, name, args, environ):
        event = EVENTS[name][0]
        after = name.startswith("epilogue")
        exit_status = None
        if after:
            try:
                exit_status = int(args[9])
            except ValueError:
                exit_status = None
        nodes = ()
        if event in (Event.START, Event.STOP, Event.CANCEL):
            nodefile = environ.get("PBS_NODEFILE") or os.path.join(self.torque.pbs_home, "aux", args[0])
            try:
                nodes = read_nodefile(nodefile)
            except VTorqueError:
                if not after:
                    raise
                nodes = ()  # the epilogue still tears down on this node
        return AllocatedJob(
            event=event,
            job_id=args[0],
            user=args[1],
            group=args[2],
            name=args[3],
            script=args[10] if after else args[7],
            nodes=nodes,
            workdir=environ.get("PBS_O_WORKDIR") or None,
            exit_status=exit_status,
            requeued=exit_status in REQUEUE_STATUSES,
            array_id=array_of(args[0]),
        )

    @staticmethod
    def hook_job_id(args, environ):
        return args[0]

    @classmethod
    def failure_exit(cls, name):
        """The exit code of a hook that could not do its work: a failed start requeues."""
        return cls.exit_code(EVENTS[name][0], Outcome.REQUEUE)

    @staticmethod
    def exit_code(event, outcome):
        """What the hook exits with: only a prologue's code matters to pbs_mom; a failing
        epilogue.precancel or prologue.parallel would mark the node down."""
        return START_EXIT[outcome] if event is Event.START else 0

    # --- the node and the server ------------------------------------------------------------
    def command_problems(self):
        """Torque's commands must run on this host (`vtorque config check`): a hook that cannot
        offline the node would let Torque requeue a failing job onto it forever."""
        from vtorque.site.config_file import command_problem

        problems = []
        for name in COMMANDS:
            path = getattr(self.torque, name)
            problem = command_problem(path)
            if problem:
                problems.append(f"torque.{name}: {path}: {problem}")
        return problems

    def offline(self, reason):
        """Take this node offline with the reason as its note; None, or why that failed."""
        node = socket.gethostname()
        command = [self.torque.pbsnodes, "-o", "-N", f"vtorque: {reason[:200]}", node]
        try:
            done = _run(command)
        except (OSError, subprocess.SubprocessError) as err:
            return f"{self.torque.pbsnodes}: {err}"
        if done.returncode != 0:
            return f"{self.torque.pbsnodes} exit {done.returncode}: {done.stderr.strip()[-200:]}"
        return None

    def live_jobs(self):
        """Jobs pbs_mom runs on this node: those with files in $PBS_HOME/mom_priv/jobs."""
        jobs_dir = os.path.join(self.torque.pbs_home, "mom_priv", "jobs")
        try:
            names = os.listdir(jobs_dir)
        except OSError as err:
            raise VTorqueError(
                f"cannot list running jobs in {jobs_dir}: {err.strerror} (torque.pbs_home?)"
            ) from None
        stems = {name.rsplit(".", 1)[0] for name in names if name.endswith((".SC", ".JB", ".TK"))}
        return sorted(JOB_FILE_ELEMENT_RE.sub(r"\1[\2]\3", stem) for stem in stems)

    def may_run(self, job_id):
        """Whether pbs_server may still run `job_id` (queued, held or running): False once it is
        completed (state C, kept for keep_completed) or forgotten; None when qstat could not
        tell (server down, timeout): then nothing may go for it."""
        try:
            done = _run([self.torque.qstat, "-f", job_id])
        except (OSError, subprocess.SubprocessError):
            return None
        if done.returncode == 0:
            state = re.search(r"^\s*job_state = (\S+)", done.stdout, re.M)
            return None if state is None else state.group(1) != "C"
        return False if UNKNOWN_JOB in done.stderr else None

    def array_may_run(self, array_id, element):
        """`qstat -t 42[].head` lists every element with its state; C is completed."""
        try:
            done = _run([self.torque.qstat, "-t", array_id])
        except (OSError, subprocess.SubprocessError):
            return None
        if done.returncode != 0:
            return False if UNKNOWN_JOB in done.stderr else None
        rows = (line.split() for line in done.stdout.splitlines())
        return any(
            len(row) >= 3 and ARRAY_ELEMENT_RE.fullmatch(row[0]) and row[0] != element and row[-2] != "C"
            for row in rows
        )

    # --- the job's side ------------------------------------------------------------------
    @staticmethod
    def spool_key(job_id):
        return array_of(job_id) or job_id

    @staticmethod
    def running_job_id(environ):
        return environ.get("PBS_JOBID") or None

    @staticmethod
    def check_job_id(job_id):
        """What qsub printed must be a job id in Torque's own spelling."""
        if not isinstance(job_id, str) or not JOB_ID_RE.fullmatch(job_id):
            raise SubmitError(f"qsub printed {job_id!r}, which is not a Torque job id")
        return job_id

    @staticmethod
    def guest_nodefile(job_id):
        return f"{GUEST_NODEFILE_DIR}/{job_id}"

    @classmethod
    def guest_environment(cls, environ, job_id, vms=(), start_seconds=None):
        """The job's PBS_* variables as the guest gets them, $PBS_NODEFILE naming the VMs, and
        VTORQUE_START_SECONDS."""
        env = {key: value for key, value in environ.items() if key.startswith("PBS_")}
        env["PBS_NODEFILE"] = cls.guest_nodefile(job_id)
        env.update(base.start_environment(start_seconds))
        return env

    @staticmethod
    def workdir(environ):
        return environ.get("PBS_O_WORKDIR")


def array_of(job_id):
    """The array id of an element (42[3].head: 42[].head), None for any other job id."""
    match = ARRAY_ELEMENT_RE.fullmatch(job_id)
    return f"{match.group(1)}[]{match.group(3)}" if match else None


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
