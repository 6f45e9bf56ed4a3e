"""Fuzz bytes read as a program: small integers and choices taken from the front.

Structured targets (engine, rings) turn the fuzzer's bytes into actions with a
:class:`Source`. Running out of bytes is never an error: every read then gives zeros, so
any input is a valid (finite) program and a mutation of one byte changes one decision.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

T = TypeVar("T")


class Source:
    """A cursor over fuzz bytes."""

    __slots__ = ("data", "pos")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    @property
    def left(self) -> int:
        """Bytes not read yet."""
        return max(0, len(self.data) - self.pos)

    def byte(self) -> int:
        """The next byte (0 once exhausted)."""
        pos = self.pos
        self.pos = pos + 1
        return self.data[pos] if pos < len(self.data) else 0

    def u16(self) -> int:
        return self.byte() | self.byte() << 8

    def u32(self) -> int:
        return self.u16() | self.u16() << 16

    def below(self, n: int) -> int:
        """A number in ``range(n)`` (``n`` at most 65536)."""
        if n <= 1:
            return 0
        return (self.byte() if n <= 256 else self.u16()) % n

    def pick(self, items: Sequence[T]) -> T:
        return items[self.below(len(items))]

    def raw(self, limit: int) -> bytes:
        """A length (below ``limit``) then that many bytes (fewer if exhausted)."""
        n = self.below(limit)
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out
