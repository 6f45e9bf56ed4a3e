"""``make fuzz``: run every fuzz target for a time budget; ``python -m fuzz --help``.

With atheris installed (``pip install '.[fuzz]'``, which ``make fuzz`` does), each
target runs in its own process under libFuzzer, coverage-guided (the package and the
harness instrumented), from the seed corpus ``tests/fuzz/corpus/<target>/`` plus a work
corpus under ``--work`` (new inputs go there, never into the repository), with a memory
limit and a time limit per input: an input that takes more than 1 s of CPU is a hang (a
failure); libFuzzer's alarm counts wall-clock time, so an input it stops is run again
and judged by its CPU time, and fuzzing goes on after a timeout that was the load. A failing
input is saved as ``<work>/artifacts/<target>-crash-*``: turn it into a regression test.

Without atheris the same targets run hypothesis-driven (random bytes, then the seeds
mutated by hypothesis), not coverage-guided; the summary says which driver ran.

The summary (one line per target: runs, seconds, runs/s, result) is printed and written
to ``<work>/summary.txt``. Exit status 1 if any target failed.

``python -m fuzz seeds`` writes the seed corpus again (see ``fuzz.seeds``).
"""

from __future__ import annotations

import argparse
import importlib
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from . import TARGETS

HERE = Path(__file__).resolve().parent
CORPUS = HERE / "corpus"
_DONE = re.compile(r"Done (\d+) runs in (\d+) second")


def _atheris() -> Any | None:
    try:
        return importlib.import_module("atheris")
    except ImportError:
        return None


def load_target(name: str) -> Callable[[bytes], None]:
    """The ``one_input`` function of target ``name``."""
    module = importlib.import_module(TARGETS[name])
    fn: Callable[[bytes], None] = module.one_input
    return fn


def seeds(name: str) -> list[bytes]:
    """The seed corpus of ``name``, in file-name order."""
    folder = CORPUS / name
    return [p.read_bytes() for p in sorted(folder.iterdir())] if folder.is_dir() else []


def _run_atheris(name: str, argv: list[str]) -> None:
    """Inside the child process: instrument and fuzz one target (never returns)."""
    atheris = _atheris()
    assert atheris is not None
    # Only the daemon is instrumented: the harness's own branches are no coverage.
    with atheris.instrument_imports(include=["pyxenstored"]):
        one_input = load_target(name)
    atheris.Setup([sys.argv[0], *argv], one_input)
    atheris.Fuzz()


def run_target(name: str, seconds: int, work: Path) -> tuple[int, float, str]:
    """Fuzz ``name`` for ``seconds``; return (runs, seconds, verdict)."""
    if _atheris() is not None:
        return _fuzz_atheris(name, seconds, work)
    return _fuzz_hypothesis(name, seconds)


def _fuzz_atheris(name: str, seconds: int, work: Path) -> tuple[int, float, str]:
    """libFuzzer in a child process, restarted after a timeout that was the machine's
    load: its wall-clock alarm fires for an input that merely waited for the CPU, so a
    timeout's input is run again here and counts as a hang only if it takes more than
    :data:`HANG_SECONDS` of CPU time."""
    corpus = work / "corpus" / name
    artifacts = work / "artifacts"
    corpus.mkdir(parents=True, exist_ok=True)
    artifacts.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    runs = 0
    attempt = 0
    notes: list[str] = []
    while True:
        left = int(seconds - (time.monotonic() - start))
        if left < 1:
            break
        attempt += 1
        log_path = work / f"{name}.{attempt}.log"
        rc, done, text = _libfuzzer(name, left, corpus, artifacts, log_path)
        runs += done
        if rc == 0:
            break
        timeout = re.search(r"Test unit written to (\S*-timeout-\S+)", text)
        if timeout is None:
            return runs, time.monotonic() - start, f"FAILED (exit {rc}, see {log_path})"
        spent = _cpu_seconds(name, Path(timeout.group(1)))
        if spent > HANG_SECONDS:
            return (
                runs,
                time.monotonic() - start,
                (f"FAILED: a hang ({spent:.2f} s of CPU for {timeout.group(1)})"),
            )
        notes.append(f"{spent * 1000:.0f} ms")
    verdict = "ok"
    if notes:
        verdict += f" ({len(notes)} load-induced timeouts: re-run in {', '.join(notes)} of CPU)"
    return runs, time.monotonic() - start, verdict


