"""benchmarks/ringpath.py still runs: a real server, domain 1's ring, its requests
answered through RingManager's one-ring fast path (the kick syscalls taken out)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from .simharness import subprocess_env

RINGPATH = Path(__file__).resolve().parents[2] / "benchmarks" / "ringpath.py"


def test_ringpath_benchmark_answers_reads_and_writes() -> None:
    for journal in ([], ["--no-journal"]):
        out = subprocess.run(
            [sys.executable, str(RINGPATH), "--iterations", "200", "--repeat", "1", *journal],
            capture_output=True,
            text=True,
            env=subprocess_env(),
            timeout=60,
            check=True,
        ).stdout
        rows = {line.split()[0]: line.split()[1:] for line in out.splitlines()[1:]}
        assert set(rows) == {"read", "write"}, out
        assert all(float(v) > 0 for cols in rows.values() for v in cols), out
