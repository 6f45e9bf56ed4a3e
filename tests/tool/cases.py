"""The cases of pyxenstore's differential test against xenstore-utils, and the tree each
starts from: plain data and one function, importable without pytest, because the real-Xen
``tool`` scenario runs the same cases in dom0 and inside a PV guest through
``realxen/guest/tooldiff.py`` (which loads this file by its path; it imports only the
standard library and ``pyxenstored``).
"""

from __future__ import annotations

import contextlib
from typing import Protocol

from pyxenstored.errors import XenstoreError

#: (verb, arguments); "{t}" is replaced by the case's own top node.
CASES: list[tuple[str, list[str]]] = [
    # read: -p -s -R, several keys (one transaction), missing keys, usage errors
    ("read", ["{t}/a"]),
    ("read", ["-p", "{t}/a"]),
    ("read", ["--prefix", "{t}/a", "{t}/e/f"]),
    ("read", ["-s", "{t}/a"]),
    ("read", ["{t}/a", "{t}/tab"]),
    ("read", ["{t}/bin"]),
    ("read", ["-R", "{t}/bin"]),
    ("read", ["-pR", "{t}/bin", "{t}/a"]),
    ("read", ["{t}/e"]),
    ("read", ["{t}/missing"]),
    ("read", ["{t}/a", "{t}/missing", "{t}/tab"]),
    ("read", []),
    ("read", ["-f", "{t}/a"]),
    ("read", ["-t", "{t}/a"]),
    # write: escapes, -R, pairs, odd arguments, a bad path
    ("write", ["{t}/w", "value"]),
    ("write", ["{t}/w", "a\\tb\\nc\\\\d"]),
    ("write", ["{t}/w", "\\x41\\101\\7\\q\\x"]),
    ("write", ["{t}/w", "end\\"]),
    ("write", ["-R", "{t}/w", "a\\tb"]),
    ("write", ["{t}/w1", "1", "{t}/w2", "2"]),
    ("write", ["{t}/new/deep/node", ""]),
    ("write", ["{t}/w"]),
    ("write", ["{t}/w1", "1", "{t}/w2"]),
    ("write", ["{t}//bad", "v"]),
    ("write", ["-p", "{t}/w", "v"]),
    # rm: -t, several keys, missing ones
    ("rm", ["{t}/a"]),
    ("rm", ["{t}/a", "{t}/e"]),
    ("rm", ["-t", "{t}/tidy/u/v"]),
    ("rm", ["--tidy", "{t}/e/f"]),
    ("rm", ["{t}/missing"]),
    ("rm", ["{t}/no/such/parent"]),
    ("rm", []),
    # exists
    ("exists", ["{t}/a"]),
    ("exists", ["{t}/a", "{t}/e/f"]),
    ("exists", ["{t}/missing"]),
    ("exists", ["{t}/a", "{t}/missing"]),
    ("exists", ["-p", "{t}/a"]),
    ("exists", []),
    # list: -p, several keys, a missing key
    ("list", ["{t}"]),
    ("list", ["-p", "{t}"]),
    ("list", ["{t}/e", "{t}/deep"]),
    ("list", ["{t}/a"]),
    ("list", ["{t}/missing"]),
    ("list", ["{t}/e", "{t}/missing"]),
    # ls: -f -p, several paths, long values cut at 80 columns, a missing path
    ("ls", ["{t}"]),
    ("ls", ["-f", "{t}"]),
    ("ls", ["-p", "{t}"]),
    ("ls", ["-fp", "{t}"]),
    ("ls", ["--flat", "--prefix", "{t}/deep"]),
    ("ls", ["{t}/e", "{t}/deep"]),
    ("ls", ["{t}/a"]),
    ("ls", ["{t}/missing"]),
    ("ls", ["-r", "{t}"]),
    # chmod: -u -r, bad modes, C's atoi, no modes
    ("chmod", ["{t}/a", "n0", "r5"]),
    ("chmod", ["{t}/a", "b0", "w7", "r5junk"]),
    ("chmod", ["-r", "{t}/e", "b0", "r3"]),
    ("chmod", ["-u", "{t}/deep/x/y", "n0", "r3"]),
    ("chmod", ["-ur", "{t}/deep/x", "n0", "w4"]),
    ("chmod", ["{t}/a", "q5"]),
    ("chmod", ["{t}/a"]),
    ("chmod", ["{t}/missing", "n0"]),
    ("chmod", ["{t}/a", "n0", "r", "w-1"]),
    # watch: -n, several keys (their first events)
    ("watch", ["-n", "1", "{t}"]),
    ("watch", ["-n", "2", "{t}/a", "{t}/e"]),
    ("watch", ["--number", "1", "{t}/missing"]),
    ("watch", ["-n", "0", "{t}"]),
    ("watch", ["-n", "-5", "{t}"]),
    # control (xenstore-control): output, the exit statuses 2 and 3
    ("control", ["help"]),
    ("control", []),
    ("control", ["no-such-command"]),
    ("control", ["print", "hello from the tests"]),
]


#: One case per verb, for the slow real-Xen runs (each pyxenstore start costs seconds under
#: QEMU's TCG): the case that exercises most of the verb's output path.
QUICK: list[tuple[str, str]] = [
    ("read", "{t}/a {t}/missing {t}/tab"),
    ("write", "{t}/w \\x41\\101\\7\\q\\x"),
    ("rm", "-t {t}/tidy/u/v"),
    ("exists", "{t}/a {t}/missing"),
    ("list", "-p {t}"),
    ("ls", "-fp {t}"),
    ("chmod", "-ur {t}/deep/x n0 w4"),
    ("watch", "-n 2 {t}/a {t}/e"),
    ("control", "print hello from the tests"),
]


def quick_cases() -> list[tuple[str, list[str]]]:
    """The QUICK subset of CASES, in QUICK's order."""
    by_key = {(verb, " ".join(args)): (verb, args) for verb, args in CASES}
    return [by_key[key] for key in QUICK]


def case_name(verb: str, args: list[str]) -> str:
    """The case's name (the pytest id and the real-Xen log's)."""
    return f"{verb}-{' '.join(args) or 'none'}"


class Store(Protocol):
    """What :func:`build` needs of a client (pyxenstored.client.SyncClient)."""

    def rm(self, path: str) -> object: ...
    def write(self, path: str, value: bytes) -> object: ...
    def mkdir(self, path: str) -> object: ...
    def set_perms(self, path: str, perms: list[str]) -> object: ...


def build(xs: Store, top: str) -> None:
    """The tree every case starts from (C xenstored may refuse permissions naming
    domains that do not exist: then the node keeps its owner's, for both tools alike)."""
    xs.rm(top)
    xs.write(f"{top}/a", b"alpha")
    xs.write(f"{top}/tab", b"tab\there\nnew line")
    xs.write(f"{top}/bin", b"\x01\x07\x08\x1b\x7f\xff\\q")
    xs.write(f"{top}/e/f", b"x")
    xs.write(f"{top}/long", b"v" * 100)
    xs.write(f"{top}/deep/x/y/z", b"1")
    xs.write(f"{top}/perm", b"p")
    with contextlib.suppress(XenstoreError):
        xs.set_perms(f"{top}/perm", ["n0", "r5", "w7", "b3"])
    xs.mkdir(f"{top}/tidy/u")
    xs.write(f"{top}/tidy/u/v", b"leaf")
