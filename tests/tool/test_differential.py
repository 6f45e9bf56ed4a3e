"""``pyxenstore VERB`` against Debian's ``xenstore-VERB`` (Xen 4.17's xenstore-utils):
for every shared verb and flag, the same stdout bytes, the same exit status and the
same resulting tree, against one pyxenstored on a socket.

stderr is compared only for being empty or not: its lines name the program
(``pyxenstore read:`` for ``xenstore-read:``) and add the reason (docs/client.md).
Each case runs on a freshly built tree under its own top node, first with the C tool,
then (tree rebuilt) with pyxenstore. Skipped, with the reason, without xenstore-utils.

``PXS_TOOL_TARGET=/dev/xen/xenbus`` runs the same comparison through the kernel's xenbus
device instead (both tools open it as libxenstore does); ``PXS_TOOL_QUICK=1`` keeps one
case per verb and flag (the real-Xen ``tool`` scenario does both, in dom0).
"""

from __future__ import annotations

import contextlib
import fcntl
import itertools
import os
import struct
import subprocess
import termios
import tty

import pytest

from pyxenstored.client import SyncClient
from pyxenstored.errors import XenstoreError

from .helpers import PYXENSTORE, c_tool, dump, run

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


#: One case per verb and flag, for the slow real-Xen run (``PXS_TOOL_QUICK=1``).
QUICK = {
    ("read", "-p {t}/a"),
    ("read", "{t}/a {t}/missing {t}/tab"),
    ("read", "-pR {t}/bin {t}/a"),
    ("read", "-s {t}/a"),
    ("write", "{t}/w \\x41\\101\\7\\q\\x"),
    ("write", "-R {t}/w a\\tb"),
    ("write", "{t}/w1 1 {t}/w2 2"),
    ("rm", "{t}/a {t}/e"),
    ("rm", "-t {t}/tidy/u/v"),
    ("rm", "{t}/no/such/parent"),
    ("exists", "{t}/a {t}/missing"),
    ("list", "-p {t}"),
    ("list", "{t}/e {t}/missing"),
    ("ls", "{t}"),
    ("ls", "-fp {t}"),
    ("ls", "{t}/missing"),
    ("chmod", "-u {t}/deep/x/y n0 r3"),
    ("chmod", "-ur {t}/deep/x n0 w4"),
    ("chmod", "{t}/a q5"),
    ("watch", "-n 2 {t}/a {t}/e"),
    ("control", "print hello from the tests"),
}
if os.environ.get("PXS_TOOL_QUICK"):
    CASES = [(v, a) for v, a in CASES if (v, " ".join(a)) in QUICK]


def build(socket: str, top: str) -> None:
    """The tree every case starts from (C xenstored may refuse permissions naming
    domains that do not exist: then the node keeps its owner's, for both tools alike)."""
    with SyncClient(socket, timeout=10) as xs:
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


_counter = itertools.count()


@pytest.mark.parametrize(
    ("verb", "args"), CASES, ids=[f"{v}-{' '.join(a) or 'none'}" for v, a in CASES]
)
def test_same_output_status_and_tree(target: str, verb: str, args: list[str]) -> None:
    c_binary = c_tool(verb)
    top = f"/diff{next(_counter)}"
    argv = [a.replace("{t}", top) for a in args]

    build(target, top)
    c = run([c_binary, *argv], target)
    c_tree = dump(target, top)

    build(target, top)
    py = run([PYXENSTORE, verb, *argv], target)
    py_tree = dump(target, top)

    what = f"xenstore-{verb} {' '.join(argv)}"
    assert py.stdout == c.stdout, f"{what}: stdout differs (C stderr: {c.stderr!r})"
    assert py.returncode == c.returncode, f"{what}: C {c.returncode}, ours {py.returncode}"
    assert bool(py.stderr) == bool(c.stderr), f"{what}: C stderr {c.stderr!r}, ours {py.stderr!r}"
    assert b"Traceback" not in py.stderr
    assert py_tree == c_tree, f"{what}: the trees differ"


def _on_terminal(argv: list[str], socket: str, columns: int) -> tuple[bytes, int]:
    """Run ``argv`` with stdout on a pseudo-terminal ``columns`` wide; (output, status)."""
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, columns, 0, 0))
    tty.setraw(slave)  # no newline translation: the bytes as written
    proc = subprocess.Popen(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=slave,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "XENSTORED_PATH": socket},
    )
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 1 << 16)
        except OSError:  # EIO: the terminal's last writer is gone
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    return b"".join(chunks), proc.wait(30)


@pytest.mark.parametrize("columns", [50, 12])
@pytest.mark.parametrize("flags", [[], ["-p"], ["-f"]])
def test_ls_on_a_terminal_cuts_at_its_width(
    target: str, columns: int, flags: list[str]
) -> None:
    """On a terminal xenstore-ls lays lines out for its width less 2."""
    c_binary = c_tool("ls")
    top = f"/diff{next(_counter)}"
    build(target, top)
    c = _on_terminal([c_binary, *flags, top], target, columns)
    py = _on_terminal([PYXENSTORE, "ls", *flags, top], target, columns)
    assert py == c
    assert c[0]  # the comparison saw output


def test_the_quick_set_names_real_cases() -> None:
    """Every case of the real-Xen subset is one of CASES (a typo would drop it silently)."""
    everything = {(v, " ".join(a)) for v, a in CASES}
    assert everything >= QUICK, sorted(QUICK - everything)
