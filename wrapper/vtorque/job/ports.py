"""User-mode SSH forward ports, claimed node-wide so that VMs of two jobs never share one.

A VM's port comes from its UUID (plan.py); two jobs' VMs on one node may still hash to the same
port, and the second QEMU then fails to start (the node would go offline for it). A claim is a
symbolic link `<state_dir>/ports/<port>` to the claiming job's directory. It is live exactly
while that directory exists, so no claim outlives its job's teardown, and a dangling one is
free to take. Claims are made under a lock on the ports directory. A port something else on
the node has bound (a daemon, or any outgoing connection's local port: the forward range may
lie in the kernel's ephemeral range) is passed over as well.
"""

import dataclasses
import errno
import fcntl
import os
import socket

from vtorque.job import statedir
from vtorque.job.plan import SSH_PORT_SPAN, PlanError, forward_ports_from


def claim_ports(plan, base):
    """`plan` with every VM's port claimed on this node: its own, or the next free one up."""
    if plan.network_mode != "user":
        return plan
    claims = statedir.subdir(plan.state_dir, "ports")
    statedir.job_dir(plan.state_dir, plan.job_id)  # the claims point at it
    lock = os.open(claims, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)
        mine, vms = set(), []
        for vm in plan.vms:
            port = _claim(claims, plan.job_dir, vm.ssh_port, base, mine)
            vms.append(dataclasses.replace(vm, ssh_port=port))
    finally:
        os.close(lock)
    return dataclasses.replace(plan, vms=tuple(vms))


def release_ports(state_dir, job_dir=None):
    """Remove the claims that point at `job_dir`, or with no `job_dir` every dead claim (they
    are free once their job dir is gone; this only tidies)."""
    release_claims(os.path.join(state_dir, "ports"), job_dir)


def release_claims(claims, job_dir=None):
    """release_ports for any directory of claims (ports, devices)."""
    try:
        names = os.listdir(claims)
    except FileNotFoundError:
        return
    for name in names:
        link = os.path.join(claims, name)
        target = claim_target(link)
        if target is not None and (target == job_dir if job_dir else not os.path.exists(link)):
            os.unlink(link)


def _claim(claims, job_dir, port, base, mine):
    for candidate in forward_ports_from(base, port):
        if candidate in mine:
            continue
        link = os.path.join(claims, str(candidate))
        if claim_target(link) != job_dir and not take_claim(link, job_dir):
            continue  # a live job's (or not a claim at all)
        if not _bindable(candidate):
            continue  # QEMU could not forward it (its claim stays with this job until its end)
        mine.add(candidate)
        return candidate
    raise PlanError(f"no free SSH forward port left in {base}..{base + SSH_PORT_SPAN - 1} on this node")


def _bindable(port):
    """Whether QEMU can listen on 127.0.0.1:`port` now (it binds with SO_REUSEADDR too)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError as err:
            if err.errno == errno.EADDRINUSE:
                return False
            raise
    return True


def take_claim(link, job_dir):
    """Make `link` a claim of `job_dir` when it is free or a dead job's; whether it was taken."""
    target = claim_target(link)
    if target is None and not os.path.lexists(link):  # free
        os.symlink(job_dir, link)
        return True
    if target is not None and target != job_dir and not os.path.exists(link):  # a dead job's
        os.unlink(link)
        os.symlink(job_dir, link)
        return True
    return False


def claim_target(link):
    """The job dir a claim points at, or None."""
    try:
        return os.readlink(link)
    except OSError:  # no such entry, or not a link
        return None
