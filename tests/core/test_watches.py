"""Watches: registration, matching, depth, relative paths, initial event, ordering of
events around replies, RM events, the read-permission filter (xenstore-protocol.md §4,
§12.6-12.8). Expectations were observed on C xenstored 4.17, except watch depth, which
4.17 lacks (4.22 semantics)."""

from __future__ import annotations

from kit.engine import OK, Kit, z
from kit.tables import events, events_unordered, run, run_table

from pyxenstored.protocol.wire import Op

REGISTRATION = [
    ("w", 0, Op.WATCH, z("/a", "tokA"), OK),
    events("w", ("/a", "tokA")),  # the initial event, even though /a does not exist
    ("w", 0, Op.WATCH, z("/a", "tokA"), "EEXIST"),
    ("w", 0, Op.WATCH, z("/a", "tokA2"), OK),  # same path, other token
    ("w", 0, Op.WATCH, z("/b", "tokA"), OK),  # same token, other path
    events("w", ("/a", "tokA2"), ("/b", "tokA")),
    ("w", 0, Op.WATCH, z("/a"), "EINVAL"),
    ("w", 0, Op.WATCH, z("/a", "t", "x", "y"), "EINVAL"),
    ("w", 0, Op.WATCH, b"/a\0t", "EINVAL"),  # the token must be NUL-terminated
    ("w", 0, Op.WATCH, z("/a/", "t"), "EINVAL"),
    ("w", 0, Op.WATCH, z("//a", "t"), "EINVAL"),
    ("w", 0, Op.WATCH, z("/a b", "t"), "EINVAL"),
    ("w", 0, Op.WATCH, z("", "t"), "EINVAL"),
    ("w", 0, Op.UNWATCH, z("/a", "nope"), "ENOENT"),
    ("w", 0, Op.UNWATCH, z("/nope", "tokA"), "ENOENT"),
    ("w", 0, Op.UNWATCH, z("/a", "tokA2", "x"), "EINVAL"),
    ("w", 0, Op.UNWATCH, z("/a"), "EINVAL"),
    ("w", 0, Op.UNWATCH, z("/a", "tokA2"), OK),
    ("w", 0, Op.UNWATCH, z("/a", "tokA2"), "ENOENT"),
    # Relative and absolute forms name the same watch.
    ("w", 0, Op.WATCH, z("rel", "r"), OK),
    ("w", 0, Op.WATCH, z("/local/domain/0/rel", "r"), "EEXIST"),
    ("w", 0, Op.UNWATCH, z("/local/domain/0/rel", "r"), OK),
    ("w", 0, Op.WATCH, z("/local/domain/0/rel", "r"), OK),
    ("w", 0, Op.UNWATCH, z("rel", "r"), OK),
    events("w", ("rel", "r"), ("/local/domain/0/rel", "r")),
    # Tokens are any NUL-free bytes.
    ("w", 0, Op.WATCH, b"/t\0\xff\x01 token with spaces/\0", OK),
    events("w", ("/t", "\xff\x01 token with spaces/")),
]


def test_registration() -> None:
    run_table(REGISTRATION)


def test_initial_event_comes_after_the_ok() -> None:
    h = Kit()
    res = h.request("w", Op.WATCH, z("/x", "t"))
    assert res.reply.payload == OK and res.before == []
    assert [(m.op, m.req_id, m.tx_id, m.payload) for m in res.after] == [
        (Op.WATCH_EVENT, 0, 0, b"/x\0t\0")
    ]


def test_initial_event_is_never_permission_checked() -> None:
    run_table(
        [
            ("d5", 0, Op.WATCH, z("/local/domain/0/secret", "t"), OK),
            ("d5", 0, Op.WATCH, z("/tool", "t"), OK),
            ("d5", 0, Op.WATCH, z("@introduceDomain", "t"), OK),
            events(
                "d5",
                ("/local/domain/0/secret", "t"),
                ("/tool", "t"),
                ("@introduceDomain", "t"),
            ),
        ]
    )


