"""Root touches a job owner's files as the owner, in a forked child that has become them.

The owner's spool dir and files are theirs alone (0700/0600) and may sit on NFS exported with
root_squash, where root is nobody. A child with the owner's groups, gid and uid reads, tests,
writes or removes for root, so nothing needs to be readable by other users, it works through
root_squash, and the kernel (not our checks alone) keeps a planted link from reaching files
only root may touch. The child is not dumpable after the uid change, so the owner cannot
trace it; it can only kill it, which fails the call.
"""

import functools
import json
import os
import pwd

from vtorque.errors import UntrustedFileError


def owner_side(func):
    """Run `func` as user `owner_uid` (a keyword argument) when the caller is root and the
    owner is not. Results must be bytes or JSON values; a VTorqueError or OSError raised in
    the child comes back as UntrustedFileError with the same message."""

    @functools.wraps(func)
    def wrapper(*args, owner_uid, **kwargs):
        if os.geteuid() != 0 or owner_uid == 0:
            return func(*args, owner_uid=owner_uid, **kwargs)
        return _in_child(owner_uid, functools.partial(func, *args, owner_uid=owner_uid, **kwargs))

    return wrapper


def _in_child(uid, call):
    try:
        entry = pwd.getpwuid(uid)
    except KeyError:
        raise UntrustedFileError(f"uid {uid} has no passwd entry") from None
    groups = os.getgrouplist(entry.pw_name, entry.pw_gid)
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child's work is seen through its pipe
        status = 1
        try:
            os.close(read_end)
            os.setgroups(groups)
            os.setgid(entry.pw_gid)
            os.setuid(uid)
            with os.fdopen(write_end, "wb") as out:
                out.write(_encode(call))
            status = 0
        finally:
            os._exit(status)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        data = pipe.read()
    _, wait_status = os.waitpid(pid, 0)
    if os.waitstatus_to_exitcode(wait_status) != 0 or not data:
        raise UntrustedFileError(f"the helper acting as uid {uid} ended without an answer")
    return _decode(data)


def _encode(call):
    try:
        result = call()
    except Exception as err:  # noqa: BLE001 - every failure goes back to the parent as text
        return b"E" + str(err).encode("utf-8", "replace")
    if isinstance(result, bytes):
        return b"B" + result
    return b"J" + json.dumps(result).encode()


def _decode(data):
    kind, body = data[:1], data[1:]
    if kind == b"B":
        return body
    if kind == b"J":
        return json.loads(body)
    raise UntrustedFileError(body.decode("utf-8", "replace"))
