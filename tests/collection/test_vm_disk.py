"""vm_disk with the real qemu-img: overlays keep a backing file, foreign files are refused."""

import json
import subprocess

import pytest
from module_calls import run_module


@pytest.fixture
def base(tmp_path):
    path = tmp_path / "base.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(path), "64M"], check=True)
    return path


def qemu_info(path):
    return json.loads(
        subprocess.run(
            ["qemu-img", "info", "--output=json", str(path)], check=True, capture_output=True, text=True
        ).stdout
    )


def trio(args):
    results = [
        run_module("vm_disk", args, check=True),
        run_module("vm_disk", args),
        run_module("vm_disk", args),
    ]
    assert [r["changed"] for r in results] == [True, True, False], results
    return results


def test_overlay_trio_uses_backing_file_not_a_copy(tmp_path, base):
    overlay = tmp_path / "vm.qcow2"
    args = {"path": str(overlay), "backing_file": str(base)}
    check, _, _ = trio(args)
    info = qemu_info(overlay)
    assert info["backing-filename"] == str(base) and info["backing-filename-format"] == "qcow2"
    assert info["virtual-size"] == 64 * 2**20 and overlay.stat().st_size < 1024 * 1024
    assert json.loads((tmp_path / "vm.qcow2.vtorque.json").read_text())["backing_file"] == str(base)
    removed = [
        run_module("vm_disk", dict(args, state="absent"), check=True),
        run_module("vm_disk", dict(args, state="absent")),
        run_module("vm_disk", dict(args, state="absent")),
    ]
    assert [r["changed"] for r in removed] == [True, True, False]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["base.qcow2"]


def test_empty_data_disk_of_given_size(tmp_path):
    trio({"path": str(tmp_path / "data.qcow2"), "size": "10M"})
    assert qemu_info(tmp_path / "data.qcow2")["virtual-size"] == 10 * 2**20
    assert (tmp_path / "data.qcow2").stat().st_mode & 0o777 == 0o600  # the guest's data: nobody else's


def test_refuses_to_overwrite_or_remove_a_file_it_did_not_create(tmp_path, base):
    for state in ("present", "absent"):
        result = run_module("vm_disk", {"path": str(base), "backing_file": str(base), "state": state})
        assert (
            result["failed"]
            and result["reason"] == "refused"
            and "was not created by vm_disk" in result["msg"]
        )
    assert qemu_info(base)["virtual-size"] == 64 * 2**20


def test_refuses_links_and_changed_options_without_force(tmp_path, base):
    link = tmp_path / "link.qcow2"
    link.symlink_to(base)
    result = run_module("vm_disk", {"path": str(link), "size": "1M"})
    assert result["failed"] and "not a regular file" in result["msg"]
    disk = str(tmp_path / "d.qcow2")
    run_module("vm_disk", {"path": disk, "size": "1M"})
    changed = run_module("vm_disk", {"path": disk, "size": "2M"})
    assert changed["failed"] and "set force: true" in changed["msg"]
    assert run_module("vm_disk", {"path": disk, "size": "2M", "force": True})["changed"]
    assert qemu_info(disk)["virtual-size"] == 2 * 2**20


def test_bad_input_names_the_value(tmp_path):
    no_size = run_module("vm_disk", {"path": str(tmp_path / "x.qcow2")})
    assert no_size["failed"] and "needs size" in no_size["msg"]
    missing = run_module(
        "vm_disk", {"path": str(tmp_path / "x.qcow2"), "backing_file": "/nonexistent/base.qcow2"}
    )
    assert missing["failed"] and "/nonexistent/base.qcow2 does not exist" in missing["msg"]
    bad_size = run_module("vm_disk", {"path": str(tmp_path / "x.qcow2"), "size": "lots"})
    assert bad_size["failed"] and bad_size["reason"] == "qemu-img" and "lots" in bad_size["msg"]
    assert not (tmp_path / "x.qcow2").exists()
