"""Handlers of per-connection state: WATCH, UNWATCH, RESET_WATCHES,
TRANSACTION_START and TRANSACTION_END (xenstore-protocol.md §4.1, §4.7, §5.1)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..errors import Busy, Exists, Invalid, NoEntry, QuotaExceeded
from ..protocol.args import strings
from ..protocol.wire import OK, RingFeature
from .access import View
from .transactions import Transaction
from .watches import Watch, event_message

if TYPE_CHECKING:
    from .connection import Connection
    from .engine import Engine

__all__ = [
    "h_reset_watches",
    "h_transaction_end",
    "h_transaction_start",
    "h_unwatch",
    "h_watch",
]


def h_watch(
    e: Engine, conn: Connection, view: View, txn: Transaction | None, payload: bytes
) -> bytes | tuple[bytes, bytes]:
    args = strings(payload)
    depth = -1
    if len(args) == 3 and conn.features & RingFeature.WATCHDEPTH:
        text = args[2]
        if not text.isdigit():
            raise Invalid("bad watch depth")
        depth = int(text)
    elif len(args) != 2:
        raise Invalid("WATCH takes a path and a token")
    raw, token = args[0], args[1]
    caller = conn.caller
    path = e.canonical(caller, raw, True)
    if (path, token) in conn.watches:
        raise Exists()
    if not caller.privileged:
        limits = e.limits
        if limits.exceeded_before_adding(len(conn.watches), e.quota(caller.domid, "watches")):
            raise QuotaExceeded("watches", limits.watch_error)
    relative = raw[:1] not in (b"/", b"@")
    e.watches.add(Watch(conn, path, token, len(caller.home) + 1 if relative else 0, depth))
    if conn.kind != "socket":
        e.domain_changed(conn.caller.domid)
    initial = event_message(raw.decode("ascii"), token)
    return (OK, initial) if initial is not None else OK


def h_unwatch(
    e: Engine, conn: Connection, view: View, txn: Transaction | None, payload: bytes
) -> bytes:
    args = strings(payload)
    if len(args) != 2:
        raise Invalid("UNWATCH takes a path and a token")
    path = e.canonical(conn.caller, args[0], True)
    watch = conn.watches.get((path, args[1]))
    if watch is None:
        raise NoEntry()
    e.watches.remove(watch)
    if conn.kind != "socket":
        e.domain_changed(conn.caller.domid)
    return OK


def h_reset_watches(
    e: Engine, conn: Connection, view: View, txn: Transaction | None, payload: bytes
) -> bytes:
    e.watches.remove_all(conn)
    e.drop_transactions(conn)
    if conn.kind != "socket":
        e.domain_changed(conn.caller.domid)
    return OK


def h_transaction_start(
    e: Engine, conn: Connection, view: View, txn: Transaction | None, payload: bytes
) -> bytes:
    if txn is not None:
        raise Busy("nested transaction")
    caller = conn.caller
    if not caller.privileged:
        limit = e.quota(caller.domid, "transactions")
        if e.limits.exceeded_before_adding(len(conn.transactions), limit):
            raise QuotaExceeded("transactions")
    txid = conn.next_txid
    while txid == 0 or txid in conn.transactions:
        txid = (txid + 1) & 0xFFFFFFFF
    conn.next_txid = (txid + 1) & 0xFFFFFFFF
    e.transaction_started(conn, Transaction(txid, e.tree, e.conflicts))
    return b"%d\0" % txid


def h_transaction_end(
    e: Engine, conn: Connection, view: View, txn: Transaction | None, payload: bytes
) -> bytes:
    if payload not in (b"T\0", b"F\0"):
        raise Invalid("TRANSACTION_END takes T or F")
    if txn is None:
        raise NoEntry("not in a transaction")
    try:
        if payload == b"T\0":
            e.commit(conn, txn)
    finally:
        # The id is gone whatever the outcome (xenstore.txt); the transaction stays
        # registered during its commit so that a conflict can still be blamed.
        e.transaction_ended(conn, txn)
    return OK