def test_watch_and_unwatch_ignore_the_transaction_id() -> None:
    h = Kit()
    tx = h.start("w")
    assert h.call("w", Op.WATCH, z("/a", "t"), tx=tx) == OK
    assert h.call("w", Op.WATCH, z("/b", "t"), tx=99) == OK  # even an unknown one
    assert h.call("w", Op.UNWATCH, z("/b", "t"), tx=99) == OK
    assert h.call("w", Op.TRANSACTION_END, "F|", tx=tx) == OK
    h.take_events("w")
    h.write("s", "/a")
    assert h.take_events("w") == [("/a", "t")]


MATCHING = [
    ("w", 0, Op.WATCH, z("/a", "A"), OK),
    ("w2", 0, Op.WATCH, z("/", "root"), OK),
    ("w3", 0, Op.WATCH, z("/a/b/c", "deep"), OK),
    ("w4", 0, Op.WATCH, z("/ab", "ab"), OK),
    events("w", ("/a", "A")),
    events("w2", ("/", "root")),
    events("w3", ("/a/b/c", "deep")),
    events("w4", ("/ab", "ab")),
    # A change matches watches on the path and on every ancestor; "/ab" is not below
    # "/a". Implicit parents fire nothing of their own.
    ("s", 0, Op.WRITE, "/a/b/c/d|v", OK),
    events("w", ("/a/b/c/d", "A")),
    events("w2", ("/a/b/c/d", "root")),
    events("w3", ("/a/b/c/d", "deep")),
    events("w4"),
    ("s", 0, Op.WRITE, "/abc|v", OK),
    events("w"),
    events("w2", ("/abc", "root")),
    events("w4"),
    # MKDIR of an existing node fires nothing; of a new one, like WRITE.
    ("s", 0, Op.MKDIR, "/a/b|", OK),
    events("w"),
    ("s", 0, Op.MKDIR, "/a/e|", OK),
    events("w", ("/a/e", "A")),
    # SET_PERMS fires; a rewrite of the same value fires too.
    ("s", 0, Op.SET_PERMS, z("/a/b", "n0", "r5"), OK),
    events("w", ("/a/b", "A")),
    ("s", 0, Op.WRITE, "/a|", OK),
    ("s", 0, Op.WRITE, "/a|", OK),
    events("w", ("/a", "A"), ("/a", "A")),
    # RM of a missing node fires nothing; failed requests fire nothing.
    ("s", 0, Op.RM, "/a/nothere|", OK),
    ("s", 0, Op.RM, "/a/nothere/x|", "ENOENT"),
    ("s", 0, Op.WRITE, "/a/bad name|", "EINVAL"),
    ("d5", 0, Op.WRITE, "/a/x|v", "EACCES"),
    events("w"),
    events("w2", ("/a/e", "root"), ("/a/b", "root"), ("/a", "root"), ("/a", "root")),
    # A watch on a node that does not exist yet fires when a descendant is created.
    ("w5", 0, Op.WATCH, z("/x/y", "xy"), OK),
    events("w5", ("/x/y", "xy")),
    ("s", 0, Op.WRITE, "/x/y/z|v", OK),
    events("w5", ("/x/y/z", "xy")),
    ("s", 0, Op.WRITE, "/x/q|v", OK),
    events("w5"),
]


def test_matching() -> None:
    run_table(MATCHING)


def test_events_of_a_request_are_queued_before_its_reply() -> None:
    h = Kit()
    h.call("s", Op.WATCH, z("/a", "mine"))
    h.call("w", Op.WATCH, z("/", "other"))
    h.take_events("s")
    h.take_events("w")
    cases: list[tuple[int, bytes | str]] = [
        (Op.WRITE, "/a/x|v"),
        (Op.MKDIR, "/a/y|"),
        (Op.SET_PERMS, z("/a/x", "n0")),
        (Op.RM, "/a/x|"),
    ]
    for op, payload in cases:
        res = h.request("s", op, payload)
        assert res.reply.payload == OK
        assert [m.op for m in res.before] == [Op.WATCH_EVENT], (op, res)
        assert res.after == []
        assert len(h.take_events("w")) == 1


