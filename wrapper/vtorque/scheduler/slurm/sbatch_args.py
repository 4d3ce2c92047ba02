"""sbatch's command line as Slurm 22.05's sbatch reads it, plus vsbatch's own `--vm` and `--dry-run`.

sbatch reads its options with getopt_long in POSIX mode (its option string starts with '+'):
options end at the first operand, the job script, and everything after it is the script's
arguments (`vsbatch job.sh -N2` gives `-N2` to the script); `--` ends the options too. Long
options may be abbreviated to any unambiguous prefix (`--extra` is `--extra-node-info`), a
value is attached with `=` or is the next argument, an optional value (`--exclusive[=user]`,
`-k[VALUE]`) is only ever attached. Short options cluster (`-vN2` is `-v -N 2`). A bare `:`
separates the components of a heterogeneous job; sbatch drops every `:` before it looks for
the script, and so does `parse_sbatch_argv`.

OPTIONS is sbatch's part of `common_options` in Slurm 22.05.8's src/common/slurm_opt.c (the
entries with a set_func or set_func_sbatch), in that order; tests/unit/test_sbatch_args.py
checks every entry against the installed sbatch. SPANK plugins may add options at run time:
vsbatch does not know those, so a VM job refuses them (a bare-metal job hands them to sbatch).

Each parsed option keeps the argv tokens it came from, so what vsbatch passes on is what the
user typed; only options vsbatch must drop are spelled anew.
"""

import re
from collections import namedtuple

from vtorque.errors import QsubArgsError

REQUIRED, OPTIONAL, NONE = "required", "optional", "none"

OPTIONS = (
    ("account", REQUIRED, "A"),
    ("acctg-freq", REQUIRED, None),
    ("array", REQUIRED, "a"),
    ("batch", REQUIRED, None),
    ("begin", REQUIRED, "b"),
    ("bb", REQUIRED, None),
    ("bbf", REQUIRED, None),
    ("cluster-constraint", REQUIRED, None),
    ("chdir", REQUIRED, "D"),
    ("cluster", REQUIRED, None),
    ("clusters", REQUIRED, "M"),
    ("comment", REQUIRED, None),
    ("container", REQUIRED, None),
    ("context", REQUIRED, None),
    ("contiguous", NONE, None),
    ("constraint", REQUIRED, "C"),
    ("core-spec", REQUIRED, "S"),
    ("cores-per-socket", REQUIRED, None),
    ("cpu-freq", REQUIRED, None),
    ("cpus-per-gpu", REQUIRED, None),
    ("cpus-per-task", REQUIRED, "c"),
    ("deadline", REQUIRED, None),
    ("delay-boot", REQUIRED, None),
    ("dependency", REQUIRED, "d"),
    ("distribution", REQUIRED, "m"),
    ("error", REQUIRED, "e"),
    ("exclude", REQUIRED, "x"),
    ("exclusive", OPTIONAL, None),
    ("export", REQUIRED, None),
    ("export-file", REQUIRED, None),
    ("extra-node-info", REQUIRED, "B"),
    ("get-user-env", OPTIONAL, None),
    ("gid", REQUIRED, None),
    ("gpu-bind", REQUIRED, None),
    ("gpu-freq", REQUIRED, None),
    ("gpus", REQUIRED, "G"),
    ("gpus-per-node", REQUIRED, None),
    ("gpus-per-socket", REQUIRED, None),
    ("gpus-per-task", REQUIRED, None),
    ("gres", REQUIRED, None),
    ("gres-flags", REQUIRED, None),
    ("help", NONE, "h"),
    ("hint", REQUIRED, None),
    ("hold", NONE, "H"),
    ("ignore-pbs", NONE, None),
    ("input", REQUIRED, "i"),
    ("job-name", REQUIRED, "J"),
    ("kill-on-invalid-dep", REQUIRED, None),
    ("licenses", REQUIRED, "L"),
    ("mail-type", REQUIRED, None),
    ("mail-user", REQUIRED, None),
    ("mcs-label", REQUIRED, None),
    ("mem", REQUIRED, None),
    ("mem-bind", REQUIRED, None),
    ("mem-per-cpu", REQUIRED, None),
    ("mem-per-gpu", REQUIRED, None),
    ("mincpus", REQUIRED, None),
    ("network", REQUIRED, None),
    ("nice", OPTIONAL, None),
    ("no-kill", OPTIONAL, "k"),
    ("no-requeue", NONE, None),
    ("nodefile", REQUIRED, "F"),
    ("nodelist", REQUIRED, "w"),
    ("nodes", REQUIRED, "N"),
    ("ntasks", REQUIRED, "n"),
    ("ntasks-per-core", REQUIRED, None),
    ("ntasks-per-gpu", REQUIRED, None),
    ("ntasks-per-node", REQUIRED, None),
    ("ntasks-per-socket", REQUIRED, None),
    ("ntasks-per-tres", REQUIRED, None),
    ("open-mode", REQUIRED, None),
    ("output", REQUIRED, "o"),
    ("overcommit", NONE, "O"),
    ("oversubscribe", NONE, "s"),
    ("parsable", NONE, None),
    ("partition", REQUIRED, "p"),
    ("power", REQUIRED, None),
    ("prefer", REQUIRED, None),
    ("priority", REQUIRED, None),
    ("profile", REQUIRED, None),
    ("propagate", OPTIONAL, None),
    ("qos", REQUIRED, "q"),
    ("quiet", NONE, "Q"),
    ("reboot", NONE, None),
    ("requeue", NONE, None),
    ("reservation", REQUIRED, None),
    ("signal", REQUIRED, None),
    ("sockets-per-node", REQUIRED, None),
    ("spread-job", NONE, None),
    ("switches", REQUIRED, None),
    ("tasks-per-node", REQUIRED, None),
    ("test-only", NONE, None),
    ("thread-spec", REQUIRED, None),
    ("threads-per-core", REQUIRED, None),
    ("time", REQUIRED, "t"),
    ("time-min", REQUIRED, None),
    ("tmp", REQUIRED, None),
    ("uid", REQUIRED, None),
    ("use-min-nodes", NONE, None),
    ("verbose", NONE, "v"),
    ("version", NONE, "V"),
    ("usage", NONE, None),
    ("wait", NONE, "W"),
    ("wait-all-nodes", REQUIRED, None),
    ("wckey", REQUIRED, None),
    ("wrap", REQUIRED, None),
)
# Two spellings of one option (the same getopt value): one name for both.
ALIASES = {"tasks-per-node": "ntasks-per-node"}
ARGUMENT = {name: kind for name, kind, _ in OPTIONS}
SHORT = {letter: name for name, _, letter in OPTIONS if letter}
LETTER = {name: letter for letter, name in SHORT.items()}

