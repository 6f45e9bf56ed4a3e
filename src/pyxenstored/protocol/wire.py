"""Wire constants of xs_wire.h: the header, op codes, limits, ring feature bits, domids.

The 16-byte header is four native-order u32 (type, req_id, tx_id, len); every Xen
architecture in practice is little-endian (xenstore-protocol.md §1.1).
"""

from __future__ import annotations

import struct
from enum import IntEnum, IntFlag

__all__ = [
    "DOMID_ANY",
    "DOMID_FIRST_RESERVED",
    "DOMID_SELF",
    "HEADER",
    "HEADER_SIZE",
    "OK",
    "PAYLOAD_MAX",
    "RING_SIZE",
    "Op",
    "RingFeature",
    "encode",
]

HEADER = struct.Struct("<IIII")
HEADER_SIZE = 16
#: the payload of every request that succeeds with nothing to tell
OK = b"OK\0"
#: XENSTORE_PAYLOAD_MAX: longer requests drop the connection, longer replies become E2BIG.
PAYLOAD_MAX = 4096
#: XENSTORE_RING_SIZE: bytes per direction in the shared page.
RING_SIZE = 1024

DOMID_FIRST_RESERVED = 0x7FF0
DOMID_SELF = 0x7FF0
DOMID_ANY = 0x7FF5


class Op(IntEnum):
    """Message types (xs_wire.h:12-46). 20 was XS_RESTRICT, removed in Xen 4.9."""

    CONTROL = 0
    DIRECTORY = 1
    READ = 2
    GET_PERMS = 3
    WATCH = 4
    UNWATCH = 5
    TRANSACTION_START = 6
    TRANSACTION_END = 7
    INTRODUCE = 8
    RELEASE = 9
    GET_DOMAIN_PATH = 10
    WRITE = 11
    MKDIR = 12
    RM = 13
    SET_PERMS = 14
    WATCH_EVENT = 15
    ERROR = 16
    IS_DOMAIN_INTRODUCED = 17
    RESUME = 18
    SET_TARGET = 19
    RESTRICT = 20
    RESET_WATCHES = 21
    DIRECTORY_PART = 22
    GET_FEATURE = 23
    SET_FEATURE = 24
    GET_QUOTA = 25
    SET_QUOTA = 26
    INVALID = 65535


class RingFeature(IntFlag):
    """``server_features`` bits of the shared ring page (xs_wire.h:124-130)."""

    RECONNECTION = 1
    ERROR = 2
    WATCHDEPTH = 4
    DOMID_ANY = 8


_pack = HEADER.pack


def encode(op: int, req_id: int, tx_id: int, payload: bytes) -> bytes:
    """Return one wire message: header plus payload."""
    return _pack(op, req_id, tx_id, len(payload)) + payload
