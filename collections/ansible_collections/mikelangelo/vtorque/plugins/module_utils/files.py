# Copyright: vTorque contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""File checks shared by vm_disk, vm_seed and vm_sweep: root never follows a link it did not make."""

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
