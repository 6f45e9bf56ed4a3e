"""Interoperability with Debian's real Xen tools (libxenstore via XENSTORED_PATH).

Each test is skipped, with the reason, when its tool is not installed.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import textwrap
import time
from collections.abc import Sequence

import pytest

from pyxenstored.client import SyncClient, WatchEvent

XEN_LIB = "/usr/lib/xen-4.17"
TEST_XENSTORE = f"{XEN_LIB}/bin/test-xenstore"
XEN_PYTHONPATH = f"{XEN_LIB}/lib/python"
SYSTEM_PYTHON = "/usr/bin/python3"


def need(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        pytest.skip(f"{tool} is not installed (Debian package xen-utils-common/xen-utils)")
    return path


def xs_env(socket_path: str) -> dict[str, str]:
    return {**os.environ, "XENSTORED_PATH": socket_path}


def tool(
    socket_path: str, *argv: str, check: bool = True, timeout: float = 20
) -> subprocess.CompletedProcess[str]:
    need(argv[0])
    return subprocess.run(
        list(argv),
        env=xs_env(socket_path),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=check,
    )


def test_write_read_rm(module_daemon: str) -> None:
    tool(module_daemon, "xenstore-write", "/interop/a", "alpha", "/interop/b", "beta gamma")
    assert tool(module_daemon, "xenstore-read", "/interop/a").stdout == "alpha\n"
    assert tool(module_daemon, "xenstore-read", "/interop/b").stdout == "beta gamma\n"
    with SyncClient(module_daemon, timeout=5) as xs:
        assert xs.read("/interop/a") == b"alpha"
        xs.write("/interop/c", b"from python")
    assert tool(module_daemon, "xenstore-read", "/interop/c").stdout == "from python\n"
    tool(module_daemon, "xenstore-rm", "/interop/a")
    missing = tool(module_daemon, "xenstore-read", "/interop/a", check=False)
    assert missing.returncode != 0
    with SyncClient(module_daemon, timeout=5) as xs:
        assert sorted(xs.directory("/interop")) == ["b", "c"]


def test_ls_full_paths_with_permissions(module_daemon: str) -> None:
    with SyncClient(module_daemon, timeout=5) as xs:
        xs.write("/ls/one", b"1")
        xs.write("/ls/two/three", b"3")
        xs.set_perms("/ls/one", ["b0", "r7"])
    out = tool(module_daemon, "xenstore-ls", "-f", "-p", "/ls").stdout.splitlines()
    rows = {line.split(" = ")[0]: line for line in out}
    assert set(rows) == {"/ls/one", "/ls/two", "/ls/two/three"}
    assert '"1"' in rows["/ls/one"] and "(b0,r7)" in rows["/ls/one"]
    assert '"3"' in rows["/ls/two/three"] and "(n0)" in rows["/ls/two/three"]


def test_chmod_list_exists(module_daemon: str) -> None:
    tool(module_daemon, "xenstore-write", "/perm/node", "x", "/perm/other", "y")
    tool(module_daemon, "xenstore-chmod", "/perm/node", "r3", "w4", "b5")
    with SyncClient(module_daemon, timeout=5) as xs:
        assert xs.get_perms("/perm/node") == ["r3", "w4", "b5"]
    assert sorted(tool(module_daemon, "xenstore-list", "/perm").stdout.split()) == ["node", "other"]
    assert tool(module_daemon, "xenstore-exists", "/perm/node", check=False).returncode == 0
    assert tool(module_daemon, "xenstore-exists", "/perm/nope", check=False).returncode != 0


def test_xenstore_watch_sees_our_writes(module_daemon: str) -> None:
    need("xenstore-watch")
    proc = subprocess.Popen(
        ["xenstore-watch", "-n", "3", "/iw"],
        env=xs_env(module_daemon),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "/iw"  # the initial event
        with SyncClient(module_daemon, timeout=5) as xs:
            xs.write("/iw/x", b"1")
            xs.rm("/iw")
        out, _ = proc.communicate(timeout=10)
        assert out.split() == ["/iw/x", "/iw"]
        assert proc.returncode == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_our_watch_sees_tool_writes(module_daemon: str) -> None:
    with SyncClient(module_daemon, timeout=5) as xs:
        xs.watch("/tw", "t")
        assert xs.read_watch(5) == WatchEvent("/tw", "t")
        tool(module_daemon, "xenstore-write", "/tw/k", "v")
        assert xs.read_watch(5) == WatchEvent("/tw/k", "t")


def test_upstream_test_xenstore(module_daemon: str) -> None:
    if not os.access(TEST_XENSTORE, os.X_OK):
        pytest.skip(f"{TEST_XENSTORE} is not installed (Debian package xen-utils-4.17)")
    start = time.monotonic()
    result = subprocess.run(
        [TEST_XENSTORE, "-i", "20"],
        env=xs_env(module_daemon),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "avg" in result.stdout
    assert time.monotonic() - start < 30


LOWLEVEL_SCRIPT = textwrap.dedent(
    """
    import json
    import xen.lowlevel.xs as xs

    h = xs.xs()
    out = {}
    h.write("", "/ll/a", "alpha")
    out["read"] = h.read("", "/ll/a").decode()
    h.mkdir("", "/ll/dir")
    out["ls"] = sorted(h.ls("", "/ll"))
    h.set_permissions("", "/ll/a", [{"dom": 0}, {"dom": 5, "read": True}])
    out["perms"] = h.get_permissions("", "/ll/a")
    t = h.transaction_start()
    h.write(t, "/ll/tx", "in-tx")
    out["outside"] = h.read("", "/ll/tx")
    out["commit"] = h.transaction_end(t)
    out["after"] = h.read("", "/ll/tx").decode()
    t = h.transaction_start()
    h.write(t, "/ll/aborted", "x")
    h.transaction_end(t, 1)
    out["aborted"] = h.read("", "/ll/aborted")
    h.watch("/ll", "tok")
    first = h.read_watch()
    h.write("", "/ll/b", "beta")
    second = h.read_watch()
    out["events"] = [[first[0], first[1]], [second[0], second[1]]]
    h.unwatch("/ll", "tok")
    out["domain_path"] = h.get_domain_path(7)
    h.rm("", "/ll/dir")
    out["ls2"] = sorted(h.ls("", "/ll"))
    out["read_missing"] = h.read("", "/ll/missing")
    try:
        h.get_permissions("", "/ll/missing")
        out["missing"] = "no error"
    except xs.Error as err:
        out["missing"] = err.args[0]
    print(json.dumps(out))
    """
)


def _system_python_with_xs() -> Sequence[str]:
    if not os.access(SYSTEM_PYTHON, os.X_OK):
        pytest.skip(f"{SYSTEM_PYTHON} is not installed")
    env = {**os.environ, "PYTHONPATH": XEN_PYTHONPATH}
    probe = subprocess.run(
        [SYSTEM_PYTHON, "-c", "import xen.lowlevel.xs"],
        env=env,
        capture_output=True,
        timeout=20,
    )
    if probe.returncode != 0:
        pytest.skip(f"xen.lowlevel.xs does not import in {SYSTEM_PYTHON} (python3-xen missing?)")
    return [SYSTEM_PYTHON, "-c", LOWLEVEL_SCRIPT]


def test_xen_lowlevel_xs(module_daemon: str) -> None:
    argv = _system_python_with_xs()
    env = {**xs_env(module_daemon), "PYTHONPATH": XEN_PYTHONPATH}
    result = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["read"] == "alpha"
    assert out["ls"] == ["a", "dir"]
    assert out["perms"] == [
        {"dom": 0, "read": False, "write": False},
        {"dom": 5, "read": True, "write": False},
    ]
    assert out["outside"] is None
    assert out["commit"] is True
    assert out["after"] == "in-tx"
    assert out["aborted"] is None
    assert out["events"] == [["/ll", "tok"], ["/ll/b", "tok"]]
    assert out["domain_path"] == "/local/domain/7"
    assert out["ls2"] == ["a", "b", "tx"]
    assert out["read_missing"] is None
    assert out["missing"] == 2  # ENOENT
    with SyncClient(module_daemon, timeout=5) as xs:
        assert xs.get_perms("/ll/a") == ["n0", "r5"]
