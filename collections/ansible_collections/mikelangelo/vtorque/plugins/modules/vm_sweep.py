#!/usr/bin/python
# Copyright: vTorque contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)

from __future__ import annotations

DOCUMENTATION = r"""
module: vm_sweep
short_description: Remove every domain and file of a job, or of jobs that are gone
description:
  - With O(job_id), destroys and undefines every domain of that job (name prefix C(vt-<job>-) and a
    C(<vtorque:job id=...>) metadata tag naming exactly that job) and deletes the job's directory
    C(<state_dir>/jobs/<job>/) with its overlays, seeds and logs, and its shared memory file
    C(/dev/shm/vt-<job>-unclot) (libvirt leaves it behind).
  - With O(live_jobs), does the same for every vTorque domain and job directory whose job is not in the list,
    and removes what a snapshot template's build killed half-way left (its C(vtorque-template-*) guest and
    C(<state_dir>/snapshots/*.build) directory) unless a build is running.
  - Domains without the vTorque metadata tag are never touched. Running the sweep again changes nothing.
version_added: 0.1.0
author:
  - vTorque contributors (@mikelangelo-project)
extends_documentation_fragment:
  - mikelangelo.vtorque.libvirt
options:
  job_id:
    description: The Torque job id whose leftovers are removed.
    type: str
  live_jobs:
    description: Job ids that still run on this node; leftovers of every other job are removed.
    type: list
    elements: str
  state_dir:
    description: vTorque state directory on the node.
    type: path
    default: /var/lib/vtorque
  shutdown_timeout:
    description:
      - Seconds a running guest gets to power off after an ACPI request before it is destroyed.
      - V(0) destroys at once.
    type: int
    default: 0
attributes:
  check_mode:
    support: full
    description: Lists what it would remove.
  diff_mode:
    support: none
    description: Nothing to compare.
  platform:
    support: full
    description: Runs on the node that hosts the domains.
    platforms: posix
"""

EXAMPLES = r"""
- name: Remove what a crashed job left behind
  mikelangelo.vtorque.vm_sweep:
    job_id: 42.head

- name: Remove leftovers of every job that is no longer running here
  mikelangelo.vtorque.vm_sweep:
    live_jobs: [43.head, 44.head]
"""

RETURN = r"""
domains:
  description: Domains that were (or in check mode would be) destroyed and undefined.
  returned: always
  type: list
  elements: str
  sample: [vt-42.head-node1-0]
directories:
  description: Job directories that were (or would be) deleted.
  returned: always
  type: list
  elements: str
  sample: [/var/lib/vtorque/jobs/42.head]
shared_memory:
  description: Shared memory files C(/dev/shm/vt-<job>-unclot) that were (or would be) deleted.
  returned: always
  type: list
  elements: str
  sample: [/dev/shm/vt-42.head-unclot]
template_builds:
  description: Guests and directories of template builds killed half-way, removed (or that would be).
  returned: always
  type: list
  elements: str
  sample: [vtorque-template-3f1d0c9a6b2e4d7f, /var/lib/vtorque/snapshots/3f1d0c9a6b2e4d7f.build]
"""

from ansible.module_utils.basic import AnsibleModule  # noqa: E402
from ansible_collections.mikelangelo.vtorque.plugins.module_utils.common import URI_ARGSPEC, run_module  # noqa: E402
from ansible_collections.mikelangelo.vtorque.plugins.module_utils.naming import DEFAULT_STATE_DIR  # noqa: E402
from ansible_collections.mikelangelo.vtorque.plugins.module_utils.sweep import sweep  # noqa: E402


def main():
    module = AnsibleModule(
        argument_spec=dict(
            **URI_ARGSPEC,
            job_id=dict(type="str"),
            live_jobs=dict(type="list", elements="str"),
            state_dir=dict(type="path", default=DEFAULT_STATE_DIR),
            shutdown_timeout=dict(type="int", default=0),
        ),
        required_one_of=[("job_id", "live_jobs")],
        mutually_exclusive=[("job_id", "live_jobs")],
        supports_check_mode=True,
    )
    run_module(module, lambda m: sweep(m.params, m.check_mode))


if __name__ == "__main__":
    main()
