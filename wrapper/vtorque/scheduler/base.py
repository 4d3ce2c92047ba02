"""The seam between vTorque and a batch system: what a hook is told, and what vTorque answers.

Everything outside `vtorque.scheduler` works in these words: the AllocatedJob a hook delivers
(who, on which nodes, with which exit status), the hook's Event, and the Outcome of a start.
Each batch system's adapter (`scheduler.torque`) turns its own argv, environment, exit codes
and node commands into them and back.
"""

import subprocess
from dataclasses import dataclass
from enum import Enum


class Event(Enum):
    START = "start"  # the primary node, before the job: start the VMs of every node
    JOIN = "join"  # another node of the job, before it
    STOP = "stop"  # the primary node, after the job: every VM and file of it goes, on every node
    LEAVE = "leave"  # another node, after the job
    CANCEL = "cancel"  # the owner deletes a starting or running job (runs as the owner)


class Outcome(Enum):
    OK = "ok"  # the VMs run, or there was nothing to do
    ABORT = "abort"  # the job cannot run (its request, or too many failed starts): end it
    REQUEUE = "requeue"  # an infrastructure failure: the node is offline, run the job elsewhere
    CANCELLED = "cancelled"  # the job was deleted while its VMs started


@dataclass(frozen=True)
class AllocatedJob:
    event: Event
    job_id: str
    user: str
    group: str
    name: str
    script: str  # the batch system's copy of the job script
    nodes: tuple  # (host, slots) in allocation order, primary first; () where none is told
    workdir: str | None
    exit_status: int | None = None  # after the job: the batch system's status for it
    requeued: bool = False  # after the job: the batch system puts it back in the queue
    # The node this hook runs on, where each node starts and ends its own VMs in its own hook
    # (Slurm; Torque with torque.start: each_node); None where the primary node's hook does it
    # for every node (Torque's default).
    here: str | None = None
    # An array job's element shares the spool dir vsub made under the array's id (Torque's
    # 42[].head for 42[3].head, Slurm's 42 for 42_3); None: the job's own id names it.
    array_id: str | None = None

    @property
    def spool_key(self):
        return self.array_id or self.job_id

    @property
    def primary(self):
        return self.event in (Event.START, Event.STOP, Event.CANCEL)


class Adapter:
    """What every scheduler adapter offers beyond its own hooks; the defaults are Torque's
    way (one primary hook for every node, fresh keys, cancels flagged by a hook)."""

    per_node = False  # True: each node's own hook starts its own VMs (AllocatedJob.here)
    cancel_poll_seconds = None  # how often a start asks the batch system whether it is wanted

    @staticmethod
    def spool_key(job_id):
        """The spool dir name of `job_id` (an array element's is its array's)."""
        return job_id

    @classmethod
    def hook_spool_key(cls, args, environ):
        """The spool dir name a hook's job would have, for the bare-metal fast path; None when
        only the slow path can tell (then the job is treated as a possible VM job)."""
        return cls.spool_key(cls.hook_job_id(args, environ))

    @staticmethod
    def running_job_id(environ):
        """The job's own id as its batch script sees it (what hooks call the job), or None."""
        return None

    def array_may_run(self, array_id, element):
        """Whether another element of the array may still run (True), none (False), or None
        when the batch system could not tell; the last element's end removes the spool dir."""
        return None

    def key_secret(self):
        """Bytes every node derives the job's keys from, or None: fresh keys per start."""
        return None

    def hook_exit(self, job, outcome):
        """The exit code of `job`'s hook after the runtime's `outcome` (adapters may look closer)."""
        return self.exit_code(job.event, outcome)

    def key_scope(self):
        return ""

    def start_abandoned(self, job_id):
        """Whether the batch system no longer wants this start (polled every cancel_poll_seconds)."""
        return False

    def tell_job(self, job_id, reason):
        """Put a failed start's reason on the job where the batch system shows it, if it can."""


def start_environment(start_seconds):
    """VTORQUE_START_SECONDS for the job in its VM: the seconds its start took (the record's
    `prologue` phase), so a job can account for the walltime its VMs' boot used; nothing when
    the start did not say (a vms.json written before it did)."""
    return {} if start_seconds is None else {"VTORQUE_START_SECONDS": str(start_seconds)}


def run_command(command, timeout=30):
    """A batch system's command from a hook: captured text, no stdin, never raising on exit."""
    return subprocess.run(
        command, capture_output=True, text=True, timeout=timeout, check=False, stdin=subprocess.DEVNULL
    )
