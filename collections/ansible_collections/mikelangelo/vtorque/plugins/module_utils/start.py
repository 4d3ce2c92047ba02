# Copyright: vTorque contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""Every VM of a job on one node in one module run (vm_start): the job directory and RAM disk,
each VM's overlay, data disk and seed, then every domain defined and started side by side, and
one wait for all of them. Each piece is the function vm_disk, vm_seed or vm_domain uses; this
only runs them together, so a job's start pays Ansible's per-module cost once per node instead
of once per step and VM.

With ``image.start: snapshot`` each VM starts from a saved template of its image instead of a
fresh boot, its identity made new before it is reachable (module_utils/snapshot.py); when that
is not possible the VM boots afresh and its result says why."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

from ansible_collections.mikelangelo.vtorque.plugins.module_utils import (
    domain_xml,
    hugepages,
    snapshot,
    startlock,
)
from ansible_collections.mikelangelo.vtorque.plugins.module_utils.common import URI_ARGSPEC
from ansible_collections.mikelangelo.vtorque.plugins.module_utils.connection import Hypervisor
from ansible_collections.mikelangelo.vtorque.plugins.module_utils.disk import ensure_disk, marker_path
from ansible_collections.mikelangelo.vtorque.plugins.module_utils.domain import POLL, DomainState
from ansible_collections.mikelangelo.vtorque.plugins.module_utils.errors import (
    InvalidSpec,
    VTorqueModuleError,
    WaitTimeout,
)
from ansible_collections.mikelangelo.vtorque.plugins.module_utils.files import remove_file
from ansible_collections.mikelangelo.vtorque.plugins.module_utils.seed import ensure_seed
from ansible_collections.mikelangelo.vtorque.plugins.module_utils.waiter import wait_for

JOB_DIR_MODE = 0o711  # the job owner reads their key and vms.json in it (docs/torque.md)
RAMDISK_MODE = 0o700
MAX_PARALLEL_STARTS = 8

START_ARGSPEC = dict(
    URI_ARGSPEC,
    job_dir=dict(type="path", required=True),
    ramdisk=dict(
        type="dict",
        options=dict(path=dict(type="path", required=True), size_mib=dict(type="int", required=True)),
    ),
    image=dict(
        type="dict",
        required=True,
        options=dict(
            path=dict(type="path", required=True),
            format=dict(type="str", default="qcow2", choices=["qcow2", "raw"]),
            start=dict(type="str", default="boot", choices=["boot", "snapshot"]),
            snapshot_dir=dict(type="path"),
        ),
    ),
    domain=dict(type="dict", default={}),
    vms=dict(
        type="list",
        elements="dict",
        default=[],
        options=dict(
            name=dict(type="str", required=True),
            node=dict(type="str"),
            overlay=dict(type="path", required=True),
            data_disk=dict(
                type="dict",
                options=dict(path=dict(type="path", required=True), size=dict(type="str", required=True)),
            ),
            domain=dict(type="dict", default={}),
            xml=dict(type="str"),
        ),
    ),
    seeds=dict(
        type="list",
        elements="dict",
        default=[],
        options=dict(
            name=dict(type="str", required=True),
            node=dict(type="str"),
            path=dict(type="path", required=True),
            meta_data=dict(type="dict", required=True),
            user_data=dict(type="dict", default={}),
            network_config=dict(type="dict"),
        ),
    ),
    wait=dict(type="bool", default=True),
    wait_timeout=dict(type="int", default=120),
)


def ensure_started(params: dict, check_mode: bool, want_diff: bool, run_qemu_img, run_command) -> dict:
    """vm_start: ``run_qemu_img(argv)`` and ``run_command(argv)`` raise on failure."""
    seeds = {seed["name"]: seed for seed in params["seeds"]}
    unknown = sorted(set(seeds) - {vm["name"] for vm in params["vms"]})
    if unknown:
        raise InvalidSpec(f"seeds for VMs not in vms: {', '.join(unknown)}", target=unknown[0])
    for vm in params["vms"]:
        _check_definition(vm)
    changed = _directory(os.path.dirname(params["job_dir"]), JOB_DIR_MODE, check_mode)
    changed |= _directory(params["job_dir"], JOB_DIR_MODE, check_mode)
    if check_mode:
        return _ensure_started(params, seeds, changed, check_mode, want_diff, run_qemu_img, run_command)
    with startlock.starting(params["job_dir"]):  # a teardown of the job here waits for it
        return _ensure_started(params, seeds, changed, check_mode, want_diff, run_qemu_img, run_command)


