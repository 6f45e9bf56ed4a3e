"""Transactions: ids, nesting, END's argument, isolation, repeatable reads, events at
commit only, conflicts, coalescing versus C's generation rule, RESET_WATCHES
(xenstore-protocol.md §4.6, §4.7, §5, §12.10). The rows of PROTOCOL and CONFLICTS were
observed on C xenstored 4.17."""

from __future__ import annotations

import logging

import pytest
from kit.engine import OK, Kit, z
from kit.tables import events, run, run_table

from pyxenstored.protocol.wire import Op

PROTOCOL = [
    ("w", 0, Op.WATCH, z("/t", "wt"), OK),
    events("w", ("/t", "wt")),
    # Ids are decimal, start at 1 and are per connection.
    ("s", 0, Op.TRANSACTION_START, "|", b"1\0"),
    ("s2", 0, Op.TRANSACTION_START, "|", b"1\0"),
    ("s", 1, Op.TRANSACTION_START, "|", "EBUSY"),  # nested
    ("s", 99, Op.TRANSACTION_START, "|", "ENOENT"),  # unknown id: looked up first
    ("s", 99, Op.READ, "/t|", "ENOENT"),
    ("s", 99, Op.TRANSACTION_END, "T|", "ENOENT"),
    ("s", 0, Op.TRANSACTION_END, "T|", "ENOENT"),  # not in a transaction
    # END takes exactly "T" or "F".
    ("s", 1, Op.TRANSACTION_END, "X|", "EINVAL"),
    ("s", 1, Op.TRANSACTION_END, "T", "EINVAL"),
    ("s", 1, Op.TRANSACTION_END, "", "EINVAL"),
    ("s", 1, Op.TRANSACTION_END, "TT|", "EINVAL"),
    ("s", 1, Op.TRANSACTION_END, "t|", "EINVAL"),
    ("s", 1, Op.TRANSACTION_END, "T||", "EINVAL"),
    # Isolation: the transaction sees its own writes, nobody else does until commit.
    ("s", 1, Op.WRITE, "/t/a|v", OK),
    ("s", 1, Op.READ, "/t/a|", b"v"),
    ("s", 0, Op.READ, "/t/a|", "ENOENT"),
    ("s2", 0, Op.READ, "/t/a|", "ENOENT"),
    ("s", 1, Op.DIRECTORY, "/t|", b"a\0"),
    ("s", 1, Op.GET_PERMS, "/t/a|", b"n0\0"),
    events("w"),  # no event before the commit
    ("s", 1, Op.TRANSACTION_END, "T|", OK),
    events("w", ("/t/a", "wt")),
    ("s", 0, Op.READ, "/t/a|", b"v"),
    ("s", 1, Op.TRANSACTION_END, "T|", "ENOENT"),  # the id is gone after END
    ("s", 1, Op.READ, "/t/a|", "ENOENT"),
    # Ids go on counting on the connection.
    ("s", 0, Op.TRANSACTION_START, "", b"2\0"),
    ("s", 2, Op.WRITE, "/t/b|v", OK),
    ("s", 2, Op.TRANSACTION_END, "F|", OK),  # abort: nothing happens, nothing fires
    ("s", 0, Op.READ, "/t/b|", "ENOENT"),
    events("w"),
    ("s2", 1, Op.TRANSACTION_END, "F|", OK),
    ("s2", 0, Op.TRANSACTION_START, "|", b"2\0"),
]


def test_protocol() -> None:
    run_table(PROTOCOL)