#: more CPU time than this for one input is a hang
HANG_SECONDS = 1.0


def _libfuzzer(
    name: str, seconds: int, corpus: Path, artifacts: Path, log_path: Path
) -> tuple[int, int, str]:
    """One libFuzzer child: (exit status, runs, its log)."""
    cmd = [
        sys.executable,
        "-m",
        "fuzz",
        "_child",
        name,
        str(corpus),
        str(CORPUS / name),
        f"-max_total_time={seconds}",
        "-timeout=3",
        "-rss_limit_mb=2048",
        f"-artifact_prefix={artifacts}/{name}-",
        "-print_final_stats=1",
    ]
    with log_path.open("w") as log:
        rc = subprocess.call(cmd, stdout=log, stderr=subprocess.STDOUT, env=os.environ.copy())
    text = log_path.read_text(errors="replace")
    runs = sum(int(m.group(1)) for m in _DONE.finditer(text))
    if not runs:
        found = re.findall(r"stat::number_of_executed_units:\s*(\d+)", text)
        runs = int(found[-1]) if found else 0
    return rc, runs, text


def _cpu_seconds(name: str, path: Path) -> float:
    """CPU time of one input of ``name`` in a fresh process (the harness imported first)."""
    code = (
        "import sys, time; from fuzz.__main__ import load_target; f = load_target(sys.argv[1]);"
        " data = open(sys.argv[2], 'rb').read(); t = time.process_time(); f(data);"
        " print(time.process_time() - t)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, name, str(path)], capture_output=True, text=True, timeout=120
    )
    try:
        return float(out.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return float("inf")  # it failed outright: not a load-induced timeout


def _fuzz_hypothesis(name: str, seconds: int) -> tuple[int, float, str]:
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    one_input = load_target(name)
    pool = seeds(name)
    count = 0
    strategy = st.binary(max_size=4096)
    if pool:
        strategy = strategy | st.sampled_from(pool).flatmap(
            lambda s: st.lists(
                st.tuples(st.integers(0, len(s)), st.binary(max_size=8)), max_size=4
            ).map(lambda edits: _edit(s, edits))
        )

    @settings(
        max_examples=500, deadline=1000, database=None, suppress_health_check=list(HealthCheck)
    )
    @given(strategy)
    def run(data: bytes) -> None:
        nonlocal count
        count += 1
        one_input(data)

    start = time.monotonic()
    try:
        while time.monotonic() - start < seconds:
            run()
    except Exception as err:  # the shrunk failing input is in the message
        return count, time.monotonic() - start, f"FAILED: {type(err).__name__}: {err}"
    return count, time.monotonic() - start, "ok (hypothesis, not coverage-guided)"


def _edit(seed: bytes, edits: list[tuple[int, bytes]]) -> bytes:
    out = bytearray(seed)
    for pos, data in edits:
        out[pos : pos + len(data)] = data
    return bytes(out)


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["_child"]:
        _run_atheris(args[1], args[2:])
        return 0
    if args[:1] == ["seeds"]:
        from .seeds import write_all

        write_all(CORPUS)
        return 0
    parser = argparse.ArgumentParser(prog="python -m fuzz", description=__doc__.split("\n")[0])
    parser.add_argument("targets", nargs="*", help=f"targets (default: all of {list(TARGETS)})")
    parser.add_argument("--seconds", type=int, default=60, help="per target (default 60)")
    parser.add_argument("--work", type=Path, default=Path("run/fuzz"), help="work directory")
    opts = parser.parse_args(args)
    names = opts.targets or list(TARGETS)
    unknown = [n for n in names if n not in TARGETS]
    if unknown:
        parser.error(f"unknown targets {unknown}")
    opts.work.mkdir(parents=True, exist_ok=True)
    driver = "atheris (libFuzzer)" if _atheris() is not None else "hypothesis"
    lines = [f"driver: {driver}, {opts.seconds} s per target"]
    print(lines[0], flush=True)
    failed = False
    total = 0
    for name in names:
        runs, took, verdict = run_target(name, opts.seconds, opts.work)
        total += runs
        failed |= not verdict.startswith("ok")
        line = f"{name:8} {runs:>10} runs {took:7.0f} s {runs / max(took, 1e-9):9.0f}/s  {verdict}"
        lines.append(line)
        print(line, flush=True)
    lines.append(f"total    {total:>10} runs")
    print(lines[-1])
    (opts.work / "summary.txt").write_text("\n".join(lines) + "\n")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
