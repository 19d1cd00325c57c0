"""The one exception type users see (a bad input or state, reported as one line by the CLI), and the check
of a settings dataclass that raises it."""

from __future__ import annotations

import dataclasses
import math
import types
import typing


class DdnbError(Exception):
    """A problem the user can fix (bad path, unknown name, impossible setting, corrupt file)."""


class WriteError(DdnbError):
    """A file could not be written (a full disk, a read-only or missing folder): a fault of the place written
    to, whichever argument led there, so the CLI does not attribute it to one."""


def first_line(error: BaseException) -> str:
    """The first line of an exception's text (library messages can run to paragraphs of advice)."""
    lines = str(error).strip().splitlines()
    return lines[0] if lines else type(error).__name__


def _simple_types(hint: object) -> set[type] | None:
    """The types a field annotated ``hint`` takes when they are all plain (int, float, bool, str, None), else None."""
    members = typing.get_args(hint) if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union else (hint,)
    allowed = set(members)
    return allowed if allowed <= {int, float, bool, str, type(None)} else None


def _problem(value: object, allowed: set[type], metadata: typing.Mapping) -> str | None:
    """What is wrong with ``value`` for a field of ``allowed`` types and ``metadata`` bounds, or None."""
    if "choices" in metadata:
        return None if value in metadata["choices"] else f"must be one of {', '.join(map(str, metadata['choices']))}"
    if bool in allowed or str in allowed:
        kind = bool if bool in allowed else str
        return None if type(value) is kind else f"must be {'true or false' if kind is bool else 'a string'}"
    integer = float not in allowed
    low, high = metadata.get("min", 1 if integer else 0), metadata.get("max")
    number = type(value) is int or (not integer and type(value) is float and math.isfinite(value))  # a bool is no number
    if number and low <= value and (high is None or value <= high):
        return None
    return f"must be {'a whole number' if integer else 'a finite number'} >= {low}" + ("" if high is None else f" and <= {high}")


def check_fields(instance: object) -> None:
    """Raise ``DdnbError`` naming the first field of a settings dataclass whose value does not fit its declared
    type: int (at least 1), float (finite, at least 0; an int is accepted), bool, str, or any of them or None.
    A field's metadata may set other bounds (``min``, ``max``) or list the accepted values (``choices``);
    fields of other types are not checked. Called from ``__post_init__``, so a bad value fails where it is set,
    not steps later as a type error deep inside PyTorch."""
    hints = typing.get_type_hints(type(instance))
    for field in dataclasses.fields(instance):
        allowed, value = _simple_types(hints[field.name]), getattr(instance, field.name)
        if allowed is None or (value is None and type(None) in allowed):
            continue
        problem = _problem(value, allowed - {type(None)}, field.metadata)
        if problem:
            raise DdnbError(f"{field.name} {problem}, got {value!r}")
