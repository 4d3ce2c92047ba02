"""The generic walker that turns a YAML mapping into the site config's frozen dataclasses.

Each field's type (bool, int, str, Literal choices, lists, nested sections) or the parser in
its metadata converts the value; every problem is collected with its dotted key, so `vtorque
config check` reports them all at once.
"""

import dataclasses
import types
import typing
from typing import Literal

from vtorque.values import parse_bool, parse_count


def _join(where, key):
    return f"{where}.{key}" if where else str(key)


def build(cls, data, where, problems):
    """`cls(**data)` after converting each value by its declared type; problems collected."""
    if not isinstance(data, dict):
        problems.append(f"{where or 'top level'}: expected a mapping, got {type(data).__name__}")
        return cls()
    known = {f.name: f for f in dataclasses.fields(cls) if not f.metadata.get("internal")}
    for key in data:
        if key not in known:
            problems.append(f"{_join(where, key)}: unknown key (known keys here: {', '.join(known)})")
    hints = typing.get_type_hints(cls)
    values = {}
    for name, spec in known.items():
        if name in data:
            key = _join(where, name)
            try:
                values[name] = _convert(hints[name], data[name], spec.metadata, key, problems)
            except ValueError as err:
                problems.append(f"{key}: {err}, got {data[name]!r}")
    return cls(**values)


def _convert(hint, value, meta, key, problems):
    args = typing.get_args(hint)
    if isinstance(hint, types.UnionType):
        if value is None:
            return None
        (hint,) = [arg for arg in args if arg is not type(None)]
        args = typing.get_args(hint)
    if "parse" in meta:
        return meta["parse"](value)
    if dataclasses.is_dataclass(hint):
        return build(hint, value, key, problems)
    origin = typing.get_origin(hint)
    if origin is Literal:
        if value not in args:
            raise ValueError(f"expected one of {', '.join(map(str, args))}")
        return value
    if origin is list:
        if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
            raise ValueError("expected a list of strings")
        return list(value)
    if origin is dict:
        if args[1] is str:
            if not isinstance(value, dict) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in value.items()
            ):
                raise ValueError("expected a mapping of strings to strings")
            return dict(value)
        if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
            raise ValueError("expected a mapping with string keys")
        converted = {}
        for name, item in value.items():  # each entry converted by the value type, named by its key
            try:
                converted[name] = _convert(args[1], item, {}, _join(key, name), problems)
            except ValueError as err:
                problems.append(f"{_join(key, name)}: {err}, got {item!r}")
        return converted
    if hint is bool:
        return parse_bool(value)
    if hint is int:
        return parse_count(value, minimum=meta.get("min", 1))
    if hint is str:
        if not isinstance(value, str):
            raise ValueError("expected a string")
        return value
    raise TypeError(f"no converter for {hint!r} at {key}")
