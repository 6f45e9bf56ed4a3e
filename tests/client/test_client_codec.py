"""Pure parts of the client: socket path, permissions, error mapping, payload plans."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pyxenstored import errors
from pyxenstored.client import Perm, default_socket_path, error_from_reply
from pyxenstored.client.aio import (
    ERROR_CLASSES,
    ProtocolError,
    parse_directory_part,
)
from pyxenstored.client.plans import (
    plan_directory,
    plan_get_quota,
    plan_set_perms,
    plan_set_quota,
    plan_watch,
    plan_write,
)
from pyxenstored.protocol.wire import Op


def test_default_socket_path_order() -> None:
    assert default_socket_path({}) == "/run/xenstored/socket"
    assert default_socket_path({"XENSTORED_RUNDIR": "/r"}) == "/r/socket"
    env = {"XENSTORED_RUNDIR": "/r", "XENSTORED_PATH": "/p/s"}
    assert default_socket_path(env) == "/p/s"
    assert default_socket_path({"XENSTORED_PATH": "", "XENSTORED_RUNDIR": ""}) == (
        "/run/xenstored/socket"
    )


def test_default_socket_path_reads_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XENSTORED_PATH", "/somewhere/sock")
    assert default_socket_path() == "/somewhere/sock"


@pytest.mark.parametrize("name", errors.ERRNO_NAMES)
def test_every_wire_errno_maps_to_its_name(name: str) -> None:
    err = error_from_reply(name.encode() + b"\0", Op.READ, b"/x\0")
    assert isinstance(err, errors.XenstoreError)
    assert err.name == name
    assert name in str(err) and "READ /x" in str(err)
    if name in ERROR_CLASSES:
        assert type(err) is ERROR_CLASSES[name]


def test_error_classes_cover_the_errors_module() -> None:
    assert ERROR_CLASSES["ENOENT"] is errors.NoEntry
    assert ERROR_CLASSES["EAGAIN"] is errors.Again
    assert ERROR_CLASSES["EINVAL"] is errors.Invalid
    assert ERROR_CLASSES["E2BIG"] is errors.TooBig
    assert ERROR_CLASSES["EPERM"] is errors.NotPermitted


def test_unknown_error_name_is_a_plain_xenstore_error() -> None:
    err = error_from_reply(b"EQUOTA\0")
    assert type(err) is errors.XenstoreError
    assert err.name == "EQUOTA"


@given(st.sampled_from("nrwb"), st.integers(min_value=0, max_value=0x7FEF))
def test_perm_round_trip(mode: str, domid: int) -> None:
    perm = Perm(mode, domid)
    assert str(perm) == f"{mode}{domid}"
    assert Perm.parse(str(perm)) == perm


def test_perm_parse_c_integers() -> None:
    assert Perm.parse("b0x10") == Perm("b", 16)
    assert Perm.parse("r010") == Perm("r", 8)
    assert Perm.parse("n-1") == Perm("n", -1)
    for bad in ("", "x5", "r", "r5z"):
        with pytest.raises(ValueError):
            Perm.parse(bad)


def _first(plan: object) -> tuple[int, bytes, int]:
    return next(plan)  # type: ignore[call-overload, no-any-return]


def test_request_payloads() -> None:
    assert _first(plan_write("/a", b"v\0x", 3)) == (Op.WRITE, b"/a\0v\0x", 3)
    assert _first(plan_set_perms("/a", ["n0", Perm("r", 5)], 0)) == (
        Op.SET_PERMS,
        b"/a\0n0\0r5\0",
        0,
    )
    assert _first(plan_watch("/a", "t", None)) == (Op.WATCH, b"/a\0t\0", 0)
    assert _first(plan_watch("/a", "t", 2)) == (Op.WATCH, b"/a\0t\x002\0", 0)
    assert _first(plan_get_quota(None, None)) == (Op.GET_QUOTA, b"", 0)
    assert _first(plan_get_quota("nodes", None)) == (Op.GET_QUOTA, b"nodes\0", 0)
    assert _first(plan_get_quota("nodes", 7)) == (Op.GET_QUOTA, b"7\0nodes\0", 0)
    assert _first(plan_set_quota("nodes", 10, None)) == (Op.SET_QUOTA, b"nodes\x0010\0", 0)
    assert _first(plan_set_quota("nodes", 10, 7)) == (Op.SET_QUOTA, b"7\0nodes\x0010\0", 0)


def test_embedded_nul_refused_locally() -> None:
    with pytest.raises(ValueError):
        plan_write("/a\0b", b"", 0)
    with pytest.raises(ValueError):
        plan_watch("/a", "t\0x", None)
    with pytest.raises(ValueError):
        plan_set_perms("/a", [], 0)


def test_parse_directory_part() -> None:
    assert parse_directory_part(b"7\0a\0b\0") == (b"7", b"a\0b\0", False)
    assert parse_directory_part(b"7\0c\0\0") == (b"7", b"c\0", True)
    assert parse_directory_part(b"7\0\0") == (b"7", b"", True)
    with pytest.raises(ProtocolError):
        parse_directory_part(b"7")
    with pytest.raises(ProtocolError):
        parse_directory_part(b"7\0")


def test_directory_plan_falls_back_on_e2big_and_restarts_on_new_generation() -> None:
    plan = plan_directory(b"/d\0", 0)
    assert next(plan) == (Op.DIRECTORY, b"/d\0", 0)
    assert plan.throw(errors.TooBig()) == (Op.DIRECTORY_PART, b"/d\x000\0", 0)
    assert plan.send(b"5\0a\0bb\0") == (Op.DIRECTORY_PART, b"/d\x005\0", 0)
    # The list changed: generation 6. Start over from offset 0.
    assert plan.send(b"6\0x\0") == (Op.DIRECTORY_PART, b"/d\x000\0", 0)
    with pytest.raises(StopIteration) as stop:
        plan.send(b"6\0a\0\0")
    assert stop.value.value == ["a"]


def test_directory_plan_result() -> None:
    plan = plan_directory(b"/d\0", 0)
    next(plan)
    plan.throw(errors.TooBig())
    plan.send(b"5\0a\0bb\0")
    with pytest.raises(StopIteration) as stop:
        plan.send(b"5\0c\0\0")
    assert stop.value.value == ["a", "bb", "c"]


def test_directory_plan_other_errors_propagate() -> None:
    plan = plan_directory(b"/d\0", 0)
    next(plan)
    with pytest.raises(errors.NoEntry):
        plan.throw(errors.NoEntry())
