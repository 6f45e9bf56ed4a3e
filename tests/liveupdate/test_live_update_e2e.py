"""Live update end to end (issue 9): a daemon with socket clients and simulated guests
replaces itself through CONTROL ``live-update`` (our client, and Debian's stock
``xenstore-control`` where it is installed); every connection, watch, open transaction
and pending byte survives, in the same process (exec keeps the pid)."""

from __future__ import annotations

import glob
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from domains.simharness import subprocess_env
from domains.test_rings_processes import KEYS, Procs, introduce, start_guests, wait_for

from pyxenstored import errors
from pyxenstored.client.ring import SimGuest
from pyxenstored.client.sync import Client
from pyxenstored.protocol.wire import HEADER, Op, encode

BINARY = str(Path(sys.executable).with_name("pyxenstored"))


@pytest.fixture
def procs() -> Iterator[Procs]:
    p = Procs()
    try:
        yield p
    finally:
        p.cleanup()


def start(procs: Procs) -> tuple[subprocess.Popen[str], str, dict[str, str]]:
    env = dict(subprocess_env(), XENSTORED_RUNDIR=str(procs.dir))
    sock = str(procs.dir / "socket")
    daemon = procs.spawn(
        "-m", "pyxenstored", "-N", "--sim-xen", str(procs.fakexen), "--socket", sock, env=env
    )
    wait_for(lambda: os.path.exists(sock), "daemon socket", procs)
    return daemon, sock, env


def stock_control() -> str | None:
    found = sorted(glob.glob("/usr/lib/xen-4.*/bin/xenstore-control"))
    return found[-1] if found else None


