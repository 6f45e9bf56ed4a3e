"""The daemon process: builds the engine, starts listeners, runs until a signal.

Lifecycle (uvicorn's ``Server`` shape): capture signals, start listeners, wait on an
event; on shutdown close listeners first, then every client, then remove the socket
and the pid file. SIGHUP reopens log files.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import resource
import signal
from dataclasses import dataclass, field

from ..core.engine import Engine
from ..core.quota import Limits
from .accesslog import AccessLog
from .loops import loop_factory
from .unix import SocketProtocol, listen_unix

__all__ = ["Server", "ServerConfig"]

log = logging.getLogger("pyxenstored")


@dataclass
class ServerConfig:
    """Start-up settings, from the command line."""

    socket_path: str | None = "/run/xenstored/socket"
    pid_file: str | None = None
    loop: str = "auto"
    access_log: str | None = None
    priv_domid: int = 0
    conflicts: str = "coalesce"
    backlog: int = 4096
    socket_buffer_max: int = 16 * 1024 * 1024
    event_queue_max: int = 1 << 20
    limits: Limits = field(default_factory=Limits)


def raise_nofile_limit() -> int:
    """Raise the open-file soft limit to the hard limit; return the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):
            pass
    return soft


class Server:
    """One daemon: engine, listeners, clients."""

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.engine = Engine(
            limits=config.limits,
            priv_domid=config.priv_domid,
            conflicts=config.conflicts,
            event_queue_max=config.event_queue_max,
        )
        self.socket_buffer_max = config.socket_buffer_max
        self.clients: set[SocketProtocol] = set()
        self.access_log: AccessLog | None = None
        self._stop: asyncio.Event | None = None
        self._listeners: list[asyncio.AbstractServer] = []

    # clients ----------------------------------------------------------------------------
    def track(self, proto: SocketProtocol) -> SocketProtocol:
        self.clients.add(proto)
        return proto

    def forget(self, proto: SocketProtocol) -> None:
        self.clients.discard(proto)

    def flush(self) -> None:
        """Deliver output queued for connections other than the current one."""
        woken = self.engine.woken
        while woken:
            conn = woken.pop()
            if conn.out and conn.sink is not None:
                conn.sink.deliver(conn)

    # lifecycle --------------------------------------------------------------------------
    def run(self) -> None:
        """Serve until SIGTERM or SIGINT."""
        with asyncio.Runner(loop_factory=loop_factory(self.config.loop)) as runner:
            runner.run(self.serve())

    async def serve(self, started: asyncio.Event | None = None) -> None:
        config = self.config
        self._stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._stop.set)
        loop.add_signal_handler(signal.SIGHUP, self.reopen_logs)
        signal.signal(signal.SIGPIPE, signal.SIG_IGN)
        nofile = raise_nofile_limit()
        if config.access_log:
            self.access_log = AccessLog(config.access_log)
            self.engine.on_request = self.access_log
        if config.socket_path:
            self._listeners.append(await listen_unix(self, config.socket_path, config.backlog))
            log.info("listening on %s (open-file limit %d)", config.socket_path, nofile)
        if config.pid_file:
            with open(config.pid_file, "w") as f:
                f.write(f"{os.getpid()}\n")
        if started is not None:
            started.set()
        try:
            await self._stop.wait()
        finally:
            await self.shutdown()

    def stop(self) -> None:
        if self._stop is not None:
            self._stop.set()

    def reopen_logs(self) -> None:
        log.info("SIGHUP: reopening log files")
        if self.access_log is not None:
            self.access_log.reopen()

    async def shutdown(self) -> None:
        for listener in self._listeners:
            listener.close()
        for proto in list(self.clients):
            if proto.transport is not None:
                proto.transport.close()
        for listener in self._listeners:
            await listener.wait_closed()
        self._listeners.clear()
        path = self.config.socket_path
        if path:
            with contextlib.suppress(OSError):
                os.unlink(path)
        if self.config.pid_file:
            with contextlib.suppress(OSError):
                os.unlink(self.config.pid_file)
        if self.access_log is not None:
            self.access_log.close()
        log.info("stopped")
