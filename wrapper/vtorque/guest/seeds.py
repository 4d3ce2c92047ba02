"""The NoCloud seed content of each VM of a plan (docs/design.md, contract 1).

Only fields both real cloud-init and the tiny test guest honour: hostname, the job owner with
the host's UID and GID, the per-job key, the VM's pinned host key, static network by MAC,
/etc/hosts for every VM of the job, the VM node file, the site's mounts, and for a job of
several VMs what the owner needs to reach them all by SSH from inside (what mpirun does).
"""

from dataclasses import dataclass

AUTHORIZED_KEYS_DIR = "/etc/ssh/vtorque/authorized_keys"
# The owner's job key and the job's host keys inside the guests, outside the home for the
# same reason; OpenSSH clients find them through a drop-in scoped to the job's VMs.
CLIENT_KEYS_DIR = "/etc/ssh/vtorque/keys"
KNOWN_HOSTS = "/etc/ssh/vtorque/known_hosts"
SSH_CLIENT_DROP_IN = "/etc/ssh/ssh_config.d/50-vtorque.conf"
DATA_DISK_DEVICE = "/dev/vdb"  # the overlay is vda, the data disk vdb, the seed last
# Outside the home, so a mounted home cannot hide the per-job key (OpenSSH guests).
SSHD_DROP_IN = f"AuthorizedKeysFile .ssh/authorized_keys {AUTHORIZED_KEYS_DIR}/%u\n"
MOUNT_OPTIONS = {
    "9p": "trans=virtio,version=9p2000.L,msize=262144",
    "virtiofs": "defaults",
    "nfs": "defaults",
}


def vm_nodefile(plan):
    """One line per vCPU, rank-0 VM first (what mpirun reads)."""
    return "".join(f"{vm.hostname}\n" * vm.vcpus for vm in plan.vms)


# cloud-config keys a user's `metadata` file may not set: they carry vTorque's identity and
# access guarantees (the owner's UID, the pinned host key, the per-job key).
RESERVED_KEYS = (
    "users",
    "user",
    "groups",
    "ssh_keys",
    "ssh_deletekeys",
    "ssh_authorized_keys",
    "disable_root",
    "ssh_pwauth",
    "chpasswd",
    "password",
)
APPENDED_KEYS = ("bootcmd", "runcmd", "write_files", "mounts", "packages")


def merge_metadata(user_data, extra, source):
    """vTorque's user-data with the user's extra cloud-config: lists vTorque also uses are
    appended to (vTorque's entries first), other keys added; identity keys are refused."""
    from vtorque.errors import RequestError

    for key in extra:
        if key in RESERVED_KEYS:
            raise RequestError(
                f"cloud-config key {key!r} is set by vTorque and may not be overridden",
                key="metadata",
                value=source,
                accepted=f"any key but {', '.join(RESERVED_KEYS)}",
            )
        if key in APPENDED_KEYS and not isinstance(extra[key], list):
            raise RequestError(f"cloud-config key {key!r} must be a list", key="metadata", value=source)
    merged = dict(user_data)
    for key, value in extra.items():
        merged[key] = [*merged.get(key, []), *value] if key in APPENDED_KEYS else value
    return merged


@dataclass(frozen=True)
class JobKeys:
    """The job's SSH keys, OpenSSH text: the owner's per-job pair and each VM's host pair."""

    user_private: str
    user_public: str
    hosts: dict  # VM name -> (private, public)


