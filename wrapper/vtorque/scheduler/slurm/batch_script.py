"""A job script's `#SBATCH` directives read the way Slurm 22.05's sbatch reads them, `--vm` split off.

sbatch (src/sbatch/opt.c, _opt_batch_script and get_argument):
- a directive is a line starting, in its first column, with `#SBATCH` (or the old `#SLURM`);
  reading stops at the first line that is neither blank nor a comment (the shebang is one);
- a line's arguments are split at whitespace; '...' and "..." group, a backslash takes the next
  character literally (but an escaped blank still ends the argument), an unquoted `#` starts a
  comment, an empty argument ("") or a `hetjob`/`packjob` word ends the line's arguments;
- the arguments of all lines form ONE argv for getopt (a value may sit on the next line), and
  an operand in it is an error. A line starting with `hetjob` starts the next component of a
  heterogeneous job.

Lines without `--vm` are kept verbatim for the generated wrapper; a line with one is written
again without it, each argument quoted so sbatch reads it back unchanged.

sbatch also translates `#PBS` and `#BSUB` lines (unless --ignore-pbs), anywhere in the first
hundred non-comment lines and over the #SBATCH lines; `foreign_line` finds them, because a VM
job's wrapper does not carry them.
"""

import os
import re
from collections import namedtuple

from vtorque.scheduler.slurm.sbatch_args import DIRECTIVE_OWN, SbatchArgsError, parse_sbatch_argv

PREFIXES = ("#SBATCH", "#SLURM")
FOREIGN_PREFIXES = ("#BSUB", "#PBS")  # what sbatch's xlate_batch_script translates
FOREIGN_SCAN_LINES = 100  # xlate stops after this many lines not starting with '#'
C_SPACE = " \t\n\v\f\r"  # C's isspace(): the blanks sbatch splits at
HET_WORD = re.compile(r"(hetjob|packjob)(?=[ \t\n\v\f\r]|$)", re.IGNORECASE)
WRAP_HEADER = b"#!/bin/sh\n# This script was created by sbatch --wrap.\n\n"

BatchScript = namedtuple("BatchScript", "name content directives vm args het_job foreign_line")
BatchScript.__doc__ = """A script as sbatch reads it: the kept directive lines, the `--vm` values
with their source, the sbatch options of all directives (SbatchArgs), whether it has a
`hetjob` separator, and the first `#PBS`/`#BSUB` line sbatch would translate ((number, text)
or None). A namedtuple: vsbatch's bare-metal path avoids dataclasses."""

Directive = namedtuple("Directive", "number text prefix arguments")


def read_batch_script(content, name):
    """The BatchScript of `content` (bytes) submitted as `name`."""
    lines = content.decode("utf-8", "surrogateescape").split("\n")
    directives, het_job = _directive_lines(lines, name)
    tokens = [token for directive in directives for token in directive.arguments]
    owners = [directive for directive in directives for _ in directive.arguments]
    try:
        args = parse_sbatch_argv(tokens, None, own=DIRECTIVE_OWN)
    except SbatchArgsError as err:
        raise SbatchArgsError(err.reason, _source(owners[err.index], name)) from None
    if args.script is not None:
        operand = owners[len(tokens) - len(args.script_args) - 1]
        raise SbatchArgsError(
            f"invalid directive found in batch script: {args.script!r}", _source(operand, name)
        )
    kept, vm = _split_off_vm(directives, owners, args, name)
    return BatchScript(name, content, tuple(kept), tuple(vm), args, het_job, foreign_line(lines))


def _directive_lines(lines, name):
    """([Directive] before the first command line, whether a hetjob separator was seen)."""
    found, het_job = [], False
    for number, line in enumerate(lines, start=1):
        prefix = next((prefix for prefix in PREFIXES if line.startswith(prefix)), None)
        if prefix is None:
            if _is_command(line):
                break
            continue
        rest = line[len(prefix) :].lstrip(C_SPACE)
        het_job = het_job or bool(HET_WORD.match(rest))
        source = f"{name} line {number} ({prefix} directive)"
        found.append(Directive(number, line, prefix, tuple(split_directive(rest, source))))
    return found, het_job


def _is_command(line):
    stripped = line.lstrip(C_SPACE)
    return bool(stripped) and not stripped.startswith("#")


def _source(directive, name):
    return f"{name} line {directive.number} ({directive.prefix} directive)"


