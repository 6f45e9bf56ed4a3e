"""The crash journal's file (``<state-dir>/journal``; the format is ``state.journal``).

Started once the daemon serves: a fresh snapshot is written (to a temporary file,
renamed over the journal), then the engine reports its committed changes
(``core.changes``) and :meth:`Journal.write_pending` appends one frame per request,
called by the transports after each request and before its reply leaves. When the file
grows past :data:`COMPACT_FACTOR` times the snapshot (and :data:`COMPACT_MIN` bytes), a
fresh snapshot replaces it. A clean shutdown removes it. With guests' rings, every frame
also says where the rings it moved stand (``state.journal``, RING), and the ring
transport takes a request from its ring only after the frame of its answer is written.

Compaction of a large tree (:data:`FORK_NODES` nodes or more) does not stop the daemon:
a forked child (a copy-on-write image of the engine) writes the snapshot to
``journal.tmp`` while the daemon goes on appending to the journal and keeps the records
written since the fork; once the child has finished, they are appended to the new file,
which replaces the journal. Until then the old journal is whole, so a crash at any
moment recovers everything. A smaller tree is snapshotted in place (it is quick).

Plain ``write(2)``, no ``fsync``: a daemon crash is not a host crash, and what was
written is in the page cache for the next process to read. A host crash ends every
domain anyway, so there is nothing for a journal to bring back then.
"""

from __future__ import annotations

import contextlib
import logging
import mmap
import os
import signal
import time
from collections.abc import Callable

from ..core.changes import Changes
from ..core.engine import Engine
from ..state.journal import RingRecord, changes_frame, ring_frame, snapshot_frame, tree_frame

__all__ = ["COMPACT_FACTOR", "COMPACT_MIN", "Journal", "journal_path"]

log = logging.getLogger("pyxenstored.journal")

#: compact when the journal exceeds this many times its snapshot ...
COMPACT_FACTOR = 4
#: ... and at least this many bytes
COMPACT_MIN = 4 << 20
#: bytes reserved ahead of the last record
CHUNK = 1 << 20
#: trees of at least this many nodes are snapshotted by a forked child
FORK_NODES = 5000


def journal_path(state_dir: str) -> str:
    return os.path.join(state_dir, "journal")


