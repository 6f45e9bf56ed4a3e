"""Basic operations through both clients against the daemon process, and random data
round-tripping through it (hypothesis)."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pyxenstored import errors
from pyxenstored.client import AsyncClient, Perm, SyncClient

_unique = itertools.count()
NAME = st.from_regex(r"[A-Za-z0-9_@\-]{1,24}", fullmatch=True)
# Values are whatever fits in one request after the path (the payload limit is 4096).
VALUE = st.binary(max_size=3900)


@pytest.fixture(scope="module")
def xs(module_daemon: str) -> Iterator[SyncClient]:
    with SyncClient(module_daemon, timeout=10) as client:
        yield client


def fresh(prefix: str) -> str:
    return f"/e2e/{prefix}{next(_unique)}"


def test_tree_operations(xs: SyncClient) -> None:
    base = fresh("tree")
    xs.write(f"{base}/a/b/c", b"deep")
    assert xs.read(f"{base}/a/b") == b""  # implicit parents are empty nodes
    assert xs.directory(base) == ["a"]
    xs.mkdir(f"{base}/m")
    xs.mkdir(f"{base}/m")
    assert sorted(xs.directory(base)) == ["a", "m"]
    xs.rm(f"{base}/a")
    assert xs.directory(base) == ["m"]
    with pytest.raises(errors.NoEntry):
        xs.read(f"{base}/a/b/c")
    with pytest.raises(errors.NoEntry):
        xs.directory(f"{base}/a")
    with pytest.raises(errors.Invalid):
        xs.write(f"{base}/bad path", b"")
    with pytest.raises(errors.Invalid):
        xs.rm("/")


def test_daemon_creates_its_own_nodes(xs: SyncClient) -> None:
    assert "tool" in xs.directory("/")
    assert "xenstored" in xs.directory("/tool")
    assert xs.get_perms("/") == ["n0"]


def test_async_and_sync_clients_agree(module_daemon: str, xs: SyncClient) -> None:
    base = fresh("agree")

    async def main() -> None:
        async with await AsyncClient.connect(module_daemon) as axs:
            await axs.write(f"{base}/x", b"from async")
            assert xs.read(f"{base}/x") == b"from async"
            xs.write(f"{base}/y", b"from sync")
            assert await axs.read(f"{base}/y") == b"from sync"
            assert sorted(await axs.directory(base)) == ["x", "y"]

    asyncio.run(main())


def test_relative_paths_resolve_under_the_callers_home(xs: SyncClient) -> None:
    xs.write("relative-node", b"v")
    assert xs.read("/local/domain/0/relative-node") == b"v"
    xs.rm("relative-node")


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(names=st.lists(NAME, min_size=1, max_size=4), value=VALUE)
def test_random_values_round_trip(xs: SyncClient, names: list[str], value: bytes) -> None:
    path = fresh("val") + "/" + "/".join(names)
    xs.write(path, value)
    assert xs.read(path) == value


@settings(max_examples=40, deadline=None)
@given(
    perms=st.lists(
        st.builds(Perm, st.sampled_from("nrwb"), st.integers(min_value=0, max_value=0x7FEF)),
        min_size=1,
        max_size=5,
    )
)
def test_random_permissions_round_trip(xs: SyncClient, perms: list[Perm]) -> None:
    path = fresh("perm")
    xs.write(path, b"")
    xs.set_perms(path, perms)
    assert xs.get_perms(path) == [str(p) for p in perms]
    assert [Perm.parse(p) for p in xs.get_perms(path)] == perms


@settings(max_examples=25, deadline=None)
@given(children=st.sets(NAME, min_size=0, max_size=30))
def test_random_directories_list_exactly_their_children(xs: SyncClient, children: set[str]) -> None:
    base = fresh("dir")
    xs.mkdir(base)
    for child in children:
        xs.write(f"{base}/{child}", b"")
    assert sorted(xs.directory(base)) == sorted(children)


def test_large_directory_through_directory_part(xs: SyncClient) -> None:
    base = fresh("wide")
    names = [f"n{i:03d}-" + "y" * 60 for i in range(150)]  # ~10 KB of names
    for n in names:
        xs.write(f"{base}/{n}", b"")
    assert sorted(xs.directory(base)) == names


def test_value_at_the_payload_limit(xs: SyncClient) -> None:
    path = fresh("limit")
    value = b"v" * (4096 - len(path) - 1)
    xs.write(path, value)
    assert xs.read(path) == value
    with pytest.raises(errors.TooBig):  # refused by the client before sending
        xs.write(path, value + b"!")
