"""The fan-out over real SSH that benchmarks/cases_nodes.py measures: two simulated nodes
(benchmarks/netns_nodes.py: a network namespace and an sshd each, libvirt's test:///default
driver), job_start and job_stop through the product's runner with the ssh connection plugin;
each node's sshd logs the primary in, every VM's files appear and go again, and nothing of the
nodes is left afterwards."""

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from vtorque.runtime import runner
from vtorque.runtime.epilogue import teardown

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))
import netns_nodes  # noqa: E402
from cases_nodes import make_job  # noqa: E402

TOOLS = os.path.exists(netns_nodes.SSHD) and shutil.which("ip") and shutil.which("qemu-img")
pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or not TOOLS,
    reason="needs root, iproute2, OpenSSH's sshd and qemu-img",
)
JOB = "77.sshfanout"
OCTET = 232  # the benchmark's nodes use 10.231.0.0/16


def _masters(control_dir):
    """Processes whose command line names `control_dir` (SSH control masters)."""
    found = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                cmdline = Path(f"/proc/{entry.name}/cmdline").read_bytes()
            except OSError:
                continue
            if control_dir.encode() in cmdline:
                found.append(int(entry.name))
    return found


def test_two_nodes_over_ssh_start_and_stop_a_job(monkeypatch):
    with tempfile.TemporaryDirectory(prefix="vtt-sshfanout-") as work:
        image, state = Path(work) / "base.qcow2", Path(work) / "state"
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(image), "16M"], check=True)
        state.mkdir()
        with netns_nodes.SshNodes(2, octet=OCTET) as nodes:
            namespaces, control_dir = [nodes.namespace(name) for name in nodes.names], nodes.control_dir
            monkeypatch.setenv("ANSIBLE_SSH_CONTROL_PATH_DIR", control_dir)
            made, host_vars = runner.inventory, nodes.all_host_vars()
            monkeypatch.setattr(
                runner,
                "inventory",
                lambda hosts, local=None: netns_nodes.with_host_vars(made(hosts, local), host_vars),
            )
            config, plan, variables, _job = make_job(str(state), 2, image, JOB)
            assert plan.nodes == ("n1", "n2")

            started = runner.run_playbook(
                "start",
                plan.nodes,
                variables,
                work_dir=plan.job_dir,
                runner_config=config.runner,
                timeout=600,
            )

            assert started.ok, started.failures
            for name in nodes.names:  # the primary logged in to each node and ran a command there
                log = nodes.log(name).read_text()
                assert "Accepted publickey for root from 10.232." in log, log
                assert "Starting session: command for root" in log, log
            assert sorted(vm.node for vm in plan.vms) == ["n1", "n2"]
            assert all(Path(vm.overlay).exists() for vm in plan.vms)
            logins = nodes.ssh_counts()["connections"]

            nodes.kill_masters()  # the epilogue comes long after ControlPersist's 60 s
            stopped = teardown(JOB, plan.nodes, config, graceful=False)

            assert stopped.ok, stopped.failures
            assert nodes.ssh_counts()["connections"] >= logins + 2
            assert not any(Path(vm.overlay).exists() for vm in plan.vms)
            assert not Path(plan.job_dir).exists()
        listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
        assert not [ns for ns in namespaces if ns in listed]
        assert not [link for link in netns_nodes.leftovers() if link.startswith(f"vn{nodes.tag}")]
        assert not _masters(control_dir)
        assert not nodes.dir.exists()
