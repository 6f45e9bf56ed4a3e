"""``pyxenstore``'s own behaviour: what xenstore-utils does not have (``--json``,
``mkdir``, ``getperms``, ``tx``, ``quota``, ``watch --depth``) and the failure paths
(no daemon, bad arguments: one line, exit 1, never a traceback)."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
from pathlib import Path

import pytest

from pyxenstored.client import SyncClient
from pyxenstored.tool import main as tool_main
from pyxenstored.tool.text import atoi, sanitise, unsanitise

from .helpers import PYXENSTORE, pyxs, run


@pytest.fixture
def xs(daemon: str) -> SyncClient:
    client = SyncClient(daemon, timeout=10)
    client.write("/j/a", b"alpha")
    client.write("/j/bin", b"\xff\x00z")
    client.write("/j/e/f", b"x")
    client.set_perms("/j/a", ["n0", "r5"])
    return client


def test_json_read_list_exists_getperms_ls(daemon: str, xs: SyncClient) -> None:
    out = pyxs(daemon, "read", "--json", "/j/a", "/j/bin")
    assert out.returncode == 0
    assert json.loads(out.stdout) == {"/j/a": "alpha", "/j/bin": {"base64": "/wB6"}}
    assert json.loads(pyxs(daemon, "list", "--json", "/j").stdout) == {"/j": ["a", "bin", "e"]}
    out = pyxs(daemon, "exists", "--json", "/j/a", "/j/nope")
    assert (out.returncode, json.loads(out.stdout)) == (1, {"/j/a": True, "/j/nope": False})
    assert json.loads(pyxs(daemon, "getperms", "--json", "/j/a").stdout) == {"/j/a": ["n0", "r5"]}
    nodes = json.loads(pyxs(daemon, "ls", "--json", "-p", "/j").stdout)
    assert nodes[0] == {"path": "/j/a", "value": "alpha", "perms": ["n0", "r5"]}
    assert [n["path"] for n in nodes] == ["/j/a", "/j/bin", "/j/e", "/j/e/f"]


def test_json_read_of_a_missing_key_prints_nothing_and_fails(daemon: str, xs: SyncClient) -> None:
    out = pyxs(daemon, "read", "--json", "/j/a", "/j/nope")
    assert (out.returncode, out.stdout) == (1, b"")
    assert out.stderr == b"pyxenstore read: couldn't read path /j/nope\n"


def test_mkdir_and_getperms(daemon: str, xs: SyncClient) -> None:
    assert pyxs(daemon, "mkdir", "/j/m1", "/j/a").returncode == 0
    assert xs.read("/j/m1") == b"" and xs.read("/j/a") == b"alpha"
    out = pyxs(daemon, "getperms", "-p", "/j/a", "/j/m1")
    assert out.stdout == b"/j/a: n0 r5\n/j/m1: n0\n"
    # getperms' output is chmod's input
    modes = out.stdout.decode().splitlines()[0].split()[1:]
    assert pyxs(daemon, "chmod", "/j/m1", *modes).returncode == 0
    assert xs.get_perms("/j/m1") == ["n0", "r5"]
    bad = pyxs(daemon, "mkdir", "/j//x")
    assert bad.returncode == 1 and bad.stderr.startswith(b"pyxenstore mkdir: could not create")


def test_tx_runs_operations_in_one_transaction(daemon: str, xs: SyncClient) -> None:
    out = pyxs(
        daemon,
        "tx",
        "write /j/t/1 'one two'",
        "read /j/t/1",
        "list /j/e",
        "exists /j/nope",
        "getperms /j/a",
        "chmod /j/t/1 n0 b2",
        "mkdir /j/t/2",
        "rm /j/e",
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout == b"one two\nf\nfalse\nn0 r5\n"
    assert xs.get_perms("/j/t/1") == ["n0", "b2"]
    assert xs.read("/j/t/2") == b""
    assert "e" not in xs.directory("/j")


def test_tx_from_stdin_with_json(daemon: str, xs: SyncClient) -> None:
    script = b"# set up\nwrite /j/s v\n\nread /j/s\nexists /j/s\n"
    out = pyxs(daemon, "tx", "--json", stdin=script)
    assert json.loads(out.stdout) == [None, "v", True]


def test_tx_failure_aborts_everything(daemon: str, xs: SyncClient) -> None:
    out = pyxs(daemon, "tx", "write /j/gone 1", "read /j/nope")
    assert out.returncode == 1
    assert out.stderr == b"pyxenstore tx: read /j/nope: No such file or directory (ENOENT)\n"
    assert "gone" not in xs.directory("/j")
    bad = pyxs(daemon, "tx", "frobnicate /j")
    assert bad.returncode == 1 and b"unknown operation" in bad.stderr
    assert pyxs(daemon, "tx", "write /j/x").returncode == 1


def test_tx_retries_a_conflict(
    daemon: str, xs: SyncClient, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Another client changes what the transaction read before it commits: the commit
    gets EAGAIN, the command starts over and prints only the committed attempt's output."""
    from pyxenstored.tool import tx

    xs.write("/j/c", b"0")
    real_apply = tx._apply
    calls: list[list[str]] = []

    def meddling_apply(t: object, op: list[str]) -> object:
        result = real_apply(t, op)  # type: ignore[arg-type]
        calls.append(op)
        if len(calls) == 1:  # after the first attempt's read, before its commit
            xs.write("/j/c", b"changed")
        return result

    monkeypatch.setattr(tx, "_apply", meddling_apply)
    status = tool_main.main(["--connect", daemon, "tx", "read /j/c", "write /j/c done"])
    assert status == 0
    assert len(calls) == 4  # two attempts of two operations
    assert capsys.readouterr().out == "changed\n"
    assert xs.read("/j/c") == b"done"


