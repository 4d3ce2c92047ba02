"""The real `vsub` console script against recording stand-ins for qsub/qrls/qdel."""

import json
import os
from pathlib import Path

import pytest
from fakesite import make_site

SCRIPT = "#!/bin/bash\n#PBS -N myjob\n#PBS -l walltime=00:10:00\necho hello\n"


@pytest.fixture
def site(tmp_path):
    return make_site(tmp_path)


@pytest.fixture
def job(site):
    path = site.root / "job.sh"
    path.write_text(SCRIPT)
    return path


def test_bare_metal_job_execs_qsub_with_argv_unchanged(site, job):
    argv = ["-l", "nodes=1:ppn=2", "-N", "x", "-hV", str(job)]
    done = site.run("vsub", *argv)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "1.fakeserver\n"
    assert done.stderr == ""
    assert site.calls() == [{"prog": "qsub", "argv": argv, "script": SCRIPT}]
    assert list(site.spool.iterdir()) == []


def test_bare_metal_job_passes_qsub_exit_code_through(site, job):
    done = site.run("vsub", str(job), VTORQUE_FAKE_QSUB_RC="37")
    assert done.returncode == 37
    assert "simulated failure" in done.stderr


def test_bare_metal_job_with_missing_script_lets_qsub_answer(site):
    done = site.run("vsub", "-N", "x", "missing.sh")
    assert [call["argv"] for call in site.calls()] == [["-N", "x", "missing.sh"]]
    assert done.returncode == 0


def test_bare_metal_stdin_script_reaches_qsub_on_stdin(site):
    done = site.run("vsub", "-l", "nodes=1", stdin="#PBS -N piped\necho hi\n")
    assert done.returncode == 0, done.stderr
    assert site.calls() == [{"prog": "qsub", "argv": ["-l", "nodes=1"], "script": "#PBS -N piped\necho hi\n"}]


BRIDGED = {
    "mode": "bridge",
    "cidr": "10.20.0.0/16",
    "gateway": "10.20.0.1",
    "derive": {"first": "10.20.1.10"},
}


def test_vm_job_holds_writes_request_then_releases(site, job):
    site.write_config(network=BRIDGED)
    done = site.run("vsub", "-l", "nodes=2:ppn=1", "-vm", "vcpus=3,RAM=2G", str(job))
    assert done.returncode == 0, done.stderr
    assert done.stdout == "1.fakeserver\n"
    qsub, qrls = site.calls()
    assert qsub["prog"] == "qsub" and qsub["argv"][0] == "-h"
    # -n: pbs_server makes the nodes job-exclusive (pbs_sched ignores -l naccesspolicy)
    assert qsub["argv"][1:4] == ["-l", "nodes=2:ppn=4", "-n"]
    wrapper = Path(qsub["argv"][-1])
    assert wrapper.name == "job.sh"
    assert "#PBS -N myjob\n#PBS -l walltime=00:10:00\n" in qsub["script"]
    assert "job-run" in qsub["script"] and '"$PBS_JOBID"' in qsub["script"]
    assert qrls == {"prog": "qrls", "argv": ["1.fakeserver"], "script": None}
    job_dir = site.spool / "1.fakeserver"
    assert (job_dir / "job.sh").read_text() == SCRIPT
    document = json.loads((job_dir / "request.json").read_text())
    assert document["job_id"] == "1.fakeserver"
    assert document["asked"] == {"ram": "2G", "vcpus": "3"}
    assert document["request"]["vcpus"] == 3 and document["request"]["ram_mib"] == 2048
    assert document["request"]["image"]["name"] == "tiny"
    assert "ppn raised from 1 to 4" in done.stderr


def test_user_hold_is_kept_and_not_released(site, job):
    done = site.run("vsub", "-h", "-vm", "vcpus=1", str(job))
    assert done.returncode == 0, done.stderr
    calls = site.calls()
    assert [call["prog"] for call in calls] == ["qsub"]
    assert calls[0]["argv"].count("-h") == 1


