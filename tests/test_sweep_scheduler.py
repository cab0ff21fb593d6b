"""EigenvalueStopper driven by plain result dicts and a MagicMock controller (no ray.init), Ray-style."""

from __future__ import annotations

import dataclasses
import json
import math
from typing import Any
from unittest.mock import MagicMock

import pytest
from ray.tune.schedulers import TrialScheduler

from rdarts.config import SearchConfig
from rdarts.search import EpochRecord
from rdarts.stopping import detection_epoch, es_stop_epoch
from rdarts.sweep.scheduler import (
    ACTION,
    EIGENVALUE,
    EPOCH,
    HISTORY,
    KEPT_EPOCH,
    REASON,
    EigenvalueStopper,
    ResultError,
)
from rdarts.sweep.trainable import checkpoint_window, stop_reason

CONTINUE, STOP = TrialScheduler.CONTINUE, TrialScheduler.STOP


def make_trial(trial_id: str = "t0", **search: Any) -> MagicMock:
    trial = MagicMock()
    trial.trial_id = trial_id
    settings = SearchConfig(**{"epochs": 50, **search}).to_dict()
    trial.config = {"trial": {"index": 0, "setting": "", "search": settings}}
    trial.__str__.return_value = trial_id  # type: ignore[attr-defined]
    return trial


def result(epoch: int, eig: float = math.nan, **extra: Any) -> dict[str, Any]:
    return {EPOCH: epoch, EIGENVALUE: eig, "training_iteration": epoch + 1, **extra}


def reference_example(last: float) -> dict[int, float]:
    """The digest's worked example: λ = 0.1 at epochs 0, 2, ..., 20 and ``last`` at epoch 22."""
    return {**{e: 0.1 for e in range(0, 21, 2)}, 22: last}


def drive(scheduler: EigenvalueStopper, trial: MagicMock, eigs: dict[int, float], upto: int) -> list[str]:
    """Feed one result per epoch 0..upto (NaN on epochs without an eigenvalue); return the decisions."""
    controller = MagicMock()
    return [scheduler.on_trial_result(controller, trial, result(e, eigs.get(e, math.nan))) for e in range(upto + 1)]


def test_result_keys_are_epoch_record_fields() -> None:
    names = {f.name for f in dataclasses.fields(EpochRecord)}
    assert {EPOCH, EIGENVALUE} <= names


def test_es_trial_is_stopped_at_the_detection_epoch_of_the_pure_rule() -> None:
    stopper, trial = EigenvalueStopper(), make_trial(early_stop="es")
    decisions = drive(stopper, trial, reference_example(0.3), 22)
    assert decisions == [CONTINUE] * 22 + [STOP]
    (d,) = stopper.decisions["t0"]
    assert (d.detection_epoch, d.stop_epoch, d.action) == (22, 10, "stop")
    assert d.stop_epoch == es_stop_epoch(reference_example(0.3), total_epochs=50)
    assert d.ratio == pytest.approx(1.4)
    assert "epoch 10" in d.reason and "1.400x" in d.reason


def test_es_trial_below_the_factor_goes_on() -> None:
    stopper, trial = EigenvalueStopper(), make_trial(early_stop="es")
    assert drive(stopper, trial, reference_example(0.2), 22) == [CONTINUE] * 23
    assert "t0" not in stopper.decisions


@pytest.mark.parametrize("seed", range(5))
def test_agrees_with_the_pure_rule_on_random_histories(seed: int) -> None:
    """Same decision and epoch as ``detection_epoch``/``es_stop_epoch`` on noisy, growing eigenvalue curves."""
    import random

    rng = random.Random(seed)
    eigs = {e: 0.1 * (1 + rng.random()) * (1.08 ** max(0, e - 15)) for e in range(0, 50, 2)} | {49: 1.0}
    stopper, trial = EigenvalueStopper(), make_trial(early_stop="es")
    decisions = drive(stopper, trial, eigs, 49)
    detected = detection_epoch({e: v for e, v in eigs.items() if e < 49}, total_epochs=50)
    if detected is None:
        assert STOP not in decisions
    else:
        assert decisions.index(STOP) == detected
        assert stopper.decisions["t0"][0].stop_epoch == es_stop_epoch(
            {e: v for e, v in eigs.items() if e <= detected}, total_epochs=50)


def test_ada_trial_is_watched_never_stopped() -> None:
    stopper, trial = EigenvalueStopper(), make_trial(early_stop="ada")
    assert drive(stopper, trial, reference_example(0.3), 22) == [CONTINUE] * 23
    (d,) = stopper.decisions["t0"]
    assert (d.action, d.stop_epoch) == ("watch", 10)


def test_off_trial_is_never_stopped_nor_judged() -> None:
    stopper, trial = EigenvalueStopper(), make_trial(early_stop="off")
    assert drive(stopper, trial, reference_example(3.0), 22) == [CONTINUE] * 23
    assert "t0" not in stopper.decisions


def test_the_last_epoch_is_never_checked() -> None:
    stopper, trial = EigenvalueStopper(), make_trial(early_stop="es", epochs=23)
    assert drive(stopper, trial, reference_example(0.3), 22) == [CONTINUE] * 23


