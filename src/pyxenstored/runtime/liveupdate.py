"""Live update: CONTROL ``live-update`` as C xenstored serves it, and the exec across it.

The stock tool drives it: ``xenstore-control live-update [-c CMDLINE] [-F] [-t S] FILE``
sends, over one connection, CONTROL ``live-update -f FILE`` (begin a session: the file
must exist and be executable), optionally ``live-update -c CMDLINE``, then ``live-update
-s -t S [-F] [-v V]`` (start), repeated while the answer is ``BUSY``; ``-a`` aborts. A
session belongs to the connection that began it and ends with it. Answers are CONTROL
replies with a text (``OK`` or the reason, C's wording), ``EINVAL`` for bad syntax.
Without ``-v`` the stream is version 2 for a pyxenstored, else version 1 (the newest C
4.17 reads).

Start (``-s``): the new process must be able to take what is open. A pyxenstored binary
(a script that imports pyxenstored) takes open transactions, so the update goes at
once. Any other (C xenstored) cannot: as C, we wait while transactions are open (the
reply comes when they are done); after ``-t`` seconds ``-F`` goes on without them,
otherwise the answer is C's reason. Then:

1. stop reading every socket and ring and wait (at most :data:`DRAIN_SECONDS`) until
   the socket transports have written what they hold; a socket client that reads
   nothing meanwhile is disconnected (its bytes are in the event loop's buffer, which
   cannot be carried);
2. append the requester's ``OK`` to its output, so that the new process sends it;
3. write the state (``state.snapshot``) to ``<rundir>/state_dump``: nodes, connections
   with their descriptors, unread input and unwritten output, watches, transactions,
   quotas, domains with their event-channel ports;
4. make the listening socket, every socket connection and the event-channel descriptor
   inheritable, release VIRQ_DOM_EXC (the new process binds it again), and exec the
   binary with C's arguments: ``CMDLINE`` (else our own argv; for a C binary only the
   options C knows) with ``-U`` added.

If anything fails before exec, the state file is removed, reading resumes and the
requester gets the reason. ``-U`` (``--live-update``) starts from the state file: see
:func:`read_state` and ``Server``.

``<rundir>`` is ``$XENSTORED_RUNDIR``, else C's ``/var/run/xenstored``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shlex
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..core.connection import Connection
from ..errors import Invalid, ReplyLater
from ..protocol.framing import Packet
from ..protocol.numbers import atoi
from ..protocol.wire import OK, Op, encode

if TYPE_CHECKING:
    from .server import Server

__all__ = [
    "DRAIN_SECONDS",
    "LiveUpdate",
    "rundir",
    "state_file",
]

log = logging.getLogger("pyxenstored.liveupdate")

#: longest wait for socket clients to take what was written to them, before the exec
DRAIN_SECONDS = 2.0
_VERSIONS = (1, 2)


def rundir() -> str:
    """C's ``xenstore_rundir()``: ``$XENSTORED_RUNDIR`` or ``/var/run/xenstored``."""
    return os.environ.get("XENSTORED_RUNDIR") or "/var/run/xenstored"


def state_file() -> str:
    return os.path.join(rundir(), "state_dump")


def takes_transactions(binary: str) -> bool:
    """Whether ``binary`` is a pyxenstored, which restores open transactions.

    Told by its text, never by running it: a pyxenstored console script is a ``#!``
    script that imports ``pyxenstored``. (Running a C xenstored with an option it does
    not know starts a second daemon beside us.)
    """
    try:
        with open(binary, "rb") as f:
            head = f.read(4096)
    except OSError:
        return False
    return head.startswith(b"#!") and b"pyxenstored" in head


@dataclass
class Session:
    """One live-update session (C's ``lu_status``)."""

    owner: Connection
    binary: str
    cmdline: str | None = None
    force: bool = False
    timeout: float = 0.0
    version: int = 2
    started: float = 0.0
    carries_transactions: bool = False
    waiting: tuple[Connection, Packet] | None = None
    notes: list[str] = field(default_factory=list)


