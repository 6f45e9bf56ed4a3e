"""Requests one by one: payload rules, special paths, unknown and privileged-only
types, error replies, reply size (xenstore-protocol.md §1, §2, §12.1, §12.2, §12.15-17).

Unless a comment says otherwise, every expectation was observed on C xenstored 4.17
(dom0 socket, and guest rings through the simulated Xen for unprivileged callers).
"""

from __future__ import annotations

import pytest
from kit.engine import OK, Kit, z
from kit.tables import ANY, run_table

from pyxenstored.core import optable
from pyxenstored.errors import ERRNO_NAMES, XenstoreError, wire_name
from pyxenstored.protocol.wire import Op, encode

BASIC = [
    ("s", 0, Op.WRITE, "/a|hello", OK),
    ("s", 0, Op.READ, "/a|", b"hello"),  # READ replies carry no trailing NUL
    # One-argument requests need exactly one NUL, as the last byte. C 4.17 answers
    # ENOENT here (a stale errno); 4.22 and the protocol say EINVAL (deliberate).
    ("s", 0, Op.READ, "/a", "EINVAL"),
    ("s", 0, Op.READ, "/a|x", "EINVAL"),
    ("s", 0, Op.READ, "/a||", "EINVAL"),
    ("s", 0, Op.READ, "", "EINVAL"),
    ("s", 0, Op.READ, "|", "EINVAL"),
    ("s", 0, Op.MKDIR, "/m", "EINVAL"),
    ("s", 0, Op.RM, "/a|x|", "EINVAL"),
    ("s", 0, Op.DIRECTORY, "/", "EINVAL"),
    ("s", 0, Op.GET_PERMS, "/||", "EINVAL"),
    # WRITE: path|value, the value is every byte after the first NUL.
    ("s", 0, Op.WRITE, "/b", "EINVAL"),
    ("s", 0, Op.WRITE, "/b|", OK),
    ("s", 0, Op.READ, "/b|", b""),
    ("s", 0, Op.WRITE, "/c|a|b|", OK),
    ("s", 0, Op.READ, "/c|", b"a\0b\0"),
    ("s", 0, Op.WRITE, "|v", "EINVAL"),
    # MKDIR: an existing node is fine and keeps its value; missing parents appear.
    ("s", 0, Op.MKDIR, "/a|", OK),
    ("s", 0, Op.READ, "/a|", b"hello"),
    ("s", 0, Op.MKDIR, "/d/e/f|", OK),
    ("s", 0, Op.DIRECTORY, "/d|", b"e\0"),
    ("s", 0, Op.DIRECTORY, "/d/e/f|", b""),  # an empty directory is an empty payload
    ("s", 0, Op.READ, "/d/e|", b""),  # implicit parents have empty values
    ("s", 0, Op.DIRECTORY, "/|", b"tool\0a\0b\0c\0d\0"),  # in creation order
    # RM
    ("s", 0, Op.RM, "/|", "EINVAL"),
    ("s", 0, Op.RM, "/nope|", OK),  # missing, but its parent exists
    ("s", 0, Op.RM, "/nope/x|", "ENOENT"),  # missing parent
    ("s", 0, Op.RM, "/d/e/g|", OK),
    ("s", 0, Op.RM, "/d|", OK),
    ("s", 0, Op.READ, "/d/e|", "ENOENT"),
    ("s", 0, Op.DIRECTORY, "/|", b"tool\0a\0b\0c\0"),
    # Relative paths from a socket resolve under /local/domain/0.
    ("s", 0, Op.READ, "a|", "ENOENT"),
    ("s", 0, Op.WRITE, "rel|v", OK),
    ("s", 0, Op.READ, "/local/domain/0/rel|", b"v"),
    ("s", 0, Op.READ, "/local/domain|", b""),
    ("s", 0, Op.READ, "/local/domain/|", "EINVAL"),  # XSA-481
    # Nodes the daemon creates.
    ("s", 0, Op.READ, "/tool/xenstored|", ANY),
    ("s", 0, Op.GET_PERMS, "/|", b"n0\0"),
    ("s", 0, Op.GET_PERMS, "/tool|", b"n0\0"),
]


def test_basic_requests() -> None:
    run_table(BASIC)


