"""C's lenient decimal readers (protocol.numbers)."""

from __future__ import annotations

import pytest

from pyxenstored.protocol.numbers import atoi, strtoul


@pytest.mark.parametrize(
    ("raw", "value"),
    [(b"", 0), (b"abc", 0), (b"12abc", 12), (b"  7", 7), (b"+3", 3), (b"-1", -1),
     (b"4294967295", -1), (b"2147483648", -2147483648)],
)  # fmt: skip
def test_atoi(raw: bytes, value: int) -> None:
    assert atoi(raw) == value


@pytest.mark.parametrize(
    ("raw", "value"),
    [(b"", 0), (b"5", 5), (b"5x", 5), (b"-1", 2**64 - 1), (b"9" * 30, 2**64 - 1)],
)  # fmt: skip
def test_strtoul(raw: bytes, value: int) -> None:
    assert strtoul(raw) == value
