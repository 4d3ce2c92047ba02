"""Snapshot starts (catalog `start: snapshot`, module_utils/snapshot.py) with the tiny test guest
(TCG): one VM SSH-ready from a saved template against the fresh-boot floor (the same guest
created with libvirt-python and waited for the same way, benchmarks/cases_vm.py), through
vm_start's code and through the whole prologue; and what the template costs on first use."""

import shutil
import sys
import tempfile
import time
from pathlib import Path

import cases_vm
import yaml
from timing import comparison

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "integration"))
from lifecycle_site import USER, Site  # noqa: E402
from snapshot_job import SnapshotJob  # noqa: E402
from vtorque.scheduler.torque.emulator.pbs_mom import PbsMom  # noqa: E402


def snapshot(workdir, repeat):
    image = cases_vm.tiny_image()
    work = Path(workdir)
    disk = work / "catalog" / "tiny.qcow2"
    disk.parent.mkdir()
    shutil.copy(image.disk, disk)
    built, first_use, restored, booted, prologue, prologue_boot, floor = [], [], [], [], [], [], []
    for run in range(repeat):
        try:
            figures = _one_run(work, image, disk, work / f"snapshots-{run}")
        except Exception as err:  # noqa: BLE001 - a shared machine: report the run, keep the others
            print(f"bench: snapshot run {run + 1} failed, left out: {type(err).__name__}: {err}", flush=True)
            continue
        for samples, value in zip(
            (built, first_use, restored, booted, floor, prologue, prologue_boot), figures, strict=True
        ):
            samples.append(value)
        print(
            f"bench: snapshot run {run + 1}: template {built[-1]:.2f} s, first use {first_use[-1]:.2f} s,"
            f" from the template {restored[-1]:.2f} s, vm_start boot {booted[-1]:.2f} s,"
            f" floor {floor[-1]:.2f} s,"
            f" prologue snapshot {prologue[-1]:.2f} s, prologue boot {prologue_boot[-1]:.2f} s",
            flush=True,
        )
    if not floor:
        raise RuntimeError("every snapshot run failed")
    return [
        comparison(
            "snapshot: 1 VM, vm_start from the template -> SSH-ready vs direct libvirt boot", restored, floor
        ),
        comparison("snapshot: 1 VM, vm_start fresh boot -> SSH-ready vs direct libvirt boot", booted, floor),
        comparison("snapshot: 1 VM, prologue with start: snapshot vs direct libvirt boot", prologue, floor),
        comparison("snapshot: 1 VM, prologue with start: snapshot vs start: boot", prologue, prologue_boot),
        comparison(
            "snapshot: 1 VM, first use (template built, then started) vs direct libvirt boot",
            first_use,
            floor,
        ),
        comparison("snapshot: template build (boot, wait, save) vs direct libvirt boot", built, floor),
    ]


def _one_run(work, image, disk, snapshots):
    """(template build, first use, from the template, vm_start boot, floor, prologue snapshot,
    prologue boot) seconds."""
    first_use, result = _ssh_ready(work, image, disk, snapshots)  # builds the template
    return (
        result["templates"][0]["seconds"],
        first_use,
        _ssh_ready(work, image, disk, snapshots)[0],
        _ssh_ready(work, image, disk, snapshots, start="boot")[0],
        cases_vm._direct_boot(image, 1, work)[0],
        _prologue(image, "snapshot"),
        _prologue(image, "boot"),
    )


def _ssh_ready(work, image, disk, snapshots, start="snapshot"):
    """(seconds from vm_start's code to the guest accepting SSH with its pinned key, vm_start's result)."""
    scratch = Path(tempfile.mkdtemp(dir=work))
    job = SnapshotJob(scratch, image, disk, snapshots, start=start)
    try:
        began = time.monotonic()
        result = job.start()
        job.wait_ssh(scratch, job.vms[0]["name"], timeout=180)
        seconds = time.monotonic() - began
        if result["vms"][0]["start"] != start:
            raise RuntimeError(f"the VM did not start by {start}: {result['vms'][0]}")
        return seconds, result
    finally:
        job.teardown()
        shutil.rmtree(scratch, ignore_errors=True)


def _prologue(image, start):
    """The prologue's seconds (start -> guest SSH-ready) of the second job on a site whose catalog
    says `start: <start>` (the first job made the template)."""
    site = Site(image)
    catalog = yaml.safe_load(site.catalog.read_text())
    catalog["images"]["tiny"]["start"] = start
    site.catalog.write_text(yaml.safe_dump(catalog))
    mom = PbsMom(str(site.config))
    try:
        site.write_job("job.sh", "#!/bin/sh\ntrue\n")
        for attempt in range(2):
            job = mom.submit(USER, ["-vm", "img=tiny,vcpus=1,ram=256M", "job.sh"], str(site.workdir))
            if mom.prologue(job) != 0:
                raise RuntimeError(f"prologue failed: {site.record(job.job_id)}")
            mom.epilogue(job, 0)
            if attempt == 1:
                return site.record(job.job_id)["phases"]["prologue"]
    finally:
        site.sweep(mom)
        mom.close()
        site.close()