def seed_for(plan, vm, keys, extra=None, extra_source=""):
    """(meta_data, user_data, network_config) for one VM; extra = the user's `metadata`
    cloud-config mapping, merged by merge_metadata."""
    owner = plan.owner
    user_public_key = keys.user_public
    host_key = keys.hosts[vm.name]
    # In user mode each guest has its own slirp and knows only itself.
    known = (vm,) if plan.network_mode == "user" else plan.vms
    hosts = "127.0.0.1 localhost\n" + "".join(f"{v.address.split('/')[0]} {v.hostname}\n" for v in known)
    user_data = {
        "bootcmd": [["groupadd", "-g", str(owner.gid), owner.group]],
        "users": [
            {
                "name": owner.name,
                "uid": owner.uid,
                "primary_group": owner.group,
                "gecos": f"vTorque job {plan.job_id}",
                "shell": "/bin/sh",
                "homedir": owner.home,
                "lock_passwd": True,
                "ssh_authorized_keys": [user_public_key],
            }
        ],
        "ssh_deletekeys": True,
        "ssh_keys": {"ed25519_private": host_key[0], "ed25519_public": host_key[1]},
        "write_files": [
            {"path": "/etc/hosts", "content": hosts, "permissions": "0644", "owner": "root:root"},
            {
                "path": "/etc/ssh/sshd_config.d/50-vtorque.conf",
                "content": SSHD_DROP_IN,
                "permissions": "0644",
                "owner": "root:root",
            },
            {
                "path": f"{AUTHORIZED_KEYS_DIR}/{owner.name}",
                "content": user_public_key + "\n",
                "permissions": "0644",
                "owner": "root:root",
            },
            {
                "path": plan.guest_nodefile,
                "content": vm_nodefile(plan),
                "permissions": "0644",
                "owner": "root:root",
            },
        ],
        "mounts": [[source, path, kind, MOUNT_OPTIONS[kind]] for _tag, path, source, kind in plan.mounts],
    }
    if len(known) > 1:
        user_data["write_files"] += _peer_access(owner, known, keys)
    if vm.data_disk:
        for key, value in _data_disk(owner).items():
            user_data[key] = [*user_data.get(key, []), *value]
    if extra:
        user_data = merge_metadata(user_data, extra, extra_source)
    meta_data = {"instance-id": vm.uuid, "local-hostname": vm.hostname}
    ethernet = {"match": {"macaddress": vm.mac}, "addresses": [vm.address], "set-name": "eth0"}
    if vm.gateway:
        ethernet["gateway4"] = vm.gateway
    if vm.dns:
        ethernet["nameservers"] = {"addresses": list(vm.dns)}
    network_config = {"version": 2, "ethernets": {"eth0": ethernet}}
    return meta_data, user_data, network_config


def _peer_access(owner, vms, keys):
    """write_files that let the owner SSH from any VM of the job to any other with the job key,
    checking the pinned host keys (one known_hosts line per name and no comments, as dropbear's
    client needs)."""
    known_hosts = "".join(
        f"{name} {_without_comment(keys.hosts[v.name][1])}\n"
        for v in vms
        for name in (v.hostname, v.address.split("/")[0])
    )
    names = " ".join(name for v in vms for name in (v.hostname, v.address.split("/")[0]))
    client = (
        f"Host {names}\n"
        f"    IdentityFile {CLIENT_KEYS_DIR}/%u\n"
        f"    GlobalKnownHostsFile {KNOWN_HOSTS}\n"
        "    StrictHostKeyChecking yes\n"
    )
    return [
        {"path": KNOWN_HOSTS, "content": known_hosts, "permissions": "0644", "owner": "root:root"},
        {"path": SSH_CLIENT_DROP_IN, "content": client, "permissions": "0644", "owner": "root:root"},
        {  # deferred: cloud-init writes files before it creates users
            "path": f"{CLIENT_KEYS_DIR}/{owner.name}",
            "content": keys.user_private,
            "permissions": "0600",
            "owner": f"{owner.name}:{owner.group}",
            "defer": True,
        },
    ]


def _data_disk(owner):
    """The empty `-vm disk=SIZE` disk (the second disk: /dev/vdb) as the owner's ext4 /data."""
    from vtorque.job.plan import DATA_MOUNT

    return {
        "fs_setup": [
            {"label": "vtdata", "filesystem": "ext4", "device": DATA_DISK_DEVICE, "overwrite": False}
        ],
        "mounts": [[DATA_DISK_DEVICE, DATA_MOUNT, "ext4", "defaults,nofail"]],
        "runcmd": [["chown", f"{owner.uid}:{owner.gid}", DATA_MOUNT]],
    }


def _without_comment(public_key):
    return " ".join(public_key.split()[:2])
