"""Root writes failure reasons into the user's spool directory without trusting it."""

import os
import pwd
import subprocess
import sys
import time

import pytest
from vtorque.job.records import USER_LOG, append_user_log, load_record, prune_records, update_record

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="writing as root for another owner needs root")
OWNER = pwd.getpwnam("nobody").pw_uid  # root writes the log as the owner: a real user
OTHER = pwd.getpwnam("daemon").pw_uid


@pytest.fixture
def tmp_path(shared_tmp):
    return shared_tmp


@pytest.fixture
def spool(tmp_path):
    job_dir = tmp_path / "42.head"
    job_dir.mkdir()
    os.chown(job_dir, OWNER, OWNER)
    return job_dir


def test_the_log_is_appended_and_belongs_to_the_owner(spool):
    assert append_user_log(str(spool), owner_uid=OWNER, message="first")
    assert append_user_log(str(spool), owner_uid=OWNER, message="second")
    lines = (spool / USER_LOG).read_text().splitlines()
    assert [line.split(" vtorque: ")[1] for line in lines] == ["first", "second"]
    assert (spool / USER_LOG).stat().st_uid == OWNER


def test_a_planted_symlink_or_hard_link_is_never_written_through(spool, tmp_path):
    victim = tmp_path / "shadow"
    victim.write_text("root:secret\n")
    (spool / USER_LOG).symlink_to(victim)
    assert append_user_log(str(spool), owner_uid=OWNER, message="reason")
    assert victim.read_text() == "root:secret\n" and not (spool / USER_LOG).is_symlink()
    (spool / USER_LOG).unlink()
    os.link(victim, spool / USER_LOG)
    assert append_user_log(str(spool), owner_uid=OWNER, message="reason")
    assert victim.read_text() == "root:secret\n" and victim.stat().st_nlink == 1
    assert "secret" not in (spool / USER_LOG).read_text()  # nothing copied out of the victim


def test_a_directory_of_another_owner_or_a_linked_directory_gets_nothing(spool, tmp_path):
    assert not append_user_log(str(spool), owner_uid=OTHER, message="reason")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    os.chown(elsewhere, OWNER, OWNER)
    (tmp_path / "linked").symlink_to(elsewhere)
    assert not append_user_log(str(tmp_path / "linked"), owner_uid=OWNER, message="reason")
    assert not (spool / USER_LOG).exists() and not (elsewhere / USER_LOG).exists()


def test_records_merge_phases_and_events(tmp_path):
    update_record(str(tmp_path), "42.head", state="starting", phases={"prologue": 1.5}, event="started")
    record = update_record(str(tmp_path), "42.head", state="ended", phases={"epilogue": 2.0}, event="ended")
    assert record == load_record(str(tmp_path), "42.head")
    assert record["state"] == "ended" and record["phases"] == {"prologue": 1.5, "epilogue": 2.0}
    assert [event["text"] for event in record["events"]] == ["started", "ended"]
    info = (tmp_path / "records" / "42.head.json").stat()
    assert (info.st_uid, info.st_mode & 0o777) == (0, 0o600)
    assert not (tmp_path / "records" / "owner" / "42.head.json").exists()  # no owner named yet


def show(tmp_path, job_id, user=None):
    """`vtorque jobs show` as root or as `user`, on a site whose state dir is tmp_path."""
    config = tmp_path / "vtorque.yml"
    config.write_text(f"spool_dir: {tmp_path / 'spool'}\nstate_dir: {tmp_path}\n")
    entry = pwd.getpwnam(user) if user else None
    return subprocess.run(
        [os.path.join(os.path.dirname(sys.executable), "vtorque"), "jobs", "show", job_id],
        env={"PATH": "/usr/bin:/bin", "VTORQUE_CONFIG": str(config)},
        user=entry.pw_uid if entry else None,
        group=entry.pw_gid if entry else None,
        extra_groups=[] if entry else None,
        cwd="/",
        capture_output=True,
        text=True,
        check=False,
    )


def test_the_owner_and_root_see_a_record_and_no_other_user_does(tmp_path):
    update_record(str(tmp_path), "42.head", state="starting", owner="nobody", event="console:\nsecret")
    update_record(str(tmp_path), "42.head", state="requeued", reason="a VM did not boot")
    copy = tmp_path / "records" / "owner" / "42.head.json"
    assert (copy.stat().st_uid, copy.stat().st_mode & 0o777) == (OWNER, 0o600)
    assert load_record(str(tmp_path), "42.head", owner_copy=True) == load_record(str(tmp_path), "42.head")
    for user in (None, "nobody"):
        done = show(tmp_path, "42.head", user)
        assert done.returncode == 0, done.stderr
        assert "job 42.head: requeued" in done.stdout and "secret" in done.stdout
    other = show(tmp_path, "42.head", "daemon")
    assert other.returncode != 0 and other.stdout == ""
    assert "job 42.head is another user's: only its owner and root see its record" in other.stderr
    assert "no vTorque record of job 43.head" in show(tmp_path, "43.head", "daemon").stderr


def test_a_guarded_update_changes_nothing_when_its_guard_holds(tmp_path):
    """The prologue registers (and later says 'running') only if no epilogue has begun."""
    update_record(str(tmp_path), "42.head", state="stopping", stopped_at=100.0)
    after_it = lambda record: record.get("state") == "stopping" and record["stopped_at"] >= 50.0  # noqa: E731
    assert update_record(str(tmp_path), "42.head", state="starting", unless=after_it) is None
    assert load_record(str(tmp_path), "42.head")["state"] == "stopping"
    before_it = lambda record: record.get("state") == "stopping" and record["stopped_at"] >= 150.0  # noqa: E731
    assert update_record(str(tmp_path), "42.head", state="starting", unless=before_it)["state"] == "starting"


def test_sweep_prunes_old_records_of_ended_jobs_only(tmp_path):
    """Records outlive their jobs, not forever: an ended job's record older than keep_days goes
    with its owner's copy and its lock; a live job's, a recent one's and other files stay."""
    for job_id in ("1.head", "2.head", "3.head"):
        update_record(str(tmp_path), job_id, state="ended", owner="nobody")
    records = tmp_path / "records"
    month_ago = time.time() - 31 * 86400
    for job_id in ("1.head", "2.head"):
        os.utime(records / f"{job_id}.json", (month_ago, month_ago))
    (records / "stray.json.4242.tmp").write_text("{}")
    before = sorted(p.name for p in records.rglob("*"))

    assert prune_records(str(tmp_path), keep_days=30, live_jobs=["2.head"], dry_run=True) == ["1.head"]
    assert sorted(p.name for p in records.rglob("*")) == before
    assert prune_records(str(tmp_path), keep_days=0, live_jobs=[]) == []
    assert prune_records(str(tmp_path), keep_days=30, live_jobs=["2.head"]) == ["1.head"]
    assert sorted(p.name for p in records.rglob("*")) == sorted(
        name for name in before if not name.startswith("1.head.")
    )
    assert load_record(str(tmp_path), "1.head") is None
    assert load_record(str(tmp_path), "2.head", owner_copy=True)["state"] == "ended"
    assert prune_records(str(tmp_path / "nowhere"), keep_days=30, live_jobs=[]) == []
