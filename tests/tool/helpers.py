"""Running ``pyxenstore`` and Debian's xenstore-utils against a daemon socket."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from pyxenstored.client import SyncClient

PYXENSTORE = str(Path(sys.executable).with_name("pyxenstore"))
#: xenstore-control itself (/usr/bin/xenstore-control is a wrapper that needs a hypervisor)
XENSTORE_CONTROL = "/usr/lib/xen-4.17/bin/xenstore-control"


def c_tool(verb: str) -> str:
    """The xenstore-utils binary for ``verb``, or skip the test saying why."""
    if verb == "control":
        if not os.access(XENSTORE_CONTROL, os.X_OK):
            pytest.skip(f"{XENSTORE_CONTROL} is not installed (Debian package xen-utils-4.17)")
        return XENSTORE_CONTROL
    path = shutil.which(f"xenstore-{verb}")
    if path is None:
        pytest.skip(f"xenstore-{verb} is not installed (Debian package xenstore-utils)")
    return path


def run(
    argv: list[str], socket: str, *, stdin: bytes = b"", timeout: float = 30
) -> subprocess.CompletedProcess[bytes]:
    """Run ``argv`` with ``XENSTORED_PATH`` pointing at ``socket``."""
    env = {**os.environ, "XENSTORED_PATH": socket}
    return subprocess.run(
        argv, env=env, input=stdin, capture_output=True, timeout=timeout, check=False
    )


def pyxs(socket: str, *args: str, stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
    """``pyxenstore ARGS`` against ``socket``."""
    return run([PYXENSTORE, *args], socket, stdin=stdin)


def dump(socket: str, top: str) -> list[tuple[str, bytes | None, list[str]]]:
    """Every node under ``top`` (inclusive) with its value and permissions."""
    out: list[tuple[str, bytes | None, list[str]]] = []
    with SyncClient(socket, timeout=10) as xs:

        def walk(path: str) -> None:
            try:
                out.append((path, xs.read(path), xs.get_perms(path)))
                children = xs.directory(path)
            except Exception:
                out.append((path, None, []))
                return
            for child in children:
                walk(f"{path}/{child}")

        walk(top)
    return out
