"""The differential test's target: a pyxenstored socket, or what ``PXS_TOOL_TARGET``
names (the real-Xen ``tool`` scenario sets it to ``/dev/xen/xenbus`` in dom0)."""

from __future__ import annotations

import os

import pytest


@pytest.fixture(scope="module")
def target(request: pytest.FixtureRequest) -> str:
    path = os.environ.get("PXS_TOOL_TARGET")
    if path:
        return path
    socket: str = request.getfixturevalue("module_daemon")
    return socket
