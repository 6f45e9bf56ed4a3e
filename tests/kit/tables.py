"""Scenario tables: rows run in order against one Kit (ocaml-xenstore's ``run store [...]``
rows, with event rows and named connections added).

* ``(conn, tx, op, payload, expect)``: send one request as :meth:`Kit.call` does.
  ``conn`` is a connection name (see :mod:`kit.engine`), ``payload`` bytes or a str with
  ``|`` for NUL. ``expect`` is bytes (the reply payload; the reply type must equal the
  request type), a str (the error name of an ``XS_ERROR`` reply) or :data:`ANY`.
* ``events(conn, ("path", "token"), ...)``: the watch events that connection received
  since the last such row, in order, exactly.
* ``events_unordered(conn, ...)``: the same, in any order (several watches of one
  connection matching one change: C delivers them in registration order).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .engine import Kit, op_name, wire

__all__ = ["ANY", "Events", "Row", "events", "events_unordered", "run", "run_table"]


class _Any:
    def __repr__(self) -> str:
        return "ANY"


#: Matches any reply (success or error).
ANY: Any = _Any()


@dataclass
class Events:
    """A table row: the events ``conn`` received since the previous check."""

    conn: str
    expected: list[tuple[str, str]]
    ordered: bool = True


def events(conn: str, *expected: tuple[str, str]) -> Events:
    return Events(conn, list(expected))


def events_unordered(conn: str, *expected: tuple[str, str]) -> Events:
    return Events(conn, list(expected), ordered=False)


#: One row of a table (see the module doc).
Row = tuple[str, int, int, "bytes | str", Any] | Events


def run(kit: Kit, rows: Sequence[Any]) -> None:
    """Run ``rows`` (each a :data:`Row`) in order against ``kit``; the first row that does
    not match fails. Typed ``Any``: a table's list literal mixes tuples and Events rows."""
    for n, row in enumerate(rows):
        if isinstance(row, Events):
            seen = kit.take_events(row.conn)
            want = row.expected
            if not row.ordered:
                seen, want = sorted(seen), sorted(want)
            assert seen == want, f"row {n}: events of {row.conn}: {seen} != {want}"
            continue
        name, tx, op, payload, expect = row
        got = kit.call(name, op, payload, tx)
        if expect is ANY:
            continue
        assert got == expect, (
            f"row {n}: {name} tx={tx} {op_name(op)} {wire(payload)!r}: "
            f"got {got!r}, expected {expect!r}"
        )


def run_table(rows: Sequence[Any], **engine_kw: Any) -> Kit:
    """Run ``rows`` against a fresh Engine (``engine_kw`` its options); return the kit."""
    kit = Kit(**engine_kw)
    run(kit, rows)
    return kit
