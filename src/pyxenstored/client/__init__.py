"""Xenstore client library: :mod:`.aio` (asyncio, pipelined) and :mod:`.sync` (blocking).

Both speak the wire protocol of :mod:`pyxenstored.protocol` and raise the
:mod:`pyxenstored.errors` classes; neither depends on the daemon's internals
(``core``/``runtime``), so they work against any xenstored, C or OCaml included.
The asyncio client runs over a pluggable byte :class:`~.aio.Channel` (the contract is
documented in :mod:`.aio`); the Unix socket is :class:`~.aio.StreamChannel`.
"""

from .aio import (
    DEFAULT_SOCKET_PATH,
    Channel,
    ConnectionClosed,
    Perm,
    ProtocolError,
    StreamChannel,
    WatchEvent,
    connect,
    default_socket_path,
    error_from_reply,
)
from .aio import Client as AsyncClient
from .aio import Transaction as AsyncTransaction
from .sync import Client as SyncClient
from .sync import Transaction as SyncTransaction

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
]
