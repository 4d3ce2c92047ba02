"""Reading a job script's `#PBS` directives the way qsub does, splitting off `-vm`.

qsub reads directives only up to the first line that is neither blank nor a comment; so do we.
Other directives are kept (verbatim, or re-quoted when a `-vm` had to be cut out of the same
line) for the generated wrapper, so Torque still sees them.
"""

import shlex
from collections import namedtuple

from vtorque.errors import QsubArgsError
from vtorque.job import wrapper_script
from vtorque.scheduler.torque.qsub_args import QsubArgs, parse_qsub_argv

DEFAULT_PREFIX = "#PBS"


JobScript = namedtuple("JobScript", "name content directives vm args")
JobScript.__doc__ = """A script as qsub reads it: kept directive lines, `-vm` values with their
source, and the qsub options of all directives (a namedtuple: vsub's fast path avoids dataclasses)."""


def directive_prefix(args, environ):
    """qsub's rule: `-C` wins, then $PBS_DPREFIX, then `#PBS`; an empty prefix disables directives."""
    given = args.values("C")
    if given:
        return given[-1]
    return environ.get("PBS_DPREFIX", DEFAULT_PREFIX)


def read_script(content, name, prefix=DEFAULT_PREFIX):
    """JobScript with the kept directive lines, the `-vm` values as (value, source) and the
    qsub options of all directives parsed (for `-h`, `-l nodes`, `naccesspolicy`...)."""
    kept, vm, options = [], [], []
    for number, line in enumerate(content.decode("utf-8", "surrogateescape").splitlines(), start=1):
        stripped = line.strip()
        if prefix and stripped.startswith(prefix):
            source = f"{name} line {number} ({prefix} directive)"
            try:
                tokens = shlex.split(stripped[len(prefix) :], comments=False)
            except ValueError as err:
                raise QsubArgsError(f"{source}: {err}") from None
            parsed = parse_qsub_argv(tokens, source)
            if parsed.script is not None:
                raise QsubArgsError(f"{source}: unexpected operand {parsed.script!r}")
            vm.extend((value, source) for value in parsed.vm)
            options.extend(parsed.options)
            if not parsed.vm:
                kept.append(line)
            elif parsed.options:
                kept.append(f"{prefix} {shlex.join(parsed.argv())}")
        elif stripped and not stripped.startswith("#"):
            break
    return JobScript(name, content, tuple(kept), tuple(vm), QsubArgs(tuple(options)))


def render_job_wrapper(directives, spool_dir, vtorque_bin, config_path=None, interactive=False):
    """The script Torque runs instead of the user's (vtorque.job.wrapper_script): the user's
    directives, then `vtorque job-run` with the spool directory found from $PBS_JOBID."""
    return wrapper_script.render_job_wrapper(
        directives,
        spool_dir,
        vtorque_bin,
        job_id_variable="PBS_JOBID",
        generator="vsub",
        config_path=config_path,
        interactive=interactive,
    )