SPECIAL = [
    # C accepts @ paths only in WATCH, UNWATCH, GET_PERMS and SET_PERMS.
    ("s", 0, Op.READ, "@releaseDomain|", "EINVAL"),
    ("s", 0, Op.WRITE, "@foo|x", "EINVAL"),
    ("s", 0, Op.MKDIR, "@foo|", "EINVAL"),
    ("s", 0, Op.RM, "@releaseDomain|", "EINVAL"),
    ("s", 0, Op.DIRECTORY, "@releaseDomain|", "EINVAL"),
    ("s", 0, Op.DIRECTORY_PART, "@releaseDomain|0|", "EINVAL"),
    ("s", 0, Op.READ, "@|", "EINVAL"),
    # 4.22: real special nodes with permissions (C 4.17: EINVAL; deliberate).
    ("s", 0, Op.GET_PERMS, "@releaseDomain|", b"n0\0r32757\0"),
    ("s", 0, Op.GET_PERMS, "@introduceDomain|", b"n0\0"),
    ("s", 0, Op.GET_PERMS, "@foo|", "ENOENT"),
    ("s", 0, Op.SET_PERMS, z("@introduceDomain", "n0", "r5"), OK),
    ("s", 0, Op.GET_PERMS, "@introduceDomain|", b"n0\0r5\0"),
    ("d5", 0, Op.GET_PERMS, "@introduceDomain|", b"n0\0r5\0"),
    ("d6", 0, Op.GET_PERMS, "@introduceDomain|", "EACCES"),
    ("d6", 0, Op.SET_PERMS, z("@releaseDomain", "n6"), "EACCES"),
    # Watches on special paths are accepted by everyone.
    ("s", 0, Op.WATCH, "@|t|", OK),
    ("s", 0, Op.WATCH, "@a/b|t|", OK),
]


def test_special_paths() -> None:
    run_table(SPECIAL)


def test_domain_path_requests() -> None:
    run_table(
        [
            ("s", 0, Op.GET_DOMAIN_PATH, "7|", b"/local/domain/7\0"),
            # C 4.17 reads this domid with atoi(): junk means 0.
            ("s", 0, Op.GET_DOMAIN_PATH, "abc|", b"/local/domain/0\0"),
            ("s", 0, Op.GET_DOMAIN_PATH, "|", b"/local/domain/0\0"),
            ("s", 0, Op.GET_DOMAIN_PATH, "7", "EINVAL"),
            ("d5", 0, Op.GET_DOMAIN_PATH, "7|", b"/local/domain/7\0"),
            ("s", 0, Op.IS_DOMAIN_INTRODUCED, "0|", b"T\0"),
            ("s", 0, Op.IS_DOMAIN_INTRODUCED, "32752|", b"T\0"),  # DOMID_SELF
            ("s", 0, Op.IS_DOMAIN_INTRODUCED, "7|", b"F\0"),
            ("s", 0, Op.IS_DOMAIN_INTRODUCED, "5|", b"T\0"),  # d5 above was introduced
        ]
    )


def test_reset_watches_takes_any_payload() -> None:
    run_table(
        [
            ("s", 0, Op.RESET_WATCHES, "", OK),
            ("s", 0, Op.RESET_WATCHES, "|", OK),
            ("s", 0, Op.RESET_WATCHES, "junk", OK),
        ]
    )


def test_control() -> None:
    run_table(
        [
            ("s", 0, Op.CONTROL, "foo|", "EINVAL"),
            ("s", 0, Op.CONTROL, "", "EINVAL"),
            ("s", 0, Op.CONTROL, "check|", OK),
            ("s", 0, Op.CONTROL, "print|hello|", OK),
        ]
    )


UNKNOWN_TYPES = [15, 16, 20, 27, 28, 31, 32, 99, 1000, 0xFFFF, 0xFFFFFFFF]


@pytest.mark.parametrize("op", UNKNOWN_TYPES)
@pytest.mark.parametrize("who", ["s", "d5"])
def test_unknown_and_removed_types_are_enosys(op: int, who: str) -> None:
    run_table([(who, 0, op, "", "ENOSYS"), (who, 0, op, "/a|", "ENOSYS")])


@pytest.mark.parametrize("op", UNKNOWN_TYPES)
def test_unknown_type_in_an_unknown_transaction_is_still_enosys(op: int) -> None:
    run_table([("s", 42, op, "", "ENOSYS")])


PRIVILEGED_ONLY = [
    (Op.CONTROL, z("print", "x")),
    (Op.CONTROL, z("check")),
    (Op.INTRODUCE, z(7, 0, 1)),
    (Op.RELEASE, z(7)),
    (Op.IS_DOMAIN_INTRODUCED, z(7)),
    (Op.RESUME, z(7)),
    (Op.SET_TARGET, z(7, 8)),
    (Op.SET_FEATURE, z(7, 1)),
    (Op.GET_FEATURE, z(7)),  # 4.22: without a domid everyone may ask, with one only dom0
    (Op.GET_QUOTA, b""),
    (Op.GET_QUOTA, z("nodes")),
    (Op.SET_QUOTA, z("nodes", 5)),
]


