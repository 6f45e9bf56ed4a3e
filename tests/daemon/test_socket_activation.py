"""systemd socket activation: the daemon serves the socket passed in ``$LISTEN_FDS``
(sd_listen_fds semantics) instead of binding one, tells systemd READY=1 exactly once,
and leaves the socket file (systemd's) in place when it stops."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
from pathlib import Path

import pytest

from pyxenstored.client import SyncClient
from pyxenstored.runtime.activation import LISTEN_FDS_START, Passed, take_listen_fds

from .helpers import COMMAND, Pids, clean_env, fake_systemd, until

ACTIVATE = shutil.which("systemd-socket-activate")


def test_listen_fds_are_ours_only_for_our_pid() -> None:
    env = {"LISTEN_PID": "4242", "LISTEN_FDS": "2", "LISTEN_FDNAMES": "xenstored:other"}
    assert take_listen_fds(env, pid=4242) == [
        Passed(LISTEN_FDS_START, "xenstored"),
        Passed(LISTEN_FDS_START + 1, "other"),
    ]
    assert env == {}  # no child takes them for its own
    env = {"LISTEN_PID": "1", "LISTEN_FDS": "1", "OTHER": "x"}
    assert take_listen_fds(env, pid=4242) == []
    assert env == {"OTHER": "x"}
    assert take_listen_fds({"LISTEN_PID": "7", "LISTEN_FDS": "1"}, pid=7) == [Passed(3, "unknown")]
    for bad in ({"LISTEN_PID": "7", "LISTEN_FDS": "x"}, {"LISTEN_PID": "x", "LISTEN_FDS": "1"}):
        assert take_listen_fds(bad, pid=7) == []
    assert take_listen_fds({}, pid=7) == []


def start_activated(
    tmp: Path, *extra: str, env: dict[str, str]
) -> tuple[subprocess.Popen[bytes], str]:
    """``systemd-socket-activate -l tmp/socket pyxenstored -N ...``: the daemon starts
    when the first client connects."""
    assert ACTIVATE is not None
    path = str(tmp / "socket")
    variables = [f"--setenv={k}={v}" for k, v in env.items()]
    with open(tmp / "daemon.err", "wb") as err:
        proc = subprocess.Popen(
            [ACTIVATE, "-l", path, *variables, *COMMAND, "-N", "--no-journal", *extra],
            env=clean_env(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
    assert until(lambda: os.path.exists(path)), (tmp / "daemon.err").read_text()
    return proc, path


@pytest.mark.skipif(ACTIVATE is None, reason="systemd-socket-activate is not installed")
def test_socket_activated_daemon_answers_the_first_client(tmp: Path) -> None:
    with fake_systemd(tmp) as systemd:
        # --socket names another path: the passed socket wins, nothing is bound there.
        proc, path = start_activated(
            tmp, "--socket", str(tmp / "unused"), env={"NOTIFY_SOCKET": systemd.path}
        )
        try:
            # The first client connects before the daemon even runs; it is answered.
            with SyncClient(path, timeout=30) as xs:
                xs.write("/activated", b"yes")
                assert xs.read("/activated") == b"yes"
            assert systemd.wait_for("READY")["READY"] == "1"
            assert not os.path.exists(tmp / "unused")
            with SyncClient(path, timeout=10) as xs:  # and the next ones too
                assert xs.read("/activated") == b"yes"
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(15) == 0
        finally:
            proc.kill()
            proc.wait()
        messages = systemd.messages + systemd.pending()
        assert [m.get("READY") for m in messages if "READY" in m] == ["1"]  # exactly once
        assert any(m.get("STOPPING") == "1" for m in messages)
    # The socket is systemd's: a clean stop leaves it for the next activation.
    assert os.path.exists(path)
    log = (tmp / "daemon.err").read_text()
    assert "from systemd" in log, log


@pytest.mark.skipif(ACTIVATE is None, reason="systemd-socket-activate is not installed")
def test_a_passed_socket_that_is_not_a_stream_socket_is_refused(tmp: Path) -> None:
    assert ACTIVATE is not None
    path = str(tmp / "dgram")
    with open(tmp / "daemon.err", "wb") as err:
        proc = subprocess.Popen(
            [ACTIVATE, "--datagram", "-l", path, *COMMAND, "-N", "--no-journal"],
            env=clean_env(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
    try:
        assert until(lambda: os.path.exists(path))
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
            s.sendto(b"wake up", path)  # a datagram starts the service
        assert proc.wait(30) == 1
    finally:
        proc.kill()
        proc.wait()
    text = (tmp / "daemon.err").read_text()
    assert "pyxenstored: cannot serve the sockets systemd passed:" in text, text
    assert "Traceback" not in text


@pytest.mark.skipif(ACTIVATE is None, reason="systemd-socket-activate is not installed")
def test_a_detaching_start_serves_the_passed_socket(tmp: Path, pids: Pids) -> None:
    """Without -N the command forks: the descriptors are taken before the fork (LISTEN_PID
    names the command), and the detached daemon serves them."""
    assert ACTIVATE is not None
    path = str(tmp / "socket")
    proc = subprocess.Popen(
        [ACTIVATE, "-l", path, *COMMAND, "--no-journal", "--pid-file", str(tmp / "pid"),
         "--log-file", str(tmp / "log")],
        env=clean_env(),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        assert until(lambda: os.path.exists(path))
        with SyncClient(path, timeout=30) as xs:
            xs.write("/detached", b"yes")
        assert proc.wait(30) == 0  # the command returns once the daemon serves
        assert pids.adopt(tmp / "pid") is not None
        with SyncClient(path, timeout=10) as xs:
            assert xs.read("/detached") == b"yes"
    finally:
        proc.kill()
        proc.wait()
    assert "from systemd" in (tmp / "log").read_text()
