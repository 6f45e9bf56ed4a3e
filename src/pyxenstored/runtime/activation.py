"""systemd socket activation: the listening socket comes from ``$LISTEN_FDS``.

``sd_listen_fds(3)`` semantics, natively: when ``$LISTEN_PID`` is this process, the
``$LISTEN_FDS`` descriptors from 3 on were opened for us (``$LISTEN_FDNAMES`` names
them, colon-separated; optional). We take them before anything else opens a file (the
command line reads them before it detaches, so a fork does not lose them), unset the
variables so that no child takes them for its own, and mark them close-on-exec.

The daemon serves every passed descriptor that is a listening ``AF_UNIX`` stream
socket, in place of binding ``--socket``; anything else passed is logged and closed.
The socket file then belongs to systemd: a clean stop leaves it in place.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import Callable, MutableMapping
from dataclasses import dataclass
from typing import Any

__all__ = ["LISTEN_FDS_START", "Passed", "serve_passed", "take_listen_fds"]

log = logging.getLogger("pyxenstored")

#: SD_LISTEN_FDS_START: the first descriptor systemd passes.
LISTEN_FDS_START = 3
_VARIABLES = ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES")


@dataclass(frozen=True)
class Passed:
    """One descriptor systemd passed, with its name (``unknown`` without a name)."""

    fd: int
    name: str


def take_listen_fds(
    environ: MutableMapping[str, str] | None = None, pid: int | None = None
) -> list[Passed]:
    """The descriptors passed to this process (none if ``$LISTEN_PID`` is another
    process's, or the variables are missing or malformed). The variables are removed
    from ``environ`` (default: ``os.environ``) either way when ``$LISTEN_FDS`` is set."""
    env = os.environ if environ is None else environ
    listen_pid = env.get("LISTEN_PID", "")
    count = env.get("LISTEN_FDS", "")
    names = env.get("LISTEN_FDNAMES", "")
    if not count:
        return []
    for name in _VARIABLES:
        env.pop(name, None)
    me = os.getpid() if pid is None else pid
    if not listen_pid.isdigit() or int(listen_pid) != me:
        log.debug("LISTEN_PID=%r is not us (%d): no socket activation", listen_pid, me)
        return []
    if not count.isdigit() or int(count) == 0:
        return []
    labels = names.split(":") if names else []
    passed = []
    for i in range(int(count)):
        fd = LISTEN_FDS_START + i
        with contextlib.suppress(OSError):
            os.set_inheritable(fd, False)
        passed.append(Passed(fd, labels[i] if i < len(labels) else "unknown"))
    return passed


def _usable(fd: int) -> socket.socket | None:
    """The passed descriptor as a socket if it is a listening Unix stream socket;
    otherwise it is closed (it was ours) and the answer is None."""
    try:
        sock = socket.socket(fileno=fd)
    except OSError:
        with contextlib.suppress(OSError):
            os.close(fd)
        return None
    try:
        listening = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN)
        if sock.family == socket.AF_UNIX and sock.type == socket.SOCK_STREAM and listening:
            return sock
    except OSError:
        pass
    sock.close()
    return None


async def serve_passed(
    passed: list[Passed], factory: Callable[[], Any], backlog: int
) -> list[asyncio.AbstractServer]:
    """Serve every usable passed socket. Raises OSError if none is usable."""
    loop = asyncio.get_running_loop()
    servers: list[asyncio.AbstractServer] = []
    for item in passed:
        sock = _usable(item.fd)
        if sock is None:
            log.warning(
                "socket activation: fd %d (%s) is not a listening Unix stream socket: ignored",
                item.fd,
                item.name,
            )
            continue
        sock.setblocking(False)
        servers.append(await loop.create_unix_server(factory, sock=sock, backlog=backlog))
        name = sock.getsockname()
        log.info("listening on %s from systemd (fd %d, %s)", name, item.fd, item.name)
    if not servers:
        raise OSError(0, "no listening Unix stream socket among LISTEN_FDS")
    return servers
