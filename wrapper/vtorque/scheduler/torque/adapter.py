"""Torque 6.1 behind vTorque's seam: pbs_mom's hook argv and environment, its exit codes, and
the commands vTorque uses on a node (docs/torque.md is the contract).

Prologues get 8 arguments, epilogues 11; the job id is $1, the owner $2; the node file is
$PBS_NODEFILE on the mother superior (rebuilt as $PBS_HOME/aux/<jobid> when absent); sisters
get none. Hooks run with PATH=/bin:/usr/bin, so every command is the configured absolute path.

With `torque.start: each_node` every node starts and tears down its own VMs in its own hook
(`AllocatedJob.here`), as on Slurm: a sister learns the job's nodes from pbs_server (`qstat -f
-1`: exec_host, in the order of the MS's node file) and which of them it is from
$PBS_NODENUM; every node derives the same keys from `torque.key_secret`.
"""

import os
import re
import socket
import subprocess
import time

from vtorque.errors import SubmitError, VTorqueError
from vtorque.scheduler import base
from vtorque.scheduler.base import AllocatedJob, Event, Outcome
from vtorque.scheduler.base import run_command as _run
from vtorque.scheduler.torque.config import COMMANDS, start_mode

EVENTS = {  # mom_priv script: (vTorque's event, pbs_mom's argument count)
    "prologue": (Event.START, 8),
    "prologue.parallel": (Event.JOIN, 8),
    "epilogue": (Event.STOP, 11),
    "epilogue.parallel": (Event.LEAVE, 11),
    "epilogue.precancel": (Event.CANCEL, 11),
}
REQUEUE_STATUSES = (-14, -3)  # the epilogue's $10 when Torque puts the job back in the queue
# A sister's prologue.parallel: any non-zero exit refuses the join (the job is requeued, -3,
# and the node marked down). A sister cannot abort a job: when the request is refused, the
# MS prologue, which admits the same request after it, aborts the job (exit 1).
JOIN_EXIT = {Outcome.OK: 0, Outcome.ABORT: 0, Outcome.REQUEUE: 2, Outcome.CANCELLED: 0}
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
EXEC_HOST_RE = re.compile(r"^\s*exec_host = (.*)$")
QSTAT_TRIES = 3  # a sister asks pbs_server for the job's nodes this often before it refuses
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
        self._hook_user = None

    @property
    def per_node(self):
        """`torque.start: each_node`: each node's own hook starts its own VMs."""
        return self.torque.start == "each_node"

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
        nodes, here = (), None
        if event in (Event.START, Event.STOP, Event.CANCEL):
            nodefile = environ.get("PBS_NODEFILE") or os.path.join(self.torque.pbs_home, "aux", args[0])
            try:
                nodes = read_nodefile(nodefile)
            except VTorqueError:
                if not after:
                    raise
                nodes = ()  # the epilogue still tears down on this node
            if self.per_node and event is not Event.CANCEL:
                here = nodes[0][0] if nodes else environ.get("PBS_MSHOST") or None
        elif self.per_node:  # a sister: the job's nodes from pbs_server, and which one this is
            self._hook_user = args[1]
            nodes, here = self._sister_nodes(args[0], environ, after)
        global _hook_node  # noqa: PLW0603 - this process's node, for offline()
        _hook_node = here
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
            here=here,
            array_id=array_of(args[0]),
        )

    def _sister_nodes(self, job_id, environ, after):
        """(the job's nodes, this node's name) on a sister: exec_host as `qstat -f -1` tells it
        (a sister has no node file), this node the $PBS_NODENUM-th of them (pbs_mom numbers the
        hosts of exec_host from 0, the MS). When pbs_server cannot tell in epilogue.parallel,
        the nodes the node's own record kept from prologue.parallel, else ((), None): the
        epilogue then sweeps every VM of the job on this machine."""
        try:
            number = int(environ.get("PBS_NODENUM", ""))
        except ValueError:
            number = None
        try:
            nodes = self.job_nodes(job_id, tries=1 if after else QSTAT_TRIES)
            if number is None or not 0 < number < len(nodes):
                raise VTorqueError(
                    f"PBS_NODENUM {environ.get('PBS_NODENUM')!r} names no sister of {job_id}'s"
                    f" {len(nodes)} nodes ({'+'.join(host for host, _ in nodes)})"
                )
        except VTorqueError as err:
            if not after:
                self._tell_refusal(job_id, environ, err)
                raise
            from vtorque.job.records import load_record

            recorded = (load_record(self.config.state_dir, job_id) or {}).get("nodes") or []
            if number is not None and 0 < number < len(recorded):
                return tuple((host, 0) for host in recorded), recorded[number]
            return (), None
        return nodes, nodes[number][0]

    def _tell_refusal(self, job_id, environ, err):
        """A sister's output is discarded: why it refuses the join goes to syslog, its record
        and the user's spool log (the spool dir is shared)."""
        import pwd

        from vtorque.job.records import report

        try:
            owner_uid = pwd.getpwnam(self._hook_user).pw_uid if self._hook_user else None
        except KeyError:
            owner_uid = None
        node = f"node {environ.get('PBS_NODENUM', '?')} of the job"
        report(
            f"{node} cannot start its VMs, so it refuses to join (Torque requeues the job): {err}",
            state_dir=self.config.state_dir,
            job_id=job_id,
            spool_job_dir=os.path.join(self.config.spool_dir, self.spool_key(job_id)),
            owner_uid=owner_uid,
        )

    def job_nodes(self, job_id, tries=QSTAT_TRIES):
        """((host, slots), ...) of a running job from pbs_server, in allocation order (the MS's
        node file's): its exec_host as `qstat -f -1 JOBID` prints it."""
        problem = "no answer"
        for attempt in range(tries):
            if attempt:
                time.sleep(1)
            try:
                done = _run([self.torque.qstat, "-f", "-1", job_id])
            except (OSError, subprocess.SubprocessError) as err:
                problem = f"{self.torque.qstat}: {err}"
                continue
            if done.returncode != 0:
                problem = f"{self.torque.qstat} exit {done.returncode}: {done.stderr.strip()[-200:]}"
                if UNKNOWN_JOB in done.stderr:
                    break
                continue
            exec_host = exec_host_of(done.stdout)
            if exec_host is None:
                problem = f"{self.torque.qstat} -f shows no exec_host for {job_id}"
                continue
            return parse_exec_host(exec_host)
        raise VTorqueError(f"cannot learn the nodes of job {job_id} from pbs_server: {problem}")

    @staticmethod
    def hook_job_id(args, environ):
        return args[0]

    @classmethod
    def failure_exit(cls, name, data=None):
        """The exit code of a hook that could not do its work: a failed start requeues. A
        sister's prologue.parallel refuses the join only where it starts VMs (`data`: the
        config document, if it could be read, says torque.start)."""
        event = EVENTS[name][0]
        if event is Event.JOIN and start_mode(data) != "each_node":
            return 0
        return cls.exit_code(event, Outcome.REQUEUE)

    @staticmethod
    def exit_code(event, outcome):
        """What the hook exits with: only a prologue's code matters to pbs_mom; a failing
        epilogue.precancel marks the node down, and so does a failing prologue.parallel, which
        fails only where a sister starts its own VMs and could not (each_node)."""
        if event is Event.START:
            return START_EXIT[outcome]
        return JOIN_EXIT[outcome] if event is Event.JOIN else 0

    def hook_exit(self, job, outcome):
        """A sister whose start failed on this node once too often says ABORT, as the MS would;
        but only the MS can abort a job, and the MS does not know: the sister refuses the join
        instead (this node is offline already, so the requeue cannot land here again). A
        refused request is the MS's to abort (it admits the same request)."""
        if job.event is Event.JOIN and outcome is Outcome.ABORT and job.here:
            from vtorque.job.records import load_record

            record = load_record(self.config.state_dir, job.job_id) or {}
            if job.here in record.get("start_failures", ()):
                return JOIN_EXIT[Outcome.REQUEUE]
        return self.exit_code(job.event, outcome)

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
        if self.per_node and os.geteuid() == 0:  # only root may read it
            from vtorque.job.keys import read_secret

            try:
                read_secret(self.torque.key_secret)
            except VTorqueError as err:
                problems.append(f"torque.key_secret: {err}")
        return problems

    def offline(self, reason):
        """Take this node offline with the reason as its note; None, or why that failed. The
        node is the one this hook's job named (each_node), else this host's name."""
        node = _hook_node or socket.gethostname()
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

    def key_secret(self):
        """each_node: the site secret every node derives the job's keys from (job.keys)."""
        if not self.per_node:
            return None
        from vtorque.job.keys import read_secret

        return read_secret(self.torque.key_secret)

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


