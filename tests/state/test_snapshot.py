"""state/snapshot.py scenarios: what the runtime hands over and gets back, streams without
pyxenstored's record (as C xenstored writes them), the live settings, refusals."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from pyxenstored.core.caller import Caller
from pyxenstored.core.connection import Connection
from pyxenstored.core.domains import NoHypervisor
from pyxenstored.core.engine import Engine
from pyxenstored.liveconfig.registry import Registry
from pyxenstored.liveconfig.stats import LiveNode
from pyxenstored.liveconfig.tree import ConfigTree
from pyxenstored.protocol.perms import BOTH, NONE, READ
from pyxenstored.protocol.wire import DOMID_ANY, Op, encode
from pyxenstored.state import snapshot
from pyxenstored.state.stream import (
    DOMID_INVALID,
    RING,
    SOCKET,
    TXN_READ,
    TXN_WRITTEN,
    ConnectionData,
    DomainData,
    GlobalData,
    GlobalQuotaData,
    NodeData,
    Perm,
    PrivateData,
    Record,
    StateStreamError,
    TransactionData,
    UnknownRecord,
    WatchData,
    WatchDataExtended,
    decode,
)

from .kit import fingerprint, fresh_like, handover, messages, new_engine, records_of, round_trip

CONFIG = "/tool/xenstored/"


def z(*parts: str | bytes) -> bytes:
    return b"".join((p if isinstance(p, bytes) else p.encode()) + b"\0" for p in parts)


def call(e: Engine, conn: Connection, op: int, payload: bytes, tx: int = 0) -> bytes:
    """One request; its reply payload (an error as ``!ENAME``). Events are dropped."""
    e.feed(conn, encode(op, 9, tx, payload))
    replies = [m for m in messages(conn.take_output()) if m[0] != Op.WATCH_EVENT]
    assert len(replies) == 1, replies
    op_, _, _, body = replies[0]
    return b"!" + body[:-1] if op_ == Op.ERROR else body


def guest(e: Engine, dom0: Connection, domid: int) -> Connection:
    call(e, dom0, Op.MKDIR, z(f"/local/domain/{domid}"))
    call(e, dom0, Op.SET_PERMS, z(f"/local/domain/{domid}", f"n{domid}"))
    assert call(e, dom0, Op.INTRODUCE, z(str(domid), "0", str(20 + domid))) == b"OK\0"
    conn = e.domains[domid].conn
    assert conn is not None
    return conn


def foreign(records: list[Record]) -> list[Record]:
    """The same stream as a writer without pyxenstored's record would give it."""
    return [r for r in records if not isinstance(r, PrivateData)]


# -- what the runtime hands over --------------------------------------------------------------
def test_handover_descriptors_ports_and_unsent_output() -> None:
    e = new_engine(config=False)
    s = e.connect(Caller(0, True), "socket")
    g = guest(e, s, 5)
    call(e, g, Op.WATCH, z("x", "tok"))  # leaves the initial event queued... taken here
    e.feed(g, encode(Op.READ, 1, 0, z("/nonexistent")))  # a reply left in conn.out
    queued = list(g.out)
    half = encode(Op.WATCH_EVENT, 0, 0, z("/a", "t"))

    def held(conn: Connection) -> snapshot.Handover:
        if conn is s:
            return snapshot.Handover(fd=17, unsent=half[5:], partial=len(half) - 5)
        return snapshot.Handover(port=99)

    records = decode(snapshot.save(e, handover=held, listen_fd=3, evtchn_fd=4))[1]
    ring = next(r for r in records if isinstance(r, ConnectionData) and r.conn_type == RING)
    assert (ring.domid, ring.evtchn, ring.target) == (5, 99, DOMID_INVALID)
    restored = snapshot.restore(records, fresh_like(e))
    assert (restored.listen_fd, restored.evtchn_fd) == (3, 4)
    sock, ring_a = restored.connections
    assert (sock.kind, sock.fd, sock.unsent) == ("socket", 17, half[5:])
    assert sock.conn is not None and sock.conn.out == []
    assert (ring_a.kind, ring_a.domid, ring_a.port, ring_a.ring) == ("ring", 5, 99, "serve")
    assert ring_a.conn is not None and ring_a.conn.out == queued
    assert ring_a.conn in restored.engine.woken
    # The toolstack's port is kept apart from xenstored's own.
    assert restored.engine.domains[5].port == 25