# vsbatch's own options, matched exactly (never as an abbreviation): --vm on the command line
# and in #SBATCH lines, --dry-run on the command line only.
OWN_ARGUMENT = {"vm": REQUIRED, "dry-run": NONE}
COMMAND_LINE_OWN = ("vm", "dry-run")
DIRECTIVE_OWN = ("vm",)

# The SBATCH_* variables sbatch reads as options whose value vsbatch's decisions depend on
# (sbatch applies them after the script's #SBATCH lines and before the command line).
ENVIRONMENT = {
    "SBATCH_ARRAY_INX": "array",
    "SBATCH_EXCLUSIVE": "exclusive",
    "SBATCH_IGNORE_PBS": "ignore-pbs",
    "SBATCH_MEM_PER_CPU": "mem-per-cpu",
    "SBATCH_MEM_PER_GPU": "mem-per-gpu",
    "SBATCH_MEM_PER_NODE": "mem",
    "SBATCH_OVERCOMMIT": "overcommit",
    "SBATCH_WAIT": "wait",
}
HET_SEPARATOR = ":"


class SbatchArgsError(QsubArgsError):
    """sbatch's command line or a script's #SBATCH lines cannot be read as sbatch reads them;
    `reason` without the source, `index` the argv token it is about (when there is one)."""

    def __init__(self, reason, source=None, index=None):
        super().__init__(f"{source}: {reason}" if source else reason)
        self.reason, self.index = reason, index


Option = namedtuple("Option", "name value start tokens")
Option.__doc__ = """One option: its name (the long one, aliases folded), its value (None: none
given), the index of its first argv token and the tokens it came from (a short cluster's
options share them)."""


class SbatchArgs(
    namedtuple("SbatchArgs", "options script script_args het_job", defaults=((), None, (), False))
):
    """`options` in order; `script`: the operand (None: the script is read from stdin);
    `script_args`: what follows it; `het_job`: a `:` separator was given. A namedtuple, not a
    dataclass: vsbatch's bare-metal path must start fast."""

    __slots__ = ()

    def has(self, name):
        return any(option.name == name for option in self.options)

    def values(self, name):
        return [option.value for option in self.options if option.name == name]

    def last(self, name):
        """The last occurrence of option `name` (the one sbatch keeps), or None."""
        found = [option for option in self.options if option.name == name]
        return found[-1] if found else None

    @property
    def vm(self):
        return tuple(self.values("vm"))

    @property
    def dry_run(self):
        return self.has("dry-run")

    def argv(self, drop=()):
        """The options back as argv tokens, as the user typed them, without the options named
        in `drop` (and never vsbatch's own); a short cluster that loses a member is spelled anew."""
        drop = {*drop, *OWN_ARGUMENT}
        tokens, index = [], 0
        while index < len(self.options):
            cluster = [option for option in self.options[index:] if option.start == self.options[index].start]
            index += len(cluster)
            kept = [option for option in cluster if option.name not in drop]
            if len(kept) == len(cluster):
                tokens.extend(cluster[0].tokens)
            else:
                tokens.extend(token for option in kept for token in spelling(option))
        return tokens


def spelling(option):
    """argv tokens that give sbatch `option` again (a short letter where it has one)."""
    letter = LETTER.get(option.name)
    if option.value is None:
        return [f"-{letter}"] if letter else [f"--{option.name}"]
    if letter and ARGUMENT[option.name] == REQUIRED:
        return [f"-{letter}", option.value]
    return [f"--{option.name}={option.value}"]


