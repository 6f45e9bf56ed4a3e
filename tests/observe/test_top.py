"""``pyxenstore top``: rows per domain from the statistics nodes, rates between two
readings, sorting by any column; in batch mode as text, and live in a real terminal
(tmux, where it is installed)."""

from __future__ import annotations

import shlex
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

from pyxenstored.client import SyncClient
from pyxenstored.metrics import Stats
from pyxenstored.tool.top import COLUMNS, Sample, View, render

from .helpers import PYXENSTORE, pyxenstore

if TYPE_CHECKING:
    from conftest import DaemonFactory

TMUX = shutil.which("tmux")


def stats(requests: dict[int, int], nodes: dict[int, int] | None = None) -> Stats:
    found = {"requests/total": str(sum(requests.values())), "domains": str(len(requests))}
    for d, n in requests.items():
        node_count = (nodes or {}).get(d, 1)
        found[f"domain/{d}"] = (
            f"requests={n} nodes={node_count} nodes-quota={0 if d == 0 else 1000} "
            f"memory=2048 memory-quota=0 eagain={d} refused=0 blamed=0 throttled={int(d == 3)}"
        )
    return Stats.from_nodes(found)


def rows_of(lines: list[str]) -> list[list[str]]:
    """The table rows (after the column titles, before the footer), as cells."""
    start = next(i for i, line in enumerate(lines) if "DOMID" in line)
    return [line.split() for line in lines[start + 1 : -1]]


def test_rates_and_the_default_order() -> None:
    before = stats({0: 100, 1: 10, 2: 10, 3: 10})
    now = stats({0: 110, 1: 50, 2: 12, 3: 10})
    view = View(Sample(now, before, 2.0))
    lines = render(view)
    rows = rows_of(lines)
    assert [r[0] for r in rows] == ["1", "0", "2", "3"]  # by requests per second
    assert rows[0][1] == "20.0" and rows[1][1] == "5.0"
    assert "requests 26.0/s" in lines[2]  # (10 + 40 + 2) / 2
    assert rows[0][2] == "1/1000" and rows[1][2] == "1"  # dom0 has no node quota
    assert rows[3][-1] == "0T"  # throttled by conflict fairness


def test_first_reading_has_no_rates_and_a_reset_counts_as_zero() -> None:
    assert rows_of(render(View(Sample(stats({0: 5}), None, 0.0))))[0][1] == "0.0"
    reset = View(Sample(stats({7: 1}), stats({7: 500}), 1.0))  # domain 7 came back anew
    assert rows_of(render(reset))[0][1] == "0.0"


def test_keys_choose_and_reverse_the_sort() -> None:
    view = View(Sample(stats({0: 1, 1: 1, 2: 1}, nodes={0: 5, 1: 50, 2: 500}), None, 0.0))
    assert view.key("n")
    assert [r[0] for r in rows_of(render(view))] == ["2", "1", "0"]  # share of the quota
    assert view.key("n")  # the same key again: the other way round
    assert [r[0] for r in rows_of(render(view))] == ["0", "1", "2"]
    assert view.key("d") and not view.reverse
    assert [r[0] for r in rows_of(render(view))] == ["0", "1", "2"]
    keys = [c.key for c in COLUMNS]
    view.key("s")
    assert view.sort == keys[1]
    view.key("S")
    view.key("S")
    assert view.sort == keys[-1]
    delay = view.delay
    view.key("+")
    assert view.delay == delay * 2
    assert not view.key("q")
    header = render(view)[4]
    assert "BLAMED^" in header or "BLAMEDv" in header


def test_render_fits_the_screen() -> None:
    view = View(Sample(stats({d: d for d in range(100)}), None, 0.0))
    lines = render(view, width=40, height=12)
    assert len(lines) == 12 and all(len(line) <= 40 for line in lines)
    assert lines[-1].startswith("sort ")


def test_batch_mode_against_a_daemon(daemon_factory: DaemonFactory) -> None:
    daemon = daemon_factory("--no-journal")
    with SyncClient(daemon.socket, timeout=10) as xs:
        for domid in (3, 4):
            xs.write(f"/local/domain/{domid}/name", f"guest{domid}".encode())
            xs.set_perms(f"/local/domain/{domid}", [f"n{domid}"])
            xs.introduce(domid, 1, 1)
    out = pyxenstore(daemon.socket, "top", "-b", "-n", "2", "-d", "0.2", "-s", "d")
    assert out.returncode == 0, out.stderr
    frames = out.stdout.split("pyxenstore top - ")[1:]
    assert len(frames) == 2, out.stdout
    rows = rows_of(frames[-1].strip("\n").split("\n"))
    assert [r[0] for r in rows] == ["0", "3", "4"]
    assert rows[1][2] == "1/1000"  # the domain owns its home (dom0 made its name)
    assert "domains 2" in frames[-1]


