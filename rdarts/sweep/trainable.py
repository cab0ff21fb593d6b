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
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ray import tune

from rdarts import keys, tune_trial
from rdarts.config import SearchConfig
from rdarts.errors import UserError
from rdarts.search import DivergedError, Search, SearchResult
from rdarts.sweep.progress import PROGRESS

DIVERGED_MARKER = "DIVERGED"
"""Written to the trial folder when the search diverges: a restart reports it again instead of diverging again."""
DIVERGED, FAILED = "diverged", "failed"
"""The search statuses of trials that ended without a genotype (``search_status``, ``results.csv``)."""


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
        return f"{head}; search stopped, the genotype of epoch {record['target_epoch']} is kept"
    if event == "ada_rollback":
        return f"{head}; DARTS-ADA rolls back to epoch {record['target_epoch']} with a larger weight decay"
    if event == "ada_ignored":
        return f"{head}; ignored by DARTS-ADA at the maximum weight decay {cfg.ada_max_weight_decay:g}"
    return f"{head}; event {event}"


def _report(search: Search, record: dict[str, Any], staging_root: Path) -> None:
    cfg = search.cfg
    assert search.store is not None
    answer = search.result()
    metrics = {
        **record,
        keys.SEARCH_STATUS: search.status,
        keys.RESULT_EPOCH: answer.genotype_epoch,
        keys.STOP_EPOCH: -1 if answer.stop_epoch is None else answer.stop_epoch,
        keys.RESULT_GENOTYPE: answer.genotype.to_json(),
        keys.STOP_REASON: stop_reason(record, cfg),
        keys.LAST_EIGENVALUE: search.history[max(search.history)] if search.history else math.nan,
        keys.HISTORY: json.dumps(sorted(search.history.items())),
        PROGRESS: f"{record[keys.EPOCH] + 1}/{cfg.epochs}",
    }
    kept = tune_trial.newest_files(search.store, checkpoint_window(cfg))
    tune_trial.report(metrics, kept, staging_root)
    tune_trial.prune(search.store, kept)  # the search folder needs no more than the reported window either


def _report_end(epoch: int, status: str, message: str) -> None:
    """The last report of a trial that cannot go on (no checkpoint: nothing to resume from it)."""
    tune.report({keys.EPOCH: epoch, keys.EIGENVALUE: math.nan, keys.SEARCH_STATUS: status,
                 keys.STOP_REASON: message, keys.RESULT_EPOCH: -1, keys.STOP_EPOCH: -1, keys.RESULT_GENOTYPE: ""})


def run_trial(config: dict[str, Any], *, eigenvalue_fn: Callable[[int], float] | None = None,
              after_report: Callable[[dict[str, Any]], None] | None = None) -> SearchResult | None:
    """Run (or resume) the search of one trial; the body of ``search_trainable``.

    A search that diverges (``DivergedError``) or cannot start (``UserError``: its data, its settings) ends with a
    last report of status ``diverged`` or ``failed`` and the reason, and returns: Tune retries only what a retry
    can fix (a lost worker, a crash), never these.

    Args:
        config: The Tune config, ``{"trial": one of SweepSpec.trials()}``: the search settings are
            ``config["trial"]["search"]``.
        eigenvalue_fn: Replaces the Hessian measurement (``Search``'s test seam).
        after_report: Called with each record after it was reported (a test seam for killing a worker).
    """
    tune_trial.use_allocated_cpus()
    logging.getLogger("ray.train._internal.storage").setLevel(logging.WARNING)  # one "Checkpoint created" per epoch
    # The search folder lives in the trial's node-local working dir; only what is reported as a checkpoint goes to
    # the sweep's storage.
    trial_dir = tune_trial.trial_dir()
    marker = trial_dir / DIVERGED_MARKER
    if marker.is_file():  # restarted after a divergence (the report of it was lost): it would diverge again
        epoch, message = marker.read_text().split("\n", 1)
        _report_end(int(epoch), DIVERGED, message)
        return None
    out_dir = trial_dir / "search"
    search: Search | None = None
    try:
        cfg = SearchConfig.from_dict(config[keys.TRIAL]["search"])
        tune_trial.restore_checkpoint(out_dir / "checkpoints")
        search = Search(cfg, out_dir, eigenvalue_fn=eigenvalue_fn)
        return _run(search, trial_dir, after_report)
    except DivergedError as e:
        epoch = search.next_epoch if search is not None else 0
        marker.write_text(f"{epoch}\n{e}")
        _report_end(epoch, DIVERGED, str(e))
    except UserError as e:
        _report_end(search.next_epoch if search is not None else 0, FAILED, str(e))
    return None


def _run(search: Search, trial_dir: Path, after_report: Callable[[dict[str, Any]], None] | None) -> SearchResult:
    pending: list[dict[str, Any]] = []
    reported: list[int] = []

    def on_checkpoint(epoch: int) -> None:
        record = pending.pop()
        _report(search, record, trial_dir)
        reported.append(epoch)
        if after_report is not None:
            after_report(record)

    result = search.run(on_epoch=pending.append, on_checkpoint=on_checkpoint)
    if not reported and search.records:
        # The checkpoint already held the finished search (the trial was restarted after its last report but
        # before Tune saw it end): report the last record again so the trial's last result is complete.
        _report(search, search.records[-1], trial_dir)
    return result


def search_trainable(config: dict[str, Any]) -> None:
    """The Tune trainable of ``rdarts sweep``: ``tune.Tuner(tune.with_resources(search_trainable, ...), ...)``."""
    run_trial(config)