def test_several_watches_of_one_connection_each_get_the_event() -> None:
    run_table(
        [
            ("w", 0, Op.WATCH, z("/a", "1"), OK),
            ("w", 0, Op.WATCH, z("/a/b", "2"), OK),
            ("w", 0, Op.WATCH, z("/", "3"), OK),
            events("w", ("/a", "1"), ("/a/b", "2"), ("/", "3")),
            ("s", 0, Op.WRITE, "/a/b/c|", OK),
            # C delivers them in registration order; only the set is promised here.
            events_unordered("w", ("/a/b/c", "1"), ("/a/b/c", "2"), ("/a/b/c", "3")),
        ]
    )


def test_identical_queued_events_are_coalesced_like_c() -> None:
    run_table(
        [
            ("w", 0, Op.WATCH, z("/a", "t"), OK),
            ("w", 0, Op.WATCH, z("/a/b", "t"), OK),
            events("w", ("/a", "t"), ("/a/b", "t")),
            ("s", 0, Op.WRITE, "/a/b/c|", OK),
            events("w", ("/a/b/c", "t")),
        ]
    )


RELATIVE = [
    ("s", 0, Op.WRITE, "/local/domain/5|", OK),
    ("s", 0, Op.SET_PERMS, z("/local/domain/5", "n5"), OK),
    ("d5", 0, Op.WATCH, z("data", "rel"), OK),
    ("d5", 0, Op.WATCH, z("/local/domain/5/data", "abs"), OK),
    events("d5", ("data", "rel"), ("/local/domain/5/data", "abs")),
    ("d5", 0, Op.WRITE, "data/x|v", OK),
    events_unordered("d5", ("data/x", "rel"), ("/local/domain/5/data/x", "abs")),
    ("s", 0, Op.WRITE, "/local/domain/5/data|v", OK),
    events_unordered("d5", ("data", "rel"), ("/local/domain/5/data", "abs")),
    # A socket's relative watch is relative to /local/domain/0.
    ("s", 0, Op.WATCH, z("dev", "srel"), OK),
    events("s", ("dev", "srel")),
    ("s2", 0, Op.WRITE, "/local/domain/0/dev/vif|", OK),
    events("s", ("dev/vif", "srel")),
    # Removal of the watched node's ancestor is reported as the watched path.
    ("s", 0, Op.RM, "/local/domain/5|", OK),
    events_unordered("d5", ("data", "rel"), ("/local/domain/5/data", "abs")),
]


def test_relative_watches_get_relative_event_paths() -> None:
    run_table(RELATIVE)


def test_rm_fires_deepest_first_exact_for_descendants() -> None:
    """Post-order: every removed descendant fires only the watches placed exactly on
    it, with its own path, children before parents (in child-list order); then the
    removed node fires for itself and its ancestors. A watch below the removed node
    on a path that never existed fires nothing (checked on C 4.17)."""
    h = Kit()
    for p in ("/r/a/b", "/r/a/c", "/r/d", "/r/e/f/g"):
        h.write("s", p)
    watched = ["/r/a/b", "/r/a/c", "/r/a", "/r/d", "/r/e/f/g", "/r/e/f", "/r/e", "/r", "/"]
    for p in [*watched, "/r/a/b/none", "/r/zz"]:
        assert h.call("w", Op.WATCH, z(p, p)) == OK
    h.take_events("w")
    res = h.request("s", Op.RM, "/r|")
    assert res.reply.payload == OK
    assert h.take_events("w") == [
        ("/r/a/b", "/r/a/b"),
        ("/r/a/c", "/r/a/c"),
        ("/r/a", "/r/a"),
        ("/r/d", "/r/d"),
        ("/r/e/f/g", "/r/e/f/g"),
        ("/r/e/f", "/r/e/f"),
        ("/r/e", "/r/e"),
        ("/r", "/r"),
        ("/r", "/"),
    ]


def test_rm_of_a_subtree_fires_ancestors_once_for_the_root_only() -> None:
    h = Kit()
    for p in ("/r/a/b", "/r/a/c"):
        h.write("s", p)
    h.call("w", Op.WATCH, z("/", "root"))
    h.call("w2", Op.WATCH, z("/r", "r"))
    h.take_events("w")
    h.take_events("w2")
    h.call("s", Op.RM, "/r|")
    assert h.take_events("w") == [("/r", "root")]
    assert h.take_events("w2") == [("/r", "r")]


