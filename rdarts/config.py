"""The settings of a search and of a retraining: frozen dataclasses, checked once at the edge, then passed around.

This is the ground floor. Every default has one home: here, or for the DARTS-ES constants ``rdarts.stopping.ESRule``
(read here); the sweep file's ``search:`` and ``retrain:`` blocks are generated from these dataclasses
(``rdarts.sweep.settings``). Each field states its rule (``Rule``); ``check`` applies the rules of both classes the
same way and names the field and what it must be in a ``ConfigError``. Pure Python: no torch.

Search defaults are automl/RobustDARTS' released scripts (``scripts/DARTS_search.sh``, ``src/search/args.py``):
8 cells, 16 channels, 4 nodes, batch 64, 50 epochs, second order, SGD 0.025 (momentum 0.9, weight decay 3e-4, cosine
to 1e-3, clip 5), Adam 3e-4 on α (betas 0.5/0.999, weight decay 1e-3), eigenvalue every 2 epochs and at the last.
Retraining defaults are ``scripts/DARTS_eval.sh``: 600 epochs, batch 96, SGD 0.025 cosine to 0, auxiliary head 0.4,
cutout 16, drop path 0.2, at the published protocol's size for the dataset (``PROTOCOL_SIZES``).
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from typing import Any, TypeVar

from rdarts.errors import UserError
from rdarts.spaces import SPACE_NAMES, SearchSpace, get_space, space_from_op_lists
from rdarts.stopping import REFERENCE_CODE, ESRule

DATASETS: tuple[str, ...] = ("cifar10", "cifar100", "svhn", "fashion-mnist", "digits")
EARLY_STOP_MODES = ("off", "es", "ada")
ORDERS = ("first", "second")
# Cells x channels of the published retraining protocol: CIFAR-10 as DARTS, CIFAR-100 and SVHN as R-DARTS App. C
# (darts-pt#2); any other dataset gets the reference code's own defaults.
PROTOCOL_SIZES: dict[str, tuple[int, int]] = {"cifar10": (20, 36), "cifar100": (8, 16), "svhn": (8, 16)}
CODE_SIZE = (8, 16)
NATIVE_IMAGE_SIZES: dict[str, int] = {"cifar10": 32, "cifar100": 32, "svhn": 32, "fashion-mnist": 28, "digits": 8}
T = TypeVar("T")


class ConfigError(UserError):
    """A setting out of range; the message names the field and the fix."""


@dataclass(frozen=True)
class Rule:
    """What a setting must be. Numbers are finite; ``low``/``high`` bound them (``open`` excludes the bound)."""

    kind: type
    low: float | None = None
    low_open: bool = False
    high: float | None = None
    high_open: bool = True
    choices: tuple[str, ...] = ()
    optional: bool = False

    def ok(self, value: Any) -> bool:
        if value is None:
            return self.optional
        if self.kind is bool:
            return isinstance(value, bool)
        if isinstance(value, bool) or not isinstance(value, int | float if self.kind is float else self.kind):
            return False
        if self.kind is str:
            return not self.choices or value in self.choices
        if not math.isfinite(value):
            return False
        low_ok = self.low is None or (value > self.low if self.low_open else value >= self.low)
        high_ok = self.high is None or (value < self.high if self.high_open else value <= self.high)
        return low_ok and high_ok

    def describe(self) -> str:
        """What the message says the setting must be (also what the sweep-file errors quote)."""
        if self.kind is bool:
            text = "true or false"
        elif self.choices:
            text = (" or ".join(repr(c) for c in self.choices) if len(self.choices) == 2
                    else "one of " + ", ".join(self.choices))
        elif self.kind is int and self.low is not None and self.high is None:
            text = "greater than 0" if self.low == 1 else f"at least {self.low:g}"
        elif self.kind is int and self.low is not None and self.high is not None:
            text = f"an integer from {self.low:g} to {self.high:g}"
        elif self.low is not None and self.high is not None:
            text = f"in {'(' if self.low_open else '['}{self.low:g}, {self.high:g}{')' if self.high_open else ']'}"
        elif self.low is not None and self.low_open and self.low == 1:
            text = "greater than 1"
        elif self.low is not None:
            text = f"a finite number {'>' if self.low_open else '>='} {self.low:g}"
        else:
            text = {int: "an integer", float: "a number"}.get(self.kind, f"a {self.kind.__name__}")
        return text + (" (or unset)" if self.optional else "")


def setting(default: Any, rule: Rule) -> Any:
    """A dataclass field with its rule (``check`` reads it)."""
    return field(default=default, metadata={"rule": rule})


POSITIVE, FRACTION = Rule(int, low=1), Rule(float, low=0, high=1)
# Sizes past these would only exhaust memory (an image_size of 100000, a million channels): refused up front.
IMAGE_SIZE = Rule(int, low=4, high=1024, high_open=False, optional=True)
CELLS, CHANNELS = Rule(int, low=1, high=64, high_open=False), Rule(int, low=1, high=4096, high_open=False)
BATCH = Rule(int, low=1, high=65536, high_open=False)
NON_NEGATIVE, GREATER_THAN_ONE = Rule(float, low=0), Rule(float, low=1, low_open=True)
FLAG = Rule(bool)


def check(obj: Any) -> None:
    """Apply every field's rule; the first that fails is a ``ConfigError`` naming the field."""
    for f in dataclasses.fields(obj):
        rule: Rule | None = f.metadata.get("rule")
        value = getattr(obj, f.name)
        if rule is not None and not rule.ok(value):
            raise ConfigError(f"{f.name} must be {rule.describe()}, got {value!r}")
    dataset = getattr(obj, "dataset", None)
    if dataset is not None and (not isinstance(dataset, str) or dataset.lower() not in DATASETS):
        raise ConfigError(f"unknown dataset {dataset!r}; valid datasets: {', '.join(DATASETS)}")
    device = getattr(obj, "device", "auto")
    if not isinstance(device, str) or (device not in ("auto", "cpu") and not device.startswith("cuda")):
        raise ConfigError(f"device must be 'auto', 'cpu' or 'cuda[:N]', got {device!r}")


