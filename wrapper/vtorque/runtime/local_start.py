"""This machine's VMs of a job, started in the hook's own process: exactly what the job_start
playbook's one task (vm_start) does on a node, with the same code (module_utils.start, the
domain XML rendered by plugin_utils.domain_render) and the same variables, but without
ansible-runner's and ansible-playbook's start-up and the module's own process (~1.3 s of a
~2 s start here, docs/performance.md). Other nodes still get the playbook, at the same time.

A site that adds its own tasks to job_start.yml sets `runner.start_in_process: false`; then
every node, this one too, goes through the playbook.
"""

import subprocess
import time

from ansible.module_utils.common.arg_spec import ArgumentSpecValidator
from ansible_collections.mikelangelo.vtorque.plugins.module_utils.errors import VTorqueModuleError
from ansible_collections.mikelangelo.vtorque.plugins.module_utils.start import START_ARGSPEC, ensure_started
from ansible_collections.mikelangelo.vtorque.plugins.plugin_utils.domain_render import (
    domain_params,
    render_domain_xml,
)

from vtorque.runtime.runner import RunResult

TASK = "Every VM of the job on this node running"  # job_start.yml's task, as failures name it


def start_here(variables, nodes, where):
    """Every VM planned for `nodes` (this machine's) started as vm_start would; a RunResult
    like the playbook's, its failures as "WHERE: TASK: message"."""
    began = time.monotonic()
    try:
        ensure_started(_params(variables["vtorque"], set(nodes)), False, False, _qemu_img, _command)
    except VTorqueModuleError as err:
        target = f" (domain {err.target})" if err.target else ""
        return _failed(began, f"{where}: {TASK}: {err.msg}{target}")
    except Exception as err:  # noqa: BLE001 - e.g. libvirtError: the module's task would fail with it too
        return _failed(began, f"{where}: {TASK}: {type(err).__name__}: {err}")
    return RunResult(True, "successful", 0, time.monotonic() - began, ())


def _failed(began, failure):
    return RunResult(False, "failed", 1, time.monotonic() - began, (failure,))


def _params(job, nodes):
    """vm_start's validated options for `nodes`, each VM's XML rendered as its action plugin
    renders it (the site's templates are absolute paths: nothing to search for)."""
    vms = [vm for vm in job["vms"] if vm["node"] in nodes]
    options = {
        "uri": job["uri"],
        "job_dir": job["job_dir"],
        "ramdisk": job["ramdisk"],
        "image": job["image"],
        "domain": job["domain"],
        "vms": [dict(vm, xml=render_domain_xml(domain_params(job["uri"], job["domain"], vm))) for vm in vms],
        "seeds": [seed for seed in job["seeds"] if seed["node"] in nodes],
        "wait_timeout": job["wait_timeout"],
    }
    checked = ArgumentSpecValidator(START_ARGSPEC).validate(options)
    if checked.error_messages:
        raise VTorqueModuleError("; ".join(checked.error_messages))
    return checked.validated_parameters


def _qemu_img(argv):
    _command(["qemu-img", *argv])


def _command(argv):
    done = subprocess.run(argv, capture_output=True, text=True, check=False, stdin=subprocess.DEVNULL)  # noqa: S603
    if done.returncode != 0:
        raise VTorqueModuleError(
            f"{' '.join(argv)} failed (rc {done.returncode}): {(done.stderr or done.stdout).strip()}",
            target=argv[-1],
            reason=argv[0],
        )
