"""Hooks racing each other, as a busy pbs_mom and impatient users make them: whatever the
order, every job ends with nothing left behind and a record that says what happened."""

import json
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from lifecycle_site import USER  # noqa: E402

JOBS = 3


def test_concurrent_jobs_with_an_epilogue_during_the_prologue_and_doubled_epilogues(site, mom, libvirt_conn):
    site.write_job("job.sh", "#!/bin/sh\nhostname\n")
    jobs = [mom.submit(USER, ["-vm", "vcpus=1,ram=256M", "job.sh"], str(site.workdir)) for _ in range(JOBS)]
    interrupted = jobs[0]
    codes = {}

    def life(job):
        if job is interrupted:  # its epilogue comes while its prologue is still starting the VM
            early = threading.Timer(4, mom.epilogue, (job, -14))
            early.start()
            codes[job.job_id] = mom.prologue(job)
            early.join()
        else:
            codes[job.job_id] = mom.prologue(job)
        with ThreadPoolExecutor(2) as pool:  # the same epilogue twice, at once
            list(pool.map(lambda _: mom.epilogue(job, 0), range(2)))

    began = time.monotonic()
    with ThreadPoolExecutor(JOBS) as pool:
        list(pool.map(life, jobs))
    elapsed = time.monotonic() - began
    print(f"{JOBS} concurrent jobs with racing hooks: {elapsed:.1f}s, prologue exits {codes}")

    for job in jobs:
        assert site.leftovers(libvirt_conn, job.job_id) == [], job.job_id
        record = site.record(job.job_id)
        assert record["state"] in ("ended", "requeued"), json.dumps(record, indent=1)
    for job in jobs[1:]:
        assert codes[job.job_id] == 0, site.record(job.job_id)
    assert codes[interrupted.job_id] in (0, 2)
