"""``make test-xen``: one QEMU boot per daemon, shared by the scenario tests.

``PXS_DAEMON`` (``pyxenstored``, the default, or ``cxenstored``: Debian's C xenstored as the
control run) picks the daemon; ``PXS_SCENARIOS`` (comma-separated) narrows the run.
Everything is skipped, with the reason, where the suite cannot run (not root, not
x86_64 Linux, packages missing and no apt-get).
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from . import xenqemu

KEEP_OUTPUTS = 12


def _cache() -> Path:
    return Path(os.environ.get("PXS_XEN_CACHE", "/var/tmp/pyxenstored-realxen"))


def _prune(outputs: Path) -> None:
    """Keep the newest boots' output folders only."""
    runs = sorted(outputs.glob("*"), key=lambda p: p.stat().st_mtime)
    for old in runs[:-KEEP_OUTPUTS]:
        shutil.rmtree(old, ignore_errors=True)


def _prune_images(folder: Path, keep: Path) -> None:
    """Image sets built for older inputs go (each is ~100 MB)."""
    for old in folder.glob("*"):
        if old.is_dir() and old != keep:
            shutil.rmtree(old, ignore_errors=True)


def selected_scenarios(daemon: str = "pyxenstored") -> list[str]:
    chosen = os.environ.get("PXS_SCENARIOS")
    names = chosen.split(",") if chosen else list(xenqemu.SCENARIOS)
    if daemon != "pyxenstored":
        names = [n for n in names if n not in xenqemu.PYXENSTORED_ONLY]
    return names


@pytest.fixture(scope="session")
def daemon() -> str:
    name = os.environ.get("PXS_DAEMON", "pyxenstored")
    if name not in xenqemu.DAEMONS:
        pytest.fail(f"PXS_DAEMON must be one of {xenqemu.DAEMONS}, not {name!r}")
    return name


@pytest.fixture(scope="session")
def booted(daemon: str) -> Iterator[xenqemu.Boot]:
    reason = xenqemu.why_not_here()
    if reason:
        pytest.skip(f"real Xen in QEMU cannot run here: {reason}")
    cache = _cache()
    cache.mkdir(parents=True, exist_ok=True)
    xenqemu.install_packages(cache / "apt.log")
    images = xenqemu.build_images(cache)
    _prune_images(cache / "images", keep=images.folder)
    outputs = cache / "out"
    outputs.mkdir(exist_ok=True)
    _prune(outputs)
    out = outputs / f"{daemon}-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
    settings = xenqemu.BootSettings(daemon=daemon, scenarios=selected_scenarios(daemon))
    result = xenqemu.boot(images, out, settings)
    print(
        f"\nreal Xen boot with {daemon}: status {result.status} in {result.wall:.0f} s "
        f"({result.attempts} attempt(s)), output {result.out}"
    )
    yield result
