"""``reduce_experiment``: from a sweep folder to a selected, retrained genotype and its MLflow record.

1. ``collect`` the trials into ``results.parquet``;
2. ``select`` each trial's returned genotype and the distinct candidates per (space, dataset);
3. retrain every candidate briefly (validation split held out of the training set) and pick the winner by its
   validation accuracy; retrain the winner with the sweep's ``retrain:`` block, once per seed;
4. write the report (``reduce/``: per-trial genotype and eigenvalue figures, candidates, selection, summary table,
   scatter of final λ_max vs test error);
5. log it all to MLflow (idempotent; a server that cannot be reached leaves everything on disk for a later
   ``rdarts reduce PATH``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import pandas as pd

from rdarts.methods import join_labels, split_labels
from rdarts.reduce.collect import CFG, RESULTS_PARQUET, collect, trial_settings
from rdarts.reduce.methods_table import (
    eigenvalue_lines,
    eigenvalue_ratios,
    methods_markdown,
    methods_table,
    metric_name,
    paper_retrain_set,
)
from rdarts.reduce.remote import download, is_remote, mirror_path, upload
from rdarts.reduce.report import per_trial, plot_scatter, summary_table, to_markdown
from rdarts.reduce.retrain_trials import RETRAIN_DIR, RetrainJob, base_config, run_jobs
from rdarts.reduce.select import GROUP, Selection, select
from rdarts.reduce.tracking import (
    TRACKING_URI_ENV,
    RunSpec,
    TrackingUnavailable,
    default_uri,
    experiment_id_of,
    log_runs,
    ui_command,
)
from rdarts.search import EpochRecord

REDUCE_DIR = "reduce"
METHODS_CSV, METHODS_MD = "methods.csv", "methods.md"
EXIT_TRACKING = 1
# The per-epoch metrics of a search trial: EpochRecord's numeric fields (one source of truth for the names).
EPOCH_METRICS = tuple(f.name for f in dataclasses.fields(EpochRecord)
                      if f.type in ("float", "int") and f.name not in ("epoch", "stop_epoch"))
RETRAIN_METRICS = ("lr", "drop_path", "train_loss", "train_acc", "valid_acc", "test_acc", "test_error",
                   "epoch_time_s")


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


def _settings(row: pd.Series) -> dict[str, Any]:
    out = {}
    for k, v in row.items():
        if str(k).startswith(CFG):
            v = v.item() if hasattr(v, "item") else v  # numpy scalar -> Python (RetrainConfig checks types)
            out[str(k)[len(CFG):]] = None if isinstance(v, float) and math.isnan(v) else v
    return out


def _jobs(selection: Selection, settings: pd.DataFrame, spec: Any, kind: str, candidates: pd.DataFrame, *,
          epochs: int | None, n_test: int | None) -> list[RetrainJob]:
    by_trial = settings.set_index("trial")
    seeds = spec.retrain.seeds[:1] if kind == "candidate" else spec.retrain.seeds
    jobs = []
    for c in candidates.to_dict("records"):
        s = _settings(by_trial.loc[c["trials"].split(",")[0]])
        for seed in seeds:
            cfg = base_config(s, spec, kind=kind, seed=seed, epochs=epochs, n_test=n_test)
            jobs.append(RetrainJob(f"{c['candidate']}.{kind}.s{seed}", kind, c["candidate"], c["genotype"],
                                   cfg.to_dict()))
    return jobs


def _to_retrain(selection: Selection, settings: pd.DataFrame, results: dict[str, dict[str, Any]],
                protocol: str) -> pd.DataFrame:
    """The candidates the protocol retrains fully: ``winner``, each group's winner; ``paper``, every architecture of
    a per-search method and each R-DARTS method's selection (``methods_table.paper_retrain_set``)."""
    if protocol == "winner":
        return selection.winners
    cand = {r["candidate"]: r for r in results.values() if r["kind"] == "candidate"}
    keys = paper_retrain_set(per_trial(selection.returned, settings, cand))
    return selection.candidates.set_index("candidate").loc[keys].reset_index()


