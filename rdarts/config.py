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
METHODS = ("darts", "sdarts-rs", "sdarts-adv", "darts-minus", "beta-darts", "pc-darts")
"""The search methods (``rdarts.robust``): DARTS as RobustDARTS runs it, and the robust-DARTS catalogue."""
PC_DARTS_CHANNEL_MULTIPLE = 8
"""PC-DARTS sends C/4 channels through the ops, and a stride-2 skip (FactorizedReduce) halves those again."""
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


def setting(default: Any, rule: Rule | None, help: str = "") -> Any:
    """A dataclass field with its rule (``check`` applies it) and a line of help (the CLI and the sweep schema)."""
    return field(default=default, metadata={"rule": rule, "help": help})


def help_of(cls: type, name: str) -> str:
    """The help line of a setting."""
    return str(next(f for f in dataclasses.fields(cls) if f.name == name).metadata.get("help", ""))


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
    space: str = setting("s1", Rule(str), "search space: darts, s1, s2, s3, s4 (or a name for space_ops)")
    space_ops: dict[str, Any] | None = setting(None, None, "a space of your own: {normal: [ops], reduce: [ops]}, "
                                                         "one op list or one per edge")
    dataset: str = setting("cifar10", Rule(str), "cifar10, cifar100, svhn, fashion-mnist, digits")
    data_root: str | None = setting(None, Rule(str, optional=True), "folder holding the dataset (torchvision layout)")
    download: bool = setting(False, FLAG, "download the dataset into data_root when it is missing")
    n_train: int | None = setting(None, Rule(int, low=4, optional=True), "training-split images used (the first "
                                  "ones), split 50/50 into the weights' and α's halves; unset: all")
    image_size: int | None = setting(None, IMAGE_SIZE, "resize images to this side; unset: as stored")
    # supernet (at least 3 cells: with fewer, both reduction slots layers//3 and 2*layers//3 cover every cell and
    # the normal cell's α never enters the graph)
    layers: int = setting(8, Rule(int, low=3, high=64, high_open=False), "cells of the supernet")
    channels: int = setting(16, CHANNELS, "initial channels (even)")
    nodes: int = setting(4, Rule(int, low=1, high=8, high_open=False), "intermediate nodes per cell")
    # optimisation
    epochs: int = setting(50, POSITIVE, "search epochs")
    batch_size: int = setting(64, BATCH, "batch size of both halves")
    order: str = setting("second", Rule(str, choices=ORDERS), "the α gradient: first or second order (unrolled)")
    method: str = setting("darts", Rule(str, choices=METHODS), "darts, or a robust-DARTS method: sdarts-rs, "
                          "sdarts-adv (SmoothDARTS), darts-minus (DARTS-), beta-darts (β-DARTS), pc-darts (PC-DARTS)")
    lr: float = setting(0.025, NON_NEGATIVE, "SGD learning rate of the weights (cosine to lr_min)")
    lr_min: float = setting(0.001, NON_NEGATIVE, "final learning rate of the cosine schedule")
    momentum: float = setting(0.9, NON_NEGATIVE, "SGD momentum")
    weight_decay: float = setting(3e-4, NON_NEGATIVE, "L2 on the weights: the regulariser of R-DARTS(L2)")
    grad_clip: float = setting(5.0, NON_NEGATIVE, "gradient norm clip of the weights")
    arch_lr: float = setting(3e-4, NON_NEGATIVE, "Adam learning rate of α")
    arch_weight_decay: float = setting(1e-3, NON_NEGATIVE, "Adam weight decay of α (also inside the Hessian)")
    # regularisation
    augment: bool = setting(True, FLAG, "random crop and flip on the search's batches (an inner-objective "
                            "regulariser the paper studies)")
    drop_path: float = setting(0.0, FRACTION, "scheduled drop path on whole edges, ramped from 0: R-DARTS(DP)")
    cutout: bool | None = setting(None, Rule(bool, optional=True), "cutout; unset: on exactly when drop_path > 0, "
                                  "as the reference")
    cutout_length: int | None = setting(None, Rule(int, low=1, optional=True), "cutout square side; unset: half "
                                        "the image side")
    # eigenvalue tracking and early stopping
    ev_every: int = setting(REFERENCE_CODE.ev_every, POSITIVE, "epochs between λ_max measurements (and the last)")
    hessian_batches: int = setting(1, Rule(int, low=1, high=1024, high_open=False), "validation batches per "
                                   "λ_max: the mean of their λ_max, its standard error as eigenvalue_se")
    hessian_warm_start: bool = setting(True, FLAG, "start each λ_max solve from the previous one's Ritz vector "
                                       "(same λ within the tolerance, a few products instead of ten or more)")
    hessian_tol: float = setting(1e-4, NON_NEGATIVE, "relative tolerance of λ_max (Lanczos)")
    hessian_max_iter: int = setting(100, POSITIVE, "most Hessian-vector products per measurement")
    early_stop: str = setting("off", Rule(str, choices=EARLY_STOP_MODES), "off, es (DARTS-ES) or ada (DARTS-ADA)")
    es_window: int = setting(REFERENCE_CODE.window, POSITIVE, "DARTS-ES: evaluations per local average")
    es_delta: int = setting(REFERENCE_CODE.delta, POSITIVE, "DARTS-ES: local averages the ratio looks back")
    es_factor: float = setting(REFERENCE_CODE.factor, GREATER_THAN_ONE, "DARTS-ES: stop when the ratio exceeds it")
    es_start_epoch: int = setting(REFERENCE_CODE.start_epoch, Rule(int, low=0), "DARTS-ES: earliest epoch kept")
    ada_mul_factor: float = setting(10.0, GREATER_THAN_ONE, "DARTS-ADA: weight decay multiplier per rollback")
    ada_max_weight_decay: float = setting(3e-2, NON_NEGATIVE, "DARTS-ADA: no rollback beyond this weight decay")
    # run
    seed: int = setting(1, Rule(int), "random seed")
    device: str = setting("auto", Rule(str), "auto, cpu, cuda, cuda:N")
    # bf16 off by default: the reference is fp32 throughout, and on a small supernet bf16 changed the second-order
    # α gradient by ~30 % (cosine 0.95)
    amp: bool = setting(False, FLAG, "bf16 autocast for the training passes on CUDA (never for the Hessian)")
    channels_last: bool = setting(False, FLAG, "channels_last memory format on CUDA")
    valid_batches: int | None = setting(None, Rule(int, low=1, optional=True), "cap on the batches of the "
                                        "per-epoch validation pass; unset: all")
    valid_augment: bool = setting(True, FLAG, "the per-epoch validation pass sees the training transform, as the "
                                  "reference's valid_queue (false: normalisation only)")
    extra: dict[str, Any] = field(default_factory=dict)
    """Free-form labels carried into the results (e.g. a sweep's trial name); not used by the search."""

    def __post_init__(self) -> None:
        check(self)
        if self.channels % 2:
            raise ConfigError(f"channels must be even (FactorizedReduce halves them), got {self.channels}")
        m = PC_DARTS_CHANNEL_MULTIPLE
        if self.method == "pc-darts" and self.channels % m:
            raise ConfigError(f"method 'pc-darts' needs channels divisible by {m} (a quarter of them go through the "
                              f"ops, and a stride-2 skip halves that quarter), got channels={self.channels}; use "
                              f"channels {m * max(1, round(self.channels / m))}")
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
        """The settings a resumed search must share with the checkpoint (everything but labels and device).

        ``method`` only when it is not plain DARTS: checkpoints written before the setting existed still resume.
        """
        drop = ("extra", "device", "data_root", "download") + (("method",) if self.method == "darts" else ())
        return _without(self.to_dict(), drop)


