"""Payload splitting rules: one_arg, strings, split_write (xenstore-protocol.md §1.4,
§12.2). They decide between EINVAL and a quirky success, as C's onearg/get_strings."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pyxenstored.errors import Invalid
from pyxenstored.protocol.args import one_arg, split_write, strings

ONE_ARG_OK = [
    (b"/a\0", b"/a"),
    (b"\0", b""),  # an empty argument is split fine; canonicalize refuses it later
    (b"T\0", b"T"),
    (b"x" * 4095 + b"\0", b"x" * 4095),
]


@pytest.mark.parametrize(("payload", "arg"), ONE_ARG_OK)
def test_one_arg_accepts_exactly_one_trailing_nul(payload: bytes, arg: bytes) -> None:
    assert one_arg(payload) == arg


@pytest.mark.parametrize(
    "payload",
    [b"", b"/a", b"/a\0x", b"/a\0\0", b"\0/a", b"\0\0", b"/a\0b\0"],
    ids=["empty", "no-nul", "trailing-bytes", "two-nuls", "leading-nul", "only-nuls", "two-args"],
)
def test_one_arg_refuses_anything_else(payload: bytes) -> None:
    with pytest.raises(Invalid):
        one_arg(payload)


@pytest.mark.parametrize(
    ("payload", "parts"),
    [
        (b"", []),
        (b"a", []),  # unterminated bytes are ignored, as C's get_strings
        (b"a\0", [b"a"]),
        (b"a\0b\0", [b"a", b"b"]),
        (b"a\0b", [b"a"]),
        (b"\0", [b""]),
        (b"\0\0", [b"", b""]),
        (b"a\0\0b\0", [b"a", b"", b"b"]),
    ],
)
def test_strings_counts_nul_terminated_strings_only(payload: bytes, parts: list[bytes]) -> None:
    assert strings(payload) == parts


@pytest.mark.parametrize(
    ("payload", "path", "value"),
    [
        (b"/a\0v", b"/a", b"v"),
        (b"/a\0", b"/a", b""),
        (b"/a\0v\0w\0", b"/a", b"v\0w\0"),  # the value is every byte after the first NUL
        (b"/a\0\0", b"/a", b"\0"),
        (b"\0v", b"", b"v"),
    ],
)
def test_split_write(payload: bytes, path: bytes, value: bytes) -> None:
    assert split_write(payload) == (path, value)


def test_split_write_needs_a_nul() -> None:
    with pytest.raises(Invalid):
        split_write(b"/a")
    with pytest.raises(Invalid):
        split_write(b"")


nul_free = st.binary(max_size=64).filter(lambda b: b"\0" not in b)


@settings(max_examples=100, deadline=None)
@given(nul_free, st.binary(max_size=64))
def test_split_write_round_trip(path: bytes, value: bytes) -> None:
    assert split_write(path + b"\0" + value) == (path, value)


@settings(max_examples=100, deadline=None)
@given(st.lists(nul_free, max_size=6), nul_free)
def test_strings_round_trip(parts: list[bytes], tail: bytes) -> None:
    assert strings(b"".join(p + b"\0" for p in parts) + tail) == parts
