"""The test guests boot under real libvirt + QEMU and honour a vTorque seed.

The tiny guest applies the seed with its own small reader (tools/guest/apply-seed); the debian
guest runs the real cloud-init. Both are reached by SSH on a 127.0.0.1 port forward with
strict host-key checking against the host key the seed pinned.
"""

import subprocess

import libvirt
import pytest
import vtguest
from ansible_collections.mikelangelo.vtorque.plugins.module_utils.seed import (
    render_seed_files,
    write_seed_image,
)
from vtguest import Guest, domain_xml, free_port, ssh, wait_ssh

MAC = "52:54:00:00:00:01"


def vtorque_seed(tmp_path, hostname, user_key, host_key_path):
    """A seed with every field vTorque relies on (contracts: docs/design.md)."""
    host_private = host_key_path.read_text()
    host_public = host_key_path.with_suffix(".pub").read_text().strip()
    user_data = {
        "bootcmd": [["groupadd", "-g", "2345", "alicegrp"]],
        "users": [
            {
                "name": "alice",
                "uid": 1234,
                "primary_group": "alicegrp",
                "gecos": "Alice Job",
                "shell": "/bin/bash",
                "homedir": "/home/alice",
                "lock_passwd": True,
                "ssh_authorized_keys": [user_key],
            }
        ],
        "ssh_deletekeys": True,
        "ssh_keys": {"ed25519_private": host_private, "ed25519_public": host_public},
        "write_files": [
            {
                "path": "/etc/vtorque/job",
                "content": "job 42.test\n",
                "permissions": "0640",
                "owner": "root:alicegrp",
            }
        ],
        "runcmd": [["sh", "-c", "echo runcmd-ran > /run/vtorque-runcmd"]],
    }
    network = {
        "version": 2,
        "ethernets": {
            "eth0": {
                "match": {"macaddress": MAC},
                "addresses": ["10.0.2.15/24"],
                "gateway4": "10.0.2.2",
                "nameservers": {"addresses": ["10.0.2.3"]},
            }
        },
    }
    files = render_seed_files({"instance-id": hostname, "local-hostname": hostname}, user_data, network)
    seed = tmp_path / "seed.iso"
    write_seed_image(files, str(seed))
    return seed, host_public


def overlay(tmp_path, base):
    path = tmp_path / "overlay.qcow2"
    subprocess.run(
        ["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", str(base), str(path)], check=True
    )
    return path


@pytest.fixture
def booted(tmp_path, libvirt_conn, cleanup, unique_name, ssh_keypair):
    """boot(image, label) -> (guest, port, known_hosts, user key path, hostname)."""

    def boot(image, label, memory_mib=256, vcpus=1):
        name = cleanup.domain(unique_name(label))
        hostname = f"{label}-node1"
        key, public = ssh_keypair
        host_key, _ = vtguest.ssh_keypair(tmp_path / "host-key" / "ssh_host_ed25519_key")
        seed, host_public = vtorque_seed(tmp_path, hostname, public, host_key)
        known_hosts = tmp_path / "known_hosts"
        port = free_port()
        known_hosts.write_text(f"[127.0.0.1]:{port} {host_public}\n")
        disks = [(overlay(tmp_path, image.disk), "qcow2", False), (seed, "raw", True)]
        serial = tmp_path / "serial.log"
        xml = domain_xml(
            name, image, serial_log=serial, disks=disks, ssh_port=port, memory_mib=memory_mib, vcpus=vcpus
        )
        guest = Guest(libvirt_conn.createXML(xml, 0), serial, ssh_port=port)
        return guest, port, known_hosts, key, hostname

    return boot


def test_tiny_guest_boots_applies_the_seed_and_runs_commands(booted, tiny_image, libvirt_conn):
    guest, port, known_hosts, key, hostname = booted(tiny_image, "tiny")
    ready = guest.wait_for("VTORQUE-GUEST-READY", timeout=60)
    ssh_ready = ready + wait_ssh(port, "alice", key, known_hosts, timeout=30)
    print(f"tiny guest: READY after {ready:.1f}s, SSH as alice after {ssh_ready:.1f}s")

    done = ssh(
        port,
        "alice",
        key,
        known_hosts,
        "id -u; id -gn; hostname; cat /etc/vtorque/job; cat /scratch/README",
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "1234",
        "alicegrp",
        hostname,
        "job 42.test",
        "vTorque test guest scratch disk",
    ]
    failed = ssh(port, "alice", key, known_hosts, "echo to-stderr >&2; exit 7")
    assert (failed.returncode, failed.stdout, failed.stderr.strip()) == (7, "", "to-stderr")

    assert guest.agent_exec("/bin/cat", "/run/vtorque-runcmd") == (0, "runcmd-ran\n", "")
    assert guest.agent_exec("/bin/stat", "-c", "%a %U:%G", "/etc/vtorque/job")[1] == "640 root:alicegrp\n"

    guest.dom.shutdownFlags(libvirt.VIR_DOMAIN_SHUTDOWN_ACPI_POWER_BTN)
    guest.wait_gone(timeout=30)
    assert guest.name not in [d.name() for d in libvirt_conn.listAllDomains()]


def test_tiny_guest_refuses_a_host_key_it_was_not_given(booted, tiny_image, tmp_path):
    guest, port, known_hosts, key, _ = booted(tiny_image, "tinykey")
    guest.wait_for("VTORQUE-GUEST-READY", timeout=60)
    wait_ssh(port, "alice", key, known_hosts, timeout=30)
    _, other = vtguest.ssh_keypair(tmp_path / "other" / "ssh_host_ed25519_key")
    known_hosts.write_text(f"[127.0.0.1]:{port} {other}\n")
    done = ssh(port, "alice", key, known_hosts, "true")
    assert done.returncode == 255 and "host key" in done.stderr.lower()


def test_debian_guest_runs_real_cloud_init_on_the_same_seed(booted, debian_image, libvirt_conn):
    guest, port, known_hosts, key, hostname = booted(debian_image, "debian", memory_mib=1024, vcpus=2)
    ssh_ready = wait_ssh(port, "alice", key, known_hosts, timeout=240)
    print(f"debian guest: SSH as alice after {ssh_ready:.1f}s")

    status = ssh(port, "alice", key, known_hosts, "cloud-init status --wait --long", timeout=240)
    assert "status: done" in status.stdout, status.stdout + status.stderr
    done = ssh(
        port, "alice", key, known_hosts, "id -u; id -gn; hostname; cat /etc/vtorque/job /run/vtorque-runcmd"
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["1234", "alicegrp", hostname, "job 42.test", "runcmd-ran"]
    assert ssh(port, "alice", key, known_hosts, "stat -c '%a %U:%G' /etc/vtorque/job").stdout == (
        "640 root:alicegrp\n"
    )
    code, out, _ = guest.agent_exec("/bin/cat", "/etc/hostname")
    assert (code, out.strip()) == (0, hostname)

    guest.dom.shutdownFlags(libvirt.VIR_DOMAIN_SHUTDOWN_ACPI_POWER_BTN)
    guest.wait_gone(timeout=60)
    assert guest.name not in [d.name() for d in libvirt_conn.listAllDomains()]
