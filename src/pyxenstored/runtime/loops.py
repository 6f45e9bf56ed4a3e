"""Event loop choice: ``auto`` takes uvloop (libuv, epoll) when it imports."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

__all__ = ["LOOPS", "loop_factory"]


def _uvloop() -> Callable[[], asyncio.AbstractEventLoop]:
    import uvloop

    return uvloop.new_event_loop


def _asyncio() -> Callable[[], asyncio.AbstractEventLoop]:
    return asyncio.new_event_loop


def _auto() -> Callable[[], asyncio.AbstractEventLoop]:
    try:
        return _uvloop()
    except ImportError:
        return _asyncio()


LOOPS: dict[str, Callable[[], Callable[[], asyncio.AbstractEventLoop]]] = {
    "auto": _auto,
    "uvloop": _uvloop,
    "asyncio": _asyncio,
}


def loop_factory(name: str) -> Callable[[], asyncio.AbstractEventLoop]:
    """The loop constructor for ``name`` (a key of LOOPS)."""
    return LOOPS[name]()