def test_tx_gives_up_after_its_retries(
    daemon: str, xs: SyncClient, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from pyxenstored.tool import tx

    real_apply = tx._apply

    def always_meddle(t: object, op: list[str]) -> object:
        result = real_apply(t, op)  # type: ignore[arg-type]
        if op[0] == "read":
            xs.write("/j/a", os.urandom(4).hex())
        return result

    monkeypatch.setattr(tx, "_apply", always_meddle)
    status = tool_main.main(
        ["--connect", daemon, "tx", "--retries", "2", "read /j/a", "write /j/a mine"]
    )
    assert status == 1
    err = capsys.readouterr().err
    assert err == "pyxenstore tx: the transaction met a conflict 3 times; gave up\n"


def test_quota(daemon: str) -> None:
    out = pyxs(daemon, "quota")
    assert out.returncode == 0
    values = dict(line.split() for line in out.stdout.decode().splitlines())
    assert "nodes" in values and values["nodes"].isdigit()
    assert pyxs(daemon, "quota", "nodes", "4321").returncode == 0
    assert pyxs(daemon, "quota", "nodes").stdout == b"4321\n"
    assert json.loads(pyxs(daemon, "quota", "--json", "nodes").stdout) == {"nodes": 4321}
    bad = pyxs(daemon, "quota", "no-such-quota")
    assert bad.returncode == 1 and bad.stderr.startswith(b"pyxenstore quota: ")


def test_control_json(daemon: str) -> None:
    out = pyxs(daemon, "control", "--json", "print", "hi")
    assert out.returncode == 0
    assert isinstance(json.loads(out.stdout), str)


def test_watch_json_and_depth(daemon: str, xs: SyncClient) -> None:
    proc = subprocess.Popen(
        [PYXENSTORE, "watch", "--json", "--depth", "1", "-n", "2", "/j"],
        env={**os.environ, "XENSTORED_PATH": daemon},
        stdout=subprocess.PIPE,
    )
    assert proc.stdout is not None
    first = json.loads(proc.stdout.readline())
    assert first == {"path": "/j", "token": "/j"}
    xs.write("/j/e/f/deeper", b"not seen: depth 3")
    xs.write("/j/shallow", b"seen")
    second = json.loads(proc.stdout.readline())
    assert second == {"path": "/j/shallow", "token": "/j"}
    assert proc.wait(15) == 0


def test_no_daemon_is_one_line_and_status_1(tmp_path: Path) -> None:
    for argv in (["read", "/x"], ["ls"], ["watch", "/x"], ["tx", "read /x"], ["quota"]):
        out = run([PYXENSTORE, *argv], str(tmp_path / "nothing"))
        assert out.returncode == 1, argv
        assert out.stdout == b""
        assert len(out.stderr.splitlines()) == 1 and b"Traceback" not in out.stderr, out.stderr
    out = run([PYXENSTORE, "control", "help"], str(tmp_path / "nothing"))
    assert out.returncode == 1  # xenstore-control's status when xenstored cannot be reached


def test_usage_errors_exit_1_help_exits_0(daemon: str) -> None:
    out = pyxs(daemon, "read")
    assert out.returncode == 1 and out.stderr.startswith(b"usage: pyxenstore read")
    assert pyxs(daemon, "frobnicate").returncode == 1
    out = pyxs(daemon, "read", "--help")
    assert out.returncode == 0 and b"--prefix" in out.stdout
    assert pyxs(daemon, "--timeout", "x", "read", "/a").returncode == 1


def test_a_verb_module_plugs_in_with_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The contract of tool/main.py: a module with register(subparsers) in COMMANDS."""

    class Hello:
        @staticmethod
        def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
            p = subparsers.add_parser("hello", help="say hello")
            p.add_argument("name")
            p.set_defaults(func=lambda args: print(f"hello {args.name}") or 7)

    monkeypatch.setattr(tool_main, "COMMANDS", [*tool_main.COMMANDS, Hello])
    assert tool_main.main(["hello", "world"]) == 7
    assert capsys.readouterr().out == "hello world\n"


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        (b"plain text ~", "plain text ~"),
        (b"\t\n\r\\", "\\t\\n\\r\\\\"),
        (b"\x00\x07\x08\x1f\x7f\xff", "\\000\\007\\x08\\x1f\\x7f\\xff"),
    ],
)
def test_sanitise_and_back(raw: bytes, shown: str) -> None:
    assert sanitise(raw) == shown
    assert unsanitise(shown.encode()) == raw


def test_unsanitise_is_lenient_as_c() -> None:
    assert unsanitise(b"\\q\\x\\xg") == b"qxxg"
    assert unsanitise(b"a\\") == b"a\x00"
    assert unsanitise(b"\\777") == b"\xff"
    assert unsanitise(b"\\x414") == b"A4"


def test_atoi_as_c() -> None:
    assert [atoi(t) for t in ("5", " 12x", "-3", "+4", "", "x1", "4294967297")] == [
        5,
        12,
        -3,
        4,
        0,
        0,
        1,
    ]
