"""Method labels, the paper protocol's retrain set and the methods table, on hand-made tables (fast, no training)."""

from __future__ import annotations

import math
from typing import Any

import pandas as pd
import pytest

from rdarts.config import SearchConfig
from rdarts.methods import DARTS, DARTS_ADA, DARTS_ES, RDARTS_DP, RDARTS_L2, join_labels, method_labels, split_labels
from rdarts.paper import PAPER_TEST_ERRORS
from rdarts.reduce.methods_table import (
    METHOD_COLUMNS,
    eigenvalue_lines,
    eigenvalue_ratios,
    methods_markdown,
    methods_table,
    metric_name,
    paper_retrain_set,
)
from rdarts.retrain import RetrainConfig
from rdarts.sweep.spec import spec_from_data


def cfg(**kw: Any) -> dict[str, Any]:
    return SearchConfig(**{"space": "s1", "dataset": "cifar10", **kw}).to_dict()


# ----------------------------------------------------------------------------------------------------- labels
def test_a_pooled_es_ada_sweep_is_split_into_its_two_methods() -> None:
    settings = [cfg(early_stop=m, seed=s) for m in ("es", "ada") for s in (1, 2, 3)]
    assert method_labels(settings) == [[DARTS_ES]] * 3 + [[DARTS_ADA]] * 3


def test_the_reference_l2_search_of_a_weight_decay_grid_is_darts_and_r_darts_l2() -> None:
    wds = (3e-4, 9e-4, 2.7e-3, 8.1e-3, 2.43e-2)
    settings = [cfg(weight_decay=w, seed=s) for w in wds for s in (1, 2, 3)]
    labels = method_labels(settings)
    for s, ls in zip(settings, labels, strict=True):
        expected = [DARTS, RDARTS_L2] if s["weight_decay"] == 3e-4 else [RDARTS_L2]
        assert ls == expected, s["weight_decay"]


def test_a_drop_path_grid_is_r_darts_dp_and_its_dp0_search_is_darts() -> None:
    settings = [cfg(drop_path=d) for d in (0.0, 0.2, 0.4, 0.6)]
    assert method_labels(settings) == [[DARTS, RDARTS_DP], [RDARTS_DP], [RDARTS_DP], [RDARTS_DP]]


def test_one_plain_search_is_darts_and_departures_are_named() -> None:
    assert method_labels([cfg()]) == [[DARTS]]
    assert method_labels([cfg(weight_decay=9e-4)]) == [["DARTS(wd=0.0009)"]]  # one wd is not a grid
    assert method_labels([cfg(early_stop="es", drop_path=0.2)]) == [["DARTS-ES(dp=0.2)"]]


def test_a_label_that_would_pool_different_searches_names_what_differs() -> None:
    settings = [cfg(augment=True, seed=1), cfg(augment=False, seed=1), cfg(augment=True, seed=2)]
    assert method_labels(settings) == [["DARTS(augment=True)"], ["DARTS(augment=False)"], ["DARTS(augment=True)"]]
    # Seeds and the regularisation of a grid never split a method.
    assert method_labels([cfg(seed=1), cfg(seed=2)]) == [[DARTS], [DARTS]]


def test_a_sweep_file_may_name_its_method() -> None:
    assert method_labels([cfg(), cfg(early_stop="es")], "mine") == [["mine"], ["mine"]]


def test_labels_round_trip_through_their_text() -> None:
    assert split_labels(join_labels([DARTS, RDARTS_L2])) == [DARTS, RDARTS_L2]
    assert split_labels("") == []


def test_sweep_trials_carry_their_labels_and_a_grid_may_be_a_list() -> None:
    spec = spec_from_data({"name": "q", "search": {"space": "s3", "dataset": "digits"},
                           "grid": [{"early_stop": ["off"], "weight_decay": [3e-4, 0.1], "seed": [1, 2]},
                                    {"early_stop": ["es"], "seed": [1, 2]}]})
    trials = spec.trials()
    assert [t["method"] for t in trials] == ["DARTS, R-DARTS(L2)"] * 2 + ["R-DARTS(L2)"] * 2 + ["DARTS-ES"] * 2
    named = spec_from_data({"name": "q", "method_label": "my method", "search": {"dataset": "digits"}})
    assert named.trials()[0]["method"] == "my method"


def test_fidelity_defaults() -> None:
    """The reference is fp32 throughout and augments the search's batches and its validation pass."""
    assert SearchConfig().amp is False and RetrainConfig().amp is False
    assert SearchConfig().augment is True and SearchConfig().valid_augment is True
    spec = spec_from_data({"name": "q"})
    assert spec.retrain.amp is False and spec.reduce.protocol == "paper"


