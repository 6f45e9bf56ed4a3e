"""Fuzz target ``frames``: the frame reader and the payload decoders, any bytes.

The input is split: its first byte chooses how the rest is cut into chunks for
:class:`PacketReader` (the reader must give the same packets, and the same verdict, for
any split of one stream), and every packet payload is then run through each decoder of
``protocol``: one-argument and string splitting, WRITE's split, path canonicalisation
(for a privileged and a guest home, with and without ``@`` paths and path limits),
permission lists (parse, format, parse again: the same list), C's number readers and
domid parsing. A decoder may refuse with ``Invalid`` and nothing else.
"""

from __future__ import annotations

import contextlib

from pyxenstored.core.domains import parse_domid
from pyxenstored.errors import Invalid
from pyxenstored.protocol.args import one_arg, split_write, strings
from pyxenstored.protocol.framing import FramingError, Packet, PacketReader
from pyxenstored.protocol.numbers import atoi, strtoul
from pyxenstored.protocol.paths import ancestors, canonicalize, parent_of, relative_length
from pyxenstored.protocol.perms import format_perms, parse_perms, strtol0
from pyxenstored.protocol.wire import HEADER, HEADER_SIZE, PAYLOAD_MAX

from .invariants import _NAME, _PATH, _SPECIAL

_HOMES = ("/local/domain/0", "/local/domain/7")


def _reference(stream: bytes) -> tuple[list[Packet], bool]:
    """The packets of ``stream`` read one header at a time (the obvious way), and whether
    a header announced too long a payload."""
    out: list[Packet] = []
    pos = 0
    while len(stream) - pos >= HEADER_SIZE:
        op, req_id, tx_id, length = HEADER.unpack_from(stream, pos)
        if length > PAYLOAD_MAX:
            return out, True
        if len(stream) - pos - HEADER_SIZE < length:
            break
        body = stream[pos + HEADER_SIZE : pos + HEADER_SIZE + length]
        out.append(Packet(op, req_id, tx_id, body))
        pos += HEADER_SIZE + length
    return out, False


def _read(stream: bytes, step: int) -> tuple[list[Packet], bool]:
    reader = PacketReader()
    got: list[Packet] = []
    for start in range(0, len(stream), step) if stream else []:
        try:
            got += reader.feed(stream[start : start + step])
        except FramingError:
            return got, True
        if reader.error:
            return got, True
    return got, False


def _decode_payload(payload: bytes) -> None:
    try:
        arg = one_arg(payload)
        assert payload == arg + b"\0" and 0 not in arg
    except Invalid:
        pass
    parts = strings(payload)
    assert b"\0".join(parts) + (b"\0" if parts else b"") == payload[: payload.rfind(0) + 1]
    try:
        path, value = split_write(payload)
        assert path + b"\0" + value == payload and 0 not in path
    except Invalid:
        pass
    for raw in [*parts[:3], payload]:
        for home in _HOMES:
            for special in (False, True):
                for limit in (0, 20, 2048):
                    try:
                        path_s = canonicalize(raw, home, special, limit)
                    except Invalid:
                        continue
                    if path_s[:1] == "@":
                        assert special and _SPECIAL.match(path_s), path_s
                    else:
                        assert _PATH.match(path_s), path_s
                        assert ancestors(path_s)[-1] == "/"
                        last = path_s[len(parent_of(path_s)) :].lstrip("/")
                        assert path_s == "/" or _NAME.match(last), path_s
                    assert not limit or relative_length(path_s) <= limit
        atoi(raw)
        assert 0 <= strtoul(raw) < 2**64
        with contextlib.suppress(Invalid):
            assert 0 <= parse_domid(raw) <= 0xFFFF
        text = raw.decode("latin-1")
        value_l = strtol0(text)
        assert value_l is None or -(2**63) <= value_l < 2**63
    try:
        perms = parse_perms(parts)
    except Invalid:
        return
    again = parse_perms(strings(format_perms(perms)))
    assert again == perms, (perms, again)


def one_input(data: bytes) -> None:
    """Read ``data[1:]`` as a stream, cut in ``data[0] % 17 + 1``-byte chunks and whole."""
    if not data:
        return
    stream = data[1:]
    want, bad = _reference(stream)
    for step in {data[0] % 17 + 1, max(1, len(stream))}:
        got, got_bad = _read(stream, step)
        assert got == want and got_bad == bad, (step, got, want, got_bad, bad)
    for packet in want:
        _decode_payload(packet.payload)
