"""Booting the project's test guests under real libvirt + QEMU (TCG), for integration tests.

One place for the test domain XML, waiting on the serial console, the guest agent and SSH
with a pinned host key. Domains are transient (createXML) and named `vtt-...`, so the CI
teardown and the session check in conftest.py can find any leftover.
"""

import base64
import json
import os
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from xml.sax.saxutils import quoteattr

import libvirt
import libvirt_qemu
from vtorque.guest.readiness import ssh_banner, until_ok

PREFIX = "vtt-"


@dataclass(frozen=True)
class GuestImage:
    """A built test guest (tools/build-test-images.sh)."""

    dir: Path

    @property
    def kernel(self):
        return self.dir / "vmlinux"

    @property
    def initrd(self):
        return self.dir / "initrd.img"

    @property
    def disk(self):
        return self.dir / "disk.qcow2"

    @property
    def cmdline(self):
        return (self.dir / "cmdline").read_text().strip()

    @property
    def info(self):
        return json.loads((self.dir / "image.json").read_text())


_GIVEN_PORTS = set()


def free_port():
    """A loopback port free now and not handed out before by this process: the kernel may offer
    a just-closed port again, and two guests prepared together would then share it."""
    while True:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        if port not in _GIVEN_PORTS:
            _GIVEN_PORTS.add(port)
            return port


def domain_xml(name, image, *, serial_log, disks=(), ssh_port=None, memory_mib=256, vcpus=1, cmdline=None):
    """Domain XML for a test guest booted directly from the image's kernel and initrd.

    disks: (path, format, readonly) tuples, attached as virtio vda, vdb, ...
    ssh_port: slirp user networking (restrict=on) with 127.0.0.1:ssh_port forwarded to the
    guest's port 22 at 10.0.2.15 (libvirt 9.0's domain XML cannot express a user-mode port
    forward, so it goes in as a <qemu:commandline> -netdev hostfwd).
    """
    q = quoteattr
    disk_xml = "".join(
        f"<disk type='file' device='disk'><driver name='qemu' type={q(fmt)}/>"
        f"<source file={q(str(path))}/><target dev='vd{chr(ord('a') + i)}' bus='virtio'/>"
        f"{'<readonly/>' if readonly else ''}</disk>"
        for i, (path, fmt, readonly) in enumerate(disks)
    )
    net = ""
    if ssh_port:
        netdev = f"user,id=un0,net=10.0.2.0/24,restrict=on,hostfwd=tcp:127.0.0.1:{ssh_port}-10.0.2.15:22"
        net = (
            "<qemu:commandline>"
            f"<qemu:arg value='-netdev'/><qemu:arg value={q(netdev)}/>"
            "<qemu:arg value='-device'/>"
            "<qemu:arg value='virtio-net-pci,netdev=un0,mac=52:54:00:00:00:01,bus=pci.0,addr=0x1f'/>"
            "</qemu:commandline>"
        )
    return f"""<domain type='qemu' xmlns:qemu='http://libvirt.org/schemas/domain/qemu/1.0'>
  <name>{name}</name><memory unit='MiB'>{memory_mib}</memory><vcpu>{vcpus}</vcpu>
  <os><type arch='x86_64' machine='pc'>hvm</type>
    <kernel>{image.kernel}</kernel><initrd>{image.initrd}</initrd>
    <cmdline>{cmdline or image.cmdline}</cmdline></os>
  <features><acpi/></features>
  <on_poweroff>destroy</on_poweroff><on_reboot>destroy</on_reboot><on_crash>destroy</on_crash>
  <devices>
    {disk_xml}
    <controller type='usb' model='none'/><memballoon model='none'/>
    <serial type='file'><source path={q(str(serial_log))}/><target port='0'/></serial>
    <channel type='unix'><target type='virtio' name='org.qemu.guest_agent.0'/></channel>
  </devices>
  {net}
</domain>"""


