"""libvirtd moved into a network namespace the test made, and back.

Multi-node jobs need guests on a bridge, and the network rule keeps test traffic off the root
namespace's interfaces: so the bridge lives in a namespace, libvirtd runs there (its taps and
QEMUs follow it; the unix socket is on the shared filesystem, so clients connect unchanged),
and the test's thread enters the namespace to play pbs_mom (its children inherit it).
Also used to take libvirtd away in the middle of a prologue.
"""

import contextlib
import ctypes
import os
import signal
import subprocess
import time

import libvirt

SUBREAPER = os.path.join(os.path.dirname(__file__), "..", "..", "tools", "subreaper")
PIDFILE = "/var/run/libvirtd.pid"
URI = "qemu:///system"
CLONE_NEWNET = 0x40000000


def libvirtd_pid():
    try:
        with open(PIDFILE, encoding="ascii") as handle:
            pid = int(handle.read().strip())
        os.kill(pid, 0)
        return pid
    except (OSError, ValueError):
        return None


def stop_libvirtd(timeout=30):
    pid = libvirtd_pid()
    if pid is None:
        return
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while libvirtd_pid() == pid:
        assert time.monotonic() < deadline, f"libvirtd {pid} did not stop in {timeout}s"
        time.sleep(0.1)


def start_libvirtd(netns=None, timeout=30):
    """libvirtd -d (in `netns`) under tools/subreaper, as tools/setup-host.sh starts it; back
    once it answers."""
    prefix = ["ip", "netns", "exec", netns] if netns else []
    subprocess.Popen(  # noqa: S603 - the subreaper stays, as the parent of libvirtd and its QEMUs
        [*prefix, os.path.normpath(SUBREAPER), "libvirtd", "-d"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + timeout
    while True:
        try:
            libvirt.open(URI).close()
            return
        except libvirt.libvirtError:
            assert time.monotonic() < deadline, f"libvirtd did not answer in {timeout}s"
            time.sleep(0.2)


@contextlib.contextmanager
def namespace_with_bridge(name, bridge, address):
    """A fresh network namespace holding `bridge` with `address` (CIDR) on it."""
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        for command in (
            ["ip", "link", "set", "lo", "up"],
            ["ip", "link", "add", bridge, "type", "bridge"],
            ["ip", "addr", "add", address, "dev", bridge],
            ["ip", "link", "set", bridge, "up"],
        ):
            subprocess.run(["ip", "-n", name, *command[1:]], check=True)
        yield name
    finally:
        subprocess.run(["ip", "netns", "delete", name], check=False)


@contextlib.contextmanager
def libvirtd_in(netns):
    """libvirtd runs inside `netns` for the block, then in the root namespace again."""
    stop_libvirtd()
    try:
        start_libvirtd(netns)
        yield
    finally:
        stop_libvirtd()
        start_libvirtd()


@contextlib.contextmanager
def entered(netns):
    """This thread (and every process it starts) in `netns` for the block."""
    libc = ctypes.CDLL(None, use_errno=True)
    with open("/proc/thread-self/ns/net", "rb") as home, open(f"/run/netns/{netns}", "rb") as target:
        if libc.setns(target.fileno(), CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), f"setns into {netns}")
        try:
            yield
        finally:
            if libc.setns(home.fileno(), CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), "setns back to the root namespace")