def test_half_read_request_is_answered_once_fed() -> None:
    e = new_engine(config=False)
    s = e.connect(Caller(0, True), "socket")
    call(e, s, Op.WRITE, b"/a\0hello")
    req = encode(Op.READ, 5, 0, z("/a")) + encode(Op.READ, 6, 0, z("/a"))
    e.feed(s, req[:10])
    restored = round_trip(e)
    [adopted] = restored.connections
    assert adopted.pending_input and adopted.conn is not None
    restored.engine.feed(adopted.conn, req[10:])
    assert [m[1:] for m in messages(adopted.conn.take_output())] == [
        (5, 0, b"hello"),
        (6, 0, b"hello"),
    ]


def test_complete_requests_carried_in_data_in_are_answered_by_an_empty_feed() -> None:
    """C carries requests it read but did not answer: ``engine.feed(conn, b"")``."""
    e = new_engine(config=False)
    s = e.connect(Caller(0, True), "socket")
    call(e, s, Op.WRITE, b"/a\0v")
    records = [
        replace(r, data_in=encode(Op.READ, 3, 0, z("/a"))) if isinstance(r, ConnectionData) else r
        for r in records_of(e)
    ]
    restored = snapshot.restore(records, fresh_like(e))
    [adopted] = restored.connections
    assert adopted.pending_input and adopted.conn is not None
    restored.engine.feed(adopted.conn, b"")
    assert messages(adopted.conn.take_output()) == [(Op.READ, 3, 0, b"v")]


def test_sockets_without_handover_are_left_out() -> None:
    """A crash journal has no sockets to hand over: only domains and the tree."""
    e = new_engine(config=False)
    s = e.connect(Caller(0, True), "socket")
    g = guest(e, s, 3)
    call(e, s, Op.WATCH, z("/a", "t"))
    call(e, g, Op.WATCH, z("x", "u"))
    call(e, s, Op.TRANSACTION_START, z(""))
    restored = snapshot.load(snapshot.save(e), fresh_like(e))
    assert [(a.kind, a.domid) for a in restored.connections] == [("ring", 3)]
    r = restored.engine
    assert r.watches.count == 1 and not r.open_txns
    assert set(r.tree.nodes) == set(e.tree.nodes)


def test_domains_without_a_ring_and_broken_rings() -> None:
    e = Engine()  # NoHypervisor: INTRODUCE records a domain with no ring
    s = e.connect(Caller(0, True), "socket")
    call(e, s, Op.INTRODUCE, z("4", "0", "9"))
    assert e.domains[4].conn is None
    backend = NoHypervisor()
    restored = snapshot.load(snapshot.save(e, handover=handover), Engine(backend=backend))
    adopted = [a for a in restored.connections if a.kind == "ring"]
    assert [(a.domid, a.ring, a.conn) for a in adopted] == [(4, "none", None)]
    assert fingerprint(restored.engine) == fingerprint(e)

    e2 = new_engine(config=False)
    s2 = e2.connect(Caller(0, True), "socket")
    g = guest(e2, s2, 6)
    e2.disconnect(g)  # what the runtime does to a ring that broke the protocol
    restored = round_trip(e2)
    [ring] = [a for a in restored.connections if a.kind == "ring"]
    assert ring.ring == "broken" and ring.conn is not None and ring.conn.closed
    assert fingerprint(restored.engine) == fingerprint(e2)


def test_ring_connection_of_no_domain_is_refused() -> None:
    e = new_engine(config=False)
    e.connect(Caller(7, False), "ring")
    with pytest.raises(ValueError, match="ring connection of no domain"):
        snapshot.dump(e)


