"""Cancelling a job: the owner's side (the batch system's cancel hook, e.g. Torque's
epilogue.precancel, run as the job owner) and the one check a starting prologue polls.

The owner's side can only touch the owner's own files: it leaves a flag in the spool dir and
ends the job's SSH session. The prologue stops starting once it sees the flag, or once the
job's record says its epilogue has begun.
"""

import os
import signal
import time

from vtorque.errors import VTorqueError
from vtorque.job.records import load_record
from vtorque.owner_side import owner_side

CANCELLED_FLAG = "cancelled"
PID_FILE = "jobrun.pid"  # the job's `vtorque job-run`, in the spool dir
STOPPED = ("stopping", "ended", "teardown failed")  # record states an epilogue leaves
FLAG_POLL_SECONDS = 1.0  # how often a starting prologue looks for the flag (a fork per look)


def cancel(job, config):
    """As the job owner: tell a prologue still starting the VMs to stop, and end the job's SSH
    session now, so the job ends promptly; root's epilogue then tears the VMs down."""
    spool = os.path.join(config.spool_dir, job.spool_key)
    try:
        flags = os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW
        os.close(os.open(os.path.join(spool, CANCELLED_FLAG), flags, 0o644))
    except OSError:
        pass  # no spool dir: nothing is starting
    try:
        with open(os.path.join(spool, PID_FILE), encoding="ascii") as handle:
            pid = int(handle.read().strip())
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            if b"job-run" not in handle.read():
                return
        os.kill(pid, signal.SIGTERM)
    except (OSError, ValueError):
        pass


class Cancellation:
    """`cancelled()` for a starting prologue: the owner's flag (only its existence is read, as
    the owner), the job's epilogue having begun, or, where the batch system never interrupts a
    start (Slurm), its own word that it no longer wants this attempt (`adapter.start_abandoned`,
    asked every `adapter.cancel_poll_seconds`). A flag an earlier attempt of the same job id
    left is removed first."""

    def __init__(self, config, job_id, spool, owner_uid, adapter=None):
        self.state_dir, self.job_id, self.owner_uid = config.state_dir, job_id, owner_uid
        self.flag = os.path.join(spool, CANCELLED_FLAG)
        _flag_raised(self.flag, clear=True, owner_uid=owner_uid)
        self.seen, self.looked, self.asked = False, 0.0, 0.0
        self.adapter = adapter if adapter is not None and adapter.cancel_poll_seconds else None

    def __call__(self, fresh=False):
        """`fresh` before a decision; polls may see the flag up to FLAG_POLL_SECONDS late."""
        now = time.monotonic()
        if not self.seen and (fresh or now - self.looked >= FLAG_POLL_SECONDS):
            self.looked = now
            try:
                self.seen = _flag_raised(self.flag, owner_uid=self.owner_uid)
            except VTorqueError:
                pass
        if not self.seen and self.adapter and (fresh or now - self.asked >= self.adapter.cancel_poll_seconds):
            self.asked = now
            self.seen = self.adapter.start_abandoned(self.job_id)
        return self.seen or epilogue_began(self.state_dir, self.job_id)


def epilogue_began(state_dir, job_id):
    return (load_record(state_dir, job_id) or {}).get("state") in STOPPED


@owner_side
def _flag_raised(path, *, owner_uid, clear=False):
    """Whether the flag is in the owner's spool dir; `clear` removes it (unlink follows no link)."""
    if not os.path.lexists(path):
        return False
    if clear:
        os.unlink(path)
        return False
    return True
