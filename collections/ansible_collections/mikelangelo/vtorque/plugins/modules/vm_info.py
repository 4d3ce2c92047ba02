#!/usr/bin/python
# Copyright: vTorque contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)

from __future__ import annotations

DOCUMENTATION = r"""
module: vm_info
short_description: Read-only facts about vTorque domains
description:
  - Lists the domains with the given names and/or of a job (name prefix and C(<vtorque:job>) metadata tag),
    with state, MACs, disks and addresses from the plan (metadata), the DHCP lease and the guest agent.
  - Never changes anything.
version_added: 0.1.0
author:
  - vTorque contributors (@mikelangelo-project)
extends_documentation_fragment:
  - mikelangelo.vtorque.libvirt
options:
  name:
    description: Domain names to describe.
    type: list
    elements: str
    default: []
  job_id:
    description: Describe every domain of this Torque job.
    type: str
attributes:
  check_mode:
    support: full
    description: Read-only; runs the same in check mode.
  diff_mode:
    support: none
    description: Nothing to compare.
  platform:
    support: full
    description: Runs on the node that hosts the domains.
    platforms: posix
"""

EXAMPLES = r"""
- name: Domains of a job
  mikelangelo.vtorque.vm_info:
    job_id: 42.head
  register: job_vms

- name: One domain by name
  mikelangelo.vtorque.vm_info:
    name: [vt-42.head-node1-0]
"""

RETURN = r"""
domains:
  description: Matching domains, sorted by name; names that do not exist are left out.
  returned: always
  type: list
  elements: dict
  sample:
    - name: vt-42.head-node1-0
      uuid: 0c1e5c3e-4f1c-5d5e-9a63-6b8f2b9a1c11
      state: running
      persistent: true
      job: {id: 42.head, node: node1, index: "0"}
      macs: ["52:54:00:fd:e7:1e"]
      disks: [/var/lib/vtorque/jobs/42.head/vt-42.head-node1-0.qcow2]
      addresses: [{source: plan, address: 10.0.2.41}]
"""

from ansible.module_utils.basic import AnsibleModule  # noqa: E402
from ansible_collections.mikelangelo.vtorque.plugins.module_utils.common import URI_ARGSPEC, run_module  # noqa: E402
from ansible_collections.mikelangelo.vtorque.plugins.module_utils.connection import Hypervisor  # noqa: E402
from ansible_collections.mikelangelo.vtorque.plugins.module_utils.inventory import describe  # noqa: E402


def info(module):
    hv = Hypervisor(module.params["uri"])
    try:
        return dict(changed=False, domains=describe(hv, module.params["name"], module.params["job_id"]))
    finally:
        hv.close()


def main():
    module = AnsibleModule(
        argument_spec=dict(
            **URI_ARGSPEC,
            name=dict(type="list", elements="str", default=[]),
            job_id=dict(type="str"),
        ),
        required_one_of=[("name", "job_id")],
        supports_check_mode=True,
    )
    run_module(module, info)


if __name__ == "__main__":
    main()
