"""Array VM jobs on Torque (`vsub -t`), pbs_mom played as a real Torque 6.1 ran an array
(docs/torque.md, "Array jobs"): every element its own prologue, VMs, job and epilogue, two at
a time on a 2-slot node; the spool dir the array shares goes with its last element."""

import json
import subprocess
from concurrent.futures import ThreadPoolExecutor

import pytest
from ansible_collections.mikelangelo.vtorque.plugins.module_utils import naming
from lifecycle_site import USER

JOB = """#!/bin/sh
echo "index=$PBS_ARRAYID id=$PBS_JOBID host=$(hostname) boot=$(cat /proc/sys/kernel/random/boot_id)"
exit "$PBS_ARRAYID"
"""


def _run_element(mom, element):
    assert mom.prologue(element) == 0, element.job_id
    child = mom.run_job(element, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = child.communicate(timeout=180)
    assert mom.epilogue(element, child.returncode) == 0
    return child.returncode, out.decode(), err.decode()


# the sweep may then remove the array's spool dir at once
@pytest.mark.parametrize("site", [{"spool_grace_minutes": 0}], indirect=True)
def test_each_element_of_an_array_runs_in_vms_of_its_own_and_nothing_is_left(site, mom, libvirt_conn):
    site.write_job("array.sh", JOB)
    array = mom.submit(USER, ["-t", "1-3", "-vm", "vcpus=1", "array.sh"], str(site.workdir))
    assert array.job_id.split(".")[0].endswith("[]")
    spool = site.spool / array.job_id
    assert (spool / "request.json").exists()  # one spool dir for the array, under its id
    elements = mom.elements(array)
    assert [e.job_id.split(".")[0] for e in elements] == [
        array.job_id.replace("[]", f"[{i}]").split(".")[0] for i in (1, 2, 3)
    ]

    with ThreadPoolExecutor(2) as pool:  # a real pbs_mom ran two at once on np=2
        results = list(pool.map(lambda element: _run_element(mom, element), elements))

    boots = set()
    for index, (element, (code, out, err)) in enumerate(zip(elements, results, strict=True), start=1):
        assert code == index, (out, err)
        fields = dict(item.split("=", 1) for item in out.split())
        assert (fields["index"], fields["id"]) == (str(index), element.job_id), out
        boots.add(fields["boot"])
        record = site.record(element.job_id)
        assert record["state"] == "ended" and record["exit_status"] == index, json.dumps(record, indent=1)
        assert [vm["name"].startswith(naming.domain_prefix(element.job_id)) for vm in record["vms"]] == [True]
        assert site.leftovers(libvirt_conn, element.job_id) == []
    assert len(boots) == 3, "each element booted a VM of its own"

    # The last element to end removes the array's spool dir; two ending at once each see the
    # other still running (a real pbs_server showed R during the epilogue): the sweep then does.
    if spool.exists():
        print("the last two elements ended together: the sweep removes the array's spool dir")
        swept = site.vtorque_sweep(mom)
        assert swept.returncode == 0, swept.stderr
    assert not spool.exists()
