"""A throw-away vTorque site on this machine for lifecycle tests: a real non-root job owner,
a site config and catalog with the tiny guest, spool and state dirs, and a pbs_mom
(vtorque.scheduler.torque.emulator.pbs_mom.PbsMom) that calls the hooks exactly as Torque does."""

import json
import os
import pwd
import random
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

USER, UID = "vtuser", 4500


def ensure_user():
    try:
        return pwd.getpwnam(USER)
    except KeyError:
        subprocess.run(["groupadd", "-g", str(UID), "vtgrp"], check=True)
        subprocess.run(["useradd", "-m", "-u", str(UID), "-g", "vtgrp", "-s", "/bin/sh", USER], check=True)
        return pwd.getpwnam(USER)


def remove_user():
    subprocess.run(["userdel", "-r", USER], capture_output=True, check=False)
    subprocess.run(["groupdel", "vtgrp"], capture_output=True, check=False)


def reach_every_vm(hostfile, first_line):
    """A job script that prints `first_line` (shell, expanded), then reaches every host in the
    file `$hostfile` names over SSH as its owner. The tiny guest's SSH client is dropbear's
    dbclient: it reads known hosts from ~/.ssh only and keys in its own format, so the job copies
    the pinned list vTorque wrote and converts the job key (OpenSSH clients use both as written,
    through vTorque's ssh_config drop-in). An unknown or changed host key makes dbclient fail."""
    return f"""#!/bin/sh
echo "{first_line}"
mkdir -p ~/.ssh && cp /etc/ssh/vtorque/known_hosts ~/.ssh/known_hosts
dropbearconvert openssh dropbear "/etc/ssh/vtorque/keys/$(id -un)" ~/.ssh/id_dropbear >/dev/null 2>&1
for host in $(uniq "${hostfile}"); do
  dbclient "$host" 'echo "reached $(hostname) as $(id -un)"' || echo "cannot reach $host"
done
"""


REACH_EVERY_VM = reach_every_vm("PBS_NODEFILE", """nodefile: $(tr '\\n' ' ' < "$PBS_NODEFILE")""")


def two_node_bridge(bridge, subnet, nodes):
    """network config of a bridge `subnet` ("10.77.0", a /24; .1 the gateway) with ten
    addresses for each of the two `nodes`."""
    first, second = nodes
    return {
        "mode": "bridge",
        "bridge": bridge,
        "cidr": f"{subnet}.0/24",
        "gateway": f"{subnet}.1",
        "ranges": {first: f"{subnet}.10-{subnet}.19", second: f"{subnet}.20-{subnet}.29"},
    }


class Site:
    def __init__(self, image, cmdline=None, **overrides):
        self.root = Path(tempfile.mkdtemp(prefix="vtorque-site-", dir="/var/tmp"))
        os.chmod(self.root, 0o755)  # noqa: S103 - the job owner reads the config
        self.spool, self.state = self.root / "spool", self.root / "state"
        self.spool.mkdir()
        os.chmod(self.spool, 0o1777)  # noqa: S103 - users create their job dirs, as deployed
        catalog = {
            "images": {
                "tiny": {
                    "path": str(image.disk),
                    "format": "qcow2",
                    "distro": "debian",
                    "description": "tiny test guest",
                    "kernel": str(image.kernel),
                    "initrd": str(image.initrd),
                    "cmdline": cmdline or image.cmdline,
                }
            }
        }
        self.catalog = self.root / "images.yml"
        self.catalog.write_text(yaml.safe_dump(catalog))
        config = {
            "spool_dir": str(self.spool),
            "state_dir": str(self.state),
            "images": str(self.catalog),
            "defaults": {"img": "tiny", "vcpus": 1, "ram": "256M"},
            "host_reserve": {"cores": 1, "ram_mib": "64M"},
            "libvirt": {"virt_type": "qemu"},
            "network": {"mode": "user", "ssh_port_base": random.randrange(30000, 40000, 100)},  # noqa: S311 - a port, not a secret,
            "timeouts": {"prologue": 150, "boot": 60, "ssh": 60, "shutdown": 10, "epilogue": 90},
            "runner": {"forks": 4},
        }
        for key, value in overrides.items():
            config[key] = {**config.get(key, {}), **value} if isinstance(value, dict) else value
        self.config = self.root / "vtorque.yml"
        self.config.write_text(yaml.safe_dump(config))
        user = ensure_user()
        self.workdir = Path(user.pw_dir) / f"work-{self.root.name}"  # sites may run at once
        self.workdir.mkdir()
        os.chown(self.workdir, user.pw_uid, user.pw_gid)

    def write_job(self, name, text):
        path = self.workdir / name
        path.write_text(text)
        user = pwd.getpwnam(USER)
        os.chown(path, user.pw_uid, user.pw_gid)
        path.chmod(0o755)
        return path

    def record(self, job_id):
        from ansible_collections.mikelangelo.vtorque.plugins.module_utils import naming

        path = self.state / "records" / (naming.sanitise_job_id(job_id) + ".json")
        return json.loads(path.read_text())

    def leftovers(self, conn, job_id):
        """Everything of the job that could outlive it: domains, files, runner processes."""
        from ansible_collections.mikelangelo.vtorque.plugins.module_utils import naming

        prefix = naming.domain_prefix(job_id)
        found = [d.name() for d in conn.listAllDomains() if d.name().startswith(prefix)]
        job_dir = Path(naming.job_dir(job_id, str(self.state)))
        if job_dir.exists():
            found.append(str(job_dir))
        claims = self.state / "ports"  # user-mode port claims (vtorque.job.ports) go with the job
        for claim in claims.iterdir() if claims.is_dir() else ():
            if os.readlink(claim) == str(job_dir):
                found.append(str(claim))
        runners = subprocess.run(
            ["pgrep", "-f", f"runner-.*{naming.sanitise_job_id(job_id)}"], capture_output=True
        )
        return found + runners.stdout.decode().split()

    def sweep(self, mom):
        """Remove every domain and file of the jobs submitted through `mom`, even after a failure."""
        from ansible_collections.mikelangelo.vtorque.plugins.module_utils.sweep import sweep_jobs

        for record in Path(mom.queue).glob("*.json"):
            document = json.loads(record.read_text())
            for job_id in [document["job_id"], *document.get("elements", ())]:
                sweep_jobs(uri="qemu:///system", state_dir=str(self.state), job_id=job_id)

    def vtorque_sweep(self, mom):
        """`vtorque sweep` with this site's config as pbs_mom `mom` plays it, as an admin runs it."""
        return subprocess.run(
            [str(Path(sys.executable).parent / "vtorque"), "sweep"],
            env={**os.environ, "VTORQUE_CONFIG": mom.config},
            capture_output=True,
            text=True,
            check=False,
        )

    def close(self):
        shutil.rmtree(self.root, ignore_errors=True)
        shutil.rmtree(self.workdir, ignore_errors=True)
