"""The real `vsbatch` console script against recording stand-ins for sbatch/scontrol/scancel."""

import json
import os
from pathlib import Path

import pytest
from fakesite import make_site

STANDIN = Path(__file__).parents[1] / "fakes" / "slurm_standin.py"
COMMANDS = ("sbatch", "scontrol", "scancel", "squeue")
SCRIPT = "#!/bin/bash\n#SBATCH -J myjob\n#SBATCH -t 00:10:00\necho hello\n"
VM_SCRIPT = (
    "#!/bin/bash\n#SBATCH -J myjob --vm vcpus=3,RAM=2G\n#SBATCH -t 10\necho hello\n#SBATCH --vm bad=1\n"
)
BRIDGED = {
    "mode": "bridge",
    "cidr": "10.20.0.0/16",
    "gateway": "10.20.0.1",
    "derive": {"first": "10.20.1.10"},
}
# fakesite's config: host_reserve 1 core + 1024 MiB, defaults vcpus 2, ram 1G, user network mode
NOTE = "vsbatch: note: "


class SlurmSite:
    """fakesite's site with `scheduler: slurm` and stand-ins for the Slurm commands."""

    def __init__(self, root):
        self.fake = make_site(root)
        for name in COMMANDS:
            (self.fake.root / "bin" / name).symlink_to(STANDIN)
        self.configure()

    def __getattr__(self, name):
        return getattr(self.fake, name)

    def configure(self, **overrides):
        slurm = {name: str(self.fake.root / "bin" / name) for name in COMMANDS}
        self.fake.write_config(scheduler="slurm", slurm=slurm, **overrides)

    def sbatch_call(self):
        calls = [call for call in self.fake.calls() if call["prog"] == "sbatch"]
        assert len(calls) == 1, self.fake.calls()
        return calls[0]


@pytest.fixture
def site(tmp_path):
    return SlurmSite(tmp_path)


@pytest.fixture
def job(site):
    path = site.root / "job.sh"
    path.write_text(SCRIPT)
    return path


@pytest.fixture
def vm_job(site):
    path = site.root / "vm.sh"
    path.write_text(VM_SCRIPT)
    return path


def plan(site, *argv, **env):
    """The sbatch argv (before the wrapper) of `vsbatch --dry-run`, and its stderr."""
    done = site.run("vsbatch", "--dry-run", *argv, **env)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)["sbatch"][1:], done.stderr


# --- without --vm, vsbatch is sbatch --------------------------------------------------------


def test_bare_metal_job_execs_sbatch_with_argv_unchanged(site, job):
    argv = ["-N", "2", "--exclusive", "-vJ", "x", "--mem", "1G", str(job), "arg", "--vm", "vcpus=2"]
    done = site.run("vsbatch", *argv)  # a --vm after the script is the script's argument
    assert (done.returncode, done.stdout, done.stderr) == (0, "Submitted batch job 1\n", "")
    assert site.calls() == [{"prog": "sbatch", "argv": argv, "script": SCRIPT}]
    assert list(site.spool.iterdir()) == []


def test_bare_metal_job_passes_sbatch_output_and_exit_code_through(site, job):
    done = site.run("vsbatch", "--parsable", str(job))
    assert (done.returncode, done.stdout) == (0, "1\n")
    done = site.run("vsbatch", str(job), VTORQUE_FAKE_SBATCH_RC="37")
    assert done.returncode == 37 and "simulated failure" in done.stderr and done.stdout == ""


def test_bare_metal_stdin_script_reaches_sbatch_on_stdin(site):
    done = site.run("vsbatch", "-N1", stdin="#SBATCH -J piped\necho hi\n")
    assert done.returncode == 0, done.stderr
    assert site.calls() == [{"prog": "sbatch", "argv": ["-N1"], "script": "#SBATCH -J piped\necho hi\n"}]


@pytest.mark.parametrize(
    "argv", [["--bogus", "job.sh"], ["-N"], ["missing.sh"], ["--version"], ["--wrap", "echo hi"]]
)
def test_what_vsbatch_cannot_read_without_vm_is_sbatchs_to_answer(site, job, argv):
    done = site.run("vsbatch", *argv)
    assert done.returncode == 0, done.stderr
    assert [call["argv"] for call in site.calls()] == [argv]


def test_sbatch_answers_help_and_options_it_does_not_know_even_for_a_vm_script(site, vm_job):
    for argv in (["--help", str(vm_job)], ["--bogus", str(vm_job)]):
        assert site.run("vsbatch", *argv).returncode == 0
    assert [call["argv"] for call in site.calls()] == [["--help", str(vm_job)], ["--bogus", str(vm_job)]]


