"""The names of what a sweep trial reports and what the sweep's tables hold, defined once (no Ray, no torch).

A search trial reports every field of ``rdarts.records.EpochRecord`` (``epoch``, ``dominant_eigenvalue``,
``target_epoch``, ...) and, with each of them, what the search answers at that point (the names below); the
scheduler adds its own decision. The Tune config of a trial is ``{TRIAL: {"index", "setting", "method", "search"}}``.
The scheduler, the trainable, the runner's summary and the reducer read these names from here.
"""

from __future__ import annotations

from typing import Any

TRIAL = "trial"
"""The key of a sweep trial's Tune config: ``{"trial": {"index", "setting", "method", "search": {...}}}``."""

# Fields of EpochRecord that the layers above read by name (a test keeps them in step with the dataclass).
EPOCH = "epoch"
EIGENVALUE = "dominant_eigenvalue"
TARGET_EPOCH = "target_epoch"
EVENT = "event"

# What the search answers with every report (rdarts.sweep.trainable).
SEARCH_STATUS = "search_status"
RESULT_EPOCH = "result_epoch"
"""The epoch whose genotype the search returns at this point (DARTS-ES: the rule's target; ``kept_epoch`` in tables)."""
STOP_EPOCH = "stop_epoch"
"""The epoch after which DARTS-ES stopped the search, where the rule fired (-1: it did not stop)."""
KEPT_EPOCH = "kept_epoch"
"""results.csv and MLflow's name for RESULT_EPOCH."""
RESULT_GENOTYPE = "result_genotype"
STOP_REASON = "stop_reason"
LAST_EIGENVALUE = "last_eigenvalue"
HISTORY = "eigenvalue_history"
"""The search's whole eigenvalue history (JSON ``[[epoch, λ], ...]``): a restored scheduler refills itself from it."""

# The scheduler's decision, written into the same result by its callback (rdarts.sweep.scheduler).
SCHEDULER_ACTION = "scheduler_action"
SCHEDULER_KEPT_EPOCH = "scheduler_kept_epoch"
"""The epoch whose genotype the scheduler's DARTS-ES decision keeps (-1: no decision)."""
SCHEDULER_REASON = "scheduler_reason"


def trial_name(trial: Any) -> str:
    """A Tune trial's name in the live table: ``t000`` (its index in the sweep)."""
    return f"t{trial.config[TRIAL]['index']:03d}"


def trial_dirname(trial: Any) -> str:
    """A Tune trial's folder in the sweep folder, and the key of its MLflow run: ``t000_<trial id>``."""
    return f"{trial_name(trial)}_{trial.trial_id}"
