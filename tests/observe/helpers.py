"""What the observability tests share: the ``pyxenstore`` command, a small bootstorm."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

#: the ``pyxenstore`` command of this environment (python -m, so no install is needed)
PYXENSTORE = [sys.executable, "-c", "from pyxenstored.tool.main import run; run()"]
BOOTSTORM = Path(__file__).resolve().parents[2] / "benchmarks" / "bootstorm.py"


def pyxenstore(socket: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*PYXENSTORE, "--connect", socket, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def bootstorm(socket: str, vms: int) -> subprocess.Popen[bytes]:
    """``benchmarks/bootstorm.py`` starting ``vms`` libxl-style VMs (started, not waited)."""
    return subprocess.Popen(
        [sys.executable, str(BOOTSTORM), "--socket", socket, "--vms", str(vms), "--workers", "1"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env={k: v for k, v in os.environ.items() if k != "XENSTORED_PATH"},
    )
