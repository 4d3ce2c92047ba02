"""vm_info (read-only) and vm_sweep (idempotent removal by job tag) on test:///default."""

import os
import subprocess

from ansible_collections.mikelangelo.vtorque.plugins.module_utils import naming
from module_calls import TEST_URI, domain_args, run_module


def define(job, index, state="running", addresses=()):
    vm = dict(job, index=index)
    args = domain_args(
        name=naming.domain_name(vm["id"], vm["node"], index),
        job=vm,
        state=state,
        memory_mib=128,
        nics=[{"mode": "network", "source": "default"}],
        addresses=list(addresses),
    )
    assert run_module("vm_domain", args)["changed"]
    return args["name"]


def test_info_reports_job_domains_and_never_changes(test_conn, job):
    first = define(job, 0, addresses=["10.0.2.41"])
    second = define(job, 1, state="present")
    result = run_module("vm_info", {"uri": TEST_URI, "job_id": job["id"]})
    assert result["changed"] is False
    assert [d["name"] for d in result["domains"]] == [first, second]
    running = result["domains"][0]
    assert running["state"] == "running" and running["job"]["id"] == job["id"]
    assert running["macs"] == [naming.domain_mac(job["id"], job["node"], 0)]
    assert {"source": "plan", "address": "10.0.2.41"} in running["addresses"]
    assert result["domains"][1]["state"] == "shutoff"
    by_name = run_module("vm_info", {"uri": TEST_URI, "name": [second, "vt-no-such-domain"]}, check=True)
    assert [d["name"] for d in by_name["domains"]] == [second] and by_name["changed"] is False


def test_sweep_job_trio_removes_domains_and_files_only_of_that_job(tmp_path, test_conn, job):
    other = dict(job, id=job["id"] + "0")
    mine = [define(job, 0), define(job, 1, state="present")]
    kept = define(other, 0)
    foreign = test_conn.defineXML(
        f"<domain type='test'><name>{naming.domain_prefix(job['id'])}foreign</name>"
        "<memory>65536</memory><os><type>hvm</type></os></domain>"
    )
    job_dir = tmp_path / "jobs" / naming.sanitise_job_id(job["id"])
    job_dir.mkdir(parents=True)
    (job_dir / "vm.qcow2").write_bytes(b"overlay")
    other_dir = tmp_path / "jobs" / naming.sanitise_job_id(other["id"])
    other_dir.mkdir()
    args = {"uri": TEST_URI, "job_id": job["id"], "state_dir": str(tmp_path)}
    check = run_module("vm_sweep", args, check=True)
    assert check["changed"] and check["domains"] == mine and job_dir.exists()
    real = run_module("vm_sweep", args)
    assert real["changed"] and real["directories"] == [str(job_dir)] and not job_dir.exists()
    assert run_module("vm_sweep", args)["changed"] is False
    names = [d.name() for d in test_conn.listAllDomains()]
    assert not set(mine) & set(names) and kept in names and foreign.name() in names, "untagged domains stay"
    assert other_dir.exists()
    foreign.undefine()


def test_sweep_live_jobs_removes_every_other_job(tmp_path, test_conn, job):
    live = dict(job, id=job["id"] + "1")
    dead_vm, live_vm = define(job, 0), define(live, 0)
    for j in (job, live):
        (tmp_path / "jobs" / naming.sanitise_job_id(j["id"])).mkdir(parents=True)
    args = {"uri": TEST_URI, "live_jobs": [live["id"]], "state_dir": str(tmp_path)}
    real = run_module("vm_sweep", args)
    assert dead_vm in real["domains"] and live_vm not in real["domains"]
    assert real["directories"] == [str(tmp_path / "jobs" / naming.sanitise_job_id(job["id"]))]
    assert [p.name for p in (tmp_path / "jobs").iterdir()] == [naming.sanitise_job_id(live["id"])]
    assert live_vm in [d.name() for d in test_conn.listAllDomains()]
    again = run_module("vm_sweep", args)
    assert again["changed"] is False
    run_module("vm_sweep", {"uri": TEST_URI, "job_id": live["id"], "state_dir": str(tmp_path)})