# -- open transactions --------------------------------------------------------------------------
def test_open_transactions_commit_or_conflict_after_restore() -> None:
    e = new_engine()
    s = e.connect(Caller(0, True), "socket")
    g = guest(e, s, 2)
    call(e, s, Op.WRITE, b"/d/a\0one")
    tx1 = int(call(e, g, Op.TRANSACTION_START, z(""))[:-1])
    tx2 = int(call(e, s, Op.TRANSACTION_START, z(""))[:-1])
    call(e, g, Op.WRITE, b"x\0mine", tx1)
    assert call(e, s, Op.READ, z("/d/a"), tx2) == b"one"
    call(e, s, Op.WRITE, b"/d/b\0two", tx2)
    restored = round_trip(e)
    r = restored.engine
    s_r, g_r = (a.conn for a in restored.connections)
    assert s_r is not None and g_r is not None
    # Another client changes what tx2 read: tx2 conflicts, tx1 commits.
    call(r, s_r, Op.WRITE, b"/d/a\0changed")
    assert call(r, g_r, Op.TRANSACTION_END, z("T"), tx1) == b"OK\0"
    assert call(r, s_r, Op.TRANSACTION_END, z("T"), tx2) == b"!EAGAIN"
    assert r.tree.nodes["/local/domain/2/x"].value == b"mine"
    assert "/d/b" not in r.tree.nodes
    # The next transaction id continues where the old process was.
    assert call(r, g_r, Op.TRANSACTION_START, z("")) == b"%d\0" % (tx1 + 1)


def test_pending_nodes_as_the_document_describes_them() -> None:
    e = new_engine(config=False)
    s = e.connect(Caller(0, True), "socket")
    call(e, s, Op.WRITE, b"/a\0old")
    call(e, s, Op.WRITE, b"/b\0gone")
    tx = int(call(e, s, Op.TRANSACTION_START, z(""))[:-1])
    call(e, s, Op.READ, z("/a"), tx)
    call(e, s, Op.WRITE, b"/c\0new", tx)
    call(e, s, Op.RM, z("/b"), tx)
    records = records_of(e, pending_nodes=True)
    pending = {r.path: r for r in records if isinstance(r, NodeData) and r.conn_id}
    assert pending["/a"].access == TXN_READ and pending["/a"].value == b"old"
    assert pending["/c"].access == TXN_WRITTEN and pending["/c"].value == b"new"
    assert pending["/b"] == NodeData("/b", b"", (), pending["/b"].conn_id, tx, 0)
    assert all(r.tx_id == tx for r in pending.values())
    # Without the option, nothing a C xenstored would take for committed nodes.
    assert not any(isinstance(r, NodeData) and r.conn_id for r in records_of(e))
    restored = snapshot.restore(records, fresh_like(e))
    assert fingerprint(restored.engine) == fingerprint(e)


def test_transactions_without_their_state_are_doomed() -> None:
    """A stream without pyxenstored's record cannot rebuild a transaction: its commit
    answers EAGAIN (the client retries), it never commits half of what it did."""
    e = new_engine(config=False)
    s = e.connect(Caller(0, True), "socket")
    tx = int(call(e, s, Op.TRANSACTION_START, z(""))[:-1])
    call(e, s, Op.WRITE, b"/t\0v", tx)
    restored = snapshot.restore(foreign(records_of(e, pending_nodes=True)), fresh_like(e))
    assert any("EAGAIN" in note for note in restored.notes)
    [adopted] = restored.connections
    assert adopted.conn is not None
    assert call(restored.engine, adopted.conn, Op.READ, z("/t"), tx) == b"!ENOENT"
    assert call(restored.engine, adopted.conn, Op.TRANSACTION_END, z("T"), tx) == b"!EAGAIN"
    assert "/t" not in restored.engine.tree.nodes


def test_dropping_transactions() -> None:
    e = new_engine(config=False)
    s = e.connect(Caller(0, True), "socket")
    call(e, s, Op.TRANSACTION_START, z(""))
    records = records_of(e, transactions=False)
    assert not any(isinstance(r, TransactionData) for r in records)
    assert not snapshot.restore(records, fresh_like(e)).engine.open_txns


