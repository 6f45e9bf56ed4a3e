"""The access log: one line per request and its reply.

It follows the live settings ``log/access`` (on/off), ``log/access-file`` (a file, or
the ``pyxenstored.access`` logger when empty), ``log/access-ops`` and
``log/access-replies`` (which request types and which outcomes are written). The file
is reopened on SIGHUP and whenever its setting changes.
"""

from __future__ import annotations

import logging
import time
from typing import TextIO

from ..core.connection import Connection
from ..protocol.framing import Packet
from ..protocol.wire import HEADER, HEADER_SIZE, Op

__all__ = ["AccessLog"]

_OPS = {int(op): op.name for op in Op}
_ERROR = int(Op.ERROR)
log = logging.getLogger("pyxenstored.access")


def _show(payload: bytes, limit: int = 200) -> str:
    text = payload[:limit].decode("ascii", "backslashreplace").replace("\0", "|")
    return text + ("..." if len(payload) > limit else "")


class AccessLog:
    """Writes ``time conn domN tx=T OP req=R payload -> REPLY payload`` lines."""

    def __init__(
        self, path: str, ops: frozenset[str] | None = None, replies: frozenset[str] | None = None
    ) -> None:
        self.path = path
        self.file: TextIO | None = None
        self.ops = ops
        self.replies = replies
        self.reopen()

    def reopen(self) -> None:
        if self.file is not None:
            self.file.close()
            self.file = None
        if self.path:
            self.file = open(self.path, "a", buffering=1)  # noqa: SIM115

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
            self.file = None

    def __call__(self, conn: Connection, packet: Packet, reply: bytes) -> None:
        op_name = _OPS.get(packet.op, str(packet.op))
        if self.ops is not None and op_name not in self.ops:
            return
        rop = HEADER.unpack_from(reply)[0]
        body = reply[HEADER_SIZE:]
        outcome = body[:-1].decode("ascii", "replace") if rop == _ERROR else "OK"
        if self.replies is not None and outcome not in self.replies:
            return
        now = time.time()
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(now))
        line = (
            f"{stamp}.{int(now * 1000) % 1000:03d} conn={conn.id} dom{conn.caller.domid} "
            f"tx={packet.tx_id} {op_name} req={packet.req_id} {_show(packet.payload)}"
            f" -> {_OPS.get(rop, str(rop))} {_show(body)}"
        )
        if self.file is not None:
            self.file.write(line + "\n")
        else:
            log.info("%s", line)
