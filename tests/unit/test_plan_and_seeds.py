"""The job plan and the seeds it gives each VM: deterministic, placed within the site's pool,
and accepted by cloud-init's own schema."""

import dataclasses
import subprocess

import pytest
from ansible_collections.mikelangelo.vtorque.plugins.module_utils.seed import render_seed_files
from vtorque.errors import RequestError
from vtorque.guest.seeds import AUTHORIZED_KEYS_DIR, JobKeys, seed_for, vm_nodefile
from vtorque.job.plan import Owner, PlanError, make_plan
from vtorque.request.grammar import parse_vm_values
from vtorque.request.resolve import resolve_request
from vtorque.scheduler.base import AllocatedJob, Event
from vtorque.scheduler.torque.adapter import Adapter, HookUsageError
from vtorque.site.catalog import ImageEntry
from vtorque.site.config import parse_config

CATALOG = {"tiny": ImageEntry("tiny", "/srv/tiny.qcow2", "qcow2", "debian", kernel="/srv/k", initrd="/srv/i")}
OWNER = Owner("alice", 1234, 2345, "physics", "/home/alice")
BRIDGE = """
defaults: {img: tiny}
network:
  mode: bridge
  cidr: 10.20.0.0/16
  gateway: 10.20.0.1
  dns: [10.20.0.2]
  ranges: {n1: 10.20.1.10-10.20.1.13, n2: 10.20.2.10-10.20.2.13}
"""


def job(nodes=(("n1", 4),), workdir="/home/alice/run", job_id="42.head"):
    return AllocatedJob(Event.START, job_id, "alice", "physics", "sim", "/x.SC", nodes, workdir)


