"""Xenstore client library: :mod:`.aio` (asyncio, pipelined) and :mod:`.sync` (blocking).

Both speak the wire protocol of :mod:`pyxenstored.protocol` and raise the
:mod:`pyxenstored.errors` classes; neither depends on the daemon's internals
(``core``/``runtime``), so they work against any xenstored, C or OCaml included.
The asyncio client runs over a pluggable byte :class:`~.aio.Channel` (the contract is
documented in :mod:`.aio`); the Unix socket is :class:`~.aio.StreamChannel`, the
kernel's ``/dev/xen/xenbus`` (a guest's way in) :mod:`.xenbus`. What both
share lives in :mod:`.values` (value types, errors, payload codec) and :mod:`.plans`
(each operation's requests and reply decoding).
"""

from . import xenbus
from .aio import Channel, StreamChannel, connect
from .aio import Client as AsyncClient
from .aio import Transaction as AsyncTransaction
from .sync import Client as SyncClient
from .sync import Transaction as SyncTransaction
from .values import (
    DEFAULT_SOCKET_PATH,
    ConnectionClosed,
    Perm,
    ProtocolError,
    WatchEvent,
    default_socket_path,
    error_from_reply,
)

__all__ = [
    "DEFAULT_SOCKET_PATH",
    "AsyncClient",
    "AsyncTransaction",
    "Channel",
    "ConnectionClosed",
    "Perm",
    "ProtocolError",
    "StreamChannel",
    "SyncClient",
    "SyncTransaction",
    "WatchEvent",
    "connect",
    "default_socket_path",
    "error_from_reply",
    "xenbus",
]
