"""`vtorque images add` records the format qemu-img detects and refuses files QEMU cannot run.

The images are made by the real qemu-img, so detection is checked against what QEMU itself
writes and reads. Every refusal leaves the catalog file byte for byte as it was.
"""

import os
import subprocess

import pytest
import yaml
from fakesite import make_site


@pytest.fixture
def site(tmp_path):
    return make_site(tmp_path)


def qemu_img_create(path, image_format, *options, size="1M"):
    subprocess.run(["qemu-img", "create", "-q", "-f", image_format, *options, str(path), size], check=True)
    return path


def recorded(site, name):
    return yaml.safe_load(site.catalog.read_text())["images"][name]


def refused(site, *args):
    """stderr of an `images add` that must fail without touching the catalog."""
    before = site.catalog.read_bytes()
    done = site.run("vtorque", "images", "add", *args)
    assert done.returncode == 1, done.stdout
    assert site.catalog.read_bytes() == before
    return done.stderr


def test_the_format_qemu_img_detects_is_recorded(site):
    images = site.root / "images"
    qcow2 = qemu_img_create(images / "a.img", "qcow2")
    raw = qemu_img_create(images / "b.qcow2", "raw")
    # A raw disk whose first sector happens to start with the qcow2 magic (version 0): qemu-img
    # calls it raw, and QEMU opening it as qcow2 would fail.
    magic = images / "c.raw"
    magic.write_bytes(b"QFI\xfb" + bytes(4096 - 4))
    for name, path in (("a", qcow2), ("b", raw), ("c", magic)):
        done = site.run("vtorque", "images", "add", name, str(path))
        assert done.returncode == 0, done.stderr
    assert [recorded(site, name)["format"] for name in "abc"] == ["qcow2", "raw", "raw"]
    done = site.run("vtorque", "images", "add", "d", str(qcow2), "--format", "qcow2")
    assert done.returncode == 0 and recorded(site, "d")["format"] == "qcow2", done.stderr


@pytest.mark.parametrize(("real", "given"), [("qcow2", "raw"), ("raw", "qcow2")])
def test_a_format_option_the_file_contradicts_is_refused(site, real, given):
    image = qemu_img_create(site.root / "images" / "new.img", real)
    message = refused(site, "new", str(image), "--format", given)
    assert f"{image} is {real}, not {given} (qemu-img info); drop --format or give --format {real}" in message


@pytest.mark.parametrize("other", ["vmdk", "vdi"])
@pytest.mark.parametrize("given", [[], ["--format", "raw"]])
def test_formats_vtorque_does_not_run_are_refused(site, other, given):
    image = qemu_img_create(site.root / "images" / f"new.{other}", other)
    message = refused(site, "new", str(image), *given)
    assert f"{image} is a {other} image (qemu-img info); vTorque accepts qcow2 or raw" in message


def test_a_file_that_is_not_whole_sectors_is_refused(site):
    junk = site.root / "images" / "junk.raw"
    junk.write_bytes(os.urandom(1000))
    message = refused(site, "junk", str(junk))
    assert f"{junk} is not a disk image" in message and "multiple of 512 bytes, not 1000" in message
    assert "not a disk image" in refused(site, "junk", str(junk), "--format", "raw")


def test_an_empty_file_is_refused(site):
    empty = site.root / "images" / "empty.raw"
    empty.write_bytes(b"")
    assert f"{empty} is not a disk image" in refused(site, "empty", str(empty))


def test_a_file_qemu_img_cannot_open_is_refused(site):
    broken = site.root / "images" / "broken.qcow2"
    broken.write_bytes(b"QFI\xfb" + b"payload")
    message = refused(site, "broken", str(broken))
    assert f"{broken} is not a disk image qemu-img can open" in message and "qcow2 version" in message


@pytest.mark.parametrize(
    ("options", "named"),
    [
        (["-F", "raw", "-b", "{base}"], "backing file"),
        (["-o", "data_file={data}"], "an external data file"),
    ],
)
def test_a_qcow2_naming_another_host_file_is_refused(site, options, named):
    images = site.root / "images"
    base = qemu_img_create(images / "base.raw", "raw")
    values = {"base": base, "data": images / "data.raw"}
    image = qemu_img_create(images / "top.qcow2", "qcow2", *(o.format(**values) for o in options))
    message = refused(site, "top", str(image))
    assert f"{image} refers to {named}" in message and "self-contained" in message
