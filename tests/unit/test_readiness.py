"""Overlapping readiness attempts: a stalled attempt does not hold up a later one, a failing
command reports its last reason, and no attempt outlives the wait."""

import socket
import subprocess
import sys
import threading
import time
import uuid

import pytest
from vtorque.guest.readiness import ssh_banner, until_ok


def attempt(code):
    """One Python process per attempt, tagged with a unique word so leftovers can be found."""
    tag = f"vtprobe{uuid.uuid4().hex}"
    return [sys.executable, "-c", code, tag], tag


def leftovers(tag):
    return subprocess.run(["pgrep", "-f", tag], capture_output=True, text=True, check=False).stdout.split()


def in_seconds(seconds):
    return time.monotonic() + seconds


def test_a_later_attempt_succeeds_while_an_earlier_one_still_stalls(tmp_path):
    flag = tmp_path / "up"
    # Until the flag exists, an attempt stalls far beyond the deadline, like a connection made
    # before the guest's network was up; after, attempts succeed at once.
    stall = f"import os, sys, time; os.path.exists({str(flag)!r}) and sys.exit(0); time.sleep(60)"
    command, tag = attempt(stall)
    threading.Timer(1.5, flag.touch).start()
    assert until_ok(command, deadline=in_seconds(15), every=0.5) == (True, "")
    assert leftovers(tag) == []


def test_failures_until_the_deadline_give_the_last_reason():
    refused, _ = attempt("import sys; sys.stderr.write('Connection refused\\n'); sys.exit(255)")
    assert until_ok(refused, deadline=in_seconds(1.5), every=0.2) == (False, "Connection refused")
    hung, tag = attempt("import time; time.sleep(60)")
    result = until_ok(hung, deadline=in_seconds(2), every=0.2, most=2, lifetime=0.5)
    assert result == (False, "no answer in 0.5s")
    assert leftovers(tag) == []


def test_a_check_that_raises_stops_the_wait_and_its_attempts():
    hung, tag = attempt("import time; time.sleep(60)")
    calls = []

    def check():
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("cancelled")

    with pytest.raises(RuntimeError, match="cancelled"):
        until_ok(hung, deadline=in_seconds(30), every=0.2, check=check)
    assert leftovers(tag) == []


def test_the_attempt_starts_as_soon_as_the_server_answers_not_at_the_next_in_the_schedule(tmp_path):
    flag = tmp_path / "up"
    command, tag = attempt(f"import os, sys; sys.exit(0 if os.path.exists({str(flag)!r}) else 255)")
    threading.Timer(0.5, flag.touch).start()
    # The first attempt fails at once and the next is 10 s away: only the look can make it.
    assert until_ok(command, deadline=in_seconds(5), every=10, answers=flag.exists) == (True, "")
    assert leftovers(tag) == []


def _server(behaviour):
    """A loopback TCP server that serves one connection with `behaviour(conn)`; its port."""
    listener = socket.create_server(("127.0.0.1", 0))

    def serve():
        with listener:
            conn, _ = listener.accept()
            with conn:
                behaviour(conn)

    threading.Thread(target=serve, daemon=True).start()
    return listener.getsockname()[1]


def test_only_a_server_that_sends_an_ssh_version_line_answers():
    assert ssh_banner("127.0.0.1", _server(lambda conn: conn.sendall(b"SSH-2.0-dropbear\r\n")))
    assert not ssh_banner("127.0.0.1", _server(lambda conn: conn.sendall(b"HTTP/1.0 400\r\n")))
    assert not ssh_banner("127.0.0.1", _server(lambda conn: None))  # accepted, then closed (user-mode NAT)
    began = time.monotonic()
    assert not ssh_banner("127.0.0.1", _server(lambda conn: time.sleep(2)), timeout=0.2)  # accepted, silent
    assert time.monotonic() - began < 1
    with socket.create_server(("127.0.0.1", 0)) as closed:
        port = closed.getsockname()[1]
    assert not ssh_banner("127.0.0.1", port)  # nothing listens