def test_script_vm_lines_are_read_and_command_line_wins(site):
    script = site.root / "run.sh"
    script.write_text(
        "#!/bin/sh\n#PBS -vm vcpus=2,ram=3G\n#PBS -N keep -vm vms_per_node=2\necho\n#PBS -vm bad=1\n"
    )
    site.write_config(network=BRIDGED)
    done = site.run("vsub", "--dry-run", "-vm", "vcpus=4", str(script))
    assert done.returncode == 0, done.stderr
    plan = json.loads(done.stdout)
    request = plan["request"]
    assert (request["vcpus"], request["ram_mib"], request["vms_per_node"]) == (4, 3072, 2)
    assert plan["qsub"][-1].endswith("/wrapper/run.sh")
    assert "nodes=1:ppn=9" in plan["qsub"]  # 1 reserved + 4 vcpus x 2 VMs
    assert site.calls() == []


@pytest.mark.parametrize(
    ("argv", "key"), [(["-l", "nodes=2"], "nodes=2"), (["-vm", "vms_per_node=2"], "vms_per_node=2")]
)
def test_user_mode_refuses_several_vms_at_submission_and_submits_nothing(site, job, argv, key):
    done = site.run("vsub", *argv, "-vm", "vcpus=1", str(job))
    assert done.returncode != 0 and f"vsub: {key}: network.mode is user on this site" in done.stderr
    assert site.calls() == [] and os.listdir(site.spool) == []


def test_stdin_vm_job_gets_a_wrapper_named_STDIN(site):
    done = site.run("vsub", "-vm", "vcpus=1", stdin="#PBS -N piped\necho hi\n")
    assert done.returncode == 0, done.stderr
    qsub = site.calls()[0]
    assert Path(qsub["argv"][-1]).name == "STDIN"
    assert (site.spool / "1.fakeserver" / "job.sh").read_text() == "#PBS -N piped\necho hi\n"


def test_dry_run_prints_qsub_call_and_request_and_submits_nothing(site, job):
    done = site.run("vsub", "--dry-run", "-l", "mem=1gb", "-vm", "vcpus=2,ram=2G", str(job))
    assert done.returncode == 0, done.stderr
    plan = json.loads(done.stdout)
    assert set(plan) == {"qsub", "request"}
    assert plan["qsub"][0] == str(site.root / "bin" / "qsub")
    assert "mem=3072mb" in plan["qsub"]  # (1024 reserved + 2048) x 1 node
    assert "mem raised from 1gb to 3072mb" in done.stderr
    assert site.calls() == [] and list(site.spool.iterdir()) == []


@pytest.mark.parametrize(
    ("vm", "message"),
    [
        ("foo=1", "-vm foo=1: unknown key"),
        ("vcpus=two", "-vm vcpus=two: expected a whole number"),
        ("vcpus=9", "limits.max_vcpus = 8"),
        ("ram=17G", "limits.max_ram_mib"),
        ("vms_per_node=5", "limits.max_vms_per_node"),
        ("img=../../etc/shadow", "policy.allow_user_images"),
        ("img=/etc/passwd", "policy.allow_user_images"),
        ("img=nosuch", "no image named 'nosuch'"),
        ("img=ti..ny", "not valid"),
        ("vrdma=1", "ambiguous"),
        ("iocm=0", "ambiguous"),
        ("iocm=true", "policy.iocm: false"),
        ("vm_prologue=missing.sh", "-vm vm_prologue=missing.sh: no such file"),
        ("img=tiny,distro=osv", "image 'tiny' is a debian image"),
        ("fs_type=tmpfs", "fs_type=tmpfs"),
        ("vcpus", "is not key=value"),
        ("vcpus=1,", "is not key=value"),
    ],
)
def test_hostile_or_mistyped_request_never_reaches_qsub(site, job, vm, message):
    done = site.run("vsub", "-vm", vm, str(job))
    assert done.returncode != 0
    assert message in done.stderr
    assert "command line" in done.stderr
    assert site.calls() == []
    assert list(site.spool.iterdir()) == []


def test_bad_script_directive_names_the_line(site):
    script = site.root / "bad.sh"
    script.write_text("#!/bin/sh\n#PBS -N ok\n#PBS -vm ram=lots\n")
    done = site.run("vsub", str(script))
    assert done.returncode != 0
    assert "bad.sh line 3" in done.stderr and "-vm ram=lots" in done.stderr
    assert site.calls() == []


def test_interactive_vm_job_is_submitted_held_with_the_wrapper_as_its_command(site):
    done = site.run("vsub", "--dry-run", "-I", "-X", "-vm", "vcpus=1")
    assert done.returncode == 0, done.stderr
    qsub = json.loads(done.stdout)["qsub"]
    assert qsub[1:4] == ["-h", "-I", "-X"] and qsub[-2] == "-x", qsub
    assert qsub[-1].endswith("/wrapper/STDIN")


