"""Fixtures for module tests on libvirt's test:///default driver.

test:///default keeps its state per process while a connection is open, so `test_conn` holds one
open for the whole test: check-mode run, real run and second run then see the same hypervisor.
"""

import subprocess
import uuid

import libvirt
import pytest
from ansible_collections.mikelangelo.vtorque.plugins.module_utils import naming
from module_calls import TEST_URI


@pytest.fixture
def test_conn():
    libvirt.registerErrorHandler(lambda *a: None, None)
    conn = libvirt.open(TEST_URI)
    yield conn
    conn.close()


@pytest.fixture
def job(test_conn):
    """A unique job so tests never see each other's domains; its domains are removed afterwards."""
    job = {"id": f"{uuid.uuid4().int % 10**6}.head.example", "node": "node1", "index": 0}
    yield job
    for dom in test_conn.listAllDomains():
        if dom.name().startswith(naming.domain_prefix(job["id"])):
            if dom.isActive():
                dom.destroy()
            dom.undefine()


@pytest.fixture
def image(tmp_path):
    """A 64 MiB qcow2 catalog image (empty: test:///default boots nothing)."""
    path = tmp_path / "base.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(path), "64M"], check=True)
    return str(path)
