"""Array elements' ids on both adapters, as the real batch systems spell them (docs/torque.md
"Array jobs"; Slurm 22.05: an element's Prolog has its own SLURM_JOB_ID and the Comment)."""

import pytest
from vtorque.scheduler.slurm import adapter as slurm
from vtorque.scheduler.torque import adapter as torque
from vtorque.site.config import parse_config

# scontrol show job -o ARRAY lists every element; JobId 1 is the element 1_3 here, as it was
SCONTROL = """#!/bin/sh
echo "$@" >> {log}
[ "$1 $2" = "show hostnames" ] && echo "$3" && exit 0
[ "$1 $2 $3" = "show job -o" ] || exit 0
echo "JobId=2 ArrayJobId=1 ArrayTaskId=1 JobState=COMPLETED"
echo "JobId=1 ArrayJobId=1 ArrayTaskId=3 JobState=CONFIGURING"
echo "JobId=3 ArrayJobId=1 ArrayTaskId=2 JobState=COMPLETED"
"""


def _script(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text.format(log=tmp_path / f"{name}.log"))
    path.chmod(0o755)
    return path


@pytest.mark.parametrize(
    ("job_id", "spool"),
    [
        ("42[3].head", "42[].head"),
        ("42[3]", "42[]"),
        ("42[3].a.b-c", "42[].a.b-c"),
        ("42.head", "42.head"),
        ("42[].head", "42[].head"),
    ],
)
def test_a_torque_element_s_spool_dir_is_its_array_s_by_spelling(job_id, spool):
    assert torque.Adapter.spool_key(job_id) == spool


def test_a_torque_element_hook_names_its_array_and_the_mom_s_element_files_map_back(tmp_path):
    jobs = tmp_path / "mom_priv" / "jobs"
    jobs.mkdir(parents=True)
    for name in ("51-1.vm.SC", "51-1.vm.JB", "52.vm.TK", "junk.txt"):
        (jobs / name).touch()
    config = parse_config(f"torque: {{pbs_home: {tmp_path}}}\n", "x.yml")
    adapter = torque.Adapter(config)
    assert adapter.live_jobs() == ["51[1].vm", "52.vm"]
    args = ["51[1].vm", "u", "g", "arr.sh-1", "nodes=1", "batch", "", "/x/51-1.vm.SC"]
    nodefile = tmp_path / "nodes"
    nodefile.write_text("vm\n")
    job = adapter.job_from_hook("prologue", args, {"PBS_NODEFILE": str(nodefile)})
    assert (job.job_id, job.array_id, job.spool_key) == ("51[1].vm", "51[].vm", "51[].vm")


QSTAT = """#!/bin/sh
echo "Job ID                    Name             User            Time Use S Queue"
echo "------------------------- ---------------- --------------- -------- - -----"
echo "51[1].vm                   arr.sh-1         u               00:00:00 C batch"
echo "51[2].vm                   arr.sh-2         u                      0 {other} batch"
echo "51[3].vm                   arr.sh-3         u                      0 R batch"
"""


@pytest.mark.parametrize(("other", "may_run"), [("C", False), ("R", True), ("Q", True), ("H", True)])
def test_the_last_torque_element_is_the_one_whose_siblings_are_all_completed(tmp_path, other, may_run):
    qstat = _script(tmp_path, "qstat", QSTAT.replace("{other}", other))
    adapter = torque.Adapter(parse_config(f"torque: {{qstat: {qstat}}}\n", "x.yml"))
    assert adapter.array_may_run("51[].vm", "51[3].vm") is may_run


def test_qstat_s_unknown_array_means_none_may_run_and_a_failure_cannot_tell(tmp_path):
    gone = _script(tmp_path, "gone", "#!/bin/sh\necho 'qstat: Unknown Job Id Error 51[].vm' >&2\nexit 153\n")
    down = _script(tmp_path, "down", "#!/bin/sh\necho 'cannot connect to server' >&2\nexit 111\n")
    assert (
        torque.Adapter(parse_config(f"torque: {{qstat: {gone}}}\n", "x.yml")).array_may_run("51[].vm", "x")
        is False
    )
    assert (
        torque.Adapter(parse_config(f"torque: {{qstat: {down}}}\n", "x.yml")).array_may_run("51[].vm", "x")
        is None
    )


