"""Shared argument checks for components' ``__post_init__``: cheap, and each failure a
``ConfigError`` at the field's path naming the bad value and what is allowed.

Kernel: imports only ``ragkit.errors``. The messages read the same everywhere, e.g.
``chunk_size: must be an int >= 1; got 0`` or ``lambda_: must be a number in [0.0, 1.0]; got 2``;
builders prefix the component's own path (``chunker.chunk_size: ...``) as the error unwinds.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

from ragkit.errors import ConfigError


def _bounds(low: float | None, high: float | None) -> str:
    if low is not None and high is not None:
        return f" in [{low}, {high}]"
    if low is not None:
        return f" >= {low}"
    if high is not None:
        return f" <= {high}"
    return ""


def _allowed(what: str, low: Any, high: Any, null: bool, hint: str) -> str:
    tail = " or null" if null else ""
    note = f" ({hint})" if hint else ""
    return f"must be {what}{_bounds(low, high)}{tail}{note}"


def check_int(
    value: Any,
    path: str,
    *,
    min: int | None = None,  # noqa: A002 - reads as the constraint it is
    max: int | None = None,  # noqa: A002
    null: bool = False,
    hint: str = "",
) -> int | None:
    """``value`` if it is an int (not a bool) within ``[min, max]``, or ``None`` when ``null``
    allows it; otherwise a ConfigError at ``path``. ``hint`` is a note on the unit or meaning,
    shown in parentheses (``must be an int >= 0 (sentences)``)."""
    if null and value is None:
        return None
    if (
        isinstance(value, bool)
        or not isinstance(value, int)
        or (min is not None and value < min)
        or (max is not None and value > max)
    ):
        raise ConfigError(f"{_allowed('an int', min, max, null, hint)}; got {value!r}", path=path)
    return value


def check_float(
    value: Any,
    path: str,
    *,
    min: float | None = None,  # noqa: A002
    max: float | None = None,  # noqa: A002
    null: bool = False,
    hint: str = "",
) -> float | None:
    """``value`` as a float if it is a finite int or float (not a bool) within ``[min, max]``,
    or ``None`` when ``null`` allows it; otherwise a ConfigError at ``path``. An infinite bound
    (``max=math.inf``) is written in the message but only finite values pass."""
    if null and value is None:
        return None
    ok = (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(value)
        and (min is None or value >= min)
        and (max is None or value <= max)
    )
    if not ok:
        raise ConfigError(f"{_allowed('a number', min, max, null, hint)}; got {value!r}",
                          path=path)
    return float(value)


def check_bool(value: Any, path: str) -> bool:
    """``value`` if it is ``True`` or ``False`` (not 0/1, not ``"yes"``)."""
    if not isinstance(value, bool):
        raise ConfigError(f"must be true or false; got {value!r}", path=path)
    return value


def check_choice(value: Any, path: str, choices: Iterable[Any], *, what: str = "") -> Any:
    """``value`` if it is one of ``choices``; the message names it as ``what`` (e.g. "mode")."""
    choices = tuple(choices)
    if isinstance(value, bool) or value not in choices:  # True == 1: a flag is never a choice
        label = f"unknown {what} {value!r}" if what else f"unknown value {value!r}"
        raise ConfigError(f"{label}; choose one of {', '.join(map(str, choices))}", path=path)
    return value
