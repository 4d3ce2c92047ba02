"""The seam between vTorque and a batch system: what a hook is told, and what vTorque answers.

Everything outside `vtorque.scheduler` works in these words: the AllocatedJob a hook delivers
(who, on which nodes, with which exit status), the hook's Event, and the Outcome of a start.
Each batch system's adapter (`scheduler.torque`) turns its own argv, environment, exit codes
and node commands into them and back.
"""

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

    @property
    def primary(self):
        return self.event in (Event.START, Event.STOP, Event.CANCEL)
