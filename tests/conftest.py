"""Generic fixtures: the real daemon as a subprocess, or the Server in a thread.

* ``daemon`` -- socket path of a fresh ``python -m pyxenstored -N`` (one per test; ``-N``
  keeps it in the foreground, as a child of the test).
* ``daemon_proc`` -- the same daemon as a :class:`DaemonProcess` (pid, files, signals).
* ``daemon_factory`` -- start daemons with extra command-line options.
* ``module_daemon`` -- one daemon shared by a test module (use unique paths per test).
* ``server_thread`` -- :class:`ServerThread`: the Server in-process, engine inspectable.
* ``server_thread_factory`` -- the same with ServerConfig overrides.

Every daemon lives in its own short temporary directory (Unix socket paths are limited
to 107 bytes), so the fixtures are xdist-safe; every daemon is killed at teardown.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, Protocol, TypeVar

import pytest

from pyxenstored.runtime.server import Server, ServerConfig
from pyxenstored.runtime.unix import listen_unix

T = TypeVar("T")

STARTUP_TIMEOUT = 15.0


def short_tmpdir() -> Path:
    """A fresh private directory with a path short enough for AF_UNIX sockets."""
    base = tempfile.gettempdir()
    if len(base) > 60:
        base = "/tmp"
    return Path(tempfile.mkdtemp(prefix="pyxs-", dir=base))


def wait_for_socket(path: str, timeout: float, proc: subprocess.Popen[bytes] | None) -> None:
    """Block until ``path`` accepts connections (or the process dies, or time runs out)."""
    deadline = time.monotonic() + timeout
    while True:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"daemon exited with {proc.returncode} before listening")
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
            try:
                probe.connect(path)
                return
            except OSError:
                pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"daemon socket {path} did not appear within {timeout}s")
        time.sleep(0.01)


@dataclass
class DaemonProcess:
    """A running ``python -m pyxenstored`` and the files it was given."""

    proc: subprocess.Popen[bytes]
    socket: str
    dir: Path
    stderr_path: Path
    args: list[str] = field(default_factory=list)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, timeout: float = 10.0) -> int:
        """SIGTERM, wait; SIGKILL if it does not go. Returns the exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def stderr(self) -> str:
        """What the daemon logged so far."""
        try:
            return self.stderr_path.read_text(errors="replace")
        except OSError:
            return ""


def start_daemon(
    directory: Path,
    *extra: str,
    socket_path: str | None = None,
    env: dict[str, str] | None = None,
    preexec_fn: Callable[[], None] | None = None,
    wait: bool = True,
) -> DaemonProcess:
    """Start the daemon with ``--socket`` in ``directory`` plus ``extra`` options."""
    path = socket_path or str(directory / "socket")
    stderr_path = directory / f"daemon-{len(list(directory.glob('daemon-*')))}.err"
    args = [sys.executable, "-m", "pyxenstored", "-N", "--socket", path, *extra]
    with open(stderr_path, "wb") as err:
        proc = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=err,
            env=env,
            preexec_fn=preexec_fn,
        )
    daemon = DaemonProcess(proc, path, directory, stderr_path, args)
    if wait:
        try:
            wait_for_socket(path, STARTUP_TIMEOUT, proc)
        except BaseException:
            daemon.stop()
            raise RuntimeError(f"daemon failed to start:\n{daemon.stderr()}") from None
    return daemon


class _Stoppable(Protocol):
    def stop(self) -> object: ...


S = TypeVar("S", bound=_Stoppable)


class _Factory(Generic[S]):
    """What a factory started and the short directories it made: all of it stopped and
    removed by :meth:`cleanup` (the fixture's teardown)."""

    def __init__(self) -> None:
        self.started: list[S] = []
        self.dirs: list[Path] = []

    def new_dir(self) -> Path:
        """A fresh short directory, removed at teardown."""
        directory = short_tmpdir()
        self.dirs.append(directory)
        return directory

    def keep(self, thing: S) -> S:
        """Stop ``thing`` at teardown."""
        self.started.append(thing)
        return thing

    def cleanup(self) -> None:
        for thing in self.started:
            thing.stop()
        for directory in self.dirs:
            shutil.rmtree(directory, ignore_errors=True)


