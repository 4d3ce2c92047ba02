"""Wait for a guest's SSH with overlapping attempts.

A connection made before the guest's network is up can stall until its ConnectTimeout (QEMU's
user-mode NAT accepts it on the host and then never completes it to the guest), so one attempt
at a time loses up to a whole timeout per stalled attempt: measured 7.5 s of an 11.2 s wait
on the tiny guest. A new attempt starts every `every` seconds while older ones still run, at
most `most` at once (enough to cover the 5 s a stalled ssh attempt waits), each killed after
`lifetime`; the first to succeed wins, at most `every` after the guest could answer.

`answers()`, looked at every `look_every` seconds (for SSH: `ssh_banner`, one TCP connection and
no process), starts an attempt at once the first time it says yes: an ssh attempt costs a process
and a key exchange on the host's cores, which the guests' emulation needs, so attempts stay one a
second, and the one that can succeed starts within a tenth of a second of the guest's SSH server
(the next attempt in the schedule is up to a second away).

Never behind QEMU's user-mode port forward (`network.mode: user`): there every connection is
accepted on the host while the guest cannot take it yet, and QEMU keeps retrying each one
towards the guest after the caller gave up, so looks made while the guest boots reach its SSH
server all at once when it starts; OpenSSH then drops new connections (MaxStartups). That is
how we read the one failure seen: the Debian guest (a 37 s boot, ~120 looks) accepted the wait's
ssh and closed the next one ("Connection closed by remote host").
"""

import socket
import subprocess
import time


def until_ok(
    command, *, deadline, every=1.0, most=6, lifetime=20.0, check=lambda: None, answers=None, look_every=0.1
):
    """(True, "") once an attempt of `command` exits 0, or (False, the last failure's stderr)
    at the monotonic `deadline`. `check()` runs every `every` seconds and may raise to stop.
    No attempt outlives the call."""
    running, last, next_start, next_look = [], "", 0.0, 0.0
    try:
        while True:
            now = time.monotonic()
            for attempt, began in list(running):
                if attempt.poll() is None and now - began < lifetime:
                    continue
                running.remove((attempt, began))
                if attempt.returncode == 0:
                    attempt.communicate()
                    return True, ""
                if attempt.returncode is None:
                    attempt.kill()
                    last = f"no answer in {lifetime:g}s"
                last = attempt.communicate()[1].strip() or last
            if now >= deadline:
                return False, last
            if answers is not None and now >= next_look:
                next_look = now + look_every
                if answers():
                    answers, next_start = None, now  # once: later attempts keep the schedule
            if now >= next_start:
                check()
                next_start = now + every
                if len(running) < most:
                    running.append((_start(command), now))
            time.sleep(0.05)
    finally:
        for attempt, _ in running:
            attempt.kill()
            attempt.communicate()


def _start(command):
    return subprocess.Popen(
        command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )


def ssh_banner(host, port, timeout=0.2):
    """Whether an SSH server answers on host:port now: its version line arrives within `timeout`."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            return sock.recv(64).startswith(b"SSH-")
    except OSError:
        return False
