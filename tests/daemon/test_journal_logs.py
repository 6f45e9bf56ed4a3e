"""Logs under systemd: when stderr is the journal (``$JOURNAL_STREAM`` names it), every
line carries its ``<N>`` syslog priority and no timestamp of its own (the journal adds
one); elsewhere the lines keep their timestamp."""

from __future__ import annotations

import logging
import os
import re
import signal
import subprocess
from pathlib import Path

from pyxenstored.runtime.daemon import JournalFormatter, stderr_is_journal

from .helpers import COMMAND, answers, clean_env, until


def record(level: int, message: str) -> logging.LogRecord:
    return logging.LogRecord("pyxenstored.quota", level, __file__, 1, message, None, None)


def test_priority_prefix_on_every_line_and_no_timestamp() -> None:
    f = JournalFormatter()
    assert (
        f.format(record(logging.WARNING, "domain 5: over"))
        == "<4>pyxenstored.quota: domain 5: over"
    )
    assert f.format(record(logging.INFO, "x")).startswith("<6>")
    assert f.format(record(logging.ERROR, "x")).startswith("<3>")
    assert f.format(record(logging.CRITICAL, "x")).startswith("<2>")
    assert f.format(record(logging.DEBUG, "x")).startswith("<7>")
    two = f.format(record(logging.ERROR, "first\nsecond"))
    assert two == "<3>pyxenstored.quota: first\n<3>second"  # journald splits at newlines


def test_stderr_is_the_journal_only_when_its_device_and_inode_match(tmp_path: Path) -> None:
    with open(tmp_path / "stream", "w") as f:
        st = os.fstat(f.fileno())
        assert stderr_is_journal({"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"}, f.fileno())
        assert not stderr_is_journal({"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino + 1}"}, f.fileno())
        assert not stderr_is_journal({"JOURNAL_STREAM": "garbage"}, f.fileno())
        assert not stderr_is_journal({}, f.fileno())


def run_daemon(tmp: Path, journal: bool) -> str:
    """Start ``pyxenstored -N`` with stderr to a file (named as the journal if asked),
    have it serve one request, stop it; its log."""
    err_path = tmp / "stderr"
    with open(err_path, "wb") as err:
        st = os.fstat(err.fileno())
        env = clean_env(JOURNAL_STREAM=f"{st.st_dev}:{st.st_ino}") if journal else clean_env()
        proc = subprocess.Popen(
            [*COMMAND, "-N", "--no-journal", "--socket", str(tmp / "socket")],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
    try:
        assert until(lambda: answers(str(tmp / "socket")))
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0
    finally:
        proc.kill()
        proc.wait()
    return err_path.read_text()


def test_the_daemon_logs_for_the_journal_under_systemd(tmp: Path) -> None:
    lines = run_daemon(tmp, journal=True).splitlines()
    assert lines, "nothing logged"
    assert all(re.match(r"<[0-7]>pyxenstored", line) for line in lines), lines
    assert any(line.startswith("<6>pyxenstored: ready: serving") for line in lines), lines
    assert not any(re.search(r"\d\d:\d\d:\d\d", line) for line in lines), lines


def test_elsewhere_the_lines_keep_their_timestamp(tmp: Path) -> None:
    lines = run_daemon(tmp, journal=False).splitlines()
    assert any(
        re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} pyxenstored INFO ready", line)
        for line in lines
    ), lines
    assert not any(line.startswith("<") for line in lines)
