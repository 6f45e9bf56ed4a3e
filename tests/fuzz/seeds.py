"""The seed corpus: ``python -m fuzz seeds`` writes ``tests/fuzz/corpus/<target>/``.

Seeds are made, not hand-written: valid request streams for ``frames``; for ``engine``
and ``rings``, the programs (see :mod:`fuzz.source`) among a few thousand random ones
that leave the most state behind (nodes, watches, transactions; bytes through rings);
a populated engine's state stream (versions 1 and 2) for ``stream``; a crash journal as
the runtime writes it, whole and cut, for ``journal``. Everything is deterministic.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path

from pyxenstored.protocol.wire import Op, encode
from pyxenstored.state import snapshot

from . import sample, t_engine, t_rings


def _frames() -> list[bytes]:
    requests = [
        encode(Op.WRITE, 1, 0, b"/a/b\0value"),
        encode(Op.READ, 2, 0, b"/a/b\0"),
        encode(Op.SET_PERMS, 3, 0, b"/a\0n1\0r0x2\0b-1\0"),
        encode(Op.WATCH, 4, 0, b"data\0tok\0"),
        encode(Op.TRANSACTION_START, 5, 0, b"\0"),
        encode(Op.DIRECTORY_PART, 6, 0, b"/\x000\x00"),
        encode(Op.INTRODUCE, 7, 0, b"5\x000\x0017\x00"),
        encode(Op.CONTROL, 8, 0, b"quota\0set\0nodes\x00100\0"),
    ]
    return [bytes([split]) + b"".join(requests[:n]) for split, n in ((0, 1), (3, 4), (16, 8))]


def _best(
    target: Callable[[bytes], None], score: Callable[[], int], n: int, keep: int, size: int
) -> list[bytes]:
    rnd = random.Random(13)
    scored = []
    for _ in range(n):
        data = rnd.randbytes(rnd.randrange(size // 4, size))
        target(data)
        scored.append((score(), data))
    scored.sort(key=lambda s: -s[0])
    return [data for _, data in scored[:keep]]


def _engine_score() -> int:
    world = t_engine.last_world
    if world is None:
        return 0
    e = world.engine
    return len(e.tree.nodes) + 4 * e.watches.count + 4 * len(e.open_txns)


def _rings_score() -> int:
    world = t_rings.last_world
    if world is None:
        return 0
    e = world.engine
    return len(e.tree.nodes) + e.stats["events"] + sum(c.requests for c in e.connections.values())


def _stream() -> list[bytes]:
    engine = sample.new_engine()
    sample.run_script(engine)
    v1 = snapshot.save(engine, handover=sample.handover, version=1)
    full = sample.stream_sample()
    return [b"\0" + full, b"\1" + full, b"\0" + v1]


def _journal() -> list[bytes]:
    whole = sample.journal_sample()
    return [b"\0" + whole, b"\0" + whole[: len(whole) // 2], b"\1" + whole]


def all_seeds() -> dict[str, list[bytes]]:
    return {
        "frames": _frames(),
        "engine": _best(t_engine.one_input, _engine_score, 1500, 8, 600),
        "rings": _best(t_rings.one_input, _rings_score, 600, 8, 400),
        "stream": _stream(),
        "journal": _journal(),
    }


def write_all(corpus: Path) -> None:
    """Replace every target's seed files."""
    for name, items in all_seeds().items():
        folder = corpus / name
        folder.mkdir(parents=True, exist_ok=True)
        for old in folder.iterdir():
            old.unlink()
        for i, data in enumerate(items):
            (folder / f"seed-{i:02d}").write_bytes(data)
