# Copyright: vTorque contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""Controller side of vm_domain: render the typed options through the domain template.

The module runs on the node and may import only the standard library and libvirt-python, so
Jinja2 rendering happens on the controller (plugin_utils.domain_render, as kubernetes.core does
for its `template` option). The module
gets the rendered definition in `xml` and does everything else itself.
"""

from __future__ import annotations

from ansible.errors import AnsibleActionFail
from ansible.plugins.action import ActionBase
from ansible_collections.mikelangelo.vtorque.plugins.module_utils.domain_spec import (
    DEFINING_STATES,
    DOMAIN_ARGSPEC,
)
from ansible_collections.mikelangelo.vtorque.plugins.module_utils.errors import VTorqueModuleError
from ansible_collections.mikelangelo.vtorque.plugins.plugin_utils.domain_render import render_domain_xml


def render_for_task(action: ActionBase, params: dict) -> str:
    """render_domain_xml with the template and fragments searched like the template module's
    src (the role's or playbook's templates/ first); a failure fails the task."""
    template = params.get("template")
    if template:
        template = action._find_needle("templates", template)
    fragments = {f["name"]: action._find_needle("templates", f["template"]) for f in params["fragments"]}
    try:
        return render_domain_xml(params, template, fragments)
    except VTorqueModuleError as exc:
        raise AnsibleActionFail(f"{exc.msg} (domain {exc.target})") from exc


class ActionModule(ActionBase):
    TRANSFERS_FILES = False

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        validation, params = self.validate_argument_spec(argument_spec=DOMAIN_ARGSPEC)
        module_args = dict(self._task.args)
        if params["state"] in DEFINING_STATES and not params.get("xml"):
            module_args["xml"] = render_for_task(self, params)
        result.update(
            self._execute_module(
                module_name="mikelangelo.vtorque.vm_domain", module_args=module_args, task_vars=task_vars
            )
        )
        return result
