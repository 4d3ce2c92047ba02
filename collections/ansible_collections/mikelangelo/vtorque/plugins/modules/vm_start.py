#!/usr/bin/python
# Copyright: vTorque contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)

from __future__ import annotations

DOCUMENTATION = r"""
module: vm_start
short_description: Every VM of a job on one node, from overlay to running domain, in one call
description:
  - The job start of one node in a single module run, what the job_start playbook calls once per
    node. It makes the job directory (and the RAM disk), then for each VM its qcow2 overlay on
    O(image), its data disk and its NoCloud seed, then defines and starts every domain and waits
    once until they all run.
  - Each step is the one M(mikelangelo.vtorque.vm_disk), M(mikelangelo.vtorque.vm_seed) and
    M(mikelangelo.vtorque.vm_domain) perform, with their checks (ownership markers, deterministic
    seeds, semantic comparison of definitions, huge page check), so a second identical run reports
    no change. Those modules stay the tools for changing one piece.
  - With O(image.start=snapshot) each VM starts from a saved template of the image instead of a
    fresh boot, its identity made new before it can be reached (see O(image.start)); a VM that
    cannot start so boots afresh and its result says why, the job never fails for it.
  - The action plugin renders each VM's O(vms[].domain) through the domain template on the
    controller, as for M(mikelangelo.vtorque.vm_domain), and keeps the module's arguments out of the
    node's syslog; the result names the seeds (which hold private host keys) only.
version_added: 0.1.0
author:
  - vTorque contributors (@mikelangelo-project)
extends_documentation_fragment:
  - mikelangelo.vtorque.libvirt
options:
  job_dir:
    description:
      - The job's directory; it and its parent are made mode C(0711), owned by root.
    type: path
    required: true
  ramdisk:
    description:
      - A tmpfs the VMs' disks live in (C(-vm fs_type=ramdisk)); made C(0700) and mounted unless it
        is a mount point already.
    type: dict
    suboptions:
      path:
        description: Mount point.
        type: path
        required: true
      size_mib:
        description: Size of the tmpfs in MiB.
        type: int
        required: true
  image:
    description: The base image every overlay is backed by.
    type: dict
    required: true
    suboptions:
      path:
        description: Absolute path of the image on the node.
        type: path
        required: true
      format:
        description: Format of the image.
        type: str
        default: qcow2
        choices: [qcow2, raw]
      start:
        description:
          - V(boot) boots every VM afresh.
          - V(snapshot) restores each VM from a template of the image, made on first use on this
            node (one per image file, VM shape, libvirt and QEMU version, kept under
            O(image.snapshot_dir); a changed image gets a new one). A template is the image booted
            with C(vtorque.template=1) on its kernel command line, where its guest must start its
            agent and nothing that identifies a VM, and saved. After the restore (under the VM's own
            name, UUID and a new VM generation ID) the VM gets fresh entropy and the host's time
            through its agent, its seed disk and NICs hot-plugged with their links down, then
            runs C(/sbin/vtorque-reidentify) (new host keys, machine-id, hostname, user, key and
            addresses from the seed, then its SSH server), and only then the links go up.
          - Needs direct kernel boot and a seed; VMs with huge pages, PCI devices or shared
            memory boot afresh.
        type: str
        default: boot
        choices: [boot, snapshot]
      snapshot_dir:
        description:
          - Where the templates are kept (made C(0700)); each template's state file is C(0600).
          - Default C(/var/lib/vtorque/snapshots).
        type: path
  domain:
    description:
      - Options of M(mikelangelo.vtorque.vm_domain) every VM shares (V(virt_type), V(boot), V(template),
        V(hugepages), V(shmem), V(fragments), V(extra_devices), ...); a VM's own O(vms[].domain) wins.
    type: dict
    default: {}
  vms:
    description: The VMs of this node, started in this order.
    type: list
    elements: dict
    default: []
    suboptions:
      name:
        description: Domain name.
        type: str
        required: true
      node:
        description: The node the VM belongs to (informational; the playbook selects this node's VMs).
        type: str
      overlay:
        description: Absolute path of the VM's copy-on-write overlay on O(image).
        type: path
        required: true
      data_disk:
        description: An empty qcow2 data disk.
        type: dict
        suboptions:
          path:
            description: Absolute path of the disk.
            type: path
            required: true
          size:
            description: Virtual size in qemu-img syntax (V(10G), V(512M)).
            type: str
            required: true
      domain:
        description:
          - The VM's own options of M(mikelangelo.vtorque.vm_domain) (V(job), V(vcpus), V(memory_mib),
            V(disks), V(seed), V(nics), V(serial_log), V(cpu_pinning), V(iothreads), V(emulator_cpuset),
            V(hostdevs), V(addresses), ...), validated like that module's.
        type: dict
        default: {}
      xml:
        description: The complete domain definition. The action plugin fills it from O(vms[].domain).
        type: str
  seeds:
    description:
      - NoCloud seeds, each for the VM of the same name; they hold the VMs' private host keys, which
        the action plugin keeps out of the task result.
    type: list
    elements: dict
    default: []
    suboptions:
      name:
        description: Name of the VM the seed is for.
        type: str
        required: true
      node:
        description: The node the VM belongs to (informational).
        type: str
      path:
        description: Absolute path of the seed image.
        type: path
        required: true
      meta_data:
        description: NoCloud meta-data, as for M(mikelangelo.vtorque.vm_seed).
        type: dict
        required: true
      user_data:
        description: cloud-config user-data.
        type: dict
        default: {}
      network_config:
        description: Network configuration version 2.
        type: dict
  wait:
    description: Wait until every domain runs.
    type: bool
    default: true
  wait_timeout:
    description: Seconds to wait for all the domains to run.
    type: int
    default: 120
attributes:
  check_mode:
    support: full
    description: Reports what it would create, define or start; never waits.
  diff_mode:
    support: full
    description: Before and after inactive XML of each domain, and the checksum of each changed seed.
  platform:
    support: full
    description: Runs on the node that hosts the domains.
    platforms: posix
  action:
    support: full
    description: The action plugin renders the domain template on the controller.
requirements:
  - qemu-img on the managed node
notes:
  - To change or remove one piece of a job later, use M(mikelangelo.vtorque.vm_disk),
    M(mikelangelo.vtorque.vm_seed), M(mikelangelo.vtorque.vm_domain) or M(mikelangelo.vtorque.vm_sweep).
"""

