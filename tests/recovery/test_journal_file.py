"""The journal file (runtime/journal.py): records stored into reserved, mapped room
(or plain writes where room cannot be reserved), growth past the reserved room,
compaction past a multiple of the snapshot, a clean close removing it; whatever it
holds at any moment replays to the engine's committed state."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from state.kit import fingerprint, fresh_like, new_engine

from pyxenstored.core.caller import Caller
from pyxenstored.core.engine import Engine
from pyxenstored.protocol.wire import Op, encode
from pyxenstored.runtime import journal as jmod
from pyxenstored.runtime.journal import Journal
from pyxenstored.state.journal import replay


def committed(e: Engine) -> dict[str, object]:
    fp = fingerprint(e)
    return {k: fp[k] for k in ("nodes", "tree", "accounts", "births", "quotas", "limits")}


def run(tmp_path: Path, writes: int, value: bytes = b"v") -> tuple[Engine, Journal]:
    e = new_engine(config=False)
    j = Journal(str(tmp_path / "journal"), e)
    j.start()
    c = e.connect(Caller(0, True), "socket")
    for i in range(writes):
        e.feed(c, encode(Op.WRITE, i, 0, b"/k/%d\0" % (i % 50) + value))
        j.write_pending()
        c.out.clear()
    return e, j


def check(e: Engine, j: Journal) -> None:
    data = Path(j.path).read_bytes()
    r = replay(data, lambda: fresh_like(e))
    assert r.dropped == 0
    assert committed(r.restored.engine) == committed(e)


def test_records_grow_past_the_reserved_room_and_compact(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(jmod, "CHUNK", 4096)
    monkeypatch.setattr(jmod, "COMPACT_MIN", 64 * 1024)
    e, j = run(tmp_path, 3000, b"x" * 100)
    assert j.map is not None
    assert j.compactions >= 1
    check(e, j)
    j.close(remove=False)
    assert os.path.getsize(j.path) == j.size  # the reserved room is given back
    check(e, j)


def test_plain_writes_where_room_cannot_be_reserved(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(fd: int, offset: int, length: int) -> None:
        raise OSError(95, "Operation not supported")

    monkeypatch.setattr(os, "posix_fallocate", refuse)
    e, j = run(tmp_path, 500)
    assert j.map is None
    assert os.path.getsize(j.path) == j.size
    check(e, j)


def test_a_clean_close_removes_it(tmp_path: Path) -> None:
    e, j = run(tmp_path, 10)
    check(e, j)
    j.close(remove=True)
    assert not os.path.exists(j.path)
    assert e.changes is None and e.tree.sink is None


def test_a_forked_child_compacts_while_records_go_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(jmod, "FORK_NODES", 0)
    monkeypatch.setattr(jmod, "COMPACT_MIN", 32 * 1024)
    e, j = run(tmp_path, 1500, b"y" * 100)
    forked = j.child
    assert forked or j.compactions
    check(e, j)  # the old journal, with everything, while the child works
    c = e.connect(Caller(0, True), "socket")
    deadline = 200
    while j.child and deadline:
        e.feed(c, encode(Op.WRITE, 0, 0, b"/late/%d\0v" % deadline))
        j.write_pending()
        c.out.clear()
        if j.child:
            j._reap(0)
        deadline -= 1
    assert not j.child and j.compactions >= 1
    assert not os.path.exists(j.path + ".tmp")
    check(e, j)
    e.feed(c, encode(Op.WRITE, 0, 0, b"/after\0v"))
    j.write_pending()
    check(e, j)
    j.close(remove=True)
