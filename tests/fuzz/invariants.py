"""The engine's invariants, checkable after any step: a reusable test helper.

:func:`engine_problems` lists every broken invariant of an engine at rest (between two
requests); :func:`check_engine` asserts there is none. :class:`Usage` and
:func:`quota_problems` check that one request of an unprivileged connection never took
its domain over a quota. :func:`reply_problems` checks the messages one request queued.

What is checked, and why it must hold whatever the peers sent:

* the tree: every node's parent exists and lists it, every listed child exists, paths
  and child names are legal, permissions are well formed; per-owner node counts, memory
  counts and the owner/grant indexes equal a recount (``Engine.check``, CONTROL check);
* watches: the registry holds exactly the watches of open connections, each once, and
  ``watch_bytes`` equals a recount: no watch is left for a dead connection;
* transactions: the open transactions are exactly those of open connections;
* output: ``out_bytes`` equals the bytes queued (transports and quotas trust it), a
  closed connection has nothing queued, every queued message is one well-formed frame
  no longer than the payload limit;
* domains: a domain's connection is registered or closed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from pyxenstored.core.connection import Connection
from pyxenstored.core.engine import Engine
from pyxenstored.errors import ERRNO_NAMES
from pyxenstored.protocol.wire import HEADER, HEADER_SIZE, PAYLOAD_MAX, Op

__all__ = [
    "Usage",
    "check_engine",
    "engine_problems",
    "message_problems",
    "quota_problems",
    "reply_problems",
    "tree_mark",
]

_PATH = re.compile(r"/(?:[A-Za-z0-9_@\-]+/)*[A-Za-z0-9_@\-]+\Z|/\Z")
_SPECIAL = re.compile(r"@(?:[A-Za-z0-9_@\-]+/)*[A-Za-z0-9_@\-]+\Z|@\Z")
_NAME = re.compile(r"[A-Za-z0-9_@\-]+\Z")
_ERRORS = frozenset(ERRNO_NAMES)
_WATCH_EVENT = int(Op.WATCH_EVENT)
_ERROR = int(Op.ERROR)


def message_problems(msg: bytes) -> list[str]:
    """What is wrong with one queued output message (one frame, its header exact)."""
    if len(msg) < HEADER_SIZE:
        return [f"a message of {len(msg)} bytes"]
    op, _, _, length = HEADER.unpack_from(msg)
    problems = []
    if length != len(msg) - HEADER_SIZE:
        problems.append(f"a message whose header says {length} bytes, not {len(msg) - 16}")
    if length > PAYLOAD_MAX:
        problems.append(f"a message of {length} payload bytes")
    if op == _ERROR:
        name = msg[HEADER_SIZE:-1].decode("ascii", "replace")
        if not msg.endswith(b"\0") or name not in _ERRORS:
            problems.append(f"a bad error reply {msg[HEADER_SIZE:]!r}")
        elif name == "EIO":
            # EIO is the engine's answer to an exception it did not expect: a bug.
            problems.append("an EIO reply (an internal error)")
    return problems


def _tree_problems(engine: Engine) -> list[str]:
    problems = list(engine.check())
    for path, node in engine.tree.nodes.items():
        if path[:1] == "@":
            if _SPECIAL.match(path) is None:
                problems.append(f"bad special path {path!r}")
        elif _PATH.match(path) is None:
            problems.append(f"bad path {path!r}")
        for name in node.names():
            if _NAME.match(name) is None:
                problems.append(f"bad child name {name!r} of {path}")
        perms = node.perms
        if not perms or any(m not in (0, 1, 2, 3) or not 0 <= d <= 0xFFFFFFFF for m, d in perms):
            problems.append(f"bad permissions {perms!r} of {path}")
    return problems


def _watch_problems(engine: Engine) -> list[str]:
    problems = []
    live = engine.connections
    seen: set[int] = set()
    count = 0
    for path, groups in engine.watches.by_path.items():
        if not groups:
            problems.append(f"an empty watch group at {path}")
        for conn, watches in groups.items():
            if conn.closed or live.get(conn.id) is not conn:
                problems.append(f"a watch of dead connection {conn.id} on {path}")
            if not watches:
                problems.append(f"an empty watch list of connection {conn.id} at {path}")
            for w in watches:
                count += 1
                if id(w) in seen:
                    problems.append(f"watch {path} {w.token!r} registered twice")
                seen.add(id(w))
                if w.conn is not conn or w.path != path:
                    problems.append(f"watch {path} {w.token!r} filed under the wrong key")
                if conn.watches.get((w.path, w.token)) is not w:
                    problems.append(f"watch {path} {w.token!r} unknown to its connection")
    if count != engine.watches.count:
        problems.append(f"watch count {engine.watches.count}, {count} registered")
    tree_paths = sum(1 for p in engine.watches.by_path if p[:1] != "@")
    if tree_paths != engine.watches.tree_paths:
        counted = engine.watches.tree_paths
        problems.append(f"{counted} watched tree paths counted, {tree_paths} held")
    for conn in live.values():
        total = 0
        for (path, token), w in conn.watches.items():
            total += len(path) + len(token)
            if id(w) not in seen:
                problems.append(f"watch {path} {token!r} of {conn.id} not in the registry")
        if total != conn.watch_bytes:
            problems.append(f"watch bytes of connection {conn.id}: {conn.watch_bytes} != {total}")
    return problems


def _connection_problems(engine: Engine, exact_output: bool) -> list[str]:
    problems = []
    txns: set[int] = set()
    for conn_id, conn in engine.connections.items():
        if conn.id != conn_id or conn.closed:
            problems.append(f"connection {conn_id} registered but closed or misfiled")
        for tx_id, txn in conn.transactions.items():
            txns.add(id(txn))
            if txn.id != tx_id or txn not in engine.open_txns:
                problems.append(f"transaction {tx_id} of {conn_id} not open in the engine")
        if exact_output and conn.out_bytes != sum(map(len, conn.out)):
            problems.append(f"out_bytes of {conn_id}: {conn.out_bytes} != queued")
        for msg in conn.out:
            problems += [f"connection {conn_id}: {p}" for p in message_problems(msg)]
    for txn in engine.open_txns:
        if id(txn) not in txns:
            problems.append(f"transaction {txn.id} open with no open connection")
    for domid, dom in engine.domains.items():
        if dom.domid != domid:
            problems.append(f"domain {domid} filed under the wrong id")
        own = dom.conn
        if own is None:
            continue
        if not own.closed and engine.connections.get(own.id) is not own:
            problems.append(f"domain {domid}'s open connection is not registered")
        if own.closed and (own.out or own.watches or own.transactions):
            problems.append(f"domain {domid}'s closed connection still holds state")
    return problems


def tree_mark(engine: Engine) -> tuple[int, int, int, int]:
    """What changes whenever the tree or its accounts do (a step that leaves it equal
    cannot have broken a tree invariant: :func:`engine_problems` may skip them)."""
    tree = engine.tree
    return id(tree), tree.gen, tree.changes, len(tree.nodes)


def engine_problems(
    engine: Engine, exact_output: bool = True, tree_unchanged: bool = False
) -> list[str]:
    """Every broken invariant of ``engine`` (module docstring); [] when sound.

    ``exact_output``: check ``out_bytes`` against ``out`` (not when a transport holds
    messages it took from ``out`` but still counts, as a ring's sink does).
    ``tree_unchanged``: the tree's :func:`tree_mark` is that of a tree already checked
    (its invariants are then not recounted).
    """
    return (
        ([] if tree_unchanged else _tree_problems(engine))
        + _watch_problems(engine)
        + _connection_problems(engine, exact_output)
    )


def check_engine(engine: Engine, exact_output: bool = True, tree_unchanged: bool = False) -> None:
    """Assert that every invariant holds (see :func:`engine_problems`)."""
    problems = engine_problems(engine, exact_output, tree_unchanged)
    assert not problems, "broken invariants:\n  " + "\n  ".join(problems[:20])


@dataclass(frozen=True)
class Usage:
    """What one unprivileged connection and its domain use of the countable quotas."""

    nodes: int
    watches: int
    transactions: int

    @classmethod
    def of(cls, engine: Engine, conn: Connection) -> Usage:
        return cls(
            engine.tree.owner_count.get(conn.caller.domid, 0),
            len(conn.watches),
            len(conn.transactions),
        )


def quota_problems(engine: Engine, conn: Connection, before: Usage) -> list[str]:
    """Quotas a request of unprivileged ``conn`` broke: a count it raised is beyond what
    the limit allows. As C <=4.21, watches and transactions are checked before the one
    added (at most ``limit + 1``; 4.22's rule: ``limit - 1``); nodes at most ``limit``
    (4.22: ``limit - 1``). A count that did not grow is no violation: the privileged
    domain may have lowered the limit or given the domain nodes."""
    if conn.caller.privileged or conn.closed:
        return []
    after = Usage.of(engine, conn)
    domid = conn.caller.domid
    new_rule = engine.limits.rule == "4.22"
    problems = []
    for name, quota, slack in (
        ("nodes", "nodes", -1 if new_rule else 0),
        ("watches", "watches", -1 if new_rule else 1),
        ("transactions", "transactions", -1 if new_rule else 1),
    ):
        limit = engine.quota(domid, quota)
        now, was = getattr(after, name), getattr(before, name)
        if limit and now > was and now > limit + slack:
            problems.append(f"domain {domid}: {name} {was} -> {now}, limit {limit}")
    return problems


def reply_problems(new: list[bytes], req_id: int, tx_id: int, op: int) -> list[str]:
    """The messages one whole request queued on its own connection: its events, then
    exactly one reply (its op or ERROR, its request and transaction ids), then for WATCH
    the initial event; each a well-formed frame."""
    problems = []
    replies = []
    for msg in new:
        problems += message_problems(msg)
        if len(msg) >= HEADER_SIZE:
            m_op, m_req, m_tx, _ = HEADER.unpack_from(msg)
            if m_op != _WATCH_EVENT or m_req or m_tx:
                replies.append((m_op, m_req, m_tx))
    if len(replies) != 1:
        problems.append(f"{len(replies)} replies to one request of type {op}: {replies}")
    else:
        m_op, m_req, m_tx = replies[0]
        if m_op not in (op, _ERROR) or m_req != req_id or m_tx != tx_id:
            problems.append(f"reply {replies[0]} to request ({op}, {req_id}, {tx_id})")
    return problems