def test_conflict_credit_and_history_survive() -> None:
    e = new_engine(config=False)
    s = e.connect(Caller(0, True), "socket")
    call(e, s, Op.MKDIR, z("/s"))
    call(e, s, Op.SET_PERMS, z("/s", "n0", "b1", "b2"))
    g1, g2 = guest(e, s, 1), guest(e, s, 2)
    for i in range(3):
        tx = int(call(e, g1, Op.TRANSACTION_START, z(""))[:-1])
        call(e, g1, Op.READ, z("/s"), tx)
        call(e, g1, Op.WRITE, b"/s\0mine", tx)
        call(e, g2, Op.WRITE, b"/s\0theirs%d" % i)
        assert call(e, g1, Op.TRANSACTION_END, z("T"), tx) == b"!EAGAIN"
    call(e, g1, Op.TRANSACTION_START, z(""))
    call(e, g2, Op.WRITE, b"/s\0again")
    assert e.conflict_guard.credit and e.conflict_guard.history
    assert fingerprint(round_trip(e).engine) == fingerprint(e)


# -- streams without pyxenstored's record (C xenstored's) -------------------------------
def _c_like_stream() -> list[Record]:
    """A stream as C xenstored 4.17 writes it: global, connections and their watches,
    special nodes, the tree in pre-order (generations and births not carried)."""
    return [
        GlobalData(5, 6),
        ConnectionData(1, SOCKET, socket_fd=9),
        WatchData(1, "/local", b"sock"),
        ConnectionData(2, RING, domid=0, evtchn=3),
        ConnectionData(3, RING, domid=7, target=8, evtchn=44, data_out=b"\x0f" + bytes(15)),
        WatchData(3, "data", b"rel"),
        ConnectionData(4, RING, domid=8, evtchn=45, unique_id=1234),
        NodeData("@releaseDomain", b"", (Perm(NONE, 0),)),
        NodeData("@introduceDomain", b"", (Perm(NONE, 0),)),
        NodeData("/", b"", (Perm(NONE, 0),)),
        NodeData("/tool", b"", (Perm(NONE, 0),)),
        NodeData("/tool/xenstored", b"", (Perm(NONE, 0),)),
        NodeData("/local", b"", (Perm(READ, 0),)),
        NodeData("/local/domain", b"", (Perm(READ, 0),)),
        NodeData("/local/domain/7", b"", (Perm(NONE, 7), Perm(READ, 9, stale=True))),
        NodeData("/local/domain/7/data", b"v", (Perm(NONE, 7), Perm(BOTH, 8))),
        NodeData("/local/domain/8", b"", (Perm(NONE, 8),)),
    ]


def test_a_c_xenstored_stream() -> None:
    backend = NoHypervisor()
    restored = snapshot.restore(_c_like_stream(), Engine(backend=backend))
    r = restored.engine
    assert not restored.exact
    assert (restored.listen_fd, restored.evtchn_fd) == (5, 6)
    assert [(a.kind, a.domid, a.port, a.unique_id) for a in restored.connections] == [
        ("socket", None, 0, None),
        ("ring", 0, 3, None),
        ("ring", 7, 44, None),
        ("ring", 8, 45, 1234),
    ]
    # Generations in stream order, as C hands them out; every domain known from before.
    assert [r.tree.nodes[p].gen for p in ("/", "/tool", "/local/domain/7/data")] == [3, 4, 9]
    assert r.births == {0: 0, 7: 0, 8: 0}
    # C's stale grant is dropped (C never shows it); a live grant is kept.
    assert r.tree.nodes["/local/domain/7"].perms == ((NONE, 7),)
    assert r.tree.nodes["/local/domain/7/data"].perms == ((NONE, 7), (BOTH, 8))
    # Domain 0's ring is privileged; 7 acts for 8; relative watches stay relative.
    dom7 = r.domains[7]
    assert dom7.target == 8 and dom7.conn is not None and dom7.conn.caller.target == 8
    assert r.domains[0].conn is not None and r.domains[0].conn.caller.privileged
    [watch] = dom7.conn.watches.values()
    assert (watch.path, watch.strip, watch.depth) == ("/local/domain/7/data", 16, -1)
    assert dom7.conn.out == [b"\x0f" + bytes(15)]
    assert r.check() == []
    # The live configuration fills in what C does not have.
    ConfigTree(r, Registry({"quota/nodes": 1234}))
    assert r.tree.nodes[CONFIG + "quota/nodes"].value == b"1234"


