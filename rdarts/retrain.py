"""Retraining a genotype from scratch: the evaluation protocol that turns a search into a test error.

automl/RobustDARTS ``src/evaluation/train.py`` (= quark0/darts ``cnn/train.py``): SGD with momentum, cosine learning
rate to 0, gradient clipping, the auxiliary head's loss weighted 0.4, Cutout, drop path ramped as dp*epoch/epochs,
the test split evaluated after every epoch and the last epoch's test error reported. rdarts adds an optional held-out
validation split, carved from the end of the training examples, so that a reducer can select on it and never on test.

Pure PyTorch: no Ray, no MLflow. A run writes its checkpoints under ``out_dir/checkpoints`` and resumes from the
latest one when run again; every random draw comes from seeded generators saved in the checkpoint, so a resumed run
ends exactly as an uninterrupted one (on CPU).
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from tqdm import tqdm

from rdarts.checkpoint import CheckpointStore
from rdarts.config import ConfigError, RetrainConfig
from rdarts.data import Augment, ImageData, load_dataset
from rdarts.device import resolve_device
from rdarts.errors import DivergedError
from rdarts.network import Network, count_parameters
from rdarts.regularization import cosine_lr
from rdarts.resumable import autocast, check_settings, restore_rng, rng_state, settings_stamp
from rdarts.spaces import Genotype


@dataclass
class RetrainRecord:
    """One epoch. Accuracies are fractions; ``test_error`` is in %, as the reference logs it."""

    epoch: int
    lr: float
    drop_path: float
    train_loss: float
    """Mean training objective, auxiliary term included (as the reference logs it)."""
    train_acc: float
    valid_acc: float
    """On the held-out validation split; NaN without one."""
    test_acc: float
    test_error: float
    epoch_time_s: float


@dataclass(frozen=True)
class RetrainResult:
    test_error: float
    """Last epoch's test error in % (the reference's reported number)."""
    valid_acc: float
    """Last epoch's accuracy on the held-out validation split (fraction); NaN without one."""
    params: int
    """Weights of the network without the auxiliary head."""
    train_size: int
    valid_size: int
    history: list[dict[str, Any]]


