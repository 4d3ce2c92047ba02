"""`torque.start: each_node`: a sister learns the job's nodes from pbs_server (`qstat -f -1`:
exec_host, in Torque 6.1's spelling or the older one) and which node it is from $PBS_NODENUM;
the MS keeps its node file; both name the same nodes in the same order. The option is
validated, and its exit codes never let a sister mark itself down for nothing."""

import json

import pytest
from vtorque.errors import ConfigError, VTorqueError
from vtorque.scheduler.base import Event, Outcome
from vtorque.scheduler.torque import adapter as torque
from vtorque.site.config import parse_config

# What Torque 6.1's `qstat -f -1 JOBID` prints of a running two-node job (abridged).
QSTAT_F = """Job Id: 63.vm
    Job_Name = mpi.sh
    Job_Owner = vtuser@vm
    job_state = R
    queue = batch
    exec_host = {exec_host}
    exec_port = 15003+15003
    Resource_List.nodes = 2:ppn=2
"""
QSTAT = """#!/bin/sh
echo "$@" >> {log}
[ "$*" = "-f -1 63.vm" ] || {{ echo "qstat: Unknown Job Id Error $4" >&2; exit 153; }}
cat {answer}
"""
PROLOGUE_ARGS = ["63.vm", "vtuser", "vtgrp", "mpi.sh", "nodes=2:ppn=2", "batch", "", "/x/63.vm.SC"]
EPILOGUE_ARGS = [*PROLOGUE_ARGS[:4], "0", "nodes=2:ppn=2", "", "batch", "", "0", "/x/63.vm.SC"]


@pytest.mark.parametrize(
    ("exec_host", "nodes"),
    [
        ("vm/0-1+n2/0-1", (("vm", 2), ("n2", 2))),  # Torque 6.1: a host once, its slots as a range
        ("vm/0+n2/0+n3/0", (("vm", 1), ("n2", 1), ("n3", 1))),
        ("vm/0+vm/1+n2/0+n2/1", (("vm", 2), ("n2", 2))),  # the older one-slot-per-entry spelling
        ("n7/0-3,5+n1/2", (("n7", 5), ("n1", 1))),  # ranges and lists; allocation order, not sorted
        ("head.example.org/0-1", (("head.example.org", 2),)),
    ],
)
def test_exec_host_gives_the_nodes_in_allocation_order_with_their_slots(exec_host, nodes):
    assert torque.parse_exec_host(exec_host) == nodes


@pytest.mark.parametrize("exec_host", ["", "vm", "vm/", "vm/a-b", "vm/3-1", "/0", "vm/0++n2/0"])
def test_an_exec_host_not_in_torque_s_format_is_refused(exec_host):
    with pytest.raises(VTorqueError, match="not in Torque's host/slots"):
        torque.parse_exec_host(exec_host)


def test_the_exec_host_line_is_found_and_a_wrapped_value_joined():
    assert torque.exec_host_of(QSTAT_F.format(exec_host="vm/0-1+n2/0-1")) == "vm/0-1+n2/0-1"
    wrapped = "Job Id: 63.vm\n    exec_host = n1/0-1+n2/0-1+n3/0-1+\n\tn4/0-1+n5/0-1\n    queue = batch\n"
    assert torque.exec_host_of(wrapped) == "n1/0-1+n2/0-1+n3/0-1+n4/0-1+n5/0-1"
    assert torque.exec_host_of("Job Id: 63.vm\n    job_state = Q\n") is None


def test_the_start_option_defaults_to_primary_and_is_validated():
    default = parse_config("{}", "x.yml").torque
    assert (default.start, default.key_secret) == ("primary", "/etc/vtorque/job-key.secret")
    chosen = parse_config("torque: {start: each_node, key_secret: /etc/s}\n", "x.yml").torque
    assert (chosen.start, chosen.key_secret) == ("each_node", "/etc/s")
    with pytest.raises(ConfigError, match=r"torque\.start: expected one of primary, each_node"):
        parse_config("torque: {start: everywhere}\n", "x.yml")
    with pytest.raises(ConfigError, match=r"torque\.key_secret: expected an absolute path"):
        parse_config("torque: {start: each_node, key_secret: job-key.secret}\n", "x.yml")


@pytest.fixture
def site(tmp_path):
    """An each_node (or primary) Torque adapter whose qstat answers for job 63.vm."""

    def make(start="each_node", exec_host="vm/0-1+n2/0-1"):
        answer, log, qstat = tmp_path / "answer", tmp_path / "qstat.log", tmp_path / "qstat"
        answer.write_text(QSTAT_F.format(exec_host=exec_host))
        qstat.write_text(QSTAT.format(log=log, answer=answer))
        qstat.chmod(0o755)
        (tmp_path / "aux").mkdir(exist_ok=True)
        (tmp_path / "state").mkdir(exist_ok=True)
        section = (
            f"{{qstat: {qstat}, pbs_home: {tmp_path}, start: {start}, key_secret: {tmp_path / 'secret'}}}"
        )
        text = f"state_dir: {tmp_path / 'state'}\ntorque: {section}\n"
        return torque.Adapter(parse_config(text, "x.yml")), log

    return make


