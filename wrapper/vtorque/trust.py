"""Reading files that root acts on without trusting whoever could write them.

Root code (hooks, catalog edits) calls these so a user cannot swap in a link, a file they
own, or a huge file. The checks happen on the opened descriptor, so there is no window
between checking and reading. Root reads a user's file as that user (owner_side): a private
file, a root-squashed NFS mount and a link to a root-only file then all work as they should.
"""

import os
import stat

from vtorque.errors import UntrustedFileError
from vtorque.owner_side import owner_side


@owner_side
def read_trusted(path, *, owner_uid, max_bytes, what):
    """Bytes of regular file `path` if it is no link, owned by `owner_uid`, not writable by
    group or others, and at most `max_bytes` long; UntrustedFileError otherwise."""
    with _open_no_link(path, what) as handle:
        info = os.fstat(handle.fileno())
        check_mode(info, path, owner_uid=owner_uid, what=what)
        if info.st_size > max_bytes:
            raise UntrustedFileError(f"{what} {path} is {info.st_size} bytes; the limit is {max_bytes}")
        data = handle.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise UntrustedFileError(f"{what} {path} grew beyond {max_bytes} bytes while being read")
    return data


@owner_side
def read_head(path, *, owner_uid, size, what):
    """The first `size` bytes of `path` (an image header), never through a link."""
    with _open_no_link(path, what) as handle:
        return handle.read(size)


def _open_no_link(path, what):
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as err:
        if os.path.islink(path):
            raise UntrustedFileError(f"{what} {path} is a symbolic link; refusing to follow it") from err
        raise UntrustedFileError(f"cannot open {what} {path}: {err.strerror}") from err
    return os.fdopen(fd, "rb")


@owner_side
def check_trusted_path(path, *, owner_uid, what):
    """The same owner/mode/no-link rules for a file that is used by name (an image, a kernel)."""
    try:
        info = os.lstat(path)
    except OSError as err:
        raise UntrustedFileError(f"{what} {path}: {err.strerror}") from err
    if stat.S_ISLNK(info.st_mode):
        raise UntrustedFileError(f"{what} {path} is a symbolic link; refusing to follow it")
    check_mode(info, path, owner_uid=owner_uid, what=what)


def check_mode(info, path, *, owner_uid, what):
    if not stat.S_ISREG(info.st_mode):
        raise UntrustedFileError(f"{what} {path} is not a regular file")
    if info.st_uid != owner_uid:
        raise UntrustedFileError(f"{what} {path} is owned by uid {info.st_uid}, expected uid {owner_uid}")
    if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise UntrustedFileError(
            f"{what} {path} is writable by group or others (mode {stat.S_IMODE(info.st_mode):04o})"
        )