CONFLICTS = [
    ("w", 0, Op.WATCH, z("/t", "wt"), OK),
    ("o", 0, Op.WRITE, "/t/a|v", OK),
    events("w", ("/t", "wt"), ("/t/a", "wt")),
    # Repeatable reads: a transaction keeps seeing what it read; the commit fails.
    ("s", 0, Op.TRANSACTION_START, "|", b"1\0"),
    ("s", 1, Op.READ, "/t/a|", b"v"),
    ("o", 0, Op.WRITE, "/t/a|changed", OK),
    ("s", 1, Op.READ, "/t/a|", b"v"),
    ("s", 1, Op.WRITE, "/t/c|v", OK),
    ("s", 1, Op.TRANSACTION_END, "T|", "EAGAIN"),
    ("s", 0, Op.READ, "/t/c|", "ENOENT"),
    events("w", ("/t/a", "wt")),  # the other writer's; nothing from the failed commit
    # A read-only transaction conflicts too.
    ("s", 0, Op.TRANSACTION_START, "|", b"2\0"),
    ("s", 2, Op.READ, "/t/a|", b"changed"),
    ("o", 0, Op.WRITE, "/t/a|changed2", OK),
    ("s", 2, Op.TRANSACTION_END, "T|", "EAGAIN"),
    # "Does not exist" is an observation as well.
    ("s", 0, Op.TRANSACTION_START, "|", b"3\0"),
    ("s", 3, Op.READ, "/t/nx|", "ENOENT"),
    ("o", 0, Op.WRITE, "/t/nx|now", OK),
    ("s", 3, Op.WRITE, "/t/other|v", OK),
    ("s", 3, Op.TRANSACTION_END, "T|", "EAGAIN"),
    ("s", 0, Op.READ, "/t/other|", "ENOENT"),
    # So is a node the transaction writes over.
    ("s", 0, Op.TRANSACTION_START, "|", b"4\0"),
    ("s", 4, Op.WRITE, "/t/a|mine", OK),
    ("o", 0, Op.WRITE, "/t/a|theirs", OK),
    ("s", 4, Op.TRANSACTION_END, "T|", "EAGAIN"),
    ("s", 0, Op.READ, "/t/a|", b"theirs"),
    # ... and a listing.
    ("s", 0, Op.TRANSACTION_START, "|", b"5\0"),
    ("s", 5, Op.DIRECTORY, "/t|", b"a\0nx\0"),
    ("o", 0, Op.WRITE, "/t/new|", OK),
    ("s", 5, Op.WRITE, "/t/a|x", OK),
    ("s", 5, Op.TRANSACTION_END, "T|", "EAGAIN"),
    events("w", ("/t/a", "wt"), ("/t/nx", "wt"), ("/t/a", "wt"), ("/t/new", "wt")),
    # Without interference, commits succeed and fire at the commit.
    ("s", 0, Op.TRANSACTION_START, "|", b"6\0"),
    ("s", 6, Op.READ, "/t/a|", b"theirs"),
    ("s", 6, Op.WRITE, "/t/a|ok", OK),
    ("s", 6, Op.TRANSACTION_END, "T|", OK),
    events("w", ("/t/a", "wt")),
]


def test_conflicts() -> None:
    run_table(CONFLICTS)


def test_events_fire_at_commit_in_order_rm_deepest_first() -> None:
    h = Kit()
    h.write("s", "/t/r/x/y", "v")
    h.call("w", Op.WATCH, z("/t", "wt"))
    h.call("w", Op.WATCH, z("/t/r/x/y", "deep"))
    h.take_events("w")
    tx = h.start("s")
    run(
        h,
        [
            ("s", tx, Op.RM, "/t/r|", OK),
            ("s", tx, Op.READ, "/t/r/x|", "ENOENT"),
            ("s", tx, Op.DIRECTORY, "/t|", b""),
            ("s", tx, Op.WRITE, "/t/r/new|v", OK),
            events("w"),
            ("s", tx, Op.TRANSACTION_END, "T|", OK),
            ("s", 0, Op.DIRECTORY, "/t/r|", b"new\0"),
            ("s", 0, Op.GET_PERMS, "/t/r|", b"n0\0"),
        ],
    )
    got = h.take_events("w")
    assert sorted(got) == sorted([("/t/r/x/y", "deep"), ("/t/r", "wt"), ("/t/r/new", "wt")])
    assert got.index(("/t/r/x/y", "deep")) < got.index(("/t/r", "wt"))


def test_a_commit_delivers_its_events_before_the_reply() -> None:
    h = Kit()
    h.call("s", Op.WATCH, z("/t", "mine"))
    h.take_events("s")
    tx = h.start("s")
    h.write("s", "/t/a", "v", tx=tx)
    res = h.request("s", Op.TRANSACTION_END, "T|", tx=tx)
    assert res.reply.payload == OK
    assert [m.event for m in res.before] == [("/t/a", "mine")]


