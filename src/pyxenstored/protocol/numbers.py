"""C's lenient decimal readers, as the daemons apply them to request arguments.

``atoi`` and ``strtoul(..., 10)`` skip leading blanks, take one sign, read digits up to
the first non-digit and ignore the rest; "" and "abc" read as 0. Where C then stores the
result in a fixed-width integer, the value wraps the same way here.
"""

from __future__ import annotations

__all__ = ["atoi", "strtoul"]


def _leading(raw: bytes) -> tuple[bool, int]:
    """(negative, magnitude) of the leading decimal number in ``raw``."""
    t = raw.lstrip(b" \t\n\v\f\r")
    negative = t[:1] == b"-"
    if t[:1] in (b"-", b"+"):
        t = t[1:]
    n = 0
    for c in t:
        if not 48 <= c <= 57:
            break
        n = n * 10 + c - 48
    return negative, n


def atoi(raw: bytes) -> int:
    """C ``atoi``: a signed 32-bit int (wrapping)."""
    negative, n = _leading(raw)
    value = (-n if negative else n) & 0xFFFFFFFF
    return value - (1 << 32) if value & 0x80000000 else value


def strtoul(raw: bytes) -> int:
    """C ``strtoul(raw, NULL, 10)`` on a 64-bit host: saturates, ``-`` wraps around."""
    negative, n = _leading(raw)
    n = min(n, 2**64 - 1)
    return (-n) % 2**64 if negative else n
