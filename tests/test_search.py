"""The search loop on tiny real data: exact resume, DARTS-ES, DARTS-ADA rollback, divergence, records.

Every search here is a 3-cell, 4-channel supernet on 64-128 `digits` images; the eigenvalue seam
(``eigenvalue_fn``) scripts λ where the stopping logic, not the Hessian, is under test.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

import pytest
import torch

from rdarts.checkpoint import CheckpointStore
from rdarts.config import ConfigError, SearchConfig
from rdarts.data import ImageData
from rdarts.search import DivergedError, EpochRecord, Search
from rdarts.spaces import Genotype
from rdarts.stopping import detection_epoch, es_stop_epoch

TIMING = {"epoch_time_s", "hessian_time_s"}


def config(**overrides: Any) -> SearchConfig:
    base: dict[str, Any] = dict(space="s3", dataset="digits", n_train=128, layers=3, channels=4, batch_size=32,
                                epochs=3, order="first", device="cpu", hessian_max_iter=8, seed=1)
    return SearchConfig(**{**base, **overrides})


class Interrupt(Exception):
    """Raised by a callback to simulate a crash between epochs."""


def interrupt_after(epoch: int):
    def on_epoch(record: dict[str, Any]) -> None:
        if record["epoch"] == epoch:
            raise Interrupt

    return on_epoch


def comparable(record: dict[str, Any]) -> dict[str, Any]:
    """A record without its timing fields, NaN made comparable."""
    return {k: ("nan" if isinstance(v, float) and math.isnan(v) else v) for k, v in record.items() if k not in TIMING}


def same(a: Any, b: Any) -> bool:
    """Deep, bitwise equality of nested dicts/lists of tensors and plain values."""
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple):
        return isinstance(b, list | tuple) and len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


# ----------------------------------------------------------------------------------------------- resume
# First order with drop path and cutout (global and data RNG both in use) and the real Hessian at epochs 0, 2 and the
# last (3); second order on S4, whose noise op draws from the global RNG at every forward.
RESUME_CASES = {
    "first": dict(order="first", drop_path=0.3, epochs=4),
    "second": dict(order="second", space="s4", epochs=3),
}


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory: pytest.TempPathFactory, digits: ImageData) -> dict[str, tuple[Search, Any]]:
    runs = {}
    for name, kw in RESUME_CASES.items():
        search = Search(config(**kw), tmp_path_factory.mktemp(f"full_{name}"), train_data=digits,
                        eigenvalue_fn=None if name == "first" else (lambda e: 1.0 + e))
        runs[name] = (search, search.run())
    return runs


@pytest.mark.parametrize("name", sorted(RESUME_CASES))
def test_resumed_search_is_bit_identical(name: str, uninterrupted: dict[str, tuple[Search, Any]],
                                         digits: ImageData, tmp_path: Path) -> None:
    cfg = config(**RESUME_CASES[name])
    seam = None if name == "first" else (lambda e: 1.0 + e)
    with pytest.raises(Interrupt):
        Search(cfg, tmp_path, train_data=digits, eigenvalue_fn=seam).run(on_epoch=interrupt_after(1))
    assert CheckpointStore(tmp_path / "checkpoints").latest_epoch() == 1

    torch.manual_seed(12345)  # whatever the process did in between must not matter
    resumed = Search(cfg, tmp_path, train_data=digits, eigenvalue_fn=seam)
    seen: list[int] = []
    result = resumed.run(on_epoch=lambda r: seen.append(r["epoch"]))
    assert seen == list(range(2, cfg.epochs))  # only the missing epochs ran

    full, full_result = uninterrupted[name]
    assert same(resumed.model.state_dict(), full.model.state_dict())  # weights, α, BN statistics
    assert same(resumed.w_optimizer.state_dict(), full.w_optimizer.state_dict())
    assert same(resumed.architect.optimizer.state_dict(), full.architect.optimizer.state_dict())
    assert [comparable(r) for r in result.records] == [comparable(r) for r in full_result.records]
    assert [r["epoch"] for r in result.records] == list(range(cfg.epochs))
    assert result.genotype == full_result.genotype and result.status == "finished"


def test_records_have_the_documented_fields(uninterrupted: dict[str, tuple[Search, Any]]) -> None:
    search, result = uninterrupted["first"]
    cfg = search.cfg  # 4 epochs, eigenvalue every 2: epochs 0 and 2, and 3 because it is the last
    assert [r["epoch"] for r in result.records] == [0, 1, 2, 3]
    fields = {f.name for f in dataclasses.fields(EpochRecord)}
    for r in result.records:
        e = r["epoch"]
        assert set(r) == fields
        eigen_epoch = e % cfg.ev_every == 0 or e == cfg.epochs - 1
        assert math.isnan(r["dominant_eigenvalue"]) == (not eigen_epoch)
        assert (r["hessian_iters"] > 0) == eigen_epoch
        assert r["ada_round"] == 0 and r["event"] == "" and r["target_epoch"] == -1
        # torch's CosineAnnealingLR(T_max=epochs, eta_min) at epoch e; the linear drop-path ramp; cutout with dp > 0
        assert r["lr"] == pytest.approx(cfg.lr_min + (cfg.lr - cfg.lr_min) * (1 + math.cos(math.pi * e / 4)) / 2)
        assert r["drop_path"] == pytest.approx(0.3 * e / 3)
        assert r["cutout"] is True and r["weight_decay"] == cfg.weight_decay
        genotype = Genotype.from_json(r["genotype"])
        assert r["param_free_share"] == genotype.parameter_free_share()
        assert 0 <= r["alpha_entropy"] <= math.log(3) + 1e-9
        assert 0 <= r["train_acc"] <= 1 and 0 <= r["valid_acc"] <= 1
        assert math.isfinite(r["train_loss"]) and math.isfinite(r["valid_loss"])
    eigen = [r["dominant_eigenvalue"] for r in result.records if not math.isnan(r["dominant_eigenvalue"])]
    assert search.history == dict(zip([0, 2, 3], eigen, strict=True))
    assert result.genotype == Genotype.from_json(result.records[-1]["genotype"])


def test_resume_with_other_settings_names_the_field(digits: ImageData, tmp_path: Path) -> None:
    cfg = config(epochs=2, n_train=64)
    with pytest.raises(Interrupt):
        Search(cfg, tmp_path, train_data=digits, eigenvalue_fn=lambda e: 1.0).run(on_epoch=interrupt_after(0))
    with pytest.raises(ConfigError, match="momentum"):
        Search(dataclasses.replace(cfg, momentum=0.8), tmp_path, train_data=digits).run()
    # Labels and the device do not affect results: the search resumes and finishes.
    relabelled = dataclasses.replace(cfg, extra={"trial": "t1"})
    result = Search(relabelled, tmp_path, train_data=digits, eigenvalue_fn=lambda e: 1.0).run()
    assert [r["epoch"] for r in result.records] == [0, 1] and result.status == "finished"


def test_a_supernet_without_a_normal_cell_is_refused() -> None:
    # layers 1 and 2 put a reduction at every cell: alphas_normal would never get a gradient.
    for layers in (1, 2):
        with pytest.raises(ConfigError, match="layers"):
            config(layers=layers)


# ----------------------------------------------------------------------------------------------- divergence
def test_divergence_raises_and_keeps_earlier_checkpoints(digits: ImageData, tmp_path: Path) -> None:
    # One step per epoch: epoch 0's loss is computed before the exploding update, epoch 1's is not finite.
    cfg = config(n_train=64, lr=1e20)
    with pytest.raises(DivergedError, match="diverged") as info:
        Search(cfg, tmp_path, train_data=digits, eigenvalue_fn=lambda e: 1.0).run()
    assert "epoch 1" in str(info.value)
    store = CheckpointStore(tmp_path / "checkpoints")
    assert store.latest_epoch() == 0
    state = store.load(0)
    assert state["next_epoch"] == 1 and [r["epoch"] for r in state["records"]] == [0]
    assert not store.path(1).exists()


def test_a_non_finite_eigenvalue_is_divergence(digits: ImageData, tmp_path: Path) -> None:
    cfg = config(n_train=64, ev_every=1)
    with pytest.raises(DivergedError, match="diverged"):
        Search(cfg, tmp_path, train_data=digits, eigenvalue_fn=lambda e: math.nan if e == 1 else 1.0).run()
    assert CheckpointStore(tmp_path / "checkpoints").latest_epoch() == 0


# ----------------------------------------------------------------------------------------------- DARTS-ES
ES = dict(n_train=64, epochs=8, ev_every=1, es_window=2, es_delta=1, es_factor=1.3, es_start_epoch=0,
          arch_lr=0.05)  # a large α step, so that genotypes differ between epochs
EXPLODING = {0: 1.0, 1: 1.0, 2: 1.0, 3: 1.0, 4: 2.0, 5: 4.0, 6: 8.0, 7: 16.0}


def test_es_stops_at_detection_and_returns_the_stop_epochs_genotype(digits: ImageData, tmp_path: Path) -> None:
    cfg = config(early_stop="es", **ES)
    rule = cfg.es_rule().as_kwargs()
    detect = detection_epoch(EXPLODING, total_epochs=cfg.epochs, **rule)
    assert detect is not None and detect < cfg.epochs - 1
    stop = es_stop_epoch({e: v for e, v in EXPLODING.items() if e <= detect}, total_epochs=cfg.epochs, **rule)
    assert stop is not None and stop < detect

    result = Search(cfg, tmp_path, train_data=digits, eigenvalue_fn=EXPLODING.__getitem__).run()

    assert result.status == "es_stopped"
    assert [r["epoch"] for r in result.records] == list(range(detect + 1))  # nothing after detection
    assert result.stop_epoch == detect and result.genotype_epoch == stop  # fired at detect, keeps stop
    assert result.genotype == Genotype.from_json(result.records[stop]["genotype"])
    assert result.records[stop]["genotype"] != result.records[-1]["genotype"]  # so the choice is visible
    last = result.records[-1]
    assert last["event"] == "es_stop" and last["target_epoch"] == stop
    assert all(r["event"] == "" for r in result.records[:-1])

    # Run again on the same folder: the stopped search is not resumed into more epochs.
    again = Search(cfg, tmp_path, train_data=digits, eigenvalue_fn=EXPLODING.__getitem__).run(
        on_epoch=lambda r: pytest.fail("a stopped search trained again"))
    assert again.genotype == result.genotype and again.status == "es_stopped"


def test_es_off_runs_to_the_end(digits: ImageData) -> None:
    cfg = config(early_stop="off", **ES)
    result = Search(cfg, train_data=digits, eigenvalue_fn=EXPLODING.__getitem__).run()
    assert result.status == "finished" and result.stop_epoch is None
    assert [r["epoch"] for r in result.records] == list(range(cfg.epochs))
    assert all(r["event"] == "" for r in result.records)


# ----------------------------------------------------------------------------------------------- DARTS-ADA
def test_ada_rolls_back_exactly_multiplies_wd_and_ignores_stops_at_the_maximum(digits: ImageData,
                                                                              tmp_path: Path) -> None:
    # Window 1, lookback 1: a stop when λ(e) / λ(e-1) > 1.3, keeping epoch e-1. Round 0 jumps at epoch 3 (rollback to
    # epoch 2, wd 3e-4 -> 3e-3 = the maximum); round 1 jumps at epoch 4 (stop ignored); epoch 5 is the last.
    cfg = config(early_stop="ada", order="second", n_train=64, epochs=6, ev_every=1, es_window=1, es_delta=1,
                 es_start_epoch=0, weight_decay=3e-4, ada_mul_factor=10.0, ada_max_weight_decay=3e-3)
    search = Search(cfg, tmp_path, train_data=digits)
    jump = {0: 3, 1: 4}
    search.eigenvalue_fn = lambda e: 10.0 if e == jump[search.ada_round] else 1.0

    calls: list[tuple[int, float]] = []  # (ada round, weight decay of the virtual step)
    unrolled = search.architect.unrolled_gradient

    def spy(train: Any, valid: Any, eta: float, w_weight_decay: float) -> list[torch.Tensor]:
        calls.append((search.ada_round, w_weight_decay))
        return unrolled(train, valid, eta, w_weight_decay)

    search.architect.unrolled_gradient = spy  # type: ignore[method-assign]

    snapshot: dict[str, Any] = {}
    checks: list[int] = []

    def on_epoch(record: dict[str, Any]) -> None:
        if record["event"] == "ada_rollback":  # the stop epoch's checkpoint, before the rollback rewrites it
            snapshot.update(search.store.load(record["target_epoch"]))  # type: ignore[union-attr]

    def on_checkpoint(epoch: int) -> None:
        if epoch != 3 or search.ada_round != 1 or checks:
            return
        checks.append(epoch)  # right after the rollback: the state is the checkpoint's
        assert search.next_epoch == 3 == snapshot["next_epoch"]
        assert same(search.model.state_dict(), snapshot["model"])
        assert same(search.architect.optimizer.state_dict(), snapshot["a_optimizer"])
        w_state = search.w_optimizer.state_dict()
        assert same(w_state["state"], snapshot["w_optimizer"]["state"])  # momentum buffers
        strip = [{k: v for k, v in g.items() if k != "weight_decay"} for g in w_state["param_groups"]]
        assert same(strip, [{k: v for k, v in g.items() if k != "weight_decay"}
                            for g in snapshot["w_optimizer"]["param_groups"]])
        assert all(g["weight_decay"] == pytest.approx(3e-3) for g in w_state["param_groups"])
        assert same(torch.get_rng_state(), snapshot["torch_rng"])
        assert same(search.generator.get_state(), snapshot["data_rng"])
        assert [[e, v] for e, v in sorted(search.history.items())] == snapshot["history"]
        assert search.history == {0: 1.0, 1: 1.0, 2: 1.0}

    result = search.run(on_epoch=on_epoch, on_checkpoint=on_checkpoint)

    assert checks == [3] and snapshot["weight_decay"] == pytest.approx(3e-4)
    rows = [(r["epoch"], r["ada_round"], r["event"], r["target_epoch"]) for r in result.records]
    assert rows == [
        (0, 0, "", -1), (1, 0, "", -1), (2, 0, "", -1),
        (3, 0, "ada_rollback", 2),  # the discarded branch's row stays in the records
        (3, 1, "", -1), (4, 1, "ada_ignored", 3), (5, 1, "", -1),
    ]  # fmt: skip
    assert [r["weight_decay"] for r in result.records] == pytest.approx([3e-4] * 4 + [3e-3] * 3)
    # The virtual step of the unrolled α gradient uses the weight decay in force: the new one after the rollback.
    # One α step per epoch run (one batch per epoch): epochs 0-3 in round 0, 3-5 in round 1.
    assert [rnd for rnd, _ in calls] == [0, 0, 0, 0, 1, 1, 1]
    assert [wd for _, wd in calls] == pytest.approx([3e-4] * 4 + [3e-3] * 3)
    assert result.status == "finished" and result.stop_epoch is None
    assert result.genotype == Genotype.from_json(result.records[-1]["genotype"])
    # The rolled-back state was saved as the stop epoch's checkpoint, so a crash after the rollback resumes there.
    rewritten = search.store.load(2)  # type: ignore[union-attr]
    assert rewritten["ada_round"] == 1 and rewritten["weight_decay"] == pytest.approx(3e-3)


def test_ada_needs_checkpoints(digits: ImageData) -> None:
    cfg = config(early_stop="ada", n_train=64, epochs=4, ev_every=1, es_window=1, es_delta=1, es_start_epoch=0)
    with pytest.raises(RuntimeError, match="out_dir"):
        Search(cfg, None, train_data=digits, eigenvalue_fn=lambda e: 10.0 if e == 2 else 1.0).run()