def _ensure_started(params, seeds, changed, check_mode, want_diff, run_qemu_img, run_command) -> dict:
    diffs = []
    if params.get("ramdisk"):
        changed |= _ramdisk(params["ramdisk"], check_mode, run_command)
    for vm in params["vms"]:
        changed |= _files(
            vm, seeds.get(vm["name"]), params["image"], check_mode, want_diff, run_qemu_img, diffs
        )
    templates = {}
    if params["image"]["start"] == "snapshot" and not check_mode:
        templates = _templates(params, seeds, run_qemu_img)

    def remake_disks(vm):
        _remake_disks(vm, params["image"], run_qemu_img)

    started = _start_all(
        params["uri"], params["vms"], params["wait_timeout"], check_mode, want_diff, templates, remake_disks
    )
    domains = [domain for domain, _changed, _diff, _how in started]
    try:
        changed |= any(domain_changed for _domain, domain_changed, _diff, _how in started)
        diffs += [diff for _domain, _changed, diff, _how in started if diff]
        if params["wait"] and not check_mode:
            _wait_running(domains, params["wait_timeout"])
        result = dict(
            changed=changed, vms=[_summary(domain, check_mode, how) for domain, _c, _d, how in started]
        )
        if templates:
            result["templates"] = sorted(
                {t["key"]: t for t, _note, _fifo, _seed in templates.values() if t}.values(),
                key=lambda t: t["key"],
            )
        warnings = [warning for domain in domains for warning in domain.warnings]
    finally:
        for domain in domains:
            domain.hv.close()
    if want_diff and diffs:
        result["diff"] = diffs
    if warnings:
        result["warnings"] = warnings
    return result


def _directory(path: str, mode: int, check_mode: bool) -> bool:
    """``path`` a directory of root's with ``mode`` (the hooks run with umask 0077, so every mode is set)."""
    if os.path.islink(path) or (os.path.lexists(path) and not os.path.isdir(path)):
        raise InvalidSpec(f"{path} exists and is not a directory", target=path)
    if not os.path.isdir(path):
        if not check_mode:
            os.mkdir(path, mode)
            os.chmod(path, mode)
        return True
    status = os.stat(path)
    if (status.st_mode & 0o7777) == mode and status.st_uid == 0:
        return False
    if not check_mode:
        os.chown(path, 0, -1)
        os.chmod(path, mode)
    return True


def _ramdisk(ramdisk: dict, check_mode: bool, run_command) -> bool:
    """-vm fs_type=ramdisk: a tmpfs the node's VM disks live in (the sweep unmounts it)."""
    path = ramdisk["path"]
    changed = _directory(path, RAMDISK_MODE, check_mode)
    if os.path.ismount(path):
        return changed
    if not check_mode:
        run_command(
            ["mount", "-t", "tmpfs", "-o", f"size={ramdisk['size_mib']}m,mode=0700", "vtorque-ramdisk", path]
        )
    return True


def _files(
    vm: dict, seed: dict | None, image: dict, check_mode: bool, want_diff: bool, run_qemu_img, diffs
) -> bool:
    overlay = dict(
        path=vm["overlay"],
        state="present",
        backing_file=image["path"],
        backing_format=image["format"],
        size=None,
        force=False,
    )
    changed = ensure_disk(overlay, check_mode, run_qemu_img)["changed"]
    if vm.get("data_disk"):
        data = dict(vm["data_disk"], state="present", backing_file=None, backing_format="qcow2", force=False)
        changed |= ensure_disk(data, check_mode, run_qemu_img)["changed"]
    if seed is None:
        return changed
    outcome = ensure_seed(dict(seed, state="present"), check_mode, want_diff)
    if outcome["changed"] and want_diff:
        # vm_seed's diff shows the files, which hold the VM's private host key: only checksums here.
        before = outcome["diff"]["before"] or "(no seed image)\n"
        diffs.append(
            dict(
                before_header=seed["path"],
                after_header=seed["path"],
                before=before,
                after=f"seed image sha256 {outcome['sha256']}\n",
            )
        )
    return changed | outcome["changed"]


def _check_definition(vm: dict) -> None:
    """Before anything is made: every VM has its rendered definition, naming it."""
    name, xml = vm["name"], vm.get("xml")
    if not xml:
        raise InvalidSpec(
            f"VM {name} has no domain definition: call vm_start through its action plugin, which renders "
            "vms[].domain, or pass vms[].xml",
            target=name,
        )
    if domain_xml.domain_name(xml) != name:
        raise InvalidSpec(
            f"the definition names domain {domain_xml.domain_name(xml)!r}, the VM is {name!r}", target=name
        )