def test_each_trial_uses_its_own_rule() -> None:
    """A trial with a larger factor is not stopped where one with the reference rule is."""
    stopper = EigenvalueStopper()
    ref, lenient = make_trial("a", early_stop="es"), make_trial("b", early_stop="es", es_factor=1.5)
    assert drive(stopper, ref, reference_example(0.3), 22)[-1] == STOP
    assert STOP not in drive(stopper, lenient, reference_example(0.3), 22)


@pytest.mark.parametrize("missing", [EPOCH, EIGENVALUE])
def test_a_result_without_the_metric_raises(missing: str) -> None:
    r = result(0, 0.1)
    del r[missing]
    with pytest.raises(ResultError, match=missing):
        EigenvalueStopper().on_trial_result(MagicMock(), make_trial(early_stop="off"), r)


def test_a_trial_without_search_settings_raises() -> None:
    trial = make_trial(early_stop="es")
    trial.config = {"lr": 0.1}
    with pytest.raises(ResultError, match="search settings"):
        EigenvalueStopper().on_trial_result(MagicMock(), trial, result(0, 0.1))


def test_replayed_epochs_replace_the_history() -> None:
    """After a rollback (ADA) or a restart from a checkpoint, epochs >= the replayed one are forgotten."""
    stopper, trial, c = EigenvalueStopper(), make_trial(early_stop="ada"), MagicMock()
    for e in range(6):
        stopper.on_trial_result(c, trial, result(e, float(e + 1)))
    stopper.on_trial_result(c, trial, result(3, 9.0))
    assert stopper.histories["t0"] == {0: 1.0, 1: 2.0, 2: 3.0, 3: 9.0}


def test_history_is_filled_from_the_report_after_a_restore() -> None:
    """A fresh scheduler (Tune does not save it) fires at once when the trial's report carries its history."""
    eigs = reference_example(0.3)
    history = json.dumps(sorted(eigs.items()))
    stopper = EigenvalueStopper()
    decision = stopper.on_trial_result(MagicMock(), make_trial(early_stop="es"),
                                       result(22, 0.3, **{HISTORY: history, "target_epoch": 10}))
    assert decision == STOP and stopper.histories["t0"] == eigs


def test_disagreeing_with_the_search_raises() -> None:
    stopper, trial, c = EigenvalueStopper(), make_trial(early_stop="es"), MagicMock()
    for e in range(22):
        stopper.on_trial_result(c, trial, result(e, reference_example(0.3).get(e, math.nan), target_epoch=-1))
    with pytest.raises(ResultError, match="target_epoch=-1"):
        stopper.on_trial_result(c, trial, result(22, 0.3, target_epoch=-1))
    with pytest.raises(ResultError, match="reports λ_max=5.0 at epoch 0"):
        stopper.on_trial_result(c, trial, result(23, math.nan, **{HISTORY: json.dumps([[0, 5.0]])}))


def test_annotator_copies_the_decision_into_the_result() -> None:
    stopper, trial, c = EigenvalueStopper(), make_trial(early_stop="es"), MagicMock()
    annotate = stopper.callback()
    eigs = reference_example(0.3)
    rows = []
    for e in range(23):
        r = result(e, eigs.get(e, math.nan))
        stopper.on_trial_result(c, trial, r)
        annotate.on_trial_result(iteration=e, trials=[trial], trial=trial, result=r)
        rows.append(r)
    assert [r[ACTION] for r in rows] == [""] * 22 + ["stop"]
    assert rows[-1][KEPT_EPOCH] == 10 and rows[0][KEPT_EPOCH] == -1
    assert "genotype of epoch 10" in rows[-1][REASON]


def test_scheduler_pickles_with_its_callback() -> None:
    """Tune pickles the Tuner (scheduler and callbacks together) for Tuner.restore."""
    import pickle

    stopper = EigenvalueStopper()
    callback = stopper.callback()
    s2, c2 = pickle.loads(pickle.dumps((stopper, callback)))
    assert c2.stopper is s2


def test_checkpoint_window_covers_the_ada_rollback() -> None:
    assert checkpoint_window(SearchConfig(early_stop="es")) == 1
    ada = SearchConfig(early_stop="ada")
    assert checkpoint_window(ada) == 13  # detection at e, rollback to e - 2 * (4 + 2)
    eigs = reference_example(0.3)
    assert 22 - es_stop_epoch(eigs, total_epochs=50) == checkpoint_window(ada) - 1


def test_tuner_asks_ray_for_the_spec_resources() -> None:
    """Fractional GPUs: four searches can share one GPU (Ray packs them; nothing starts here)."""
    from sweep_fixtures import tiny_spec

    from rdarts.sweep.runner import _with_resources
    from rdarts.sweep.trainable import search_trainable

    spec = tiny_spec("r", resources={"cpu": 2, "gpu": 0.25})
    wrapped = _with_resources(search_trainable, spec)
    pgf = wrapped._resources  # what tune.with_resources attaches
    assert pgf.required_resources == {"CPU": 2.0, "GPU": 0.25}


def test_stop_reason_sentences() -> None:
    cfg = SearchConfig(early_stop="es")
    rec = {"epoch": 22, "event": "es_stop", "target_epoch": 10, "eigenvalue_ratio": 1.4}
    assert "genotype of epoch 10 is kept" in stop_reason(rec, cfg)
    assert "rolls back to epoch 10" in stop_reason({**rec, "event": "ada_rollback"}, cfg)
    assert stop_reason({**rec, "event": ""}, cfg) == ""
