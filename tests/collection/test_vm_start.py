"""vm_start on test:///default: every VM of a node from overlay to running domain in one call,
with the check → run → rerun behaviour of the modules it stands for."""

import json
import os

from ansible_collections.mikelangelo.vtorque.plugins.module_utils import naming
from module_calls import HOST_KEY, run_module, start_args


def job_start(job, tmp_path, image, count=2):
    job_dir = tmp_path / "jobs" / job["id"]
    vms, seeds = [], []
    for index in range(count):
        name = naming.domain_name(job["id"], job["node"], index)
        overlay, seed = str(job_dir / f"{name}.qcow2"), str(job_dir / f"{name}-seed.iso")
        disks = [{"path": overlay}]
        vm = {"name": name, "node": job["node"], "overlay": overlay}
        if index == 1:
            vm["data_disk"] = {"path": str(job_dir / f"{name}-data.qcow2"), "size": "16M"}
            disks.append({"path": vm["data_disk"]["path"]})
        vm["domain"] = {
            "job": dict(job, index=index),
            "memory_mib": 128,
            "disks": disks,
            "seed": seed,
            "nics": [{"mode": "network", "source": "default"}],
            "cpu_pinning": [{"vcpu": 0, "cpuset": str(index)}],
        }
        vms.append(vm)
        seeds.append(
            {
                "name": name,
                "path": seed,
                "meta_data": {"instance-id": name, "local-hostname": f"vm{index}"},
                "user_data": {"ssh_keys": {"ed25519_private": HOST_KEY}},
            }
        )
    return start_args(
        job_dir=str(job_dir),
        image={"path": image},
        domain={"virt_type": "qemu", "shmem": [{"name": naming.shmem_name(job["id"]), "size_mib": 4}]},
        vms=vms,
        seeds=seeds,
        wait_timeout=10,
    )


def test_every_vm_of_the_node_is_made_and_started_once_then_nothing_changes(job, tmp_path, image, test_conn):
    args = job_start(job, tmp_path, image)
    check = run_module("vm_start", args, check=True)
    assert check["changed"] and not os.path.exists(args["job_dir"])
    real = run_module("vm_start", args)
    assert real["changed"], real
    assert [vm["state"] for vm in real["vms"]] == ["running", "running"]
    assert real["vms"][0]["macs"] == [naming.domain_mac(job["id"], job["node"], 0)]
    for vm in args["vms"]:
        assert os.path.exists(vm["overlay"] + ".vtorque.json") and os.path.exists(vm["domain"]["seed"])
        assert test_conn.lookupByName(vm["name"]).isActive()
    assert os.path.exists(args["vms"][1]["data_disk"]["path"])
    assert os.stat(args["job_dir"]).st_mode & 0o7777 == 0o711
    again = run_module("vm_start", args)
    again_check = run_module("vm_start", args, check=True)
    assert (again["changed"], again_check["changed"]) == (False, False), (again, again_check)


def test_the_diff_shows_each_domain_and_only_the_checksum_of_each_seed(job, tmp_path, image):
    result = run_module("vm_start", job_start(job, tmp_path, image, count=1))
    headers = [entry["after_header"] for entry in result["diff"]]
    name = naming.domain_name(job["id"], job["node"], 0)
    assert headers == [headers[0], f"domain {name}"] and headers[0].endswith("-seed.iso")
    assert result["diff"][0]["after"].startswith("seed image sha256 ")
    assert f"<name>{name}</name>" in result["diff"][1]["after"]
    assert "not-a-real-key" not in json.dumps(result)


def test_a_vm_without_its_rendered_definition_or_a_seed_of_no_vm_fails_naming_it(job, tmp_path, image):
    args = job_start(job, tmp_path, image, count=1)
    bare = dict(args, vms=[dict(args["vms"][0], xml=None)])
    failed = run_module("vm_start", bare)
    assert failed["failed"] and failed["reason"] == "invalid" and "action plugin" in failed["msg"]
    stray = dict(args, seeds=[*args["seeds"], dict(args["seeds"][0], name="vt-other")])
    failed = run_module("vm_start", stray)
    assert failed["failed"] and failed["msg"] == "seeds for VMs not in vms: vt-other"
    assert "not-a-real-key" not in json.dumps(failed), "a failure shows no seed either"
    assert not os.path.exists(args["vms"][0]["overlay"]), "nothing is made before the check"
