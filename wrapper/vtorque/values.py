"""Parsers for the scalar values users and admins write: sizes, booleans, counts.

Shared by the `-vm` grammar and the site config, so both accept exactly the same spellings.
Each parser raises ValueError with a message that says what is accepted; callers add the
key and the source.
"""

import re

SIZE_ACCEPTED = "a size in MiB, or a number with a binary suffix K, M, G or T (e.g. 512M, 15G)"
BOOL_ACCEPTED = "true/false, yes/no, on/off, enabled/disabled"

_SIZE = re.compile(r"(?P<number>[0-9]+)(?P<suffix>[KMGT]?)(?:I?B)?", re.IGNORECASE)
_KIB_FACTOR = {"K": 1, "M": 1024, "G": 1024**2, "T": 1024**3}
_TRUE = frozenset({"true", "yes", "on", "enabled"})
_FALSE = frozenset({"false", "no", "off", "disabled"})


def parse_size_mib(value):
    """'15G' -> 15360; a plain number is MiB; K rounds up to whole MiB. Ints pass through."""
    if isinstance(value, bool):
        raise ValueError(f"expected {SIZE_ACCEPTED}")
    if isinstance(value, int):
        if value <= 0:
            raise ValueError(f"must be positive; expected {SIZE_ACCEPTED}")
        return value
    match = _SIZE.fullmatch(str(value).strip())
    if not match:
        raise ValueError(f"expected {SIZE_ACCEPTED}")
    suffix = match["suffix"].upper() or "M"
    kib = int(match["number"]) * _KIB_FACTOR[suffix]
    if kib <= 0:
        raise ValueError(f"must be positive; expected {SIZE_ACCEPTED}")
    return -(-kib // 1024)


def parse_bool(value):
    """Words only. 0/1 are refused: the original read `0` as true (shell exit-code style)."""
    if isinstance(value, bool):
        return value
    word = str(value).strip().lower()
    if word in _TRUE:
        return True
    if word in _FALSE:
        return False
    if word in {"0", "1"}:
        raise ValueError(
            f"'{value}' is ambiguous (the original vTorque read 0 as true); write {BOOL_ACCEPTED}"
        )
    raise ValueError(f"expected {BOOL_ACCEPTED}")


def parse_count(value, minimum=1):
    """A whole number >= minimum, written in decimal digits (no sign, no suffix)."""
    if isinstance(value, bool):
        raise ValueError("expected a whole number")
    if isinstance(value, int):
        number = value
    elif re.fullmatch(r"[0-9]+", str(value).strip()):
        number = int(str(value).strip())
    else:
        raise ValueError("expected a whole number")
    if number < minimum:
        raise ValueError(f"must be at least {minimum}")
    return number


def parse_choice(choices):
    """A parser accepting one of `choices`, case-insensitive."""

    def parse(value):
        word = str(value).strip().lower()
        if word not in choices:
            raise ValueError(f"expected one of {', '.join(choices)}")
        return word

    return parse
