"""Simulated nodes reached over real SSH: one network namespace per node, each with its own
OpenSSH sshd.

    with SshNodes(8) as nodes:        # n1..n8
        nodes.host_vars("n3")         # ansible_host, key, known hosts: the inventory's part
        nodes.ssh_counts()            # SSH logins and sessions the sshds accepted so far

Node i lives in namespace `vtnodes-<tag>-n<i>`, joined to this namespace by a veth pair
(`vn<tag><i>` here, `eth0` there) with the point-to-point subnet 10.<octet>.<i>.0/30: .1 here,
.2 there. Nothing else is routed, so the benchmark's traffic goes only into the namespaces it
made. Each sshd listens only on its node's address, with its own host key and config, root
login by a throw-away key made here, LogLevel VERBOSE into its own log. sshd needs its
privilege-separation dir /run/sshd, which this machine does not have: each sshd runs in the
private mount namespace that `ip netns exec` gives it, over a tmpfs /run of its own, so
nothing is made on the shared /run.

The namespaces share this machine's filesystem, so the nodes run the same Python and the same
files as the primary. Leaving the context (also on Ctrl-C, SIGTERM or a failure part way
through the setup) kills every process in the namespaces and the SSH control masters that
used this run's control dir, deletes the veths and the namespaces, and removes the temp dir.
"""

import contextlib
import ipaddress
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import uuid
from pathlib import Path

SSHD = "/usr/sbin/sshd"
NS_PREFIX = "vtnodes-"
READY_TIMEOUT = 20

SSHD_CONFIG = """\
ListenAddress {address}
Port 22
AddressFamily inet
HostKey {host_key}
PidFile {dir}/sshd.pid
AuthorizedKeysFile {authorized_keys}
PermitRootLogin prohibit-password
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
UseDNS no
PrintMotd no
LogLevel VERBOSE
MaxStartups 200:30:400
MaxSessions 100
Subsystem sftp internal-sftp
"""


def _ip(*args, check=True):
    return subprocess.run(["ip", *args], check=check, capture_output=True, text=True)


def _keygen(path, comment):
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
        check=True,
        capture_output=True,
    )
    return path.with_suffix(".pub").read_text().split()[:2]


