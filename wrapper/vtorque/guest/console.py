"""A guest's serial console: its log (a pty whose output virtlogd writes to a root-owned file
in the job's root-owned directory), the tail of it for the record of a start that failed, the
job owner's read access to it, and reading it (`vtorque console`).

The owner reads the log through a POSIX access ACL (`u:<owner>:r`) that root sets on the open
file once the VMs are up: the file stays root's, 0600 plus that one entry, and root never
reads anything the owner can write. A default ACL on the directory would not do: virtlogd
creates a file 0600, which masks a named entry to nothing, and it would grant the owner every
other file made there (disks, seeds) for as long as the creator's mode allows.
"""

import codecs
import os
import stat
import struct
import time

ALARMS = ("Kernel panic", "BUG:", "Oops", "No working init", "Failed to start", "emergency mode")
ACL_XATTR = "system.posix_acl_access"
_ACL_VERSION = 2
_ACL_USER_OBJ, _ACL_USER, _ACL_GROUP_OBJ, _ACL_MASK, _ACL_OTHER = 0x01, 0x02, 0x04, 0x10, 0x20
_NO_ID = 0xFFFFFFFF
_READ = 4
CHUNK = 65536


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


def let_owner_read(path, uid):
    """Add `u:<uid>:r` to the access ACL of console log `path` (root's regular file, never a
    link), keeping its mode's other rights; OSError when it is missing, not root's, or the
    filesystem has no ACLs."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NOCTTY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_uid != 0:
            raise PermissionError(f"{path} is not root's regular file")
        mode = stat.S_IMODE(info.st_mode)
        entries = (
            (_ACL_USER_OBJ, mode >> 6 & 7, _NO_ID),
            (_ACL_USER, _READ, uid),
            (_ACL_GROUP_OBJ, mode >> 3 & 7, _NO_ID),
            (_ACL_MASK, mode >> 3 & 7 | _READ, _NO_ID),
            (_ACL_OTHER, mode & 7, _NO_ID),
        )
        acl = struct.pack("<I", _ACL_VERSION) + b"".join(struct.pack("<HHI", *entry) for entry in entries)
        os.setxattr(fd, ACL_XATTR, acl)
    finally:
        os.close(fd)


class TerminalSafe:
    """Guest output made harmless for a terminal, incrementally (UTF-8 may split between
    reads): control characters other than newline and tab are shown (`^[`, `\\x9b`) instead of
    sent, so a guest cannot drive the reader's terminal (title, clipboard, key remapping);
    carriage returns are dropped."""

    _TABLE = {
        **{code: f"^{chr(code + 64)}" for code in range(32) if chr(code) not in "\n\t"},
        0x0D: None,
        0x7F: "^?",
        **{code: f"\\x{code:02x}" for code in range(0x80, 0xA0)},
    }

    def __init__(self):
        self._decoder = codecs.getincrementaldecoder("utf-8")("replace")

    def __call__(self, data, final=False):
        return self._decoder.decode(data, final).translate(self._TABLE).encode("utf-8")


def copy_log(path, write, *, follow=False, alive=lambda: True, poll=0.2, check_every=1.0):
    """Write console log `path` from its start through `write(bytes)`; with `follow`, then what
    the guest prints next until `alive()` is false (asked every `check_every` seconds) or the
    log is gone (the job's files were removed). When virtlogd rotates the log (renames it and
    starts a new file), the rest of the old file and then the new file follow. OSError when
    the log (the new one too) cannot be opened."""
    handle = _open_log(path)
    try:
        checked = time.monotonic()
        while True:
            data = handle.read(CHUNK)
            if data:
                write(data)
                continue
            if not follow:
                return
            if _replaced(path, handle):
                _drain(handle, write)  # what virtlogd wrote before it renamed the file
                handle.close()
                handle = _open_log(path)
                continue
            if not os.path.exists(path):
                return
            if time.monotonic() - checked >= check_every:
                checked = time.monotonic()
                if not alive():
                    _drain(handle, write)
                    return
            time.sleep(poll)
    finally:
        handle.close()


def _drain(handle, write):
    rest = handle.read()
    if rest:
        write(rest)


def _open_log(path):
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NOCTTY | os.O_CLOEXEC)
    return os.fdopen(fd, "rb", buffering=0)


def _replaced(path, handle):
    """True when `path` is now another file than the open one (virtlogd rotated it)."""
    try:
        now = os.stat(path)
    except FileNotFoundError:
        return False
    mine = os.fstat(handle.fileno())
    return (now.st_dev, now.st_ino) != (mine.st_dev, mine.st_ino)
