"""The layering rules of the ring work (docs/architecture.md): pure layers stay pure."""

from __future__ import annotations

import ast
from pathlib import Path

import pyxenstored

PKG = Path(pyxenstored.__file__).parent
IO_MODULES = {"asyncio", "socket", "mmap", "fcntl", "selectors", "select", "ctypes"}


def imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = "." * node.level + (node.module or "")
            found.add(base)
    return found


def test_core_and_ring_arithmetic_do_no_io() -> None:
    pure = [*sorted((PKG / "core").glob("*.py")), PKG / "transports" / "ring.py"]
    for path in pure:
        bad = {m for m in imports(path) if m.split(".")[0] in IO_MODULES}
        assert not bad, f"{path.name} imports {bad}"


def test_transports_do_not_import_the_core() -> None:
    for path in sorted((PKG / "transports").glob("*.py")):
        bad = {m for m in imports(path) if "core" in m or "runtime" in m}
        assert not bad, f"{path.name} imports {bad}"


def test_ring_indexes_are_never_packed() -> None:
    """Index stores go through memoryview.cast('I'), never struct.pack_into."""
    for rel in (
        "transports/ring.py",
        "transports/sim.py",
        "client/ring.py",
        "runtime/rings.py",
        "runtime/ringsink.py",
    ):
        assert "pack_into(" not in (PKG / rel).read_text(), rel
