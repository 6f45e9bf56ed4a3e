"""The examples of docs/client.md and of README.md's client section run, each against a
fresh pyxenstored (``XENSTORED_PATH``): every fenced ``python`` block as a script, every
fenced ``sh`` block that uses ``pyxenstore`` under ``bash -eu`` with the package's
commands first on ``PATH``. A block that raises or exits non-zero fails its test."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "docs" / "client.md", ROOT / "README.md"]
FENCE = re.compile(r"^```(\w+)\n(.*?)^```", re.S | re.M)


def blocks() -> list[tuple[str, str, str]]:
    """(id, language, code) of every runnable block."""
    found: list[tuple[str, str, str]] = []
    for doc in DOCS:
        text = doc.read_text()
        for m in FENCE.finditer(text):
            lang, code = m.group(1), m.group(2)
            line = text.count("\n", 0, m.start()) + 1
            if lang == "python" or (lang == "sh" and "pyxenstore " in code):
                found.append((f"{doc.name}:{line}", lang, code))
    return found


BLOCKS = blocks()


def test_the_documents_have_examples() -> None:
    names = {b[0].split(":")[0] for b in BLOCKS}
    assert names == {"client.md", "README.md"}
    assert sum(1 for b in BLOCKS if b[0].startswith("client.md")) >= 8


@pytest.mark.parametrize(("where", "lang", "code"), BLOCKS, ids=[b[0] for b in BLOCKS])
def test_example_runs(daemon: str, where: str, lang: str, code: str) -> None:
    bindir = str(Path(sys.executable).parent)
    env = {**os.environ, "XENSTORED_PATH": daemon, "PATH": bindir + os.pathsep + os.environ["PATH"]}
    if lang == "python":
        argv = [sys.executable, "-c", code]
    else:
        argv = ["bash", "-euo", "pipefail", "-c", code]
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, f"{where} failed:\n{done.stdout}\n{done.stderr}"
    assert "Traceback" not in done.stderr
