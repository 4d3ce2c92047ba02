"""The batch systems vTorque serves, each behind the seam of `scheduler.base`.

`for_config(config)` gives the site's adapter (`scheduler:` in vtorque.yml, default torque).
"""

import importlib

ADAPTERS = {"torque": "vtorque.scheduler.torque.adapter", "slurm": "vtorque.scheduler.slurm.adapter"}


def named(name):
    """The adapter class of scheduler `name`."""
    return importlib.import_module(ADAPTERS[name]).Adapter


def for_hook(event):
    """The adapter class whose batch system calls hook `event` (their names differ), or None."""
    for name in ADAPTERS:
        adapter = named(name)
        if event in adapter.hook_names:
            return adapter
    return None


def for_config(config):
    return named(config.scheduler)(config)
