"""The site config's `torque:` section: Torque's home and its commands by absolute path.

Hooks run with PATH=/bin:/usr/bin (docs/torque.md), where Torque's commands usually are not.
The defaults are where Torque's own `make install` puts them; the roles write each host's real
paths at deploy time.
"""

from dataclasses import dataclass

from vtorque.site.config_file import parse_command, section_command
from vtorque.site.fields import abs_path, opt

COMMANDS = {name: f"/usr/local/bin/{name}" for name in ("qsub", "qrls", "qdel", "qstat", "pbsnodes")}


@dataclass(frozen=True)
class TorqueConfig:
    qsub: str = opt(COMMANDS["qsub"], parse_command)
    qrls: str = opt(COMMANDS["qrls"], parse_command)
    qdel: str = opt(COMMANDS["qdel"], parse_command)
    qstat: str = opt(COMMANDS["qstat"], parse_command)
    pbsnodes: str = opt(COMMANDS["pbsnodes"], parse_command)
    pbs_home: str = opt("/var/spool/torque", abs_path)


def command(data, name, path):
    """`torque.<name>` of an unvalidated config document (site.config_file.section_command)."""
    return section_command(data, "torque", name, COMMANDS, path)
