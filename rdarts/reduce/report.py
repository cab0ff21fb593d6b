"""The sweep-level report: a summary table per group and the λ_max-vs-test-error scatter.

Numbers per trial are the test error of its returned genotype after the short candidate retrain (every trial's
genotype is a candidate unless ``reduce.candidates`` capped them); ``best_of_n`` is the test error of the candidate
the selection rule picks by validation accuracy within the row; ``final_test_error`` is the winner's full retrain
(mean over the ``retrain.seeds``), shown on the rows whose trials returned the winner.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from rdarts.reduce.select import GROUP, pick_winner

ROW = (*GROUP, "cfg.order")


def per_trial(returned: pd.DataFrame, settings: pd.DataFrame, candidate_results: Mapping[str, Mapping[str, Any]]
              ) -> pd.DataFrame:
    """``returned`` joined with each trial's settings and its candidate's retrain (``test_error``, ``valid_acc``)."""
    cols = [c for c in settings.columns if c not in returned.columns or c == "trial"]
    out = returned.merge(settings[cols], on="trial", how="left")
    out["test_error"] = [float(candidate_results.get(k, {}).get("test_error", math.nan)) for k in out["candidate"]]
    out["valid_acc"] = [float(candidate_results.get(k, {}).get("valid_acc", math.nan)) for k in out["candidate"]]
    return out


def summary_table(trials: pd.DataFrame, final_errors: Mapping[str, float]) -> pd.DataFrame:
    """One row per (space, dataset, order): mean ± std over trials and best-of-N side by side.

    Args:
        trials: ``per_trial``'s table.
        final_errors: winner candidate key -> mean test error of its full retrain.
    """
    rows = []
    for key, t in trials.groupby(list(ROW), sort=True, dropna=False):
        errs = t["test_error"].dropna()
        best = pick_winner(t.drop_duplicates("candidate"))
        winner = next((c for c in t["candidate"] if c in final_errors), None)
        mean, std = (errs.mean(), errs.std(ddof=1) if len(errs) > 1 else 0.0) if len(errs) else (math.nan, math.nan)
        rows.append({
            "space": key[0], "dataset": key[1], "order": key[2], "n_trials": len(t), "n_retrained": len(errs),
            "test_error_mean": mean, "test_error_std": std,
            "mean_pm_std": f"{mean:.2f} ± {std:.2f}" if len(errs) else "-",
            "best_of_n": float(best["test_error"]) if best is not None else math.nan,
            "best_candidate": best["candidate"] if best is not None else "",
            "final_test_error": final_errors[winner] if winner is not None else math.nan,
            "winner": winner or "",
        })
    return pd.DataFrame(rows)


def to_markdown(table: pd.DataFrame) -> str:
    """A GitHub table (pandas' ``to_markdown`` needs ``tabulate``, not a dependency)."""
    def fmt(v: Any) -> str:
        if isinstance(v, float):
            return "-" if math.isnan(v) else f"{v:.3g}"
        return str(v)

    head = "| " + " | ".join(table.columns) + " |"
    rule = "|" + "|".join("---" for _ in table.columns) + "|"
    body = ["| " + " | ".join(fmt(v) for v in row) + " |" for row in table.itertuples(index=False)]
    return "\n".join([head, rule, *body]) + "\n"


def correlations(x: pd.Series, y: pd.Series) -> tuple[float, float]:
    """Pearson and Spearman coefficients over the finite pairs (NaN with fewer than 3 or a constant side)."""
    from scipy import stats

    ok = np.isfinite(x.to_numpy(float)) & np.isfinite(y.to_numpy(float))
    xs, ys = x.to_numpy(float)[ok], y.to_numpy(float)[ok]
    if len(xs) < 3 or np.ptp(xs) == 0 or np.ptp(ys) == 0:
        return math.nan, math.nan
    return float(stats.pearsonr(xs, ys)[0]), float(stats.spearmanr(xs, ys)[0])


def plot_scatter(trials: pd.DataFrame, path: str | Path, *, title: str = "") -> tuple[float, float]:
    """Final λ_max of each search against its genotype's retrained test error; returns (Pearson, Spearman)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    pearson, spearman = correlations(trials["final_eigenvalue"], trials["test_error"])
    fig = Figure(figsize=(6, 4.5), dpi=120)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for (order, space), t in trials.groupby(["cfg.order", "cfg.space"], sort=True, dropna=False):
        ax.scatter(t["final_eigenvalue"], t["test_error"], label=f"{space}, {order} order", alpha=0.8)
    ax.set_xlabel("final dominant eigenvalue λ_max of the search")
    ax.set_ylabel("test error after retraining (%)")
    ax.set_title(f"{title}\nPearson r = {pearson:.3f}, Spearman ρ = {spearman:.3f}".strip(), fontsize=10)
    ax.grid(alpha=0.3)
    if len(trials):
        ax.legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return pearson, spearman