class Guest:
    """A running transient test domain."""

    def __init__(self, dom, serial_log, ssh_port=None):
        self.dom, self.serial_log, self.ssh_port = dom, Path(serial_log), ssh_port
        self.name = dom.name()

    def console(self):
        return (
            self.serial_log.read_text(errors="replace").replace("\r", "") if self.serial_log.exists() else ""
        )

    def wait_for(self, marker, timeout):
        """Seconds until `marker` appears on the serial console; AssertionError with the console."""
        start = time.monotonic()
        while time.monotonic() - start < timeout:
            if marker in self.console():
                return time.monotonic() - start
            if not self.is_active():
                break
            time.sleep(0.05)
        raise AssertionError(f"{marker!r} not seen on {self.name}'s console in {timeout}s:\n{self.console()}")

    def is_active(self):
        try:
            return bool(self.dom.isActive())
        except libvirt.libvirtError:
            return False  # a transient domain that powered off is gone

    def wait_gone(self, timeout):
        start = time.monotonic()
        while self.is_active():
            if time.monotonic() - start > timeout:
                raise AssertionError(f"{self.name} still running after {timeout}s")
            time.sleep(0.1)
        return time.monotonic() - start

    def agent(self, command, timeout=5, **arguments):
        request = {"execute": command, **({"arguments": arguments} if arguments else {})}
        return json.loads(libvirt_qemu.qemuAgentCommand(self.dom, json.dumps(request), timeout, 0))["return"]

    def agent_exec(self, path, *args, timeout=30):
        """(exit code, stdout, stderr) of a command run by the guest agent."""
        pid = self.agent("guest-exec", path=path, arg=list(args), **{"capture-output": True})["pid"]
        deadline = time.monotonic() + timeout
        while not (status := self.agent("guest-exec-status", pid=pid))["exited"]:
            if time.monotonic() > deadline:
                raise AssertionError(f"guest-exec {path} still running after {timeout}s")
            time.sleep(0.1)
        decode = lambda key: base64.b64decode(status.get(key, "")).decode()  # noqa: E731
        return status["exitcode"], decode("out-data"), decode("err-data")


def ssh_argv(port, user, key, known_hosts, command):
    """ssh to the guest as `user`, with strict host-key checking against `known_hosts` only."""
    return [
        "ssh",
        "-F",
        "/dev/null",
        "-p",
        str(port),
        "-i",
        str(key),
        "-o",
        "StrictHostKeyChecking=yes",
        "-o",
        f"UserKnownHostsFile={known_hosts}",
        "-o",
        "GlobalKnownHostsFile=/dev/null",
        "-o",
        "BatchMode=yes",
        "-o",
        "ConnectTimeout=5",
        "-o",
        "LogLevel=ERROR",
        f"{user}@127.0.0.1",
        command,
    ]


def ssh(port, user, key, known_hosts, command, timeout=60):
    """Run `command` over SSH (see ssh_argv)."""
    argv = ssh_argv(port, user, key, known_hosts, command)
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)


def wait_ssh(port, user, key, known_hosts, timeout, look=False):
    """Seconds until SSH runs `true`, waited for as the prologue waits (overlapping attempts;
    `look`: and a look for the version line, which the prologue makes unless its VMs are behind
    a user-mode port forward, readiness.py); AssertionError with the last error otherwise."""
    start = time.monotonic()
    ready, last = until_ok(
        ssh_argv(port, user, key, known_hosts, "true"),
        deadline=start + timeout,
        answers=(lambda: ssh_banner("127.0.0.1", port)) if look else None,
    )
    if not ready:
        raise AssertionError(f"no SSH as {user} on 127.0.0.1:{port} in {timeout}s: {last}")
    return time.monotonic() - start


def ssh_keypair(key):
    """(path, public key line) of a new ed25519 key pair at `key` (OpenSSH format)."""
    key = Path(key)
    key.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", key.name, "-f", str(key)], check=True
    )
    os.chmod(key, 0o600)
    return key, key.with_suffix(".pub").read_text().strip()
