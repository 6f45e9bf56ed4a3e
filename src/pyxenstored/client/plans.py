"""Request plans: every operation's encoding and decoding, written once for both clients.

A plan is a generator that yields ``(op, payload, tx_id)`` requests, receives each reply
payload (or has the :class:`~pyxenstored.errors.XenstoreError` of an ``XS_ERROR`` reply
thrown in) and returns the result. :meth:`.aio.Client.run` and :meth:`.sync.Client.run`
drive the same plans, so a multi-request operation such as the DIRECTORY_PART fallback
lives in one place. Nothing here does I/O.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterable
from typing import Any, TypeVar

from ..errors import Again, TooBig
from ..protocol.wire import Op
from .values import (
    Perm,
    ProtocolError,
    _args,
    _int,
    _ok,
    _perm_text,
    _raw,
    _strings,
    _strip_nul,
    _word,
)

__all__ = [
    "Plan",
    "Request",
    "parse_directory_part",
    "plan_control",
    "plan_directory",
    "plan_get_perms",
    "plan_get_quota",
    "plan_read",
    "plan_set_perms",
    "plan_set_quota",
    "plan_simple",
    "plan_watch",
    "plan_write",
]

T = TypeVar("T")

# A request plan: a generator that yields (op, payload, tx_id), receives each reply
# payload (or has the XenstoreError thrown in) and returns the result. Both the asyncio
# client and the blocking one drive the same plans, so encoding and decoding live once.
Request = tuple[int, bytes, int]
Plan = Generator[Request, bytes, T]


def plan_simple(op: int, payload: bytes, tx: int, decode: Callable[[bytes], T]) -> Plan[T]:
    """One request, one decoded reply."""
    reply = yield (op, payload, tx)
    return decode(reply)


def parse_directory_part(reply: bytes) -> tuple[bytes, bytes, bool]:
    """Split a DIRECTORY_PART reply into (generation, child bytes, last chunk?).

    The chunk that reaches the end of the list carries one extra NUL; an offset at the
    end gives ``gen\\0\\0`` (xenstore-protocol.md §1.4).
    """
    cut = reply.find(b"\0")
    if cut < 0:
        raise ProtocolError("DIRECTORY_PART reply without a generation")
    gen, body = reply[:cut], reply[cut + 1 :]
    if body == b"\0" or body.endswith(b"\0\0"):
        return gen, body[:-1], True
    if not body or not body.endswith(b"\0"):
        raise ProtocolError("DIRECTORY_PART reply without progress")
    return gen, body, False


def plan_directory(path: bytes, tx: int, restarts: int = 8) -> Plan[list[str]]:
    """DIRECTORY, falling back to DIRECTORY_PART chunks on E2BIG (as libxenstore does).

    If the child list changes between chunks (a new generation), the listing restarts;
    after ``restarts`` attempts the plan gives up with EAGAIN.
    """
    try:
        reply = yield (Op.DIRECTORY, path, tx)
    except TooBig:
        pass
    else:
        return _strings(reply)
    for _ in range(restarts):
        chunks: list[bytes] = []
        first: bytes | None = None
        offset = 0
        while True:
            reply = yield (Op.DIRECTORY_PART, path + b"%d\0" % offset, tx)
            gen, body, last = parse_directory_part(reply)
            if first is None:
                first = gen
            elif gen != first:
                break
            chunks.append(body)
            if last:
                return _strings(b"".join(chunks))
            offset += len(body)
    raise Again("directory kept changing while it was read in parts")


# Plans for every operation; the two clients expose them as methods.
def plan_read(path: str | bytes, tx: int) -> Plan[bytes]:
    return plan_simple(Op.READ, _word(path, "path"), tx, bytes)


def plan_write(path: str | bytes, value: str | bytes, tx: int) -> Plan[None]:
    return plan_simple(Op.WRITE, _word(path, "path") + _raw(value), tx, _ok)


def plan_get_perms(path: str | bytes, tx: int) -> Plan[list[str]]:
    return plan_simple(Op.GET_PERMS, _word(path, "path"), tx, _strings)


def plan_set_perms(path: str | bytes, perms: Iterable[str | Perm], tx: int) -> Plan[None]:
    items = [_word(_perm_text(p), "permission") for p in perms]
    if not items:
        raise ValueError("SET_PERMS needs at least one permission")
    return plan_simple(Op.SET_PERMS, _word(path, "path") + b"".join(items), tx, _ok)


def plan_watch(path: str | bytes, token: str | bytes, depth: int | None) -> Plan[None]:
    payload = _word(path, "path") + _word(token, "token")
    if depth is not None:
        payload += b"%d\0" % depth
    return plan_simple(Op.WATCH, payload, 0, _ok)


def plan_get_quota(name: str | None, domid: int | None) -> Plan[Any]:
    if name is None:
        if domid is not None:
            raise ValueError("a domid needs a quota name")
        return plan_simple(Op.GET_QUOTA, b"", 0, lambda r: _strip_nul(r).split())
    payload = (b"%d\0" % domid if domid is not None else b"") + _word(name, "quota name")
    return plan_simple(Op.GET_QUOTA, payload, 0, _int)


def plan_set_quota(name: str, value: int, domid: int | None) -> Plan[None]:
    payload = (b"%d\0" % domid if domid is not None else b"") + _args(name, value)
    return plan_simple(Op.SET_QUOTA, payload, 0, _ok)


def plan_control(cmd: str | bytes, args: Iterable[str | bytes]) -> Plan[bytes]:
    payload = _word(cmd, "command") + b"".join(_word(a, "argument") for a in args)
    return plan_simple(Op.CONTROL, payload, 0, lambda r: r[:-1] if r.endswith(b"\0") else r)
