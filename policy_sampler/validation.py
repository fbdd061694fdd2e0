"""Checks of user-given settings, each raising a ``ValueError`` that names the setting and what it got.

Every layer validates its arguments with these, so the messages read the same everywhere::

    steps = check_int("steps", steps, minimum=1)
    tolerance = check_number("tolerance", tolerance, positive=True)
    mode = check_choice("mode", mode, ("eager", "compile"))

Integers accept Python and numpy integers but never ``bool`` (``True`` is an ``int`` to Python, never a
count to a user); numbers accept ints and floats (not ``bool``) and must be finite unless
``finite=False``. ``allow_none=True`` lets ``None`` through unchanged.
"""

from __future__ import annotations

import math
from collections.abc import Collection
from typing import Any

import numpy as np

__all__ = ["check_bool", "check_choice", "check_int", "check_number", "is_int"]


def is_int(value: Any) -> bool:
    """True for Python and numpy integers, False for ``bool`` and everything else."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def _bounds_text(minimum: float | None, maximum: float | None) -> str:
    if minimum is not None and maximum is not None:
        return f" in [{minimum}, {maximum}]"
    if minimum is not None:
        return f" >= {minimum}"
    if maximum is not None:
        return f" <= {maximum}"
    return ""


def check_int(name: str, value: Any, *, minimum: int | None = None, maximum: int | None = None,
              allow_none: bool = False) -> int | None:
    """``value`` as an ``int`` within ``[minimum, maximum]`` (either end optional)."""
    if value is None and allow_none:
        return None
    if not is_int(value) or (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        none = " or None" if allow_none else ""
        raise ValueError(f"{name} must be an integer{_bounds_text(minimum, maximum)}{none}, got {value!r}")
    return int(value)


def check_number(name: str, value: Any, *, minimum: float | None = None, maximum: float | None = None,
                 positive: bool = False, finite: bool = True, allow_none: bool = False) -> float | None:
    """``value`` as a ``float``: finite (unless ``finite=False``), ``> 0`` when ``positive``, within
    ``[minimum, maximum]`` (either end optional)."""
    if value is None and allow_none:
        return None
    ok = (isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_))
          and not math.isnan(value) and (not finite or math.isfinite(value))
          and (not positive or value > 0) and (minimum is None or value >= minimum)
          and (maximum is None or value <= maximum))
    if not ok:
        kind = ("a positive " if positive else "a ") + ("finite number" if finite else "number")
        none = " or None" if allow_none else ""
        raise ValueError(f"{name} must be {kind}{_bounds_text(minimum, maximum)}{none}, got {value!r}")
    return float(value)


def check_bool(name: str, value: Any) -> bool:
    """``value`` if it is ``True`` or ``False`` (not a truthy string or number)."""
    if not isinstance(value, (bool, np.bool_)):
        raise ValueError(f"{name} must be True or False, got {value!r}")
    return bool(value)


def check_choice(name: str, value: Any, choices: Collection[Any]) -> Any:
    """``value`` if it is one of ``choices``."""
    try:
        ok = value in choices
    except TypeError:  # an unhashable value against a set
        ok = False
    if not ok:
        raise ValueError(f"{name} must be one of {list(choices)}, got {value!r}")
    return value
