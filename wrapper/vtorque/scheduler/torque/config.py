"""The site config's `torque:` section: Torque's home and its commands by absolute path, who
starts a job's VMs, and the secret the nodes derive a job's keys from when each starts its own.

Hooks run with PATH=/bin:/usr/bin (docs/torque.md), where Torque's commands usually are not.
The defaults are where Torque's own `make install` puts them; the roles write each host's real
paths at deploy time.
"""

from dataclasses import dataclass
from typing import Literal

from vtorque.site.config_file import parse_command, section_command
from vtorque.site.fields import abs_path, opt

COMMANDS = {name: f"/usr/local/bin/{name}" for name in ("qsub", "qrls", "qdel", "qstat", "pbsnodes")}
# Who starts a job's VMs (docs/torque.md, "Each node starts its own VMs"):
#   primary    the mother superior's prologue starts every node's (job_start.yml over SSH to
#              the sisters); the sisters' hooks do nothing
#   each_node  every node starts its own in its own hook, as on Slurm: sisters in
#              prologue.parallel (the job's nodes from `qstat -f`), the MS in prologue
START_MODES = ("primary", "each_node")
DEFAULT_START = "primary"
DEFAULT_KEY_SECRET = "/etc/vtorque/job-key.secret"  # noqa: S105 - a path, not the secret


@dataclass(frozen=True)
class TorqueConfig:
    qsub: str = opt(COMMANDS["qsub"], parse_command)
    qrls: str = opt(COMMANDS["qrls"], parse_command)
    qdel: str = opt(COMMANDS["qdel"], parse_command)
    qstat: str = opt(COMMANDS["qstat"], parse_command)
    pbsnodes: str = opt(COMMANDS["pbsnodes"], parse_command)
    pbs_home: str = opt("/var/spool/torque", abs_path)
    start: Literal["primary", "each_node"] = DEFAULT_START
    # each_node: root-only (0600) random bytes, the same on every node, from which every
    # node's hook derives the job's keys without talking to the others (vtorque.job.keys).
    key_secret: str = opt(DEFAULT_KEY_SECRET, abs_path)


def start_mode(data):
    """`torque.start` of an unvalidated config document (None or anything: the default), for a
    hook whose config could not be read."""
    section = data.get("torque") if isinstance(data, dict) else None
    value = section.get("start") if isinstance(section, dict) else None
    return value if value in START_MODES else DEFAULT_START


def command(data, name, path):
    """`torque.<name>` of an unvalidated config document (site.config_file.section_command)."""
    return section_command(data, "torque", name, COMMANDS, path)
