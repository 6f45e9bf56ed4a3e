"""The xenbus device channel (client/xenbus.py) against a fake kernel device that
relays to a real daemon: whole messages one per write, replies and events read back,
opened by path as libxenstore opens it (stat: not a socket, so a device)."""

from __future__ import annotations

import asyncio
import os
import select
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from pyxenstored.client import AsyncClient, SyncClient, WatchEvent, xenbus
from pyxenstored.client.sync import SocketChannel, open_path
from pyxenstored.client.xenbus import AsyncDeviceChannel, DeviceChannel, split_messages
from pyxenstored.protocol.wire import Op, encode

from .fake_xenbus import FakeXenbus

PYXENSTORE = str(Path(sys.executable).with_name("pyxenstore"))


@pytest.fixture
def device(daemon: str) -> Iterator[FakeXenbus]:
    fake = FakeXenbus(daemon, "seqpacket")
    yield fake
    fake.close()


@pytest.fixture
def pty_device(daemon: str) -> Iterator[FakeXenbus]:
    fake = FakeXenbus(daemon, "pty")
    yield fake
    fake.close()


def test_split_messages_cuts_at_each_header_length() -> None:
    a = encode(Op.READ, 1, 0, b"/a\0")
    b = encode(Op.WRITE, 2, 7, b"/b\0value")
    pieces = [bytes(m) for m in split_messages(a + b + b[:5])]
    assert pieces == [a, b, b[:5]]
    assert [bytes(m) for m in split_messages(b"")] == []


def test_sync_client_over_the_device(device: FakeXenbus) -> None:
    assert device.client_fd is not None
    with SyncClient(channel=DeviceChannel(fd=device.client_fd), timeout=10) as xs:
        xs.write("/xb/a", b"1")
        assert xs.read("/xb/a") == b"1"
        assert xs.directory("/xb") == ["a"]
        xs.watch("/xb", "tok")
        assert xs.read_watch(timeout=10) == WatchEvent("/xb", "tok")
        with xs.transaction() as t:
            t.write("/xb/b", b"2")
        assert xs.read_watch(timeout=10) == WatchEvent("/xb/b", "tok")
        assert xs.read("/xb/b") == b"2"
    assert device.violations == []


def test_async_client_pipelines_yet_writes_one_message_per_write(device: FakeXenbus) -> None:
    """The asyncio client batches queued requests into one send; the device channel
    must still write them one by one (the kernel would drop all but the first)."""
    assert device.client_fd is not None
    fd = device.client_fd

    async def main() -> list[bytes]:
        async with AsyncClient(AsyncDeviceChannel(fd)) as xs:
            await asyncio.gather(*(xs.write(f"/xb/p{i}", str(i)) for i in range(20)))
            return list(await asyncio.gather(*(xs.read(f"/xb/p{i}") for i in range(20))))

    assert asyncio.run(asyncio.wait_for(main(), 30)) == [str(i).encode() for i in range(20)]
    assert device.violations == []
    assert device.messages == 40


def test_a_path_that_is_not_a_socket_is_opened_as_a_device(
    pty_device: FakeXenbus, daemon: str
) -> None:
    assert pty_device.path is not None
    chan = open_path(pty_device.path)
    assert isinstance(chan, DeviceChannel)
    chan.close()
    sock = open_path(daemon)
    assert isinstance(sock, SocketChannel)
    sock.close()
    with SyncClient(pty_device.path, timeout=10) as xs:
        xs.write("/xb/pty", b"through a tty")
    with SyncClient(daemon, timeout=10) as xs:
        assert xs.read("/xb/pty") == b"through a tty"


def test_async_connect_opens_a_device_path(pty_device: FakeXenbus) -> None:
    assert pty_device.path is not None
    path = pty_device.path

    async def main() -> bytes:
        async with await AsyncClient.connect(path) as xs:
            await xs.write("/xb/apty", b"v")
            return await xs.read("/xb/apty")

    assert asyncio.run(asyncio.wait_for(main(), 30)) == b"v"


def test_pyxenstore_through_xenstored_path_set_to_a_device(pty_device: FakeXenbus) -> None:
    """As libxenstore: XENSTORED_PATH naming a device is opened as one."""
    assert pty_device.path is not None
    env = {**os.environ, "XENSTORED_PATH": pty_device.path}
    run = subprocess.run(
        [PYXENSTORE, "write", "/xb/tool", "from the tool"], env=env, timeout=30, check=True
    )
    assert run.returncode == 0
    out = subprocess.run(
        [PYXENSTORE, "read", "/xb/tool"], env=env, capture_output=True, timeout=30, check=True
    )
    assert out.stdout == b"from the tool\n"


def test_without_a_socket_the_client_falls_back_to_the_device(
    pty_device: FakeXenbus, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """libxenstore's xs_open(0): the daemon socket first, then the xenbus device."""
    assert pty_device.path is not None
    monkeypatch.delenv("XENSTORED_PATH", raising=False)
    monkeypatch.setenv("XENSTORED_RUNDIR", str(tmp_path / "no-daemon-here"))
    monkeypatch.setattr(xenbus, "DEVICE_PATHS", (pty_device.path, "/nonexistent"))
    with SyncClient(timeout=10) as xs:
        assert xs.path == pty_device.path
        xs.write("/xb/fallback", b"1")

    async def main() -> bytes:
        async with await AsyncClient.connect() as xs:
            return await xs.read("/xb/fallback")

    assert asyncio.run(asyncio.wait_for(main(), 30)) == b"1"


def test_no_socket_and_no_device_raises_the_sockets_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("XENSTORED_PATH", raising=False)
    monkeypatch.setenv("XENSTORED_RUNDIR", str(tmp_path))
    monkeypatch.setattr(xenbus, "DEVICE_PATHS", ("/nonexistent/a", "/nonexistent/b"))
    with pytest.raises(FileNotFoundError) as info:
        SyncClient()
    assert info.value.filename is None or "socket" in str(info.value.filename)


def test_the_device_is_never_polled_for_writing(
    device: FakeXenbus, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Linux's xenbus_file_poll reports only readability: a client that waits for the
    device to become writable waits forever (as the first real-Xen run showed)."""
    assert device.client_fd is not None
    real_select = select.select
    polled_for_writing = []

    def fake_select(
        r: list[int], w: list[int], x: list[int], timeout: float | None = None
    ) -> object:
        if w:
            polled_for_writing.append(w)
            return [], [], []  # what the real device would answer: never writable
        return real_select(r, w, x, timeout)

    monkeypatch.setattr(select, "select", fake_select)
    with SyncClient(channel=DeviceChannel(fd=device.client_fd), timeout=10) as xs:
        xs.write("/xb/poll", b"1")
        assert xs.read("/xb/poll") == b"1"
    assert polled_for_writing == []
