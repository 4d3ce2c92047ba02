# Copyright: vTorque contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""One exception family for the collection; ``common.run_module`` turns it into ``fail_json``."""

from __future__ import annotations


class VTorqueModuleError(Exception):
    """A failure with a short machine-readable ``reason`` and, where known, the domain or path."""

    reason = "error"

    def __init__(self, msg: str, target: str | None = None, reason: str | None = None):
        super().__init__(msg)
        self.msg = msg
        self.target = target
        if reason:
            self.reason = reason


class InvalidSpec(VTorqueModuleError):
    reason = "invalid"


class LibvirtFailure(VTorqueModuleError):
    reason = "libvirt"


class WaitTimeout(VTorqueModuleError):
    reason = "timeout"


class Unavailable(VTorqueModuleError):
    """The node lacks what the definition needs (e.g. huge pages)."""

    reason = "unavailable"


class Refused(VTorqueModuleError):
    """Acting would destroy something vTorque did not create."""

    reason = "refused"
