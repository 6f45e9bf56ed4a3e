"""The engine: one object that owns the store and every registry, and the only door in.

``Engine.feed(conn, data)`` takes the bytes a transport received and answers every
complete request; replies and watch events are appended to the connections' ``out``
queues, and connections other than ``conn`` that received something are added to
``woken``. Nothing here performs I/O: the runtime drains the queues.

Order of output follows C xenstored: watch events caused by a request are queued before
its reply; the initial event of WATCH comes after its ``OK``.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable

from ..errors import (
    Again,
    InternalError,
    NoEntry,
    NoMemory,
    PermissionDenied,
    QuotaExceeded,
    ReplyLater,
    TooBig,
    Unsupported,
    XenstoreError,
    wire_name,
)
from ..protocol.args import one_arg
from ..protocol.framing import FramingError, Packet
from ..protocol.paths import canonicalize, parent_of
from ..protocol.perms import NONE, READ, Perms
from ..protocol.wire import DOMID_ANY, HEADER, PAYLOAD_MAX, Op, RingFeature
from ..store.node import Node
from ..store.tree import Tree
from .access import create_path
from .accounting import QuotaAccounting
from .caller import Caller
from .changes import DEVICE_ADD, DEVICE_REMOVE, TXN_END, TXN_START, Changes
from .confighooks import ConfigHooks
from .conflicts import ConflictGuard
from .connection import Connection, ConnectionKind
from .control import COMMANDS, Command
from .domains import Domain, DomainBackend, NoHypervisor
from .lifecycle import DomainLifecycle
from .optable import MUTATES, NODES, NOTID, PRIV, TABLE, Handler, Reply
from .permissions import StaleCheck
from .quota import Limits, QuotaTable
from .refusals import RefusalLog
from .transactions import COALESCE, ConflictMode, Transaction
from .watches import WatchRegistry

__all__ = ["Engine"]

log = logging.getLogger("pyxenstored.engine")

_pack = HEADER.pack
_ERROR = int(Op.ERROR)


#: Errors the refusal log counts (see core.refusals).
_NOTED = (QuotaExceeded, Again, PermissionDenied)


def _describe_request(packet: Packet) -> str:
    """``OP first-argument`` of a request, printable and short (for a log line)."""
    try:
        name = Op(packet.op).name
    except ValueError:
        name = str(packet.op)
    arg = packet.payload.split(b"\0", 1)[0][:120].decode("ascii", "backslashreplace")
    return f"{name} {arg}".rstrip()


def _error_message(req_id: int, tx_id: int, name: str) -> bytes:
    body = wire_name(name).encode("ascii") + b"\0"
    return _pack(_ERROR, req_id, tx_id, len(body)) + body


class Engine(QuotaAccounting, DomainLifecycle):
    """The xenstore database and its semantics, without I/O.

    Args:
        limits: quota values (mutable: live configuration changes them in place).
        backend: the hypervisor interface; :class:`NoHypervisor` for a Unix daemon.
        priv_domid: the privileged domain (dom0 unless a stub domain setup says otherwise).
        conflicts: ``"coalesce"`` or ``"generation"`` (see core.transactions).
        features: ring feature bits advertised to domains.
        event_queue_max: bytes of undelivered output beyond which events to an
            unprivileged connection are dropped instead of queued.
    """

    def __init__(
        self,
        limits: Limits | None = None,
        backend: DomainBackend | None = None,
        priv_domid: int = 0,
        conflicts: ConflictMode = COALESCE,
        features: int = int(
            RingFeature.RECONNECTION
            | RingFeature.ERROR
            | RingFeature.WATCHDEPTH
            | RingFeature.DOMID_ANY
        ),
        event_queue_max: int = 1 << 20,
    ) -> None:
        self.limits = limits or Limits()
        self.backend: DomainBackend = backend or NoHypervisor()
        self.priv_domid = priv_domid
        self.conflicts = conflicts
        self.features = features
        self.event_queue_max = event_queue_max
        root: Perms = ((NONE, priv_domid),)
        self.tree = Tree(root)
        self.tree.create("/tool", b"", root)
        self.tree.create("/tool/xenstored", b"", root)
        self.tree.create_special("@introduceDomain", root)
        self.tree.create_special("@releaseDomain", ((NONE, priv_domid), (READ, DOMID_ANY)))
        self.quotas = QuotaTable(self.limits)
        self.conflict_guard = ConflictGuard()
        self.refusals = RefusalLog()
        #: Told ``(domid, True)`` when a domain is introduced and ``(domid, False)`` when
        #: it is gone (live configuration keeps its statistics node), or None.
        self.on_domain: Callable[[int, bool], None] | None = None
        #: Live configuration under /tool/xenstored/ (attached by the runtime), or None.
        self.config: ConfigHooks | None = None
        self._self = Caller(priv_domid, True)
        #: CONTROL commands (the runtime may add its own).
        self.commands: dict[str, tuple[Command, str]] = dict(COMMANDS)
        self.watches = WatchRegistry(self.enqueue_event)
        self.connections: dict[int, Connection] = {}
        self.domains: dict[int, Domain] = {}
        #: domid -> generation it was first known at while it existed (see core.domains).
        self.births: dict[int, int] = {}
        #: SET_FEATURE values waiting for the domain's INTRODUCE.
        self.pending_features: dict[int, int] = {}
        self.woken: set[Connection] = set()
        self._last_internal_error = -1e9
        #: every open transaction of every connection (conflict history needs them)
        self.open_txns: dict[Transaction, None] = {}
        self._next_conn = 1
        #: Memos of canonical absolute paths: by whole one-argument payload, by raw path.
        self._paths: dict[bytes, str] = {}
        self._raw_paths: dict[bytes, str] = {}
        #: effects held back while a commit is replayed (see after())
        self._deferred: list[Callable[[], None]] | None = None
        #: Called as ``on_request(conn, packet, reply_message)`` when set (access log).
        self.on_request: Callable[[Connection, Packet, bytes], None] | None = None
        #: Requests received, by message type (types 32 and above are not counted).
        self.op_counts = [0] * 32
        #: domid -> requests of its connections that are gone (until the domain is)
        self.past_requests: dict[int, int] = {}
        self.stats: dict[str, int] = {
            "commits": 0,
            "conflicts": 0,
            "events": 0,
            "events_dropped": 0,
        }
        self.stale: StaleCheck | None = self._stale
        #: Committed changes for the crash journal (see core.changes), or None.
        self.changes: Changes | None = None
        # Any change of a limit drops the memos that depend on limits.
        self.quotas.on_change = self.limits_changed
        self.quotas.on_table_change = self.meta_changed
        self.quotas.on_device = self._device_op

    # -- connections -----------------------------------------------------------------
    def connect(
        self, caller: Caller, kind: ConnectionKind, features: int | None = None
    ) -> Connection:
        """Register a new connection (a socket client or a domain's ring)."""
        conn_id = self._next_conn
        self._next_conn += 1
        feats = self.features if features is None else features
        conn = Connection(conn_id, caller, kind, feats)
        self.connections[conn_id] = conn
        return conn

    def disconnect(self, conn: Connection) -> None:
        """Forget a connection: its watches and open transactions go (idempotent)."""
        if conn.closed:
            return
        conn.closed = True
        if conn.requests:
            # Per-domain request counts outlive the connections (statistics).
            domid = conn.caller.domid
            self.past_requests[domid] = self.past_requests.get(domid, 0) + conn.requests
        if conn.kind != "socket":
            self.domain_changed(conn.caller.domid)
        self.watches.remove_all(conn)
        self.drop_transactions(conn)
        conn.out.clear()
        conn.out_bytes = 0
        self.connections.pop(conn.id, None)
        self.woken.discard(conn)

    # -- requests --------------------------------------------------------------------
    def feed(self, conn: Connection, data: bytes) -> None:
        """Answer every request completed by ``data``.

        Raises:
            FramingError: the peer broke the framing; the caller must drop it.
        """
        handle = self.handle
        reader = conn.reader
        for packet in reader.feed(data):
            handle(conn, packet)
        if reader.error:
            raise FramingError(reader.error)

    def handle(self, conn: Connection, packet: Packet) -> None:
        """Answer one request: its events and its reply go to the output queues."""
        op, req_id, tx_id, payload = packet
        conn.requests += 1
        if op < 32:
            self.op_counts[op] += 1
        after: bytes | None = None
        try:
            spec = TABLE.get(op)
            if spec is None:
                raise Unsupported()
            handler, flags = spec
            if tx_id == 0 and not flags & PRIV and (not flags & MUTATES or conn.caller.privileged):
                # The hot path: no transaction, no privilege check, nothing to record.
                result = handler(self, conn, self.tree, None, payload)
            else:
                result = self._dispatch(conn, handler, flags, tx_id, payload)
            # One handler (WATCH) answers a pair; isinstance on the exact type is as
            # cheap as a class test, and lets the type checker follow the two shapes.
            if isinstance(result, bytes):
                reply = result
            else:
                reply, after = result
            if len(reply) > PAYLOAD_MAX:
                after = None
                raise TooBig()
            msg = _pack(op, req_id, tx_id, len(reply)) + reply
        except ReplyLater as later:
            later.resume(conn, packet)
            return
        except XenstoreError as err:
            msg = _error_message(req_id, tx_id, err.name)
            if isinstance(err, _NOTED):
                self._refused(conn, packet, err)
        except Exception:
            # A daemon bug: answer EIO, and log it (at most once a second, so that a
            # client cannot flood the log by repeating the request).
            now = time.monotonic()
            if now - self._last_internal_error >= 1.0:
                self._last_internal_error = now
                log.exception("internal error handling %r from %r", packet[:3], conn)
            msg = _error_message(req_id, tx_id, InternalError.name)
        out = conn.out
        out.append(msg)
        conn.out_bytes += len(msg)
        if after is not None:
            out.append(after)
            conn.out_bytes += len(after)
        if self.on_request is not None:
            try:
                self.on_request(conn, packet, msg)
            except Exception:  # the access log must never cost a reply
                self.on_request = None
                log.exception("access log failed; it is off until configured again")

    def _refused(self, conn: Connection, packet: Packet, err: XenstoreError) -> None:
        """Count (and log, rate-limited) a refusal: a quota's, a permission's, EAGAIN."""
        caller = conn.caller
        domid = caller.domid
        refusals = self.refusals
        if isinstance(err, QuotaExceeded):
            quota = err.quota
            refusals.note(domid, quota, lambda: self.quota_detail(domid, quota))
        elif isinstance(err, Again):
            refusals.count_again(domid)
        elif not caller.privileged:
            refusals.note(
                domid,
                "permission",
                lambda: _describe_request(packet),
                level=logging.INFO,
            )

    def _dispatch(
        self, conn: Connection, handler: Handler, flags: int, tx_id: int, payload: bytes
    ) -> Reply:
        """The general path: privilege check, transaction lookup, transaction logging."""
        caller = conn.caller
        if flags & PRIV and not caller.privileged:
            raise PermissionDenied()
        if not tx_id or flags & NOTID:
            if not flags & MUTATES or caller.privileged or not self.open_txns:
                return handler(self, conn, self.tree, None, payload)
            # An unprivileged domain changes the live tree while transactions are open:
            # remember what, to blame it if that breaks one of them.
            tree = self.tree
            changed: list[str] = []
            tree.log = changed
            try:
                return handler(self, conn, tree, None, payload)
            finally:
                tree.log = None
                self.conflict_guard.record(tree.changes, caller.domid, changed)
        txn = conn.transactions.get(tx_id)
        if txn is None:
            raise NoEntry("unknown transaction")
        try:
            if flags & NODES:
                self._check_txn_size(conn, txn, flags & MUTATES)
            result = handler(self, conn, txn.view, txn, payload)
        except (QuotaExceeded, NoMemory) as err:
            # As C: a transaction that ran into a quota while touching nodes can only
            # end in an error, so that it never commits half of what it meant to do.
            # (A count of permissions is refused before anything is touched.)
            if getattr(err, "quota", None) != "node-permissions":
                txn.failed = True
            raise
        if flags & MUTATES and tx_id in conn.transactions:
            txn.ops.append((handler, payload))
            txn.bytes += len(payload)
        return result

    def _check_txn_size(self, conn: Connection, txn: Transaction, mutates: int) -> None:
        """transaction-nodes, checked before a request runs: the nodes it looked at,
        and (our own bound, as oxenstored's maxrequests) the changes it logged."""
        caller = conn.caller
        if caller.privileged:
            return
        limit = self.quota(caller.domid, "transaction-nodes")
        if mutates and limit and len(txn.ops) >= limit:
            raise QuotaExceeded("transaction-nodes")
        # Counted as if the request touches one more node: at most `limit` nodes under
        # the <=4.21 rule, `limit - 1` under 4.22's.
        if self.limits.exceeded(txn.view.touched + 1, limit):
            raise QuotaExceeded("transaction-nodes")

    # -- helpers for handlers --------------------------------------------------------
    def canonical(self, caller: Caller, raw: bytes, allow_special: bool) -> str:
        """Canonicalise a client path for ``caller`` (see protocol.paths)."""
        if caller.privileged:
            path = self._raw_paths.get(raw)
            if path is not None:
                return path
        return self._memoised(self._raw_paths, raw, raw, caller, allow_special)

    def one_path(self, caller: Caller, payload: bytes) -> str:
        """The path of a one-argument request (READ, RM, ...), canonical, no ``@``."""
        if caller.privileged:
            path = self._paths.get(payload)
            if path is not None:
                return path
        return self._memoised(self._paths, payload, None, caller, False)

    def _memoised(
        self,
        memo: dict[bytes, str],
        key: bytes,
        raw: bytes | None,
        caller: Caller,
        allow_special: bool,
    ) -> str:
        """Canonicalise, remembering absolute paths valid under the global path-max.

        The memos (by raw path; by whole one-argument payload, whose hit also proves the
        single trailing NUL) serve every caller whose limit is the global one. They are
        bounded, and cleared when the limits change (:meth:`limits_changed`).
        """
        limit = self._path_limit(caller)
        shared = limit == self._global_path_limit()
        if shared:
            path = memo.get(key)
            if path is not None:
                return path
        if raw is None:
            raw = one_arg(key)
        path = canonicalize(raw, caller.home, allow_special, limit)
        if shared and raw[:1] == b"/":
            if len(memo) >= 8192:
                memo.clear()
            memo[key] = path
        return path

    def _global_path_limit(self) -> int:
        """The longest relative path length allowed by the global path-max (0: any)."""
        return self.limits.most(self.limits.path_max)

    def _path_limit(self, caller: Caller) -> int:
        """The same for ``caller``: as in C 4.17 the limit binds everyone, and a domain
        may have its own (override or class)."""
        if caller.privileged:
            return self._global_path_limit()
        return self.limits.most(self.quota(caller.domid, "path-max"))

    def limits_changed(self) -> None:
        """Drop what depends on the limits (call after changing ``self.limits``)."""
        self._paths.clear()
        self._raw_paths.clear()
        self.meta_changed()

    # -- the crash journal's hook ------------------------------------------------------
    def report_changes(self, changes: Changes | None) -> None:
        """Report every committed change to ``changes`` from now on (None: stop)."""
        self.changes = changes
        self.tree.sink = changes.ops if changes is not None else None

    def meta_changed(self) -> None:
        """Something engine-wide besides the tree changed (births, SET_FEATURE values,
        quota tables): the journal records the engine-wide state again."""
        changes = self.changes
        if changes is not None:
            changes.meta = True

    def engine_op(self, op: tuple[object, ...]) -> None:
        """An engine-wide change the journal records as an operation (core.changes)."""
        changes = self.changes
        if changes is not None:
            changes.engine_ops.append(op)

    def _device_op(self, added: bool, path: str) -> None:
        changes = self.changes
        if changes is not None:
            changes.engine_ops.append((DEVICE_ADD if added else DEVICE_REMOVE, path))

    def domain_changed(self, domid: int) -> None:
        """A domain changed (introduced, gone, its watches, target, shutdown state,
        ring reset): the journal records that domain again."""
        changes = self.changes
        if changes is not None:
            changes.domains.add(domid)

    # -- watches ---------------------------------------------------------------------
    def fire(self, path: str, exact: bool, extra: tuple[Perms, ...]) -> None:
        """A change at ``path`` (see WatchRegistry.fire); buffered during a commit."""
        if self._deferred is not None:
            self._deferred.append(
                lambda: self.watches.fire(path, exact, self.tree, extra, self.stale)
            )
            return
        self.watches.fire(path, exact, self.tree, extra, self.stale)

    def after(self, effect: Callable[[], None]) -> None:
        """Run ``effect`` (a consequence of a change outside the tree: watch events,
        device allowance, live configuration) now, or, while a commit is replayed, once
        it has succeeded: a commit that fails and rolls back has no effect at all."""
        if self._deferred is not None:
            self._deferred.append(effect)
        else:
            effect()

    def enqueue_event(self, conn: Connection, msg: bytes) -> None:
        """Queue a watch event, dropping it if an unprivileged reader has stopped reading.

        A privileged socket is never dropped from here: the runtime closes it when its
        transport buffer passes the configured cap.
        """
        if conn.out_bytes > self.event_queue_max and not conn.caller.privileged:
            conn.events_dropped += 1
            self.stats["events_dropped"] += 1
            return
        out = conn.out
        if out and msg[16:17] != b"@" and msg in out[-64:]:
            # As C: an event identical to one still queued on this connection adds
            # nothing (two watches with one token on a path and its ancestor, say).
            # Only the newest messages are compared, to keep this O(1).
            return
        out.append(msg)
        conn.out_bytes += len(msg)
        self.stats["events"] += 1
        self.woken.add(conn)

    # -- transactions ----------------------------------------------------------------
    def commit(self, conn: Connection, txn: Transaction) -> None:
        """Validate and apply a transaction (see core.transactions).

        Raises:
            Again: an observation no longer holds, or a request failed on replay.
            XenstoreError: a quota refused the replayed changes.
        """
        caller = conn.caller
        guard = self.conflict_guard
        if txn.failed and txn.ops:
            # A read-only transaction has nothing half-done: it may still commit.
            raise NoMemory("the transaction ran into a quota")
        if not txn.validate(self.conflicts):
            self.stats["conflicts"] += 1
            if guard.history:
                culprits = guard.blame(
                    txn.start_changes, caller.domid, txn.failures(self.conflicts)
                )
                for culprit in culprits:
                    if guard.paused(culprit):
                        self.refusals.note(
                            culprit,
                            "conflict",
                            functools.partial(self._conflict_detail, culprit),
                        )
                self._trim_history()
            if log.isEnabledFor(logging.DEBUG):
                log.debug(
                    "domain %d: EAGAIN, observations changed: %s",
                    caller.domid,
                    " ".join(txn.failures(self.conflicts)[:8]) or "(the transaction was doomed)",
                )
            raise Again()
        if not txn.ops:
            self.stats["commits"] += 1
            return
        tree = self.tree
        effects: list[Callable[[], None]] = []
        self._deferred = effects
        changed: list[str] | None = None if caller.privileged or not self.open_txns else []
        tree.log = changed
        tree.begin_journal()
        try:
            for handler, payload in txn.ops:
                handler(self, conn, tree, None, payload)
        except XenstoreError as err:
            tree.end_journal(rollback=True)
            self.stats["conflicts"] += 1
            if err.name in ("ENOSPC", "ENOMEM"):
                raise
            log.debug("domain %d: EAGAIN, a request failed on replay: %s", caller.domid, err)
            raise Again() from None
        finally:
            self._deferred = None
            tree.log = None
        tree.end_journal(rollback=False)
        self.stats["commits"] += 1
        if changed:
            guard.record(tree.changes, caller.domid, changed)
        if guard.history:
            self._trim_history()
        for effect in effects:
            effect()

    def _conflict_detail(self, domid: int) -> str:
        guard = self.conflict_guard
        return (
            f"its changes failed {guard.blamed.get(domid, 0)} transactions of other domains; "
            f"its requests wait for credit (limit {guard.burst:g} conflicts: "
            "conflict/burst-limit; credit returns every conflict/replenish-seconds)"
        )

    def _trim_history(self) -> None:
        open_txns = self.open_txns
        oldest = min(t.start_changes for t in open_txns) if open_txns else None
        self.conflict_guard.trim(oldest)

    # -- the open transactions of every connection ----------------------------------------
    def transaction_started(self, conn: Connection, txn: Transaction) -> None:
        conn.transactions[txn.id] = txn
        self.open_txns[txn] = None
        if conn.kind != "socket" and self.changes is not None:
            # A guest's: restored (doomed) after a crash.
            self.changes.engine_ops.append((TXN_START, conn.caller.domid, txn.id))

    def transaction_ended(self, conn: Connection, txn: Transaction) -> None:
        conn.transactions.pop(txn.id, None)
        self.open_txns.pop(txn, None)
        if conn.kind != "socket" and self.changes is not None:
            self.changes.engine_ops.append((TXN_END, conn.caller.domid, txn.id))
        if not self.open_txns and self.conflict_guard.history:
            self.conflict_guard.trim(None)

    def drop_transactions(self, conn: Connection) -> None:
        """End every transaction of ``conn`` without committing (idempotent)."""
        for txn in list(conn.transactions.values()):
            self.transaction_ended(conn, txn)

    def removed(self, path: str, node: Node, removed: list[tuple[str, Node]]) -> None:
        """``path`` (formerly ``node``) and its subtree left the live tree: fire the
        watches as C does (descendants exactly, deepest first, then the root with its
        ancestors) and drop any backend-device allowance they carried."""
        perms_of = {p: n.perms for p, n in removed}
        quotas = self.quotas
        for p, n in removed[:-1]:
            self.fire(p, True, (n.perms, perms_of[parent_of(p)]))
        self.fire(path, False, (node.perms,))
        if quotas.device_paths:
            gone = [p for p, _ in removed if p in quotas.device_paths]
            if gone:
                self.after(lambda: quotas.devices_removed(gone))

    def system_write(self, path: str, value: bytes) -> None:
        """Write a node as the daemon itself (privileged, watches fire)."""
        tree = self.tree
        if path in tree.nodes:
            tree.set_value(path, value)
        else:
            create_path(self._self, tree, path, value, None, -1)
        self.fire(path, False, ())
