"""The tree verbs: ``read write rm mkdir exists list ls chmod getperms``.

Where xenstore-utils (Xen 4.17) has the verb, the options, the output bytes and the exit
status are its own: ``read``/``write`` escape and unescape values as ``sanitise_value``
does (``-R``: raw), several keys are handled in one transaction as C does (``read``
and ``write`` when given more than one, ``rm exists list chmod`` always), retried on
EAGAIN with the output of the retried attempt discarded; ``ls`` lays out its lines as
``xenstore-ls`` (80 columns, or the terminal's width less 2). ``mkdir`` and
``getperms`` are not in Debian's xenstore-utils and follow the same conventions.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from typing import Any

from ..client.sync import Client
from ..client.values import Perm
from ..errors import XenstoreError
from ..protocol.wire import Op
from .common import (
    Fatal,
    Output,
    SubParsers,
    add_socket_flag,
    parse_modes,
    reason,
    run_transaction,
    warn,
)
from .connect import open_client
from .text import emit_json, json_value, sanitise, unsanitise

__all__ = ["register"]


def _b(text: str) -> bytes:
    """A command-line argument as the bytes C saw."""
    return os.fsencode(text)


def _name(raw: str) -> bytes:
    """A name from a directory listing as the bytes on the wire."""
    return raw.encode("utf-8", "surrogateescape")


def _perm_texts(wire: list[str]) -> list[str]:
    """Permissions as libxenstore prints them (``xs_perm_to_string``: ``%i`` of the id)."""
    return [str(Perm.parse(p)) for p in wire]


# -- read ---------------------------------------------------------------------------------
def _read(args: argparse.Namespace) -> int:
    keys: list[str] = args.key
    found: dict[str, Any] = {}

    def body(tx: int, out: Output) -> int:
        found.clear()
        for key in keys:
            try:
                value = xs.read(key, tx=tx)
            except XenstoreError:
                warn(args, f"couldn't read path {key}")
                return 1
            found[key] = json_value(value)
            if args.prefix:
                out.add(_b(key) + b": ")
            out.add(value if args.raw else sanitise(value).encode("ascii") + b"\n")
        return 0

    with open_client(args) as xs:
        if args.json:
            status = run_transaction(args, xs, len(keys) > 1, lambda tx, out: body(tx, Output()))
            if status == 0:
                emit_json(found)
            return status
        return run_transaction(args, xs, len(keys) > 1, body)


# -- write --------------------------------------------------------------------------------
def _write(args: argparse.Namespace) -> int:
    words: list[str] = args.pairs
    if not words or len(words) % 2:
        args.parser.error("expected KEY VALUE pairs")
    pairs = list(zip(words[::2], words[1::2], strict=True))

    def body(tx: int, out: Output) -> int:
        for key, text in pairs:
            value = _b(text) if args.raw else unsanitise(_b(text))
            try:
                xs.write(key, value, tx=tx)
            except XenstoreError:
                warn(args, f"could not write path {key}")
                return 1
        return 0

    with open_client(args) as xs:
        return run_transaction(args, xs, len(pairs) > 1, body)


# -- rm -----------------------------------------------------------------------------------
def _rm(args: argparse.Namespace) -> int:
    def remove(path: str, tx: int) -> bool:
        try:
            xs.rm(path, tx=tx)
        except XenstoreError:
            warn(args, f"could not remove path {path}")
            return False
        return True

    def tidy(path: str, tx: int) -> bool:
        """Remove ``path``, then each parent left with no value and no children."""
        while True:
            if not remove(path, tx):
                return False
            cut = path.rfind("/")
            if cut < 0:
                return True
            path = path[:cut]
            try:
                if xs.read(path, tx=tx) != b"" or xs.directory(path, tx=tx):
                    return True
            except XenstoreError:
                return True

    def body(tx: int, out: Output) -> int:
        for key in args.key:
            if not (tidy(key, tx) if args.tidy else remove(key, tx)):
                return 1
        return 0

    with open_client(args) as xs:
        return run_transaction(args, xs, True, body)


# -- mkdir --------------------------------------------------------------------------------
def _mkdir(args: argparse.Namespace) -> int:
    def body(tx: int, out: Output) -> int:
        for key in args.key:
            try:
                xs.mkdir(key, tx=tx)
            except XenstoreError as err:
                warn(args, f"could not create path {key}: {reason(err)}")
                return 1
        return 0

    with open_client(args) as xs:
        return run_transaction(args, xs, True, body)


# -- exists -------------------------------------------------------------------------------
def _exists(args: argparse.Namespace) -> int:
    keys: list[str] = args.key
    with open_client(args) as xs:
        if args.json:
            found: dict[str, bool] = {}

            def check_all(tx: int, out: Output) -> int:
                found.clear()
                for key in keys:
                    try:
                        xs.read(key, tx=tx)
                        found[key] = True
                    except XenstoreError:
                        found[key] = False
                return 0

            run_transaction(args, xs, True, check_all)
            emit_json(found)
            return 0 if all(found.values()) else 1

        def body(tx: int, out: Output) -> int:
            for key in keys:
                try:
                    xs.read(key, tx=tx)
                except XenstoreError:
                    return 1
            return 0

        return run_transaction(args, xs, True, body)


# -- list ---------------------------------------------------------------------------------
def _list(args: argparse.Namespace) -> int:
    keys: list[str] = args.key
    found: dict[str, list[str]] = {}

    def body(tx: int, out: Output) -> int:
        found.clear()
        for key in keys:
            try:
                names = xs.directory(key, tx=tx)
            except XenstoreError:
                warn(args, f"could not list path {key}")
                return 1
            found[key] = names
            for name in names:
                if args.prefix:
                    out.add(_b(key) + b"/")
                out.add(_name(name) + b"\n")
        return 0

    with open_client(args) as xs:
        status = run_transaction(args, xs, True, body if not args.json else _quiet(body))
        if args.json and status == 0:
            emit_json(found)
        return status


def _quiet(body: Any) -> Any:
    """``body`` with its text output thrown away (``--json`` prints its own)."""
    return lambda tx, out: body(tx, Output())


# -- ls -----------------------------------------------------------------------------------
_TAG = b' = "..."'


class _Ls:
    """xenstore-ls: a depth-first walk, one line per node, no transaction."""

    def __init__(self, xs: Client, args: argparse.Namespace) -> None:
        self.xs = xs
        self.args = args
        self.perms: bool = args.prefix
        self.flat: bool = args.flat
        self.max_width = 80
        self.desired_width = 60
        if self.flat:
            self.max_width = (2**31 - 1) // 2
            self.desired_width = 0
        # On a terminal its width less 2, even with -f (as C: its ioctl comes after the
        # options); elsewhere 80, or unbounded with -f.
        with contextlib.suppress(OSError, ValueError):
            self.max_width = os.get_terminal_size(sys.stdout.fileno()).columns - 2
        self.out = sys.stdout.buffer
        self.nodes: list[dict[str, Any]] = []

    def walk(self, path: bytes, depth: int) -> None:
        try:
            names = self.xs.directory(path)
        except XenstoreError as err:
            if depth and err.name == "ENOENT":
                return  # a node that disappears while recursing is skipped, as in C
            self.out.flush()
            raise Fatal(f"xs_directory ({os.fsdecode(path)}): {reason(err)}") from err
        for raw in names:
            name = _name(raw)
            sep = b"" if path.endswith(b"/") else b"/"
            newpath = path + sep + name
            self.line(newpath, name, depth)
            self.walk(newpath, depth + 1)

    def line(self, path: bytes, name: bytes, depth: int) -> None:
        write = self.out.write
        try:
            value: bytes | None = self.xs.read(path)
        except XenstoreError:
            value = None
        perms: list[str] | None = None
        if self.perms:
            try:
                perms = _perm_texts(self.xs.get_perms(path))
            except XenstoreError as err:
                self.out.flush()
                print(
                    f"\npyxenstore ls: could not access permissions for "
                    f"{os.fsdecode(name)}: {reason(err)}",
                    file=sys.stderr,
                    flush=True,
                )
        if self.args.json:
            node: dict[str, Any] = {
                "path": os.fsdecode(path),
                "value": None if value is None else json_value(value),
            }
            if self.perms:
                node["perms"] = perms
            self.nodes.append(node)
            return
        width = 0
        if self.flat:
            write(path)  # C does not count it: the width is unbounded anyway
        else:
            write(b" " * depth)
            width = depth
            shown = _clip(name, self.max_width - len(_TAG) - width)
            write(shown)
            width += len(shown)
        if value is None:
            write(b":\n")
        else:
            text = sanitise(value).encode("ascii")
            if self.max_width < width + len(value) + len(_TAG):
                write(b' = "' + _clip(text, self.max_width - len(_TAG) - width) + b'\\..."')
            else:
                piece = b' = "' + text + b'"'
                write(piece)
                width += len(piece)
                if self.perms:
                    write(b" ")
                    width += 1
                    pad = bytearray()
                    while width < min(self.desired_width, self.max_width):
                        pad += b"." if width & 1 else b" "
                        width += 1
                    write(bytes(pad))
        if perms is not None:
            write(b"  (" + ",".join(perms).encode("ascii") + b")")
        write(b"\n")


def _clip(text: bytes, precision: int) -> bytes:
    """printf's ``%.*s``: a negative precision means no limit."""
    return text if precision < 0 else text[:precision]


