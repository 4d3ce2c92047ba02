# Copyright: vTorque contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""One waiter: poll a predicate until it holds or the timeout passes."""

from __future__ import annotations

import time


def wait_for(predicate, timeout: float, sleep: float = 0.25) -> bool:
    """True as soon as ``predicate()`` is true; False once ``timeout`` seconds have passed."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        time.sleep(min(sleep, remaining))
