"""The batch systems vTorque serves, each behind the seam of `scheduler.base`.

`for_config(config)` gives the site's adapter (`scheduler:` in vtorque.yml, default torque).
"""

import importlib

ADAPTERS = {"torque": "vtorque.scheduler.torque.adapter", "slurm": "vtorque.scheduler.slurm.adapter"}


def named(name):
    """The adapter class of scheduler `name`."""
    return importlib.import_module(ADAPTERS[name]).Adapter


def for_config(config):
    return named(config.scheduler)(config)
