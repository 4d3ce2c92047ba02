"""`vtorque console` without a VM: who may read a job's console log (the owner, through an ACL
on root's file; root), who is refused (another user, `--attach` for a non-root user, a job
that ended), and how the log is read and followed."""

import json
import os
import pwd
import subprocess
import sys
import threading
import time

import pytest
from ansible_collections.mikelangelo.vtorque.plugins.module_utils.naming import serial_log_path
from vtorque.guest.console import TerminalSafe, copy_log, let_owner_read
from vtorque.job import statedir
from vtorque.job.records import update_record

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="acting as the owner and another user needs root")
OWNER, OTHER = "nobody", "daemon"
JOB = "42.head"
BOOT_LINE = b"vtorque-guest: booted\r\n"
ESCAPE = b"\x1b]0;owned\x07"  # a guest setting the reader's terminal title


@pytest.fixture
def site(shared_tmp):
    """A state dir with JOB running for OWNER: its record, vms.json (VM 0 here, VM 1 on n2) and
    VM 0's console log, root's, with the owner's read entry as the prologue leaves it."""
    owner = pwd.getpwnam(OWNER)
    config = shared_tmp / "vtorque.yml"
    config.write_text(f"spool_dir: {shared_tmp / 'spool'}\nstate_dir: {shared_tmp}\n")
    vms = [
        {"name": f"vt-{JOB}-n{node}-0", "node": f"n{node}", "rank": node - 1, "hostname": f"n{node}-vm0"}
        for node in (1, 2)
    ]
    directory = statedir.job_dir(str(shared_tmp), JOB)
    document = os.path.join(directory, "vms.json")
    with open(document, "w") as handle:
        json.dump({"job_id": JOB, "owner": OWNER, "vms": vms}, handle)
    os.chmod(document, 0o600)
    os.chown(document, owner.pw_uid, owner.pw_gid)
    log = serial_log_path(directory, vms[0]["name"])
    with open(log, "wb") as handle:
        handle.write(BOOT_LINE + ESCAPE + b"\n")
    os.chmod(log, 0o600)
    let_owner_read(log, owner.pw_uid)
    update_record(str(shared_tmp), JOB, state="running", owner=OWNER, vms=vms)
    return {"root": shared_tmp, "config": config, "log": log}


def console(site, user, *args, **kwargs):
    """`vtorque console` as `user` (None: root)."""
    entry = pwd.getpwnam(user) if user else None
    return subprocess.run(
        [os.path.join(os.path.dirname(sys.executable), "vtorque"), "console", *args],
        env={"PATH": "/usr/bin:/bin", "VTORQUE_CONFIG": str(site["config"])},
        user=entry.pw_uid if entry else None,
        group=entry.pw_gid if entry else None,
        extra_groups=[] if entry else None,
        cwd="/",
        capture_output=True,
        check=False,
        timeout=30,
        **kwargs,
    )


def test_the_owner_and_root_read_the_log_and_another_user_is_refused(site):
    for user in (OWNER, None):
        done = console(site, user, JOB)
        assert (done.returncode, done.stdout) == (0, BOOT_LINE + ESCAPE + b"\n"), done.stderr  # a pipe: as is
    other = console(site, OTHER, JOB)
    assert other.returncode == 1 and other.stdout == b""
    refusal = b"job 42.head is another user's: only its owner (and root) may read its VMs' consoles"
    assert refusal in other.stderr
    read = subprocess.run(["head", "-c1", site["log"]], user=OTHER, capture_output=True, check=False)
    assert read.returncode != 0 and b"Permission denied" in read.stderr


def test_attach_is_for_root_and_a_vm_of_another_node_is_named(site):
    attach = console(site, OWNER, "--attach", JOB)
    assert attach.returncode == 1 and b"--attach is root's only" in attach.stderr
    both = console(site, None, "--attach", "--follow", JOB)
    assert both.returncode == 2 and b"not allowed with" in both.stderr
    elsewhere = console(site, OWNER, JOB, "vm1")
    assert elsewhere.returncode == 1
    assert b"VM n2-vm0 runs on n2: its console log is there, not on this node" in elsewhere.stderr
    unknown = console(site, OWNER, JOB, "vm5")
    assert unknown.returncode == 1 and b"has no VM 'vm5'" in unknown.stderr


