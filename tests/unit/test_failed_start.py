"""What a prologue does after its VMs failed to start: offline the node and requeue, unless
that would loop (pbs_sched requeues a failing job forever, docs/torque.md): then abort."""

import json
import os
import socket
import stat
from types import SimpleNamespace

import pytest
from vtorque import scheduler
from vtorque.job.records import load_record
from vtorque.runtime import prologue
from vtorque.scheduler.base import Outcome
from vtorque.site.config import parse_config

NODE = socket.gethostname()


def pbsnodes(tmp_path, exit_code):
    """A pbsnodes that records its argv and exits with `exit_code`."""
    log, script = tmp_path / "pbsnodes.log", tmp_path / "pbsnodes"
    script.write_text(f'#!/bin/sh\necho "$@" >> {log}\necho "pbsnodes: refused" >&2\nexit {exit_code}\n')
    script.chmod(0o755)
    return script, log


def fail_start(tmp_path, exit_code=0, attempts=2, job_id="7.head"):
    script, log = pbsnodes(tmp_path, exit_code)
    text = (
        f"state_dir: {tmp_path / 'state'}\ntorque: {{pbsnodes: {script}}}\n"
        f"limits: {{start_attempts: {attempts}}}\n"
    )
    config = parse_config(text, "/etc/vtorque/test.yml")
    told = []
    code = prologue._after_failed_start(
        SimpleNamespace(job_id=job_id),
        config,
        NODE,
        "vm-0 did not accept SSH",
        told.append,
        scheduler.for_config(config),
    )
    return code, load_record(config.state_dir, job_id), log, told


def test_on_slurm_the_first_failure_drains_the_node_with_the_reason_and_tells_the_job(tmp_path, monkeypatch):
    script, log = pbsnodes(tmp_path, 0)  # records its argv: here it plays scontrol
    config = parse_config(
        f"scheduler: slurm\nstate_dir: {tmp_path / 'state'}\nslurm: {{scontrol: {script}}}\n", "x.yml"
    )
    monkeypatch.setenv("SLURMD_NODENAME", "n7")
    told = []
    code = prologue._after_failed_start(
        SimpleNamespace(job_id="42"),
        config,
        "n7",
        "vm-0 did not accept SSH",
        told.append,
        scheduler.for_config(config),
    )
    assert code == Outcome.REQUEUE
    assert log.read_text().splitlines() == [
        "update nodename=n7 state=drain reason=vtorque: vm-0 did not accept SSH",
        "update jobid=42 AdminComment=vtorque: start failed on n7: vm-0 did not accept SSH",
    ]
    assert load_record(config.state_dir, "42")["state"] == "requeued"


def test_the_first_failure_offlines_the_node_with_the_reason_and_requeues(tmp_path):
    code, record, log, told = fail_start(tmp_path)
    assert code == Outcome.REQUEUE
    assert (record["state"], record["start_failures"]) == ("requeued", [NODE])
    assert log.read_text() == f"-o -N vtorque: vm-0 did not accept SSH {NODE}\n"
    assert "requeued" in told[-1]


def test_a_second_failure_on_the_same_node_aborts_instead_of_looping(tmp_path):
    fail_start(tmp_path, attempts=5)
    code, record, _, told = fail_start(tmp_path, attempts=5)
    assert code == Outcome.ABORT and record["state"] == "aborted"
    assert f"failed to start on {NODE} before" in record["reason"]
    assert "did not accept SSH" in record["reason"]
    assert "aborted, not requeued" in told[-1]


def test_start_attempts_caps_the_failures_anywhere(tmp_path):
    code, record, _, _ = fail_start(tmp_path, attempts=1)
    assert code == Outcome.ABORT
    assert "failed to start 1 times (limits.start_attempts)" in record["reason"]


def test_a_node_that_cannot_be_taken_offline_aborts_the_job_with_pbsnodes_words(tmp_path):
    code, record, log, told = fail_start(tmp_path, exit_code=1)
    assert code == Outcome.ABORT and log.exists()
    assert "could not be taken offline (" in record["reason"]
    assert "pbsnodes exit 1: pbsnodes: refused)" in record["reason"]
    assert any(f"could not take {NODE} offline" in line for line in told)


def test_records_and_their_dirs_get_their_modes_under_pbs_moms_umask(tmp_path):
    """pbs_mom's umask 0077 made records/owner 0700 and shut the owners out of their copies."""
    old = os.umask(0o077)
    try:
        fail_start(tmp_path)
    finally:
        os.umask(old)
    state = tmp_path / "state"
    modes = {name: stat.S_IMODE((state / name).stat().st_mode) for name in ("", "records", "records/owner")}
    assert modes == {"": 0o755, "records": 0o711, "records/owner": 0o711}
    assert json.loads((state / "records" / "7.head.json").read_text())["state"] == "requeued"


@pytest.fixture(autouse=True)
def quiet_syslog(monkeypatch):
    monkeypatch.setattr("syslog.syslog", lambda *args: None)
