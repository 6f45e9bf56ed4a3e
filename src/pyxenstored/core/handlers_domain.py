"""Handlers of the domain operations: INTRODUCE, RELEASE, GET_DOMAIN_PATH,
IS_DOMAIN_INTRODUCED, RESUME, SET_TARGET, GET_FEATURE, SET_FEATURE
(xenstore-protocol.md §1.4, §3.7, §5.6, §7.3). They parse the request and leave the
domain life cycle itself (introduction, release, death) to :mod:`.lifecycle`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..errors import Busy, Invalid, NoEntry, PermissionDenied
from ..protocol.args import one_arg, strings
from ..protocol.numbers import atoi
from ..protocol.wire import DOMID_SELF, OK
from .access import View
from .domains import parse_domid
from .lifecycle import introduce_domain, release_domain

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
    # The gfn (args[1]) is ignored, as C does: the page is grant reference 1.
    introduce_domain(e, domid, _port(args[2]))
    return OK


def h_release(
    e: Engine, conn: Connection, view: View, txn: Transaction | None, payload: bytes
) -> bytes:
    domid = parse_domid(one_arg(payload))
    if domid == e.priv_domid:
        raise Invalid("cannot release the privileged domain")
    if domid not in e.domains:
        raise NoEntry("domain not introduced")
    release_domain(e, domid)
    return OK


def h_get_domain_path(
    e: Engine, conn: Connection, view: View, txn: Transaction | None, payload: bytes
) -> bytes:
    # C 4.17 and oxenstored read this domid with atoi(): "" and "abc" mean 0. Real
    # clients and the recorded vectors depend on that, so we keep it here.
    return b"/local/domain/%d\0" % atoi(one_arg(payload))


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
    e.domain_changed(dom.domid)
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
    e.domain_changed(domid)
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
    if dom is not None:
        return b"%d\0" % dom.features
    if not e.backend.exists(domid):
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
    e.meta_changed()
    return OK
