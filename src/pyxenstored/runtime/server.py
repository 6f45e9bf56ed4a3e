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
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..core.connection import Connection
from ..core.engine import Engine
from ..errors import Invalid, XenstoreError
from ..liveconfig.registry import Registry
from ..liveconfig.tree import ConfigTree
from ..protocol.framing import FramingError
from ..protocol.wire import OK
from ..state.journal import JournalError, Replayed, replay
from ..state.snapshot import Handover, Restored, restore, save
from ..state.stream import GlobalData, Record, StateStreamError, decode
from .accesslog import AccessLog
from .activation import Passed, serve_passed
from .daemon import reopen_log_files
from .journal import Journal, journal_path
from .liveupdate import LiveUpdate, state_file
from .loops import loop_factory
from .metrics import MetricsServer
from .pidfile import PidFile
from .rings import RingManager, open_xen
from .sdnotify import Notifier
from .unix import SocketProtocol, SocketState, listen_unix

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
    #: start from a live update's state file (``-U``) instead of an empty store
    live_update: bool = False
    #: where the crash journal lives (None: the socket's directory; none without a
    #: socket unless given)
    state_dir: str | None = None
    #: replay a journal left by a crash (False: ignore it, start empty; ours replaces it)
    recover: bool = True
    #: keep a crash journal at all
    journal: bool = True
    #: listening sockets systemd passed (socket activation): served instead of binding
    listen_fds: list[Passed] = field(default_factory=list)
    #: serve the statistics as Prometheus metrics over HTTP here (None: not at all)
    metrics_listen: tuple[str, int] | None = None
    #: the daemon's own command line, which a live update passes on without ``-c``
    #: (None: ``sys.argv``)
    command_line: list[str] | None = None
    #: the same, less what C xenstored does not know: passed on to a C binary
    c_command_line: list[str] | None = None


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


def state_dir(config: ServerConfig) -> str | None:
    """The crash journal's directory: ``--state-dir``, else the socket's directory."""
    if not config.journal:
        return None
    if config.state_dir:
        return config.state_dir
    if config.stub_domain or not config.socket_path:
        return None
    return os.path.dirname(config.socket_path) or "."


def _read_journal(path: str, new_engine: Callable[[], Engine]) -> Replayed | None:
    """A journal left by a crash, replayed (None: there is none)."""
    started = time.monotonic()
    try:
        with open(path, "rb") as f:
            data = f.read()
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as err:
        raise StartupError(f"cannot read the crash journal: {describe_error(err)}") from err
    try:
        replayed = replay(data, new_engine)
    except JournalError as err:
        raise StartupError(
            f"cannot recover from {path}: {err} (--no-recover starts empty)"
        ) from err
    log.warning(
        "recovered from a crash: %d nodes, %d domains from %s (%d bytes, %d records%s) in %.3f s",
        len(replayed.restored.engine.tree.nodes),
        len(replayed.restored.engine.domains),
        path,
        replayed.used,
        replayed.frames,
        f"; a torn last record of {replayed.dropped} bytes dropped" if replayed.dropped else "",
        time.monotonic() - started,
    )
    return replayed


