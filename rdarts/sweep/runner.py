"""Run a sweep on Ray Tune: start (or join) Ray, run every trial of the spec, summarise; resume.

The experiment folder (``rdarts.experiment``) gets ``sweep.yaml`` (the file as given), ``results.csv`` (one row
per trial) and ``plots/<trial>.png`` (eigenvalue curves) beside Tune's own files. Ray Jobs are ``rdarts.sweep.jobs``.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rdarts import keys
from rdarts import storage as store
from rdarts.errors import UserError
from rdarts.experiment import (
    PLOTS_DIR,
    RESULTS_FILE,
    SPEC_FILE,
    experiment_path,
    holds_sweep,
    init_ray,
    joins_cluster,
    load_spec,
)
from rdarts.keys import trial_dirname, trial_name
from rdarts.sweep.gpu import AUTO, search_gpu, search_plan
from rdarts.sweep.preflight import check_resources, largest_node, preflight
from rdarts.sweep.spec import SweepSpec

if TYPE_CHECKING:
    from ray import tune

__all__ = ["RESULTS_FILE", "SPEC_FILE", "SweepOutcome", "build_tuner", "resume_sweep", "run_sweep", "summarise"]

UNFINISHED = ("error", "failed", "diverged")
SUMMARY_COLUMNS = ("index", "trial", "setting", "status", "method", "epochs", "valid_acc", keys.LAST_EIGENVALUE,
                   keys.STOP_EPOCH, keys.KEPT_EPOCH, "ada_round", "param_free_share", keys.RESULT_GENOTYPE, "note")


@dataclass
class SweepOutcome:
    experiment_path: str
    rows: list[dict[str, Any]]
    table: str
    plots: list[str] = field(default_factory=list)

    @property
    def num_errors(self) -> int:
        """Trials that ended without a genotype: crashed (``error``), ``failed`` or ``diverged``."""
        return sum(1 for r in self.rows if r["status"] in UNFINISHED)

    @property
    def num_genotypes(self) -> int:
        return sum(1 for r in self.rows if r["status"] in ("finished", "es_stopped"))

    def error_summary(self) -> list[str]:
        """One line per distinct reason the trials without a genotype give, with how many gave it."""
        counts: dict[str, int] = {}
        for r in self.rows:
            if r["status"] not in ("finished", "es_stopped"):
                first = (str(r["note"]).strip().splitlines() or [r["status"]])[0]
                counts[f"{r['status']}: {first}"] = counts.get(f"{r['status']}: {first}", 0) + 1
        return [f"{n} trial(s) {reason}" for reason, n in counts.items()]


def build_tuner(spec: SweepSpec, *, storage: str | None = None, trainable: Callable[..., Any] | None = None,
                verbose: int = 1, tracking_uri: str | None = None) -> tune.Tuner:
    """The Tuner of a sweep: one trial per ``spec.trials()`` entry, EigenvalueStopper, per-epoch checkpoints."""
    from ray import tune

    from rdarts.sweep.live import LiveTracking
    from rdarts.sweep.progress import SweepReporter
    from rdarts.sweep.scheduler import EigenvalueStopper
    from rdarts.sweep.trainable import search_trainable

    stopper = EigenvalueStopper()
    # One grid value per trial, each a plain dict: Tuner.restore needs nothing re-specified (a sample_from lambda
    # would come back as a placeholder).
    param_space = {keys.TRIAL: tune.grid_search(spec.trials())}
    reporter = SweepReporter(experiment_path(spec, storage))
    return tune.Tuner(
        _with_resources(trainable or search_trainable, spec),
        param_space=param_space,
        tune_config=tune.TuneConfig(scheduler=stopper, max_concurrent_trials=spec.max_concurrent, num_samples=1,
                                    trial_name_creator=trial_name, trial_dirname_creator=trial_dirname,
                                    reuse_actors=False),
        run_config=tune.RunConfig(
            name=spec.name, storage_path=store.normalise(storage or spec.storage),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=2),
            failure_config=tune.FailureConfig(max_failures=spec.max_failures),
            progress_reporter=reporter, verbose=verbose,
            callbacks=[stopper.callback(), LiveTracking(spec, experiment_path(spec, storage), tracking_uri)]),
    )


def _with_resources(trainable: Callable[..., Any], spec: SweepSpec) -> Any:
    from ray import tune

    return tune.with_resources(trainable, {"cpu": spec.resources.cpu, "gpu": search_gpu(spec)})


# ------------------------------------------------------------------------------------------------- run / resume
def run_sweep(spec: SweepSpec, address: str | None = None, *, storage: str | None = None,
              spec_text: str | None = None, trainable: Callable[..., Any] | None = None, verbose: int = 1,
              plots: bool = True, out: Any = None, tracking_uri: str | None = None) -> SweepOutcome:
    """Run every trial of ``spec`` and summarise them.

    Args:
        spec: The validated sweep.
        address: A Ray cluster to join (``host:6379``, ``ray://...``, ``auto``); a local Ray is started without.
        storage: Overrides ``spec.storage``.
        spec_text: The sweep file's text, kept as ``sweep.yaml`` (the spec's JSON when omitted).
        trainable: Replaces ``search_trainable`` (tests).
        verbose: 0 silent, 1 the progress table, 2 also the trials' own output and Ray's INFO lines.
        plots: Write eigenvalue curves when ``rdarts.plots.plot_eigenvalues`` is available.
        out: Where the summary is printed (stdout by default).
        tracking_uri: MLflow store of the live runs (default as the reducer's: ``rdarts.tracking.resolve_uri``).
    """
    path = experiment_path(spec, storage)
    if holds_sweep(path):
        raise UserError(f"{path} already holds a sweep named {spec.name!r}: resume it with "
                        f"'rdarts sweep resume {path}', delete it, or change name: in the sweep file")
    _start_ray(spec, address, storage, verbose)
    tuner = build_tuner(spec, storage=storage, trainable=trainable, verbose=verbose, tracking_uri=tracking_uri)
    store.write_bytes(path, SPEC_FILE,
                      (spec_text or spec.model_dump_json(indent=2, exclude_unset=True)).encode())
    grid = tuner.fit()
    return summarise(grid, path, plots=plots, out=out)


def resume_sweep(experiment_path: str, address: str | None = None, *, trainable: Callable[..., Any] | None = None,
                 verbose: int = 1, plots: bool = True, out: Any = None) -> SweepOutcome:
    """Continue an interrupted sweep: unfinished and errored trials resume from their checkpoints; finished
    trials are not run again."""
    path = store.normalise(experiment_path)
    _refuse_foreign(path)
    spec = load_spec(path)
    _start_ray(spec, address, None if store.is_remote(path) else str(Path(path).parent), verbose)
    from ray import tune

    from rdarts.sweep.trainable import search_trainable
    if not tune.Tuner.can_restore(path):
        raise UserError(f"{path}: no Tune experiment state to resume from (the sweep never started?)")
    tuner = tune.Tuner.restore(path, _with_resources(trainable or search_trainable, spec), resume_errored=True)
    grid = tuner.fit()
    return summarise(grid, path, plots=plots, out=out)


def _start_ray(spec: SweepSpec, address: str | None, storage: str | None, verbose: int = 1) -> None:
    """Check what the trials need (``rdarts.sweep.preflight``), then start or join Ray; on a cluster, check that a
    trial fits its largest node before any trial is queued."""
    joining = joins_cluster(address)
    preflight(spec, storage=storage, local=not joining)
    if spec.resources.gpu == AUTO:
        print(search_plan(spec).describe(), flush=True)
    init_ray(address, verbose=verbose >= 2)
    if joining:
        check_resources(spec, largest_node(), "the largest node of the cluster")


def _refuse_foreign(path: str) -> None:
    """Resuming unpickles the folder's Tune state (``tuner.pkl``, ``experiment_state*``): only this user's folder."""
    if store.is_remote(path):
        return
    folder = Path(path)
    for f in [folder, *(p for p in folder.glob("*") if p.name.startswith(("tuner.pkl", "experiment_state")))]:
        if f.exists() and f.lstat().st_uid != os.getuid():
            raise UserError(f"{f} belongs to another user (uid {f.lstat().st_uid}); resuming would load its pickled "
                            "Tune state, so rdarts refuses: copy the sweep folder to one of your own to resume it")


# ------------------------------------------------------------------------------------------------- summary
_ERROR_LINE = re.compile(r"^\s*(?:[\w.]+(?:Error|Exception)): (.+)$", re.M)


def error_message(error: BaseException | None) -> str:
    """The innermost ``SomeError: message`` line of a trial error (Tune wraps the trainable's traceback)."""
    if error is None:
        return ""
    found = _ERROR_LINE.findall(str(error))
    return found[-1].strip() if found else str(error).strip().splitlines()[-1]


def _row(result: Any) -> dict[str, Any]:
    m, cfg = result.metrics or {}, (result.config or {}).get(keys.TRIAL, {})
    status = "error" if result.error is not None else (m.get(keys.SEARCH_STATUS) or "unknown")
    note = error_message(result.error) if result.error is not None else (m.get(keys.SCHEDULER_REASON) or
                                                                          m.get(keys.STOP_REASON) or "")
    return {
        "index": cfg.get("index"), "trial": Path(result.path).name, "setting": cfg.get("setting", ""),
        "method": cfg.get("method", ""), "status": status,
        "epochs": m.get(keys.EPOCH, -1) + (0 if status in UNFINISHED else 1),  # completed epochs
        "valid_acc": m.get("valid_acc"), keys.LAST_EIGENVALUE: m.get(keys.LAST_EIGENVALUE),
        keys.STOP_EPOCH: m.get(keys.STOP_EPOCH, -1), "ada_round": m.get("ada_round"),
        keys.KEPT_EPOCH: m.get(keys.RESULT_EPOCH), "param_free_share": m.get("param_free_share"),
        keys.RESULT_GENOTYPE: m.get(keys.RESULT_GENOTYPE, ""), "note": note, "path": result.path,
    }


def summarise(grid: Any, experiment_path: str, *, plots: bool = True, out: Any = None) -> SweepOutcome:
    """Print and save the one-row-per-trial table; draw the eigenvalue curves."""
    import pandas as pd

    rows = sorted((_row(r) for r in grid), key=lambda r: (r["index"] is None, r["index"]))
    frame = pd.DataFrame(rows, columns=[*SUMMARY_COLUMNS, "path"])
    store.write_bytes(experiment_path, RESULTS_FILE, frame.to_csv(index=False).encode())
    shown = frame.drop(columns=["path", keys.RESULT_GENOTYPE])
    table = shown.to_string(index=False, max_colwidth=60, float_format=lambda v: f"{v:.4g}")
    outcome = SweepOutcome(experiment_path, rows, table)
    if plots:
        outcome.plots = _plot_curves(grid, experiment_path, out)
    stream = out if out is not None else sys.stdout
    print(f"\n{len(rows)} trial(s), {outcome.num_errors} failed or diverged; results in "
          f"{experiment_path}/{RESULTS_FILE}", file=stream)
    print(table, file=stream)
    return outcome


def _plot_curves(grid: Any, experiment_path: str, out: Any) -> list[str]:
    import tempfile

    from rdarts.config import SearchConfig
    from rdarts.plots import plot_eigenvalues

    written = []
    for result in grid:
        frame = result.metrics_dataframe
        if frame is None or frame.empty:
            continue
        name = Path(result.path).name
        cfg = SearchConfig.from_dict(result.config[keys.TRIAL]["search"])
        with tempfile.TemporaryDirectory() as tmp:
            local = Path(tmp) / f"{name}.png"
            try:
                plot_eigenvalues(frame.to_dict("records"), local, factor=cfg.es_factor)
            except Exception as e:  # a plot must not hide the results of a finished sweep; say so and go on
                print(f"warning: no eigenvalue plot for {name}: {type(e).__name__}: {e}", file=out or sys.stderr)
                continue
            if local.is_file():
                written.append(store.write_bytes(experiment_path, f"{PLOTS_DIR}/{name}.png", local.read_bytes()))
    return written
