"""Domains known to the daemon and the backend that reaches the hypervisor.

The core never maps a page or binds a port itself: it asks a :class:`DomainBackend`,
which the runtime provides (``runtime.rings`` over real or simulated Xen, or
:class:`NoHypervisor` for a plain Unix daemon). The engine keeps one :class:`Domain` per
introduced domain; a domain whose ring broke the protocol keeps its record (its
connection is closed) until it really dies or is released, so that ``@releaseDomain``
fires only then (XSA-325).

Generations (XSA-322, XSA-417): the engine also remembers, for every domain it has
heard of while the hypervisor knew it (named in SET_PERMS, or introduced), the tree
generation at which it first did (:attr:`Domain.born_gen` for introduced ones). A grant
naming a domain with no such record, or one born after the node was last written, is
ignored; the record goes when the domain dies, so a reused domid starts afresh.
"""

from __future__ import annotations

from typing import Protocol

from ..errors import Invalid
from .connection import Connection

__all__ = ["Domain", "DomainBackend", "NoHypervisor", "parse_domid"]


class Domain:
    """One introduced domain.

    Attributes:
        domid: the domain id.
        port: the event channel port the toolstack gave (the guest's side).
        conn: its ring connection; None without a hypervisor. Closed (``conn.closed``)
            once the ring broke the protocol: the domain is then "bad" but still known.
        born_gen: the generation the domain was first known at (see module docstring).
        features: the ring feature bits advertised to it (SET_FEATURE can mask them).
        shutdown_reported: ``@releaseDomain`` already fired for its shutdown (RESUME
            re-arms it).
        target: SET_TARGET's domain, or -1.
    """

    __slots__ = (
        "born_gen",
        "conn",
        "domid",
        "features",
        "port",
        "shutdown_reported",
        "target",
    )

    def __init__(
        self, domid: int, port: int, conn: Connection | None, born_gen: int, features: int = 0
    ) -> None:
        self.domid = domid
        self.port = port
        self.conn = conn
        self.born_gen = born_gen
        self.features = features
        self.shutdown_reported = False
        self.target = -1

    def __repr__(self) -> str:
        return f"Domain({self.domid}, port={self.port}, conn={self.conn!r})"


class DomainBackend(Protocol):
    """What the core needs from the hypervisor (implemented by ``runtime.rings``)."""

    def exists(self, domid: int) -> bool:
        """Whether the hypervisor knows this domain (and it is not dying)."""

    def introduce(self, domid: int, port: int, features: int) -> Connection | None:
        """Map the domain's ring page, bind its event channel, advertise ``features``.

        Returns the new ring connection (registered with the engine), or None when
        there is no ring to serve (a daemon without a hypervisor). Raises
        XenstoreError on failure, leaving nothing behind.
        """

    def reintroduce(self, domain: Domain, port: int) -> None:
        """Rebind the event channel of a known domain (a repeated INTRODUCE)."""

    def reset(self, domain: Domain) -> None:
        """After the engine dropped the connection's state: set the four ring indexes
        to 0, forget queued output, and complete a pending RECONNECT handshake."""

    def release(self, domain: Domain) -> None:
        """Unbind and unmap: the domain's ring is no longer served."""


class NoHypervisor:
    """The backend of a plain Unix daemon: every domain exists, none has a ring.

    INTRODUCE still records the domain, so that toolstack bookkeeping (and tests over a
    socket) behave as on a host, but nothing is mapped.
    """

    def exists(self, domid: int) -> bool:
        return True

    def introduce(self, domid: int, port: int, features: int) -> Connection | None:
        return None

    def reintroduce(self, domain: Domain, port: int) -> None:
        return None

    def reset(self, domain: Domain) -> None:
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
