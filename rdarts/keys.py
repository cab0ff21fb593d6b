"""The names of what a sweep trial reports and what the sweep's tables hold, defined once (no Ray, no torch).

A search trial reports every field of ``rdarts.search.EpochRecord`` (``epoch``, ``dominant_eigenvalue``,
``stop_epoch``, ...) and, with each of them, what the search answers at that point (the names below); the
scheduler adds its own decision. The Tune config of a trial is ``{TRIAL: {"index", "setting", "method", "search"}}``.
The scheduler, the trainable, the runner's summary and the reducer read these names from here.
"""

from __future__ import annotations

TRIAL = "trial"
"""The key of a sweep trial's Tune config: ``{"trial": {"index", "setting", "method", "search": {...}}}``."""

# Fields of EpochRecord that the layers above read by name (a test keeps them in step with the dataclass).
EPOCH = "epoch"
EIGENVALUE = "dominant_eigenvalue"
STOP_EPOCH = "stop_epoch"
EVENT = "event"

# What the search answers with every report (rdarts.sweep.trainable).
SEARCH_STATUS = "search_status"
RESULT_EPOCH = "result_epoch"
"""The epoch whose genotype the search returns at this point (the stop epoch's for DARTS-ES)."""
RESULT_GENOTYPE = "result_genotype"
STOP_REASON = "stop_reason"
LAST_EIGENVALUE = "last_eigenvalue"
HISTORY = "eigenvalue_history"
"""The search's whole eigenvalue history (JSON ``[[epoch, λ], ...]``): a restored scheduler refills itself from it."""

# The scheduler's decision, written into the same result by its callback (rdarts.sweep.scheduler).
SCHEDULER_ACTION = "scheduler_action"
SCHEDULER_STOP_EPOCH = "scheduler_stop_epoch"
SCHEDULER_REASON = "scheduler_reason"
