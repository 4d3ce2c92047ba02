#!/usr/bin/python
# Copyright: vTorque contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)

from __future__ import annotations

DOCUMENTATION = r"""
module: vm_domain
short_description: Desired state of a libvirt domain built from typed options
description:
  - Defines, starts, shuts down or removes one libvirt domain.
  - The typed options are rendered on the controller through a Jinja2 domain template (the
    collection's default or the site's own, see O(template)); the module compares the result
    with the domain's inactive definition semantically and redefines only when they differ, so a
    second identical run reports no change.
  - V(running) returns once the domain runs; V(shutdown) returns once it is off, or fails at
    O(wait_timeout) unless O(force) destroys it; V(absent) ends with the domain undefined.
version_added: 0.1.0
author:
  - vTorque contributors (@mikelangelo-project)
extends_documentation_fragment:
  - mikelangelo.vtorque.libvirt
options:
  name:
    description: Domain name (vTorque derives it from job id, node and VM index).
    type: str
    required: true
  state:
    description:
      - V(present) defines the domain (off if it was not running).
      - V(running) defines and starts it and waits until it runs.
      - V(shutdown) asks the guest to power off (ACPI power button by default) and waits until it is off.
      - V(absent) shuts the guest down (bounded by O(wait_timeout)), destroys and undefines it together
        with its managed save image, snapshot and checkpoint metadata and NVRAM.
    type: str
    default: present
    choices: [present, running, shutdown, absent]
  uuid:
    description: Domain UUID. Derived from O(job) when omitted; one of the two is required to define.
    type: str
  job:
    description:
      - The vTorque job the domain belongs to; stored as C(<vtorque:job>) in the domain metadata so
        M(mikelangelo.vtorque.vm_sweep) finds it, and used to derive the UUID and NIC MACs.
    type: dict
    suboptions:
      id:
        description: Torque job id.
        type: str
        required: true
      node:
        description: Node name.
        type: str
        required: true
      index:
        description: Index of the VM on the node.
        type: int
        required: true
  virt_type:
    description: Domain type; V(kvm) in production, V(qemu) (TCG) where KVM is unavailable.
    type: str
    default: kvm
    choices: [kvm, qemu]
  arch:
    description: Guest architecture.
    type: str
    default: x86_64
  machine:
    description: QEMU machine type.
    type: str
    default: pc
  vcpus:
    description: Number of virtual CPUs.
    type: int
    default: 1
  memory_mib:
    description: Guest memory in MiB.
    type: int
    default: 1024
  cpu_mode:
    description: CPU mode; omitted means the hypervisor default.
    type: str
    choices: [host-passthrough, host-model, custom]
  cpu_model:
    description: CPU model name when O(cpu_mode=custom).
    type: str
  usb_controller:
    description:
      - Give the guest libvirt's default USB controller (PIIX3 UHCI on C(pc) machines).
      - Off by default, so the domain has none (C(model='none')); vTorque's guests use no USB
        device, and under TCG the emulated controller cost a tiny guest about 1 s of its boot.
    type: bool
    default: false
  cpu_pinning:
    description: Pin virtual CPUs to host CPUs.
    type: list
    elements: dict
    default: []
    suboptions:
      vcpu:
        description: Virtual CPU number.
        type: int
        required: true
      cpuset:
        description: Host CPUs, libvirt syntax (V(2), V(2-3), V(0,4)).
        type: str
        required: true
  boot:
    description: Direct kernel boot.
    type: dict
    suboptions:
      kernel:
        description: Absolute path of the kernel on the node.
        type: path
        required: true
      initrd:
        description: Absolute path of the initrd on the node.
        type: path
      cmdline:
        description: Kernel command line.
        type: str
        default: ""
  disks:
    description: Disks in order; the first is the boot disk.
    type: list
    elements: dict
    default: []
    suboptions:
      path:
        description: Absolute path of the image file.
        type: path
        required: true
      format:
        description: Image format.
        type: str
        default: qcow2
        choices: [qcow2, raw]
      target:
        description: Guest device name; the next free C(vdX) when omitted.
        type: str
      readonly:
        description: Attach read-only.
        type: bool
        default: false
      cache:
        description: QEMU cache mode.
        type: str
        choices: [default, none, writeback, writethrough, unsafe]
  seed:
    description: NoCloud seed image, attached after the disks as a read-only raw virtio disk.
    type: path
  nics:
    description: Network interfaces. Without O(nics[].mac) the MAC is derived from O(job).
    type: list
    elements: dict
    default: []
    suboptions:
      mode:
        description:
          - V(network) (a libvirt network by name), V(bridge) (a host bridge by name), or V(user)
            (QEMU user networking with a TCP forward from 127.0.0.1:O(nics[].host_port) to the guest).
        type: str
        required: true
        choices: [network, bridge, user]
      source:
        description: Network or bridge name (modes V(network) and V(bridge)).
        type: str
      mac:
        description: Fixed MAC address.
        type: str
      model:
        description: NIC model.
        type: str
        default: virtio
      host_port:
        description: Host port on 127.0.0.1 forwarded to the guest (mode V(user)).
        type: int
      guest_address:
        description: Guest address the forward goes to (mode V(user); inside 10.0.2.0/24).
        type: str
        default: 10.0.2.15
      guest_port:
        description: Guest TCP port the forward goes to (mode V(user)).
        type: int
        default: 22
  serial_log:
    description:
      - Absolute path of a file that receives the first serial port's output, appended to
        across restarts. The port is a pty, so root can also attach to it (C(virsh console)).
    type: path
  guest_agent:
    description: Add the virtio channel for the QEMU guest agent.
    type: bool
    default: true
  extra_devices:
    description:
      - XML elements added to C(<devices>) as they are (vTorque's 9p shares). For a site's own devices
        prefer O(fragments), which are templates and are checked against an override.
    type: list
    elements: str
    default: []
  iothreads:
    description:
      - Dedicated I/O threads (C(<iothreads>)); the writable disks are spread over them
        round-robin (C(<driver iothread=N>)).
    type: dict
    suboptions:
      count:
        description: Number of I/O threads (1-64).
        type: int
        required: true
      cpuset:
        description: Host CPUs every I/O thread is pinned to (C(<iothreadpin>)), libvirt syntax.
        type: str
  emulator_cpuset:
    description: Host CPUs QEMU's emulator threads are pinned to (C(<emulatorpin>)), libvirt syntax.
    type: str
  hugepages:
    description:
      - Back the guest memory with huge pages (C(<memoryBacking><hugepages/>)).
      - V(running) refuses (reason V(unavailable)) before defining anything when no huge page pool
        of the node has enough free pages for the guest memory (read from C(/sys/kernel/mm/hugepages)).
    type: bool
    default: false
  shmem:
    description:
      - Shared memory regions (C(<shmem>), model C(ivshmem-plain)), each backed by C(/dev/shm/<name>) on
        the node; domains that name the same region share it.
    type: list
    elements: dict
    default: []
    suboptions:
      name:
        description: Region name (letters, digits and C(. _ -)); the file in C(/dev/shm).
        type: str
        required: true
      size_mib:
        description: Size in MiB, a power of two (it is a PCI BAR).
        type: int
        required: true
  hostdevs:
    description:
      - Host PCI devices passed through with VFIO (C(<hostdev mode=subsystem type=pci managed=yes>));
        libvirt detaches each from its host driver at start and gives it back at the end.
    type: list
    elements: dict
    default: []
    suboptions:
      address:
        description: PCI address on the node, C(DDDD:BB:SS.F).
        type: str
        required: true
  fragments:
    description:
      - The site's own device fragments, in order. Each is a Jinja2 template on the controller (searched
        like O(template)), rendered with the same variables as the domain template into device
        elements that go into C(<devices>).
    type: list
    elements: dict
    default: []
    suboptions:
      name:
        description: Fragment name (lower-case letters, digits, C(_)).
        type: str
        required: true
      template:
        description: The fragment's Jinja2 template.
        type: path
        required: true
  addresses:
    description:
      - The plan's static guest addresses, kept in the job metadata for M(mikelangelo.vtorque.vm_info).
    type: list
    elements: str
    default: []
  template:
    description:
      - Jinja2 domain template on the controller (searched like the C(template) module's src).
        Defaults to the collection's C(plugins/templates/domain.xml.j2). Values are XML-escaped.
      - An override must render every device feature it is given (O(iothreads), O(emulator_cpuset),
        O(hugepages), O(shmem), O(hostdevs), O(fragments)); the task fails when the rendered
        definition leaves one out.
    type: path
  xml:
    description:
      - The complete domain definition. The action plugin fills it from the typed options;
        set it yourself only to bypass the template.
    type: str
  wait:
    description: With V(running), wait until the domain runs.
    type: bool
    default: true
  wait_timeout:
    description: Seconds to wait for the domain to run, or to power off after the shutdown request.
    type: int
    default: 120
  force:
    description: With V(shutdown), destroy the domain when it is still on after O(wait_timeout).
    type: bool
    default: false
  shutdown_mode:
    description: How to ask the guest to power off (V(absent) and V(shutdown)).
    type: str
    default: acpi
    choices: [acpi, agent]
attributes:
  check_mode:
    support: full
    description: Reports the change it would make; never waits.
  diff_mode:
    support: full
    description: Before and after inactive domain XML.
  platform:
    support: full
    description: Runs on the node that hosts the domains.
    platforms: posix
  action:
    support: full
    description: The action plugin renders the domain template on the controller.
notes:
  - Comparison is semantic; everything the rendered XML states must be in the stored definition and
    managed device lists may not have extra entries, while defaults libvirt adds are ignored.
"""

