"""Retraining: a tiny run on digits, bit-identical resume, the held-out split, config validation."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from rdarts import retrain as retrain_module
from rdarts.checkpoint import CheckpointStore
from rdarts.data import ImageData, load_dataset
from rdarts.errors import UserError
from rdarts.network import Network, count_parameters
from rdarts.retrain import Retrain, RetrainConfig, RetrainResult, holdout_split, retrain
from rdarts.search import DivergedError
from rdarts.spaces import Genotype

GENOTYPE = Genotype(
    (("sep_conv_3x3", 0), ("skip_connect", 1), ("dil_conv_3x3", 0), ("max_pool_3x3", 2),
     ("avg_pool_3x3", 1), ("sep_conv_3x3", 3), ("skip_connect", 4), ("dil_conv_3x3", 0)), (2, 3, 4, 5),
    (("max_pool_3x3", 0), ("skip_connect", 1), ("sep_conv_3x3", 2), ("dil_conv_3x3", 1),
     ("avg_pool_3x3", 0), ("skip_connect", 3), ("sep_conv_3x3", 4), ("dil_conv_3x3", 0)), (2, 3, 4, 5),
)
TINY = RetrainConfig(dataset="digits", epochs=3, batch_size=64, layers=3, channels=4, n_train=400, n_test=150,
                     valid_fraction=0.1, cutout_length=None, device="cpu")


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    """Tiny convolutions: a second intra-op thread only adds contention (10x slower on a loaded 2-core box)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def digits() -> tuple[ImageData, ImageData]:
    return load_dataset("digits", train=True), load_dataset("digits", train=False)


@pytest.fixture(scope="module")
def full_run(digits: tuple[ImageData, ImageData], tmp_path_factory: pytest.TempPathFactory) -> tuple[Path,
                                                                                                      RetrainResult]:
    """The uninterrupted run, shared by the tests that only read it."""
    out = tmp_path_factory.mktemp("full")
    return out, retrain(GENOTYPE, TINY, out, train_data=digits[0], test_data=digits[1])


def _without_times(history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in rec.items() if k != "epoch_time_s"} for rec in history]


def test_tiny_run_on_digits(full_run: tuple[Path, RetrainResult]) -> None:
    _, result = full_run
    assert [rec["epoch"] for rec in result.history] == [0, 1, 2]
    for rec in result.history:
        assert math.isfinite(rec["train_loss"]) and rec["train_loss"] > 0
        assert 0 <= rec["test_error"] <= 100 and 0 <= rec["valid_acc"] <= 1
        assert rec["test_error"] == pytest.approx(100 * (1 - rec["test_acc"]))
    # Cosine to 0 (no eta_min), drop path ramped as dp * epoch / epochs: the reference's schedules.
    assert [rec["lr"] for rec in result.history] == pytest.approx([0.025 * (1 + math.cos(math.pi * e / 3)) / 2
                                                                   for e in range(3)])
    assert [rec["drop_path"] for rec in result.history] == pytest.approx([0.0, 0.2 / 3, 0.4 / 3])
    assert result.test_error == result.history[-1]["test_error"]
    assert result.params == count_parameters(Network(GENOTYPE, 4, 10, 3, auxiliary=False, in_channels=1))


def test_interrupted_run_resumes_bit_identically(full_run: tuple[Path, RetrainResult], digits: tuple[ImageData,
                                                                                                     ImageData],
                                                 tmp_path: Path) -> None:
    class Interrupt(Exception):
        pass

    def stop_after_second(record: dict[str, Any]) -> None:
        if record["epoch"] == 1:
            raise Interrupt

    # After epoch 1, not 0: drop path draws from the global RNG only from epoch 1 on (its probability starts at 0),
    # so only this interruption point shows whether that RNG's state is restored.
    with pytest.raises(Interrupt):
        retrain(GENOTYPE, TINY, tmp_path, train_data=digits[0], test_data=digits[1], on_epoch=stop_after_second)
    assert CheckpointStore(tmp_path / "checkpoints").latest_epoch() == 1
    torch.manual_seed(12345)  # a new process would start from another global RNG state

    seen: list[int] = []
    resumed = retrain(GENOTYPE, TINY, tmp_path, train_data=digits[0], test_data=digits[1],
                      on_epoch=lambda rec: seen.append(rec["epoch"]))
    assert seen == [2]  # only the missing epoch ran
    full_dir, full = full_run
    assert _without_times(resumed.history) == _without_times(full.history)
    a = CheckpointStore(full_dir / "checkpoints").load_latest()
    b = CheckpointStore(tmp_path / "checkpoints").load_latest()
    assert a is not None and b is not None
    assert a["model"].keys() == b["model"].keys()
    for name in a["model"]:
        assert torch.equal(a["model"][name], b["model"][name]), name
    for pid, state in a["optimizer"]["state"].items():
        assert torch.equal(state["momentum_buffer"], b["optimizer"]["state"][pid]["momentum_buffer"])


def test_finished_run_is_not_trained_again(full_run: tuple[Path, RetrainResult],
                                           digits: tuple[ImageData, ImageData]) -> None:
    out, result = full_run
    again = retrain(GENOTYPE, TINY, out, train_data=digits[0], test_data=digits[1],
                    on_epoch=lambda rec: pytest.fail("a finished run trained again"))
    assert again == result


