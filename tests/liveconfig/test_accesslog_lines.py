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


#: C xenstored's trace line (tools/xenstored/core.c, trace_io, 4.19 and later):
#: "io: %s %p (d%u) %04d%02d%02d %02d:%02d:%02d %s (" then the payload, NUL as space, ")".
C_TRACE = re.compile(
    r"io: (IN|OUT|OUT\(START\)|OUT\(END\)|OUT\(ERR\)) (0x[0-9a-f]+|\(nil\)) \(d(\d+)\) "
    r"(\d{4})(\d\d)(\d\d) (\d\d):(\d\d):(\d\d) ([A-Z_]+|\*\*UNKNOWN\*\*) \((.*)\)\Z"
)


def test_c_format_lines_match_c_xenstored_trace(tmp_path: Path) -> None:
    path = tmp_path / "trace.log"
    log = AccessLog(str(path), format="c")
    conn = Connection(7, Caller(5, False), "ring", 0)
    log(conn, Packet(int(Op.WRITE), 3, 0, b"data/x\0hello"), encode(Op.WRITE, 3, 0, b"OK\0"))
    log(conn, Packet(int(Op.READ), 4, 0, b"nope\0"), encode(Op.ERROR, 4, 0, b"ENOENT\0"))
    log(conn, Packet(99, 5, 0, b""), encode(Op.ERROR, 5, 0, b"ENOSYS\0"))
    log.close()
    lines = path.read_text().splitlines()
    matches = [C_TRACE.match(line) for line in lines]
    assert all(matches), lines
    got = [(m[1], m[3], m[10], m[11]) for m in matches if m]
    assert got == [
        ("IN", "5", "WRITE", "data/x hello"),
        ("OUT", "5", "WRITE", "OK "),
        ("IN", "5", "READ", "nope "),
        ("OUT", "5", "ERROR", "ENOENT "),
        ("IN", "5", "**UNKNOWN**", ""),
        ("OUT", "5", "ERROR", "ENOSYS "),
    ]
    # The same connection is the same %p on every line; another is another.
    assert len({line.split()[2] for line in lines}) == 1
    first = matches[0]
    assert first is not None
    assert int(first[4]) >= 2024 and 1 <= int(first[5]) <= 12


def test_the_format_follows_its_setting(tmp_path: Path) -> None:
    path = tmp_path / "both.log"
    log = AccessLog(str(path))
    conn = Connection(7, Caller(0, True), "socket", 0)
    log(conn, Packet(int(Op.READ), 1, 0, b"/a\0"), encode(Op.READ, 1, 0, b"v"))
    log.format = "c"
    log(conn, Packet(int(Op.READ), 2, 0, b"/a\0"), encode(Op.READ, 2, 0, b"v"))
    log.close()
    ours, c_in, c_out = path.read_text().splitlines()
    assert " conn=7 dom0 tx=0 READ req=1 /a| -> READ v" in ours
    assert C_TRACE.match(c_in) and C_TRACE.match(c_out)
