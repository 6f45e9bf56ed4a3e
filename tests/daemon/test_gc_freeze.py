"""Once serving, the daemon's process freezes what exists (cli.freeze_long_lived): full
collections do not walk the long-lived objects again (issue 10 round 3)."""

from __future__ import annotations

import gc

import pytest

from pyxenstored import cli


def test_freeze_takes_what_exists_out_of_the_collector_s_view() -> None:
    assert gc.get_freeze_count() == 0
    try:
        cli.freeze_long_lived()
        assert gc.get_freeze_count() > 1000  # modules, classes, functions at least
    finally:
        gc.unfreeze()


def test_the_daemon_freezes_once_ready(monkeypatch: pytest.MonkeyPatch) -> None:
    """_serve() registers the freeze after start.ready: it runs when the server is ready."""
    seen: list[str] = []

    class FakeServer:
        def __init__(self, config: object) -> None:
            self.on_ready: list[object] = []

        def run(self) -> None:
            for callback in self.on_ready:
                callback()  # type: ignore[operator]

    class Start:
        done = True

        def ready(self) -> None:
            seen.append("ready")

    monkeypatch.setattr(cli, "Server", FakeServer)
    monkeypatch.setattr(cli, "freeze_long_lived", lambda: seen.append("froze"))
    assert cli._serve(object(), Start()) == 0  # type: ignore[arg-type]
    assert seen == ["ready", "froze"]
