"""`vtorque images list|show NAME|add NAME PATH [...]|remove NAME|verify NAME`.

add/remove change the catalog named by the site config's `images` key and need root.
"""

import argparse
import json
import os
import sys
from dataclasses import replace

from vtorque.errors import CatalogError
from vtorque.site.catalog import (
    ImageEntry,
    check_name,
    file_checksum,
    load_catalog,
    probe_format,
    save_catalog,
    verify_image_files,
)
from vtorque.site.config import DISTROS, load_config


def main(argv, prog="vtorque images"):
    parser = argparse.ArgumentParser(prog=prog, description="Browse and edit the vTorque image catalog.")
    sub = parser.add_subparsers(dest="action", required=True)
    listing = sub.add_parser("list", help="list catalog images")
    listing.add_argument("--json", action="store_true", help="print JSON instead of a table")
    sub.add_parser("show", help="show one image").add_argument("name")
    add = sub.add_parser("add", help="add an image (root); records its format and sha256 checksum")
    add.add_argument("name")
    add.add_argument("path", help="absolute path of the base disk (root-owned, not group/other-writable)")
    add.add_argument("--distro", choices=DISTROS, default="debian")
    add.add_argument("--description", default="")
    add.add_argument(
        "--format", choices=("qcow2", "raw"), help="default: as qemu-img detects it; must match that"
    )
    add.add_argument("--kernel", help="kernel for direct boot")
    add.add_argument("--initrd", help="initrd for direct boot")
    add.add_argument("--cmdline", help="kernel command line for direct boot")
    sub.add_parser("remove", help="remove an image from the catalog (root; the file stays)").add_argument(
        "name"
    )
    sub.add_parser("verify", help="check owner, mode and checksum of an image's files").add_argument("name")
    args = parser.parse_args(argv)

    if args.action in ("add", "remove") and os.geteuid() != 0:
        raise CatalogError(f"`images {args.action}` changes the image catalog and must run as root")
    catalog_path = load_config().images
    if args.action == "add" and not os.path.exists(catalog_path):
        entries = {}
    else:
        entries = load_catalog(catalog_path)

    if args.action == "list":
        if args.json:
            print(
                json.dumps({name: entry.to_yaml_dict() for name, entry in sorted(entries.items())}, indent=2)
            )
        else:
            for name, entry in sorted(entries.items()):
                print(f"{name:<24} {entry.distro:<8} {entry.format:<6} {entry.description}")
        return 0
    entry = entries.get(args.name)
    if args.action != "add" and entry is None:
        raise CatalogError(f"no image named {args.name!r} in {catalog_path} (see `vtorque images list`)")
    if args.action == "show":
        print(json.dumps({"name": entry.name, **entry.to_yaml_dict()}, indent=2))
        return 0
    if args.action == "verify":
        verify_image_files(entry)
        actual = file_checksum(entry.path)
        if entry.checksum and actual != entry.checksum:
            print(
                f"{entry.name}: checksum MISMATCH: recorded {entry.checksum}, file {actual}", file=sys.stderr
            )
            return 1
        print(f"{entry.name}: OK ({actual}{'' if entry.checksum else ', no checksum recorded'})")
        return 0
    if args.action == "remove":
        del entries[args.name]
        save_catalog(catalog_path, entries)
        print(f"removed {args.name} from {catalog_path}")
        return 0

    check_name(args.name)
    if entry is not None:
        raise CatalogError(f"image {args.name!r} is already in {catalog_path}; remove it first")
    paths = {key: os.path.abspath(value) for key in ("kernel", "initrd") if (value := getattr(args, key))}
    new = ImageEntry(
        name=args.name,
        path=os.path.abspath(args.path),
        format="unprobed",
        distro=args.distro,
        description=args.description,
        cmdline=args.cmdline,
        **paths,
    )
    if bool(new.kernel) != bool(new.initrd):
        raise CatalogError("direct kernel boot needs both --kernel and --initrd")
    # Before qemu-img and sha256 read it: a root-owned regular file, no link, FIFO or device.
    verify_image_files(new)
    new = replace(new, format=_image_format(new.path, args.format), checksum=file_checksum(new.path))
    entries[new.name] = new
    save_catalog(catalog_path, entries)
    print(f"added {new.name} ({new.checksum}) to {catalog_path}")
    return 0


def _image_format(path, given):
    """The format qemu-img detects; a --format that says otherwise is refused, not recorded."""
    detected = probe_format(path)
    if given and given != detected:
        raise CatalogError(
            f"{path} is {detected}, not {given} (qemu-img info); drop --format or give --format {detected}"
        )
    return detected
