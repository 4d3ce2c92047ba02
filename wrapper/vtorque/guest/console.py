"""What a guest printed on its serial console, for the record of a start that failed."""

import os

ALARMS = ("Kernel panic", "BUG:", "Oops", "No working init", "Failed to start", "emergency mode")


def console_tail(path, lines=15):
    """The last lines a guest printed on its serial console (this node's VMs only), led by the
    last alarm line (a panic, a failed unit) when it scrolled out of them, e.g. in a reboot loop."""
    try:
        with open(path, "rb") as handle:
            handle.seek(max(0, os.fstat(handle.fileno()).st_size - 65536))
            text = handle.read().decode("utf-8", "replace").replace("\r", "")
    except OSError:
        return ""
    all_lines = text.splitlines()
    tail = all_lines[-lines:]
    alarms = [line for line in all_lines if any(alarm in line for alarm in ALARMS)]
    if alarms and alarms[-1] not in tail:
        tail = [alarms[-1], "[...]", *tail]
    return "\n".join(tail)
