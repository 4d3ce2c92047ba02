"""The job's SSH keys, made fresh for every start: the owner's per-job pair (its private half
stays in the job dir, the owner's) and a host pair per VM (only the VM's seed keeps the
private half, so the prologue can pin the public one before the guest boots)."""

import os
import subprocess

from vtorque.guest.seeds import JobKeys

USER_KEY = "id_ed25519"


def make_job_keys(plan):
    user_key = os.path.join(plan.job_dir, USER_KEY)
    _keygen(user_key, f"vtorque-job-{plan.job_id}")
    os.chown(user_key, plan.owner.uid, plan.owner.gid)
    with open(user_key, encoding="utf-8") as private, open(user_key + ".pub", encoding="utf-8") as public:
        user_private, user_public = private.read(), public.read().strip()
    return JobKeys(user_private, user_public, {vm.name: _host_key(plan.job_dir, vm.name) for vm in plan.vms})


def _keygen(path, comment):
    for stale in (path, path + ".pub"):
        if os.path.lexists(stale):
            os.unlink(stale)
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", path],
        check=True,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
    )


def _host_key(job_dir, name):
    """(private, public) OpenSSH text of a fresh ed25519 host key."""
    path = os.path.join(job_dir, f".{name}-hostkey")
    _keygen(path, name)
    try:
        with open(path, encoding="utf-8") as private, open(path + ".pub", encoding="utf-8") as public:
            return private.read(), public.read().strip()
    finally:
        os.unlink(path)
        os.unlink(path + ".pub")
