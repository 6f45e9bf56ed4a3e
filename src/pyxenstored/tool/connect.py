"""How every ``pyxenstore`` verb reaches xenstored.

The global options (added by :func:`add_options`, given before the verb) are

``--connect PATH``
    A Unix socket or a xenbus device (told apart by ``stat``, as libxenstore does).
``--timeout SECONDS``
    How long one request may wait for its reply (default: forever, as libxenstore).

Without ``--connect`` the client library looks where libxenstore's ``xs_open(0)``
looks: ``$XENSTORED_PATH``, else ``$XENSTORED_RUNDIR/socket``, else
``/run/xenstored/socket``; when that cannot be opened, the kernel's xenbus device
(``$XENSTORED_PATH``, else ``/dev/xen/xenbus``, else ``/proc/xen/xenbus``), which is
how a tool inside a Linux guest talks to the store.

A verb opens its connection with :func:`open_client` (blocking) or
:func:`open_async_client` (asyncio) and closes it when done; both raise ``OSError``
when nothing answers, which :func:`pyxenstored.tool.main.main` reports in one line
(exit status 1, as xenstore-utils' ``err(1, "xs_open")``).
"""

from __future__ import annotations

import argparse

from ..client.aio import Client as AsyncClient
from ..client.sync import Client as SyncClient
from .common import warn

__all__ = ["add_options", "open_async_client", "open_client"]


def add_options(parser: argparse.ArgumentParser) -> None:
    """Add ``--connect`` and ``--timeout`` to the top-level parser, and say in its
    epilog how xenstored is found and what the exit statuses mean."""
    parser.epilog = (
        "Without --connect, xenstored is found as libxenstore finds it: "
        "$XENSTORED_PATH, else $XENSTORED_RUNDIR/socket, else /run/xenstored/socket; if that "
        "cannot be opened, the xenbus device ($XENSTORED_PATH, else /dev/xen/xenbus, else "
        "/proc/xen/xenbus), which is how a tool inside a Linux guest reaches the store. "
        "A path is opened as a socket or as a device by what it is. "
        "Exit status: 0 on success, 1 when an operation fails, on a usage error or when "
        "xenstored cannot be reached (control: 2 without a command, 3 when it fails)."
    )
    parser.add_argument(
        "--connect",
        metavar="PATH",
        help="xenstored's Unix socket or a xenbus device (default: as libxenstore: "
        "$XENSTORED_PATH, $XENSTORED_RUNDIR/socket, /run/xenstored/socket, "
        "then /dev/xen/xenbus)",
    )
    parser.add_argument(
        "--timeout",
        metavar="SECONDS",
        type=float,
        default=None,
        help="give up on a request after this long (default: wait forever)",
    )


def open_client(args: argparse.Namespace) -> SyncClient:
    """A blocking client connected as the options in ``args`` say (close it after use)."""
    return SyncClient(getattr(args, "connect", None), timeout=getattr(args, "timeout", None))


def contact(args: argparse.Namespace) -> SyncClient | None:
    """:func:`open_client`, or None once the failure is said on stderr as
    xenstore-control says it (``failed to contact xenstored: ...``; exit status 1)."""
    try:
        return open_client(args)
    except OSError as err:
        warn(args, f"failed to contact xenstored: {err.strerror or err}")
        return None


async def open_async_client(args: argparse.Namespace) -> AsyncClient:
    """An asyncio client connected as the options in ``args`` say (close it after use).

    ``--timeout`` is not applied here: wrap the awaits in ``asyncio.timeout`` instead.
    """
    return await AsyncClient.connect(getattr(args, "connect", None))
