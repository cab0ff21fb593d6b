"""The Ray Tune function trainable: one resumable RobustDARTS search per trial, reported and checkpointed per epoch.

Per epoch the trial reports the search's ``EpochRecord`` (numbers, JSON strings for genotypes and α) plus what the
search currently answers (``search_status``, ``result_epoch``, ``result_genotype``, ``stop_reason``) and its
eigenvalue history, with a Tune checkpoint holding the latest search state and, for DARTS-ADA, the older epoch
states a rollback may need (``checkpoint_window``). A restarted trial (its worker died; ``FailureConfig``) copies
the files of ``tune.get_checkpoint()`` into its search folder and the search resumes from them, ending with the
records of an uninterrupted run.

The report is sent from ``Search.run``'s ``on_checkpoint`` hook, i.e. after a DARTS-ADA rollback has been saved,
so that a trial restarted from that checkpoint continues after the rollback, not before it.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from ray import tune

from rdarts.checkpoint import CheckpointStore
from rdarts.config import SearchConfig
from rdarts.search import DivergedError, Search, SearchResult
from rdarts.sweep.scheduler import HISTORY, TRIAL

DIVERGED_MARKER = "DIVERGED"
"""Written to the trial folder when the search diverges: a retry fails at once instead of diverging again."""


def checkpoint_window(cfg: SearchConfig) -> int:
    """Epoch states a trial checkpoint holds: 1, or for DARTS-ADA every epoch a rollback can reach back to."""
    if cfg.early_stop != "ada":
        return 1
    return cfg.ev_every * (cfg.es_delta + cfg.es_window // 2) + 1


def stop_reason(record: dict[str, Any], cfg: SearchConfig) -> str:
    """A sentence for the epoch on which the search's own DARTS-ES check fired ('' on other epochs)."""
    event = record.get("event", "")
    if not event:
        return ""
    head = (f"DARTS-ES fired at epoch {record['epoch']}: the local average of λ_max grew "
            f"{record['eigenvalue_ratio']:.3f}x over {cfg.es_delta} evaluations (> {cfg.es_factor:g})")
    if event == "es_stop":
        return f"{head}; search stopped, the genotype of epoch {record['stop_epoch']} is kept"
    if event == "ada_rollback":
        return f"{head}; DARTS-ADA rolls back to epoch {record['stop_epoch']} with a larger weight decay"
    if event == "ada_ignored":
        return f"{head}; ignored by DARTS-ADA at the maximum weight decay {cfg.ada_max_weight_decay:g}"
    return f"{head}; event {event}"


def _restore_files(folder: Path, checkpoint: tune.Checkpoint | None) -> None:
    """Make ``folder`` hold exactly the reported checkpoint (local files may be newer than the last report)."""
    shutil.rmtree(folder, ignore_errors=True)
    if checkpoint is None:
        return
    folder.mkdir(parents=True)
    with checkpoint.as_directory() as d:
        for f in Path(d).iterdir():
            if f.is_file():
                shutil.copy2(f, folder / f.name)


def _kept_files(store: CheckpointStore, keep: int) -> list[Path]:
    latest = store.latest_epoch()
    if latest is None:
        raise RuntimeError(f"no checkpoint in {store.folder} after a search epoch")
    epochs = range(max(0, latest - keep + 1), latest + 1)
    return [store.folder / "latest.json"] + [store.path(e) for e in epochs if store.path(e).is_file()]


def _report(search: Search, record: dict[str, Any], staging_root: Path) -> None:
    cfg = search.cfg
    assert search.store is not None
    answer = search.result()
    metrics = {
        **record,
        "search_status": search.status,
        "result_epoch": answer.genotype_epoch,
        "result_genotype": answer.genotype.to_json(),
        "stop_reason": stop_reason(record, cfg),
        "last_eigenvalue": search.history[max(search.history)] if search.history else math.nan,
        HISTORY: json.dumps(sorted(search.history.items())),
    }
    kept = _kept_files(search.store, checkpoint_window(cfg))
    staging = Path(tempfile.mkdtemp(prefix="checkpoint_", dir=staging_root))
    try:
        for f in kept:
            try:
                os.link(f, staging / f.name)
            except OSError:
                shutil.copy2(f, staging / f.name)
        tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(str(staging)))  # copies to storage
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    # The search folder needs no more than the reported window either (the search writes one file per epoch).
    names = {f.name for f in kept}
    for f in search.store.folder.glob("epoch_*.pt"):
        if f.name not in names:
            f.unlink()


def _use_allocated_cpus() -> None:
    """As many torch threads as CPUs given to the trial: no oversubscription, and the same float results on a
    retry (the thread count changes the order of float sums)."""
    cpus = tune.get_context().get_trial_resources().required_resources.get("CPU", 1)
    torch.set_num_threads(max(1, int(cpus)))


def run_trial(config: dict[str, Any], *, eigenvalue_fn: Callable[[int], float] | None = None,
              after_report: Callable[[dict[str, Any]], None] | None = None) -> SearchResult:
    """Run (or resume) the search of one trial; the body of ``search_trainable``.

    Args:
        config: The Tune config, ``{"trial": one of SweepSpec.trials()}``: the search settings are
            ``config["trial"]["search"]``.
        eigenvalue_fn: Replaces the Hessian measurement (``Search``'s test seam).
        after_report: Called with each record after it was reported (a test seam for killing a worker).
    """
    cfg = SearchConfig.from_dict(config[TRIAL]["search"])
    _use_allocated_cpus()
    logging.getLogger("ray.train._internal.storage").setLevel(logging.WARNING)  # one "Checkpoint created" per epoch
    # Tune runs each trial in its own node-local working dir (RAY_CHDIR_TO_TRIAL_DIR, on by default); the search
    # folder lives there, and only what is reported as a checkpoint goes to the sweep's storage.
    if os.environ.get("RAY_CHDIR_TO_TRIAL_DIR", "1") != "0":
        trial_dir = Path.cwd()
    else:  # all trials would share the driver's folder
        trial_dir = Path(tempfile.gettempdir()) / "rdarts_trials" / tune.get_context().get_trial_id()
        trial_dir.mkdir(parents=True, exist_ok=True)
    marker = trial_dir / DIVERGED_MARKER
    if marker.is_file():
        raise DivergedError(f"{marker.read_text()} (a retry from the last checkpoint would diverge again)")
    out_dir = trial_dir / "search"
    _restore_files(out_dir / "checkpoints", tune.get_checkpoint())
    search = Search(cfg, out_dir, eigenvalue_fn=eigenvalue_fn)
    pending: list[dict[str, Any]] = []
    reported: list[int] = []

    def on_checkpoint(epoch: int) -> None:
        record = pending.pop()
        _report(search, record, trial_dir)
        reported.append(epoch)
        if after_report is not None:
            after_report(record)

    try:
        result = search.run(on_epoch=pending.append, on_checkpoint=on_checkpoint)
    except DivergedError as e:
        marker.write_text(str(e))
        raise
    if not reported and search.records:
        # The checkpoint already held the finished search (the trial was restarted after its last report but
        # before Tune saw it end): report the last record again so the trial's last result is complete.
        _report(search, search.records[-1], trial_dir)
    return result


def search_trainable(config: dict[str, Any]) -> None:
    """The Tune trainable of ``rdarts sweep``: ``tune.Tuner(tune.with_resources(search_trainable, ...), ...)``."""
    run_trial(config)
