"""Root acts on a job owner's files as the owner: the kernel then decides what they may touch."""

import os
import pwd
import signal

import pytest
from vtorque.errors import UntrustedFileError
from vtorque.owner_side import owner_side
from vtorque.trust import read_trusted

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="acting as another user needs root")
OWNER = pwd.getpwnam("nobody")


@pytest.fixture
def place(shared_tmp):
    return str(shared_tmp)


@owner_side
def who_am_i(*, owner_uid):
    return [os.getuid(), os.geteuid(), os.getgid(), sorted(os.getgroups())]


@owner_side
def read_plainly(path, *, owner_uid):
    with open(path, "rb") as handle:
        return handle.read()


def test_the_child_has_the_owners_identity_and_nothing_of_roots():
    uid, euid, gid, groups = who_am_i(owner_uid=OWNER.pw_uid)
    assert (uid, euid, gid) == (OWNER.pw_uid, OWNER.pw_uid, OWNER.pw_gid)
    assert groups == sorted(os.getgrouplist(OWNER.pw_name, OWNER.pw_gid)) and 0 not in groups
    assert who_am_i(owner_uid=0)[1] == 0  # root's own files: no child


def test_what_only_root_may_read_stays_unread_even_through_a_link(place):
    secret = os.path.join(place, "secret")
    with open(secret, "w") as handle:
        handle.write("root only\n")
    os.chmod(secret, 0o600)
    with pytest.raises(UntrustedFileError, match="Permission denied"):
        read_plainly(secret, owner_uid=OWNER.pw_uid)
    os.symlink(secret, os.path.join(place, "request.json"))  # planted by the owner
    with pytest.raises(UntrustedFileError, match="symbolic link"):
        read_trusted(os.path.join(place, "request.json"), owner_uid=OWNER.pw_uid, max_bytes=99, what="x")


def test_the_owners_private_file_comes_back_whole(place):
    mine = os.path.join(place, "request.json")
    data = bytes(range(256)) * 1024  # binary and larger than a pipe buffer
    with open(mine, "wb") as handle:
        handle.write(data)
    os.chown(mine, OWNER.pw_uid, OWNER.pw_gid)
    os.chmod(mine, 0o600)
    assert read_trusted(mine, owner_uid=OWNER.pw_uid, max_bytes=len(data), what="request") == data


def test_a_killed_helper_is_an_error_not_an_answer():
    @owner_side
    def dies(*, owner_uid):
        os.kill(os.getpid(), signal.SIGKILL)  # the owner may signal their own helper

    with pytest.raises(UntrustedFileError, match="ended without an answer"):
        dies(owner_uid=OWNER.pw_uid)


def test_an_unknown_owner_is_refused():
    with pytest.raises(UntrustedFileError, match="uid 4321 has no passwd entry"):
        who_am_i(owner_uid=4321)