# ----------------------------------------------------------------------------------------------------- table
def trials_table(rows: list[tuple[str, str, str, float, float, float]], *, space: str = "s1",
                 dataset: str = "cifar10", order: str = "second") -> pd.DataFrame:
    """(trial, method labels, candidate, short-retrain valid_acc, weight decay, end λ) -> per_trial's shape."""
    return pd.DataFrame([{
        "trial": t, "method": m, "candidate": c, "valid_acc": v, "cfg.weight_decay": wd, "cfg.drop_path": 0.0,
        "cfg.seed": int(t[-1]), "final_eigenvalue": lam, "end_eigenvalue": lam, "cfg.space": space,
        "cfg.dataset": dataset, "cfg.order": order} for t, m, c, v, wd, lam in rows])


L2 = "DARTS, R-DARTS(L2)"
SWEEP = trials_table([
    # trial, methods, candidate, valid_acc (short retrain), wd, end λ
    ("a1", L2, "A", 0.60, 3e-4, 0.9),
    ("a2", L2, "A", 0.60, 3e-4, 0.8),          # the same architecture as a1: trained once, counted twice
    ("b1", RDARTS_L2, "B", 0.70, 0.1, 0.3),     # the grid's best by validation
    ("b2", RDARTS_L2, "C", 0.65, 0.1, 0.4),
    ("e1", DARTS_ES, "D", 0.50, 3e-4, 0.5),
    ("e2", DARTS_ES, "E", 0.55, 3e-4, 0.6),
])


def test_paper_protocol_retrains_every_per_search_architecture_once_and_each_selection() -> None:
    keys = paper_retrain_set(SWEEP)
    assert sorted(keys) == ["A", "B", "D", "E"]  # C: an R-DARTS(L2) search the grid did not select
    assert len(keys) == len(set(keys))


def test_methods_table_means_counts_and_best_by_validation_not_test() -> None:
    # E has the best validation accuracy among the ES searches, D the best test error: best follows validation.
    final = {"A": 5.0, "B": 4.0, "D": 3.0, "E": 6.0}
    table = methods_table(SWEEP, final).set_index("method")
    assert list(methods_table(SWEEP, final).columns) == list(METHOD_COLUMNS)
    darts = table.loc[DARTS]
    assert (darts["n_searches"], darts["n_retrained"], darts["test_error_mean"]) == (2, 2, 5.0)
    assert darts["test_error_std"] == 0.0  # two searches, one architecture
    es = table.loc[DARTS_ES]
    assert es["test_error_mean"] == 4.5 and es["test_error_std"] == pytest.approx(math.sqrt(4.5))
    assert es["test_error_best"] == 6.0
    l2 = table.loc[RDARTS_L2]
    assert (l2["n_searches"], l2["n_retrained"], l2["test_error_mean"], l2["test_error_best"]) == (4, 1, 4.0, 4.0)
    assert math.isnan(l2["test_error_std"])


def test_without_full_retrains_the_table_counts_searches_and_reports_nothing() -> None:
    table = methods_table(SWEEP, {})
    assert (table["n_retrained"] == 0).all() and table["test_error_mean"].isna().all()


def test_paper_numbers_land_in_their_cells() -> None:
    final = {"A": 5.0, "B": 4.0, "D": 3.0, "E": 6.0}
    table = methods_table(SWEEP, final).set_index("method")
    for method in (DARTS, DARTS_ES, RDARTS_L2):
        paper = PAPER_TEST_ERRORS[("cifar10", "s1", method)]
        assert table.loc[method, "paper_mean"] == paper.mean
    assert (table.loc[DARTS, "paper_mean"], table.loc[DARTS, "paper_std"]) == (4.66, 0.71)
    assert (table.loc[DARTS_ES, "paper_mean"], table.loc[DARTS_ES, "paper_std"]) == (3.05, 0.07)
    assert table.loc[RDARTS_L2, "paper_mean"] == 2.78 and math.isnan(table.loc[RDARTS_L2, "paper_std"])
    svhn = methods_table(trials_table([("x1", DARTS_ADA, "A", 0.5, 3e-4, 0.1)], space="s4", dataset="svhn"),
                         {"A": 1.0})
    assert (svhn["paper_mean"].iloc[0], svhn["paper_std"].iloc[0]) == (2.52, 0.06)
    # No paper number for other datasets, nor for first-order searches (the paper's are second order).
    for other in (trials_table([("x1", DARTS, "A", 0.5, 3e-4, 0.1)], dataset="fashion-mnist"),
                  trials_table([("x1", DARTS, "A", 0.5, 3e-4, 0.1)], order="first")):
        assert methods_table(other, {"A": 1.0})["paper_mean"].isna().all()
    md = methods_markdown(methods_table(SWEEP, final))
    assert "4.66 ± 0.71 [1]" in md and "second-hand" in md and "unverified" in md


