"""Constructed (not served) Servers driven sans-I/O through their engine, so that the
runtime's reactions to settings (access log, log level, socket buffer, ring tick)
happen too."""

from __future__ import annotations

import logging
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from kit.config import ConfigKit

from pyxenstored.runtime.server import Server, ServerConfig


def make_kit(config: ServerConfig, tmp: Path) -> Iterator[ConfigKit]:
    logger = logging.getLogger("pyxenstored")
    level = logger.level
    server = Server(config)
    logger.setLevel("INFO")  # what Server.serve() does with the log/level start value
    kit = ConfigKit(server=server)
    kit.tmp = tmp
    try:
        yield kit
    finally:
        if server.access_log is not None:
            server.access_log.close()
        if server.rings is not None:
            server.rings.close()
        logger.setLevel(level)


@pytest.fixture
def skit(tmp_path: Path) -> Iterator[ConfigKit]:
    """A Server without a hypervisor (INTRODUCE records a domain, maps nothing)."""
    yield from make_kit(ServerConfig(socket_path=None), tmp_path)


@pytest.fixture
def rkit(tmp_path: Path) -> Iterator[ConfigKit]:
    """A Server serving rings through the simulated Xen (nothing is started: no loop)."""
    # AF_UNIX paths are short: the simulated event channel lives in its own short dir.
    sim = tempfile.mkdtemp(prefix="pyxs-sim-", dir="/tmp")
    try:
        yield from make_kit(ServerConfig(socket_path=None, sim_xen_dir=sim), tmp_path)
    finally:
        shutil.rmtree(sim, ignore_errors=True)
