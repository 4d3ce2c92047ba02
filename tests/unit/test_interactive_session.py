"""What vsub -I reads on qsub's terminal and does about it (vtorque.scheduler.torque.interactive),
without a batch system: the markers split across reads, Ctrl-C before and after the login."""

import os

from vtorque.scheduler.torque.interactive import CANCELLED, DID_NOT_START, Session


class Calls:
    def __init__(self):
        self.published = []

    def publish(self, job_id):
        self.published.append(job_id)


def session(tmp_path, calls):
    log = tmp_path / "qdel.log"
    qdel = tmp_path / "qdel"
    qdel.write_text(f'#!/bin/sh\necho "$@" >> {log}\n')
    qdel.chmod(0o755)
    read, write = os.pipe()
    return Session(calls.publish, [str(qdel)], write), log, read


def test_the_job_is_published_once_when_qsub_names_it_even_split_over_reads(tmp_path):
    calls = Calls()
    s, _, terminal = session(tmp_path, calls)
    assert s.from_qsub(b"qsub: waiting for jo") == b"qsub: waiting for jo"
    assert s.from_qsub(b"b 42.head to start\r\n") == b""  # written by the session, before publishing
    assert s.from_qsub(b"qsub: job 42.head ready\r\n") == b"qsub: job 42.head ready\r\n"
    assert calls.published == ["42.head"]
    assert os.read(terminal, 100) == b"b 42.head to start\r\n"


def test_ctrl_c_before_the_login_cancels_the_job_and_after_it_is_the_shell_s(tmp_path):
    calls = Calls()
    s, log, _ = session(tmp_path, calls)
    s.from_qsub(b"qsub: waiting for job 7.head to start\r\n")
    assert s.from_user(b"ab\x03") == b"ab"
    assert log.read_text() == "7.head\n" and s.exit_code(0) == CANCELLED
    s2, log2, _ = session(tmp_path / "..", Calls())
    s2.from_qsub(b"qsub: waiting for job 8.head to start\r\nvtorque: job 8.head: logging in to n1-vm0 (")
    assert s2.from_user(b"\x03") == b"\x03"
    assert not log2.exists() or "8.head" not in log2.read_text()


def test_the_exit_code_is_the_shell_s_or_says_the_start_failed(tmp_path):
    s, _, _ = session(tmp_path, Calls())
    s.from_qsub(b"qsub: waiting for job 9.head to start\r\n")
    assert s.exit_code(0) == DID_NOT_START  # no login: the start failed
    s.from_qsub(b"vtorque: job 9.head: logging in to n1-vm0 (exit the shell to end the job)\r\n")
    assert s.exit_code(0) == 0
    s.from_qsub(b"vtorque: job 9.head: the shell in n1-vm0 exited with status 7\r\n")
    assert s.exit_code(0) == 7
