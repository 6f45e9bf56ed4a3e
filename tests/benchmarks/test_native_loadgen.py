"""``xsload.py throughput --native``: the compiled load generator (benchmarks/xsbench/loadgen.c).

It must send what the Python clients send (an evenly spread READ/WRITE mix of one key per
connection, ``--pipeline`` deep), count every reply, and fail with a message, not hang,
when the daemon cuts it off. It is built with the system's C compiler on first use; the
tests skip where there is none (the package's own compiled storage needs one too).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from pyxenstored.client.sync import Client

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
XSLOAD = BENCHMARKS / "xsload.py"

pytestmark = pytest.mark.skipif(
    not (os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")),
    reason="no C compiler to build benchmarks/xsbench/loadgen.c",
)


def xsload(tmp_path: Path, sock: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, XDG_CACHE_HOME=str(tmp_path / "cache"))
    return subprocess.run(
        [sys.executable, str(XSLOAD), "--socket", sock, *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )


def test_native_throughput_reads_and_writes_every_key(daemon_proc, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "out.json"
    done = xsload(
        tmp_path,
        daemon_proc.socket,
        "--daemon-pid",
        str(daemon_proc.pid),
        "--json",
        str(out),
        "throughput",
        "--native",
        "--clients",
        "1,3",
        "--seconds",
        "0.3",
        "--pipeline",
        "4",
        "--read-fraction",
        "0.25",
        "--value-size",
        "7",
    )
    assert done.returncode == 0, done.stderr
    doc = json.loads(out.read_text())
    assert doc["params"]["native"] is True
    rows = {r["clients"]: r for r in doc["results"]}
    assert sorted(rows) == [1, 3]
    for k, row in rows.items():
        assert row["native"] is True
        assert row["errors"] == 0
        assert row["requests"] > 100
        assert row["reads"] + row["writes"] >= row["requests"]
        # one READ in four, spread as op_sequence spreads it: each connection's count of
        # READs is floor(0.25 * its requests), so the total is within K of a quarter
        assert 0 <= 0.25 * (row["reads"] + row["writes"]) - row["reads"] < k
        assert len(row["per_client_req_per_s"]) == k
        assert all(rate > 0 for rate in row["per_client_req_per_s"])
        assert row["daemon_cpu_us_per_req"] > 0
        assert 0 < row["client_cpu_busy"] <= 1.5
    for name in ("req_per_s", "cpu_us_per_req", "daemon_busy_pct", "client_busy_pct"):
        assert f"K=3.{name}" in doc["metrics"]
    # Each connection wrote its own key, with the Python clients' value of --value-size bytes.
    with Client(daemon_proc.socket) as client:
        for i in range(3):
            assert client.read(f"/bench/throughput/c{i}") == b"0123456"
    # The executable is cached under XDG_CACHE_HOME, named by its source's hash.
    assert len(list((tmp_path / "cache" / "pyxenstored-bench").glob("xsloadgen-*"))) == 1


def test_native_generator_fails_cleanly_when_the_daemon_hangs_up(tmp_path: Path) -> None:
    """A peer that accepts and closes: a message and a non-zero exit, in bounded time."""
    path = str(tmp_path / "s")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    server.listen(8)

    def hang_up() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            conn.close()

    threading.Thread(target=hang_up, daemon=True).start()
    try:
        done = xsload(
            tmp_path, path, "throughput", "--native", "--clients", "2", "--seconds", "0.2"
        )
    finally:
        server.close()
    assert done.returncode != 0
    assert "the daemon closed a connection" in done.stderr
