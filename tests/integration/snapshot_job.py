"""A job's vm_start parameters for snapshot starts of the tiny guest, for the snapshot tests
(tests/integration/test_snapshot_start.py) and the benchmark (benchmarks/cases_snapshot.py)."""

import os
import subprocess
import uuid

from ansible_collections.mikelangelo.vtorque.plugins.module_utils import naming
from ansible_collections.mikelangelo.vtorque.plugins.module_utils.start import ensure_started
from ansible_collections.mikelangelo.vtorque.plugins.module_utils.sweep import sweep_jobs
from ansible_collections.mikelangelo.vtorque.plugins.plugin_utils.domain_render import (
    domain_params,
    render_domain_xml,
)
from vtguest import free_port, ssh, ssh_keypair, wait_ssh

URI = "qemu:///system"
NODE = "node1"
USER, UID = "vtsnap", 4711


def run_qemu_img(argv):
    subprocess.run(["qemu-img", *argv], check=True, capture_output=True)


def run_command(argv):
    subprocess.run(argv, check=True, capture_output=True)


class SnapshotJob:
    """One job's vm_start parameters for VMs of the tiny guest on a copy of its disk image, each
    with a user-mode NIC, the job key and a host key of its own (what vTorque pins)."""

    def __init__(self, tmp_path, image, catalog_disk, snapshot_dir, vms=1, start="snapshot"):
        self.id = f"vtsnap{uuid.uuid4().int % 10**8}"
        self.state_dir = str(tmp_path / "state")
        os.makedirs(os.path.join(self.state_dir, "jobs"), exist_ok=True)
        self.dir = naming.job_dir(self.id, self.state_dir)
        self.key, self.public = ssh_keypair(tmp_path / f"{self.id}-user")
        self.image = dict(path=str(catalog_disk), format="qcow2", start=start, snapshot_dir=str(snapshot_dir))
        self.vms, self.seeds, self.ports, self.host_keys = [], [], {}, {}
        for index in range(vms):
            identity = naming.vm_identity(self.id, NODE, index, self.state_dir)
            port = free_port()
            host = tmp_path / f"{identity.name}-host"
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(host)], check=True)
            self.ports[identity.name] = port
            self.host_keys[identity.name] = host.with_suffix(".pub").read_text().split()[:2]
            domain = dict(
                job=dict(id=self.id, node=NODE, index=index),
                virt_type="qemu",
                memory_mib=256,
                disks=[dict(path=identity.overlay_path)],
                seed=identity.seed_path,
                nics=[dict(mode="user", host_port=port, guest_address="10.0.2.15")],
                serial_log=identity.serial_log_path,
                boot=dict(kernel=str(image.kernel), initrd=str(image.initrd), cmdline=image.cmdline),
            )
            vm = dict(
                name=identity.name, node=NODE, overlay=identity.overlay_path, data_disk=None, domain=domain
            )
            vm["xml"] = render_domain_xml(domain_params(URI, {}, vm))
            self.vms.append(vm)
            self.seeds.append(
                dict(
                    name=identity.name,
                    node=NODE,
                    path=identity.seed_path,
                    meta_data={"instance-id": identity.uuid, "local-hostname": f"snap-vm{index}"},
                    user_data={
                        "users": [{"name": USER, "uid": UID, "ssh_authorized_keys": [self.public]}],
                        "ssh_keys": {"ed25519_private": host.read_text()},
                    },
                    network_config={
                        "version": 2,
                        "ethernets": {
                            "eth0": {
                                "match": {"macaddress": identity.mac},
                                "addresses": ["10.0.2.15/24"],
                                "gateway4": "10.0.2.2",
                            }
                        },
                    },
                )
            )

    def params(self):
        return dict(
            uri=URI,
            job_dir=self.dir,
            ramdisk=None,
            image=self.image,
            domain={},
            vms=self.vms,
            seeds=self.seeds,
            wait=True,
            wait_timeout=120,
        )

    def start(self):
        return ensure_started(self.params(), False, False, run_qemu_img, run_command)

    def known_hosts(self, tmp_path, name):
        path = tmp_path / f"known-{name}"
        path.write_text(f"[127.0.0.1]:{self.ports[name]} {' '.join(self.host_keys[name])}\n")
        return path

    def ssh(self, tmp_path, name, command):
        done = ssh(self.ports[name], USER, self.key, self.known_hosts(tmp_path, name), command)
        assert done.returncode == 0, (name, done.stderr)
        return done.stdout.strip()

    def wait_ssh(self, tmp_path, name, timeout=60):
        return wait_ssh(self.ports[name], USER, self.key, self.known_hosts(tmp_path, name), timeout)

    def teardown(self):
        return sweep_jobs(uri=URI, state_dir=self.state_dir, job_id=self.id, shutdown_timeout=10)
