"""The settings of one search, validated once at the edge and then passed around as a frozen object.

Defaults are automl/RobustDARTS' released scripts (``scripts/DARTS_search.sh``, ``src/search/args.py``): 8 cells,
16 channels, 4 nodes, batch 64, 50 epochs, second order, SGD 0.025 (momentum 0.9, weight decay 3e-4, cosine to 1e-3,
clip 5), Adam 3e-4 on α (betas 0.5/0.999, weight decay 1e-3), eigenvalue every 2 epochs and at the last.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from typing import Any, TypeVar

from rdarts.data import DATASETS
from rdarts.errors import UserError
from rdarts.spaces import SPACE_NAMES, SearchSpace, get_space, space_from_op_lists
from rdarts.stopping import ESRule

EARLY_STOP_MODES = ("off", "es", "ada")
T = TypeVar("T")


class ConfigError(UserError):
    """A setting out of range; the message names the field and the fix."""


def dataclass_from_dict(cls: type[T], d: dict[str, Any], what: str) -> T:
    """``cls(**d)`` for a dataclass, but an unknown key is a ``ConfigError`` that lists the valid ones."""
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(d) - names)
    if unknown:
        raise ConfigError(f"unknown {what} setting(s) {unknown}; valid settings: {', '.join(sorted(names))}")
    return cls(**d)


@dataclass(frozen=True)
class SearchConfig:
    # what to search
    space: str = "s1"
    space_ops: dict[str, Any] | None = None
    """A user's own space: ``{"normal": [...], "reduce": [...]}`` with one op list or one list per edge."""
    dataset: str = "cifar10"
    data_root: str | None = None
    download: bool = False
    n_train: int | None = None
    """Training-split examples used (the first ones); half train the weights, half α. All when unset."""
    image_size: int | None = None
    # supernet
    layers: int = 8
    channels: int = 16
    nodes: int = 4
    # optimisation
    epochs: int = 50
    batch_size: int = 64
    order: str = "second"
    lr: float = 0.025
    lr_min: float = 0.001
    momentum: float = 0.9
    weight_decay: float = 3e-4
    grad_clip: float = 5.0
    arch_lr: float = 3e-4
    arch_weight_decay: float = 1e-3
    # regularisation
    augment: bool = True
    """Random crop and horizontal flip on the search's batches (the reference's training transform, applied to both
    halves); one of the inner-objective regularisers the paper studies."""
    drop_path: float = 0.0
    cutout: bool | None = None
    """``None``: on exactly when drop_path > 0 (the reference)."""
    cutout_length: int | None = None
    # eigenvalue tracking and early stopping
    ev_every: int = 2
    hessian_batches: int = 1
    hessian_tol: float = 1e-4
    hessian_max_iter: int = 100
    early_stop: str = "off"
    es_window: int = 5
    es_delta: int = 4
    es_factor: float = 1.3
    es_start_epoch: int = 10
    ada_mul_factor: float = 10.0
    ada_max_weight_decay: float = 3e-2
    # run
    seed: int = 1
    device: str = "auto"
    amp: bool = False
    """bf16 autocast for the training passes on CUDA (never for the Hessian). Off by default: the reference is fp32
    throughout, and on a small supernet bf16 changed the second-order α gradient by ~30 % (cosine 0.95)."""
    channels_last: bool = False
    valid_batches: int | None = None
    """Cap on the batches of the per-epoch validation pass (all when unset)."""
    valid_augment: bool = True
    """The per-epoch validation pass (eval mode) sees the search's training transform, as the reference's
    ``valid_queue`` does (crop, flip, cutout when on); False: normalisation only."""
    extra: dict[str, Any] = field(default_factory=dict)
    """Free-form labels carried into the results (e.g. a sweep's trial name); not used by the search."""

    def __post_init__(self) -> None:
        positive = ("epochs", "layers", "channels", "nodes", "batch_size", "ev_every", "hessian_batches",
                    "hessian_max_iter", "es_window", "es_delta")
        for name in positive:
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be greater than 0, got {getattr(self, name)}")
        for name in ("lr", "lr_min", "momentum", "weight_decay", "grad_clip", "arch_lr", "arch_weight_decay",
                     "hessian_tol", "es_start_epoch"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and math.isfinite(value) and value >= 0):
                raise ConfigError(f"{name} must be a finite number >= 0, got {value!r}")
        if self.channels % 2:
            raise ConfigError(f"channels must be even (FactorizedReduce halves them), got {self.channels}")
        # Fix (tests/test_search.py): with 1 or 2 cells both reduction slots (layers//3, 2*layers//3) cover every
        # cell, so alphas_normal never enters the graph and the α step died in autograd ("not used in the graph").
        if self.layers < 3:
            raise ConfigError(f"layers must be at least 3 (with fewer, every cell is a reduction cell and the normal "
                              f"cell's alphas are never used), got {self.layers}")
        if not 0.0 <= self.drop_path < 1.0:
            raise ConfigError(f"drop_path must be in [0, 1), got {self.drop_path}")
        if self.order not in ("first", "second"):
            raise ConfigError(f"order must be 'first' or 'second', got {self.order!r}")
        if self.early_stop not in EARLY_STOP_MODES:
            raise ConfigError(f"early_stop must be one of {', '.join(EARLY_STOP_MODES)}, got {self.early_stop!r}")
        if self.dataset.lower() not in DATASETS:
            raise ConfigError(f"unknown dataset {self.dataset!r}; valid datasets: {', '.join(DATASETS)}")
        if self.n_train is not None and self.n_train < 4:
            raise ConfigError(f"n_train must be at least 4 (it is split 50/50), got {self.n_train}")
        if self.image_size is not None and self.image_size < 4:
            raise ConfigError(f"image_size must be at least 4, got {self.image_size}")
        if not self.es_factor > 1.0:
            raise ConfigError(f"es_factor must be greater than 1, got {self.es_factor}")
        if self.ada_mul_factor <= 1.0:
            raise ConfigError(f"ada_mul_factor must be greater than 1, got {self.ada_mul_factor}")
        if self.device not in ("auto", "cpu") and not self.device.startswith("cuda"):
            raise ConfigError(f"device must be 'auto', 'cpu' or 'cuda[:N]', got {self.device!r}")
        try:
            self.search_space()
        except ValueError as e:
            raise ConfigError(str(e)) from None

    def search_space(self) -> SearchSpace:
        if self.space_ops is not None:
            unknown = set(self.space_ops) - {"normal", "reduce"}
            if unknown or "normal" not in self.space_ops:
                raise ConfigError("space_ops needs a 'normal' op list (and optionally 'reduce'), "
                                  f"got keys {sorted(self.space_ops)}")
            return space_from_op_lists(self.space, self.space_ops["normal"], self.space_ops.get("reduce"),
                                       self.nodes)
        if self.space.lower() not in SPACE_NAMES:
            raise ConfigError(f"unknown search space {self.space!r}; valid spaces: {', '.join(SPACE_NAMES)} "
                              "(or define your own with space_ops)")
        return get_space(self.space, self.nodes)

    def es_rule(self) -> ESRule:
        return ESRule(ev_every=self.ev_every, window=self.es_window, delta=self.es_delta, factor=self.es_factor,
                      start_epoch=self.es_start_epoch)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SearchConfig:
        return dataclass_from_dict(cls, d, "search")

    def result_affecting(self) -> dict[str, Any]:
        """The settings a resumed search must share with the checkpoint (everything but labels and device)."""
        d = self.to_dict()
        for k in ("extra", "device", "data_root", "download"):
            d.pop(k)
        return d
