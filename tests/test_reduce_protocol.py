"""The paper's retraining protocol end to end: a tiny real sweep on Ray, then ``reduce_experiment`` in process.

Slow (about a minute on 2 cores): 5 searches of 3 epochs on digits (DARTS and an R-DARTS(L2) grid of two weight
decays, 2 seeds at 3e-4; one DARTS-ES search), short and full retrains of 1 epoch.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from sweep_fixtures import tiny_spec

from rdarts.methods import DARTS, DARTS_ES, RDARTS_L2, split_labels
from rdarts.reduce import reduce_experiment
from rdarts.reduce.methods_table import METHOD_COLUMNS
from rdarts.sweep.runner import run_sweep

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def reduced(ray_session: None, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    spec = tiny_spec("protocol-e2e", max_concurrent=2,
                     grid=[{"early_stop": ["off"], "weight_decay": [3e-4], "seed": [1, 2]},
                           {"early_stop": ["off"], "weight_decay": [0.05], "seed": [1]},
                           {"early_stop": ["es"], "seed": [1]}],
                     reduce={"epochs": 1, "layers": 3, "channels": 4, "batch_size": 32},
                     retrain={"epochs": 1, "layers": 3, "channels": 4, "batch_size": 32, "cutout": False})
    assert spec.reduce.protocol == "paper"
    outcome = run_sweep(spec, storage=str(tmp_path_factory.mktemp("sweep")), verbose=0, out=io.StringIO(),
                        plots=False)
    assert outcome.num_errors == 0 and [r["method"] for r in outcome.rows] == [
        "DARTS, R-DARTS(L2)", "DARTS, R-DARTS(L2)", "R-DARTS(L2)", "DARTS-ES"]
    out = io.StringIO()
    result = reduce_experiment(outcome.experiment_path, spec, runner="local", tracking=False, n_test=60, out=out)
    return Path(outcome.experiment_path), (result, out.getvalue())


def test_every_per_search_architecture_and_each_selection_is_fully_retrained(reduced: tuple[Path, Any]) -> None:
    path, (result, printed) = reduced
    frame = pd.read_parquet(path / "results.parquet")
    assert frame.groupby("trial")["method"].first().map(split_labels).map(len).tolist() == [2, 2, 1, 1]
    retrains = [json.loads(p.read_text()) for p in sorted((path / "reduce" / "retrain").glob("*/result.json"))]
    finals = {r["candidate"] for r in retrains if r["kind"] == "final"}
    candidates = {r["candidate"]: r for r in retrains if r["kind"] == "candidate"}
    returned = result.selection.returned.merge(frame.drop_duplicates("trial")[["trial", "method"]], on="trial")
    assert set(candidates) == set(returned["candidate"])  # every architecture gets a short retrain (validation)
    per_search = set(returned[returned["method"].map(lambda m: bool({DARTS, DARTS_ES} & set(split_labels(m))))]
                     ["candidate"])
    l2 = returned[returned["method"].str.contains("R-DARTS", regex=False)]
    best = max(l2["candidate"].unique(), key=lambda c: (candidates[c]["valid_acc"], -returned.set_index(
        "candidate").loc[[c], "final_eigenvalue"].min(), ""))
    assert finals == per_search | {best}  # and each exactly once
    assert len([r for r in retrains if r["kind"] == "final"]) == len(finals)

    table = pd.read_csv(path / "reduce" / "methods.csv").set_index("method")
    assert list(pd.read_csv(path / "reduce" / "methods.csv").columns) == list(METHOD_COLUMNS)
    assert set(table.index) == {DARTS, DARTS_ES, RDARTS_L2}
    assert (table.loc[DARTS, "n_searches"], table.loc[DARTS, "n_retrained"]) == (2, 2)
    assert (table.loc[RDARTS_L2, "n_searches"], table.loc[RDARTS_L2, "n_retrained"]) >= (3, 1)
    final_error = {r["candidate"]: r["test_error"] for r in retrains if r["kind"] == "final"}
    assert table.loc[RDARTS_L2, "test_error_mean"] == pytest.approx(final_error[best])
    darts = returned[returned["method"].str.startswith(DARTS + ",")]
    assert table.loc[DARTS, "test_error_mean"] == pytest.approx(darts["candidate"].map(final_error).mean())
    assert table["paper_mean"].isna().all()  # digits: the paper has no number
    tail = printed.strip().splitlines()
    assert tail[-1].startswith("λ_max at the end of search") and "methods table" in printed


def test_a_second_reduce_trains_nothing_again(reduced: tuple[Path, Any]) -> None:
    path, (result, _) = reduced
    before = {p: p.stat().st_mtime_ns for p in (path / "reduce" / "retrain").glob("*/result.json")}
    out = io.StringIO()
    again = reduce_experiment(path, None, runner="local", tracking=False, n_test=60, out=out)
    assert "retraining" not in out.getvalue()
    assert {p: p.stat().st_mtime_ns for p in before} == before
    pd.testing.assert_frame_equal(again.methods, result.methods)
