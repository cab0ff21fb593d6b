"""``reduce_experiment``: from a sweep folder to retrained architectures, the methods table and an MLflow record.

1. ``collect`` the trials into ``results.parquet``;
2. ``select`` each trial's returned genotype and the distinct candidates per (space, dataset);
3. retrain every candidate briefly (validation split held out of the training set), then fully what the protocol
   asks (``reduce.protocol``: ``paper``, every architecture of DARTS / DARTS-ES / DARTS-ADA and each R-DARTS
   method's selection; ``winner``, one winner per group), once per ``retrain.seeds``;
4. write the report (``rdarts.reduce.outputs``: ``reduce/`` with the methods table, figures, selection);
5. log it all to MLflow (``rdarts.reduce.runs``; idempotent; a server that cannot be reached leaves everything on
   disk for a later ``rdarts reduce PATH``);
6. print the methods table and the line on λ_max.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

import pandas as pd

from rdarts import storage
from rdarts.cli_args import EXIT_TRACKING
from rdarts.config import SearchConfig
from rdarts.experiment import SPEC_FILE, load_spec
from rdarts.reduce.collect import RESULTS_PARQUET, collect, trial_configs, trial_settings
from rdarts.reduce.methods_table import paper_retrain_set
from rdarts.reduce.outputs import METHODS_MD, REDUCE_DIR, ReduceOutcome, trial_artifacts, write_report
from rdarts.reduce.report import per_trial
from rdarts.reduce.retrain_trials import RetrainJob, base_config, run_jobs
from rdarts.reduce.runs import build_runs
from rdarts.reduce.select import GROUP, Selection, select
from rdarts.sweep.spec import SweepSpec
from rdarts.tracking import TrackingUnavailable, experiment_id_of, is_http, resolve_uri, ui_command
from rdarts.tracking_sync import log_runs


def _jobs(configs: dict[str, SearchConfig], spec: SweepSpec, kind: str, candidates: pd.DataFrame, *,
          epochs: int | None, n_test: int | None) -> list[RetrainJob]:
    seeds = spec.retrain.seeds[:1] if kind == "candidate" else spec.retrain.seeds
    jobs = []
    for c in candidates.to_dict("records"):
        search = configs[c["trials"].split(",")[0]]  # the data of the first search that returned it
        for seed in seeds:
            cfg = base_config(search, spec, kind=kind, seed=seed, epochs=epochs, n_test=n_test)
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


def reduce_experiment(experiment_path: str | Path, spec: SweepSpec | None = None, tracking_uri: str | None = None, *,
                      retrain: bool = True, candidate_epochs: int | None = None, n_test: int | None = None,
                      runner: str = "ray", address: str | None = None, tracking: bool | None = None,
                      out: TextIO | None = None) -> ReduceOutcome:
    """Reduce a sweep folder (see the module docstring).

    Args:
        experiment_path: The sweep's folder (``<storage>/<name>``), local or a URI (``s3://``, ``gs://``,
            ``file://``; see ``rdarts.storage``).
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
        The outcome; ``exit_code`` is 3 when MLflow was asked for explicitly and could not be reached.
    """
    stream = out if out is not None else sys.stdout

    def log(msg: str) -> None:
        print(msg, file=stream, flush=True)

    if storage.is_remote(experiment_path):  # s3://, gs://: reduce a local mirror, then copy the results back
        uri = storage.normalise(experiment_path)
        local = storage.mirror_path(uri)
        log(f"{uri}: mirroring to {local} (the searches' checkpoints stay behind)")
        log(f"  {storage.download(uri, local)} file(s) fetched")
        outcome = reduce_experiment(local, spec, tracking_uri, retrain=retrain, candidate_epochs=candidate_epochs,
                                    n_test=n_test, runner=runner, address=address, tracking=tracking, out=stream)
        log(f"{uri}: {storage.upload(local, uri)} file(s) of results copied back")
        return outcome

    experiment = storage.local_folder(experiment_path)
    frame = collect(experiment)  # raises UserError for a folder without trials
    spec = spec if spec is not None else load_spec(str(experiment))
    configs = trial_configs(experiment)
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
        jobs = _jobs(configs, spec, "candidate", selection.candidates, epochs=candidate_epochs, n_test=n_test)
        results, errors = run_jobs(jobs, experiment, spec, runner=runner, address=address, log=log)
        scores = {r["candidate"]: r["valid_acc"] for r in results.values()}
        selection = select(frame, scores, max_candidates=cap)
        finals = _to_retrain(selection, settings, results, protocol)
        log(f"protocol {protocol}: {len(finals)} architecture(s) to retrain with the retrain: settings")
        final_jobs = _jobs(configs, spec, "final", finals, epochs=None, n_test=n_test)
        final, final_errors = run_jobs(final_jobs, experiment, spec, runner=runner, address=address, log=log)
        outcome.selection, outcome.retrain_results = selection, {**results, **final}
        outcome.errors = errors + final_errors
        for line in outcome.errors:
            log(f"  retrain failed: {line}")
    write_report(outcome, settings, spec, log)
    trial_files = trial_artifacts(frame, outcome.selection, configs, folder / "trials")
    enabled = tracking if tracking is not None else (spec.tracking.enabled or tracking_uri is not None)
    if enabled:
        _track(outcome, spec, settings, configs, trial_files, tracking_uri, log)
    _print_end(outcome, spec, log)
    return outcome


def _track(outcome: ReduceOutcome, spec: SweepSpec, settings: pd.DataFrame, configs: dict[str, SearchConfig],
           trial_files: dict[str, list[Path]], override: str | None, log: Callable[[str], None]) -> None:
    """Log the reduced sweep to MLflow; an unreachable server keeps everything on disk for a later reduce."""
    experiment = outcome.experiment_path
    uri, named = resolve_uri(spec.tracking.uri, experiment, override)
    outcome.tracking_uri = uri
    parent, children = build_runs(outcome, spec, experiment, settings, configs, trial_files, experiment / SPEC_FILE)
    location = None if is_http(uri) else (experiment / "mlartifacts").as_uri()
    name = spec.tracking.experiment or spec.name
    try:
        outcome.tracking_counts = log_runs(uri, name, parent, children, artifact_location=location)
    except TrackingUnavailable as e:
        again = f"rdarts reduce {experiment}" + (f" --tracking-uri {uri}" if named else "")
        log(f"warning: MLflow not logged: {e}; everything is kept in {experiment}; log it later with: {again}")
        outcome.exit_code = EXIT_TRACKING if named else 0
    else:
        c = outcome.tracking_counts
        log(f"MLflow: {c['written']} run(s) written, {c['completed']} completed, {c['kept']} unchanged, "
            f"{c['deleted']} replaced, at {uri}")
        log(f"view them: {ui_command(uri, experiment_id_of(uri, name), None if named else experiment)}")


def _print_end(outcome: ReduceOutcome, spec: SweepSpec, log: Callable[[str], None]) -> None:
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


def reduce_sweep(experiment_path: str, spec: SweepSpec | None = None, tracking_uri: str | None = None) -> int:
    """The hook ``rdarts sweep run/resume`` calls after a sweep (``rdarts.sweep.cli._reduce_after``)."""
    return reduce_experiment(experiment_path, spec, tracking_uri).exit_code
