"""The Slurm adapter reads slurmd's Prolog/Epilog environment as the reference measured it
(no arguments, no PATH, SLURM_NODELIST compressed, CPUs as "2(x2)") and answers in Slurm's
exit codes: a user's invalid request never drains a node."""

import os

import pytest
from vtorque.scheduler.base import Event, Outcome
from vtorque.scheduler.slurm import adapter as slurm
from vtorque.site.config import parse_config

SCONTROL = """#!/bin/sh
echo "$@" >> {log}
case "$1 $2" in
  "show hostnames") echo "$3" | tr ',' '\\n' | sed 's/^n\\[1-2\\]$/n1\\nn2/' ;;
  "show job") echo "JobId=$4 JobName=x JobState={state} Reason={reason}" ;;
esac
"""


@pytest.fixture
def adapter(tmp_path):
    def make(state="RUNNING", reason="Prolog"):
        log, script = tmp_path / "scontrol.log", tmp_path / "scontrol"
        script.write_text(SCONTROL.format(log=log, state=state, reason=reason))
        script.chmod(0o755)
        config = parse_config(f"scheduler: slurm\nslurm: {{scontrol: {script}}}\n", "x.yml")
        return slurm.Adapter(config)

    return make


def prolog_env(node, **extra):
    env = {
        "SLURM_JOB_ID": "12",
        "SLURM_JOB_USER": "root",
        "SLURM_JOB_UID": "0",
        "SLURM_JOB_GID": "0",
        "SLURM_NODELIST": "n[1-2]",
        "SLURM_JOB_CPUS_PER_NODE": "3(x2)",
        "SLURMD_NODENAME": node,
        "SLURM_JOB_WORK_DIR": "/home/u/run",
    }
    return {**env, **extra}


def test_every_node_s_prolog_starts_its_own_vms_and_the_first_node_is_the_primary(adapter):
    a = adapter()
    first = a.job_from_hook("slurm-prolog", [], prolog_env("n1"))
    other = a.job_from_hook("slurm-prolog", [], prolog_env("n2"))
    assert (first.event, first.here, first.nodes) == (Event.START, "n1", (("n1", 3), ("n2", 3)))
    assert (other.event, other.here) == (Event.JOIN, "n2")
    assert (first.job_id, first.user, first.group, first.workdir) == ("12", "root", "root", "/home/u/run")


def test_the_epilog_reads_the_exit_code_and_whether_slurm_requeued_the_job(adapter):
    env = prolog_env("n1", SLURM_JOB_EXIT_CODE2="3:0")
    ended = adapter("COMPLETING").job_from_hook("slurm-epilog", [], env)
    assert (ended.event, ended.exit_status, ended.requeued) == (Event.STOP, 3, False)
    requeued = adapter("PENDING").job_from_hook("slurm-epilog", [], prolog_env("n2"))
    assert (requeued.event, requeued.requeued) == (Event.LEAVE, True)
    # measured: the Epilog after a failed Prolog sees the job still COMPLETING
    failed = adapter("COMPLETING", "launch_failed_requeued_held").job_from_hook(
        "slurm-epilog", [], prolog_env("n1")
    )
    assert failed.requeued is True
    killed = adapter("COMPLETING").job_from_hook(
        "slurm-epilog", [], prolog_env("n1", SLURM_JOB_EXIT_CODE2="0:9")
    )
    assert killed.exit_status == 128 + 9


def test_hooks_take_no_arguments_and_name_their_event():
    assert slurm.Adapter.parse_hook(["slurm-prolog"]) == ("slurm-prolog", [])
    for argv in (["slurm-prolog", "x"], ["prologue"], []):
        with pytest.raises(slurm.HookUsageError, match="slurm-prolog"):
            slurm.Adapter.parse_hook(argv)


def test_a_prolog_never_drains_for_the_user_s_fault_and_fails_only_for_the_infrastructure():
    codes = {outcome: slurm.Adapter.exit_code(Event.START, outcome) for outcome in Outcome}
    assert codes == {Outcome.OK: 0, Outcome.ABORT: 0, Outcome.REQUEUE: 1, Outcome.CANCELLED: 0}
    assert slurm.Adapter.exit_code(Event.JOIN, Outcome.REQUEUE) == 1
    assert slurm.Adapter.exit_code(Event.LEAVE, Outcome.REQUEUE) == 0


@pytest.mark.parametrize(
    ("state", "abandoned"),
    [
        ("RUNNING", False),
        ("CONFIGURING", False),
        ("COMPLETING", True),
        ("PENDING", True),
        ("CANCELLED", True),
    ],
)
def test_a_start_is_abandoned_once_slurm_no_longer_runs_this_attempt(adapter, state, abandoned):
    assert adapter(state).start_abandoned("12") is abandoned


def test_cpus_per_node_in_slurm_s_compressed_form():
    assert slurm.expand_counts("2(x3),1", 4) == [2, 2, 2, 1]
    assert slurm.expand_counts("", 2) == [0, 0]
    with pytest.raises(slurm.VTorqueError, match="names 1 nodes"):
        slurm.expand_counts("4", 2)


def test_the_guest_sees_the_vms_as_the_job_s_nodes_and_nothing_of_the_host():
    environ = {
        "SLURM_JOB_ID": "12",
        "SLURMD_NODENAME": "n1",
        "SLURM_CONF": "/etc/slurm/slurm.conf",
        "HOME": "/x",
    }
    vms = [{"hostname": "n1-vm0"}, {"hostname": "n2-vm0"}]
    env = slurm.Adapter.guest_environment(environ, "12", vms)
    assert env == {
        "SLURM_JOB_ID": "12",
        "SLURM_JOB_NODELIST": "n1-vm0,n2-vm0",
        "SLURM_NODELIST": "n1-vm0,n2-vm0",
        "SLURM_JOB_NUM_NODES": "2",
        "SLURM_NNODES": "2",
        "VTORQUE_HOSTFILE": slurm.GUEST_HOSTFILE,
    }


def test_a_job_id_is_sbatch_s_digits():
    assert slurm.Adapter.check_job_id("123") == "123"
    for bad in ("12_3", "", "12;x", os.sep):
        with pytest.raises(slurm.SubmitError):
            slurm.Adapter.check_job_id(bad)


def test_the_job_sees_how_long_its_start_took_under_either_batch_system():
    from vtorque.scheduler.torque import adapter as torque

    vms = [{"hostname": "n1-vm0"}]
    assert slurm.Adapter.guest_environment({}, "12", vms, 9.84)["VTORQUE_START_SECONDS"] == "9.84"
    env = torque.Adapter.guest_environment({"PBS_JOBID": "7.h"}, "7.h", vms, 10.3)
    assert env["VTORQUE_START_SECONDS"] == "10.3" and env["PBS_JOBID"] == "7.h"
    assert "VTORQUE_START_SECONDS" not in torque.Adapter.guest_environment({}, "7.h", vms)