def holdout_split(n: int, valid_fraction: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices of the training and the validation examples: the validation ones are the last ``valid_fraction``."""
    n_valid = round(n * valid_fraction)
    if valid_fraction > 0 and not 1 <= n_valid <= n - 2:
        raise ConfigError(f"valid_fraction={valid_fraction} of {n} training examples leaves {n_valid} for validation "
                          f"and {n - n_valid} for training; use a fraction that leaves at least 1 and 2")
    return torch.arange(n - n_valid), torch.arange(n - n_valid, n)


def _load(cfg: RetrainConfig, *, train: bool) -> ImageData:
    return load_dataset(cfg.dataset, root=cfg.data_root, train=train, download=cfg.download)


class Retrain:
    """A resumable retraining run.

    Args:
        genotype: The architecture to train.
        cfg: The settings.
        out_dir: Where checkpoints go; ``None`` keeps everything in memory (no resume).
        train_data: The training split; loaded from ``cfg`` when omitted.
        test_data: The test split; loaded from ``cfg`` when omitted.
        progress: Show a progress bar per epoch.
    """

    def __init__(self, genotype: Genotype, cfg: RetrainConfig, out_dir: str | Path | None = None, *,
                 train_data: ImageData | None = None, test_data: ImageData | None = None, progress: bool = False):
        self.genotype, self.cfg, self.progress = genotype, cfg, progress
        self.device = resolve_device(cfg.device)
        self.store = CheckpointStore(Path(out_dir) / "checkpoints") if out_dir is not None else None
        train = train_data if train_data is not None else _load(cfg, train=True)
        test = test_data if test_data is not None else _load(cfg, train=False)
        train, test = train.subset(cfg.n_train).resized(cfg.image_size), test.subset(cfg.n_test).resized(cfg.image_size)
        if (test.in_channels, test.image_size, test.num_classes) != (train.in_channels, train.image_size,
                                                                      train.num_classes):
            raise ConfigError("the test split's channels, image size or class count differ from the training split's")
        if cfg.cutout and cfg.cutout_length is not None and cfg.cutout_length >= 2 * train.image_size:
            raise ConfigError(f"cutout_length={cfg.cutout_length} blanks every {train.image_size}-px image entirely; "
                              "set it below twice the image side, or unset it (half the side)")
        self.data = train  # its statistics normalise every split
        self.train_idx, self.valid_idx = holdout_split(len(train.labels), cfg.valid_fraction)
        self.x_train = train.images[self.train_idx].to(self.device)
        self.y_train = train.labels[self.train_idx].to(self.device)
        self.x_valid = train.images[self.valid_idx].to(self.device)
        self.y_valid = train.labels[self.valid_idx].to(self.device)
        self.x_test, self.y_test = test.images.to(self.device), test.labels.to(self.device)

        torch.manual_seed(cfg.seed)
        self.model = Network(genotype, cfg.channels, train.num_classes, cfg.layers, auxiliary=cfg.auxiliary,
                             in_channels=train.in_channels).to(self.device)
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=cfg.lr, momentum=cfg.momentum,
                                         weight_decay=cfg.weight_decay)
        self.generator = torch.Generator().manual_seed(cfg.seed)
        self.next_epoch = 0
        self.history: list[dict[str, Any]] = []

    # ----------------------------------------------------------------------------------------------- one epoch
    def train_epoch(self, epoch: int) -> tuple[float, float]:
        cfg = self.cfg
        self.model.train()
        aug = Augment(self.data, cutout=cfg.cutout, cutout_length=cfg.cutout_length)
        order = torch.randperm(len(self.y_train), generator=self.generator)
        batches = [b for b in order.split(cfg.batch_size) if len(b) > 1]  # BN in train mode needs two samples
        # Sums stay on the device: no host sync per step.
        loss_sum = torch.zeros((), device=self.device)
        correct = torch.zeros((), dtype=torch.long, device=self.device)
        seen = 0
        bar = tqdm(batches, desc=f"epoch {epoch + 1}/{cfg.epochs}", leave=False, disable=not self.progress,
                   dynamic_ncols=True)
        for step, idx in enumerate(bar):
            idx = idx.to(self.device)
            x, y = aug(self.x_train[idx], self.generator), self.y_train[idx]
            with autocast(self.cfg.amp, self.device):
                logits, logits_aux = self.model(x)
                loss = F.cross_entropy(logits, y)
                if logits_aux is not None:
                    loss = loss + cfg.auxiliary_weight * F.cross_entropy(logits_aux, y)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
            self.optimizer.step()
            loss_sum += loss.detach().float() * len(y)
            correct += (logits.argmax(-1) == y).sum()
            seen += len(y)
            if self.progress and step % 20 == 0:
                bar.set_postfix(loss=f"{loss_sum.item() / seen:.3f}", acc=f"{correct.item() / seen:.3f}")
        train_loss = loss_sum.item() / seen
        if not math.isfinite(train_loss):
            raise DivergedError(f"diverged: the training loss became {train_loss} in epoch {epoch}; "
                                "lower the learning rate or the drop path")
        return train_loss, correct.item() / seen

    @torch.no_grad()
    def accuracy(self, x_all: torch.Tensor, y_all: torch.Tensor) -> float:
        """Accuracy in eval mode (no augmentation, no auxiliary head); NaN for an empty split."""
        if len(y_all) == 0:
            return math.nan
        self.model.eval()
        aug = Augment(self.data, augment=False)  # normalisation only: draws nothing from the generator
        bs = max(self.cfg.batch_size, 256)
        correct = torch.zeros((), dtype=torch.long, device=self.device)
        for start in range(0, len(y_all), bs):
            with autocast(self.cfg.amp, self.device):
                logits, _ = self.model(aug(x_all[start:start + bs], self.generator))
            correct += (logits.argmax(-1) == y_all[start:start + bs]).sum()
        self.model.train()
        return correct.item() / len(y_all)

    def run_epoch(self, epoch: int) -> dict[str, Any]:
        cfg = self.cfg
        t0 = time.perf_counter()
        lr = cosine_lr(epoch, cfg.epochs, cfg.lr, 0.0)  # the reference's CosineAnnealingLR(epochs), no eta_min
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.model.drop_path_prob = cfg.drop_path * epoch / cfg.epochs
        train_loss, train_acc = self.train_epoch(epoch)
        valid_acc = self.accuracy(self.x_valid, self.y_valid)
        test_acc = self.accuracy(self.x_test, self.y_test)
        record = RetrainRecord(epoch=epoch, lr=lr, drop_path=self.model.drop_path_prob, train_loss=train_loss,
                               train_acc=train_acc, valid_acc=valid_acc, test_acc=test_acc,
                               test_error=100.0 * (1.0 - test_acc), epoch_time_s=time.perf_counter() - t0)
        return dataclasses.asdict(record)

    # ----------------------------------------------------------------------------------------------- state
    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {
            "format": 1,
            "config": settings_stamp(self.cfg.result_affecting()),
            "genotype": self.genotype.to_json(),
            "next_epoch": self.next_epoch,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            **rng_state(self.generator, self.device),
            "history": self.history,
        }
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        other_genotype = Genotype.from_json(state["genotype"]) != self.genotype
        check_settings(self.cfg.result_affecting(), state, also_differ=["genotype"] if other_genotype else [])
        self.next_epoch = int(state["next_epoch"])
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        restore_rng(state, self.generator, self.device)
        self.history = list(state["history"])

    # ----------------------------------------------------------------------------------------------- the loop
    def run(self, on_epoch: Callable[[dict[str, Any]], None] | None = None) -> RetrainResult:
        """Run (or resume) to the last epoch; ``on_epoch`` sees each record after its checkpoint is written."""
        state = self.store.load_latest() if self.store is not None else None
        if state is not None:
            self.load_state_dict(state)
        while self.next_epoch < self.cfg.epochs:
            epoch = self.next_epoch
            record = self.run_epoch(epoch)
            self.history.append(record)
            self.next_epoch = epoch + 1
            if self.store is not None:
                self.store.save(epoch, self.state_dict())
            if on_epoch is not None:
                on_epoch(record)
        return self.result()

    def result(self) -> RetrainResult:
        last = self.history[-1]
        return RetrainResult(test_error=last["test_error"], valid_acc=last["valid_acc"],
                             params=count_parameters(self.model), train_size=len(self.train_idx),
                             valid_size=len(self.valid_idx), history=list(self.history))


def retrain(genotype: Genotype, cfg: RetrainConfig, out_dir: str | Path | None = None, *,
            train_data: ImageData | None = None, test_data: ImageData | None = None, progress: bool = False,
            on_epoch: Callable[[dict[str, Any]], None] | None = None) -> RetrainResult:
    """Retrain ``genotype`` from scratch (resuming from ``out_dir`` if it holds checkpoints)."""
    run = Retrain(genotype, cfg, out_dir, train_data=train_data, test_data=test_data, progress=progress)
    return run.run(on_epoch)
