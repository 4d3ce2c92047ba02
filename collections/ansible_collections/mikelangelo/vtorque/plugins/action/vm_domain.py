# Copyright: vTorque contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""Controller side of vm_domain: render the typed options through the domain template.

The module runs on the node and may import only the standard library and libvirt-python, so
Jinja2 rendering happens here (as kubernetes.core does for its `template` option). The module
gets the rendered definition in `xml` and does everything else itself.
"""

from __future__ import annotations

import os.path
import xml.etree.ElementTree as ET

from ansible.errors import AnsibleActionFail
from ansible.plugins.action import ActionBase
from ansible_collections.mikelangelo.vtorque.plugins.module_utils.domain_spec import (
    DEFINING_STATES,
    DOMAIN_ARGSPEC,
    check_rendered,
    template_vars,
)
from ansible_collections.mikelangelo.vtorque.plugins.module_utils.errors import VTorqueModuleError
from jinja2 import Environment, StrictUndefined, TemplateError

DEFAULT_TEMPLATE = os.path.join(os.path.dirname(os.path.dirname(__file__)), "templates", "domain.xml.j2")


def _render(env: Environment, path: str, what: str, values: dict) -> str:
    try:
        with open(path, encoding="utf-8") as handle:
            source = handle.read()
    except OSError as exc:
        raise VTorqueModuleError(f"cannot read {what} {path}: {exc}", target=values["name"]) from exc
    try:
        return env.from_string(source).render(**values)
    except TemplateError as exc:
        raise VTorqueModuleError(f"{what} {path} failed: {exc}", target=values["name"]) from exc


def render_domain_xml(
    params: dict, template_path: str | None = None, fragment_paths: dict | None = None
) -> str:
    """Domain XML for validated vm_domain options; values are XML-escaped by autoescape.

    Each of the site's fragments is rendered first, with the same variables, into device
    elements the domain template places in <devices>. ``fragment_paths`` maps a fragment's name
    to the template file found for it on the controller (default: its ``template`` as given)."""
    path = template_path or DEFAULT_TEMPLATE
    env = Environment(
        autoescape=True,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    values = template_vars(params)
    for number, fragment in enumerate(values["fragments"]):
        source = (fragment_paths or {}).get(fragment["name"], fragment["template"])
        fragment["xml"] = _render(env, source, f"fragment {fragment['name']} template", values).strip()
        try:
            ET.fromstring(f"<devices>{fragment['xml']}</devices>")  # noqa: S314 - the site's own template
        except ET.ParseError as exc:
            raise VTorqueModuleError(
                f"fragments[{number}] ({fragment['name']}): {source} does not render device elements: {exc}",
                target=params["name"],
            ) from exc
    xml = _render(env, path, "domain template", values)
    check_rendered(values, xml)
    return xml


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
