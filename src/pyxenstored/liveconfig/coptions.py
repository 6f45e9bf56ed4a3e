"""C xenstored's command-line options, read as start values of our settings.

Debian's ``launch-xenstore`` passes ``$XENSTORED_ARGS`` to whatever ``$XENSTORED`` names,
so pyxenstored accepts C xenstored's options (4.17's and the later ones). The command
line (``cli.py``) collects them in the order given as ``(long name, argument)`` pairs;
:func:`translate` turns them into setting values, as C applies them: in order, the last
one wins. Options that name a C internal we do not have are accepted and reported in
:attr:`Translation.ignored`, one line each saying why.

The options that do not set a setting (``-F``, ``-N``, ``-D``, ``-p``, ``-m``, ``-e``,
``-P``) are the command line's own business.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from ..errors import Invalid
from .registry import QUOTAS, SETTINGS

__all__ = ["LIMITS", "TRACE_SWITCHES", "Translation", "c_uint", "translate"]

#: ``-E -S -W -t -A -M``: one per-domain limit each, by long name.
LIMITS: dict[str, str] = {
    "entry-nb": "quota/nodes",
    "entry-size": "quota/node-size",
    "watch-nb": "quota/watches",
    "transaction": "quota/transactions",
    "perm-nb": "quota/node-permissions",
    "path-max": "quota/path-max",
}

#: ``--trace-control=+SWITCH|-SWITCH``: C's trace switches.
TRACE_SWITCHES = ("obj", "io", "wrl", "acc", "tdb")

#: XENSTORE_REL_PATH_MAX: C lowers a larger path-max to this instead of refusing it.
_PATH_MAX = 2048
#: C's get_optval_uint refuses values above INT_MAX.
_INT_MAX = 2**31 - 1

_WHY = {
    "internal-db": "the store always lives in memory",
    "keep-orphans": "a dead domain's nodes are always removed (C's default; keeping "
    "them is a security risk)",
    "trace-control": "the trace file (-T) is the access log; choose what it records with "
    "the log/access-ops and log/access-replies settings",
}


def c_uint(text: str) -> int:
    """C's ``get_optval_uint``: decimal digits only, at most INT_MAX.

    Raises:
        Invalid: with C's message, ``invalid parameter value "TEXT"``.
    """
    if not text.isascii() or not text.isdigit() or int(text) > _INT_MAX:
        raise Invalid(f'invalid parameter value "{text}"')
    return int(text)


@dataclass
class Translation:
    """What C's options set: setting values, and the options ignored (one line each)."""

    settings: dict[str, Any] = field(default_factory=dict)
    ignored: list[str] = field(default_factory=list)


def _what(arg: str, unit: str) -> tuple[str, str]:
    what, sep, value = arg.partition("=")
    if not sep:
        raise Invalid(f"{arg!r} must be given as <what>=<{unit}>")
    return what, value


#: the soft quotas we have (C 4.17-4.21: memory only)
_SOFT = frozenset(s.name for s in SETTINGS if s.name.startswith("quota-soft/"))


def _quota(arg: str, soft: bool) -> tuple[str, int]:
    what, text = _what(arg, "nb")
    name = f"quota-soft/{what}" if soft else f"quota/{what}"
    known = name in _SOFT if soft else what in QUOTAS
    if not known:
        raise Invalid(f'unknown quota "{arg}"')
    return name, c_uint(text)


def translate(options: Iterable[tuple[str, str | None]]) -> Translation:
    """Setting values for C's options, given as ``(long name, argument)`` in order.

    Raises:
        Invalid: a bad value or an unknown quota, timeout or trace switch (C's words).
    """
    out = Translation()
    values = out.settings
    for name, arg in options:
        text = arg or ""
        if name in LIMITS:
            values[LIMITS[name]] = c_uint(text)
        elif name in ("quota", "quota-soft"):
            setting, value = _quota(text, name == "quota-soft")
            values[setting] = value
        elif name == "timeout":
            what, seconds = _what(text, "seconds")
            if what != "watch-event":
                raise Invalid(f'unknown timeout "{text}"')
            c_uint(seconds)
            out.ignored.append(
                f"--timeout {text}: ignored: undelivered watch events are bounded by "
                "limits/event-queue-bytes, not by time"
            )
        elif name == "trace-file":
            values["log/access"] = True
            values["log/access-file"] = text
        elif name == "verbose":
            values["log/level"] = "debug"
        elif name == "trace-control":
            if text[:1] not in ("+", "-") or text[1:] not in TRACE_SWITCHES:
                raise Invalid(f'Illegal trace switch "{text}"')
            out.ignored.append(f"--trace-control={text}: ignored: {_WHY[name]}")
        elif name in _WHY:
            shown = f"--{name}" + (f"={arg}" if arg is not None else "")
            out.ignored.append(f"{shown}: ignored: {_WHY[name]}")
        else:
            raise ValueError(f"not a C xenstored setting option: {name!r}")
    if "quota/path-max" in values:
        values["quota/path-max"] = min(values["quota/path-max"], _PATH_MAX)
    return out
