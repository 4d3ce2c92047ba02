# Copyright: vTorque contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""A job's start on a node and its teardown there, one after the other (flock on
<job_dir>/start.lock).

A start can outlive the runner that began it: Ansible's workers leave the runner's session, and
on another node the module runs on after its SSH connection is gone. Such a start would define
its VMs after the teardown that followed the failure; the teardown waits for it first."""

from __future__ import annotations

import contextlib
import fcntl
import os
import time

LOCK_NAME = "start.lock"
TEARDOWN_WAIT = 60  # seconds: a start that holds it longer is stuck, and the teardown goes on


@contextlib.contextmanager
def starting(job_dir: str):
    """Held by vm_start for all it does on the node."""
    flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(os.path.join(job_dir, LOCK_NAME), flags, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def wait_for_start(job_dir: str, seconds: float = TEARDOWN_WAIT) -> bool:
    """True once no start of the job runs here (or none ever did), False after `seconds`."""
    try:
        fd = os.open(os.path.join(job_dir, LOCK_NAME), os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:  # no start made it, or not a file of ours (a link): nothing to wait for
        return True
    deadline = time.monotonic() + seconds
    try:
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return True
            except BlockingIOError:
                if time.monotonic() > deadline:
                    return False
                time.sleep(0.1)
    finally:
        os.close(fd)
