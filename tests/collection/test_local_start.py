"""The start hook's in-process start of this machine's VMs (vtorque.runtime.local_start): the
variables job_start.yml gets, applied with vm_start's code in this process (test:///default is
per process, so the test's own connection sees what it made)."""

from ansible_collections.mikelangelo.vtorque.plugins.module_utils import naming
from module_calls import HOST_KEY
from vtorque.runtime.local_start import TASK, start_here


def variables(job, tmp_path, image, nodes=("node1", "node2")):
    """job_start.yml's `vtorque` variables (runtime.playbook_vars' shape) for one VM per node."""
    job_dir = tmp_path / "jobs" / job["id"]
    vms, seeds = [], []
    for node in nodes:
        name = naming.domain_name(job["id"], node, 0)
        overlay, seed = str(job_dir / f"{name}.qcow2"), str(job_dir / f"{name}-seed.iso")
        domain = {
            "job": {"id": job["id"], "node": node, "index": 0},
            "memory_mib": 128,
            "disks": [{"path": overlay, "format": "qcow2"}],
            "seed": seed,
            "nics": [{"mode": "network", "source": "default"}],
        }
        vms.append({"node": node, "name": name, "overlay": overlay, "data_disk": None, "domain": domain})
        seeds.append(
            {
                "node": node,
                "name": name,
                "path": seed,
                "meta_data": {"instance-id": name, "local-hostname": f"{node}-vm0"},
                "user_data": {"ssh_keys": {"ed25519_private": HOST_KEY}},
                "network_config": None,
            }
        )
    return {
        "vtorque": {
            "uri": "test:///default",
            "job_dir": str(job_dir),
            "image": {"path": image, "format": "qcow2"},
            "domain": {
                "virt_type": "qemu",
                "boot": None,
                "template": None,
                "extra_devices": [],
                "fragments": [],
            },
            "wait_timeout": 10,
            "ramdisk": None,
            "vms": vms,
            "seeds": seeds,
        }
    }


def test_only_the_vms_of_this_machine_s_nodes_are_made_and_started(job, tmp_path, image, test_conn):
    result = start_here(variables(job, tmp_path, image), ["node1"], "node1")
    assert (result.ok, result.status, result.failures) == (True, "successful", ()), result
    mine, theirs = (naming.domain_name(job["id"], node, 0) for node in ("node1", "node2"))
    assert test_conn.lookupByName(mine).isActive()
    assert mine in test_conn.lookupByName(mine).XMLDesc()
    assert theirs not in [domain.name() for domain in test_conn.listAllDomains()]
    again = start_here(variables(job, tmp_path, image), ["node1"], "node1")  # a requeued start
    assert again.ok and test_conn.lookupByName(mine).isActive()


def test_a_vm_that_cannot_be_made_fails_like_the_playbook_s_task_with_its_reason(
    job, tmp_path, image, test_conn
):
    bad = variables(job, tmp_path, image, nodes=("node1",))
    bad["vtorque"]["vms"][0]["domain"]["memory_mib"] = "lots"
    result = start_here(bad, ["node1"], "node1")
    assert not result.ok and result.status == "failed"
    (failure,) = result.failures
    assert failure.startswith(f"node1: {TASK}: VM {naming.domain_name(job['id'], 'node1', 0)}:"), failure
    assert "memory_mib" in failure
    assert not [
        d.name() for d in test_conn.listAllDomains() if d.name().startswith(naming.domain_prefix(job["id"]))
    ]
