"""What the reducer writes into ``<sweep>/reduce/``: the tables (returned genotypes, candidates, per-trial, the pooled
summary, the methods table), ``selection.json``, the scatter, and per trial its figures and genotype.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from rdarts.config import SearchConfig
from rdarts.reduce.methods_table import eigenvalue_lines, eigenvalue_ratios, methods_markdown, methods_table
from rdarts.reduce.report import per_trial, plot_scatter, summary_table, to_markdown
from rdarts.reduce.select import Selection
from rdarts.sweep.spec import SweepSpec

REDUCE_DIR = "reduce"
METHODS_CSV, METHODS_MD = "methods.csv", "methods.md"


@dataclass
class ReduceOutcome:
    experiment_path: Path
    frame: pd.DataFrame
    selection: Selection
    retrain_results: dict[str, dict[str, Any]] = field(default_factory=dict)
    summary: pd.DataFrame | None = None
    methods: pd.DataFrame | None = None
    """The paper's table (``reduce/methods.csv``)."""
    eigenvalue_lines: list[str] = field(default_factory=list)
    tracking_uri: str | None = None
    tracking_counts: dict[str, int] | None = None
    errors: list[str] = field(default_factory=list)
    exit_code: int = 0


def final_errors(retrain_results: dict[str, dict[str, Any]]) -> dict[str, float]:
    """Candidate key -> the mean test error (%) of its full retrains (one per ``retrain.seeds``)."""
    finals: dict[str, list[float]] = {}
    for r in retrain_results.values():
        if r["kind"] == "final":
            finals.setdefault(r["candidate"], []).append(float(r["test_error"]))
    return {k: sum(v) / len(v) for k, v in finals.items()}


def write_report(outcome: ReduceOutcome, settings: pd.DataFrame, spec: SweepSpec, log: Callable[[str], None]) -> None:
    """``reduce/``: the returned genotypes, candidates, per-trial table, summaries, methods table, scatter."""
    folder = outcome.experiment_path / REDUCE_DIR
    sel = outcome.selection
    cand_results = {r["candidate"]: r for r in outcome.retrain_results.values() if r["kind"] == "candidate"}
    errors = final_errors(outcome.retrain_results)
    trials = per_trial(sel.returned, settings, cand_results, errors)
    outcome.summary = summary_table(trials, {k: v for k, v in errors.items() if k in set(sel.winners["candidate"])})
    outcome.methods = methods_table(trials, errors)
    sel.returned.to_csv(folder / "returned.csv", index=False)
    sel.candidates.to_csv(folder / "candidates.csv", index=False)
    trials.to_csv(folder / "trials.csv", index=False)
    outcome.summary.to_csv(folder / "summary.csv", index=False)
    (folder / "summary.md").write_text(to_markdown(outcome.summary))
    outcome.methods.to_csv(folder / METHODS_CSV, index=False)
    (folder / METHODS_MD).write_text(methods_markdown(outcome.methods))
    pearson, spearman = plot_scatter(trials, folder / "scatter.png", title=spec.name)
    winners = [{**w, "final_test_error": errors.get(w["candidate"], math.nan)}
               for w in sel.winners.to_dict("records")]
    outcome.eigenvalue_lines = eigenvalue_lines(trials)
    (folder / "selection.json").write_text(json.dumps({
        "protocol": spec.reduce.protocol, "winners": winners, "pearson": pearson, "spearman": spearman,
        "retrained_searches": int(trials["final_test_error"].notna().sum()),
        "eigenvalue_ratios": eigenvalue_ratios(trials), "skipped": sel.skipped}, indent=1, default=str))
    if spec.reduce.protocol == "winner":
        for w in winners:
            log(f"winner {w['candidate']}: valid_acc {w['valid_acc']:.4f} (short retrain), final test error "
                f"{w['final_test_error']:.2f}% ; trials {w['trials']}")
    log(f"summary: {folder / 'summary.md'}; methods table: {folder / METHODS_MD}")


def trial_artifacts(frame: pd.DataFrame, selection: Selection, configs: dict[str, SearchConfig],
                    folder: Path) -> dict[str, list[Path]]:
    """Per trial: its eigenvalue curve, its returned genotype as JSON and as a cell diagram."""
    from rdarts.plots import plot_eigenvalues, plot_genotype
    from rdarts.spaces import Genotype

    out: dict[str, list[Path]] = {}
    returned = selection.returned.set_index("trial")
    for trial, rows in frame.groupby("trial", sort=False):
        d = folder / str(trial)
        d.mkdir(parents=True, exist_ok=True)
        files = []
        records = rows[rows["report"] >= 0].sort_values("report").to_dict("records")
        if records:
            files.append(plot_eigenvalues(records, d / "eigenvalues.png", title=f"{trial} ({rows['setting'].iloc[0]})",
                                          factor=configs[str(trial)].es_factor))
        if trial in returned.index:
            r = returned.loc[trial]
            genotype = Genotype.from_json(r["genotype"])
            (d / "genotype.json").write_text(json.dumps(genotype.to_dict(), indent=1) + "\n")
            files.append(d / "genotype.json")
            files.append(plot_genotype(genotype, d / "genotype.png",
                                       title=f"{trial}: genotype of epoch {r['returned_epoch']}"))
        out[str(trial)] = files
    return out
