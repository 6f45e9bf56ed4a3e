"""Payload splitting rules (xenstore-protocol.md §1.4). They decide EINVAL versus a quirky
success, so they copy C's ``get_strings``/``onearg`` exactly."""

from __future__ import annotations

from ..errors import Invalid

__all__ = ["one_arg", "split_write", "strings"]


def one_arg(payload: bytes) -> bytes:
    """The single argument of READ, RM, ...: exactly one NUL, as the last byte."""
    if payload.find(0) != len(payload) - 1 or not payload:
        raise Invalid("expected one NUL-terminated argument")
    return payload[:-1]


def strings(payload: bytes) -> list[bytes]:
    """Every NUL-terminated string; trailing unterminated bytes are ignored (as C)."""
    parts = payload.split(b"\0")
    parts.pop()
    return parts


def split_write(payload: bytes) -> tuple[bytes, bytes]:
    """WRITE's ``path|value``: the value is every byte after the first NUL."""
    cut = payload.find(0)
    if cut < 0:
        raise Invalid("WRITE needs a NUL after the path")
    return payload[:cut], payload[cut + 1 :]