def test_c_quota_records_become_settings() -> None:
    """GLOBAL_QUOTA_DATA and DOMAIN_DATA (C 4.22) win over the command line and over
    configuration nodes a stream from C may still carry from an earlier pyxenstored."""
    records = [
        *_c_like_stream(),
        NodeData(CONFIG[:-1] + "/domain", b"", (Perm(NONE, 0),)),
        NodeData(CONFIG + "domain/8", b"", (Perm(NONE, 0),)),
        NodeData(CONFIG + "domain/8/quota", b"", (Perm(NONE, 0),)),
        NodeData(CONFIG + "domain/8/quota/nodes", b"77", (Perm(NONE, 0),)),
        GlobalQuotaData((("nodes", 500), ("soft-memory", 1000), ("frobs", 3))),
        DomainData(7, 0, (("nodes", 900), ("watches", 128))),
        DomainData(8, 5, (("nodes", 500),)),
        DomainData(9, 1, ()),
    ]
    r = snapshot.restore(records, Engine(backend=NoHypervisor()))
    assert any("frobs" in note for note in r.notes)
    e = r.engine
    ConfigTree(e, Registry({"quota/nodes": 1234}), adopt=True)
    nodes = e.tree.nodes
    assert nodes[CONFIG + "quota/nodes"].value == b"500"
    assert nodes[CONFIG + "quota-soft/memory"].value == b"1000"
    assert e.limits.nodes == 500 and e.limits.soft_memory == 1000
    assert nodes[CONFIG + "domain/7/quota/nodes"].value == b"900"
    assert CONFIG + "domain/7/quota/watches" not in nodes  # the global value: no override
    assert CONFIG + "domain/8/quota/nodes" not in nodes  # C says 8 follows the global
    assert e.quota(7, "nodes") == 900 and e.quota(8, "nodes") == 500
    # Features (version 2): taken for domain 8; waiting for INTRODUCE for 9.
    assert e.domains[8].features == 5
    assert e.pending_features == {9: 1}


def test_foreign_version_1_and_2() -> None:
    """What each version carries for a reader that has only the format."""
    e = new_engine()
    s = e.connect(Caller(0, True), "socket")
    g = guest(e, s, 3)
    call(e, g, Op.WATCH, z("x", "deep", "2"))
    call(e, s, Op.WRITE, CONFIG.encode() + b"domain/3/quota/nodes\0" + b"50")
    call(e, s, Op.SET_FEATURE, z("4", "5"))
    e.domains[3].features = 7
    for version, depth, features in ((1, -1, e.features), (2, 2, 7)):
        r = snapshot.restore(foreign(records_of(e, version=version)), fresh_like(e)).engine
        conn = r.domains[3].conn
        assert conn is not None
        [watch] = conn.watches.values()
        assert watch.depth == depth
        assert r.domains[3].features == features
        # Per-domain quotas are DOMAIN_DATA in both versions (a C 4.17 reader skips them;
        # here they also travel as setting nodes).
        assert r.quota(3, "nodes") == 50
        assert r.tree.nodes[CONFIG + "domain/3/quota/nodes"].value == b"50"
    # With pyxenstored's record both versions restore everything.
    assert fingerprint(round_trip(e, 1).engine) == fingerprint(e)


