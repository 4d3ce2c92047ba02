#!/usr/bin/python
# Copyright: vTorque contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)

from __future__ import annotations

DOCUMENTATION = r"""
module: vm_seed
short_description: NoCloud seed image (cidata ISO) from structured data
description:
  - Writes an ISO9660 image with volume id C(cidata) holding C(meta-data), C(user-data) and, when
    given, C(network-config) (version 2), for cloud-init's NoCloud datasource.
  - The files are JSON (valid YAML) with sorted keys and the image has fixed timestamps, so the same
    input always gives the same bytes and a second run reports no change.
  - Needs no tool on the managed node (the image is written by the module itself).
version_added: 0.1.0
author:
  - vTorque contributors (@mikelangelo-project)
options:
  path:
    description: Absolute path of the seed image. A link or non-regular file there is refused.
    type: path
    required: true
  state:
    description: Whether the seed image exists.
    type: str
    default: present
    choices: [present, absent]
  meta_data:
    description: NoCloud meta-data (C(instance-id), C(local-hostname)). Required with V(present).
    type: dict
  user_data:
    description: cloud-config user-data (written after a C(#cloud-config) line).
    type: dict
    default: {}
  network_config:
    description: Network configuration version 2; omitted means no C(network-config) file.
    type: dict
attributes:
  check_mode:
    support: full
    description: Reports whether the image bytes would change.
  diff_mode:
    support: full
    description: The rendered files as after; the old image's checksum as before.
  platform:
    support: full
    description: Runs on the node that hosts the domains.
    platforms: posix
"""

EXAMPLES = r"""
- name: Seed for one VM
  mikelangelo.vtorque.vm_seed:
    path: /var/lib/vtorque/jobs/42.head/vt-42.head-node1-0-seed.iso
    meta_data:
      instance-id: 0c1e5c3e-4f1c-5d5e-9a63-6b8f2b9a1c11
      local-hostname: vm-node1-0
    user_data:
      users:
        - name: alice
          uid: "1234"
          ssh_authorized_keys: ["ssh-ed25519 AAAA... alice"]
    network_config:
      version: 2
      ethernets:
        eth0:
          match: {macaddress: "52:54:00:fd:e7:1e"}
          addresses: [10.0.2.41/24]
"""

RETURN = r"""
path:
  description: The seed image path.
  returned: always
  type: str
  sample: /var/lib/vtorque/jobs/42.head/vt-42.head-node1-0-seed.iso
files:
  description: Files in the image.
  returned: when state is present
  type: list
  elements: str
  sample: [meta-data, network-config, user-data]
sha256:
  description: SHA-256 of the image.
  returned: when state is present
  type: str
  sample: 3a7bd3e2360a3d29eea436fcfb7e44c735d117c42d1c1835420b6b9942dd4f1b
"""

from ansible.module_utils.basic import AnsibleModule  # noqa: E402
from ansible_collections.mikelangelo.vtorque.plugins.module_utils.common import run_module  # noqa: E402
from ansible_collections.mikelangelo.vtorque.plugins.module_utils.seed import ensure_seed  # noqa: E402


def main():
    module = AnsibleModule(
        argument_spec=dict(
            path=dict(type="path", required=True),
            state=dict(type="str", default="present", choices=["present", "absent"]),
            meta_data=dict(type="dict"),
            user_data=dict(type="dict", default={}),
            network_config=dict(type="dict"),
        ),
        required_if=[("state", "present", ["meta_data"])],
        supports_check_mode=True,
    )
    run_module(module, lambda m: ensure_seed(m.params, m.check_mode, m._diff), needs_libvirt=False)


if __name__ == "__main__":
    main()