_hook_node = None  # the node this process's hook runs for (each_node), as job_from_hook found it


def exec_host_of(qstat_output):
    """The exec_host value of `qstat -f` output (continuation lines joined: without -1 qstat
    wraps long values onto lines that start with a tab), or None when it shows none."""
    lines = qstat_output.splitlines()
    for index, line in enumerate(lines):
        match = EXEC_HOST_RE.match(line)
        if match:
            value = match.group(1).strip()
            for more in lines[index + 1 :]:
                if not more.startswith("\t"):
                    break
                value += more.strip()
            return value or None
    return None


def parse_exec_host(value):
    """((host, slots), ...) of an exec_host attribute in first-appearance order, as
    read_nodefile counts the node file pbs_mom writes from it: Torque 6.1's `vm/0-1+n2/0-1`
    (a host once, its slot indices as ranges: `0-3,5`), or the older `vm/0+vm/1+n2/0`."""
    slots = {}
    for part in value.strip().split("+"):
        host, slash, indices = part.strip().partition("/")
        count = _range_count(indices) if slash else None
        if not host or count is None:
            raise VTorqueError(f"exec_host {value!r} is not in Torque's host/slots+... format")
        slots[host] = slots.get(host, 0) + count
    return tuple(slots.items())


def _range_count(text):
    """How many indices `0-1,3` names (Torque's range string); None when it is not one."""
    count = 0
    for item in text.split(","):
        match = re.fullmatch(r"\s*(\d+)(?:-(\d+))?\s*", item)
        if not match:
            return None
        low, high = int(match.group(1)), int(match.group(2) or match.group(1))
        if high < low:
            return None
        count += high - low + 1
    return count


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
