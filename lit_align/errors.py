"""Errors a user reads, and the range checks that raise them.

``UserError`` and its subclasses mean "the input or the configuration is wrong": the CLI prints
their message as one paragraph (``lit_align: error: ...``) without a traceback. Anything else is a
bug and keeps its traceback. Messages name the file/row/field or the option, the value, and the fix.
"""

from __future__ import annotations

import math
from typing import Any


class UserError(Exception):
    """Bad input or configuration; the message says what is wrong and what to do."""


class ConfigError(UserError, ValueError):
    """An argument out of its valid range, or settings that do not fit together."""


class DataError(UserError, ValueError):
    """Bad input data: the message names the source, row and field, and says what to do."""


def _interval(low: float | None, high: float | None, low_open: bool, high_open: bool) -> str:
    left = "(" if low_open or low is None else "["
    right = ")" if high_open or high is None else "]"
    return f"{left}{'-inf' if low is None else low}, {'inf' if high is None else high}{right}"


def check_range(
    owner: Any,
    name: str,
    value: float | int | None,
    low: float | None = None,
    high: float | None = None,
    *,
    low_open: bool = False,
    high_open: bool = False,
    allow_none: bool = False,
    integer: bool = False,
) -> None:
    """Raise ``ConfigError`` unless ``low <= value <= high`` (strict where ``*_open``) and finite.

    ``owner`` (a class, instance or string) names who owns the argument in the message, e.g.
    ``DPO: beta must be in (0, inf), got -1.0``.
    """
    who = owner if isinstance(owner, str) else (owner.__name__ if isinstance(owner, type) else type(owner).__name__)
    if value is None:
        if allow_none:
            return
        raise ConfigError(f"{who}: {name} must be set (in {_interval(low, high, low_open, high_open)}), got None")
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if ok and integer:
        ok = float(value).is_integer()
    if ok and low is not None:
        ok = value > low if low_open else value >= low
    if ok and high is not None:
        ok = value < high if high_open else value <= high
    if not ok:
        kind = "an integer " if integer else ""
        raise ConfigError(f"{who}: {name} must be {kind}in {_interval(low, high, low_open, high_open)}, got {value!r}")
