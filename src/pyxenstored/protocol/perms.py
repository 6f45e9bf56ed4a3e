"""Permission lists: parsing and formatting their wire form (xenstore-protocol.md §3.1).

A list is a tuple of ``(mode, domid)`` pairs. Entry 0 names the owner and its mode is
what everyone else gets; later entries are per-domain grants. On the wire each entry is
a letter (``n r w b``) followed by the domid, which C parses with ``strtol(..., 0)``:
hex (``0x10``) and octal (``010``) are accepted, and the value is kept as C's
``unsigned int`` and printed with ``%i`` (so ``r-1`` round-trips).
"""

from __future__ import annotations

from ..errors import Invalid

__all__ = [
    "BOTH",
    "NONE",
    "READ",
    "WRITE",
    "Perms",
    "format_perms",
    "parse_perm",
    "parse_perms",
]

NONE = 0
READ = 1
WRITE = 2
BOTH = 3

Perm = tuple[int, int]
Perms = tuple[Perm, ...]

_LETTER_MODE = {"n": NONE, "r": READ, "w": WRITE, "b": BOTH}
_MODE_LETTER = {NONE: "n", READ: "r", WRITE: "w", BOTH: "b"}
_LONG_MAX = 2**63 - 1
_LONG_MIN = -(2**63)
_DIGITS = {8: "01234567", 10: "0123456789", 16: "0123456789abcdefABCDEF"}


def strtol0(text: str) -> int | None:
    """C ``strtol(text, &end, 0)`` that must consume all of ``text``; None if not."""
    t = text.lstrip(" \t\n\v\f\r")
    sign = 1
    if t[:1] in ("+", "-") and t:
        sign = -1 if t[0] == "-" else 1
        t = t[1:]
    if t[:2] in ("0x", "0X") and len(t) > 2 and t[2] in _DIGITS[16]:
        base, digits = 16, t[2:]
    elif t[:1] == "0":
        base, digits = 8, t
    else:
        base, digits = 10, t
    if not digits or any(c not in _DIGITS[base] for c in digits):
        return None
    value = sign * int(digits, base)
    return max(_LONG_MIN, min(_LONG_MAX, value))


def parse_perm(text: str) -> Perm:
    """Parse one entry such as ``r5``. Raises Invalid."""
    mode = _LETTER_MODE.get(text[:1])
    if mode is None:
        raise Invalid("bad permission letter")
    value = strtol0(text[1:])
    if value is None:
        raise Invalid("bad permission domid")
    return (mode, value & 0xFFFFFFFF)


#: entry bytes -> its parse (a pure function): the same few entries (``n0``, ``r5``,
#: ``b7``) come again and again, in every VM start and again in every commit's replay
_ENTRY_MEMO: dict[bytes, Perm] = {}
_ENTRY_MEMO_MAX = 4096


def parse_perms(items: list[bytes]) -> Perms:
    """Parse a list of entries from a SET_PERMS payload. Raises Invalid."""
    if not items:
        raise Invalid("no permissions")
    memo = _ENTRY_MEMO
    out = []
    for item in items:
        perm = memo.get(item)
        if perm is None:
            try:
                perm = parse_perm(item.decode("ascii"))
            except UnicodeDecodeError:
                raise Invalid("bad permission") from None
            if len(memo) >= _ENTRY_MEMO_MAX:
                memo.clear()  # bounded: a client inventing entries cannot grow it
            memo[item] = perm
        out.append(perm)
    return tuple(out)


def _signed(domid: int) -> int:
    return domid - 0x100000000 if domid & 0x80000000 else domid


def format_perms(perms: Perms) -> bytes:
    """The wire form: each entry NUL-terminated, as GET_PERMS answers."""
    return "".join(f"{_MODE_LETTER[m]}{_signed(d)}\0" for m, d in perms).encode("ascii")
