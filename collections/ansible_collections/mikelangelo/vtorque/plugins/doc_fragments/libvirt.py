# Copyright: vTorque contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)

from __future__ import annotations


class ModuleDocFragment:
    DOCUMENTATION = r"""
options:
  uri:
    description:
      - libvirt connection URI on the managed node.
      - Transient errors (connection reset, C(cannot acquire state change lock)) are retried a few times
        on a fresh connection before the task fails.
    type: str
    default: qemu:///system
requirements:
  - libvirt-python
"""
