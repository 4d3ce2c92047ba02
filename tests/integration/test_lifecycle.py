"""A VM job's whole life on one node with the tiny guest: vsub → prologue → the job in the VM
→ epilogue, with pbs_mom played to the letter (vtorque.localrun.PbsMom), and the faults."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from ansible_collections.mikelangelo.vtorque.plugins.module_utils import naming
from vtorque.localrun import PbsMom

sys.path.insert(0, str(Path(__file__).parent))
from lifecycle_site import USER, Site  # noqa: E402

JOB = """#!/bin/sh
echo "host=$(hostname) kernel=$(uname -r) user=$(id -un) uid=$(id -u) cwd=$(pwd)"
echo "nodefile=$(cat "$PBS_NODEFILE" | tr '\\n' ' ') jobid=$PBS_JOBID"
echo kept-apart >&2
echo result > result.txt
exit 3
"""


@pytest.fixture
def site(tiny_image):
    site = Site(tiny_image)
    yield site
    site.close()


@pytest.fixture
def mom(site):
    mom = PbsMom(str(site.config))
    yield mom
    mom.close()


def leftovers(conn, site, job_id):
    """Everything of the job that could outlive it: domains, files, runner processes."""
    prefix = naming.domain_prefix(job_id)
    found = [d.name() for d in conn.listAllDomains() if d.name().startswith(prefix)]
    job_dir = Path(naming.job_dir(job_id, str(site.state)))
    if job_dir.exists():
        found.append(str(job_dir))
    runners = subprocess.run(
        ["pgrep", "-f", f"runner-.*{naming.sanitise_job_id(job_id)}"], capture_output=True
    )
    found += runners.stdout.decode().split()
    return found


def test_a_job_runs_in_the_vm_and_its_exit_code_and_streams_come_back(site, mom, libvirt_conn, tiny_image):
    site.write_job("job.sh", JOB)
    job = mom.submit(USER, ["-vm", "img=tiny,vcpus=1,ram=256M", "job.sh"], str(site.workdir))
    assert mom.prologue(job) == 0, json.dumps(site.record(job.job_id), indent=1)
    child = mom.run_job(job, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = child.communicate(timeout=120)
    assert child.returncode == 3, (out, err)
    assert mom.epilogue(job, child.returncode) == 0

    kernel = next(p for p in tiny_image.info["packages"] if p.startswith("linux-image-"))[
        len("linux-image-") :
    ]
    lines = out.decode().splitlines()
    node = naming.sanitise_node(os.uname().nodename).split(".")[0]
    assert lines[0] == f"host={node}-vm0 kernel={kernel} user={USER} uid=4500 cwd={site.workdir}"
    assert lines[1] == f"nodefile={node}-vm0  jobid={job.job_id}"
    assert err.decode() == "kept-apart\n"
    assert (site.workdir / "result.txt").read_text() == "result\n"
    assert (site.workdir / "result.txt").stat().st_uid == 4500

    record = site.record(job.job_id)
    assert record["state"] == "ended" and record["exit_status"] == 3
    assert set(record["phases"]) >= {"prologue", "guests_ssh_ready", "epilogue"}
    print(f"prologue {record['phases']['prologue']}s, epilogue {record['phases']['epilogue']}s")
    assert leftovers(libvirt_conn, site, job.job_id) == []
    assert not (site.spool / job.job_id).exists()
