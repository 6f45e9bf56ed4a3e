"""Framing: golden byte vectors through PacketReader, whole, byte by byte and with
trailing data; the 4096-byte payload limit; and a round trip across arbitrary splits
(xenstore-protocol.md §1.1, §1.2, §12.1)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pyxenstored.protocol.framing import FramingError, Packet, PacketReader
from pyxenstored.protocol.wire import HEADER, HEADER_SIZE, PAYLOAD_MAX, Op, encode

# (name, wire bytes, the packet they decode to). Written out byte by byte on purpose:
# the header is four little-endian u32 (type, req_id, tx_id, len).
GOLDEN: list[tuple[str, bytes, Packet]] = [
    (
        "read",
        b"\x02\x00\x00\x00\x07\x00\x00\x00\x00\x00\x00\x00\x03\x00\x00\x00/a\x00",
        Packet(2, 7, 0, b"/a\x00"),
    ),
    (
        "write-with-nuls-in-value",
        b"\x0b\x00\x00\x00\x01\x02\x03\x04\x05\x00\x00\x00\x07\x00\x00\x00/a\x00v\x00w\x00",
        Packet(11, 0x04030201, 5, b"/a\x00v\x00w\x00"),
    ),
    (
        "empty-payload",
        b"\x15\x00\x00\x00\xff\xff\xff\xff\xff\xff\xff\xff\x00\x00\x00\x00",
        Packet(21, 0xFFFFFFFF, 0xFFFFFFFF, b""),
    ),
    (
        "watch-event",
        b"\x0f\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x05\x00\x00\x00/a\x00t\x00",
        Packet(15, 0, 0, b"/a\x00t\x00"),
    ),
    (
        "invalid-type",
        b"\xff\xff\x00\x00\x01\x00\x00\x00\x00\x00\x00\x00\x01\x00\x00\x00\x00",
        Packet(65535, 1, 0, b"\x00"),
    ),
    (
        "transaction-end",
        b"\x07\x00\x00\x00\x2a\x00\x00\x00\x03\x00\x00\x00\x02\x00\x00\x00T\x00",
        Packet(7, 42, 3, b"T\x00"),
    ),
    (
        "largest-payload",
        b"\x0b\x00\x00\x00"
        b"\x00\x00\x00\x00"
        b"\x00\x00\x00\x00"
        b"\x00\x10\x00\x00" + b"/x\x00" + b"v" * (4096 - 3),
        Packet(11, 0, 0, b"/x\x00" + b"v" * 4093),
    ),
]
IDS = [name for name, _, _ in GOLDEN]


@pytest.mark.parametrize(("name", "wire", "packet"), GOLDEN, ids=IDS)
def test_encode_produces_the_golden_bytes(name: str, wire: bytes, packet: Packet) -> None:
    assert encode(packet.op, packet.req_id, packet.tx_id, packet.payload) == wire


@pytest.mark.parametrize(("name", "wire", "packet"), GOLDEN, ids=IDS)
def test_golden_vector_fed_whole(name: str, wire: bytes, packet: Packet) -> None:
    reader = PacketReader()
    assert reader.feed(wire) == [packet]
    assert reader.pending == 0


@pytest.mark.parametrize(("name", "wire", "packet"), GOLDEN, ids=IDS)
def test_golden_vector_fed_one_byte_at_a_time(name: str, wire: bytes, packet: Packet) -> None:
    reader = PacketReader()
    got: list[Packet] = []
    for i in range(len(wire)):
        out = reader.feed(wire[i : i + 1])
        if i < len(wire) - 1:
            assert out == []
            assert reader.pending == i + 1
        got.extend(out)
    assert got == [packet]
    assert reader.pending == 0


@pytest.mark.parametrize(("name", "wire", "packet"), GOLDEN, ids=IDS)
def test_golden_vector_with_trailing_partial_data(name: str, wire: bytes, packet: Packet) -> None:
    reader = PacketReader()
    second = GOLDEN[0][1]
    # One whole packet plus the first 10 bytes (part of a header) of the next one.
    assert reader.feed(wire + second[:10]) == [packet]
    assert reader.pending == 10
    # The rest of the header and part of the payload: still nothing.
    assert reader.feed(second[10:17]) == []
    assert reader.pending == 17
    assert reader.feed(second[17:]) == [GOLDEN[0][2]]
    assert reader.pending == 0


def test_all_golden_vectors_in_one_feed_keep_their_order() -> None:
    reader = PacketReader()
    stream = b"".join(wire for _, wire, _ in GOLDEN)
    assert reader.feed(stream) == [packet for _, _, packet in GOLDEN]


def test_header_fields_are_little_endian_u32() -> None:
    assert HEADER_SIZE == HEADER.size == 16
    assert encode(Op.READ, 1, 2, b"xy")[:16] == bytes.fromhex("02000000010000000200000002000000")


def test_empty_feed_is_harmless() -> None:
    reader = PacketReader()
    assert reader.feed(b"") == []
    assert reader.pending == 0


def test_payload_of_exactly_4096_is_accepted() -> None:
    assert PAYLOAD_MAX == 4096
    reader = PacketReader()
    [packet] = reader.feed(HEADER.pack(11, 0, 0, 4096) + b"x" * 4096)
    assert len(packet.payload) == 4096


@pytest.mark.parametrize("length", [4097, 8192, 0x7FFFFFFF, 0xFFFFFFFF])
def test_header_announcing_more_than_4096_is_a_framing_error(length: int) -> None:
    """Not an error reply: the connection must be dropped (C closes the socket)."""
    reader = PacketReader()
    with pytest.raises(FramingError):
        reader.feed(HEADER.pack(Op.READ, 0, 0, length))


def test_oversized_header_is_detected_as_soon_as_the_header_is_complete() -> None:
    reader = PacketReader()
    header = HEADER.pack(Op.WRITE, 0, 0, 4097)
    assert reader.feed(header[:15]) == []
    with pytest.raises(FramingError):
        reader.feed(header[15:])


def test_oversized_header_after_a_good_packet_in_the_same_feed() -> None:
    """The good packet is still returned (it is answered, as C reads one message at a
    time); ``error`` says the peer must then be dropped, and any further feed raises."""
    reader = PacketReader()
    packets = reader.feed(GOLDEN[0][1] + HEADER.pack(Op.READ, 0, 0, 5000) + b"x" * 10)
    assert packets == [GOLDEN[0][2]]
    assert "5000" in reader.error
    with pytest.raises(FramingError):
        reader.feed(b"")


def test_reset_forgets_a_partial_packet() -> None:
    reader = PacketReader()
    wire = GOLDEN[0][1]
    reader.feed(wire[:20])
    reader.reset()
    assert reader.pending == 0
    assert reader.feed(wire) == [GOLDEN[0][2]]


packets = st.lists(
    st.builds(
        Packet,
        st.integers(0, 2**32 - 1),
        st.integers(0, 2**32 - 1),
        st.integers(0, 2**32 - 1),
        st.one_of(st.binary(max_size=40), st.binary(min_size=4000, max_size=PAYLOAD_MAX)),
    ),
    min_size=1,
    max_size=6,
)


@settings(max_examples=150, deadline=None)
@given(packets, st.data())
def test_round_trip_across_arbitrary_splits(msgs: list[Packet], data: st.DataObject) -> None:
    stream = b"".join(encode(*m) for m in msgs)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=12), label="cuts"))
    reader = PacketReader()
    got: list[Packet] = []
    last = 0
    for cut in [*cuts, len(stream)]:
        got.extend(reader.feed(stream[last:cut]))
        last = cut
    assert got == msgs
    assert reader.pending == 0
