"""Pure ring arithmetic (transports/ring.py): wrap-around, splits, validation (XSA-38)."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pyxenstored.transports.ring import (
    CONNECTED,
    ERROR_RINGIDX,
    PAGE_SIZE,
    RECONNECT,
    RING_SIZE,
    GuestRing,
    RingBroken,
    ServerRing,
)

U32 = 0xFFFFFFFF
REQ_CONS, REQ_PROD, RSP_CONS, RSP_PROD = 2048, 2052, 2056, 2060


def page() -> bytearray:
    return bytearray(PAGE_SIZE)


def word(buf: bytearray, off: int) -> int:
    return int(struct.unpack_from("<I", buf, off)[0])


def set_word(buf: bytearray, off: int, value: int) -> None:
    struct.pack_into("<I", buf, off, value & U32)  # test-side only: no concurrent peer


def test_layout_offsets_match_xs_wire() -> None:
    buf = page()
    server, guest = ServerRing(buf), GuestRing(buf)
    guest.write(b"abc")
    assert buf[0:3] == b"abc" and word(buf, REQ_PROD) == 3
    assert server.read() == b"abc" and word(buf, REQ_CONS) == 3
    server.write(b"xyz")
    assert buf[1024:1027] == b"xyz" and word(buf, RSP_PROD) == 3
    server.advertise(14)
    assert word(buf, 2064) == 14
    guest.request_reconnect()
    assert word(buf, 2068) == RECONNECT and server.reconnect_requested()
    server.set_connected()
    assert word(buf, 2068) == CONNECTED
    server.set_error(3)
    assert word(buf, 2072) == 3 and guest.error == 3
    guest.set_evtchn_port(77)
    assert server.evtchn_port == 77


def test_indexes_are_free_running_across_u32_wrap() -> None:
    buf = page()
    start = U32 - 5  # neither side may assume the counters start at 0
    for off in (REQ_CONS, REQ_PROD, RSP_CONS, RSP_PROD):
        set_word(buf, off, start)
    server, guest = ServerRing(buf), GuestRing(buf)
    data = bytes(range(200))
    assert guest.write(data) == 200
    assert word(buf, REQ_PROD) == (start + 200) & U32
    assert server.read() == data
    assert server.write(data) == 200
    assert guest.read() == data
    assert word(buf, RSP_CONS) == (start + 200) & U32


def test_data_wraps_around_the_end_of_the_buffer() -> None:
    buf = page()
    for off in (REQ_CONS, REQ_PROD):
        set_word(buf, off, 1000)
    server, guest = ServerRing(buf), GuestRing(buf)
    data = bytes(i & 0xFF for i in range(100))
    assert guest.write(data) == 100
    assert buf[1000:1024] == data[:24] and buf[0:76] == data[24:]
    assert server.read() == data


def test_full_ring_holds_exactly_1024_bytes() -> None:
    buf = page()
    server, guest = ServerRing(buf), GuestRing(buf)
    assert guest.write(b"x" * 2000) == RING_SIZE
    assert guest.free() == 0
    assert guest.write(b"y") == 0
    assert server.has_input()
    assert server.read(10) == b"x" * 10
    assert guest.free() == 10
    assert server.write(b"r" * 5000) == RING_SIZE
    assert server.free() == 0


@pytest.mark.parametrize(("cons", "prod"), [(0, 1025), (0, 5000), (100, 50), (U32, 1024)])
def test_bad_request_indexes_break_the_ring(cons: int, prod: int) -> None:
    buf = page()
    set_word(buf, REQ_CONS, cons)
    set_word(buf, REQ_PROD, prod)
    with pytest.raises(RingBroken) as info:
        ServerRing(buf).read()
    assert info.value.code == ERROR_RINGIDX
    assert word(buf, REQ_CONS) == cons  # nothing moved


def test_u32_wrap_is_not_a_bad_index() -> None:
    buf = page()
    set_word(buf, REQ_CONS, U32 - 1)
    set_word(buf, REQ_PROD, 1)  # 3 bytes available across the wrap
    assert len(ServerRing(buf).read()) == 3


def test_bad_response_indexes_break_the_ring() -> None:
    buf = page()
    set_word(buf, RSP_CONS, 500)
    set_word(buf, RSP_PROD, 0)  # guest claims to have consumed bytes never produced
    server = ServerRing(buf)
    with pytest.raises(RingBroken):
        server.write(b"data")
    with pytest.raises(RingBroken):
        server.free()
    assert word(buf, RSP_PROD) == 0


def test_reset_zeroes_the_four_indexes_only() -> None:
    buf = page()
    for off in (REQ_CONS, REQ_PROD, RSP_CONS, RSP_PROD):
        set_word(buf, off, 77)
    server = ServerRing(buf)
    server.advertise(15)
    server.reset()
    assert [word(buf, o) for o in (REQ_CONS, REQ_PROD, RSP_CONS, RSP_PROD)] == [0, 0, 0, 0]
    assert server.server_features == 15


def test_index_stores_touch_only_their_own_four_bytes() -> None:
    """A 32-bit store through the cast view, never a byte-wise clear-then-write."""
    buf = page()
    set_word(buf, REQ_CONS, 0x01020304)
    set_word(buf, REQ_PROD, 0x01020304)
    guest = GuestRing(buf)
    guest.write(b"z")
    assert buf[2052:2056] == struct.pack("<I", 0x01020305)
    assert buf[2048:2052] == struct.pack("<I", 0x01020304)
    assert buf[2056:2064] == bytes(8)


def test_page_must_be_writable_and_big_enough() -> None:
    with pytest.raises(ValueError):
        ServerRing(bytes(PAGE_SIZE))
    with pytest.raises(ValueError):
        ServerRing(bytearray(100))


def test_release_lets_the_buffer_resize() -> None:
    buf = page()
    ring = ServerRing(buf)
    ring.release()
    buf.extend(b"x")  # would raise BufferError if a view were still exported


@settings(max_examples=60, deadline=None)
@given(
    start=st.integers(0, U32),
    chunks=st.lists(st.binary(min_size=1, max_size=3000), min_size=1, max_size=8),
    reads=st.lists(st.integers(1, 1500), min_size=1, max_size=10),
)
def test_stream_survives_any_split(start: int, chunks: list[bytes], reads: list[int]) -> None:
    """Whatever the split on either side, the bytes arrive in order, exactly once."""
    buf = page()
    for off in (REQ_CONS, REQ_PROD):
        set_word(buf, off, start)
    server, guest = ServerRing(buf), GuestRing(buf)
    sent = b"".join(chunks)
    pending = memoryview(sent)
    got = bytearray()
    i = 0
    while pending or len(got) < len(sent):
        if pending:
            n = guest.write(pending[: len(chunks[i % len(chunks)])])
            pending = pending[n:]
        got += server.read(reads[i % len(reads)])
        i += 1
        assert i < 100000
    assert bytes(got) == sent
    assert not server.has_input()
