"""The access log: one line per request and its reply.

It follows the live settings ``log/access`` (on/off), ``log/access-file`` (a file, or
the ``pyxenstored.access`` logger when empty), ``log/access-ops`` and
``log/access-replies`` (which request types and which outcomes are written). The file
is reopened on SIGHUP and whenever its setting changes.

``log/access-format`` chooses the lines: ``pyxenstored`` (the default, one line per
request and its reply, below) or ``c``: C xenstored's trace lines (``-T``, 4.19 and
later), so that parsers written for C work unchanged::

    io: IN 0x7f3a9c0d2e10 (d5) 20240117 10:31:02 READ (/local/domain/5/name )
    io: OUT 0x7f3a9c0d2e10 (d5) 20240117 10:31:02 READ (guest5 )

(``%p`` is a connection's identity while it lives; NULs are shown as spaces.) C also
traces every watch event it sends; this log holds requests and their replies only.
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
        self,
        path: str,
        ops: frozenset[str] | None = None,
        replies: frozenset[str] | None = None,
        format: str = "pyxenstored",
    ) -> None:
        self.path = path
        self.file: TextIO | None = None
        self.ops = ops
        self.replies = replies
        #: "pyxenstored" or "c" (C xenstored's trace lines)
        self.format = format
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
        if self.format == "c":
            line = c_trace(conn, packet.op, packet.payload, "IN", now)
            line += "\n" + c_trace(conn, rop, body, "OUT", now)
            self._write(line)
            return
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(now))
        line = (
            f"{stamp}.{int(now * 1000) % 1000:03d} conn={conn.id} dom{conn.caller.domid} "
            f"tx={packet.tx_id} {op_name} req={packet.req_id} {_show(packet.payload)}"
            f" -> {_OPS.get(rop, str(rop))} {_show(body)}"
        )
        self._write(line)

    def _write(self, line: str) -> None:
        if self.file is not None:
            self.file.write(line + "\n")
        else:
            log.info("%s", line)


def c_trace(conn: Connection, op: int, payload: bytes, direction: str, now: float) -> str:
    """One of C xenstored's ``io:`` trace lines (tools/xenstored/core.c, trace_io):
    ``io: IN|OUT <%p> (d<domid>) YYYYMMDD HH:MM:SS <TYPE> (<payload, NUL as space>)``."""
    stamp = time.strftime("%Y%m%d %H:%M:%S", time.localtime(now))
    text = payload.decode("ascii", "backslashreplace").replace("\0", " ")
    name = _OPS.get(op, "**UNKNOWN**")
    return f"io: {direction} {id(conn):#x} (d{conn.caller.domid}) {stamp} {name} ({text})"