EXAMPLES = r"""
- name: Boot a job VM from a qcow2 overlay with its seed
  mikelangelo.vtorque.vm_domain:
    name: vt-42.head-node1-0
    state: running
    job: {id: "42.head", node: node1, index: 0}
    virt_type: qemu
    vcpus: 2
    memory_mib: 2048
    disks:
      - path: /var/lib/vtorque/jobs/42.head/vt-42.head-node1-0.qcow2
    seed: /var/lib/vtorque/jobs/42.head/vt-42.head-node1-0-seed.iso
    nics:
      - mode: bridge
        source: br0
    serial_log: /var/lib/vtorque/jobs/42.head/vt-42.head-node1-0-serial.log

- name: Boot a VM with an I/O thread and its emulator on host core 5, apart from its vCPUs
  mikelangelo.vtorque.vm_domain:
    name: vt-42.head-node1-1
    state: running
    job: {id: "42.head", node: node1, index: 1}
    vcpus: 2
    cpu_pinning: [{vcpu: 0, cpuset: "3"}, {vcpu: 1, cpuset: "4"}]
    iothreads: {count: 1, cpuset: "5"}
    emulator_cpuset: "5"
    hugepages: true
    shmem: [{name: vt-42.head-unclot, size_mib: 64}]
    hostdevs: [{address: "0000:3b:00.1"}]
    fragments: [{name: watchdog, template: /etc/vtorque/fragments/watchdog.xml.j2}]
    disks:
      - path: /var/lib/vtorque/jobs/42.head/vt-42.head-node1-1.qcow2

- name: Power the VM off, destroying it if it ignores ACPI for a minute
  mikelangelo.vtorque.vm_domain:
    name: vt-42.head-node1-0
    state: shutdown
    wait_timeout: 60
    force: true

- name: Remove the VM
  mikelangelo.vtorque.vm_domain:
    name: vt-42.head-node1-0
    state: absent
"""

