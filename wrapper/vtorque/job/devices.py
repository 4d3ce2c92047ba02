"""-vm vrdma: PCI devices of the node's pool (`vrdma.devices`), claimed node-wide so that VMs
of two jobs never get the same one.

A claim is a symbolic link `<state_dir>/devices/<PCI address>` to the claiming job's directory,
made under a lock on the devices directory, exactly as SSH ports are claimed (ports.py): it is
live while that directory exists, so a crashed job's devices are free again once its directory
is gone, teardown removes the job's claims and `vtorque sweep` the dead ones.
"""

import dataclasses
import fcntl
import os

from vtorque.job import statedir
from vtorque.job.plan import PlanError
from vtorque.job.ports import claim_target, release_claims, take_claim

CLAIMS = "devices"


def claim_devices(plan, pool, node):
    """`plan` with one device of `pool[node]` claimed for each VM on `node` (the node this runs
    on: the VMs it starts); a VM that holds one from an earlier attempt keeps it."""
    if not plan.vrdma:
        return plan
    claims = statedir.subdir(plan.state_dir, CLAIMS)
    statedir.job_dir(plan.state_dir, plan.job_id)  # the claims point at it
    lock = os.open(claims, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)
        free = [address.lower() for address in pool.get(node, ())]
        mine = [address for address in free if claim_target(os.path.join(claims, address)) == plan.job_dir]
        vms = []
        for vm in plan.vms:
            if vm.node != node:
                vms.append(vm)
                continue
            address = mine.pop(0) if mine else _claim(claims, plan.job_dir, free, node)
            free.remove(address)
            vms.append(dataclasses.replace(vm, hostdevs=(address,)))
    finally:
        os.close(lock)
    return dataclasses.replace(plan, vms=tuple(vms))


def release_devices(state_dir, job_dir=None):
    """The claims of `job_dir`, or with no `job_dir` every dead claim."""
    release_claims(os.path.join(state_dir, CLAIMS), job_dir)


def _claim(claims, job_dir, free, node):
    for address in free:
        if take_claim(os.path.join(claims, address), job_dir):
            return address
    raise PlanError(f"vrdma: every device of node {node} in vrdma.devices is held by another running job")
