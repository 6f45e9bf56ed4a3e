"""The daemon process: builds the engine, starts listeners, runs until a signal.

Lifecycle (uvicorn's ``Server`` shape): capture signals, start rings and listeners,
write the pid file, tell who waits that we serve (systemd's ``READY=1``, the
``on_ready`` callbacks), wait on an event; on shutdown close listeners first, then every
client, then remove the socket and the pid file. SIGHUP reopens log files. A failure
before serving is one :class:`StartupError` line, with whatever had started undone.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import resource
import signal
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..core.engine import Engine
from ..errors import Invalid, XenstoreError
from ..liveconfig.registry import Registry
from ..liveconfig.tree import ConfigTree
from .accesslog import AccessLog
from .daemon import reopen_log_files
from .loops import loop_factory
from .pidfile import PidFile
from .rings import RingManager, open_xen
from .sdnotify import Notifier
from .unix import SocketProtocol, listen_unix

__all__ = ["AlreadyRunning", "Server", "ServerConfig", "StartupError", "describe_error"]

log = logging.getLogger("pyxenstored")


@dataclass
class ServerConfig:
    """Start-up settings, from the command line.

    ``settings`` holds start values for the live-configuration registry, by name (for
    example ``{"quota/nodes": 2000, "log/access": True}``); everything else can be
    changed later through ``/tool/xenstored/``, CONTROL or SET_QUOTA.
    """

    socket_path: str | None = "/run/xenstored/socket"
    pid_file: str | None = None
    loop: str = "auto"
    priv_domid: int = 0
    backlog: int = 4096
    settings: dict[str, Any] = field(default_factory=dict)
    #: hypervisor backend: "auto" (Linux Xen if /dev/xen/evtchn exists), "linux", "none"
    xen: str = "none"
    #: the simulated Xen's directory (simulated-xen.md); overrides ``xen``
    sim_xen_dir: str | None = None
    #: dom0 reaches us over its ring only (no socket); its port is ``event_port``
    stub_domain: bool = False
    event_port: int | None = None


class StartupError(Exception):
    """The daemon could not start serving; the message is one line for the user."""


class AlreadyRunning(StartupError):
    """Another daemon holds the pid file (C xenstored then exits quietly, status 0)."""


def describe_error(err: BaseException) -> str:
    """One line for an error met at start-up (no errno numbers, no reprs)."""
    if isinstance(err, OSError) and err.strerror:
        return err.strerror + (f": {err.filename}" if err.filename else "")
    return " ".join(str(err).split()) or type(err).__name__


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


def _rss() -> str:
    """Resident memory of this process in bytes (Linux; 0 elsewhere)."""
    try:
        with open("/proc/self/statm") as f:
            return str(int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE"))
    except (OSError, ValueError, IndexError):
        return "0"


def _writable(path: object) -> None:
    """A log file setting must name a file we can append to (or be empty)."""
    if not path:
        return
    try:
        with open(str(path), "a"):
            pass
    except OSError as err:
        raise Invalid(f"cannot write {path}: {err.strerror}") from None


class Server:
    """One daemon: engine, listeners, clients."""

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.registry = Registry(config.settings)
        try:
            xen = open_xen(config.xen, config.sim_xen_dir)
        except OSError as err:
            raise StartupError(f"cannot open Xen: {describe_error(err)}") from err
        self.rings: RingManager | None = None
        if xen is not None:
            self.rings = RingManager(
                xen, stub_domain=config.stub_domain, event_port=config.event_port
            )
        elif config.stub_domain:
            raise StartupError("stub-domain mode needs a hypervisor (Xen or --sim-xen)")
        self.engine = Engine(priv_domid=config.priv_domid, backend=self.rings)
        if self.rings is not None:
            self.rings.attach(self.engine, self.flush)
            self.rings.tick = max(0.001, float(self.registry.get("conflict/replenish-seconds")))
        self.live_config = ConfigTree(self.engine, self.registry)
        self.socket_buffer_max = int(self.registry.get("limits/socket-buffer-bytes"))
        self.clients: set[SocketProtocol] = set()
        self.access_log: AccessLog | None = None
        self._stop: asyncio.Event | None = None
        self._listeners: list[asyncio.AbstractServer] = []
        #: called once serving (socket bound, rings started, pid file written)
        self.on_ready: list[Callable[[], None]] = []
        self.notifier: Notifier | None = None
        #: set once serve() serves; shutdown() logs "stopped" for it
        self.serving = False
        #: whether shutdown removes the socket (serve() clears it until it has bound)
        self._owns_socket = True
        self.pid_file = PidFile(config.pid_file) if config.pid_file else None
        self.registry.listeners.append(self._setting_changed)
        self.engine.commands["memreport"] = (self._memreport, "[<file>]")
        self.registry.validators["log/access-file"] = _writable
        self.live_config.add_stat("memory/rss", _rss)

    def _memreport(self, engine: Engine, args: list[str]) -> bytes:
        """CONTROL memreport [FILE]: the report as the reply, or appended to FILE."""
        lines = [*engine.memory_report(), f"rss: {_rss()}"]
        if not args:
            return "".join(line + "\n" for line in lines).encode("ascii") + b"\0"
        if len(args) != 1:
            raise Invalid("memreport [<file>]")
        try:
            with open(args[0], "a") as f:
                f.write("".join(line + "\n" for line in lines))
        except OSError as err:
            log.warning("memreport to %s failed: %s", args[0], err)
            raise Invalid("cannot write the report file") from None
        return b"OK\0"

    def _setting_changed(self, name: str, value: Any) -> None:
        if name == "log/level":
            logging.getLogger("pyxenstored").setLevel(str(value).upper())
        elif name.startswith("log/"):
            self._configure_access_log()
        elif name == "limits/socket-buffer-bytes":
            self.socket_buffer_max = int(value)
        elif name == "conflict/replenish-seconds" and self.rings is not None:
            self.rings.tick = max(0.001, float(value))

    def _configure_access_log(self) -> None:
        """Open, retarget or close the access log to match the settings."""
        reg = self.registry
        if not reg.get("log/access"):
            self.engine.on_request = None
            if self.access_log is not None:
                self.access_log.close()
                self.access_log = None
            return
        path = str(reg.get("log/access-file"))
        if self.access_log is None or self.access_log.path != path:
            if self.access_log is not None:
                self.access_log.close()
            self.access_log = AccessLog(path)
        self.access_log.ops = reg.get("log/access-ops")
        self.access_log.replies = reg.get("log/access-replies")
        self.engine.on_request = self.access_log

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
        """Start, serve until SIGTERM or SIGINT, shut down.

        Raises:
            StartupError: something needed to serve failed (already undone).
        """
        self._stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._stop.set)
        loop.add_signal_handler(signal.SIGHUP, self.reopen_logs)
        signal.signal(signal.SIGPIPE, signal.SIG_IGN)
        try:
            await self._start(loop)
        except StartupError:
            await self.shutdown()
            raise
        self._ready(loop)
        if started is not None:
            started.set()
        try:
            await self._stop.wait()
        finally:
            await self.shutdown()

    async def _start(self, loop: asyncio.AbstractEventLoop) -> None:
        """Rings, socket, pid file: everything needed before serving."""
        config = self.config
        nofile = raise_nofile_limit()
        logging.getLogger("pyxenstored").setLevel(str(self.registry.get("log/level")).upper())
        self._owns_socket = False
        if self.pid_file is not None:
            owner = self.pid_file.owner()
            if owner is not None:
                raise AlreadyRunning(f"already running as pid {owner} ({self.pid_file.path})")
        step = "cannot open the access log"
        try:
            self._configure_access_log()
            if self.rings is not None:
                step = "cannot serve Xen rings"
                self.rings.start(loop)
            if config.socket_path:
                step = f"cannot listen on {config.socket_path}"
                self._listeners.append(await listen_unix(self, config.socket_path, config.backlog))
                self._owns_socket = True
                log.info("listening on %s (open-file limit %d)", config.socket_path, nofile)
            if self.pid_file is not None:
                step = f"cannot write the pid file {self.pid_file.path}"
                self.pid_file.write()
        except (OSError, ValueError, XenstoreError) as err:
            raise StartupError(f"{step}: {describe_error(err)}") from err

    def _ready(self, loop: asyncio.AbstractEventLoop) -> None:
        """Serving: tell systemd (READY=1) and whoever waits for us."""
        where = self.config.socket_path or "no socket (stub domain)"
        status = f"serving {where}, {len(self.engine.domains)} domains"
        self.notifier = Notifier()
        self.notifier.ready(status, loop)
        self.serving = True
        for callback in self.on_ready:
            callback()
        log.info("ready: %s", status)

    def stop(self) -> None:
        if self._stop is not None:
            self._stop.set()

    def reopen_logs(self) -> None:
        log.info("SIGHUP: reopening log files")
        reopen_log_files()
        if self.access_log is not None:
            self.access_log.reopen()

    async def shutdown(self) -> None:
        if self.notifier is not None:
            self.notifier.stopping()
        for listener in self._listeners:
            listener.close()
        if self.rings is not None:
            self.rings.close()
        for proto in list(self.clients):
            if proto.transport is not None:
                proto.transport.close()
        for listener in self._listeners:
            await listener.wait_closed()
        self._listeners.clear()
        path = self.config.socket_path
        if path and self._owns_socket:
            with contextlib.suppress(OSError):
                os.unlink(path)
        if self.pid_file is not None:
            self.pid_file.remove()
        if self.access_log is not None:
            self.access_log.close()
        if self.notifier is not None:
            self.notifier.close()
        if self.serving:
            self.serving = False
            log.info("stopped")
