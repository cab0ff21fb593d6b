"""DARTS-ES as the reference code computes it (`utils.EVLocalAvg`), table-driven with hand-worked histories."""

from __future__ import annotations

import pytest

from rdarts.stopping import PAPER, PRESETS, REFERENCE_CODE, ESRule, detection_epoch, es_stop_epoch, local_averages


def every_two(values: list[float]) -> dict[int, float]:
    """Eigenvalues at epochs 0, 2, 4, ... (the reference's report_freq_hessian 2)."""
    return {2 * i: v for i, v in enumerate(values)}


def worked_example(last: float) -> dict[int, float]:
    """The digest's example: 0.1 at epochs 0..20, ``last`` at epoch 22."""
    return {**every_two([0.1] * 11), 22: last}


# ----------------------------------------------------------------------------------------------- worked example
def test_worked_example_stops_and_keeps_epoch_10() -> None:
    history = worked_example(0.3)
    assert es_stop_epoch(history, total_epochs=50) == 10
    las = local_averages(history, total_epochs=50)
    assert las[-1].centre == 18
    assert las[-1].value == pytest.approx((4 * 0.1 + 0.3) / 5)  # 0.14
    assert las[-5].centre == 10
    assert las[-5].value == pytest.approx(0.1)
    assert las[-1].value / las[-5].value == pytest.approx(1.4)


def test_worked_example_with_a_smaller_jump_goes_on() -> None:
    assert es_stop_epoch(worked_example(0.2), total_epochs=50) is None  # ratio 1.2 <= 1.3


def test_default_arguments_are_the_reference_codes_rule() -> None:
    assert REFERENCE_CODE == ESRule(ev_every=2, window=5, delta=4, factor=1.3, start_epoch=10)
    assert PRESETS["reference"] is REFERENCE_CODE
    assert PRESETS["paper"] is PAPER
    history = worked_example(0.3)
    assert es_stop_epoch(history, total_epochs=50, **REFERENCE_CODE.as_kwargs()) == es_stop_epoch(
        history, total_epochs=50)


# ----------------------------------------------------------------------------------------------- local averages
def test_partial_local_averages_from_the_third_evaluation() -> None:
    # λ at epochs 0, 2, 4, 6, 8, 10 = 1, 2, 3, 10, 4, 5.
    las = local_averages(every_two([1, 2, 3, 10, 4, 5]), total_epochs=50)
    assert [la.epoch for la in las] == [4, 6, 8, 10]  # none after the 1st and 2nd evaluation
    assert [la.centre for la in las] == [0, 2, 4, 6]  # centre = e - 4, partial averages included
    assert [la.value for la in las] == pytest.approx([
        (1 + 2 + 3) / 3,  # 3rd evaluation: all so far
        (1 + 2 + 3 + 10) / 4,  # 4th: all so far
        (1 + 2 + 3 + 10 + 4) / 5,  # 5th: full window
        (2 + 3 + 10 + 4 + 5) / 5,  # 6th: the last five
    ])


def test_local_average_centres_are_four_epochs_back() -> None:
    las = local_averages(every_two([1.0] * 20), total_epochs=50)
    assert all(la.centre == la.epoch - 4 for la in las)


def test_last_epoch_gets_no_local_average() -> None:
    history = {**every_two([1.0] * 5), 9: 100.0}  # epoch 9 is the last of 10
    las = local_averages(history, total_epochs=10)
    assert [la.epoch for la in las] == [4, 6, 8]