def from_dict(cls: type[T], d: dict[str, Any], what: str) -> T:
    """``cls(**d)`` for a dataclass, but an unknown key is a ``ConfigError`` that lists the valid ones."""
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(d) - names)
    if unknown:
        raise ConfigError(f"unknown {what} setting(s) {unknown}; valid settings: {', '.join(sorted(names))}")
    return cls(**d)


def _without(d: dict[str, Any], keys: tuple[str, ...]) -> dict[str, Any]:
    return {k: v for k, v in d.items() if k not in keys}


@dataclass(frozen=True)
class SearchConfig:
    # what to search
    space: str = "s1"
    space_ops: dict[str, Any] | None = None
    """A user's own space: ``{"normal": [...], "reduce": [...]}`` with one op list or one list per edge."""
    dataset: str = "cifar10"
    data_root: str | None = None
    download: bool = setting(False, FLAG)
    n_train: int | None = setting(None, Rule(int, low=4, optional=True))
    """Training-split examples used (the first ones); half train the weights, half α. All when unset."""
    image_size: int | None = setting(None, IMAGE_SIZE)
    # supernet
    layers: int = setting(8, Rule(int, low=3, high=64, high_open=False))
    """At least 3: with fewer, both reduction slots (layers//3, 2*layers//3) cover every cell, so the normal cell's
    α would never enter the graph."""
    channels: int = setting(16, CHANNELS)
    nodes: int = setting(4, Rule(int, low=1, high=8, high_open=False))
    # optimisation
    epochs: int = setting(50, POSITIVE)
    batch_size: int = setting(64, BATCH)
    order: str = setting("second", Rule(str, choices=ORDERS))
    lr: float = setting(0.025, NON_NEGATIVE)
    lr_min: float = setting(0.001, NON_NEGATIVE)
    momentum: float = setting(0.9, NON_NEGATIVE)
    weight_decay: float = setting(3e-4, NON_NEGATIVE)
    grad_clip: float = setting(5.0, NON_NEGATIVE)
    arch_lr: float = setting(3e-4, NON_NEGATIVE)
    arch_weight_decay: float = setting(1e-3, NON_NEGATIVE)
    # regularisation
    augment: bool = setting(True, FLAG)
    """Random crop and horizontal flip on the search's batches (the reference's training transform, applied to both
    halves); one of the inner-objective regularisers the paper studies."""
    drop_path: float = setting(0.0, FRACTION)
    cutout: bool | None = setting(None, Rule(bool, optional=True))
    """``None``: on exactly when drop_path > 0 (the reference)."""
    cutout_length: int | None = setting(None, Rule(int, low=1, optional=True))
    # eigenvalue tracking and early stopping
    ev_every: int = setting(REFERENCE_CODE.ev_every, POSITIVE)
    hessian_batches: int = setting(1, Rule(int, low=1, high=1024, high_open=False))
    hessian_tol: float = setting(1e-4, NON_NEGATIVE)
    hessian_max_iter: int = setting(100, POSITIVE)
    early_stop: str = setting("off", Rule(str, choices=EARLY_STOP_MODES))
    es_window: int = setting(REFERENCE_CODE.window, POSITIVE)
    es_delta: int = setting(REFERENCE_CODE.delta, POSITIVE)
    es_factor: float = setting(REFERENCE_CODE.factor, GREATER_THAN_ONE)
    es_start_epoch: int = setting(REFERENCE_CODE.start_epoch, Rule(int, low=0))
    ada_mul_factor: float = setting(10.0, GREATER_THAN_ONE)
    ada_max_weight_decay: float = setting(3e-2, NON_NEGATIVE)
    # run
    seed: int = setting(1, Rule(int))
    device: str = "auto"
    amp: bool = setting(False, FLAG)
    """bf16 autocast for the training passes on CUDA (never for the Hessian). Off by default: the reference is fp32
    throughout, and on a small supernet bf16 changed the second-order α gradient by ~30 % (cosine 0.95)."""
    channels_last: bool = setting(False, FLAG)
    valid_batches: int | None = setting(None, Rule(int, low=1, optional=True))
    """Cap on the batches of the per-epoch validation pass (all when unset)."""
    valid_augment: bool = setting(True, FLAG)
    """The per-epoch validation pass (eval mode) sees the search's training transform, as the reference's
    ``valid_queue`` does (crop, flip, cutout when on); False: normalisation only."""
    extra: dict[str, Any] = field(default_factory=dict)
    """Free-form labels carried into the results (e.g. a sweep's trial name); not used by the search."""

    def __post_init__(self) -> None:
        check(self)
        if self.channels % 2:
            raise ConfigError(f"channels must be even (FactorizedReduce halves them), got {self.channels}")
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
        return from_dict(cls, d, "search")

    def result_affecting(self) -> dict[str, Any]:
        """The settings a resumed search must share with the checkpoint (everything but labels and device)."""
        return _without(self.to_dict(), ("extra", "device", "data_root", "download"))