@pytest.mark.parametrize(
    ("op", "payload"), PRIVILEGED_ONLY, ids=[f"{Op(o).name}-{p!r}" for o, p in PRIVILEGED_ONLY]
)
def test_privileged_only_types_answer_eacces_to_guests(op: int, payload: bytes) -> None:
    run_table([("d5", 0, op, payload, "EACCES")])


def test_guest_may_ask_its_own_features() -> None:
    h = Kit()
    assert isinstance(h.call("d5", Op.GET_FEATURE, b""), bytes)


# Which types honour tx_id: WATCH and UNWATCH ignore it; everything else looks the
# transaction up first, so an unknown id is ENOENT (C, checked on 4.17).
UNKNOWN_TX = [
    (Op.WATCH, z("/w", "t"), OK),
    (Op.UNWATCH, z("/w", "t"), OK),
    (Op.GET_DOMAIN_PATH, z(3), "ENOENT"),
    (Op.RESET_WATCHES, b"", "ENOENT"),
    (Op.IS_DOMAIN_INTRODUCED, z(0), "ENOENT"),
    (Op.DIRECTORY, z("/"), "ENOENT"),
    (Op.READ, z("/tool"), "ENOENT"),
    (Op.GET_PERMS, z("/"), "ENOENT"),
    (Op.SET_PERMS, z("/tool", "n0"), "ENOENT"),
    (Op.CONTROL, z("print", "x"), "ENOENT"),
    (Op.INTRODUCE, z(9, 0, 1), "ENOENT"),
    (Op.WRITE, b"/m\0v", "ENOENT"),
    (Op.MKDIR, z("/m"), "ENOENT"),
    (Op.RM, z("/m"), "ENOENT"),
    (Op.TRANSACTION_START, b"\0", "ENOENT"),
    (Op.TRANSACTION_END, b"F\0", "ENOENT"),
    (Op.TRANSACTION_END, b"T\0", "ENOENT"),
]


def test_unknown_transaction_id_per_type() -> None:
    h = Kit()
    for op, payload, expected in UNKNOWN_TX:
        assert h.call("s", op, payload, tx=42) == expected, Op(op).name


def test_replies_keep_the_request_type_req_id_and_tx_id() -> None:
    h = Kit()
    [reply] = h.feed("s", encode(Op.READ, 0xDEADBEEF, 0, b"/nope\0"))
    assert (reply.op, reply.req_id, reply.tx_id, reply.payload) == (
        Op.ERROR,
        0xDEADBEEF,
        0,
        b"ENOENT\0",
    )
    [reply] = h.feed("s", encode(Op.READ, 0x1234, 77, b"/nope\0"))
    assert (reply.op, reply.req_id, reply.tx_id) == (Op.ERROR, 0x1234, 77)
    [reply] = h.feed("s", encode(Op.DIRECTORY, 9, 0, b"/\0"))
    assert (reply.op, reply.req_id, reply.tx_id) == (Op.DIRECTORY, 9, 0)
    tx = h.start("s")
    [reply] = h.feed("s", encode(Op.WRITE, 0xFFFFFFFF, tx, b"/x\0v"))
    assert (reply.op, reply.req_id, reply.tx_id, reply.payload) == (
        Op.WRITE,
        0xFFFFFFFF,
        tx,
        OK,
    )


def test_pipelined_requests_are_answered_in_order() -> None:
    h = Kit()
    data = (
        encode(Op.WRITE, 1, 0, b"/p\0v")
        + encode(Op.READ, 2, 0, b"/p\0")
        + encode(Op.READ, 3, 0, b"/nope\0")
        + encode(Op.DIRECTORY, 4, 0, b"/\0")[:10]
    )
    msgs = h.feed("s", data)
    assert [(m.op, m.req_id, m.payload) for m in msgs] == [
        (Op.WRITE, 1, OK),
        (Op.READ, 2, b"v"),
        (Op.ERROR, 3, b"ENOENT\0"),
    ]
    [rest] = h.feed("s", encode(Op.DIRECTORY, 4, 0, b"/\0")[10:])
    assert (rest.op, rest.req_id) == (Op.DIRECTORY, 4)


# -- error names --------------------------------------------------------------------------
def test_errno_table_is_the_xs_wire_table() -> None:
    assert ERRNO_NAMES == (
        "EINVAL", "EACCES", "EEXIST", "EISDIR", "ENOENT", "ENOMEM", "ENOSPC", "EIO",
        "ENOTEMPTY", "ENOSYS", "EROFS", "EBUSY", "EAGAIN", "EISCONN", "E2BIG", "EPERM",
    )  # fmt: skip
    for name in ERRNO_NAMES:
        assert wire_name(name) == name
    for name in ("EQUOTA", "EBADF", "", "einval", "ENOTDIR"):
        assert wire_name(name) == "EINVAL"


