"""Handlers of the domain operations: INTRODUCE, RELEASE, GET_DOMAIN_PATH,
IS_DOMAIN_INTRODUCED, RESUME, SET_TARGET, GET_FEATURE, SET_FEATURE
(xenstore-protocol.md §1.4, §3.7, §5.6, §7.3)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..errors import Busy, Invalid, NoEntry, PermissionDenied
from ..protocol.args import one_arg, strings
from ..protocol.wire import DOMID_SELF
from .access import View
from .domains import Domain, parse_domid

if TYPE_CHECKING:
    from .connection import Connection
    from .engine import Engine
    from .transactions import Transaction

__all__ = [
    "h_get_domain_path",
    "h_get_feature",
    "h_introduce",
    "h_is_domain_introduced",
    "h_release",
    "h_resume",
    "h_set_feature",
    "h_set_target",
]

OK = b"OK\0"


def _port(raw: bytes) -> int:
    if not raw.isdigit() or int(raw) <= 0 or int(raw) > 0xFFFFFFFF:
        raise Invalid("bad event channel port")
    return int(raw)


def h_introduce(
    e: Engine, conn: Connection, view: View, txn: Transaction | None, payload: bytes
) -> bytes:
    args = strings(payload)
    if len(args) < 3:
        raise Invalid("INTRODUCE takes domid, gfn and port")
    domid = parse_domid(args[0])
    port = _port(args[2])
    dom = e.domains.get(domid)
    if dom is not None:
        e.reintroduce(dom, port)
        return OK
    if not e.backend.exists(domid):
        raise NoEntry("no such domain")
    features = e.pending_features.pop(domid, e.features)
    ring = e.backend.introduce(domid, port)
    dom = Domain(domid, port, ring, e.tree.gen)
    if ring is not None:
        ring.features = features
    e.domains[domid] = dom
    if domid != e.priv_domid:
        e.watches.fire_special("@introduceDomain", domid, e.tree)
    return OK


def h_release(
    e: Engine, conn: Connection, view: View, txn: Transaction | None, payload: bytes
) -> bytes:
    domid = parse_domid(one_arg(payload))
    if domid == e.priv_domid:
        raise Invalid("cannot release the privileged domain")
    dom = e.domains.get(domid)
    if dom is None:
        raise NoEntry("domain not introduced")
    e.backend.release(dom)
    e.destroy_domain(domid)
    return OK


def h_get_domain_path(
    e: Engine, conn: Connection, view: View, txn: Transaction | None, payload: bytes
) -> bytes:
    # C 4.17 and oxenstored read this domid with atoi(): "" and "abc" mean 0. Real
    # clients and the recorded vectors depend on that, so we keep it here.
    return b"/local/domain/%d\0" % _atoi(one_arg(payload))


def _atoi(raw: bytes) -> int:
    digits = raw.lstrip(b" \t\n\v\f\r")
    sign = -1 if digits[:1] == b"-" else 1
    if digits[:1] in (b"-", b"+"):
        digits = digits[1:]
    n = 0
    for c in digits:
        if not 48 <= c <= 57:
            break
        n = n * 10 + c - 48
    value = (sign * n) & 0xFFFFFFFF
    return value - (1 << 32) if value & 0x80000000 else value


def h_is_domain_introduced(
    e: Engine, conn: Connection, view: View, txn: Transaction | None, payload: bytes
) -> bytes:
    domid = parse_domid(one_arg(payload))
    known = domid == DOMID_SELF or domid == e.priv_domid or domid in e.domains
    return b"T\0" if known else b"F\0"


def h_resume(
    e: Engine, conn: Connection, view: View, txn: Transaction | None, payload: bytes
) -> bytes:
    dom = e.domains.get(parse_domid(one_arg(payload)))
    if dom is None:
        raise NoEntry("domain not introduced")
    dom.shutdown_reported = False
    return OK


def h_set_target(
    e: Engine, conn: Connection, view: View, txn: Transaction | None, payload: bytes
) -> bytes:
    args = strings(payload)
    if len(args) != 2:
        raise Invalid("SET_TARGET takes two domids")
    domid, target = parse_domid(args[0]), parse_domid(args[1])
    dom = e.domains.get(domid)
    if dom is None or target not in e.domains:
        raise NoEntry("domain not introduced")
    dom.target = target
    if dom.conn is not None:
        dom.conn.caller.target = target
    return OK


def h_get_feature(
    e: Engine, conn: Connection, view: View, txn: Transaction | None, payload: bytes
) -> bytes:
    args = strings(payload)
    if not args:
        return b"%d\0" % conn.features
    if not conn.caller.privileged:
        raise PermissionDenied()
    domid = parse_domid(args[0])
    dom = e.domains.get(domid)
    if dom is not None and dom.conn is not None:
        return b"%d\0" % dom.conn.features
    if dom is None and not e.backend.exists(domid):
        raise NoEntry("no such domain")
    return b"%d\0" % e.pending_features.get(domid, e.features)


def h_set_feature(
    e: Engine, conn: Connection, view: View, txn: Transaction | None, payload: bytes
) -> bytes:
    args = strings(payload)
    if len(args) != 2:
        raise Invalid("SET_FEATURE takes a domid and a value")
    domid = parse_domid(args[0])
    if not args[1].isdigit():
        raise Invalid("bad feature value")
    value = int(args[1])
    if value & ~e.features:
        raise Invalid("cannot enable a feature the daemon does not offer")
    if domid in e.domains:
        raise Busy("domain already introduced")
    e.pending_features[domid] = value
    return OK
