"""The sweep-level report: the per-trial table, the pooled summary of the short retrains, the λ_max-vs-test-error
scatter of the full retrains. The paper's table is ``methods_table``.

In the summary (one row per space, dataset and order, all methods pooled), the numbers per trial are the test error
of its returned genotype after the short candidate retrain; ``best_of_n`` is the test error of the candidate the
selection rule picks by validation accuracy within the row; ``final_test_error`` is the full retrain of the row's
protocol-``winner`` candidate (mean over the ``retrain.seeds``).
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


def per_trial(returned: pd.DataFrame, settings: pd.DataFrame, candidate_results: Mapping[str, Mapping[str, Any]],
              final_errors: Mapping[str, float] | None = None) -> pd.DataFrame:
    """``returned`` joined with each trial's settings, its candidate's short retrain (``test_error``,
    ``valid_acc``) and its full retrain (``final_test_error``, NaN where the candidate was not retrained fully)."""
    cols = [c for c in settings.columns if c not in returned.columns or c == "trial"]
    out = returned.merge(settings[cols], on="trial", how="left")
    out["test_error"] = [float(candidate_results.get(k, {}).get("test_error", math.nan)) for k in out["candidate"]]
    out["valid_acc"] = [float(candidate_results.get(k, {}).get("valid_acc", math.nan)) for k in out["candidate"]]
    out["final_test_error"] = [float((final_errors or {}).get(k, math.nan)) for k in out["candidate"]]
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
    """Final λ_max of every fully retrained search against its architecture's test error, coloured by method;
    returns (Pearson, Spearman), NaN with fewer than 3 points (the figure then says so).

    Args:
        trials: ``per_trial``'s table with ``final_test_error`` (NaN for searches whose architecture was not
            fully retrained) and ``method``.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    points = trials[trials["final_test_error"].notna() & trials["final_eigenvalue"].notna()]
    pearson, spearman = correlations(points["final_eigenvalue"], points["final_test_error"])
    fig = Figure(figsize=(6.4, 4.6), dpi=120)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for method, t in points.groupby("method", sort=True, dropna=False):
        ax.scatter(t["final_eigenvalue"], t["final_test_error"], label=str(method), alpha=0.85)
    ax.set_xlabel("final dominant eigenvalue λ_max of the search")
    ax.set_ylabel("test error after the full retrain (%)")
    if len(points) < 3:
        stats = f"{len(points)} fully retrained search(es): too few for a correlation (3 needed)"
    elif math.isnan(pearson):
        stats = f"{len(points)} searches: no correlation (a constant side)"
    else:
        stats = f"{len(points)} searches: Pearson r = {pearson:.3f}, Spearman ρ = {spearman:.3f} (paper: r = 0.867)"
    ax.set_title(f"{title}\n{stats}".strip(), fontsize=9.5)
    ax.grid(alpha=0.3)
    if len(points):
        ax.legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return pearson, spearman