def test_eigenvalue_line_compares_the_weakest_and_strongest_regularisation_per_seed() -> None:
    ratios = eigenvalue_ratios(SWEEP)
    assert [(r["seed"], r["weakest"], r["strongest"]) for r in ratios] == [(1, 3e-4, 0.1), (2, 3e-4, 0.1)]
    assert [r["ratio"] for r in ratios] == pytest.approx([0.9 / 0.3, 0.8 / 0.4])
    (line,) = eigenvalue_lines(SWEEP)
    assert "seed 1:" in line and "(3.00x)" in line and "(2.00x)" in line


def test_metric_names_are_ones_mlflow_accepts() -> None:
    import re

    name = metric_name("test_error_mean", "s1", "cifar10", "second", RDARTS_L2)
    assert re.fullmatch(r"[\w./\- :]+", name) and name == "test_error_mean.s1.cifar10.second.R-DARTS_L2"


# ----------------------------------------------------------------------------------------------------- paper files
SWEEPS = __import__("pathlib").Path(__file__).resolve().parents[1] / "sweeps"
# The reference digest's Table (ROME Table 1 / R-DARTS Table 3 as recalled), a few cells typed in again here.
DIGEST_CELLS = {
    ("darts_es_ada_s1_cifar10", DARTS): (4.66, 0.71), ("darts_es_ada_s1_cifar10", DARTS_ES): (3.05, 0.07),
    ("darts_es_ada_s1_cifar10", DARTS_ADA): (3.03, 0.08), ("darts_es_ada_s4_svhn", DARTS_ADA): (2.52, 0.06),
    ("darts_es_ada_s3_cifar100", DARTS_ES): (26.99, 1.79), ("rdarts_l2_s2_cifar100", RDARTS_L2): (22.24, None),
    ("rdarts_dp_s3_svhn", RDARTS_DP): (2.49, None), ("rdarts_l2_darts_cifar10", RDARTS_L2): (2.95, 0.21),
}


@pytest.mark.parametrize("name", sorted(p.stem for p in SWEEPS.glob("*.yaml") if p.stem.startswith(("rdarts_",
                                                                                                    "darts_"))))
def test_each_paper_sweep_fills_the_paper_cells_of_its_space_and_dataset(name: str) -> None:
    """The trials of the shipped file, labelled as the sweep labels them, line up with the paper's table."""
    from rdarts.sweep.spec import load_sweep

    trials = load_sweep(SWEEPS / f"{name}.yaml").trials()
    table = pd.DataFrame([{
        "trial": f"t{t['index']}", "method": t["method"], "candidate": f"c{t['index']}", "valid_acc": 0.5,
        "final_eigenvalue": 0.1, "end_eigenvalue": 0.1,
        **{f"cfg.{k}": t["search"][k] for k in ("space", "dataset", "order", "seed", "weight_decay", "drop_path")},
    } for t in trials])
    rows = methods_table(table, {f"c{t['index']}": 3.0 for t in trials})
    expected = {"darts_es_ada": {DARTS, DARTS_ES, DARTS_ADA}, "rdarts_l2": {DARTS, RDARTS_L2},
                "rdarts_dp": {DARTS, RDARTS_DP}}[name.rsplit("_", 2)[0]]
    assert set(rows["method"]) == expected
    assert (rows["n_searches"] >= 3).all() and set(rows["order"]) == {"second"}
    space, dataset = name.split("_")[-2:]
    for r in rows.to_dict("records"):
        assert (r["space"], r["dataset"]) == (space, dataset)
        paper = PAPER_TEST_ERRORS.get((dataset, space, r["method"]))
        if paper is None:  # the DARTS space: the paper's cells are R-DARTS(L2) (and DARTS on CIFAR-100)
            assert space == "darts" and math.isnan(r["paper_mean"])
        else:
            assert r["paper_mean"] == paper.mean
        if (name, r["method"]) in DIGEST_CELLS:
            mean, std = DIGEST_CELLS[(name, r["method"])]
            assert r["paper_mean"] == mean and (math.isnan(r["paper_std"]) if std is None else r["paper_std"] == std)