def test_sweep_refuses_a_linked_job_directory(tmp_path, job):
    (tmp_path / "jobs").mkdir()
    target = tmp_path / "precious"
    target.mkdir()
    (tmp_path / "jobs" / naming.sanitise_job_id(job["id"])).symlink_to(target)
    result = run_module("vm_sweep", {"uri": TEST_URI, "job_id": job["id"], "state_dir": str(tmp_path)})
    assert result["failed"] and result["reason"] == "refused" and "a link is never followed" in result["msg"]
    assert target.exists()


def test_sweep_needs_exactly_one_selector():
    assert run_module("vm_sweep", {"uri": TEST_URI})["failed"]
    assert run_module("vm_sweep", {"uri": TEST_URI, "job_id": "1", "live_jobs": []})["failed"]


def test_a_domain_removed_by_a_racing_teardown_mid_removal_counts_as_removed(job):
    """Two epilogues of one job: the other one undefines the domain between this one's lookup
    and its calls. The goal (no domain) is met, so this removal must not fail."""
    from ansible_collections.mikelangelo.vtorque.plugins.module_utils.connection import Hypervisor
    from ansible_collections.mikelangelo.vtorque.plugins.module_utils.domain import DomainState

    hv = Hypervisor(TEST_URI)
    name = naming.domain_name(job["id"], job["node"], 0)
    xml = f"<domain type='test'><name>{name}</name><memory>131072</memory><os><type>hvm</type></os></domain>"
    hv.run("define", name, lambda conn: conn.defineXML(xml))

    def undefined_meanwhile(dom):
        hv.run("undefine", name, lambda conn: conn.lookupByName(name).undefine())  # the other epilogue
        return dom.isActive()

    state = DomainState(hv, name, check_mode=False)
    assert state._with_domain("read state", undefined_meanwhile) is None
    assert state.remove(0, "acpi") == {"changed": False, "forced": False}
    hv.close()


def test_another_jobs_domain_vanishing_while_the_job_is_listed_is_skipped(test_conn, job):
    """Teardowns of different jobs overlap: a domain listed a moment ago may be gone when its
    definition is read. Listing this job's domains must not fail on it."""
    from ansible_collections.mikelangelo.vtorque.plugins.module_utils import inventory

    mine = define(job, 0)
    other = define(dict(job, id=job["id"] + "1"), 0)

    class Racing:  # the other job's teardown undefines its domain right after the listing
        def listAllDomains(self, flags):
            listed = test_conn.listAllDomains(flags)
            test_conn.lookupByName(other).destroy()
            test_conn.lookupByName(other).undefine()
            return listed

    tagged = inventory._tagged_domains(Racing())
    assert [dom.name() for dom, _ in tagged if dom.name() in (mine, other)] == [mine]


def test_sweep_unmounts_a_ramdisk_jobs_tmpfs_before_removing_its_directory(tmp_path, job):
    """fs_type=ramdisk: the disks live in a tmpfs at <job dir>/ram; rmtree alone would stop at
    the mount point and leave the job's memory taken."""
    ram = tmp_path / "jobs" / naming.sanitise_job_id(job["id"]) / naming.RAM_DIR
    ram.mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "vtorque-ramdisk", str(ram)], check=True)
    try:
        (ram / "vm.qcow2").write_bytes(b"overlay")
        result = run_module("vm_sweep", {"uri": TEST_URI, "job_id": job["id"], "state_dir": str(tmp_path)})
        assert result["changed"] and not os.path.ismount(ram) and not ram.parent.exists()
    finally:
        if os.path.ismount(ram):
            subprocess.run(["umount", str(ram)], check=False)


def test_sweep_removes_the_jobs_shared_memory_and_leftovers_of_dead_jobs(tmp_path, job):
    from ansible_collections.mikelangelo.vtorque.plugins.module_utils.sweep import sweep_jobs

    shm = tmp_path / "shm"
    shm.mkdir()
    for job_id in (job["id"], "live1", "dead2"):
        (shm / naming.shmem_name(job_id)).write_bytes(b"region")
    (shm / "vt-other-file").write_bytes(b"not ours")
    (shm / naming.shmem_name("linked3")).symlink_to(shm / "vt-other-file")
    state = str(tmp_path / "state")
    check = sweep_jobs(uri=TEST_URI, state_dir=state, job_id=job["id"], shm_dir=str(shm), check_mode=True)
    assert check["shared_memory"] == [str(shm / naming.shmem_name(job["id"]))] and check["changed"]
    assert (shm / naming.shmem_name(job["id"])).exists()
    sweep_jobs(uri=TEST_URI, state_dir=state, job_id=job["id"], shm_dir=str(shm))
    assert not (shm / naming.shmem_name(job["id"])).exists()
    orphans = sweep_jobs(uri=TEST_URI, state_dir=state, live_jobs=["live1"], shm_dir=str(shm))
    assert orphans["shared_memory"] == [str(shm / naming.shmem_name("dead2"))]
    assert sorted(os.listdir(shm)) == sorted(
        [naming.shmem_name("linked3"), naming.shmem_name("live1"), "vt-other-file"]
    )


