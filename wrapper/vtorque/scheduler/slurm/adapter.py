"""Slurm 22.05 behind vTorque's seam: slurmd's Prolog/Epilog environment, their exit codes,
and the commands vTorque uses on a node (docs/slurm.md is the contract).

`slurm-prolog` and `slurm-epilog` run on every node of the job (PrologFlags=Alloc), as root,
with no arguments and no PATH: the job comes from SLURM_JOB_ID, SLURM_NODELIST (expanded by
`scontrol show hostnames`), SLURM_JOB_CPUS_PER_NODE and SLURMD_NODENAME. Each node starts
and tears down its own VMs (`AllocatedJob.here`); the first node of the allocation, where the
batch script runs, is the primary. Slurm never interrupts a Prolog, so a start polls the
job's state (`start_abandoned`).
"""

import os
import re
import socket
import subprocess

from vtorque.errors import SubmitError, VTorqueError
from vtorque.scheduler import base
from vtorque.scheduler.base import AllocatedJob, Event, Outcome
from vtorque.scheduler.base import run_command as _run

EVENTS = {"slurm-prolog": "prolog", "slurm-epilog": "epilog"}
PROLOG_EXIT = {
    Outcome.OK: 0,
    # The user's fault: never drain a node for it. The job runs, and its wrapper (job-run)
    # prints the reason to the job's stderr and exits 1.
    Outcome.ABORT: 0,
    Outcome.REQUEUE: 1,  # after the drain: Slurm requeues the job held
    Outcome.CANCELLED: 0,
}
JOB_ID_RE = re.compile(r"[0-9]+")
ARRAY_ELEMENT_RE = re.compile(r"([0-9]+)_([0-9]+)")  # 42_3: the array's id, the element's index
# vsbatch starts the Comment of an array VM job with this: slurmd gives a Prolog the element's
# own SLURM_JOB_ID and its Comment, not its array's id, which `scontrol show job` then tells.
ARRAY_MARK = "vtorque-array"
# What `scontrol show job` says of a job whose current attempt may still start: during the
# Prolog it is CONFIGURING or RUNNING (Reason=Prolog); a cancel makes it COMPLETING, a failed
# Prolog elsewhere PENDING again (requeued).
STARTING_STATES = ("CONFIGURING", "RUNNING")
QUEUED_STATES = ("PENDING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "RESIZING", "SUSPENDED", "SIGNALING")
FINAL_STATES = (
    "COMPLETED",
    "CANCELLED",
    "FAILED",
    "TIMEOUT",
    "NODE_FAIL",
    "PREEMPTED",
    "BOOT_FAIL",
    "DEADLINE",
    "OUT_OF_MEMORY",
)
INVALID_JOB = "Invalid job id"
GUEST_HOSTFILE = "/etc/vtorque/hostfile"  # inside the guests: one line per vCPU, as mpirun reads


class HookUsageError(VTorqueError):
    """The hook was called with an unknown event or with arguments."""


class Adapter(base.Adapter):
    name = "slurm"
    hook_names = tuple(EVENTS)
    per_node = True  # each node starts its own VMs in its own Prolog

    def __init__(self, config):
        self.config = config
        self.slurm = config.slurm

    # --- hooks --------------------------------------------------------------------------
    @staticmethod
    def parse_hook(argv):
        if not argv or argv[0] not in EVENTS or len(argv) > 1:
            raise HookUsageError(
                f"usage: vtorque-hook {{{','.join(EVENTS)}}} (no arguments: slurmd's environment)"
                f", got {argv[:3]}"
            )
        return argv[0], []

    @staticmethod
    def hook_job_id(args, environ):
        return environ.get("SLURM_JOB_ID", "")

    @classmethod
    def hook_spool_key(cls, args, environ):
        if environ.get("SLURM_ARRAY_JOB_ID"):
            return environ["SLURM_ARRAY_JOB_ID"]
        if environ.get("SLURM_JOB_COMMENT", "").startswith(ARRAY_MARK):
            return None  # perhaps an element of an array VM job: job_from_hook asks slurmctld
        return cls.hook_job_id(args, environ)

    def job_from_hook(self, name, args, environ):
        job_id, array_id = self._element(environ)
        here = environ.get("SLURMD_NODENAME") or socket.gethostname()
        after = EVENTS[name] == "epilog"
        try:
            hosts = self.hostnames(environ.get("SLURM_NODELIST") or here)
        except VTorqueError:
            if not after:
                raise
            hosts = [here]  # the Epilog still tears down what is on this node
        slots = expand_counts(environ.get("SLURM_JOB_CPUS_PER_NODE", ""), len(hosts))
        primary = hosts[0] == here
        if after:
            event = Event.STOP if primary else Event.LEAVE
        else:
            event = Event.START if primary else Event.JOIN
        uid = environ.get("SLURM_JOB_UID")
        return AllocatedJob(
            event=event,
            job_id=job_id,
            user=environ.get("SLURM_JOB_USER") or _user_of(uid),
            group=_group_of(environ.get("SLURM_JOB_GID")),
            name="",
            script="",
            nodes=tuple(zip(hosts, slots, strict=True)),
            workdir=environ.get("SLURM_JOB_WORK_DIR") or None,
            exit_status=_exit_status(environ.get("SLURM_JOB_EXIT_CODE2")) if after else None,
            requeued=after and self._requeued(job_id),
            here=here,
            array_id=array_id,
        )

    def _element(self, environ):
        """(job id, array id): an array element is `<array>_<index>` everywhere in vTorque, as
        scontrol and squeue spell it; (SLURM_JOB_ID, None) for any other job."""
        job_id = environ.get("SLURM_JOB_ID", "")
        array, index = environ.get("SLURM_ARRAY_JOB_ID"), environ.get("SLURM_ARRAY_TASK_ID")
        if not (array and index) and environ.get("SLURM_JOB_COMMENT", "").startswith(ARRAY_MARK):
            fields = self._show_job(job_id)  # slurmctld's word, not the comment the user may edit
            array, index = fields.get("ArrayJobId"), fields.get("ArrayTaskId")
        if array and index and JOB_ID_RE.fullmatch(array) and JOB_ID_RE.fullmatch(index):
            return f"{array}_{index}", array
        return job_id, None

    def _show_job(self, job_id):
        """This job's `scontrol show job -o` fields; {} when slurmctld cannot tell. The id an
        array was submitted as names every element (one line each): the line whose JobId is
        `job_id` is this one's."""
        return next(
            (fields for fields in self._job_records(job_id) or () if fields.get("JobId") == job_id), {}
        )

    def _job_records(self, job_id):
        """`scontrol show job -o JOB` as one {field: value} per line; [] for a job slurmctld no
        longer knows; None when it could not tell (controller down, timeout, no answer)."""
        try:
            done = self._scontrol("show", "job", "-o", job_id)
        except (OSError, subprocess.SubprocessError):
            return None
        if done.returncode != 0:
            return [] if INVALID_JOB in done.stderr else None
        lines = [line for line in done.stdout.splitlines() if line.strip()]
        # an answer without a job in it says nothing, as before: cannot tell
        return [dict(re.findall(r"(?:^|\s)(\w+)=(\S*)", line)) for line in lines] or None

    @classmethod
    def failure_exit(cls, name, data=None):
        """A hook that could not do its work: a Prolog fails (Slurm drains the node and
        requeues the job held); an Epilog too (Slurm drains the node: VMs may be left)."""
        return 1

    @staticmethod
    def exit_code(event, outcome):
        return PROLOG_EXIT[outcome] if event in (Event.START, Event.JOIN) else 0

    # --- the node and the controller -------------------------------------------------------
    def command_problems(self):
        from vtorque.job.keys import read_secret
        from vtorque.site.config_file import command_problem

        problems = []
        for name in ("sbatch", "salloc", "scontrol", "scancel", "squeue"):
            path = getattr(self.slurm, name)
            problem = command_problem(path)
            if problem:
                problems.append(f"slurm.{name}: {path}: {problem}")
        problems += self._controller_problems()
        if os.geteuid() == 0:  # only root may read it; a user's `config check` cannot tell
            try:
                read_secret(self.slurm.key_secret)
            except VTorqueError as err:
                problems.append(f"slurm.key_secret: {err}")
        return problems

    def _controller_problems(self):
        """What slurmctld runs with must suit vTorque: every node's Prolog at allocation, the
        batch script only once all are done, and a Prolog timeout beyond vTorque's own start
        budget (Slurm kills a Prolog at PrologEpilogTimeout and drains the node)."""
        try:
            done = self._scontrol("show", "config")
        except (OSError, subprocess.SubprocessError) as err:
            return [f"slurm.scontrol: cannot ask slurmctld for its config: {err}"]
        if done.returncode != 0:
            return [f"slurm.scontrol show config failed: {done.stderr.strip()[-200:]}"]
        settings = dict(re.findall(r"^(\w+)\s+=\s*(.*?)\s*$", done.stdout, re.M))
        problems = []
        flags = set(settings.get("PrologFlags", "").replace(" ", "").split(","))
        missing = [flag for flag in ("Alloc", "DeferBatch") if flag not in flags]
        if missing:
            problems.append(
                f"slurm.conf: PrologFlags lacks {','.join(missing)} (has {settings.get('PrologFlags')!r})"
            )
        timeout = re.match(r"(\d+)", settings.get("PrologEpilogTimeout", ""))
        budget = self.config.timeouts.prologue
        if timeout and int(timeout.group(1)) <= budget:
            problems.append(
                f"slurm.conf: PrologEpilogTimeout {timeout.group(1)} is not above timeouts.prologue {budget}:"
                " Slurm would kill a starting Prolog and drain the node"
            )
        return problems

    def key_secret(self):
        """The site secret every node derives the job's keys from (job.keys)."""
        from vtorque.job.keys import read_secret

        return read_secret(self.slurm.key_secret)

    def key_scope(self):
        return os.environ.get("SLURM_CLUSTER_NAME", "")

    def offline(self, reason):
        """Drain this node with vTorque's reason (Slurm keeps it: `sinfo -R`); None, or why not."""
        node = os.environ.get("SLURMD_NODENAME") or socket.gethostname()
        text = f"vtorque: {reason[:200]}"
        done = self._scontrol("update", f"nodename={node}", "state=drain", f"reason={text}")
        return (
            None if done.returncode == 0 else f"scontrol exit {done.returncode}: {done.stderr.strip()[-200:]}"
        )

    def tell_job(self, job_id, reason):
        """The reason on the job itself, where `scontrol show job` shows it (AdminComment)."""
        self._scontrol("update", f"jobid={job_id}", f"AdminComment=vtorque: {reason[:400]}")

    def live_jobs(self):
        """Every job slurmctld has not finished, on any node (a superset is safe for the sweep)."""
        done = _run([self.slurm.squeue, "-h", "-r", "-t", "all", "-o", "%i %T"])  # -r: 42_3, not 42_[1-4]
        if done.returncode != 0:
            raise VTorqueError(
                f"{self.slurm.squeue} failed (exit {done.returncode}): {done.stderr.strip()[-200:]}"
            )
        jobs = (line.split() for line in done.stdout.splitlines() if line.strip())
        return sorted({parts[0] for parts in jobs if len(parts) == 2 and parts[1] not in FINAL_STATES})

    def job_state(self, job_id):
        """JobState from `scontrol show job`; "" for a job slurmctld no longer knows; None
        when it could not tell (controller down, timeout)."""
        return self._job_fields(job_id)[0]

    def _job_fields(self, job_id):
        """(JobState, Reason) as job_state tells them, from the first line."""
        records = self._job_records(job_id)
        if not records:
            return ("" if records == [] else None), None
        return records[0].get("JobState") or None, records[0].get("Reason", "")

    def may_run(self, job_id):
        """Whether slurmctld may still run (or is still ending) `job_id`, or any element of the
        array submitted as `job_id` (one line each); None: cannot tell."""
        records = self._job_records(job_id)
        if not records:
            return None if records is None else False
        states = [fields["JobState"] for fields in records if fields.get("JobState")]
        return any(state not in FINAL_STATES for state in states) if states else None

    def start_abandoned(self, job_id):
        """Whether this attempt will never run: cancelled (COMPLETING), ended, forgotten, or
        requeued after another node's Prolog failed. Unknown (controller busy) is not."""
        state = self.job_state(job_id)
        return state is not None and state not in STARTING_STATES

    def array_may_run(self, array_id, element):
        """`squeue -r -j ARRAY` lists the elements slurmctld still has, one per line."""
        try:
            done = _run([self.slurm.squeue, "-h", "-r", "-t", "all", "-j", array_id, "-o", "%i %T"])
        except (OSError, subprocess.SubprocessError):
            return None
        if done.returncode != 0:
            return False if INVALID_JOB.lower() in done.stderr.lower() else None
        rows = (line.split() for line in done.stdout.splitlines())
        return any(len(row) == 2 and row[0] != element and row[1] not in FINAL_STATES for row in rows)

    @property
    def cancel_poll_seconds(self):
        return self.slurm.cancel_poll_seconds

    def _requeued(self, job_id):
        """In the Epilog: Slurm puts the job back in the queue. After a failed Prolog the job is
        still COMPLETING while the Epilog runs, with Reason=launch_failed_requeued_held."""
        state, reason = self._job_fields(job_id)
        return state in QUEUED_STATES or "requeue" in (reason or "").lower()

    def hostnames(self, nodelist):
        """`scontrol show hostnames`: the expanded node list, in allocation order."""
        try:
            done = self._scontrol("show", "hostnames", nodelist)
        except (OSError, subprocess.SubprocessError) as err:
            raise VTorqueError(f"scontrol show hostnames {nodelist}: {err}") from None
        hosts = done.stdout.split()
        if done.returncode != 0 or not hosts:
            raise VTorqueError(f"scontrol show hostnames {nodelist} failed: {done.stderr.strip()[-200:]}")
        return hosts

    def _scontrol(self, *args):
        return _run([self.slurm.scontrol, *args])

    # --- the job's side ------------------------------------------------------------------
    @staticmethod
    def spool_key(job_id):
        match = ARRAY_ELEMENT_RE.fullmatch(job_id)
        return match.group(1) if match else job_id

    @staticmethod
    def running_job_id(environ):
        array, index = environ.get("SLURM_ARRAY_JOB_ID"), environ.get("SLURM_ARRAY_TASK_ID")
        return f"{array}_{index}" if array and index else environ.get("SLURM_JOB_ID") or None

    @staticmethod
    def check_job_id(job_id):
        if not isinstance(job_id, str) or not JOB_ID_RE.fullmatch(job_id):
            raise SubmitError(f"sbatch printed {job_id!r}, which is not a Slurm job id")
        return job_id

    @staticmethod
    def guest_nodefile(job_id):
        return GUEST_HOSTFILE

    @classmethod
    def guest_environment(cls, environ, job_id, vms=(), start_seconds=None):
        """What a job script inside the rank-0 VM needs of Slurm's job environment: the job's
        identity, the VMs as its nodes (SLURM_JOB_NODELIST, VTORQUE_HOSTFILE for mpirun), and
        VTORQUE_START_SECONDS."""
        keep = (
            "SLURM_JOB_ID",
            "SLURM_JOBID",
            "SLURM_JOB_NAME",
            "SLURM_JOB_USER",
            "SLURM_JOB_UID",
            "SLURM_JOB_PARTITION",
            "SLURM_CLUSTER_NAME",
            "SLURM_SUBMIT_DIR",
            "SLURM_SUBMIT_HOST",
            "SLURM_JOB_ACCOUNT",
            "SLURM_ARRAY_JOB_ID",
            "SLURM_ARRAY_TASK_ID",
            "SLURM_RESTART_COUNT",
        )
        env = {key: environ[key] for key in keep if key in environ}
        hostnames = [vm["hostname"] for vm in vms]
        if hostnames:
            env["SLURM_JOB_NODELIST"] = env["SLURM_NODELIST"] = ",".join(hostnames)
            env["SLURM_JOB_NUM_NODES"] = env["SLURM_NNODES"] = str(len(hostnames))
        env["VTORQUE_HOSTFILE"] = GUEST_HOSTFILE
        env.update(base.start_environment(start_seconds))
        return env

    @staticmethod
    def workdir(environ):
        return None  # the plan's: SLURM_JOB_WORK_DIR as the Prolog saw it


def expand_counts(spec, count):
    """SLURM_JOB_CPUS_PER_NODE ("2(x3),1") as one number per node; missing → 0 each."""
    values = []
    for part in filter(None, spec.split(",")):
        match = re.fullmatch(r"(\d+)(?:\(x(\d+)\))?", part.strip())
        if not match:
            raise VTorqueError(f"SLURM_JOB_CPUS_PER_NODE {spec!r} is not in Slurm's format")
        values += [int(match.group(1))] * int(match.group(2) or 1)
    if not values:
        return [0] * count
    if len(values) != count:
        raise VTorqueError(
            f"SLURM_JOB_CPUS_PER_NODE {spec!r} names {len(values)} nodes, the node list {count}"
        )
    return values


def _exit_status(code2):
    """SLURM_JOB_EXIT_CODE2 "3:0" (code:signal) as the script's exit code, 128+signal if killed."""
    match = re.fullmatch(r"(\d+):(\d+)", code2 or "")
    if not match:
        return None
    code, signal = int(match.group(1)), int(match.group(2))
    return 128 + signal if signal else code


def _user_of(uid):
    import pwd

    try:
        return pwd.getpwuid(int(uid)).pw_name
    except (TypeError, ValueError, KeyError):
        return ""


def _group_of(gid):
    import grp

    try:
        return grp.getgrgid(int(gid)).gr_name
    except (TypeError, ValueError, KeyError):
        return ""
