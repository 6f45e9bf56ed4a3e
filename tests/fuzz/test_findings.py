"""Regression tests of what the fuzz targets found (issue 13), one per finding.

A finding fixed in the daemon is a plain test here; a finding reported to the owner of
the code and not yet fixed is an ``xfail(strict=True)`` reproducer, which fails as soon
as the fix lands (then drop the marker and the target's allowance for it).
"""

from __future__ import annotations

import pytest

from pyxenstored.state.journal import (
    TREE,
    JournalError,
    encode_ops,
    frame,
    replay,
    snapshot_frame,
)
from pyxenstored.store.tree import CREATE

from . import t_frames, t_journal
from .sample import new_engine


def _journal(*ops: tuple[object, ...]) -> bytes:
    return snapshot_frame(new_engine()) + frame(TREE, encode_ops(list(ops)))


@pytest.mark.parametrize(
    "op",
    [
        (CREATE, "/bad\0name", b"", ((0, 0),)),  # a NUL in a path
        (CREATE, "nobody", b"", ((0, 0),)),  # not absolute: the root's child "nobody"?
        (CREATE, "/tool/x", b"", ((206, 0),)),  # permission mode 206
    ],
)
def test_j1_a_journal_with_a_bad_path_or_permission_is_refused(op: tuple[object, ...]) -> None:
    """A frame with the right checksum but a path or permission no request can make
    must end in JournalError (the daemon starts afresh), not in a tree that breaks the
    store's invariants."""
    with pytest.raises(JournalError):
        replay(_journal(op), new_engine)


def test_j1_allowance_is_withdrawn() -> None:
    """J1 is fixed: the journal target checks every input whole again."""
    assert not t_journal.KNOWN_J1


def test_frames_the_bare_at_is_a_special_path() -> None:
    """Found by the frames target in its own checker: ``@`` alone is a legal special
    path (C accepts it for WATCH); the invariants now say so."""
    from pyxenstored.protocol.wire import Op, encode

    t_frames.one_input(b"\0" + encode(Op.WATCH, 1, 0, b"@\0tok\0"))
