"""Job keys derived from the site secret: every node computes the same keys for the same job
without talking to the others; another job, owner, VM or secret gets different ones; the
secret file is refused unless it is root's alone."""

import os
import pwd
import subprocess
from types import SimpleNamespace

import pytest
from vtorque.errors import VTorqueError
from vtorque.job.keys import USER_KEY, make_job_keys, read_secret

SECRET = bytes(range(32))


def plan(tmp_path, job_id="5", uid=None, names=("vt-5-n1-0", "vt-5-n2-0")):
    me = pwd.getpwuid(os.getuid())
    owner = SimpleNamespace(uid=me.pw_uid if uid is None else uid, gid=me.pw_gid)
    job_dir = tmp_path / f"job-{job_id}-{owner.uid}-{len(names)}"
    job_dir.mkdir(exist_ok=True)
    return SimpleNamespace(
        job_id=job_id, owner=owner, job_dir=str(job_dir), vms=[SimpleNamespace(name=n) for n in names]
    )


def public_of(private_text, tmp_path):
    path = tmp_path / "k"
    path.write_text(private_text)
    path.chmod(0o600)
    return subprocess.run(
        ["ssh-keygen", "-y", "-f", str(path)], capture_output=True, text=True, check=True
    ).stdout.split()[1]


def test_two_nodes_derive_the_same_keys_and_the_private_halves_match_the_public(tmp_path):
    one = make_job_keys(plan(tmp_path), SECRET, "cluster")
    (tmp_path / "other-node").mkdir()
    two = make_job_keys(plan(tmp_path / "other-node"), SECRET, "cluster")
    assert one.user_public == two.user_public
    assert {n: pub for n, (_, pub) in one.hosts.items()} == {n: pub for n, (_, pub) in two.hosts.items()}
    assert public_of(one.user_private, tmp_path) == one.user_public.split()[1]
    private, public = one.hosts["vt-5-n2-0"]
    assert public_of(private, tmp_path) == public.split()[1]
    written = os.path.join(plan(tmp_path).job_dir, USER_KEY)
    assert public_of(open(written).read(), tmp_path) == one.user_public.split()[1]
    assert oct(os.stat(written).st_mode & 0o777) == "0o600"


def test_another_job_owner_vm_scope_or_secret_gets_other_keys(tmp_path):
    base = make_job_keys(plan(tmp_path), SECRET, "cluster")
    others = [
        make_job_keys(plan(tmp_path, job_id="6"), SECRET, "cluster"),
        make_job_keys(plan(tmp_path), SECRET, "other-cluster"),
        make_job_keys(plan(tmp_path), bytes(32), "cluster"),
    ]
    for other in others:
        assert other.user_public != base.user_public
        assert other.hosts["vt-5-n1-0"][1] != base.hosts["vt-5-n1-0"][1]
    assert base.hosts["vt-5-n1-0"][1] != base.hosts["vt-5-n2-0"][1]


def test_without_a_secret_every_start_gets_fresh_keys(tmp_path):
    assert make_job_keys(plan(tmp_path)).user_public != make_job_keys(plan(tmp_path)).user_public


@pytest.mark.skipif(os.geteuid() != 0, reason="the secret must be root's: needs root to create one")
def test_the_secret_must_be_root_s_alone_long_enough_and_no_link(tmp_path):
    good = tmp_path / "secret"
    good.write_bytes(SECRET)
    good.chmod(0o600)
    assert read_secret(str(good)) == SECRET
    good.chmod(0o640)
    with pytest.raises(VTorqueError, match="mode 0600"):
        read_secret(str(good))
    good.chmod(0o600)
    link = tmp_path / "link"
    link.symlink_to(good)
    with pytest.raises(VTorqueError, match="links are refused"):
        read_secret(str(link))
    short = tmp_path / "short"
    short.write_bytes(b"x" * 16)
    short.chmod(0o600)
    with pytest.raises(VTorqueError, match="16 bytes"):
        read_secret(str(short))
    os.chown(good, 4321, 0)
    with pytest.raises(VTorqueError, match="uid 4321"):
        read_secret(str(good))
