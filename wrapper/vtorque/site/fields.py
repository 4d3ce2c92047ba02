"""Field helpers of the site config's dataclasses, shared with the schedulers' sections."""

import os
from dataclasses import field


def abs_path(value):
    if not isinstance(value, str) or not value.startswith("/"):
        raise ValueError("expected an absolute path")
    return os.path.normpath(value)


def opt(default, parse=None, **meta):
    """A field with a default and optional parser (and extra metadata such as a minimum)."""
    if parse is not None:
        meta["parse"] = parse
    if isinstance(default, list | dict):
        return field(default_factory=lambda: type(default)(default), metadata=meta)
    return field(default=default, metadata=meta)
