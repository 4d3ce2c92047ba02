"""Load with hooks racing each other, as a busy pbs_mom and impatient users make them: 20 VM
jobs with real tiny guests, five at a time on this 2-core machine, in four patterns (a plain
job, an epilogue during the prologue, a doubled epilogue, qdel's precancel during the start).
Whatever the order, every job ends with nothing left behind and a record that says what
happened; a prologue cut short stops starting at once (exit 0, which lets pbs_mom's starter
child end: no requeue, the node kept online)."""

import json
import subprocess
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from lifecycle_site import USER, Site
from vtorque.scheduler.torque.emulator.pbs_mom import QDEL_STATUS, PbsMom

JOBS, AT_ONCE = 20, 5
PATTERNS = ("plain", "epilogue during prologue", "doubled epilogue", "precancel during start")


@pytest.fixture
def loaded_site(tiny_image):
    # Five guests booting at once on two cores under TCG: allow for the contention.
    site = Site(tiny_image, timeouts={"prologue": 240, "boot": 120, "ssh": 120})
    mom = PbsMom(str(site.config))
    yield site, mom
    site.sweep(mom)
    mom.close()
    site.close()


def life(mom, job, pattern):
    """One job's hooks in `pattern`; (prologue exit, job exit status or None)."""
    if pattern == "epilogue during prologue":
        early = threading.Timer(3, mom.epilogue, (job, -14))
        early.start()
        code = mom.prologue(job)
        early.join()
        mom.epilogue(job, -14 if code else 0)
        return code, None
    if pattern == "precancel during start":
        precancel = threading.Timer(3, mom.precancel, (job,))
        precancel.start()
        code = mom.prologue(job)
        precancel.join()
        mom.epilogue(job, QDEL_STATUS)
        return code, None
    code = mom.prologue(job)
    status = None
    if code == 0:
        child = mom.run_job(job, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        out, _ = child.communicate(timeout=120)
        status = child.returncode
        assert out.decode().strip() == "ran", out
    if pattern == "doubled epilogue":
        with ThreadPoolExecutor(2) as pool:
            list(pool.map(lambda _: mom.epilogue(job, status if status is not None else -14), range(2)))
    else:
        mom.epilogue(job, status if status is not None else -14)
    return code, status


def test_twenty_jobs_five_at_a_time_with_racing_hooks_leave_nothing(loaded_site, libvirt_conn):
    site, mom = loaded_site
    site.write_job("job.sh", "#!/bin/sh\necho ran\n")
    jobs = [mom.submit(USER, ["-vm", "vcpus=1,ram=128M", "job.sh"], str(site.workdir)) for _ in range(JOBS)]
    patterns = {job.job_id: PATTERNS[number % len(PATTERNS)] for number, job in enumerate(jobs)}

    began = time.monotonic()
    with ThreadPoolExecutor(AT_ONCE) as pool:
        outcomes = dict(
            zip(patterns, pool.map(lambda job: life(mom, job, patterns[job.job_id]), jobs), strict=True)
        )
    elapsed = time.monotonic() - began

    leaks = {job.job_id: site.leftovers(libvirt_conn, job.job_id) for job in jobs}
    records = {job.job_id: site.record(job.job_id) for job in jobs}
    tally = Counter(
        (patterns[job_id], code, records[job_id]["state"]) for job_id, (code, _) in outcomes.items()
    )
    print(f"{JOBS} jobs, {AT_ONCE} at a time: {elapsed:.0f}s; leaks: {sum(map(len, leaks.values()))}")
    for (pattern, code, state), count in sorted(tally.items()):
        print(f"  {count:2d} x {pattern}: prologue exit {code}, record {state}")

    calls = Path(mom.queue) / "calls.log"
    offline = [
        line for line in (calls.read_text() if calls.exists() else "").splitlines() if "pbsnodes" in line
    ]
    assert offline == [], "a qdel took the node offline"
    leaked = {job_id: records[job_id] for job_id, found in leaks.items() if found}
    assert not leaked, json.dumps(leaked, indent=1)
    for job_id, (code, status) in outcomes.items():
        record, pattern = records[job_id], patterns[job_id]
        if pattern in ("plain", "doubled epilogue"):
            assert (code, status, record["state"], record["exit_status"]) == (0, 0, "ended", 0), record
        else:  # cut short: it started before the cancel came (ended), or stopped starting (cancelled)
            assert code == 0, record
            assert record["state"] in ("ended", "cancelled"), json.dumps(record, indent=1)
            assert record["state"] == "ended" or "while its VMs were starting" in record["reason"], record
