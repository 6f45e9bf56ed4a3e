"""CONTROL (XS_DEBUG) commands: C xenstored's ``xenstore-control`` surface (§9.1).

The table is data: ``help`` is generated from it, and the runtime may add commands that
need I/O (``memreport FILE``) to ``Engine.commands``. A command receives the engine and
its arguments (the NUL-separated strings after the command name) and returns the reply
payload. Settings change through the live configuration (``Engine.config``), so CONTROL,
GET/SET_QUOTA and the nodes under ``/tool/xenstored/`` always agree.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from ..errors import Invalid, NoEntry
from ..protocol.args import strings
from ..protocol.wire import OK
from .access import View
from .domains import parse_domid
from .quota import HARD_QUOTA_NAMES, QUOTA, QUOTA_NAMES

if TYPE_CHECKING:
    from .confighooks import ConfigHooks
    from .connection import Connection
    from .engine import Engine
    from .transactions import Transaction

__all__ = ["COMMANDS", "Command", "h_control"]

log = logging.getLogger("pyxenstored.control")

Command = Callable[["Engine", list[str]], bytes]


def _text(lines: list[str]) -> bytes:
    return "".join(line + "\n" for line in lines).encode("ascii") + b"\0"


def _attached_config(e: Engine) -> ConfigHooks:
    """The live configuration, which the log commands act through."""
    if e.config is None:
        raise Invalid("live configuration is not attached")
    return e.config


def _print(e: Engine, args: list[str]) -> bytes:
    if len(args) != 1:
        raise Invalid("print takes one string")
    log.warning("control print: %s", args[0])
    return OK


def _check(e: Engine, args: list[str]) -> bytes:
    for problem in e.check():
        log.error("check: %s", problem)
    return OK


def _log(e: Engine, args: list[str]) -> bytes:
    config = _attached_config(e)
    if not args:
        state = config.read("log/access")
        return _text([f"io: {state}", f"level: {config.read('log/level')}"])
    if len(args) != 1:
        raise Invalid("log takes one switch")
    word = args[0]
    if word in ("on", "+io"):
        config.write("log/access", "on")
    elif word in ("off", "-io"):
        config.write("log/access", "off")
    else:
        raise Invalid(f"unknown log switch {word!r} (on, off, +io, -io)")
    return OK


def _logfile(e: Engine, args: list[str]) -> bytes:
    config = _attached_config(e)
    if len(args) != 1 or not args[0]:
        raise Invalid("logfile takes a file name")
    config.write("log/access-file", args[0])
    return OK


def _quota_table(e: Engine, soft: bool) -> bytes:
    names = ("soft-memory",) if soft else HARD_QUOTA_NAMES
    title = "Soft quota settings:" if soft else "Quota settings:"
    return _text([title] + [f"{n:<17}: {e.limits.value(n):>8} {QUOTA[n].c_help}" for n in names])


def _quota_set(e: Engine, args: list[str], soft: bool) -> bytes:
    if len(args) != 3:
        raise Invalid("quota set takes a name and a value")
    name = ("soft-" + args[1]) if soft else args[1]
    if name not in QUOTA_NAMES or (not soft and name == "soft-memory"):
        raise Invalid(f"unknown quota {args[1]!r}")
    if not args[2].isdigit() or int(args[2]) < 1:
        raise Invalid("quota values are integers of at least 1")
    e.set_quota(None, name, int(args[2]))
    return OK


def _quota(e: Engine, args: list[str]) -> bytes:
    if not args:
        return _quota_table(e, False)
    if args[0] == "set":
        return _quota_set(e, args, False)
    if len(args) != 1:
        raise Invalid("quota [set <name> <val>|<domid>]")
    domid = parse_domid(args[0].encode("ascii", "replace"))
    if domid not in e.domains and not e.backend.exists(domid):
        raise NoEntry("no such domain")
    usage = e.usage(domid)
    lines = [f"Domain {domid}:"]
    for name in QUOTA_NAMES:
        if name in usage:
            lines.append(f"{name:<17}: {usage[name]:>8} / {e.quota(domid, name)}")
    return _text(lines)


def _quota_soft(e: Engine, args: list[str]) -> bytes:
    if not args:
        return _quota_table(e, True)
    if args[0] == "set":
        return _quota_set(e, args, True)
    raise Invalid("quota-soft [set <name> <val>]")


def _memreport(e: Engine, args: list[str]) -> bytes:
    if args:
        raise Invalid("memreport FILE needs the runtime")
    return _text(e.memory_report())


def _help(e: Engine, args: list[str]) -> bytes:
    return _text([f"{name}\t{usage}" for name, (_, usage) in e.commands.items()])


#: name -> (function, usage text for help).
COMMANDS: dict[str, tuple[Command, str]] = {
    "check": (_check, ""),
    "log": (_log, "[on|off|+io|-io]"),
    "logfile": (_logfile, "<file>"),
    "memreport": (_memreport, "[<file>]"),
    "print": (_print, "<string>"),
    "quota": (_quota, "[set <name> <val>|<domid>]"),
    "quota-soft": (_quota_soft, "[set <name> <val>]"),
    "help": (_help, ""),
}


def h_control(
    e: Engine, conn: Connection, view: View, txn: Transaction | None, payload: bytes
) -> bytes:
    args = [a.decode("ascii", "replace") for a in strings(payload)]
    if not args:
        raise Invalid("CONTROL needs a command")
    entry = e.commands.get(args[0])
    if entry is None:
        raise Invalid("unknown control command")
    return entry[0](e, args[1:])
