"""Per-job telemetry of a real job (tiny guest, pbs_mom played to the letter): sampled while
it runs, shown to its owner with a plot and to no one else, and nothing of the sampler left
after the epilogue."""

import pwd
import subprocess
import sys
import time
from pathlib import Path

import pytest
from lifecycle_site import USER, Site
from vtorque.runtime.telemetry import MODULE
from vtorque.scheduler.torque.emulator.pbs_mom import PbsMom

BURN = """#!/bin/sh
end=$(( $(date +%s) + 6 ))
while [ "$(date +%s)" -lt "$end" ]; do i=0; while [ $i -lt 2000 ]; do i=$((i+1)); done; done
echo burnt
"""


@pytest.fixture
def telemetry_site(tiny_image, tmp_path):
    textfiles = tmp_path / "textfiles"
    textfiles.mkdir()
    site = Site(tiny_image, telemetry={"interval_seconds": 1, "prometheus_textfile_dir": str(textfiles)})
    mom = PbsMom(str(site.config))
    yield site, mom, textfiles
    site.sweep(mom)
    mom.close()
    site.close()


def samplers(job_id):
    found = subprocess.run(["pgrep", "-f", f"{MODULE} .* {job_id}"], capture_output=True, text=True)
    return found.stdout.split()


def stats(site, job_id, *args, user=USER):
    entry = pwd.getpwnam(user)
    return subprocess.run(
        [str(Path(sys.executable).parent / "vtorque"), "jobs", "stats", job_id, *args],
        env={"PATH": "/usr/bin:/bin", "VTORQUE_CONFIG": str(site.config)},
        user=entry.pw_uid,
        group=entry.pw_gid,
        extra_groups=[],
        cwd=str(site.workdir),
        capture_output=True,
        text=True,
        check=False,
    )


def test_a_jobs_telemetry_is_its_owners_with_a_plot_and_nothing_of_it_outlives_the_job(
    telemetry_site, libvirt_conn
):
    site, mom, textfiles = telemetry_site
    site.write_job("burn.sh", BURN)
    job = mom.submit(USER, ["-vm", "img=tiny,vcpus=1,ram=256M", "burn.sh"], str(site.workdir))
    assert mom.prologue(job) == 0
    child = mom.run_job(job, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = child.communicate(timeout=120)
    assert (child.returncode, out) == (0, b"burnt\n"), err
    assert len(samplers(job.job_id)) == 1  # one per node, detached from the prologue that started it
    assert [p.name for p in textfiles.iterdir()] == [f"vtorque_job_{job.job_id}.prom"]
    assert "vtorque_vm_cpu_seconds_total{" in (textfiles / f"vtorque_job_{job.job_id}.prom").read_text()
    assert mom.epilogue(job, 0) == 0

    deadline = time.monotonic() + 5  # the epilogue waited for it; init may reap it a moment later
    while samplers(job.job_id) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert samplers(job.job_id) == [] and list(textfiles.iterdir()) == []
    assert site.leftovers(libvirt_conn, job.job_id) == []

    shown = stats(site, job.job_id, "--plot", "stats.png")  # after the job: kept with the record
    assert shown.returncode == 0, shown.stderr
    print(shown.stdout)
    row = shown.stdout.splitlines()[2].split()
    assert row[0].startswith(f"vt-{job.job_id}-") and float(row[1]) > 1.0 and int(row[-2]) >= 5, shown.stdout
    assert int(row[3]) >= 50  # the burning interval kept a core busy
    png = site.workdir / "stats.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_uid == pwd.getpwnam(USER).pw_uid
    other = stats(site, job.job_id, user="nobody")
    assert other.returncode != 0 and "another user's" in other.stderr and other.stdout == ""
