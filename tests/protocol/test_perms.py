"""Permission lists: parsing (strtol base 0) and formatting (%i) (xenstore-protocol.md
§3.1, §12.5). Every row of WIRE was checked against C xenstored 4.17 by SET_PERMS then
GET_PERMS on a socket."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pyxenstored.errors import Invalid
from pyxenstored.protocol.perms import (
    BOTH,
    NONE,
    READ,
    WRITE,
    format_perms,
    parse_perm,
    parse_perms,
)

# (entry as sent, entry as GET_PERMS prints it back)
WIRE = [
    ("n0", "n0"),
    ("r5", "r5"),
    ("w7", "w7"),
    ("b3", "b3"),
    ("r0x10", "r16"),
    ("r0X1f", "r31"),
    ("r010", "r8"),
    ("r077", "r63"),
    ("n00", "n0"),
    ("n0x0", "n0"),
    ("r+5", "r5"),
    ("r -5", "r-5"),
    ("r\t5", "r5"),  # strtol skips leading white space
    ("b-1", "b-1"),
    ("r-0x5", "r-5"),
    ("r0x7FFFFFFF", "r2147483647"),
    ("r0xFFFFFFFF", "r-1"),
    ("r4294967296", "r0"),  # kept as C's unsigned int
    ("r99999999999", "r1215752191"),
    ("r99999999999999999999", "r-1"),  # strtol clamps to LONG_MAX
    ("r-99999999999999999999", "r0"),  # ... and LONG_MIN
    ("r-2147483649", "r2147483647"),
    ("r32757", "r32757"),
]


@pytest.mark.parametrize(("sent", "printed"), WIRE)
def test_parse_then_format_matches_c(sent: str, printed: str) -> None:
    perm = parse_perm(sent)
    assert format_perms((perm,)) == printed.encode() + b"\0"


@pytest.mark.parametrize(
    "text",
    ["", "r", "x5", "R5", "rr5", "n6x", "r5 ", "r5\n", "r0x", "r08", "r0x-5", "r5.0", "r 0x"],
)
def test_bad_entries_are_einval(text: str) -> None:
    with pytest.raises(Invalid):
        parse_perm(text)


def test_letters() -> None:
    assert parse_perm("n1") == (NONE, 1)
    assert parse_perm("r1") == (READ, 1)
    assert parse_perm("w1") == (WRITE, 1)
    assert parse_perm("b1") == (BOTH, 1)


def test_negative_domids_are_kept_as_unsigned() -> None:
    assert parse_perm("r-1") == (READ, 0xFFFFFFFF)
    assert format_perms(((READ, 0xFFFFFFFF),)) == b"r-1\0"


def test_large_domid_prints_in_full() -> None:
    # C 4.17 prints 0x80000000 as "r-214748364": its buffer is one byte short. A
    # truncated id is never useful, so we print all of it.
    assert format_perms(((READ, 0x80000000),)) == b"r-2147483648\0"


def test_parse_perms_needs_at_least_one() -> None:
    with pytest.raises(Invalid):
        parse_perms([])


def test_parse_perms_refuses_non_ascii() -> None:
    with pytest.raises(Invalid):
        parse_perms([b"r\xe9"])


def test_format_several() -> None:
    perms = parse_perms([b"n5", b"r6", b"w0x10", b"b-1"])
    assert format_perms(perms) == b"n5\0r6\0w16\0b-1\0"


perm = st.tuples(st.sampled_from([NONE, READ, WRITE, BOTH]), st.integers(0, 2**32 - 1))


@settings(max_examples=200, deadline=None)
@given(st.lists(perm, min_size=1, max_size=8))
def test_format_parse_round_trip(perms: list[tuple[int, int]]) -> None:
    wire = format_perms(tuple(perms))
    parts = wire.split(b"\0")
    assert parts.pop() == b""
    assert parse_perms(parts) == tuple(perms)


@settings(max_examples=200, deadline=None)
@given(
    st.sampled_from("nrwb"), st.integers(-(2**31), 2**32 - 1), st.sampled_from(["%d", "%#x", "%#o"])
)
def test_strtol_bases(letter: str, value: int, fmt: str) -> None:
    text = letter + ("-" + fmt % -value if value < 0 else fmt % value)
    if fmt == "%#o":
        text = text.replace("0o", "0")
    mode, domid = parse_perm(text)
    assert domid == value & 0xFFFFFFFF
    assert mode == "nrwb".index(letter)


def test_remembered_entries_parse_as_fresh_ones_and_bad_ones_are_not_remembered() -> None:
    from pyxenstored.protocol import perms as perms_module

    perms_module._ENTRY_MEMO.clear()
    first = parse_perms([b"n0", b"r5", b"b0x10"])
    assert first == ((NONE, 0), (READ, 5), (BOTH, 16))
    assert parse_perms([b"n0", b"r5", b"b0x10"]) == first
    for _ in range(2):  # refused every time: a refusal is never remembered
        with pytest.raises(Invalid):
            parse_perms([b"n0", b"q1"])
    assert b"q1" not in perms_module._ENTRY_MEMO


def test_the_entry_memo_is_bounded() -> None:
    from pyxenstored.protocol import perms as perms_module

    perms_module._ENTRY_MEMO.clear()
    for i in range(perms_module._ENTRY_MEMO_MAX * 2 + 5):
        assert parse_perms([b"r%d" % i]) == ((READ, i),)
    assert len(perms_module._ENTRY_MEMO) <= perms_module._ENTRY_MEMO_MAX
