"""Handlers of the tree operations: READ, WRITE, MKDIR, RM, DIRECTORY, DIRECTORY_PART,
GET_PERMS, SET_PERMS (xenstore-protocol.md §1.4, §3.4).

Each handler takes the engine, the connection, the view (the live tree or a transaction's
view), the transaction (or None) and the raw payload, and returns the reply payload. It
raises :class:`~pyxenstored.errors.XenstoreError` to refuse. Handlers never write to a
connection: watch events go through ``engine.fire`` (which does nothing for a
transaction view: events of a transaction are produced when its commit is replayed).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..errors import Invalid, NoEntry, NotPermitted, PermissionDenied, QuotaExceeded
from ..protocol.args import one_arg, split_write, strings
from ..protocol.numbers import strtoul
from ..protocol.paths import parent_of
from ..protocol.perms import READ, WRITE, format_perms, parse_perms
from ..protocol.wire import OK, PAYLOAD_MAX
from ..store.node import CHILDREN, EXISTS, PERMS, VALUE
from .access import View, create_path, lookup, missing_error
from .confighooks import CONFIG_PREFIX, CONFIG_ROOTS
from .permissions import OWNER, access

if TYPE_CHECKING:
    from .connection import Connection
    from .engine import Engine
    from .transactions import Transaction

__all__ = [
    "h_directory",
    "h_directory_part",
    "h_get_perms",
    "h_mkdir",
    "h_read",
    "h_rm",
    "h_set_perms",
    "h_write",
]


def h_read(
    e: Engine, conn: Connection, view: View, txn: Transaction | None, payload: bytes
) -> bytes:
    caller = conn.caller
    path = e.one_path(caller, payload)
    if caller.privileged:
        node = view.get(path, VALUE | PERMS)
        if node is None:
            raise NoEntry()
        return node.value
    # Permission first: a transaction must not depend on (and learn through EAGAIN
    # about) a value it may not read.
    node = view.get(path, PERMS)
    if node is None:
        raise missing_error(caller, view, path, READ, e.stale)
    if not access(caller, node.perms, node, e.stale) & READ:
        raise PermissionDenied()
    view.get(path, VALUE)
    return node.value


def _check_size(e: Engine, conn: Connection, size: int) -> None:
    caller = conn.caller
    if not caller.privileged and e.limits.exceeded(size, e.quota(caller.domid, "node-size")):
        raise QuotaExceeded("node-size")


def h_write(
    e: Engine, conn: Connection, view: View, txn: Transaction | None, payload: bytes
) -> bytes:
    caller = conn.caller
    raw, value = split_write(payload)
    path = e.canonical(caller, raw, False)
    config = e.config if path.startswith(CONFIG_PREFIX) else None
    if config is not None:
        config.check_write(caller, path, value)
    # Overwriting observes the old value: a concurrent write of different bytes to the
    # same node is a write-write conflict (first committer wins), as the historic
    # test suite and C expect; a rewrite of the same bytes still coalesces. The value is
    # observed only once the caller may write the node.
    node = view.get(path, PERMS if not caller.privileged else PERMS | VALUE)
    if node is not None:
        if not caller.privileged:
            if not access(caller, node.perms, node, e.stale) & WRITE:
                raise PermissionDenied()
            view.get(path, VALUE)
            _check_size(e, conn, node.size() - len(node.value) + len(value))
            e.check_memory(conn, len(value) - len(node.value))
        view.set_value(path, value)
        created = None
    else:
        if not caller.privileged:
            e.check_memory(conn, len(path) + len(value))
        created = create_path(
            caller, view, path, value, e.stale, e.node_allowance(caller), e.size_check(caller)
        )
    if view.live:
        if created is not None and caller.privileged:
            e.created(created)
        e.fire(path, False, ())
        if config is not None:
            e.after(lambda: config.written(path, value))
    return OK


def h_mkdir(
    e: Engine, conn: Connection, view: View, txn: Transaction | None, payload: bytes
) -> bytes:
    caller = conn.caller
    path = e.one_path(caller, payload)
    node = view.get(path, PERMS)
    if node is not None:
        if not caller.privileged and not access(caller, node.perms, node, e.stale) & WRITE:
            raise PermissionDenied()
        return OK
    config = e.config if path.startswith(CONFIG_PREFIX) else None
    if config is not None:
        config.check_mkdir(caller, path)
    created = create_path(
        caller, view, path, b"", e.stale, e.node_allowance(caller), e.size_check(caller)
    )
    if view.live:
        if caller.privileged:
            e.created(created)
        e.fire(path, False, ())
        if config is not None:
            e.after(lambda: config.written(path, b""))
    return OK


def h_rm(e: Engine, conn: Connection, view: View, txn: Transaction | None, payload: bytes) -> bytes:
    caller = conn.caller
    path = e.one_path(caller, payload)
    node = view.get(path, PERMS)
    if path == "/":
        # Permission first, as C: a guest that may not write / learns nothing more.
        if (
            not caller.privileged
            and node is not None
            and not access(caller, node.perms, node, e.stale) & WRITE
        ):
            raise PermissionDenied()
        raise Invalid("cannot remove the root")
    if node is None:
        err = missing_error(caller, view, path, WRITE, e.stale)
        if isinstance(err, NoEntry) and view.get(parent_of(path), EXISTS) is not None:
            return OK
        raise err
    if not caller.privileged and not access(caller, node.perms, node, e.stale) & WRITE:
        raise PermissionDenied()
    config = e.config
    if config is not None:
        if path in CONFIG_ROOTS:
            raise PermissionDenied("live configuration lives below")
        if path.startswith(CONFIG_PREFIX):
            reset = config.check_rm(caller, path)
            if reset is not None:
                # A setting is not removed: it returns to its default.
                view.set_value(path, reset)
                if view.live:
                    e.fire(path, False, ())
                    hooks = config
                    e.after(lambda: hooks.written(path, reset))
                return OK
        else:
            config = None
    removed = view.remove(path)
    if view.live:
        e.removed(path, node, removed)
        if config is not None:
            gone = [p for p, _ in removed]
            e.after(lambda: config.removed(gone))
    return OK


def h_directory(
    e: Engine, conn: Connection, view: View, txn: Transaction | None, payload: bytes
) -> bytes:
    caller = conn.caller
    path = e.one_path(caller, payload)
    return lookup(caller, view, path, READ, CHILDREN, e.stale).listing()


def h_directory_part(
    e: Engine, conn: Connection, view: View, txn: Transaction | None, payload: bytes
) -> bytes:
    caller = conn.caller
    args = strings(payload)
    if len(args) != 2:
        raise Invalid("DIRECTORY_PART takes a path and an offset")
    path = e.canonical(caller, args[0], False)
    node = lookup(caller, view, path, READ, CHILDREN, e.stale)
    offset = strtoul(args[1])
    gen = b"%d\0" % node.gen
    listing = node.listing()
    if offset >= len(listing):
        return gen + b"\0"
    room = PAYLOAD_MAX - len(gen) - 1
    chunk = listing[offset:]
    if len(chunk) <= room:
        return gen + chunk + b"\0"
    cut = chunk.rfind(b"\0", 0, room) + 1
    return gen + chunk[:cut]


def h_get_perms(
    e: Engine, conn: Connection, view: View, txn: Transaction | None, payload: bytes
) -> bytes:
    caller = conn.caller
    path = e.canonical(caller, one_arg(payload), True)
    return format_perms(lookup(caller, view, path, READ, PERMS, e.stale).perms)


def h_set_perms(
    e: Engine, conn: Connection, view: View, txn: Transaction | None, payload: bytes
) -> bytes:
    caller = conn.caller
    args = strings(payload)
    if len(args) < 2:
        raise Invalid("SET_PERMS needs a path and at least one permission")
    if not caller.privileged and e.limits.exceeded(
        len(args) - 1, e.quota(caller.domid, "node-permissions")
    ):
        raise QuotaExceeded("node-permissions")
    perms = parse_perms(args[1:])
    path = e.canonical(caller, args[0], True)
    if e.config is not None and path.startswith(CONFIG_PREFIX):
        e.config.check_set_perms(caller, path)
    node = lookup(caller, view, path, WRITE, PERMS, e.stale)
    if not caller.privileged and not access(caller, node.perms, node, e.stale) & OWNER:
        raise PermissionDenied()
    if not caller.privileged:
        if perms[0][1] != node.perms[0][1]:
            raise NotPermitted("only the privileged domain may change the owner")
        # The node is rewritten with its new permission list: node-size applies.
        _check_size(e, conn, node.size() + 8 * (len(perms) - len(node.perms)))
    if not e.note_domains(perms):
        raise NoEntry("owner domain does not exist")
    old = node.perms
    view.set_perms(path, perms)
    if view.live:
        if path[:1] == "@":
            pass  # special nodes have no watchers of their own path changes
        else:
            e.fire(path, False, (old,))
    return OK