def test_no_daemon_is_one_line() -> None:
    out = pyxenstore("/nonexistent/socket", "top", "-b", "-n", "1")
    assert out.returncode == 1 and "Traceback" not in out.stderr
    assert out.stderr.count("\n") == 1, out.stderr


@pytest.fixture
def tmux() -> Iterator[list[str]]:
    """A private tmux server (its own socket); killed at the end."""
    if TMUX is None:
        pytest.skip("tmux is not installed (apt-get install tmux)")
    name = f"pyxs-{uuid.uuid4().hex[:8]}"
    cmd = [TMUX, "-L", name, "-f", "/dev/null"]
    try:
        yield cmd
    finally:
        subprocess.run([*cmd, "kill-server"], capture_output=True, check=False)


def pane(tmux: list[str]) -> str:
    return subprocess.run(
        [*tmux, "capture-pane", "-p", "-t", "top"], capture_output=True, text=True, check=False
    ).stdout


def wait_pane(tmux: list[str], predicate: object, timeout: float = 30) -> str:
    deadline = time.monotonic() + timeout
    text = ""
    while time.monotonic() < deadline:
        text = pane(tmux)
        if callable(predicate) and predicate(text):
            return text
        time.sleep(0.1)
    raise AssertionError(f"the pane never showed it:\n{text}")


def test_live_view_in_a_real_terminal(daemon_factory: DaemonFactory, tmux: list[str]) -> None:
    daemon = daemon_factory("--no-journal")
    with SyncClient(daemon.socket, timeout=10) as xs:
        for domid in range(1, 6):
            xs.write(f"/local/domain/{domid}/name", f"guest{domid}".encode())
            xs.set_perms(f"/local/domain/{domid}", [f"n{domid}"])
            for i in range(domid * 3):
                xs.write(f"/local/domain/{domid}/data/{i}", b"x")
                xs.set_perms(f"/local/domain/{domid}/data/{i}", [f"n{domid}"])
            xs.introduce(domid, 1, 1)
    command = shlex.join([*PYXENSTORE, "--connect", daemon.socket, "top", "-d", "0.3"])
    subprocess.run(
        [*tmux, "new-session", "-d", "-s", "top", "-x", "150", "-y", "30", command], check=True
    )
    text = wait_pane(tmux, lambda t: "DOMID" in t and "domains 5" in t)
    assert "pyxenstore top" in text
    subprocess.run([*tmux, "send-keys", "-t", "top", "n"], check=True)

    def sorted_by_nodes(t: str) -> bool:
        # The header shows the new sort key before tmux has every row of the repaint:
        # wait for the whole screen. Sorted by the share of the node quota: domain 5
        # owns the most.
        ids = [r[0] for r in rows_of([line for line in t.splitlines() if line.strip()])]
        repainted = len(ids) == len(set(ids))  # no row left over from the last screen
        return "NODES/QUOTAv" in t and repainted and ids[:5] == ["5", "4", "3", "2", "1"]

    text = wait_pane(tmux, sorted_by_nodes)
    rows = rows_of([line for line in text.splitlines() if line.strip()])
    assert rows[0][2] == "17/1000", text
    subprocess.run([*tmux, "send-keys", "-t", "top", "q"], check=True)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        alive = subprocess.run([*tmux, "has-session", "-t", "top"], capture_output=True)
        if alive.returncode != 0:
            break  # q quit the view, and with it the session
        time.sleep(0.1)
    else:
        raise AssertionError(f"q did not quit:\n{pane(tmux)}")


def test_rates_use_when_each_node_was_read() -> None:
    """Under load a reading takes long: a node read late in one reading and early in
    the next must not look slow."""
    before, now = stats({0: 0, 1: 0}), stats({0: 100, 1: 100})
    before.read_at = {"domain/0": 10.0, "domain/1": 10.9, "requests/total": 10.5}
    now.read_at = {"domain/0": 11.0, "domain/1": 11.1, "requests/total": 12.5}
    view = View(Sample(now, before, 1.0))
    rows = {r[0]: r for r in rows_of(render(view))}
    assert rows["0"][1] == "100.0" and rows["1"][1] == "500.0"
    assert "requests 100.0/s" in render(view)[2]