@dataclass(frozen=True)
class RetrainConfig:
    """The settings of one retraining run (``rdarts retrain``, the reducer's jobs)."""

    # data
    dataset: str = setting("cifar10", Rule(str), "cifar10, cifar100, svhn, fashion-mnist, digits")
    data_root: str | None = setting(None, Rule(str, optional=True), "folder holding the dataset")
    download: bool = setting(False, FLAG, "download the dataset into data_root when it is missing")
    n_train: int | None = setting(None, Rule(int, low=2, optional=True), "training images used (the first ones, "
                                  "the validation split included); unset: all")
    n_test: int | None = setting(None, Rule(int, low=1, optional=True), "test images evaluated; unset: all")
    image_size: int | None = setting(None, IMAGE_SIZE, "resize images to this side; unset: as stored")
    valid_fraction: float = setting(0.0, FRACTION, "share of the training images held out (from their end) as a "
                                    "validation split for selection; 0: none")
    # network
    layers: int | None = setting(None, Rule(int, low=1, high=64, high_open=False, optional=True), "cells; unset: "
                                 "the published protocol's for the dataset (20 on CIFAR-10, else 8)")
    channels: int | None = setting(None, Rule(int, low=1, high=4096, high_open=False, optional=True), "initial "
                                   "channels; unset: the protocol's (36 on CIFAR-10, else 16)")
    auxiliary: bool = setting(True, FLAG, "the auxiliary head after the second reduction cell")
    auxiliary_weight: float = setting(0.4, NON_NEGATIVE, "weight of the auxiliary head's loss")
    # optimisation
    epochs: int = setting(600, POSITIVE, "training epochs")
    batch_size: int = setting(96, Rule(int, low=2, high=65536, high_open=False), "batch size (at least 2: BN in "
                              "training mode needs two samples)")
    lr: float = setting(0.025, Rule(float, low=0, low_open=True), "SGD learning rate (cosine to 0)")
    momentum: float = setting(0.9, FRACTION, "SGD momentum")
    weight_decay: float = setting(3e-4, NON_NEGATIVE, "weight decay")
    grad_clip: float = setting(5.0, Rule(float, low=0, low_open=True), "gradient norm clip")
    # regularisation
    drop_path: float = setting(0.2, FRACTION, "drop path, ramped as dp * epoch / epochs")
    cutout: bool = setting(True, FLAG, "cutout")
    cutout_length: int | None = setting(None, Rule(int, low=1, optional=True), "cutout square side; unset: half "
                                        "the image side (the reference's 16 at 32 px)")
    # run
    seed: int = setting(1, Rule(int, low=0), "random seed")
    device: str = setting("auto", Rule(str), "auto, cpu, cuda, cuda:N")
    amp: bool = setting(False, FLAG, "bf16 autocast on CUDA (ignored on CPU; off: the reference trains in fp32)")

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
