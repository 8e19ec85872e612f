"""The attrs validators every configuration class shares: one rule per kind of number.

Settings come from code, command lines and environment variables; a wrong one must fail when the
configuration is built (at start-up), with its name, never later inside a call.  The rules:
a value of the wrong type (``bool`` is not a number here, ``"5"`` is not one either) raises
``TypeError``; a number out of range raises ``ValueError``.  NaN is out of every range (``not
nan > 0``): a NaN timeout would never fire, so it is refused like zero.  So is infinity, for
"positive": a setting that may be off says so with ``None`` (``positive_or_none``), and an
infinite number of seconds breaks the arithmetic done with it (a credential's expiry).
"""

from __future__ import annotations

import math
from typing import Any

import attrs

__all__ = [
    "non_negative",
    "non_negative_int",
    "positive",
    "positive_int",
    "positive_int_or_none",
    "positive_or_none",
]


def _number(attribute: attrs.Attribute[Any], value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{attribute.name} must be a number, got {value!r}")
    return value


def positive(_inst: object, attribute: attrs.Attribute[Any], value: object) -> None:
    """A finite number > 0 (seconds, rates, factors)."""
    number = _number(attribute, value)
    if not (number > 0 and math.isfinite(number)):
        raise ValueError(f"{attribute.name} must be > 0 and finite, got {value!r}")


def positive_or_none(_inst: object, attribute: attrs.Attribute[Any], value: object) -> None:
    """``None`` (the setting is off) or a number > 0."""
    if value is not None:
        positive(_inst, attribute, value)


def non_negative(_inst: object, attribute: attrs.Attribute[Any], value: object) -> None:
    """A finite number >= 0 (a delay or a margin that may be nothing)."""
    number = _number(attribute, value)
    if not (number >= 0 and math.isfinite(number)):
        raise ValueError(f"{attribute.name} must be >= 0 and finite, got {value!r}")


def positive_int(_inst: object, attribute: attrs.Attribute[Any], value: object) -> None:
    """An ``int`` > 0 (counts, sizes); ``bool`` and ``float`` are refused."""
    if type(value) is not int:
        raise TypeError(f"{attribute.name} must be an int, got {value!r}")
    if value <= 0:
        raise ValueError(f"{attribute.name} must be an int > 0, got {value!r}")


def non_negative_int(_inst: object, attribute: attrs.Attribute[Any], value: object) -> None:
    """An ``int`` >= 0 (a bound that may be zero: nothing kept, nothing allowed)."""
    if type(value) is not int:
        raise TypeError(f"{attribute.name} must be an int, got {value!r}")
    if value < 0:
        raise ValueError(f"{attribute.name} must be an int >= 0, got {value!r}")


def positive_int_or_none(_inst: object, attribute: attrs.Attribute[Any], value: object) -> None:
    """``None`` (no limit) or an ``int`` > 0."""
    if value is not None:
        positive_int(_inst, attribute, value)