# -- depth (4.22 WATCHDEPTH) ------------------------------------------------------------
DEPTH = [
    ("w", 0, Op.WATCH, z("/a", "d0", 0), OK),
    ("w", 0, Op.WATCH, z("/a", "d1", 1), OK),
    ("w", 0, Op.WATCH, z("/a", "d2", 2), OK),
    ("w", 0, Op.WATCH, z("/", "top", 1), OK),
    ("w", 0, Op.WATCH, z("/", "all"), OK),
    ("w", 0, Op.WATCH, z("/a", "neg", -1), "EINVAL"),
    ("w", 0, Op.WATCH, z("/a", "junk", "x"), "EINVAL"),
    ("w", 0, Op.WATCH, z("/a", "empty", ""), "EINVAL"),
    ("w", 0, Op.WATCH, z("/a", "d0", 5), "EEXIST"),  # the depth is not part of the key
    events("w", ("/a", "d0"), ("/a", "d1"), ("/a", "d2"), ("/", "top"), ("/", "all")),
    ("s", 0, Op.WRITE, "/a|", OK),
    events_unordered("w", ("/a", "d0"), ("/a", "d1"), ("/a", "d2"), ("/a", "top"), ("/a", "all")),
    ("s", 0, Op.WRITE, "/a/b|", OK),
    events_unordered("w", ("/a/b", "d1"), ("/a/b", "d2"), ("/a/b", "all")),
    ("s", 0, Op.WRITE, "/a/b/c|", OK),
    events_unordered("w", ("/a/b/c", "d2"), ("/a/b/c", "all")),
    ("s", 0, Op.WRITE, "/a/b/c/d|", OK),
    events("w", ("/a/b/c/d", "all")),
    ("s", 0, Op.WRITE, "/x|", OK),
    events_unordered("w", ("/x", "top"), ("/x", "all")),
    # Removing /a: its descendants fire exact watches only, so depth plays no part;
    # /a itself fires every watch on /a and its ancestors within their depth.
    ("s", 0, Op.RM, "/a|", OK),
    events_unordered("w", ("/a", "d0"), ("/a", "d1"), ("/a", "d2"), ("/a", "top"), ("/a", "all")),
]


def test_watch_depth_with_the_feature() -> None:
    run_table(DEPTH)


def test_watch_depth_without_the_feature_is_einval() -> None:
    h = Kit()
    h.sock("w", features=0)
    assert h.call("w", Op.WATCH, z("/a", "t", 1)) == "EINVAL"
    assert h.call("w", Op.WATCH, z("/a", "t")) == OK
    h.dom("d5", 5, features=0)
    assert h.call("d5", Op.WATCH, z("/a", "t", 0)) == "EINVAL"


def test_relative_watch_with_depth() -> None:
    run_table(
        [
            ("s", 0, Op.WRITE, "/local/domain/5|", OK),
            ("s", 0, Op.SET_PERMS, z("/local/domain/5", "n5"), OK),
            ("d5", 0, Op.WATCH, z("dev", "t", 1), OK),
            events("d5", ("dev", "t")),
            ("s", 0, Op.WRITE, "/local/domain/5/dev/a/b|", OK),
            events("d5"),
            ("s", 0, Op.WRITE, "/local/domain/5/dev/c|", OK),
            events("d5", ("dev/c", "t")),
        ]
    )


