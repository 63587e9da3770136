"""Type and range checks of config dataclasses (they are read from user-editable config.json files).

`check_types` compares every field with its annotation (`int`, `float`, `bool`, `str`,
`dict`, `X | None`): an `int` field refuses a bool or a string ("128"), a `float` field
takes ints. `check_positive` / `check_id` give the range errors. Each error names the field.
"""

from __future__ import annotations

import dataclasses
import types
import typing

_SIMPLE = {int: "an int", float: "a number", bool: "a bool", str: "a string", dict: "an object"}


def _fits(value, tp) -> bool:
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, tp)


def check_types(obj) -> None:
    """TypeError naming the first field of dataclass `obj` whose value does not match its annotation."""
    hints = typing.get_type_hints(type(obj))
    for f in dataclasses.fields(obj):
        tp, value = hints[f.name], getattr(obj, f.name)
        options = typing.get_args(tp) if isinstance(tp, types.UnionType) or typing.get_origin(tp) is typing.Union \
            else (tp,)
        options = tuple(typing.get_origin(o) or o for o in options)
        if any(o is type(None) and value is None or o is not type(None) and _fits(value, o) for o in options):
            continue
        want = " or ".join("null" if o is type(None) else _SIMPLE.get(o, o.__name__) for o in options)
        raise TypeError(f"{f.name} must be {want}, got {type(value).__name__} {value!r}")


def check_positive(obj, *names: str, allow_zero: bool = False) -> None:
    """ValueError naming the first of the fields `names` that is not > 0 (≥ 0 with `allow_zero`)."""
    for name in names:
        value = getattr(obj, name)
        if value < 0 or (value == 0 and not allow_zero):
            raise ValueError(f"{name} must be {'≥ 0' if allow_zero else '> 0'}, got {value!r}")


def check_id(obj, name: str, vocab_size: int) -> None:
    """ValueError unless the token-id field `name` is None or in [0, vocab_size)."""
    value = getattr(obj, name)
    if value is not None and not 0 <= value < vocab_size:
        raise ValueError(f"{name} {value} is outside the vocabulary [0, {vocab_size})")
