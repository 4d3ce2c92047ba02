# Copyright: vTorque contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""Remove every domain and file of a job, or of every job that is no longer live."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess

from ansible_collections.mikelangelo.vtorque.plugins.module_utils import naming, snapshot, startlock
from ansible_collections.mikelangelo.vtorque.plugins.module_utils.connection import Hypervisor
from ansible_collections.mikelangelo.vtorque.plugins.module_utils.domain import POLL, DomainState
from ansible_collections.mikelangelo.vtorque.plugins.module_utils.errors import Refused
from ansible_collections.mikelangelo.vtorque.plugins.module_utils.inventory import (
    job_domain_names,
    orphan_domain_names,
)
from ansible_collections.mikelangelo.vtorque.plugins.module_utils.waiter import wait_for


def _job_dirs(state_dir: str, job_id: str | None, live_jobs: list[str] | None) -> list[str]:
    jobs_root = os.path.join(state_dir, "jobs")
    if job_id is not None:
        candidates = [naming.job_dir(job_id, state_dir)]
    else:
        live = {naming.sanitise_job_id(j) for j in live_jobs or []}
        try:
            entries = sorted(os.listdir(jobs_root))
        except FileNotFoundError:
            entries = []
        candidates = [os.path.join(jobs_root, e) for e in entries if e not in live]
    found = []
    for path in candidates:
        try:
            info = os.lstat(path)
        except FileNotFoundError:
            continue
        if not stat.S_ISDIR(info.st_mode):
            raise Refused(
                f"{path} is not a directory (a link is never followed); remove it by hand", target=path
            )
        found.append(path)
    return found


def _gone_is_fine(function, path, exc_info):
    """A file another sweep of the same job (a racing epilogue) removed first is not an error."""
    if not issubclass(exc_info[0], FileNotFoundError):
        raise exc_info[1]


def _unmount_ramdisk(job_path: str) -> None:
    """A fs_type=ramdisk job's tmpfs goes before its directory (rmtree stops at a mount point);
    a racing sweep of the same job may unmount it first."""
    ram = os.path.join(job_path, naming.RAM_DIR)
    if not os.path.ismount(ram):
        return
    done = subprocess.run(["umount", ram], capture_output=True, text=True, check=False)
    if done.returncode != 0 and os.path.ismount(ram):
        raise Refused(f"cannot unmount the job's RAM disk {ram}: {done.stderr.strip()}", target=ram)


def _shared_memory(job_id: str | None, live_jobs: list[str] | None, shm_dir: str) -> list[str]:
    """The job's -vm unclot region, or every region of a job not in `live_jobs`: libvirt leaves
    /dev/shm/<name> behind when the last domain using it stops. Regular files only."""
    if job_id is not None:
        names = [naming.shmem_name(job_id)]
    else:
        live = {naming.sanitise_job_id(j) for j in live_jobs or []}
        try:
            entries = sorted(os.listdir(shm_dir))
        except FileNotFoundError:
            entries = []
        names = [e for e in entries if naming.shmem_job(e) is not None and naming.shmem_job(e) not in live]
    found = []
    for name in names:
        path = os.path.join(shm_dir, name)
        try:
            if stat.S_ISREG(os.lstat(path).st_mode):
                found.append(path)
        except FileNotFoundError:
            continue
    return found


def sweep(params: dict, check_mode: bool) -> dict:
    """The vm_sweep module's entry: its parameters as sweep_jobs' keywords."""
    return sweep_jobs(
        uri=params["uri"],
        state_dir=params["state_dir"],
        job_id=params.get("job_id"),
        live_jobs=params.get("live_jobs"),
        shutdown_timeout=params.get("shutdown_timeout") or 0,
        check_mode=check_mode,
    )


def _remove_domains(hv: Hypervisor, names: list, shutdown_timeout: int, check_mode: bool) -> None:
    """Every running guest asked to shut down at once and one wait for them all (bounded by
    `shutdown_timeout`), then each destroyed if still on and undefined: the job's guests shut
    down side by side, not one after the other."""
    domains = [DomainState(hv, name, check_mode) for name in names]
    if shutdown_timeout > 0 and not check_mode:
        running = [domain for domain in domains if domain.is_active()]
        for domain in running:
            domain.request_shutdown("acpi")
        wait_for(lambda: all(domain.is_stopped() for domain in running), shutdown_timeout, POLL)
    for domain in domains:
        domain.remove(0, "acpi")


def sweep_jobs(
    *,
    uri: str,
    state_dir: str,
    job_id: str | None = None,
    live_jobs: list | None = None,
    shutdown_timeout: int = 0,
    check_mode: bool = False,
    node: str | None = None,
    shm_dir: str = naming.SHM_DIR,
) -> dict:
    """Every domain and job dir of job `job_id`, or with no `job_id` of every job not in
    `live_jobs`; guests get `shutdown_timeout` seconds to shut down (0: destroyed at once).
    `node` (with `job_id`): only the job's domains planned for that node."""
    directories = _job_dirs(state_dir, job_id, live_jobs)
    for path in directories:
        if not check_mode:
            startlock.wait_for_start(path)  # a start that outlived its runner defines nothing after us
    hv = Hypervisor(uri)
    try:
        if job_id is not None:
            names = job_domain_names(hv, job_id)
            if node is not None:
                names = [name for name in names if naming.is_domain_of_node(name, job_id, node)]
        else:
            names = orphan_domain_names(hv, live_jobs or [])
        _remove_domains(hv, names, shutdown_timeout, check_mode)
        builds = [] if job_id is not None else _abandoned_builds(hv, state_dir, check_mode)
    finally:
        hv.close()
    regions = _shared_memory(job_id, live_jobs, shm_dir)
    if not check_mode:
        for path in directories:
            _unmount_ramdisk(path)
            shutil.rmtree(path, onerror=_gone_is_fine)
        for path in regions:
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
    return dict(
        changed=bool(names or directories or regions or builds),
        domains=names,
        directories=directories,
        shared_memory=regions,
        template_builds=builds,
    )


def _abandoned_builds(hv: Hypervisor, state_dir: str, check_mode: bool) -> list:
    """A snapshot template's build killed half-way: its guest and files (start: snapshot)."""
    where = os.path.join(state_dir, snapshot.SUBDIR)
    return hv.run("sweep template builds", where, lambda c: snapshot.abandoned_builds(c, where, check_mode))