def _ls(args: argparse.Namespace) -> int:
    paths: list[str] = args.path or ["/"]
    with open_client(args) as xs:
        walker = _Ls(xs, args)
        try:
            for path in paths:
                walker.walk(_b(path), 0)
        finally:
            walker.out.flush()
        if args.json:
            emit_json(walker.nodes)
    return 0


# -- chmod --------------------------------------------------------------------------------
def _chmod(args: argparse.Namespace) -> int:
    def apply(path: str, perms: list[str], upto: bool, recurse: bool, tx: int) -> None:
        if not path:
            return
        try:
            if perms:
                xs.set_perms(path, perms, tx=tx)
            else:  # the library refuses an empty list; C sends it and the daemon says why
                xs.request(Op.SET_PERMS, _b(path) + b"\0", tx)
        except XenstoreError as err:
            raise Fatal(f"Error occurred setting permissions on '{path}': {reason(err)}") from err
        if upto:
            cut = path.rfind("/")
            if cut < 0:
                raise Fatal(f"Unable to locate path separator '/' in '{path}'")
            apply(path[:cut], perms, True, False, tx)
        if recurse:
            try:
                children = xs.directory(path, tx=tx)
            except XenstoreError:
                return
            for child in children:
                apply(f"{path}/{child}", perms, False, True, tx)

    def body(tx: int, out: Output) -> int:
        apply(args.key, parse_modes(args.modes), args.upto, args.recurse, tx)
        return 0

    with open_client(args) as xs:
        return run_transaction(args, xs, True, body)