def _slurm(tmp_path):
    scontrol = _script(tmp_path, "scontrol", SCONTROL)
    return slurm.Adapter(parse_config(f"scheduler: slurm\nslurm: {{scontrol: {scontrol}}}\n", "x.yml"))


def _env(**extra):
    return {
        "SLURM_JOB_ID": "1",
        "SLURM_JOB_UID": "0",
        "SLURM_NODELIST": "n1",
        "SLURMD_NODENAME": "n1",
        **extra,
    }


def test_a_marked_slurm_element_takes_its_id_from_slurmctld_not_from_its_own_job_id(tmp_path):
    adapter = _slurm(tmp_path)
    environ = _env(SLURM_JOB_COMMENT="vtorque-array mine")
    assert slurm.Adapter.hook_spool_key([], environ) is None  # the fast path cannot tell
    job = adapter.job_from_hook("slurm-prolog", [], environ)
    assert (job.job_id, job.array_id, job.spool_key) == ("1_3", "1", "1")


def test_an_unmarked_slurm_job_is_never_asked_about_and_a_false_mark_changes_nothing(tmp_path):
    adapter = _slurm(tmp_path)
    job = adapter.job_from_hook("slurm-prolog", [], _env(SLURM_JOB_ID="7"))
    assert (job.job_id, job.array_id) == ("7", None)
    assert "show job" not in (tmp_path / "scontrol.log").read_text()  # only show hostnames
    marked = adapter.job_from_hook(
        "slurm-prolog", [], _env(SLURM_JOB_ID="7", SLURM_JOB_COMMENT="vtorque-array")
    )
    assert (marked.job_id, marked.array_id) == ("7", None)  # slurmctld says 7 is no element


def test_the_batch_step_and_the_spool_name_of_a_slurm_element():
    environ = {"SLURM_JOB_ID": "1", "SLURM_ARRAY_JOB_ID": "1", "SLURM_ARRAY_TASK_ID": "3"}
    assert slurm.Adapter.running_job_id(environ) == "1_3"
    assert slurm.Adapter.running_job_id({"SLURM_JOB_ID": "9"}) == "9"
    assert (slurm.Adapter.spool_key("1_3"), slurm.Adapter.spool_key("9")) == ("1", "9")
    assert torque.Adapter.running_job_id({"PBS_JOBID": "51[2].vm"}) == "51[2].vm"


SQUEUE = """#!/bin/sh
echo "$@" > {log}
echo "1_1 COMPLETED"
echo "1_2 {other}"
echo "1_3 COMPLETING"
"""


@pytest.mark.parametrize(("other", "may_run"), [("COMPLETED", False), ("RUNNING", True), ("PENDING", True)])
def test_the_last_slurm_element_is_the_one_whose_siblings_have_ended(tmp_path, other, may_run):
    squeue = _script(tmp_path, "squeue", SQUEUE.replace("{other}", other))
    adapter = slurm.Adapter(parse_config(f"scheduler: slurm\nslurm: {{squeue: {squeue}}}\n", "x.yml"))
    assert adapter.array_may_run("1", "1_3") is may_run
    assert "-r" in (tmp_path / "squeue.log").read_text().split()  # one line per element


def test_an_array_may_run_while_any_element_may(tmp_path):
    adapter = _slurm(tmp_path)  # elements 1_1 and 1_2 COMPLETED, 1_3 CONFIGURING
    assert adapter.may_run("1") is True
    ended = _script(tmp_path, "ended", SCONTROL.replace("CONFIGURING", "COMPLETED"))
    adapter = slurm.Adapter(parse_config(f"scheduler: slurm\nslurm: {{scontrol: {ended}}}\n", "x.yml"))
    assert adapter.may_run("1") is False  # the sweep may remove the array's spool dir
