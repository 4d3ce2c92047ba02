"""Two nodes × two VMs: the mother superior (this host) and one sister played on this machine,
guests on a bridge inside a network namespace the test made (hostnet.py). The job sees all
four VMs in its node file, and from the rank-0 VM reaches every VM by SSH as the owner with
the job's key and pinned host keys, as mpirun does."""

import json
import socket
import subprocess
import uuid

import hostnet
import pytest
from lifecycle_site import REACH_EVERY_VM as JOB
from lifecycle_site import USER, Site, two_node_bridge
from vtorque.scheduler.torque.emulator.pbs_mom import PbsMom

SISTER = "vtsister1"
BRIDGE, SUBNET = "vtbr0", "10.77.0"


@pytest.fixture
def bridged_site(tiny_image):
    network = two_node_bridge(BRIDGE, SUBNET, (socket.gethostname(), SISTER))
    site = Site(tiny_image, network=network)
    netns = f"vtt-{uuid.uuid4().hex[:6]}"
    with hostnet.namespace_with_bridge(netns, BRIDGE, f"{network['gateway']}/24"), hostnet.libvirtd_in(netns):
        mom = PbsMom(str(site.config), sisters=(SISTER,))
        try:
            yield site, mom, netns
        finally:
            site.sweep(mom)
            mom.close()
            site.close()


def test_two_nodes_two_vms_each_the_rank0_vm_reaches_every_vm_as_the_owner(bridged_site, libvirt_conn):
    site, mom, netns = bridged_site
    site.write_job("mpi.sh", JOB)
    job = mom.submit(
        USER, ["-l", "nodes=2", "-vm", "vcpus=1,ram=192M,vms_per_node=2", "mpi.sh"], str(site.workdir)
    )
    with hostnet.entered(netns):
        assert mom.prologue(job) == 0, json.dumps(site.record(job.job_id), indent=1)
        domains = sorted(d.name() for d in libvirt_conn.listAllDomains() if job.job_id in d.name())
        child = mom.run_job(job, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        out, err = child.communicate(timeout=180)
        assert mom.epilogue(job, child.returncode) == 0

    ms = socket.gethostname()
    hostnames = [f"{ms}-vm0", f"{ms}-vm1", f"{SISTER}-vm0", f"{SISTER}-vm1"]
    assert len(domains) == 4 and sum(SISTER in name for name in domains) == 2, domains
    lines = out.decode().splitlines()
    assert child.returncode == 0, (out, err)
    assert lines[0] == "nodefile: " + " ".join(hostnames) + " ", lines
    assert lines[1:] == [f"reached {name} as {USER}" for name in hostnames], (out, err)

    record = site.record(job.job_id)
    assert record["state"] == "ended", json.dumps(record, indent=1)
    assert [vm["address"] for vm in record["vms"]] == [
        "10.77.0.10/24",
        "10.77.0.11/24",
        "10.77.0.20/24",
        "10.77.0.21/24",
    ]
    assert site.leftovers(libvirt_conn, job.job_id) == []
