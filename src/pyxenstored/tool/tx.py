"""``pyxenstore tx [--json] [--retries N] [OP...]``: several operations, one transaction.

Each OP is one argument holding an operation and its arguments, split as a shell would
(``'write /vm/1/state "running"'``); without OPs they are read from standard input, one
per line (blank lines and ``#`` comments skipped). The operations::

    read KEY            print the value (escaped as ``read`` does)
    list KEY            print the children, one per line
    exists KEY          print true or false
    getperms KEY        print the permissions (as ``getperms``)
    write KEY VALUE     set (escapes decoded as ``write`` does)
    mkdir KEY
    rm KEY
    chmod KEY MODE...   set the permissions (as ``chmod``)

The transaction commits when every operation has succeeded; if the commit meets a
conflict (EAGAIN) the whole sequence runs again, at most ``--retries`` more times with a
growing randomised pause, and only the output of the attempt that committed is
printed. A failing operation aborts the transaction: nothing is changed, its error is
printed and the exit status is 1.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from typing import Any

from ..client.sync import Transaction
from ..client.values import Perm
from ..errors import Again, XenstoreError
from .common import Fatal, SubParsers, parse_modes, reason, warn
from .connect import open_client
from .text import emit_json, json_value, sanitise, unsanitise

__all__ = ["register"]

#: operation -> (least, most) argument count (None: no limit)
_ARITY: dict[str, tuple[int, int | None]] = {
    "read": (1, 1),
    "list": (1, 1),
    "exists": (1, 1),
    "getperms": (1, 1),
    "write": (2, 2),
    "mkdir": (1, 1),
    "rm": (1, 1),
    "chmod": (1, None),
}


def parse_ops(lines: list[str]) -> list[list[str]]:
    """The operations in ``lines`` (one each), checked for name and argument count.

    Raises:
        Fatal: an unknown operation, a wrong number of arguments, bad quoting.
    """
    ops = []
    for line in lines:
        try:
            words = shlex.split(line, comments=True)
        except ValueError as err:
            raise Fatal(f"cannot parse {line!r}: {err}") from None
        if not words:
            continue
        name, rest = words[0], words[1:]
        if name not in _ARITY:
            raise Fatal(f"unknown operation {name!r} (one of {', '.join(_ARITY)})")
        least, most = _ARITY[name]
        if len(rest) < least or (most is not None and len(rest) > most):
            raise Fatal(f"wrong number of arguments in {line!r}")
        ops.append(words)
    return ops


def _apply(t: Transaction, op: list[str]) -> Any:
    """Run one operation; its result (None for the writing ones)."""
    name, args = op[0], op[1:]
    if name == "read":
        return t.read(args[0])
    if name == "list":
        return t.directory(args[0])
    if name == "exists":
        try:
            t.read(args[0])
        except XenstoreError as err:
            if isinstance(err, Again):
                raise
            return False
        return True
    if name == "getperms":
        return [str(Perm.parse(p)) for p in t.get_perms(args[0])]
    if name == "write":
        t.write(args[0], unsanitise(args[1].encode("utf-8", "surrogateescape")))
    elif name == "mkdir":
        t.mkdir(args[0])
    elif name == "rm":
        t.rm(args[0])
    elif name == "chmod":
        t.set_perms(args[0], parse_modes(args[1:]))
    return None


def _text(name: str, result: Any) -> str:
    if name == "read":
        return sanitise(result) + "\n"
    if name == "list":
        return "".join(f"{child}\n" for child in result)
    if name == "exists":
        return "true\n" if result else "false\n"
    if name == "getperms":
        return " ".join(result) + "\n"
    return ""


def _tx(args: argparse.Namespace) -> int:
    ops = parse_ops(args.ops if args.ops else sys.stdin.read().splitlines())

    def body(t: Transaction) -> list[Any]:
        results = []
        for op in ops:
            try:
                results.append(_apply(t, op))
            except Again:
                raise
            except XenstoreError as err:
                raise _OpFailed(shlex.join(op), err) from err
        return results

    with open_client(args) as xs:
        try:
            results = xs.transact(body, retries=args.retries)
        except _OpFailed as failed:
            warn(args, f"{failed.op}: {reason(failed.err)} ({failed.err.name})")
            return 1
        except Again:
            warn(args, f"the transaction met a conflict {args.retries + 1} times; gave up")
            return 1
    if args.json:
        emit_json([_json(op[0], r) for op, r in zip(ops, results, strict=True)])
    else:
        sys.stdout.write("".join(_text(op[0], r) for op, r in zip(ops, results, strict=True)))
    return 0


def _json(name: str, result: Any) -> Any:
    return json_value(result) if name == "read" else result


class _OpFailed(Exception):
    """An operation was refused: the transaction is aborted and the error reported."""

    def __init__(self, op: str, err: XenstoreError) -> None:
        super().__init__(op)
        self.op = op
        self.err = err


def register(subparsers: SubParsers) -> None:
    """Add ``tx``."""
    p: argparse.ArgumentParser = subparsers.add_parser(
        "tx",
        help="run several operations in one transaction",
        description="Run the operations OP... (or, without any, those on standard input, "
        "one per line) in one transaction, retried as a whole on a conflict. "
        "Operations: read KEY, list KEY, exists KEY, getperms KEY, write KEY VALUE, "
        "mkdir KEY, rm KEY, chmod KEY MODE....",
    )
    p.set_defaults(func=_tx, parser=p)
    p.add_argument("--retries", type=int, default=16, help="retries after a conflict (default 16)")
    p.add_argument("--json", action="store_true", help="print a JSON list of the results")
    p.add_argument(
        "ops", nargs="*", metavar="OP", help="one operation and its arguments, as one word"
    )
