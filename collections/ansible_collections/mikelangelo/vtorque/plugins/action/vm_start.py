# Copyright: vTorque contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""Controller side of vm_start: each VM's vm_domain options (the shared ``domain`` under the
VM's own) validated with vm_domain's argument spec and rendered through the domain template,
as the vm_domain action plugin does, into ``vms[].xml``.

The seeds hold the VMs' private host keys: the module's arguments do not go to the node's
syslog (``ansible_no_target_syslog``) and its result names the seeds only, so the task needs
no ``no_log`` and its failures keep their messages.
"""

from __future__ import annotations

from ansible.errors import AnsibleActionFail
from ansible.plugins.action import ActionBase
from ansible_collections.mikelangelo.vtorque.plugins.action.vm_domain import render_for_task
from ansible_collections.mikelangelo.vtorque.plugins.module_utils.errors import VTorqueModuleError
from ansible_collections.mikelangelo.vtorque.plugins.module_utils.start import START_ARGSPEC
from ansible_collections.mikelangelo.vtorque.plugins.plugin_utils import domain_render


def domain_params(uri: str, shared: dict, vm: dict) -> dict:
    """One VM's validated vm_domain options (plugin_utils.domain_render); a bad one fails the task."""
    try:
        return domain_render.domain_params(uri, shared, vm)
    except VTorqueModuleError as exc:
        raise AnsibleActionFail(exc.msg) from exc


class ActionModule(ActionBase):
    TRANSFERS_FILES = False

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        _validation, params = self.validate_argument_spec(argument_spec=START_ARGSPEC)
        module_args = dict(self._task.args)
        module_args["vms"] = [
            dict(
                vm, xml=vm["xml"] or render_for_task(self, domain_params(params["uri"], params["domain"], vm))
            )
            for vm in params["vms"]
        ]
        result.update(
            self._execute_module(
                module_name="mikelangelo.vtorque.vm_start",
                module_args=module_args,
                task_vars=dict(task_vars or {}, ansible_no_target_syslog=True),
            )
        )
        return result
