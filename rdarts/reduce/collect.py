"""Read a finished (or interrupted) sweep folder into one table: a row per trial and reported epoch.

Input: the experiment folder ``rdarts sweep run`` writes (``<storage>/<name>``): one Tune trial folder per search
(``params.json`` = ``{"trial": {"index", "setting", "search": SearchConfig.to_dict()}}``, ``result.json`` = one JSON
object per report, ``progress.csv`` the same as CSV) and ``results.csv`` (a row per trial, with its status).

Output (``results.parquet`` in that folder): the trial (``trial``, ``trial_index``, ``trial_id``, ``setting``,
``method`` (its method labels, ``rdarts.methods``), ``status``, ``note``), its search settings as ``cfg.<field>``
(``cfg.space``, ``cfg.dataset``, ``cfg.seed``, ``cfg.weight_decay``, ...; the prefix keeps them apart from the
per-epoch ``weight_decay`` and ``drop_path`` that DARTS-ADA and the drop-path schedule change), every reported metric
(the ``EpochRecord`` fields, eigenvalues, genotypes, and the stop information
``search_status``/``result_epoch``/``result_genotype``/``stop_reason``/``scheduler_*``), ``report`` (the report's
position in the trial) and ``final_branch`` (False on a report superseded by a later one for the same epoch: a
DARTS-ADA rollback, or a trial restarted from a checkpoint).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pandas as pd

from rdarts import keys
from rdarts.config import SearchConfig
from rdarts.errors import UserError
from rdarts.methods import join_labels, method_labels
from rdarts.storage import local_folder

RESULTS_PARQUET = "results.parquet"
CFG = "cfg."
# Tune's own bookkeeping per report: dropped (the config is in the cfg.* columns already).
_TUNE_NOISE = ("config", "date", "hostname", "node_ip", "pid", "timestamp", "checkpoint_dir_name",
               "should_checkpoint", "done", "time_since_restore", "iterations_since_restore")
TRIAL_COLUMNS = ("trial", "trial_index", "trial_id", "setting", "method", "status", "note")


def _local(experiment_path: str | Path) -> Path:
    path = local_folder(experiment_path)
    if not path.is_dir():
        raise UserError(f"{path}: no such folder; give the folder of a sweep (<storage>/<name>)")
    return path


def _cell(value: Any) -> Any:
    """A value parquet can store in a column of scalars (nested settings become JSON text)."""
    if isinstance(value, dict | list | tuple):
        return json.dumps(value, sort_keys=True)
    return value


def _reports(trial_dir: Path) -> list[dict[str, Any]]:
    path = trial_dir / "result.json"
    if path.is_file():
        rows = []
        for line in path.read_text().splitlines():
            line = line.strip()
            if line:
                rows.append({k: v for k, v in json.loads(line).items() if k not in _TUNE_NOISE})
        return rows
    path = trial_dir / "progress.csv"
    if path.is_file() and path.stat().st_size:
        frame = pd.read_csv(path)
        return frame.drop(columns=[c for c in _TUNE_NOISE if c in frame], errors="ignore").to_dict("records")
    return []


def _statuses(experiment: Path) -> dict[str, dict[str, Any]]:
    path = experiment / "results.csv"
    if not path.is_file():
        return {}
    frame = pd.read_csv(path, keep_default_na=False)
    return {str(r["trial"]): r for r in frame.to_dict("records")}


def trial_dirs(experiment_path: str | Path) -> list[Path]:
    """The Tune trial folders of a sweep (its direct subfolders holding ``params.json``)."""
    return sorted(p for p in _local(experiment_path).iterdir() if p.is_dir() and (p / "params.json").is_file())


def collect(experiment_path: str | Path, *, write: bool = True) -> pd.DataFrame:
    """Every trial and epoch of a sweep in one frame; saved as ``results.parquet`` in the folder unless ``write``
    is False.

    Raises:
        UserError: if the folder holds no Tune trials.
    """
    experiment = _local(experiment_path)
    dirs = trial_dirs(experiment)
    if not dirs:
        raise UserError(f"{experiment}: no Tune trials here (no */params.json); give the folder of a sweep "
                        "started with 'rdarts sweep run' (<storage>/<name>)")
    statuses = _statuses(experiment)
    entries = [json.loads((d / "params.json").read_text()).get("trial", {}) for d in dirs]
    # Sweeps started before method labels existed: label them now, from the same settings.
    derived = method_labels([e.get("search", {}) for e in entries]) if any("method" not in e for e in entries) else []
    rows: list[dict[str, Any]] = []
    for i, (d, entry) in enumerate(zip(dirs, entries, strict=True)):
        method = entry["method"] if "method" in entry else join_labels(derived[i])
        settings = {CFG + k: _cell(v) for k, v in sorted(entry.get("search", {}).items())}
        reports = _reports(d)
        summary = statuses.get(d.name, {})
        last = reports[-1] if reports else {}
        status = summary.get("status") or last.get(keys.SEARCH_STATUS) or "no results"
        trial = {"trial": d.name, "trial_index": entry.get("index"), "trial_id": last.get("trial_id", ""),
                 "setting": entry.get("setting", ""), "method": method, "status": str(status),
                 "note": str(summary.get("note", ""))}
        if not reports:  # a trial that never reported: one row, so that it is not lost from the table
            rows.append({**trial, **settings, "report": -1, "final_branch": False})
            continue
        for i, r in enumerate(reports):
            rows.append({**trial, **settings, **{k: _cell(v) for k, v in r.items() if k != "trial_id"},
                         "report": i})
    frame = pd.DataFrame.from_records(rows)
    frame = _mark_final_branch(frame)
    frame = frame.sort_values(["trial_index", "report"], kind="stable").reset_index(drop=True)
    if write:
        frame.to_parquet(experiment / RESULTS_PARQUET, index=False)
    return frame


def _mark_final_branch(frame: pd.DataFrame) -> pd.DataFrame:
    if "epoch" not in frame:
        frame["epoch"] = math.nan
    has = frame["report"] >= 0
    last = frame[has].groupby(["trial", "epoch"])["report"].transform("max")
    frame["final_branch"] = False
    frame.loc[has, "final_branch"] = frame.loc[has, "report"] == last
    return frame


def trial_configs(experiment_path: str | Path) -> dict[str, SearchConfig]:
    """Each trial's search settings, as the sweep gave them to it (``params.json``)."""
    return {d.name: SearchConfig.from_dict(json.loads((d / "params.json").read_text())["trial"]["search"])
            for d in trial_dirs(experiment_path)}


def trial_settings(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per trial: its identity, status and ``cfg.*`` settings."""
    cols = [c for c in TRIAL_COLUMNS if c in frame] + [c for c in frame.columns if c.startswith(CFG)]
    return frame.drop_duplicates("trial")[cols].reset_index(drop=True)