def test_the_owner_is_told_when_virtlogd_rotated_the_log(site):
    """The renamed log keeps the owner's entry; the new file virtlogd makes (0600) does not."""
    os.rename(site["log"], site["log"] + ".0")
    with open(site["log"], "wb") as handle:
        handle.write(b"after the rotation\n")
    os.chmod(site["log"], 0o600)
    done = console(site, OWNER, JOB)
    assert done.returncode == 1 and b"virtlogd rotated it" in done.stderr
    assert console(site, None, JOB).stdout == b"after the rotation\n"


def test_a_job_that_ended_is_refused(site):
    update_record(str(site["root"]), JOB, state="ended")
    for user in (OWNER, None):
        done = console(site, user, JOB)
        assert done.returncode == 1 and done.stdout == b""
        assert b"job 42.head is not running (its state is ended)" in done.stderr


def test_follow_prints_what_comes_next_and_ends_with_the_job(site):
    owner = pwd.getpwnam(OWNER)
    follow = subprocess.Popen(
        [os.path.join(os.path.dirname(sys.executable), "vtorque"), "console", "--follow", JOB],
        env={"PATH": "/usr/bin:/bin", "VTORQUE_CONFIG": str(site["config"])},
        user=owner.pw_uid,
        group=owner.pw_gid,
        extra_groups=[],
        cwd="/",
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert follow.stdout.read(len(BOOT_LINE)) == BOOT_LINE
        with open(site["log"], "ab") as handle:
            handle.write(b"later\n")
        time.sleep(0.5)
        update_record(str(site["root"]), JOB, state="stopping")
        out, err = follow.communicate(timeout=10)
    finally:
        follow.kill()
    assert follow.returncode == 0, err
    assert out.endswith(b"later\n") and b"job 42.head is no longer running" in err


def test_the_owners_read_entry_is_on_roots_file_only(shared_tmp):
    owner, other = pwd.getpwnam(OWNER).pw_uid, pwd.getpwnam(OTHER).pw_uid
    log = shared_tmp / "serial.log"
    log.write_bytes(b"boot\n")
    log.chmod(0o600)
    let_owner_read(str(log), owner)
    info = log.stat()
    assert (info.st_uid, info.st_mode & 0o777) == (0, 0o640)  # the group bits show the ACL's mask
    reads = {
        uid: subprocess.run(["cat", str(log)], user=uid, capture_output=True, check=False).stdout
        for uid in (owner, other)
    }
    assert reads == {owner: b"boot\n", other: b""}
    (shared_tmp / "link").symlink_to(log)
    with pytest.raises(OSError):
        let_owner_read(str(shared_tmp / "link"), other)
    os.chown(log, owner, owner)
    with pytest.raises(PermissionError, match="not root's regular file"):
        let_owner_read(str(log), other)


def test_copy_log_follows_a_rotated_log_into_the_new_file(tmp_path):
    """virtlogd renames a full log to .0 and starts a new one; nothing written is lost."""
    log = tmp_path / "serial.log"
    log.write_bytes(b"one\n")
    seen, done = [], threading.Event()

    def rotate():
        time.sleep(0.3)
        with open(log, "ab") as handle:
            handle.write(b"two\n")
        os.rename(log, f"{log}.0")
        log.write_bytes(b"three\n")
        time.sleep(0.5)
        done.set()

    writer = threading.Thread(target=rotate)
    writer.start()
    copy_log(str(log), seen.append, follow=True, alive=lambda: not done.is_set(), poll=0.05, check_every=0.1)
    writer.join()
    assert b"".join(seen) == b"one\ntwo\nthree\n"


def test_a_terminal_sees_control_characters_not_their_effect():
    safe = TerminalSafe()
    text = safe(b"ok \x1b[31mred\x1b]0;t\x07\r\n\xc2") + safe(b"\x9b\xe2\x82")
    text += safe(b"\xac\tend\n", final=True)
    assert text == "ok ^[[31mred^[]0;t^G\n\\x9b€\tend\n".encode()
