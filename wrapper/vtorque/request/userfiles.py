"""The files a request names (a user image, vm_prologue/vm_epilogue, a metadata cloud-config):
the owner's own regular files, looked at as the owner, never through a link."""

import os

from vtorque.errors import RequestError, VTorqueError
from vtorque.owner_side import owner_side
from vtorque.site.catalog import QCOW2_HEADER_BYTES, QCOW2_MAGIC, ImageEntry, qcow2_external_references

MAX_METADATA_BYTES = 64 * 1024
MAX_METADATA_DEPTH = 32  # cloud-config nests a few levels; PyYAML's composer recurses per level
USER_IMAGE_SUFFIXES = (".qcow2", ".img", ".raw")


def user_image(value, source, distro, owner_uid, cwd):
    path = os.path.normpath(os.path.join(cwd, value))
    if ".." in value.split("/"):
        raise RequestError("'..' is not allowed in an image path", key="img", value=value, source=source)
    if not path.endswith(USER_IMAGE_SUFFIXES):
        raise RequestError(
            "not an image file name",
            key="img",
            value=value,
            accepted=f"a file ending in {', '.join(USER_IMAGE_SUFFIXES)}",
            source=source,
        )
    from vtorque.trust import check_trusted_path

    try:
        check_trusted_path(path, owner_uid=owner_uid, what="user image")
    except VTorqueError as err:
        raise RequestError(str(err), key="img", value=value, source=source) from None
    image_format = _check_user_image_content(path, value, source, owner_uid)
    return ImageEntry(
        name=os.path.basename(path),
        path=path,
        format=image_format,
        distro=distro or "",
        description="user image",
    )


def _check_user_image_content(path, value, source, owner_uid):
    """The image's format; a qcow2 that would make QEMU open other host files is refused."""
    from vtorque.trust import read_head

    try:
        header = read_head(path, owner_uid=owner_uid, size=QCOW2_HEADER_BYTES, what="user image")
    except VTorqueError as err:
        raise RequestError(str(err), key="img", value=value, source=source) from None
    if not header.startswith(QCOW2_MAGIC):
        return "raw"
    references = qcow2_external_references(header)
    if references:
        raise RequestError(
            f"the qcow2 image refers to {' and '.join(references)}; user images must be self-contained",
            key="img",
            value=value,
            accepted="a standalone image (qemu-img convert -O qcow2 IMAGE NEW.qcow2 flattens it)",
            source=source,
        )
    return "qcow2"


def user_file(options, key, cwd, owner_uid, executable=False):
    """Absolute path of a file the user names; it must be the user's own (root may act on it)."""
    if key not in options:
        return None
    value, source = options[key]
    path, problem, is_executable = _look_at_user_file(os.path.join(cwd, value), owner_uid=owner_uid, what=key)
    if problem == "missing":
        raise RequestError(
            "no such file", key=key, value=value, accepted="an existing regular file", source=source
        )
    if problem:
        raise RequestError(problem, key=key, value=value, accepted="your own file", source=source)
    if executable and not is_executable:
        raise RequestError(
            "the file is not executable",
            key=key,
            value=value,
            accepted="an executable file (chmod +x)",
            source=source,
        )
    return path


@owner_side
def _look_at_user_file(path, *, owner_uid, what):
    """[real path, problem or None, executable], seen as the owner sees it (root acts as them)."""
    from vtorque.trust import check_trusted_path

    path = os.path.realpath(path)
    if not os.path.isfile(path):
        return [path, "missing", False]
    try:
        check_trusted_path(path, owner_uid=owner_uid, what=f"{what} file")
    except VTorqueError as err:
        return [path, str(err), False]
    return [path, None, os.access(path, os.X_OK)]


def parse_metadata(text):
    """The user's cloud-config mapping. Checked on the parser's events (a flat loop) before
    anything recursive sees it: aliases are refused, as 64 KiB of nested aliases expand to
    gigabytes once the root prologue writes the seed (a "billion laughs"); so is nesting deeper
    than MAX_METADATA_DEPTH, which would blow the composer's (and the seed writer's) stack."""
    import yaml

    depth = 0
    for event in yaml.parse(text, Loader=yaml.SafeLoader):
        if isinstance(event, yaml.AliasEvent):
            raise ValueError("YAML aliases (*name) are not accepted; write the values out")
        if isinstance(event, yaml.CollectionStartEvent):
            depth += 1
            if depth > MAX_METADATA_DEPTH:
                raise ValueError(f"nested deeper than {MAX_METADATA_DEPTH} levels")
        elif isinstance(event, yaml.CollectionEndEvent):
            depth -= 1
    document = yaml.safe_load(text)
    if not isinstance(document, dict):
        raise ValueError("not a YAML mapping")
    return document


def metadata_file(options, cwd, owner_uid):
    """User cloud-config for the guests: the user's own YAML mapping file, at most 64 KiB.
    Read through read_trusted, so root (re-validating) never reads a file the user does not own."""
    path = user_file(options, "metadata", cwd, owner_uid)
    if path is None:
        return None
    value, source = options["metadata"]
    import yaml

    from vtorque.trust import read_trusted

    try:
        text = read_trusted(path, owner_uid=owner_uid, max_bytes=MAX_METADATA_BYTES, what="metadata file")
        parse_metadata(text)
    except (VTorqueError, ValueError, yaml.YAMLError) as err:
        raise RequestError(
            f"unusable cloud-config file: {err}",
            key="metadata",
            value=value,
            accepted="a cloud-config YAML mapping",
            source=source,
        ) from None
    return path


def read_user_metadata(request, owner_uid):
    """The user's extra cloud-config (`-vm metadata=FILE`) as root reads it at start: without
    trusting it, and checked again (the owner may have changed it since vsub)."""
    if not request.metadata:
        return None
    import yaml

    from vtorque.trust import read_trusted

    text = read_trusted(
        request.metadata, owner_uid=owner_uid, max_bytes=MAX_METADATA_BYTES, what="metadata file"
    )
    try:
        return parse_metadata(text)
    except (ValueError, yaml.YAMLError) as err:
        raise RequestError(
            f"unusable cloud-config file: {err}", key="metadata", value=request.metadata
        ) from None
