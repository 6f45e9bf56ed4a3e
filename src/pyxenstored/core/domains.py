"""Domains known to the daemon and the backend that reaches the hypervisor.

The core never maps a page or binds a port itself: it asks a :class:`DomainBackend`,
which the runtime provides (real Xen, the simulated Xen, or :class:`NoHypervisor` for a
plain Unix daemon). The registry remembers each introduced domain, the generation at
which it was introduced (grants naming a domain younger than a node are stale,
XSA-322/XSA-417) and its shutdown state for ``@releaseDomain``.
"""

from __future__ import annotations

from typing import Protocol

from ..errors import Invalid
from .connection import Connection

__all__ = ["Domain", "DomainBackend", "NoHypervisor", "parse_domid"]


class Domain:
    """One introduced domain."""

    __slots__ = ("born_gen", "conn", "domid", "port", "shutdown_reported", "target")

    def __init__(self, domid: int, port: int, conn: Connection | None, born_gen: int) -> None:
        self.domid = domid
        self.port = port
        self.conn = conn
        self.born_gen = born_gen
        self.shutdown_reported = False
        self.target = -1


class DomainBackend(Protocol):
    """What the core needs from the hypervisor."""

    def exists(self, domid: int) -> bool:
        """Whether the hypervisor knows this domain (and it is not dying)."""

    def introduce(self, domid: int, port: int) -> Connection | None:
        """Map the domain's ring page and bind its event channel.

        Returns the new ring connection, or None when there is no ring to serve (a
        daemon without a hypervisor). Raises XenstoreError on failure.
        """

    def reintroduce(self, domain: Domain, port: int) -> None:
        """Rebind the event channel and reset the ring of a known domain."""

    def release(self, domain: Domain) -> None:
        """Unbind and unmap: the domain's ring is no longer served."""


class NoHypervisor:
    """The backend of a plain Unix daemon: every domain exists, none has a ring.

    INTRODUCE still records the domain, so that toolstack bookkeeping (and tests over a
    socket) behave as on a host, but nothing is mapped.
    """

    def exists(self, domid: int) -> bool:
        return True

    def introduce(self, domid: int, port: int) -> Connection | None:
        return None

    def reintroduce(self, domain: Domain, port: int) -> None:
        return None

    def release(self, domain: Domain) -> None:
        return None


def parse_domid(raw: bytes) -> int:
    """A domid argument: decimal digits only, at most 65535 (C's ``get_domid``)."""
    if not raw.isdigit() or len(raw) > 10:
        raise Invalid("bad domid")
    value = int(raw)
    if value > 0xFFFF:
        raise Invalid("domid out of range")
    return value
