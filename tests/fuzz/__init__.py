"""Coverage-guided fuzzing of every input surface (issue 13), and the helpers it shares.

Each target is a module of this package with a ``one_input(data: bytes) -> None``
function that raises (AssertionError or anything else) exactly when it found a bug: a
crash, an uncaught exception, a broken invariant. The same function serves three
drivers:

* ``make fuzz`` (``python -m fuzz``, see ``__main__``): atheris (libFuzzer) where it is
  installed, ``FUZZ_SECONDS`` per target, starting from the seed corpus in
  ``tests/fuzz/corpus/<target>/``; hypothesis-driven otherwise;
* ``tests/fuzz/test_fuzz.py`` in ``make test``: every seed, then a short hypothesis run;
* the regression tests of findings (``tests/fuzz/test_findings.py``).

Targets (``TARGETS``): ``frames`` (frame reader and payload decoders), ``engine``
(requests from several connections and domains, invariants after every step), ``rings``
(a hostile guest writing its page at any moment), ``stream`` (state stream decode and
restore) and ``journal`` (crash journal frames and replay).
"""

from __future__ import annotations

#: target name -> module of this package
TARGETS: dict[str, str] = {
    "frames": "fuzz.t_frames",
    "engine": "fuzz.t_engine",
    "rings": "fuzz.t_rings",
    "stream": "fuzz.t_stream",
    "journal": "fuzz.t_journal",
}
