"""A vTorque site on a real Slurm cluster on this machine, for the Slurm integration tests.

Two slurmd (n1, n2) play two compute nodes. Real nodes are separate hosts, each with its own
state dir: here each node gets its own site config (`vtorque-<node>.yml`, its own state_dir)
through the hook shim, which picks it by $SLURMD_NODENAME; the spool dir is shared, as a
cluster's shared filesystem would be. The shims give vtorque-hook exactly slurmd's
environment (no PATH), as the deployed shims get it before they set their own.
"""

import json
import os
import pwd
import re
import secrets
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import yaml
from lifecycle_site import USER, Site

VENV_BIN = Path(sys.executable).parent
NODES = ("n1", "n2")
TEMPLATE = (
    Path(__file__).resolve().parents[2]
    / "collections/ansible_collections/mikelangelo/vtorque/roles/compute/templates/slurm-hook.sh.j2"
)
PICK_CONFIG = """#!/bin/sh
VTORQUE_CONFIG={root}/vtorque-$SLURMD_NODENAME.yml
export VTORQUE_CONFIG
exec {shim}
"""


def deployed_shim(event):
    """The compute role's shim for `event` (prolog, epilog) with no site hook to chain."""
    import jinja2

    env = jinja2.Environment(keep_trailing_newline=True, trim_blocks=True)  # noqa: S701 - a shell script; as Ansible renders
    env.filters["quote"] = shlex.quote
    env.tests["search"] = lambda value, pattern: re.search(pattern, value) is not None
    return env.from_string(TEMPLATE.read_text()).render(
        item=event, vtorque_site_hook="", vtorque_venv=str(VENV_BIN.parent)
    )


class SlurmSite:
    """The site (lifecycle_site.Site with `scheduler: slurm`), its per-node configs, the key
    secret and the Prolog/Epilog shims slurm.conf names."""

    def __init__(self, image):
        self.site = Site(image)
        self.root = self.site.root
        self.secret = self.root / "job-key.secret"
        self.secret.write_bytes(secrets.token_bytes(32))
        self.secret.chmod(0o600)
        catalog = yaml.safe_load(self.site.catalog.read_text())
        panic = dict(catalog["images"]["tiny"], cmdline="console=ttyS0 panic=-1 rdinit=/nonexistent")
        catalog["images"]["panics"] = dict(panic, description="a guest whose kernel panics at boot")
        self.site.catalog.write_text(yaml.safe_dump(catalog))
        self.base = yaml.safe_load(self.site.config.read_text())
        self.hooks = {}
        for event in ("slurm-prolog", "slurm-epilog"):
            shim = self.root / f"deployed-{event}"
            shim.write_text(deployed_shim(event.split("-")[1]))
            path = self.root / event
            path.write_text(PICK_CONFIG.format(root=self.root, shim=shim))
            for script in (shim, path):
                script.chmod(0o755)
            self.hooks[event] = path
        self.configure()

    def configure(self, **changes):
        """(Re)write every node's config: the base, `changes` on top, the node's own state dir."""
        for node in NODES:
            data = {**self.base, **changes}
            data.update(
                scheduler="slurm",
                state_dir=str(self.state(node)),
                slurm={"key_secret": str(self.secret), "cancel_poll_seconds": 1},
            )
            path = self.config(node)
            path.write_text(yaml.safe_dump(data))
            path.chmod(0o644)

    def config(self, node):
        return self.root / f"vtorque-{node}.yml"

    def state(self, node):
        return self.root / f"state-{node}"

    @property
    def workdir(self):
        return self.site.workdir

    @property
    def spool(self):
        return self.site.spool

    def write_job(self, name, text):
        return self.site.write_job(name, text)

    def record(self, node, job_id):
        path = self.state(node) / "records" / f"{job_id}.json"
        return json.loads(path.read_text()) if path.exists() else None

    def read_output(self, name):
        path = self.workdir / name
        return path.read_text() if path.exists() else None

    def edit_request(self, job_id, **options):
        """As the job's owner: change request.json after submission (a held job)."""
        path = self.spool / str(job_id) / "request.json"
        document = json.loads(path.read_text())
        document["options"].update(options)
        user = pwd.getpwnam(USER)
        code = "import sys; open(sys.argv[1], 'w').write(sys.argv[2])"
        subprocess.run(
            [
                "setpriv",
                f"--reuid={user.pw_uid}",
                f"--regid={user.pw_gid}",
                "--init-groups",
                sys.executable,
                "-c",
                code,
                str(path),
                json.dumps(document),
            ],
            check=True,
        )

    def leftovers(self, conn, job_id):
        """Everything of the job that could outlive it: domains, job dirs, port claims, the
        spool dir, runner processes."""
        prefix = f"vt-{job_id}-"
        found = [d.name() for d in conn.listAllDomains() if d.name().startswith(prefix)]
        for node in NODES:
            job_dir = self.state(node) / "jobs" / str(job_id)
            if job_dir.exists():
                found.append(str(job_dir))
            claims = self.state(node) / "ports"
            for claim in claims.iterdir() if claims.is_dir() else ():
                if os.readlink(claim) == str(job_dir):
                    found.append(str(claim))
        if (self.spool / str(job_id)).exists():
            found.append(str(self.spool / str(job_id)))
        runners = subprocess.run(["pgrep", "-f", f"runner-.*/jobs/{job_id}/"], capture_output=True)
        return found + runners.stdout.decode().split()

    def sweep(self, job_ids):
        from ansible_collections.mikelangelo.vtorque.plugins.module_utils.sweep import sweep_jobs

        for job_id in job_ids:
            for node in NODES:
                sweep_jobs(uri="qemu:///system", state_dir=str(self.state(node)), job_id=str(job_id))
            shutil.rmtree(self.spool / str(job_id), ignore_errors=True)

    def close(self):
        self.site.close()
