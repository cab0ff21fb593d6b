"""The R-DARTS selection rule on hand-made ``collect`` frames (no Ray, no MLflow, no training)."""

from __future__ import annotations

import json
import math
from typing import Any

import pandas as pd
import pytest

from rdarts.reduce.report import correlations, summary_table, to_markdown
from rdarts.reduce.select import candidate_key, canonical, select


def geno(op: str) -> str:
    """A distinct genotype per op name (node inputs fixed)."""
    cell = [[op, 0], [op, 1]] * 4
    return json.dumps({"normal": cell, "normal_concat": [2, 3, 4, 5], "reduce": cell, "reduce_concat": [2, 3, 4, 5]})


def trial(name: str, genotypes: list[str], *, eig: list[float] | None = None, valid: list[float] | None = None,
          space: str = "s1", dataset: str = "cifar10", status: str = "finished", es_stop: int | None = None,
          scheduler_stop: int | None = None, order: str = "first") -> list[dict[str, Any]]:
    """The rows ``collect`` makes for one trial: one report per epoch, stop information on the last one."""
    n = len(genotypes)
    eig = eig or [0.1] * n
    valid = valid or [0.5] * n
    rows = []
    for e, g in enumerate(genotypes):
        last = e == n - 1
        rows.append({
            "trial": name, "trial_index": int(name[1:]), "setting": name, "status": status, "cfg.space": space,
            "cfg.dataset": dataset, "cfg.order": order, "cfg.early_stop": "es" if es_stop is not None else "off",
            "epoch": e, "report": e, "final_branch": True, "genotype": g, "valid_acc": valid[e],
            "dominant_eigenvalue": eig[e],
            "search_status": ("es_stopped" if es_stop is not None else "finished") if last else "running",
            "result_epoch": (es_stop if es_stop is not None else e) if last else e,
            "scheduler_action": "stop" if last and scheduler_stop is not None else "",
            "scheduler_kept_epoch": scheduler_stop if last and scheduler_stop is not None else -1,
        })
    return rows


def frame(*trials: list[dict[str, Any]]) -> pd.DataFrame:
    return pd.DataFrame([r for t in trials for r in t])


A, B, C = geno("sep_conv_3x3"), geno("skip_connect"), geno("max_pool_3x3")


def test_es_trial_returns_its_stop_epoch_genotype_not_its_last() -> None:
    f = frame(trial("t0", [A, A, B, B, C], es_stop=1), trial("t1", [B, B, C]))
    sel = select(f)
    r = sel.returned.set_index("trial")
    assert r.loc["t0", "returned_epoch"] == 1 and r.loc["t0", "genotype"] == canonical(A)
    assert r.loc["t0", "stop_source"] == "search"
    assert r.loc["t1", "returned_epoch"] == 2 and r.loc["t1", "genotype"] == canonical(C)  # last epoch otherwise
    assert sorted(sel.candidates["genotype"]) == sorted([canonical(A), canonical(C)])


def test_scheduler_kept_epoch_is_used_when_the_search_did_not_say() -> None:
    rows = trial("t0", [A, B, C], scheduler_stop=0)
    rows[-1]["search_status"] = "running"  # stopped by Tune before the search reported its own stop
    sel = select(frame(rows))
    assert sel.returned.iloc[0]["returned_epoch"] == 0 and sel.returned.iloc[0]["stop_source"] == "scheduler"


def test_superseded_reports_are_ignored() -> None:
    """A DARTS-ADA rollback (or a restart) reports epochs again: the final branch decides."""
    rows = trial("t0", [A, A, A])
    rows[2]["final_branch"] = False
    rows.append({**rows[2], "report": 3, "genotype": B, "final_branch": True})
    assert select(frame(rows)).returned.iloc[0]["genotype"] == canonical(B)


def test_identical_genotypes_are_one_candidate() -> None:
    spaced = json.dumps(json.loads(A), indent=3)  # the same architecture, written differently
    f = frame(trial("t0", [A], eig=[0.3]), trial("t1", [spaced], eig=[0.2]), trial("t2", [B]))
    cands = select(f).candidates
    assert len(cands) == 2
    a = cands[cands["genotype"] == canonical(A)].iloc[0]
    assert a["n_trials"] == 2 and a["trials"] == "t0,t1" and a["final_eigenvalue"] == pytest.approx(0.2)
    assert a["candidate"] == candidate_key(["s1", "cifar10"], A)


