"""A Kit with live configuration attached, as the Server wires it (Registry + ConfigTree):
no sockets, no threads.

Given a ``Server`` (constructed, not served), the kit drives that server's engine, so the
runtime's own reactions to settings (access log, log level, socket buffer, ring tick)
happen too; that server's backend is its own (``NoHypervisor`` unless it simulates Xen),
so :meth:`~kit.engine.Kit.guest` makes the guest's ring connection itself.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pyxenstored.core.engine import Engine
from pyxenstored.liveconfig.registry import Registry
from pyxenstored.liveconfig.tree import ConfigTree
from pyxenstored.protocol.wire import Op
from pyxenstored.runtime.server import Server

from .engine import FakeBackend, Kit, z

__all__ = ["CONFIG", "ConfigKit"]

#: Where the settings' nodes live.
CONFIG = "/tool/xenstored/"


class ConfigKit(Kit):
    """An engine with its live configuration (``quota/rule`` = ``rule`` plus
    ``settings``), or the engine of a constructed ``server``."""

    def __init__(
        self,
        rule: str = "4.21",
        settings: dict[str, Any] | None = None,
        server: Server | None = None,
    ) -> None:
        self.server = server
        #: A directory of the test's own, when the fixture gives one.
        self.tmp: Path | None = None
        if server is not None:
            super().__init__(server.engine)
            self.registry = server.registry
            self.config = server.live_config
        else:
            backend = FakeBackend()
            super().__init__(Engine(backend=backend))
            backend.engine = self.engine
            self.registry = Registry({"quota/rule": rule, **(settings or {})})
            self.config = ConfigTree(self.engine, self.registry)

    def setting(self, name: str) -> str:
        """The text of a setting's node, read by dom0."""
        return self.read(self.dom0, CONFIG + name).decode()

    def set(self, name: str, value: str | int) -> None:
        """Write a setting's node under /tool/xenstored/ as dom0 (it must be accepted)."""
        self.write(self.dom0, CONFIG + name, str(value))

    def control(self, *args: str) -> bytes:
        """A CONTROL command from dom0, which must succeed."""
        return self.ok(self.dom0, Op.CONTROL, z(*args))
