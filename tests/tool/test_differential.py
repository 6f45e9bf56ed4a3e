"""``pyxenstore VERB`` against Debian's ``xenstore-VERB`` (Xen 4.17's xenstore-utils):
for every shared verb and flag, the same stdout bytes, the same exit status and the
same resulting tree, against one pyxenstored on a socket.

stderr is compared only for being empty or not: its lines name the program
(``pyxenstore read:`` for ``xenstore-read:``) and add the reason (docs/client.md).
Each case runs on a freshly built tree under its own top node, first with the C tool,
then (tree rebuilt) with pyxenstore. Skipped, with the reason, without xenstore-utils.

``PXS_TOOL_TARGET=/dev/xen/xenbus`` runs the same comparison through the kernel's xenbus
device instead (both tools open it as libxenstore does); ``PXS_TOOL_QUICK=1`` keeps one
case per verb (cases.QUICK). The cases live in cases.py, which the real-Xen ``tool``
scenario runs without pytest, in dom0 and inside a guest (realxen/guest/tooldiff.py).
"""

from __future__ import annotations

import fcntl
import itertools
import os
import struct
import subprocess
import termios
import tty

import pytest

from pyxenstored.client import SyncClient

from .cases import CASES, QUICK, case_name, quick_cases
from .cases import build as build_tree
from .helpers import PYXENSTORE, c_tool, dump, run

if os.environ.get("PXS_TOOL_QUICK"):
    CASES = quick_cases()


def build(socket: str, top: str) -> None:
    """The cases' starting tree under ``top`` (cases.build) through a fresh connection."""
    with SyncClient(socket, timeout=10) as xs:
        build_tree(xs, top)


_counter = itertools.count()


@pytest.mark.parametrize(("verb", "args"), CASES, ids=[case_name(v, a) for v, a in CASES])
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
def test_ls_on_a_terminal_cuts_at_its_width(target: str, columns: int, flags: list[str]) -> None:
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
    assert everything >= set(QUICK), sorted(set(QUICK) - everything)
    assert len(quick_cases()) == len(QUICK)