def _templates(params: dict, seeds: dict, run_qemu_img) -> dict:
    """VM name -> (its template, built now when missing, or None; why it boots afresh; the FIFO
    its restore reads; its seed), for ``image.start: snapshot``. A template is built once per shape."""
    image = params["image"]
    snapshot_dir = image.get("snapshot_dir") or snapshot.DEFAULT_DIR
    found, by_key = {}, {}
    hv = Hypervisor(params["uri"])

    def build(key, shape, size):
        try:
            return hv.run(
                "build snapshot template",
                None,
                lambda conn: snapshot.ensure_template(
                    conn, snapshot_dir, key, shape, image, size, params["wait_timeout"], run_qemu_img
                ),
            )
        except VTorqueModuleError as exc:
            return exc

    try:
        versions = hv.run("read versions", None, lambda conn: (conn.getLibVersion(), conn.getVersion()))
        for vm in params["vms"]:
            seed, data = seeds.get(vm["name"]), vm.get("data_disk") or {}
            fifo = os.path.join(params["job_dir"], f".{vm['name']}.restore")
            try:
                if seed is None:
                    raise snapshot.SnapshotUnavailable("the VM has no seed to re-identify it with")
                shape = snapshot.template_shape(vm["xml"], vm["overlay"], data.get("path"), seed["path"])
                key = snapshot.template_key(shape, image, data.get("size"), versions)
                if key not in by_key:
                    by_key[key] = build(key, shape, data.get("size"))
                if isinstance(by_key[key], VTorqueModuleError):
                    raise by_key[key]
                found[vm["name"]] = (by_key[key], None, fifo, seed["path"])
            except VTorqueModuleError as exc:
                found[vm["name"]] = (None, f"no snapshot start: {exc.msg}", fifo, None)
    finally:
        hv.close()
    return found


def _remake_disks(vm: dict, image: dict, run_qemu_img) -> None:
    """After a failed snapshot start the restored guest may have written to them: new ones."""
    for path in (vm["overlay"], (vm.get("data_disk") or {}).get("path")):
        if path:
            remove_file(path)
            remove_file(marker_path(path))
    _files(vm, None, image, False, False, run_qemu_img, [])


def _start_all(
    uri: str, vms: list, timeout: int, check_mode: bool, want_diff: bool, templates=None, remake_disks=None
) -> list:
    """(domain, changed, diff or None, how it started) of every VM, defined and started side by
    side, each on a connection of its own: libvirt starts the QEMUs in parallel, where one after
    the other costs about a second each on a busy node. One after the other when a VM uses huge
    pages, so each checks the pages the ones before it took."""
    parallel = not any(domain_xml.uses_hugepages(vm["xml"]) for vm in vms)
    with ThreadPoolExecutor(max_workers=min(MAX_PARALLEL_STARTS, len(vms)) if parallel else 1) as pool:
        futures = [
            pool.submit(
                _define_and_start,
                uri,
                vm,
                timeout,
                check_mode,
                want_diff,
                (templates or {}).get(vm["name"]),
                remake_disks,
            )
            for vm in vms
        ]
    started, failure = [], None
    for future in futures:
        try:
            started.append(future.result())
        except VTorqueModuleError as exc:
            failure = failure or exc
    if failure is not None:
        for domain, _changed, _diff, _how in started:
            domain.hv.close()
        raise failure
    return started


def _define_and_start(
    uri: str, vm: dict, timeout: int, check_mode: bool, want_diff: bool, template=None, remake_disks=None
):
    name, xml = vm["name"], vm["xml"]
    domain = DomainState(Hypervisor(uri), name, check_mode)
    how = dict(start="boot")
    try:
        if domain_xml.uses_hugepages(xml) and domain.state() != "running":
            hugepages.check(domain_xml.memory_kib(xml), name)  # before this VM changes anything
        changed, before, after = domain.define(xml)
        if template is not None:
            how = _from_snapshot(domain, vm, template, timeout, remake_disks)
            changed |= how["start"] == "snapshot"
        if how["start"] == "boot":
            changed |= domain.start(timeout, wait=False)  # every VM starts before the one wait for them all
    except BaseException:
        domain.hv.close()
        raise
    diff = None
    if want_diff and before != after:
        diff = dict(before_header=f"domain {name}", after_header=f"domain {name}", before=before, after=after)
    return domain, changed, diff, how


def _from_snapshot(domain: DomainState, vm: dict, template: tuple, timeout: int, remake_disks) -> dict:
    """How the VM started: from its template, or (start boot and why) to be booted afresh."""
    found, note, fifo, seed_path = template
    if found is None or domain.state() != "shutoff":
        return dict(start="boot", note=note) if note else dict(start="boot")
    try:
        domain.hv.run(
            "start from snapshot",
            domain.name,
            lambda conn: snapshot.start_from(conn, found, vm["xml"], seed_path, fifo, timeout),
        )
    except VTorqueModuleError as exc:
        domain.destroy()
        remake_disks(vm)
        return dict(start="boot", note=f"snapshot start failed, booted afresh: {exc.msg}")
    return dict(start="snapshot", template=found["key"])


def _wait_running(domains: list, timeout: int) -> None:
    if wait_for(lambda: all(domain.is_running() for domain in domains), timeout, POLL):
        return
    late = [domain for domain in domains if not domain.is_running()]
    raise WaitTimeout(
        "domain {} did not run within {} s (state: {})".format(
            ", ".join(domain.name for domain in late), timeout, ", ".join(domain.state() for domain in late)
        ),
        target=late[0].name,
    )


def _summary(domain: DomainState, check_mode: bool, how: dict) -> dict:
    stored = domain.inactive_xml()
    return dict(
        how,
        name=domain.name,
        state="running" if check_mode else domain.state(),
        uuid=domain_xml.domain_uuid(stored) if stored else "",
        macs=domain_xml.interface_macs(stored) if stored else [],
    )