def hook_env(number, nodefile=None):
    env = {"PATH": "/bin:/usr/bin", "PBS_MSHOST": "vm", "PBS_NODENUM": str(number), "PBS_O_WORKDIR": "/w"}
    return {**env, "PBS_NODEFILE": str(nodefile)} if nodefile else env


def test_the_ms_and_a_sister_name_the_same_nodes_in_the_same_order(site, tmp_path):
    adapter, log = site()
    nodefile = tmp_path / "aux" / "63.vm"
    nodefile.write_text("vm\nvm\nn2\nn2\n")  # as pbs_mom writes it from exec_host
    ms = adapter.job_from_hook("prologue", PROLOGUE_ARGS, hook_env(0, nodefile))
    sister = adapter.job_from_hook("prologue.parallel", PROLOGUE_ARGS, hook_env(1))
    assert (ms.event, ms.here, ms.nodes) == (Event.START, "vm", (("vm", 2), ("n2", 2)))
    assert (sister.event, sister.here, sister.nodes) == (Event.JOIN, "n2", ms.nodes)
    assert adapter.per_node and not sister.primary
    assert log.read_text() == "-f -1 63.vm\n"  # the sister asked pbs_server, the MS did not


def test_a_sister_of_a_bigger_job_is_the_pbs_nodenum_th_host_of_exec_host(site):
    adapter, _ = site(exec_host="n5/0+n3/0+n9/0")
    third = adapter.job_from_hook("prologue.parallel", PROLOGUE_ARGS, hook_env(2))
    assert (third.here, third.nodes) == ("n9", (("n5", 1), ("n3", 1), ("n9", 1)))


def test_a_sister_that_cannot_tell_which_node_it_is_refuses_to_start(site):
    adapter, _ = site()
    for number in ("0", "2", "x"):  # 0 is the MS; 2 is past the job's two nodes
        env = {**hook_env(0), "PBS_NODENUM": number}
        with pytest.raises(VTorqueError, match="PBS_NODENUM"):
            adapter.job_from_hook("prologue.parallel", PROLOGUE_ARGS, env)
    with pytest.raises(VTorqueError, match="cannot learn the nodes of job 64.vm from pbs_server"):
        adapter.job_from_hook("prologue.parallel", ["64.vm", *PROLOGUE_ARGS[1:]], hook_env(1))


def test_a_sister_s_epilogue_falls_back_on_its_record_then_on_sweeping_everything(site, tmp_path):
    adapter, _ = site()
    ended = adapter.job_from_hook("epilogue.parallel", EPILOGUE_ARGS, hook_env(1))
    assert (ended.event, ended.here, ended.exit_status) == (Event.LEAVE, "n2", 0)
    forgotten = ["65.vm", *EPILOGUE_ARGS[1:]]  # pbs_server no longer answers for it
    assert adapter.job_from_hook("epilogue.parallel", forgotten, hook_env(1)).here is None
    records = tmp_path / "state" / "records"
    records.mkdir()
    (records / "65.vm.json").write_text(json.dumps({"job_id": "65.vm", "nodes": ["vm", "n2"]}))
    assert adapter.job_from_hook("epilogue.parallel", forgotten, hook_env(1)).here == "n2"


def test_primary_mode_is_as_before_the_ms_starts_every_node(site, tmp_path):
    adapter, log = site(start="primary")
    nodefile = tmp_path / "aux" / "63.vm"
    nodefile.write_text("vm\nn2\n")
    ms = adapter.job_from_hook("prologue", PROLOGUE_ARGS, hook_env(0, nodefile))
    sister = adapter.job_from_hook("prologue.parallel", PROLOGUE_ARGS, hook_env(1))
    assert (ms.here, sister.here, sister.nodes) == (None, None, ())
    assert not adapter.per_node and adapter.key_secret() is None and not log.exists()


def test_a_sister_refuses_the_join_only_when_its_own_start_failed():
    assert [torque.Adapter.exit_code(Event.JOIN, outcome) for outcome in Outcome] == [0, 0, 2, 0]
    assert torque.Adapter.exit_code(Event.START, Outcome.ABORT) == 1  # the MS aborts a bad request
    each_node = {"torque": {"start": "each_node"}}
    assert torque.Adapter.failure_exit("prologue.parallel", each_node) == 2
    assert torque.Adapter.failure_exit("prologue.parallel", {}) == 0  # primary: it starts nothing
    assert torque.Adapter.failure_exit("prologue.parallel", None) == 0
    assert torque.Adapter.failure_exit("prologue", None) == 2