@pytest.mark.parametrize("name", ["EQUOTA", "EBADF", "ETIMEDOUT"])
def test_unknown_errno_names_go_out_as_einval(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object) -> bytes:
        raise XenstoreError("test", name=name)

    monkeypatch.setitem(optable.TABLE, Op.READ, (refuse, 0))
    assert Kit().call("s", Op.READ, "/tool|") == "EINVAL"


@pytest.mark.parametrize("name", ERRNO_NAMES)
def test_known_errno_names_go_out_as_they_are(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object) -> bytes:
        raise XenstoreError("test", name=name)

    monkeypatch.setitem(optable.TABLE, Op.READ, (refuse, 0))
    assert Kit().call("s", Op.READ, "/tool|") == name


def test_an_internal_error_is_eio_and_the_engine_goes_on(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def crash(*args: object) -> bytes:
        raise RuntimeError("boom")

    monkeypatch.setitem(optable.TABLE, Op.GET_PERMS, (crash, 0))
    h = Kit()
    assert h.call("s", Op.GET_PERMS, "/|") == "EIO"
    assert h.call("s", Op.READ, "/tool|") == b""


# -- reply size -----------------------------------------------------------------------------
def _directory_with_listing_of(h: Kit, path: str, size: int) -> None:
    """Children of ``path`` whose NUL-terminated names add up to ``size`` bytes."""
    i = 0
    left = size
    while left:
        n = min(200, left - 1)
        if left - (n + 1) in (1,):  # never leave a remainder too small for a name
            n -= 1
        h.write("s", f"{path}/{i:03d}" + "y" * (n - 3))
        left -= n + 1
        i += 1


def test_reply_of_4096_bytes_is_sent_and_4097_is_e2big() -> None:
    h = Kit()
    _directory_with_listing_of(h, "/d4096", 4096)
    _directory_with_listing_of(h, "/d4097", 4097)
    assert len(h.ok("s", Op.DIRECTORY, "/d4096|")) == 4096
    assert h.call("s", Op.DIRECTORY, "/d4097|") == "E2BIG"
    # The request still counts as answered: the next one works.
    assert h.call("s", Op.READ, "/d4096|") == b""


def test_directory_of_many_long_children_is_e2big_but_directory_part_works() -> None:
    h = Kit()
    names = [f"c{i:03d}" + "_" * 100 for i in range(40)]
    for n in names:
        h.write("s", "/dir/" + n)
    assert h.call("s", Op.DIRECTORY, "/dir|") == "E2BIG"
    listing = b""
    offset = 0
    generations = set()
    while True:
        body = h.ok("s", Op.DIRECTORY_PART, z("/dir", offset))
        gen, chunk = body.split(b"\0", 1)
        generations.add(gen)
        assert len(body) <= 4096
        if chunk.endswith(b"\0\0") or chunk == b"\0":
            listing += chunk[:-1]
            break
        listing += chunk
        offset += len(chunk)
    assert listing == b"".join(n.encode() + b"\0" for n in names)
    assert len(generations) == 1


DIRECTORY_PART = [
    ("s", 0, Op.WRITE, "/small/a|", OK),
    ("s", 0, Op.WRITE, "/small/bb|", OK),
    ("s", 0, Op.WRITE, "/empty|", OK),
    ("s", 0, Op.DIRECTORY_PART, "/small|", "EINVAL"),
    ("s", 0, Op.DIRECTORY_PART, "/small|x", "EINVAL"),
    ("s", 0, Op.DIRECTORY_PART, "/small|0|x|", "EINVAL"),
    ("s", 0, Op.DIRECTORY_PART, "/nope|0|", "ENOENT"),
    ("d5", 0, Op.DIRECTORY_PART, "/small|0|", "EACCES"),
]


def test_directory_part_arguments() -> None:
    run_table(DIRECTORY_PART)


@pytest.mark.parametrize(
    ("offset", "chunk"),
    [
        (b"0", b"a\0bb\0\0"),
        (b"abc", b"a\0bb\0\0"),  # strtoul: no digits is 0
        (b"2", b"bb\0\0"),
        (b"3", b"b\0\0"),  # an offset inside a name is taken as it is
        (b" 3", b"b\0\0"),
        (b"5", b"\0"),  # at the end
        (b"100", b"\0"),
        (b"-1", b"\0"),  # wraps to a huge offset
    ],
)
def test_directory_part_offsets(offset: bytes, chunk: bytes) -> None:
    h = Kit()
    h.write("s", "/small/a")
    h.write("s", "/small/bb")
    h.write("s", "/empty")
    gen, got = h.ok("s", Op.DIRECTORY_PART, b"/small\0" + offset + b"\0").split(b"\0", 1)
    assert gen.isdigit()
    assert got == chunk
    assert h.ok("s", Op.DIRECTORY_PART, z("/empty", 0)).split(b"\0", 1)[1] == b"\0"
