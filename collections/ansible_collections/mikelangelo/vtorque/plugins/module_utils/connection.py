# Copyright: vTorque contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""libvirt connection with bounded retries on transient errors.

Every operation is a function of the connection that looks its domain up by name, so a retry
after a dropped connection runs on a fresh connection instead of a stale domain handle.
"""

from __future__ import annotations

import time
import traceback

from ansible_collections.mikelangelo.vtorque.plugins.module_utils.errors import LibvirtFailure

LIBVIRT_IMPORT_ERROR = None
try:
    import libvirt

    HAS_LIBVIRT = True
except ImportError:
    libvirt = None
    HAS_LIBVIRT = False
    LIBVIRT_IMPORT_ERROR = traceback.format_exc()

RETRIES = 4
RETRY_DELAY = 0.5
_TRANSIENT_TEXT = (
    "cannot acquire state change lock",
    "connection reset",
    "end of file while reading data",
    "broken pipe",
    "client socket is closed",
)


def _code(exc) -> int:
    return exc.get_error_code() if hasattr(exc, "get_error_code") else -1


def is_transient(exc) -> bool:
    text = str(exc).lower()
    return any(t in text for t in _TRANSIENT_TEXT)


def is_no_domain(exc) -> bool:
    return HAS_LIBVIRT and _code(exc) == libvirt.VIR_ERR_NO_DOMAIN


class Hypervisor:
    """A libvirt URI; ``run`` retries transient failures on a fresh connection."""

    def __init__(self, uri: str, retries: int = RETRIES, delay: float = RETRY_DELAY):
        self.uri = uri
        self.retries = retries
        self.delay = delay
        self._conn = None
        if HAS_LIBVIRT:
            libvirt.registerErrorHandler(lambda *args: None, None)

    def _connection(self):
        if self._conn is None:
            self._conn = libvirt.open(self.uri)
        return self._conn

    def _drop(self):
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()
            except libvirt.libvirtError:
                pass

    def run(self, what: str, target: str | None, func):
        """``func(conn)``; raise LibvirtFailure naming ``what`` and ``target`` when it fails."""
        attempt = 0
        while True:
            try:
                return func(self._connection())
            except libvirt.libvirtError as exc:
                if attempt < self.retries and is_transient(exc):
                    attempt += 1
                    self._drop()
                    time.sleep(self.delay * attempt)
                    continue
                where = f" on domain {target}" if target else ""
                raise LibvirtFailure(f"{what}{where} failed ({self.uri}): {exc}", target=target) from exc

    def lookup(self, conn, name: str):
        """Domain by name, or None when it does not exist."""
        try:
            return conn.lookupByName(name)
        except libvirt.libvirtError as exc:
            if is_no_domain(exc):
                return None
            raise

    def close(self):
        self._drop()


_STATE_NAMES = {
    "VIR_DOMAIN_NOSTATE": "nostate",
    "VIR_DOMAIN_RUNNING": "running",
    "VIR_DOMAIN_BLOCKED": "running",
    "VIR_DOMAIN_PAUSED": "paused",
    "VIR_DOMAIN_SHUTDOWN": "shutting_down",
    "VIR_DOMAIN_SHUTOFF": "shutoff",
    "VIR_DOMAIN_CRASHED": "crashed",
    "VIR_DOMAIN_PMSUSPENDED": "pmsuspended",
}


def state_name(code: int) -> str:
    """libvirt's numeric domain state as a word (blocked counts as running: it is on a CPU queue)."""
    for constant, word in _STATE_NAMES.items():
        if getattr(libvirt, constant) == code:
            return word
    return "unknown"
