"""What a search reports: a record per epoch and the result it returns. Plain data (no torch): the sweep's
scheduler, its live MLflow logging and the reducer read the field names from here.
"""

from __future__ import annotations

import dataclasses
from dataclasses import asdict, dataclass
from typing import Any

from rdarts.spaces import Genotype


@dataclass
class EpochRecord:
    """What a search reports after each epoch. The field names are the metric keys everywhere downstream."""

    epoch: int
    ada_round: int
    lr: float
    weight_decay: float
    drop_path: float
    cutout: bool
    train_loss: float
    train_acc: float
    valid_loss: float
    valid_acc: float
    dominant_eigenvalue: float
    """NaN on epochs without an eigenvalue; with hessian_batches > 1 the mean of the batches' λ_max."""
    eigenvalue_se: float
    """Standard error of that mean (NaN with one batch, and on epochs without an eigenvalue)."""
    eigenvalue_local_avg: float
    eigenvalue_ratio: float
    """Newest local average over the one ``es_delta`` entries earlier (the DARTS-ES statistic); NaN until defined."""
    hessian_iters: int
    genotype: str
    param_free_share: float
    alpha_entropy: float
    alphas_normal: str
    alphas_reduce: str
    epoch_time_s: float
    hessian_time_s: float
    event: str = ""
    """``es_stop``, ``ada_rollback`` or ``ada_ignored`` on the epoch where the ES rule fired."""
    target_epoch: int = -1
    """On an event, the epoch the DARTS-ES rule points back to (ES keeps its genotype, ADA rolls back to it)."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class SearchResult:
    genotype: Genotype
    """The architecture the search returns: the rule's target epoch's for ES, the last epoch's otherwise."""
    genotype_epoch: int
    """The epoch whose genotype is returned (``kept_epoch`` in the sweep's tables)."""
    stop_epoch: int | None
    """The epoch after which DARTS-ES stopped the search (where it fired); ``None`` when it ran to the end."""
    status: str
    """``finished``, ``es_stopped``."""
    records: list[dict[str, Any]]


def numeric_fields() -> tuple[str, ...]:
    """The record's per-epoch numbers (``epoch`` and ``target_epoch`` aside): the metrics logged with step = epoch."""
    return tuple(f.name for f in dataclasses.fields(EpochRecord)
                 if f.type in ("float", "int") and f.name not in ("epoch", "target_epoch"))
