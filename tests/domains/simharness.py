"""A pyxenstored Server with the simulated Xen, inside the test's event loop.

dom0 talks over the Unix socket (or over its own ring in stub-domain mode); guests are
:class:`~pyxenstored.client.ring.SimGuest` rings driven by the asyncio client. Nothing
here reads ../shared: the simulated Xen is the package's own.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import sys
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

from pyxenstored.client.aio import Client
from pyxenstored.client.ring import RingChannel, SimGuest
from pyxenstored.runtime.rings import RingManager
from pyxenstored.runtime.server import Server, ServerConfig
from pyxenstored.runtime.unix import listen_unix

T = TypeVar("T")

SRC = str(Path(__file__).resolve().parents[2] / "src")


def short_dir() -> Path:
    """A private directory with a path short enough for AF_UNIX sockets."""
    return Path(tempfile.mkdtemp(prefix="pyxs-", dir="/tmp"))


def run(coro: Callable[[], Awaitable[T]], timeout: float = 60.0) -> T:
    """Run an async test body with a deadline."""

    async def main() -> T:
        return await asyncio.wait_for(coro(), timeout)

    return asyncio.run(main())


async def until(cond: Callable[[], Any], timeout: float = 5.0, step: float = 0.005) -> None:
    """Wait until ``cond()`` is true (fail after ``timeout``)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not cond():
        if loop.time() > deadline:
            raise TimeoutError("condition not reached")
        await asyncio.sleep(step)


def kick_virq(fakexen: Path) -> None:
    """Port 1 from no guest's socket: VIRQ_DOM_EXC (look at dying.*)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.sendto((1).to_bytes(4, "little"), str(fakexen / "evtchn"))


def kill_domain(fakexen: Path, domid: int) -> None:
    (fakexen / f"dying.{domid}").touch()
    kick_virq(fakexen)


def subprocess_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = SRC + os.pathsep + env.get("PYTHONPATH", "")
    return env


PYTHON = sys.executable


class SimDaemon:
    """``async with SimDaemon() as d``: a daemon in this loop, dom0 connected."""

    def __init__(self, **config: Any) -> None:
        self.dir = short_dir()
        self.fakexen = self.dir / "fakexen"
        self.stub = bool(config.get("stub_domain"))
        self.socket_path = None if self.stub else str(self.dir / "socket")
        self.config = ServerConfig(
            socket_path=self.socket_path, sim_xen_dir=str(self.fakexen), **config
        )
        self.server: Server | None = None
        self.dom0: Client | None = None
        self.clients: list[Client] = []
        self._listener: asyncio.AbstractServer | None = None

    @property
    def rings(self) -> RingManager:
        assert self.server is not None and self.server.rings is not None
        return self.server.rings

    async def __aenter__(self) -> SimDaemon:
        self.server = Server(self.config)
        self.rings.start(asyncio.get_running_loop())
        if self.socket_path is not None:
            self._listener = await listen_unix(self.server.sockets, self.socket_path, 64)
            self.dom0 = await Client.connect(self.socket_path)
        return self

    async def __aexit__(self, *exc: object) -> None:
        for client in [*self.clients, *([self.dom0] if self.dom0 else [])]:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(client.close(), 2)
        if self._listener is not None:
            self._listener.close()
        assert self.server is not None
        await self.server.shutdown()
        shutil.rmtree(self.dir, ignore_errors=True)

    def d0(self) -> Client:
        assert self.dom0 is not None
        return self.dom0

    async def guest(self, domid: int, *, introduce: bool = True, home: bool = True) -> Client:
        """A guest client over its ring, introduced by dom0 (with a home it owns)."""
        sim = SimGuest(str(self.fakexen), domid)
        if introduce:
            if home:
                await self.d0().mkdir(f"/local/domain/{domid}")
                await self.d0().set_perms(f"/local/domain/{domid}", [f"n{domid}"])
            await self.d0().introduce(domid, 0, domid + 100)
        client = Client(RingChannel(sim, poll=0.2))
        self.clients.append(client)
        return client

    def raw_guest(self, domid: int) -> SimGuest:
        """A guest page and notify socket only, for protocol-breaking tests."""
        return SimGuest(str(self.fakexen), domid)
