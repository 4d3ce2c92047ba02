# Copyright: vTorque contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""Files and directories root makes or checks (vm_disk, vm_seed, vm_sweep and the host side):
root never follows a link it did not make, and never takes a mode from the umask."""

from __future__ import annotations

import os
import stat

from ansible_collections.mikelangelo.vtorque.plugins.module_utils.errors import InvalidSpec, Refused


def absolute(path: str, key: str) -> str:
    if not path or not os.path.isabs(path):
        raise InvalidSpec(f"{key} must be an absolute path, got {path!r}", target=path)
    return os.path.normpath(path)


def existing_regular_file(path: str) -> bool:
    """False when nothing is there; True for a regular file; Refused for links and anything else."""
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return False
    if not stat.S_ISREG(info.st_mode):
        raise Refused(
            f"{path} exists and is not a regular file (a link or device is never followed or replaced)",
            target=path,
        )
    return True


def remove_file(path: str) -> bool:
    try:
        os.unlink(path)
    except FileNotFoundError:
        return False
    return True


# pbs_mom runs every hook with umask 0077 (docs/torque.md), so nothing root makes may take its
# mode from the umask: the two helpers below set mode and owner explicitly, on a descriptor
# opened without following links.


def ensure_dir(path: str, mode: int, uid: int = 0, gid: int = 0) -> str:
    """`path` as a directory (its parent must exist) with exactly `mode`, owned by uid:gid; an
    existing one is brought to that mode and owner (e.g. made 0700 by an older version); a link
    or another kind of file in its place is refused."""
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as err:
        raise Refused(
            f"{path} is not a directory (a link is never followed): {err.strerror}", target=path
        ) from None
    try:
        info = os.fstat(fd)
        if (info.st_uid, info.st_gid) != (uid, gid):
            os.fchown(fd, uid, gid)
        if stat.S_IMODE(info.st_mode) != mode:
            os.fchmod(fd, mode)
    finally:
        os.close(fd)
    return path


def ensure_dirs(root: str, layout: dict) -> None:
    """Every `relative path: mode` of `layout` under the existing `root`, parents first."""
    for relative in sorted(layout, key=lambda name: name.count("/")):
        ensure_dir(os.path.join(root, relative), layout[relative])


def write_atomic(
    path: str, data: bytes | str, mode: int, owner: tuple | None = None, sync: bool = False
) -> None:
    """Replace `path` with `data`: a fresh temp file beside it (never through a link), exactly
    `mode`, given to `owner` (uid, gid) when set, then renamed over `path`."""
    if isinstance(data, str):
        data = data.encode("utf-8")
    temp = os.path.join(os.path.dirname(path), f".{os.path.basename(path)}.{os.getpid()}.tmp")
    remove_file(temp)  # a stale one from a killed run
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        with os.fdopen(fd, "wb") as handle:
            os.fchmod(handle.fileno(), mode)
            if owner is not None:
                os.fchown(handle.fileno(), *owner)
            handle.write(data)
            if sync:
                handle.flush()
                os.fsync(handle.fileno())
        os.replace(temp, path)
    except BaseException:
        remove_file(temp)
        raise
