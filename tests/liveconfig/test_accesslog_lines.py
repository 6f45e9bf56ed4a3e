"""The access log's line format: a timestamp with milliseconds (as C xenstored's trace has),
the connection, the caller, the request and the reply."""

from __future__ import annotations

import re
from pathlib import Path

from pyxenstored.core.caller import Caller
from pyxenstored.core.connection import Connection
from pyxenstored.protocol.framing import Packet
from pyxenstored.protocol.wire import Op, encode
from pyxenstored.runtime.accesslog import AccessLog

LINE = re.compile(
    r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3} conn=7 dom5 tx=0 READ req=3 data/x\| -> READ v\n\Z"
)


def test_line_has_millisecond_timestamp_request_and_reply(tmp_path: Path) -> None:
    path = tmp_path / "access.log"
    log = AccessLog(str(path))
    conn = Connection(7, Caller(5, False), "ring", 0)
    log(conn, Packet(int(Op.READ), 3, 0, b"data/x\0"), encode(Op.READ, 3, 0, b"v"))
    log.close()
    assert LINE.match(path.read_text()), path.read_text()