RETURN = r"""
name:
  description: Domain name.
  returned: always
  type: str
  sample: vt-42.head-node1-0
uuid:
  description: Domain UUID (empty once absent).
  returned: always
  type: str
  sample: 0c1e5c3e-4f1c-5d5e-9a63-6b8f2b9a1c11
state:
  description: Domain state after the task (V(running), V(shutoff), V(absent), ...); predicted in check mode.
  returned: always
  type: str
  sample: running
macs:
  description: MAC addresses of the domain's NICs.
  returned: always
  type: list
  elements: str
  sample: ["52:54:00:fd:e7:1e"]
forced:
  description: Whether the domain had to be destroyed because it did not power off in time.
  returned: always
  type: bool
  sample: false
reason:
  description: Short failure class (V(invalid), V(libvirt), V(timeout), V(refused), V(unavailable)).
  returned: failure
  type: str
  sample: timeout
target:
  description: The domain the failure is about.
  returned: failure
  type: str
  sample: vt-42.head-node1-0
"""

import copy  # noqa: E402

from ansible.module_utils.basic import AnsibleModule  # noqa: E402
from ansible_collections.mikelangelo.vtorque.plugins.module_utils.common import run_module  # noqa: E402
from ansible_collections.mikelangelo.vtorque.plugins.module_utils.domain import ensure  # noqa: E402
from ansible_collections.mikelangelo.vtorque.plugins.module_utils.domain_spec import DOMAIN_ARGSPEC  # noqa: E402


def main():
    module = AnsibleModule(argument_spec=copy.deepcopy(DOMAIN_ARGSPEC), supports_check_mode=True)
    run_module(module, lambda m: ensure(m.params, m.check_mode, m._diff))


if __name__ == "__main__":
    main()
