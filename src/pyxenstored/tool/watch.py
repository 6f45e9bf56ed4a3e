"""``pyxenstore watch [-n NR] [--depth D] [--json] KEY...``: print the path of every
watch event, one per line, as xenstore-watch does.

Each KEY is watched with itself as the token (as C); the first event of each watch is
the one xenstored fires on registration, and it counts towards ``-n``. ``-n`` is read
with C's ``atoi``; ``-1`` (the default) means forever, any other negative number or 0
means no event at all. ``--depth`` (a pyxenstored extension, XS_WATCH's optional third
argument) limits how deep below KEY a change still fires.
"""

from __future__ import annotations

import argparse
import json
import sys

from ..errors import XenstoreError
from .common import Fatal, SubParsers, add_socket_flag, reason
from .connect import open_client
from .text import atoi

__all__ = ["register"]


def _watch(args: argparse.Namespace) -> int:
    with open_client(args) as xs:
        for key in args.key:
            try:
                xs.watch(key, key, depth=args.depth)
            except XenstoreError as err:
                raise Fatal(f"Unable to add watch on {key}: {reason(err)}") from err
        count = 0
        while args.number == -1 or count < args.number:
            # The client's timeout bounds single requests; waiting for events does not
            # time out (as xs_read_watch).
            event = xs.read_watch()
            if event is None:
                continue
            if args.json:
                line = json.dumps({"path": event.path, "token": event.token})
            else:
                line = event.path
            sys.stdout.write(line + "\n")
            sys.stdout.flush()
            count += 1
    return 0


def register(subparsers: SubParsers) -> None:
    """Add ``watch``."""
    p: argparse.ArgumentParser = subparsers.add_parser(
        "watch",
        help="print changes below keys as they happen",
        description="Watch each KEY and print the path of every event, one per line, "
        "until NR events have been printed (the first comes at once, from registering).",
    )
    p.set_defaults(func=_watch, parser=p)
    add_socket_flag(p)
    p.add_argument(
        "-n",
        "--number",
        metavar="NR",
        type=atoi,
        default=-1,
        help="stop after NR events (default: -1, never)",
    )
    p.add_argument(
        "--depth",
        type=int,
        default=None,
        help="only changes at most DEPTH levels below KEY (pyxenstored only)",
    )
    p.add_argument(
        "--json", action="store_true", help="print each event as a JSON object {path, token}"
    )
    p.add_argument("key", nargs="+", metavar="KEY", help="a path to watch (also the token)")
