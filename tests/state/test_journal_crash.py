"""Crash recovery, model-based (issue 9 part 3): random histories of requests from two
sockets and up to four guests (tests/state/test_snapshot_property.py's World), written
to a crash journal as the runtime writes it (one frame per request), cut at random
offsets (mid-frame included). Replaying the cut journal must give exactly the committed
state after the last request whose frame is complete: every node (value, permissions,
child order, generation), the tree's counters and accounts, births, domains, every
guest's watches, quotas, settings.
"""

from __future__ import annotations

import copy
import random
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pyxenstored.core.changes import Changes
from pyxenstored.core.engine import Engine
from pyxenstored.liveconfig.registry import Registry
from pyxenstored.liveconfig.tree import ConfigTree
from pyxenstored.protocol.wire import Op
from pyxenstored.state import journal
from pyxenstored.state.journal import JournalError, changes_frame, replay, snapshot_frame

from .kit import _conn, _node, fresh_like
from .test_snapshot_property import Step, World, _step


def committed(e: Engine) -> dict[str, Any]:
    """What a crash must not lose (sockets, statistics and counters of traffic aside)."""
    tree = e.tree
    nodes = tree.nodes
    q = e.quotas
    guests = {}
    for d, dom in e.domains.items():
        conn = dom.conn
        watches = txns = None
        if conn is not None and not conn.closed:
            c = _conn(conn, nodes)
            watches = sorted(c["watches"])
            txns = (sorted(conn.transactions), conn.next_txid)  # restored doomed, same ids
        guests[d] = (
            dom.port,
            dom.target,
            dom.features,
            dom.shutdown_reported,
            dom.born_gen,
            conn is None,
            conn is not None and conn.closed,
            watches,
            txns,
        )
    return copy.deepcopy(
        {
            "nodes": {p: _node(n)[1:] for p, n in nodes.items() if "/stats" not in p},
            "tree": (tree.gen, tree.changes),
            "accounts": (tree.owner_count, tree.owned, tree.granted),
            "births": e.births,
            "pending_features": e.pending_features,
            "limits": e.limits,
            "quotas": (q.overrides, q.classes, q.domain_class, q.per_device, q.device_paths),
            "domains": guests,
            "settings": None if e.config is None else dict(e.config.registry.values),  # type: ignore[attr-defined]
        }
    )


def recovered(data: bytes, like: Engine) -> dict[str, Any]:
    r = replay(data, lambda: fresh_like(like))
    e = r.restored.engine
    ConfigTree(e, Registry(), adopt=True)
    for conn in e.connections.values():
        for txn in conn.transactions.values():
            assert txn.view.doomed and txn.view.tree is e.tree  # EAGAIN at commit
    return committed(e)


class Journaled(World):
    """A World whose engine reports its changes, with the journal the runtime writes."""

    def start(self) -> None:
        self.changes = Changes()
        self.e.report_changes(self.changes)
        self.journal = bytearray(snapshot_frame(self.e))
        self.marks: list[tuple[int, dict[str, Any]]] = [(len(self.journal), committed(self.e))]

    def send(self, who: int, op: int, payload: bytes, tx: int = 0) -> None:
        super().send(who, op, payload, tx)
        if getattr(self, "changes", None) is not None and self.changes:
            self.journal += changes_frame(self.e, self.changes)
            self.changes.clear()
            self.marks.append((len(self.journal), committed(self.e)))


def new_world() -> Journaled:
    base = World.new()
    w = Journaled(base.e, base.socks, base.slow, base.got, base.req)
    w.start()
    return w


def check_cut(w: Journaled, cut: int) -> None:
    expected = max((m for m in w.marks if m[0] <= cut), key=lambda m: m[0])[1]
    assert recovered(bytes(w.journal[:cut]), w.e) == expected


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps=st.lists(_step, max_size=80), seed=st.integers(0, 2**32 - 1))
def test_crash_at_random_points_loses_no_committed_request(steps: list[Step], seed: int) -> None:
    w = new_world()
    for s in steps:
        w.step(s)
    start = w.marks[0][0]
    rng = random.Random(seed)
    cuts = {len(w.journal), start}
    cuts.update(rng.randint(start, len(w.journal)) for _ in range(8))
    # Cuts right inside a frame's header and one byte short of its end, too.
    ends = [m[0] for m in w.marks]
    for end in rng.sample(ends, min(3, len(ends))):
        cuts.update(c for c in (end - 1, end + 5) if start <= c <= len(w.journal))
    for cut in sorted(cuts):
        check_cut(w, cut)


def test_a_thousand_crash_points() -> None:
    """Seeded histories, 30 crash points each: at least 1000 in this one test (the
    property above adds its own, and shrinks a failure)."""
    rng = random.Random(20261206)
    tried = 0
    for _ in range(40):
        w = new_world()
        for _ in range(rng.randrange(20, 90)):
            w.step(tuple(rng.randrange(256) for _ in range(5)))  # type: ignore[arg-type]
        start = w.marks[0][0]
        for _ in range(30):
            check_cut(w, rng.randint(start, len(w.journal)))
            tried += 1
    assert tried >= 1000


def test_a_corrupt_byte_ends_the_journal_there() -> None:
    w = new_world()
    w.send(0, Op.WRITE, b"/a\0one")
    mark = len(w.journal)
    w.send(0, Op.WRITE, b"/b\0two")
    data = bytearray(w.journal)
    data[mark + 20] ^= 0xFF  # inside the second frame's payload
    r = replay(bytes(data), lambda: fresh_like(w.e))
    assert r.used == mark and r.dropped == len(data) - mark
    assert r.restored.engine.tree.nodes["/a"].value == b"one"
    assert "/b" not in r.restored.engine.tree.nodes


def test_reserved_zero_bytes_after_the_last_frame_are_no_torn_frame() -> None:
    w = new_world()
    w.send(0, Op.WRITE, b"/a\0one")
    data = bytes(w.journal) + bytes(8192)
    r = replay(data, lambda: fresh_like(w.e))
    assert r.used == len(w.journal) and r.dropped == 0
    assert r.restored.engine.tree.nodes["/a"].value == b"one"


def test_no_snapshot_is_an_error() -> None:
    with pytest.raises(JournalError):
        replay(b"", lambda: Engine())
    with pytest.raises(JournalError):
        replay(journal.frame(journal.TREE, b""), lambda: Engine())
