"""pyxenstore against xenstore-utils on real Xen, without pytest: the real-Xen ``tool``
scenario runs this in dom0 (over /dev/xen/xenbus) and inside a PV guest (over the guest's
own /dev/xen/xenbus, found as libxenstore finds it).

``python tooldiff.py CASES_PY --top PREFIX --pyxenstore CMD [--quick] [--verbs V,...]
[--control PATH]``

For each case of ``CASES_PY`` (tests/tool/cases.py, loaded by its path: the guest image
holds it, not the test suite) it builds the case's tree under ``PREFIX<n>``, runs the C
tool, records the subtree, rebuilds the tree, runs ``CMD VERB ARGS`` and records the
subtree again, then compares stdout bytes, exit status, whether stderr is empty, and the
two subtrees (values and permissions), as tests/tool/test_differential.py does.

Each case prints one line as soon as it is done (``TOOLDIFF ok NAME (S s)`` or
``TOOLDIFF FAIL NAME: what differs``), so a scenario log that stops early says where;
``TOOLDIFF start NAME`` precedes it. The last line is ``TOOLDIFF-RESULT PASS|FAIL
passed/total``. Exit status 0 iff every case passed. Imports only the standard library
and pyxenstored (the guest has nothing else).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from types import ModuleType

from pyxenstored.client import SyncClient
from pyxenstored.errors import XenstoreError

Tree = list[tuple[str, bytes | None, list[str]]]


def load_cases(path: str) -> ModuleType:
    """tests/tool/cases.py as a module (it imports only pyxenstored)."""
    spec = importlib.util.spec_from_file_location("tool_cases", path)
    if spec is None or spec.loader is None:
        raise SystemExit(f"tooldiff: cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def connect() -> SyncClient:
    """A client found as libxenstore finds xenstored (XENSTORED_PATH, socket, device)."""
    return SyncClient(os.environ.get("XENSTORED_PATH") or None, timeout=30)


def dump(top: str) -> Tree:
    """Every node under ``top`` (inclusive) with its value and permissions."""
    out: Tree = []
    with connect() as xs:

        def walk(path: str) -> None:
            try:
                out.append((path, xs.read(path), xs.get_perms(path)))
                children = xs.directory(path)
            except XenstoreError as e:
                out.append((path, None, [type(e).__name__]))
                return
            for child in children:
                walk(f"{path}/{child}")

        walk(top)
    return out


def run(argv: Sequence[str]) -> subprocess.CompletedProcess[bytes]:
    """``argv`` with nothing on stdin, its output captured (bounded: a hang is a failure)."""
    try:
        return subprocess.run(
            list(argv), stdin=subprocess.DEVNULL, capture_output=True, timeout=120, check=False
        )
    except subprocess.TimeoutExpired as e:
        return subprocess.CompletedProcess(list(argv), 124, e.stdout or b"", b"timed out")


def compare_case(
    build: Callable[[SyncClient, str], None],
    c_argv: list[str],
    py_argv: list[str],
    top: str,
) -> list[str]:
    """What differs between the two tools on this case (empty when nothing does)."""
    with connect() as xs:
        build(xs, top)
    c = run(c_argv)
    c_tree = dump(top)
    with connect() as xs:
        build(xs, top)
    py = run(py_argv)
    py_tree = dump(top)
    problems = []
    if py.stdout != c.stdout:
        problems.append(f"stdout: C {c.stdout!r}, ours {py.stdout!r}")
    if py.returncode != c.returncode:
        problems.append(f"exit status: C {c.returncode}, ours {py.returncode}")
    if bool(py.stderr) != bool(c.stderr):
        problems.append(f"stderr: C {c.stderr!r}, ours {py.stderr!r}")
    if b"Traceback" in py.stderr:
        problems.append(f"traceback: {py.stderr.decode(errors='replace')}")
    if py_tree != c_tree:
        problems.append(f"tree: C {c_tree!r}, ours {py_tree!r}")
    return problems


def c_tool(verb: str, control: str) -> str | None:
    """The xenstore-utils program for ``verb`` (None when this system has none)."""
    if verb == "control":
        return control if os.access(control, os.X_OK) else None
    return shutil.which(f"xenstore-{verb}")


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("cases", help="tests/tool/cases.py")
    p.add_argument("--top", required=True, help="the cases' top nodes are PREFIX0, PREFIX1...")
    p.add_argument("--pyxenstore", required=True, help="how to start pyxenstore (shell words)")
    p.add_argument("--quick", action="store_true", help="only cases.QUICK (one per verb)")
    p.add_argument("--verbs", help="only these verbs (comma-separated)")
    p.add_argument("--control", default="/usr/lib/xen-4.17/bin/xenstore-control")
    args = p.parse_args(argv)
    cases = load_cases(args.cases)
    chosen: list[tuple[str, list[str]]] = cases.quick_cases() if args.quick else cases.CASES
    if args.verbs:
        chosen = [(verb, words) for verb, words in chosen if verb in args.verbs.split(",")]
    pyxenstore = shlex.split(args.pyxenstore)
    passed = 0
    for n, (verb, template) in enumerate(chosen):
        name = cases.case_name(verb, template)
        c_binary = c_tool(verb, args.control)
        if c_binary is None:
            print(f"TOOLDIFF FAIL {name}: no xenstore-utils program for {verb}", flush=True)
            continue
        top = f"{args.top}{n}"
        words = [a.replace("{t}", top) for a in template]
        print(f"TOOLDIFF start {name}", flush=True)
        t0 = time.monotonic()
        try:
            problems = compare_case(
                cases.build, [c_binary, *words], [*pyxenstore, verb, *words], top
            )
        except (OSError, XenstoreError) as e:
            problems = [f"harness: {type(e).__name__}: {e}"]
        took = time.monotonic() - t0
        if problems:
            print(f"TOOLDIFF FAIL {name} ({took:.1f} s): " + "; ".join(problems), flush=True)
        else:
            passed += 1
            print(f"TOOLDIFF ok {name} ({took:.1f} s)", flush=True)
        try:
            with connect() as xs:
                xs.rm(top)
        except (OSError, XenstoreError) as e:
            print(f"TOOLDIFF cannot remove {top}: {e}", flush=True)
    verdict = "PASS" if chosen and passed == len(chosen) else "FAIL"
    print(f"TOOLDIFF-RESULT {verdict} {passed}/{len(chosen)}", flush=True)
    return 0 if verdict == "PASS" else 1


if __name__ == "__main__":
    sys.exit(main())