def _read_state(path: str) -> tuple[list[Record], int]:
    """A live update's state file: its records and the inherited event-channel fd."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as err:
        raise StartupError(f"live update: no state to start from: {describe_error(err)}") from err
    try:
        _, records = decode(data)
    except StateStreamError as err:
        raise StartupError(f"live update: {path}: {err}") from err
    evtchn_fd = next((r.evtchn_fd for r in records if isinstance(r, GlobalData)), -1)
    return records, evtchn_fd


class Server:
    """One daemon: engine, listeners, clients."""

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.registry = Registry(config.settings)
        records: list[Record] | None = None
        evtchn_fd = -1
        if config.live_update:
            records, evtchn_fd = _read_state(state_file())
        try:
            xen = open_xen(config.xen, config.sim_xen_dir, evtchn_fd)
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
        #: what a live update handed over, or a crash journal gave back (None: fresh)
        self.restored: Restored | None = None
        #: the state comes from a crash journal (rings are bound again, not adopted)
        self.recovered = False
        where = state_dir(config)
        self.journal_file = journal_path(where) if where else None
        self.journal: Journal | None = None
        #: what the journal a crash left holds (the journal goes on from there)
        self._replayed: Replayed | None = None
        if self.journal_file is not None and not config.live_update:
            if not config.recover:
                # Not removed here: a daemon that finds another running must not touch
                # its journal. Once serving, ours replaces it.
                if os.path.exists(self.journal_file):
                    log.warning(
                        "--no-recover: crash journal %s ignored (replaced once serving)",
                        self.journal_file,
                    )
            else:
                replayed = _read_journal(
                    self.journal_file,
                    lambda: Engine(priv_domid=config.priv_domid, backend=self.rings),
                )
                if replayed is not None:
                    self._replayed = replayed
                    self.restored = replayed.restored
                    self.engine = replayed.restored.engine
                    self.recovered = True
                    for note in replayed.notes:
                        log.info("recovery: %s", note)
        if records is not None:
            try:
                self.restored = restore(records, self.engine)
            except (StateStreamError, ValueError) as err:
                raise StartupError(f"cannot restore {state_file()}: {err}") from err
            for note in self.restored.notes:
                log.info("live update: %s", note)
        if self.rings is not None:
            self.rings.attach(self.engine, self.flush, self.persist)
            self.rings.tick = max(0.001, float(self.registry.get("conflict/replenish-seconds")))
        self.live_config = ConfigTree(self.engine, self.registry, adopt=self.restored is not None)
        self.live_update = LiveUpdate(self)
        self.engine.commands["live-update"] = (
            self.live_update.command,
            "-f <file> | -c <cmdline> | -s [-F] [-t <timeout>] [-v <version>] | -a",
        )
        #: tasks the server runs beside serving (kept referenced until done)
        self.background: set[asyncio.Task[None]] = set()
        #: what the socket connections share (and all they know of the daemon)
        self.sockets = SocketState(
            self.engine,
            self.persist,
            self.flush,
            int(self.registry.get("limits/socket-buffer-bytes")),
        )
        if self.rings is not None:
            self.rings.privileged_cap = self.sockets.socket_buffer_max
        self.clients: set[SocketProtocol] = self.sockets.clients
        self.access_log: AccessLog | None = None
        self.metrics: MetricsServer | None = None
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
        return OK

    def _setting_changed(self, name: str, value: Any) -> None:
        if name == "log/level":
            logging.getLogger("pyxenstored").setLevel(str(value).upper())
        elif name.startswith("log/"):
            self._configure_access_log()
        elif name == "limits/socket-buffer-bytes":
            self.sockets.socket_buffer_max = int(value)
            if self.rings is not None:
                self.rings.privileged_cap = int(value)
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
        self.access_log.format = str(reg.get("log/access-format"))
        self.access_log.ops = reg.get("log/access-ops")
        self.access_log.replies = reg.get("log/access-replies")
        self.engine.on_request = self.access_log

    # clients ----------------------------------------------------------------------------
    @property
    def socket_buffer_max(self) -> int:
        """``limits/socket-buffer-bytes`` in force: unread output that cuts a client off."""
        return self.sockets.socket_buffer_max

    def track(self, proto: SocketProtocol) -> SocketProtocol:
        return self.sockets.track(proto)

    def _use_journal(self, journal: Journal) -> None:
        self.journal = journal
        self._set_persist(journal.write_pending)
        if self.rings is not None:
            self.rings.journaling = True
            journal.rings = self.rings.journal_records

    def _set_persist(self, persist: Callable[[], None]) -> None:
        """What writes the crash journal, for the server and both transports alike (they
        call it after every request: a plain function, no indirection)."""
        self.persist = persist  # type: ignore[method-assign]
        self.sockets.persist = persist
        if self.rings is not None:
            self.rings.persist = persist

    def persist(self) -> None:
        """Write the crash journal's record of the requests just answered (before their
        replies and events leave)."""
        journal = self.journal
        if journal is not None:
            journal.write_pending()

    def flush(self) -> None:
        """Deliver output queued for connections other than the current one."""
        self.persist()
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
        restored = self.restored
        try:
            self._configure_access_log()
            if self._replayed is not None and self.journal_file is not None:
                # Before the rings: domains found dead meanwhile are journaled too.
                step = f"cannot write the crash journal {self.journal_file}"
                journal = Journal(self.journal_file, self.engine)
                self._use_journal(journal)
                journal.resume(self._replayed.used, self._replayed.snapshot)
            if self.rings is not None:
                step = "cannot serve Xen rings"
                self.rings.start(
                    loop,
                    restored.connections if restored is not None else None,
                    rebind=self.recovered,
                    journaled=self._replayed.rings if self._replayed is not None else None,
                )
            if restored is not None and restored.listen_fd >= 0:
                step = "cannot adopt the listening socket"
                sock = socket.socket(fileno=restored.listen_fd)
                factory: Any = lambda: self.track(SocketProtocol(self.sockets))  # noqa: E731
                self._listeners.append(
                    await loop.create_unix_server(factory, sock=sock, backlog=config.backlog)
                )
                self._owns_socket = True
                log.info("live update: listening socket adopted (fd %d)", restored.listen_fd)
            elif config.listen_fds:
                step = "cannot serve the sockets systemd passed"
                factory = lambda: self.track(SocketProtocol(self.sockets))  # noqa: E731
                self._listeners += await serve_passed(config.listen_fds, factory, config.backlog)
            elif config.socket_path:
                step = f"cannot listen on {config.socket_path}"
                listener = await listen_unix(self.sockets, config.socket_path, config.backlog)
                self._listeners.append(listener)
                self._owns_socket = True
                log.info("listening on %s (open-file limit %d)", config.socket_path, nofile)
            if restored is not None and not self.recovered:
                # Consumed (as C): a later start must not take it for a new update.
                with contextlib.suppress(OSError):
                    os.unlink(state_file())
                step = "cannot adopt the socket connections"
                await self._adopt_sockets(loop, restored)
            if self.journal_file is not None and self.journal is None:
                step = f"cannot write the crash journal {self.journal_file}"
                journal = Journal(self.journal_file, self.engine)
                self._use_journal(journal)
                journal.start()
            self.flush()
            if config.metrics_listen is not None:
                host, port = config.metrics_listen
                step = f"cannot serve metrics on {host}:{port}"
                self.metrics = MetricsServer(self.engine, self.registry, *config.metrics_listen)
                log.info("metrics on http://%s:%d/metrics", *self.metrics.start(loop))
            if self.pid_file is not None:
                step = f"cannot write the pid file {self.pid_file.path}"
                self.pid_file.write()
        except (OSError, ValueError, RuntimeError, XenstoreError) as err:
            raise StartupError(f"{step}: {describe_error(err)}") from err

    async def _adopt_sockets(self, loop: asyncio.AbstractEventLoop, restored: Restored) -> None:
        """Serve again every socket connection the replaced process served."""
        adopted = 0
        for item in restored.connections:
            conn = item.conn
            if item.kind != "socket" or conn is None or item.fd < 0:
                continue
            sock = socket.socket(fileno=item.fd)
            sock.setblocking(False)
            proto = self.track(SocketProtocol(self.sockets, conn))
            await loop.connect_accepted_socket(lambda proto=proto: proto, sock)  # type: ignore[misc]
            if proto.transport is None:
                continue
            if item.unsent:
                proto.transport.write(item.unsent)
            if item.pending_input:
                try:
                    self.engine.feed(conn, b"")
                except FramingError as err:
                    log.warning("live update: socket connection %d: %s", conn.id, err)
            if conn.out:
                proto.deliver(conn)
            adopted += 1
        self.flush()
        log.info("live update: %d socket connections adopted", adopted)

    # -- live update: the replaced side ---------------------------------------------------
    def hold_input(self, held: bool) -> None:
        """Stop (or resume) reading requests from every socket and ring."""
        for proto in self.clients:
            transport = proto.transport
            if transport is None or transport.is_closing():
                continue
            if held:
                transport.pause_reading()
            elif not proto.paused:
                transport.resume_reading()
        if self.rings is not None:
            self.rings.hold(held)

    async def drain_sockets(self, seconds: float) -> None:
        """Wait until the socket transports wrote what they hold; after ``seconds``, a
        client that still has not taken its bytes is disconnected (they cannot be
        carried: they are in the event loop's buffer, not ours)."""
        self.flush()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        while loop.time() < deadline:
            if all(
                p.transport is None or p.transport.get_write_buffer_size() == 0
                for p in self.clients
            ):
                return
            await asyncio.sleep(0.01)
        for proto in list(self.clients):
            transport = proto.transport
            if transport is not None and transport.get_write_buffer_size():
                log.warning(
                    "live update: socket connection %s did not read %d bytes: disconnected",
                    proto.conn.id if proto.conn else "?",
                    transport.get_write_buffer_size(),
                )
                if proto.conn is not None:
                    self.engine.disconnect(proto.conn)
                transport.abort()

    def _socket_fd(self, proto: SocketProtocol) -> int:
        transport = proto.transport
        sock = transport.get_extra_info("socket") if transport is not None else None
        return int(sock.fileno()) if sock is not None else -1

    def _listen_fd(self) -> int:
        for listener in self._listeners:
            for sock in getattr(listener, "sockets", ()):
                return int(sock.fileno())
        return -1

    def save_state(self, version: int, transactions: bool, ours: bool = True) -> bytes:
        """The whole state as a stream, for the process that replaces us (``ours``: a
        pyxenstored; else C xenstored, which must not see WATCH_DATA_EXTENDED: 4.21
        skips it and would lose the watch, 4.22 misreads it)."""
        by_conn = {p.conn: p for p in self.clients if p.conn is not None}
        for proto in by_conn.values():
            proto.hand_back()

        def handover(conn: Connection) -> Handover | None:
            proto = by_conn.get(conn)
            if proto is not None:
                fd = self._socket_fd(proto)
                return Handover(fd=fd) if fd >= 0 else None
            return self.rings.handover(conn) if self.rings is not None else None

        evtchn = self.rings.xen.inheritable() if self.rings is not None else []
        return save(
            self.engine,
            handover=handover,
            version=version,
            transactions=transactions,
            extended_watches=ours,
            listen_fd=self._listen_fd(),
            evtchn_fd=evtchn[0] if evtchn else -1,
        )

    def _exec_fds(self) -> list[int]:
        fds = [self._listen_fd(), *(self._socket_fd(p) for p in self.clients)]
        if self.rings is not None:
            fds += self.rings.xen.inheritable()
        return [fd for fd in fds if fd >= 0]

    def prepare_exec(self) -> None:
        """Keep the descriptors the new process adopts open across exec."""
        if self.journal is not None:
            # The new process writes its own journal: no child of ours may race it.
            self.journal.stop_compaction()
        for fd in self._exec_fds():
            os.set_inheritable(fd, True)
        if self.rings is not None:
            self.rings.xen.prepare_exec()

    def undo_exec(self) -> None:
        """The exec failed: nothing is to be inherited after all."""
        for fd in self._exec_fds():
            with contextlib.suppress(OSError):
                os.set_inheritable(fd, False)
        if self.rings is not None:
            self.rings.xen.undo_exec()

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
        if self.metrics is not None:
            self.metrics.close()
            self.metrics = None
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
        if self.journal is not None:
            # A clean stop: the next start is a fresh one (a failed start keeps it).
            self.journal.close(remove=self.serving)
            self.journal = None
            self._set_persist(lambda: None)
            if self.rings is not None:
                self.rings.journaling = False
                self.rings.dirty.clear()
        if self.pid_file is not None:
            self.pid_file.remove()
        if self.access_log is not None:
            self.access_log.close()
        if self.notifier is not None:
            self.notifier.close()
        if self.serving:
            self.serving = False
            log.info("stopped")