# -- the read-permission filter (XSA-115) ------------------------------------------------
PERMISSION_FILTER = [
    ("s", 0, Op.WRITE, "/local/domain/5|", OK),
    ("s", 0, Op.SET_PERMS, z("/local/domain/5", "n5"), OK),
    ("s", 0, Op.WRITE, "/local/domain/6|", OK),
    ("s", 0, Op.SET_PERMS, z("/local/domain/6", "n6"), OK),
    ("d5", 0, Op.WATCH, z("/", "r5"), OK),
    ("d5", 0, Op.WATCH, z("/local/domain/6", "other"), OK),
    ("w", 0, Op.WATCH, z("/", "root"), OK),
    events("d5", ("/", "r5"), ("/local/domain/6", "other")),
    events("w", ("/", "root")),
    # dom0 sees everything; a guest only what it may read (the node or its parent).
    ("s", 0, Op.WRITE, "/local/domain/6/secret|v", OK),
    ("s", 0, Op.WRITE, "/hidden|v", OK),
    events("d5"),
    events("w", ("/local/domain/6/secret", "root"), ("/hidden", "root")),
    ("s", 0, Op.WRITE, "/local/domain/5/mine|v", OK),
    events("d5", ("/local/domain/5/mine", "r5")),
    events("w", ("/local/domain/5/mine", "root")),
    # A grant makes the node visible, then its children (through the parent).
    ("s", 0, Op.WRITE, "/local/domain/6/pub|v", OK),
    events("d5"),
    ("s", 0, Op.SET_PERMS, z("/local/domain/6/pub", "n6", "r5"), OK),
    events_unordered("d5", ("/local/domain/6/pub", "r5"), ("/local/domain/6/pub", "other")),
    ("s", 0, Op.WRITE, "/local/domain/6/pub/child|w", OK),
    events_unordered(
        "d5", ("/local/domain/6/pub/child", "r5"), ("/local/domain/6/pub/child", "other")
    ),
    # A grandchild whose parent (pub/child, copied perms n6 r5) is readable: visible.
    ("s", 0, Op.WRITE, "/local/domain/6/pub/child/gc|w", OK),
    events_unordered(
        "d5",
        ("/local/domain/6/pub/child/gc", "r5"),
        ("/local/domain/6/pub/child/gc", "other"),
    ),
    # SET_PERMS revoking the grant: the old permissions still count for this event...
    ("s", 0, Op.SET_PERMS, z("/local/domain/6/pub", "n6"), OK),
    events_unordered("d5", ("/local/domain/6/pub", "r5"), ("/local/domain/6/pub", "other")),
    # ...but not for the next change.
    ("s", 0, Op.WRITE, "/local/domain/6/pub|w2", OK),
    events("d5"),
    ("s", 0, Op.RM, "/local/domain/6/pub|", OK),
    events("d5"),
    events(
        "w",
        ("/local/domain/6/pub", "root"),
        ("/local/domain/6/pub", "root"),
        ("/local/domain/6/pub/child", "root"),
        ("/local/domain/6/pub/child/gc", "root"),
        ("/local/domain/6/pub", "root"),
        ("/local/domain/6/pub", "root"),
        ("/local/domain/6/pub", "root"),
    ),
]


def test_permission_filter_xsa115() -> None:
    run_table(PERMISSION_FILTER)


def test_rm_events_use_the_permissions_before_deletion() -> None:
    h = Kit()
    run(h, PERMISSION_FILTER[:4])
    h.write("s", "/local/domain/6/pub/a/b", "v")
    h.set_perms("s", "/local/domain/6/pub", "n6", "r5")
    h.set_perms("s", "/local/domain/6/pub/a", "n6", "r5")
    h.set_perms("s", "/local/domain/6/pub/a/b", "n6", "r5")
    for p in ("/local/domain/6/pub", "/local/domain/6/pub/a", "/local/domain/6/pub/a/b"):
        assert h.call("d5", Op.WATCH, z(p, p)) == OK
    assert h.call("d5", Op.WATCH, z("/local/domain/6", "home")) == OK
    h.take_events("d5")
    h.call("s", Op.RM, "/local/domain/6/pub|")
    assert h.take_events("d5") == [
        ("/local/domain/6/pub/a/b", "/local/domain/6/pub/a/b"),
        ("/local/domain/6/pub/a", "/local/domain/6/pub/a"),
        ("/local/domain/6/pub", "/local/domain/6/pub"),
        ("/local/domain/6/pub", "home"),
    ]


