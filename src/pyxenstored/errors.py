"""Xenstore errors, named as they travel on the wire.

Every refusal inside the daemon is a :class:`XenstoreError` whose ``name`` is one of the
16 errno names of ``xs_wire.h`` (in that table's order, :data:`ERRNO_NAMES`). The
dispatcher turns it into an ``XS_ERROR`` reply in exactly one place; any other exception
becomes ``EIO`` and is logged. A name missing from the table is sent as ``EINVAL``
(xenstore-protocol.md §1.5).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

__all__ = [
    "ERRNO_NAMES",
    "Again",
    "Busy",
    "Exists",
    "InternalError",
    "Invalid",
    "NoEntry",
    "NoMemory",
    "NoSpace",
    "NotPermitted",
    "PermissionDenied",
    "QuotaExceeded",
    "ReplyLater",
    "TooBig",
    "Unsupported",
    "XenstoreError",
    "wire_name",
]

#: The errno names of xs_wire.h, in table order; new entries may only be appended.
ERRNO_NAMES: tuple[str, ...] = (
    "EINVAL",
    "EACCES",
    "EEXIST",
    "EISDIR",
    "ENOENT",
    "ENOMEM",
    "ENOSPC",
    "EIO",
    "ENOTEMPTY",
    "ENOSYS",
    "EROFS",
    "EBUSY",
    "EAGAIN",
    "EISCONN",
    "E2BIG",
    "EPERM",
)
_KNOWN = frozenset(ERRNO_NAMES)


def wire_name(name: str) -> str:
    """Return ``name`` if the wire table knows it, else ``EINVAL`` (as C does)."""
    return name if name in _KNOWN else "EINVAL"


class XenstoreError(Exception):
    """A request refused with an errno name. Subclasses fix the name."""

    name: str = "EINVAL"

    def __init__(self, detail: str = "", name: str | None = None) -> None:
        super().__init__(detail or self.name)
        if name is not None:
            self.name = name


class Invalid(XenstoreError):
    name = "EINVAL"


class PermissionDenied(XenstoreError):
    name = "EACCES"


class Exists(XenstoreError):
    name = "EEXIST"


class NoEntry(XenstoreError):
    name = "ENOENT"


class NoMemory(XenstoreError):
    name = "ENOMEM"


class NoSpace(XenstoreError):
    name = "ENOSPC"


class QuotaExceeded(NoSpace):
    """A quota refused the request. ``quota`` names it (for the refusal log); the wire
    name is ENOSPC unless a quota answers otherwise (E2BIG, ENOMEM)."""

    def __init__(self, quota: str, name: str | None = None) -> None:
        super().__init__(f"{quota} quota", name)
        self.quota = quota


class InternalError(XenstoreError):
    name = "EIO"


class Unsupported(XenstoreError):
    name = "ENOSYS"


class Busy(XenstoreError):
    name = "EBUSY"


class Again(XenstoreError):
    name = "EAGAIN"


class TooBig(XenstoreError):
    name = "E2BIG"


class NotPermitted(XenstoreError):
    name = "EPERM"


class ReplyLater(Exception):
    """Not an error: the request is answered later, by whoever ``resume`` hands it to.

    A handler raises it when the reply cannot be computed now (a live update answers
    ``OK`` from the new process, or waits until transactions end). The engine then
    queues no reply and calls ``resume(conn, packet)`` with the request's connection
    and packet; the reply (or its absence) is the caller's business from then on.
    """

    def __init__(self, resume: Callable[[Any, Any], None]) -> None:
        super().__init__("reply later")
        self.resume = resume
