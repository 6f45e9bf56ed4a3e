"""Every fuzz target for a few seconds in ``make test`` (``make fuzz`` runs them long).

Each target runs its seed corpus, then a short hypothesis run: random bytes and seeds
with a few bytes changed (derandomized, so that ``make test`` is reproducible;
``make fuzz`` is where inputs are searched for). The fuzzing driver itself is tested in
its hypothesis mode, and in its atheris mode where atheris is installed.
"""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from . import TARGETS
from . import __main__ as driver
from .sample import journal_sample, stream_sample

_FAST = settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=list(HealthCheck),
)


def _mutated(seed: bytes) -> st.SearchStrategy[bytes]:
    edits = st.lists(
        st.tuples(st.integers(0, len(seed)), st.binary(min_size=1, max_size=6)),
        min_size=1,
        max_size=3,
    )

    def apply(changes: list[tuple[int, bytes]]) -> bytes:
        out = bytearray(seed)
        for pos, data in changes:
            out[pos : pos + len(data)] = data
        return bytes(out)

    return edits.map(apply)


@pytest.mark.parametrize("name", list(TARGETS))
def test_seed_corpus_passes(name: str) -> None:
    corpus = driver.seeds(name)
    assert corpus, f"no seeds in {driver.CORPUS / name}"
    one_input = driver.load_target(name)
    for data in corpus:
        one_input(data)


@pytest.mark.parametrize("name", list(TARGETS))
def test_target_for_a_few_seconds(name: str) -> None:
    one_input = driver.load_target(name)
    seeds = driver.seeds(name)
    strategy = st.binary(max_size=1024) | st.sampled_from(seeds).flatmap(_mutated)

    @_FAST
    @given(strategy)
    def run(data: bytes) -> None:
        one_input(data)

    run()


def test_samples_replay_whole() -> None:
    """The stream and journal seeds are what they claim: they restore, with state."""
    from pyxenstored.state import snapshot
    from pyxenstored.state.journal import replay

    from .sample import new_engine

    restored = snapshot.load(stream_sample(), new_engine()).engine
    assert "/local/domain/1/data/y" not in restored.tree.nodes  # in an open transaction
    assert "/local/domain/1/data/x" not in restored.tree.nodes  # removed by its target
    assert restored.tree.nodes["/local/domain/1"].perms == ((0, 1),)  # r2 went with dom2
    assert restored.watches.count == 2 and len(restored.open_txns) == 1
    replayed = replay(journal_sample(), new_engine)
    assert replayed.dropped == 0 and replayed.frames > 10
    assert set(replayed.restored.engine.domains) == {1, 2}


def test_the_invariant_checker_sees_broken_state() -> None:
    """The checker is no test that cannot fail: each kind of damage is reported."""
    from .invariants import engine_problems
    from .sample import new_engine, run_script

    engine = new_engine()
    run_script(engine)
    assert engine_problems(engine) == []
    tree = engine.tree
    tree.owner_count[1] += 1
    conn = engine.domains[1].conn
    assert conn is not None
    conn.watch_bytes += 1
    conn.out.append(b"\x10\0\0\0" + bytes(12))  # an error reply that says 0 bytes, has none
    conn.out_bytes += 16
    problems = engine_problems(engine)
    assert any("node count of domain 1" in p for p in problems), problems
    assert any("watch bytes" in p for p in problems), problems
    assert any("bad error reply" in p for p in problems), problems
    engine.connections.pop(conn.id)
    assert any("watch of dead connection" in p for p in engine_problems(engine))


def test_driver_runs_hypothesis_without_atheris(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(driver, "_atheris", lambda: None)
    runs, _, verdict = driver.run_target("frames", 1, tmp_path)
    assert runs > 0 and verdict.startswith("ok (hypothesis"), verdict


def test_driver_runs_atheris(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    try:
        importlib.import_module("atheris")
    except ImportError:
        pytest.skip("atheris is not installed (make fuzz installs it: pip install '.[fuzz]')")
    monkeypatch.chdir(Path(__file__).resolve().parent.parent)  # python -m fuzz finds us
    runs, _, verdict = driver.run_target("frames", 2, tmp_path)
    assert verdict == "ok" and runs > 0, (verdict, (tmp_path / "frames.log").read_text()[-2000:])
