"""User images (policy.allow_user_images): only the user's own, standalone image files.

The images are made by the real qemu-img, so the qcow2 header parsing is checked against what
QEMU itself writes, including the two ways a qcow2 names another host file.
"""

import os
import subprocess

import pytest
from vtorque.errors import RequestError
from vtorque.request.grammar import parse_vm_values
from vtorque.request.resolve import resolve_request
from vtorque.site.config import parse_config

ALLOWED = "defaults: {img: tiny}\npolicy: {allow_user_images: true}"


def resolve(text, cwd, config_text=ALLOWED):
    config = parse_config(config_text, "/etc/vtorque/test.yml")
    options = parse_vm_values([(text, "command line")])
    return resolve_request(options, config, owner_uid=os.getuid(), cwd=str(cwd), catalog={})


def qemu_img(*args):
    subprocess.run(["qemu-img", *args], check=True, capture_output=True)


def test_a_standalone_qcow2_and_a_raw_image_are_accepted(tmp_path):
    qemu_img("create", "-f", "qcow2", str(tmp_path / "mine.qcow2"), "16M")
    (tmp_path / "mine.img").write_bytes(b"\0" * 4096)
    assert resolve("img=./mine.qcow2,distro=debian", tmp_path).image.format == "qcow2"
    assert resolve("img=./mine.img,distro=debian", tmp_path).image.format == "raw"


def test_a_backing_file_pointing_at_a_host_file_is_refused(tmp_path):
    qemu_img("create", "-f", "raw", str(tmp_path / "host-secret.raw"), "1M")
    qemu_img(
        "create",
        "-f",
        "qcow2",
        "-F",
        "raw",
        "-b",
        str(tmp_path / "host-secret.raw"),
        str(tmp_path / "evil.qcow2"),
    )
    with pytest.raises(RequestError) as caught:
        resolve("img=./evil.qcow2", tmp_path)
    message = str(caught.value)
    assert "backing file" in message and "host-secret.raw" in message and "img" in message
    assert "qemu-img convert" in message


def test_an_external_data_file_is_refused(tmp_path):
    qemu_img(
        "create",
        "-f",
        "qcow2",
        "-o",
        f"data_file={tmp_path / 'data.raw'}",
        str(tmp_path / "evil.qcow2"),
        "1M",
    )
    with pytest.raises(RequestError, match="external data file"):
        resolve("img=./evil.qcow2", tmp_path)


def test_links_foreign_and_writable_images_and_traversal_are_refused(tmp_path):
    qemu_img("create", "-f", "qcow2", str(tmp_path / "mine.qcow2"), "16M")
    os.symlink(tmp_path / "mine.qcow2", tmp_path / "link.qcow2")
    with pytest.raises(RequestError, match="symbolic link"):
        resolve("img=./link.qcow2", tmp_path)
    os.chmod(tmp_path / "mine.qcow2", 0o620)
    with pytest.raises(RequestError, match="writable by group or others"):
        resolve("img=./mine.qcow2", tmp_path)
    with pytest.raises(RequestError, match=r"'\.\.' is not allowed"):
        resolve("img=../etc/mine.qcow2", tmp_path)


def test_paths_are_refused_unless_the_site_allows_user_images(tmp_path):
    qemu_img("create", "-f", "qcow2", str(tmp_path / "mine.qcow2"), "16M")
    with pytest.raises(RequestError, match="allow_user_images: false"):
        resolve("img=./mine.qcow2", tmp_path, config_text="defaults: {img: tiny}")