def test_a_directive_sbatch_cannot_read_is_sbatchs_to_answer_without_vm(site):
    (site.root / "odd.sh").write_text("#!/bin/sh\n#SBATCH --spank-plugin-option\necho\n")
    done = site.run("vsbatch", "odd.sh")
    assert done.returncode == 0 and [call["argv"] for call in site.calls()] == [["odd.sh"]]


def test_a_vm_directive_after_the_first_command_is_not_read(site):
    (site.root / "late.sh").write_text("#!/bin/sh\n# comment\n\necho go\n#SBATCH --vm vcpus=1\n")
    done = site.run("vsbatch", "late.sh")
    assert done.returncode == 0 and site.calls()[0]["argv"] == ["late.sh"]
    assert list(site.spool.iterdir()) == []


def test_dry_run_without_vm_shows_the_sbatch_call(site, job):
    done = site.run("vsbatch", "--dry-run", "-N1", str(job))
    assert json.loads(done.stdout) == {
        "sbatch": [str(site.root / "bin" / "sbatch"), "-N1", str(job)],
        "request": None,
    }
    assert site.calls() == []


# --- a VM job: held, spooled, released ----------------------------------------------------


def test_vm_job_is_submitted_held_then_spooled_then_released(site, vm_job):
    done = site.run("vsbatch", "-p", "debug", str(vm_job), "a1", "a2")
    assert done.returncode == 0, done.stderr
    assert done.stdout == "Submitted batch job 1\n"
    sbatch, release = site.calls()
    assert sbatch["prog"] == "sbatch" and sbatch["argv"][:4] == ["-H", "--parsable", "-p", "debug"]
    wrapper = Path(sbatch["argv"][-3])
    assert wrapper.name == "vm.sh" and sbatch["argv"][-2:] == ["a1", "a2"]
    assert sbatch["script"].startswith("#!/bin/sh\n#SBATCH -J myjob\n#SBATCH -t 10\n")
    assert "--vm" not in sbatch["script"]
    assert f'job-run {site.spool}/"$SLURM_JOB_ID" "$@"' in sbatch["script"]
    assert release == {"prog": "scontrol", "argv": ["release", "1"], "script": None}
    job_dir = site.spool / "1"
    assert (job_dir / "job.sh").read_text() == VM_SCRIPT
    assert (job_dir / "wrapper" / "vm.sh").is_file()
    document = json.loads((job_dir / "request.json").read_text())
    assert document["job_id"] == "1" and document["asked"] == {"ram": "2G", "vcpus": "3"}
    assert document["submit"] == [str(site.root / "bin" / "sbatch"), *sbatch["argv"]]
    assert document["request"]["vcpus"] == 3 and document["request"]["ram_mib"] == 2048
    assert job_dir.stat().st_mode & 0o777 == 0o700


def test_the_command_line_vm_wins_over_the_script(site, vm_job):
    done = site.run("vsbatch", "--dry-run", "--vm", "vcpus=4", "--vm=ram=3G", str(vm_job))
    request = json.loads(done.stdout)["request"]
    assert (request["vcpus"], request["ram_mib"]) == (4, 3072)


def test_user_hold_is_kept_and_not_released(site, vm_job):
    done = site.run("vsbatch", "-H", str(vm_job))
    assert done.returncode == 0, done.stderr
    assert [call["prog"] for call in site.calls()] == ["sbatch"]
    assert site.sbatch_call()["argv"].count("-H") == 1


def test_a_hold_in_the_script_is_kept_too(site):
    (site.root / "held.sh").write_text("#!/bin/sh\n#SBATCH --hold --vm vcpus=1\necho\n")
    assert site.run("vsbatch", "held.sh").returncode == 0
    assert [call["prog"] for call in site.calls()] == ["sbatch"]


@pytest.mark.parametrize(
    ("argv", "cluster", "shown"),
    [
        (["--parsable"], None, "1\n"),
        (["--parsable"], "alpha", "1;alpha\n"),
        ([], "alpha", "Submitted batch job 1 on cluster alpha\n"),
        (["-Q"], None, ""),
    ],
)
def test_the_user_sees_what_sbatch_would_print(site, vm_job, argv, cluster, shown):
    env = {"VTORQUE_FAKE_CLUSTER": cluster} if cluster else {}
    done = site.run("vsbatch", *argv, str(vm_job), **env)
    assert (done.returncode, done.stdout) == (0, shown), done.stderr
    sbatch, release = site.calls()
    assert sbatch["argv"].count("--parsable") == 1 and "-Q" not in sbatch["argv"]
    assert release["argv"] == (["-M", cluster] if cluster else []) + ["release", "1"]