# ----------------------------------------------------------------------------------------------- when it checks
@pytest.mark.parametrize("jump_epoch", [12, 14, 16, 18, 20])
def test_no_check_before_epoch_22(jump_epoch: int) -> None:
    # Flat then a 100x jump: the ratio condition holds, but the stop epoch jump_epoch - 12 is before epoch 10.
    history = {**every_two([1.0] * (jump_epoch // 2)), jump_epoch: 100.0}
    assert es_stop_epoch(history, total_epochs=50) is None
    # The same history fires as soon as the start epoch allows it: it would have stopped at jump_epoch - 12.
    assert es_stop_epoch(history, total_epochs=50, start_epoch=0) == jump_epoch - 12
    assert detection_epoch(history, total_epochs=50) is None


def test_first_possible_check_is_at_epoch_22() -> None:
    history = {**every_two([1.0] * 11), 22: 100.0}
    assert es_stop_epoch(history, total_epochs=50) == 10
    assert detection_epoch(history, total_epochs=50) == 22


def test_the_last_epoch_is_never_checked() -> None:
    # 23 epochs: epoch 22 is the last one, so the worked example's jump there is ignored.
    assert es_stop_epoch(worked_example(0.3), total_epochs=23) is None
    assert es_stop_epoch(worked_example(0.3), total_epochs=24) == 10


def test_first_trigger_wins() -> None:
    # The condition holds at 22 (stop 10) and again at 24, 26 and 28 (stops 12, 14, 16).
    history = {**worked_example(0.3), 24: 0.3, 26: 3.0, 28: 30.0}
    assert es_stop_epoch(history, total_epochs=50) == 10
    assert detection_epoch(history, total_epochs=50) == 22
    # Without the first trigger the later ones do fire, which is what makes the test meaningful.
    later = {**every_two([0.1] * 13), 26: 3.0, 28: 30.0}
    assert es_stop_epoch(later, total_epochs=50) == 14
    assert detection_epoch(later, total_epochs=50) == 26


def test_no_trigger_on_a_flat_or_falling_history() -> None:
    assert es_stop_epoch(every_two([1.0] * 25), total_epochs=50) is None
    assert es_stop_epoch(every_two([10.0 - 0.3 * i for i in range(25)]), total_epochs=50) is None
    assert detection_epoch(every_two([1.0] * 25), total_epochs=50) is None


# ----------------------------------------------------------------------------------------------- paper preset
def test_paper_preset_on_every_epoch_history() -> None:
    # λ = 1 at epochs 0..16, x at 17. Every epoch, window 5: the newest local average (centre 15) is (4 + x) / 5;
    # 5 entries earlier (centre 10) it is 1. Stop when λ̄(10) / λ̄(15) < 0.75, i.e. (4 + x) / 5 > 4/3, x > 8/3,
    # keeping epoch i - k = 15 - 5 = 10.
    def history(x: float) -> dict[int, float]:
        return {**{e: 1.0 for e in range(17)}, 17: x}

    assert PAPER.ev_every == 1 and PAPER.window == 5 and PAPER.delta == 5
    assert 1 / PAPER.factor == pytest.approx(0.75)
    assert es_stop_epoch(history(3.0), total_epochs=50, **PAPER.as_kwargs()) == 10  # ratio 1.4
    assert es_stop_epoch(history(2.5), total_epochs=50, **PAPER.as_kwargs()) is None  # ratio 1.3
    assert detection_epoch(history(3.0), total_epochs=50, **PAPER.as_kwargs()) == 17
    # One epoch earlier the stop epoch would be 9 < start epoch 10: no stop.
    early = {**{e: 1.0 for e in range(16)}, 16: 3.0}
    assert es_stop_epoch(early, total_epochs=50, **PAPER.as_kwargs()) is None


def test_paper_preset_local_averages_centre_two_epochs_back() -> None:
    las = local_averages({e: float(e) for e in range(10)}, total_epochs=50, ev_every=1, window=5)
    assert [la.centre for la in las] == [e - 2 for e in range(2, 10)]
    assert las[0].value == pytest.approx((0 + 1 + 2) / 3)
    assert las[-1].value == pytest.approx((5 + 6 + 7 + 8 + 9) / 5)


# ----------------------------------------------------------------------------------------------- validation
@pytest.mark.parametrize(
    ("kwargs", "field"),
    [({"ev_every": 0}, "ev_every"), ({"window": 0}, "window"), ({"delta": 0}, "delta"), ({"factor": 1.0}, "factor"),
     ({"factor": 0.75}, "factor")],
)
def test_es_rule_validation_names_the_field(kwargs: dict[str, float], field: str) -> None:
    with pytest.raises(ValueError, match=field):
        ESRule(**kwargs)  # type: ignore[arg-type]
