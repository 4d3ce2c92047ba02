"""The job playbooks' variables: the contract between the host side and the collection.

job_start.yml applies exactly what `start_variables` says (its `vtorque` mapping) and job_stop
what `stop_variables` says; the playbooks compute nothing of their own. Seeds hold private keys,
so they travel in a list of their own, which vm_start's action plugin keeps out of the task's
result (and so out of the runner's events).
"""

import os
from xml.sax.saxutils import quoteattr

from ansible_collections.mikelangelo.vtorque.plugins.module_utils.snapshot import SUBDIR as SNAPSHOT_SUBDIR

from vtorque.guest.seeds import seed_for

RAMDISK_SLACK_MIB = 64  # per VM: qcow2 metadata on top of the guest-visible sizes


def start_variables(plan, config, keys, extra=None, extra_source="", nodes=None):
    """job_start's variables for the VMs of `nodes` (default: every node). A node that starts
    only its own VMs gets only theirs: every seed lists every VM of the job, so the whole
    plan's seeds on every node would grow with the square of the node count."""
    vms, seeds = [], []
    for vm in plan.vms if nodes is None else (vm for vm in plan.vms if vm.node in nodes):
        meta, user_data, network = seed_for(plan, vm, keys, extra, extra_source)
        seeds.append(
            {
                "node": vm.node,
                "name": vm.name,
                "path": vm.seed,
                "meta_data": meta,
                "user_data": user_data,
                "network_config": network,
            }
        )
        disks = [{"path": vm.overlay, "format": "qcow2"}]
        if vm.data_disk:
            disks.append({"path": vm.data_disk, "format": "qcow2"})
        vms.append(
            {
                "node": vm.node,
                "name": vm.name,
                "overlay": vm.overlay,
                "data_disk": {"path": vm.data_disk, "size": f"{vm.data_disk_mib}M"} if vm.data_disk else None,
                "domain": {  # vm_domain's options of this VM (vm_start renders them with `domain`)
                    "job": {"id": plan.job_id, "node": vm.node, "index": vm.index},
                    "vcpus": vm.vcpus,
                    "memory_mib": vm.memory_mib,
                    "disks": disks,
                    "seed": vm.seed,
                    "nics": [_nic(plan, vm)],
                    "serial_log": vm.serial_log,
                    "addresses": [vm.address],
                    "cpu_pinning": [{"vcpu": vcpu, "cpuset": str(cores)} for vcpu, cores in vm.cpu_pinning],
                    "iothreads": {"count": vm.iothreads, "cpuset": vm.io_cpuset} if vm.iothreads else None,
                    "emulator_cpuset": vm.io_cpuset,
                    "hostdevs": [{"address": address} for address in vm.hostdevs],
                },
            }
        )
    image = plan.image
    boot = {"kernel": image["kernel"], "initrd": image["initrd"], "cmdline": image["cmdline"] or ""}
    return {
        "vtorque": {
            "uri": plan.uri,
            "job_dir": plan.job_dir,
            "image": {
                "path": image["path"],
                "format": image["format"],
                "start": image.get("start", "boot"),
                "snapshot_dir": os.path.join(plan.state_dir, SNAPSHOT_SUBDIR),
            },
            "domain": {  # vm_domain's options every VM shares
                "virt_type": plan.virt_type,
                "boot": boot if image["kernel"] else None,
                "template": config.domain_template,
                "extra_devices": [
                    _filesystem(tag, path) for tag, path, _source, kind in plan.mounts if kind == "9p"
                ],
                "hugepages": plan.hugepages,
                "shmem": [{"name": name, "size_mib": size} for name, size in plan.shmem],
                "fragments": [{"name": name, "template": template} for name, template in plan.fragments],
            },
            "wait_timeout": config.timeouts.boot,
            "ramdisk": _ramdisk(plan),
            "vms": vms,
            "seeds": seeds,
        }
    }


def stop_variables(job_id, config, shutdown_timeout):
    return {
        "vtorque": {
            "uri": config.libvirt.uri,
            "job_id": job_id,
            "state_dir": config.state_dir,
            "shutdown_timeout": shutdown_timeout,
        }
    }


def _ramdisk(plan):
    """fs_type=ramdisk: the job's tmpfs (per node) and its size, enough for every VM of the node
    to fill its overlay and data disk; tmpfs takes memory only for what is written."""
    if not plan.ramdisk:
        return None
    from vtorque.site.catalog import virtual_size_mib

    per_vm = virtual_size_mib(plan.image["path"]) + (plan.rank0.data_disk_mib or 0) + RAMDISK_SLACK_MIB
    vms_per_node = len(plan.vms) // len(plan.nodes)
    return {"path": plan.ramdisk, "size_mib": per_vm * vms_per_node}


def _nic(plan, vm):
    if plan.network_mode == "user":
        return {
            "mode": "user",
            "mac": vm.mac,
            "host_port": vm.ssh_port,
            "guest_address": vm.address.split("/")[0],
        }
    mode = "bridge" if plan.network_mode == "bridge" else "network"
    return {"mode": mode, "source": plan.network_source, "mac": vm.mac}


def _filesystem(tag, path):
    """A 9p share (virtiofs is refused by the site config until it is done for real)."""
    return (
        f"<filesystem type='mount' accessmode='passthrough'><source dir={quoteattr(path)}/>"
        f"<target dir={quoteattr(tag)}/></filesystem>"
    )