class SshNodes:
    """`count` simulated nodes n1..n<count> with sshd in their own namespaces (a context manager)."""

    def __init__(self, count, octet=231, tmp_root=None):
        if not 1 <= count <= 250:
            raise ValueError("1 to 250 nodes")
        self.count, self.octet = count, octet
        self.tag = uuid.uuid4().hex[:4]
        self.names = [f"n{index}" for index in range(1, count + 1)]
        self._tmp_root = tmp_root
        self.dir = None
        self._namespaces, self._links, self._sshd = [], [], {}
        self._old_sigterm = None

    # --- addresses and the inventory's part -------------------------------------------------
    def address(self, name):
        return f"10.{self.octet}.{int(name[1:])}.2"

    def _host_side(self, index):
        return f"10.{self.octet}.{index}.1"

    def namespace(self, name):
        return f"{NS_PREFIX}{self.tag}-{name}"

    @property
    def control_dir(self):
        """Ansible's ControlPath dir for this run (ANSIBLE_SSH_CONTROL_PATH_DIR)."""
        return str(self.dir / "cp")

    def env(self):
        return {"ANSIBLE_SSH_CONTROL_PATH_DIR": self.control_dir}

    def host_vars(self, name):
        """What a site's inventory (or root's ~/.ssh) says of a node: its address, root's key,
        the pinned host keys; -F /dev/null keeps root's own ssh config out of it."""
        return {
            "ansible_host": self.address(name),
            "ansible_user": "root",
            "ansible_ssh_private_key_file": str(self.dir / "id_ed25519"),
            "ansible_ssh_common_args": (
                f"-F /dev/null -o UserKnownHostsFile={self.dir / 'known_hosts'} "
                "-o GlobalKnownHostsFile=/dev/null -o IdentitiesOnly=yes"
            ),
        }

    def all_host_vars(self):
        return {name: self.host_vars(name) for name in self.names}

    # --- what the sshds saw -----------------------------------------------------------------
    def log(self, name):
        return self.dir / name / "sshd.log"

    def ssh_counts(self):
        """{"connections": logins, "sessions": sessions} that the sshds accepted so far, over
        every node (a multiplexed session over a control master is a session, not a login)."""
        connections = sessions = 0
        for name in self.names:
            try:
                text = self.log(name).read_text(errors="replace")
            except FileNotFoundError:
                continue
            connections += text.count("Accepted publickey for root")
            sessions += text.count("Starting session: ")
        return {"connections": connections, "sessions": sessions}

    def sshd_pids(self):
        return {proc.pid for proc in self._sshd.values()}

    # --- setup and teardown -----------------------------------------------------------------
    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self._old_sigterm = signal.signal(signal.SIGTERM, _sigterm_as_exit)
        try:
            self._setup()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def _setup(self):
        network = ipaddress.ip_network(f"10.{self.octet}.0.0/16")
        routes = _ip("-4", "route", "show").stdout
        clash = [line for line in routes.splitlines() if _overlaps(line.split()[0], network)]
        if clash:
            raise RuntimeError(f"{network} is in use here already: {clash}")
        self.dir = Path(tempfile.mkdtemp(prefix=f"vtnodes-{self.tag}-", dir=self._tmp_root))
        os.chmod(self.dir, 0o700)
        (self.dir / "cp").mkdir(mode=0o700)
        client = _keygen(self.dir / "id_ed25519", f"vtnodes-{self.tag}")
        (self.dir / "authorized_keys").write_text(" ".join(client) + "\n")
        known = []
        for index, name in enumerate(self.names, start=1):
            ns, link = self.namespace(name), f"vn{self.tag}{index}"
            _ip("netns", "add", ns)
            self._namespaces.append(ns)
            _ip("link", "add", link, "type", "veth", "peer", "name", "eth0", "netns", ns)
            self._links.append(link)
            _ip("addr", "add", f"{self._host_side(index)}/30", "dev", link)
            _ip("link", "set", link, "up")
            _ip("-n", ns, "addr", "add", f"{self.address(name)}/30", "dev", "eth0")
            _ip("-n", ns, "link", "set", "eth0", "up")
            _ip("-n", ns, "link", "set", "lo", "up")
            node_dir = self.dir / name
            node_dir.mkdir(mode=0o700)
            host_key = node_dir / "ssh_host_ed25519_key"
            kind, key = _keygen(host_key, name)
            known.append(f"{self.address(name)} {kind} {key}\n")
            config = node_dir / "sshd_config"
            config.write_text(
                SSHD_CONFIG.format(
                    address=self.address(name),
                    host_key=host_key,
                    dir=node_dir,
                    authorized_keys=self.dir / "authorized_keys",
                )
            )
            script = (
                "mount -t tmpfs -o mode=0755,size=1m vtnodes-run /run && mkdir -m 0755 /run/sshd && "
                f'exec {SSHD} -D -f "$1" -E "$2"'
            )
            self._sshd[name] = subprocess.Popen(
                ["ip", "netns", "exec", ns, "sh", "-c", script, "sh", str(config), str(self.log(name))],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=open(node_dir / "start.err", "wb"),  # noqa: SIM115 (the child keeps it)
            )
        (self.dir / "known_hosts").write_text("".join(known))
        deadline = time.monotonic() + READY_TIMEOUT
        for name in self.names:
            self._wait_listening(name, deadline)

    def _wait_listening(self, name, deadline):
        while True:
            proc = self._sshd[name]
            if proc.poll() is not None:
                err = (self.dir / name / "start.err").read_text(errors="replace")
                log = self.log(name).read_text(errors="replace") if self.log(name).exists() else ""
                raise RuntimeError(f"sshd of {name} exited ({proc.returncode}): {err} {log}"[-2000:])
            with (
                contextlib.suppress(OSError),
                socket.create_connection((self.address(name), 22), 0.5) as sock,
            ):
                if sock.recv(64).startswith(b"SSH-"):
                    return
            if time.monotonic() > deadline:
                raise RuntimeError(f"sshd of {name} did not listen on {self.address(name)} in time")
            time.sleep(0.05)

    def kill_masters(self):
        """SIGTERM the SSH control masters (ControlPersist) that use this run's control dir;
        their pids (they may be children of this process when it is a subreaper)."""
        if self.dir is None:
            return []
        marker = self.control_dir.encode()
        pids = []
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit():
                continue
            try:  # a master's title is "ssh: <control path> [mux]"
                with open(f"/proc/{entry.name}/comm", "rb") as handle:
                    comm = handle.read().strip()
                with open(f"/proc/{entry.name}/cmdline", "rb") as handle:
                    cmdline = handle.read()
            except OSError:
                continue
            if comm == b"ssh" and marker in cmdline:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(entry.name), signal.SIGTERM)
                    pids.append(int(entry.name))
        return pids

    def close(self):
        """Everything down, whatever got made; safe to call twice."""
        try:
            self.kill_masters()
            for ns in self._namespaces:
                for pid in _ip("netns", "pids", ns, check=False).stdout.split():
                    with contextlib.suppress(ProcessLookupError, ValueError):
                        os.kill(int(pid), signal.SIGKILL)
            for proc in self._sshd.values():
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(10)
                if proc.stderr:
                    proc.stderr.close()
            for link in self._links:
                _ip("link", "del", link, check=False)
            for ns in self._namespaces:
                for _ in range(50):  # the last processes may still be exiting
                    if _ip("netns", "del", ns, check=False).returncode == 0:
                        break
                    time.sleep(0.1)
            self._sshd, self._links, self._namespaces = {}, [], []
            if self.dir is not None:
                shutil.rmtree(self.dir, ignore_errors=True)
        finally:
            if self._old_sigterm is not None:
                signal.signal(signal.SIGTERM, self._old_sigterm)
                self._old_sigterm = None


def with_host_vars(inventory, host_vars):
    """`inventory` ({"all": {"hosts": ...}}, as runner.inventory makes it) with each SSH node's
    host vars from `host_vars` ({node: vars}); nodes with the local connection stay as they are."""
    for name, host in inventory["all"]["hosts"].items():
        if name in host_vars and host.get("ansible_connection") != "local":
            host.update(host_vars[name])
    return inventory


def _sigterm_as_exit(signum, _frame):
    raise SystemExit(128 + signum)


def _overlaps(text, network):
    try:
        return ipaddress.ip_network(text, strict=False).overlaps(network)
    except ValueError:
        return False  # "default" and the like


def leftovers():
    """Namespaces and veths of any SshNodes (for tests: nothing should be left)."""
    namespaces = [
        line.split()[0] for line in _ip("netns", "list").stdout.splitlines() if line.startswith(NS_PREFIX)
    ]
    links = [line.split(":")[1].strip().split("@")[0] for line in _ip("-o", "link").stdout.splitlines()]
    return namespaces + [link for link in links if re.fullmatch(r"vn[0-9a-f]{4}\d+", link)]
