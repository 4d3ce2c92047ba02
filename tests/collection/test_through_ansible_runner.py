"""The modules through real ansible-runner: the action plugin renders the template on the
controller, the module runs in its own process, and results come back as Ansible reports them."""

import json
import sys
import time

import ansible_runner
import yaml
from ansible_collections.mikelangelo.vtorque.plugins.module_utils import naming


def run_playbook(tmp_path, tasks, cmdline=None):
    (tmp_path / "project").mkdir(exist_ok=True)
    play = [{"hosts": "localhost", "gather_facts": False, "tasks": tasks}]
    (tmp_path / "project" / "play.yml").write_text(yaml.safe_dump(play))
    started = time.monotonic()
    run = ansible_runner.run(
        private_data_dir=str(tmp_path),
        playbook="play.yml",
        quiet=True,
        cmdline=cmdline,
        inventory=f"localhost ansible_connection=local ansible_python_interpreter={_python()}",
    )
    elapsed = time.monotonic() - started
    results = [e["event_data"] for e in run.events if e["event"] in ("runner_on_ok", "runner_on_failed")]
    return run, results, elapsed


def _python():
    return sys.executable


def test_vm_domain_call_renders_template_on_controller(tmp_path):
    task = {
        "name": "define and start",
        "mikelangelo.vtorque.vm_domain": {
            "uri": "test:///default",
            "name": "vt-1.h-n1-0",
            "state": "running",
            "virt_type": "qemu",
            "job": {"id": "1.h", "node": "n1", "index": 0},
            "memory_mib": 128,
            "nics": [{"mode": "network", "source": "default"}],
        },
        "diff": True,
    }
    run, results, elapsed = run_playbook(tmp_path, [task])
    assert run.status == "successful", [r.get("res") for r in results]
    res = results[0]["res"]
    assert res["changed"] and res["state"] == "running"
    assert res["macs"] == [naming.domain_mac("1.h", "n1", 0)]
    assert "<name>vt-1.h-n1-0</name>" in res["diff"]["after"]
    duration = results[0].get("duration")
    print(
        f"vm_domain on test:///default through ansible-runner: task {duration or -1:.2f} s, "
        f"whole run {elapsed:.2f} s"
    )


def test_bad_option_fails_in_the_action_plugin_naming_the_key(tmp_path):
    task = {
        "mikelangelo.vtorque.vm_domain": {
            "uri": "test:///default",
            "name": "vt-1.h-n1-0",
            "state": "present",
            "job": {"id": "1.h", "node": "n1", "index": 0},
            "nics": [{"mode": "bridge"}],
        }
    }
    run, results, _ = run_playbook(tmp_path, [task])
    assert run.status == "failed"
    assert "nics[0]: mode bridge needs source" in results[0]["res"]["msg"]


def test_vm_seed_is_idempotent_across_processes(tmp_path):
    seed = {
        "path": str(tmp_path / "seed.iso"),
        "meta_data": {"instance-id": "i-1"},
        "user_data": {"runcmd": [["true"]]},
    }
    tasks = [{"name": f"seed {i}", "mikelangelo.vtorque.vm_seed": seed} for i in range(2)]
    run, results, _ = run_playbook(tmp_path, tasks)
    assert run.status == "successful"
    assert [r["res"]["changed"] for r in results] == [True, False]


