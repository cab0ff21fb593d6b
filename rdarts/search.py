"""The RobustDARTS search loop: bi-level DARTS with eigenvalue tracking, DARTS-ES and DARTS-ADA, resumable.

One epoch (automl/RobustDARTS ``src/search/train_search.py``): for each training batch, an α step on a freshly drawn
validation batch (second order: through the unrolled weight step), then a weight step with gradient clipping; then a
validation pass in eval mode, the genotype, on eigenvalue epochs the dominant eigenvalue of the α Hessian of the
validation loss on the epoch's last validation batch (train mode, arch weight decay included), and a full-state
checkpoint. ES keeps the stop epoch's genotype and ends; ADA rolls back to the stop epoch's checkpoint, multiplies the
weight decay and goes on to the last epoch.

Robust-DARTS methods (``method``) act through ``rdarts.robust.hooks``. Validation as the reference: the validation half
with the training transform (crop, flip, cutout), in eval mode (``valid_augment`` off: normalised only).

DARTS-ADA rolls back everything, the eigenvalue history included (the released code does not: see
``rdarts.stopping``).

Pure PyTorch: no Ray, no MLflow. A search writes its checkpoints under ``out_dir/checkpoints`` and resumes from the
latest one when run again; every random draw comes from seeded generators saved in the checkpoint, so a resumed
search ends exactly as an uninterrupted one (on CPU).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from tqdm import tqdm

from rdarts.architect import Architect
from rdarts.checkpoint import CheckpointStore
from rdarts.config import ConfigError, SearchConfig
from rdarts.data import Augment, ImageData, load_dataset
from rdarts.device import resolve_device
from rdarts.eigen_tracking import EigenMeasurement, alpha_summary, dominant_alpha_eigenvalue
from rdarts.errors import DivergedError
from rdarts.records import EpochRecord, SearchResult
from rdarts.regularization import ada_next_weight_decay, cosine_lr, cutout_enabled, drop_path_prob
from rdarts.resumable import autocast, check_settings, restore_rng, rng_state, settings_stamp
from rdarts.robust import make_method
from rdarts.spaces import Genotype
from rdarts.stopping import newest_ratio, stop_event

__all__ = ["DivergedError", "EpochRecord", "Search", "SearchResult", "resolve_device", "run_search"]


class Search:
    """A resumable RobustDARTS search.

    Args:
        cfg: The settings.
        out_dir: Where checkpoints go; ``None`` keeps everything in memory (no resume).
        train_data: The training split to use; loaded from ``cfg`` when omitted.
        progress: Show a progress bar per epoch.
        eigenvalue_fn: Replaces the Hessian measurement (``epoch -> λ``); a seam for tests of the stopping logic.
    """

    def __init__(self, cfg: SearchConfig, out_dir: str | Path | None = None, *, train_data: ImageData | None = None,
                 progress: bool = False, eigenvalue_fn: Callable[[int], float] | None = None):
        self.cfg = cfg
        self.device = resolve_device(cfg.device)
        self.progress = progress
        self.eigenvalue_fn = eigenvalue_fn
        self.store = CheckpointStore(Path(out_dir) / "checkpoints") if out_dir is not None else None
        data = train_data if train_data is not None else load_dataset(cfg.dataset, root=cfg.data_root, train=True,
                                                                      download=cfg.download)
        data = data.subset(cfg.n_train).resized(cfg.image_size)
        half = len(data.labels) // 2
        if half < 2:
            raise ConfigError(f"n_train={len(data.labels)} leaves fewer than 2 images per half")
        # The reference's split: the first half trains the weights, the second half α.
        self.x_train, self.y_train = data.images[:half].to(self.device), data.labels[:half].to(self.device)
        self.x_val, self.y_val = data.images[half:].to(self.device), data.labels[half:].to(self.device)
        self.data = data
        self.space = cfg.search_space()

        torch.manual_seed(cfg.seed)
        self.method = make_method(cfg)  # the robust-DARTS method's hooks (rdarts.robust); plain DARTS by default
        self.model = self.method.build_supernet(self.space, cfg.channels, data.num_classes, cfg.layers,
                                                data.in_channels).to(self.device)
        if cfg.channels_last and self.device.type == "cuda":
            self.model = self.model.to(memory_format=torch.channels_last)
        self.w_optimizer = torch.optim.SGD(self.model.weight_parameters(), lr=cfg.lr, momentum=cfg.momentum,
                                           weight_decay=cfg.weight_decay)
        self.architect = Architect(self.model, self.w_optimizer, order=cfg.order, lr=cfg.arch_lr,
                                   weight_decay=cfg.arch_weight_decay, autocast=autocast(cfg.amp, self.device),
                                   extra_loss=self.method.alpha_loss)
        self.generator = torch.Generator().manual_seed(cfg.seed)
        # Mutable search state (all of it goes into the checkpoint).
        self.next_epoch = 0
        self.weight_decay = cfg.weight_decay
        self.ada_round = 0
        self.history: dict[int, float] = {}
        self.genotypes: dict[int, str] = {}
        self.records: list[dict[str, Any]] = []
        self.status = "running"
        self.kept_epoch: int | None = None  # DARTS-ES: the epoch whose genotype is returned
        self.stop_epoch: int | None = None  # DARTS-ES: the epoch after which it stopped
        self._last_valid_batch: tuple[torch.Tensor, torch.Tensor] | None = None
        self.ritz_vector: torch.Tensor | None = None  # the warm start of the next λ_max (checkpointed)

    # ----------------------------------------------------------------------------------------------- helpers
    def _augment(self) -> Augment:
        """The search's training transform (crop and flip when ``augment``, cutout by the reference's rule)."""
        cutout = cutout_enabled(self.cfg.cutout, self.cfg.drop_path)
        return Augment(self.data, augment=self.cfg.augment, cutout=cutout, cutout_length=self.cfg.cutout_length)

    def _to_input(self, x: torch.Tensor) -> torch.Tensor:
        if self.cfg.channels_last and self.device.type == "cuda":
            return x.contiguous(memory_format=torch.channels_last)
        return x

    def _set_weight_decay(self, wd: float) -> None:
        self.weight_decay = wd
        for group in self.w_optimizer.param_groups:
            group["weight_decay"] = wd

    # ----------------------------------------------------------------------------------------------- one epoch
    def train_epoch(self, epoch: int) -> tuple[float, float]:
        cfg = self.cfg
        lr = cosine_lr(epoch, cfg.epochs, cfg.lr, cfg.lr_min)
        for group in self.w_optimizer.param_groups:
            group["lr"] = lr
        self.model.drop_path_prob = drop_path_prob(epoch, cfg.epochs, cfg.drop_path)
        self.method.begin_epoch(self.model, epoch, cfg.epochs)
        self.model.train()
        aug = self._augment()
        n_train, n_val = len(self.y_train), len(self.y_val)
        order = torch.randperm(n_train, generator=self.generator)
        batches = [order[i:i + cfg.batch_size] for i in range(0, n_train, cfg.batch_size)]
        batches = [b for b in batches if len(b) > 1]  # BN in train mode needs two samples
        loss_sum, correct, seen = 0.0, 0, 0
        bar = tqdm(batches, desc=f"epoch {epoch + 1}/{cfg.epochs}", leave=False, disable=not self.progress,
                   dynamic_ncols=True)
        for step, idx in enumerate(bar):
            x = self._to_input(aug(self.x_train[idx.to(self.device)], self.generator))
            y = self.y_train[idx.to(self.device)]
            # A fresh validation batch each step, as the reference's next(iter(valid_queue)).
            vidx = torch.randperm(n_val, generator=self.generator)[: cfg.batch_size].to(self.device)
            xv, yv = self._to_input(aug(self.x_val[vidx], self.generator)), self.y_val[vidx]
            self.method.arch_step(self.architect, epoch, (x, y), (xv, yv), lr, self.weight_decay)
            self.w_optimizer.zero_grad(set_to_none=True)
            with autocast(self.cfg.amp, self.device):
                logits = self.method.weight_step_logits(self.model, x, y, self.generator)
                loss = F.cross_entropy(logits, y)
            if not torch.isfinite(loss):
                raise DivergedError(f"diverged: the training loss became {loss.item()} at epoch {epoch} step {step}; "
                                    "lower the learning rate or raise the weight decay")
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.model.weight_parameters(), cfg.grad_clip)
            self.w_optimizer.step()
            loss_sum += loss.item() * len(y)
            correct += int((logits.argmax(-1) == y).sum())
            seen += len(y)
            bar.set_postfix(loss=f"{loss_sum / seen:.3f}", acc=f"{correct / seen:.3f}")
            self._last_valid_batch = (xv, yv)
        return loss_sum / seen, correct / seen

    @torch.no_grad()
    def validate(self, epoch: int) -> tuple[float, float]:
        """Loss and accuracy of the one-shot model on the validation half, in eval mode.

        As the reference (its ``valid_queue`` is built with the training transform), the images get the search's
        augmentation unless ``valid_augment`` is off. The draws come from a generator of their own, seeded by
        (seed, epoch): the measurement never moves the search's random stream, so both settings search alike.
        """
        self.model.eval()
        aug = self._augment() if self.cfg.valid_augment else Augment(self.data, augment=False)
        gen = torch.Generator().manual_seed(self.cfg.seed * 1_000_003 + epoch)
        bs = max(self.cfg.batch_size, 256)
        loss_sum, correct, seen = 0.0, 0, 0
        for i, start in enumerate(range(0, len(self.y_val), bs)):
            if self.cfg.valid_batches is not None and i >= self.cfg.valid_batches:
                break
            x = self._to_input(aug(self.x_val[start:start + bs], gen))
            y = self.y_val[start:start + bs]
            with autocast(self.cfg.amp, self.device):
                logits = self.model(x)
            loss_sum += float(F.cross_entropy(logits.float(), y, reduction="sum"))
            correct += int((logits.argmax(-1) == y).sum())
            seen += len(y)
        self.model.train()
        return loss_sum / seen, correct / seen

    def measure_eigenvalue(self, epoch: int) -> EigenMeasurement:
        """λ_max on the epoch's last validation batch and ``hessian_batches - 1`` more (own generator)."""
        if self.eigenvalue_fn is not None:
            return EigenMeasurement(float(self.eigenvalue_fn(epoch)), math.nan, 0, torch.zeros(0))
        assert self._last_valid_batch is not None
        gen = torch.Generator().manual_seed(self.cfg.seed * 100_003 + epoch)
        batches = [self._last_valid_batch]
        aug = self._augment()
        for _ in range(self.cfg.hessian_batches - 1):
            vidx = torch.randperm(len(self.y_val), generator=gen)[: self.cfg.batch_size].to(self.device)
            batches.append((self._to_input(aug(self.x_val[vidx], gen)), self.y_val[vidx]))
        m = dominant_alpha_eigenvalue(
            self.model, self.model.alpha_parameters(), batches, arch_weight_decay=self.cfg.arch_weight_decay,
            tol=self.cfg.hessian_tol, max_iter=self.cfg.hessian_max_iter, epoch=epoch, generator=gen,
            start=self.ritz_vector if self.cfg.hessian_warm_start else None)
        self.ritz_vector = m.vector
        return m

    # ----------------------------------------------------------------------------------------------- state
    def state_dict(self) -> dict[str, Any]:
        return {
            "format": 1,
            "config": settings_stamp(self.cfg.result_affecting()),
            "next_epoch": self.next_epoch,
            "model": self.model.state_dict(),
            "w_optimizer": self.w_optimizer.state_dict(),
            "a_optimizer": self.architect.optimizer.state_dict(),
            **rng_state(self.generator, self.device),
            "history": [[e, v] for e, v in sorted(self.history.items())],
            "genotypes": [[e, g] for e, g in sorted(self.genotypes.items())],
            "weight_decay": self.weight_decay,
            "ada_round": self.ada_round,
            "status": self.status,
            "kept_epoch": -1 if self.kept_epoch is None else self.kept_epoch,
            "ritz_vector": self.ritz_vector,
            "stop_epoch": -1 if self.stop_epoch is None else self.stop_epoch,
        }

    def load_state_dict(self, state: dict[str, Any], *, keep_records: bool = False) -> None:
        check_settings(self.cfg.result_affecting(), state, fix="use a new --out folder, or the settings it was "
                                                              "started with")
        self.next_epoch = int(state["next_epoch"])
        self.model.load_state_dict(state["model"])
        self.w_optimizer.load_state_dict(state["w_optimizer"])
        self.architect.optimizer.load_state_dict(state["a_optimizer"])
        restore_rng(state, self.generator, self.device)
        self.history = {int(e): float(v) for e, v in state["history"]}
        self.genotypes = {int(e): str(g) for e, g in state["genotypes"]}
        self._set_weight_decay(float(state["weight_decay"]))
        self.ada_round = int(state["ada_round"])
        self.status = str(state["status"])
        self.kept_epoch = None if int(state["kept_epoch"]) < 0 else int(state["kept_epoch"])
        self.ritz_vector = state.get("ritz_vector")
        self.stop_epoch = None if int(state["stop_epoch"]) < 0 else int(state["stop_epoch"])
        if not keep_records:
            self.records = list(state.get("records", []))

    def save(self, epoch: int) -> None:
        if self.store is not None:
            self.store.save(epoch, {**self.state_dict(), "records": self.records})

    def resume(self) -> bool:
        """Load the latest checkpoint, if any; True when one was loaded."""
        if self.store is None:
            return False
        state = self.store.load_latest()
        if state is not None:
            self.load_state_dict(state)
        return state is not None

    def rollback(self, target_epoch: int) -> None:
        """DARTS-ADA: back to the checkpoint of ``target_epoch`` (weights, α, optimiser states, RNG, eigenvalues)."""
        if self.store is None:
            raise RuntimeError("DARTS-ADA needs checkpoints: give the search an out_dir")
        self.load_state_dict(self.store.load(target_epoch), keep_records=True)

    # ----------------------------------------------------------------------------------------------- the loop
    def run_epoch(self, epoch: int) -> dict[str, Any]:
        cfg = self.cfg
        t0 = time.perf_counter()
        train_loss, train_acc = self.train_epoch(epoch)
        valid_loss, valid_acc = self.validate(epoch)
        genotype = self.model.genotype()
        self.genotypes[epoch] = genotype.to_json()
        eig, se, iters, t_h = math.nan, math.nan, 0, 0.0
        if epoch % cfg.ev_every == 0 or epoch == cfg.epochs - 1:
            th = time.perf_counter()
            m = self.measure_eigenvalue(epoch)
            eig, se, iters = m.value, m.se, m.iterations
            t_h = time.perf_counter() - th
            if not math.isfinite(eig):
                raise DivergedError(f"diverged: the dominant eigenvalue became {eig} at epoch {epoch}")
            self.history[epoch] = eig
        la, ratio = newest_ratio(self.history, total_epochs=cfg.epochs, **cfg.es_rule().as_kwargs())
        record = EpochRecord(
            epoch=epoch, ada_round=self.ada_round, lr=self.w_optimizer.param_groups[0]["lr"],
            weight_decay=self.weight_decay, drop_path=self.model.drop_path_prob,
            cutout=cutout_enabled(cfg.cutout, cfg.drop_path), train_loss=train_loss, train_acc=train_acc,
            valid_loss=valid_loss, valid_acc=valid_acc, dominant_eigenvalue=eig, eigenvalue_se=se,
            eigenvalue_local_avg=la, eigenvalue_ratio=ratio, hessian_iters=iters, genotype=genotype.to_json(),
            param_free_share=genotype.parameter_free_share(), **alpha_summary(self.model.alpha_softmax()),
            epoch_time_s=time.perf_counter() - t0, hessian_time_s=t_h,
        )
        return record.to_dict()

    def _check_stop(self, epoch: int, record: dict[str, Any]) -> int | None:
        """Apply DARTS-ES after an eigenvalue epoch; returns the target epoch when the search must act on it."""
        cfg = self.cfg
        can_raise = ada_next_weight_decay(self.weight_decay, cfg.ada_mul_factor, cfg.ada_max_weight_decay) is not None
        found = stop_event(cfg.early_stop, self.history, epoch, total_epochs=cfg.epochs,
                           rule=cfg.es_rule().as_kwargs(), ada_can_raise=can_raise)
        if found is None:
            return None
        record["event"], record["target_epoch"] = found
        return None if found[0] == "ada_ignored" else found[1]

    def run(self, on_epoch: Callable[[dict[str, Any]], None] | None = None,
            on_checkpoint: Callable[[int], None] | None = None) -> SearchResult:
        """Run (or resume) to the end; ``on_epoch`` sees every record, ``on_checkpoint`` every saved epoch."""
        cfg = self.cfg
        self.resume()
        while self.status == "running" and self.next_epoch < cfg.epochs:
            epoch = self.next_epoch
            record = self.run_epoch(epoch)
            stop = self._check_stop(epoch, record)
            self.records.append(record)
            self.next_epoch = epoch + 1
            if stop is not None and cfg.early_stop == "es":
                self.status, self.kept_epoch, self.stop_epoch = "es_stopped", stop, epoch
            elif self.next_epoch >= cfg.epochs:
                self.status = "finished"
            if stop is not None and cfg.early_stop == "ada":
                # No checkpoint of the discarded epoch: saving it would let a crash before the rollback resume past
                # the rollback. A crash before save(stop) resumes at this epoch, which fires the same rule again.
                if on_epoch is not None:
                    on_epoch(record)
                next_wd = ada_next_weight_decay(self.weight_decay, cfg.ada_mul_factor, cfg.ada_max_weight_decay)
                assert next_wd is not None
                rounds = self.ada_round + 1
                self.rollback(stop)
                self._set_weight_decay(next_wd)
                self.ada_round = rounds
                self.save(stop)  # the rolled-back state (all records kept) is the new latest
            else:
                self.save(epoch)
                if on_epoch is not None:
                    on_epoch(record)
            if on_checkpoint is not None:
                on_checkpoint(epoch)
        return self.result()

    def result(self) -> SearchResult:
        if self.status == "es_stopped" and self.kept_epoch is not None:
            epoch = self.kept_epoch
        else:
            epoch = max(self.genotypes)
        return SearchResult(Genotype.from_json(self.genotypes[epoch]), epoch, self.stop_epoch, self.status,
                            list(self.records))


def run_search(cfg: SearchConfig, out_dir: str | Path | None = None, **kwargs: Any) -> SearchResult:
    """Build a ``Search`` and run it to the end (resuming from ``out_dir`` if it holds checkpoints)."""
    return Search(cfg, out_dir, **kwargs).run()
