"""Locating and reading the site config file, without building the full SiteConfig.

Split from config.py so vsub's bare-metal path can find the real qsub without paying for
the whole schema (see docs: vsub overhead). As root the file must be root-owned, no link and
not writable by group or others, because the hooks act on it.
"""

import os

from vtorque.errors import ConfigError, VTorqueError

DEFAULT_PATH = "/etc/vtorque/vtorque.yml"
DEFAULT_SPOOL_DIR = "/var/spool/vtorque"
ENV_VAR = "VTORQUE_CONFIG"
MAX_BYTES = 1024 * 1024


def config_path(path=None):
    return str(path or os.environ.get(ENV_VAR) or DEFAULT_PATH)


def read_config_data(path):
    """The parsed YAML document of `path` ({} for an empty file); ConfigError naming the file."""
    if os.geteuid() == 0:
        from vtorque.trust import read_trusted

        try:
            raw = read_trusted(path, owner_uid=0, max_bytes=MAX_BYTES, what="site config")
        except VTorqueError as err:
            raise ConfigError(path, [str(err)]) from None
    else:
        try:
            with open(path, "rb") as handle:
                raw = handle.read(MAX_BYTES + 1)
        except OSError as err:
            raise ConfigError(path, [f"cannot read: {err.strerror}"]) from None
        if len(raw) > MAX_BYTES:
            raise ConfigError(path, [f"larger than {MAX_BYTES} bytes"])
    return parse_yaml(raw, path)


def parse_yaml(text, path):
    import yaml

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    try:
        data = yaml.load(text, Loader=loader)  # noqa: S506 - a safe loader, chosen above
    except yaml.YAMLError as err:
        raise ConfigError(path, [f"not valid YAML: {err}"]) from None
    return {} if data is None else data


def parse_command(value):
    if not isinstance(value, str) or not value.startswith("/"):
        raise ValueError(
            "expected an absolute path: hooks run with PATH=/bin:/usr/bin, so a name is not found"
            " (the roles resolve it at deploy time; `command -v` tells it)"
        )
    return os.path.normpath(value)


def section_command(data, section, name, defaults, path):
    """`<section>.<name>` (a batch system's command) of an unvalidated config document, or its
    default, checked like load_config checks it: the submit commands' bare-metal path reads no
    more of the config than this."""

    values = data.get(section) if isinstance(data, dict) else None
    value = values.get(name, defaults[name]) if isinstance(values, dict) else defaults[name]
    try:
        return parse_command(value)
    except ValueError as err:
        raise ConfigError(path, [f"{section}.{name}: {err}, got {value!r}"]) from None


def command_problem(path):
    """Why the absolute command `path` cannot be run (None when it can); `vtorque config check`
    and vsub ask, the hooks then trust the checked config."""
    if not os.path.isfile(path):
        return "no such file"
    if not os.access(path, os.X_OK):
        return "not executable"
    return None
