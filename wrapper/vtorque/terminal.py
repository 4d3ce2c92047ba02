"""A user's terminal relayed to a program on a pty of its own, as ssh and `qsub -I` relay one.

vsub -I runs qsub on such a pty (to read the job id qsub prints there and still give qsub a
terminal); the pbs_mom harness relays its job's pty the same way. The local terminal is put in
raw mode for the relay, so every key (Ctrl-C, Ctrl-D) reaches the far side as a byte.
"""

import contextlib
import fcntl
import os
import select
import termios
import tty

CHUNK = 65536


@contextlib.contextmanager
def raw_mode(fd):
    """`fd`'s terminal in raw mode for the block, restored after; no-op when it is no terminal."""
    if not os.isatty(fd):
        yield
        return
    saved = termios.tcgetattr(fd)
    tty.setraw(fd, termios.TCSANOW)
    try:
        yield
    finally:
        with contextlib.suppress(OSError, termios.error):  # a terminal that hung up: nothing to restore
            termios.tcsetattr(fd, termios.TCSADRAIN, saved)


def copy_window_size(source_fd, target_fd):
    """The window size of terminal `source_fd` given to the pty `target_fd` (its master or
    slave); nothing when `source_fd` is no terminal."""
    with contextlib.suppress(OSError):
        size = fcntl.ioctl(source_fd, termios.TIOCGWINSZ, b"\0" * 8)
        fcntl.ioctl(target_fd, termios.TIOCSWINSZ, size)


def write_all(fd, data):
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def relay(pairs, *, until, on_data=None, on_eof=None):
    """Copy bytes between file descriptors until source `until` has ended: `pairs` maps a
    source fd to the fd it is written to. `on_data(source, data)` may return other bytes to
    write instead (b"" drops them); `on_eof(fd)` is told of any other source that ended and of
    any target that could not be written. A source ends at EOF, or at EIO: a pty master whose
    program has exited, or a terminal that hung up."""
    open_sources = dict(pairs)
    while until in open_sources:
        ready, _, _ = select.select(list(open_sources), [], [])
        for source in ready:
            try:
                data = os.read(source, CHUNK)
            except OSError:
                data = b""
            if not data:
                del open_sources[source]
                if on_eof is not None and source != until:
                    on_eof(source)
                continue
            if on_data is not None:
                replaced = on_data(source, data)
                data = data if replaced is None else replaced
            if data:
                target = open_sources[source]
                try:
                    write_all(target, data)
                except OSError:  # its reader is gone: what it would have sent ends too
                    del open_sources[source]
                    if on_eof is not None:
                        on_eof(target)
