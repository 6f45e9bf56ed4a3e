#!/usr/bin/env python3
"""The floor under a Python daemon's ring round trip: pyxenstored with its ring turn cut
down to what any Python daemon on uvloop must do (issue 10 item 5's evidence).

    .venv/bin/python benchmarks/ringfloor.py -N --socket DIR/socket --sim-xen DIR/fakexen

runs the real daemon (the Unix socket, INTRODUCE, the event loop, the simulated Xen's
kicks both ways, the ring page) with one change: a guest's turn answers each request
with a canned reply (READ: the value the last WRITE wrote, anything else: ``OK``),
without the engine, the crash journal, the stall rules or the scheduling of the real
turn. Run ``rings.py latency`` against it as against the daemon (with compare.py:
``--daemon "pyxenstored-ringfloor=env FAKEXEN_NDOMS=4096 {repo}/.venv/bin/python
{repo}/benchmarks/ringfloor.py -N --socket {dir}/socket --sim-xen {dir}/fakexen"``):
its CPU per request is what is left of pyxenstored's when the engine, the journal and
the turn cost nothing, i.e. the uvloop callback, the kick syscalls (recvfrom + FIONREAD,
sendto) and the page's index arithmetic. Only for measuring: a guest gets wrong answers
for anything but the benchmark's requests.

Like ``core.py`` and ``ringpath.py`` it imports ``pyxenstored`` (from ``src/`` when it
is not installed).
"""

from __future__ import annotations

import struct
import sys
from pathlib import Path

try:
    import pyxenstored  # noqa: F401
except ImportError:  # run from a checkout without the package installed
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

from pyxenstored import cli
from pyxenstored.runtime.ringsink import RingSink
from pyxenstored.transports.ring import RING_SIZE

_HEADER = struct.Struct("<IIII")
_READ = 2
_WRITE = 11
_OK = b"OK\0"
#: what the last WRITE wrote (the benchmark reads back the one key it writes)
_last_value = [b""]


def canned_turn(self: RingSink) -> bool:
    """Answer every whole request in the ring with a canned reply; notify once."""
    ring = self.ring
    data = ring.peek(RING_SIZE)
    pos = 0
    replies = []
    while len(data) - pos >= 16:
        op, req_id, tx_id, length = _HEADER.unpack_from(data, pos)
        if len(data) - pos < 16 + length:
            break
        if op == _WRITE:
            payload = data[pos + 16 : pos + 16 + length]
            _last_value[0] = payload[payload.find(b"\0") + 1 :]
        pos += 16 + length
        body = _last_value[0] if op == _READ else _OK
        replies.append(_HEADER.pack(op, req_id, tx_id, len(body)) + body)
    if not pos:
        return False
    ring.consume(pos)
    ring.write(b"".join(replies))
    self.manager.xen.notify(self.port)
    return ring.has_input()


def main() -> int:
    original = RingSink.turn

    def turn(self: RingSink) -> bool:
        # dom0's own ring (when there is one) goes the real way.
        if self.domid == 0:
            return original(self)
        return canned_turn(self)

    RingSink.turn = turn  # type: ignore[method-assign]
    return cli.main(sys.argv[1:], fork_by_default=False)


if __name__ == "__main__":
    sys.exit(main())