class LiveUpdate:
    """The ``live-update`` CONTROL command of one server (see the module docstring).

    ``probe`` says whether a binary takes open transactions (injectable for tests);
    ``execv`` replaces the process (injectable: tests stop there).
    """

    def __init__(
        self,
        server: Server,
        *,
        probe: Callable[[str], bool] = takes_transactions,
        execv: Callable[[str, list[str]], Any] = os.execv,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.server = server
        self.probe = probe
        self.execv = execv
        self.clock = clock
        self.session: Session | None = None
        self._poll: asyncio.TimerHandle | None = None

    # -- CONTROL live-update ----------------------------------------------------------------
    def command(self, engine: Any, args: list[str]) -> bytes:
        """Registered as ``engine.commands["live-update"]``: answered in :meth:`_serve`,
        which knows the connection (a session belongs to one)."""
        raise ReplyLater(lambda conn, packet: self._serve(conn, packet, args))

    def _serve(self, conn: Connection, packet: Packet, args: list[str]) -> None:
        try:
            text = self._dispatch(conn, packet, args)
        except Invalid:
            self._send(conn, encode(Op.ERROR, packet.req_id, packet.tx_id, b"EINVAL\0"))
            return
        if text is not None:
            self._answer(conn, packet, text)

    def _dispatch(self, conn: Connection, packet: Packet, args: list[str]) -> str | None:
        if not args:
            raise Invalid("live-update needs arguments")
        verb, rest = args[0], args[1:]
        if verb == "-a" and not rest:
            return self.abort(conn)
        if verb == "-c" and len(rest) == 1:
            return self.set_cmdline(conn, rest[0])
        if verb == "-f" and len(rest) == 1:
            return self.begin(conn, rest[0])
        if verb == "-s":
            force, timeout, version = False, 0, 0
            i = 0
            while i < len(rest):
                if rest[i] == "-F":
                    force = True
                elif rest[i] in ("-t", "-v") and i + 1 < len(rest):
                    value = atoi(rest[i + 1].encode("ascii", "replace"))
                    if rest[i] == "-t":
                        timeout = value
                    else:
                        version = value
                    i += 1
                else:
                    raise Invalid("live-update -s [-F] [-t <timeout>] [-v <version>]")
                i += 1
            return self.start(conn, packet, force, timeout, version)
        raise Invalid("unknown live-update sub-command")

    def begin(self, conn: Connection, binary: str) -> str:
        if not os.path.exists(binary):
            return "File not accessible."
        if not os.access(binary, os.X_OK) or os.path.isdir(binary):
            return "File not executable."
        if self.session is not None and self.session.owner.closed:
            self._end()  # a session ends with the connection that began it
        if self.session is not None:
            return "live-update session already active."
        self.session = Session(conn, os.path.abspath(binary))
        log.info("live-update: binary %s", binary)
        return "OK"

    def set_cmdline(self, conn: Connection, cmdline: str) -> str:
        session = self.session
        if session is None or session.owner is not conn:
            return "Not in live-update session."
        session.cmdline = cmdline
        return "OK"

    def abort(self, conn: Connection) -> str:
        if self.session is None:
            return "No live-update session active."
        log.info("live-update: abort")
        self._end()
        return "OK"

    def start(
        self, conn: Connection, packet: Packet, force: bool, timeout: int, version: int
    ) -> str | None:
        session = self.session
        if session is None or session.owner is not conn:
            return "Not in live-update session."
        if version and version not in _VERSIONS:
            return "Migration stream version not supported."
        if session.waiting is not None:
            return "BUSY"
        session.carries_transactions = self.probe(session.binary)
        if not version:
            # No -v (xenstore-control 4.17 never sends one): the newest stream for a
            # pyxenstored; for any other binary version 1, which every C xenstored with
            # live update reads (4.17's reads nothing newer).
            version = max(_VERSIONS) if session.carries_transactions else 1
        session.force, session.timeout, session.version = force, float(timeout), version
        session.started = self.clock()
        session.waiting = (conn, packet)
        log.info(
            "live-update: start %s (force=%s, timeout=%ss, stream version %d, %s)",
            session.binary,
            force,
            timeout,
            version,
            "open transactions kept" if session.carries_transactions else "C rules",
        )
        self._check()
        return None

    # -- waiting for transactions (C's do_lu_start) -------------------------------------------
    def _open_transactions(self) -> int:
        return sum(len(c.transactions) for c in self.server.engine.connections.values())

    def _check(self) -> None:
        self._poll = None
        session = self.session
        if session is None or session.waiting is None:
            return
        conn, packet = session.waiting
        if conn.closed:
            self._end()
            return
        if session.carries_transactions or not self._open_transactions():
            self._go(keep_transactions=True)
            return
        if self.clock() < session.started + session.timeout:
            loop = asyncio.get_running_loop()
            self._poll = loop.call_later(0.2, self._check)
            return
        if session.force:
            session.notes.append("open transactions dropped (-F)")
            self._go(keep_transactions=False)
            return
        self._answer(conn, packet, "Overlapping transactions")
        self._end()

    def _go(self, keep_transactions: bool) -> None:
        task = asyncio.get_running_loop().create_task(self._activate(keep_transactions))
        self.server.background.add(task)
        task.add_done_callback(self.server.background.discard)

    async def _activate(self, keep_transactions: bool) -> None:
        session = self.session
        if session is None or session.waiting is None:
            return
        conn, packet = session.waiting
        server = self.server
        path = state_file()
        # The OK the new process sends; taken back if we never get that far.
        ok = encode(Op.CONTROL, packet.req_id, packet.tx_id, OK)
        server.hold_input(True)
        try:
            await server.drain_sockets(DRAIN_SECONDS)
            if conn.closed:
                self._end()
                return
            conn.out.append(ok)
            conn.out_bytes += len(ok)
            data = server.save_state(
                session.version, keep_transactions, ours=session.carries_transactions
            )
            os.makedirs(os.path.dirname(path), exist_ok=True)
            tmp = path + ".tmp"
            with open(tmp, "wb") as f:
                f.write(data)
            os.replace(tmp, path)
            argv = self._argv(session)
            log.info("live-update: %d bytes of state in %s; exec %s", len(data), path, argv)
            server.prepare_exec()
            self.execv(session.binary, argv)
            raise OSError("exec returned")
        except Exception as err:  # anything before the exec: stay, and say why
            log.error("live-update failed: %s", err)
            with contextlib.suppress(OSError):
                os.unlink(path)
            if conn.out and conn.out[-1] is ok:
                conn.out.pop()
                conn.out_bytes -= len(ok)
            server.undo_exec()
            server.hold_input(False)
            if not conn.closed:
                self._answer(conn, packet, f"Error activating new binary: {err}")
            self._end()

    def _argv(self, session: Session) -> list[str]:
        config = self.server.config
        if session.cmdline is not None:
            argv = [session.binary, *shlex.split(session.cmdline)]
        elif session.carries_transactions or config.c_command_line is None:
            own = config.command_line
            argv = [session.binary, *(sys.argv[1:] if own is None else own)]
        else:
            # C xenstored refuses options it does not know: only its own go on.
            argv = [session.binary, *config.c_command_line]
        if "-U" not in argv and "--live-update" not in argv:
            argv.append("-U")
        return argv

    # -- replies ------------------------------------------------------------------------------
    def _answer(self, conn: Connection, packet: Packet, text: str) -> None:
        body = text.encode("ascii", "replace") + b"\0"
        self._send(conn, encode(Op.CONTROL, packet.req_id, packet.tx_id, body))

    def _send(self, conn: Connection, msg: bytes) -> None:
        if conn.closed:
            return
        conn.out.append(msg)
        conn.out_bytes += len(msg)
        self.server.engine.woken.add(conn)
        self.server.flush()

    def _end(self) -> None:
        if self._poll is not None:
            self._poll.cancel()
            self._poll = None
        self.session = None
