"""Running as a daemon: detaching like C xenstored, and where the log goes.

C xenstored forks unless ``-N``, and Debian's ``launch-xenstore`` counts on it: it runs
the daemon in the foreground, then waits for ``READY=1`` or for the pid file. We fork
the same way (twice, with ``setsid`` between, so the daemon can never regain a
terminal), before the server exists: no Xen device is open and no event loop runs yet.
Unlike C, the parent does not exit at once: it waits on a pipe until the serving
process serves (socket bound, rings started, pid file written) or tells why it cannot,
then exits 0, or prints that one line and exits 1.

Logs: ``--log-file FILE`` if given (SIGHUP reopens it, for logrotate); else stderr in the
foreground; detached, syslog when ``/dev/log`` is a socket, else
``/var/log/xen/pyxenstored.log`` when that directory is writable, else nowhere. On
stderr under systemd (``$JOURNAL_STREAM`` is stderr) the lines carry ``<N>`` priority
prefixes and no timestamp, so the journal shows each once, at its priority.
"""

from __future__ import annotations

import contextlib
import logging
import logging.handlers
import os
import signal
import stat
import sys
from collections.abc import Mapping

__all__ = [
    "DEV_LOG",
    "XEN_LOG_DIR",
    "Detached",
    "Foreground",
    "JournalFormatter",
    "ReopeningFileHandler",
    "configure_logging",
    "detach",
    "log_target",
    "reopen_log_files",
    "stderr_is_journal",
]

log = logging.getLogger("pyxenstored")

DEV_LOG = "/dev/log"
XEN_LOG_DIR = "/var/log/xen"
LOG_FORMAT = "%(asctime)s %(name)s %(levelname)s %(message)s"
SYSLOG_FORMAT = "pyxenstored[%(process)d]: %(name)s %(levelname)s %(message)s"


class Foreground:
    """Start-up outcome when not detached (``-N``): the failure line goes to stderr."""

    def __init__(self, output_pid: bool = False) -> None:
        self.output_pid = output_pid
        self.done = False

    def ready(self) -> None:
        self.done = True
        if self.output_pid:
            print(os.getpid(), flush=True)

    def failed(self, reason: str) -> int:
        self.done = True
        print(f"pyxenstored: {reason}", file=sys.stderr, flush=True)
        return 1

    def running(self, reason: str) -> int:
        """Another daemon serves already: say so, and succeed (as C xenstored)."""
        self.failed(reason)
        return 0


class Detached:
    """Start-up outcome of the detached daemon: one line to the waiting parent."""

    def __init__(self, fd: int) -> None:
        self._fd: int | None = fd

    @property
    def done(self) -> bool:
        return self._fd is None

    def ready(self) -> None:
        self._send(f"ready {os.getpid()}")

    def failed(self, reason: str) -> int:
        log.error("start-up failed: %s", reason)
        self._send(f"error {reason}")
        return 1

    def running(self, reason: str) -> int:
        """Another daemon serves already: say so, and succeed (as C xenstored)."""
        log.info("not started: %s", reason)
        self._send(f"running {reason}")
        return 0

    def _send(self, line: str) -> None:
        fd, self._fd = self._fd, None
        if fd is None:
            return
        with contextlib.suppress(OSError):
            os.write(fd, line.encode("utf-8", "replace") + b"\n")
        os.close(fd)


def detach(output_pid: bool = False) -> Detached:
    """Fork into the background; returns in the daemon only.

    The calling process waits for the daemon's one line, prints the daemon's pid (with
    ``output_pid``, as C's ``-P``) or the failure, and exits.
    """
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid:
        os.close(write_fd)
        os._exit(_await_start(read_fd, pid, output_pid))
    try:
        os.close(read_fd)
        os.setsid()
        if os.fork():
            os._exit(0)  # the session leader goes; its child serves
    except OSError as err:
        Detached(write_fd).failed(f"cannot detach: {err.strerror}")
        os._exit(1)
    os.chdir("/")
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    if null > 2:
        os.close(null)
    # A SIGHUP before the event loop handles it must not end the daemon.
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    return Detached(write_fd)


def _await_start(fd: int, child: int, output_pid: bool) -> int:
    """The parent's side: the daemon's line, then the exit status for it."""
    chunks = []
    while chunk := os.read(fd, 4096):
        chunks.append(chunk)
    os.close(fd)
    with contextlib.suppress(ChildProcessError):
        os.waitpid(child, 0)  # the session leader, gone as soon as it forked
    word, _, rest = b"".join(chunks).decode("utf-8", "replace").strip().partition(" ")
    if word == "ready":
        if output_pid:
            print(rest, flush=True)
        return 0
    reason = rest if word in ("error", "running") and rest else "the daemon exited during start-up"
    print(f"pyxenstored: {reason}", file=sys.stderr, flush=True)
    return 0 if word == "running" else 1


