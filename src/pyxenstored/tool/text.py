"""Text conventions shared by the verbs: xenstore-utils' value escaping, C's ``atoi``,
and the JSON form of values.

xenstore-utils prints values through ``sanitise_value`` (printable ASCII as is, ``\\``,
tab, newline and carriage return as C escapes, bytes below 8 as ``\\ooo`` octal, any
other byte as ``\\xHH``) and reads written values through ``unsanitise_value`` (the
reverse, lenient about malformed escapes); both are reproduced byte for byte here so
that output and input match the C tools.
"""

from __future__ import annotations

import base64
import json
import re
import sys
from typing import Any

__all__ = ["atoi", "emit_json", "json_value", "sanitise", "unsanitise"]

_NAMED = {ord("\t"): "\\t", ord("\n"): "\\n", ord("\r"): "\\r", ord("\\"): "\\\\"}


def sanitise(value: bytes) -> str:
    """``value`` as xenstore-utils prints it (ASCII only, escapes as in the module doc)."""
    out: list[str] = []
    for c in value:
        if 0x20 <= c <= 0x7E and c != 0x5C:
            out.append(chr(c))
        elif c in _NAMED:
            out.append(_NAMED[c])
        elif c < 0o10:
            out.append(f"\\{c:03o}")
        else:
            out.append(f"\\x{c:02x}")
    return "".join(out)


# sscanf's "%2x": blanks skipped, then at most 2 characters of an optionally signed number.
_HEX2 = re.compile(rb"[ \t\n\v\f\r]*([+-][0-9a-fA-F]|[0-9a-fA-F]{1,2})")
_OCT3 = re.compile(rb"[0-7]{1,3}")


def unsanitise(text: bytes) -> bytes:
    """The bytes xenstore-write stores for ``text`` (without ``-R``).

    As C's ``unsanitise_value``: ``\\t \\n \\r \\\\`` are the control characters and the
    backslash; ``\\xHH`` is a byte in hex and ``\\ooo`` one in octal (up to 2 and 3 digits,
    the low 8 bits kept); ``\\x`` without a number stays ``x``; any other escaped
    character stands for itself; a backslash at the very end stores a NUL byte.
    """
    out = bytearray()
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        i += 1
        if c == 0x5C:  # backslash
            if i >= n:
                out.append(0)  # C stores the string's terminating NUL, then stops
                break
            c = text[i]
            i += 1
            if c == ord("t"):
                c = 0x09
            elif c == ord("n"):
                c = 0x0A
            elif c == ord("r"):
                c = 0x0D
            elif c == ord("x"):
                m = _HEX2.match(text, i)
                if m:
                    c = int(m.group(1), 16) & 0xFF
                    i = m.end()
            elif ord("0") <= c <= ord("7"):
                m = _OCT3.match(text, i - 1)
                assert m is not None
                c = int(m.group(), 8) & 0xFF
                i = m.end()
        out.append(c)
    return bytes(out)


_ATOI = re.compile(rb"[ \t\n\v\f\r]*([+-]?[0-9]+)")


def atoi(text: str) -> int:
    """C's ``atoi``: leading blanks, an optional sign, digits; anything else gives 0.
    The result wraps to a C ``int`` as glibc's does on the values that matter here."""
    m = _ATOI.match(text.encode(errors="surrogateescape"))
    if not m:
        return 0
    value = int(m.group(1))
    return (value + 2**31) % 2**32 - 2**31


def json_value(value: bytes) -> Any:
    """A node value for JSON: a string when it is UTF-8 text (NULs included),
    else ``{"base64": "..."}`` so that no byte is lost or guessed."""
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        return {"base64": base64.b64encode(value).decode("ascii")}


def emit_json(document: Any) -> None:
    """Print one JSON document on stdout (one line: easy to pipe into ``jq``)."""
    sys.stdout.write(json.dumps(document, ensure_ascii=False) + "\n")