class DaemonFactory(_Factory[DaemonProcess]):
    """Starts daemons for one test (or module) and kills them all at teardown."""

    def __call__(self, *extra: str, **kwargs: Any) -> DaemonProcess:
        return self.keep(start_daemon(self.new_dir(), *extra, **kwargs))


@pytest.fixture
def daemon_factory() -> Iterator[DaemonFactory]:
    """Call with extra command-line options to start a daemon; all die at teardown."""
    factory = DaemonFactory()
    try:
        yield factory
    finally:
        factory.cleanup()


@pytest.fixture
def daemon_proc(daemon_factory: DaemonFactory) -> DaemonProcess:
    """A fresh daemon with default options."""
    return daemon_factory()


@pytest.fixture
def daemon(daemon_proc: DaemonProcess) -> str:
    """The socket path of a fresh daemon."""
    return daemon_proc.socket


@pytest.fixture(scope="module")
def module_daemon() -> Iterator[str]:
    """The socket path of a daemon shared by every test of a module."""
    factory = DaemonFactory()
    try:
        yield factory().socket
    finally:
        factory.cleanup()


class ServerThread:
    """The daemon's Server in this process, on its own event loop thread.

    ``Server.serve()`` installs signal handlers, which only the main thread may do, so
    this drives the socket part of it directly: ``listen_unix`` and ``Server.shutdown``.
    What else ``serve()`` starts (access log, rings, pid file) is not started here: use
    the ``daemon_factory`` for those. Use :meth:`call` to look at the engine safely.
    """

    def __init__(self, config: ServerConfig) -> None:
        assert config.socket_path is not None
        self.config = config
        self.socket_path: str = config.socket_path
        self.server = Server(config)
        self.loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="pyxenstored-test", daemon=True)

    def start(self) -> ServerThread:
        self._thread.start()
        if not self._ready.wait(STARTUP_TIMEOUT):
            raise TimeoutError("in-process server did not start")
        if self._error is not None:
            raise RuntimeError("in-process server failed") from self._error
        return self

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as err:
            self._error = err
            self._ready.set()

    async def _main(self) -> None:
        self.loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        listener = await listen_unix(self.server.sockets, self.socket_path, self.config.backlog)
        self._ready.set()
        try:
            await self._stop.wait()
        finally:
            listener.close()
            await self.server.shutdown()

    def call(self, fn: Callable[[], T], timeout: float = 10.0) -> T:
        """Run ``fn()`` on the server's loop thread and return its result."""
        assert self.loop is not None
        result: concurrent.futures.Future[T] = concurrent.futures.Future()

        def run() -> None:
            try:
                result.set_result(fn())
            except BaseException as err:
                result.set_exception(err)

        self.loop.call_soon_threadsafe(run)
        return result.result(timeout)

    def run_async(self, coro: Awaitable[T], timeout: float = 10.0) -> T:
        """Run a coroutine on the server's loop."""
        assert self.loop is not None

        async def wrap() -> T:
            return await coro

        return asyncio.run_coroutine_threadsafe(wrap(), self.loop).result(timeout)

    def stop(self) -> None:
        if self.loop is not None and self._stop is not None and self._thread.is_alive():
            with contextlib.suppress(RuntimeError):
                self.loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)


class ServerThreadFactory(_Factory[ServerThread]):
    """Starts in-process servers with ServerConfig overrides; stops them at teardown."""

    def __call__(self, **overrides: Any) -> ServerThread:
        config = ServerConfig(socket_path=str(self.new_dir() / "socket"), **overrides)
        return self.keep(ServerThread(config)).start()


@pytest.fixture
def server_thread_factory() -> Iterator[ServerThreadFactory]:
    """Call with ServerConfig fields (``settings={...}``, ...) to start a Server."""
    factory = ServerThreadFactory()
    try:
        yield factory
    finally:
        factory.cleanup()


@pytest.fixture
def server_thread(server_thread_factory: ServerThreadFactory) -> ServerThread:
    """A Server running in a thread of the test process (engine reachable via .call)."""
    return server_thread_factory()
