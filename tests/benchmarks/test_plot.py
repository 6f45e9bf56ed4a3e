"""benchmarks/plot.py: compare.py's JSON becomes series and PNGs (issue 10 item 6).

The documents are made by compare.py's own ``summarize`` from fake runs, so a change to
compare.py's JSON that the plots would not follow fails here.  Drawing needs matplotlib,
the optional ``bench`` extra: those tests skip without it (``make test`` does not install
it; ``make plots`` does).  The benchmark scripts are not a package: they are imported
from ``benchmarks/`` by name, as the scripts import one another.
"""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def bench_module(name: str) -> ModuleType:
    if str(BENCHMARKS) not in sys.path:
        sys.path.insert(0, str(BENCHMARKS))
    return importlib.import_module(name)


def needs_matplotlib() -> None:
    pytest.importorskip(
        "matplotlib", reason="matplotlib is the optional 'bench' extra (make plots installs it)"
    )


def compare_doc(
    workload: str,
    workload_args: list[str],
    runs: dict[str, list[dict[str, float] | None]],
) -> dict[str, Any]:
    """A compare.py --json document: per daemon, each run's metrics (None: a failed run)."""
    compare = bench_module("compare")
    specs = [compare.parse_daemon(name) for name in runs]
    settings = compare.Settings(
        daemons=specs,
        baseline=specs[0].name,
        runs=max(len(v) for v in runs.values()),
        workloads=[workload],
        workload_args={workload: workload_args},
        daemon_prefix=[],
        load_prefix=[],
        shared=Path("/nonexistent"),
        start_timeout=1.0,
        run_timeout=1.0,
        keep=False,
    )
    for daemon, per_run in runs.items():
        for i, values in enumerate(per_run, 1):
            record = compare.RunRecord(i, workload, daemon, ok=values is not None, seconds=1.0)
            if values is None:
                record.error = "load generator failed: timed out"
            else:
                record.report = {
                    "started": 1_765_000_000.0 + i,
                    "loadavg": {"before": [0.5, 0.4, 0.3], "after": [1.5, 0.9, 0.4]},
                    "metrics": {
                        k: {"value": v, "unit": "us", "better": "lower"} for k, v in values.items()
                    },
                }
            settings.records.append(record)
    return {
        "daemons": {d.name: d.template for d in specs},
        "runs": settings.runs,
        "workload_args": settings.workload_args,
        "host": {"cpus": 2},
        "records": [vars(r) for r in settings.records],
        "summary": compare.summarize(settings),
    }


def idle_runs(base: float, slope: float) -> list[dict[str, float] | None]:
    """Two runs of xsload idle's metrics at N = 0, 1000, 5000 (the second 10 % slower)."""
    runs: list[dict[str, float] | None] = []
    for factor in (1.0, 1.1):
        metrics = {}
        for n in (5000, 0, 1000):  # out of order: the series must sort by N
            for op in ("read", "write"):
                metrics[f"N={n}.{op}.median_us"] = factor * (base + slope * n)
                metrics[f"N={n}.{op}.p99_us"] = factor * 2 * (base + slope * n)
        runs.append(metrics)
    return runs


IDLE = {"cxenstored": idle_runs(40, 1.2), "pyxenstored": idle_runs(45, 0.0)}


def test_scaling_series_medians_and_ranges_sorted_by_n() -> None:
    plot = bench_module("plot")
    doc = compare_doc("idle", ["--idle", "0,1000,5000"], IDLE)
    series = plot.scaling_series(doc, "idle", "read", "median_us")
    assert list(series) == ["cxenstored", "pyxenstored"]
    c = series["cxenstored"]
    assert [p.x for p in c] == [0, 1000, 5000]
    assert [p.n for p in c] == [2, 2, 2]
    assert c[2].low == pytest.approx(6040) and c[2].high == pytest.approx(6644)
    assert c[2].median == pytest.approx((6040 + 6644) / 2)
    assert [p.median for p in series["pyxenstored"]] == pytest.approx([47.25] * 3)
    assert plot.scaling_series(doc, "idle", "read", "nonsense") == {}


def test_bootstorm_vm_count_failures_and_note() -> None:
    plot = bench_module("plot")
    doc = compare_doc(
        "bootstorm",
        ["--vms", "50", "--no-backend-watcher"],
        {"cxenstored": [{"wall_s": 3.0}], "oxenstored": [None], "pyxenstored": [{"wall_s": 0.4}]},
    )
    assert plot.vm_count(doc) == 50
    assert plot.vm_count(compare_doc("bootstorm", [], {"pyxenstored": [{"wall_s": 1}]})) == 200
    assert plot.failures(doc) == {"oxenstored": 1}
    assert set(plot.metric_stats(doc, "bootstorm", "wall_s")) == {"cxenstored", "pyxenstored"}
    note = plot.session_note(doc)
    assert "1 run(s) per daemon" in note and "--vms 50" in note
    assert "load avg (1 min) 0.5-1.5" in note


def test_missing_matplotlib_is_a_clear_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    plot = bench_module("plot")
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # makes `import matplotlib` fail
    assert plot.main(["--from-json", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "matplotlib is missing" in err and "'bench' extra" in err and "make plots" in err
    assert not list(tmp_path.iterdir())  # failed before running or writing anything


def test_json_becomes_small_pngs(tmp_path: Path) -> None:
    needs_matplotlib()
    plot = bench_module("plot")
    plot.plot_scaling(
        compare_doc("idle", ["--idle", "0,1000,5000", "--write"], IDLE),
        tmp_path / "idle.png",
        title="idle",
        xlabel="N",
    )
    docs = [
        compare_doc(
            "bootstorm",
            ["--vms", str(vms)],
            {
                "cxenstored": [
                    {"wall_s": vms / 5, "vm_latency.median_s": 1.0, "vm_latency.p95_s": 2.0}
                ]
                * 2,
                "oxenstored": [None, None],  # every run failed: "did not finish"
                "pyxenstored": [
                    {"wall_s": vms / 50, "vm_latency.median_s": 0.1, "vm_latency.p95_s": 0.2}
                ]
                * 2,
            },
        )
        for vms in (200, 50)
    ]
    plot.plot_bootstorm(docs, tmp_path / "bootstorm.png")
    for name in ("idle.png", "bootstorm.png"):
        data = (tmp_path / name).read_bytes()
        assert data.startswith(PNG_MAGIC)
        assert 10_000 < len(data) < 150_000


def test_from_json_redraws_every_figure(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    needs_matplotlib()
    plot = bench_module("plot")
    (tmp_path / "idle.json").write_text(
        json.dumps(compare_doc("idle", ["--idle", "0,1000,5000"], IDLE))
    )
    assert plot.main(["--from-json", "--figures", "idle", "--out", str(tmp_path)]) == 0
    assert (tmp_path / "idle.png").read_bytes().startswith(PNG_MAGIC)
    assert "wrote" in capsys.readouterr().out
    # A figure whose session was never run: a clear error, status 1.
    assert plot.main(["--from-json", "--figures", "rings", "--out", str(tmp_path)]) == 1
    assert "no rings.json" in capsys.readouterr().err
