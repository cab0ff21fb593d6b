"""DARTS-ES: stop a search when the local average of the dominant eigenvalue grows too fast.

The default is the rule of the released code (automl/RobustDARTS ``src/utils.py: EVLocalAvg``), not the paper's text:
eigenvalues every ``ev_every`` = 2 epochs, local averages over ``window`` = 5 evaluations attributed to their centre
epoch (partial averages from the 3rd evaluation on), a comparison with the local average ``delta`` = 4 entries earlier,
``factor`` = 1.3, checks from ``start_epoch`` = 10 on, the last epoch never checked. The paper's wording
(eigenvalues every epoch, λ̄(i-k)/λ̄(i) < T = 0.75, k = w = 5) is the ``PAPER`` preset.

Worked example (the reference digest): λ = 0.1 at epochs 0, 2, ..., 20 and 0.3 at epoch 22 of 50. At epoch 22 the
newest local average (centre 18) is 0.14, the one 4 entries earlier (centre 10) is 0.1; 1.4 > 1.3, so the search
stops and keeps the genotype of epoch 10.

DARTS-ADA rolls back everything, the eigenvalue history included. The released code means to, but does not: it loads
the checkpoint's eigenvalue lists into a new tracker that the recursive ``train_epochs`` call never receives (its
``la_tracker=la_tracker`` default argument was bound when the function was defined), so the released DARTS-ADA keeps
the discarded round's eigenvalues, tends to fire again at once and climbs to the maximum weight decay. rdarts
implements the intended behaviour (``Search.rollback`` restores the history of the target epoch).

This module is pure Python; the Ray Tune scheduler and the search loop both call ``es_stop_epoch``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class LocalAverage:
    epoch: int
    """The evaluation epoch after which it was computed."""
    centre: int
    """The epoch it is attributed to: ``epoch - ev_every * (window // 2)``."""
    value: float


def local_averages(history: Mapping[int, float], *, total_epochs: int, ev_every: int = 2,
                   window: int = 5) -> list[LocalAverage]:
    """The reference's local averages of the eigenvalues in ``history`` (epoch -> λ), oldest first.

    The last epoch's eigenvalue gets none (the reference only updates the tracker before the last epoch); the first
    ``ceil(window/2) - 1`` evaluations get none either; until ``window`` evaluations exist, all of them are averaged.
    """
    values: list[float] = []
    out: list[LocalAverage] = []
    for j, (epoch, lam) in enumerate(sorted(history.items()), start=1):
        if epoch >= total_epochs - 1:
            break
        values.append(float(lam))
        if j < math.ceil(window / 2):
            continue
        recent = values[-window:]
        out.append(LocalAverage(epoch, epoch - ev_every * (window // 2), sum(recent) / len(recent)))
    return out


@dataclass(frozen=True)
class ESRule:
    """Parameters of the DARTS-ES rule; the defaults are the reference code's."""

    ev_every: int = 2
    window: int = 5
    delta: int = 4
    factor: float = 1.3
    start_epoch: int = 10

    def __post_init__(self) -> None:
        for name in ("ev_every", "window", "delta"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not self.factor > 1.0:
            raise ValueError(f"factor must be > 1, got {self.factor}")

    def as_kwargs(self) -> dict[str, Any]:
        return asdict(self)


REFERENCE_CODE = ESRule()
"""The released code's rule: the default."""

PAPER = ESRule(ev_every=1, window=5, delta=5, factor=1 / 0.75, start_epoch=10)
"""The paper's formulation: eigenvalues every epoch, stop when λ̄(i-5)/λ̄(i) < 0.75, keep epoch i-5."""

PRESETS: dict[str, ESRule] = {"reference": REFERENCE_CODE, "paper": PAPER}


def es_stop_epoch(history: Mapping[int, float], *, total_epochs: int, ev_every: int = 2, window: int = 5,
                  delta: int = 4, factor: float = 1.3, start_epoch: int = 10) -> int | None:
    """The epoch whose architecture DARTS-ES keeps, or ``None`` if the rule never fires on ``history``.

    Args:
        history: Dominant eigenvalue per evaluation epoch.
        total_epochs: Epochs of the search; the last one (``total_epochs - 1``) is never checked.
        ev_every: Epochs between eigenvalue evaluations (local-average centres are offset by it).
        window: Evaluations per local average.
        delta: How many local averages back the comparison looks.
        factor: Stop when newest / older local average exceeds it.
        start_epoch: The stop epoch ``centre - ev_every * delta`` must be at least this.

    Returns:
        The first stop epoch at which the rule fires, scanning evaluations in order (first trigger wins).
    """
    las = local_averages(history, total_epochs=total_epochs, ev_every=ev_every, window=window)
    for i, la in enumerate(las):
        stop = la.centre - ev_every * delta
        if stop < start_epoch or i < delta:
            continue
        older = las[i - delta]
        if older.value > 0 and la.value / older.value > factor:
            return stop
    return None


def detection_epoch(history: Mapping[int, float], *, total_epochs: int, **rule: Any) -> int | None:
    """The evaluation epoch at which ``es_stop_epoch`` first fires (when a running search would notice)."""
    for epoch in sorted(history):
        partial = {e: v for e, v in history.items() if e <= epoch}
        if es_stop_epoch(partial, total_epochs=total_epochs, **rule) is not None:
            return epoch
    return None


def newest_ratio(history: Mapping[int, float], *, total_epochs: int, ev_every: int = 2, window: int = 5,
                 delta: int = 4, factor: float = 1.3, start_epoch: int = 10) -> tuple[float, float]:
    """The newest local average and the ratio DARTS-ES compares with ``factor`` for it.

    The ratio is NaN where the rule does not look (fewer than ``delta`` older averages, a stop epoch before
    ``start_epoch``, a non-positive older average), so a plotted ratio is one the rule could have acted on.
    """
    del factor  # part of the rule's keywords; the ratio does not depend on it
    las = local_averages(history, total_epochs=total_epochs, ev_every=ev_every, window=window)
    if not las:
        return math.nan, math.nan
    newest = las[-1]
    if len(las) <= delta or newest.centre - ev_every * delta < start_epoch or las[-1 - delta].value <= 0:
        return newest.value, math.nan
    return newest.value, newest.value / las[-1 - delta].value


def stop_event(mode: str, history: Mapping[int, float], epoch: int, *, total_epochs: int, rule: Mapping[str, Any],
               ada_can_raise: bool) -> tuple[str, int] | None:
    """What a search does after epoch ``epoch``'s eigenvalue: ``(event, target epoch)`` or ``None``.

    ``es_stop`` (DARTS-ES stops and keeps the target's genotype), ``ada_rollback`` (DARTS-ADA goes back to the target
    with a larger weight decay) or ``ada_ignored`` (at the maximum weight decay the reference ignores the trigger,
    ``ada_can_raise`` false). Nothing on epochs without an eigenvalue and after the last epoch, as the reference.
    """
    if mode == "off" or epoch not in history or epoch == total_epochs - 1:
        return None
    target = es_stop_epoch(history, total_epochs=total_epochs, **rule)
    if target is None:
        return None
    if mode == "es":
        return "es_stop", target
    return ("ada_rollback" if ada_can_raise else "ada_ignored"), target
