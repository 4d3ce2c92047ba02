# Copyright: vTorque contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""What every module's main() shares: the libvirt check and the one place errors become fail_json."""

from __future__ import annotations

from ansible.module_utils.basic import missing_required_lib
from ansible_collections.mikelangelo.vtorque.plugins.module_utils import naming
from ansible_collections.mikelangelo.vtorque.plugins.module_utils.connection import (
    HAS_LIBVIRT,
    LIBVIRT_IMPORT_ERROR,
)
from ansible_collections.mikelangelo.vtorque.plugins.module_utils.errors import VTorqueModuleError

URI_ARGSPEC = dict(uri=dict(type="str", default=naming.DEFAULT_URI))  # every module's libvirt URI


def run_module(module, runner, needs_libvirt: bool = True, invocation: dict | None = None) -> None:
    """exit_json with ``runner(module)``'s result, or fail_json(msg, reason, target) on our errors.
    ``invocation``: the arguments the result reports instead of all of them (a module whose
    arguments hold secrets that are not single values no_log could mask)."""
    shown = {} if invocation is None else dict(invocation=dict(module_args=invocation))
    if needs_libvirt and not HAS_LIBVIRT:
        module.fail_json(msg=missing_required_lib("libvirt-python"), exception=LIBVIRT_IMPORT_ERROR, **shown)
    try:
        result = runner(module)
    except VTorqueModuleError as exc:
        module.fail_json(msg=exc.msg, reason=exc.reason, target=exc.target, **shown)
    module.exit_json(**result, **shown)