def test_wide_and_stale_permissions_for_c() -> None:
    """A grant C cannot encode (domid beyond 16 bits) reaches C as a stale
    DOMID_INVALID grant (it grants nothing either way); pyxenstored gets it exactly."""
    e = new_engine(config=False)
    s = e.connect(Caller(0, True), "socket")
    call(e, s, Op.WRITE, b"/w\0")
    assert call(e, s, Op.SET_PERMS, z("/w", "n0", "r70000", "r32752", f"r{DOMID_ANY}")) == b"OK\0"
    records = records_of(e)
    [node] = [r for r in records if isinstance(r, NodeData) and r.path == "/w"]
    assert node.perms == (
        Perm(NONE, 0),
        Perm(READ, DOMID_INVALID, True),
        Perm(READ, 32752, True),  # DOMID_SELF: never a domain, so a stale grant
        Perm(READ, DOMID_ANY, False),
    )
    assert snapshot.restore(records, fresh_like(e)).engine.tree.nodes["/w"].perms == (
        e.tree.nodes["/w"].perms
    )


# -- live settings --------------------------------------------------------------------------------
def test_settings_travel_in_the_tree_and_are_applied_once() -> None:
    e = new_engine()
    s = e.connect(Caller(0, True), "socket")
    for rel, value in (
        ("quota/nodes", b"900"),
        ("log/access", b"1"),  # another spelling of "on": kept as written
        ("domain/5/quota/watches", b"3"),
        ("class/small/quota/nodes", b"10"),
        ("domain/5/class", b"small"),
        ("transaction/conflicts", b"generation"),
    ):
        assert call(e, s, Op.WRITE, CONFIG.encode() + rel.encode() + b"\0" + value) == b"OK\0"
    assert call(e, s, Op.RM, z(CONFIG + "class/driver/quota/nodes")) == b"OK\0"
    call(e, s, Op.WATCH, z("/tool", "cfg"))
    s.take_output()
    restored = snapshot.load(snapshot.save(e, handover=handover), fresh_like(e))
    r = restored.engine
    before = {p: n.gen for p, n in r.tree.nodes.items()}
    registry = Registry({"quota/nodes": 4321, "transaction/conflicts": "coalesce"})
    ConfigTree(r, registry, adopt=True)
    # The tree wins over start values; nothing was written again; nobody was told.
    assert registry.get("quota/nodes") == 900 and r.limits.nodes == 900
    assert registry.get("log/access") is True
    assert r.conflicts == "generation"
    assert r.quota(5, "watches") == 3 and r.quota(5, "nodes") == 10
    assert "nodes" not in r.quotas.classes["driver"]
    assert {p: n.gen for p, n in r.tree.nodes.items()} == before
    [sock] = restored.connections
    assert sock.conn is not None and sock.conn.out == []
    assert isinstance(r.tree.nodes[CONFIG + "stats/nodes"], LiveNode)
    assert fingerprint(r) == fingerprint(e)


def test_statistics_are_plain_nodes_in_the_stream() -> None:
    e = new_engine()
    records = records_of(e)
    [stat] = [r for r in records if isinstance(r, NodeData) and r.path.endswith("stats/nodes")]
    assert stat.value == str(len(e.tree.nodes)).encode()
    restored = snapshot.restore(records, fresh_like(e)).engine
    assert type(restored.tree.nodes[CONFIG + "stats/nodes"]).__name__ == "Node"


