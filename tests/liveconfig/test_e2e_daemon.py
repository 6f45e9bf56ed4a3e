"""End to end against a real ``python -m pyxenstored`` over its Unix socket: access
logging switched on and tuned through /tool/xenstored/ with no restart, and the real C
``xenstore-control`` (Xen 4.17, honours XENSTORED_PATH) driving CONTROL."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

from pyxenstored.client import SyncClient
from pyxenstored.core.quota import HARD_QUOTA_NAMES
from pyxenstored.errors import Invalid, NoEntry

XENSTORE_CONTROL = "/usr/lib/xen-4.17/bin/xenstore-control"


def wait_for(predicate, timeout: float = 5.0) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return bool(predicate())


def log_lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


# -- access log --------------------------------------------------------------------------
def test_access_log_switched_on_and_tuned_live(daemon_factory) -> None:  # type: ignore[no-untyped-def]
    directory = daemon_factory.new_dir()
    access = directory / "access.log"
    other = directory / "other.log"
    daemon = daemon_factory("--set", f"log/access-file={access}")
    pid = daemon.pid
    with SyncClient(daemon.socket, timeout=5) as xs:
        xs.write("/probe/r", b"value")
        assert xs.read("/tool/xenstored/log/access") == b"off"
        assert xs.read("/tool/xenstored/log/access-file") == str(access).encode()
        xs.read("/probe/r")
        assert log_lines(access) == []  # off: nothing is written

        xs.write("/tool/xenstored/log/access-ops", b"READ")
        xs.write("/tool/xenstored/log/access", b"on")
        assert xs.read("/probe/r") == b"value"
        xs.write("/probe/w", b"unseen")
        # The line is written before the reply is sent (and the file is line-buffered).
        reads = [line for line in log_lines(access) if "/probe/r" in line]
        assert len(reads) == 1, log_lines(access)
        assert " dom0 " in reads[0] and " READ " in reads[0] and "value" in reads[0]
        assert not any("/probe/w" in line for line in log_lines(access))

        # Which outcomes are logged is live too: only ENOENT replies now.
        xs.write("/tool/xenstored/log/access-replies", b"ENOENT")
        xs.read("/probe/r")
        with pytest.raises(NoEntry):
            xs.read("/probe/missing")
        lines = log_lines(access)
        assert sum("/probe/r" in line for line in lines) == 1
        assert any("/probe/missing" in line and "ENOENT" in line for line in lines)

        # CONTROL logfile moves it to another file, at once.
        xs.write("/tool/xenstored/log/access-replies", b"all")
        assert xs.control("logfile", str(other)) == b"OK"
        assert xs.read("/tool/xenstored/log/access-file") == str(other).encode()
        xs.read("/probe/r")
        assert any("/probe/r" in line for line in log_lines(other))

        # Off again: the next READ is not logged anywhere.
        xs.write("/tool/xenstored/log/access", b"off")
        before = (len(log_lines(access)), len(log_lines(other)))
        xs.read("/probe/r")
        assert (len(log_lines(access)), len(log_lines(other))) == before
    assert daemon.alive() and daemon.pid == pid


def test_access_log_start_value_from_command_line(daemon_factory) -> None:  # type: ignore[no-untyped-def]
    directory = daemon_factory.new_dir()
    access = directory / "access.log"
    daemon = daemon_factory(
        "--set", f"log/access-file={access}", "--set", "log/access=on",
        "--set", "log/access-ops=WRITE",
    )  # fmt: skip
    with SyncClient(daemon.socket, timeout=5) as xs:
        xs.write("/cli/w", b"1")
        xs.read("/cli/w")
        assert xs.read("/tool/xenstored/log/access") == b"on"
    lines = log_lines(access)
    assert any(" WRITE " in line and "/cli/w" in line for line in lines)
    assert not any(" READ " in line for line in lines)


def test_bad_start_value_is_refused(daemon_factory) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(RuntimeError, match="quota/nodes"):
        daemon_factory("--set", "quota/nodes=lots")


def test_quota_rule_and_start_values_from_command_line(daemon_factory) -> None:  # type: ignore[no-untyped-def]
    daemon = daemon_factory("--quota-rule", "4.22", "--set", "quota/nodes=321")
    with SyncClient(daemon.socket, timeout=5) as xs:
        assert xs.read("/tool/xenstored/quota/rule") == b"4.22"
        assert xs.get_quota("nodes") == 321
        assert xs.read("/tool/xenstored/quota/nodes") == b"321"


# -- xenstore-control --------------------------------------------------------------------
def xsctl(socket_path: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    if not os.access(XENSTORE_CONTROL, os.X_OK):
        pytest.skip(f"{XENSTORE_CONTROL} is not installed (Debian package xen-utils-4.17)")
    return subprocess.run(
        [XENSTORE_CONTROL, *args],
        env={**os.environ, "XENSTORED_PATH": socket_path},
        capture_output=True,
        text=True,
        timeout=20,
        check=check,
    )


def table(text: str) -> dict[str, int]:
    rows = {}
    for line in text.splitlines()[1:]:
        if ":" in line:
            key, _, rest = line.partition(":")
            rows[key.strip()] = int(rest.split()[0])
    return rows


def test_xenstore_control_quota(module_daemon: str) -> None:
    out = xsctl(module_daemon, "quota").stdout
    assert out.startswith("Quota settings:")
    assert set(table(out)) == set(HARD_QUOTA_NAMES)


def test_xenstore_control_quota_set_agrees_with_tree_and_get_quota(module_daemon: str) -> None:
    assert xsctl(module_daemon, "quota", "set", "nodes", "4321").stdout.strip() == "OK"
    assert table(xsctl(module_daemon, "quota").stdout)["nodes"] == 4321
    with SyncClient(module_daemon, timeout=5) as xs:
        assert xs.read("/tool/xenstored/quota/nodes") == b"4321"
        assert xs.get_quota("nodes") == 4321
        xs.write("/tool/xenstored/quota/nodes", b"1000")
    assert table(xsctl(module_daemon, "quota").stdout)["nodes"] == 1000
    bad = xsctl(module_daemon, "quota", "set", "nodes", "zero", check=False)
    assert bad.returncode != 0
    assert table(xsctl(module_daemon, "quota").stdout)["nodes"] == 1000


def test_xenstore_control_quota_of_a_domain(module_daemon: str) -> None:
    with SyncClient(module_daemon, timeout=5) as xs:
        xs.introduce(5, 0, 1)
        xs.write("/local/domain/5/name", b"guest")
        xs.set_perms("/local/domain/5/name", ["n5"])
        xs.set_quota("watches", 77, domid=5)
    out = xsctl(module_daemon, "quota", "5").stdout
    assert out.startswith("Domain 5:")
    rows = {
        line.split(":")[0].strip(): line.split(":")[1].split()
        for line in out.splitlines()[1:]
        if ":" in line
    }
    assert rows["nodes"] == ["1", "/", rows["nodes"][2]]
    assert rows["watches"] == ["0", "/", "77"]


def test_xenstore_control_quota_soft(module_daemon: str) -> None:
    out = xsctl(module_daemon, "quota-soft").stdout
    assert out.startswith("Soft quota settings:")
    assert "soft-memory" in table(out)
    assert xsctl(module_daemon, "quota-soft", "set", "memory", "3000000").stdout.strip() == "OK"
    assert table(xsctl(module_daemon, "quota-soft").stdout)["soft-memory"] == 3000000
    with SyncClient(module_daemon, timeout=5) as xs:
        assert xs.read("/tool/xenstored/quota-soft/memory") == b"3000000"
        assert xs.get_quota("soft-memory") == 3000000


def test_xenstore_control_log_and_logfile(module_daemon: str, tmp_path: Path) -> None:
    logfile = tmp_path / "xsctl-access.log"
    assert xsctl(module_daemon, "logfile", str(logfile)).stdout.strip() == "OK"
    assert xsctl(module_daemon, "log", "on").stdout.strip() == "OK"
    try:
        with SyncClient(module_daemon, timeout=5) as xs:
            assert xs.read("/tool/xenstored/log/access") == b"on"
            assert xs.read("/tool/xenstored/log/access-file") == str(logfile).encode()
            xs.write("/xsctl/probe", b"1")
        assert wait_for(lambda: any("/xsctl/probe" in line for line in log_lines(logfile)))
        assert "io: on" in xsctl(module_daemon, "log").stdout
    finally:
        xsctl(module_daemon, "log", "off")
    with SyncClient(module_daemon, timeout=5) as xs:
        assert xs.read("/tool/xenstored/log/access") == b"off"


def test_xenstore_control_print_check_memreport_help(daemon_proc) -> None:  # type: ignore[no-untyped-def]
    sock = daemon_proc.socket
    assert xsctl(sock, "print", "hello-from-the-test").stdout.strip() == "OK"
    assert wait_for(lambda: "hello-from-the-test" in daemon_proc.stderr())
    assert xsctl(sock, "check").stdout.strip() == "OK"
    report = xsctl(sock, "memreport").stdout
    assert "nodes:" in report
    helptext = xsctl(sock, "help").stdout
    for command in ("check", "log", "logfile", "memreport", "print", "quota", "quota-soft"):
        assert any(line.split("\t")[0] == command for line in helptext.splitlines()), command
    bad = xsctl(sock, "no-such-command", check=False)
    assert bad.returncode != 0


def test_xenstore_control_memreport_to_a_file(module_daemon: str, tmp_path: Path) -> None:
    report = tmp_path / "memreport.txt"
    xsctl(module_daemon, "memreport", str(report))
    assert wait_for(lambda: report.exists() and "nodes" in report.read_text(), 2)


def test_bad_control_is_einval_and_keeps_the_connection(module_daemon: str) -> None:
    with SyncClient(module_daemon, timeout=5) as xs:
        with pytest.raises(Invalid):
            xs.control("bogus")
        with pytest.raises(Invalid):
            xs.control("quota", "set", "nodes", "0")
        assert xs.control("check") == b"OK"
