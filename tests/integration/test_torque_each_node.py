"""`torque.start: each_node` on two nodes × two VMs: the mother superior (this host) and one
sister played on this machine as its own host (its own $PBS_HOME, site config and state dir),
guests on a bridge inside a network namespace the test made (hostnet.py). The sister's own
prologue.parallel starts the sister's VMs (it learns the job's nodes from `qstat -f`), before
the MS prologue, which starts only the MS's; every node derives the same keys from the site
secret, so the rank-0 VM reaches every VM with the job's key and pinned host keys; each
node's epilogue tears down its own."""

import json
import secrets
import socket
import subprocess
import uuid
from pathlib import Path

import hostnet
import pytest
import yaml
from ansible_collections.mikelangelo.vtorque.plugins.module_utils import naming
from lifecycle_site import REACH_EVERY_VM as JOB
from lifecycle_site import USER, Site, two_node_bridge
from vtorque.scheduler.torque.emulator.pbs_mom import PbsMom

SISTER = "vtsister2"
BRIDGE, SUBNET = "vtbr1", "10.79.0"


@pytest.fixture
def each_node_site(tiny_image):
    network = two_node_bridge(BRIDGE, SUBNET, (socket.gethostname(), SISTER))
    site = Site(tiny_image, network=network)
    secret = site.root / "job-key.secret"
    secret.write_bytes(secrets.token_bytes(32))
    secret.chmod(0o600)
    data = yaml.safe_load(site.config.read_text())
    data["torque"] = {"start": "each_node", "key_secret": str(secret)}  # the roles copy it to every node
    site.config.write_text(yaml.safe_dump(data))
    netns = f"vtt-{uuid.uuid4().hex[:6]}"
    with hostnet.namespace_with_bridge(netns, BRIDGE, f"{network['gateway']}/24"), hostnet.libvirtd_in(netns):
        mom = PbsMom(str(site.config), sisters=(SISTER,))
        try:
            yield site, mom, netns
        finally:
            site.sweep(mom)
            mom.close()
            site.close()


def record(state_dir, job_id):
    path = Path(state_dir) / "records" / (naming.sanitise_job_id(job_id) + ".json")
    return json.loads(path.read_text())


def test_each_node_starts_its_own_vms_and_the_rank0_vm_reaches_every_vm(each_node_site, libvirt_conn):
    site, mom, netns = each_node_site
    ms = socket.gethostname()
    ms_state, sister_state = mom.node_state_dir(ms), mom.node_state_dir(SISTER)
    assert ms_state != sister_state
    site.write_job("mpi.sh", JOB)
    job = mom.submit(
        USER, ["-l", "nodes=2", "-vm", "vcpus=1,ram=192M,vms_per_node=2", "mpi.sh"], str(site.workdir)
    )
    mine = [naming.domain_name(job.job_id, ms, index) for index in (0, 1)]
    theirs = [naming.domain_name(job.job_id, SISTER, index) for index in (0, 1)]
    with hostnet.entered(netns):
        code = mom.prologue(job)
        ms_record, sister_record = record(ms_state, job.job_id), record(sister_state, job.job_id)
        assert code == 0, json.dumps([ms_record, sister_record], indent=1)
        domains = sorted(d.name() for d in libvirt_conn.listAllDomains() if job.job_id in d.name())
        sister_files = sorted(p.name for p in Path(naming.job_dir(job.job_id, sister_state)).iterdir())
        ms_files = sorted(p.name for p in Path(naming.job_dir(job.job_id, ms_state)).iterdir())
        child = mom.run_job(job, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        out, err = child.communicate(timeout=180)
        assert mom.epilogue(job, child.returncode) == 0

    assert domains == sorted(mine + theirs), domains
    # The sister's hook started the sister's VMs, on the sister (its state dir has their disks),
    # and (PbsMom plays Torque's order) before the MS prologue began; the MS's hook its own only.
    assert (sister_record["state"], sister_record["started_here"]) == ("running", theirs), sister_record
    assert (ms_record["state"], ms_record["started_here"]) == ("running", mine), ms_record
    assert [vm["name"] for vm in sister_record["vms"]] == [vm["name"] for vm in ms_record["vms"]]
    assert all(any(f.startswith(name) for f in sister_files) for name in theirs), sister_files
    assert not any(name in f for f in ms_files for name in theirs), ms_files
    assert not any(name in f for f in sister_files for name in mine), sister_files

    hostnames = [f"{ms}-vm0", f"{ms}-vm1", f"{SISTER}-vm0", f"{SISTER}-vm1"]
    lines = out.decode().splitlines()
    assert child.returncode == 0, (out, err)
    assert lines[0] == "nodefile: " + " ".join(hostnames) + " ", lines
    assert lines[1:] == [f"reached {name} as {USER}" for name in hostnames], (out, err)

    for state_dir in (ms_state, sister_state):  # each node's epilogue ended its own part
        assert record(state_dir, job.job_id)["state"] == "ended", record(state_dir, job.job_id)
        assert not Path(naming.job_dir(job.job_id, state_dir)).exists()
    assert site.leftovers(libvirt_conn, job.job_id) == []
    assert not (site.spool / job.job_id).exists()
    calls = [json.loads(line) for line in Path(mom.queue, "calls.log").read_text().splitlines()]
    assert ["qstat", "-f", "-1", job.job_id] in calls  # the sister asked pbs_server for the nodes
