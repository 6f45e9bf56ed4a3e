"""Client value types and the payload codec shared by :mod:`.aio` and :mod:`.sync`.

The socket path as libxenstore resolves it, the typed values a client hands out
(:class:`Perm`, :class:`WatchEvent`), its own exceptions (:class:`ConnectionClosed`,
:class:`ProtocolError`), the mapping of ``XS_ERROR`` replies to the
:mod:`pyxenstored.errors` classes, and the helpers that encode request arguments and
decode reply payloads. Nothing here does I/O.
"""

from __future__ import annotations

import os
import random
from collections.abc import Mapping
from typing import NamedTuple

from .. import errors as _errors
from ..errors import TooBig, XenstoreError
from ..protocol.perms import parse_perm
from ..protocol.wire import PAYLOAD_MAX, Op

__all__ = [
    "DEFAULT_SOCKET_PATH",
    "ERROR_CLASSES",
    "ConnectionClosed",
    "Perm",
    "ProtocolError",
    "WatchEvent",
    "backoff_delay",
    "check_payload",
    "default_socket_path",
    "error_from_reply",
]

#: Where libxenstore looks when neither environment variable is set.
DEFAULT_SOCKET_PATH = "/run/xenstored/socket"


def default_socket_path(env: Mapping[str, str] | None = None) -> str:
    """The daemon socket as libxenstore finds it.

    ``$XENSTORED_PATH`` if set and non-empty, else ``$XENSTORED_RUNDIR/socket``, else
    :data:`DEFAULT_SOCKET_PATH`. ``env`` defaults to ``os.environ``.
    """
    env = os.environ if env is None else env
    path = env.get("XENSTORED_PATH")
    if path:
        return path
    rundir = env.get("XENSTORED_RUNDIR")
    if rundir:
        return os.path.join(rundir, "socket")
    return DEFAULT_SOCKET_PATH


# -- value types ---------------------------------------------------------------------------
class ConnectionClosed(ConnectionError):
    """The connection to the daemon is gone; the request's outcome is unknown."""


class ProtocolError(Exception):
    """The daemon answered something the protocol does not allow (a client-side check)."""


class WatchEvent(NamedTuple):
    """One WATCH_EVENT: the path that changed (as the watch was registered: relative
    watches get relative paths) and the watch's token."""

    path: str
    token: str


_MODES = ("n", "r", "w", "b")


class Perm(NamedTuple):
    """One permission entry, the typed form of ``"r5"``.

    ``mode`` is ``"n"`` (none), ``"r"`` (read), ``"w"`` (write) or ``"b"`` (both);
    ``domid`` the domain. In a list, entry 0 names the owner and its mode is what every
    other domain gets. ``str(perm)`` is the wire form.
    """

    mode: str
    domid: int

    def __str__(self) -> str:
        return f"{self.mode}{self.domid}"

    @classmethod
    def parse(cls, text: str) -> Perm:
        """Parse a wire entry (``"r5"``, ``"b0x10"``, ``"n-1"``) as the daemon does.

        Raises:
            ValueError: not a mode letter followed by a C ``strtol`` integer.
        """
        try:
            mode, domid = parse_perm(text)
        except XenstoreError:
            raise ValueError(f"bad permission {text!r}") from None
        if domid & 0x80000000:
            domid -= 1 << 32
        return cls(_MODES[mode], domid)


def _perm_text(perm: str | Perm) -> str:
    if isinstance(perm, Perm):
        if perm.mode not in _MODES:
            raise ValueError(f"bad permission mode {perm.mode!r}")
        return str(perm)
    return perm


# -- payload codec -------------------------------------------------------------------------
def _raw(value: str | bytes) -> bytes:
    return value.encode("utf-8", "surrogateescape") if isinstance(value, str) else bytes(value)


def _word(value: str | bytes, what: str) -> bytes:
    """A NUL-terminated argument; an embedded NUL would silently shift the arguments."""
    raw = _raw(value)
    if b"\0" in raw:
        raise ValueError(f"{what} contains a NUL byte: {value!r}")
    return raw + b"\0"


def _args(*parts: str | bytes | int) -> bytes:
    out = []
    for part in parts:
        out.append(b"%d\0" % part if isinstance(part, int) else _word(part, "argument"))
    return b"".join(out)


def _text(raw: bytes) -> str:
    return raw.decode("utf-8", "surrogateescape")


def _strip_nul(reply: bytes) -> str:
    """A one-string reply such as ``OK\\0`` or ``/local/domain/3\\0``."""
    return _text(reply[:-1] if reply.endswith(b"\0") else reply)


def _strings(reply: bytes) -> list[str]:
    """Every NUL-terminated string of a reply (``a\\0b\\0`` -> [a, b])."""
    if not reply:
        return []
    parts = reply.split(b"\0")
    parts.pop()
    return [_text(p) for p in parts]


def _int(reply: bytes) -> int:
    text = _strip_nul(reply)
    try:
        return int(text)
    except ValueError:
        raise ProtocolError(f"expected a number, got {text!r}") from None


def _ok(reply: bytes) -> None:
    return None


def _error_classes() -> dict[str, type[XenstoreError]]:
    table: dict[str, type[XenstoreError]] = {}
    for obj in vars(_errors).values():
        if (
            isinstance(obj, type)
            and issubclass(obj, XenstoreError)
            and obj is not XenstoreError
            and obj.__module__ == _errors.__name__
        ):
            table.setdefault(obj.name, obj)
    return table


#: errno name -> the XenstoreError subclass raised for it.
ERROR_CLASSES: dict[str, type[XenstoreError]] = _error_classes()


def _op_name(op: int) -> str:
    try:
        return Op(op).name
    except ValueError:
        return f"type {op}"


def error_from_reply(payload: bytes, op: int = -1, request: bytes = b"") -> XenstoreError:
    """The exception for an ``XS_ERROR`` reply payload (``ENOENT\\0``).

    A known name gives its subclass; an unknown one a plain XenstoreError with ``name``
    set to it. The message names the request for debugging.
    """
    name = _text(payload.split(b"\0", 1)[0]) or "EINVAL"
    shown = request.split(b"\0", 1)[0][:80].decode("ascii", "backslashreplace")
    detail = f"{name} ({_op_name(op)} {shown})" if op >= 0 else name
    cls = ERROR_CLASSES.get(name)
    if cls is None:
        return XenstoreError(detail, name=name)
    return cls(detail)


def _event(payload: bytes) -> WatchEvent:
    parts = payload.split(b"\0")
    return WatchEvent(_text(parts[0]), _text(parts[1]) if len(parts) > 1 else "")


def check_payload(payload: bytes) -> None:
    """Refuse locally what the daemon would answer by dropping us (libxenstore: E2BIG)."""
    if len(payload) > PAYLOAD_MAX:
        raise TooBig(f"E2BIG (request payload of {len(payload)} bytes > {PAYLOAD_MAX})")


def backoff_delay(attempt: int, base: float) -> float:
    """Randomised exponential backoff between transaction retries (0 disables)."""
    if base <= 0:
        return 0.0
    return random.uniform(0, base * (1 << min(attempt, 6)))