def test_user_strings_in_the_job_variables_are_never_templated(tmp_path):
    """The job playbooks get user values (work dir, metadata cloud-config, names) as extra vars;
    written by vtorque.runtime.runner.unsafe_yaml, not one of them is rendered, as value or as key."""
    from vtorque.runtime.runner import unsafe_yaml

    marker = tmp_path / "templated"
    hostile = "{{ lookup('pipe', 'touch " + str(marker) + "') }}{{ 6 * 7 }}"
    header = "#jinja2:variable_start_string:'[[', variable_end_string:']]'\n[[ 6 * 7 ]]"
    typed = ["0644", "0755", "true", "null", "1e3", "2026-11-25", "~", ""]  # strings that look typed
    vm = {"node": "localhost", "name": hostile, "user_data": {hostile: [hostile, header, *typed]}}
    variables = {"vtorque": {"vms": [vm]}}
    (tmp_path / "vars.yml").write_text(unsafe_yaml(variables))
    tasks = [
        {
            "ansible.builtin.copy": {
                "content": "{{ vtorque.vms[0] | to_json }}",
                "dest": str(tmp_path / "seen.json"),
                "mode": "0600",
            }
        }
    ]
    run, _, _ = run_playbook(tmp_path, tasks, cmdline=f"-e @{tmp_path / 'vars.yml'}")
    assert run.status == "successful"
    assert not marker.exists(), "a user's string was templated as root"
    assert json.loads((tmp_path / "seen.json").read_text()) == variables["vtorque"]["vms"][0]


def test_device_features_and_a_site_fragment_through_the_action_plugin(tmp_path):
    fragment = tmp_path / "watchdog.xml.j2"
    fragment.write_text("<watchdog model='i6300esb' action='reset'/><!-- {{ name }} -->\n")
    args = {
        "uri": "test:///default",
        "name": "vt-2.h-n1-0",
        "state": "present",
        "virt_type": "qemu",
        "job": {"id": "2.h", "node": "n1", "index": 0},
        "memory_mib": 128,
        "disks": [{"path": "/j/vm.qcow2"}],
        "iothreads": {"count": 1, "cpuset": "1"},
        "emulator_cpuset": "1",
        "shmem": [{"name": naming.shmem_name("2.h"), "size_mib": 4}],
        "fragments": [{"name": "watchdog", "template": str(fragment)}],
    }
    run, results, _ = run_playbook(tmp_path, [{"mikelangelo.vtorque.vm_domain": args, "diff": True}])
    assert run.status == "successful", [r.get("res") for r in results]
    after = results[0]["res"]["diff"]["after"]
    for piece in (
        "<watchdog model='i6300esb' action='reset'",
        "<iothreads>1</iothreads>",
        "<shmem name='vt-2.h-unclot'>",
    ):
        assert piece in after, piece
    fragment.unlink()
    run, results, _ = run_playbook(tmp_path, [{"mikelangelo.vtorque.vm_domain": args}])
    assert run.status == "failed" and "watchdog.xml.j2" in results[0]["res"]["msg"]


def test_vm_start_keeps_the_seeds_private_key_out_of_every_event(tmp_path):
    """vm_start carries the seeds (private host keys) without no_log: its result names them only,
    so the runner's events (kept as artifacts) never hold a key while failures keep their text."""
    import subprocess

    image = tmp_path / "base.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(image), "64M"], check=True)
    job_dir = tmp_path / "jobs" / "3.h"
    name = naming.domain_name("3.h", "n1", 0)
    host_key = "not-a-real-private-key-3h"
    task = {
        "mikelangelo.vtorque.vm_start": {
            "uri": "test:///default",
            "job_dir": str(job_dir),
            "image": {"path": str(image)},
            "domain": {"virt_type": "qemu"},
            "vms": [
                {
                    "name": name,
                    "overlay": str(job_dir / "vm.qcow2"),
                    "domain": {"job": {"id": "3.h", "node": "n1", "index": 0}, "memory_mib": 128},
                }
            ],
            "seeds": [
                {
                    "name": name,
                    "path": str(job_dir / "seed.iso"),
                    "meta_data": {"instance-id": name},
                    "user_data": {"ssh_keys": {"ed25519_private": host_key}},
                }
            ],
        },
        "diff": True,
    }
    run, results, elapsed = run_playbook(tmp_path, [task])
    assert run.status == "successful", [r.get("res") for r in results]
    assert results[0]["res"]["vms"][0]["state"] == "running"
    assert results[0]["res"]["invocation"]["module_args"]["seeds"] == [
        {"name": name, "path": str(job_dir / "seed.iso")}
    ]
    assert host_key not in json.dumps(list(run.events))
    assert host_key not in run.stdout.read()
    print(f"vm_start on test:///default through ansible-runner: whole run {elapsed:.2f} s")
