"""`load_request`: root reads request.json back without trusting it."""

import json
import os
import pwd

import pytest
from fakesite import make_site
from vtorque.errors import RequestError, UntrustedFileError
from vtorque.request.document import load_request
from vtorque.site.config import load_config

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="chown to another user needs root")
USER = pwd.getpwnam("nobody").pw_uid  # root reads the request as its owner: a real user


@pytest.fixture
def submitted(shared_tmp):
    """A site and the request.json of a job really submitted through vsub, handed to USER."""
    site = make_site(shared_tmp)
    (site.root / "job.sh").write_text("#!/bin/sh\necho hi\n")
    done = site.run("vsub", "-vm", "vcpus=3,ram=2G", "job.sh")
    assert done.returncode == 0, done.stderr
    path = site.spool / "1.fakeserver" / "request.json"
    os.chown(path.parent, USER, USER)
    os.chown(path, USER, USER)
    return site, path


def config(site):
    return load_config(site.config)


def test_a_submitted_request_loads_and_revalidates(submitted):
    site, path = submitted
    request = load_request(str(path), USER, config(site))
    assert (request.vcpus, request.ram_mib, request.image.name) == (3, 2048, "tiny")


def test_wrong_owner_link_and_writable_file_are_refused(submitted):
    site, path = submitted
    other = pwd.getpwnam("daemon").pw_uid
    with pytest.raises(UntrustedFileError, match="Permission denied"):  # read as `other`: 0700 dir
        load_request(str(path), other, config(site))
    path.parent.chmod(0o755)
    path.chmod(0o644)
    with pytest.raises(UntrustedFileError, match=f"owned by uid {USER}, expected uid {other}"):
        load_request(str(path), other, config(site))
    link = path.with_name("link.json")
    link.symlink_to(path)
    with pytest.raises(UntrustedFileError, match="symbolic link"):
        load_request(str(link), USER, config(site))
    path.chmod(0o666)
    with pytest.raises(UntrustedFileError, match="writable by group or others"):
        load_request(str(path), USER, config(site))


def test_oversized_and_malformed_files_are_refused(submitted):
    site, path = submitted
    path.write_text("{" * 10)
    with pytest.raises(RequestError, match="not valid JSON"):
        load_request(str(path), USER, config(site))
    path.write_text("[" * 200_000)  # within the size limit, but deeper than the decoder's stack
    with pytest.raises(RequestError, match="not valid JSON: nested too deeply"):
        load_request(str(path), USER, config(site))
    path.write_text(" " * (300 * 1024))
    with pytest.raises(UntrustedFileError, match="the limit is"):
        load_request(str(path), USER, config(site))


def edit(path, **options):
    document = json.loads(path.read_text())
    document["options"].update(options)
    path.write_text(json.dumps(document))


def test_values_are_checked_against_the_policy_of_now(submitted):
    site, path = submitted
    site.write_config(limits={"max_vcpus": 2})
    with pytest.raises(RequestError, match="limits.max_vcpus = 2"):
        load_request(str(path), USER, config(site))


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"img": "/etc/shadow"}, "policy.allow_user_images"),
        ({"img": "../tiny"}, "policy.allow_user_images"),
        ({"vcpus": "64"}, "limits.max_vcpus"),
        ({"ram": "1G,vcpus=1"}, "commas are not allowed"),
        ({"evil": "1"}, "unknown key"),
        ({"vrdma": "true"}, "policy.vrdma: false"),
        ({"metadata": "/etc/hostname"}, f"owned by uid 0, expected uid {USER}"),
        ({"vm_prologue": "/bin/sh"}, "vm_prologue"),
    ],
)
def test_tampered_values_are_refused(submitted, options, message):
    site, path = submitted
    edit(path, **options)
    with pytest.raises(RequestError, match=message) as err:
        load_request(str(path), USER, config(site))
    assert f"request file {path}" in str(err.value)


def test_image_path_comes_from_the_catalog_not_the_file(submitted):
    site, path = submitted
    document = json.loads(path.read_text())
    document["request"]["image"]["path"] = "/etc/shadow"
    path.write_text(json.dumps(document))
    assert load_request(str(path), USER, config(site)).image.path == str(site.root / "images" / "tiny.qcow2")


def test_a_job_directory_swapped_for_a_link_or_for_another_users_is_refused(tmp_path):
    """Between submission and start the owner may replace their spool job directory: with a
    link to another user's (or root's) directory, or a directory someone else owns."""
    from vtorque.job.spool import check_job_dir

    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "request.json").write_text("{}")
    link = tmp_path / "42.head"
    link.symlink_to(victim)
    with pytest.raises(UntrustedFileError, match="is not a directory \\(links are refused\\)"):
        check_job_dir(str(link), owner_uid=os.getuid())
    link.unlink()
    link.mkdir()
    with pytest.raises(UntrustedFileError, match=f"owned by uid {os.getuid()}, expected uid 4242"):
        check_job_dir(str(link), owner_uid=4242)
    check_job_dir(str(link), owner_uid=os.getuid())  # the owner's own directory is fine
