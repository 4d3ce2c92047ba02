"""User-mode SSH forward ports claimed node-wide: a live job's port is never handed out again,
a dead job's is, and a job's claims go with it."""

import dataclasses
import os

from test_plan_and_seeds import plan_for
from vtorque.job.ports import claim_ports, release_ports


def user_plan(state_dir, job_id="42.head"):
    config_text = f"state_dir: {state_dir}\ndefaults: {{img: tiny}}\n"
    plan, config = plan_for("vcpus=1", config_text, job_id=job_id)
    return plan, config.network.ssh_port_base


def claims(state_dir):
    directory = state_dir / "ports"
    return {int(name): os.readlink(directory / name) for name in os.listdir(directory)}


def hashed_to(plan, port):
    """`plan` with its first VM's port `port`, as if its UUID had hashed there."""
    return dataclasses.replace(plan, vms=(dataclasses.replace(plan.vms[0], ssh_port=port), *plan.vms[1:]))


def test_a_port_a_live_job_holds_goes_to_the_next_free_one(tmp_path):
    theirs, base = user_plan(tmp_path, "41.head")
    theirs = claim_ports(theirs, base)
    held = theirs.vms[0].ssh_port
    ours, _ = user_plan(tmp_path, "42.head")
    (port,) = [vm.ssh_port for vm in claim_ports(hashed_to(ours, held), base).vms]
    assert port != held
    assert claims(tmp_path)[held] == theirs.job_dir and claims(tmp_path)[port] == ours.job_dir


def test_a_dead_jobs_port_is_taken_and_a_requeued_job_keeps_its_own(tmp_path):
    theirs, base = user_plan(tmp_path, "41.head")
    held = claim_ports(theirs, base).vms[0].ssh_port
    os.rmdir(theirs.job_dir)  # its teardown removed the job dir: the claim is dead
    ours, _ = user_plan(tmp_path, "42.head")
    claimed = claim_ports(hashed_to(ours, held), base)
    assert [vm.ssh_port for vm in claimed.vms] == [held] and claims(tmp_path)[held] == ours.job_dir
    assert claim_ports(hashed_to(ours, held), base) == claimed  # the next attempt of the same job


def test_releasing_removes_a_jobs_claims_and_every_dead_one(tmp_path):
    first, base = user_plan(tmp_path, "41.head")
    second, _ = user_plan(tmp_path, "42.head")
    first, second = claim_ports(first, base), claim_ports(second, base)
    release_ports(str(tmp_path), first.job_dir)
    assert set(claims(tmp_path).values()) == {second.job_dir}
    os.rmdir(second.job_dir)
    release_ports(str(tmp_path))
    assert claims(tmp_path) == {}


def test_other_network_modes_claim_nothing(tmp_path):
    plan, _ = plan_for("vms_per_node=2,vcpus=1")
    assert claim_ports(plan, 22200) is plan


def test_a_port_something_else_on_the_node_has_bound_is_passed_over(tmp_path):
    import socket

    ours, base = user_plan(tmp_path)
    for port in range(base, base + 100):  # one in the forward range that nothing holds yet
        try:
            taken = socket.create_server(("127.0.0.1", port))  # e.g. an outgoing connection's port
            break
        except OSError:
            continue
    with taken:
        (claimed,) = [vm.ssh_port for vm in claim_ports(hashed_to(ours, port), base).vms]
    assert claimed != port and claims(tmp_path)[claimed] == ours.job_dir