def assert_cloud_init_accepts(tmp_path, user_data):
    """cloud-init's own schema check (Debian's cloud-init on the host) of the user-data file."""
    path = tmp_path / "user-data"
    path.write_bytes(render_seed_files({}, user_data, None)["user-data"])
    checked = subprocess.run(
        ["cloud-init", "schema", "--config-file", str(path)], capture_output=True, text=True, check=False
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr


def plan_for(text="vcpus=2,vms_per_node=2", config_text=BRIDGE, **job_args):
    config = parse_config(config_text, "/etc/vtorque/test.yml")
    request = resolve_request(parse_vm_values([(text, "cmd")]), config, owner_uid=0, cwd="/", catalog=CATALOG)
    return make_plan(job(**job_args), request, config, OWNER), config


def keys_for(plan):
    hosts = {vm.name: (f"HOST {vm.hostname}", f"ssh-ed25519 {vm.hostname}") for vm in plan.vms}
    return JobKeys("PRIVATE job key", "ssh-ed25519 AAAAjob alice", hosts)


def test_the_same_job_gives_the_same_plan_and_another_job_another():
    first, _ = plan_for(nodes=(("n1", 4), ("n2", 4)))
    again, _ = plan_for(nodes=(("n1", 4), ("n2", 4)))
    assert first == again
    assert [vm.rank for vm in first.vms] == [0, 1, 2, 3]
    assert [(vm.node, vm.index) for vm in first.vms] == [("n1", 0), ("n1", 1), ("n2", 0), ("n2", 1)]
    assert [vm.address for vm in first.vms] == [
        "10.20.1.10/16",
        "10.20.1.11/16",
        "10.20.2.10/16",
        "10.20.2.11/16",
    ]
    assert len({vm.mac for vm in first.vms}) == len({vm.name for vm in first.vms}) == 4
    config = parse_config(BRIDGE)
    other = make_plan(dataclasses.replace(job(), job_id="43.head"), first_request(), config, OWNER)
    assert {vm.name for vm in other.vms}.isdisjoint(vm.name for vm in first.vms)


def first_request():
    config = parse_config(BRIDGE)
    values = parse_vm_values([("vcpus=2,vms_per_node=2", "cmd")])
    return resolve_request(values, config, owner_uid=0, cwd="/", catalog=CATALOG)


def test_a_node_without_enough_pool_addresses_and_multi_node_user_mode_are_refused():
    with pytest.raises(PlanError, match="node n1 has 4 guest addresses in the pool; the job needs 5"):
        plan_for("vms_per_node=5,vcpus=1")
    with pytest.raises(PlanError, match="network.ranges has no entry for node 'n9'"):
        plan_for(nodes=(("n9", 4),))
    with pytest.raises(PlanError, match="nodes=2: network.mode is user on this site"):
        plan_for(config_text="defaults: {img: tiny}", nodes=(("n1", 4), ("n2", 4)))


def test_user_mode_forwards_a_loopback_port_to_the_one_vm_of_a_job():
    plan, config = plan_for("vcpus=1", "defaults: {img: tiny}")
    (vm,) = plan.vms
    assert config.network.ssh_port_base <= vm.ssh_port < config.network.ssh_port_base + 10000
    assert vm.ssh_host == "127.0.0.1" and vm.address == "10.0.2.15/24"


def test_user_mode_refuses_several_vms_a_job_because_they_could_not_reach_each_other():
    """Each user-mode VM is 10.0.2.15 behind a NAT of its own: two of them never meet."""
    with pytest.raises(PlanError, match=r"vms_per_node=2: network.mode is user on this site"):
        plan_for("vms_per_node=2,vcpus=1", "defaults: {img: tiny}")


def test_mounts_follow_the_site_config():
    plan, _ = plan_for()
    assert plan.mounts == (("workdir", "/home/alice/run", "workdir", "9p"),)
    plan, _ = plan_for(config_text=BRIDGE + "guest: {mounts: {home: {type: 9p}}}")
    assert plan.mounts == (("home", "/home/alice", "home", "9p"),)  # the work dir is inside the home
    nfs = "{type: nfs, nfs_server: fs1, nfs_export: /export/home}"
    nfs = f"guest: {{mounts: {{home: {nfs}, workdir: {{type: none}}}}}}"
    plan, _ = plan_for(config_text=BRIDGE + nfs)
    assert plan.mounts == (("home", "/home/alice", "fs1:/export/home/alice", "nfs"),)


def test_every_seed_passes_cloud_init_schema_and_carries_the_owner_keys_and_network(tmp_path):
    plan, _ = plan_for(nodes=(("n1", 4), ("n2", 4)))
    vm = plan.vms[2]
    meta, user_data, network = seed_for(plan, vm, keys_for(plan))
    assert_cloud_init_accepts(tmp_path, user_data)
    assert meta == {"instance-id": vm.uuid, "local-hostname": "n2-vm0"}
    assert user_data["bootcmd"] == [["groupadd", "-g", "2345", "physics"]]
    (user,) = user_data["users"]
    assert (user["name"], user["uid"], user["primary_group"], user["homedir"]) == (
        "alice",
        1234,
        "physics",
        "/home/alice",
    )
    assert user["ssh_authorized_keys"] == ["ssh-ed25519 AAAAjob alice"]
    assert user_data["ssh_keys"] == {"ed25519_private": "HOST n2-vm0", "ed25519_public": "ssh-ed25519 n2-vm0"}
    written = {item["path"]: item["content"] for item in user_data["write_files"]}
    assert written[f"{AUTHORIZED_KEYS_DIR}/alice"] == "ssh-ed25519 AAAAjob alice\n"
    assert (
        written["/var/spool/torque/aux/42.head"]
        == "n1-vm0\nn1-vm0\nn1-vm1\nn1-vm1\nn2-vm0\nn2-vm0\nn2-vm1\nn2-vm1\n"
    )
    assert "10.20.2.11 n2-vm1" in written["/etc/hosts"]
    assert network["ethernets"]["eth0"] == {
        "match": {"macaddress": vm.mac},
        "addresses": ["10.20.2.10/16"],
        "set-name": "eth0",
        "gateway4": "10.20.0.1",
        "nameservers": {"addresses": ["10.20.0.2"]},
    }
    assert user_data["mounts"] == [
        ["workdir", "/home/alice/run", "9p", "trans=virtio,version=9p2000.L,msize=262144"]
    ]
    assert vm_nodefile(plan).splitlines()[0] == "n1-vm0"


def test_the_vms_of_a_job_can_reach_each_other_as_the_owner_and_only_with_pinned_keys(tmp_path):
    plan, _ = plan_for(nodes=(("n1", 4), ("n2", 4)))
    _, user_data, _ = seed_for(plan, plan.vms[3], keys_for(plan))
    files = {item["path"]: item for item in user_data["write_files"]}
    key = files["/etc/ssh/vtorque/keys/alice"]
    assert (key["content"], key["owner"], key["permissions"], key["defer"]) == (
        "PRIVATE job key",
        "alice:physics",
        "0600",
        True,
    )
    known = files["/etc/ssh/vtorque/known_hosts"]["content"].splitlines()
    assert (
        len(known) == 8 and "n1-vm0 ssh-ed25519 n1-vm0" in known and "10.20.1.10 ssh-ed25519 n1-vm0" in known
    )
    client = files["/etc/ssh/ssh_config.d/50-vtorque.conf"]["content"]
    assert client.startswith("Host n1-vm0 10.20.1.10 n1-vm1 10.20.1.11 n2-vm0")
    assert "StrictHostKeyChecking yes" in client
    assert_cloud_init_accepts(tmp_path, user_data)
    single, _ = plan_for(text="vcpus=1", config_text=BRIDGE)
    _, alone, _ = seed_for(single, single.rank0, keys_for(single))
    assert not any("/keys/" in item["path"] for item in alone["write_files"])  # one VM: no key inside


def test_hook_arguments_follow_torque(tmp_path):
    nodefile = tmp_path / "42.head"
    nodefile.write_text("n1\nn1\nn2\nn2\n")
    args = [
        "42.head",
        "alice",
        "physics",
        "sim",
        "nodes=2:ppn=2",
        "batch",
        "",
        "/var/spool/torque/mom_priv/jobs/42.SC",
    ]
    torque = Adapter(parse_config("torque: {pbs_home: /var/spool/torque}"))
    name, parsed = torque.parse_hook(["prologue", *args])
    job = torque.job_from_hook(name, parsed, {"PBS_NODEFILE": str(nodefile), "PBS_O_WORKDIR": "/w"})
    assert (job.job_id, job.user, job.script, job.nodes, job.workdir) == (
        "42.head",
        "alice",
        "/var/spool/torque/mom_priv/jobs/42.SC",
        (("n1", 2), ("n2", 2)),
        "/w",
    )
    epilogue = [
        "42.head",
        "alice",
        "physics",
        "sim",
        "777",
        "nodes=2",
        "walltime=1",
        "batch",
        "",
        "271",
        "/x.SC",
    ]
    torque = Adapter(parse_config(f"torque: {{pbs_home: {tmp_path / 'no-pbs-home'}}}"))
    name, parsed = torque.parse_hook(["epilogue", *epilogue])
    job = torque.job_from_hook(name, parsed, {})
    assert (job.exit_status, job.nodes, job.script) == (271, (), "/x.SC")  # node file gone: local teardown
    assert (job.event, job.requeued) == (Event.STOP, False)
    with pytest.raises(HookUsageError, match="prologue takes 8 arguments from pbs_mom, got 7"):
        torque.parse_hook(["prologue", *args[:7]])
    with pytest.raises(HookUsageError, match="usage"):
        torque.parse_hook(["postlogue", *args])


def test_the_request_must_fit_the_cores_torque_allocated():
    from vtorque.job.plan import check_allocation

    config = parse_config(BRIDGE)
    request = first_request()
    check_allocation((("n1", 5), ("n2", 5)), request, config, source="test")
    with pytest.raises(RequestError, match="need 5 cores per node .* but the job was allocated 4 on n2"):
        check_allocation((("n1", 5), ("n2", 4)), request, config, source="test")


def test_user_metadata_adds_to_the_seed_but_cannot_touch_identity_or_access(tmp_path):
    plan, _ = plan_for()
    vm = plan.rank0
    extra = {
        "packages": ["htop"],
        "runcmd": [["touch", "/tmp/mine"]],
        "write_files": [{"path": "/etc/motd", "content": "hi\n"}],
    }
    _, user_data, _ = seed_for(plan, vm, keys_for(plan), extra, "meta.yaml")
    assert user_data["packages"] == ["htop"] and user_data["runcmd"] == [["touch", "/tmp/mine"]]
    assert user_data["write_files"][-1]["path"] == "/etc/motd" and len(user_data["write_files"]) == 8
    assert user_data["users"][0]["uid"] == 1234
    assert_cloud_init_accepts(tmp_path, user_data)
    for hostile in ({"users": [{"name": "root"}]}, {"ssh_keys": {}}, {"ssh_authorized_keys": ["x"]}):
        with pytest.raises(
            RequestError, match=f"-vm metadata=meta.yaml: cloud-config key '{next(iter(hostile))}'"
        ):
            seed_for(plan, vm, keys_for(plan), hostile, "meta.yaml")
    with pytest.raises(RequestError, match="'runcmd' must be a list"):
        seed_for(plan, vm, keys_for(plan), {"runcmd": "reboot"}, "meta.yaml")


def test_pinning_and_a_data_disk_are_planned_per_vm_and_seeded_as_the_owners_data(tmp_path):
    plan, _ = plan_for(text="vcpus=2,vms_per_node=2,vcpu_pinning=true,disk=1G")
    first, second = plan.vms
    # the host keeps core 0 (host_reserve.cores 1)
    assert (first.cpu_pinning, second.cpu_pinning) == (((0, 1), (1, 2)), ((0, 3), (1, 4)))
    assert first.data_disk == first.overlay.replace(".qcow2", "-data.qcow2") and first.data_disk_mib == 1024
    _, user_data, _ = seed_for(plan, first, keys_for(plan))
    assert user_data["fs_setup"] == [
        {"label": "vtdata", "filesystem": "ext4", "device": "/dev/vdb", "overwrite": False}
    ]
    assert user_data["mounts"][-1] == ["/dev/vdb", "/data", "ext4", "defaults,nofail"]
    assert user_data["runcmd"] == [["chown", "1234:2345", "/data"]]
    assert_cloud_init_accepts(tmp_path, user_data)
    plain, _ = plan_for(text="vcpus=2")
    assert plain.rank0.cpu_pinning == () and plain.rank0.data_disk is None
    shared = BRIDGE + "policy: {exclusive_node_alloc: false}"
    with pytest.raises(PlanError, match=r"vcpu_pinning .* \(policy.exclusive_node_alloc: false"):
        plan_for(text="vcpu_pinning=true", config_text=shared)


def test_a_ramdisk_job_keeps_its_disks_in_the_job_tmpfs_and_sizes_it_for_them(tmp_path):
    from vtorque.runtime.playbook_vars import RAMDISK_SLACK_MIB, _ramdisk

    plan, config = plan_for(text="vms_per_node=2,disk=1G,fs_type=ramdisk")
    ram = plan.job_dir + "/ram"
    assert plan.ramdisk == ram
    assert [vm.overlay.startswith(ram + "/") and vm.data_disk.startswith(ram + "/") for vm in plan.vms] == [
        True
    ] * 2
    assert not plan.rank0.seed.startswith(ram)  # only what the guest writes goes to RAM
    image = tmp_path / "base.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(image), "3G"], check=True)
    plan = dataclasses.replace(plan, image={**plan.image, "path": str(image)})
    assert _ramdisk(plan) == {"path": ram, "size_mib": 2 * (3072 + 1024 + RAMDISK_SLACK_MIB)}
    shared, _ = plan_for(text="disk=1G")
    assert shared.ramdisk is None and "/ram/" not in shared.rank0.overlay


def test_a_node_that_starts_only_its_own_vms_gets_only_their_variables_and_seeds():
    from vtorque.runtime.playbook_vars import start_variables

    plan, config = plan_for(nodes=(("n1", 4), ("n2", 4)))
    every = start_variables(plan, config, keys_for(plan))["vtorque"]
    mine = start_variables(plan, config, keys_for(plan), nodes=("n2",))["vtorque"]
    assert {vm["node"] for vm in every["vms"]} == {"n1", "n2"} and len(every["seeds"]) == 4
    assert [vm["name"] for vm in mine["vms"]] == [vm["name"] for vm in every["vms"] if vm["node"] == "n2"]
    assert mine["seeds"] == [seed for seed in every["seeds"] if seed["node"] == "n2"]  # the same seeds