def test_a_node_sweep_removes_what_a_killed_template_build_left_unless_a_build_runs(tmp_path, test_conn):
    from ansible_collections.mikelangelo.vtorque.plugins.module_utils import snapshot

    snapshots = tmp_path / snapshot.SUBDIR
    (snapshots / "3f1d.build").mkdir(parents=True)
    (snapshots / "3f1d.build" / "state.partial").write_bytes(b"half a save")
    (snapshots / "77aa").mkdir()  # a complete template stays
    name, elsewhere = snapshot.TEMPLATE_PREFIX + "3f1d", snapshot.TEMPLATE_PREFIX + "9c0e"
    for guest, directory in ((name, snapshots), (elsewhere, tmp_path / "other" / snapshot.SUBDIR)):
        test_conn.createXML(
            f"<domain type='test'><name>{guest}</name><memory>65536</memory><os><type>hvm</type></os>"
            f"<devices><disk type='file' device='disk'><source file='{directory}/3f1d.build/overlay.qcow2'/>"
            "<target dev='vda'/></disk></devices></domain>"
        )
    leftovers = [name, str(snapshots / "3f1d.build")]
    args = {"uri": TEST_URI, "live_jobs": [], "state_dir": str(tmp_path)}
    with snapshot._Lock(str(snapshots)):  # a build runs: its guest and dir are its own
        assert run_module("vm_sweep", args)["template_builds"] == []
    check = run_module("vm_sweep", args, check=True)
    assert check["changed"] and check["template_builds"] == leftovers
    assert (snapshots / "3f1d.build").exists() and name in [d.name() for d in test_conn.listAllDomains()]
    assert run_module("vm_sweep", args)["template_builds"] == leftovers
    assert not (snapshots / "3f1d.build").exists() and (snapshots / "77aa").is_dir()
    names = [d.name() for d in test_conn.listAllDomains()]
    assert name not in names and elsewhere in names, "another state dir's build is not this sweep's"
    assert run_module("vm_sweep", args)["changed"] is False


def test_a_teardown_waits_for_a_start_of_the_job_that_still_runs(tmp_path, test_conn, job):
    """A start that outlived its runner (a killed ansible-playbook's worker, a module on a node
    whose SSH connection is gone) defines its VM after the teardown began: the teardown waits."""
    import threading
    import time

    from ansible_collections.mikelangelo.vtorque.plugins.module_utils import startlock

    job_dir = tmp_path / "jobs" / naming.sanitise_job_id(job["id"])
    job_dir.mkdir(parents=True)
    held, late = threading.Event(), []

    def start():
        with startlock.starting(str(job_dir)):
            held.set()
            time.sleep(0.5)
            late.append(define(job, 0))  # after the teardown below has begun

    starter = threading.Thread(target=start)
    starter.start()
    held.wait(5)
    result = run_module("vm_sweep", {"uri": TEST_URI, "job_id": job["id"], "state_dir": str(tmp_path)})
    starter.join()
    assert result["domains"] == late and result["directories"] == [str(job_dir)]
    assert late[0] not in [d.name() for d in test_conn.listAllDomains()] and not job_dir.exists()


def test_a_start_stuck_longer_than_the_wait_does_not_hold_the_teardown(tmp_path):
    from ansible_collections.mikelangelo.vtorque.plugins.module_utils import startlock

    with startlock.starting(str(tmp_path)):
        assert startlock.wait_for_start(str(tmp_path), seconds=0.3) is False
    assert startlock.wait_for_start(str(tmp_path), seconds=0.3) is True
    assert startlock.wait_for_start(str(tmp_path / "never-started")) is True
