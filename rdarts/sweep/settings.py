"""The blocks of a sweep file as pydantic models: strict types, unknown keys refused, nothing evaluated as code.

``search:`` and ``retrain:`` are generated from the engine's dataclasses (``rdarts.config``): the types come from
there, and the values are checked by the dataclasses themselves when the sweep expands its trials, so each rule and
each default has one home. The other blocks (``sample:``, ``stopping:``, ``resources:``, ``tracking:``, ``reduce:``)
are the sweep's own.
"""

from __future__ import annotations

import dataclasses
import math
import random
import typing
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, create_model, field_validator, model_validator

from rdarts.config import RetrainConfig, SearchConfig
from rdarts.stopping import PRESETS, ESRule

DEFAULT_STORAGE = "~/rdarts_results"
DEFAULT_MAX_TRIALS = 1000
TRACKING_SCHEMES = ("sqlite", "file", "http", "https", "postgresql", "mysql", "mssql", "databricks")
# ``stopping:`` key -> the SearchConfig field it sets.
STOPPING_FIELDS = {"ev_every": "ev_every", "window": "es_window", "delta": "es_delta", "factor": "es_factor",
                   "start_epoch": "es_start_epoch"}
SEARCH_FIELDS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(SearchConfig))


# ------------------------------------------------------------------------------------------------- models
class StrictModel(BaseModel):
    # strict: a YAML string never becomes a number, nor 1 a boolean; extra keys are errors, not silently dropped.
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


def _model_of(cls: type, name: str, names: tuple[str, ...] | None = None, **extra: Any) -> type[BaseModel]:
    """A pydantic model with the fields (types and defaults) of dataclass ``cls``; ``names`` picks some of them."""
    hints = typing.get_type_hints(cls)
    fields: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if names is None or f.name in names:
            factory = f.default_factory
            fields[f.name] = (hints[f.name], factory() if callable(factory) else f.default)
    return create_model(name, __base__=StrictModel, **fields, **extra)


SearchSettings = _model_of(SearchConfig, "SearchSettings")
"""``search:``: every field of ``SearchConfig``."""
RETRAIN_FIELDS = ("layers", "channels", "auxiliary", "auxiliary_weight", "epochs", "batch_size", "lr", "momentum",
                  "weight_decay", "grad_clip", "drop_path", "cutout", "cutout_length", "amp")
"""The fields of ``RetrainConfig`` a sweep's ``retrain:`` block sets; the data come from each search."""
RetrainSettings = _model_of(RetrainConfig, "RetrainSettings", RETRAIN_FIELDS,
                            seeds=(list[int], Field(default_factory=lambda: [1], min_length=1)))
"""``retrain:``: the training fields of ``RetrainConfig`` (unset network size: the protocol's for the dataset), plus
``seeds``, one full retrain per seed."""


class Uniform(StrictModel):
    type: Literal["uniform"]
    low: float
    high: float

    @model_validator(mode="after")
    def _ordered(self) -> Uniform:
        if not self.low < self.high:
            raise ValueError(f"low must be below high, got low={self.low}, high={self.high}")
        return self

    def draw(self, rng: random.Random) -> float:
        return rng.uniform(self.low, self.high)


class LogUniform(Uniform):
    type: Literal["loguniform"]  # type: ignore[assignment]

    @model_validator(mode="after")
    def _positive(self) -> LogUniform:
        if self.low <= 0:
            raise ValueError(f"low must be greater than 0 for a log scale, got {self.low}")
        return self

    def draw(self, rng: random.Random) -> float:
        return math.exp(rng.uniform(math.log(self.low), math.log(self.high)))


class Choice(StrictModel):
    type: Literal["choice"]
    values: list[Any] = Field(min_length=1)

    def draw(self, rng: random.Random) -> Any:
        return rng.choice(self.values)


Distribution = Annotated[Uniform | LogUniform | Choice, Field(discriminator="type")]


