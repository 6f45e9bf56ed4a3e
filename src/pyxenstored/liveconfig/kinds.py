"""Value kinds of settings: how a tree value (bytes) is parsed, validated and printed.

A kind is a pair of functions; parsing raises :class:`~pyxenstored.errors.Invalid` for a
bad value, which the tree and the control surface answer as EINVAL with nothing changed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..errors import Invalid

__all__ = ["BOOL", "FLOAT", "Kind", "choice", "integer", "names"]


@dataclass(frozen=True, slots=True)
class Kind:
    """How one kind of value travels through the tree."""

    name: str
    parse: Callable[[str], Any]
    format: Callable[[Any], str]


def integer(minimum: int = 0, maximum: int = 2**32 - 1) -> Kind:
    """A decimal integer within [minimum, maximum]."""

    def parse(text: str) -> int:
        t = text.strip()
        if not t.isdigit():
            raise Invalid(f"not a non-negative integer: {text!r}")
        value = int(t)
        if not minimum <= value <= maximum:
            raise Invalid(f"{value} outside [{minimum}, {maximum}]")
        return value

    return Kind(f"integer {minimum}..{maximum}", parse, str)


def _parse_float(text: str) -> float:
    try:
        value = float(text.strip())
    except ValueError:
        raise Invalid(f"not a number: {text!r}") from None
    if value != value or value < 0 or value == float("inf"):
        raise Invalid(f"not a finite non-negative number: {text!r}")
    return value


FLOAT = Kind("number", _parse_float, lambda v: f"{v:g}")

_TRUE = {"1", "on", "true", "yes"}
_FALSE = {"0", "off", "false", "no"}


def _parse_bool(text: str) -> bool:
    t = text.strip().lower()
    if t in _TRUE:
        return True
    if t in _FALSE:
        return False
    raise Invalid(f"not on/off: {text!r}")


BOOL = Kind("on|off", _parse_bool, lambda v: "on" if v else "off")


def choice(*options: str) -> Kind:
    """One of a fixed set of words."""

    def parse(text: str) -> str:
        t = text.strip()
        if t not in options:
            raise Invalid(f"{text!r} is not one of {', '.join(options)}")
        return t

    return Kind("|".join(options), parse, str)


def names(universe: tuple[str, ...]) -> Kind:
    """``all``, ``none``, or a space-separated subset of ``universe``."""

    def parse(text: str) -> frozenset[str]:
        words = text.split()
        if words == ["all"]:
            return frozenset(universe)
        if words == ["none"] or not words:
            return frozenset()
        unknown = [w for w in words if w not in universe]
        if unknown:
            raise Invalid(f"unknown names: {' '.join(unknown)}")
        return frozenset(words)

    def fmt(value: frozenset[str]) -> str:
        if value == frozenset(universe):
            return "all"
        if not value:
            return "none"
        return " ".join(n for n in universe if n in value)

    return Kind("all|none|NAME...", parse, fmt)