def split_directive(text, source):
    """The arguments sbatch's get_argument reads from `text` (a directive line after its
    prefix): see the module docstring for its rules."""
    arguments, position = [], 0
    while True:
        while position < len(text) and text[position] in C_SPACE:
            position += 1
        if HET_WORD.match(text, position):
            return arguments  # sbatch blanks the word, and the blank ends the arguments
        if text.startswith(":", position):
            raise SbatchArgsError(f"unexpected `:` in {text.strip()!r}", source)
        argument, position = _argument(text, position, source)
        if not argument:
            return arguments
        arguments.append(argument)


def _argument(text, position, source):
    """(one argument from `position`, where reading stopped): quotes group, a backslash takes
    the next character, an unquoted '#' starts a comment."""
    characters, quote, escaped = [], None, False
    while position < len(text) and (quote or text[position] not in C_SPACE):
        character = text[position]
        position += 1
        if escaped:
            escaped = False
        elif character == "\\":
            escaped = True
            continue
        elif quote:
            if character == quote:
                quote = None
                continue
        elif character in "\"'":
            quote = character
            continue
        elif character == "#":
            return "".join(characters), len(text)
        characters.append(character)
    if quote:
        raise SbatchArgsError(f"unmatched `{quote}` in {text.strip()!r}", source)
    return "".join(characters), position


def quote_directive_argument(argument):
    """`argument` spelled so that split_directive reads it back unchanged."""
    if argument and not re.search(r"[\s\"'\\#]", argument) and not argument.startswith(":"):
        if not HET_WORD.match(argument):
            return argument
    return '"' + argument.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _split_off_vm(directives, owners, args, name):
    """(kept directive lines, [(--vm value, source)]): a line with a --vm loses it (its
    value must be on the same line, as a line is what vsbatch rewrites)."""
    dropped, vm = set(), []
    for option in args.options:
        if option.name != "vm":
            continue
        span = range(option.start, option.start + len(option.tokens))
        lines = {owners[index].number for index in span}
        directive = owners[option.start]
        if len(lines) > 1:
            raise SbatchArgsError("--vm needs its value on the same line", _source(directive, name))
        dropped.update(span)
        vm.append((option.value, _source(directive, name)))
    kept, index = [], 0
    for directive in directives:
        span = range(index, index + len(directive.arguments))
        index += len(directive.arguments)
        if not dropped.intersection(span):
            kept.append(directive.text)
            continue
        remaining = [directive.arguments[i - span.start] for i in span if i not in dropped]
        if remaining:
            kept.append(f"{directive.prefix} {' '.join(map(quote_directive_argument, remaining))}")
    return kept, vm


def script_problem(content):
    """Why sbatch would refuse `content` as a batch script (its _get_script_buffer checks, which
    a VM job's wrapper would pass in its place), or None."""
    if not content.strip(C_SPACE.encode()):
        return "the batch script is empty or contains only whitespace"
    if not content.startswith(b"#!"):
        return (
            "this does not look like a batch script: the first line must start with #! followed by"
            " the path to an interpreter (for instance #!/bin/sh)"
        )
    if b"\0" in content:
        return "the Slurm controller does not allow scripts that contain a NULL character"
    if b"\r\n" in content:
        return "the batch script contains DOS line breaks (\\r\\n) instead of UNIX line breaks (\\n)"
    return None


def foreign_line(lines):
    """(number, text) of the first #BSUB or #PBS line sbatch would translate, or None."""
    commands = 0
    for number, line in enumerate(lines, start=1):
        if line.startswith(FOREIGN_PREFIXES):
            return number, line
        if not line.startswith("#"):
            commands += 1
            if commands > FOREIGN_SCAN_LINES:
                break
    return None


def mentions_vm(content):
    """Whether a directive line of `content` (before the first command) has a `--vm`
    argument, read leniently: a script sbatch cannot read is bare metal only without one."""
    for line in content.decode("utf-8", "surrogateescape").split("\n"):
        if line.startswith(PREFIXES):
            if re.search(r"(^|\s)--vm(=|\s|$)", line):
                return True
        elif _is_command(line):
            return False
    return False


def find_script(operand, cwd, search_path):
    """The file sbatch submits for the script operand (its search_path): a name starting with
    '.' or '/' as given; any other first in `cwd`, then in each $PATH directory (a relative
    one taken from `cwd`); the operand as given if none has it."""
    if operand.startswith((".", "/")) or not search_path:
        return operand
    for directory in [cwd, *search_path.split(":")]:
        base = os.path.join(cwd, directory) if directory.startswith(".") else directory
        candidate = os.path.join(base, operand)
        if os.path.exists(candidate):
            return candidate
    return operand


def wrapped_script(command):
    """The script sbatch makes of `--wrap=command`."""
    return WRAP_HEADER + command.encode("utf-8", "surrogateescape") + b"\n"