@dataclass(frozen=True)
class RetrainConfig:
    """The settings of one retraining run (``rdarts retrain``, the reducer's jobs)."""

    # data
    dataset: str = "cifar10"
    data_root: str | None = None
    download: bool = setting(False, FLAG)
    n_train: int | None = setting(None, Rule(int, low=2, optional=True))
    """Training examples used (the first ones, validation split included); all when unset."""
    n_test: int | None = setting(None, Rule(int, low=1, optional=True))
    """Test examples evaluated (the first ones); all when unset."""
    image_size: int | None = setting(None, IMAGE_SIZE)
    valid_fraction: float = setting(0.0, FRACTION)
    """Share of the training examples held out, from their end, as a validation split for selection; 0 = none."""
    # network
    layers: int | None = setting(None, Rule(int, low=1, high=64, high_open=False, optional=True))
    """Cells; unset: the published protocol's for the dataset (``PROTOCOL_SIZES``: 20 on CIFAR-10, else 8)."""
    channels: int | None = setting(None, Rule(int, low=1, high=4096, high_open=False, optional=True))
    """Initial channels; unset: the protocol's (36 on CIFAR-10, else 16)."""
    auxiliary: bool = setting(True, FLAG)
    auxiliary_weight: float = setting(0.4, NON_NEGATIVE)
    # optimisation
    epochs: int = setting(600, POSITIVE)
    batch_size: int = setting(96, Rule(int, low=2, high=65536, high_open=False))
    """At least 2: BN in training mode needs two samples."""
    lr: float = setting(0.025, Rule(float, low=0, low_open=True))
    momentum: float = setting(0.9, FRACTION)
    weight_decay: float = setting(3e-4, NON_NEGATIVE)
    grad_clip: float = setting(5.0, Rule(float, low=0, low_open=True))
    # regularisation
    drop_path: float = setting(0.2, FRACTION)
    cutout: bool = setting(True, FLAG)
    cutout_length: int | None = setting(None, Rule(int, low=1, optional=True))
    """Side of the Cutout square; unset: half the image side (the reference's 16 at 32 px), resolved on creation."""
    # run
    seed: int = setting(1, Rule(int, low=0))
    device: str = "auto"
    amp: bool = setting(False, FLAG)
    """bf16 autocast on CUDA (ignored on CPU); off by default, as the reference trains in fp32."""

    def __post_init__(self) -> None:
        check(self)
        layers, channels = PROTOCOL_SIZES.get(self.dataset.lower(), CODE_SIZE)
        if self.layers is None:
            object.__setattr__(self, "layers", layers)  # frozen: the protocol's size, resolved once
        if self.channels is None:
            object.__setattr__(self, "channels", channels)
        if self.cutout_length is None:
            side = self.image_size or NATIVE_IMAGE_SIZES[self.dataset.lower()]
            object.__setattr__(self, "cutout_length", max(1, side // 2))

    @classmethod
    def protocol_defaults(cls, dataset: str, **overrides: Any) -> RetrainConfig:
        """The published protocol's network size for ``dataset`` (20x36 on CIFAR-10, 8x16 on CIFAR-100 and SVHN)."""
        return cls.from_dict({"dataset": dataset, **overrides})

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RetrainConfig:
        return from_dict(cls, d, "retrain")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def result_affecting(self) -> dict[str, Any]:
        """The settings a resumed run must share with its checkpoint (everything but where data and compute live)."""
        return _without(self.to_dict(), ("device", "data_root", "download"))
