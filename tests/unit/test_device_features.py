"""-vm iocm, hugepages, unclot, vrdma and site fragments from the site config to the plan and the
job_start variables; vrdma devices claimed node-wide (concurrent jobs, a crashed job, the sweep)."""

import multiprocessing
import os

import pytest
from test_config import problems
from test_plan_and_seeds import BRIDGE, keys_for, plan_for
from vtorque.job.devices import claim_devices, release_devices
from vtorque.job.plan import PlanError
from vtorque.runtime.playbook_vars import start_variables

DEVICES = ["0000:3b:00.1", "0000:3b:00.2"]


def site(state_dir=None, extra=""):
    text = BRIDGE + (
        "policy: {iocm: true, hugepages: true, unclot: true, vrdma: true}\n"
        f"vrdma: {{devices: {{n1: [{', '.join(DEVICES)}]}}}}\n"
        "fragments: {watchdog: {template: /etc/vtorque/fragments/watchdog.xml.j2}}\n"
    )
    if state_dir:
        text += f"state_dir: {state_dir}\n"
    return text + extra


def test_iocm_sets_io_cores_apart_from_the_vcpus_cores():
    plan, config = plan_for("vcpus=2,vms_per_node=2,iocm=true,iocm_min_cores=1,iocm_max_cores=2", site())
    first, second = plan.vms
    # host_reserve.cores 1 (core 0), then 2 VMs x 2 vCPUs (cores 1-4), then the I/O cores 5-6
    assert first.cpu_pinning == second.cpu_pinning == ((0, "1-4"), (1, "1-4"))
    assert (first.iothreads, first.io_cpuset, second.io_cpuset) == (1, "5-6", "5-6")
    pinned, _ = plan_for("vcpus=2,vms_per_node=2,iocm=true,iocm_max_cores=1,vcpu_pinning=true", site())
    assert [vm.cpu_pinning for vm in pinned.vms] == [((0, 1), (1, 2)), ((0, 3), (1, 4))]
    assert pinned.rank0.io_cpuset == "5"
    vm = start_variables(pinned, config, keys_for(pinned))["vtorque"]["vms"][0]["domain"]
    assert vm["iothreads"] == {"count": 1, "cpuset": "5"} and vm["emulator_cpuset"] == "5"
    assert vm["cpu_pinning"] == [{"vcpu": 0, "cpuset": "1"}, {"vcpu": 1, "cpuset": "2"}]
    with pytest.raises(PlanError, match=r"iocm pins vCPUs .* \(policy.exclusive_node_alloc: false"):
        plan_for(
            "iocm=true",
            site(extra="host_reserve: {cores: 1}\n").replace(
                "policy: {", "policy: {exclusive_node_alloc: false, "
            ),
        )


def test_hugepages_unclot_and_fragments_reach_the_playbook():
    plan, config = plan_for(
        "vcpus=1,vms_per_node=2,hugepages=true,unclot=true,unclot_shmem=64M,fragments=watchdog", site()
    )
    variables = start_variables(plan, config, keys_for(plan))["vtorque"]
    assert variables["domain"]["hugepages"] is True
    assert variables["domain"]["shmem"] == [{"name": "vt-42.head-unclot", "size_mib": 64}]
    assert variables["domain"]["fragments"] == [
        {"name": "watchdog", "template": "/etc/vtorque/fragments/watchdog.xml.j2"}
    ]
    other, _ = plan_for("unclot=true", site(), job_id="43.head")
    assert other.shmem[0][0] == "vt-43.head-unclot", "another job never gets the same region"
    plain, config = plan_for("vcpus=1", site())
    variables = start_variables(plain, config, keys_for(plain))["vtorque"]
    shared, own = variables["domain"], variables["vms"][0]["domain"]
    assert (shared["hugepages"], shared["shmem"], shared["fragments"]) == (False, [], [])
    assert own["iothreads"] is None and own["hostdevs"] == []


def test_vrdma_needs_a_device_per_vm_on_every_node_and_one_node_on_torque():
    with pytest.raises(
        PlanError, match=r"vrdma: node n1 has 2 devices in vrdma.devices; the job needs one per VM \(3\)"
    ):
        plan_for("vrdma=true,vms_per_node=3", site())
    with pytest.raises(
        PlanError, match="vrdma on 2 nodes: devices are claimed on the node that starts the VMs"
    ):
        plan_for("vrdma=true", site(), nodes=(("n1", 4), ("n2", 4)))


