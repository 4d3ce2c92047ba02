# Copyright: vTorque contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""Controller-side rendering of a VM's domain XML, shared by the vm_domain and vm_start action
plugins and by the start hook's in-process start of its own machine's VMs
(vtorque.runtime.local_start), which must not pay for importing Ansible's plugin machinery.

Jinja2 and Ansible's argument-spec validator only: no ActionBase here.
"""

from __future__ import annotations

import os.path
import xml.etree.ElementTree as ET

from ansible.module_utils.common.arg_spec import ArgumentSpecValidator
from ansible_collections.mikelangelo.vtorque.plugins.module_utils.domain_spec import (
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


def domain_params(uri: str, shared: dict, vm: dict) -> dict:
    """One VM's validated vm_domain options: ``shared`` under the VM's own, state running."""
    options = dict(shared, **vm["domain"], name=vm["name"], uri=uri, state="running")
    checked = ArgumentSpecValidator(DOMAIN_ARGSPEC).validate(options)
    if checked.error_messages:
        raise VTorqueModuleError(f"VM {vm['name']}: " + "; ".join(checked.error_messages), target=vm["name"])
    return checked.validated_parameters