def _trial_artifacts(frame: pd.DataFrame, selection: Selection, folder: Path) -> dict[str, list[Path]]:
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
            factor = rows["cfg.es_factor"].iloc[0] if "cfg.es_factor" in rows else 1.3
            files.append(plot_eigenvalues(records, d / "eigenvalues.png", title=f"{trial} ({rows['setting'].iloc[0]})",
                                          factor=float(factor)))
        if trial in returned.index:
            r = returned.loc[trial]
            genotype = Genotype.from_json(r["genotype"])
            (d / "genotype.json").write_text(json.dumps(genotype.to_dict(), indent=1) + "\n")
            files.append(d / "genotype.json")
            files.append(plot_genotype(genotype, d / "genotype.png",
                                       title=f"{trial}: genotype of epoch {r['returned_epoch']}"))
        out[str(trial)] = files
    return out


def reduce_experiment(experiment_path: str | Path, spec: Any = None, tracking_uri: str | None = None, *,
                      retrain: bool = True, candidate_epochs: int | None = None, n_test: int | None = None,
                      runner: str = "ray", address: str | None = None, tracking: bool | None = None,
                      out: TextIO | None = None) -> ReduceOutcome:
    """Reduce a sweep folder (see the module docstring).

    Args:
        experiment_path: The sweep's folder (``<storage>/<name>``), local or a URI (``s3://``, ``gs://``,
            ``file://``; see ``rdarts.reduce.remote``).
        spec: The sweep (read from the folder's ``sweep.yaml`` when omitted).
        tracking_uri: MLflow URI; default ``tracking.uri`` of the sweep, else ``$MLFLOW_TRACKING_URI``, else
            ``sqlite:///<folder>/mlflow.db``.
        retrain: Retrain candidates and winner (off: collect, select and log the searches only).
        candidate_epochs: Epochs of the short candidate retrains (default ``reduce.epochs``).
        n_test: Test examples the retrains evaluate (default all).
        runner: ``ray`` (Tune trials) or ``local`` (in this process).
        address: Ray cluster to join for the retrains.
        tracking: Log to MLflow; default ``tracking.enabled`` of the sweep, or True when a URI is given.
        out: Where progress lines go (stdout).

    Returns:
        The outcome; ``exit_code`` is 1 when MLflow was asked for explicitly and could not be reached.
    """
    from rdarts.sweep.runner import SPEC_FILE, load_experiment_spec

    stream = out if out is not None else sys.stdout

    def log(msg: str) -> None:
        print(msg, file=stream, flush=True)

    if is_remote(experiment_path):  # s3://, gs://: reduce a local mirror, then copy the results back
        uri = str(experiment_path).rstrip("/")
        local = mirror_path(uri)
        log(f"{uri}: mirroring to {local} (the searches' checkpoints stay behind)")
        log(f"  {download(uri, local)} file(s) fetched")
        outcome = reduce_experiment(local, spec, tracking_uri, retrain=retrain, candidate_epochs=candidate_epochs,
                                    n_test=n_test, runner=runner, address=address, tracking=tracking, out=stream)
        log(f"{uri}: {upload(local, uri)} file(s) of results copied back")
        return outcome

    experiment = Path(experiment_path).expanduser().resolve()
    frame = collect(experiment)  # raises UserError for a folder without trials
    spec = spec if spec is not None else load_experiment_spec(str(experiment))
    folder = experiment / REDUCE_DIR
    folder.mkdir(exist_ok=True)
    settings = trial_settings(frame)
    protocol = spec.reduce.protocol
    cap = spec.reduce.candidates if protocol == "winner" else None  # the paper's protocol retrains every candidate
    selection = select(frame, max_candidates=cap)
    log(f"{len(settings)} trial(s), {len(selection.candidates)} candidate genotype(s) in "
        f"{selection.candidates.groupby(list(GROUP)).ngroups} group(s); table in {experiment / RESULTS_PARQUET}")
    for line in selection.skipped:
        log(f"  skipped {line}")
    outcome = ReduceOutcome(experiment, frame, selection)
    if retrain and len(selection.candidates):
        jobs = _jobs(selection, settings, spec, "candidate", selection.candidates, epochs=candidate_epochs,
                     n_test=n_test)
        results, errors = run_jobs(jobs, experiment, spec, runner=runner, address=address, log=log)
        scores = {r["candidate"]: r["valid_acc"] for r in results.values()}
        selection = select(frame, scores, max_candidates=cap)
        finals = _to_retrain(selection, settings, results, protocol)
        log(f"protocol {protocol}: {len(finals)} architecture(s) to retrain with the retrain: settings")
        final_jobs = _jobs(selection, settings, spec, "final", finals, epochs=None, n_test=n_test)
        final, final_errors = run_jobs(final_jobs, experiment, spec, runner=runner, address=address, log=log)
        outcome.selection, outcome.retrain_results = selection, {**results, **final}
        outcome.errors = errors + final_errors
        for line in outcome.errors:
            log(f"  retrain failed: {line}")
    _write_report(outcome, settings, spec, log)
    trial_files = _trial_artifacts(frame, outcome.selection, folder / "trials")
    # A cluster names its tracking server in the environment (cluster/*.yaml): it comes after the sweep file's own
    # tracking.uri, before the SQLite file in the sweep folder.
    env_uri = os.environ.get(TRACKING_URI_ENV) or None
    uri = tracking_uri or spec.tracking.uri or env_uri or default_uri(experiment)
    explicit = tracking_uri is not None or spec.tracking.uri is not None or env_uri is not None
    enabled = tracking if tracking is not None else (spec.tracking.enabled or tracking_uri is not None)
    if enabled:
        outcome.tracking_uri = uri
        parent, children = _runs(outcome, spec, experiment, settings, trial_files, experiment / SPEC_FILE)
        location = None if uri.startswith(("http://", "https://")) else (experiment / "mlartifacts").as_uri()
        try:
            outcome.tracking_counts = log_runs(uri, spec.tracking.experiment or spec.name, parent, children,
                                               artifact_location=location)
        except TrackingUnavailable as e:
            again = f"rdarts reduce {experiment}" + (f" --tracking-uri {uri}" if explicit else "")
            log(f"warning: MLflow not logged: {e}; everything is kept in {experiment}; log it later with: {again}")
            outcome.exit_code = EXIT_TRACKING if explicit else 0
        else:
            c = outcome.tracking_counts
            log(f"MLflow: {c['written']} run(s) written, {c['kept']} unchanged, {c['deleted']} replaced, at {uri}")
            log(f"view them: {ui_command(uri, experiment_id_of(uri, spec.tracking.experiment or spec.name))}")
    _print_end(outcome, spec, log)
    return outcome


