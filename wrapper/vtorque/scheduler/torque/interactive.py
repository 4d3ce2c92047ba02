"""`vsub -I -vm ...`: an interactive VM job on an unpatched Torque (docs/torque.md, "Interactive
jobs").

`qsub -I -h -x WRAPPER` runs on a pty vsub made, so vsub reads the id qsub prints there
(`qsub: waiting for job ID to start`) while qsub still has a terminal. vsub then publishes the
spool dir and releases the job (vtorque.job.submission.publish_and_release) and relays the
user's terminal both ways, raw, with the window size, until qsub ends. pbs_mom connects the job
to qsub before it runs the prologue, so the start's progress and any failure are printed on
the terminal; the wrapper (`vtorque job-run --interactive`) says when it logs in to the rank-0
VM and with what status the shell ended, which becomes vsub's exit code (qsub's own is 0).

Before that login a Ctrl-C cancels the job (qdel): a real pbs_mom forwards it to no process of
the start. A hang-up cancels it at any time: qsub alone would die and leave the job held, or
running with nobody at its terminal.
"""

import contextlib
import os
import re
import signal
import subprocess
import sys

from vtorque.terminal import copy_window_size, raw_mode, relay, write_all

WAITING = re.compile(rb"qsub: waiting for job (\S+) to start")
LOGGED_IN = re.compile(rb"vtorque: job \S+: logging in to ")
SHELL_EXITED = re.compile(rb"vtorque: job \S+: the shell in \S+ exited with status (\d+)")
CTRL_C = b"\x03"
CTRL_D = b"\x04"
CANCELLED = 130
DID_NOT_START = 1
TAIL_BYTES = 512  # enough for a whole marker line split over reads


class HungUp(Exception):
    """The user's terminal went away (SIGHUP), or vsub was told to end (SIGTERM)."""


class Session:
    """What vsub learns from qsub's terminal, and what it does about it."""

    def __init__(self, publish, qdel, terminal):
        self.publish, self.qdel, self.terminal = publish, qdel, terminal
        self.job_id = None
        self.logged_in = False
        self.shell_status = None
        self.cancelled = False
        self._tail = b""

    def from_qsub(self, data):
        self._tail = (self._tail + data)[-TAIL_BYTES:]
        passed_on = data
        if self.job_id is None:
            found = WAITING.search(self._tail)
            if found:
                self.job_id = found.group(1).decode(errors="replace")
                write_all(self.terminal, data)  # the waiting line first, then what publish says
                self._publish()
                passed_on = b""
        if not self.logged_in and LOGGED_IN.search(self._tail):
            self.logged_in = True
        exited = SHELL_EXITED.search(self._tail)
        if exited:
            self.shell_status = int(exited.group(1))
        return passed_on

    def from_user(self, data):
        if CTRL_C in data and self.job_id is not None and not self.logged_in:
            self.cancel("Ctrl-C before the VMs were ready")
            return data.replace(CTRL_C, b"")
        return data

    def cancel(self, why):
        if self.cancelled or self.job_id is None:
            return
        self.cancelled = True
        self.say(f"cancelling job {self.job_id} ({why}): qdel")
        subprocess.run([*self.qdel, self.job_id], capture_output=True, check=False)

    def say(self, text):
        with contextlib.suppress(OSError):  # a terminal that hung up hears nothing
            write_all(self.terminal, f"\r\nvsub: {text}\r\n".encode())

    def _publish(self):
        from vtorque.errors import SubmitError

        try:
            self.publish(self.job_id)
        except SubmitError as err:  # the job was deleted again; qsub says so and ends
            self.cancelled = True
            self.say(str(err))

    def exit_code(self, qsub_status):
        if self.cancelled:
            return CANCELLED
        if self.shell_status is not None:
            return self.shell_status
        if self.logged_in or self.job_id is None:  # or qsub refused the job itself
            return qsub_status
        self.say(
            f"job {self.job_id} ended before its VMs were ready (the reason is above;"
            f" `vtorque jobs show {self.job_id}` on its first node)"
        )
        return DID_NOT_START


def run(qsub_argv, publish, qdel):
    """Run `qsub_argv` (qsub -I -h ... -x WRAPPER) on a pty of its own with the user's terminal
    relayed; `publish(job_id)` is called once qsub names the job. vsub's exit code."""
    import pty

    pid, master = pty.fork()
    if pid == 0:  # pragma: no cover - the child execs at once
        try:
            os.execv(qsub_argv[0], qsub_argv)  # noqa: S606 - argv list, no shell
        finally:
            os._exit(127)
    session = Session(publish, qdel, sys.stdout.fileno())
    stdin = sys.stdin.fileno()
    copy_window_size(stdin, master)

    def hang_up(*_):  # the kernel sends a hang-up twice (session leader, foreground group)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        raise HungUp()

    signal.signal(signal.SIGWINCH, lambda *_: copy_window_size(stdin, master))
    signal.signal(signal.SIGHUP, hang_up)
    signal.signal(signal.SIGTERM, hang_up)

    def on_data(source, data):
        return session.from_qsub(data) if source == master else session.from_user(data)

    stdin_is_terminal = os.isatty(stdin)  # asked now: a terminal that hung up is none any more

    def on_eof(fd):
        if fd == stdin and not stdin_is_terminal:  # a file or a pipe ended: the far shell reads EOF
            write_all(master, CTRL_D)
        elif fd in (stdin, session.terminal):  # the user's terminal is gone, with or without SIGHUP
            hang_up()

    try:
        with raw_mode(stdin):
            relay({stdin: master, master: session.terminal}, until=master, on_data=on_data, on_eof=on_eof)
    except HungUp:
        session.cancel("the terminal hung up")
        os.kill(pid, signal.SIGHUP)
    _, status = os.waitpid(pid, 0)
    os.close(master)
    code = os.waitstatus_to_exitcode(status)
    return session.exit_code(code if code >= 0 else 128 - code)
