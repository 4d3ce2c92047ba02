"""The qsub command line as Torque 6.1's qsub reads it (getopt), and the `-l` rewriting vTorque needs.

Options are kept as (option, value) pairs in their original order so they pass through
unchanged; `-vm` is vTorque's and is split off before getopt sees it (getopt would read it as
`-v m`). Only the exact token `-vm` is ours; `-vmX` stays qsub's `-v mX`.
"""

import re
from collections import namedtuple

from vtorque.errors import QsubArgsError

FLAGS = frozenset("fhInVxXz")
WITH_VALUE = frozenset("aAbcCdDeFjkKlLmMNopPqrStTuvwW")
VM_OPTION = "-vm"


class QsubArgs(namedtuple("QsubArgs", "options script vm", defaults=((), None, ()))):
    """`options`: (letter, value or None) in order; `script`: the operand or None (stdin);
    `vm`: the `-vm` values. A namedtuple, not a dataclass: the bare-metal path must start fast."""

    __slots__ = ()

    def has(self, letter):
        return any(opt == letter for opt, _ in self.options)

    def values(self, letter):
        return [value for opt, value in self.options if opt == letter]

    def argv(self):
        """Options back as argv tokens (the script operand is not included)."""
        tokens = []
        for letter, value in self.options:
            tokens.append(f"-{letter}")
            if value is not None:
                tokens.append(value)
        return tokens


def parse_qsub_argv(argv, source="command line"):
    """getopt-style parse: clustered flags (`-hV`), attached values (`-lnodes=2`), `--`,
    operands anywhere (GNU permutation). `-vm VALUE` pairs are collected in `vm`."""
    options, operands, vm = [], [], []
    tokens = list(argv)
    index = 0
    while index < len(tokens):
        token = tokens[index]
        index += 1
        if token == "--":  # noqa: S105 - getopt end of options
            operands.extend(tokens[index:])
            break
        if token == VM_OPTION:
            if index >= len(tokens):
                raise QsubArgsError(f"{source}: -vm needs a value: -vm key=value[,key=value...]")
            vm.append(tokens[index])
            index += 1
            continue
        if not token.startswith("-") or token == "-":  # noqa: S105 - stdin operand
            operands.append(token)
            continue
        position = 1
        while position < len(token):
            letter = token[position]
            position += 1
            if letter in FLAGS:
                options.append((letter, None))
            elif letter in WITH_VALUE:
                if position < len(token):
                    value = token[position:]
                elif index < len(tokens):
                    value = tokens[index]
                    index += 1
                else:
                    raise QsubArgsError(f"{source}: qsub option -{letter} needs a value")
                options.append((letter, value))
                break
            else:
                raise QsubArgsError(f"{source}: unknown qsub option -{letter} in {token!r}")
    if len(operands) > 1:
        raise QsubArgsError(f"{source}: more than one job script given: {' '.join(operands)}")
    return QsubArgs(tuple(options), operands[0] if operands else None, tuple(vm))


# --- -l resources -------------------------------------------------------------------------

_MEM = re.compile(r"(?P<n>[0-9]+)(?P<unit>b|w|kb|kw|mb|mw|gb|gw|tb|tw)?", re.IGNORECASE)
_MEM_KIB = {"b": 1 / 1024, "kb": 1, "mb": 1024, "gb": 1024**2, "tb": 1024**3}


def split_resources(value):
    """'nodes=2:ppn=4,walltime=1:00:00' -> [('nodes', '2:ppn=4'), ('walltime', '1:00:00')]."""
    pairs = []
    for item in value.split(","):
        name, _, rest = item.partition("=")
        pairs.append((name.strip(), rest if _ else None))
    return pairs


def join_resources(pairs):
    return ",".join(name if rest is None else f"{name}={rest}" for name, rest in pairs)


def resource(args, name):
    """The last value of resource `name` over every `-l` of `args`, or None."""
    found = None
    for value in args.values("l"):
        for key, rest in split_resources(value):
            if key == name:
                found = rest
    return found


def nodes_count(spec):
    """Number of hosts a `nodes=` spec asks for: '2:ppn=4+node7:ppn=1' -> 3."""
    total = 0
    for part in spec.split("+"):
        head = part.split(":", 1)[0]
        total += int(head) if head.isdigit() else 1
    return total


def raise_ppn(spec, ppn):
    """Every `+` part of a nodes spec gets at least `ppn`; returns (new spec, smallest old ppn)."""
    parts, lowest = [], None
    for part in spec.split("+"):
        fields = part.split(":")
        found = [i for i, f in enumerate(fields) if f.startswith("ppn=")]
        old = int(fields[found[-1]][4:]) if found and fields[found[-1]][4:].isdigit() else 1
        lowest = old if lowest is None else min(lowest, old)
        if old < ppn:
            if found:
                fields[found[-1]] = f"ppn={ppn}"
            else:
                fields.append(f"ppn={ppn}")
        parts.append(":".join(fields))
    return "+".join(parts), lowest


def mem_mib(text):
    """Torque size ('4gb', '512mb', '1024', words: '1mw' = 8 MiB) in MiB, rounded up; None if unreadable."""
    match = _MEM.fullmatch(text.strip())
    if not match:
        return None
    unit = (match["unit"] or "b").lower()
    word_bytes = 8 if unit.endswith("w") else 1
    kib = int(match["n"]) * word_bytes * _MEM_KIB[unit[:-1] + "b" if len(unit) == 2 else "b"]
    return -(-int(kib) // 1024)


def set_resource(args, name, value):
    """Set resource `name` on the command line: in place in the last `-l` that has it,
    otherwise as a new `-l name=value` appended (the command line overrides `#PBS` lines)."""
    options = list(args.options)
    for index in range(len(options) - 1, -1, -1):
        letter, text = options[index]
        if letter == "l" and any(key == name for key, _ in split_resources(text)):
            pairs = [(key, value if key == name else rest) for key, rest in split_resources(text)]
            options[index] = ("l", join_resources(pairs))
            return args._replace(options=tuple(options))
    return args._replace(options=(*options, ("l", f"{name}={value}")))
