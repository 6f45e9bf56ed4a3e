"""The hypervisor interface the ring runtime needs, and nothing more (simulated-xen.md).

A :class:`XenBackend` maps a domain's ring page, binds, notifies and unbinds event
channels, says which local ports fired, and answers questions about domain state. Two
implementations exist: ``transports.xen_linux`` (``/dev/xen/evtchn``, ``/dev/xen/gntdev``,
``/proc/xen/xsd_*``, a domain-state query through ctypes) and ``transports.sim`` (the
simulated Xen of files and datagram sockets). Everything else (ring arithmetic, framing,
fairness, domain semantics) is shared, so the simulated backend cannot drift from the
real one in anything but these calls.

Contract:

* All calls are non-blocking and are made from one thread (the event loop's).
* :meth:`XenBackend.pending` returns the local ports that fired since the last call and
  re-arms (unmasks) them; the caller then looks at the matching rings. A returned
  :data:`ANY_PORT` means "something may have been lost: look at every ring". The port
  equal to :attr:`XenBackend.virq_port` means VIRQ_DOM_EXC: some domain changed state.
* :meth:`XenBackend.domain_changes` reports, for the domains the caller cares about,
  those that are now shut down or dead (a domain that can no longer be found is dead).
* Errors are ``OSError``; the runtime turns a failed map or bind into a refused
  INTRODUCE.
"""

from __future__ import annotations

from enum import Enum
from typing import Protocol

__all__ = ["ANY_PORT", "DomainState", "Mapping", "XenBackend"]

#: A pseudo-port returned by ``pending()``: look at every ring (spurious or lost kick).
ANY_PORT = -1


class DomainState(Enum):
    """What ``domain_changes`` reports about a domain."""

    SHUTDOWN = "shutdown"
    DEAD = "dead"


class Mapping(Protocol):
    """A mapped ring page."""

    @property
    def page(self) -> memoryview:
        """The 4096 writable bytes of ``struct xenstore_domain_interface``."""

    def close(self) -> None:
        """Unmap (callers release every view of ``page`` first); idempotent."""


class XenBackend(Protocol):
    """The daemon's door to the hypervisor (see the module docstring)."""

    #: the local port bound to VIRQ_DOM_EXC
    virq_port: int

    def fileno(self) -> int:
        """A descriptor that becomes readable when :meth:`pending` has something."""

    def pending(self) -> list[int]:
        """Local ports that fired (re-armed), possibly with ANY_PORT or the VIRQ port."""

    def map_ring(self, domid: int) -> Mapping:
        """Map the ring page of ``domid`` (grant reference 1)."""

    def map_own_ring(self) -> tuple[Mapping, int] | None:
        """This domain's own page and port (``/proc/xen/xsd_kva``, ``xsd_port``), if any."""

    def own_port(self) -> int | None:
        """The port of dom0's ring when it cannot come from the command line (stub mode)."""

    def bind_interdomain(self, domid: int, remote_port: int) -> int:
        """Bind to ``domid``'s ``remote_port``; return the local port."""

    def unbind(self, port: int) -> None:
        """Release a local port (errors are ignored)."""

    def notify(self, port: int) -> None:
        """Kick the peer of a local port (errors are ignored: the peer may be gone)."""

    def domain_exists(self, domid: int) -> bool:
        """Whether the hypervisor knows ``domid`` and it is not dying."""

    def domain_changes(self, known: set[int]) -> list[tuple[int, DomainState]]:
        """Domains among ``known`` (at least) that are now shut down or dead."""

    def adopt_port(self, domid: int, port: int) -> None:
        """Live update: the replaced process had bound ``port`` to ``domid``."""

    def inheritable(self) -> list[int]:
        """Descriptors to keep open across a live update's exec."""

    def prepare_exec(self) -> None:
        """Release what the new process will set up again (e.g. the VIRQ binding)."""

    def undo_exec(self) -> None:
        """The exec failed: take back what :meth:`prepare_exec` released."""

    def close(self) -> None:
        """Release every descriptor (mappings are closed by their owners first)."""
