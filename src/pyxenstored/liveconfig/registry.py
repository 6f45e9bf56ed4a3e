"""The one registry of settings: typed, validated, each with a default, a unit and a
one-line description.

Every setting has a name that is also its node under ``/tool/xenstored/`` (for example
``quota/nodes``). The command line sets start values; the tree, the CONTROL commands and
GET/SET_QUOTA all change the same values through :meth:`Registry.set`, so the three
routes cannot disagree. Listeners (the engine, the runtime) are told of every change and
apply it from the next request on.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..core.quota import HARD_QUOTA_NAMES, QUOTA, RULES
from ..errors import ERRNO_NAMES, Invalid
from ..protocol.wire import Op
from .kinds import BOOL, FLOAT, Kind, choice, integer, names

__all__ = ["QUOTAS", "SETTINGS", "Registry", "Setting"]

#: The quotas set under ``quota/``, in C's GET_QUOTA order (the table is core.quota's;
#: soft-memory is ``quota-soft/memory``).
QUOTAS: tuple[str, ...] = HARD_QUOTA_NAMES

OP_NAMES: tuple[str, ...] = tuple(op.name for op in Op if op not in (Op.INVALID, Op.RESTRICT))
REPLY_NAMES: tuple[str, ...] = ("OK", *ERRNO_NAMES)


def _text(text: str) -> str:
    if "\0" in text:
        raise Invalid("NUL in text")
    return text


TEXT = Kind("text", _text, str)


@dataclass(frozen=True, slots=True)
class Setting:
    """One setting: its node name, kind, default, unit and description."""

    name: str
    kind: Kind
    default: Any
    unit: str
    help: str


#: What each device a domain serves as a backend adds to its limits (driver domains).
_DRIVER_DEFAULTS = {
    "nodes": (24, "nodes", "nodes allowed per backend device a domain serves"),
    "watches": (2, "watches", "watches allowed per backend device a domain serves"),
    "memory": (16384, "bytes", "memory allowed per backend device a domain serves"),
}

SETTINGS: tuple[Setting, ...] = (
    Setting(
        "log/level",
        choice("debug", "info", "warning", "error"),
        "info",
        "level",
        "daemon log level",
    ),
    Setting(
        "log/refusal-seconds",
        FLOAT,
        10.0,
        "seconds",
        "refusals (quota, permission, conflict) logged once per domain and kind per interval",
    ),
    Setting("log/access", BOOL, False, "on|off", "write one line per request and reply"),
    Setting(
        "log/access-format",
        choice("pyxenstored", "c"),
        "pyxenstored",
        "format",
        "access log lines: ours (one per request and reply), or C xenstored's trace lines",
    ),
    Setting("log/access-file", TEXT, "", "path", "the access log file (CONTROL logfile)"),
    Setting(
        "log/access-ops",
        names(OP_NAMES),
        frozenset(OP_NAMES),
        "names",
        "request types the access log records",
    ),
    Setting(
        "log/access-replies",
        names(REPLY_NAMES),
        frozenset(REPLY_NAMES),
        "names",
        "reply outcomes (OK or an errno name) the access log records",
    ),
    *(
        # path-max can be lowered, never raised past XENSTORE_REL_PATH_MAX (as C's -M).
        Setting(
            q.setting,
            integer(0, 2048) if q.name == "path-max" else integer(),
            q.default,
            q.unit,
            q.help + (" (0: never)" if q is QUOTA["soft-memory"] else " (0: no limit)"),
        )
        for q in QUOTA.values()
    ),
    Setting(
        "quota/rule",
        choice(*RULES),
        "4.21",
        "rule",
        "quota boundaries of C xenstored <=4.21 (count > limit) or 4.22 (>=)",
    ),
    *(
        Setting(f"driver/{q}", integer(), d, unit, text)
        for q, (d, unit, text) in _DRIVER_DEFAULTS.items()
    ),
    Setting(
        "transaction/conflicts",
        choice("coalesce", "generation"),
        "coalesce",
        "mode",
        "EAGAIN only when an observation changed (coalesce), or C's generation rule",
    ),
    Setting(
        "conflict/burst-limit",
        FLOAT,
        5.0,
        "conflicts",
        "conflicts a domain may cause before it is throttled",
    ),
    Setting(
        "conflict/replenish-seconds",
        FLOAT,
        0.05,
        "seconds",
        "interval at which one unit of conflict credit returns",
    ),
    Setting(
        "conflict/aggregate",
        BOOL,
        True,
        "on|off",
        "replenish one domain per interval (on) or every domain (off)",
    ),
    Setting(
        "metrics/domains",
        integer(0),
        100,
        "domains",
        "domains with their own metrics series (the busiest; the rest summed as other)",
    ),
    Setting(
        "features",
        integer(0, 15),
        15,
        "bitmask",
        "ring features offered to domains introduced from now on",
    ),
    Setting(
        "limits/event-queue-bytes",
        integer(1024),
        1 << 20,
        "bytes",
        "undelivered output after which events to a domain are dropped",
    ),
    Setting(
        "limits/socket-buffer-bytes",
        integer(4096),
        16 << 20,
        "bytes",
        "unread output after which a socket client is disconnected",
    ),
)

Listener = Callable[[str, Any], None]


class Registry:
    """Current values of every setting, plus per-domain quota overrides and classes."""

    def __init__(self, overrides: dict[str, Any] | None = None) -> None:
        self.specs: dict[str, Setting] = {s.name: s for s in SETTINGS}
        self.values: dict[str, Any] = {s.name: s.default for s in SETTINGS}
        self.listeners: list[Listener] = []
        #: extra checks the runtime adds (a log file must be writable, say); they raise
        #: Invalid, so a bad value is refused before anything changes
        self.validators: dict[str, Callable[[Any], None]] = {}
        for name, value in (overrides or {}).items():
            self.spec(name)
            self.values[name] = value

    def spec(self, name: str) -> Setting:
        """The setting called ``name``. Raises Invalid for an unknown name."""
        spec = self.specs.get(name)
        if spec is None:
            raise Invalid(f"unknown setting {name!r}")
        return spec

    def get(self, name: str) -> Any:
        return self.values[name]

    def parse(self, name: str, text: str) -> Any:
        """Parse and validate a textual value for ``name`` (raises Invalid)."""
        value = self.spec(name).kind.parse(text)
        check = self.validators.get(name)
        if check is not None:
            check(value)
        return value

    def format(self, name: str, value: Any | None = None) -> str:
        spec = self.spec(name)
        return spec.kind.format(self.values[name] if value is None else value)

    def set(self, name: str, value: Any) -> None:
        """Change a setting (already validated) and tell every listener."""
        self.spec(name)
        if self.values[name] == value:
            return
        self.values[name] = value
        for listener in list(self.listeners):
            listener(name, value)