class Journal:
    """One daemon's journal file.

    Records are stored into a shared mapping of the file (the page cache itself: what
    is stored there is the file's content for any other process, as after write(2))
    whose blocks are reserved ahead with ``posix_fallocate``, so that appending costs
    a memory copy, not a system call. Where the file system cannot reserve blocks
    (a full disk; no fallocate), records go through ``os.write`` instead.
    """

    def __init__(self, path: str, engine: Engine) -> None:
        self.path = path
        self.engine = engine
        self.changes = Changes()
        self.fd = -1
        self.size = 0
        self.snapshot_size = 0
        self.compactions = 0
        self.map: mmap.mmap | None = None
        #: the child writing a snapshot, and the records written since it was forked
        self.child = 0
        self.since_fork: list[bytes] = []
        #: bytes of the file reserved (and mapped), from 0
        self.capacity = 0
        #: the size up to which a record may be stored straight into the mapping: within
        #: the reserved room, below the compaction threshold, no compacting child
        #: (:meth:`_set_room` keeps it; 0: every record takes the general path)
        self.room = 0
        #: where the guests' rings stand that moved (``RingManager.journal_records``;
        #: True: every ring), or None without rings
        self.rings: Callable[[bool], list[RingRecord]] | None = None

    def start(self) -> None:
        """Write a fresh snapshot and report changes from now on (OSError if not)."""
        self._snapshot()
        self.engine.report_changes(self.changes)

    def resume(self, used: int, snapshot_size: int) -> None:
        """Go on with the journal a crash left, whose first ``used`` bytes were just
        replayed (a torn record after them is cut off), and report changes from now on.
        No snapshot is written: recovery costs only the replay."""
        fd = os.open(self.path, os.O_RDWR | os.O_CLOEXEC)
        try:
            os.ftruncate(fd, used)
        except OSError:
            os.close(fd)
            raise
        self.fd = fd
        self.size = used
        self.snapshot_size = snapshot_size
        self._reserve(0)
        self.engine.report_changes(self.changes)

    def _snapshot(self) -> None:
        started = time.monotonic()
        data = snapshot_frame(self.engine)
        if self.rings is not None:
            data += ring_frame(self.rings(True))
        os.makedirs(os.path.dirname(self.path) or ".", exist_ok=True)
        tmp = self.path + ".tmp"
        fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            _write_all(fd, data)
        except OSError:
            os.close(fd)
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        os.replace(tmp, self.path)
        self._unmap()
        if self.fd >= 0:
            os.close(self.fd)
        self.fd = fd
        self.size = self.snapshot_size = len(data)
        self._reserve(0)
        log.debug("journal: snapshot of %d bytes in %.3f s", len(data), time.monotonic() - started)

    def _unmap(self) -> None:
        if self.map is not None:
            self.map.close()
            self.map = None
        self.capacity = 0
        self.room = 0

    def _set_room(self) -> None:
        threshold = max(self.snapshot_size * COMPACT_FACTOR, COMPACT_MIN)
        mapped = self.map is not None and not self.child
        self.room = min(self.capacity, threshold) if mapped else 0

    def _reserve(self, need: int) -> None:
        """Room for ``need`` more bytes in the mapping (or none: plain writes)."""
        self._unmap()
        capacity = self.size + need + CHUNK
        capacity += -capacity % mmap.PAGESIZE
        try:
            os.posix_fallocate(self.fd, 0, capacity)
            self.map = mmap.mmap(self.fd, capacity)
            self.capacity = capacity
            self._set_room()
        except (OSError, ValueError, AttributeError) as err:
            log.warning("journal: cannot reserve %d bytes (%s): plain writes", capacity, err)
            self._unmap()
            with contextlib.suppress(OSError):
                os.ftruncate(self.fd, self.size)
            os.lseek(self.fd, self.size, os.SEEK_SET)

    def write_pending(self) -> None:
        """Append the changes of the requests answered since the last call, with where
        the rings they moved stand.

        Called after every request, before its reply leaves: the common case (one
        WRITE of an existing node, no ring moved) is written without the general path.
        """
        changes = self.changes
        ops = changes.ops
        if changes.domains or changes.meta or changes.engine_ops:
            self._write_general()
            return
        rings = self.rings
        if rings is not None:
            records = rings(False)
            if records:
                self._write_general(records)
                return
        if not ops:
            return
        data = tree_frame(ops)
        ops.clear()  # the tree appends to this very list
        size = self.size
        end = size + len(data)
        mapped = self.map
        if mapped is not None and end <= self.room:
            mapped[size:end] = data
            self.size = end
        elif self.fd >= 0:
            self._append(data)

    def _write_general(self, records: list[RingRecord] | None = None) -> None:
        """Append one frame of everything pending (``records``: the rings' records,
        already taken; None: take them here)."""
        changes = self.changes
        ops = changes.ops
        if changes.domains or changes.meta or changes.engine_ops:
            data = changes_frame(self.engine, changes)
            changes.clear()
        elif ops:
            data = tree_frame(ops)
            ops.clear()  # the tree appends to this very list
        else:
            data = b""
        if records is None and self.rings is not None:
            records = self.rings(False)
        if records:
            data = ring_frame(records, data)
        if data and self.fd >= 0:
            self._append(data)

    def _append(self, data: bytes) -> None:
        size = self.size
        end = size + len(data)
        try:
            if end > self.capacity and self.map is not None:
                self._reserve(len(data))
            if self.map is not None:
                self.map[size:end] = data
            else:
                _write_all(self.fd, data)
        except OSError as err:
            log.error("journal: cannot write %s: %s; a fresh snapshot is tried", self.path, err)
            self._compact()
            return
        self.size = end
        if self.child:
            self.since_fork.append(data)
            self._reap(os.WNOHANG)
        elif end > max(self.snapshot_size * COMPACT_FACTOR, COMPACT_MIN):
            self._compact()

    def _compact(self) -> None:
        if self.child:
            return
        if len(self.engine.tree.nodes) >= FORK_NODES:
            try:
                self._fork()
                return
            except OSError as err:
                log.warning("journal: cannot fork to compact (%s): compacting in place", err)
        try:
            self._snapshot()
            self.compactions += 1
        except OSError as err:
            log.error("journal: cannot write a snapshot to %s: %s", self.path, err)

    def _fork(self) -> None:
        tmp = self.path + ".tmp"
        pid = os.fork()
        if pid == 0:  # the child: write the snapshot and leave, touching nothing else
            status = 1
            try:
                data = snapshot_frame(self.engine)
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
                _write_all(fd, data)
                os.close(fd)
                status = 0
            finally:
                os._exit(status)
        self.child = pid
        self.room = 0
        self.since_fork = []
        log.debug("journal: compacting in child %d", pid)
        if self.rings is not None:
            # The child's snapshot holds no ring records: where every ring stands now
            # follows it in the new file (and is harmless in the old one).
            self._append(ring_frame(self.rings(True)))

    def _reap(self, flags: int) -> None:
        """Take the child's snapshot once it is done (``flags``: os.WNOHANG, or 0 to
        wait for it)."""
        try:
            pid, status = os.waitpid(self.child, flags)
        except ChildProcessError:
            pid, status = self.child, -1
        if not pid:
            return
        self.child = 0
        self._set_room()
        since, self.since_fork = self.since_fork, []
        tmp = self.path + ".tmp"
        if status != 0:
            log.error("journal: the compacting child failed (status %d)", status)
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            return
        try:
            fd = os.open(tmp, os.O_RDWR | os.O_CLOEXEC)
            try:
                snapshot_size = os.fstat(fd).st_size
                os.lseek(fd, 0, os.SEEK_END)
                for data in since:
                    _write_all(fd, data)
                os.replace(tmp, self.path)
            except OSError:
                os.close(fd)
                raise
        except OSError as err:
            log.error("journal: cannot finish the compaction: %s", err)
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            return
        self._unmap()
        os.close(self.fd)
        self.fd = fd
        self.size = snapshot_size + sum(len(d) for d in since)
        self.snapshot_size = snapshot_size
        self._reserve(0)
        self.compactions += 1

    def stop_compaction(self) -> None:
        """End a compacting child, if any (the journal stays whole without it)."""
        if not self.child:
            return
        with contextlib.suppress(OSError):
            os.kill(self.child, signal.SIGKILL)
        with contextlib.suppress(OSError):
            os.waitpid(self.child, 0)
        self.child = 0
        self._set_room()
        self.since_fork = []
        with contextlib.suppress(OSError):
            os.unlink(self.path + ".tmp")

    def close(self, remove: bool) -> None:
        """Stop journaling; ``remove`` (a clean shutdown) deletes the file."""
        self.engine.report_changes(None)
        self.stop_compaction()
        self._unmap()
        if self.fd >= 0:
            if not remove:
                with contextlib.suppress(OSError):
                    os.ftruncate(self.fd, self.size)
            os.close(self.fd)
            self.fd = -1
        if remove:
            with contextlib.suppress(OSError):
                os.unlink(self.path)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]