# -- getperms -----------------------------------------------------------------------------
def _getperms(args: argparse.Namespace) -> int:
    keys: list[str] = args.key
    found: dict[str, list[str]] = {}

    def body(tx: int, out: Output) -> int:
        found.clear()
        for key in keys:
            try:
                perms = _perm_texts(xs.get_perms(key, tx=tx))
            except XenstoreError as err:
                warn(args, f"couldn't get permissions of {key}: {reason(err)}")
                return 1
            found[key] = perms
            if args.prefix:
                out.add(_b(key) + b": ")
            out.add(" ".join(perms).encode("ascii") + b"\n")
        return 0

    with open_client(args) as xs:
        status = run_transaction(args, xs, len(keys) > 1, _quiet(body) if args.json else body)
        if args.json and status == 0:
            emit_json(found)
        return status


# -- the parsers --------------------------------------------------------------------------
def _json_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print one JSON document")


def register(subparsers: SubParsers) -> None:
    """Add the tree verbs."""

    def verb(name: str, func: Any, summary: str, description: str) -> argparse.ArgumentParser:
        p: argparse.ArgumentParser = subparsers.add_parser(
            name, help=summary, description=description
        )
        p.set_defaults(func=func, parser=p)
        add_socket_flag(p)
        return p

    p = verb(
        "read",
        _read,
        "print the values of keys",
        "Print the value of each KEY on its own line, escaped as xenstore-read does "
        "(non-printable bytes as \\t \\n \\r \\\\ \\ooo \\xHH). Several keys are read in one "
        "transaction. Exit status 1 if a key cannot be read.",
    )
    p.add_argument("-p", "--prefix", action="store_true", help="print 'KEY: ' before each value")
    p.add_argument("-R", "--raw", action="store_true", help="print the bytes as they are")
    _json_flag(p)
    p.add_argument("key", nargs="+", metavar="KEY", help="a xenstore path")

    p = verb(
        "write",
        _write,
        "set keys to values",
        "Set each KEY to its VALUE, creating missing parents. Escapes in VALUE (\\t \\n \\r "
        "\\\\ \\ooo \\xHH) are decoded unless -R. Several pairs are written in one "
        "transaction.",
    )
    p.add_argument("-R", "--raw", action="store_true", help="store VALUE as it is")
    p.add_argument("pairs", nargs="+", metavar="KEY VALUE", help="a path and its new value")

    p = verb(
        "rm",
        _rm,
        "remove keys and their subtrees",
        "Remove each KEY with everything below it, in one transaction.",
    )
    p.add_argument(
        "-t",
        "--tidy",
        action="store_true",
        help="also remove each parent left without a value and without children",
    )
    p.add_argument("key", nargs="+", metavar="KEY", help="a xenstore path")

    p = verb(
        "mkdir",
        _mkdir,
        "create empty keys",
        "Create each KEY with an empty value unless it exists (with missing parents), "
        "in one transaction.",
    )
    p.add_argument("key", nargs="+", metavar="KEY", help="a xenstore path")

    p = verb(
        "exists",
        _exists,
        "test whether keys exist",
        "Exit with status 0 if every KEY can be read, 1 otherwise; print nothing "
        "(with --json, print {KEY: true|false}).",
    )
    _json_flag(p)
    p.add_argument("key", nargs="+", metavar="KEY", help="a xenstore path")

    p = verb(
        "list",
        _list,
        "print the children of keys",
        "Print the names of the children of each KEY, one per line, in one transaction.",
    )
    p.add_argument("-p", "--prefix", action="store_true", help="print 'KEY/' before each name")
    _json_flag(p)
    p.add_argument("key", nargs="+", metavar="KEY", help="a xenstore path")

    p = verb(
        "ls",
        _ls,
        "print subtrees with their values",
        "Print the tree below each PATH (default /), one node per line, indented by depth, "
        'as NAME = "VALUE" (lines are cut to the terminal width less 2, or to 80 columns).'
        " With --json, a list of {path, value[, perms]} objects in the same order.",
    )
    p.add_argument("-f", "--flat", action="store_true", help="print full paths, uncut")
    p.add_argument(
        "-p", "--prefix", action="store_true", help="print the permissions of each node too"
    )
    _json_flag(p)
    p.add_argument("path", nargs="*", metavar="PATH", help="where to start (default: /)")

    p = verb(
        "chmod",
        _chmod,
        "set the permissions of a key",
        "Set the permission list of KEY to MODE...: each a letter n (none), r (read), "
        "w (write) or b (both) followed by a domain id; the first entry names the owner and "
        "what every other domain may do.",
    )
    p.add_argument("-u", "--upto", action="store_true", help="also set them on every parent of KEY")
    p.add_argument(
        "-r", "--recurse", action="store_true", help="also set them on everything below KEY"
    )
    p.add_argument("key", metavar="KEY", help="a xenstore path")
    p.add_argument("modes", nargs="*", metavar="MODE", help="n, r, w or b and a domain id (n0, r5)")

    p = verb(
        "getperms",
        _getperms,
        "print the permissions of keys",
        "Print the permission list of each KEY on one line, as chmod takes it (e.g. 'n0 r5').",
    )
    p.add_argument("-p", "--prefix", action="store_true", help="print 'KEY: ' first")
    _json_flag(p)
    p.add_argument("key", nargs="+", metavar="KEY", help="a xenstore path")
