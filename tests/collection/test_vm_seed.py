"""vm_seed and module_utils/seed.py: deterministic cidata images real tools can read."""

import subprocess
import time

from ansible_collections.mikelangelo.vtorque.plugins.module_utils.seed import (
    SeedError,
    build_seed_image,
    render_seed_files,
    write_seed_image,
)
from module_calls import run_module

META = {"instance-id": "i-1", "local-hostname": "vm-node1-0"}
USER = {"users": [{"name": "alice", "uid": "1234"}], "runcmd": [["true"]]}
NET = {
    "version": 2,
    "ethernets": {"eth0": {"match": {"macaddress": "52:54:00:00:00:01"}, "addresses": ["10.0.2.41/24"]}},
}


def test_files_follow_the_contract_format():
    files = render_seed_files(META, USER, NET)
    assert sorted(files) == ["meta-data", "network-config", "user-data"]
    assert files["user-data"].startswith(b'#cloud-config\n{\n  "runcmd"')
    assert files["meta-data"] == b'{\n  "instance-id": "i-1",\n  "local-hostname": "vm-node1-0"\n}\n'
    assert "network-config" not in render_seed_files(META, USER, None)


def test_same_input_gives_identical_bytes_at_different_times(tmp_path):
    first, second = tmp_path / "a.iso", tmp_path / "b.iso"
    write_seed_image(render_seed_files(META, USER, NET), str(first))
    time.sleep(1.1)
    write_seed_image(render_seed_files(dict(reversed(META.items())), USER, NET), str(second))
    assert first.read_bytes() == second.read_bytes()
    assert build_seed_image(render_seed_files(META, USER, None)) != first.read_bytes()
    assert first.stat().st_mode & 0o777 == 0o600  # a seed holds the VM's private host key


def test_blkid_and_isoinfo_see_label_and_files(tmp_path):
    image = tmp_path / "seed.iso"
    files = render_seed_files(META, USER, NET)
    write_seed_image(files, str(image))
    probe = subprocess.run(
        ["blkid", "-p", "-o", "export", str(image)], capture_output=True, text=True, check=True
    )
    assert "LABEL=cidata" in probe.stdout and "TYPE=iso9660" in probe.stdout
    listing = subprocess.run(
        ["isoinfo", "-J", "-f", "-i", str(image)], capture_output=True, text=True, check=True
    )
    assert sorted(listing.stdout.split()) == ["/meta-data", "/network-config", "/user-data"]
    for name, data in files.items():
        extracted = subprocess.run(
            ["isoinfo", "-J", "-x", "/" + name, "-i", str(image)], capture_output=True, check=True
        ).stdout
        assert extracted == data


def test_seed_content_passes_cloud_init_schema(tmp_path):
    user = {
        "users": [
            {
                "name": "alice",
                "uid": 1234,
                "shell": "/bin/bash",
                "lock_passwd": True,
                "ssh_authorized_keys": ["ssh-ed25519 AAAAC3Nza alice"],
            }
        ],
        "bootcmd": [["groupadd", "-g", "1234", "alice"]],
        "mounts": [["share", "/home", "9p", "trans=virtio"]],
    }
    path = tmp_path / "user-data"
    path.write_bytes(render_seed_files(META, user, None)["user-data"])
    checked = subprocess.run(
        ["cloud-init", "schema", "--config-file", str(path)], capture_output=True, text=True
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_module_trio_diff_and_absent(tmp_path):
    args = {"path": str(tmp_path / "seed.iso"), "meta_data": META, "user_data": USER, "network_config": NET}
    results = [
        run_module("vm_seed", args, check=True),
        run_module("vm_seed", args),
        run_module("vm_seed", args),
    ]
    assert [r["changed"] for r in results] == [True, True, False]
    assert not (tmp_path / "seed.iso").exists() or results[1]["sha256"] == results[0]["sha256"]
    assert "--- user-data\n#cloud-config" in results[0]["diff"]["after"]
    changed = run_module("vm_seed", dict(args, meta_data=dict(META, **{"instance-id": "i-2"})))
    assert changed["changed"] and changed["diff"]["before"].startswith("seed image sha256")
    gone = [run_module("vm_seed", {"path": args["path"], "state": s}) for s in ("absent", "absent")]
    assert [r["changed"] for r in gone] == [True, False] and not (tmp_path / "seed.iso").exists()


def test_failures_name_the_value(tmp_path):
    target = tmp_path / "real.iso"
    target.write_bytes(b"x")
    (tmp_path / "link.iso").symlink_to(target)
    linked = run_module("vm_seed", {"path": str(tmp_path / "link.iso"), "meta_data": META})
    assert linked["failed"] and "is not a regular file" in linked["msg"] and target.read_bytes() == b"x"
    missing = run_module("vm_seed", {"path": str(tmp_path / "s.iso")})
    assert missing["failed"] and "meta_data" in missing["msg"]
    for bad in ({"../x": b""}, {"meta-data": "text"}, {}):
        try:
            build_seed_image(bad)
        except SeedError as exc:
            assert "seed" in str(exc)
        else:
            raise AssertionError(f"no error for {bad!r}")
