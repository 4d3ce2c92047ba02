"""The real-Slurm harness (slurm_cluster.SlurmCluster) against the Slurm facts vTorque's hooks
rely on: job output and exit codes, the root Prolog's environment (SLURM_CONF included), one
Prolog per node, a Prolog that drains its node, and a cluster inside a network namespace.
The hooks are small shell scripts; no vTorque code runs here."""

import os
import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path

import pytest
from lifecycle_site import USER, ensure_user
from slurm_cluster import SlurmCluster

# Each cluster's first job waits for slurmctld's first scheduler pass, ~3 s after it starts.
JOB_TIMEOUT = 20


@pytest.fixture
def clusters():
    """start(**kwargs) -> a running SlurmCluster in a fresh root; all stopped afterwards."""
    started, roots = [], []

    def start(**kwargs):
        root = Path(tempfile.mkdtemp(prefix="vtslurm-", dir="/var/tmp"))  # slurm must reach it
        roots.append(root)
        cluster = SlurmCluster(root, **kwargs)
        started.append(cluster)
        return cluster.start()

    yield start
    for cluster in started:
        cluster.stop()
    for root in roots:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def workdir():
    """A job directory of the unprivileged job owner (its home; pytest's tmp dirs are 0700)."""
    user = ensure_user()
    path = Path(user.pw_dir) / f"slurm-{uuid.uuid4().hex[:8]}"
    path.mkdir()
    os.chown(path, user.pw_uid, user.pw_gid)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def hook(tmp_path):
    """hook(name, body) -> path of a root-only shell script. slurmd gives hooks no PATH, so
    bodies name programs by full path (as the reference advises for real hooks)."""

    def write(name, body):
        path = tmp_path / name
        path.write_text(f"#!/bin/sh\n{body}\n")
        path.chmod(0o700)
        return path

    return write


@pytest.fixture
def netns():
    name = f"vtslurm-{uuid.uuid4().hex[:6]}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)
    yield name
    subprocess.run(["ip", "netns", "del", name], check=False)


def read_env(path):
    return dict(line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)


def test_job_output_and_exit_code(clusters, workdir):
    cluster = clusters()
    script = workdir / "job.sh"
    script.write_text('#!/bin/sh\necho "hello $SLURM_JOB_ID from $(id -un) on $SLURMD_NODENAME"\nexit 3\n')
    os.chown(script, *_owner(workdir))
    job_id = cluster.sbatch([str(script)], user=USER, cwd=workdir)

    job = cluster.wait_job(job_id, timeout=JOB_TIMEOUT)

    assert (job["JobState"], job["ExitCode"], job["Reason"]) == ("FAILED", "3:0", "NonZeroExitCode"), job
    out = workdir / f"slurm-{job_id}.out"
    assert out.read_text() == f"hello {job_id} from {USER} on n1\n", cluster.log_tail("slurmd-n1")
    assert out.stat().st_uid == _owner(workdir)[0]


def test_prolog_environment_reaches_the_same_cluster(clusters, workdir, hook, tmp_path):
    out = tmp_path / "out"
    out.mkdir(mode=0o700)
    prolog = hook(
        "prolog.sh",
        f"/usr/bin/env > {out}/env-$SLURM_JOB_ID\n"
        f'/usr/bin/scontrol show job -o "$SLURM_JOB_ID" > {out}/job-$SLURM_JOB_ID',
    )
    cluster = clusters(prolog=prolog)
    job_id = cluster.sbatch(["--comment=vm_image=tiny;vm_mem=256M", "--wrap=true"], user=USER, cwd=workdir)

    assert cluster.wait_job(job_id, timeout=JOB_TIMEOUT)["JobState"] == "COMPLETED"

    env_file = out / f"env-{job_id}"
    assert env_file.stat().st_uid == 0  # the Prolog runs as root
    env = read_env(env_file)
    assert env["SLURMD_NODENAME"] == "n1"
    assert env["SLURM_JOB_ID"] == str(job_id)
    assert env["SLURM_JOB_USER"] == USER
    assert env["SLURM_JOB_COMMENT"] == "vm_image=tiny;vm_mem=256M"
    assert env["SLURM_CONF"] == str(cluster.conf)  # slurmd -f passes its config on, not /etc/slurm
    assert "PATH" not in env  # slurmd passes none on, although its own environment has one
    seen_by_hook = (out / f"job-{job_id}").read_text()
    assert f"JobId={job_id} " in seen_by_hook and f"WorkDir={workdir}" in seen_by_hook


def test_two_nodes_run_the_prolog_once_each(clusters, workdir, hook, tmp_path):
    log = tmp_path / "hooks.log"
    prolog = hook("prolog.sh", f'echo "prolog $SLURMD_NODENAME $SLURM_JOB_ID" >> {log}')
    epilog = hook("epilog.sh", f'echo "epilog $SLURMD_NODENAME $SLURM_JOB_ID" >> {log}')
    cluster = clusters(nodes=("n1", "n2"), cpus_per_node=4, prolog=prolog, epilog=epilog)
    job_id = cluster.sbatch(["-N2", "--ntasks-per-node=4", "--wrap=srun hostname"], user=USER, cwd=workdir)

    job = cluster.wait_job(job_id, timeout=JOB_TIMEOUT)

    assert (job["JobState"], job["NodeList"], job["NumCPUs"]) == ("COMPLETED", "n[1-2]", "8"), job
    assert sorted(log.read_text().splitlines()) == [
        f"epilog n1 {job_id}",
        f"epilog n2 {job_id}",
        f"prolog n1 {job_id}",
        f"prolog n2 {job_id}",
    ]
    assert (workdir / f"slurm-{job_id}.out").read_text().splitlines() == ["vm"] * 8  # 4 CPUs each > real 2


def test_prolog_that_drains_its_node_holds_the_job(clusters, workdir, hook):
    drain = '/usr/bin/scontrol update nodename="$SLURMD_NODENAME" state=drain reason="vt: x"'
    prolog = hook("prolog.sh", f"{drain}\nexit 1")
    cluster = clusters(prolog=prolog)
    job_id = cluster.sbatch(["--wrap=true"], user=USER, cwd=workdir)

    held = "launch_failed_requeued_held"
    job = cluster.wait_job(job_id, states=("PENDING",), reason=held, timeout=JOB_TIMEOUT)

    assert job["Restarts"] == "1", job
    reason = cluster.drained_reason("n1")
    assert reason and reason.startswith("vt: x ["), cluster.node("n1")  # ours, not "Prolog error"
    assert not (workdir / f"slurm-{job_id}.out").exists()  # Alloc mode: the user gets no .out
    cluster.run(["scancel", str(job_id)])
    cluster.resume("n1")
    assert cluster.drained_reason("n1") is None


def test_cluster_inside_a_network_namespace(netns, clusters, workdir):
    cluster = clusters(netns=netns)
    job_id = cluster.sbatch(["--wrap=ip -o link show | cut -d: -f2"], user=USER, cwd=workdir)

    assert cluster.wait_job(job_id, timeout=JOB_TIMEOUT)["JobState"] == "COMPLETED"

    assert (workdir / f"slurm-{job_id}.out").read_text().split() == ["lo"]  # the job ran in the netns
    listening = ["ss", "-Hltn", "sport = :6817"]
    assert "127.0.0.1:6817" in cluster.run(listening).stdout
    on_host = subprocess.run(listening, capture_output=True, text=True, check=True).stdout
    assert on_host == "", "slurmctld must listen only inside the namespace"


def _owner(path):
    st = path.stat()
    return st.st_uid, st.st_gid
