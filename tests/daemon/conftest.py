"""Fixtures of the daemon tests: a short private directory, and the detached daemons a
test started (stopped by pid at teardown)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from .helpers import Pids, short_dir


@pytest.fixture
def tmp() -> Iterator[Path]:
    directory = short_dir()
    try:
        yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def pids() -> Iterator[Pids]:
    p = Pids()
    try:
        yield p
    finally:
        p.cleanup()
