"""The crash journal's file (``<state-dir>/journal``; the format is ``state.journal``).

Started once the daemon serves: a fresh snapshot is written (to a temporary file,
renamed over the journal), then the engine reports its committed changes
(``core.changes``) and :meth:`Journal.write_pending` appends one frame per request,
called by the transports after each request and before its reply leaves. When the file
grows past :data:`COMPACT_FACTOR` times the snapshot (and :data:`COMPACT_MIN` bytes), a
fresh snapshot replaces it. A clean shutdown removes it.

Plain ``write(2)``, no ``fsync``: a daemon crash is not a host crash, and what was
written is in the page cache for the next process to read. A host crash ends every
domain anyway, so there is nothing for a journal to bring back then.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time

from ..core.changes import Changes
from ..core.engine import Engine
from ..state.journal import changes_frame, snapshot_frame

__all__ = ["COMPACT_FACTOR", "COMPACT_MIN", "Journal", "journal_path"]

log = logging.getLogger("pyxenstored.journal")

#: compact when the journal exceeds this many times its snapshot ...
COMPACT_FACTOR = 4
#: ... and at least this many bytes
COMPACT_MIN = 1 << 20


def journal_path(state_dir: str) -> str:
    return os.path.join(state_dir, "journal")


class Journal:
    """One daemon's journal file."""

    def __init__(self, path: str, engine: Engine) -> None:
        self.path = path
        self.engine = engine
        self.changes = Changes()
        self.fd = -1
        self.size = 0
        self.snapshot_size = 0
        self.compactions = 0

    def start(self) -> None:
        """Write a fresh snapshot and report changes from now on (OSError if not)."""
        self._snapshot()
        self.engine.report_changes(self.changes)

    def _snapshot(self) -> None:
        started = time.monotonic()
        data = snapshot_frame(self.engine)
        os.makedirs(os.path.dirname(self.path) or ".", exist_ok=True)
        tmp = self.path + ".tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            _write_all(fd, data)
        except OSError:
            os.close(fd)
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        os.replace(tmp, self.path)
        if self.fd >= 0:
            os.close(self.fd)
        os.lseek(fd, 0, os.SEEK_END)
        self.fd = fd
        self.size = self.snapshot_size = len(data)
        log.debug(
            "journal: snapshot of %d bytes in %.3f s", len(data), time.monotonic() - started
        )

    def write_pending(self) -> None:
        """Append the changes of the requests answered since the last call."""
        changes = self.changes
        if not changes or self.fd < 0:
            return
        ops, meta = changes.take()
        data = changes_frame(self.engine, ops, meta)
        try:
            _write_all(self.fd, data)
        except OSError as err:
            log.error("journal: cannot write %s: %s; a fresh snapshot is tried", self.path, err)
            self._compact()
            return
        self.size += len(data)
        if self.size > max(COMPACT_MIN, COMPACT_FACTOR * self.snapshot_size):
            self._compact()

    def _compact(self) -> None:
        try:
            self._snapshot()
            self.compactions += 1
        except OSError as err:
            log.error("journal: cannot write a snapshot to %s: %s", self.path, err)

    def close(self, remove: bool) -> None:
        """Stop journaling; ``remove`` (a clean shutdown) deletes the file."""
        self.engine.report_changes(None)
        if self.fd >= 0:
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
