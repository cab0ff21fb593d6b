"""DARTS-ES as a Ray Tune scheduler: a thin adapter over the pure rule ``rdarts.stopping.es_stop_epoch``.

``EigenvalueStopper`` keeps each trial's eigenvalue history (epoch -> λ_max) from the ``epoch`` and
``dominant_eigenvalue`` of its results, and after every eigenvalue epoch asks the same ``es_stop_epoch`` the search
loop uses, with the trial's own settings (``config["trial"]["search"]``: ``early_stop``, ``epochs``, ``ev_every``,
``es_*``).

- ``early_stop: es`` trials are stopped (``TrialScheduler.STOP``) when the rule fires;
- ``ada`` trials are watched: a firing is recorded, the trial goes on (DARTS-ADA rolls back inside the search);
- ``off`` trials are never stopped.

How the decision reaches the results: the search inside the trial applies the same rule and reports ``event``,
``target_epoch``, ``stop_reason``, ``result_epoch`` and ``result_genotype`` itself (``rdarts.sweep.trainable``); the
scheduler's own decision is written into the same result row by ``StopAnnotator`` (a Tune callback run right after
the scheduler, before the loggers) as ``scheduler_action`` / ``scheduler_kept_epoch`` / ``scheduler_reason``, so
it lands in ``result.json``, ``progress.csv`` and the trial's last result. The scheduler raises if it and the
search disagree on a stop, and it raises on a result without the eigenvalue metric: it never skips silently.

Tune does not save scheduler state, so after ``Tuner.restore`` the scheduler starts empty; the trainable reports the
search's whole history (``eigenvalue_history``, JSON) with every result, and the scheduler fills the epochs it did not
see from it.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ray.tune import Callback
from ray.tune.schedulers import FIFOScheduler, TrialScheduler

from rdarts.config import SearchConfig
from rdarts.keys import EIGENVALUE, EPOCH, HISTORY, TARGET_EPOCH, TRIAL
from rdarts.keys import SCHEDULER_ACTION as ACTION
from rdarts.keys import SCHEDULER_KEPT_EPOCH as KEPT_EPOCH
from rdarts.keys import SCHEDULER_REASON as REASON
from rdarts.stopping import ESRule, local_averages, stop_event

if TYPE_CHECKING:
    from ray.tune.execution.tune_controller import TuneController
    from ray.tune.experiment import Trial


class ResultError(ValueError):
    """A result the scheduler cannot judge (a missing metric, or a history that disagrees with the search's)."""


@dataclass(frozen=True)
class StopDecision:
    trial_id: str
    mode: str
    """The trial's ``early_stop``: ``es`` (stopped) or ``ada`` (watched only)."""
    detection_epoch: int
    stop_epoch: int
    """The epoch whose genotype DARTS-ES keeps."""
    ratio: float
    reason: str

    @property
    def action(self) -> str:
        return "stop" if self.mode == "es" else "watch"


def es_reason(history: dict[int, float], stop: int, *, total_epochs: int, rule: ESRule,
              detection_epoch: int) -> tuple[float, str]:
    """The ratio that fired the rule and a sentence saying why (for logs and result files)."""
    las = local_averages(history, total_epochs=total_epochs, ev_every=rule.ev_every, window=rule.window)
    for i, la in enumerate(las):
        if i >= rule.delta and la.centre - rule.ev_every * rule.delta == stop:
            ratio = la.value / las[i - rule.delta].value
            return ratio, (f"DARTS-ES at epoch {detection_epoch}: the local average of λ_max around epoch {la.centre} "
                           f"is {ratio:.3f}x the one around epoch {las[i - rule.delta].centre} (> {rule.factor:g}); "
                           f"the genotype of epoch {stop} is kept")
    return math.nan, f"DARTS-ES at epoch {detection_epoch}: the genotype of epoch {stop} is kept"


class EigenvalueStopper(FIFOScheduler):
    """Stops ``early_stop: es`` trials by the DARTS-ES rule (automl/RobustDARTS ``EVLocalAvg``); FIFO otherwise.

    Trials are those of ``rdarts.sweep``: their config is ``{"trial": {..., "search": SearchConfig.to_dict()}}``.
    """

    def __init__(self) -> None:
        super().__init__()  # type: ignore[no-untyped-call,unused-ignore]
        self.histories: dict[str, dict[int, float]] = {}
        self.decisions: dict[str, list[StopDecision]] = {}
        """Every firing of the rule per trial id (one for ``es``; one per rollback for ``ada``)."""
        self._last_epoch: dict[str, int] = {}
        self._latest: dict[str, StopDecision | None] = {}

    def _settings(self, trial: Trial) -> SearchConfig:
        entry = trial.config.get(TRIAL) if isinstance(trial.config, dict) else None
        cfg = entry.get("search") if isinstance(entry, dict) else None
        if not isinstance(cfg, dict) or "early_stop" not in cfg:
            raise ResultError(f"trial {trial}: its config has no search settings; EigenvalueStopper needs the "
                              "trials of rdarts.sweep (config['trial']['search'] = SearchConfig.to_dict())")
        return SearchConfig.from_dict(cfg)

    def _update(self, trial: Trial, result: dict[str, Any]) -> tuple[int, float, dict[int, float]]:
        missing = [k for k in (EPOCH, EIGENVALUE) if k not in result]
        if missing:
            raise ResultError(f"trial {trial}: result without {', '.join(map(repr, missing))} "
                              f"(keys: {', '.join(sorted(result)[:20])}); every result must carry the epoch and "
                              "dominant_eigenvalue (NaN on epochs without a measurement)")
        epoch, lam = int(result[EPOCH]), float(result[EIGENVALUE])
        tid = trial.trial_id
        history = self.histories.setdefault(tid, {})
        if epoch <= self._last_epoch.get(tid, -1):
            # A replay: DARTS-ADA rolled back, or the trial restarted from a checkpoint. The search's history
            # is then that of the checkpoint, so forget what came after it.
            for e in [e for e in history if e >= epoch]:
                del history[e]
        self._last_epoch[tid] = epoch
        if result.get(HISTORY):
            for e, v in json.loads(result[HISTORY]):
                if e in history and not math.isclose(history[e], v, rel_tol=1e-9, abs_tol=1e-12):
                    raise ResultError(f"trial {trial}: the search reports λ_max={v} at epoch {e}, the scheduler saw "
                                      f"{history[e]}")
                if e < epoch:
                    history.setdefault(int(e), float(v))  # epochs not seen here (after a Tuner.restore)
        if math.isfinite(lam):
            history[epoch] = lam
        return epoch, lam, history

    def on_trial_result(self, tune_controller: TuneController, trial: Trial, result: dict[str, Any]) -> str:
        cfg = self._settings(trial)
        epoch, lam, history = self._update(trial, result)
        self._latest[trial.trial_id] = None
        mode, total = cfg.early_stop, cfg.epochs
        # The search loop's own rule (stopping.stop_event): after an eigenvalue epoch, never after the last epoch.
        rule = cfg.es_rule()
        found = stop_event(mode, history, epoch, total_epochs=total, rule=rule.as_kwargs(), ada_can_raise=True)
        stop = None if found is None else found[1]
        reported = result.get(TARGET_EPOCH)
        if mode == "es" and reported is not None and int(reported) != (-1 if stop is None else stop):
            raise ResultError(f"trial {trial}: at epoch {epoch} the search reports target_epoch={reported}, but "
                              f"DARTS-ES on the scheduler's history says {stop}")
        if stop is None:
            return TrialScheduler.CONTINUE
        ratio, reason = es_reason(history, stop, total_epochs=total, rule=rule, detection_epoch=epoch)
        decision = StopDecision(trial.trial_id, mode, epoch, stop, ratio, reason)
        self._latest[trial.trial_id] = decision
        past = self.decisions.setdefault(trial.trial_id, [])
        if decision not in past:
            past.append(decision)
        return TrialScheduler.STOP if mode == "es" else TrialScheduler.CONTINUE

    def latest_decision(self, trial_id: str) -> StopDecision | None:
        """The decision taken on the trial's most recent result (None when the rule did not fire)."""
        return self._latest.get(trial_id)

    def debug_string(self) -> str:
        stopped = sum(1 for ds in self.decisions.values() for d in ds if d.mode == "es")
        return f"EigenvalueStopper: {stopped} trial(s) stopped by DARTS-ES"

    def callback(self) -> StopAnnotator:
        """The Tune callback that copies this scheduler's decisions into the result rows."""
        return StopAnnotator(self)


class StopAnnotator(Callback):
    """Adds ``scheduler_action``/``scheduler_kept_epoch``/``scheduler_reason`` to every result, in place.

    Tune calls the scheduler first, then the callbacks in order (user callbacks before its loggers), with the same
    result dict; so what this adds is logged and becomes part of the trial's last result.
    """

    def __init__(self, stopper: EigenvalueStopper):
        self.stopper = stopper

    def on_trial_result(self, iteration: int, trials: list[Trial], trial: Trial, result: dict[str, Any],
                        **info: Any) -> None:
        d = self.stopper.latest_decision(trial.trial_id)
        result[ACTION] = d.action if d is not None else ""
        result[KEPT_EPOCH] = d.stop_epoch if d is not None else -1
        result[REASON] = d.reason if d is not None else ""
