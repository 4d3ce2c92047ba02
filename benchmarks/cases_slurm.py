"""Figures on a real Slurm (tests/slurm): vsbatch against sbatch, a node's Prolog start → its
VMs ready against the same floor as Torque's provisioning figure (the guests started directly
with libvirt-python), and the batch host's own Prolog work for a job of 1 and of 2 nodes
(each node starts its own VMs, so the batch host's part should not grow with the nodes)."""

import shutil
import sys
import tempfile
import time
import uuid
from pathlib import Path

from cases_vm import _direct_boot, tiny_image
from timing import comparison, measure

ROOT = Path(__file__).resolve().parents[1]
for folder in ("slurm", "integration"):
    sys.path.insert(0, str(ROOT / "tests" / folder))
import hostnet  # noqa: E402
from lifecycle_site import USER  # noqa: E402
from slurm_cluster import SlurmCluster  # noqa: E402
from slurm_site import NODES, VENV_BIN, SlurmSite  # noqa: E402

BRIDGE, GATEWAY = "vtbr2", "10.79.0.1"
BRIDGED = {
    "mode": "bridge",
    "bridge": BRIDGE,
    "cidr": "10.79.0.0/24",
    "gateway": GATEWAY,
    "ranges": {"n1": "10.79.0.10-10.79.0.19", "n2": "10.79.0.20-10.79.0.29"},
}


class _Lab:
    """A two-node cluster with vTorque's hooks, in a namespace holding the bridge and libvirtd."""

    def __init__(self):
        self.site = SlurmSite(tiny_image())
        self.root = Path(tempfile.mkdtemp(prefix="vtslurm-bench-", dir="/var/tmp"))
        self.root.chmod(0o755)
        self.netns = f"vtb-{uuid.uuid4().hex[:6]}"

    def __enter__(self):
        self._bridge = hostnet.namespace_with_bridge(self.netns, BRIDGE, f"{GATEWAY}/24")
        self._bridge.__enter__()
        self._libvirtd = hostnet.libvirtd_in(self.netns)
        self._libvirtd.__enter__()
        self.cluster = SlurmCluster(
            self.root,
            nodes=NODES,
            prolog=self.site.hooks["slurm-prolog"],
            epilog=self.site.hooks["slurm-epilog"],
            netns=self.netns,
            prolog_epilog_timeout=200,
            ctld_port=6847,
        ).start()
        return self

    def __exit__(self, *exc):
        try:
            self.cluster.stop()
        finally:
            self._libvirtd.__exit__(*exc)
            self._bridge.__exit__(*exc)
            self.site.close()
            shutil.rmtree(self.root, ignore_errors=True)

    def vsbatch(self, args):
        done = self.cluster.run(
            [VENV_BIN / "vsbatch", "--parsable", *args],
            user=USER,
            cwd=str(self.site.workdir),
            env={"VTORQUE_CONFIG": str(self.site.config("n1"))},
        )
        return done.stdout.strip().split(";")[0]

    def run_job(self, args):
        """The batch host's record of a finished VM job."""
        job_id = self.vsbatch(["-o", "/dev/null", *args, "job.sh"])
        job = self.cluster.wait_job(job_id, timeout=300)
        if job["JobState"] != "COMPLETED":
            raise RuntimeError(f"job {job_id}: {job['JobState']}: {self.site.record('n1', job_id)}")
        return self.site.record("n1", job_id)


def slurm(workdir, repeat):
    results = []
    image = tiny_image()
    with _Lab() as lab:
        lab.site.write_job("job.sh", "#!/bin/sh\ntrue\n")
        results.append(_submission(lab, repeat))
        one, two, floor = [], [], []
        for _ in range(repeat):
            one.append(lab.run_job(["-w", "n1", "--vm", "vcpus=1,ram=256M"])["phases"]["prologue"])
            with hostnet.entered(lab.netns):  # the floor's guests run under the same libvirtd
                floor.append(_direct_boot(image, 1, workdir)[0])
        lab.site.configure(network=BRIDGED)
        for _ in range(repeat):
            two.append(lab.run_job(["-N", "2", "--vm", "vcpus=1,ram=256M"])["phases"]["prologue"])
    results.append(comparison("slurm provisioning: 1 VM, the node's Prolog vs direct libvirt", one, floor))
    results.append(
        comparison(
            "slurm batch host: its Prolog for a 2-node job vs a 1-node job",
            two,
            one,
            "each node starts its own VMs; 2-node jobs use a bridge, 1-node jobs user mode",
        )
    )
    return results


def _submission(lab, repeat):
    """vsbatch of a VM job vs sbatch of the same script, both held and cancelled again at once."""
    cancel = []

    def submit(argv):
        done = lab.cluster.run(
            argv, user=USER, cwd=str(lab.site.workdir), env={"VTORQUE_CONFIG": str(lab.site.config("n1"))}
        )
        cancel.append(done.stdout.strip().split(";")[0])

    def sweep():
        for job_id in cancel:
            lab.cluster.run(["scancel", job_id], check=False)
        cancel.clear()
        time.sleep(0.2)

    sbatch = ["sbatch", "-H", "--parsable", "-o", "/dev/null", "job.sh"]
    vsbatch = [
        VENV_BIN / "vsbatch",
        "-H",
        "--parsable",
        "-o",
        "/dev/null",
        "--vm",
        "vcpus=1,ram=256M",
        "job.sh",
    ]
    floor = measure(lambda: submit(sbatch), repeat, setup=sweep)
    measured = measure(lambda: submit(vsbatch), repeat, setup=sweep)
    sweep()
    return comparison("slurm submission: vsbatch VM job vs sbatch", measured, floor)
