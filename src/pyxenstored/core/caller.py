"""Who is asking: the identity every permission check and quota decision is made for."""

from __future__ import annotations

__all__ = ["Caller"]

NO_TARGET = -1


class Caller:
    """A connection's identity. Sockets are the privileged domain, as in C xenstored.

    Attributes:
        domid: the domain the connection belongs to.
        privileged: full rights and no quotas (dom0's sockets, the priv domain's ring).
        target: SET_TARGET's domain (a device model acting for its guest), or -1.
        home: where relative paths resolve, ``/local/domain/<domid>``.
    """

    __slots__ = ("domid", "home", "privileged", "target")

    def __init__(self, domid: int, privileged: bool, target: int = NO_TARGET) -> None:
        self.domid = domid
        self.privileged = privileged
        self.target = target
        self.home = f"/local/domain/{domid}"

    def __repr__(self) -> str:
        kind = "priv" if self.privileged else "unpriv"
        return f"Caller(dom{self.domid}, {kind}, target={self.target})"
