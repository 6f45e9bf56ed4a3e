"""``pyxenstore [--connect PATH] [--timeout S] VERB [options] ...``: the parser and the
entry point (console script ``pyxenstore``).

Adding a verb
-------------
A verb group is one module of this package with a function::

    def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None

that adds its subparser(s) with ``subparsers.add_parser(name, help=..., description=...)``
and sets ``func`` on each (``parser.set_defaults(func=run)``), where
``run(args: argparse.Namespace) -> int`` does the work and returns the exit status.
List the module in :data:`COMMANDS`; that is the only line to touch. A verb opens its
connection with :func:`pyxenstored.tool.connect.open_client` (or
``open_async_client``), which honours the global ``--connect``/``--timeout``.

Conventions shared by every verb (xenstore-utils' where the verb exists there):

* a usage error prints the usage and exits 1 (xenstore-utils' ``errx(1, "Usage: ...")``);
  ``-h``/``--help`` prints the help and exits 0 (a documented difference);
* a failed operation prints one line on stderr, ``pyxenstore VERB: message``, and
  exits 1; output written before the failure stays written;
* ``--json`` (read-like verbs) prints one JSON document on stdout instead of text.

The errors left over (no daemon to connect to, the connection lost, a timeout) are
reported here in one line with exit status 1; a traceback is a bug.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Callable, Sequence
from types import ModuleType
from typing import NoReturn

from ..client.values import ConnectionClosed, ProtocolError
from ..errors import XenstoreError
from . import admin, metrics, top, tree, tx, watch
from .common import Fatal
from .connect import add_options

__all__ = ["COMMANDS", "PROG", "Parser", "build_parser", "main"]

PROG = "pyxenstore"

#: The verb modules, in the order ``--help`` lists them; each has ``register(subparsers)``.
COMMANDS: list[ModuleType] = [tree, watch, tx, admin, top, metrics]


class Parser(argparse.ArgumentParser):
    """Usage errors exit 1, as xenstore-utils' ``usage()`` does (argparse's is 2)."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(1, f"{self.prog}: {message}\n")


def build_parser() -> Parser:
    """The whole command line: global options, then one subparser per verb."""
    parser = Parser(
        prog=PROG,
        description="Read, write and watch xenstore, and administer xenstored. "
        "The verbs shared with Debian's xenstore-utils (xenstore-read, -write, -ls, -rm, "
        "-chmod, -exists, -list, -watch) take the same options and print the same output "
        "with the same exit status, so scripts can switch.",
    )
    add_options(parser)
    subparsers = parser.add_subparsers(dest="verb", metavar="VERB", required=True)
    for module in COMMANDS:
        module.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one ``pyxenstore`` command line; the exit status."""
    args = build_parser().parse_args(argv)
    func: Callable[[argparse.Namespace], int] = args.func
    verb = f"{PROG} {args.verb}"
    try:
        return func(args)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader went away (``| head``): nothing more to say; silence the flush at exit.
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except TimeoutError:
        print(f"{verb}: no reply from xenstored within {args.timeout}s", file=sys.stderr)
    except ConnectionClosed as err:
        print(f"{verb}: {err}", file=sys.stderr)
    except OSError as err:
        where = args.connect or "xenstored"
        print(f"{verb}: cannot talk to {where}: {err.strerror or err}", file=sys.stderr)
    except Fatal as err:
        print(f"{verb}: {err}", file=sys.stderr)
    except (XenstoreError, ProtocolError) as err:
        print(f"{verb}: {err}", file=sys.stderr)
    return 1


def run() -> NoReturn:
    """The console script: exit with :func:`main`'s status."""
    sys.exit(main())
