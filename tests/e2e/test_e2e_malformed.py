"""Malformed input is contained: the offender gets an error or is dropped, everyone else
carries on, and data committed before is still there (§1.2-§1.4)."""

from __future__ import annotations

import os
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pyxenstored.client import SyncClient
from pyxenstored.protocol.wire import HEADER, Op, encode

from .rawwire import RawConn, error_name


def _alive(path: str) -> None:
    """A fresh connection gets a prompt, correct answer."""
    with RawConn(path, timeout=5) as c:
        p = c.request(Op.GET_DOMAIN_PATH, b"4\0", req_id=99)
        assert (p.op, p.req_id, p.payload) == (Op.GET_DOMAIN_PATH, 99, b"/local/domain/4\0")


def test_truncated_header_waits_for_the_rest(module_daemon: str) -> None:
    msg = encode(Op.READ, 5, 0, b"/tool\0")
    with RawConn(module_daemon) as c:
        c.send(msg[:7])
        with pytest.raises(TimeoutError):
            c.recv_packet(timeout=0.2)
        assert c.is_open()
        _alive(module_daemon)  # the half-sent header blocks nobody else
        c.send(msg[7:])
        p = c.recv_packet()
        assert (p.op, p.req_id, p.payload) == (Op.READ, 5, b"")


def test_truncated_header_then_hangup(module_daemon: str) -> None:
    for cut in (1, 8, 15, 16, 20):
        with RawConn(module_daemon) as c:
            c.send(encode(Op.WRITE, 1, 0, b"/trunc\0value")[:cut])
    _alive(module_daemon)
    with SyncClient(module_daemon, timeout=5) as xs:
        assert "trunc" not in xs.directory("/")


def test_oversized_header_drops_only_that_connection(module_daemon: str) -> None:
    with RawConn(module_daemon) as other, RawConn(module_daemon) as bad:
        assert bad.request(Op.WRITE, b"/kept\0committed").payload == b"OK\0"
        other.request(Op.WATCH, b"/kept\0t\0")
        bad.send(HEADER.pack(Op.WRITE, 2, 0, 5000) + b"/kept\0" + b"x" * 100)
        closed, _ = bad.wait_closed(5)
        assert closed, "a header announcing 5000 bytes must cut the connection"
        # The others are unaffected, and what was committed before is still there.
        assert other.request(Op.READ, b"/kept\0").payload == b"committed"
        assert other.recv_event().payload == b"/kept\0t\0"  # initial event only
        _alive(module_daemon)


def test_payload_of_exactly_4096_bytes_is_accepted(module_daemon: str) -> None:
    path = b"/max\0"
    with RawConn(module_daemon) as c:
        p = c.request(Op.WRITE, path + b"v" * (4096 - len(path)))
        assert p.payload == b"OK\0"
        assert len(c.request(Op.READ, path).payload) == 4096 - len(path)


@pytest.mark.parametrize(
    ("op", "payload"),
    [
        (Op.READ, b"/tool"),  # no NUL at all
        (Op.READ, b""),
        (Op.READ, b"/tool\0/x\0"),  # two arguments
        (Op.RM, b"/tool\0\0"),
        (Op.MKDIR, b"/a\0b"),
        (Op.WRITE, b"/no-nul-anywhere"),
        (Op.DIRECTORY, b"/tool"),
        (Op.GET_PERMS, b"/tool"),
        (Op.SET_PERMS, b"/tool\0"),  # no permission
        (Op.WATCH, b"/tool\0"),  # no token
        (Op.WATCH, b"/tool"),
        (Op.UNWATCH, b"/tool\0t\0x\0"),
        (Op.TRANSACTION_END, b"T"),
        (Op.GET_DOMAIN_PATH, b"1"),
        (Op.RELEASE, b"1"),
        (Op.INTRODUCE, b"1\0"),
    ],
)
def test_missing_or_extra_nuls_give_einval(module_daemon: str, op: int, payload: bytes) -> None:
    with RawConn(module_daemon) as c:
        p = c.request(op, payload, req_id=42)
        assert p.req_id == 42
        assert error_name(p) == "EINVAL"
        assert c.request(Op.READ, b"/tool\0").op == Op.READ  # still serving this client


@pytest.mark.parametrize("op", [15, 16, 20, 27, 28, 1000, 65535, 0xFFFFFFFF])
def test_unknown_types_give_enosys(module_daemon: str, op: int) -> None:
    with RawConn(module_daemon) as c:
        p = c.request(op, b"/tool\0", req_id=77, tx_id=3)
        assert (p.op, p.req_id, p.tx_id) == (Op.ERROR, 77, 3)
        assert error_name(p) == "ENOSYS"


def test_garbage_stream_is_contained(module_daemon: str) -> None:
    with SyncClient(module_daemon, timeout=5) as xs:
        xs.write("/survivor", b"still here")
    for _ in range(8):
        with RawConn(module_daemon) as c:
            c.send(os.urandom(4096))
            # Either a header announced > 4096 bytes (dropped) or the bytes parsed as
            # odd requests (answered, maybe with a partial packet left pending).
            c.wait_closed(0.3)
        _alive(module_daemon)
    _alive(module_daemon)
    with SyncClient(module_daemon, timeout=5) as xs:
        assert xs.read("/survivor") == b"still here"


@settings(max_examples=50, deadline=None)
@given(junk=st.binary(min_size=1, max_size=600))
def test_random_bytes_never_hurt_other_clients(module_daemon: str, junk: bytes) -> None:
    with RawConn(module_daemon) as c:
        c.send(junk)
    _alive(module_daemon)


@settings(max_examples=30, deadline=None)
@given(
    op=st.integers(min_value=0, max_value=0xFFFFFFFF),
    tx=st.sampled_from([0, 1, 0xFFFFFFFF]),
    payload=st.binary(max_size=64),
)
def test_any_well_framed_request_gets_exactly_one_reply(
    module_daemon: str, op: int, tx: int, payload: bytes
) -> None:
    """Whatever the type and payload, a well-framed request is answered (its own type or
    ERROR, same req_id) and the connection stays usable."""
    if op in (Op.INTRODUCE, Op.RELEASE, Op.RM, Op.RESET_WATCHES, Op.CONTROL, Op.SET_QUOTA):
        payload = b"\xff" + payload  # keep it harmless: never a valid first argument
    with RawConn(module_daemon) as c:
        p = c.request(op, payload, req_id=0xABCD, tx_id=tx)
        assert p.req_id == 0xABCD and p.op in (op, Op.ERROR)
        assert c.request(Op.GET_DOMAIN_PATH, b"2\0", req_id=1).req_id == 1


def test_header_fields_are_little_endian_u32(module_daemon: str) -> None:
    raw = struct.pack("<IIII", Op.GET_DOMAIN_PATH, 0x01020304, 0, 2) + b"9\0"
    with RawConn(module_daemon) as c:
        c.send(raw)
        assert c.recv_packet().req_id == 0x01020304