@pytest.mark.parametrize("tool", ["client", "xenstore-control"])
def test_live_update_keeps_everything(procs: Procs, tool: str) -> None:
    control = stock_control()
    if tool == "xenstore-control" and control is None:
        pytest.skip("Debian's xenstore-control is not installed (xen-utils-4.17)")
    daemon, sock, env = start(procs)
    pid = daemon.pid
    with Client(sock, timeout=20) as dom0, Client(sock, timeout=20) as txc:
        guests = start_guests(procs, dom0, [1, 2])  # each waits on a watch, over its ring
        dom0.write("/lu/a", "1")
        dom0.watch("/lu", "tok", depth=1)
        assert dom0.read_watch(5) is not None
        tx = txc.transaction_start()
        txc.write("/lu/in-tx", "kept", tx=tx)
        assert txc.read("/lu/a", tx=tx) == b"1"
        # A guest in the middle of a request: half of it is in its ring at the update.
        mid = SimGuest(str(procs.fakexen), 3)
        introduce(dom0, 3)
        ring_request = encode(Op.WRITE, 5, 0, b"data/mid\0written across the update")
        assert mid.ring.write(ring_request[:23]) == 23
        mid.kick()
        # Half a request on a raw socket: the rest comes after the update.
        raw = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        raw.connect(sock)
        raw.settimeout(20)
        request = encode(Op.WRITE, 77, 0, b"/lu/raw\0half-and-half")
        raw.sendall(request[:20])

        if tool == "client":
            assert dom0.control("live-update", "-f", BINARY) == b"OK"
            assert dom0.control("live-update", "-s", "-t", "5") == b"OK"  # from the new process
        else:
            assert control is not None
            done = subprocess.run(
                [control, "live-update", "-t", "10", BINARY],
                env=dict(env, XENSTORED_PATH=sock),
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert done.returncode == 0, done.stderr

        assert daemon.poll() is None and daemon.pid == pid
        assert not (procs.dir / "state_dump").exists(), "the state file is consumed"
        assert mid.ring.write(ring_request[23:]) == len(ring_request) - 23
        mid.kick()
        got = b""
        deadline = time.monotonic() + 10
        while len(got) < HEADER.size and time.monotonic() < deadline:
            got += mid.ring.read()
            time.sleep(0.01)
        assert HEADER.unpack_from(got)[:2] == (Op.WRITE, 5), got
        assert dom0.read("/local/domain/3/data/mid") == b"written across the update"
        mid.close()
        raw.sendall(request[20:])
        reply = raw.recv(4096)
        assert HEADER.unpack_from(reply)[:2] == (Op.WRITE, 77), reply
        raw.close()
        # The open transaction commits, with what it did before the update.
        dom0.write("/lu/b", "2")
        txc.transaction_end(tx)
        assert dom0.read("/lu/in-tx") == b"kept"
        paths = set()
        for _ in range(3):
            event = dom0.read_watch(5)
            assert event is not None
            paths.add(event.path)
        assert paths == {"/lu/b", "/lu/in-tx", "/lu/raw"}
        # The guests' rings and watches were adopted: they finish their work.
        for domid in guests:
            dom0.write(f"/local/domain/{domid}/control/cmd", f"stop-{domid}")
        for domid, proc in guests.items():
            assert proc.wait(20) == 0, procs.errors()
            assert dom0.read(f"/local/domain/{domid}/data/done") == f"stop-{domid}".encode()
            assert len(dom0.directory(f"/local/domain/{domid}/data")) == KEYS + 1
        assert dom0.is_domain_introduced(1)
    assert "live update: 3 socket connections adopted" in procs.errors() or tool != "client"


def test_session_rules_and_c_answers(procs: Procs, tmp_path: Path) -> None:
    _, sock, _ = start(procs)
    plain = tmp_path / "not-executable"
    plain.write_text("x")
    with Client(sock, timeout=10) as a, Client(sock, timeout=10) as b:

        def lu(c: Client, *args: str) -> bytes:
            return c.control("live-update", *args)

        assert lu(a, "-f", str(tmp_path / "missing")) == b"File not accessible."
        assert lu(a, "-f", str(plain)) == b"File not executable."
        assert lu(a, "-s") == b"Not in live-update session."
        assert lu(a, "-a") == b"No live-update session active."
        assert lu(a, "-f", BINARY) == b"OK"
        assert lu(b, "-f", BINARY) == b"live-update session already active."
        assert lu(b, "-c", "-N") == b"Not in live-update session."
        assert lu(a, "-s", "-v", "3") == b"Migration stream version not supported."
        for bad in (["-s", "-x"], ["-c"], ["-q"], ["-a", "x"]):
            with pytest.raises(errors.Invalid):
                lu(a, *bad)
        assert lu(b, "-a") == b"OK"  # C lets any connection abort
        assert lu(b, "-f", BINARY) == b"OK"
    # The session ended with its connection (once the daemon has seen it close).
    with Client(sock, timeout=10) as c:
        answers = []
        for _ in range(100):
            answers.append(c.control("live-update", "-f", BINARY))
            if answers[-1] == b"OK":
                break
            time.sleep(0.02)
        assert answers[-1] == b"OK", answers


def foreign_binary(tmp_path: Path, procs: Procs) -> str:
    """A binary that is not pyxenstored as far as the update can tell (its text does not
    name pyxenstored), but runs pyxenstored. It records the arguments it is given in
    ``argv.txt`` (C's command line: only C's options) and adds the simulated Xen and
    the socket, which a C xenstored would not take."""
    real = tmp_path / "real-daemon"
    real.symlink_to(BINARY)
    script = tmp_path / "foreign-xenstored"
    ours = f"--sim-xen {procs.fakexen} --socket {procs.dir / 'socket'}"
    script.write_text(
        '#!/bin/sh\nprintf "%s\\n" "$@" > "$(dirname "$0")/argv.txt"\n'
        f'exec "$(dirname "$0")/real-daemon" "$@" {ours}\n'
    )
    script.chmod(0o755)
    return str(script)


def test_foreign_binary_waits_for_transactions_as_c_does(procs: Procs, tmp_path: Path) -> None:
    daemon, sock, _ = start(procs)
    foreign = foreign_binary(tmp_path, procs)
    with Client(sock, timeout=20) as a, Client(sock, timeout=20) as txc:
        tx = txc.transaction_start()
        txc.write("/c/in-tx", "lost", tx=tx)
        assert a.control("live-update", "-f", foreign) == b"OK"
        # Without -F: after the timeout, C's answer, and nothing happened.
        assert a.control("live-update", "-s", "-t", "1") == b"Overlapping transactions"
        assert a.control("live-update", "-f", foreign) == b"OK"
        # With -F: the update goes on without the transaction.
        assert a.control("live-update", "-s", "-t", "1", "-F") == b"OK"
        with pytest.raises(errors.NoEntry):
            txc.transaction_end(tx)
        with pytest.raises(errors.NoEntry):
            a.read("/c/in-tx")
        a.write("/c/after", "ok")
    assert daemon.poll() is None


def test_no_transaction_open_means_no_wait(procs: Procs, tmp_path: Path) -> None:
    daemon, sock, _ = start(procs)
    with Client(sock, timeout=20) as a:
        a.write("/x", "1")
        assert a.control("live-update", "-f", foreign_binary(tmp_path, procs)) == b"OK"
        assert a.control("live-update", "-s", "-t", "30") == b"OK"
        assert a.read("/x") == b"1"
    assert daemon.poll() is None
    # Without -c, a C binary gets our command line less what C does not know.
    assert (tmp_path / "argv.txt").read_text().split() == ["-N", "-U"]


def test_failed_exec_answers_and_keeps_serving(procs: Procs, tmp_path: Path) -> None:
    daemon, sock, _ = start(procs)
    broken = tmp_path / "broken-xenstored"
    broken.write_bytes(b"\x7fELF not really")
    broken.chmod(0o755)
    with Client(sock, timeout=20) as a:
        a.write("/x", "1")
        assert a.control("live-update", "-f", str(broken)) == b"OK"
        answer = a.control("live-update", "-s", "-t", "5")
        assert answer.startswith(b"Error activating new binary"), answer
        assert a.read("/x") == b"1"
        a.write("/y", "2")
    assert not (procs.dir / "state_dump").exists()
    assert daemon.poll() is None


@pytest.mark.parametrize("state", [None, b"xenstore not really a stream"])
def test_start_with_U_and_no_usable_state_is_one_line(tmp_path: Path, state: bytes | None) -> None:
    """-U never forks, and a missing or corrupt state file is one clear line, exit 1."""
    if state is not None:
        (tmp_path / "state_dump").write_bytes(state)
    env = dict(subprocess_env(), XENSTORED_RUNDIR=str(tmp_path))
    done = subprocess.run(
        [sys.executable, "-m", "pyxenstored", "-U", "--socket", str(tmp_path / "s")],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("pyxenstored: live update: "), done.stderr
    assert "Traceback" not in done.stderr
