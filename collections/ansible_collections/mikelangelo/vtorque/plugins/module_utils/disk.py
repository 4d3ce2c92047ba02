# Copyright: vTorque contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""qcow2 overlays and empty data disks made with qemu-img, each with an ownership marker.

The marker is a sidecar ``<disk>.vtorque.json`` written after the image, recording what was
made (backing file and format, size). Only files with a marker are ever replaced or removed:
an image of the same name that vTorque did not create (an admin's base image, a user's file)
is refused. A sidecar was chosen over qcow2 metadata because qcow2 has no free-form field and
because it also covers raw images; vm_sweep removes it with the job directory.
"""

from __future__ import annotations

import json
import os

from ansible_collections.mikelangelo.vtorque.plugins.module_utils.errors import InvalidSpec, Refused
from ansible_collections.mikelangelo.vtorque.plugins.module_utils.files import (
    absolute,
    existing_regular_file,
    remove_file,
)

MARKER_SUFFIX = ".vtorque.json"


def marker_path(path: str) -> str:
    return path + MARKER_SUFFIX


def desired_marker(params: dict) -> dict:
    path = absolute(params["path"], "path")
    backing = params.get("backing_file")
    if backing:
        backing = absolute(backing, "backing_file")
        if not os.path.isfile(backing):
            raise InvalidSpec(f"backing_file {backing} does not exist or is not a file", target=path)
    elif not params.get("size"):
        raise InvalidSpec("an empty data disk needs size (for example 10G)", target=path)
    return dict(
        created_by="vtorque",
        format="qcow2",
        backing_file=backing,
        backing_format=params.get("backing_format") if backing else None,
        size=params.get("size"),
    )


def read_marker(path: str) -> dict | None:
    marker = marker_path(path)
    if not existing_regular_file(marker):
        return None
    try:
        with open(marker, encoding="utf-8") as handle:
            return json.load(handle)
    except (OSError, ValueError) as exc:
        raise Refused(
            f"ownership marker {marker} is unreadable ({exc}); not touching {path}", target=path
        ) from exc


def qemu_img_create(want: dict, path: str) -> list[str]:
    argv = ["create", "-q", "-f", want["format"]]
    if want["backing_file"]:
        argv += ["-b", want["backing_file"], "-F", want["backing_format"]]
    argv.append(path)
    if want["size"]:
        argv.append(want["size"])
    return argv


def ensure_disk(params: dict, check_mode: bool, run_qemu_img) -> dict:
    """``run_qemu_img(argv)`` runs qemu-img with argv and raises on failure."""
    path = absolute(params["path"], "path")
    exists = existing_regular_file(path)
    marker = read_marker(path) if exists else None
    result = dict(changed=False, path=path)
    if params["state"] == "absent":
        if not exists:
            return result
        if marker is None:
            raise Refused(
                f"{path} was not created by vm_disk (no {marker_path(path)}); refusing to remove it",
                target=path,
            )
        result["changed"] = True
        if not check_mode:
            remove_file(path)
            remove_file(marker_path(path))
        return result

    want = desired_marker(params)
    result.update(backing_file=want["backing_file"], size=want["size"])
    if exists and marker is None:
        raise Refused(
            f"{path} exists and was not created by vm_disk (no {marker_path(path)}); "
            "refusing to overwrite it",
            target=path,
        )
    if exists and marker == want:
        return result
    if exists and not params.get("force"):
        raise Refused(
            f"{path} was created with {json.dumps(marker, sort_keys=True)}, the task wants "
            f"{json.dumps(want, sort_keys=True)}; set force: true to recreate it (its data is lost)",
            target=path,
        )
    result["changed"] = True
    if check_mode:
        return result
    directory = os.path.dirname(path)
    if not os.path.isdir(directory):
        raise InvalidSpec(f"directory {directory} does not exist", target=path)
    # Marker first: a crash before the rename leaves a marker without an image, which the next
    # run simply completes; never an image without a marker, which would be refused forever.
    with open(marker_path(path), "w", encoding="utf-8") as handle:
        json.dump(want, handle, sort_keys=True)
        handle.write("\n")
    partial = os.path.join(directory, f".{os.path.basename(path)}.partial")
    remove_file(partial)
    run_qemu_img(qemu_img_create(want, partial))
    os.chmod(partial, 0o600)  # the guest's writes; libvirt hands the file to QEMU
    os.replace(partial, path)
    return result
