"""Image catalog: format, names that cannot escape, trust rules, `vtorque images ...`."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from fakesite import make_site
from vtorque.errors import CatalogError
from vtorque.site.catalog import check_name, load_catalog, verify_image_files

EXAMPLE = Path(__file__).resolve().parents[2] / "etc" / "images.yml.example"


@pytest.fixture
def site(tmp_path):
    return make_site(tmp_path)


def write_catalog(path, images):
    path.write_text(yaml.safe_dump({"images": images}))
    path.chmod(0o644)
    return path


@pytest.mark.parametrize("name", ["..", "a/b", "../x", "a..b", "/abs", ".hidden", "", "x" * 64, "a b"])
def test_names_that_could_escape_are_refused(name):
    with pytest.raises(CatalogError, match="not valid"):
        check_name(name)


def test_the_shipped_example_catalog_parses(tmp_path):
    catalog = load_catalog(write_catalog(tmp_path / "c.yml", yaml.safe_load(EXAMPLE.read_text())["images"]))
    assert catalog["tiny"].kernel.endswith("vmlinux") and catalog["debian12"].distro == "debian"


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"path": "relative.qcow2", "distro": "debian"}, "images.bad.path: expected an absolute path"),
        ({"path": "/a/../etc/shadow", "distro": "debian"}, "without '..'"),
        ({"path": "/a.qcow2", "distro": "windows"}, "images.bad.distro"),
        ({"path": "/a.qcow2", "distro": "debian", "format": "vmdk"}, "images.bad.format"),
        ({"path": "/a.qcow2", "distro": "debian", "kernel": "/k"}, "needs both kernel and initrd"),
        ({"path": "/a.qcow2", "distro": "debian", "colour": "red"}, "unknown key(s) colour"),
        ({"distro": "debian"}, "'path' is required"),
        ({"path": "/a.qcow2", "distro": "debian", "checksum": "md5:x"}, "images.bad.checksum"),
    ],
)
def test_bad_entries_name_file_and_key(tmp_path, entry, message):
    path = write_catalog(tmp_path / "c.yml", {"bad": entry})
    with pytest.raises(CatalogError) as err:
        load_catalog(path)
    assert str(path) in str(err.value) and message in str(err.value)


def test_catalog_and_images_must_be_root_owned_and_not_writable_by_others(site):
    site.catalog.chmod(0o666)
    with pytest.raises(CatalogError, match="writable by group or others"):
        load_catalog(str(site.catalog))
    site.catalog.chmod(0o644)
    entry = load_catalog(str(site.catalog))["tiny"]
    verify_image_files(entry)
    os.chown(entry.path, 4242, 4242)
    with pytest.raises(CatalogError, match="owned by uid 4242"):
        verify_image_files(entry)


def test_images_cli_add_list_show_verify_remove(site):
    image = site.root / "images" / "new.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(image), "1M"], check=True)
    done = site.run(
        "vtorque", "images", "add", "new1", str(image), "--distro", "ubuntu", "--description", "New one"
    )
    assert done.returncode == 0, done.stderr
    listed = site.run("vtorque", "images", "list", "--json")
    assert json.loads(listed.stdout)["new1"]["distro"] == "ubuntu"
    shown = json.loads(site.run("vtorque", "images", "show", "new1").stdout)
    assert shown["format"] == "qcow2" and shown["checksum"].startswith("sha256:")
    assert site.run("vtorque", "images", "verify", "new1").returncode == 0
    with image.open("ab") as handle:
        handle.write(b"tampered")
    verify = site.run("vtorque", "images", "verify", "new1")
    assert verify.returncode == 1 and "MISMATCH" in verify.stderr
    assert site.run("vtorque", "images", "remove", "new1").returncode == 0
    assert "new1" not in site.run("vtorque", "images", "list").stdout
    assert image.exists()
    assert (site.catalog.stat().st_mode & 0o777) == 0o644


def test_images_cli_refuses_bad_names_duplicates_and_unknown_images(site):
    image = site.root / "images" / "tiny.qcow2"
    assert "not valid" in site.run("vtorque", "images", "add", "../x", str(image)).stderr
    assert "already in" in site.run("vtorque", "images", "add", "tiny", str(image)).stderr
    done = site.run("vtorque", "images", "show", "nope")
    assert done.returncode == 1 and "no image named 'nope'" in done.stderr


def test_images_add_needs_root(site):
    done = site.run("vtorque", "images", "add", "x", "/nonexistent")
    assert done.returncode != 0
    if os.geteuid() == 0:
        vtorque = str(Path(sys.executable).parent / "vtorque")
        user = subprocess.run(
            [
                "setpriv",
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
                vtorque,
                "images",
                "remove",
                "tiny",
            ],
            capture_output=True,
            text=True,
            env=site.env(),
            check=False,
            timeout=60,
            cwd="/",
        )
        assert user.returncode == 1 and "must run as root" in user.stderr
        assert "tiny" in site.run("vtorque", "images", "list").stdout
