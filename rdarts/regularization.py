"""RobustDARTS' regularisation knobs and the learning-rate schedule, as pure functions of the epoch.

automl/RobustDARTS ``src/search/train_search.py``: the weight lr follows ``CosineAnnealingLR(T_max=epochs,
eta_min=0.001)`` stepped per epoch; scheduled drop path ramps linearly from 0 to ``dp`` over the search; cutout is on
exactly when drop path is (the scripts always pass ``--cutout`` and ``Helper`` forces it off for dp = 0); DARTS-ADA
multiplies the weight decay by ``mul_factor`` at each rollback until ``max_weight_decay``.
"""

from __future__ import annotations

import math


def cosine_lr(epoch: int, epochs: int, lr_max: float, lr_min: float) -> float:
    """Learning rate at the start of ``epoch`` (``CosineAnnealingLR(T_max=epochs)`` evaluated at ``epoch``)."""
    return lr_min + (lr_max - lr_min) * (1 + math.cos(math.pi * epoch / epochs)) / 2


def drop_path_prob(epoch: int, epochs: int, drop_path: float) -> float:
    """Search-time drop path: ``drop_path * epoch / (epochs - 1)``, 0 at the first epoch, ``drop_path`` at the last."""
    return drop_path * epoch / max(epochs - 1, 1)


def cutout_enabled(cutout: bool | None, drop_path: float) -> bool:
    """Cutout setting in force: ``None`` means the reference's rule, on exactly when drop path is > 0.

    The reference also tries to ramp the cutout probability, but the attribute it sets is never read (RobustDARTS#3),
    so cutout always fires with probability 1; rdarts does the same.
    """
    return drop_path > 0 if cutout is None else cutout


def ada_next_weight_decay(weight_decay: float, mul_factor: float, max_weight_decay: float) -> float | None:
    """Weight decay after a DARTS-ADA rollback, or ``None`` once the maximum is reached (stops are then ignored).

    With the reference script's 3e-4, x10, max 3e-2 this allows two increases: 3e-4 -> 3e-3 -> 3e-2.
    """
    if weight_decay >= max_weight_decay * (1 - 1e-9):
        return None
    return min(weight_decay * mul_factor, max_weight_decay)
