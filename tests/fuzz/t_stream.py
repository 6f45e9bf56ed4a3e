"""Fuzz target ``stream``: the state stream decoder and the restore, any bytes.

``stream.decode`` must return records or raise :class:`StateStreamError` (nothing else);
``snapshot.restore`` of what it returned must give a sound engine (the invariants of
:mod:`fuzz.invariants`) or raise :class:`StateStreamError` -- a live update then keeps the
old daemon, so a half-restored one is never served. A restored engine must be able to
live-update again: its own stream restores too.

Inputs whose first byte is odd are records re-encoded: each record the decoder accepted
is written again by ``stream.encode`` (lengths and padding made right), so that the
fuzzer's changes inside a record reach the restore instead of the framing checks.
"""

from __future__ import annotations

from pyxenstored.state import snapshot
from pyxenstored.state.stream import StateStreamError, decode, encode

from .invariants import check_engine
from .sample import handover, new_engine


def restore_checked(data: bytes) -> None:
    """Decode and restore ``data``; on success check the engine and restore it again."""
    try:
        _, records = decode(data)
    except StateStreamError:
        return
    try:
        restored = snapshot.restore(records, new_engine())
    except StateStreamError:
        return
    engine = restored.engine
    check_engine(engine)
    again = snapshot.save(engine, handover=handover)
    check_engine(snapshot.load(again, new_engine()).engine)


def one_input(data: bytes) -> None:
    if data[:1] and data[0] & 1:
        try:
            header, records = decode(data[1:])
            data = b"\0" + encode(records, header.version)
        except (StateStreamError, ValueError):
            pass  # not re-encodable: fed as it is
    restore_checked(data[1:])
