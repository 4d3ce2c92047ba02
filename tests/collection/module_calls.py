"""Call the collection's modules in-process, the way Ansible would run them on a node.

The module code runs unchanged (AnsibleModule parses the arguments, exit_json and fail_json end
the call); only vm_domain's template rendering, which its action plugin does on the controller,
is done here by the same function the action plugin calls.
"""

import contextlib
import importlib
import io
import json

import pytest
from ansible.module_utils.common.arg_spec import ArgumentSpecValidator
from ansible.module_utils.testing import patch_module_args
from ansible_collections.mikelangelo.vtorque.plugins.action.vm_domain import render_domain_xml
from ansible_collections.mikelangelo.vtorque.plugins.module_utils.domain_spec import DOMAIN_ARGSPEC

TEST_URI = "test:///default"


def run_module(name, args, check=False, diff=True):
    """Result dict of one module call; ``failed`` is set when the module called fail_json."""
    module = importlib.import_module("ansible_collections.mikelangelo.vtorque.plugins.modules." + name)
    out = io.StringIO()
    call_args = dict(args, _ansible_check_mode=check, _ansible_diff=diff)
    with patch_module_args(call_args), contextlib.redirect_stdout(out):
        with pytest.raises(SystemExit):
            module.main()
    return json.loads(out.getvalue())


def domain_args(**options):
    """vm_domain arguments as the action plugin passes them: the options plus the rendered xml."""
    options.setdefault("uri", TEST_URI)
    options.setdefault("virt_type", "qemu")
    result = ArgumentSpecValidator(DOMAIN_ARGSPEC).validate(options)
    assert not result.error_messages, result.error_messages
    if result.validated_parameters["state"] in ("present", "running"):
        options["xml"] = render_domain_xml(result.validated_parameters, options.get("template"))
    return options


HOST_KEY = "-----BEGIN OPENSSH PRIVATE KEY-----\nnot-a-real-key\n-----END OPENSSH PRIVATE KEY-----\n"


def start_args(**options):
    """vm_start arguments as its action plugin passes them: each VM's xml rendered."""
    from ansible_collections.mikelangelo.vtorque.plugins.action.vm_start import domain_params

    options.setdefault("uri", TEST_URI)
    options["vms"] = [
        dict(vm, xml=render_domain_xml(domain_params(options["uri"], options.get("domain", {}), vm)))
        for vm in options["vms"]
    ]
    return options