class SampleSpec(StrictModel):
    """Random draws on top of the grid: ``num_samples`` draws of every ``params`` entry, crossed with the grid.

    The same draws are used at every grid point (so a grid over ``seed`` repeats each sampled setting per seed),
    and they are reproducible from ``seed``: ``trials()`` lists the same trials every time.
    """

    num_samples: int = Field(1, ge=1)
    seed: int = 0
    params: dict[str, Distribution] = Field(min_length=1)


class StoppingSpec(StrictModel):
    """The DARTS-ES rule: a preset (default ``reference``, the released code's), optionally with overrides."""

    preset: Literal["reference", "paper"] = "reference"
    ev_every: int | None = None
    window: int | None = None
    delta: int | None = None
    factor: float | None = None
    start_epoch: int | None = None

    def rule(self) -> ESRule:
        return ESRule(**self._merged())

    def _merged(self) -> dict[str, Any]:
        base = PRESETS[self.preset].as_kwargs()
        return {**base, **{k: getattr(self, k) for k in STOPPING_FIELDS if getattr(self, k) is not None}}

    def search_settings(self) -> dict[str, Any]:
        """The SearchConfig fields this block sets (the engine checks their values)."""
        merged = self._merged()
        return {field: merged[key] for key, field in STOPPING_FIELDS.items()}


class ResourcesSpec(StrictModel):
    cpu: float = Field(1.0, gt=0)
    gpu: float | Literal["auto"] = 0.0
    """A fraction (e.g. 0.25: four searches share a GPU), a whole number of GPUs per trial, or ``auto``: 1/k of a
    GPU for the largest k (at most 8) whose estimated peak memory fits (``rdarts.gpu_packing``)."""
    gpu_memory_gb: float = Field(80.0, gt=0)
    """The memory of one GPU of the machines the trials run on, for ``gpu: auto`` (decided where no GPU may be)."""

    @field_validator("gpu", mode="before")
    @classmethod
    def _fraction_whole_or_auto(cls, v: Any) -> Any:
        if v == "auto" and isinstance(v, str):
            return v
        if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
            raise ValueError(f"must be 'auto', a fraction up to 1 or a whole number of GPUs, got {v!r}")
        if v < 0:
            raise ValueError(f"must be 'auto' or a number greater than or equal to 0, got {v}")
        if v > 1 and v != int(v):
            raise ValueError(f"must be 'auto', a fraction up to 1 or a whole number of GPUs, got {v}")
        return float(v)


class TrackingSpec(StrictModel):
    """MLflow (used by the reducer): ``uri`` defaults to ``$MLFLOW_TRACKING_URI``, else a SQLite file in the sweep's
    folder (in its local mirror for a folder on object storage)."""

    enabled: bool = True
    uri: str | None = None
    experiment: str | None = None

    @field_validator("uri")
    @classmethod
    def _known_scheme(cls, v: str | None) -> str | None:
        if v is not None and v.split(":", 1)[0] not in TRACKING_SCHEMES:
            raise ValueError(f"must be an MLflow tracking URI ({', '.join(s + ':' for s in TRACKING_SCHEMES)}), "
                             f"got {v!r}")
        return v


class ReduceSpec(StrictModel):
    """Which architectures are retrained, and how they are selected (short retrains on a held-out split)."""

    protocol: Literal["paper", "winner"] = "paper"
    """``paper``: every architecture a DARTS / DARTS-ES / DARTS-ADA search returns is retrained with ``retrain:``,
    and each R-DARTS method retrains the one it selects by validation; ``winner``: one winner per (space, dataset)
    among all candidates, retrained alone."""

    candidates: int | None = Field(None, ge=1)
    """Protocol ``winner`` only: at most this many distinct genotypes per (space, dataset), the best by search-time
    validation accuracy; unset: all of them, as R-DARTS retrains every candidate."""
    epochs: int = Field(20, ge=1)
    """Epochs of each candidate's short retrain."""
    layers: int | None = Field(None, ge=1)
    channels: int | None = Field(None, ge=1)
    batch_size: int | None = Field(None, ge=1)


