"""``benchmarks/bench_gpu.py``: its pure helpers (fast), and its CPU smoke run with the full table's shape (slow)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest
from bench_fixtures import ROOT, load_benchmark


def _bench() -> ModuleType:
    return load_benchmark("bench_gpu")


def test_budgets_split_by_share() -> None:
    b = _bench().section_budgets(100.0, {"a": 1.0, "b": 3.0})
    assert b == {"a": 25.0, "b": 75.0}
    full = _bench().section_budgets(480.0)
    assert set(full) == set(_bench().SECTIONS) and sum(full.values()) == pytest.approx(480.0)


def test_steps_fit_the_budget_within_bounds() -> None:
    steps_for = _bench().steps_for  # from bench_gpu_measure
    assert steps_for(10.0, 0.1) == 100
    assert steps_for(10.0, 0.1, hi=50) == 50
    assert steps_for(0.1, 1.0) == 3 and steps_for(5.0, math.nan) == 3 and steps_for(5.0, 0.0) == 3


def test_agreement_of_vectors() -> None:
    _bench()  # puts benchmarks/ on sys.path
    from bench_gpu_measure import agreement
    assert agreement([1.0, 0.0], [1.0, 0.0]) == (0.0, 1.0)
    rel, cos = agreement([0.0, 1.0], [1.0, 0.0])
    assert rel == pytest.approx(math.sqrt(2)) and cos == pytest.approx(0.0)
    rel, cos = agreement([2.0, 2.0], [1.0, 1.0])
    assert rel == pytest.approx(1.0) and cos == pytest.approx(1.0)


def test_packing_rows_sum_the_workers() -> None:
    rows = _bench().packing_rows({1: [{"steps": 10.0, "seconds": 1.0}],
                                  2: [{"steps": 10.0, "seconds": 1.25}, {"steps": 10.0, "seconds": 2.5}]})
    assert [r["k"] for r in rows] == [1, 2]
    assert rows[0]["steps_per_s"] == 10.0 and rows[1]["steps_per_s"] == pytest.approx(12.0)
    assert rows[1]["ratio"] == pytest.approx(1.2) and rows[1]["step_ms"] == pytest.approx(187.5)


def test_table_has_one_row_per_measurement() -> None:
    text = _bench().format_table([{"section": "steps", "item": "fp32", "value": 12.3456, "unit": "ms/step",
                                   "ratio": 1.0, "note": ""}])
    lines = text.splitlines()
    assert lines[0] == "| section | item | value | unit | ratio | note |" and len(lines) == 3
    assert lines[2] == "| steps | fp32 | 12.35 | ms/step | 1 |  |"


@pytest.mark.slow
def test_quick_cpu_run_writes_every_section(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    res = subprocess.run([sys.executable, "benchmarks/bench_gpu.py", "--device", "cpu", "--quick", "--out", str(out)],
                         cwd=ROOT, capture_output=True, text=True, timeout=1200)
    assert res.returncode == 0, res.stderr[-2000:]
    data = json.loads(out.read_text())
    s = data["sections"]
    assert set(s) == {"steps", "eigen", "memory", "agreement", "packing"}
    assert {r["precision"] for r in s["steps"]} >= {"fp32", "tf32", "bf16", "channels_last"}
    assert all(math.isfinite(r["ms_per_step"]) and r["ms_per_step"] > 0 for r in s["steps"])
    assert all(r["seconds"] > 0 and r["hvps"] >= 1 for r in s["eigen"])
    assert all(r["measured_bytes"] > 0 and r["estimate_bytes"] > 0 for r in s["memory"])
    assert 0 <= s["agreement"]["rel_error"] < 10 and -1 <= s["agreement"]["cosine"] <= 1
    assert [r["k"] for r in s["packing"]] == [1, 2]
    assert all(r["steps_per_s"] > 0 for r in s["packing"]) and s["packing"][0]["ratio"] == 1.0
    assert {r["section"] for r in data["table"]} == set(s)
    assert "| section | item | value | unit | ratio | note |" in res.stdout