def test_an_interactive_job_qsub_never_names_leaves_nothing_and_passes_qsub_s_code_on(site):
    done = site.run("vsub", "-I", "-vm", "vcpus=1")  # the stand-in qsub prints no waiting line
    assert done.returncode == 0, done.stderr
    (call,) = site.calls()
    assert call["argv"][:2] == ["-h", "-I"] and call["argv"][-2] == "-x", call
    assert list(site.spool.iterdir()) == []  # not published: no qrls, no spool dir


def test_an_array_vm_job_is_held_published_under_the_array_id_and_released(site, job):
    done = site.run("vsub", "-t", "1-3", "-vm", "vcpus=1", str(job))
    assert done.returncode == 0, done.stderr
    assert done.stdout == "1[].fakeserver\n"
    qsub, qrls = site.calls()
    assert qsub["argv"][:3] == ["-h", "-t", "1-3"] and qrls == {
        "prog": "qrls",
        "argv": ["1[].fakeserver"],
        "script": None,
    }
    (spool,) = site.spool.iterdir()  # every element's prologue finds the request here
    assert spool.name == "1[].fakeserver"
    assert json.loads((spool / "request.json").read_text())["job_id"] == "1[].fakeserver"


def test_an_interactive_array_vm_job_is_refused(site):
    done = site.run("vsub", "-I", "-t", "1-3", "-vm", "vcpus=1")
    assert done.returncode != 0 and "-t with -I" in done.stderr
    assert site.calls() == [] and list(site.spool.iterdir()) == []


def test_qsub_failure_leaves_no_spool_and_passes_exit_code(site, job):
    done = site.run("vsub", "-vm", "vcpus=1", str(job), VTORQUE_FAKE_QSUB_RC="190")
    assert done.returncode == 190
    assert [call["prog"] for call in site.calls()] == ["qsub"]
    assert list(site.spool.iterdir()) == []


def test_qrls_failure_deletes_the_job_and_says_why(site, job):
    done = site.run("vsub", "-vm", "vcpus=1", str(job), VTORQUE_FAKE_QRLS_RC="1")
    assert done.returncode != 0
    assert "1.fakeserver was queued but then removed again" in done.stderr
    assert [(call["prog"], call["argv"]) for call in site.calls()][1:] == [
        ("qrls", ["1.fakeserver"]),
        ("qdel", ["1.fakeserver"]),
    ]
    assert done.stdout == ""
    assert list(site.spool.iterdir()) == []


def test_user_image_allowed_by_policy_must_be_the_users_own_file(site, job):
    site.write_config(policy={"allow_user_images": True})
    image = site.root / "mine.qcow2"
    image.write_bytes(b"QFI\xfb" + bytes(60))
    done = site.run("vsub", "--dry-run", "-vm", f"img={image},distro=ubuntu", str(job))
    assert done.returncode == 0, done.stderr
    request = json.loads(done.stdout)["request"]
    assert request["user_image"] and request["image"]["path"] == str(image) and request["distro"] == "ubuntu"
    (site.root / "link.qcow2").symlink_to(image)
    done = site.run("vsub", "-vm", "img=./link.qcow2,distro=ubuntu", str(job))
    assert done.returncode != 0 and "symbolic link" in done.stderr
    done = site.run("vsub", "-vm", "img=../x/../mine.qcow2,distro=ubuntu", str(job))
    assert done.returncode != 0 and "'..'" in done.stderr
    assert site.calls() == []


def test_help_lists_every_vm_key(site):
    from vtorque.request.grammar import KEYS

    done = site.run("vsub", "--help")
    assert done.returncode == 0
    for key in KEYS:
        assert key in done.stdout


def test_the_job_directory_and_request_are_the_owners_alone(site, job):
    done = site.run("vsub", "-vm", "vcpus=1", str(job))
    assert done.returncode == 0, done.stderr
    job_dir = site.spool / done.stdout.strip()
    assert job_dir.stat().st_mode & 0o777 == 0o700  # root reads it as the owner (owner_side)
    assert (job_dir / "request.json").stat().st_mode & 0o777 == 0o600
