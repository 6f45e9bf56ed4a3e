"""The source passes the linter and the type checker: the very commands of `make lint`
and `make typecheck`, read from the Makefile so that the two lists of paths cannot drift
apart. Skipped when the tools are not installed."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def tool(name: str) -> str:
    beside = Path(sys.executable).parent / name
    if beside.exists():
        return str(beside)
    found = shutil.which(name)
    if found is None:
        pytest.skip(f"{name} is not installed")
    return found


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=110, check=False)


def make_commands(target: str, program: str) -> list[list[str]]:
    """The argument lists of ``$(VENV)/bin/<program>`` in the Makefile rule ``target``."""
    text = (ROOT / "Makefile").read_text()
    rule = re.search(rf"^{target}:.*\n((?:\t.*\n)+)", text, re.MULTILINE)
    assert rule is not None, f"no rule {target} in the Makefile"
    found = [
        shlex.split(line)[1:]
        for line in rule.group(1).splitlines()
        if line.strip().startswith(f"$(VENV)/bin/{program} ")
    ]
    assert found, f"make {target} runs no {program}"
    return found


def test_ruff() -> None:
    for args in make_commands("lint", "ruff"):
        result = run(tool("ruff"), *args, "--no-cache")
        assert result.returncode == 0, result.stdout + result.stderr


def test_mypy() -> None:
    for args in make_commands("typecheck", "mypy"):
        result = run(tool("mypy"), *args)
        assert result.returncode == 0, result.stdout + result.stderr
