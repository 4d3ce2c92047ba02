# Copyright: vTorque contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""Every VM of a job on one node in one module run (vm_start): the job directory and RAM disk,
each VM's overlay, data disk and seed, then every domain defined and started side by side, and
one wait for all of them. Each piece is the function vm_disk, vm_seed or vm_domain uses; this
only runs them together, so a job's start pays Ansible's per-module cost once per node instead
of once per step and VM."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

from ansible_collections.mikelangelo.vtorque.plugins.module_utils import domain_xml, hugepages
from ansible_collections.mikelangelo.vtorque.plugins.module_utils.common import URI_ARGSPEC
from ansible_collections.mikelangelo.vtorque.plugins.module_utils.connection import Hypervisor
from ansible_collections.mikelangelo.vtorque.plugins.module_utils.disk import ensure_disk
from ansible_collections.mikelangelo.vtorque.plugins.module_utils.domain import POLL, DomainState
from ansible_collections.mikelangelo.vtorque.plugins.module_utils.errors import (
    InvalidSpec,
    VTorqueModuleError,
    WaitTimeout,
)
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
    diffs = []
    changed = _directory(os.path.dirname(params["job_dir"]), JOB_DIR_MODE, check_mode)
    changed |= _directory(params["job_dir"], JOB_DIR_MODE, check_mode)
    if params.get("ramdisk"):
        changed |= _ramdisk(params["ramdisk"], check_mode, run_command)
    for vm in params["vms"]:
        changed |= _files(
            vm, seeds.get(vm["name"]), params["image"], check_mode, want_diff, run_qemu_img, diffs
        )
    started = _start_all(params["uri"], params["vms"], params["wait_timeout"], check_mode, want_diff)
    domains = [domain for domain, _changed, _diff in started]
    try:
        changed |= any(domain_changed for _domain, domain_changed, _diff in started)
        diffs += [diff for _domain, _changed, diff in started if diff]
        if params["wait"] and not check_mode:
            _wait_running(domains, params["wait_timeout"])
        result = dict(changed=changed, vms=[_summary(domain, check_mode) for domain in domains])
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


def _start_all(uri: str, vms: list, timeout: int, check_mode: bool, want_diff: bool) -> list:
    """(domain, changed, diff or None) of every VM, defined and started side by side, each on a
    connection of its own: libvirt starts the QEMUs in parallel, where one after the other
    costs about a second each on a busy node. One after the other when a VM uses huge pages, so
    each checks the pages the ones before it took."""
    parallel = not any(domain_xml.uses_hugepages(vm["xml"]) for vm in vms)
    with ThreadPoolExecutor(max_workers=min(MAX_PARALLEL_STARTS, len(vms)) if parallel else 1) as pool:
        futures = [pool.submit(_define_and_start, uri, vm, timeout, check_mode, want_diff) for vm in vms]
    started, failure = [], None
    for future in futures:
        try:
            started.append(future.result())
        except VTorqueModuleError as exc:
            failure = failure or exc
    if failure is not None:
        for domain, _changed, _diff in started:
            domain.hv.close()
        raise failure
    return started


def _define_and_start(uri: str, vm: dict, timeout: int, check_mode: bool, want_diff: bool):
    name, xml = vm["name"], vm["xml"]
    domain = DomainState(Hypervisor(uri), name, check_mode)
    try:
        if domain_xml.uses_hugepages(xml) and domain.state() != "running":
            hugepages.check(domain_xml.memory_kib(xml), name)  # before this VM changes anything
        changed, before, after = domain.define(xml)
        changed |= domain.start(timeout, wait=False)  # every VM starts before the one wait for them all
    except BaseException:
        domain.hv.close()
        raise
    diff = None
    if want_diff and before != after:
        diff = dict(before_header=f"domain {name}", after_header=f"domain {name}", before=before, after=after)
    return domain, changed, diff


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


def _summary(domain: DomainState, check_mode: bool) -> dict:
    stored = domain.inactive_xml()
    return dict(
        name=domain.name,
        state="running" if check_mode else domain.state(),
        uuid=domain_xml.domain_uuid(stored) if stored else "",
        macs=domain_xml.interface_macs(stored) if stored else [],
    )