def test_events_of_a_commit_are_permission_filtered() -> None:
    h = Kit()
    h.write("s", "/local/domain/5")
    h.set_perms("s", "/local/domain/5", "n5")
    h.call("d5", Op.WATCH, z("/", "all"))
    h.take_events("d5")
    tx = h.start("s")
    h.write("s", "/secret", "x", tx=tx)
    h.write("s", "/local/domain/5/x", "x", tx=tx)
    assert h.call("s", Op.TRANSACTION_END, "T|", tx=tx) == OK
    assert h.take_events("d5") == [("/local/domain/5/x", "all")]


def test_sibling_creation_coalesces_by_default() -> None:
    """Two transactions adding different children of one directory: C answers EAGAIN to
    the second (its generation rule); our default coalesces them (deliberate)."""
    h = Kit()
    h.write("s", "/local/domain")
    t1, t2 = h.start("s"), h.start("s2")
    h.write("s", "/local/domain/1/name", "a", tx=t1)
    h.write("s2", "/local/domain/2/name", "b", tx=t2)
    assert h.call("s", Op.TRANSACTION_END, "T|", tx=t1) == OK
    assert h.call("s2", Op.TRANSACTION_END, "T|", tx=t2) == OK
    assert h.call("s", Op.DIRECTORY, "/local/domain|") == b"1\0002\0"


def test_sibling_creation_conflicts_under_the_generation_rule() -> None:
    h = Kit(conflicts="generation")
    h.write("s", "/local/domain")
    t1, t2 = h.start("s"), h.start("s2")
    h.write("s", "/local/domain/1/name", "a", tx=t1)
    h.write("s2", "/local/domain/2/name", "b", tx=t2)
    assert h.call("s", Op.TRANSACTION_END, "T|", tx=t1) == OK
    assert h.call("s2", Op.TRANSACTION_END, "T|", tx=t2) == "EAGAIN"
    assert h.call("s", Op.DIRECTORY, "/local/domain|") == b"1\0"


def test_coalescing_still_refuses_a_listing_that_changed() -> None:
    h = Kit()
    h.write("s", "/d/a")
    t1 = h.start("s")
    assert h.call("s", Op.DIRECTORY, "/d|", tx=t1) == b"a\0"
    h.write("s", "/d/b", tx=t1)
    h.write("s2", "/d/c")
    assert h.call("s", Op.TRANSACTION_END, "T|", tx=t1) == "EAGAIN"


def test_coalescing_forgives_a_rewrite_of_the_same_bytes() -> None:
    h = Kit()
    h.write("s", "/d/a", "same")
    t1 = h.start("s")
    assert h.call("s", Op.READ, "/d/a|", tx=t1) == b"same"
    h.write("s", "/d/b", "x", tx=t1)
    h.write("s2", "/d/a", "same")
    assert h.call("s", Op.TRANSACTION_END, "T|", tx=t1) == OK


def test_generation_rule_conflicts_on_a_node_read_before_a_change() -> None:
    """C 4.17: the first look at a node fixes its generation; any later change of it,
    even one that adds an unrelated child, fails the commit (checked on C)."""
    h = Kit(conflicts="generation")
    h.write("s", "/p")
    tx = h.start("s")
    assert h.call("s", Op.MKDIR, "/p|", tx=tx) == OK  # looks at /p
    h.write("s2", "/p/other")
    assert h.call("s", Op.TRANSACTION_END, "T|", tx=tx) == "EAGAIN"


def test_generation_rule_after_the_transaction_changes_the_node_too() -> None:
    """Found by a differential run against C 4.17 (seed 14): after the outside change,
    the transaction creates a child of the node it looked at. C: EAGAIN."""
    h = Kit(conflicts="generation")
    h.write("s", "/p")
    tx = h.start("s")
    assert h.call("s", Op.MKDIR, "/p|", tx=tx) == OK
    h.write("s2", "/p/other")
    h.write("s", "/p/mine", tx=tx)
    assert h.call("s", Op.TRANSACTION_END, "T|", tx=tx) == "EAGAIN"