# -- refusals -----------------------------------------------------------------------------------
def _base() -> tuple[Engine, list[Record]]:
    e = new_engine(config=False)
    s = e.connect(Caller(0, True), "socket")
    call(e, s, Op.WRITE, b"/a/b\0v")
    call(e, s, Op.WATCH, z("/a", "t"))
    call(e, s, Op.TRANSACTION_START, z(""))
    return e, records_of(e)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda rs: [WatchData(9, "/a", b"t"), *rs], "connection 9 is not recorded before"),
        (lambda rs: [r for r in rs if not (isinstance(r, NodeData) and r.path == "/a")],
         "parent of /a/b is not recorded"),
        (lambda rs: [*rs, NodeData("/a", b"", (Perm(0, 0),))], "recorded twice"),
        (lambda rs: [*rs, NodeData("/z", b"", ())], "no permissions"),
        (lambda rs: [*rs, NodeData("/a//c", b"", (Perm(0, 0),))], "bad path"),
        (lambda rs: [*rs, NodeData("/q", b"", (Perm(0, 0),), 5, 5)], "not recorded before"),
        (lambda rs: [*rs, next(r for r in rs if isinstance(r, ConnectionData))], "used twice"),
        (lambda rs: [r if not isinstance(r, PrivateData) else PrivateData(1, b"{") for r in rs],
         "not JSON"),
        (lambda rs: [r if not isinstance(r, PrivateData) else PrivateData(
            1, json.dumps({**json.loads(r.data), "gens": [1]}).encode()) for r in rs],
         "generations for"),
        (lambda rs: [r if not isinstance(r, PrivateData) else PrivateData(1, json.dumps({
            **json.loads(r.data), "gens": [2**63] * len(json.loads(r.data)["gens"])}).encode())
            for r in rs], "generation out of range"),
        (lambda rs: [r if not isinstance(r, PrivateData) else PrivateData(
            1, json.dumps({**json.loads(r.data), "births": "x"}).encode()) for r in rs],
         "births is not a list"),
        (lambda rs: [*rs, WatchData(1, "/a", b"t")], "recorded twice"),
        (lambda rs: [*rs, WatchData(1, "bad//path", b"u")], "bad watch path"),
    ],
)  # fmt: skip
def test_inconsistent_records_are_refused(change: object, message: str) -> None:
    e, records = _base()
    if not any(word in message for word in ("JSON", "generation", "births")):
        records = foreign(records)  # the private record's own checks would come first
    changed = change(records)  # type: ignore[operator]
    with pytest.raises(StateStreamError, match=message):
        snapshot.restore(changed, fresh_like(e))


def test_unknown_records_are_noted_and_skipped() -> None:
    e, records = _base()
    extra: list[Record] = [UnknownRecord(99, b""), PrivateData(7, b"")]
    restored = snapshot.restore([*records, *extra], fresh_like(e))
    assert restored.notes == [
        "type 0x00000063 record ignored",
        "pyxenstored record of kind 7 ignored",
    ]
    assert fingerprint(restored.engine) == fingerprint(e)


def test_restore_needs_a_fresh_engine() -> None:
    e, records = _base()
    with pytest.raises(ValueError, match="freshly built"):
        snapshot.restore(records, e)


def test_version_must_be_known() -> None:
    with pytest.raises(ValueError):
        snapshot.dump(Engine(), version=3)


def test_extended_watch_depth_record() -> None:
    e = new_engine(config=False)
    s = e.connect(Caller(0, True), "socket")
    call(e, s, Op.WATCH, z("/a", "t", "70000"))
    [w] = [r for r in records_of(e) if isinstance(r, WatchDataExtended)]
    assert w.depth == 0xFFFE  # no path is that deep: the same watch
    assert fingerprint(round_trip(e).engine) == fingerprint(e)


def test_root_given_to_a_domain() -> None:
    e = new_engine(config=False)
    s = e.connect(Caller(0, True), "socket")
    guest(e, s, 5)
    assert call(e, s, Op.SET_PERMS, z("/", "n5", "r0")) == b"OK\0"
    r = round_trip(e).engine
    assert r.tree.root_owner == 0 and r.tree.nodes["/"].perms == ((NONE, 5), (READ, 0))
    assert fingerprint(r) == fingerprint(e)


def test_depth_watches_for_a_c_reader() -> None:
    """``extended_watches=False``: WATCH_DATA only (C 4.21 skips WATCH_DATA_EXTENDED,
    4.22 misreads it); pyxenstored still gets the depth from its own record."""
    e = new_engine(config=False)
    s = e.connect(Caller(0, True), "socket")
    call(e, s, Op.WATCH, z("/a", "t", "1"))
    records = records_of(e, extended_watches=False)
    assert not any(isinstance(r, WatchDataExtended) for r in records)
    assert [r for r in records if isinstance(r, WatchData)] == [WatchData(1, "/a", b"t")]
    assert fingerprint(snapshot.restore(records, fresh_like(e)).engine) == fingerprint(e)
    [watch] = next(
        iter(snapshot.restore(foreign(records), fresh_like(e)).engine.connections.values())
    ).watches.values()
    assert watch.depth == -1
