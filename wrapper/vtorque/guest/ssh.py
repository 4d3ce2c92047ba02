"""Reaching the guests over SSH: the per-job key, pinned host keys, and the wait until every
guest answers.

Root (the prologue's wait) and the owner (the job) each read their own copy of the pinned host
keys, so neither trusts a file the other can write.
"""

import os
from concurrent.futures import ThreadPoolExecutor

from ansible_collections.mikelangelo.vtorque.plugins.module_utils.connection import Hypervisor
from ansible_collections.mikelangelo.vtorque.plugins.module_utils.errors import LibvirtFailure

from vtorque.errors import InfrastructureError, JobCancelled
from vtorque.guest.readiness import ssh_banner, until_ok

ROOT_KNOWN_HOSTS = "known_hosts"  # root's (0600): the prologue's SSH wait
OWNER_KNOWN_HOSTS = "owner_known_hosts"  # the owner's (0600, theirs): the job


def ssh_command(job_dir, user, host, port, known_hosts=ROOT_KNOWN_HOSTS):
    """ssh as `user` with the job key, trusting only the job's pinned host keys."""
    options = {
        "StrictHostKeyChecking": "yes",
        "UserKnownHostsFile": os.path.join(job_dir, known_hosts),
        "GlobalKnownHostsFile": "/dev/null",
        "BatchMode": "yes",
        "IdentitiesOnly": "yes",
        "ConnectTimeout": "5",
        "LogLevel": "ERROR",
    }
    command = ["ssh", "-F", "/dev/null", "-i", os.path.join(job_dir, "id_ed25519"), "-p", str(port)]
    for key, value in options.items():
        command += ["-o", f"{key}={value}"]
    return [*command, f"{user}@{host}"]


def known_host_line(vm, public_key):
    host = vm.ssh_host if vm.ssh_port == 22 else f"[{vm.ssh_host}]:{vm.ssh_port}"
    return f"{host},{vm.hostname} {public_key}\n"


def wait_for_ssh(plan, deadline, here, cancelled=lambda: False):
    """Every guest accepts the owner's per-job key and shows its pinned host key. A guest on a
    node in `here` (this machine) that stops running (crash, a concurrent teardown) fails at
    once, not at the deadline."""
    hypervisor = Hypervisor(plan.uri) if any(vm.node in here for vm in plan.vms) else None

    def wait(vm):
        def still_worth_it():
            if cancelled():
                raise JobCancelled()
            if hypervisor is not None and vm.node in here and not _running(hypervisor, vm.name):
                raise InfrastructureError(f"{vm.name} stopped running before it accepted SSH")

        command = [*ssh_command(plan.job_dir, plan.owner.name, vm.ssh_host, vm.ssh_port), "true"]
        # Not behind a user-mode port forward: QEMU accepts there on the guest's behalf and keeps
        # retrying every look the guest did not answer, then delivers them all to its SSH server
        # (readiness.py).
        look = None if plan.network_mode == "user" else (lambda: ssh_banner(vm.ssh_host, vm.ssh_port))
        ready, last = until_ok(command, deadline=deadline, check=still_worth_it, answers=look)
        if not ready:
            detail = (last.splitlines() or ["no answer"])[-1]
            raise InfrastructureError(
                f"{vm.name} did not accept SSH on {vm.ssh_host}:{vm.ssh_port} in time: {detail}"
            )

    try:
        with ThreadPoolExecutor(max_workers=min(16, len(plan.vms))) as pool:
            for future in [pool.submit(wait, vm) for vm in plan.vms]:
                future.result()
    finally:
        if hypervisor is not None:
            hypervisor.close()


def _running(hypervisor, name):
    """Whether the domain still runs; a libvirtd that stopped answering is its own failure."""

    def active(conn):
        domain = hypervisor.lookup(conn, name)
        return domain is not None and bool(domain.isActive())

    try:
        return hypervisor.run("look up", name, active)
    except LibvirtFailure as err:
        raise InfrastructureError(f"libvirtd stopped answering while {name} was starting: {err}") from None