class ReopeningFileHandler(logging.FileHandler):
    """A log file that SIGHUP reopens (logrotate moved it: write a new one)."""

    def reopen(self) -> None:
        self.acquire()
        try:
            try:
                fresh = self._open()
            except OSError:
                return  # keep writing where we were
            old, self.stream = self.stream, fresh
            if old is not None:
                old.close()
        finally:
            self.release()


def reopen_log_files() -> None:
    """Reopen every log file of the root logger (SIGHUP)."""
    for handler in logging.getLogger().handlers:
        if isinstance(handler, ReopeningFileHandler):
            handler.reopen()


def _is_socket(path: str) -> bool:
    try:
        return stat.S_ISSOCK(os.stat(path).st_mode)
    except OSError:
        return False


def log_target(
    log_file: str | None,
    detached: bool,
    dev_log: str | None = None,
    log_dir: str | None = None,
) -> tuple[str, str | None]:
    """Where the log goes: ``("file", path)``, ``("stderr", None)``, ``("syslog",
    dev_log)`` or ``("none", None)``. ``dev_log`` and ``log_dir`` default to
    :data:`DEV_LOG` and :data:`XEN_LOG_DIR`."""
    dev_log = DEV_LOG if dev_log is None else dev_log
    log_dir = XEN_LOG_DIR if log_dir is None else log_dir
    if log_file:
        return "file", log_file
    if not detached:
        return "stderr", None
    if dev_log and _is_socket(dev_log):
        return "syslog", dev_log
    if os.path.isdir(log_dir) and os.access(log_dir, os.W_OK | os.X_OK):
        return "file", os.path.join(log_dir, "pyxenstored.log")
    return "none", None


#: syslog priorities (sd-daemon(3)'s ``<N>`` prefixes) of the logging levels
_PRIORITIES = ((logging.CRITICAL, 2), (logging.ERROR, 3), (logging.WARNING, 4), (logging.INFO, 6))


class JournalFormatter(logging.Formatter):
    """Lines for systemd's journal on stderr: ``<N>`` priority prefix on every line
    (journald reads it), no timestamp (the journal has its own)."""

    def __init__(self) -> None:
        super().__init__("%(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        priority = next((p for level, p in _PRIORITIES if record.levelno >= level), 7)
        prefix = f"<{priority}>"
        return "\n".join(prefix + line for line in super().format(record).split("\n"))


def stderr_is_journal(environ: Mapping[str, str] | None = None, fd: int = 2) -> bool:
    """Whether ``fd`` is the journal stream systemd connected (``$JOURNAL_STREAM`` is
    its ``device:inode``, see systemd.exec(5))."""
    value = (os.environ if environ is None else environ).get("JOURNAL_STREAM", "")
    dev, sep, ino = value.partition(":")
    if not sep or not dev.isdigit() or not ino.isdigit():
        return False
    try:
        st = os.fstat(fd)
    except OSError:
        return False
    return st.st_dev == int(dev) and st.st_ino == int(ino)


def configure_logging(log_file: str | None, detached: bool, style: str = "auto") -> str:
    """Send the root logger where :func:`log_target` says; returns where, for the log.

    ``style``: ``journal`` formats stderr lines for the journal (:class:`JournalFormatter`),
    ``plain`` never does, ``auto`` does when stderr is the journal.

    Raises:
        OSError: the log file cannot be opened.
    """
    kind, where = log_target(log_file, detached)
    handler: logging.Handler
    if kind == "syslog" and where is not None:
        try:
            handler = logging.handlers.SysLogHandler(
                where, facility=logging.handlers.SysLogHandler.LOG_DAEMON
            )
            handler.setFormatter(logging.Formatter(SYSLOG_FORMAT))
        except OSError:
            kind, where = log_target(None, detached, dev_log="")
    if kind == "file" and where is not None:
        handler = ReopeningFileHandler(where, encoding="utf-8")
        handler.setFormatter(logging.Formatter(LOG_FORMAT))
    elif kind == "stderr":
        handler = logging.StreamHandler(sys.stderr)
        if style == "journal" or (style == "auto" and stderr_is_journal()):
            handler.setFormatter(JournalFormatter())
            kind = "journal"
        else:
            handler.setFormatter(logging.Formatter(LOG_FORMAT))
    elif kind == "none":
        handler = logging.NullHandler()
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    return f"{kind} {where}" if where else kind
