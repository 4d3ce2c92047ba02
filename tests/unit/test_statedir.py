"""The state tree gets its modes whatever the umask (pbs_mom's is 0077), an older tree is
brought to them, and a link in its place is refused."""

import os
import stat

import pytest
from ansible_collections.mikelangelo.vtorque.plugins.module_utils.errors import Refused
from ansible_collections.mikelangelo.vtorque.plugins.module_utils.files import write_atomic
from vtorque.job import statedir


def mode(path):
    return stat.S_IMODE(os.lstat(path).st_mode)


@pytest.fixture
def umask_0077():
    old = os.umask(0o077)
    yield
    os.umask(old)


def test_every_level_gets_its_mode_under_umask_0077(tmp_path, umask_0077):
    state = tmp_path / "state"
    job = statedir.job_dir(str(state), "12[3].head")
    statedir.subdir(str(state), "records/owner")
    assert (mode(state), mode(state / "jobs"), mode(job)) == (0o755, 0o711, 0o711)
    assert (mode(state / "records"), mode(state / "records" / "owner")) == (0o711, 0o711)


def test_a_tree_an_older_version_made_0700_is_opened_up(tmp_path, umask_0077):
    state = tmp_path / "state"
    (state / "jobs").mkdir(parents=True, mode=0o700)
    statedir.job_dir(str(state), "5.head")
    assert mode(state / "jobs") == 0o711


def test_a_link_in_place_of_a_state_dir_is_refused_and_left_alone(tmp_path):
    state, elsewhere = tmp_path / "state", tmp_path / "elsewhere"
    state.mkdir()
    elsewhere.mkdir(mode=0o700)
    (state / "ports").symlink_to(elsewhere)
    with pytest.raises(Refused, match="ports is not a directory"):
        statedir.subdir(str(state), "ports")
    assert mode(elsewhere) == 0o700


def test_write_atomic_gives_the_mode_asked_not_the_umasks(tmp_path, umask_0077):
    path = tmp_path / "catalog.yml"
    write_atomic(str(path), "images: {}\n", 0o644)
    write_atomic(str(path), "images: {a: 1}\n", 0o644)  # replaces
    assert (mode(path), path.read_text()) == (0o644, "images: {a: 1}\n")
    assert os.listdir(tmp_path) == ["catalog.yml"]  # no temp file left


def test_write_atomic_never_writes_through_a_planted_link(tmp_path):
    target, path = tmp_path / "target", tmp_path / "record.json"
    target.write_text("keep")
    os.symlink(target, tmp_path / f".record.json.{os.getpid()}.tmp")  # where the temp file goes
    write_atomic(str(path), "new", 0o600)
    assert target.read_text() == "keep" and path.read_text() == "new"