def test_resume_with_other_settings_names_them(full_run: tuple[Path, RetrainResult],
                                               digits: tuple[ImageData, ImageData]) -> None:
    out, _ = full_run
    with pytest.raises(UserError, match=r"other settings \(lr\)"):
        retrain(GENOTYPE, dataclasses.replace(TINY, lr=0.1), out, train_data=digits[0], test_data=digits[1])
    other = dataclasses.replace(GENOTYPE, normal_concat=(2, 3, 4))
    with pytest.raises(UserError, match=r"other settings \(genotype\)"):
        retrain(other, TINY, out, train_data=digits[0], test_data=digits[1])


def test_validation_split_is_held_out_from_the_end_and_never_trained_on(monkeypatch: pytest.MonkeyPatch) -> None:
    """Image i is filled with the value i, so every batch the training loop augments shows which examples it holds."""
    n = 120
    images = torch.arange(n, dtype=torch.uint8).view(n, 1, 1, 1).expand(n, 1, 8, 8).contiguous()
    data = ImageData(images, torch.arange(n) % 10, 10, (0.5,), (0.25,))
    cfg = dataclasses.replace(TINY, epochs=1, n_train=100, valid_fraction=0.25, batch_size=16, auxiliary=False)

    trained: set[int] = set()
    original = retrain_module.Augment

    class Spy(original):  # type: ignore[valid-type,misc]
        def __call__(self, batch: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
            if self.augment:
                trained.update(batch[:, 0, 0, 0].tolist())
            return super().__call__(batch, generator)

    monkeypatch.setattr(retrain_module, "Augment", Spy)
    run = Retrain(GENOTYPE, cfg, train_data=data, test_data=data)
    result = run.run()
    assert (result.train_size, result.valid_size) == (75, 25)
    assert run.valid_idx.tolist() == list(range(75, 100))  # the end of the n_train examples in use
    assert run.x_valid[:, 0, 0, 0].tolist() == list(range(75, 100))
    # Every training example was seen (batches of 16 over 75: the last, of 11, is kept) and no held-out one.
    assert trained == set(range(75))


def test_holdout_split() -> None:
    train, valid = holdout_split(10, 0.0)
    assert train.tolist() == list(range(10)) and valid.numel() == 0
    train, valid = holdout_split(10, 0.3)
    assert set(train.tolist()).isdisjoint(valid.tolist()) and valid.tolist() == [7, 8, 9]
    with pytest.raises(UserError, match="valid_fraction"):
        holdout_split(10, 0.01)  # rounds to no validation example at all


def test_nan_loss_raises_diverged(digits: tuple[ImageData, ImageData], monkeypatch: pytest.MonkeyPatch) -> None:
    real = retrain_module.F.cross_entropy
    monkeypatch.setattr(retrain_module.F, "cross_entropy", lambda logits, y: real(logits, y) * math.nan)
    cfg = dataclasses.replace(TINY, epochs=1, n_train=32, n_test=8, valid_fraction=0.0, batch_size=16)
    with pytest.raises(DivergedError, match="epoch 0"):
        retrain(GENOTYPE, cfg, train_data=digits[0], test_data=digits[1])


# ---------------------------------------------------------------------------------------------------- config
@pytest.mark.parametrize(("field", "value"), [
    ("epochs", 0), ("batch_size", 1), ("lr", 0.0), ("lr", math.nan), ("momentum", 1.0), ("weight_decay", -1e-4),
    ("grad_clip", 0), ("auxiliary_weight", -0.4), ("drop_path", 1.0), ("valid_fraction", 1.0), ("cutout_length", 0),
    ("n_train", 1), ("image_size", 2), ("layers", 0), ("channels", 0), ("cutout", "yes"), ("dataset", "imagenet"),
    ("device", "tpu"), ("batch_size", 32.0), ("seed", -1), ("momentum", "high"), ("epochs", True),
])
def test_bad_setting_names_the_field(field: str, value: object) -> None:
    with pytest.raises(UserError, match=field):
        RetrainConfig(**{field: value})


def test_unknown_setting_is_rejected() -> None:
    with pytest.raises(UserError, match=r"unknown retrain setting\(s\) \['epoch'\]"):
        RetrainConfig.from_dict({"epoch": 3})


def test_cutout_that_blanks_the_whole_image_is_rejected(digits: tuple[ImageData, ImageData]) -> None:
    with pytest.raises(UserError, match="cutout_length=16"):
        Retrain(GENOTYPE, dataclasses.replace(TINY, cutout_length=16), train_data=digits[0], test_data=digits[1])


def test_reference_defaults_and_protocol_sizes() -> None:
    cfg = RetrainConfig()
    assert (cfg.epochs, cfg.batch_size, cfg.lr, cfg.momentum, cfg.weight_decay, cfg.grad_clip) == (
        600, 96, 0.025, 0.9, 3e-4, 5.0)
    assert (cfg.auxiliary, cfg.auxiliary_weight, cfg.cutout, cfg.cutout_length, cfg.drop_path) == (
        True, 0.4, True, 16, 0.2)
    sizes = {name: (c.layers, c.channels) for name in ("cifar10", "cifar100", "svhn")
             for c in [RetrainConfig.protocol_defaults(name)]}
    assert sizes == {"cifar10": (20, 36), "cifar100": (8, 16), "svhn": (8, 16)}
    assert RetrainConfig.protocol_defaults("svhn", seed=3).seed == 3