def test_stdin_vm_job_gets_a_wrapper_named_as_sbatch_names_it(site):
    done = site.run("vsbatch", "--vm", "vcpus=1", stdin="#!/bin/sh\n#SBATCH -J piped\necho hi\n")
    assert done.returncode == 0, done.stderr
    assert Path(site.sbatch_call()["argv"][-1]).name == "sbatch"
    assert (site.spool / "1" / "job.sh").read_text() == "#!/bin/sh\n#SBATCH -J piped\necho hi\n"


@pytest.mark.parametrize(
    ("script", "message"),
    [
        ("#SBATCH -J x\necho hi\n", "stdin: this does not look like a batch script"),
        ("#!/bin/sh\r\necho hi\r\n", "stdin: the batch script contains DOS line breaks"),
        (" \n", "stdin: the batch script is empty"),
    ],
)
def test_a_vm_script_sbatch_would_refuse_is_refused(site, script, message):
    done = site.run("vsbatch", "--vm", "vcpus=1", stdin=script)
    assert done.returncode != 0 and message in done.stderr and site.calls() == []


def test_wrap_vm_job_runs_the_wrapped_command_in_the_vm(site):
    done = site.run("vsbatch", "--vm", "vcpus=1", "--wrap", "echo in the vm")
    assert done.returncode == 0, done.stderr
    argv = site.sbatch_call()["argv"]
    assert Path(argv[-1]).name == "wrap" and not any(token.startswith("--wrap") for token in argv)
    job_sh = (site.spool / "1" / "job.sh").read_text()
    assert job_sh == "#!/bin/sh\n# This script was created by sbatch --wrap.\n\necho in the vm\n"


def test_sbatch_failure_passes_its_exit_code_and_leaves_nothing(site, vm_job):
    done = site.run("vsbatch", str(vm_job), VTORQUE_FAKE_SBATCH_RC="190")
    assert done.returncode == 190
    assert "vsbatch: sbatch failed with exit code 190; nothing was submitted" in done.stderr
    assert [call["prog"] for call in site.calls()] == ["sbatch"]
    assert list(site.spool.iterdir()) == []


def test_release_failure_cancels_the_job_and_says_why(site, vm_job):
    done = site.run("vsbatch", str(vm_job), VTORQUE_FAKE_SCONTROL_RC="1")
    assert done.returncode != 0 and done.stdout == ""
    assert (
        "job 1 was queued but then removed again (scancel): scontrol release 1 failed (exit 1)" in done.stderr
    )
    assert [(call["prog"], call["argv"]) for call in site.calls()][1:] == [
        ("scontrol", ["release", "1"]),
        ("scancel", ["1"]),
    ]
    assert list(site.spool.iterdir()) == []


def test_dry_run_prints_the_sbatch_call_and_the_request_and_submits_nothing(site, vm_job):
    done = site.run("vsbatch", "--dry-run", "-N1", str(vm_job))
    assert done.returncode == 0, done.stderr
    shown = json.loads(done.stdout)
    assert set(shown) == {"sbatch", "request"}
    assert shown["sbatch"][:4] == [str(site.root / "bin" / "sbatch"), "-H", "--parsable", "-N1"]
    assert shown["sbatch"][-1].endswith("/.staging-XXXXXX/wrapper/vm.sh")
    assert shown["request"]["vcpus"] == 3
    assert site.calls() == [] and list(site.spool.iterdir()) == []


def test_help_lists_every_vm_key(site):
    from vtorque.request.grammar import KEYS

    done = site.run("vsbatch", "--help")
    assert done.returncode == 0 and "usage: vsbatch" in done.stdout
    for key in KEYS:
        assert key in done.stdout
    assert site.calls() == []


# --- resources, fitted per node -----------------------------------------------------------


def test_without_resources_vsbatch_asks_for_what_the_vms_need_and_says_so(site, vm_job):
    argv, notes = plan(site, str(vm_job))
    assert argv[:-1] == [
        "-H",
        "--parsable",
        "--ntasks-per-node=1",
        "--cpus-per-task=4",
        "--mem=3072M",
        "--exclusive",
    ]
    assert f"{NOTE}--ntasks-per-node=1 --cpus-per-task=4 added (one task of 4 CPUs on each node):" in notes
    assert "host_reserve.cores 1 + vcpus 3 x vms_per_node 1" in notes
    assert (
        f"{NOTE}--mem=3072M added: host_reserve.ram_mib 1024 + ram 2048 MiB x vms_per_node 1, per node"
        in notes
    )
    assert f"{NOTE}--exclusive added: policy.exclusive_node_alloc" in notes