def test_groups_are_selected_separately() -> None:
    f = frame(trial("t0", [A]), trial("t1", [A], dataset="svhn"), trial("t2", [B], space="s2"))
    sel = select(f, {candidate_key(["s1", "cifar10"], A): 0.5, candidate_key(["s1", "svhn"], A): 0.6,
                     candidate_key(["s2", "cifar10"], B): 0.7})
    assert len(sel.candidates) == 3  # the same genotype in two datasets is two candidates
    assert sorted(zip(sel.winners["cfg.space"], sel.winners["cfg.dataset"], strict=True)) == [
        ("s1", "cifar10"), ("s1", "svhn"), ("s2", "cifar10")]


def test_winner_is_the_best_retrained_validation_accuracy() -> None:
    f = frame(trial("t0", [A], valid=[0.9]), trial("t1", [B], valid=[0.1]))
    key = {g: candidate_key(["s1", "cifar10"], g) for g in (A, B)}
    sel = select(f, {key[A]: 0.4, key[B]: 0.6})  # the one-shot accuracy does not decide, the short retrain does
    assert list(sel.winners["candidate"]) == [key[B]] and sel.winners.iloc[0]["valid_acc"] == 0.6


def test_ties_go_to_the_lower_final_eigenvalue() -> None:
    f = frame(trial("t0", [A, A], eig=[0.1, 0.5]), trial("t1", [B, B], eig=[0.9, 0.2]))
    key = {g: candidate_key(["s1", "cifar10"], g) for g in (A, B)}
    sel = select(f, {key[A]: 0.6, key[B]: 0.6})
    assert list(sel.winners["candidate"]) == [key[B]]  # final λ 0.2 < 0.5 (not the first-epoch values)


def test_missing_scores_never_win_and_failed_trials_are_skipped() -> None:
    f = frame(trial("t0", [A]), trial("t1", [B]), trial("t2", [C], status="error"))
    key = {g: candidate_key(["s1", "cifar10"], g) for g in (A, B)}
    sel = select(f, {key[A]: math.nan, key[B]: 0.1})
    assert list(sel.winners["candidate"]) == [key[B]]
    assert len(sel.candidates) == 2 and sel.skipped == ["t2: status error, no genotype"]


def test_max_candidates_keeps_the_best_one_shot() -> None:
    f = frame(trial("t0", [A], valid=[0.2]), trial("t1", [B], valid=[0.8]), trial("t2", [C], valid=[0.5]))
    assert [canonical(B), canonical(C)] == list(select(f, max_candidates=2).candidates["genotype"])


def test_summary_table_mean_std_and_best_of_n() -> None:
    trials = pd.DataFrame({
        "trial": ["t0", "t1", "t2"], "cfg.space": "s1", "cfg.dataset": "cifar10",
        "cfg.order": ["first", "first", "second"], "candidate": ["a", "b", "c"],
        "test_error": [3.0, 5.0, 4.0], "valid_acc": [0.7, 0.9, 0.8], "final_eigenvalue": [0.1, 0.2, 0.3]})
    table = summary_table(trials, {"b": 4.5})
    first = table[table["order"] == "first"].iloc[0]
    assert first["n_trials"] == 2 and first["test_error_mean"] == 4.0
    assert first["test_error_std"] == pytest.approx(math.sqrt(2))
    assert first["best_of_n"] == 5.0 and first["best_candidate"] == "b"  # chosen by validation, not by test
    assert first["final_test_error"] == 4.5
    assert math.isnan(table[table["order"] == "second"].iloc[0]["final_test_error"])
    assert to_markdown(table).count("\n") == 4


def test_correlations() -> None:
    x, y = pd.Series([1.0, 2.0, 3.0, math.nan]), pd.Series([2.0, 4.0, 7.0, 1.0])
    pearson, spearman = correlations(x, y)
    assert spearman == pytest.approx(1.0) and 0.9 < pearson < 1.0
    assert all(math.isnan(v) for v in correlations(x[:2], y[:2]))
