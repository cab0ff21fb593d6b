"""The MLflow runs of a reduced sweep: a parent per sweep, a nested run per search trial and per retraining.

Built as ``RunSpec``s (what each run should hold) for ``rdarts.tracking.log_runs``, which writes them
idempotently. The per-epoch metric names are ``EpochRecord``'s numeric fields (one source of truth).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd

from rdarts import keys
from rdarts.config import SearchConfig
from rdarts.methods import join_labels, split_labels
from rdarts.records import numeric_fields
from rdarts.reduce.collect import RESULTS_PARQUET
from rdarts.reduce.methods_table import metric_name
from rdarts.reduce.outputs import METHODS_CSV, METHODS_MD, REDUCE_DIR, ReduceOutcome
from rdarts.reduce.retrain_trials import RETRAIN_DIR
from rdarts.sweep.spec import SweepSpec
from rdarts.tracking import (
    RunSpec,
    search_run_key,
    search_run_name,
    search_run_params,
    search_run_tags,
    sweep_run_params,
    sweep_run_tags,
)

EPOCH_METRICS = numeric_fields()
"""The per-epoch metrics of a search trial: EpochRecord's numeric fields."""
RETRAIN_METRICS = ("lr", "drop_path", "train_loss", "train_acc", "valid_acc", "test_acc", "test_error",
                   "epoch_time_s")


def build_runs(outcome: ReduceOutcome, spec: SweepSpec, experiment: Path, settings: pd.DataFrame,
               configs: dict[str, SearchConfig], trial_files: dict[str, list[Path]], spec_file: Path
               ) -> tuple[RunSpec, list[RunSpec]]:
    """The parent run and its children (see the module docstring)."""
    folder = experiment / REDUCE_DIR
    sel = json.loads((folder / "selection.json").read_text())
    parent = RunSpec(
        key=spec.name, name=spec.name, params=sweep_run_params(spec),
        tags={**sweep_run_tags(spec, str(experiment)),
              **{f"rdarts.winner.{w['cfg.space']}.{w['cfg.dataset']}": w["candidate"] for w in sel["winners"]}},
        metrics={"pearson_eigenvalue_test_error": [(0, sel["pearson"])],
                 "spearman_eigenvalue_test_error": [(0, sel["spearman"])],
                 "retrained_searches": [(0, float(sel["retrained_searches"]))],
                 **{f"final_test_error.{w['cfg.space']}.{w['cfg.dataset']}": [(0, w["final_test_error"])]
                    for w in sel["winners"] if sel["protocol"] == "winner"},
                 **_methods_metrics(outcome.methods)},
        artifacts=[(p, None) for p in (spec_file, experiment / RESULTS_PARQUET, folder / METHODS_CSV,
                                       folder / METHODS_MD, folder / "summary.csv", folder / "summary.md",
                                       folder / "scatter.png", folder / "selection.json", folder / "candidates.csv",
                                       folder / "trials.csv")])
    children = []
    returned = outcome.selection.returned.set_index("trial")
    for row in settings.to_dict("records"):
        trial = row["trial"]
        rows = outcome.frame[(outcome.frame["trial"] == trial) & outcome.frame["final_branch"]].sort_values("epoch")
        metrics = {m: [(int(e), float(v)) for e, v in zip(rows["epoch"], rows[m], strict=True)
                       if v is not None and not pd.isna(v)] for m in EPOCH_METRICS if m in rows}
        last = rows.sort_values("report").iloc[-1] if len(rows) else None
        r = returned.loc[trial] if trial in returned.index else None
        stop_epoch = int(r["stop_epoch"]) if r is not None else -1
        search = configs[trial].to_dict()
        tags = {**search_run_tags(str(row.get("method", "")), str(row["setting"]), search, str(row["status"])),
                "stop_epoch": str(stop_epoch), keys.STOP_REASON: _stop_reason(rows, last)}
        if r is not None:
            tags.update(kept_epoch=str(int(r["returned_epoch"])), candidate=str(r["candidate"]))
        params = search_run_params(search, trial, str(row["setting"]), int(row["trial_index"]))
        children.append(RunSpec(search_run_key(spec.name, trial),
                                search_run_name(str(row["setting"]), str(row.get("method", ""))), params, tags,
                                metrics, [(p, None) for p in trial_files.get(trial, [])]))
    winners = set(outcome.selection.winners["candidate"])
    method_of = settings.set_index("trial")["method"].to_dict() if "method" in settings else {}
    trials_of: dict[str, list[str]] = {}  # candidate -> the method labels of the searches that returned it
    for t, c in zip(outcome.selection.returned["trial"], outcome.selection.returned["candidate"], strict=True):
        trials_of.setdefault(c, []).append(str(method_of.get(t, "")))
    for key, res in sorted(outcome.retrain_results.items()):
        gfile = experiment / RETRAIN_DIR / key / "genotype.json"
        gfile.write_text(json.dumps(json.loads(res["genotype"]), indent=1) + "\n")
        metrics = {m: [(int(h["epoch"]), float(h[m])) for h in res["history"]] for m in RETRAIN_METRICS}
        metrics.update(final_test_error=[(0, float(res["test_error"]))], final_valid_acc=[(0, float(res["valid_acc"]))],
                       params=[(0, float(res["params"]))])
        params = {**{f"retrain.{k}": v for k, v in res["config"].items()}, "kind": res["kind"],
                  "candidate": res["candidate"], "genotype": res["genotype"], "train_size": res["train_size"],
                  "valid_size": res["valid_size"]}
        served = sorted({m for t in trials_of.get(res["candidate"], []) for m in split_labels(t)})
        tags = {"kind": res["kind"], "candidate": res["candidate"], "winner": str(res["candidate"] in winners).lower(),
                "method": join_labels(served)}
        children.append(RunSpec(f"{spec.name}/retrain/{key}", f"retrain {key}", params, tags, metrics,
                                [(gfile, None)]))
    return parent, children


def _methods_metrics(table: pd.DataFrame | None) -> dict[str, list[tuple[int, float]]]:
    """The methods table as parent-run metrics: ``test_error_mean.<space>.<dataset>.<order>.<method>`` and so on."""
    out: dict[str, list[tuple[int, float]]] = {}
    for r in (table.to_dict("records") if table is not None else []):
        for col in ("n_searches", "n_retrained", "test_error_mean", "test_error_std", "test_error_best"):
            value = float(r[col])
            if math.isfinite(value):
                out[metric_name(col, r["space"], r["dataset"], r["order"], r["method"])] = [(0, value)]
    return out


def _stop_reason(rows: pd.DataFrame, last: pd.Series | None) -> str:
    if last is None:
        return ""
    for col in (keys.STOP_REASON, keys.SCHEDULER_REASON):
        if col in rows:
            reasons = [str(x) for x in rows[col] if isinstance(x, str) and x]
            if reasons:
                return reasons[-1][:5000]
    return str(last.get(keys.SEARCH_STATUS, ""))