@pytest.mark.parametrize(
    ("given", "added", "note"),
    [
        (
            ["--ntasks-per-node=2"],
            ["--cpus-per-task=2"],
            "cpus-per-task raised from 1 to 2 (2 task(s) x 2 = 4 CPUs",
        ),
        (["--tasks-per-node", "8"], [], None),
        (["-c", "3"], ["--cpus-per-task=4"], "cpus-per-task raised from 3 to 4 (1 task(s) x 4 = 4 CPUs"),
        (["-c6"], [], None),
        (["--ntasks-per-node=4", "-O"], ["--cpus-per-task=4"], "cpus-per-task raised from 1 to 4"),
    ],
)
def test_the_users_task_geometry_is_kept_or_its_cpus_per_task_raised(site, vm_job, given, added, note):
    argv, notes = plan(site, *given, str(vm_job))
    assert argv[2 : 2 + len(given)] == given
    assert argv[2 + len(given) : -3] == added  # then --mem and --exclusive
    assert (note in notes) if note else ("cpus-per-task" not in notes)


@pytest.mark.parametrize(
    ("given", "added", "note"),
    [
        (["--mem=1G"], ["--mem=3072M"], "mem raised from 1G to 3072M"),
        (["--mem", "8G"], [], None),
        (["--mem=0"], [], None),  # all of each node's memory
        (
            ["--mem-per-cpu=100"],
            ["--mem-per-cpu=768M"],
            "mem-per-cpu raised from 100 to 768M (4 CPUs on each node",
        ),
        (["--mem-per-cpu=1G"], [], None),
    ],
)
def test_memory_per_node_is_raised_to_what_the_vms_need(site, vm_job, given, added, note):
    argv, notes = plan(site, *given, str(vm_job))
    fitted = argv[2 + len(given) : -1]
    assert fitted == ["--ntasks-per-node=1", "--cpus-per-task=4", *added, "--exclusive"]
    assert (note in notes) if note else ("mem" not in notes)


def test_sbatch_memory_variables_count_and_the_command_line_wins(site, vm_job):
    argv, notes = plan(site, str(vm_job), SBATCH_MEM_PER_NODE="1G")
    assert "--mem=3072M" in argv and "mem raised from 1G" in notes
    argv, notes = plan(site, "--mem=4G", str(vm_job), SBATCH_MEM_PER_CPU="1")
    assert not any(token.startswith("--mem") for token in argv[3:])


def test_two_kinds_of_memory_request_are_refused_as_sbatch_refuses_them(site):
    (site.root / "mem.sh").write_text("#!/bin/sh\n#SBATCH --mem-per-cpu=1G --vm vcpus=1\n")
    done = site.run("vsbatch", "--mem=4G", "mem.sh")
    assert done.returncode != 0 and "mutually exclusive" in done.stderr
    assert site.calls() == []


@pytest.mark.parametrize(
    ("given", "note"),
    [
        (["--exclusive"], None),
        (["--exclusive=user"], "--exclusive added after --exclusive=user"),
        (["--exclusive", "-s"], "--exclusive added after --oversubscribe"),
    ],
)
def test_whole_nodes_unless_the_users_exclusive_is_already_in_force(site, vm_job, given, note):
    argv, notes = plan(site, *given, str(vm_job))
    assert (argv[-2] == "--exclusive") == (note is not None)
    assert (note in notes) if note else ("exclusive" not in notes)


def test_no_exclusive_when_the_site_shares_nodes(site, vm_job):
    site.configure(policy={"exclusive_node_alloc": False})
    argv, notes = plan(site, str(vm_job))
    assert "--exclusive" not in argv and "exclusive" not in notes


def test_a_node_range_passes_through_and_the_network_check_counts_its_maximum(site, vm_job):
    done = site.run("vsbatch", "-N", "1-2", str(vm_job))
    assert done.returncode != 0 and "vsbatch: nodes=2: network.mode is user" in done.stderr
    site.configure(network=BRIDGED)
    argv, _ = plan(site, "-N", "2-4", str(vm_job))
    assert argv[2:4] == ["-N", "2-4"]
    done = site.run("vsbatch", "-N", "lots", str(vm_job))
    assert done.returncode != 0 and "-N lots: not a node count" in done.stderr


