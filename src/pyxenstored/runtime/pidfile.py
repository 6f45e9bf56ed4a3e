"""The pid file, locked the way C xenstored locks it.

C xenstored takes a ``lockf`` lock on its pid file and exits quietly (status 0) when
another daemon holds it, before it touches the socket. We do the same check before
binding our socket, so a second start (an init script that cannot recognise a Python
daemon by its executable, say) never takes the socket away from the running daemon.
The file itself is written only once we serve, atomically, and stays locked while we
run: whoever tests for it (Debian's ``launch-xenstore``) may take it as "up".
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os

__all__ = ["PidFile"]


class PidFile:
    """``path``, written and locked while the daemon serves."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._fd: int | None = None

    def owner(self) -> int | None:
        """The pid in the file if a live process holds its lock (C xenstored or us),
        else None (no file, or a stale one)."""
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CLOEXEC)
        except FileNotFoundError:
            return None
        try:
            try:
                fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as err:
                if err.errno not in (errno.EACCES, errno.EAGAIN):
                    raise
                text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
                return int(text) if text.isdigit() else 0
            return None
        finally:
            os.close(fd)  # also drops the lock we may just have taken

    def write(self) -> None:
        """Write our pid (a temporary file renamed into place, locked before)."""
        tmp = f"{self.path}.{os.getpid()}.tmp"
        fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            os.write(fd, f"{os.getpid()}\n".encode("ascii"))
            os.replace(tmp, self.path)
        except BaseException:
            os.close(fd)
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        self._fd = fd

    def remove(self) -> None:
        """Remove the file we wrote (nothing if we did not write it)."""
        if self._fd is None:
            return
        with contextlib.suppress(OSError):
            os.unlink(self.path)
        os.close(self._fd)
        self._fd = None