def test_a_sister_whose_start_failed_here_before_refuses_instead_of_aborting(site, tmp_path):
    adapter, _ = site()
    job = adapter.job_from_hook("prologue.parallel", PROLOGUE_ARGS, hook_env(1))
    assert adapter.hook_exit(job, Outcome.ABORT) == 0  # a refused request: the MS aborts it
    records = tmp_path / "state" / "records"
    records.mkdir()
    (records / "63.vm.json").write_text(json.dumps({"job_id": "63.vm", "start_failures": ["n2"]}))
    assert adapter.hook_exit(job, Outcome.ABORT) == 2  # only the MS could abort: requeue


def test_each_node_derives_the_keys_from_the_root_only_secret(site, tmp_path):
    adapter, _ = site()
    with pytest.raises(VTorqueError, match=f"cannot read the key secret {tmp_path}/secret"):
        adapter.key_secret()
    secret = tmp_path / "secret"
    secret.write_bytes(b"s" * 32)
    secret.chmod(0o644)
    with pytest.raises(VTorqueError, match="must be a regular file of root's, mode 0600"):
        adapter.key_secret()
    secret.chmod(0o600)
    assert adapter.key_secret() == b"s" * 32
    assert not any("key_secret" in problem for problem in adapter.command_problems())


def test_the_emulator_s_qstat_shows_the_exec_host_of_a_job_the_mom_runs(tmp_path, monkeypatch, capsys):
    from vtorque.scheduler.torque.emulator import queue

    monkeypatch.setenv("VTORQUE_LOCAL_QUEUE", str(tmp_path))
    (tmp_path / "calls.log").write_text("")
    (tmp_path / "1.json").write_text(json.dumps({"job_id": "7.vm", "argv": [], "script": ""}))
    array = {"job_id": "8[].vm", "argv": [], "script": "", "elements": ["8[1].vm", "8[2].vm"]}
    (tmp_path / "2.json").write_text(json.dumps(array))
    assert queue.main(["qstat", "-f", "-1", "7.vm"]) == 0
    assert "exec_host" not in capsys.readouterr().out  # queued: no host yet
    queue.set_exec_host(str(tmp_path), "7.vm", "vm/0-1+n2/0-1")
    queue.set_exec_host(str(tmp_path), "8[2].vm", "vm/0+n2/0")
    queue.set_element_state(str(tmp_path), "8[2].vm", "R")
    assert queue.main(["qstat", "-f", "-1", "7.vm"]) == 0
    assert torque.exec_host_of(capsys.readouterr().out) == "vm/0-1+n2/0-1"
    assert queue.main(["qstat", "-f", "-1", "8[2].vm"]) == 0  # an element, by its own id
    shown = capsys.readouterr().out
    assert torque.exec_host_of(shown) == "vm/0+n2/0" and "job_state = R" in shown
    assert queue.main(["qstat", "-f", "-1", "8[1].vm"]) == queue.UNKNOWN_EXIT  # not running: as before
    assert queue.main(["qstat", "-f", "8[].vm"]) == 0 and "job_state = Q" in capsys.readouterr().out


def run_hook(tmp_path, argv, config_text, **env):
    """vtorque-hook as pbs_mom runs it on a sister: Torque's small environment, no node file."""
    import subprocess
    import sys

    config = tmp_path / "vtorque.yml"
    config.write_text(config_text)
    code = "import sys; from vtorque.cli.hook import main; sys.exit(main(sys.argv[1:]))"
    environ = {**hook_env(1), "LANG": "C", "VTORQUE_CONFIG": str(config), **env}
    return subprocess.run(
        [sys.executable, "-c", code, *argv], env=environ, capture_output=True, text=True, check=False
    )


def test_a_sister_passes_a_bare_metal_job_at_once_and_refuses_a_vm_job_it_cannot_place(site, tmp_path):
    _, log = site()
    qstat = tmp_path / "qstat"
    base = f"spool_dir: {tmp_path / 'spool'}\nstate_dir: {tmp_path / 'state'}\n"
    each_node = base + f"torque: {{start: each_node, qstat: {qstat}, pbs_home: {tmp_path}}}\n"
    bare = run_hook(tmp_path, ["prologue.parallel", *PROLOGUE_ARGS], each_node)
    assert (bare.returncode, log.exists()) == (0, False), bare.stderr  # no spool dir: not asked
    (tmp_path / "spool" / "64.vm").mkdir(parents=True)
    unknown = ["prologue.parallel", "64.vm", *PROLOGUE_ARGS[1:]]  # pbs_server does not know it
    refused = run_hook(tmp_path, unknown, each_node)
    assert refused.returncode == 2 and "cannot learn the nodes of job 64.vm" in refused.stderr
    told = json.loads((tmp_path / "state" / "records" / "64.vm.json").read_text())["events"][-1]["text"]
    assert told.startswith("node 1 of the job cannot start its VMs, so it refuses to join"), told
    primary = run_hook(tmp_path, unknown, base)  # the MS starts every node: nothing to do here
    assert primary.returncode == 0, primary.stderr
