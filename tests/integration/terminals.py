"""A user's terminal for interactive-job tests: a program started on a pty of its own, read
until a pattern shows up."""

import os
import pty
import re
import select
import time


def spawn_on_pty(argv, env, cwd):
    """`argv` as the session leader of a new pty: (pid, the pty's master fd)."""
    pid, fd = pty.fork()
    if pid == 0:  # the user's terminal session
        os.chdir(cwd)
        os.execvpe(argv[0], argv, env)  # noqa: S606 - argv list
    return pid, fd


def read_pty(fd, until, timeout, seen=b""):
    """Output of the pty `fd` up to `until` (a regex on bytes), or to EOF when `until` is None."""
    deadline = time.monotonic() + timeout
    while until is None or not re.search(until, seen):
        assert time.monotonic() < deadline, f"no {until!r} in {timeout} s: {seen.decode(errors='replace')}"
        ready, _, _ = select.select([fd], [], [], 1)
        if not ready:
            continue
        try:
            chunk = os.read(fd, 4096)
        except OSError:  # EIO: the other side closed
            chunk = b""
        if not chunk:
            assert until is None, f"EOF before {until!r}: {seen.decode(errors='replace')}"
            return seen
        seen += chunk
    return seen
