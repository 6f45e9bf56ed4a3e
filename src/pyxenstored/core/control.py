"""CONTROL (XS_DEBUG) commands, C xenstored's ``xenstore-control`` surface (§9.1).

The table is data: ``help`` is generated from it. A command receives the engine and its
arguments (bytes, NUL-separated in the request) and returns the reply payload.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from ..errors import Invalid
from ..protocol.args import strings
from .access import View

if TYPE_CHECKING:
    from .connection import Connection
    from .engine import Engine
    from .transactions import Transaction

__all__ = ["COMMANDS", "h_control"]

log = logging.getLogger("pyxenstored.control")

Command = Callable[["Engine", list[bytes]], bytes]


def _print(e: Engine, args: list[bytes]) -> bytes:
    if len(args) != 1:
        raise Invalid("print takes one string")
    log.warning("control print: %s", args[0].decode("utf-8", "replace"))
    return b"OK\0"


def _check(e: Engine, args: list[bytes]) -> bytes:
    problems = e.check()
    for problem in problems:
        log.error("check: %s", problem)
    return b"OK\0"


def _help(e: Engine, args: list[bytes]) -> bytes:
    lines = "".join(f"{name}\t{usage}\n" for name, (_, usage) in COMMANDS.items())
    return lines.encode("ascii") + b"\0"


#: name -> (function, usage text for help).
COMMANDS: dict[str, tuple[Command, str]] = {
    "check": (_check, ""),
    "print": (_print, "<string>"),
    "help": (_help, ""),
}


def h_control(
    e: Engine, conn: Connection, view: View, txn: Transaction | None, payload: bytes
) -> bytes:
    args = strings(payload)
    if not args:
        raise Invalid("CONTROL needs a command")
    entry = COMMANDS.get(args[0].decode("ascii", "replace"))
    if entry is None:
        raise Invalid("unknown control command")
    return entry[0](e, args[1:])