@pytest.mark.parametrize(
    ("argv", "key"), [(["-N2"], "nodes=2"), (["--vm", "vms_per_node=2"], "vms_per_node=2")]
)
def test_user_mode_refuses_several_vms_at_submission_and_submits_nothing(site, job, argv, key):
    done = site.run("vsbatch", *argv, "--vm", "vcpus=1", str(job))
    assert done.returncode != 0 and f"vsbatch: {key}: network.mode is user on this site" in done.stderr
    assert site.calls() == [] and os.listdir(site.spool) == []


def test_an_array_vm_job_is_marked_in_its_comment_with_the_users_comment_after_it(site, job):
    argv, _ = plan(site, "--vm", "vcpus=1", "-a", "1-3", str(job))
    assert argv[-2] == "--comment=vtorque-array" and "-a" in argv  # then the wrapper
    argv, _ = plan(site, "--vm", "vcpus=1", "--comment", "mine", str(job), SBATCH_ARRAY_INX="1-3")
    assert argv[-2] == "--comment=vtorque-array mine"  # after the user's own: sbatch takes the last
    argv, _ = plan(site, "--vm", "vcpus=1", "--comment", "mine", str(job))
    assert not any(arg.startswith("--comment=vtorque") for arg in argv)  # not an array: not marked


# --- refused, nothing submitted -------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "env", "message"),
    [
        (["-W"], {}, "--wait: vsbatch releases the held job only after sbatch returns"),
        (["--test-only"], {}, "--test-only: see what would be submitted with vsbatch --dry-run"),
        (["-n", "4"], {}, "--ntasks: it does not say how many CPUs each node gets"),
        (["--mem-per-gpu=1G"], {}, "--mem-per-gpu: the VMs' memory is per node"),
        (["-N1", ":", "-N1"], {}, "heterogeneous jobs"),
        (["--help"], {}, "--help: sbatch only answers it"),
        (["--bogus"], {}, "unrecognized sbatch option '--bogus'"),
    ],
)
def test_what_a_vm_job_cannot_be_is_refused_before_anything_is_submitted(site, job, argv, env, message):
    done = site.run("vsbatch", "--vm", "vcpus=1", *argv, str(job), **env)
    assert done.returncode != 0
    assert message in done.stderr and "vsbatch: nothing was submitted" in done.stderr
    assert site.calls() == [] and list(site.spool.iterdir()) == []


def test_pbs_lines_sbatch_would_translate_are_refused_unless_ignored(site):
    (site.root / "pbs.sh").write_text("#!/bin/sh\n#SBATCH --vm vcpus=1\n#PBS -N fromtorque\necho\n")
    done = site.run("vsbatch", "pbs.sh")
    assert done.returncode != 0 and "pbs.sh line 3 ('#PBS -N fromtorque'): sbatch translates" in done.stderr
    assert site.run("vsbatch", "--ignore-pbs", "pbs.sh").returncode == 0


def test_a_hetjob_script_is_refused(site):
    (site.root / "het.sh").write_text("#!/bin/sh\n#SBATCH --vm vcpus=1\n#SBATCH hetjob\n#SBATCH -N1\necho\n")
    done = site.run("vsbatch", "het.sh")
    assert done.returncode != 0 and "heterogeneous jobs" in done.stderr and site.calls() == []


@pytest.mark.parametrize(
    ("vm", "message"),
    [
        ("foo=1", "command line: --vm foo=1: unknown key"),
        ("vcpus=two", "--vm vcpus=two: expected a whole number"),
        ("vcpus=9", "limits.max_vcpus = 8"),
        ("img=nosuch", "no image named 'nosuch'"),
        ("vrdma=1", "ambiguous"),
        ("vcpus", "is not key=value"),
    ],
)
def test_a_bad_vm_request_never_reaches_sbatch(site, job, vm, message):
    done = site.run("vsbatch", "--vm", vm, str(job))
    assert done.returncode != 0 and message in done.stderr
    assert site.calls() == [] and list(site.spool.iterdir()) == []


def test_a_bad_vm_directive_names_its_line(site):
    (site.root / "bad.sh").write_text("#!/bin/sh\n#SBATCH -J ok\n#SBATCH --vm ram=lots\n")
    done = site.run("vsbatch", "bad.sh")
    assert done.returncode != 0
    assert "bad.sh line 3 (#SBATCH directive): --vm ram=lots" in done.stderr and site.calls() == []


def test_a_missing_script_of_a_vm_job_is_vsbatchs_error(site):
    done = site.run("vsbatch", "--vm", "vcpus=1", "missing.sh")
    assert done.returncode != 0 and "cannot read job script missing.sh" in done.stderr
    assert site.calls() == []
