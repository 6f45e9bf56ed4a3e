"""systemd's readiness protocol (sd_notify), natively: no libsystemd.

Debian's ``xenstored.service`` is ``Type=notify`` with ``NotifyAccess=all``: it waits for
``READY=1`` on ``$NOTIFY_SOCKET`` from any process of the unit, which is what C
xenstored sends once it serves. The serving process (after the fork) sends ``READY=1``
and a ``STATUS=`` line when it serves, ``STOPPING=1`` when it shuts down, and
``WATCHDOG=1`` every ``$WATCHDOG_USEC / 2`` when systemd asks for a watchdog (and
``$WATCHDOG_PID``, if set, is this process).

Nothing here may stop the daemon: a notification that cannot be sent is logged at debug
level and forgotten.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import Mapping

__all__ = ["Notifier", "notify_address", "watchdog_interval"]

log = logging.getLogger("pyxenstored.sdnotify")


def notify_address(environ: Mapping[str, str]) -> str | None:
    """The datagram socket ``$NOTIFY_SOCKET`` names (``@name``: abstract), or None."""
    address = environ.get("NOTIFY_SOCKET", "")
    if not address:
        return None
    if address.startswith("@"):
        return "\0" + address[1:]
    if address.startswith("/"):
        return address
    log.debug("NOTIFY_SOCKET=%r: not a Unix socket address, not notifying", address)
    return None


def watchdog_interval(environ: Mapping[str, str], pid: int) -> float | None:
    """Seconds between two ``WATCHDOG=1`` (half of ``$WATCHDOG_USEC``), or None."""
    usec = environ.get("WATCHDOG_USEC", "")
    owner = environ.get("WATCHDOG_PID", "")
    if not usec.isdigit() or int(usec) == 0:
        return None
    if owner and owner != str(pid):
        return None
    return int(usec) / 2e6


class Notifier:
    """Sends state changes to systemd's notify socket (a no-op without one)."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        self.address = notify_address(env)
        self.interval = watchdog_interval(env, os.getpid()) if self.address else None
        self._sock: socket.socket | None = None
        self._timer: asyncio.TimerHandle | None = None

    def send(self, *fields: str) -> bool:
        """Send ``KEY=VALUE`` lines as one datagram; False if that failed."""
        if self.address is None:
            return False
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                self._sock.setblocking(False)
            self._sock.sendto("\n".join(fields).encode("utf-8", "replace"), self.address)
        except OSError as err:
            log.debug("sd_notify %s failed: %s", fields[0] if fields else "", err)
            return False
        return True

    def ready(self, status: str, loop: asyncio.AbstractEventLoop) -> None:
        """READY=1 with a status line; then the watchdog, if systemd wants one."""
        self.send("READY=1", f"STATUS={status}")
        if self.interval is not None:
            self._timer = loop.call_later(self.interval, self._watchdog, loop)

    def _watchdog(self, loop: asyncio.AbstractEventLoop) -> None:
        self.send("WATCHDOG=1")
        assert self.interval is not None
        self._timer = loop.call_later(self.interval, self._watchdog, loop)

    def stopping(self) -> None:
        """STOPPING=1; the watchdog ends."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.send("STOPPING=1", "STATUS=shutting down")

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.close()
            self._sock = None