def test_reset_watches_removes_every_watch() -> None:
    run_table(
        [
            ("w", 0, Op.WATCH, z("/a", "1"), OK),
            ("w", 0, Op.WATCH, z("/", "2"), OK),
            ("w", 0, Op.WATCH, z("@releaseDomain", "3"), OK),
            events("w", ("/a", "1"), ("/", "2"), ("@releaseDomain", "3")),
            ("w", 0, Op.RESET_WATCHES, "", OK),
            ("s", 0, Op.WRITE, "/a|", OK),
            events("w"),
            ("w", 0, Op.UNWATCH, z("/a", "1"), "ENOENT"),
            ("w", 0, Op.WATCH, z("/a", "1"), OK),  # no EEXIST: really gone
            events("w", ("/a", "1")),
        ]
    )


def test_disconnect_removes_the_watches() -> None:
    h = Kit()
    h.call("w", Op.WATCH, z("/a", "t"))
    h.engine.disconnect(h.conn("w"))
    assert h.engine.watches.count == 0
    h.write("s", "/a")


# -- special watches ------------------------------------------------------------------------
def test_introduce_and_release_domain_watches() -> None:
    h = Kit()
    h.call("w", Op.WATCH, z("@introduceDomain", "in"))
    h.call("w", Op.WATCH, z("@releaseDomain", "out"))
    h.call("d1", Op.WATCH, z("@introduceDomain", "in"))  # n0: a guest may not see it
    h.call("d1", Op.WATCH, z("@releaseDomain", "out"))
    h.take_events("w")
    h.take_events("d1")
    assert h.call("s", Op.INTRODUCE, z(7, 0, 1)) == OK
    assert h.take_events("w") == [("@introduceDomain", "in")]
    assert h.call("s", Op.INTRODUCE, z(7, 0, 2)) == OK  # a re-INTRODUCE does not fire
    assert h.take_events("w") == []
    assert h.call("s", Op.RELEASE, z(7)) == OK
    assert h.take_events("w") == [("@releaseDomain", "out")]
    # 4.22: @releaseDomain is readable by everyone (r<DOMID_ANY>); C 4.17 sent it to
    # privileged watchers only (deliberate).
    assert h.take_events("d1") == [("@releaseDomain", "out")]
    assert h.call("s", Op.RELEASE, z(7)) == "ENOENT"
    assert h.call("s", Op.RELEASE, z(0)) == "EINVAL"


def test_release_domain_with_depth_names_the_domain() -> None:
    h = Kit()
    h.call("w", Op.WATCH, z("@releaseDomain", "bare"))
    h.call("w", Op.WATCH, z("@releaseDomain", "one", 1))
    h.call("w", Op.WATCH, z("@releaseDomain/7", "seven"))
    h.call("w", Op.WATCH, z("@releaseDomain/8", "eight"))
    h.introduce(7)
    h.take_events("w")
    h.call("s", Op.RELEASE, z(7))
    assert sorted(h.take_events("w")) == sorted(
        [("@releaseDomain", "bare"), ("@releaseDomain/7", "one"), ("@releaseDomain/7", "seven")]
    )


def test_tree_writes_skip_matching_while_only_special_names_are_watched() -> None:
    """The registry counts watched tree paths; with none, a write matches nothing, and a
    watch on a tree path set later (or again after UNWATCH) fires as before."""
    h = Kit()
    registry = h.engine.watches
    h.request("w", Op.WATCH, z("@releaseDomain", "r"))
    h.request("w", Op.WATCH, z("@introduceDomain", "i"))
    assert registry.tree_paths == 0
    h.take_events("w")
    h.write("a", "/x/y", "1")
    assert h.take_events("w") == []
    h.request("w", Op.WATCH, z("/x", "t"))
    h.request("w", Op.WATCH, z("/x", "u"))  # one path, two tokens: one key
    assert registry.tree_paths == 1
    h.take_events("w")
    h.write("a", "/x/y", "2")
    assert sorted(h.take_events("w")) == [("/x/y", "t"), ("/x/y", "u")]
    h.request("w", Op.UNWATCH, z("/x", "t"))
    assert registry.tree_paths == 1
    h.request("w", Op.UNWATCH, z("/x", "u"))
    assert registry.tree_paths == 0
    h.write("a", "/x/y", "3")
    assert h.take_events("w") == []
