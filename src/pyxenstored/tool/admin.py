"""The administration verbs: ``quota`` and ``control``.

``pyxenstore control CMD [ARG...]`` sends XS_CONTROL as ``xenstore-control`` does and
keeps its exit statuses: 2 for a missing command, 1 when xenstored cannot be reached,
3 when the command fails (for EINVAL, the daemon's ``help`` list is printed to stderr);
a non-empty reply is printed with a newline. ``live-update``, which xenstore-control
drives as a multi-step conversation, is sent as one plain command here.

``pyxenstore quota`` lists the quotas (XS_GET_QUOTA; pyxenstored and C xenstored from
Xen 4.20), ``quota NAME`` prints one, ``quota NAME VALUE`` sets it; ``-d DOMID`` acts
on one domain's own value.
"""

from __future__ import annotations

import argparse
import sys

from ..errors import XenstoreError
from .common import SubParsers, add_socket_flag, reason, warn
from .connect import contact, open_client
from .text import emit_json, json_value

__all__ = ["register"]


def _control(args: argparse.Namespace) -> int:
    if args.command is None:
        print(f"Usage:\n{args.parser.prog} <command> [<arg>...]", file=sys.stderr)
        return 2
    xs = contact(args)
    if xs is None:
        return 1
    with xs:
        try:
            reply = xs.control(args.command, *args.args)
        except XenstoreError as err:
            if err.name == "EINVAL":
                try:
                    commands = xs.control("help")
                except XenstoreError:
                    warn(args, "error when executing command")
                else:
                    print(
                        "Command not supported. Valid commands are:\n"
                        + commands.decode("utf-8", "replace"),
                        file=sys.stderr,
                    )
            else:
                warn(args, f"error {err.name} when trying to execute command")
            return 3
    text = reply.split(b"\0", 1)[0]  # C prints the reply as a C string
    if args.json:
        emit_json(json_value(text))
    elif text:
        sys.stdout.flush()
        sys.stdout.buffer.write(text + b"\n")
    return 0


def _quota(args: argparse.Namespace) -> int:
    with open_client(args) as xs:
        try:
            if args.value is not None:
                xs.set_quota(args.name, args.value, args.domid)
                return 0
            if args.name is not None:
                value = xs.get_quota(args.name, args.domid)
                if args.json:
                    emit_json({args.name: value})
                else:
                    print(value)
                return 0
            names = xs.get_quota()
            values = {name: xs.get_quota(name, args.domid) for name in names}
        except XenstoreError as err:
            warn(args, f"{reason(err)} ({err.name})")
            return 1
    if args.json:
        emit_json(values)
    else:
        for name, value in values.items():
            print(f"{name} {value}")
    return 0


def register(subparsers: SubParsers) -> None:
    """Add ``quota`` and ``control``."""
    p: argparse.ArgumentParser = subparsers.add_parser(
        "quota",
        help="show or set xenstored's quotas",
        description="Without NAME, print every quota as 'NAME VALUE' lines; with NAME, "
        "print its value; with NAME and VALUE, set it. -d acts on one domain's own value.",
    )
    p.set_defaults(func=_quota, parser=p)
    p.add_argument("-d", "--domid", type=int, default=None, help="a domain's own value")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("name", nargs="?", metavar="NAME", help="a quota (nodes, watches, ...)")
    p.add_argument("value", nargs="?", type=int, metavar="VALUE", help="its new value")

    p = subparsers.add_parser(
        "control",
        help="send a command to xenstored (as xenstore-control)",
        description="Send CMD with its ARGs as one XS_CONTROL request and print the "
        "reply. 'help' lists what the daemon understands. Exit status as "
        "xenstore-control: 2 no command, 1 no daemon, 3 the command failed.",
    )
    p.set_defaults(func=_control, parser=p)
    add_socket_flag(p)
    p.add_argument("--json", action="store_true", help="print the reply as a JSON string")
    p.add_argument("command", nargs="?", metavar="CMD", help="the command (try help)")
    p.add_argument("args", nargs=argparse.REMAINDER, metavar="ARG", help="its arguments")
