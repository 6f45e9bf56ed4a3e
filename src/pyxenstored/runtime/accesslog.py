"""The access log: one line per request and its reply, reopened on SIGHUP."""

from __future__ import annotations

import time
from typing import TextIO

from ..core.connection import Connection
from ..protocol.framing import Packet
from ..protocol.wire import HEADER, HEADER_SIZE, Op

__all__ = ["AccessLog"]

_OPS = {int(op): op.name for op in Op}


def _show(payload: bytes, limit: int = 200) -> str:
    text = payload[:limit].decode("ascii", "backslashreplace").replace("\0", "|")
    return text + ("..." if len(payload) > limit else "")


class AccessLog:
    """Writes ``time conn domN tx=T OP req=R payload -> REPLY payload`` lines."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.file: TextIO = open(path, "a", buffering=1)  # noqa: SIM115

    def reopen(self) -> None:
        self.file.close()
        self.file = open(self.path, "a", buffering=1)  # noqa: SIM115

    def close(self) -> None:
        self.file.close()

    def __call__(self, conn: Connection, packet: Packet, reply: bytes) -> None:
        rop, _, _, _ = HEADER.unpack_from(reply)
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        self.file.write(
            f"{stamp} conn={conn.id} dom{conn.caller.domid} tx={packet.tx_id} "
            f"{_OPS.get(packet.op, str(packet.op))} req={packet.req_id} {_show(packet.payload)}"
            f" -> {_OPS.get(rop, str(rop))} {_show(reply[HEADER_SIZE:])}\n"
        )
