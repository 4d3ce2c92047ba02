"""The job's SSH keys: the owner's per-job pair (its private half stays in the job dir, the
owner's) and a host pair per VM (only the VM's seed keeps the private half, so the start can
pin the public one before the guest boots).

Two ways to make them. Where one node starts every VM (Torque's mother superior), they are
fresh for every start (`ssh-keygen`). Where each node starts its own VMs in its own hook
(Slurm), every node must hold the same keys without talking to the others: each key is then
an ed25519 key whose seed is an HMAC of the job's identity under a root-only site secret
(`derive_job_keys`). Nothing secret is stored in the batch system's records: the secret
stays on the nodes, and the identity (cluster, job id, owner uid, VM name) is public.
"""

import hashlib
import hmac
import os
import stat
import subprocess

from vtorque.errors import VTorqueError
from vtorque.guest.seeds import JobKeys

USER_KEY = "id_ed25519"
MIN_SECRET_BYTES = 32


def make_job_keys(plan, secret=None, scope=""):
    """JobKeys for `plan`: derived from `secret` (bytes) within `scope` (e.g. the cluster name)
    when given, else fresh. The owner's private key is written to the job dir either way."""
    if secret is None:
        user_private, user_public = _generated(
            os.path.join(plan.job_dir, ".owner-key"), f"vtorque-job-{plan.job_id}"
        )
        hosts = {
            vm.name: _generated(os.path.join(plan.job_dir, f".{vm.name}-hostkey"), vm.name) for vm in plan.vms
        }
    else:
        identity = (scope, plan.job_id, str(plan.owner.uid))
        user_private, user_public = _derived(secret, ("owner", *identity), f"vtorque-job-{plan.job_id}")
        hosts = {vm.name: _derived(secret, ("host", *identity, vm.name), vm.name) for vm in plan.vms}
    _write_owner_key(plan, user_private, user_public)
    return JobKeys(user_private, user_public, hosts)


def read_secret(path):
    """The site secret: a root-owned regular file no one else may read, of at least
    MIN_SECRET_BYTES; anything else is refused (a readable secret gives away every job's VMs)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as err:
        raise VTorqueError(f"cannot read the key secret {path}: {err.strerror} (links are refused)") from None
    with os.fdopen(fd, "rb") as handle:
        info = os.fstat(handle.fileno())
        if not stat.S_ISREG(info.st_mode) or info.st_uid != 0 or info.st_mode & 0o077:
            raise VTorqueError(
                f"the key secret {path} must be a regular file of root's, mode 0600"
                f" (it is uid {info.st_uid}, mode {stat.S_IMODE(info.st_mode):04o})"
            )
        secret = handle.read()
    if len(secret) < MIN_SECRET_BYTES:
        raise VTorqueError(
            f"the key secret {path} holds {len(secret)} bytes; it needs {MIN_SECRET_BYTES} or more"
        )
    return secret


def _derived(secret, identity, comment):
    """(private, public) OpenSSH text of the ed25519 key seeded by HMAC-SHA256(secret, identity)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    message = "\0".join(("vtorque-job-key-v1", *identity)).encode("utf-8")
    seed = hmac.new(secret, message, hashlib.sha256).digest()
    key = Ed25519PrivateKey.from_private_bytes(seed)
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
    ).decode("ascii")
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    return private, f"{public.decode('ascii')} {comment}"


def _generated(path, comment):
    """(private, public) OpenSSH text of a fresh ed25519 key; its files are gone afterwards."""
    for stale in (path, path + ".pub"):
        if os.path.lexists(stale):
            os.unlink(stale)
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", path],
        check=True,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
    )
    try:
        with open(path, encoding="utf-8") as private, open(path + ".pub", encoding="utf-8") as public:
            return private.read(), public.read().strip()
    finally:
        os.unlink(path)
        os.unlink(path + ".pub")


def _write_owner_key(plan, private, public):
    """The owner's half in the job dir, theirs alone (their job's ssh reads it)."""
    from ansible_collections.mikelangelo.vtorque.plugins.module_utils.files import write_atomic

    path = os.path.join(plan.job_dir, USER_KEY)
    ids = (plan.owner.uid, plan.owner.gid)
    write_atomic(path, private, 0o600, ids)
    write_atomic(path + ".pub", public + "\n", 0o644, ids)
