"""Layering (docs/architecture.md): the sans-I/O layers never touch I/O, and each layer
imports only the layers below it. Imports anywhere in a module count (also inside
functions and under TYPE_CHECKING)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import pyxenstored

PKG = Path(pyxenstored.__file__).parent
ROOT = "pyxenstored"

#: Modules a sans-I/O layer must never import.
IO_MODULES = frozenset(
    {
        "asyncio",
        "uvloop",
        "socket",
        "selectors",
        "select",
        "mmap",
        "fcntl",
        "os",
        "subprocess",
        "threading",
        "multiprocessing",
        "signal",
        "ctypes",
        "resource",
        "importlib",
    }
)
PURE_LAYERS = ["protocol", "store", "core", "liveconfig", "state"]

#: Which parts of the package each layer may import (besides itself and the stdlib).
ALLOWED: dict[str, frozenset[str]] = {
    "errors": frozenset(),
    # Whether compiled accelerators may be used (reads the environment, once).
    "accel": frozenset(),
    "protocol": frozenset({"errors"}),
    "store": frozenset({"errors", "protocol", "accel"}),
    "core": frozenset({"errors", "protocol", "store"}),
    "liveconfig": frozenset({"errors", "protocol", "store", "core"}),
    # The state stream and the engine's state as its records (live update, journal).
    "state": frozenset({"errors", "protocol", "store", "core", "liveconfig"}),
    # The ring channel of the client reuses the pure ring arithmetic, nothing else.
    "client": frozenset({"errors", "protocol", "transports.ring"}),
    "transports": frozenset({"errors", "protocol"}),
    # The pyxenstore command is a client like any other.
    "tool": frozenset({"errors", "protocol", "client", "metrics"}),
    # Statistics nodes as Prometheus metrics and top's rows: imports nothing of ours.
    "metrics": frozenset(),
    "runtime": frozenset(
        {"errors", "protocol", "store", "core", "liveconfig", "state", "transports", "metrics"}
    ),
}


def module_name(path: Path) -> str:
    rel = path.relative_to(PKG.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported_modules(path: Path) -> set[str]:
    """Absolute names of everything ``path`` imports (``from x import y`` gives x.y too,
    so that ``from .. import errors`` counts as pyxenstored.errors)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    return imports_of(path.read_text(), package, str(path))


def imports_of(source: str, package: str, filename: str = "<test>") -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(source, filename)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base_parts = package.split(".")
                base_parts = base_parts[: len(base_parts) - (node.level - 1)]
                base = ".".join(base_parts + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id == "__import__"
        ):
            found.add("__import__")
    return found


def layer_files(layer: str) -> list[Path]:
    single = PKG / f"{layer}.py"
    if single.exists():
        return [single]
    return sorted((PKG / layer).rglob("*.py"))


def internal_layer(module: str) -> str | None:
    """The layer an internal module belongs to (``transports.ring`` kept whole)."""
    if module != ROOT and not module.startswith(ROOT + "."):
        return None
    parts = module.split(".")[1:]
    if not parts:
        return ""
    if parts[0] == "transports" and len(parts) > 1 and parts[1] == "ring":
        return "transports.ring"
    return parts[0]


def present(layers: list[str]) -> list[str]:
    return [layer for layer in layers if (PKG / layer).is_dir() or (PKG / f"{layer}.py").exists()]


@pytest.mark.parametrize("layer", present(PURE_LAYERS))
def test_pure_layers_do_no_io(layer: str) -> None:
    bad = {}
    for path in layer_files(layer):
        used = {m for m in imported_modules(path) if m.split(".")[0] in IO_MODULES}
        used |= {m for m in imported_modules(path) if m == "__import__"}
        if used:
            bad[str(path.relative_to(PKG))] = sorted(used)
    assert not bad, f"sans-I/O layer {layer} imports I/O modules: {bad}"


@pytest.mark.parametrize("layer", present(sorted(ALLOWED)))
def test_layers_import_only_what_is_below_them(layer: str) -> None:
    bad = {}
    for path in layer_files(layer):
        wrong = set()
        for module in imported_modules(path):
            target = internal_layer(module)
            if target is None or target == layer:
                continue
            if target == "":  # "from .. import x" itself; x is checked on its own
                continue
            if target == "transports.ring" and "transports" in {layer, *ALLOWED[layer]}:
                continue
            if target not in ALLOWED[layer]:
                wrong.add(module)
        if wrong:
            bad[str(path.relative_to(PKG))] = sorted(wrong)
    assert not bad, f"{layer} may import only {sorted(ALLOWED[layer])}: {bad}"


def test_nothing_imports_the_command_line() -> None:
    for path in sorted(PKG.rglob("*.py")):
        if path.name in ("__main__.py", "cli.py"):
            continue
        assert f"{ROOT}.cli" not in imported_modules(path), path


def test_every_layer_is_classified() -> None:
    """A new top-level package must be placed in ALLOWED (and maybe PURE_LAYERS)."""
    known = set(ALLOWED) | {"cli", "__init__", "__main__"}
    found = {
        p.stem if p.is_file() else p.name
        for p in PKG.iterdir()
        if not p.name.startswith(("_", "."))
    }
    found = {f for f in found if (PKG / f).is_dir() or (PKG / f"{f}.py").exists()}
    found -= {"py"}
    assert found <= known, f"unclassified: {sorted(found - known)}"


def test_the_checker_sees_imports() -> None:
    """The checker itself: relative imports resolve, function-level imports count."""
    source = (
        "import os.path\n"
        "from ..core import engine\n"
        "from . import wire\n"
        "from .. import errors\n"
        "def f():\n"
        "    import socket\n"
        "    return __import__('mmap')\n"
    )
    mods = imports_of(source, "pyxenstored.protocol")
    assert {"os.path", "socket", "__import__"} <= mods
    assert {"pyxenstored.core", "pyxenstored.core.engine"} <= mods
    assert {"pyxenstored.protocol.wire", "pyxenstored.errors"} <= mods
    engine = PKG / "core" / "engine.py"
    mods = imported_modules(engine)
    assert "pyxenstored.protocol.wire" in mods
    assert "pyxenstored.store.tree" in mods
    assert internal_layer("pyxenstored.transports.ring.GuestRing") == "transports.ring"
