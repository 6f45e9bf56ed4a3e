"""``listen_unix``: the daemon's socket file appears only once it listens (bound under a
temporary name, renamed into place), a stale socket is replaced, and anything else in
the way is left alone with bind()'s error."""

from __future__ import annotations

import asyncio
import errno
import os
import socket
import stat
import tempfile
from pathlib import Path
from typing import Any

import pytest

from pyxenstored.core.engine import Engine
from pyxenstored.protocol.wire import Op, encode
from pyxenstored.runtime import unix
from pyxenstored.runtime.unix import SocketState, listen_unix


def state() -> SocketState:
    return SocketState(Engine(), lambda: None, lambda: None)


def short_dir() -> Path:
    return Path(tempfile.mkdtemp(prefix="pyxs-l-", dir="/tmp"))


async def read_over(path: str) -> bytes:
    reader, writer = await asyncio.open_unix_connection(path)
    writer.write(encode(Op.READ, 1, 0, b"/\0"))
    reply = await asyncio.wait_for(reader.read(100), 5)
    writer.close()
    return reply


def test_the_file_appears_listening_with_mode_0600_and_no_temporary_left() -> None:
    d = short_dir()
    path = str(d / "socket")
    seen: list[bool] = []
    real_rename = os.rename

    def rename(src: Any, dst: Any) -> None:
        # At the rename the socket already listens: a connect to the temporary name works.
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        probe.connect(src)
        probe.close()
        seen.append(not os.path.exists(dst))
        real_rename(src, dst)

    async def body() -> None:
        unix.os.rename = rename  # type: ignore[attr-defined]
        try:
            server = await listen_unix(state(), path, 16)
        finally:
            unix.os.rename = real_rename  # type: ignore[attr-defined]
        try:
            assert seen == [True]
            assert stat.S_ISSOCK(os.lstat(path).st_mode)
            assert stat.S_IMODE(os.lstat(path).st_mode) == 0o600
            assert sorted(os.listdir(d)) == ["socket"]
            assert (await read_over(path))[:4] == int(Op.READ).to_bytes(4, "little")
        finally:
            server.close()

    asyncio.run(body())


def test_a_stale_socket_is_replaced() -> None:
    d = short_dir()
    path = str(d / "socket")
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(path)
    stale.close()

    async def body() -> None:
        server = await listen_unix(state(), path, 16)
        try:
            assert (await read_over(path))[:4] == int(Op.READ).to_bytes(4, "little")
        finally:
            server.close()

    asyncio.run(body())


def test_a_file_that_is_not_a_socket_is_left_alone() -> None:
    d = short_dir()
    path = d / "socket"
    path.write_text("somebody's")

    async def body() -> None:
        with pytest.raises(OSError) as info:
            await listen_unix(state(), str(path), 16)
        assert info.value.errno == errno.EADDRINUSE

    asyncio.run(body())
    assert path.read_text() == "somebody's"
    assert sorted(os.listdir(d)) == ["socket"]


def test_a_path_with_no_room_for_a_longer_name_is_bound_directly() -> None:
    d = short_dir()
    name = "s" * (105 - len(str(d)) - 1)  # fits sun_path; ".<name>.<pid>" would not
    path = str(d / name)
    assert len(path) == 105 and len(f"{path}..{os.getpid()}") >= 108

    async def body() -> None:
        server = await listen_unix(state(), path, 16)
        try:
            assert sorted(os.listdir(d)) == [name]
            assert (await read_over(path))[:4] == int(Op.READ).to_bytes(4, "little")
        finally:
            server.close()

    asyncio.run(body())