def test_reset_watches_drops_transactions() -> None:
    run_table(
        [
            ("s", 0, Op.TRANSACTION_START, "|", b"1\0"),
            ("s", 1, Op.WRITE, "/x|v", OK),
            ("s", 0, Op.RESET_WATCHES, "", OK),
            ("s", 1, Op.READ, "/x|", "ENOENT"),
            ("s", 1, Op.TRANSACTION_END, "T|", "ENOENT"),
            ("s", 0, Op.READ, "/x|", "ENOENT"),
            ("s", 0, Op.TRANSACTION_START, "|", b"2\0"),
            # XSA-484: RESET_WATCHES inside the transaction (C asserted here).
            ("s", 2, Op.RESET_WATCHES, "", OK),
            ("s", 2, Op.TRANSACTION_END, "T|", "ENOENT"),
            ("s", 2, Op.READ, "/x|", "ENOENT"),
            ("s", 0, Op.TRANSACTION_START, "|", b"3\0"),
        ]
    )


def test_ids_skip_zero_and_ids_in_use() -> None:
    h = Kit()
    conn = h.conn("s")
    conn.next_txid = 0xFFFFFFFF
    assert h.start("s") == 0xFFFFFFFF
    assert h.start("s2") == 1  # another connection has its own ids
    h.call("s", Op.TRANSACTION_END, "F|", tx=0xFFFFFFFF)
    assert h.start("s") == 1  # wrapped, 0 skipped
    conn.next_txid = 1
    assert h.start("s") == 2  # 1 is still open


def test_unprivileged_transaction() -> None:
    run_table(
        [
            ("s", 0, Op.WRITE, "/local/domain/5|", OK),
            ("s", 0, Op.SET_PERMS, z("/local/domain/5", "n5"), OK),
            ("d5", 0, Op.TRANSACTION_START, "|", b"1\0"),
            ("d5", 1, Op.WRITE, "dev/x|v", OK),
            ("d5", 1, Op.GET_PERMS, "dev/x|", b"n5\0"),
            ("d5", 1, Op.WRITE, "/local/domain/0/x|v", "EACCES"),  # refused, goes on
            ("d5", 1, Op.READ, "/tool|", "EACCES"),
            ("d5", 1, Op.TRANSACTION_END, "T|", OK),
            ("d5", 0, Op.READ, "dev/x|", b"v"),
            ("s", 0, Op.GET_PERMS, "/local/domain/5/dev|", b"n5\0"),
        ]
    )


def test_create_then_delete_in_one_transaction_keeps_counts_exact() -> None:
    """XSA-421: creating and deleting nodes in one transaction must neither orphan
    nodes nor skew the owner's node count."""
    h = Kit()
    h.write("s", "/local/domain/5")
    h.set_perms("s", "/local/domain/5", "n5")
    before = dict(h.engine.tree.owner_count)
    tx = h.start("d5")
    h.write("d5", "a/b/c", tx=tx)
    assert h.call("d5", Op.RM, "a|", tx=tx) == OK
    h.write("d5", "a/d", tx=tx)
    assert h.call("d5", Op.RM, "a/d|", tx=tx) == OK
    assert h.call("d5", Op.TRANSACTION_END, "T|", tx=tx) == OK
    assert h.engine.tree.owner_count.get(5, 0) == before.get(5, 0) + 1
    assert h.call("d5", Op.DIRECTORY, "a|") == b""
    assert h.engine.check() == []


def test_eagain_names_the_changed_observation_in_the_debug_log(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """An operator reading a debug log learns which observed path broke a commit."""
    caplog.set_level(logging.DEBUG, logger="pyxenstored.engine")
    run_table(
        [
            ("s", 0, Op.WRITE, "/t/a|v", OK),
            ("s", 0, Op.TRANSACTION_START, "|", b"1\0"),
            ("s", 1, Op.READ, "/t/a|", b"v"),
            ("o", 0, Op.WRITE, "/t/a|changed", OK),
            ("s", 1, Op.WRITE, "/t/b|v", OK),
            ("s", 1, Op.TRANSACTION_END, "T|", "EAGAIN"),
        ]
    )
    assert "domain 0: EAGAIN, observations changed: /t/a" in caplog.text
