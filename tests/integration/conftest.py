"""Fixtures for the integration tier: a live qemu:///system connection, the project's test
guests, SSH key pairs, and cleanup of every domain and file a test made, even when it fails."""

import os
import shutil
import subprocess
import uuid
from pathlib import Path

import libvirt
import pytest
import vtguest
from lifecycle_site import Site
from vtguest import PREFIX, GuestImage
from vtorque.scheduler.torque.emulator.pbs_mom import PbsMom

ROOT = Path(__file__).resolve().parents[2]
URI = "qemu:///system"


def build_image(kind):
    """The cached image directory (built on first use; tools/test.sh builds both up front)."""
    done = subprocess.run(
        [str(ROOT / "tools" / "build-test-images.sh"), kind], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, f"building the {kind} test guest failed:\n{done.stderr}"
    return GuestImage(Path(done.stdout.strip().splitlines()[-1]))


class _Connection:
    """A qemu:///system connection that reconnects when libvirtd was restarted under it
    (tests move libvirtd into a network namespace and back, or stop it on purpose)."""

    def __init__(self, uri):
        self.uri, self._conn = uri, libvirt.open(uri)

    def __getattr__(self, name):
        try:
            self._conn.getLibVersion()  # isAlive() misses a daemon restart without an event loop
        except libvirt.libvirtError:
            self._conn = libvirt.open(self.uri)
        return getattr(self._conn, name)


@pytest.fixture(scope="session")
def libvirt_conn():
    libvirt.registerErrorHandler(lambda *_: None, None)
    conn = _Connection(URI)
    yield conn
    leftovers = [d.name() for d in conn.listAllDomains() if d.name().startswith(PREFIX)]
    for name in leftovers:
        _remove_domain(conn, name)
    conn.close()
    assert not leftovers, f"integration tests left domains behind: {leftovers}"


@pytest.fixture(scope="session")
def tiny_image():
    return build_image("tiny")


@pytest.fixture(scope="session")
def debian_image():
    return build_image("debian")


@pytest.fixture
def ssh_keypair(tmp_path):
    """A fresh ed25519 key pair: (private key path, public key line)."""
    return vtguest.ssh_keypair(tmp_path / "client-key")


@pytest.fixture
def unique_name():
    """A domain name no other test or engineer uses: vtt-<test>-<random>."""
    return lambda label: f"{PREFIX}{label}-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def site(tiny_image, request):
    """A throw-away vTorque site with the tiny guest in its catalog (lifecycle_site.Site); a
    test may give it config overrides (`indirect` parametrization)."""
    site = Site(tiny_image, **getattr(request, "param", {}))
    yield site
    site.close()


@pytest.fixture
def mom(site):
    """pbs_mom for `site`; every domain and file of the jobs it ran is swept afterwards."""
    mom = PbsMom(str(site.config))
    yield mom
    site.sweep(mom)
    mom.close()


class Cleanup:
    def __init__(self, conn):
        self.conn, self.domains, self.paths, self.networks = conn, [], [], []

    def domain(self, name):
        self.domains.append(name)
        return name

    def path(self, path):
        self.paths.append(Path(path))
        return path

    def network(self, name):
        self.networks.append(name)
        return name

    def run(self):
        for name in self.domains:
            _remove_domain(self.conn, name)
        for name in self.networks:
            try:
                net = self.conn.networkLookupByName(name)
            except libvirt.libvirtError:
                continue
            if net.isActive():
                net.destroy()
            if net.isPersistent():
                net.undefine()
        for path in self.paths:
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
            elif path.exists() or path.is_symlink():
                os.unlink(path)


@pytest.fixture
def cleanup(libvirt_conn):
    registry = Cleanup(libvirt_conn)
    yield registry
    registry.run()


def _remove_domain(conn, name):
    try:
        dom = conn.lookupByName(name)
    except libvirt.libvirtError:
        return
    try:
        if dom.isActive():
            dom.destroy()
        if dom.isPersistent():
            dom.undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_NVRAM)
    except libvirt.libvirtError:
        pass  # a transient domain vanishes on destroy