EXAMPLES = r"""
- name: Start the two VMs of job 42.head on node1
  mikelangelo.vtorque.vm_start:
    job_dir: /var/lib/vtorque/jobs/42.head
    image: {path: /var/lib/vtorque/images/debian-12.qcow2}
    domain: {virt_type: qemu}
    vms:
      - name: vt-42.head-node1-0
        overlay: /var/lib/vtorque/jobs/42.head/vt-42.head-node1-0.qcow2
        domain:
          job: {id: "42.head", node: node1, index: 0}
          memory_mib: 2048
          disks: [{path: /var/lib/vtorque/jobs/42.head/vt-42.head-node1-0.qcow2}]
          seed: /var/lib/vtorque/jobs/42.head/vt-42.head-node1-0-seed.iso
          nics: [{mode: bridge, source: br0}]
      - name: vt-42.head-node1-1
        overlay: /var/lib/vtorque/jobs/42.head/vt-42.head-node1-1.qcow2
        data_disk: {path: /var/lib/vtorque/jobs/42.head/vt-42.head-node1-1-data.qcow2, size: 20G}
        domain:
          job: {id: "42.head", node: node1, index: 1}
          memory_mib: 2048
          disks:
            - path: /var/lib/vtorque/jobs/42.head/vt-42.head-node1-1.qcow2
            - path: /var/lib/vtorque/jobs/42.head/vt-42.head-node1-1-data.qcow2
          nics: [{mode: bridge, source: br0}]
    seeds:
      - name: vt-42.head-node1-0
        path: /var/lib/vtorque/jobs/42.head/vt-42.head-node1-0-seed.iso
        meta_data: {instance-id: vt-42.head-node1-0, local-hostname: node1-vm0}
"""

RETURN = r"""
vms:
  description: Each VM's domain after the task, in the order of O(vms); the state is predicted in check mode.
  returned: always
  type: list
  elements: dict
  sample:
    - name: vt-42.head-node1-0
      state: running
      uuid: 0c1e5c3e-4f1c-5d5e-9a63-6b8f2b9a1c11
      macs: ["52:54:00:fd:e7:1e"]
      start: snapshot
      template: 3f1d0c9a6b2e4d7f8a9b0c1d2e3f4a5b
  contains:
    start:
      description: How the VM started, V(snapshot) or V(boot) (also a VM that ran already).
      type: str
    template:
      description: The template a VM started from.
      type: str
      returned: when O(image.start=snapshot) served it
    note:
      description: Why a VM asked to start from a snapshot booted afresh.
      type: str
      returned: when a snapshot start was asked and not done
templates:
  description: The templates the VMs of O(image.start=snapshot) started from, and whether they were built now.
  returned: when O(image.start=snapshot)
  type: list
  elements: dict
  sample:
    - key: 3f1d0c9a6b2e4d7f8a9b0c1d2e3f4a5b
      dir: /var/lib/vtorque/snapshots/3f1d0c9a6b2e4d7f8a9b0c1d2e3f4a5b
      built: true
      seconds: 9.3
reason:
  description:
    - Short failure class (V(invalid), V(libvirt), V(timeout), V(refused), V(unavailable), V(qemu-img)).
  returned: failure
  type: str
  sample: timeout
target:
  description: The VM, disk or directory the failure is about.
  returned: failure
  type: str
  sample: vt-42.head-node1-0
"""

import copy  # noqa: E402

from ansible.module_utils.basic import AnsibleModule  # noqa: E402
from ansible_collections.mikelangelo.vtorque.plugins.module_utils.common import run_module  # noqa: E402
from ansible_collections.mikelangelo.vtorque.plugins.module_utils.errors import VTorqueModuleError  # noqa: E402
from ansible_collections.mikelangelo.vtorque.plugins.module_utils.start import (  # noqa: E402
    START_ARGSPEC,
    ensure_started,
)


def command_runner(module, tool):
    """``run(argv)``: ``tool`` with argv (argv alone when ``tool`` is None); raises on failure."""
    binary = module.get_bin_path(tool, required=True) if tool else None

    def run(argv):
        argv = [binary, *argv] if binary else argv
        rc, out, err = module.run_command(argv)
        if rc != 0:
            raise VTorqueModuleError(
                f"{' '.join(argv)} failed (rc {rc}): {(err or out).strip()}",
                target=argv[-1],
                reason=tool or argv[0],
            )

    return run


def main():
    module = AnsibleModule(argument_spec=copy.deepcopy(START_ARGSPEC), supports_check_mode=True)
    # The seeds hold private host keys: the result names them only.
    seeds = [dict(name=seed["name"], path=seed["path"]) for seed in module.params["seeds"]]
    run_module(
        module,
        lambda m: ensure_started(
            m.params, m.check_mode, m._diff, command_runner(m, "qemu-img"), command_runner(m, None)
        ),
        invocation=dict(module.params, seeds=seeds),
    )


if __name__ == "__main__":
    main()