def _print_end(outcome: ReduceOutcome, spec: Any, log: Any) -> None:
    """What a sweep ends with: the methods table (test errors in %) and the line on λ_max."""
    if outcome.methods is None:
        return
    shown = outcome.methods.rename(columns={"test_error_mean": "mean", "test_error_std": "std",
                                            "test_error_best": "best", "n_searches": "searches",
                                            "n_retrained": "retrained"})
    log(f"\nmethods table, test error % (protocol {spec.reduce.protocol}; "
        f"{outcome.experiment_path / REDUCE_DIR / METHODS_MD}):")
    log(shown.to_string(index=False, na_rep="-", float_format=lambda v: f"{v:.2f}"))
    for line in outcome.eigenvalue_lines:
        log(line)


def _write_report(outcome: ReduceOutcome, settings: pd.DataFrame, spec: Any, log: Any) -> None:
    folder = outcome.experiment_path / REDUCE_DIR
    sel = outcome.selection
    cand_results = {r["candidate"]: r for r in outcome.retrain_results.values() if r["kind"] == "candidate"}
    finals: dict[str, list[float]] = {}
    for r in outcome.retrain_results.values():
        if r["kind"] == "final":
            finals.setdefault(r["candidate"], []).append(float(r["test_error"]))
    final_errors = {k: sum(v) / len(v) for k, v in finals.items()}
    trials = per_trial(sel.returned, settings, cand_results, final_errors)
    winner_errors = {k: v for k, v in final_errors.items() if k in set(sel.winners["candidate"])}
    outcome.summary = summary_table(trials, winner_errors)
    outcome.methods = methods_table(trials, final_errors)
    sel.returned.to_csv(folder / "returned.csv", index=False)
    sel.candidates.to_csv(folder / "candidates.csv", index=False)
    trials.to_csv(folder / "trials.csv", index=False)
    outcome.summary.to_csv(folder / "summary.csv", index=False)
    (folder / "summary.md").write_text(to_markdown(outcome.summary))
    outcome.methods.to_csv(folder / METHODS_CSV, index=False)
    (folder / METHODS_MD).write_text(methods_markdown(outcome.methods))
    pearson, spearman = plot_scatter(trials, folder / "scatter.png", title=spec.name)
    winners = [{**w, "final_test_error": final_errors.get(w["candidate"], math.nan)}
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


def _flat(prefix: str, value: Any) -> dict[str, Any]:
    if isinstance(value, dict) and value:
        out: dict[str, Any] = {}
        for k, v in value.items():
            out.update(_flat(f"{prefix}.{k}" if prefix else str(k), v))
        return out
    return {prefix: value}


def _runs(outcome: ReduceOutcome, spec: Any, experiment: Path, settings: pd.DataFrame,
          trial_files: dict[str, list[Path]], spec_file: Path) -> tuple[RunSpec, list[RunSpec]]:
    import rdarts

    folder = experiment / REDUCE_DIR
    spec_json = json.dumps(spec.model_dump(mode="json"), sort_keys=True)
    sel = json.loads((folder / "selection.json").read_text())
    parent = RunSpec(
        key=spec.name, name=spec.name, params=_flat("", spec.model_dump(mode="json")),
        tags={"rdarts.version": rdarts.__version__, "rdarts.spec_hash": hashlib.sha256(spec_json.encode()).hexdigest(),
              "rdarts.experiment_path": str(experiment),
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
        stop_epoch = int(r["returned_epoch"]) if r is not None and r["stop_source"] != "last" else -1
        tags = {"status": str(row["status"]), "setting": str(row["setting"]), "method": str(row.get("method", "")),
                "stop_epoch": str(stop_epoch),
                "stop_reason": _stop_reason(rows, last), "order": str(row.get("cfg.order")),
                "early_stop": str(row.get("cfg.early_stop"))}
        if r is not None:
            tags.update(returned_epoch=str(int(r["returned_epoch"])), candidate=str(r["candidate"]))
        params = {k[len(CFG):]: v for k, v in row.items() if k.startswith(CFG)}
        params.update(trial=trial, setting=row["setting"], trial_index=row["trial_index"])
        children.append(RunSpec(f"{spec.name}/{trial}", f"{trial} {row['setting']}", params, tags, metrics,
                                [(p, None) for p in trial_files.get(trial, [])]))
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
    for col in ("stop_reason", "scheduler_reason"):
        if col in rows:
            reasons = [str(x) for x in rows[col] if isinstance(x, str) and x]
            if reasons:
                return reasons[-1][:5000]
    return str(last.get("search_status", ""))


def reduce_sweep(experiment_path: str, spec: Any = None, tracking_uri: str | None = None) -> int:
    """The hook ``rdarts sweep run/resume`` calls after a sweep (``rdarts.sweep.cli._reduce_after``)."""
    return reduce_experiment(experiment_path, spec, tracking_uri).exit_code
