"""The paper's table from a sweep: one row per (space, dataset, order, method), with the paper's numbers beside it.

Input: the reducer's per-trial table (``report.per_trial``: a row per search with its group keys, ``method``
labels, ``candidate`` genotype key, the short retrain's ``valid_acc`` and the final ``λ_max``) and the full
retrains' test errors per candidate (mean over ``retrain.seeds``).

Per method (``rdarts.methods``):

- DARTS, DARTS-ES, DARTS-ADA (and any other per-search method): mean ± std (sample std, ddof 1) over the searches
  whose architecture was fully retrained -- with protocol ``paper`` all of them, as the paper's columns;
- R-DARTS(L2), R-DARTS(DP): the one architecture validation selects among the method's searches (its searches that
  returned it are the retrained ones);
- ``test_error_best``: the test error of the architecture with the best validation accuracy after the short retrain
  on the held-out split among the method's searches (never chosen by test error), where it was fully retrained.

Identical architectures are one candidate: retrained once, counted for every search that returned it.
Pure pandas: no Ray, no MLflow.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd

from rdarts.methods import SELECTION_METHODS, split_labels
from rdarts.paper import PAPER_TEST_ERRORS, paper_number
from rdarts.reduce.select import pick_winner

CELL = ("cfg.space", "cfg.dataset", "cfg.order")
METHOD_COLUMNS = ("space", "dataset", "order", "method", "n_searches", "n_retrained", "test_error_mean",
                  "test_error_std", "test_error_best", "paper_mean", "paper_std")
REGULARISER = {"R-DARTS(L2)": ("cfg.weight_decay", "wd"), "R-DARTS(DP)": ("cfg.drop_path", "dp")}
"""What each R-DARTS grid varies: its column in the trial table and its short name."""


def by_method(trials: pd.DataFrame) -> pd.DataFrame:
    """One row per (search, method label): a search of two methods appears under both."""
    labels = [split_labels(m) or ["?"] for m in trials["method"].fillna("")]
    return trials.assign(method=labels).explode("method").reset_index(drop=True)


def _groups(trials: pd.DataFrame) -> list[tuple[tuple[Any, ...], pd.DataFrame]]:
    rows = by_method(trials)
    return [(key, t) for key, t in rows.groupby([*CELL, "method"], sort=True, dropna=False)]


def selected_by_validation(rows: pd.DataFrame) -> str | None:
    """The candidate of ``rows`` (one method's searches) with the best short-retrain validation accuracy."""
    best = pick_winner(rows.drop_duplicates("candidate"))
    return None if best is None else str(best["candidate"])


def paper_retrain_set(trials: pd.DataFrame) -> list[str]:
    """Protocol ``paper``: the candidates to retrain fully, each once.

    Every architecture returned by a search of a per-search method, and the one each R-DARTS method selects by
    validation (``valid_acc`` of the short retrains) among its searches.
    """
    keep: list[str] = []
    for key, rows in _groups(trials):
        if key[-1] in SELECTION_METHODS:
            chosen = selected_by_validation(rows)
            keep += [chosen] if chosen is not None else []
        else:
            keep += list(rows["candidate"])
    return list(dict.fromkeys(keep))


def methods_table(trials: pd.DataFrame, final_errors: Mapping[str, float]) -> pd.DataFrame:
    """The table of the module docstring.

    Args:
        trials: ``report.per_trial``'s table (``valid_acc`` = the short retrain's, NaN where none ran).
        final_errors: candidate key -> mean test error (%) of its full retrains.
    """
    out = []
    for (space, dataset, order, method), rows in _groups(trials):
        chosen = selected_by_validation(rows)
        if method in SELECTION_METHODS:
            counted = rows[rows["candidate"] == chosen] if chosen in final_errors else rows.iloc[:0]
        else:
            counted = rows[rows["candidate"].isin(list(final_errors))]
        errors = [float(final_errors[c]) for c in counted["candidate"]]
        paper = paper_number(str(dataset), str(space), str(method), str(order))
        out.append({
            "space": space, "dataset": dataset, "order": order, "method": method, "n_searches": len(rows),
            "n_retrained": len(errors),
            "test_error_mean": sum(errors) / len(errors) if errors else math.nan,
            "test_error_std": float(pd.Series(errors).std(ddof=1)) if len(errors) > 1 else math.nan,
            "test_error_best": float(final_errors[chosen]) if chosen in final_errors else math.nan,
            "paper_mean": paper.mean if paper is not None else math.nan,
            "paper_std": paper.std if paper is not None and paper.std is not None else math.nan,
        })
    return pd.DataFrame(out, columns=list(METHOD_COLUMNS))


def _f(value: Any, digits: int = 2) -> str:
    return "" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def methods_markdown(table: pd.DataFrame) -> str:
    """``methods_table`` as a GitHub table, mean ± std side by side with the paper, and where its numbers are from."""
    sources: dict[str, int] = {}
    head = ("| space | dataset | order | method | searches | retrained | test error % (mean ± std) | best (by "
            "validation) | paper |")
    lines = [head, "|---|---|---|---|---:|---:|---:|---:|---:|"]
    for r in table.to_dict("records"):
        ours = _f(r["test_error_mean"]) + (f" ± {_f(r['test_error_std'])}" if _f(r["test_error_std"]) else "")
        paper = ""
        if _f(r["paper_mean"]):
            entry = PAPER_TEST_ERRORS.get((str(r["dataset"]).lower(), str(r["space"]).lower(), str(r["method"])))
            mark = sources.setdefault(entry.source, len(sources) + 1) if entry is not None else 0
            paper = _f(r["paper_mean"]) + (f" ± {_f(r['paper_std'])}" if _f(r["paper_std"]) else "") + f" [{mark}]"
        lines.append(f"| {r['space']} | {r['dataset']} | {r['order']} | {r['method']} | {r['n_searches']} | "
                     f"{r['n_retrained']} | {ours or '-'} | {_f(r['test_error_best']) or '-'} | {paper or '-'} |")
    notes = [f"[{n}] {source}" for source, n in sources.items()]
    empty = "Paper columns are empty where the paper reports no number (other datasets, first order)."
    return "\n".join([*lines, "", *notes, empty]) + "\n"


def _seed_rows(rows: pd.DataFrame, column: str) -> list[tuple[Any, pd.Series, pd.Series]]:
    out = []
    for seed, s in rows.groupby("cfg.seed", sort=True):
        s = s.sort_values(column)
        if len(s) >= 2 and s[column].iloc[0] != s[column].iloc[-1]:
            out.append((seed, s.iloc[0], s.iloc[-1]))
    return out


def eigenvalue_lines(trials: pd.DataFrame) -> list[str]:
    """λ_max at the end of the searches (mean of their last two evaluations), one line per cell.

    For an R-DARTS grid: the weakest against the strongest regularisation, per seed, and their ratio (the paper's
    mechanism: stronger regularisation, flatter validation loss in α). Otherwise the mean per method.
    """
    lines = []
    for (space, dataset, order, method), rows in _groups(trials):
        where = f"{method} on {space}/{dataset} ({order} order)"
        if method in REGULARISER and REGULARISER[method][0] in rows:
            column, short = REGULARISER[method]
            parts = [f"seed {seed}: {lo['end_eigenvalue']:.3g} at {short}={lo[column]:g} vs {hi['end_eigenvalue']:.3g} "
                     f"at {short}={hi[column]:g} ({lo['end_eigenvalue'] / hi['end_eigenvalue']:.2f}x)"
                     for seed, lo, hi in _seed_rows(rows, column) if hi["end_eigenvalue"] > 0]
            if parts:
                lines.append(f"λ_max at the end of search (mean of the last two), {where}: " + "; ".join(parts))
    if lines:
        return lines
    means = [f"{key[-1]} {rows['end_eigenvalue'].mean():.3g}" for key, rows in _groups(trials)
             if rows["end_eigenvalue"].notna().any()]
    return ["λ_max at the end of search (mean of the last two, averaged per method): " + ", ".join(means)] if means \
        else []


def eigenvalue_ratios(trials: pd.DataFrame) -> list[dict[str, Any]]:
    """The numbers behind ``eigenvalue_lines`` for the R-DARTS grids (selection.json, tests)."""
    out = []
    for (space, dataset, order, method), rows in _groups(trials):
        if method not in REGULARISER or REGULARISER[method][0] not in rows:
            continue
        column = REGULARISER[method][0]
        for seed, lo, hi in _seed_rows(rows, column):
            out.append({"space": space, "dataset": dataset, "order": order, "method": method, "seed": seed,
                        "weakest": float(lo[column]), "strongest": float(hi[column]),
                        "lambda_weakest": float(lo["end_eigenvalue"]), "lambda_strongest": float(hi["end_eigenvalue"]),
                        "ratio": float(lo["end_eigenvalue"] / hi["end_eigenvalue"])})
    return out


def metric_name(*parts: Sequence[Any] | Any) -> str:
    """An MLflow metric name from the table's keys (MLflow allows letters, digits, ``_-. /:`` only)."""
    text = ".".join(str(p) for p in parts)
    return "".join(c if c.isalnum() or c in "_-./: " else "_" for c in text).replace("__", "_").strip("_")