def parse_sbatch_argv(argv, source="command line", own=COMMAND_LINE_OWN):
    """SbatchArgs of `argv` read the way sbatch's getopt_long reads it (see the module doc);
    vsbatch's `own` options are collected with the others."""
    tokens = [token for token in argv if token != HET_SEPARATOR]
    options, index = [], 0
    while index < len(tokens):
        token = tokens[index]
        if token == "--":  # noqa: S105 - getopt's end of options
            index += 1
            break
        if not token.startswith("-") or token == "-":  # noqa: S105 - an operand
            break
        if token.startswith("--"):
            found, index = _long_option(tokens, index, own, source)
        else:
            found, index = _short_options(tokens, index, source)
        options.extend(found)
    script = tokens[index] if index < len(tokens) else None
    return SbatchArgs(tuple(options), script, tuple(tokens[index + 1 :]), len(tokens) != len(argv))


def _long_option(tokens, index, own, source):
    """([Option], next index) of the `--name[=value]` at `index`."""
    token = tokens[index]
    given, attached, value = token[2:].partition("=")
    name = given if given in own else _long_name(given, source, index)
    kind = OWN_ARGUMENT[name] if given in own else ARGUMENT[name]
    if not attached:
        value = None
    if kind == NONE and attached:
        raise SbatchArgsError(f"option '--{name}' doesn't allow an argument", source, index)
    end = index + 1
    if kind == REQUIRED and not attached:
        if end >= len(tokens):
            raise SbatchArgsError(f"option '--{name}' requires an argument", source, index)
        value, end = tokens[end], end + 1
    return [Option(ALIASES.get(name, name), value, index, tuple(tokens[index:end]))], end


def _long_name(given, source, index):
    """The option `--given` names: itself, or the only option it abbreviates (getopt_long:
    an exact name wins; several spellings of one option are not ambiguous)."""
    if given in ARGUMENT:
        return given
    candidates = [name for name in ARGUMENT if name.startswith(given)] if given else []
    if not candidates:
        raise SbatchArgsError(f"unrecognized sbatch option '--{given}'", source, index)
    if len({ALIASES.get(name, name) for name in candidates}) > 1:
        listed = " ".join(f"'--{name}'" for name in candidates)
        raise SbatchArgsError(f"option '--{given}' is ambiguous; possibilities: {listed}", source, index)
    return candidates[0]


def _short_options(tokens, index, source):
    """([Option], next index) of the short cluster at `index` (`-vN2`, `-N 2`, `-k`)."""
    token, end, found = tokens[index], index + 1, []
    position = 1
    while position < len(token):
        letter = token[position]
        position += 1
        if letter not in SHORT:
            raise SbatchArgsError(f"invalid sbatch option -- '{letter}' in {token!r}", source, index)
        name = SHORT[letter]
        value = None
        if ARGUMENT[name] != NONE and position < len(token):
            value, position = token[position:], len(token)
        elif ARGUMENT[name] == REQUIRED:
            if end >= len(tokens):
                raise SbatchArgsError(f"sbatch option -{letter} requires an argument", source, index)
            value, end = tokens[end], end + 1
        found.append((name, value))
    cluster = tuple(tokens[index:end])
    return [Option(name, value, index, cluster) for name, value in found], end


def environment_options(environ):
    """The SBATCH_* variables of ENVIRONMENT that are set, as the options sbatch reads them as."""
    found = []
    for variable, name in ENVIRONMENT.items():
        if variable in environ:
            value = None if ARGUMENT[name] == NONE else environ[variable]
            found.append(Option(name, value, -1, ()))
    return tuple(found)


# --- option values ----------------------------------------------------------------------

_COUNT = re.compile(r"\s*\+?([0-9]+)([kK]?)([mM]?)\s*")
_SIZE = re.compile(r"\s*\+?([0-9]+)(?:([kKmMgGtT])[bB]?)?")
_UNIT_KIB = {"k": 1, "m": 1024, "g": 1024**2, "t": 1024**3}


def node_count(text):
    """A `-N` count as sbatch reads it (a number, then k and m multipliers); None if unreadable."""
    match = _COUNT.fullmatch(text)
    if not match:
        return None
    return int(match[1]) * (1024 if match[2] else 1) * (1024 * 1024 if match[3] else 1)


def node_range(text):
    """(minimum, maximum) nodes of `-N N` or `-N MIN-MAX`; None if unreadable or open-ended."""
    low, dash, high = text.partition("-")
    counts = (node_count(low), node_count(high) if dash else node_count(low))
    if None in counts or counts[1] < counts[0]:
        return None
    return counts


def size_mib(text):
    """A --mem/--mem-per-cpu size in MiB as sbatch reads it (a number, MiB unless K, M, G or T
    follows, optionally with B), rounded up; None if unreadable."""
    match = _SIZE.fullmatch(text)
    if not match:
        return None
    kib = int(match[1]) * _UNIT_KIB[(match[2] or "m").lower()]
    return -(-kib // 1024)