def test_site_config_checks_devices_and_fragments_by_key():
    found = problems(
        "policy: {vrdma: true}\nvrdma: {devices: {n1: [3b:00.1, 0000:3b:00.2, 0000:3B:00.2]}}\n"
        "fragments: {Bad: {template: /x.j2}, nodoc: {always: true}}"
    )
    assert (
        "vrdma.devices.n1[0]: expected a PCI address DDDD:BB:SS.F (e.g. 0000:3b:00.1), got '3b:00.1'" in found
    )
    assert "vrdma.devices.n1[2]: 0000:3B:00.2 is listed twice (also vrdma.devices.n1[1])" in found
    assert any(p.startswith("fragments.Bad: a fragment name is") for p in found)
    assert "fragments.nodoc: template is required (the fragment's Jinja2 file)" in found
    assert problems("policy: {vrdma: true}") == [
        "policy.vrdma: true, but vrdma.devices lists no PCI device on any node"
    ]
    assert problems("defaults: {hugepages: true}") == [
        "defaults.hugepages: true, but policy.hugepages is false (switched off on this site)"
    ]
    assert "fragments.w.template: expected an absolute path, got 'rel'" in problems(
        "fragments: {w: {template: rel}}"
    )


def vrdma_plan(state_dir, job_id, vms=1):
    plan, config = plan_for(f"vrdma=true,vcpus=1,vms_per_node={vms}", site(state_dir), job_id=job_id)
    return plan, config.vrdma.devices


def claims(state_dir):
    directory = state_dir / "devices"
    return {name: os.readlink(directory / name) for name in sorted(os.listdir(directory))}


def test_two_jobs_never_get_the_same_device_and_a_requeued_job_keeps_its_own(tmp_path):
    first, pool = vrdma_plan(tmp_path, "41.head")
    first = claim_devices(first, pool, "n1")
    second, _ = vrdma_plan(tmp_path, "42.head")
    second = claim_devices(second, pool, "n1")
    assert (first.vms[0].hostdevs, second.vms[0].hostdevs) == ((DEVICES[0],), (DEVICES[1],))
    third, _ = vrdma_plan(tmp_path, "43.head")
    with pytest.raises(
        PlanError, match="every device of node n1 in vrdma.devices is held by another running job"
    ):
        claim_devices(third, pool, "n1")
    again, _ = vrdma_plan(tmp_path, "42.head")
    assert claim_devices(again, pool, "n1") == second  # the next attempt of the same job
    assert claims(tmp_path) == {DEVICES[0]: first.job_dir, DEVICES[1]: second.job_dir}


def test_a_crashed_jobs_device_is_free_and_teardown_and_sweep_release_claims(tmp_path):
    crashed, pool = vrdma_plan(tmp_path, "41.head")
    claim_devices(crashed, pool, "n1")
    os.rmdir(crashed.job_dir)  # the node crashed; its sweep (or nothing yet) removed the job dir
    ours, _ = vrdma_plan(tmp_path, "42.head", vms=2)
    ours = claim_devices(ours, pool, "n1")
    assert sorted(vm.hostdevs[0] for vm in ours.vms) == DEVICES, "the dead claim was taken over"
    release_devices(str(tmp_path), ours.job_dir)  # teardown
    assert claims(tmp_path) == {}
    dead, _ = vrdma_plan(tmp_path, "44.head")
    claim_devices(dead, pool, "n1")
    os.rmdir(dead.job_dir)
    release_devices(str(tmp_path))  # vtorque sweep: only dead claims
    assert claims(tmp_path) == {}


def _claim_in_a_process(state_dir, job_id, results):
    plan, pool = vrdma_plan(state_dir, job_id)
    try:
        results[job_id] = claim_devices(plan, pool, "n1").vms[0].hostdevs[0]
    except PlanError:
        results[job_id] = None


def test_concurrent_starts_share_out_the_pool_without_a_double_claim(tmp_path):
    context = multiprocessing.get_context("fork")
    with context.Manager() as manager:
        results = manager.dict()
        workers = [
            context.Process(target=_claim_in_a_process, args=(tmp_path, f"{n}.head", results))
            for n in range(6)
        ]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(30)
        got = dict(results)
    assert len(got) == 6
    assert sorted(device for device in got.values() if device) == DEVICES
    assert claims(tmp_path) == {
        device: os.path.join(str(tmp_path), "jobs", job) for job, device in got.items() if device
    }
