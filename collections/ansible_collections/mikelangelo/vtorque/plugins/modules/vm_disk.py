#!/usr/bin/python
# Copyright: vTorque contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)

from __future__ import annotations

DOCUMENTATION = r"""
module: vm_disk
short_description: qcow2 overlay on a base image, or an empty data disk
description:
  - Creates a qcow2 overlay whose backing file is a base image (never a full copy), or an empty
    qcow2 data disk of a given size; V(absent) removes it.
  - Beside each disk it writes an ownership marker C(<path>.vtorque.json) recording what it made.
    A file at O(path) without that marker was not made by this module and is never overwritten or
    removed; a link at O(path) is refused.
version_added: 0.1.0
author:
  - vTorque contributors (@mikelangelo-project)
options:
  path:
    description: Absolute path of the disk image to manage.
    type: path
    required: true
  state:
    description: Whether the disk exists.
    type: str
    default: present
    choices: [present, absent]
  backing_file:
    description: Absolute path of the base image; makes the disk a copy-on-write overlay.
    type: path
  backing_format:
    description: Format of O(backing_file).
    type: str
    default: qcow2
    choices: [qcow2, raw]
  size:
    description:
      - Virtual size in qemu-img syntax (V(10G), V(512M)). Required without O(backing_file);
        with it, grows the overlay beyond the base image's size.
    type: str
  force:
    description: Recreate a disk this module made earlier with other options (its data is lost).
    type: bool
    default: false
requirements:
  - qemu-img on the managed node
attributes:
  check_mode:
    support: full
    description: Reports whether it would create or remove the disk.
  diff_mode:
    support: none
    description: Nothing to compare.
  platform:
    support: full
    description: Runs on the node that hosts the domains.
    platforms: posix
"""

EXAMPLES = r"""
- name: Overlay of the catalog image for one VM
  mikelangelo.vtorque.vm_disk:
    path: /var/lib/vtorque/jobs/42.head/vt-42.head-node1-0.qcow2
    backing_file: /var/lib/vtorque/images/debian-12.qcow2

- name: Empty 20 GiB scratch disk
  mikelangelo.vtorque.vm_disk:
    path: /var/lib/vtorque/jobs/42.head/scratch.qcow2
    size: 20G

- name: Remove the overlay
  mikelangelo.vtorque.vm_disk:
    path: /var/lib/vtorque/jobs/42.head/vt-42.head-node1-0.qcow2
    state: absent
"""

RETURN = r"""
path:
  description: The disk image path.
  returned: always
  type: str
  sample: /var/lib/vtorque/jobs/42.head/vt-42.head-node1-0.qcow2
backing_file:
  description: Backing file of the overlay (null for a data disk).
  returned: when state is present
  type: str
  sample: /var/lib/vtorque/images/debian-12.qcow2
size:
  description: Requested virtual size, if any.
  returned: when state is present
  type: str
  sample: 20G
reason:
  description: Short failure class (V(invalid), V(refused), V(qemu-img)).
  returned: failure
  type: str
  sample: refused
"""

from ansible.module_utils.basic import AnsibleModule  # noqa: E402
from ansible_collections.mikelangelo.vtorque.plugins.module_utils.common import run_module  # noqa: E402
from ansible_collections.mikelangelo.vtorque.plugins.module_utils.disk import ensure_disk  # noqa: E402
from ansible_collections.mikelangelo.vtorque.plugins.module_utils.errors import VTorqueModuleError  # noqa: E402


def qemu_img_runner(module):
    binary = module.get_bin_path("qemu-img", required=True)

    def run(argv):
        rc, out, err = module.run_command([binary] + argv)
        if rc != 0:
            raise VTorqueModuleError(
                f"qemu-img {' '.join(argv)} failed (rc {rc}): {(err or out).strip()}",
                target=module.params["path"],
                reason="qemu-img",
            )

    return run


def main():
    module = AnsibleModule(
        argument_spec=dict(
            path=dict(type="path", required=True),
            state=dict(type="str", default="present", choices=["present", "absent"]),
            backing_file=dict(type="path"),
            backing_format=dict(type="str", default="qcow2", choices=["qcow2", "raw"]),
            size=dict(type="str"),
            force=dict(type="bool", default=False),
        ),
        supports_check_mode=True,
    )
    run_module(module, lambda m: ensure_disk(m.params, m.check_mode, qemu_img_runner(m)), needs_libvirt=False)


if __name__ == "__main__":
    main()
