"""The site config's `slurm:` section: Slurm's commands by absolute path, and the site secret
the nodes derive every job's SSH keys from.

Slurm's node Prolog and Epilog run with no PATH at all (docs/slurm.md), so every command is
an absolute path. The defaults are where Debian's slurm-client puts them; the roles write
each host's real paths at deploy time.
"""

from dataclasses import dataclass

from vtorque.site.config_file import parse_command, section_command
from vtorque.site.fields import abs_path, opt

COMMANDS = {name: f"/usr/bin/{name}" for name in ("sbatch", "salloc", "scontrol", "scancel", "squeue")}
DEFAULT_KEY_SECRET = "/etc/vtorque/job-key.secret"  # noqa: S105 - a path, not the secret


@dataclass(frozen=True)
class SlurmConfig:
    sbatch: str = opt(COMMANDS["sbatch"], parse_command)
    salloc: str = opt(COMMANDS["salloc"], parse_command)
    scontrol: str = opt(COMMANDS["scontrol"], parse_command)
    scancel: str = opt(COMMANDS["scancel"], parse_command)
    squeue: str = opt(COMMANDS["squeue"], parse_command)
    # Root-only (0600) random bytes, the same on every node: each node's Prolog derives the
    # job's keys from it without talking to the others (vtorque.job.keys).
    key_secret: str = opt(DEFAULT_KEY_SECRET, abs_path)
    # How often a starting Prolog asks slurmctld whether the job was cancelled (Slurm never
    # interrupts a Prolog).
    cancel_poll_seconds: int = 1


def command(data, name, path):
    """`slurm.<name>` of an unvalidated config document (site.config_file.section_command)."""
    return section_command(data, "slurm", name, COMMANDS, path)
